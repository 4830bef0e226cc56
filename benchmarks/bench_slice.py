"""Speed figures of the first vertical slice (a benchmark, not a test: it prints, it does not assert).

    .venv/bin/python benchmarks/bench_slice.py [--quick]

Prints
* the cycle model on a 4096×4096 ternary matrix-vector product (64 lanes × 16 rows): simulated MACs/s and
  cycles/s, at full throughput and under random stalls, against the functional reference (an int64
  matmul of the same integers, models.bitnet.ternary_accumulate) timed in the same process;
* cocotb + Icarus vectors/s (and cycles/s) on the vector-suite cases, against Amaranth's Python simulator
  on the same vectors;
* Verilog generation time for three engine sizes, against elaboration alone (no Yosys).
"""

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hw.contract import Traffic  # noqa: E402
from benchmarks.timing import best_of  # noqa: E402
from hw.export import build_component, generate  # noqa: E402
from hw.params import TernaryMacParams  # noqa: E402
from models.bitnet import ternary_accumulate  # noqa: E402
from rtl_tests.levels import amaranth_level, cocotb_level  # noqa: E402
from rtl_tests.vectors import CASES, build_problem  # noqa: E402
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


def bench_rtl(cases, n_vectors):
    print(f"RTL simulation, {n_vectors} vectors per case, full throughput (one Icarus launch per case)")
    print(f"  {'case':22s} {'cocotb vec/s':>12s} {'cycles/s':>10s} {'amaranth vec/s':>15s} {'cocotb/amaranth':>16s}")
    for case in cases:
        vec = build_problem(case).head(n_vectors)
        p, w, x = case.params, vec.weights, vec.acts
        with tempfile.TemporaryDirectory() as d:
            t_cocotb, [crun] = best_of(lambda: cocotb_level(p, w, x, [Traffic.full()], work_dir=Path(d)), 1)
        t_am, [arun] = best_of(lambda: amaranth_level(p, w, x, [Traffic.full()]), 1)
        assert (crun.acc == vec.expected["acc"]).all() and (arun.acc == vec.expected["acc"]).all()
        n = x.shape[0]
        print(f"  {case.name:22s} {n / t_cocotb:12.0f} {crun.cycles / t_cocotb:10.0f} {n / t_am:15.0f} "
              f"{t_am / t_cocotb:15.2f}×")
    print("  (cocotb times include the simulator launch, ~1 s; vectors = activation vectors × all M rows)")


def bench_verilog():
    print("Verilog generation (verilog.convert through the builtin Yosys)")
    for p in (TernaryMacParams(lanes=8, rows=4, max_k=64), TernaryMacParams(lanes=64, rows=4, max_k=4096),
              TernaryMacParams(lanes=64, rows=16, max_k=4096)):
        generate(p)   # warm the Yosys WebAssembly cache once per size
        t_gen, text = best_of(lambda: generate(p), 2)

        def elaborate_only():
            from amaranth.hdl import Fragment
            return Fragment.get(build_component(p), None)
        t_elab, _ = best_of(elaborate_only, 2)
        print(f"  {p.module_name:40s} {t_gen:6.2f} s, {len(text.splitlines()):7,} lines; "
              f"elaboration alone {t_elab:5.2f} s ({t_gen / t_elab:.1f}×)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and vectors")
    args = ap.parse_args()
    bench_cycle_model(3 if args.quick else 7)
    print()
    names = ("ternary/odd-k", "ternary/k4096") if args.quick else \
        ("ternary/odd-k", "ternary/lanes-12-one-stage", "ternary/k4096")
    bench_rtl([c for c in CASES if c.name in names], 200 if args.quick else 1000)
    print()
    bench_verilog()


if __name__ == "__main__":
    main()
