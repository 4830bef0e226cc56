"""Run programs on the generated accelerator RTL (Verilator by default, or Icarus) and hand back what the
simulator hands back: the cycle count and the final DRAM and buffers.

:func:`run_programs` generates :class:`rtl_tests.accel_bench.AccelBench` for a design once, builds its simulator
model once (cached by the Verilog's hash, ``rtl_tests.simulators``) and runs every program of the call in one
simulator launch: the cocotb bench loads each program, DRAM image and buffer contents, runs it to ``finished``
and reads everything back.
"""

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fsio import write_text_atomic
from hw.accel.plan import AccelPlan
from isa.program import Program
from isa.validate import validate
from sim.machine import machine_shape
from sim.memory import Memories

from .simulators import DEFAULT_SIMULATOR, build_model, check_simulator, run_test

__all__ = ["AccelRun", "AccelBatch", "VerifyRow", "run_programs", "verify", "design_for", "runnable_programs", "bench_verilog", "BENCH_MODULE",
           "TOP"]

BENCH_MODULE = "rtl_tests.cocotb_accel_bench"
TOP = "accel_bench"


@dataclass
class AccelRun:
    """One program's run on the RTL: ``cycles`` (-1 when it did not finish), ``error`` (dispatch met an opcode it
    does not execute), the final memories (DRAM cut to the image's length)."""

    cycles: int
    finished: bool
    error: bool
    memories: Memories


@dataclass
class AccelBatch:
    runs: list[AccelRun]
    bench_seconds: float          #: wall time of the cocotb loop (loading, running, reading back)
    program_cycles: int           #: cycles the programs ran (between run and finished)
    run_seconds: float            #: wall time of those cycles (the simulator running freely)
    build_seconds: float
    cached: bool


def _lines(data: np.ndarray, width: int, lines: int) -> np.ndarray:
    out = np.zeros(lines * width, np.uint8)
    out[:data.size] = data
    return out.reshape(lines, width)


def bench_verilog(plan: AccelPlan, dram_bytes: int, faults=()) -> str:
    """The Verilog of the bench top (the accelerator and the DRAM model) for ``plan``, with ``faults`` planted
    (``hw.accel.top.Accelerator.FAULTS``)."""
    from hw.accel.export import generate

    from .accel_bench import AccelBench

    return generate(plan, AccelBench(plan, dram_bytes, faults=faults))


def _imem_depth(n: int) -> int:
    d = 256
    while d < n:
        d *= 2
    return d


def run_programs(design, runs: list[tuple[Program, Memories]], *, stall: bool | list[bool] = False, seed: int = 1,
                 simulator: str = DEFAULT_SIMULATOR, imem_depth: int | None = None, dram_bytes: int | None = None,
                 work_dir: Path | None = None, cache_dir: Path | None = None, log=None,
                 faults=(), dead_dram: bool = False) -> AccelBatch:
    """Run each ``(program, memories)`` of ``runs`` on the accelerator RTL of ``design``; ``stall`` (one flag, or one
    per run) makes the DRAM model refuse requests at random (seeded by ``seed`` + the run's index).
    ``faults`` plants bugs in the controller (to see the comparison fail); ``dead_dram``: a DRAM that takes no
    request (a board without DRAM). Each program is validated and checked by
    :meth:`AccelPlan.check_program` first."""
    check_simulator(simulator)
    depth = imem_depth or _imem_depth(max(len(p) for p, _ in runs))
    plan = AccelPlan.of(design, imem_depth=depth)
    shape = machine_shape(design)
    for program, _ in runs:
        validate(program, shape)
        plan.check_program(program)
    stalls = list(stall) if isinstance(stall, (list, tuple)) else [bool(stall)] * len(runs)
    dram_bytes = dram_bytes or max(64, max(mem.dram.size for _, mem in runs))
    from .accel_bench import dram_line_bytes
    dline = dram_line_bytes(plan)
    dlines = -(-dram_bytes // dline)

    own_dir = work_dir is None
    run_dir = Path(tempfile.mkdtemp(prefix="lowbit-accel-")) if own_dir else Path(work_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        source = run_dir / f"{TOP}.v"
        write_text_atomic(source, bench_verilog(plan, dram_bytes, faults))
        model = build_model(simulator, source, TOP, cache_dir=cache_dir, log=log)
        from sim.machine import run as sim_run
        stim = {"n_runs": len(runs), "n_buffers": len(plan.buffers), "host_width": plan.max_line_bytes}
        for r, (program, mem) in enumerate(runs):
            words = np.zeros((len(program), 32), np.uint8)
            words[:] = program.words.view(np.uint8).reshape(len(program), 32)
            stim[f"run{r}_imem"] = words
            stim[f"run{r}_dram"] = _lines(mem.dram, dline, dlines)
            for b in plan.buffers:
                stim[f"run{r}_buf{b.index}"] = _lines(mem.buffers[b.index], b.line_bytes, b.lines)
            stim[f"run{r}_stall"] = np.int64(stalls[r])
            stim[f"run{r}_seed"] = np.int64((seed + r) & 0xFFFF)
            stim[f"run{r}_dead"] = np.int64(dead_dram)
            expected = sim_run(program, design).cycles
            stim[f"run{r}_max_cycles"] = np.int64(expected * (8 if stalls[r] else 2) + 1000)
        stim_path, result_path = run_dir / "stimulus.npz", run_dir / "result.npz"
        np.savez(stim_path, **stim)
        if result_path.exists():
            result_path.unlink()
        env = {"LOWBIT_STIMULUS": str(stim_path), "LOWBIT_RESULT": str(result_path),
               "COCOTB_REWRITE_ASSERTION_FILES": "cocotb_*.py", "PYTHONWARNINGS": "error::DeprecationWarning"}
        n_tests, n_failed = run_test(model, BENCH_MODULE, test_dir=run_dir, extra_env=env)
        if n_tests != 1 or n_failed or not result_path.exists():
            log_path = run_dir / "sim.log"
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:]) if log_path.exists() \
                else "(no log)"
            raise AssertionError(f"the accelerator bench ({simulator}) failed; end of {log_path}:\n{tail}")
        data = np.load(result_path)
        out = []
        for r, (program, mem) in enumerate(runs):
            final = Memories(data[f"run{r}_dram"].reshape(-1)[:mem.dram.size].copy(),
                             {b.index: data[f"run{r}_buf{b.index}"].reshape(-1)[:b.size_bytes].copy()
                              for b in plan.buffers})
            out.append(AccelRun(int(data[f"run{r}_cycles"]), bool(data[f"run{r}_finished"]),
                                bool(data[f"run{r}_error"]), final))
        return AccelBatch(out, float(data["bench_seconds"]), int(data["program_cycles"]),
                          float(data["run_seconds"]), model.seconds, model.cached)
    finally:
        if own_dir:
            shutil.rmtree(run_dir, ignore_errors=True)


