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
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from fsio import write_text_atomic
from hw.accel.plan import AccelPlan
from isa.program import Program
from isa.validate import validate
from sim.machine import machine_shape
from sim.memory import Memories

from .simulators import DEFAULT_SIMULATOR, build_model, check_simulator, run_job

__all__ = ["AccelRun", "AccelBatch", "VerifyRow", "run_programs", "verify", "design_for", "runnable_programs",
           "bench_verilog", "BENCH_MODULE", "TOP", "BLOCKS", "BLOCK_DESIGNS", "VARIANTS", "DEFAULT_SHAPES", "Shape",
           "ShapeRow", "parse_shape", "block_path", "design_for_variant", "compile_pairs", "verify_shapes"]

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


def bench_verilog(plan: AccelPlan, dram_bytes: int, faults=(), ram_form: str = "behavioral") -> str:
    """The Verilog of the bench top (the accelerator and the DRAM model) for ``plan``, with ``faults`` planted
    (``hw.accel.top.Accelerator.FAULTS``) and the buffers' RAMs in ``ram_form``."""
    from hw.accel.export import generate

    from .accel_bench import AccelBench

    return generate(plan, AccelBench(plan, dram_bytes, faults=faults, ram_form=ram_form))


def _imem_depth(n: int) -> int:
    d = 256
    while d < n:
        d *= 2
    return d


def run_programs(design, runs: list[tuple[Program, Memories]], *, stall: bool | list[bool] = False, seed: int = 1,
                 simulator: str = DEFAULT_SIMULATOR, imem_depth: int | None = None, dram_bytes: int | None = None,
                 work_dir: Path | None = None, cache_dir: Path | None = None, log=None,
                 faults=(), dead_dram: bool = False, ram_form: str = "behavioral") -> AccelBatch:
    """Run each ``(program, memories)`` of ``runs`` on the accelerator RTL of ``design``; ``stall`` (one flag, or one
    per run) makes the DRAM model refuse requests at random (seeded by ``seed`` + the run's index).
    ``faults`` plants bugs in the controller (to see the comparison fail); ``dead_dram``: a DRAM that takes no
    request (a board without DRAM); ``ram_form="pumped"``: the buffers in the block-RAM form FPGA synthesis maps
    (the bench then drives the memory clock too). Each program is validated and checked by
    :meth:`AccelPlan.check_program` first."""
    check_simulator(simulator)
    depth = imem_depth or _imem_depth(max(len(p) for p, _ in runs))
    plan = AccelPlan.of(design, imem_depth=depth)
    shape = machine_shape(design)
    for program, _ in runs:
        validate(program, shape)
        plan.check_program(program)
    stalls = list(stall) if isinstance(stall, (list, tuple)) else [bool(stall)] * len(runs)
    # the DRAM model's size is part of the bench's Verilog: a power of two of at least 64 KiB, so that runs of one
    # design with different images share one build (the model cache is keyed by the Verilog)
    need = max(mem.dram.size for _, mem in runs)
    dram_bytes = dram_bytes or max(1 << 16, 1 << max(0, need - 1).bit_length())
    from hw.accel.top import ram_phases

    dline = plan.dram_line_bytes
    dlines = -(-dram_bytes // dline)

    own_dir = work_dir is None
    run_dir = Path(tempfile.mkdtemp(prefix="lowbit-accel-")) if own_dir else Path(work_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        source = run_dir / f"{TOP}.v"
        write_text_atomic(source, bench_verilog(plan, dram_bytes, faults, ram_form))
        model = build_model(simulator, source, TOP, cache_dir=cache_dir, log=log)
        from sim.machine import run as sim_run
        stim = {"n_runs": len(runs), "n_buffers": len(plan.buffers), "host_width": plan.max_line_bytes,
                "mem_phases": np.int64(ram_phases(plan) if ram_form == "pumped" else 0)}
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
        result_path = run_job(model, BENCH_MODULE, run_dir, stim, what="the accelerator bench")
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
    posts: int
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
        d = random_design(np.random.default_rng(int(seed)), name=spec)
        # one post lane: the post unit the generator builds (random designs draw 1 … 32 for the simulator's sake)
        return replace(d, post=replace(d.post, lanes=1))
    return load_design(spec)


def runnable_programs(rng, design, n: int, plan: AccelPlan | None = None) -> list:
    """``n`` random valid programs (``sim.progen``: data movement and MATMULs) the accelerator of ``design`` runs
    (MATMULs only on the engines it feeds; drawn until ``n`` pass :meth:`AccelPlan.check_program`)."""
    from sim.progen import DATA_STEPS, MATMUL_STEPS, POST_STEPS, random_program

    plan = plan or AccelPlan.of(design)
    posts = design.post.lanes == 1                      # the generated post unit has one lane
    mix = (POST_STEPS if posts else MATMUL_STEPS) if plan.fed else DATA_STEPS + ((("post_nopack", 3),) if posts else ())
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
                              sum(len(p.indices("MATMUL")) for p, _ in runs),
                              sum(len(p.indices("POST")) for p, _ in runs), sim_total, rtl_total,
                              int(same_cycles), int(same_bytes), time.perf_counter() - t))
    return rows


