"""The compiler: a model's workload on a design under a mapping policy → a program (docs/isa.md).

Every operation of the workload (``models.workload``) becomes instructions, in execution order (a transformer
block's operations once per layer):

* a **matmul on a stream engine**: the output rows are cut into row blocks of the engine's ``rows × count`` width;
  each row block is a *tile*. A tile's weights (for attention: its keys or values) come from DRAM into a slot of
  the weight (KV) buffer unless they are resident on chip; activations that do not fit the activation buffer
  come from DRAM a token block at a time, loaded with the block's first tile. With ``weights-outer`` loop order
  a tile serves every token of its block; with ``tokens-outer`` every token streams every tile again. Each tile
  is its ``LOAD``\\ s and one ``MATMUL`` (one per 128-column block for BiLLM);
* a **matmul on a systolic array**: one tile per ``cols`` output columns;
* a **vector op**: a ``HOST`` op on the vector unit (in this first version every vector op of a whole-model
  workload is the host's; the integer post-processing unit runs the blocks compiled from ``models.intpath``);
* a **memory op**: an embedding gather is a ``LOAD``, a KV-cache append a ``STORE`` (on chip or to DRAM).

**Double buffering is a ring of slots and tokens.** With ``S`` slots (2 with ``double_buffer``, else 1), tile
``j``'s loads go to slot ``j mod S``; its first load pops a compute→load token (the slot is free again) unless it
is among the program's first ``S`` loading tiles, its last load pushes a load→compute token, and its ``MATMUL``
pops that token and pushes the slot's back when its last beat has issued. The tiles are emitted ``S − 1`` ahead:
``loads(0..S−1), M0, loads(S), M1, …``, across operation boundaries, so the next operation's first tiles load
while this one computes — exactly ``sim.schedule.feeder_schedule`` within an operation, and overlap across them
as far as the tokens allow.
"""

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from hw.accelerator import Accelerator, MappingPolicy
from hw.units import ceil_div
from isa.program import WORD_DTYPE, Program, address, block
from isa.spec import DEP_FLAGS, FIELDS, FLAG_BITS, FORMATS, HOST_FUNCTIONS, NO_ADDRESS, NO_OP_REF
from models.workload import Op, Workload

__all__ = ["Compiled", "Chunk", "CapacityError", "compile_workload", "compile_chunks", "weight_footprint",
           "kv_footprint", "acts_fit", "result_bytes_per_token"]

POP_PREV, POP_NEXT, PUSH_PREV, PUSH_NEXT = (DEP_FLAGS[k] for k in ("pop_prev", "pop_next", "push_prev", "push_next"))
#: Largest ``rows`` of one HOST instruction (its field is 16 bits): bigger vector ops are split.
MAX_ROWS = (1 << 16) - 1


class CapacityError(ValueError):
    """A buffer too small for an op's weight tile or token block: the op cannot be timed on the design. Only the
    timing needs the room; the arithmetic-only energy, which counts operations, does not (``reports.model``)."""


@dataclass(frozen=True)
class Compiled:
    """A compiled workload: the program and what the compiler decided."""

    program: Program
    design: Accelerator = field(repr=False)
    policy: MappingPolicy
    workload: Workload = field(repr=False)
    weight_bytes: int
    weights_resident: bool
    kv_on_chip: bool
    dram_bytes: int                    #: size of the DRAM image the addresses assume


@dataclass(frozen=True)
class Chunk:
    """A stretch of a compiled program and its structure: ``segments`` ``[k, 2]`` gives, in order, each segment's
    length and how many copies of it follow one another (a transformer block's layers). Copies differ only in
    addresses and in the first tiles' token pops, so what depends on neither — durations, energy events, traffic —
    is the same for every copy (``sim.machine`` computes it once per segment)."""

    program: Program
    segments: np.ndarray


# -- placement --------------------------------------------------------------------------------------------------

def weight_footprint(ops, design: Accelerator) -> int:
    """Bytes every weight matmul's operand takes in its engine's format — low-bit and full-precision alike (the LM
    head, the baselines' linears): what 'resident' has to hold. Prefill holds every weight op once a layer."""
    return sum(design.engine_for(op.unit, op=op.name).params.weight_bytes(
        op.k, op.n, design.engine_for(op.unit, op=op.name).count) * op.layers * op.count
        for op in ops if op.kind == "matmul" and op.weight and op.phase == "prefill")


def kv_footprint(config: dict, seq: int, decode: int, fp_bits: int) -> int:
    """Bytes of the whole KV cache (every layer, every position) at ``fp_bits``."""
    kv_dim = config["num_kv_heads"] * config["head_dim"]
    return 2 * config["num_layers"] * (seq + decode) * kv_dim * fp_bits // 8


