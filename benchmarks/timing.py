"""The one timing rule of the benchmark scripts, and the one way they load a baseline from git history."""

import importlib.util
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_from_git(commit: str, path: str, package: str):
    """The module ``path`` as it was at ``commit``, loaded beside the current package ``package`` (so its relative
    imports resolve to today's modules), or None without git history: the "before" of a same-process baseline."""
    try:
        source = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    name = f"{package}._{Path(path).stem}_before"
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader=None))
    module.__package__ = package
    exec(compile(source, f"{commit}:{path}", "exec"), module.__dict__)
    return module


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
