"""Accelerator RTL figures (a benchmark, not a test: it prints, it does not assert).

    .venv/bin/python benchmarks/bench_accel.py [--quick]

Prints:
* Verilog generation time of every built-in design's accelerator (``--quick``: ternary and xnor), and the size of
  the Verilog;
* the cold Verilator build time of the bench (accelerator + DRAM model) of a small random design, in a fresh
  ``LOWBIT_CACHE``, and of Icarus;
* simulation speed: the same long data-moving program (tens of thousands of cycles) on Verilator and on Icarus,
  in simulated cycles per second of the run phase (``run`` to ``finished``; the simulator runs freely), against
  the Python simulator's stepped execution of the same program in this process (its baseline), with the ratios;
  then two whole blocks (BitNet b1.58's FFN, BiBERT's attention: MATMULs and POSTs) on Verilator against the
  Python simulator.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.timing import module_from_git  # noqa: E402
from hw.accel.export import generate  # noqa: E402
from hw.accel.plan import AccelPlan  # noqa: E402
from hw.accelerator import BUILTIN_DESIGNS, Accelerator, load_design  # noqa: E402
from isa.program import ProgramBuilder, address  # noqa: E402
from rtl_tests.accel import run_programs  # noqa: E402
from sim.machine import run as sim_run  # noqa: E402
from sim.memory import Memories  # noqa: E402


#: The commit whose buffers built their byte rotators as Amaranth expressions (the baseline of the generation time).
BEFORE_COMMIT = "a1e43c8"


def _line_memory_before():
    """``LineMemory`` of :data:`BEFORE_COMMIT`, loaded from git as a module of the ``hw.accel`` package, or None."""
    module = module_from_git(BEFORE_COMMIT, "hw/accel/memory.py", "hw.accel")
    return None if module is None else module.LineMemory


def _generate_before(plan, line_memory) -> str:
    from amaranth.back import verilog

    from hw.accel.top import Accelerator as Top

    top = Top(plan)
    for mem in top.buffer_memories:          # replaced, never elaborated: not a forgotten submodule
        mem._MustUse__silence = True
    top.buffer_memories = [line_memory(b.size_bytes, b.line_bytes, b.line_bytes, writers=mem.writers,
                                       readers=mem.readers) for b, mem in zip(plan.buffers, top.buffer_memories)]
    return verilog.convert(top, name="lowbit_accel", emit_src=False)


def generation(designs, baseline: str) -> None:
    print("Verilog generation of each design's accelerator (imem 1024 instructions):")
    for name in designs:
        plan = AccelPlan.of(load_design(name))
        t = time.perf_counter()
        text = generate(plan)
        lines = ", ".join(f"{b.name} {b.line_bytes} B" for b in plan.buffers)
        print(f"  {name:16s} {time.perf_counter() - t:6.1f} s  {len(text) / 1e6:5.2f} MB of Verilog  "
              f"(lines {lines}; DMA {plan.design.dma.bytes_per_cycle} B/cycle)", flush=True)
    old = _line_memory_before()
    if old is None:
        print("  (no git history: no baseline)")
        return
    # the baseline's Amaranth rotators grow as the square of the line: 128-byte lines (16 banks × 64 bits) keep it
    # to half a minute (the built-in lines of 512 bytes would take many minutes)
    d = load_design(baseline).to_dict()
    for b in d["buffers"].values():
        b["banks"] = 16
    plan = AccelPlan.of(Accelerator.from_dict(d))
    t = time.perf_counter()
    generate(plan)
    now = time.perf_counter() - t
    t = time.perf_counter()
    _generate_before(plan, old)
    before = time.perf_counter() - t
    print(f"  baseline, {baseline} with 128-byte lines: {now:.1f} s now; {before:.1f} s with the rotators of "
          f"{BEFORE_COMMIT} (Amaranth expressions): {before / now:.1f}x", flush=True)


def _small_design() -> Accelerator:
    # 0.4 GB/s at 400 MHz: 1 byte a cycle, so a few KiB make a long run
    return Accelerator.from_dict({
        "name": "bench-small", "clock_mhz": 400,
        "engines": [{"unit": "int8-mac", "lanes": 8, "rows": 4, "max_k": 256}],
        "buffers": {"weights": {"size_kib": 4, "banks": 2, "word_bits": 64},
                    "activations": {"size_kib": 4, "banks": 2, "word_bits": 64},
                    "kv": {"size_kib": 1, "word_bits": 64}},
        "dram": {"bandwidth_gbps": 0.4, "latency_cycles": 20}, "vector": {"lanes": 8},
    })


def _long_program(rounds: int):
    """LOADs of 4 KiB in 64-byte rows at 1 byte a cycle, each stored back by the store queue (a token each way):
    about 8,200 cycles a round."""
    b = ProgramBuilder("bench-small")
    for r in range(rounds):
        b.emit("LOAD", dram=0, sram=address("weights", 0), rows=64, row_bytes=64, push_next=True,
               pop_next=r > 0)
        b.emit("SYNC", queue=1, pop_prev=True, push_next=True)
        b.emit("STORE", dram=8192, sram=address("weights", 0), rows=64, row_bytes=64, pop_prev=True,
               push_prev=True)
        b.emit("SYNC", queue=1, pop_next=True, push_prev=True)
    b.finish()
    return b.build()


def speed(rounds: int) -> None:
    design = _small_design()
    program = _long_program(rounds)
    mem = Memories.for_design(design, dram=np.arange(8192, dtype=np.uint8).astype(np.uint8), dram_bytes=16384)
    t = time.perf_counter()
    ref = sim_run(program, design, mem, stepped=True)
    py_s = time.perf_counter() - t
    print(f"\nsimulation speed: {len(program)} instructions, {ref.cycles:,} cycles")
    print(f"  Python simulator (stepped, executing): {py_s * 1e3:8.1f} ms  ({ref.cycles / py_s:12,.0f} cycles/s)")
    rates = {}
    with tempfile.TemporaryDirectory() as cache:
        for simulator in ("verilator", "icarus"):
            t = time.perf_counter()
            batch = run_programs(design, [(program, mem)], simulator=simulator, cache_dir=Path(cache))
            total = time.perf_counter() - t
            got = batch.runs[0]
            same = got.cycles == ref.cycles and np.array_equal(got.memories.dram, ref.memories.dram)
            rates[simulator] = batch.program_cycles / batch.run_seconds
            print(f"  {simulator:9s} build (cold) {batch.build_seconds:6.1f} s; run phase {batch.run_seconds:7.3f} s "
                  f"= {rates[simulator]:12,.0f} cycles/s; whole call {total:6.1f} s; cycles and bytes equal to the "
                  f"simulator: {same}", flush=True)
    print(f"  Verilator / Icarus: {rates['verilator'] / rates['icarus']:.1f}x; Verilator / Python simulator: "
          f"{rates['verilator'] / (ref.cycles / py_s):.2f}x")


def block_speed(shape: str, design: str) -> None:
    """A whole block (``rtl_tests.accel``: a models.intpath path compiled by sim.blocks) on the RTL: its run phase in
    cycles/s against the Python simulator's stepped execution of the same program (the baseline, this process)."""
    from rtl_tests.accel import compile_pairs

    [(_, _, d, path, bp)] = compile_pairs([(shape, design)])
    mem = bp.memories()
    t = time.perf_counter()
    ref = sim_run(bp.program, d, mem, stepped=True)
    py_s = time.perf_counter() - t
    batch = run_programs(d, [(bp.program, mem)])
    got = batch.runs[0]
    same = got.cycles == ref.cycles and np.array_equal(got.memories.dram, ref.memories.dram)
    rate = batch.program_cycles / batch.run_seconds
    print(f"\nblock {shape} on {design}: {len(bp.program)} instructions "
          f"({len(bp.program.indices('POST'))} POSTs), {ref.cycles:,} cycles; build {batch.build_seconds:.1f} s"
          f"{' (cached)' if batch.cached else ''}")
    print(f"  Verilator run phase {batch.run_seconds:7.3f} s = {rate:12,.0f} cycles/s; Python simulator (stepped) "
          f"{py_s:7.3f} s = {ref.cycles / py_s:12,.0f} cycles/s: {rate / (ref.cycles / py_s):.2f}x; equal: {same}",
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("PYTHONWARNINGS", "error::DeprecationWarning")
    speed(rounds=4 if args.quick else 12)
    block_speed("bitnet-ffn:16x128x512", "ternary")
    block_speed("bibert-attn:16x128x2", "xnor@pos")
    generation(("ternary", "xnor") if args.quick else BUILTIN_DESIGNS, "ternary")


if __name__ == "__main__":
    main()
