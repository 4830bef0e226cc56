"""PyTorch/NumPy references of the low-bit schemes and their integer hardware views.

This is the bottom layer of lowbit: ``hw`` and ``sim`` import from here, never the other way round.
"""