def result_bytes_per_token(op: Op, slot) -> int:
    """Bytes of one token's result records from one MATMUL of the op: a row block's (or a systolic tile's) records
    of ``result_words`` 32-bit words (docs/isa.md §2)."""
    p = slot.params
    rows = p.rows * slot.count if p.timing == "stream" else p.cols
    return min(op.n, rows) * getattr(p, "result_words", 1) * 4


def acts_fit(op: Op, slot, design: Accelerator) -> bool:
    """Whether the op's whole left operand, in the engine's activation format, fits the activation buffer together
    with the two result-record slots its MATMULs write (results go to the activations buffer)."""
    return ceil_div(op.m * op.k * slot.params.act_bits, 8) + 2 * op.m * result_bytes_per_token(op, slot) \
        <= design.activation_buffer.size_bytes


def _tokens_per_block(op: Op, a_tok: int, r_tok: int, size: int, slots: int) -> int:
    """Tokens of one block of an op's off-chip activations: ``slots`` blocks of activations and two slots of their
    result records fit the activation buffer; refused (:class:`CapacityError`) when not even one token does."""
    t = size // (slots * a_tok + 2 * r_tok)
    if t < 1:
        raise CapacityError(f"{op.name}: the activations buffer ({size:,} bytes) cannot hold {slots} block(s) of one "
                            f"token's activations ({a_tok:,} bytes) and two of its result records ({r_tok:,} bytes "
                            "each); enlarge buffers.activations")
    return min(t, op.m)


@dataclass(frozen=True)
class _Placement:
    weight_src: str          # "weights" or "kv"
    weight_on_chip: bool
    acts_on_chip: bool


def placement(op: Op, slot, design: Accelerator, *, weights_on_chip: bool, kv_on_chip: bool) -> _Placement:
    attention = not op.weight
    return _Placement("kv" if attention else "weights", kv_on_chip if attention else weights_on_chip,
                      acts_fit(op, slot, design))


def check_capacity(op: Op, slot, design: Accelerator, policy: MappingPolicy, where: _Placement) -> None:
    """Refuse (:class:`CapacityError`) a stream-engine matmul whose weight tiles or token blocks do not fit their
    buffers."""
    p = slot.params
    if p.timing != "stream":
        return
    slots = 2 if policy.double_buffer else 1
    w_src = design.buffers[where.weight_src]
    tile = p.weight_bytes(op.k, p.rows * slot.count, slot.count)
    if not where.weight_on_chip and tile * slots > w_src.size_bytes:
        raise CapacityError(f"{op.name}: the {w_src.name} buffer ({w_src.size_bytes:,} bytes) cannot hold {slots} "
                            f"tile(s) of {tile:,} bytes ({p.rows * slot.count} rows × K={op.k} × {p.weight_bits} "
                            f"bits); enlarge buffers.{w_src.name} or use fewer rows")
    if not where.acts_on_chip:
        _tokens_per_block(op, ceil_div(op.k * p.act_bits, 8), result_bytes_per_token(op, slot),
                          design.activation_buffer.size_bytes, slots)


# -- the emitter --------------------------------------------------------------------------------------------------

class _Seg:
    """A stretch of the program as per-opcode columns: field arrays, positions within the stretch, and what a copy
    of the stretch for another layer changes — the ring index of every tile instruction (its buffer slot, and
    whether its load pops a slot token), and the per-layer increments of the DRAM and weight addresses."""

    def __init__(self):
        self.parts: dict[str, list[dict]] = defaultdict(list)
        self.n = 0

    def add(self, opcode: str, pos, **fields) -> None:
        """Instructions of one opcode at positions ``pos`` (relative to this segment); fields are scalars or arrays
        (scalars stay scalars until :meth:`columns`); ``_ring`` (slot ring index or -1), ``_dstep``/``_wstep``
        (per-layer increments of dram / w) optional."""
        pos = np.atleast_1d(np.asarray(pos, np.int64))
        part = {"pos": pos}
        for k, v in fields.items():
            part[k] = int(v) if np.ndim(v) == 0 else np.asarray(v, np.int64)
        self.parts[opcode].append(part)

    def columns(self, opcode: str) -> dict[str, np.ndarray]:
        parts = self.parts.get(opcode, [])
        if not parts:
            return {}
        names = set().union(*(p.keys() for p in parts))
        defaults = {f.name: f.default for f in FIELDS[opcode]}
        defaults.update(deps=0, op_ref=NO_OP_REF, _ring=-1, _dstep=0, _wstep=0, _first=0)
        sizes = [p["pos"].size for p in parts]
        bounds = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        cols = {}
        for name in names:
            out = np.empty(bounds[-1], np.int64)
            for p, lo, hi in zip(parts, bounds[:-1], bounds[1:]):
                if name in p:
                    v = p[name]
                else:
                    d = defaults[name]
                    v = p[d] if isinstance(d, str) and d in p else (defaults.get(d, 0) if isinstance(d, str) else d)
                out[lo:hi] = v                   # a scalar or an array of the part's length
            cols[name] = out
        return cols


