"""The simulator's Numba kernels import and run whether or not an on-disk cache can be written.

``njit(cache=True)`` raises at import when neither the source folder nor the user cache folder is writable (a
read-only install with an unwritable home); :func:`sim.kernels.cached_njit` then compiles in memory. Run in a
fresh process on a copy of the kernels whose ``__pycache__`` cannot be created, with every warning an error.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

KERNELS = Path(__file__).resolve().parents[1] / "sim" / "kernels"

PROBE = """
import numpy as np
from kernels import engine, systolic
from numba.core.caching import NullCache
cached = [type(f._cache) is not NullCache for f in (engine.run_engine, systolic.run_os)]
# Run one kernel for real: 3 beats, the last ends a reduction, no stalls.
contrib = np.array([[1], [2], [3]], np.int64)
last = np.array([False, False, True])
out_acc = np.zeros((1, 1), np.int64)
out_beat = np.zeros(1, np.int64)
counters = np.zeros(5, np.int64)
status = engine.run_engine(contrib, last, 2, np.ones(1, np.bool_), np.ones(1, np.bool_), 1000, out_acc, out_beat,
                           counters, np.array([0, 3], np.int64), np.zeros(1, np.int64), 1, 1)
print(cached, int(status), int(out_acc[0, 0]))
"""


def _probe(tmp_path, cache_dir):
    pkg = tmp_path / "kernels"
    shutil.copytree(KERNELS, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "__pycache__").write_text("a file where Numba wants its in-tree cache folder")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    # Numba's locators, in order: NUMBA_CACHE_DIR, the source's __pycache__, the user's cache folder (from HOME).
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir), "HOME": str(blocker / "home"),
           "XDG_CACHE_HOME": str(blocker / "cache")}
    return subprocess.run([sys.executable, "-W", "error", "-c", PROBE], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)


def test_kernels_compile_in_memory_when_no_cache_can_be_written(tmp_path):
    proc = _probe(tmp_path, tmp_path / "not-a-dir" / "numba")          # under a file: cannot be created
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["[False,", "False]", "0", "6"]


def test_kernels_use_a_writable_cache(tmp_path):
    proc = _probe(tmp_path, tmp_path / "numba-cache")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["[True,", "True]", "0", "6"]
    assert any((tmp_path / "numba-cache").rglob("*.nbi"))
