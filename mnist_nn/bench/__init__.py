"""Benchmarks: the machine, accuracy over seeds, training speed and memory."""