# -- whole blocks: models.intpath compiled (sim.blocks) and run on the RTL -----------------------------------------

#: Blocks ``lowbit verify accelerator --shapes`` runs: a scheme's linear of ``models.intpath.LINEAR_PATHS`` (``m``
#: tokens × ``k`` inputs → ``n`` outputs), BitNet b1.58's FFN (``bitnet-ffn``: ``n`` the FFN width) and BiBERT's
#: attention block (``bibert-attn``: ``k`` the hidden size, ``n`` the heads).
BLOCKS = ("bibert", "ternarybert", "bitnet-b1.58", "int8", "qbb", "billm", "bitnet-ffn", "bibert-attn")

#: The built-in design each block runs on when no design is named: the one built for its engine.
BLOCK_DESIGNS = {"bibert": "xnor", "ternarybert": "ternary", "bitnet-b1.58": "ternary", "int8": "int8",
                 "qbb": "binary-basis", "billm": "billm", "bitnet-ffn": "ternary", "bibert-attn": "xnor@pos"}

#: Design variants (``NAME@variant+variant``): what each changes in the named design.
VARIANTS = {
    "ports1": "every buffer one port (port-limited: MATMUL beats take more cycles)",
    "slow-dram": "DRAM at 1/8 of its bandwidth and 4× its latency",
    "pos": "every engine's sign of a zero count at +1 (zero_policy pos, as BiBERT's integer path needs)",
    "small": "every engine at most 4 rows × 32 lanes, every buffer at most 4 banks and 64 KiB (quick to build and "
             "run: the default test suite's designs)",
}


@dataclass(frozen=True)
class Shape:
    """A block and its size (see :data:`BLOCKS`), spelled ``block:MxKxN``."""

    block: str
    m: int
    k: int
    n: int

    def __str__(self) -> str:
        return f"{self.block}:{self.m}x{self.k}x{self.n}"


def parse_shape(spec: str) -> Shape:
    """``block:MxKxN`` → :class:`Shape`, or ValueError naming what is wrong."""
    block, sep, size = spec.partition(":")
    if block not in BLOCKS:
        raise ValueError(f"shape {spec!r}: unknown block {block!r}; known: {', '.join(BLOCKS)}")
    dims = size.split("x") if sep else []
    if len(dims) != 3 or not all(d.isdigit() and int(d) > 0 for d in dims):
        raise ValueError(f"shape {spec!r}: give the size as MxKxN, three positive integers (tokens x inputs x "
                         f"outputs; bitnet-ffn: x FFN width; bibert-attn: x heads)")
    m, k, n = (int(d) for d in dims)
    if block == "bibert-attn" and k % n:
        raise ValueError(f"shape {spec!r}: the hidden size {k} must split into {n} heads")
    return Shape(block, m, k, n)


