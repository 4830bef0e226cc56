"""The stream dot-product engine every generated unit is: structure, timing, the stream protocol and the
questions the simulator asks, with the per-unit parts left to the unit classes.

An operand beat carries ``lanes`` reduction elements of one activation vector and the matching elements of
``rows`` weight rows; each row reduces its lane terms in a pipelined tree per accumulator channel, accumulates
until a beat flagged ``last``, and a result beat leaves with the finished values (``hw/engine.py``).
"""

from collections import Counter
from dataclasses import dataclass, fields, replace
from functools import cached_property
from math import prod

import numpy as np

from hw.layout import PayloadLayout

from .base import _ABBREV, MAX_MACS_PER_CYCLE, StreamUnit, _int_field, _short, ceil_div
from .channels import BeatSchedule, Channel

__all__ = ["EngineParams", "CYCLES_FORMULA"]

#: The closed-form cycle count of :meth:`EngineParams.cycles` in the words of the manifest (``M`` output rows,
#: ``K`` the reduction length, ``tokens`` activation vectors); ``tests/test_hw_params.py`` evaluates it against
#: the method.
CYCLES_FORMULA = "ceil(M/rows) * tokens * ceil(K/lanes) + latency_cycles"

#: Roles of the operand fields that are not the weight side of a beat.
_NOT_WEIGHT_SIDE = ("activation", "valid_lanes", "last")