@dataclass
class VerifyRow:
    """One design's line of ``lowbit verify accelerator``."""

    design: str
    programs: int
    instructions: int
    matmuls: int
    sim_cycles: int
    rtl_cycles: int
    cycles_equal: int
    bytes_equal: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.cycles_equal == self.bytes_equal == self.programs


def design_for(spec: str):
    """A design named on the command line: a built-in name, a design file, or ``random:N`` (the seeded random small
    design of ``sim.progen.random_design``)."""
    from hw.accelerator import load_design
    from sim.progen import random_design

    if spec.startswith("random:"):
        seed = spec.split(":", 1)[1]
        if not seed.isdigit():
            raise ValueError(f"design {spec!r}: random:N needs a non-negative integer seed N")
        return random_design(np.random.default_rng(int(seed)), name=spec)
    return load_design(spec)


def runnable_programs(rng, design, n: int, plan: AccelPlan | None = None) -> list:
    """``n`` random valid programs (``sim.progen``: data movement and MATMULs) the accelerator of ``design`` runs
    (MATMULs only on the engines it feeds; drawn until ``n`` pass :meth:`AccelPlan.check_program`)."""
    from sim.progen import DATA_STEPS, MATMUL_STEPS, random_program

    plan = plan or AccelPlan.of(design)
    mix = MATMUL_STEPS if plan.fed else DATA_STEPS
    runs = []
    for _ in range(50 * n):
        program, mem = random_program(rng, design, mix=mix)
        try:
            plan.check_program(program)
        except ValueError:
            continue
        runs.append((program, mem))
        if len(runs) == n:
            return runs
    raise RuntimeError(f"design {design.name!r}: fewer than {n} runnable programs in {50 * n} draws")


def verify(designs: list[str], *, programs: int, seed: int, simulator: str = DEFAULT_SIMULATOR,
           stall: bool = False, log=None) -> list[VerifyRow]:
    """Run ``programs`` random programs (data movement and MATMULs on the engines it feeds, :func:`runnable_programs`)
    on each design's RTL and on the simulator, and compare every byte and the cycle counts (with ``stall``: a
    randomly stalling DRAM, cycles at least the simulator's)."""
    resolved = [(name, design_for(name)) for name in designs]    # refuse a bad name before any run
    from hw.units import EngineParams
    for name, design in resolved:
        for i, slot in enumerate(design.engines):
            if not isinstance(slot.params, EngineParams):
                raise ValueError(f"design {name!r}: engine {i} ({slot.unit}) has no integer reference, so random "
                                 f"programs cannot be checked on it; verify a design without it (a copy of the "
                                 f"design file without that [[engines]] table)")
    rows = []
    for name, design in resolved:
        plan = AccelPlan.of(design)
        rng = np.random.default_rng(seed)
        runs = runnable_programs(rng, design, programs, plan)
        t = time.perf_counter()
        batch = run_programs(design, runs, simulator=simulator, stall=stall, seed=seed, log=log)
        sim_total = rtl_total = same_cycles = same_bytes = 0
        for (program, mem), got in zip(runs, batch.runs):
            from sim.machine import run as sim_run
            want = sim_run(program, design, mem, stepped=True)
            sim_total += want.cycles
            rtl_total += max(got.cycles, 0)
            same_cycles += got.finished and (got.cycles >= want.cycles if stall else got.cycles == want.cycles)
            same_bytes += np.array_equal(want.memories.dram, got.memories.dram) and all(
                np.array_equal(want.memories.buffers[k], got.memories.buffers[k]) for k in want.memories.buffers)
        rows.append(VerifyRow(name, programs, sum(len(p) for p, _ in runs),
                              sum(len(p.indices("MATMUL")) for p, _ in runs), sim_total, rtl_total,
                              int(same_cycles), int(same_bytes), time.perf_counter() - t))
    return rows
