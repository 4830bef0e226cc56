"""The accelerator as the program sees it: times a program (docs/isa.md §4) and, in the stepped mode, executes it.

* :func:`machine_shape` — the :class:`isa.validate.MachineShape` of a design, what programs are checked against.
* :func:`run` — time a program: every instruction's duration in closed form (the **fast** mode) or measured by
  the unit kernels (the **stepped** mode: each ``MATMUL`` runs through the engine's cycle-by-cycle model, on the
  program's real data when a DRAM image is given, else on random operands of its shape), then one pass of
  :func:`sim.kernels.program.schedule` over the instructions in program order (queues, tokens, the engines'
  issue pipeline). Both modes share that pass, so they differ only where an instruction's duration could: a
  kernel that disagreed with its closed form would be refused, naming the instruction.
* Energy events per instruction (what each moves and computes), attributed to the workload op it serves.

With a DRAM image the stepped mode also executes the program, in program order, on :class:`sim.memory.Memories`
(``LOAD``/``STORE`` copy bytes, ``MATMUL`` runs the engine's stepped model on the decoded operands and writes its
result records, ``POST`` calls :mod:`models.intpost`); ``sim.interpret`` is the independent reference it is
checked against.
"""

import math
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from hw.accelerator import Accelerator
from isa.program import Program, split_address
from isa.spec import BUFFERS, HOST_FUNCTIONS, POST_FUNCTIONS
from isa.validate import EngineShape, MachineShape

from .dataops import engine_params, execute_post, execute_transfer
from .kernels import program as sched
from .memory import Memories, read_bytes, read_matrix, write_matrix

__all__ = ["machine_shape", "run", "ProgramRun", "compute_spans", "OverlapMeter", "unique_runs", "VECTOR_PASSES", "REDUCTIONS", "VECTOR_MIX", "host_cycles",
           "MachineError", "act_format"]

#: Passes over the data each vector (HOST) op needs (a LayerNorm reads once for the statistics, once to normalise).
VECTOR_PASSES = {"layernorm": 2, "rmsnorm": 2, "softmax": 2}
#: Ops that end each pass with a reduction across the lanes (log2(lanes) cycles of drain per pass and row).
REDUCTIONS = frozenset({"layernorm", "rmsnorm", "softmax", "absmax"})
#: Floating-point operations per element: (adds, multiplies, special functions). Sums match VECTOR_FLOPS.
VECTOR_MIX = {
    "add": (1, 0, 0), "mul": (0, 1, 0), "scale": (0, 1, 0), "mask": (1, 0, 0), "layernorm": (4, 3, 1),
    "rmsnorm": (2, 2, 1), "softmax": (3, 0, 2), "gelu": (2, 3, 7), "silu": (1, 1, 2), "relu": (1, 0, 0),
    "relu2": (1, 1, 0), "tanh": (0, 0, 1), "rope": (1, 2, 0), "absmax": (2, 0, 0), "sign": (1, 0, 0),
    "bool": (1, 0, 0), "quantize": (1, 1, 0), "rescale": (0, 1, 0),
}

_HOST_NAMES = {v: k for k, v in HOST_FUNCTIONS.items()}
_POST_NAMES = {v: k for k, v in POST_FUNCTIONS.items()}
_BUFFER_NAMES = {v: k for k, v in BUFFERS.items()}


class MachineError(ValueError):
    """A program the machine cannot run as given (beyond what ``isa.validate`` checks), naming the instruction."""


def _drain(lanes: int) -> int:
    """Cycles of one reduction across ``lanes`` (the vector unit's rule since the first simulator)."""
    return max(1, math.ceil(math.log2(lanes)) if lanes > 1 else 1)


