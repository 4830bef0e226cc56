"""Whole models on a described accelerator: cycles, event counters and energy, op by op — from a program.

``simulate_model(model, scheme, design, policy=...)`` extracts the workload (``models.workload``), compiles it
for the design under a mapping policy (``sim.compiler``: tiles, buffer slots, DRAM transfers, dependency tokens;
docs/isa.md), and times that program and nothing else (``sim.machine``): in closed form per instruction (the
fast mode) or with every ``MATMUL`` stepped through its engine's cycle-by-cycle model (the stepped mode), both
through the same pass over the queues and tokens, so their cycles are equal by construction wherever both run.
``program=`` times a program given instead (``lowbit simulate model --program prog.bin``).

The program's cycles are the model's. Each op of the workload is credited with the cycles during which the
compute queue was working on it or waiting for its operands (each compute instruction takes the cycles from the
previous one's end to its own, so the ops' cycles add up to the program's), and with the energy events of its instructions (bits moved by its
loads and stores, its engines' per-beat and per-result events, the vector unit's floating-point work), which
``sim.energy`` prices with a technology table.
"""

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from hw.accelerator import Accelerator, MappingPolicy, load_design_with_policy
from isa.spec import OPCODES
from models.config import load_config
from models.schemes import get_scheme
from models.workload import Op, Workload, extract_workload

from .compiler import CapacityError, Compiled, compile_chunks, compile_workload
from .kernels import program as sched
from .machine import (REDUCTIONS, VECTOR_MIX, VECTOR_PASSES, OverlapMeter, ProgramRun, events, run, run_chunks,
                      unique_runs)

__all__ = ["OpTiming", "ModelRun", "CapacityError", "simulate_model", "time_op", "workload_macs_by_kind",
           "VECTOR_PASSES", "VECTOR_MIX", "REDUCTIONS"]


@dataclass
class OpTiming:
    """One op of the workload on the design, over all its executions (its ``layers`` and heads): the cycles the
    compute queue spent on it, its energy events and traffic."""

    op: Op
    engine: str                       #: engine kind, "vector" or "memory"
    total_cycles: int                 #: compute-queue cycles credited to the op, all executions
    events: Counter                   #: all executions
    macs: int = 0                     #: useful MACs, all executions
    mac_slots: int = 0                #: engine MAC slots during the op's cycles (utilisation denominator)
    stall_cycles: int = 0             #: of its cycles, those the engine was not issuing beats
    dram_bytes: int = 0               #: all executions
    instructions: int = 0
    notes: str = ""

    @property
    def executions(self) -> int:
        return self.op.layers

    @property
    def cycles(self) -> int:
        """All executions' cycles (as :attr:`total_cycles`)."""
        return self.total_cycles


@dataclass
class ModelRun:
    model: str
    scheme: str
    design: Accelerator = field(repr=False)
    seq_len: int
    decode_steps: int
    ops: list[OpTiming] = field(repr=False)
    weight_bytes: int = 0
    weights_resident: bool = False
    policy: MappingPolicy = field(default_factory=MappingPolicy)     #: the mapping policy the run used
    program_run: ProgramRun | None = field(default=None, repr=False)    #: the whole program's timing (one chunk)
    total_cycles: int | None = None                                      #: the program's cycle count
    queue_summary: dict = field(default_factory=dict)

    @property
    def cycles(self) -> int:
        return self.total_cycles if self.total_cycles is not None else sum(t.total_cycles for t in self.ops)

    @property
    def latency_s(self) -> float:
        return self.cycles / self.design.clock_hz

    def events(self) -> Counter:
        total = Counter()
        for t in self.ops:
            total.update(t.events)
        return total

    def macs_by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.ops:
            if t.op.kind == "matmul":
                out[t.op.unit] = out.get(t.op.unit, 0) + t.macs
        return out

    @property
    def utilisation(self) -> float:
        """Useful MACs over the MAC slots of the engines that ran them, during their ops' cycles."""
        slots = sum(t.mac_slots for t in self.ops)
        return sum(t.macs for t in self.ops) / slots if slots else 0.0

    def phase_cycles(self, phase: str) -> int:
        return sum(t.total_cycles for t in self.ops if t.op.phase == phase)

    def queues(self) -> dict:
        """The program's view: instructions per opcode, busy cycles and occupancy per queue, and how much load and
        store traffic ran under compute (docs/isa.md §4)."""
        return dict(self.queue_summary)


