// mnist-nn serve: draw a digit, see what the network makes of it.
//
// The drawing is kept as a list of strokes (for undo) and painted black on white
// into the 280x280 canvas. While you draw, at most one request is in flight and
// one more is sent every DEBOUNCE_MS with the canvas's gray levels (in base64); the server
// prepares them exactly as `mnist-nn predict` prepares an image file and answers
// with the probabilities and the 28x28 image the network was given.
//
// The single-file page of `mnist-nn export --html` runs this script too, after
// standalone.js, which defines window.mnistNN: the model in the page, answering
// as the server does. Whichever answers is the page's backend.
//
// <body data-state> says where the page is: loading, empty, pending (the drawing
// changed, its answer is not shown yet), ready or error. Tests wait on it.
"use strict";

(function () {
  const DEBOUNCE_MS = 120;
  const LINE_WIDTH = 20; // pixels of the 280-pixel canvas: MNIST-like strokes for a digit that fills the box
  const PAPER = "#ffffff";
  const INK = "#000000";

  const pad = document.getElementById("pad");
  const ctx = pad.getContext("2d", { willReadFrequently: true });
  const seen = document.getElementById("seen");
  const seenCtx = seen.getContext("2d");
  const undoButton = document.getElementById("undo");
  const clearButton = document.getElementById("clear");
  const predictionText = document.getElementById("prediction");
  const confidenceText = document.getElementById("confidence");
  const barList = document.getElementById("bars");
  const kindText = document.getElementById("kind");
  const modelText = document.getElementById("model");
  const statusText = document.getElementById("status");
  const pictureBox = document.getElementById("picture");
  const fileInput = document.getElementById("file");
  let classes = null; // the class names of a model that is not of digits
  const backend = window.mnistNN || serverBackend();

  const strokes = []; // each stroke: [{x, y}, ...] in canvas pixels
  let activePointer = null; // the one pointer that draws; other fingers are ignored
  let timer = null; // the pending debounced request
  let inFlight = false;
  let again = false; // the drawing changed while a request was in flight
  let generation = 0; // bumped by clear and undo-to-empty, so late answers are dropped
  let painted = true;
  let answers = 0;

  const bars = [];
  for (let d = 0; d < 10; d++) addBar(d);

  // One bar per class: the digits' 10 until the model says how many classes it has.
  function addBar(d) {
    const item = document.createElement("li");
    item.dataset.digit = String(d);
    const label = document.createElement("span");
    label.textContent = String(d);
    const track = document.createElement("div");
    track.className = "track";
    const fill = document.createElement("div");
    fill.className = "fill";
    track.appendChild(fill);
    const value = document.createElement("span");
    value.className = "value";
    item.append(label, track, value);
    barList.appendChild(item);
    bars.push({ item, fill, value });
  }

  function setBars(names) {
    while (bars.length < names.length) addBar(bars.length);
    bars.splice(names.length).forEach((bar) => bar.item.remove());
    bars.forEach((bar, d) => {
      bar.item.querySelector("span").textContent = names[d];
    });
  }

  // --- drawing ---

  function paint() {
    painted = true;
    ctx.fillStyle = PAPER;
    ctx.fillRect(0, 0, pad.width, pad.height);
    ctx.strokeStyle = INK;
    ctx.fillStyle = INK;
    ctx.lineWidth = LINE_WIDTH;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    for (const stroke of strokes) {
      if (stroke.length === 1) {
        ctx.beginPath();
        ctx.arc(stroke[0].x, stroke[0].y, LINE_WIDTH / 2, 0, 2 * Math.PI);
        ctx.fill();
        continue;
      }
      ctx.beginPath();
      ctx.moveTo(stroke[0].x, stroke[0].y);
      for (let i = 1; i < stroke.length; i++) ctx.lineTo(stroke[i].x, stroke[i].y);
      ctx.stroke();
    }
  }

  function paintSoon() {
    if (painted) {
      painted = false;
      requestAnimationFrame(() => {
        if (!painted) paint();
      });
    }
  }

  function point(event) {
    // Client coordinates -> canvas pixels, whatever size CSS gives the canvas.
    const rect = pad.getBoundingClientRect();
    const x = ((event.clientX - rect.left - pad.clientLeft) * pad.width) / pad.clientWidth;
    const y = ((event.clientY - rect.top - pad.clientTop) * pad.height) / pad.clientHeight;
    return { x: Math.min(Math.max(x, 0), pad.width), y: Math.min(Math.max(y, 0), pad.height) };
  }

  pad.addEventListener("pointerdown", (event) => {
    if (activePointer !== null || (event.pointerType === "mouse" && event.button !== 0)) return;
    event.preventDefault();
    activePointer = event.pointerId;
    pad.setPointerCapture(event.pointerId);
    strokes.push([point(event)]);
    changed();
  });

  pad.addEventListener("pointermove", (event) => {
    if (event.pointerId !== activePointer) return;
    const coalesced = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
    const stroke = strokes[strokes.length - 1];
    for (const e of coalesced.length ? coalesced : [event]) stroke.push(point(e));
    changed();
  });

  function endStroke(event) {
    if (event.pointerId !== activePointer) return;
    activePointer = null;
    changed();
  }
  pad.addEventListener("pointerup", endStroke);
  pad.addEventListener("pointercancel", endStroke);
  pad.addEventListener("lostpointercapture", endStroke);

  function undo() {
    if (!strokes.length) return;
    activePointer = null;
    strokes.pop();
    paint(); // at once, not on the next frame: the page must never show a stroke it has dropped
    changed();
  }

  function clear() {
    strokes.length = 0;
    activePointer = null;
    paint();
    changed();
  }

  undoButton.addEventListener("click", undo);
  clearButton.addEventListener("click", clear);
  document.addEventListener("keydown", (event) => {
    if ((event.ctrlKey || event.metaKey) && !event.shiftKey && event.key.toLowerCase() === "z") {
      event.preventDefault();
      undo();
    } else if (event.key === "Escape") {
      clear();
    }
  });

  // --- asking the server ---

  function changed() {
    paintSoon();
    undoButton.disabled = clearButton.disabled = strokes.length === 0;
    if (strokes.length === 0) {
      generation++;
      clearTimeout(timer);
      timer = null;
      again = false;
      reset();
      return;
    }
    document.body.dataset.state = "pending";
    if (timer === null) timer = setTimeout(predict, DEBOUNCE_MS);
  }

  // The canvas as gray levels: one (0-255) a pixel, row by row.
  function raster() {
    if (!painted) paint();
    const { data, width, height } = ctx.getImageData(0, 0, pad.width, pad.height);
    const levels = new Uint8Array(width * height);
    for (let i = 0, j = 0; i < levels.length; i++, j += 4) {
      levels[i] = Math.round(0.299 * data[j] + 0.587 * data[j + 1] + 0.114 * data[j + 2]);
    }
    return { width, height, levels };
  }

  function toBase64(bytes) {
    // btoa takes a string of char codes 0-255; built in slices, as one call per byte would be slow
    // and one call for all of them can overflow the argument stack.
    let text = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(text);
  }

  // The server's API as the page's backend: each method answers what /api/model or
  // /api/predict answers, or fails with the message to show.
  function serverBackend() {
    async function predict(body) {
      let response;
      try {
        response = await fetch("api/predict", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify(body),
        });
      } catch (error) {
        throw new Error("cannot reach the server: is mnist-nn serve still running?");
      }
      const answer = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
      if (!response.ok || answer.error) throw new Error(answer.error || `HTTP ${response.status}`);
      return answer;
    }
    return {
      model: async () => (await fetch("api/model")).json(),
      // The compact raster: the levels in base64, 105 KB for 280x280, where a JSON array of
      // numbers is 300 KB and costs the server five times the CPU.
      drawing: (raster) =>
        predict({ raster: { width: raster.width, height: raster.height, levels: toBase64(raster.levels) } }),
      picture: (canvas) => predict({ png: canvas.toDataURL("image/png") }),
    };
  }

  // Ask the backend about a drawing (or a picture) and show its answer, unless the page moved on
  // (clear, undo to empty, another picture: a newer generation) while it was on its way.
  async function ask(question, mine) {
    try {
      const answer = await question();
      if (mine === generation) show(answer);
    } catch (error) {
      if (mine === generation) fail(error.message);
    }
  }

  // --- a picture (models of other classes than digits: a garment is shown, not drawn) ---

  async function showPicture(file) {
    if (!file || !file.type.startsWith("image/")) {
      fail("choose a picture: a PNG, JPEG, GIF, BMP or WebP file");
      return;
    }
    let bitmap;
    try {
      bitmap = await createImageBitmap(file);
    } catch (error) {
      fail(`cannot read ${file.name} as a picture`);
      return;
    }
    // The picture, scaled to fit the box on white paper: what is shown is what is sent.
    const scale = Math.min(pad.width / bitmap.width, pad.height / bitmap.height);
    const width = Math.max(1, Math.round(bitmap.width * scale));
    const height = Math.max(1, Math.round(bitmap.height * scale));
    strokes.length = 0;
    generation++;
    ctx.fillStyle = PAPER;
    ctx.fillRect(0, 0, pad.width, pad.height);
    ctx.drawImage(bitmap, (pad.width - width) / 2, (pad.height - height) / 2, width, height);
    bitmap.close();
    clearButton.disabled = false;
    undoButton.disabled = true;
    document.body.dataset.state = "pending";
    await ask(() => backend.picture(pad), generation);
  }

  fileInput.addEventListener("change", () => showPicture(fileInput.files[0]));
  pad.addEventListener("dragover", (event) => {
    if (classes) event.preventDefault();
  });
  pad.addEventListener("drop", (event) => {
    if (!classes) return;
    event.preventDefault();
    showPicture(event.dataTransfer.files[0]);
  });

  async function predict() {
    timer = null;
    if (inFlight) {
      again = true;
      return;
    }
    if (strokes.length === 0) return;
    inFlight = true;
    const mine = generation;
    try {
      const drawing = raster();
      await ask(() => backend.drawing(drawing), mine);
    } finally {
      inFlight = false;
      if (again) {
        again = false;
        predict();
      } else if (mine === generation && timer === null && document.body.dataset.state === "pending") {
        // The drawing changed only in ways already sent; nothing more to wait for.
        document.body.dataset.state = "ready";
      }
    }
  }

  // --- showing the answer ---

  function show(answer) {
    const p = answer.probabilities;
    const best = answer.prediction;
    predictionText.textContent = classes ? classes[best] : String(best);
    confidenceText.textContent = `${(100 * p[best]).toFixed(1)}% sure`;
    bars.forEach((bar, d) => {
      bar.fill.style.width = `${(100 * p[d]).toFixed(1)}%`;
      bar.value.textContent = `${(100 * p[d]).toFixed(1)}%`;
      bar.item.dataset.probability = String(p[d]);
      bar.item.classList.toggle("top", d === best);
    });
    drawSeen(answer.image);
    kindText.textContent = `Probabilities: ${answer.probability_kind}.`;
    setStatus("");
    answers++;
    document.body.dataset.answers = String(answers);
    if (timer === null && !again) document.body.dataset.state = "ready";
  }

  function drawSeen(image) {
    const pixels = seenCtx.createImageData(28, 28);
    const rows = Array.isArray(image[0]) ? image.flat() : image;
    rows.forEach((v, i) => {
      const level = Math.round(255 * v);
      pixels.data.set([level, level, level, 255], 4 * i);
    });
    seenCtx.putImageData(pixels, 0, 0);
  }

  function reset() {
    predictionText.textContent = "\u2013";
    confidenceText.textContent = "Draw a digit in the box";
    for (const bar of bars) {
      bar.fill.style.width = "0";
      bar.value.textContent = "";
      delete bar.item.dataset.probability;
      bar.item.classList.remove("top");
    }
    seenCtx.fillStyle = "#000000";
    seenCtx.fillRect(0, 0, 28, 28);
    setStatus("");
    document.body.dataset.state = "empty";
  }

  function fail(message) {
    setStatus(message, true);
    document.body.dataset.state = "error";
  }

  function setStatus(message, isError = false) {
    statusText.textContent = message;
    statusText.classList.toggle("error", isError);
  }

  // --- the model ---

  async function loadModel() {
    try {
      const model = await backend.model();
      const sizes = `[${model.sizes.join(", ")}]`;
      const accuracy =
        model.test_accuracy === null
          ? "test accuracy unknown"
          : `test accuracy ${(100 * model.test_accuracy).toFixed(2)}% ` +
            `(${model.test_correct.toLocaleString("en")} / ${model.test_total.toLocaleString("en")})`;
      modelText.textContent = `${model.name} \u00b7 ${sizes} \u00b7 ${accuracy}`;
      modelText.title = `${model.activation} hidden layers, ${model.cost} cost`;
      kindText.textContent = `Probabilities: ${model.probability_kind}.`;
      const digits = Array.from({ length: 10 }, (_, d) => String(d));
      if (Array.isArray(model.classes) && model.classes.join("\n") !== digits.join("\n")) {
        classes = model.classes.map(String);
        setBars(classes);
        barList.setAttribute("aria-label", "Probability of each class");
        document.querySelector("h1").textContent = "Show a picture";
        document.title = "mnist-nn: show a picture";
        pictureBox.hidden = false;
        document.body.dataset.classes = "named";
      }
    } catch (error) {
      modelText.textContent = "Cannot load the model's description.";
    }
  }

  paint();
  reset();
  loadModel();
})();
