"""Amaranth 0.5 generators for lowbit's compute units.

Only ``hw.ternary_mac`` and ``hw.export`` import Amaranth. ``hw.params``, ``hw.layout`` and
``hw.contract`` are plain Python/NumPy so that ``sim`` and the benches can use the same parameter
objects, payload layouts and cycle-count definition without elaborating any hardware.
"""
