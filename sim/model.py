"""Whole models on a described accelerator: cycles, event counters and energy, op by op.

``simulate_model(model, scheme, design, policy=...)`` extracts the workload (``models.workload``), maps every
operation onto the design (``hw.accelerator``) under a mapping policy (``hw.accelerator.MappingPolicy``: loop
order, double buffering, resident weights; by default the design file's ``[mapping]`` table) and times it. What
an engine is (its operand widths, fit rules, event inventories, random operands, timing model) it is asked
(``hw.units.UnitParams``); this module holds the mapping and the timing:

* **matmuls on a stream engine** (ternary-MAC, XNOR-popcount, BAMM, binary-basis, int8-MAC, FP-MAC): the output
  rows are cut into row blocks of the engine's ``rows × count`` width; each row block is a *tile* whose weights
  (or, for attention, keys/values) come from DRAM into the weight (KV) buffer unless they are resident on chip,
  together with the activations when those do not fit the activation buffer. With ``weights-outer`` loop order a
  tile serves every token (weight reuse); with ``tokens-outer`` every token streams every tile again. Beats issue
  at most every ``ii`` cycles, ``ii`` being what the buffers' banks × ports × word width allow for one beat's
  operands; tiles double-buffer when the policy says so. The schedule is ``sim.schedule.feeder_schedule`` (fast
  mode) or the stepped kernel with the same feeder and real operand values (stepped mode, small shapes).
* **matmuls on a systolic array**: ``sim.systolic.gemm`` (compute) overlapped with the weight traffic.
* **vector work** on the vector unit: ``passes × ceil(elements / lanes)`` cycles per op, plus a log2(lanes)
  reduction drain per pass for the reductions (norms, softmax, absmax: the dynamic-scale reductions stall the
  quantized linear after them).
* **memory ops** (embedding gathers, KV-cache appends): their bytes at the DRAM or buffer bandwidth.

Operations run one after the other in workload order; each op's cycles × its ``layers`` count. Every op also
yields integer event counters (adds by width, gates, multiplies, register bits, SRAM bits by buffer, DRAM bits,
vector FP operations) that ``sim.energy`` prices with a technology table.
"""

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from hw.accelerator import Accelerator, EngineSlot, MappingPolicy, load_design_with_policy
from hw.units import ceil_div
from models.config import load_config
from models.schemes import get_scheme
from models.workload import Op, Workload, extract_workload

from .schedule import feeder_schedule

__all__ = ["OpTiming", "ModelRun", "CapacityError", "simulate_model", "time_op", "workload_macs_by_kind",
           "VECTOR_PASSES", "VECTOR_MIX", "REDUCTIONS"]

#: Passes over the data each vector op needs (a LayerNorm reads once for the statistics, once to normalise).
VECTOR_PASSES = {"layernorm": 2, "rmsnorm": 2, "softmax": 2}
#: Ops that end each pass with a reduction across the lanes (log2(lanes) cycles of drain per pass and row).
REDUCTIONS = frozenset({"layernorm", "rmsnorm", "softmax", "absmax"})
#: Floating-point operations per element: (adds, multiplies, special functions); each sums to its
#: models.workload.VECTOR_FLOPS (tests/test_model_sim.py checks it).
VECTOR_MIX = {
    "add": (1, 0, 0), "mul": (0, 1, 0), "scale": (0, 1, 0), "mask": (1, 0, 0), "layernorm": (4, 3, 1),
    "rmsnorm": (2, 2, 1), "softmax": (3, 0, 2), "gelu": (2, 3, 7), "silu": (1, 1, 2), "relu": (1, 0, 0),
    "relu2": (1, 1, 0), "tanh": (0, 0, 1), "rope": (1, 2, 0), "absmax": (2, 0, 0), "sign": (1, 0, 0),
    "bool": (1, 0, 0), "quantize": (1, 1, 0), "rescale": (0, 1, 0),
}


class CapacityError(ValueError):
    """A buffer too small for an op's weight tile or token block: the op cannot be timed on the design. Only the
    timing needs the room; the arithmetic-only energy, which counts operations, does not (``reports.model``)."""


