// mnist-nn export --html: the model inside the page, doing what `mnist-nn serve` does on the server.
//
// The page that `mnist-nn export MODEL --html OUT.html` writes is serve's page (index.html,
// style.css, app.js) in one file, with the model (a JSON block: its layers, class names and
// weights, float32 in base64) and this script before app.js. Where serve's page sends a drawing
// to the server, this page asks window.mnistNN, defined here, which does in JavaScript what the
// server does in Python:
//
// - the drawing's gray levels / 255 are prepared as mnist_nn.images.to_mnist prepares them
//   (to_fashion_mnist for a Fashion-MNIST model): polarity, contrast, crop to the ink, scale to
//   20x20 by area averaging, center of mass to pixel (14, 14); a picture whose frame is not
//   paper first goes through images.photo_ink (a blur, a grey opening, Otsu's threshold, the
//   digit's regions), as on a server with SciPy. All in float64, as NumPy does it, then rounded
//   to float32, the network's input;
// - the model's input transform (deskewing: nn.transforms.deskew_images, its moments in float64
//   and its bilinear warp in the model's dtype), then its layers, in float64 with the float32
//   weights; softmax outputs as they are, sigmoid outputs divided by their sum
//   (Network.probabilities).
//
// Feature maps are (H, W, C), flattened, and a convolution's kernels (K * K * C + 1, F) with the
// biases last, as the package keeps them, so the weights are used as stored. The constants of
// the preprocessing come from the Python modules, in the model's JSON.
//
// window.mnistNN.classify(pixels) gives the probabilities for 784 pixels in [0, 1] as load_data
// gives them; prepare(gray, width, height) the 784 inputs made of a picture's gray levels in
// [0, 1]. The tests compare both with NumPy's.
"use strict";

