"""The network itself: activations, costs, layers, ``Network(layers)`` and the per-example reference.

Pure NumPy math: nothing here does I/O or knows about training loops, files or
the command line.
"""