@dataclass
class OpTiming:
    """One op of the workload on the design: cycles and events of one execution, and how often it runs."""

    op: Op
    engine: str                       #: engine kind, "vector" or "memory"
    cycles: int                       #: per execution (the op's ``layers`` executions run one after another)
    events: Counter                   #: per execution
    macs: int = 0                     #: useful MACs per execution
    mac_slots: int = 0                #: engine MAC slots during the op's cycles (utilisation denominator)
    stall_cycles: int = 0
    dram_bytes: int = 0
    notes: str = ""

    @property
    def executions(self) -> int:
        return self.op.layers

    @property
    def total_cycles(self) -> int:
        return self.cycles * self.op.layers


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

    @property
    def cycles(self) -> int:
        return sum(t.total_cycles for t in self.ops)

    @property
    def latency_s(self) -> float:
        return self.cycles / self.design.clock_hz

    def events(self) -> Counter:
        total = Counter()
        for t in self.ops:
            for k, v in t.events.items():
                total[k] += v * t.executions
        return total

    def macs_by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.ops:
            if t.op.kind == "matmul":
                out[t.op.unit] = out.get(t.op.unit, 0) + t.macs * t.executions
        return out

    @property
    def utilisation(self) -> float:
        """Useful MACs over the MAC slots of the engines that ran them, during their ops' cycles."""
        slots = sum(t.mac_slots * t.executions for t in self.ops)
        return sum(t.macs * t.executions for t in self.ops) / slots if slots else 0.0

    def phase_cycles(self, phase: str) -> int:
        return sum(t.total_cycles for t in self.ops if t.op.phase == phase)


def workload_macs_by_kind(ops) -> dict[str, int]:
    """The useful MACs :meth:`ModelRun.macs_by_kind` counts, from the workload alone (no timing): QBB's N bases are
    N MACs a weight, as the stream engine counts them; every other matmul one MAC per multiply-accumulate."""
    out: dict[str, int] = {}
    for o in ops:
        if o.kind == "matmul":
            out[o.unit] = out.get(o.unit, 0) + o.macs * _macs_per_weight(o)
    return out


# -- stream engines ------------------------------------------------------------------------------------------

def _dram_cycles(design: Accelerator, nbytes: int) -> int:
    """Cycles of one DRAM transfer of ``nbytes`` at the design's bandwidth, with its fixed latency (0 for none)."""
    return 0 if nbytes == 0 else math.ceil(nbytes / design.dram_bytes_per_cycle) + design.dram.latency_cycles


def _engine_weight_bytes(op: Op, slot: EngineSlot) -> int:
    """Bytes of one execution of ``op``'s right operand in the engine's format, rows padded to whole row blocks:
    what streaming loads once per pass over it, and what a resident copy occupies."""
    return slot.params.weight_bytes(op.k, op.n, slot.count)


def _macs_per_weight(op: Op) -> int:
    """Useful MACs one weight element of ``op`` stands for: QBB's N bases are N MACs a weight (as the binary-basis
    engine counts them), every other matmul one."""
    return op.b_bits if op.weight_layout == "bases" else 1


@dataclass(frozen=True)
class _Placement:
    """Where an op's operands live and what moves per tile."""

    weight_src: str          # "weights" or "kv"
    weight_on_chip: bool
    acts_on_chip: bool