def workload_macs_by_kind(ops) -> dict[str, int]:
    """The useful MACs :meth:`ModelRun.macs_by_kind` counts, from the workload alone (no timing): QBB's N bases are
    N MACs a weight, as the stream engine counts them; every other matmul one MAC per multiply-accumulate."""
    out: dict[str, int] = {}
    for o in ops:
        if o.kind == "matmul":
            out[o.unit] = out.get(o.unit, 0) + o.macs * _macs_per_weight(o)
    return out


def _macs_per_weight(op: Op) -> int:
    """Useful MACs one weight element of ``op`` stands for: QBB's N bases are N MACs a weight (as the binary-basis
    engine counts them), every other matmul one."""
    return op.b_bits if op.weight_layout == "bases" else 1


#: Instructions per chunk when a program is compiled and timed in pieces (memory stays bounded on long decode runs).
CHUNK = 1 << 20


def _op_table_ops_from(compiler, wl: Workload) -> list[Op]:
    """The workload's ops, plus the compiler's extra entry for a resident-weight preload."""
    ops = list(wl.ops)
    if compiler.preload and compiler.weight_bytes:
        ops.append(Op("load_weights", "memory", "load_weights", "fp-vector", "prefill", bytes=compiler.weight_bytes))
    return ops


def _op_table_ops(program, wl: Workload | None) -> list[Op]:
    """The ops of a program's op table: the workload's own where it is given, else rebuilt from the table."""
    ops = list(wl.ops) if wl is not None else []
    for entry in program.op_table[len(ops):]:
        ops.append(Op(entry["name"], entry["kind"], entry.get("op", entry["name"]), entry.get("unit", "fp-vector"),
                      entry.get("phase", "prefill"), count=entry.get("count", 1), layers=entry.get("layers", 1)))
    return ops