def block_path(shape: Shape, seed: int = 0):
    """The integer-only path (``models.intpath``) of ``shape`` on seeded random weights and inputs."""
    import torch

    from models import intpath as P

    def rand(*dims, s, scale=1.0):
        return torch.randn(*dims, generator=torch.Generator().manual_seed(seed * 1000 + s)) * scale

    m, k, n = shape.m, shape.k, shape.n
    x = rand(m, k, s=1)
    if shape.block == "bitnet-ffn":
        return P.bitnet_ffn_block(x, rand(n, k, s=2, scale=0.05), rand(n, k, s=3, scale=0.05),
                                  rand(k, n, s=4, scale=0.05))
    if shape.block == "bibert-attn":
        ws = [rand(k, k, s=10 + i, scale=0.05) for i in range(4)]
        bs = [rand(k, s=20 + i, scale=0.1) for i in range(4)]
        return P.bibert_attention_block(x, *ws, bq=bs[0], bk=bs[1], bv=bs[2], bo=bs[3], heads=n)
    return P.LINEAR_PATHS[shape.block](rand(n, k, s=2, scale=0.05), x, bias=rand(n, s=3, scale=0.1))


#: The default table of ``lowbit verify accelerator``: (shape, design) pairs — every block on the design built for
#: its engine, and on variants that are port-limited, slow on DRAM, or both.
DEFAULT_SHAPES = (
    ("ternarybert:16x64x48", "ternary"), ("ternarybert:16x64x48", "ternary@ports1"),
    ("ternarybert:8x128x64", "ternary@slow-dram"), ("ternarybert:32x384x96", "ternary"),
    ("bitnet-b1.58:12x64x48", "ternary"), ("bitnet-b1.58:4x256x32", "ternary@ports1"),
    ("bitnet-b1.58:8x96x40", "ternary@slow-dram"),
    ("int8:12x64x48", "ternary"), ("int8:12x64x48", "int8"), ("int8:8x96x40", "int8@slow-dram"),
    ("qbb:12x64x48", "binary-basis"), ("qbb:6x128x32", "binary-basis@slow-dram"),
    ("qbb:16x192x64", "binary-basis"),
    ("bibert:12x64x48", "xnor"), ("bibert:8x256x64", "xnor@slow-dram"), ("bibert:16x384x128", "xnor"),
    ("bitnet-ffn:8x64x160", "ternary"), ("bitnet-ffn:8x64x160", "ternary@slow-dram"),
    ("bitnet-ffn:6x128x256", "ternary@ports1"),
    ("bitnet-ffn:16x128x512", "ternary"),
    ("billm:12x256x48", "billm"), ("billm:8x384x64", "billm@slow-dram"),
    ("bibert-attn:10x64x4", "xnor@pos"), ("bibert-attn:16x128x2", "xnor@pos+slow-dram"),
)


def design_for_variant(spec: str):
    """:func:`design_for` with ``@variant+variant`` (:data:`VARIANTS`) applied."""
    from hw.accelerator import Accelerator

    name, _, variants = spec.partition("@")
    design = design_for(name)
    if not variants:
        return design
    d = design.to_dict()
    for v in variants.split("+"):
        if v == "ports1":
            for b in d["buffers"].values():
                b["ports"] = 1
        elif v == "slow-dram":
            d["dram"]["bandwidth_gbps"] /= 8
            d["dram"]["latency_cycles"] *= 4
        elif v == "small":
            for e in d["engines"]:
                e["rows"], e["lanes"] = min(e["rows"], 4), min(e["lanes"], 32)
                for derived in ("tree_stages", "acc_width"):       # follow from lanes and max_k by default
                    e.pop(derived, None)
            for b in d["buffers"].values():
                # narrow lines and 64 KiB: the bench loads and reads back every line of every buffer per run
                b["banks"] = min(b["banks"], 4)
                b["size_bytes"] = min(b["size_bytes"], 1 << 16)
        elif v == "pos":
            for e in d["engines"]:
                if "zero_policy" in e:
                    e["zero_policy"] = "pos"
        else:
            raise ValueError(f"design {spec!r}: unknown variant {v!r}; known: {', '.join(VARIANTS)}")
    d["name"] = spec
    return Accelerator.from_dict(d)


