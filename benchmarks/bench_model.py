"""Whole-model simulator speed (a benchmark, not a test: it prints figures; its one check is that fast and
stepped mode agree on the cycles it times).

    .venv/bin/python benchmarks/bench_model.py [--quick]

Prints, warm (Numba caches loaded, one untimed run first), best of N:
* BERT-base forward at seq 128 under BiBERT, TernaryBERT and BitNet b1.58 on their built-in designs —
  workload extraction, timing and energy pricing together (goal ≤ 1 s) — against workload extraction alone
  (the analytical op list the simulator starts from), timed in the same process;
* LLaMA-7B under BitNet b1.58, BiLLM and QBB: one decode step after a 512-token prefill, measured as the
  difference between the 512 + 1 and the 512 + 0 runs (goal ≤ 1 s), and the whole 512 + 128 run;
* fast against stepped mode on a small BERT (the two agree on cycles; stepped computes real values cycle
  by cycle): the speed-up the fast mode buys.
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
from sim.model import simulate_model  # noqa: E402
from sim.tech import get_technology  # noqa: E402

TECH = get_technology("45nm")




def full_run(model, scheme, design, seq, decode):
    run = simulate_model(model, scheme, design, seq_len=seq, decode_steps=decode)
    energy = price_events(run.events(), TECH, run.design)
    area(run.design, TECH)
    return run, energy


def bench_bert(repeat):
    print(f"BERT-base forward, seq 128, warm, best of {repeat} (simulate + price energy + area)")
    cfg = load_config("bert-base")
    for scheme, design in (("bibert", "xnor"), ("ternarybert", "ternary"), ("bitnet-b1.58", "ternary")):
        t, (run, energy) = best_of(lambda: full_run(cfg, scheme, design, 128, 0), repeat, warm=True)
        t_wl, wl = best_of(lambda: extract_workload(cfg, get_scheme(scheme), seq_len=128), repeat, warm=True)
        print(f"  {scheme:14s} on {design:8s}: {t * 1e3:7.1f} ms ({len(wl.ops)} ops, {run.cycles:,} cycles, "
              f"{energy.total() * 1e3:.2f} mJ); workload extraction alone {t_wl * 1e3:.1f} ms → "
              f"simulator / extraction = {t / t_wl:.1f}×")


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
          f"fast {t_fast * 1e3:.1f} ms, stepped {t_step * 1e3:.1f} ms → fast is {t_step / t_fast:.0f}× quicker")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and decode steps")
    args = ap.parse_args()
    bench_bert(2 if args.quick else 5)
    print()
    bench_llama(1 if args.quick else 3, 16 if args.quick else 128)
    print()
    bench_stepped(2 if args.quick else 5)


if __name__ == "__main__":
    main()
