"""Whole-model simulator speed (a benchmark, not a test: it prints figures; its one check is that fast and
stepped mode agree on the cycles it times).

    .venv/bin/python benchmarks/bench_model.py [--quick]

Every figure is a program's: the workload is compiled (sim.compiler) and the program timed (sim.machine). Prints,
warm (Numba caches loaded, one untimed run first), best of N:
* BERT-base forward at seq 128 under BiBERT, TernaryBERT and BitNet b1.58 on their built-in designs — workload
  extraction, compilation, timing and energy pricing together (goal ≤ 10 ms) — split into compile and time, and
  against workload extraction alone (the analytical op list the compiler starts from), timed in the same process;
* LLaMA-7B under BitNet b1.58, BiLLM and QBB: one decode step after a 512-token prefill, measured as the
  difference between the 512 + 1 and the 512 + 0 runs (goal ≤ 50 ms), and the whole 512 + 128 run;
* fast against stepped mode on a small BERT (the two agree on cycles; stepped runs every MATMUL through its
  engine's cycle-by-cycle kernel): the speed-up the fast mode buys;
* the stepped machine executing the issue's blocks on real data (sim.blocks), bit-exact against models.intpath.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import best_of  # noqa: E402
from hw.accelerator import load_design  # noqa: E402
from models.config import load_config  # noqa: E402
from models.schemes import get_scheme  # noqa: E402
from models.workload import extract_workload  # noqa: E402
from sim.energy import area, price_events  # noqa: E402
from sim.compiler import compile_workload  # noqa: E402
from sim.machine import run as run_program  # noqa: E402
from sim.model import simulate_model  # noqa: E402
from sim.tech import get_technology  # noqa: E402

TECH = get_technology("45nm")




def full_run(model, scheme, design, seq, decode):
    run = simulate_model(model, scheme, design, seq_len=seq, decode_steps=decode)
    energy = price_events(run.events(), TECH, run.design)
    area(run.design, TECH)
    return run, energy


def bench_bert(repeat):
    print(f"BERT-base forward, seq 128, warm, best of {repeat} (extract + compile + time + price energy + area)")
    cfg = load_config("bert-base")
    for scheme, design in (("bibert", "xnor"), ("ternarybert", "ternary"), ("bitnet-b1.58", "ternary")):
        acc = load_design(design)
        t, (run, energy) = best_of(lambda: full_run(cfg, scheme, acc, 128, 0), repeat, warm=True)
        t_wl, wl = best_of(lambda: extract_workload(cfg, get_scheme(scheme), seq_len=128), repeat, warm=True)
        t_c, compiled = best_of(lambda: compile_workload(wl, acc), repeat, warm=True)
        t_r, _ = best_of(lambda: run_program(compiled.program, acc), repeat, warm=True)
        print(f"  {scheme:14s} on {design:8s}: {t * 1e3:6.1f} ms ({len(wl.ops)} ops → {len(compiled.program):,} "
              f"instructions, {run.cycles:,} cycles, {energy.total() * 1e3:.2f} mJ); of which compile "
              f"{t_c * 1e3:.1f} ms, time {t_r * 1e3:.1f} ms; workload extraction alone {t_wl * 1e3:.2f} ms → "
              f"whole run / extraction = {t / t_wl:.0f}×")


def bench_llama(repeat, steps):
    print(f"LLaMA-7B, prefill 512, warm, best of {repeat}")
    cfg = load_config("llama-7b")
    for scheme, design in (("bitnet-b1.58", "ternary"), ("billm", "billm"), ("qbb", "binary-basis")):
        t0, _ = best_of(lambda: full_run(cfg, scheme, design, 512, 0), repeat, warm=True)
        t1, _ = best_of(lambda: full_run(cfg, scheme, design, 512, 1), repeat, warm=True)
        tn, (run, energy) = best_of(lambda: full_run(cfg, scheme, design, 512, steps), 1, warm=True)
        per_step = run.phase_cycles("decode") / steps
        print(f"  {scheme:14s} on {design:12s}: prefill {t0:5.2f} s; one decode step {max(t1 - t0, 0) * 1e3:6.1f} ms "
              f"(512+1 run {t1:.2f} s); 512+{steps} run {tn:5.2f} s = {run.cycles:,} cycles "
              f"({run.latency_s * 1e3:,.1f} ms simulated, {per_step:,.0f} cycles a decode step), "
              f"{energy.total():.3f} J")


def bench_stepped(repeat):
    cfg = {"model_type": "bert", "hidden_size": 256, "num_hidden_layers": 1, "num_attention_heads": 4,
           "intermediate_size": 1024, "vocab_size": 50, "max_position_embeddings": 64, "type_vocab_size": 2}
    design = load_design("ternary")
    t_fast, fast = best_of(lambda: simulate_model(cfg, "bitnet-b1.58", design, seq_len=32), repeat, warm=True)
    t_step, step = best_of(lambda: simulate_model(cfg, "bitnet-b1.58", design, seq_len=32, stepped=True), 1,
                           warm=True)
    assert fast.cycles == step.cycles
    print(f"fast vs stepped, 1-layer BERT (hidden 256, seq 32) on 'ternary': {fast.cycles:,} cycles both; "
          f"fast {t_fast * 1e3:.1f} ms, stepped {t_step * 1e3:.1f} ms (stepped runs each distinct MATMUL shape "
          f"through its engine's kernel once; ratio {t_step / t_fast:.1f}×)")


def bench_blocks(repeat):
    import numpy as np
    import torch

    from hw.accelerator import Accelerator
    from models import intpath as P
    from sim.blocks import compile_path, read_stages

    g = torch.Generator().manual_seed(0)

    def rand(*shape, scale=1.0):
        return torch.randn(*shape, generator=g) * scale

    d = load_design("xnor").to_dict()
    d["engines"][1]["zero_policy"] = "pos"
    xnor = Accelerator.from_dict(d)
    cases = [
        ("BiBERT attention, 16 tokens, d 384, 12 heads", xnor, P.bibert_attention_block(
            rand(16, 384), *[rand(384, 384, scale=0.05) for _ in range(4)], heads=12)),
        ("BitNet b1.58 FFN, 16 tokens, 384 → 1536 → 384", load_design("ternary"), P.bitnet_ffn_block(
            rand(16, 384), rand(1536, 384, scale=0.05), rand(1536, 384, scale=0.05), rand(384, 1536, scale=0.05))),
    ]
    print(f"the stepped machine executing blocks on real data, warm, best of {repeat}")
    for name, design, path in cases:
        t_c, bp = best_of(lambda: compile_path(path, design), repeat, warm=True)
        t_s, pr = best_of(lambda: run_program(bp.program, design, bp.memories(), stepped=True), repeat, warm=True)
        got = read_stages(bp, pr.memories)
        exact = all(np.array_equal(got[s.name], s.tensor) for s in path.stages if s.name in got)
        assert exact and run_program(bp.program, design).cycles == pr.cycles
        print(f"  {name}: {len(bp.program)} instructions, {pr.cycles:,} cycles; compile {t_c * 1e3:.1f} ms, "
              f"stepped execution {t_s * 1e3:.1f} ms; every stage bit-exact with models.intpath")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and decode steps")
    args = ap.parse_args()
    bench_bert(2 if args.quick else 5)
    print()
    bench_llama(1 if args.quick else 3, 16 if args.quick else 128)
    print()
    bench_stepped(2 if args.quick else 5)
    print()
    bench_blocks(2 if args.quick else 5)


if __name__ == "__main__":
    main()