@dataclass
class ShapeRow:
    """One line of the shapes table: a block on a design, the simulator's and the RTL's cycles, whether the RTL's
    output (and every intermediate stage it leaves in the buffers) equals ``models``' integer path, and whether
    every byte of DRAM and the buffers equals the simulator's."""

    shape: str
    design: str
    instructions: int
    sim_cycles: int
    rtl_cycles: int
    outputs_equal: bool
    bytes_equal: bool
    seconds: float

    @property
    def ok(self) -> bool:
        return self.sim_cycles == self.rtl_cycles and self.outputs_equal and self.bytes_equal


def compile_pairs(pairs, seed: int = 0) -> list:
    """Each (shape, design) pair compiled: ``(shape, design spec, design, path, block program)``; refuses (ValueError
    naming the pair) a shape its design cannot run or the accelerator cannot build — before any RTL run."""
    from sim.blocks import compile_path

    out = []
    designs = {}
    for shape_spec, design_spec in pairs:
        shape = parse_shape(shape_spec) if isinstance(shape_spec, str) else shape_spec
        if design_spec not in designs:
            designs[design_spec] = design_for_variant(design_spec)
        design = designs[design_spec]
        path = block_path(shape, seed)
        try:
            bp = compile_path(path, design)
            AccelPlan.of(design, imem_depth=_imem_depth(len(bp.program))).check_program(bp.program)
        except ValueError as exc:
            raise ValueError(f"{shape} on {design_spec}: {exc}") from None
        out.append((shape, design_spec, design, path, bp))
    return out


def verify_shapes(pairs, *, seed: int = 0, simulator: str = DEFAULT_SIMULATOR, log=None) -> list[ShapeRow]:
    """Run each (shape, design) block on the design's accelerator RTL (one build per design) and on the simulator;
    compare the output with ``models``' integer path and every byte with the simulator's."""
    from sim.blocks import read_stages
    from sim.machine import run as sim_run

    compiled = compile_pairs(pairs, seed)
    rows = {}
    by_design = {}
    for i, item in enumerate(compiled):
        by_design.setdefault(item[1], []).append(i)
    for spec, idx in by_design.items():
        design = compiled[idx[0]][2]
        t = time.perf_counter()
        runs = [(compiled[i][4].program, compiled[i][4].memories()) for i in idx]
        batch = run_programs(design, runs, simulator=simulator, log=log)
        per = (time.perf_counter() - t) / len(idx)
        for i, (program, mem), got in zip(idx, runs, batch.runs):
            shape, _, _, path, bp = compiled[i]
            want = sim_run(program, design, mem, stepped=True)
            same = np.array_equal(want.memories.dram, got.memories.dram) and all(
                np.array_equal(want.memories.buffers[k], got.memories.buffers[k]) for k in want.memories.buffers)
            stages = read_stages(bp, got.memories)
            outputs = np.array_equal(stages[f"{path.output}@dram"], path.y_fixed) and all(
                np.array_equal(stages[s.name], s.tensor) for s in path.stages if s.name in stages)
            rows[i] = ShapeRow(str(shape), spec, len(program), want.cycles,
                               got.cycles if got.finished else -1, bool(outputs), bool(same), per)
            if log:
                log(f"{shape} on {spec}: sim {want.cycles:,}, RTL {got.cycles:,} cycles")
    return [rows[i] for i in range(len(compiled))]