(function () {
  const spec = JSON.parse(document.getElementById("mnist-nn-model").textContent);
  const K = spec.constants; // mnist_nn.images' and mnist_nn.nn.warp's
  const SIDE = K.IMAGE_SIDE;
  const PIXELS = SIDE * SIDE;
  const FLOAT32 = spec.dtype === "float32";
  const params = decodeFloats(spec.weights);
  const layers = spec.layers.map(buildLayer);

  function decodeFloats(text) {
    const raw = atob(text);
    const view = new DataView(new ArrayBuffer(raw.length));
    for (let i = 0; i < raw.length; i++) view.setUint8(i, raw.charCodeAt(i));
    const out = new Float32Array(raw.length / 4);
    for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(4 * i, true); // written little-endian
    return out;
  }

  // An error a drawing can deserve (no ink): shown on the page as the server's message would be.
  function empty(what, detail) {
    return new Error(`drawing: the image is empty (no ${what} found${detail || ""})`);
  }

  // --- NumPy's small helpers ---

  function median(values) {
    const sorted = Float64Array.from(values).sort();
    const n = sorted.length;
    const half = n >> 1;
    return n % 2 ? sorted[half] : (sorted[half - 1] + sorted[half]) / 2;
  }

  // np.quantile(values, q), its default "linear" method, with NumPy's own arithmetic.
  function quantile(values, q) {
    const sorted = Float64Array.from(values).sort();
    const n = sorted.length;
    const virtual = (n - 1) * q;
    if (virtual >= n - 1) return sorted[n - 1];
    if (virtual < 0) return sorted[0];
    const below = Math.floor(virtual);
    const t = virtual - below;
    const a = sorted[below];
    const b = sorted[below + 1];
    const diff = b - a;
    return t >= 0.5 ? b - diff * (1 - t) : a + diff * t;
  }

  function roundHalfEven(x) {
    // Python's round(): halves go to the even neighbour.
    const r = Math.round(x);
    return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
  }

  // --- a picture as the model's input (mnist_nn.images) ---

  // An image: { h, w, v } with v the h * w values, row by row, as a Float64Array.
  function image(h, w, v) {
    return { h, w, v: v || new Float64Array(h * w) };
  }

  function border(img) {
    const { h, w, v } = img;
    if (Math.min(h, w) <= 2) return v;
    const out = [];
    for (let x = 0; x < w; x++) out.push(v[x], v[(h - 1) * w + x]);
    for (let y = 1; y < h - 1; y++) out.push(v[y * w], v[y * w + w - 1]);
    return out;
  }

  // The outer ring, clockwise from the top left, each pixel once (images._ring).
  function ring(img) {
    const { h, w, v } = img;
    if (Math.min(h, w) <= 2) return Array.from(v);
    const out = [];
    for (let x = 0; x < w - 1; x++) out.push(v[x]);
    for (let y = 0; y < h - 1; y++) out.push(v[y * w + w - 1]);
    for (let x = w - 1; x > 0; x--) out.push(v[(h - 1) * w + x]);
    for (let y = h - 1; y > 0; y--) out.push(v[y * w]);
    return out;
  }

  function ink(value, inverted, level) {
    return Math.max((inverted ? 1 - value : value) - level, 0);
  }

  // The background's level and polarity: steps 1 and 2 of to_mnist.
  function background(img) {
    let level = median(border(img));
    const inverted = level > K.BORDER_LIGHT;
    if (inverted) level = 1 - level;
    return { level, inverted };
  }

  function longestCyclicRun(flags) {
    if (flags.every(Boolean)) return flags.length;
    const start = flags.indexOf(false);
    let best = 0;
    let run = 0;
    for (let i = 1; i <= flags.length; i++) {
      run = flags[(start + i) % flags.length] ? run + 1 : 0;
      best = Math.max(best, run);
    }
    return best;
  }

  // images._ring_is_background: no long run of ink around the frame, little faint ink on it.
  function ringIsBackground(img, bg, peak) {
    const ringInk = ring(img).map((v) => ink(v, bg.inverted, bg.level) / peak);
    const n = ringInk.length;
    const window = Math.min(K.RING_WINDOW, n);
    const before = window >> 1;
    const wrapped = [...ringInk.slice(n - before), ...ringInk, ...ringInk.slice(0, window - 1 - before)];
    const weight = 1 / window;
    let faint = 0;
    for (let i = 0; i < n; i++) {
      let smooth = 0;
      let strong = false;
      for (let k = 0; k < window; k++) {
        smooth += wrapped[i + k] * weight;
        strong = strong || wrapped[i + k] > K.RING_FAINT[1];
      }
      if (smooth > K.RING_FAINT[0] && smooth < K.RING_FAINT[1] && !strong) faint++;
    }
    const longRun = longestCyclicRun(ringInk.map((v) => v > K.INK_THRESHOLD)) > K.RING_INK_RUN * n;
    return !longRun && faint / n <= K.RING_FAINT_FRACTION;
  }

  // (nOut, nIn) weights: output pixel i averages its footprint of the input (images._footprint_weights).
  function footprintWeights(nIn, start, step, nOut) {
    const weights = new Float64Array(nOut * nIn);
    const half = Math.max(step, 1) / 2;
    for (let i = 0; i < nOut; i++) {
      const center = start + (i + 0.5) * step;
      for (let j = 0; j < nIn; j++) {
        const covered = Math.min(center + half, j + 1) - Math.max(center - half, j);
        weights[i * nIn + j] = Math.max(covered, 0) / (2 * half);
      }
    }
    return { weights, nOut, nIn };
  }

  function boxWeights(img, box, inkBox) {
    const { top, height, left, width } = inkBox;
    const step = Math.max(height, width) / box;
    const outHeight = Math.min(box, Math.max(1, roundHalfEven(height / step)));
    const outWidth = Math.min(box, Math.max(1, roundHalfEven(width / step)));
    return {
      rows: footprintWeights(img.h, top + (height - outHeight * step) / 2, step, outHeight),
      cols: footprintWeights(img.w, left + (width - outWidth * step) / 2, step, outWidth),
    };
  }

  // rows @ img @ cols.T, clipped to [0, 1]: the box of ink scaled.
  function resample(img, box) {
    const { rows, cols } = box;
    const tmp = new Float64Array(rows.nOut * img.w);
    for (let i = 0; i < rows.nOut; i++) {
      for (let y = 0; y < img.h; y++) {
        const r = rows.weights[i * img.h + y];
        if (r === 0) continue;
        for (let x = 0; x < img.w; x++) tmp[i * img.w + x] += r * img.v[y * img.w + x];
      }
    }
    const out = image(rows.nOut, cols.nOut);
    for (let i = 0; i < rows.nOut; i++) {
      for (let j = 0; j < cols.nOut; j++) {
        let s = 0;
        for (let x = 0; x < img.w; x++) s += tmp[i * img.w + x] * cols.weights[j * img.w + x];
        out.v[i * cols.nOut + j] = Math.min(Math.max(s, 0), 1);
      }
    }
    return out;
  }

  function boxOf(inkedRows, inkedCols) {
    const rows = inkedRows.flatMap((inked, y) => (inked ? [y] : []));
    const cols = inkedCols.flatMap((inked, x) => (inked ? [x] : []));
    return {
      top: rows[0],
      height: rows[rows.length - 1] - rows[0] + 1,
      left: cols[0],
      width: cols[cols.length - 1] - cols[0] + 1,
    };
  }

  // The digit in a black 28x28 field, its center of mass at pixel (14, 14) (images._paste_centered).
  function pasteCentered(digit) {
    const { h, w, v } = digit;
    const rows = new Float64Array(h);
    const cols = new Float64Array(w);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        rows[y] += v[y * w + x];
        cols[x] += v[y * w + x];
      }
    }
    let mass = 0;
    let byRow = 0;
    let byCol = 0;
    rows.forEach((r, y) => {
      mass += r;
      byRow += r * y;
    });
    cols.forEach((c, x) => (byCol += c * x));
    const top = Math.floor(K.FIELD_CENTER - byRow / mass + 0.5);
    const left = Math.floor(K.FIELD_CENTER - byCol / mass + 0.5);
    const field = new Float32Array(PIXELS);
    for (let y = Math.max(top, 0); y < Math.min(top + h, SIDE); y++) {
      for (let x = Math.max(left, 0); x < Math.min(left + w, SIDE); x++) {
        field[y * SIDE + x] = v[(y - top) * w + (x - left)];
      }
    }
    return field;
  }

  // images.to_mnist: a picture of a digit (gray levels in [0, 1], either polarity) as 784 inputs.
  function toMnist(img) {
    const bg = background(img);
    const { h, w, v } = img;
    const rowInk = new Float64Array(h);
    const colInk = new Float64Array(w);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const value = ink(v[y * w + x], bg.inverted, bg.level);
        rowInk[y] = Math.max(rowInk[y], value);
        colInk[x] = Math.max(colInk[x], value);
      }
    }
    const peak = Math.max(...rowInk);
    if (peak <= K.INK_THRESHOLD) throw empty("digit");
    if (!ringIsBackground(img, bg, peak)) return digitFromInk(photoInk(img));
    const inkBox = boxOf(
      Array.from(rowInk, (r) => r / peak > K.INK_THRESHOLD),
      Array.from(colInk, (c) => c / peak > K.INK_THRESHOLD),
    );
    const inked = image(h, w, Float64Array.from(v, (value) => ink(value, bg.inverted, bg.level) / peak));
    return pasteCentered(resample(inked, boxWeights(img, K.DIGIT_BOX, inkBox)));
  }

  // images._digit_from_ink: crop, scale and center ink already in [0, 1] on 0.
  function digitFromInk(inked) {
    const { h, w, v } = inked;
    const inkedRows = new Array(h).fill(false);
    const inkedCols = new Array(w).fill(false);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        if (v[y * w + x] > K.INK_THRESHOLD) inkedRows[y] = inkedCols[x] = true;
      }
    }
    return pasteCentered(resample(inked, boxWeights(inked, K.DIGIT_BOX, boxOf(inkedRows, inkedCols))));
  }

  // images.to_fashion_mnist: a garment's picture, its contrast kept, scaled to 28 and centered by its middle.
  function toFashionMnist(img) {
    const bg = background(img);
    const inked = image(img.h, img.w, Float64Array.from(img.v, (value) => ink(value, bg.inverted, bg.level)));
    const peak = inked.v.reduce((a, b) => Math.max(a, b), 0);
    if (peak <= K.INK_THRESHOLD) throw empty("garment");
    const inkedRows = new Array(img.h).fill(false);
    const inkedCols = new Array(img.w).fill(false);
    for (let y = 0; y < img.h; y++) {
      for (let x = 0; x < img.w; x++) {
        if (inked.v[y * img.w + x] > K.INK_THRESHOLD * peak) inkedRows[y] = inkedCols[x] = true;
      }
    }
    const garment = resample(inked, boxWeights(inked, SIDE, boxOf(inkedRows, inkedCols)));
    const field = new Float32Array(PIXELS);
    const top = (SIDE - garment.h) >> 1;
    const left = (SIDE - garment.w) >> 1;
    for (let y = 0; y < garment.h; y++) {
      for (let x = 0; x < garment.w; x++) field[(top + y) * SIDE + left + x] = garment.v[y * garment.w + x];
    }
    return field;
  }

  // --- photographs (images.photo_ink, with SciPy's ndimage filters written out) ---

  // SciPy's "reflect" boundary: (d c b a | a b c d | d c b a).
  function reflect(i, n) {
    const period = 2 * n;
    const j = ((i % period) + period) % period;
    return j < n ? j : period - 1 - j;
  }

  // A 1-D filter along the rows (axis 0) or the columns (axis 1): fn(values around each pixel).
  function alongAxis(img, axis, radius, fn) {
    const { h, w, v } = img;
    const out = image(h, w);
    const n = axis === 0 ? h : w;
    const line = new Float64Array(n + 2 * radius);
    for (let other = 0; other < (axis === 0 ? w : h); other++) {
      const at = (i) => (axis === 0 ? i * w + other : other * w + i);
      for (let i = -radius; i < n + radius; i++) line[i + radius] = v[at(reflect(i, n))];
      for (let i = 0; i < n; i++) out.v[at(i)] = fn(line, i + radius);
    }
    return out;
  }

  // scipy.ndimage.gaussian_filter(img, 1.0): radius 4, rows then columns, correlate1d's symmetric sums.
  function gaussian(img) {
    const radius = 4;
    const taps = Array.from({ length: 2 * radius + 1 }, (_, i) => Math.exp(-0.5 * (i - radius) ** 2));
    const sum = taps.reduce((a, b) => a + b, 0);
    const fw = taps.map((t) => t / sum);
    const filter = (line, c) => {
      let s = line[c] * fw[radius];
      for (let d = radius; d > 0; d--) s += (line[c - d] + line[c + d]) * fw[radius - d];
      return s;
    };
    return alongAxis(alongAxis(img, 0, radius, filter), 1, radius, filter);
  }

  function minMaxFilter(img, size, pick) {
    const radius = size >> 1;
    const filter = (line, c) => {
      let best = line[c - radius];
      for (let d = -radius + 1; d <= radius; d++) best = pick(best, line[c + d]);
      return best;
    };
    return alongAxis(alongAxis(img, 0, radius, filter), 1, radius, filter);
  }

  // Connected regions of the marked pixels (8-connected), numbered in the order their first pixel is met.
  function label(marked, h, w) {
    const labels = new Int32Array(h * w);
    const boxes = [];
    const sizes = [];
    const stack = [];
    for (let start = 0; start < h * w; start++) {
      if (!marked[start] || labels[start]) continue;
      const id = sizes.length + 1;
      const box = { top: h, bottom: 0, left: w, right: 0 };
      let size = 0;
      labels[start] = id;
      stack.push(start);
      while (stack.length) {
        const p = stack.pop();
        const y = Math.floor(p / w);
        const x = p % w;
        size++;
        box.top = Math.min(box.top, y);
        box.bottom = Math.max(box.bottom, y + 1);
        box.left = Math.min(box.left, x);
        box.right = Math.max(box.right, x + 1);
        for (let dy = -1; dy <= 1; dy++) {
          for (let dx = -1; dx <= 1; dx++) {
            const yy = y + dy;
            const xx = x + dx;
            const q = yy * w + xx;
            if (yy >= 0 && yy < h && xx >= 0 && xx < w && marked[q] && !labels[q]) {
              labels[q] = id;
              stack.push(q);
            }
          }
        }
      }
      boxes.push(box);
      sizes.push(size);
    }
    return { labels, boxes, sizes };
  }

  // images._digit_components: the largest region away from the frame's edge, and the sizeable ones near it.
  function digitComponents(regions, h, w) {
    const { boxes, sizes } = regions;
    const touches = boxes.map((b) => b.top === 0 || b.left === 0 || b.bottom === h || b.right === w);
    const inside = touches.some((t) => !t) ? touches.map((t) => !t) : touches.map(() => true);
    let largest = 0;
    for (let i = 1; i < sizes.length; i++) {
      if ((inside[i] ? sizes[i] : -1) > (inside[largest] ? sizes[largest] : -1)) largest = i;
    }
    const main = boxes[largest];
    const reach = K.PHOTO_JOIN_REACH * Math.max(main.bottom - main.top, main.right - main.left);
    const chosen = [largest + 1];
    boxes.forEach((b, i) => {
      if (i === largest || !inside[i] || sizes[i] < K.PHOTO_JOIN_SIZE * sizes[largest]) return;
      const gapRows = Math.max(b.top - main.bottom, main.top - b.bottom, 0);
      const gapCols = Math.max(b.left - main.right, main.left - b.right, 0);
      if (Math.max(gapRows, gapCols) <= reach) chosen.push(i + 1);
    });
    return chosen;
  }

  // Otsu's threshold of a 256-bin histogram, with NumPy's bins (images._otsu).
  function otsu(values) {
    let low = Infinity;
    let high = -Infinity;
    for (const v of values) {
      low = Math.min(low, v);
      high = Math.max(high, v);
    }
    if (high <= low) return high;
    const bins = 256;
    const step = (high - low) / bins;
    const edges = Array.from({ length: bins + 1 }, (_, i) => (i === bins ? high : i * step + low));
    const counts = new Float64Array(bins);
    for (const v of values) {
      let i = Math.min(Math.floor(((v - low) / (high - low)) * bins), bins - 1);
      if (v < edges[i]) i--;
      else if (v >= edges[i + 1] && i !== bins - 1) i++;
      counts[i]++;
    }
    let weight = 0;
    let mass = 0;
    const total = values.length;
    let totalMass = 0;
    counts.forEach((c, i) => (totalMass += c * ((edges[i] + edges[i + 1]) / 2)));
    let best = -Infinity;
    let at = 0;
    for (let i = 0; i < bins - 1; i++) {
      weight += counts[i];
      mass += counts[i] * ((edges[i] + edges[i + 1]) / 2);
      const diff = mass / weight - (totalMass - mass) / (total - weight);
      let between = weight * (total - weight) * (diff * diff);
      if (Number.isNaN(between)) between = -1;
      if (between > best) {
        best = between;
        at = i;
      }
    }
    return edges[at + 1];
  }

  // images._shrink: k x k block means bringing the longer side to PHOTO_SIDE or less.
  function shrink(img) {
    const k = Math.ceil(Math.max(img.h, img.w) / K.PHOTO_SIDE);
    const h = Math.floor(img.h / k);
    const w = Math.floor(img.w / k);
    if (k <= 1 || h === 0 || w === 0) return img;
    const out = image(h, w);
    for (let y = 0; y < h * k; y++) {
      for (let x = 0; x < w * k; x++) out.v[Math.floor(y / k) * w + Math.floor(x / k)] += img.v[y * img.w + x];
    }
    out.v.forEach((s, i) => (out.v[i] = s / (k * k)));
    return out;
  }

  // images.photo_ink: the digit's ink in a photo, on black (see its docstring for the steps).
  function photoInk(picture) {
    let img = shrink(picture);
    const middle = median(img.v);
    const low = quantile(img.v, 0.01);
    const high = quantile(img.v, 0.99);
    if (middle - low >= high - middle) img = image(img.h, img.w, img.v.map((v) => 1 - v));
    const { h, w } = img;
    const smooth = gaussian(img);
    const size = Math.max(K.PHOTO_MIN_OPENING, Math.floor(Math.max(h, w) / 8)) | 1;
    const opened = minMaxFilter(minMaxFilter(smooth, size, Math.min), size, Math.max);
    const raised = smooth.v.map((s, i) => s - opened.v[i]);
    const level = median(raised);
    const spread = 1.4826 * median(raised.map((r) => Math.abs(r - level)));
    const threshold = Math.max(otsu(raised), level + K.PHOTO_NOISE_SPREADS * spread);
    const regions = label(
      raised.map((r) => (r > threshold ? 1 : 0)),
      h,
      w,
    );
    if (!regions.sizes.length) throw empty("digit");
    const chosen = digitComponents(regions, h, w);
    const main = regions.boxes[chosen[0] - 1];
    if (Math.max(main.bottom - main.top, main.right - main.left) < K.PHOTO_MIN_DIGIT * Math.max(h, w)) {
      throw empty("digit", ": only specks stand out from the paper");
    }
    const mask = Array.from(regions.labels, (l) => chosen.includes(l));
    const edge = K.PHOTO_EDGE_PIXELS;
    const near = new Uint8Array(h * w); // the mask dilated: 2 steps of 3x3, a 5x5 square
    mask.forEach((m, p) => {
      if (!m) return;
      const y = Math.floor(p / w);
      const x = p % w;
      for (let yy = Math.max(y - edge, 0); yy <= Math.min(y + edge, h - 1); yy++) {
        for (let xx = Math.max(x - edge, 0); xx <= Math.min(x + edge, w - 1); xx++) near[yy * w + xx] = 1;
      }
    });
    const floor = level + K.PHOTO_FLOOR_SPREADS * spread;
    const top = quantile(
      raised.filter((_, p) => mask[p]),
      0.9,
    );
    if (top <= floor) throw empty("digit");
    return image(
      h,
      w,
      raised.map((r, p) => (near[p] ? Math.min(Math.max((r - floor) / (top - floor), 0), 1) : 0)),
    );
  }

  // A picture's gray levels in [0, 1] (row by row) as the model's 784 inputs, as images.preparation does.
  function prepare(gray, width, height) {
    const img = image(height, width, Float64Array.from(gray));
    return spec.preparation === "fashion-mnist" ? toFashionMnist(img) : toMnist(img);
  }

  // --- the input transform: nn.transforms.deskew_images, nn.warp.Warper ---

  function deskew(pixels) {
    const steps = Array.from({ length: SIDE }, (_, i) => i);
    const rows = new Float64Array(SIDE);
    const cols = new Float64Array(SIDE);
    let total = 0;
    let moment = 0;
    for (let y = 0; y < SIDE; y++) {
      for (let x = 0; x < SIDE; x++) {
        const v = pixels[y * SIDE + x];
        rows[y] += v;
        cols[x] += v;
        total += v;
        moment += v * y * x;
      }
    }
    const weight = total > 0 ? total : 1;
    const dot = (a, f) => a.reduce((s, v, i) => s + v * f(steps[i]), 0);
    let my = dot(rows, (s) => s) / weight;
    let mx = dot(cols, (s) => s) / weight;
    const varY = dot(rows, (s) => s * s) / weight - my * my;
    const cov = moment / weight - mx * my;
    const slant = varY > 1e-3 ? cov / Math.max(varY, 1e-3) : 0;
    if (total <= 0) mx = my = K.CENTER;
    const shiftX = mx - K.CENTER - slant * K.CENTER + K.PAD_OFFSET;
    const shiftY = my - K.CENTER + K.PAD_OFFSET;
    const f = FLOAT32 ? Math.fround : (v) => v; // the warp's arithmetic in the model's dtype
    const grid = new Float64Array(K.PAD_SIDE * K.PAD_SIDE); // zero-bordered, pixel (0, 0) at (1, 1)
    for (let y = 0; y < SIDE; y++) {
      for (let x = 0; x < SIDE; x++) grid[(y + K.PAD_OFFSET) * K.PAD_SIDE + x + K.PAD_OFFSET] = pixels[y * SIDE + x];
    }
    const out = new Float64Array(PIXELS);
    for (let y = 0; y < SIDE; y++) {
      const rowX = f(slant * y + shiftX);
      const qy = Math.min(Math.max(f(f(1 * y + shiftY) + 0), 0), K.PAD_MAX);
      const fy = Math.floor(qy);
      for (let x = 0; x < SIDE; x++) {
        const qx = Math.min(Math.max(f(rowX + x), 0), K.PAD_MAX);
        const fx = Math.floor(qx);
        const i = fy * K.PAD_SIDE + fx;
        const tx = qx - fx;
        const top = f(grid[i] + f(f(grid[i + 1] - grid[i]) * tx));
        const bottom = f(grid[i + K.PAD_SIDE] + f(f(grid[i + K.PAD_SIDE + 1] - grid[i + K.PAD_SIDE]) * tx));
        out[y * SIDE + x] = Math.min(Math.max(f(top + f(f(bottom - top) * (qy - fy))), 0), 1);
      }
    }
    return out;
  }

  // --- the layers ---

  const ACTIVATIONS = {
    identity: (z) => z,
    sigmoid: (z) => 0.5 + 0.5 * Math.tanh(0.5 * z), // as activations.sigmoid computes it
    tanh: Math.tanh,
    relu: (z) => (z > 0 ? z : 0),
  };

  // The activation over values a, in place; softmax over each run of `group` values (a map's channels).
  function activate(a, name, group) {
    if (name !== "softmax") {
      const f = ACTIVATIONS[name];
      for (let i = 0; i < a.length; i++) a[i] = f(a[i]);
      return a;
    }
    for (let start = 0; start < a.length; start += group) {
      let top = -Infinity;
      for (let i = start; i < start + group; i++) top = Math.max(top, a[i]);
      let sum = 0;
      for (let i = start; i < start + group; i++) sum += a[i] = Math.exp(a[i] - top);
      for (let i = start; i < start + group; i++) a[i] /= sum;
    }
    return a;
  }

  function buildLayer(layer) {
    const w = layer.offset === undefined ? null : params.subarray(layer.offset);
    const run = {
      dense: (x) => dense(layer, w, x),
      conv2d: (x) => conv(layer, w, x),
      maxpool2d: (x) => pool(layer, x, true),
      avgpool2d: (x) => pool(layer, x, false),
      batchnorm: (x) => batchNorm(layer, w, x),
      dropout: (x) => x, // the identity outside training
    }[layer.kind];
    return run;
  }

  // z = x @ weights + biases, the (n_in + 1, n_out) array's last row the biases.
  function dense(layer, w, x) {
    const { inputs, outputs } = layer;
    const z = Float64Array.from(w.subarray(inputs * outputs, (inputs + 1) * outputs));
    for (let i = 0; i < inputs; i++) {
      const xi = x[i];
      if (xi === 0) continue; // most pixels are background
      const row = i * outputs;
      for (let j = 0; j < outputs; j++) z[j] += xi * w[row + j];
    }
    return activate(z, layer.activation, outputs);
  }

  // Kernels (K, K, C, F) as (K * K * C + 1, F) rows, biases last; padding zeros around the (H, W, C) input.
  function conv(layer, w, x) {
    const { height: h, width: wd, channels: c, filters: f, kernel: k, padding: p } = layer;
    const oh = h + 2 * p - k + 1;
    const ow = wd + 2 * p - k + 1;
    const biases = w.subarray(k * k * c * f, (k * k * c + 1) * f);
    const z = new Float64Array(oh * ow * f);
    for (let oy = 0; oy < oh; oy++) {
      for (let ox = 0; ox < ow; ox++) {
        const out = (oy * ow + ox) * f;
        for (let j = 0; j < f; j++) z[out + j] = biases[j];
        for (let ky = 0; ky < k; ky++) {
          const iy = oy + ky - p;
          if (iy < 0 || iy >= h) continue;
          for (let kx = 0; kx < k; kx++) {
            const ix = ox + kx - p;
            if (ix < 0 || ix >= wd) continue;
            for (let ch = 0; ch < c; ch++) {
              const v = x[(iy * wd + ix) * c + ch];
              if (v === 0) continue;
              const row = ((ky * k + kx) * c + ch) * f;
              for (let j = 0; j < f; j++) z[out + j] += v * w[row + j];
            }
          }
        }
      }
    }
    return activate(z, layer.activation, f);
  }

  function pool(layer, x, max) {
    const { height: h, width: w, channels: c, pool: p } = layer;
    const oh = h / p;
    const ow = w / p;
    const out = new Float64Array(oh * ow * c);
    for (let oy = 0; oy < oh; oy++) {
      for (let ox = 0; ox < ow; ox++) {
        for (let ch = 0; ch < c; ch++) {
          let acc = max ? -Infinity : 0;
          for (let dy = 0; dy < p; dy++) {
            for (let dx = 0; dx < p; dx++) {
              const v = x[((oy * p + dy) * w + ox * p + dx) * c + ch];
              acc = max ? Math.max(acc, v) : acc + v;
            }
          }
          out[(oy * ow + ox) * c + ch] = max ? acc : acc / (p * p);
        }
      }
    }
    return out;
  }

  // The running averages' normalization, folded into a scale and a shift per feature (BatchNorm.forward).
  function batchNorm(layer, w, x) {
    const n = layer.features;
    const y = new Float64Array(x.length);
    for (let i = 0; i < x.length; i++) y[i] = x[i] * w[i % n] + w[n + (i % n)];
    return activate(y, layer.activation, n);
  }

  // Each class's probability for 784 pixels in [0, 1], as Network.probabilities gives it.
  function classify(pixels) {
    if (pixels.length !== PIXELS) throw new Error(`expected ${PIXELS} pixels, got ${pixels.length}`);
    let a = FLOAT32 ? Float32Array.from(pixels) : Float64Array.from(pixels); // the network's dtype
    if (spec.transform === "deskew") a = deskew(a);
    for (const layer of layers) a = layer(a);
    const out = Array.from(a);
    if (spec.output !== "softmax") {
      const total = out.reduce((s, v) => s + v, 0);
      return out.map((v) => v / (total === 0 ? 1 : total));
    }
    return out;
  }

  // The answer serve's /api/predict gives for a picture (gray levels in [0, 1]).
  function answer(gray, width, height) {
    const input = prepare(gray, width, height);
    const probabilities = classify(input);
    let best = 0;
    probabilities.forEach((p, k) => {
      if (p > probabilities[best]) best = k;
    });
    return { image: Array.from(input), probabilities, prediction: best, probability_kind: spec.probability_kind };
  }

  window.mnistNN = {
    classify,
    prepare: (gray, width, height) => Array.from(prepare(gray, width, height)),
    // What app.js asks of its backend (serve's API, or this).
    model: async () => spec.info,
    // A drawing: gray levels 0-255, as the server divides them.
    drawing: async (raster) => answer(Array.from(raster.levels, (v) => v / 255), raster.width, raster.height),
    // A picture shown on the canvas: its luminance as Pillow's convert("L") computes it from the
    // PNG the server would get (ITU-R 601-2 in 16-bit fixed point), over white paper.
    picture: async (canvas) => {
      const { data, width, height } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
      const gray = new Float64Array(width * height);
      for (let i = 0, j = 0; i < gray.length; i++, j += 4) {
        const level = (data[j] * 19595 + data[j + 1] * 38470 + data[j + 2] * 7471 + 0x8000) >> 16;
        const alpha = data[j + 3] / 255;
        gray[i] = (level / 255) * alpha + (1 - alpha);
      }
      return answer(gray, width, height);
    },
  };
})();