def _stream_timing(op: Op, slot: EngineSlot, design: Accelerator, policy: MappingPolicy, placement: _Placement, *,
                   stepped: bool, seed: int = 0) -> OpTiming:
    p = slot.params
    rows_total = p.rows * slot.count
    lanes = p.lanes
    a_bits, w_bits = p.act_bits, p.weight_bits
    m, k, n = op.m, op.k, op.n
    per_exec_count = op.count                    # heads run one after another
    row_blocks = p.row_blocks(n, slot.count)
    k_chunks = p.k_chunks(k)                     # BiLLM: per 128-column block
    w_src = design.buffers[placement.weight_src]
    act_buf = design.activation_buffer
    ii = max(1, ceil_div(lanes * a_bits, act_buf.bits_per_cycle), ceil_div(rows_total * lanes * w_bits,
                                                                               w_src.bits_per_cycle))
    tile_w_bytes = ceil_div(rows_total * k * w_bits, 8)
    slots = 2 if policy.double_buffer else 1
    _check_capacity(op, slot, design, policy, placement)

    w_load = 0 if placement.weight_on_chip else tile_w_bytes
    if policy.loop_order == "weights-outer" or m == 1:
        # Activations that do not fit the buffer come from DRAM a token block at a time (as many tokens as one
        # slot of the activation buffer holds); each block meets every weight tile, loaded with the first.
        blocks = [m] if placement.acts_on_chip else _token_blocks(op, k * a_bits, act_buf, slots)
        tile_beats = [mb * k_chunks for mb in blocks for _ in range(row_blocks)]
        act_loads = [0 if placement.acts_on_chip or r else ceil_div(mb * k * a_bits, 8)
                     for mb in blocks for r in range(row_blocks)]
    else:       # tokens-outer: every token streams every weight tile again, with its activations
        tile_beats = [k_chunks] * (row_blocks * m)
        act_loads = [0 if placement.acts_on_chip else ceil_div(k * a_bits, 8)] * (row_blocks * m)
    tile_bytes = [w_load + a for a in act_loads]
    loads = [_dram_cycles(design, b) for b in tile_bytes]
    latency = p.latency
    if stepped and p.steppable:
        cycles = _stepped_cycles(op, slot, design, policy, tile_beats, loads, slots, ii, seed)
    else:
        cycles = feeder_schedule(tile_beats, loads, slots=slots, ii=ii, latency=latency).cycles
    beats = sum(tile_beats)
    results = row_blocks * m * p.reductions(k)             # BiLLM closes a reduction per 128-column block

    ev = Counter()
    for key, v in p.lane_events(rows_total).items():
        ev[key] += v * beats
    for key, v in p.tree_events(rows_total).items():
        ev[key] += v * beats
    for key, v in p.result_events(rows_total).items():
        ev[key] += v * results
    payload = lanes * a_bits + rows_total * lanes * w_bits + 1
    ev[("reg_bits",)] += payload * beats                                         # the operand register
    ev[("sram_read", "activations")] += lanes * a_bits * beats
    ev[("sram_read", placement.weight_src)] += rows_total * lanes * w_bits * beats
    ev[("sram_write", "activations")] += m * n * p.result_bits
    dram_bytes = sum(tile_bytes)
    ev[("sram_write", placement.weight_src)] += w_load * len(tile_beats) * 8
    ev[("sram_write", "activations")] += sum(act_loads) * 8
    ev[("dram_bits",)] += dram_bytes * 8
    macs = m * k * n * _macs_per_weight(op)
    scaled = Counter({key: v * per_exec_count for key, v in ev.items()})
    return OpTiming(op, slot.unit, cycles * per_exec_count, scaled, macs=macs * per_exec_count,
                    mac_slots=cycles * per_exec_count * p.macs_per_cycle * slot.count,
                    stall_cycles=(cycles - beats - latency) * per_exec_count, dram_bytes=dram_bytes * per_exec_count,
                    notes=f"ii={ii}, {len(tile_beats)} tile(s), {beats} beats")


