"""Numba cycle-level models of lowbit's units.

Conventions (see ../shared/docs/style.md §4): jitted kernels in ``sim/kernels`` take only NumPy arrays
and scalars and run the whole cycle loop in one call; a thin Python layer owns the parameter object
(``hw.params``), validates inputs and allocates arrays. Registers are modelled with two-phase updates so
the kernel's cycle-by-cycle state matches the RTL's.
"""