def _bincount(idx: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
    """Exact integer sums of ``weights`` by ``idx`` (``np.bincount`` sums in float64: exact below 2^53, which a
    run's cycles and bytes stay far below — checked)."""
    w = np.asarray(weights, np.int64)
    if w.size and int(np.abs(w).sum()) >= 1 << 53:
        out = np.zeros(n, np.int64)
        np.add.at(out, idx, w)
        return out
    return np.rint(np.bincount(idx, weights=w, minlength=n)[:n]).astype(np.int64)


class _Tally:
    """What the ops of a program's op table are credited with, accumulated chunk by chunk."""

    def __init__(self, n_ops: int):
        self.n = n_ops
        self.cycles = np.zeros(n_ops, np.int64)
        self.dram = np.zeros(n_ops, np.int64)
        self.beats = np.zeros(n_ops, np.int64)
        self.issue = np.zeros(n_ops, np.int64)
        self.matmuls = np.zeros(n_ops, np.int64)
        self.instructions = np.zeros(n_ops, np.int64)
        self.ii: dict[int, set] = {}
        self.events = [Counter() for _ in range(n_ops)]
        self.last: int | None = None                       # the op of the latest compute instruction
        self.end = 0                                        # where the compute queue's timeline is cut so far
        self.by_opcode: Counter = Counter()
        self.overlap = OverlapMeter()
        self.length = 0

    def add(self, pr: ProgramRun, design: Accelerator) -> None:
        n_ops = self.n
        self.length += len(pr.program)
        self.overlap.add(pr)
        # everything but the timeline is the same in every copy of a repeated segment: counted once, times its
        # copies (pr.representatives)
        program, mult = pr.representatives()
        refs = program.op_refs.astype(np.int64)
        # cycles: the compute queue's timeline, cut at its instructions (as sim.machine.compute_spans)
        self.end, last = sched.credit_compute(pr.done, pr.timing.queue, refs, pr.expand, self.end, n_ops,
                                              self.cycles)
        if last >= 0:
            self.last = int(last)
        ok_all = refs < n_ops
        self.instructions += _bincount(refs[ok_all], mult[ok_all], n_ops)
        by_op = np.bincount(program.opcodes, weights=mult, minlength=len(OPCODES))
        self.by_opcode.update({name: int(round(by_op[code])) for name, code in OPCODES.items() if by_op[code]})
        for name in ("LOAD", "STORE"):
            idx = program.indices(name)
            if len(idx):
                nbytes = program.field(name, "rows") * program.field(name, "row_bytes")
                nbytes = np.where(program.field(name, "onchip").astype(bool), 0, nbytes) * mult[idx]
                r = refs[idx]
                ok = r < n_ops
                self.dram += _bincount(r[ok], nbytes[ok], n_ops)
        mm = program.indices("MATMUL")
        if len(mm):
            t = pr.timing                                    # every MATMUL's beats and issue interval
            r = refs[mm]
            ok = r < n_ops
            dur, ii, k = t.dur[mm], t.ii[mm], mult[mm]
            self.beats += _bincount(r[ok], (dur * k)[ok], n_ops)
            self.issue += _bincount(r[ok], (dur * ii * k)[ok], n_ops)
            self.matmuls += _bincount(r[ok], k[ok], n_ops)
            if ok.any():
                key = r[ok] << 32 | ii[ok]                                    # (op, ii) as one int64
                pairs = key[unique_runs(key)[0]]
                for key in pairs.tolist():
                    self.ii.setdefault(key >> 32, set()).add(key & 0xFFFF_FFFF)
        for o, c in enumerate(events(program, design, mult)):
            self.events[o].update(c)

    def close(self, end: int) -> None:
        """The cycles after the last compute instruction (trailing stores) go to its op."""
        if self.last is not None and self.last < self.n:
            self.cycles[self.last] += max(0, end - self.end)


def model_run_from_runs(runs, design: Accelerator, ops: list[Op], *, model: str, scheme: str, seq_len: int,
                        decode_steps: int, policy: MappingPolicy, weight_bytes: int = 0,
                        resident: bool = False) -> ModelRun:
    """Credit a timed program's (or its chunks') cycles, events and traffic to the ops of its op table."""
    tally = _Tally(len(ops))
    last = None
    n_chunks = 0
    for pr in runs:
        tally.add(pr, design)
        last = pr
        n_chunks += 1
    tally.close(last.cycles)
    overlap = tally.overlap.close()
    timings = []
    for i, op in enumerate(ops):
        cyc = int(tally.cycles[i])
        n_ins = int(tally.instructions[i])
        if op.kind == "matmul":
            slot = design.engine_for(op.unit, op=op.name)
            engine, macs = slot.unit, op.macs * _macs_per_weight(op)
            slots_ = cyc * slot.params.macs_per_cycle * slot.count
            stall = max(0, cyc - int(tally.issue[i]))
            iis = ",".join(str(v) for v in sorted(tally.ii.get(i, ())))
            what = (f"{slot.params.dataflow} dataflow, {int(tally.beats[i])} cycles" if slot.params.timing != "stream"
                    else f"ii={iis}, {int(tally.beats[i])} beats")
            notes = f"{what}, {int(tally.matmuls[i])} MATMUL(s), {n_ins} instruction(s)"
        else:
            engine, macs, slots_, stall = ("vector" if op.kind == "vector" else "memory"), 0, 0, 0
            notes = f"{n_ins} instruction(s)"
        timings.append(OpTiming(op, engine, cyc, tally.events[i], macs=macs, mac_slots=slots_, stall_cycles=stall,
                                dram_bytes=int(tally.dram[i]), instructions=n_ins, notes=notes))
    if timings and timings[-1].op.name == "load_weights":   # the resident preload runs first: list it first
        timings.insert(0, timings.pop())
    run_ = ModelRun(model, scheme, design, seq_len, decode_steps, timings, weight_bytes, resident, policy,
                    last if n_chunks == 1 else None)
    run_.total_cycles = last.cycles
    run_.queue_summary = {"instructions": tally.length, "by_opcode": dict(tally.by_opcode), "busy_cycles": last.busy,
                          "occupancy": {q: b / max(1, last.cycles) for q, b in last.busy.items()},
                          **overlap,
                          "chunks": n_chunks, "cycles_by_kind": _cycles_by_kind(timings)}
    return run_


def _cycles_by_kind(timings: list[OpTiming]) -> dict[str, int]:
    """Where the cycles go: the compute queue's timeline by what it was doing — engines issuing beats, engines
    waiting for their operands (the matmuls' other cycles), the vector unit's HOST work, waits for memory ops
    (gathers, KV appends, a resident preload)."""
    out = {"matmul_issue": 0, "matmul_wait": 0, "host": 0, "memory": 0}
    for t in timings:
        if t.op.kind == "matmul":
            out["matmul_wait"] += t.stall_cycles
            out["matmul_issue"] += t.total_cycles - t.stall_cycles
        else:
            out["host" if t.op.kind == "vector" else "memory"] += t.total_cycles
    return out


def compile_model(model, scheme, design, *, seq_len: int = 128, decode_steps: int = 0, batch: int = 1,
                  workload: Workload | None = None, policy: MappingPolicy | None = None) -> Compiled:
    """The program of ``model`` under ``scheme`` on ``design`` (what ``lowbit compile`` writes)."""
    cfg = load_config(model)
    sch = get_scheme(scheme) if isinstance(scheme, str) else scheme
    acc, default_policy = load_design_with_policy(design)
    policy = policy if policy is not None else default_policy
    wl = workload or extract_workload(cfg, sch, seq_len=seq_len, decode_steps=decode_steps, batch=batch)
    return compile_workload(wl, acc, policy)


def simulate_model(model, scheme, design, *, seq_len: int = 128, decode_steps: int = 0, batch: int = 1,
                   stepped: bool = False, workload: Workload | None = None,
                   policy: MappingPolicy | None = None, program=None) -> ModelRun:
    """Run ``model`` under ``scheme`` on ``design`` with the mapping ``policy``: compile, then time the program
    (``program`` given: time that one instead, after checking it against the design). Every check happens before
    the first instruction is timed.

    ``design`` is anything :func:`hw.accelerator.load_design_with_policy` takes; ``policy=None`` uses the design
    file's ``[mapping]`` table (the defaults for an :class:`Accelerator` or a file without one).

    A design that cannot run some op is refused with ``ValueError``; one whose buffers are too small for some
    op's tiles with its subclass :class:`CapacityError`, raised only after every other check has passed (so a
    caller that needs no timing, like the arithmetic-only energy, may go on without it).
    """
    cfg = load_config(model)
    sch = get_scheme(scheme) if isinstance(scheme, str) else scheme
    acc, default_policy = load_design_with_policy(design)
    policy = policy if policy is not None else default_policy
    wl = workload or extract_workload(cfg, sch, seq_len=seq_len, decode_steps=decode_steps, batch=batch)
    if program is not None:
        from isa.validate import validate

        from .machine import machine_shape
        validate(program, machine_shape(acc))
        if program.design and program.design != acc.name:
            raise ValueError(f"the program was compiled for design {program.design!r}, not {acc.name!r}")
        ops = _op_table_ops(program, wl if len(program.op_table) >= len(wl.ops) and all(
            e["name"] == o.name for e, o in zip(program.op_table, wl.ops)) else None)
        return model_run_from_runs([run(program, acc, stepped=stepped)], acc, ops, model=cfg.name,
                                   scheme=sch.name, seq_len=seq_len, decode_steps=decode_steps, policy=policy)
    compiler, chunks = compile_chunks(wl, acc, policy, limit=CHUNK)
    ops = _op_table_ops_from(compiler, wl)
    return model_run_from_runs(run_chunks(chunks, acc, stepped=stepped), acc, ops, model=cfg.name,
                               scheme=sch.name, seq_len=seq_len, decode_steps=decode_steps, policy=policy,
                               weight_bytes=compiler.weight_bytes, resident=compiler.resident)


def time_op(op: Op, design: Accelerator, *, weights_on_chip: bool, kv_on_chip: bool, stepped: bool = False,
            seed: int = 0, policy: MappingPolicy | None = None) -> OpTiming:
    """One execution of an operation (one layer, all its heads) alone as a program on the design under ``policy``
    (default :class:`MappingPolicy()`), its operands resident or streamed as given (``stepped`` steps its MATMULs
    through the engine's kernel). The timing's totals are that one execution's."""
    from dataclasses import replace

    policy = policy if policy is not None else MappingPolicy()
    op = replace(op, layers=1)
    wl = Workload("op", "int8", max(1, op.m), 0, 1, {"num_kv_heads": 1, "head_dim": 1, "num_layers": 1}, (op,))
    compiled = compile_workload(wl, design, policy, weights_on_chip=weights_on_chip, kv_on_chip=kv_on_chip)
    pr = run(compiled.program, design, stepped=stepped, seed=seed)
    mr = model_run_from_runs([pr], design, [op], model="op", scheme="", seq_len=op.m, decode_steps=0,
                             policy=policy)
    t = mr.ops[0]
    t.total_cycles = pr.cycles             # the op alone: the whole program, its loads included
    return t
