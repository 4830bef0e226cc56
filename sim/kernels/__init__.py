"""Numba kernels of the cycle-level simulator (``engine``: stream engines; ``systolic``: the systolic array).

:func:`cached_njit` is the decorator every kernel uses: ``njit`` with Numba's on-disk cache (compiled code is
reused by later processes, so ``lowbit`` commands do not recompile), falling back to compiling in memory where
no cache can be written — a read-only install and an unwritable home, where ``njit(cache=True)`` itself raises
at import ("no locator available").
"""

from numba import njit

__all__ = ["cached_njit"]


def cached_njit(fn):
    """``numba.njit`` with the on-disk cache where Numba can write one, else without (same results)."""
    try:
        return njit(cache=True)(fn)
    except RuntimeError as exc:
        if "no locator available" not in str(exc):
            raise
        return njit(fn)