def _token_blocks(op: Op, token_bits: int, act_buf, slots: int) -> list[int]:
    """Token counts of the blocks an op's off-chip activations come in: one buffer slot's worth each."""
    per_token, room = ceil_div(token_bits, 8), act_buf.size_bytes // slots
    if per_token > room:
        raise CapacityError(f"{op.name}: the activations buffer ({act_buf.size_bytes:,} bytes) cannot hold {slots} "
                            f"block(s) of one token's activations ({per_token:,} bytes); enlarge buffers.activations")
    size = room // per_token
    return [size] * (op.m // size) + ([op.m % size] if op.m % size else [])


def _check_capacity(op: Op, slot: EngineSlot, design: Accelerator, policy: MappingPolicy,
                    placement: "_Placement") -> None:
    """Refuse (:class:`CapacityError`) a stream-engine matmul whose weight tiles or token blocks do not fit their
    buffers; called for every matmul before the first op is timed, and again by the timing itself."""
    p = slot.params
    if p.timing != "stream":
        return                                  # the closed form streams its operands; no tile to hold
    rows_total = p.rows * slot.count
    w_bits, slots = p.weight_bits, 2 if policy.double_buffer else 1
    w_src = design.buffers[placement.weight_src]
    tile_w_bytes = ceil_div(rows_total * op.k * w_bits, 8)
    if not placement.weight_on_chip and tile_w_bytes * slots > w_src.size_bytes:
        raise CapacityError(f"{op.name}: the {w_src.name} buffer ({w_src.size_bytes:,} bytes) cannot hold {slots} "
                            f"tile(s) of {tile_w_bytes:,} bytes ({rows_total} rows × K={op.k} × {w_bits} bits); "
                            f"enlarge buffers.{w_src.name} or use fewer rows")
    if not placement.acts_on_chip and (policy.loop_order == "weights-outer" or op.m == 1):
        _token_blocks(op, op.k * p.act_bits, design.activation_buffer, slots)


def _acts_fit(op: Op, slot: EngineSlot, design: Accelerator) -> bool:
    """Whether the op's whole left operand, in the engine's activation format, fits the activation buffer."""
    return ceil_div(op.m * op.k * slot.params.act_bits, 8) <= design.activation_buffer.size_bytes


def _stepped_shape(op: Op, slot: EngineSlot, design: Accelerator, policy: MappingPolicy):
    """``(params, m, k, n)`` the stepped kernel runs for ``op``, after refusing what it cannot step — called for
    every matmul before the first op is timed. ``count`` engines in lockstep step as one engine ``count`` times
    as wide; BiLLM's per-block reductions step as reductions of one block each, (token, block) pairs the rows."""
    from dataclasses import replace

    from .engine import MAX_STEPPED_BYTES

    p = slot.params
    if not p.steppable:
        return None                                     # closed form in both modes
    if slot.count > 1:
        p = replace(p, rows=p.rows * slot.count)
    m, k, n = op.m, op.k, op.n
    if policy.loop_order == "tokens-outer" and m > 1:
        raise ValueError(f"{op.name}: the stepped mode follows the engine's own beat order (the weights-outer "
                         "loop); the fast mode covers tokens-outer")
    if not _acts_fit(op, slot, design):
        raise ValueError(f"{op.name}: the stepped mode needs the activations on chip (one pass over all tokens); "
                         "the fast mode covers activations streamed in token blocks")
    block = p.reduction_block
    if block is not None:
        if k % block:
            raise ValueError(f"{op.name}: the stepped mode runs BiLLM layers whose K is a multiple of "
                             f"{block}, not {k}")
        m, k = m * (k // block), block
    n_ch = sum(p.rows if c.per_row else 1 for c in p.channels())
    if p.n_beats(n, k, m) * n_ch * 8 > MAX_STEPPED_BYTES:
        raise ValueError(f"{op.name}: stepping {p.n_beats(n, k, m):,} beats × {n_ch} channels needs more than "
                         f"{MAX_STEPPED_BYTES >> 30} GiB; use the fast mode for this size")
    return p, m, k, n


def _stepped_cycles(op: Op, slot: EngineSlot, design: Accelerator, policy: MappingPolicy, tile_beats, loads, slots,
                    ii, seed) -> int:
    """The stepped kernel on random operands of the op's shape, in the engine's operand ranges (timing does not
    depend on values)."""
    from .engine import Feeder, simulate

    p, m, k, n = _stepped_shape(op, slot, design, policy)
    w, x, extra = p.random_operands(np.random.default_rng(seed), m, k, n)
    assert len(tile_beats) == p.row_blocks(n) and sum(tile_beats) == p.n_beats(n, k, m), "checked up front"
    run = simulate(p, w, x, extra=extra, feeder=Feeder(tuple(tile_beats), tuple(loads), slots, ii))
    return run.last_output_cycle + 1


# -- systolic arrays, vector unit, memory ---------------------------------------------------------------------

def _systolic_timing(op: Op, slot: EngineSlot, design: Accelerator, policy: MappingPolicy, placement: _Placement, *,
                     stepped: bool, seed: int = 0) -> OpTiming:
    from .systolic import gemm

    p = slot.params                     # a SystolicArrayParams: closed form in both modes
    run = gemm(p, op.m, op.k, op.n)
    # the op ends when its last output is in the buffer: the output-stationary drain tail counts here
    compute = run.cycles + run.drain_tail
    w_bytes = 0 if placement.weight_on_chip else _engine_weight_bytes(op, slot)
    a_bytes = 0 if placement.acts_on_chip else ceil_div(op.m * op.k * p.act_bits, 8)
    dram = w_bytes + a_bytes
    dram_cycles = _dram_cycles(design, dram)
    cycles = max(compute, dram_cycles) if policy.double_buffer else compute + dram_cycles
    ev = Counter()
    ev[("int_mul", p.act_bits, p.weight_bits)] += run.macs
    ev[("int_add", p.acc_width)] += run.macs
    ev[("reg_bits",)] += (run.a_reg_writes * p.act_bits + run.b_reg_writes * p.weight_bits
                          + run.psum_reg_writes * p.acc_width)
    ev[("acc_read_bits",)] += run.acc_reads * p.acc_width         # OS: the PE accumulators' read-modify-writes
    ev[("acc_write_bits",)] += run.acc_writes * p.acc_width
    ev[("sram_read", "activations")] += run.sram_a_reads * p.act_bits + run.sram_c_reads * p.acc_width
    ev[("sram_read", placement.weight_src)] += run.sram_b_reads * p.weight_bits
    ev[("sram_write", "activations")] += run.sram_c_writes * p.acc_width
    ev[("sram_write", placement.weight_src)] += w_bytes * 8
    ev[("sram_write", "activations")] += a_bytes * 8
    ev[("dram_bits",)] += dram * 8
    n = op.count
    return OpTiming(op, slot.unit, cycles * n, Counter({key: v * n for key, v in ev.items()}), macs=run.macs * n,
                    mac_slots=cycles * n * p.macs_per_cycle * slot.count, stall_cycles=(cycles - compute) * n,
                    dram_bytes=dram * n, notes=f"{run.folds} folds, {p.dataflow}, {run.cycles} compute cycles")


def _vector_timing(op: Op, design: Accelerator) -> OpTiming:
    lanes = design.vector.lanes
    elements = op.m * op.n * op.count
    passes = VECTOR_PASSES.get(op.op, 1)
    cycles = passes * ceil_div(elements, lanes)
    if op.op in REDUCTIONS:
        rows = op.m * op.count
        cycles += passes * rows * max(1, math.ceil(math.log2(lanes)) if lanes > 1 else 1)
    adds, muls, special = VECTOR_MIX[op.op]
    bits = design.vector.fp_bits
    ev = Counter()
    ev[("vector", "fp_add", bits)] += adds * elements
    ev[("vector", "fp_mul", bits)] += muls * elements
    ev[("vector", "fp_special", bits)] += special * elements
    ev[("sram_read", "activations")] += passes * elements * bits
    ev[("sram_write", "activations")] += elements * bits
    return OpTiming(op, "vector", cycles, ev)


def _memory_timing(op: Op, design: Accelerator, kv_on_chip: bool) -> OpTiming:
    ev = Counter()
    bits = op.bytes * 8
    if op.op == "kv_append" and kv_on_chip:
        cycles = ceil_div(bits, design.kv_buffer.bits_per_cycle)
        ev[("sram_write", "kv")] += bits
        dram = 0
    else:
        cycles = _dram_cycles(design, op.bytes)
        ev[("dram_bits",)] += bits
        if op.op == "gather":                   # embedding rows land in the activation buffer
            ev[("sram_write", "activations")] += bits
        dram = op.bytes
    return OpTiming(op, "memory", cycles, ev, dram_bytes=dram)


# -- the model --------------------------------------------------------------------------------------------------

def _weight_footprint(ops, design: Accelerator) -> int:
    """Bytes every weight matmul's operand takes in its engine's format — low-bit and full-precision alike (the LM
    head, the baselines' linears): what 'resident' has to hold. Prefill holds every weight op once a layer."""
    return sum(_engine_weight_bytes(op, design.engine_for(op.unit, op=op.name)) * op.layers * op.count
               for op in ops if op.kind == "matmul" and op.weight and op.phase == "prefill")


def _kv_footprint(cfg, seq: int, decode: int, fp_bits: int) -> int:
    return 2 * cfg.num_layers * (seq + decode) * cfg.kv_dim * fp_bits // 8


def _placement(op: Op, slot: EngineSlot, design: Accelerator, *, weights_on_chip: bool,
               kv_on_chip: bool) -> _Placement:
    attention = not op.weight
    return _Placement("kv" if attention else "weights", kv_on_chip if attention else weights_on_chip,
                      _acts_fit(op, slot, design))


#: How each unit's ``timing`` model is timed (``UnitParams.timing``).
_TIMINGS = {"stream": _stream_timing, "systolic": _systolic_timing}


def time_op(op: Op, design: Accelerator, *, weights_on_chip: bool, kv_on_chip: bool, stepped: bool = False,
            seed: int = 0, policy: MappingPolicy | None = None) -> OpTiming:
    """Map one operation onto the design under ``policy`` (default :class:`MappingPolicy()`) and time it
    (``stepped`` runs stream matmuls through the kernel)."""
    policy = policy if policy is not None else MappingPolicy()
    if op.kind == "vector":
        return _vector_timing(op, design)
    if op.kind == "memory":
        return _memory_timing(op, design, kv_on_chip)
    slot = design.engine_for(op.unit, op=op.name)
    slot.params.check_fits(op)
    placement = _placement(op, slot, design, weights_on_chip=weights_on_chip, kv_on_chip=kv_on_chip)
    return _TIMINGS[slot.params.timing](op, slot, design, policy, placement, stepped=stepped, seed=seed)


def simulate_model(model, scheme, design, *, seq_len: int = 128, decode_steps: int = 0, batch: int = 1,
                   stepped: bool = False, workload: Workload | None = None,
                   policy: MappingPolicy | None = None) -> ModelRun:
    """Run ``model`` under ``scheme`` on ``design`` with the mapping ``policy``; every check happens before the
    first op is timed.

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
    matmuls = [(op, acc.engine_for(op.unit, op=op.name)) for op in wl.ops if op.kind == "matmul"]
    # Refuse a design without an engine for some op, or an op it cannot run, before any timing.
    for op, slot in matmuls:
        slot.params.check_fits(op)
        if stepped:
            _stepped_shape(op, slot, acc, policy)
    weight_bytes = _weight_footprint(wl.ops, acc)
    resident = policy.weights == "resident-if-fits" and weight_bytes <= acc.weight_buffer.size_bytes
    kv_on_chip = _kv_footprint(cfg, seq_len, decode_steps, sch.fp_bits) * batch <= acc.kv_buffer.size_bytes
    # ... and buffers too small for some op's tiles, last (CapacityError), still before any timing
    for op, slot in matmuls:
        _check_capacity(op, slot, acc, policy, _placement(op, slot, acc, weights_on_chip=resident,
                                                          kv_on_chip=kv_on_chip))
    timings = [time_op(op, acc, weights_on_chip=resident, kv_on_chip=kv_on_chip, stepped=stepped, policy=policy)
               for op in wl.ops]
    if resident:
        # the one-time load of every weight into the buffer, before the first op
        load = Op("load_weights", "memory", "load_weights", "fp-vector", "prefill", bytes=weight_bytes)
        ev = Counter({("dram_bits",): weight_bytes * 8, ("sram_write", "weights"): weight_bytes * 8})
        timings.insert(0, OpTiming(load, "memory", _dram_cycles(acc, weight_bytes), ev, dram_bytes=weight_bytes))
    return ModelRun(cfg.name, sch.name, acc, seq_len, decode_steps, timings, weight_bytes, resident, policy)