def host_cycles(fn: str, rows: int, cols: int, lanes: int) -> int:
    """Cycles of a HOST op on the vector unit: ``passes × ceil(elements / lanes)``, plus a drain per pass and row
    for the reductions."""
    passes = VECTOR_PASSES.get(fn, 1)
    cycles = passes * -(-(rows * cols) // lanes)
    if fn in REDUCTIONS:
        cycles += passes * rows * _drain(lanes)
    return cycles


def act_format(params) -> str:
    """The memory format of an engine's activation operand (docs/isa.md §2): the unit's own
    (:attr:`hw.units.base.UnitParams.act_format`)."""
    return params.act_format


def machine_shape(design: Accelerator) -> MachineShape:
    """What ``isa.validate`` checks a program against: the design's buffers and engine slots."""
    engines = []
    for slot in design.engines:
        p = slot.params
        if p.timing == "stream":
            lanes, rows_total = p.lanes, p.rows * slot.count
            beat = p.weight_beat_bytes if hasattr(p, "weight_beat_bytes") else \
                -(-(rows_total * lanes * p.weight_bits) // 8)
            words = p.result_words if hasattr(p, "result_words") else 1
            max_k = p.max_k if hasattr(p, "max_k") else 1 << 30
        else:                                   # a systolic array: its weights stream `rows` deep, `cols` wide
            lanes, rows_total = p.rows, p.cols
            beat = -(-(p.rows * p.cols * p.weight_bits) // 8)
            words, max_k = 1, 1 << 30
        if hasattr(p, "weight_beat_bytes") and slot.count > 1:
            beat = slot.stream_params.weight_beat_bytes
        engines.append(EngineShape(p.kind.value, lanes, rows_total, beat, act_format(p), p.act_bits, words, max_k))
    return MachineShape({name: spec.size_bytes for name, spec in design.buffers.items()}, tuple(engines),
                        design.post.lanes, design.vector.lanes)


# -- durations in closed form (the fast mode) ----------------------------------------------------------------------

@dataclass
class _Timing:
    """The kernel's inputs: one entry per instruction."""

    cls: np.ndarray
    queue: np.ndarray
    deps: np.ndarray
    dur: np.ndarray
    ii: np.ndarray
    lat: np.ndarray
    fence: np.ndarray
    feed: np.ndarray          #: MATMUL: 1 when the accelerator's feeder reads and assembles the beats (stream engines)


def _transfer_cycles(design: Accelerator, rows: np.ndarray, nbytes: np.ndarray, src: np.ndarray,
                     dst: np.ndarray) -> np.ndarray:
    """:meth:`Accelerator.transfer_cycles` of each transfer (``src``/``dst``: a buffer index, -1 for DRAM), once per
    distinct shape."""
    key = np.stack([rows, nbytes, src, dst], axis=1).astype(np.int64)
    uniq, inv = np.unique(key, axis=0, return_inverse=True)
    cycles = np.array([design.transfer_cycles(int(r), int(b), None if s < 0 else int(s), None if d < 0 else int(d))
                       for r, b, s, d in uniq.tolist()], np.int64)
    return cycles[inv.reshape(-1)]


@lru_cache(maxsize=4096)
def _systolic(params, m: int, k: int, n: int):
    from .systolic import gemm
    return gemm(params, m, k, n)


def _matmul_shape(design: Accelerator, engine: int, m: int, k: int, n: int, w_buffer: int) -> tuple[int, int, int]:
    """``(beats, ii, latency)`` of one MATMUL in closed form (docs/isa.md §4.2)."""
    slot = design.engines[engine]
    p = slot.params
    if p.timing != "stream":
        run = _systolic(p, m, k, n)
        return run.cycles, 1, run.drain_tail
    beats = p.row_blocks(n, slot.count) * m * p.k_chunks(k)
    ii = design.matmul_ii(engine, k, w_buffer)
    # the last result is done when its last line is written: the engine's latency, then write cycles − 1 more
    return beats, ii, p.latency + _write_tail(design, engine, n)


def _write_tail(design: Accelerator, engine: int, n: int) -> int:
    """Cycles the last result of a MATMUL with ``n`` output rows takes to write beyond its first: its rows (those of
    the last row block) over the activations buffer's line (:meth:`Accelerator.result_write_cycles`), less one."""
    wide = design.engines[engine].stream_params
    last_rows = n - (wide.row_blocks(n) - 1) * wide.rows
    return design.result_write_cycles(engine, last_rows) - 1


def _timing(program: Program, design: Accelerator) -> _Timing:
    n = len(program)
    op = program.opcodes
    t = _Timing(np.full(n, sched.SYNC, np.int8), np.full(n, -1, np.int8), program.deps.astype(np.uint8),
                np.zeros(n, np.int64), np.ones(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.bool_),
                np.zeros(n, np.int8))
    for name, q in (("LOAD", sched.LOAD_Q), ("STORE", sched.STORE_Q)):
        idx = program.indices(name)
        if len(idx):
            onchip = program.field(name, "onchip").astype(bool)
            near = split_address(program.field(name, "sram"))[0].astype(np.int64)
            far = np.where(onchip, split_address(program.field(name, "dram"))[0], -1).astype(np.int64)
            src, dst = (far, near) if name == "LOAD" else (near, far)
            t.cls[idx], t.queue[idx] = sched.TRANSFER, q
            t.dur[idx] = _transfer_cycles(design, program.field(name, "rows"), program.field(name, "row_bytes"),
                                          src, dst)
    idx = program.indices("MATMUL")
    if len(idx):
        t.cls[idx], t.queue[idx] = sched.MATMUL, sched.COMPUTE_Q
        t.fence[idx] = program.field("MATMUL", "fence").astype(bool)
        uniq, inv = _matmul_kinds(program)
        shapes = np.array([_matmul_shape(design, *(int(v) for v in row)) for row in uniq], np.int64).reshape(-1, 3)
        t.dur[idx], t.ii[idx], t.lat[idx] = shapes[inv, 0], shapes[inv, 1], shapes[inv, 2]
        stream = np.array([design.engines[e].params.timing == "stream" for e in range(len(design.engines))])
        t.feed[idx] = stream[np.minimum(program.field("MATMUL", "engine"), len(design.engines) - 1)]
    for name in ("POST", "HOST"):
        idx = program.indices(name)
        if len(idx):
            t.cls[idx], t.queue[idx] = sched.SERIAL, sched.COMPUTE_Q
            rows, cols = program.field(name, "rows"), program.field(name, "cols")
            fn = program.field(name, "fn")
            if name == "HOST":
                lanes = design.vector.lanes
                passes, reduces = _HOST_PASSES[fn], _HOST_REDUCES[fn]
                t.dur[idx] = passes * -(-(rows * cols) // lanes) + np.where(reduces, passes * rows * _drain(lanes), 0)
            else:
                t.dur[idx] = _post_cycles(design, program, rows, cols, fn)
    idx = program.indices("SYNC")
    if len(idx):
        t.queue[idx] = program.field("SYNC", "queue")
    t.cls[op == 7] = sched.FINISH
    return t


def _post_cycles(design, program: Program, rows, cols, fn) -> np.ndarray:
    """Each POST's cycles: :meth:`hw.accelerator.Accelerator.post_cycles`, the one place the formula lives, asked
    per instruction (POSTs are few: only block programs have them)."""
    words = program.field("POST", "words").tolist()
    opts = program.field("POST", "opts").tolist()
    cyc = design.post_cycles
    return np.array([cyc(_POST_NAMES[f], r, c, w, o) for f, r, c, w, o in
                     zip(fn.tolist(), rows.tolist(), cols.tolist(), words, opts)], np.int64)


_KINDS: dict[int, tuple] = {}


def _matmul_kinds(program: Program) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (engine, m, k, n, weight buffer) of a program's MATMULs and each one's index among them
    (remembered for the program: timing and events both ask)."""
    hit = _KINDS.get(id(program))
    if hit is not None and hit[0] is program:
        return hit[1], hit[2]
    cols = [program.field("MATMUL", f) for f in ("engine", "m", "k", "n")] + \
        [split_address(program.field("MATMUL", "w"))[0]]
    e, m, k, n, b = cols
    if k.max() < 1 << 20 and e.max() < 1 << 6:
        key = (((e << 16 | m) << 20 | k) << 16 | n) << 2 | b        # 60 bits: one int64 sort instead of a lexsort
        first, inv = unique_runs(key)
        uniq = np.array([[c[i] for c in cols] for i in first], np.int64).reshape(-1, 5)
    else:
        uniq, inv = np.unique(np.stack(cols, axis=1), axis=0, return_inverse=True)
    _KINDS.clear()                                   # one program at a time: no growth
    _KINDS[id(program)] = (program, uniq, inv.ravel())
    return uniq, inv.ravel()


def unique_runs(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(key, return_index=True, return_inverse=True)`` (the index of each distinct key's first
    occurrence, and each element's distinct-key number, in key order) for keys that come in runs — a program's
    tiles repeat one shape, its instructions serve one op at a time: only the runs' heads are sorted."""
    key = np.asarray(key)
    if not key.size:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    heads = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
    _, first, inv = np.unique(key[heads], return_index=True, return_inverse=True)
    lengths = np.diff(np.concatenate([heads, [key.size]]))
    return heads[first], np.repeat(inv.ravel(), lengths)


# HOST function id → passes over the data, and whether each pass ends in a reduction
_HOST_PASSES = np.ones(256, np.int64)
_HOST_REDUCES = np.zeros(256, bool)
for _name, _id in HOST_FUNCTIONS.items():
    _HOST_PASSES[_id] = VECTOR_PASSES.get(_name, 1)
    _HOST_REDUCES[_id] = _name in REDUCTIONS


# -- the run -----------------------------------------------------------------------------------------------------

@dataclass
class ProgramRun:
    """A program's timing (every instruction's start and done cycle, the pushed tokens' cycles), per-queue busy
    cycles, and, in the stepped mode with data, the final memories."""

    program: Program = field(repr=False)
    cycles: int
    start: np.ndarray = field(repr=False)
    done: np.ndarray = field(repr=False)
    last_issue: np.ndarray = field(repr=False)
    busy: dict[str, int]
    stepped: bool
    memories: Memories | None = field(default=None, repr=False)
    #: the duration parameters of ``rep``'s instructions (every instruction's: ``timing.x[expand]``)
    timing: "_Timing | None" = field(default=None, repr=False)
    rep: Program | None = field(default=None, repr=False)         #: one copy of each repeated segment
    mult: np.ndarray | None = field(default=None, repr=False)     #: instructions each of ``rep``'s stands for
    expand: np.ndarray | None = field(default=None, repr=False)   #: each instruction's representative in ``rep``

    def representatives(self) -> tuple[Program, np.ndarray]:
        """``(program, multiplicities)`` to count per-instruction facts from (durations, events, traffic): one
        copy of each repeated segment and how many instructions each stands for (``timing`` is theirs)."""
        return self.rep, self.mult

    def queue_of(self) -> np.ndarray:
        """Every instruction's queue (-1: none)."""
        q = getattr(self, "_queue", None)
        if q is None:
            q = self.timing.queue[self.expand]
            object.__setattr__(self, "_queue", q)
        return q

    def op_cycles(self) -> np.ndarray:
        """Cycles attributed to each op of the op table along the compute queue's timeline (see
        :func:`compute_spans`); they add up to the program's. Ops without compute-queue instructions get 0."""
        n_ops = len(self.program.op_table)
        comp = np.flatnonzero(self.queue_of() == sched.COMPUTE_Q)
        out = np.zeros(max(n_ops, 1), np.int64)
        if not len(comp):
            return out[:n_ops]
        spans, _ = compute_spans(self.done[comp], 0)
        spans[-1] += max(0, self.cycles - int(self.done[comp].max()))
        refs = self.program.op_refs[comp].astype(np.int64)
        ok = refs < n_ops
        np.add.at(out, refs[ok], spans[ok])
        return out[:n_ops]

    def overlap(self) -> dict[str, int]:
        """Cycles during which the load queue (or the store queue) was busy while the compute queue was too: how
        much data movement the tokens let hide behind compute."""
        q = self.queue_of()
        return {"load_under_compute": int(sched.overlap(self.start, self.done, q, sched.LOAD_Q, sched.COMPUTE_Q)),
                "store_under_compute": int(sched.overlap(self.start, self.done, q, sched.STORE_Q,
                                                         sched.COMPUTE_Q))}


class OverlapMeter:
    """Cycles the load (store) queue was busy while the compute queue was too, over the chunks of one program (a
    transfer of one chunk can run under the compute of the next): :func:`sim.kernels.program.overlap_bounded`
    measures what is final after each chunk and carries the rest."""

    def __init__(self):
        self.carry = np.zeros((0, 3), np.int64)
        self.last_start = np.full(3, -1, np.int64)
        self.dispatched = 0
        self.total = {"load_under_compute": 0, "store_under_compute": 0}

    def _run(self, start, done, queue, expand, dispatched) -> None:
        out = np.empty((len(start) + len(self.carry), 3), np.int64)
        lo, so, n = sched.overlap_bounded(start, done, queue, expand, self.carry, self.last_start, dispatched, out)
        self.total["load_under_compute"] += int(lo)
        self.total["store_under_compute"] += int(so)
        self.carry = out[:n].copy()

    def add(self, pr: "ProgramRun") -> None:
        self.dispatched += len(pr.program)
        self._run(pr.start, pr.done, pr.timing.queue, pr.expand, self.dispatched)

    def close(self) -> dict[str, int]:
        """The totals, once the last chunk is in."""
        empty = np.zeros(0, np.int64)
        self.last_start[:] = np.iinfo(np.int64).max // 4
        self._run(empty, empty, np.zeros(0, np.int8), empty, np.iinfo(np.int64).max // 4)
        return dict(self.total)


def compute_spans(done: np.ndarray, prev_end: int) -> tuple[np.ndarray, int]:
    """The compute queue's timeline cut at its instructions (given in queue order by their done cycles, after
    ``prev_end``): each takes the cycles from the previous one's end to its own — its own work and any wait for its
    operands, which is what its op costs. Returns the spans and the new end."""
    ends = np.maximum.accumulate(np.maximum(done, prev_end))
    spans = np.diff(np.concatenate([[prev_end], ends]))
    return spans, int(ends[-1])


def _timing_queue(program: Program) -> np.ndarray:
    q = np.full(len(program), -1, np.int8)
    for name, qi in (("LOAD", 0), ("STORE", 2), ("MATMUL", 1), ("POST", 1), ("HOST", 1)):
        q[program.indices(name)] = qi
    idx = program.indices("SYNC")
    if len(idx):
        q[idx] = program.field("SYNC", "queue")
    return q


class _Clock:
    """The scheduler's state between chunks of one program: queue free cycles, the compute issue pipeline, the
    token queues, the dispatch index, the busy cycles so far."""

    def __init__(self):
        self.state = np.zeros(5, np.int64)
        self.summary = np.zeros(5, np.int64)
        self.tokens = np.zeros((4, 1), np.int64)
        self.head = np.zeros(4, np.int64)
        self.tail = np.zeros(4, np.int64)
        self.index = 0

    def advance(self, program: Program, t: "_Timing", expand: np.ndarray):
        n = len(program)
        live = [self.tokens[q, self.head[q]:self.tail[q]] for q in range(4)]
        tokens = np.zeros((4, max(len(x) for x in live) + n + 1), np.int64)
        for q, x in enumerate(live):
            tokens[q, :len(x)] = x
        self.tokens, self.head, self.tail = tokens, np.zeros(4, np.int64), np.array([len(x) for x in live], np.int64)
        start, done, li = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)
        pp, pn = np.zeros(n, np.int64), np.zeros(n, np.int64)
        status = sched.schedule(t.cls, t.queue, program.deps, t.dur, t.ii, t.lat, t.fence, t.feed, start, done, li,
                                pp, pn,
                                self.summary, self.state, self.tokens, self.head, self.tail, self.index, expand)
        if status == sched.TOKEN_MISSING:
            i = int(self.summary[1])
            raise MachineError(f"instruction {self.index + i} ({program.instruction(i).opcode}) pops a token no earlier "
                               "instruction pushed (or a flag its queue cannot have): the program would deadlock")
        self.index += n
        return status, start, done, li

    @property
    def busy(self) -> dict[str, int]:
        return {"load": int(self.summary[2]), "compute": int(self.summary[3]), "store": int(self.summary[4])}


def run(program: Program, design: Accelerator, memories: Memories | None = None, *, stepped: bool = False,
        seed: int = 0) -> ProgramRun:
    """Time ``program`` on ``design`` (closed form, or ``stepped`` through the unit kernels); with ``memories``
    (stepped only) also execute it and return the final memories in the run. The program must be well formed
    (:func:`isa.validate.validate`); a token popped before it is pushed is refused here too."""
    runs = list(run_chunks([program], design, memories, stepped=stepped, seed=seed))
    return runs[0]


def run_chunks(chunks, design: Accelerator, memories: Memories | None = None, *, stepped: bool = False,
               seed: int = 0):
    """Time a program given as consecutive chunks (one timing state across them: a long program never has to be
    in memory whole); yields each chunk's :class:`ProgramRun` (cycles: the end so far), the last one ending at
    its FINISH."""
    if memories is not None and not stepped:
        raise MachineError("executing a program on data needs the stepped mode (stepped=True)")
    clock = _Clock()
    mem = memories.copy() if memories is not None else None
    status = sched.NO_FINISH
    for chunk in chunks:
        if status == sched.OK:
            raise MachineError("instructions follow the program's FINISH")
        program, segments = (chunk, None) if isinstance(chunk, Program) else (chunk.program, chunk.segments)
        if segments is None or len(segments) == len(program) or not len(program):
            rep, expand, mult = program, np.arange(len(program)), np.ones(len(program), np.int64)
        else:                              # durations once per segment, for every copy
            rep, expand, mult = _representative(program, segments)
        t = _timing(rep, design)
        if stepped:
            full = _Timing(*(getattr(t, f)[expand] for f in ("cls", "queue")), program.deps.astype(np.uint8),
                           *(getattr(t, f)[expand] for f in ("dur", "ii", "lat", "fence", "feed")))
            _step(program, design, full, mem, seed)
        status, start, done, li = clock.advance(program, t, expand)
        yield ProgramRun(program, int(clock.summary[0]), start, done, li, clock.busy, stepped, mem, t, rep, mult,
                         expand)
    if status != sched.OK:
        raise MachineError("the program has no FINISH")


def _representative(program: Program, segments: np.ndarray):
    """The first copy of every segment as a program of its own, each instruction's representative among them
    (``expand``) and how many instructions each representative stands for (``mult``)."""
    lengths, copies = segments[:, 0], segments[:, 1]
    if int((lengths * copies).sum()) != len(program):
        raise MachineError(f"the chunk's segments cover {int((lengths * copies).sum())} instructions, not "
                           f"{len(program)}")
    seg_start = np.concatenate([[0], np.cumsum(lengths * copies)[:-1]])
    rep_start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    # representatives: each segment's first copy; every instruction maps to its copy-0 twin
    rep_idx = np.concatenate([np.arange(a, a + n) for a, n in zip(seg_start.tolist(), lengths.tolist())])
    expand = np.concatenate([np.tile(np.arange(r, r + n), c) for r, n, c in
                             zip(rep_start.tolist(), lengths.tolist(), copies.tolist())])
    rep = Program(program.words[rep_idx], program.op_table, design=program.design, meta=program.meta)
    return rep, expand, np.repeat(copies, lengths)


# -- the stepped mode ---------------------------------------------------------------------------------------------

def _step(program: Program, design: Accelerator, t: _Timing, mem: Memories | None, seed: int) -> None:
    """Measure every MATMUL's duration with the unit kernels (and, with ``mem``, execute the whole program in
    program order), refusing any disagreement with the closed form."""
    from .engine import Feeder, simulate

    rng = np.random.default_rng(seed)
    matmuls = program.indices("MATMUL")
    # Without data, a MATMUL's timing depends on its shape only: each distinct shape is stepped once.
    measured_by_shape: dict[tuple, tuple[int, int, int]] = {}
    order = range(len(program)) if mem is not None else matmuls.tolist()
    is_matmul = np.zeros(len(program), bool)
    is_matmul[matmuls] = True
    for i in order:
        ins = program.instruction(i)
        if mem is not None and not is_matmul[i]:
            _execute(ins, design, mem, i)
            continue
        p = engine_params(design, ins["engine"])
        m, k, n = ins["m"], ins["k"], ins["n"]
        ii = int(t.ii[i])
        key = (ins["engine"], m, k, n, ii)
        if mem is None and key in measured_by_shape:
            measured = measured_by_shape[key]
        elif p.timing != "stream":
            from .systolic import gemm
            r = gemm(p, m, k, n, stepped=True, seed=seed)
            measured = (r.cycles, 1, r.drain_tail)
        elif not p.steppable:
            continue                     # a floating-point MAC array: closed form in both modes
        else:
            if p.reduction_block and k > p.reduction_block:
                raise MachineError(f"instruction {i} (MATMUL): a BiLLM-mode MATMUL covers one {p.reduction_block}-"
                                   f"column block, not k = {k}")
            if mem is not None:
                w, x, extra = _matmul_operands(ins, design, mem)
            else:
                w, x, extra = p.random_operands(rng, m, k, n)
            beats = p.n_beats(n, k, m)
            er = simulate(p, w, x, extra=extra, feeder=Feeder((beats,), (0,), 1, ii))
            measured = (er.input_beats, ii, er.last_output_cycle - er.first_input_cycle - (er.input_beats - 1) * ii
                        + _write_tail(design, int(ins["engine"]), n))
            if mem is not None:
                _write_results(ins, p, er, mem)
        measured_by_shape[key] = measured
        closed = (int(t.dur[i]), int(t.ii[i]), int(t.lat[i]))
        if measured != closed:
            raise MachineError(f"instruction {i} (MATMUL on engine {ins['engine']}): the stepped engine gave "
                               f"(beats, ii, latency) = {measured}, the closed form {closed}")


def _region_bytes(mem: Memories, addr: int, rows: int, nbytes: int, stride: int) -> np.ndarray:
    space, off = mem.space(addr, dram=False)
    return read_bytes(space, off, rows, nbytes, stride)


def _matmul_operands(ins, design: Accelerator, mem: Memories):
    """The MATMUL's weights (decoded from its ENG tile) and activations (decoded from their format), as the unit's
    ``operand_beats`` takes them."""
    p = engine_params(design, ins["engine"])
    m, k, n = ins["m"], ins["k"], ins["n"]
    tile = p.row_blocks(n) * p.beats_per_reduction(k) * p.weight_beat_bytes
    space, off = mem.space(ins["w"], dram=False)
    w, extra = p.weights_from_image(read_bytes(space, off, 1, tile, tile).ravel(), n, k)
    fmt = act_format(p)
    space, off = mem.space(ins["a"], dram=False)
    x = read_matrix(space, off, m, k, fmt, ins["astride"])
    return w, act_values(p, x, fmt), extra


def act_values(p, x: np.ndarray, fmt: str) -> np.ndarray:
    """Activation codes as the unit takes them from their memory format: B1 bits are ±1 for XNOR-popcount (1 = +1)
    and 0/1 attention bits for BAMM (the unit's own encoding: ``operand_padding``'s activation field is
    ``bit_pm1`` or unsigned)."""
    if fmt != "B1":
        return x
    enc = next(f.encoding for f in p.operand_layout.fields if f.role == "activation")
    return 2 * x - 1 if enc == "bit_pm1" else x


def _write_results(ins, p, er, mem: Memories) -> None:
    records = p.pack_results(er.results)                      # int32 [m][n][words]
    m, n, words = records.shape
    space, off = mem.space(ins["r"], dram=False)
    write_matrix(space, off, records.reshape(m, n * words).astype(np.int64), "I32")


def _execute(ins, design: Accelerator, mem: Memories, i: int) -> None:
    """The data movement and arithmetic of one non-MATMUL instruction (MATMULs write their results after their
    stepped run), in program order."""
    if ins.opcode in ("LOAD", "STORE"):
        execute_transfer(ins, mem)
    elif ins.opcode == "POST":
        execute_post(ins, design, mem, i)
    elif ins.opcode == "HOST":
        raise MachineError(f"instruction {i} (HOST {_HOST_NAMES.get(ins['fn'])}): HOST functions have no "
                           "integer semantics in v1; the host computes them outside the program")


# -- energy events ------------------------------------------------------------------------------------------------

def events(program: Program, design: Accelerator, mult: np.ndarray | None = None) -> list[Counter]:
    """Integer event counters of every op of the op table (what ``sim.energy`` prices), summed over the
    instructions serving it: bits moved by transfers, the engines' per-beat and per-result events, the vector
    unit's floating-point operations, the post unit's integer operations. Instructions are grouped by (op,
    variant) first, so the per-event work is per group, not per instruction. ``mult``: how many instructions each
    one stands for (:meth:`ProgramRun.representatives`)."""
    n_ops = len(program.op_table)
    out = [Counter() for _ in range(n_ops)]
    refs = program.op_refs.astype(np.int64)
    weight = np.ones(len(program), np.int64) if mult is None else np.asarray(mult, np.int64)

    def groups(idx, variant, width):
        """(which instructions serve an op, their group ids, the groups' ops and variants)."""
        r = refs[idx]
        ok = r < n_ops
        key = r[ok] * width + variant[ok]
        first, inv = unique_runs(key)
        uniq = key[first]
        return ok, inv, uniq // width, uniq % width

    for name in ("LOAD", "STORE"):
        idx = program.indices(name)
        if not len(idx):
            continue
        bits = program.field(name, "rows") * program.field(name, "row_bytes") * 8
        onchip = program.field(name, "onchip").astype(np.int64)
        sb = split_address(program.field(name, "sram"))[0]
        db = np.where(onchip == 1, split_address(program.field(name, "dram"))[0], 0)
        ok, inv, ops, var = groups(idx, (sb * 2 + onchip) * 4 + db, 32)
        sums = np.bincount(inv, weights=(bits * weight[idx])[ok].astype(np.float64), minlength=len(ops))
        near, far = ("sram_write", "sram_read") if name == "LOAD" else ("sram_read", "sram_write")
        for o, v, total in zip(ops.tolist(), var.tolist(), sums.tolist()):
            total = int(round(total))
            s_buf, on, d_buf = _BUFFER_NAMES[v // 8], (v // 4) % 2, _BUFFER_NAMES.get(v % 4)
            out[o][(near, s_buf)] += total
            if on:
                out[o][(far, d_buf)] += total
            else:
                out[o][("dram_bits",)] += total
    idx = program.indices("MATMUL")
    if len(idx):
        uniq, kind = _matmul_kinds(program)
        ok, inv, ops, var = groups(idx, kind, len(uniq))
        counts = np.rint(np.bincount(inv, weights=weight[idx][ok].astype(np.float64), minlength=len(ops))).astype(
            np.int64)
        per_kind = [_matmul_event_counts(design, *(int(x) for x in row)) for row in uniq]
        for o, v, c in zip(ops.tolist(), var.tolist(), counts.tolist()):
            for key, val in per_kind[v].items():
                out[o][key] += val * c
    idx = program.indices("HOST")
    if len(idx):
        bits = design.vector.fp_bits
        fn = program.field("HOST", "fn")
        elements = program.field("HOST", "rows") * program.field("HOST", "cols") * weight[idx]
        ok, inv, ops, var = groups(idx, fn, 256)
        sums = np.bincount(inv, weights=elements[ok].astype(np.float64), minlength=len(ops))
        for o, f, e in zip(ops.tolist(), var.tolist(), sums.tolist()):
            e = int(round(e))
            fname = _HOST_NAMES[f]
            adds, muls, special = VECTOR_MIX[fname]
            passes = VECTOR_PASSES.get(fname, 1)
            c = out[o]
            c[("vector", "fp_add", bits)] += adds * e
            c[("vector", "fp_mul", bits)] += muls * e
            c[("vector", "fp_special", bits)] += special * e
            c[("sram_read", "activations")] += passes * e * bits
            c[("sram_write", "activations")] += e * bits
    idx = program.indices("POST")
    if len(idx):
        elements = program.field("POST", "rows") * program.field("POST", "cols") * weight[idx]
        words = program.field("POST", "words")
        ok, inv, ops, _ = groups(idx, np.zeros(len(idx), np.int64), 1)
        reads = np.bincount(inv, weights=(elements * words)[ok].astype(np.float64), minlength=len(ops))
        writes = np.bincount(inv, weights=elements[ok].astype(np.float64), minlength=len(ops))
        for o, rd, wr in zip(ops.tolist(), reads.tolist(), writes.tolist()):
            c = out[o]
            c[("int_add", 32)] += int(round(rd))                # one add (or compare) per word read
            c[("sram_read", "activations")] += int(round(rd)) * 32
            c[("sram_write", "activations")] += int(round(wr)) * 32
    for c in out:                                                 # no zero-valued keys
        for key in [k for k, v in c.items() if not v]:
            del c[key]
    return out


def _matmul_event_counts(design: Accelerator, engine: int, m: int, k: int, n: int, w_buffer: int) -> Counter:
    """Events of one MATMUL (the engine side; its operands' loads are LOAD instructions of their own)."""
    slot = design.engines[engine]
    p = slot.params
    w_src = _BUFFER_NAMES[w_buffer]
    ev = Counter()
    if p.timing != "stream":
        r = _systolic(p, m, k, n)
        ev[("int_mul", p.act_bits, p.weight_bits)] += r.macs
        ev[("int_add", p.acc_width)] += r.macs
        ev[("reg_bits",)] += r.a_reg_writes * p.act_bits + r.b_reg_writes * p.weight_bits + r.psum_reg_writes * p.acc_width
        ev[("acc_read_bits",)] += r.acc_reads * p.acc_width
        ev[("acc_write_bits",)] += r.acc_writes * p.acc_width
        ev[("sram_read", "activations")] += r.sram_a_reads * p.act_bits + r.sram_c_reads * p.acc_width
        ev[("sram_read", w_src)] += r.sram_b_reads * p.weight_bits
        ev[("sram_write", "activations")] += r.sram_c_writes * p.acc_width
        return ev
    rows_total, lanes = p.rows * slot.count, p.lanes
    a_bits, w_bits = p.act_bits, p.weight_bits
    beats = p.row_blocks(n, slot.count) * m * p.k_chunks(k)
    results = p.row_blocks(n, slot.count) * m * p.reductions(k)
    for key, v in p.lane_events(rows_total).items():
        ev[key] += v * beats
    for key, v in p.tree_events(rows_total).items():
        ev[key] += v * beats
    for key, v in p.result_events(rows_total).items():
        ev[key] += v * results
    ev[("reg_bits",)] += (lanes * a_bits + rows_total * lanes * w_bits + 1) * beats   # the operand register
    ev[("sram_read", "activations")] += lanes * a_bits * beats
    ev[("sram_read", w_src)] += rows_total * lanes * w_bits * beats
    ev[("sram_write", "activations")] += m * n * p.result_bits
    return ev