class _Compiler:
    """Walks the workload in execution order and emits its program (see the module docstring). One layer of a
    transformer block is compiled; the other layers are copies with their addresses moved."""

    def __init__(self, wl: Workload, design: Accelerator, policy: MappingPolicy, *,
                 weights_on_chip: bool | None = None, kv_on_chip: bool | None = None):
        from models.schemes import get_scheme

        self.wl, self.design, self.policy = wl, design, policy
        self.S = 2 if policy.double_buffer else 1
        self.ops = list(wl.ops)
        self.slots = {i: design.engine_for(op.unit, op=op.name) for i, op in enumerate(self.ops)
                      if op.kind == "matmul"}
        for i, slot in self.slots.items():
            slot.params.check_fits(self.ops[i])
        self.weight_bytes = weight_footprint(self.ops, design)
        if weights_on_chip is None:
            self.resident = policy.weights == "resident-if-fits" and \
                self.weight_bytes <= design.weight_buffer.size_bytes
            self.preload = self.resident
        else:                            # a caller's choice (one op timed alone): on chip already, nothing to load
            self.resident, self.preload = weights_on_chip, False
        if kv_on_chip is None:
            kv_bits = get_scheme(wl.scheme).fp_bits
            kv_on_chip = kv_footprint(wl.config, wl.seq_len, wl.decode_steps, kv_bits) * wl.batch \
                <= design.kv_buffer.size_bytes
        self.kv_on_chip = kv_on_chip
        self.places = {i: placement(self.ops[i], slot, design, weights_on_chip=self.resident,
                                    kv_on_chip=self.kv_on_chip) for i, slot in self.slots.items()}
        for i, slot in self.slots.items():
            check_capacity(self.ops[i], slot, design, policy, self.places[i])
        # where each weight op lives in a resident weight buffer (a decode step's op shares its prefill twin's)
        self.resident_at, top = {}, 0
        for i, slot in self.slots.items():
            op = self.ops[i]
            if op.weight and op.phase == "prefill":
                self.resident_at[op.name] = top
                top += self._head_w(op, slot) * op.count * op.layers
        self.token_blocks = self._plan_token_blocks()
        # ring slots as large as the largest tile (or token block) any op streams into that buffer
        self.slot_bytes = {"weights": 0, "kv": 0, "activations": 0}
        for i, slot in self.slots.items():
            op, where = self.ops[i], self.places[i]
            if not where.weight_on_chip:
                self.slot_bytes[where.weight_src] = max(self.slot_bytes[where.weight_src], self._tile_bytes(op, slot))
            if not where.acts_on_chip:
                self.slot_bytes["activations"] = max(self.slot_bytes["activations"],
                                                     self._act_bytes(op, slot, max(self._blocks(op, slot))))
        # DRAM: the weights once (a decode step's op reads its prefill twin's), then every op's own region for
        # what else it moves (activations streamed in or out, keys and values, gathered rows), once per layer
        self.weights_at, top = {}, 0
        for i, slot in self.slots.items():
            op = self.ops[i]
            if op.weight and op.name not in self.weights_at:
                self.weights_at[op.name] = top
                top += self._head_w(op, slot) * op.count * op.layers
        self.dram_base = {}
        for i, op in enumerate(self.ops):
            self.dram_base[i] = top
            top += self._dram_need(i, op) * max(1, op.layers)
        self.dram_bytes = top
        self.segs: list[tuple[_Seg, int]] = []       # (segment, copies) in program order
        self.kv_wait = False

    # sizes -----------------------------------------------------------------------------------------------------
    def _tile_bytes(self, op: Op, slot) -> int:
        p = slot.params
        if p.timing != "stream":
            return ceil_div(op.k * min(op.n, p.cols) * p.weight_bits, 8)
        return p.weight_bytes(op.k, p.rows * slot.count, slot.count)

    def _head_w(self, op: Op, slot) -> int:
        p = slot.params
        return p.weight_bytes(op.k, op.n, slot.count) if p.timing == "stream" else ceil_div(op.k * op.n * p.weight_bits, 8)

    def _act_bytes(self, op: Op, slot, tokens: int) -> int:
        return tokens * ceil_div(op.k * slot.params.act_bits, 8)

    def _blocks(self, op: Op, slot) -> list[int]:
        return self.token_blocks[self.ops.index(op)] if op.m > 1 else [1]

    def _plan_token_blocks(self) -> dict[int, list[int]]:
        """Token blocks of every op whose activations stream from DRAM. The activation buffer holds S ring slots
        (shared by every op: the next op's first blocks load while this one computes, so a slot is as large as the
        largest block of any op) and, at its top, each op's two result-record slots: every op's blocks are shrunk
        until S · (largest block) + 2 · (its own results) fits."""
        size, S = self.design.activation_buffer.size_bytes, self.S
        tokens_outer = self.policy.loop_order == "tokens-outer"
        need = {}
        for i, slot in self.slots.items():
            op = self.ops[i]
            if not self.places[i].acts_on_chip:
                a_tok, r_tok = ceil_div(op.k * slot.params.act_bits, 8), result_bytes_per_token(op, slot)
                t = 1 if tokens_outer or op.m == 1 else _tokens_per_block(op, a_tok, r_tok, size, S)
                need[i] = [t, a_tok, r_tok]
        for _ in range(200):
            largest = max((t * a for t, a, _ in need.values()), default=0)
            bad = [i for i, (t, a, r) in need.items() if S * largest + 2 * t * r > size]
            if not bad:
                break
            for i, v in need.items():                 # shrink the ops that do not fit and the largest block
                if (i in bad or v[0] * v[1] == largest) and v[0] > 1:
                    v[0] = max(1, v[0] * 7 // 8)
            if all(need[i][0] == 1 for i in bad) and all(v[0] == 1 for v in need.values() if v[0] * v[1] == largest):
                op = self.ops[bad[0]]
                raise CapacityError(f"{op.name}: the activations buffer ({size:,} bytes) cannot hold {S} ring "
                                    f"slot(s) of {largest:,} bytes and two of its result records "
                                    f"({need[bad[0]][2]:,} bytes each); enlarge buffers.activations")
        return {i: [t] * (self.ops[i].m // t) + ([self.ops[i].m % t] if self.ops[i].m % t else [])
                for i, (t, _, _) in need.items()}

    def _dram_need(self, i: int, op: Op) -> int:
        if op.kind == "memory":
            return op.bytes
        if op.kind != "matmul":
            return 0
        slot = self.slots[i]
        return ((0 if op.weight else self._head_w(op, slot)) + self._act_bytes(op, slot, op.m)) * op.count

    # operations → segments ---------------------------------------------------------------------------------------
    def matmul(self, seg: _Seg, at: int, i: int, op: Op) -> int:
        """The op's tiles (all heads) into ``seg`` from position ``at``; returns the next position. Loads run S − 1
        tiles ahead of the MATMULs within the op: ``L0..L(S−1), M0, L(S), M1, …``."""
        slot, where = self.slots[i], self.places[i]
        p = slot.params
        stream = p.timing == "stream"
        eng = self.design.engines.index(slot)
        S = self.S
        rows_total = p.rows * slot.count if stream else p.cols
        row_blocks = ceil_div(op.n, rows_total)
        w_buf = where.weight_src
        token_bytes = self._act_bytes(op, slot, 1)
        w_head = self._head_w(op, slot)
        a_head = self._act_bytes(op, slot, op.m)
        tile_w = self._tile_bytes(op, slot)
        act_size = self.design.activation_buffer.size_bytes
        tokens_outer = self.policy.loop_order == "tokens-outer" and op.m > 1
        blocks = np.asarray([1] * op.m if tokens_outer else [op.m] if where.acts_on_chip else self._blocks(op, slot),
                            np.int64)
        # the op's two result-record slots at the top of the activations buffer (below them: its activations, or
        # the ring slots its token blocks load into)
        room = int(blocks.max()) * result_bytes_per_token(op, slot)
        ring_base = act_size - 2 * room
        starts = np.concatenate([[0], np.cumsum(blocks)[:-1]])
        nb = blocks.size
        # tile order within a head: (token block, row block), row blocks inner for weights-outer, outer for
        # tokens-outer
        if tokens_outer:
            r_of = np.repeat(np.arange(row_blocks), nb)
            b_of = np.tile(np.arange(nb), row_blocks)
        else:
            b_of = np.repeat(np.arange(nb), row_blocks)
            r_of = np.tile(np.arange(row_blocks), nb)
        heads = op.count
        T1 = r_of.size
        h_of = np.repeat(np.arange(heads), T1)
        r_of, b_of = np.tile(r_of, heads), np.tile(b_of, heads)
        T = r_of.size
        mb = blocks[b_of]
        t0 = starts[b_of]
        n_tile = np.minimum(rows_total, op.n - r_of * rows_total)
        w_load = not where.weight_on_chip
        a_load = (~np.zeros(T, bool)) & (not where.acts_on_chip) & ((r_of == 0) | tokens_outer)
        nloads = int(w_load) + a_load.astype(np.int64)
        loading = nloads > 0
        # the ring: every loading tile takes the next slot
        ring_local = np.cumsum(loading) - 1
        # positions: loads of loading tile g go right after the MATMUL(s) of loading tile g − S; MATMUL(s) of a
        # tile without loads right after the previous tile's. Built as sort keys, then ranked.
        block = getattr(p, "reduction_block", None) if stream else None
        spans = [(s0, min(block, op.k - s0)) for s0 in range(0, op.k, block)] if block else [(0, op.k)]
        nm = len(spans)
        tile_idx = np.arange(T)
        mm_key = (tile_idx * 4 + 2) * 2 * nm                                 # MATMUL(t) keys (then + span)
        # the tile whose MATMUL precedes loading tile t's loads: the loading tile S before it in ring order
        load_tiles = np.flatnonzero(loading)
        prev = np.full(T, -1, np.int64)
        if load_tiles.size > S:
            prev[load_tiles[S:]] = load_tiles[:-S]
        load_key = np.where(prev >= 0, (prev * 4 + 3) * 2 * nm, -1)         # after that MATMUL; else at the start
        load_key = np.where(loading & (prev < 0), (tile_idx * 4) * 2 * nm - 10 ** 12, load_key)
        keys, kinds = [], []
        # weight loads
        if w_load:
            keys.append(load_key[loading] + 0)
            kinds.append(("W", np.flatnonzero(loading)))
        if a_load.any():
            keys.append(load_key[a_load] + 1)
            kinds.append(("A", np.flatnonzero(a_load)))
        for sp in range(nm):
            keys.append(mm_key + sp)
            kinds.append(("M", tile_idx, sp))
        allkeys = np.concatenate(keys)
        order = np.argsort(allkeys, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        pos, off = {}, 0
        for kind, k in zip(kinds, keys):
            pos[kind[0] + (str(kind[2]) if kind[0] == "M" else "")] = at + rank[off:off + k.size]
            off += k.size
        # fields
        base = self.dram_base[i]
        w_base = self.weights_at[op.name] if op.weight else base
        w_dram = _wrap(w_base + h_of * w_head + r_of * tile_w)
        a_dram = _wrap(base + (0 if op.weight else heads * w_head) + h_of * a_head + t0 * token_bytes)
        ring_g = np.where(loading, ring_local, -1)
        dstep = self._dram_need(i, op)
        w_dstep = w_head * heads if op.weight else dstep
        wstep = w_head * heads if (where.weight_on_chip and w_buf == "weights") else 0
        if where.weight_on_chip:
            size = self.design.buffers[w_buf].size_bytes
            at_w = (self.resident_at.get(op.name, 0) if w_buf == "weights" else 0) + h_of * w_head + r_of * tile_w
            w_addr = address(w_buf, np.minimum(at_w, max(0, size - tile_w)))
        else:
            w_addr = np.full(T, address(w_buf, 0), np.int64)                   # + slot, at placement
        a_addr = np.full(T, address("activations", 0), np.int64) + (t0 * token_bytes if tokens_outer and
                                                                     where.acts_on_chip else 0)
        r_addr = address("activations", ring_base) + (tile_idx % 2) * room
        if w_load:
            sel = np.flatnonzero(loading)
            last = ~a_load[sel]
            seg.add("LOAD", pos["W"], op_ref=i, dram=w_dram[sel], sram=w_addr[sel], rows=1, row_bytes=tile_w,
                    deps=POP_NEXT | np.where(last, PUSH_NEXT, 0), _ring=ring_g[sel], _first=1, _dstep=w_dstep,
                    _slotbuf=BUF_IDS[w_buf], _slotsize=self.slot_bytes[w_buf])
        if a_load.any():
            sel = np.flatnonzero(a_load)
            first = 0 if w_load else 1
            seg.add("LOAD", pos["A"], op_ref=i, dram=a_dram[sel], sram=a_addr[sel], rows=1,
                    row_bytes=mb[sel] * token_bytes, deps=(POP_NEXT if first else 0) | PUSH_NEXT,
                    _ring=ring_g[sel], _first=first, _dstep=dstep, _slotbuf=BUF_IDS["activations"],
                    _slotsize=self.slot_bytes["activations"])
        w_off = 0
        for sp, (s0, kb) in enumerate(spans):
            deps = np.where(loading & (sp == 0), POP_PREV, 0) | np.where(loading & (sp == nm - 1), PUSH_PREV, 0)
            seg.add("MATMUL", pos[f"M{sp}"], op_ref=i, deps=deps, engine=eng, fence=0, w=w_addr + w_off, a=a_addr,
                    r=r_addr, m=mb, k=kb, n=n_tile, astride=0, _ring=ring_g,
                    _wslot=0 if where.weight_on_chip else BUF_IDS[w_buf] + 1,
                    _aslot=0 if where.acts_on_chip else 1, _wstep=wstep,
                    _slotsize=self.slot_bytes[w_buf] if not where.weight_on_chip else 0,
                    _aslotsize=self.slot_bytes["activations"] if not where.acts_on_chip else 0)
            if block:
                w_off = w_off + p.row_blocks(int(n_tile[0])) * p.beats_per_reduction(kb) * p.weight_beat_bytes
        return at + allkeys.size

    def vector(self, seg: _Seg, at: int, i: int, op: Op) -> int:
        fn = op.op
        rows_all, cols = op.m * op.count, op.n
        bits = 32 if self.design.vector.fp_bits == 32 else 16
        fmt = FORMATS["F32"] if bits == 32 else FORMATS["I16"]          # binary16 values held as 16-bit patterns
        eb = bits // 8
        fixed, per_row = _host_aux_bytes(fn, cols, eb)
        room = self.design.activation_buffer.size_bytes - 64 - fixed
        rows_fit = max(1, min(MAX_ROWS, room // max(1, cols * eb + per_row)))
        r0 = np.arange(0, rows_all, rows_fit)
        rows = np.minimum(rows_fit, rows_all - r0)
        data = ceil_div(int(rows[0]) * cols * eb, 64) * 64
        aux = address("activations", data) if fixed or per_row else NO_ADDRESS
        seg.add("HOST", at + np.arange(r0.size), op_ref=i, fn=HOST_FUNCTIONS[fn], out_fmt=fmt, in_fmt=fmt,
                src=address("activations", 0), dst=address("activations", 0), aux=aux, rows=rows, cols=cols)
        return at + r0.size

    def memory(self, seg: _Seg, at: int, i: int, op: Op) -> int:
        base = self.dram_base[i]
        if op.op == "kv_append":
            # a compute-queue SYNC pushes compute→store, the STOREs append (in pieces the activations buffer
            # holds; the first pops that token, the last pushes store→compute), a SYNC pops it
            seg.add("SYNC", at, op_ref=i, queue=1, deps=PUSH_NEXT)
            room = self.design.activation_buffer.size_bytes
            starts = np.arange(0, max(1, op.bytes), room)
            pieces = np.minimum(room, op.bytes - starts)
            k = np.arange(starts.size)
            deps = np.where(k == 0, POP_PREV, 0) | np.where(k == starts.size - 1, PUSH_PREV, 0)
            pos = at + 1 + k
            if self.kv_on_chip:
                kv = self.design.kv_buffer.size_bytes
                seg.add("STORE", pos, op_ref=i, deps=deps, dram=address("kv", 0) + starts,
                        sram=address("activations", 0), rows=1, row_bytes=pieces, onchip=1, _kvstep=op.bytes,
                        _kvsize=kv)
            else:
                seg.add("STORE", pos, op_ref=i, deps=deps, dram=_wrap(base + starts), sram=address("activations", 0),
                        rows=1, row_bytes=pieces, _dstep=op.bytes)
            seg.add("SYNC", at + 1 + starts.size, op_ref=i, queue=1, deps=POP_NEXT)
            return at + 2 + starts.size
        # a gather: DRAM rows into the activation buffer (in pieces the buffer holds); the compute queue waits
        room = self.design.activation_buffer.size_bytes
        starts = np.arange(0, max(1, op.bytes), room)
        pieces = np.minimum(room, op.bytes - starts)
        deps = np.where(np.arange(starts.size) == starts.size - 1, PUSH_NEXT, 0)
        seg.add("LOAD", at + np.arange(starts.size), op_ref=i, deps=deps, dram=_wrap(base + starts),
                sram=address("activations", 0), rows=1, row_bytes=pieces, _dstep=op.bytes)
        seg.add("SYNC", at + starts.size, op_ref=i, queue=1, deps=POP_PREV)
        return at + starts.size + 1

    def segment(self, ops) -> _Seg:
        seg, at = _Seg(), 0
        for i in ops:
            op = self.ops[i]
            at = (self.matmul if op.kind == "matmul" else self.vector if op.kind == "vector" else self.memory)(
                seg, at, i, op)
        seg.n = at
        return seg

    def run(self) -> Program:
        """The whole program."""
        self.ring_base = 0
        return self._place(self.pieces()).program

    def chunks(self, limit: int):
        """The program in consecutive chunks of about ``limit`` instructions (a segment is never split), for a
        program too long to hold at once (a LLaMA-7B decode run is 0.2 M instructions a step)."""
        self.ring_base = 0
        group, size = [], 0
        for piece in self.pieces():
            group.append(piece)
            size += piece[0].n * piece[1]
            if size >= limit:
                yield self._place(group)
                group, size = [], 0
        if group:
            yield self._place(group)

    def pieces(self):
        """The program as segments in order, each with its number of copies (a block's layers)."""
        pieces: list[tuple[_Seg, int]] = []
        if self.preload and self.weight_bytes:
            ref = len(self.ops)                         # the op table's extra "load_weights" entry
            pro = _Seg()
            pro.add("LOAD", 0, op_ref=ref, deps=PUSH_NEXT, dram=_wrap(self.dram_bytes), sram=address("weights", 0),
                    rows=1, row_bytes=self.weight_bytes)
            pro.add("SYNC", 1, op_ref=ref, queue=1, deps=POP_PREV)
            pro.n = 2
            pieces.append((pro, 1))
        ops = self.ops
        i = 0
        while i < len(ops):
            j = i + 1
            if ops[i].layers > 1:                       # a transformer block: its ops, once per layer
                while j < len(ops) and ops[j].layers == ops[i].layers and ops[j].phase == ops[i].phase \
                        and ops[j].step == ops[i].step:
                    j += 1
            pieces.append((self.segment(range(i, j)), ops[i].layers))
            i = j
        fin = _Seg()
        fin.add("FINISH", 0)
        fin.n = 1
        pieces.append((fin, 1))
        return pieces

    def _place(self, pieces) -> "Chunk":
        """Lay the segments out, each ``copies`` times (one per layer): every segment is encoded once, its copies
        are the same words with the per-layer fields moved (DRAM addresses, resident weights, the ring slots of
        its tiles); then the program's first S loading tiles lose their slot-token pops."""
        S = self.S
        col = {(op, f.name): f.word + 1 for op in FIELDS for f in FIELDS[op]}
        pop_next_bit = np.uint32(1 << FLAG_BITS["pop_next"])
        ring_base = self.ring_base
        # the chunk's words, written in place segment by segment (no concatenation copies)
        total = sum(seg.n * copies for seg, copies in pieces)
        out = np.empty((total, 8), np.uint32)
        top = 0
        for seg, copies in pieces:
            n = seg.n
            words = np.zeros(n, WORD_DTYPE)
            dstep = np.zeros(n, np.int64)
            dcol = np.zeros(n, np.int64)            # which word the DRAM (or KV) address is in (0: none)
            wstep = np.zeros(n, np.int64)
            ring = np.full(n, -1, np.int64)
            slot1 = np.zeros(n, np.int64)           # bytes per slot of the address in a1 (LOAD sram, MATMUL w)
            slot2 = np.zeros(n, np.int64)           # … in a2 (MATMUL a)
            first = np.zeros(n, bool)
            kvstep = np.zeros(n, np.int64)
            for opcode in seg.parts:
                c = seg.columns(opcode)
                pos = c["pos"]
                kw = {k: v for k, v in c.items() if k in _FIELD_NAMES[opcode] or k in ("deps", "op_ref")}
                words[pos] = block(opcode, pos.size, **kw)
                if "_dstep" in c:
                    dstep[pos] = c["_dstep"]
                    dcol[pos] = col[(opcode, "dram")]
                if "_kvstep" in c:
                    kvstep[pos] = c["_kvstep"]
                    dcol[pos] = col[(opcode, "dram")]
                if "_wstep" in c:
                    wstep[pos] = c["_wstep"]
                if "_ring" in c:
                    ring[pos] = c["_ring"]
                    if opcode == "LOAD":
                        slot1[pos] = c.get("_slotsize", 0)
                        first[pos] = c.get("_first", 0) == 1
                    else:
                        slot1[pos] = np.where(c.get("_wslot", 0) > 0, c.get("_slotsize", 0), 0)
                        slot2[pos] = np.where(c.get("_aslot", 0) > 0, c.get("_aslotsize", 0), 0)
            nring = int(ring.max()) + 1 if (ring >= 0).any() else 0
            # the copies as one [copies, n, 8] array of uint32 words. A tile's ring slot is (ring_base + layer ·
            # nring + its ring index) mod S, so at most S templates (one per phase of a layer's first slot) cover
            # every copy; then only the DRAM and resident-weight addresses move layer by layer
            u = out[top:top + n * copies].reshape(copies, n, 8)
            base = words.view(np.uint32).reshape(n, 8)
            layer = np.arange(copies, dtype=np.int64)
            if nring and S > 1:
                pos = np.flatnonzero(ring >= 0)
                phase = (ring_base + layer * nring) % S
                for ph in np.unique(phase).tolist():
                    t = base.copy()
                    slot = (ph + ring[pos]) % S
                    t[pos, 2] += (slot * slot1[pos]).astype(np.uint32)
                    t[pos, 3] += (slot * slot2[pos]).astype(np.uint32)
                    u[phase == ph] = t
            else:
                u[...] = base
            layer = layer[:, None]
            pos = np.flatnonzero((dcol != 0) & ((dstep != 0) | (kvstep != 0)))
            if pos.size and copies > 1:
                c_ = dcol[pos]
                old = u[0, pos, c_].astype(np.int64)[None, :]
                new = _wrap(old + dstep[pos][None, :] * layer)
                ks = kvstep[pos]
                if (ks != 0).any():                          # KV appends walk the on-chip KV region, wrapping
                    kv = self.design.kv_buffer.size_bytes
                    new = np.where(ks > 0, old + (layer * ks) % np.maximum(1, kv - ks + 1), new)
                u[:, pos, c_] = new.astype(np.uint32)
            pos = np.flatnonzero(wstep)
            if pos.size and copies > 1:
                u[:, pos, col[("MATMUL", "w")]] += (wstep[pos][None, :] * layer).astype(np.uint32)
            if nring:
                # the program's first S loading tiles find their slots free: no token to pop (only layers whose
                # first ring index is below S can hold one)
                pos = np.flatnonzero((ring >= 0) & first)
                for lay in range(min(copies, max(0, -(-(S - ring_base) // nring)))):
                    g = ring_base + lay * nring + ring[pos]
                    u[lay, pos[g < S], 0] &= ~pop_next_bit
                ring_base += nring * copies
            top += n * copies
        self.ring_base = ring_base
        all_words = out.view(WORD_DTYPE).reshape(-1)
        table = [{"name": op.name, "kind": op.kind, "op": op.op, "unit": op.unit, "phase": op.phase,
                  "count": op.count, "layers": op.layers} for op in self.ops]
        if self.preload and self.weight_bytes:
            table.append({"name": "load_weights", "kind": "memory", "op": "load_weights", "unit": "fp-vector",
                          "phase": "prefill", "count": 1, "layers": 1})
        meta = {"model": self.wl.model, "scheme": self.wl.scheme, "seq_len": self.wl.seq_len,
                "decode_steps": self.wl.decode_steps, "batch": self.wl.batch, "policy": self.policy.to_dict(),
                "dram_bytes": self.dram_bytes + (self.weight_bytes if self.preload else 0)}
        # not copied; the words come from isa.program.block (range-checked) with op_refs into this table
        program = Program._adopt(all_words, table, self.design.name, meta, checked=True)
        return Chunk(program, np.array([(seg.n, copies) for seg, copies in pieces], np.int64).reshape(-1, 2))


BUF_IDS = {"weights": 0, "activations": 1, "kv": 2}
#: DRAM addresses wrap below 2^32 − 2^28: the v1 ISA addresses 4 GiB of DRAM, and a full-precision LLaMA-7B holds
#: more. A timing program only needs each transfer's size and a valid address (no single transfer reaches
#: 256 MiB: tiles, token blocks and gathers are buffer-sized, a resident preload at most the weight buffer).
DRAM_WRAP = (1 << 32) - (1 << 28)


def _wrap(addr):
    return addr % DRAM_WRAP
_FIELD_NAMES = {op: {f.name for f in fields} for op, fields in FIELDS.items()}


def _host_aux_bytes(fn: str, cols: int, eb: int) -> tuple[int, int]:
    """Bytes of a HOST function's auxiliary operand (isa.spec.HOST_AUX): a fixed part and a part per row."""
    return {"layernorm": (8 * cols, 0), "rmsnorm": (4 * cols, 0), "rescale": (4 * cols, 0),
            "rope": (0, 4 * cols), "mask": (0, ceil_div(cols, 8)), "add": (0, cols * eb), "mul": (0, cols * eb),
            "quantize": (0, 4)}.get(fn, (0, 0))


def compile_chunks(wl: Workload, design: Accelerator, policy: MappingPolicy | None = None, *, limit: int = 1 << 20,
                   weights_on_chip: bool | None = None, kv_on_chip: bool | None = None):
    """``(compiler facts, chunk generator)``: the same program as :func:`compile_workload`, in consecutive
    :class:`Chunk`\\ s of about ``limit`` instructions. Every check happens before the first chunk is made."""
    policy = policy if policy is not None else MappingPolicy()
    c = _Compiler(wl, design, policy, weights_on_chip=weights_on_chip, kv_on_chip=kv_on_chip)
    return c, c.chunks(limit)


def compile_workload(wl: Workload, design: Accelerator, policy: MappingPolicy | None = None, *,
                     weights_on_chip: bool | None = None, kv_on_chip: bool | None = None) -> Compiled:
    """Compile ``wl`` for ``design`` under ``policy`` (default :class:`MappingPolicy()`); refuses an op the design
    cannot run (``ValueError``) and, after every other check, tiles that do not fit (:class:`CapacityError`).
    ``weights_on_chip``/``kv_on_chip`` override where the operands live (one op timed alone)."""
    policy = policy if policy is not None else MappingPolicy()
    c = _Compiler(wl, design, policy, weights_on_chip=weights_on_chip, kv_on_chip=kv_on_chip)
    program = c.run()
    return Compiled(program, design, policy, wl, c.weight_bytes, c.resident, c.kv_on_chip,
                    program.meta["dram_bytes"])
