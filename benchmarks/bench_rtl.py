"""RTL speed figures (a benchmark, not a test: it prints, it does not assert).

    .venv/bin/python benchmarks/bench_rtl.py [--quick] [--skip-icarus-engine]

Prints, each figure beside a baseline run in the same process:
* Verilog generation time of every unit and size the vector suite uses, plus the main job's 64×16 ternary
  engine, now and with the generator of commit ``b74b4b2`` (loaded from git into the same process);
* the 64×16 ternary engine (max_k 2560) on one token of the main job's layer (17,289 cycles): build time and
  simulated cycles/s in Verilator and in Icarus (Icarus on the first eighth of the token: it runs at tens of
  cycles per second), and the ratio;
* cocotb vectors/s of vector-suite cases on Verilator and on Icarus (models built before timing);
* whole-process start-up of ``lowbit --help`` and of ``lowbit simulate model --model bert-base --scheme bibert
  --design xnor --json``.

Build times are of a cold cache (a fresh ``LOWBIT_CACHE`` in a temporary folder), except where noted.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.timing import best_of, module_from_git  # noqa: E402
from hw.contract import Traffic  # noqa: E402
from hw.params import TernaryMacParams  # noqa: E402
from rtl_tests.vectors import CASES, build_problem  # noqa: E402


# -- Verilog generation ----------------------------------------------------------------------------------------

#: The last commit before issue 9's generator changes: its hw/engine.py is the "before" of the generation figures.
BEFORE_COMMIT = "b74b4b2"


def _engines_before():
    """The engine classes of :data:`BEFORE_COMMIT`, loaded from git beside the current ``hw`` package (they use its
    parameter classes and helpers, which the change left compatible), or None without git history."""
    module = module_from_git(BEFORE_COMMIT, "hw/engine.py", "hw")
    return None if module is None else module.ENGINES


def _generate_before(engines, p):
    """Generation as it was: the old engine, Amaranth's convert with the cyclic garbage collector running."""
    from amaranth.back import verilog

    return verilog.convert(engines[p.kind](p), name=p.module_name, emit_src=False)


def bench_generation(quick: bool):
    from hw.export import generate

    sizes = {c.params.module_name: c.params for c in CASES}
    main = TernaryMacParams(lanes=64, rows=16, max_k=2560)
    sizes[main.module_name] = main
    before = _engines_before()
    generate(CASES[0].params)                      # Yosys' WebAssembly is compiled once per process
    print("Verilog generation (hw.export.generate: elaboration + Amaranth's netlist + builtin Yosys), best of "
          f"{1 if quick else 2}; before = hw/engine.py of {BEFORE_COMMIT} in this process"
          + ("" if before else " (unavailable: no git history)"))
    print(f"  {'module':52s} {'now':>7s} {'before':>8s} {'speed-up':>9s} {'lines':>8s}")
    worst = 0.0
    for name, p in sizes.items():
        t_new, text = best_of(lambda: generate(p), 1 if quick else 2)
        worst = max(worst, t_new)
        if before is None:
            print(f"  {name:52s} {t_new:6.2f}s {'':>8s} {'':>9s} {len(text.splitlines()):8,}")
            continue
        t_old, _ = best_of(lambda: _generate_before(before, p), 1)
        print(f"  {name:52s} {t_new:6.2f}s {t_old:7.2f}s {t_old / t_new:8.1f}× {len(text.splitlines()):8,}")
    print(f"  slowest now: {worst:.2f} s")


# -- the 64×16 engine in Verilator and Icarus ----------------------------------------------------------------------

def _main_token():
    import torch

    from models import bitnet

    g = torch.Generator().manual_seed(0)
    w = torch.randn(6912, 2560, generator=g) * 0.02
    x = torch.randn(8, 2560, generator=g)[:1]
    [main] = bitnet.linear_view(w, x).passes
    return main.weight_codes, main.act_codes, main.accumulate()


def _bench_run(manifest, jobs, simulator, cache):
    from rtl_tests.simulators import build_model
    from rtl_tests.streams import run_cocotb

    t0 = time.perf_counter()
    model = build_model(simulator, manifest.parent / f"{manifest.stem}.v", manifest.stem, cache_dir=cache)
    t_build = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        runs = run_cocotb(manifest, jobs, simulator=simulator, work_dir=Path(d), cache_dir=cache)
        t_run = time.perf_counter() - t0
        data = np.load(Path(d) / "result.npz")
        bench_cycles, bench_s = int(data["bench_cycles"]), float(data["bench_seconds"])
    return model, t_build, t_run, runs, bench_cycles, bench_s


