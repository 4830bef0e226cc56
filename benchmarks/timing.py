"""The one timing rule of the benchmark scripts."""

import time


def best_of(fn, repeat: int, *, warm: bool = False) -> tuple[float, object]:
    """Best wall time of ``repeat`` calls of ``fn`` and the last call's value; ``warm`` makes one untimed call
    first (Numba caches, config parsing) so that the figure is the steady state."""
    if warm:
        fn()
    best, value = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value
