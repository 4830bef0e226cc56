"""Speed figures of the first vertical slice (a benchmark, not a test: it prints, it does not assert).

    .venv/bin/python benchmarks/bench_slice.py [--quick]

Prints the cycle model on a 4096×4096 ternary matrix-vector product (64 lanes × 16 rows): simulated MACs/s and
cycles/s, at full throughput and under random stalls, against the functional reference (an int64 matmul of the
same integers, models.bitnet.ternary_accumulate) timed in the same process. The RTL figures (Verilator and Icarus
speed, cocotb vectors/s, Verilog generation) are in ``bench_rtl.py``.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hw.contract import Traffic  # noqa: E402
from benchmarks.timing import best_of  # noqa: E402
from hw.params import TernaryMacParams  # noqa: E402
from models.bitnet import ternary_accumulate  # noqa: E402
from sim.ternary_mac import simulate  # noqa: E402


def bench_cycle_model(repeat):
    rng = np.random.default_rng(0)
    p = TernaryMacParams(lanes=64, rows=16, max_k=4096)
    w = rng.integers(-1, 2, (4096, 4096)).astype(np.int8)
    x = rng.integers(-128, 128, (1, 4096)).astype(np.int8)
    simulate(p, w[:16, :64], x[:, :64])                       # compile / load the Numba cache
    t_sim, run = best_of(lambda: simulate(p, w, x), repeat)
    t_ref, ref = best_of(lambda: ternary_accumulate(w, x), repeat)
    assert (run.acc == ref).all()
    stalled = Traffic.random(1)
    t_stall, srun = best_of(lambda: simulate(p, w, x, stalled), repeat)
    macs = 4096 * 4096
    print("cycle model, 4096×4096 mat-vec on 64 lanes × 16 rows (best of %d)" % repeat)
    print(f"  full throughput: {run.cycles:,} cycles in {t_sim * 1e3:.1f} ms → {macs / t_sim / 1e6:,.0f} M MAC/s, "
          f"{run.cycles / t_sim / 1e6:.2f} M cycles/s")
    print(f"  random stalls:   {srun.cycles:,} cycles in {t_stall * 1e3:.1f} ms → "
          f"{srun.cycles / t_stall / 1e6:.2f} M cycles/s")
    print(f"  baseline int64 matmul (no timing): {t_ref * 1e3:.1f} ms → cycle model / matmul = {t_sim / t_ref:.2f}×")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and vectors")
    args = ap.parse_args()
    bench_cycle_model(3 if args.quick else 7)


if __name__ == "__main__":
    main()