def bench_engine(skip_icarus: bool):
    from hw.export import write_unit
    from rtl_tests.levels import collect_fields, stream_job

    p = TernaryMacParams(lanes=64, rows=16, max_k=2560)
    w, x, expected = _main_token()
    print(f"64×16 ternary engine ({p.module_name}), the main job's layer 6912×2560")
    with tempfile.TemporaryDirectory() as d:
        cache = Path(d) / "cache"
        unit = write_unit(p, Path(d) / "unit")
        full = [stream_job(p, w, x, Traffic.full())]
        model, t_build, t_run, [run], cyc, secs = _bench_run(unit.manifest_path, full, "verilator", cache)
        got = collect_fields(p, run, w, x)["acc"]
        assert np.array_equal(got, expected) and run.cycles == p.cycles(6912, 2560)
        v_rate = cyc / secs
        print(f"  verilator: build {t_build:5.1f} s (cold; verilate + C++ with the shared run-time library); one "
              f"token = {run.cycles:,} cycles: launch-to-result {t_run:.2f} s, stream loop {secs:.2f} s → "
              f"{v_rate:,.0f} cycles/s; bit-exact, cycles equal")
        t0 = time.perf_counter()
        again = _bench_run(unit.manifest_path, full, "verilator", cache)
        print(f"  verilator again (cached model): build lookup {again[1]:.2f} s, launch-to-result {again[2]:.2f} s "
              f"({time.perf_counter() - t0:.2f} s in all)")
        if skip_icarus:
            return
        m8 = 6912 // 8                                            # an eighth of the token: 54 row blocks
        part = [stream_job(p, w[:m8], x, Traffic.full())]
        _, t_build_i, t_run_i, [irun], icyc, isecs = _bench_run(unit.manifest_path, part, "icarus", cache)
        assert np.array_equal(collect_fields(p, irun, w[:m8], x)["acc"], expected[:, :m8])
        i_rate = icyc / isecs
        print(f"  icarus:    build {t_build_i:5.1f} s (iverilog); {irun.cycles:,} cycles (an eighth of the token): "
              f"launch-to-result {t_run_i:.1f} s, stream loop {isecs:.1f} s → {i_rate:,.0f} cycles/s; bit-exact")
        print(f"  verilator / icarus: {v_rate / i_rate:,.0f}× cycles/s; one token would take Icarus about "
              f"{run.cycles / i_rate:,.0f} s of stream loop, Verilator {secs:.1f} s")


# -- vector suite on both simulators ---------------------------------------------------------------------------

def bench_vectors(quick: bool):
    from rtl_tests.levels import assert_same_fields, cocotb_level

    names = ("ternary/odd-k", "xnor/linear-odd-k-strict") if quick else \
        ("ternary/odd-k", "ternary/k4096", "xnor/linear-odd-k-strict", "bamm/xnor-pos", "binary-basis/billm",
         "int8/odd")
    print("cocotb vector suite, 1,003+ vectors per case at full throughput (models built before timing; the time "
          "is one simulator launch: start-up, cocotb and the vectors)")
    print(f"  {'case':28s} {'verilator vec/s':>16s} {'icarus vec/s':>13s} {'ratio':>7s} {'verilator cycles/s':>19s}")
    with tempfile.TemporaryDirectory() as d:
        for case in (c for c in CASES if c.name in names):
            prob = build_problem(case)
            rates = {}
            for sim in ("verilator", "icarus"):
                cocotb_level(case.params, prob.weights, prob.acts[:4], [Traffic.full()], work_dir=Path(d) / "warm",
                             alpha=prob.alpha, simulator=sim)     # builds (or finds) the model
                t, [run] = best_of(lambda: cocotb_level(case.params, prob.weights, prob.acts, [Traffic.full()],
                                                        work_dir=Path(d) / sim, alpha=prob.alpha, simulator=sim), 1)
                assert_same_fields(prob.expected, run)
                rates[sim] = (prob.tokens / t, run.cycles / t)
            v, i = rates["verilator"], rates["icarus"]
            print(f"  {case.name:28s} {v[0]:16,.0f} {i[0]:13,.0f} {v[0] / i[0]:6.1f}× {v[1]:19,.0f}")


# -- CLI start-up ------------------------------------------------------------------------------------------------

def bench_cli(repeat: int):
    exe = str(Path(sys.executable).with_name("lowbit"))
    commands = {
        "lowbit --help": [exe, "--help"],
        "lowbit simulate model --model bert-base --scheme bibert --design xnor --json":
            [exe, "simulate", "model", "--model", "bert-base", "--scheme", "bibert", "--design", "xnor", "--json"],
        "python -c pass (the interpreter alone)": [sys.executable, "-c", "pass"],
    }
    print(f"whole-process wall time, best of {repeat} (after one warm-up run)")
    for label, cmd in commands.items():
        def run():
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ})
        t, _ = best_of(run, repeat, warm=True)
        print(f"  {label:80s} {t:6.2f} s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer sizes, cases and repeats")
    ap.add_argument("--skip-icarus-engine", action="store_true",
                    help="skip the 64×16 engine on Icarus (its compile alone takes about a minute)")
    args = ap.parse_args()
    bench_cli(3 if args.quick else 5)
    print()
    bench_generation(args.quick)
    print()
    bench_vectors(args.quick)
    print()
    bench_engine(args.skip_icarus_engine)


if __name__ == "__main__":
    main()