@dataclass(frozen=True)
class EngineParams(StreamUnit):
    """Parameters shared by every stream dot-product engine.

    lanes : reduction elements consumed per cycle.
    rows : output rows computed in parallel.
    max_k : longest reduction the accumulators are sized for.
    tree_stages : register stages inside each reduction tree, ``0 … tree_depth``; ``None`` registers every level.
    """

    steppable = True

    lanes: int
    rows: int
    max_k: int = 4096
    tree_stages: int | None = None

    def __post_init__(self):
        _int_field("lanes", self.lanes, 1)
        _int_field("rows", self.rows, 1)
        _int_field("max_k", self.max_k, 1)
        if self.lanes * self.rows > MAX_MACS_PER_CYCLE:
            raise ValueError(f"lanes × rows = {self.lanes} × {self.rows} = {self.lanes * self.rows} exceeds "
                             f"the generator limit of {MAX_MACS_PER_CYCLE} MACs per cycle")
        self._validate()
        depth = self.tree_depth
        if self.tree_stages is None:
            object.__setattr__(self, "tree_stages", depth)
        _int_field(f"tree_stages ({self.tree_terms} terms per tree give {depth} levels)", self.tree_stages, 0, depth)
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.integer):
                object.__setattr__(self, f.name, int(v))

    def _validate(self) -> None:
        """Unit-specific checks; resolve derived fields with ``object.__setattr__``."""

    # -- structure ---------------------------------------------------------------------------------------

    @property
    def tree_terms(self) -> int:
        """Terms each reduction tree adds per beat."""
        return self.lanes

    @property
    def tree_depth(self) -> int:
        """Levels of the deepest reduction tree; shallower trees pass their root on, so all line up."""
        return max(c.depth for c in self.channels())

    @property
    def registered_levels(self) -> tuple[int, ...]:
        """Tree levels (1-based) followed by a register: ``tree_stages`` of them, spread evenly, the last level
        always registered when any is."""
        d, s = self.tree_depth, self.tree_stages
        return tuple(lv for lv in range(1, d + 1) if (lv * s) // d > ((lv - 1) * s) // d) if d else ()

    @property
    def pre_stages(self) -> int:
        """Register stages between the operand register and the trees (gated products, a LUT build)."""
        return 0

    @property
    def post_stages(self) -> int:
        """Register stages between the accumulators and the result register: the final-totals register (so the
        result arithmetic never shares a cycle with an accumulator adder), and a scale stage where there is one."""
        return 1

    @property
    def latency(self) -> int:
        """Cycles from the handshake of a ``last`` beat to the cycle its result can hand off: operand register,
        pre-stages, ``tree_stages`` tree registers, post-stages, result register. (Under the global stall every
        register is one delay stage, wherever it sits.)"""
        return 2 + self.pre_stages + self.tree_stages + self.post_stages

    @property
    def macs_per_weight(self) -> int:
        """MACs one weight element stands for (binary-basis: one per basis)."""
        return 1

    @property
    def macs_per_cycle(self) -> int:
        return self.lanes * self.rows * self.macs_per_weight

    def channels(self) -> tuple[Channel, ...]:
        raise NotImplementedError

    @property
    def module_name(self) -> str:
        """Verilog module name: every parameter that changes the netlist appears in it."""
        parts = [self.kind.value.replace("-", "_")]
        for f in fields(self):
            v = getattr(self, f.name)
            parts.append(f"{_ABBREV.get(f.name, f.name)}{_short(v)}")
        return "_".join(parts)

    # -- operand widths, from the payload layout ---------------------------------------------------------------
    # Units with an ``act_bits`` or ``weight_bits`` parameter hold it as a field, which overrides these; the
    # layout is built from that field, so the two agree (tests/test_hw_params.py checks every unit).

    def _bits_per_lane(self, roles) -> int:
        return sum(f.elem_width * prod(n for a, n in zip(f.axes, f.shape) if a not in ("row", "lane"))
                   for f in self.operand_layout.fields if f.role in roles and "lane" in f.axes)

    @property
    def act_bits(self) -> int:
        """Bits of the activation field per lane."""
        return self._bits_per_lane(("activation",))

    @property
    def weight_bits(self) -> int:
        """Bits of the weight side per row and lane: every weight field's element width times its planes."""
        return self._bits_per_lane(("weight",))

    @property
    def result_bits(self) -> int:
        return self.result_layout.fields[0].elem_width

    # -- I/O contract -----------------------------------------------------------------------------------

    # Each unit builds its layouts once per object (``functools.cached_property``: the object is frozen, so they
    # cannot change; the simulator asks for them on every operation).

    @property
    def operand_layout(self) -> PayloadLayout:
        raise NotImplementedError

    @property
    def result_layout(self) -> PayloadLayout:
        raise NotImplementedError

    def operand_padding(self) -> dict[str, dict[str, int]]:
        """What a sender puts into padding, ``{operand field: {axis: raw element bits}}``: ``"lane"`` for the
        lanes beyond K of a reduction's last beat, ``"row"`` for the rows beyond M of the last row block (a padded
        row is padded on every lane). Every operand field with a lane or row axis has an entry for each.

        The one source of the pad values: :meth:`operand_beats` pads with them and the layouts (hence the
        manifest) publish them."""
        raise NotImplementedError

    def encoding_notes(self) -> dict:
        """What each field means, in prose, for the manifest's ``encodings`` section (the machine-readable facts —
        axes, encoding, code tables, roles, padding — are on the layouts' fields)."""
        raise NotImplementedError

    def _operands(self, *specs) -> PayloadLayout:
        """The operand layout of ``specs`` (:func:`hw.layout.field`) with :meth:`operand_padding` attached."""
        return PayloadLayout.sequential(*specs).with_padding(self.operand_padding())

    def weight_planes(self) -> int | None:
        """Weight-side planes per row (binary-basis: one per basis), None for plain [M, K] weights."""
        return None

    def check_problem(self, m: int, k: int, tokens: int) -> None:
        """Refuse a problem this engine cannot run, naming the value."""
        for name, v in (("M (output rows)", m), ("K (reduction length)", k), ("tokens", tokens)):
            _int_field(name, v, 1)
        if k > self.max_k:
            raise ValueError(f"K={k} exceeds max_k={self.max_k} of this engine (its accumulators could overflow); "
                             f"regenerate with max_k >= {k}")

    def n_beats(self, m: int, k: int, tokens: int = 1) -> int:
        """Operand beats for a ``[m, k]`` weight side and ``tokens`` activation vectors."""
        self.check_problem(m, k, tokens)
        return self.row_blocks(m) * tokens * self.beats_per_reduction(k)

    def cycles_for_beats(self, beats: int) -> int:
        """Cycles of ``beats`` operand beats streamed back to back at full throughput: one beat per cycle, then
        the pipeline latency (the formula :data:`CYCLES_FORMULA` states for one problem)."""
        return beats + self.latency

    def beats_of_cycles(self, cycles: int) -> int:
        """The inverse of :meth:`cycles_for_beats`: the beats a full-throughput run of ``cycles`` streamed."""
        return cycles - self.latency

    def cycles(self, m: int, k: int, tokens: int = 1) -> int:
        """Closed-form cycle count at full throughput (:data:`CYCLES_FORMULA`)."""
        return self.cycles_for_beats(self.n_beats(m, k, tokens))

    def schedule(self, m: int, k: int, tokens: int = 1) -> BeatSchedule:
        """Stream order: row blocks outermost, then tokens, then reduction chunks (``last`` on the final one)."""
        self.check_problem(m, k, tokens)
        nb, nt, nk = self.row_blocks(m), tokens, self.beats_per_reduction(k)
        rb, tok, kc = np.meshgrid(np.arange(nb), np.arange(nt), np.arange(nk), indexing="ij")
        return BeatSchedule(rb.ravel(), tok.ravel(), kc.ravel(), (kc == nk - 1).ravel())

    # -- operands -------------------------------------------------------------------------------------------

    def check_operands(self, weights: np.ndarray, acts: np.ndarray, extra=None) -> None:
        """Refuse operands outside the unit's value sets, naming the first offending value; ``extra`` is what
        :meth:`operand_beats` takes besides the weights (binary-basis: the scales ``alpha``), None elsewhere."""
        self._check_weights(np.asarray(weights))
        self._check_acts(np.asarray(acts))
        self._check_extra(np.asarray(weights), extra)

    def _check_weights(self, weights: np.ndarray) -> None:
        raise NotImplementedError

    def _check_acts(self, acts: np.ndarray) -> None:
        raise NotImplementedError

    def _check_extra(self, weights: np.ndarray, extra) -> None:
        if extra is not None:
            raise ValueError(f"{self.kind.value} operands take no extra operand besides the weights and "
                             "activations")

    def _weight_side(self, weights: np.ndarray, extra) -> dict[str, np.ndarray]:
        """The weight-side operand fields of the problem as the integers they pack, before blocking: ``[..., M,
        K]`` for a field with a lane axis (leading axes: its planes), ``[..., M]`` for a per-row field."""
        raise NotImplementedError

    def _weights_from_side(self, side: dict[str, np.ndarray]):
        """The inverse of :meth:`_weight_side`: ``(weights, extra)`` from the unblocked fields."""
        raise NotImplementedError

    def _act_codes(self, acts: np.ndarray) -> np.ndarray:
        """Activations as the integers the activation field packs (a ``bit_pm1`` field: 1 for +1)."""
        f = self._act_field
        return (acts > 0).astype(np.int64) if f.encoding == "bit_pm1" else np.asarray(acts, np.int64)

    @property
    def _act_field(self):
        return next(f for f in self.operand_layout.fields if f.role == "activation")

    def weight_blocks(self, weights, extra=None) -> dict[str, np.ndarray]:
        """The weight side of every (row block, reduction chunk), ``{field: [row blocks, chunks, *field shape]}``:
        what the beats of that block and chunk carry besides the activations, padded with the fields' pad values
        (:meth:`operand_padding`; a padded row on every lane). Per-row fields (scales) repeat on every chunk."""
        weights = np.asarray(weights)
        m, k = weights.shape[-2:]
        nb, nk = self.row_blocks(m), self.beats_per_reduction(k)
        R, L = self.rows, self.lanes
        layout = self.operand_layout
        out = {}
        for name, v in self._weight_side(weights, extra).items():
            f = layout[name]
            v = np.asarray(v, np.int64)
            if "lane" in f.axes:
                lead = v.shape[:-2]
                pad = np.empty((*lead, nb * R, nk * L), np.int64)
                pad[...] = f.pad_value("row")
                pad[..., :m, :] = f.pad_value("lane")
                pad[..., :m, :k] = v
                out[name] = np.moveaxis(pad.reshape(*lead, nb, R, nk, L), (-4, -2), (0, 1))   # [nb, nk, ..., R, L]
            else:
                lead = v.shape[:-1]
                pad = np.full((*lead, nb * R), f.pad_value("row"), np.int64)
                pad[..., :m] = v
                blocks = np.moveaxis(pad.reshape(*lead, nb, R), -2, 0)                           # [nb, ..., R]
                out[name] = np.broadcast_to(blocks[:, None], (nb, nk, *blocks.shape[1:]))
        return out

    def operand_beats(self, weights, acts, extra=None) -> dict[str, np.ndarray]:
        """Materialise the operand beats of a problem as field arrays ``{field: [beats, *field shape]}``, in
        layout order: ``weights`` ``[..., M, K]`` and ``acts`` ``[T, K]`` as each unit takes them (see its class),
        ``extra`` its extra operand (binary-basis: ``alpha``); padded lanes and rows carry the pad values."""
        weights = np.asarray(weights)
        acts = np.asarray(acts)
        self.check_operands(weights, acts, extra)
        *_, m, k = weights.shape
        tokens = acts.shape[0]
        if acts.ndim != 2 or acts.shape[1] != k:
            raise ValueError(f"activations {acts.shape} and weights {weights.shape} do not share K")
        sched = self.schedule(m, k, tokens)
        L, nk = self.lanes, self.beats_per_reduction(k)
        blocks = self.weight_blocks(weights, extra)
        out = {}
        for f in self.operand_layout.fields:
            if f.role == "activation":
                a_pad = np.full((tokens, nk * L), f.pad_value("lane"), np.int64)
                a_pad[:, :k] = self._act_codes(acts)
                out[f.name] = a_pad.reshape(tokens, nk, L)[sched.token, sched.k_chunk]
            elif f.role == "valid_lanes":
                out[f.name] = np.minimum(L, k - sched.k_chunk * L)
            elif f.role == "last":
                out[f.name] = sched.last.astype(np.int64)
            else:
                out[f.name] = blocks[f.name][sched.row_block, sched.k_chunk]
        return out

    # -- the engine weight-tile image (docs/isa.md §2, ENG) ------------------------------------------------------

    @cached_property
    def weight_beat_layout(self) -> PayloadLayout:
        """The weight side of one operand beat: every operand field but the activation, ``n_valid`` and ``last``,
        in layout order, packed as :meth:`PayloadLayout.pack` packs them."""
        return PayloadLayout.sequential(*(f for f in self.operand_layout.fields if f.role not in _NOT_WEIGHT_SIDE))

    @property
    def weight_beat_bytes(self) -> int:
        """Bytes of one beat image of :meth:`weight_image` (the weight side padded to whole bytes)."""
        return self.weight_beat_layout.nbytes

    def beat_read_bits(self, count: int = 1) -> tuple[int, int]:
        """Bits the accelerator reads from its buffers for one beat of ``count`` engines in lockstep: the
        activations as stored (``lanes`` elements of :attr:`act_format`) and the weight-tile beat image (docs/isa.md
        §4.2, whose ``ii`` divides them by the buffers' bits per cycle)."""
        wide = replace(self, rows=self.rows * count) if count > 1 else self
        return self.lanes * self.act_mem_bits, 8 * wide.weight_beat_bytes

    def weight_image(self, weights, extra=None) -> np.ndarray:
        """The weights in the engine's weight-tile format (docs/isa.md §2 "Engine weight tiles"): for each row
        block and each chunk of ``lanes`` reduction elements, in that order, one beat image of
        :attr:`weight_beat_bytes` bytes. ``weights``/``extra`` as :meth:`operand_beats` takes them. uint8 ``[row
        blocks · chunks · weight_beat_bytes]``."""
        weights = np.asarray(weights)
        self._check_weights(weights)
        self._check_extra(weights, extra)
        m, k = weights.shape[-2:]
        self.check_problem(m, k, 1)
        layout = self.weight_beat_layout
        blocks = self.weight_blocks(weights, extra)
        n = self.row_blocks(m) * self.beats_per_reduction(k)
        rows = layout.pack(n, **{f.name: blocks[f.name].reshape(n, *f.shape) for f in layout.fields})
        return rows.reshape(-1)

    def weights_from_image(self, image, m: int, k: int):
        """The inverse of :meth:`weight_image`: ``(weights, extra)`` of an ``[m, k]`` problem from its image."""
        self.check_problem(m, k, 1)
        layout = self.weight_beat_layout
        nb, nk = self.row_blocks(m), self.beats_per_reduction(k)
        image = np.asarray(image, np.uint8)
        if image.shape != (nb * nk * layout.nbytes,):
            raise ValueError(f"a weight image of an [{m}, {k}] problem has {nb * nk * layout.nbytes} bytes "
                             f"({nb} row blocks × {nk} chunks × {layout.nbytes}), not shape {image.shape}")
        unpacked = layout.unpack(image.reshape(nb * nk, layout.nbytes))
        R, L = self.rows, self.lanes
        side = {}
        for f in layout.fields:
            v = unpacked[f.name].reshape(nb, nk, *f.shape)
            if "lane" in f.axes:
                v = np.moveaxis(v, (0, 1), (-4, -2))                      # [..., nb, R, nk, L]
                side[f.name] = v.reshape(*v.shape[:-4], nb * R, nk * L)[..., :m, :k]
            else:
                v = np.moveaxis(v[:, 0], 0, -2)                           # [..., nb, R]
                side[f.name] = v.reshape(*v.shape[:-2], nb * R)[..., :m]
        return self._weights_from_side(side)

    # -- results ---------------------------------------------------------------------------------------------

    def collect_results(self, result_beats: np.ndarray, m: int, k: int, tokens: int = 1) -> np.ndarray:
        """Result beats ``[n_results, ..., rows]`` in stream order → ``[tokens, ..., m]``."""
        nb = self.row_blocks(m)
        expected = nb * tokens
        if result_beats.shape[0] != expected or result_beats.shape[-1] != self.rows:
            raise ValueError(f"expected {expected} result beats of {self.rows} rows, got an array of shape "
                             f"{result_beats.shape}")
        lead = result_beats.shape[1:-1]
        # Result beats come in (row block, token) order.
        x = result_beats.reshape(nb, tokens, *lead, self.rows)
        x = np.moveaxis(x, 0, -2).reshape(tokens, *lead, nb * self.rows)
        return x[..., :m]

    def finish(self, acc: dict[str, np.ndarray], extra=None) -> dict[str, np.ndarray]:
        """Result fields from final accumulator values (``[n, rows]`` per row channel, ``[n]`` per shared one),
        exactly as the result stage of the RTL computes them. ``extra`` holds what that stage read from each
        result's ``last`` beat, ``{scale field: [n, ...]}`` (:meth:`result_extra`), None for units without scale
        fields."""
        raise NotImplementedError

    def result_extra(self, weights, acts, extra, result_beat: np.ndarray) -> dict[str, np.ndarray] | None:
        """The ``scale`` fields of the operand beats ``result_beat`` (the ``last`` beat of each result), as
        :meth:`finish` takes them; None for a unit without scale fields."""
        names = [f.name for f in self.operand_layout.fields if f.role == "scale"]
        if not names:
            return None
        beats = self.operand_beats(weights, acts, extra)
        return {n: beats[n][result_beat] for n in names}

    @property
    def result_words(self) -> int:
        """32-bit words of one result record (docs/isa.md §2 "Result records"): every result field's elements
        other than the row axis."""
        return sum(f.count // self.rows for f in self.result_layout.fields)

    def pack_results(self, results: dict[str, np.ndarray]) -> np.ndarray:
        """Result fields ``{field: [tokens, ..., M]}`` (as ``sim.engine.simulate`` returns them) → the result
        records, int32 ``[tokens][M][result_words]``: the fields in :attr:`result_layout` order, each field's
        elements other than the row axis row-major."""
        names = [f.name for f in self.result_layout.fields]
        if set(results) != set(names):
            raise ValueError(f"result fields {sorted(results)}, expected {names}")
        parts = []
        for name in names:
            v = np.asarray(results[name], np.int64)
            parts.append(np.moveaxis(v, -1, 1).reshape(v.shape[0], v.shape[-1], -1))
        records = np.concatenate(parts, axis=2)
        lo, hi = np.iinfo(np.int32).min, np.iinfo(np.int32).max
        if records.size and (records.min() < lo or records.max() > hi):
            word = int(np.argwhere((records < lo) | (records > hi))[0][2])
            raise ValueError(f"result word {word} holds a value outside int32; a result record stores 32-bit words")
        return records.astype(np.int32)

    def unpack_results(self, records) -> dict[str, np.ndarray]:
        """The inverse of :meth:`pack_results`: int32 ``[tokens][M][result_words]`` → ``{field: [tokens, ...,
        M]}`` (int64)."""
        records = np.asarray(records)
        if records.ndim != 3 or records.shape[2] != self.result_words:
            raise ValueError(f"result records must be [tokens, M, {self.result_words}], not {records.shape}")
        t, m, _ = records.shape
        out, w = {}, 0
        for f in self.result_layout.fields:
            outer = tuple(n for a, n in zip(f.axes, f.shape) if a != "row")
            n = prod(outer)
            v = records[:, :, w:w + n].astype(np.int64).reshape(t, m, *outer)
            out[f.name] = np.moveaxis(v, 1, -1)
            w += n
        return out

    # -- what the simulator asks --------------------------------------------------------------------------------

    def contributions(self, weights: np.ndarray, acts: np.ndarray) -> dict[str, np.ndarray]:
        """The datapath arithmetic: what every operand beat of the problem adds to every accumulator channel,
        ``{channel: [beats, rows] or [beats]}`` in schedule order (``hw.units.datapath``)."""
        raise NotImplementedError

    def random_operands(self, rng: np.random.Generator, m: int, k: int, n: int):
        """Random ``(weights, acts, extra)`` of a problem of ``m`` tokens, reduction ``k`` and ``n`` output rows
        within the unit's operand ranges (the stepped mode times on them: timing does not depend on values)."""
        raise NotImplementedError

    def check_fits(self, op) -> None:
        k = min(op.k, self.reduction_block) if self.reduction_block else op.k
        if k > self.max_k:
            raise ValueError(f"{op.name}: reductions of {k} exceed the {self.kind.value} engine's max_k={self.max_k}")

    def _check_act_fits(self, op) -> None:
        if op.a_bits > self.act_bits:
            raise ValueError(f"{op.name}: {op.a_bits}-bit activations exceed the {self.kind.value} engine's "
                             f"act_bits={self.act_bits}")

    def tree_events(self, rows_total: int) -> Counter:
        ev = Counter()
        beats = self.beats_per_reduction(self.max_k)
        for ch in self.channels():
            copies = rows_total if ch.per_row else max(1, rows_total // self.rows)
            nodes = ch.terms
            for level in range(1, ch.depth + 1):
                nxt = ceil_div(nodes, ch.arity)
                adds = nodes - nxt                       # every add removes one node
                ev[("int_add", ch.level_width(level))] += adds * copies
                if level in self.registered_levels:
                    ev[("reg_bits",)] += nxt * ch.level_width(level) * copies
                nodes = nxt
            ev[("int_add", ch.acc_width(beats))] += copies          # the accumulator
            ev[("reg_bits",)] += ch.acc_width(beats) * copies
        return ev

    def result_events(self, rows_total: int) -> Counter:
        ev = Counter()
        out_bits = self.result_layout.width * max(1, rows_total // self.rows)
        ev[("reg_bits",)] += 2 * out_bits
        ev.update(self._result_arithmetic(rows_total))
        return ev

    def _result_arithmetic(self, rows_total: int) -> Counter:
        """The result stage's arithmetic per result beat (adds of the first result field's width, multiplies)."""
        return Counter()
