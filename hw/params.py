"""Frozen parameter objects of lowbit's units: one object drives the generator, the simulator and the benches.

Plain Python and NumPy only (no Amaranth), so ``sim`` can import it. Each parameter class validates itself on
construction, resolves derived values (accumulator widths, pipeline depth) into its fields, and owns the unit's
I/O contract: payload layouts (with each field's axes, encoding and role), the pad values of a problem that does
not fill whole beats (``operand_padding``), how a problem is cut into operand beats, how result beats map back, the
accumulator channels the datapath keeps, and the closed-form cycle count at full throughput.

All five units are *stream dot-product engines* with one structure (``hw/engine.py``): an operand beat carries
``lanes`` reduction elements of one activation vector and the matching elements of ``rows`` weight rows; each
row reduces its lane terms in a pipelined tree per accumulator channel, accumulates until a beat flagged
``last``, and a result beat leaves with the finished values. They differ in their operands and channels:

============== ============================================ ==========================================
unit           operands                                     result per row
============== ============================================ ==========================================
ternary-mac    int activations × {-1, 0, +1} weights        Σ w·x
xnor-popcount  ±1 activations × ±1 weights (as bits)        2·popcount(XNOR) − n [, bool(score)]
bamm           {0,1} attention bits × ±1 values (as bits)   Σ a·v and its sign under a zero policy
binary-basis   int activations × N binary bases (or BiLLM   Σ_j B_ij·x_j per basis (adder-only)
               groups with signs)                           [, Σ_i α_i·S_i with fixed-point α]
int8-mac       int8 activations × int8 weights              Σ w·x
============== ============================================ ==========================================
"""

from dataclasses import asdict, dataclass, fields
from typing import ClassVar

import numpy as np

from models.intops import code_range, signed_range, signed_width
from models.units import UnitKind

from .layout import Code, PayloadLayout, field

__all__ = ["SystolicArrayParams", "UnitParams", "EngineParams", "TernaryMacParams", "XnorPopcountParams", "BammParams",
           "BinaryBasisParams", "Int8MacParams", "BeatSchedule", "Channel", "UNIT_PARAMS", "params_for_unit",
           "ceil_div", "ceil_log2", "MAX_MACS_PER_CYCLE"]

#: Largest ``lanes × rows`` a generator accepts; beyond it the payload and the design become impractical.
MAX_MACS_PER_CYCLE = 1 << 16


def _int_field(name: str, value, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if value < lo or (hi is not None and value > hi):
        bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be {bound}, not {value!r}")
    return int(value)


def _choice(name: str, value, choices) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, not {value!r}")
    return value


def _in_set(name: str, a: np.ndarray, allowed) -> None:
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array, not {a.dtype}")
    bad = ~np.isin(a, allowed)
    if bad.any():
        raise ValueError(f"{name} holds {int(a[bad].flat[0])}; allowed values: {sorted(set(int(v) for v in allowed))}")


def _in_range(name: str, a: np.ndarray, lo: int, hi: int) -> None:
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array, not {a.dtype}")
    if a.size and (a.min() < lo or a.max() > hi):
        bad = a[(a < lo) | (a > hi)].flat[0]
        raise ValueError(f"{name} holds {int(bad)}, outside [{lo}, {hi}]")

def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def ceil_log2(n: int) -> int:
    return max(0, (n - 1).bit_length())


class UnitParams:
    """Behaviour shared by every unit's parameter dataclass."""

    kind: ClassVar[UnitKind]

    def to_dict(self) -> dict:
        """The resolved parameters, JSON/TOML-ready; ``from_dict(to_dict())`` gives an equal object."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        """Build from a mapping, refusing keys this unit does not have."""
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown {cls.kind.value} parameter(s) {sorted(unknown)}; known: {sorted(names)}")
        return cls(**d)


@dataclass(frozen=True)
class BeatSchedule:
    """Which slice of the problem each operand beat carries, in stream order."""

    row_block: np.ndarray  #: int64 [beats]: output rows ``row_block*rows … +rows-1``
    token: np.ndarray      #: int64 [beats]: which activation vector
    k_chunk: np.ndarray    #: int64 [beats]: reduction elements ``k_chunk*lanes … +lanes-1``
    last: np.ndarray       #: bool  [beats]: the beat that ends a reduction

    def __len__(self) -> int:
        return int(self.row_block.size)


@dataclass(frozen=True)
class Channel:
    """One accumulator channel of a row: the sum over beats of ``terms`` lane terms in ``[lo, hi]`` each.

    ``per_row=False`` channels are shared by all rows (e.g. the number of valid lanes). Channels of one-bit terms
    (popcounts) add three nodes at every tree level — three XNOR bits or three 2-bit counts are six inputs, one
    6-input LUT per output bit — where every other tree adds pairs on carry chains. Nodes of channels without
    negative terms are unsigned.
    """

    name: str
    lo: int
    hi: int
    terms: int
    per_row: bool = True

    @property
    def signed(self) -> bool:
        return self.lo < 0

    @property
    def arity(self) -> int:
        return 3 if (self.lo, self.hi) == (0, 1) else 2

    @property
    def depth(self) -> int:
        """Tree levels needed to reduce the terms to one."""
        d, n = 0, 1
        while n < self.terms:
            n *= self.arity
            d += 1
        return d

    def covered(self, level: int) -> int:
        """Terms under one node at ``level`` (0 = a term)."""
        return min(self.terms, self.arity ** level)

    def level_width(self, level: int) -> int:
        """Width of a tree node at ``level`` (0 = the terms themselves); signed iff the channel is."""
        n = self.covered(level)
        if not self.signed:
            return max(1, (self.hi * n).bit_length())
        return signed_width(self.lo * n, self.hi * n)

    def acc_width(self, max_k_beats: int) -> int:
        """Width of the (signed) accumulator summing ``max_k_beats`` tree outputs."""
        return signed_width(min(self.lo * self.terms, 0) * max_k_beats, max(self.hi * self.terms, 0) * max_k_beats)


@dataclass(frozen=True)
class EngineParams(UnitParams):
    """Parameters shared by every stream dot-product engine.

    lanes : reduction elements consumed per cycle.
    rows : output rows computed in parallel.
    max_k : longest reduction the accumulators are sized for.
    tree_stages : register stages inside each reduction tree, ``0 … tree_depth``; ``None`` registers every level.
    """

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

    # -- I/O contract -----------------------------------------------------------------------------------

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

    #: Weight-side planes per row (binary-basis: one per basis), None for plain [M, K] weights.
    def weight_planes(self) -> int | None:
        return None

    def check_problem(self, m: int, k: int, tokens: int) -> None:
        """Refuse a problem this engine cannot run, naming the value."""
        for name, v in (("M (output rows)", m), ("K (reduction length)", k), ("tokens", tokens)):
            _int_field(name, v, 1)
        if k > self.max_k:
            raise ValueError(f"K={k} exceeds max_k={self.max_k} of this engine (its accumulators could overflow); "
                             f"regenerate with max_k >= {k}")

    def beats_per_reduction(self, k: int) -> int:
        return ceil_div(k, self.lanes)

    def row_blocks(self, m: int) -> int:
        return ceil_div(m, self.rows)

    def n_beats(self, m: int, k: int, tokens: int = 1) -> int:
        """Operand beats for a ``[m, k]`` weight side and ``tokens`` activation vectors."""
        self.check_problem(m, k, tokens)
        return self.row_blocks(m) * tokens * self.beats_per_reduction(k)

    def cycles(self, m: int, k: int, tokens: int = 1) -> int:
        """Closed-form cycle count at full throughput: one beat per cycle, plus the pipeline latency."""
        return self.n_beats(m, k, tokens) + self.latency

    def schedule(self, m: int, k: int, tokens: int = 1) -> BeatSchedule:
        """Stream order: row blocks outermost, then tokens, then reduction chunks (``last`` on the final one)."""
        self.check_problem(m, k, tokens)
        nb, nt, nk = self.row_blocks(m), tokens, self.beats_per_reduction(k)
        rb, tok, kc = np.meshgrid(np.arange(nb), np.arange(nt), np.arange(nk), indexing="ij")
        return BeatSchedule(rb.ravel(), tok.ravel(), kc.ravel(), (kc == nk - 1).ravel())

    def _gather(self, weights: np.ndarray, acts: np.ndarray, *, act: str, weight: str | tuple[str, ...]):
        """Cut ``weights`` ``[..., M, K]`` and ``acts`` ``[T, K]`` (both as the integers their fields pack) into beats.

        ``act`` names the activation field, ``weight`` the weight field (or, for weights stacked ``[n, M, K]``,
        the ``n`` fields the planes go to). Returns ``(w [B, ..., rows, lanes], a [B, lanes], n_valid [B],
        schedule)``; padded lanes and rows take the fields' pad values (:meth:`operand_padding`), a padded row on
        every lane.
        """
        layout = self.operand_layout
        names = (weight,) if isinstance(weight, str) else weight

        def weight_pad(axis):
            v = np.array([layout[n].pad_value(axis) for n in names], np.int64)
            return v.reshape(-1, 1, 1) if len(names) > 1 else v[0]

        weights = np.asarray(weights)
        acts = np.asarray(acts)
        *lead, m, k = weights.shape
        tokens = acts.shape[0]
        if acts.ndim != 2 or acts.shape[1] != k:
            raise ValueError(f"activations {acts.shape} and weights {weights.shape} do not share K")
        sched = self.schedule(m, k, tokens)
        L, R = self.lanes, self.rows
        nk = self.beats_per_reduction(k)
        a_pad = np.full((tokens, nk * L), layout[act].pad_value("lane"), np.int64)
        a_pad[:, :k] = acts
        w_pad = np.empty((*lead, self.row_blocks(m) * R, nk * L), np.int64)
        w_pad[...] = weight_pad("row")
        w_pad[..., :m, :] = weight_pad("lane")
        w_pad[..., :m, :k] = weights
        a = a_pad.reshape(tokens, nk, L)[sched.token, sched.k_chunk]
        w_blocks = w_pad.reshape(*lead, -1, R, nk, L)                           # [..., nb, R, nk, L]
        w_blocks = np.moveaxis(w_blocks, (-4, -2), (0, 1))                       # [nb, nk, ..., R, L]
        w = w_blocks[sched.row_block, sched.k_chunk]
        n_valid = np.minimum(L, k - sched.k_chunk * L)
        return w, a, n_valid, sched

    def operand_beats(self, weights: np.ndarray, acts: np.ndarray) -> dict[str, np.ndarray]:
        """Materialise the operand beats of a problem as field arrays (see each unit for its operands)."""
        raise NotImplementedError

    def check_operands(self, weights: np.ndarray, acts: np.ndarray, alpha=None) -> None:
        """Refuse operands outside the unit's value sets, naming the first offending value."""
        raise NotImplementedError


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

    def finish(self, acc: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Result fields from final accumulator values (``[n, rows]`` per row channel, ``[n]`` per shared one),
        exactly as the result stage of the RTL computes them."""
        raise NotImplementedError


_ABBREV = {"lanes": "l", "rows": "r", "max_k": "k", "tree_stages": "t", "act_bits": "a", "acc_width": "w",
           "zero_skip": "z", "threshold": "th", "identity": "id", "zero_policy": "zp", "n_bases": "n", "mode": "m",
           "lut_group": "lut", "scale_bits": "s", "weight_bits": "wb"}


def _short(v) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    return str(v).replace("-", "").replace(".", "")


def _acc_check(name: str, given: int | None, needed: int, why: str) -> int:
    if given is None:
        return needed
    _int_field(name, given, 1, 64)
    if given < needed:
        raise ValueError(f"{name}={given} is too narrow: {why} needs {needed} bits")
    return given


# -- ternary-mac ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TernaryMacParams(EngineParams):
    """Ternary-weight × signed-activation engine (BitNet b1.58, TernaryBERT, every {-1,0,+1} pass).

    act_bits : activation width (two's complement); 8 for b1.58.
    acc_width : accumulator width; ``None`` derives the narrowest width that cannot overflow for ``max_k``.
    zero_skip : register each lane's term behind a clock enable that is low for a zero weight (a zero weight
        toggles no register, which the energy model credits; one more pipeline stage). Results are identical.

    Datapath: a lane term is ``(x XOR negate) AND nonzero`` — ``-x`` computed as ``~x + 1`` with the ``+1``s
    counted in a second channel (``neg``) — so no lane needs a negation adder; ``acc = main + neg``.
    """

    kind: ClassVar[UnitKind] = UnitKind.TERNARY_MAC

    act_bits: int = 8
    acc_width: int | None = None
    zero_skip: bool = False

    #: 2-bit weight code → the weight the RTL applies. Two's complement, so bit 1 is "negate" and bit 0
    #: "non-zero"; the unused code 0b10 decodes as 0 (drivers must not send it).
    WEIGHT_CODES: ClassVar[dict[int, int]] = {0b00: 0, 0b01: +1, 0b11: -1, 0b10: 0}
    WEIGHT_CODES_VALID: ClassVar[frozenset[int]] = frozenset({0b00, 0b01, 0b11})

    def _validate(self):
        _int_field("act_bits", self.act_bits, 2, 32)
        if not isinstance(self.zero_skip, bool):
            raise TypeError(f"zero_skip must be True or False, not {self.zero_skip!r}")
        lo, hi = self.result_range()
        object.__setattr__(self, "acc_width", _acc_check(
            "acc_width", self.acc_width, signed_width(lo, hi),
            f"max_k={self.max_k} with {self.act_bits}-bit activations (the sum spans [{lo}, {hi}])"))

    def result_range(self) -> tuple[int, int]:
        x_lo, _ = signed_range(self.act_bits)
        return x_lo * self.max_k, -x_lo * self.max_k

    @property
    def pre_stages(self) -> int:
        return 1 if self.zero_skip else 0

    def channels(self) -> tuple[Channel, ...]:
        lo, hi = signed_range(self.act_bits)
        return (Channel("main", lo, hi, self.lanes), Channel("neg", 0, 1, self.lanes))

    @classmethod
    def weight_codes(cls) -> tuple[Code, ...]:
        """:data:`WEIGHT_CODES` as the weight field's code table, in bit order."""
        return tuple(Code(bits, cls.WEIGHT_CODES[bits], reserved=bits not in cls.WEIGHT_CODES_VALID)
                     for bits in sorted(cls.WEIGHT_CODES))

    def operand_padding(self):
        # act 0 or weight 0 alone zeroes a lane's term; both are sent so neither side needs to know the other.
        return {"act": {"lane": 0}, "weight": {"lane": 0b00, "row": 0b00}}

    @property
    def operand_layout(self) -> PayloadLayout:
        """``act[lanes]`` (signed), ``weight[rows][lanes]`` (2-bit codes), ``last``."""
        return self._operands(
            field("act", self.act_bits, "twos_complement", "activation", {"lane": self.lanes}),
            field("weight", 2, "code", "weight", {"row": self.rows, "lane": self.lanes}, codes=self.weight_codes()),
            field("last", 1, "unsigned", "last"),
        )

    @property
    def result_layout(self) -> PayloadLayout:
        return PayloadLayout.sequential(field("acc", self.acc_width, "twos_complement", "result", {"row": self.rows}))

    def encoding_notes(self):
        return {
            "act": "act[i] is reduction element k_chunk*lanes + i of the token",
            "weight": {
                "width": 2,
                "codes": {f"0b{code:02b}": value if code in self.WEIGHT_CODES_VALID else f"reserved, decodes as {value}"
                          for code, value in self.WEIGHT_CODES.items()},
                "placement": "weight[r][i] multiplies act[i] for output row row_block*rows + r",
            },
            "acc": "acc[r] = sum of w*x over the reduction; cannot overflow for reductions of up to "
                   f"max_k={self.max_k} elements",
            "zero_skip": "each lane's term is registered behind a clock enable low for zero weights" if self.zero_skip
            else "off",
        }

    def check_operands(self, weights, acts, alpha=None):
        _in_range("ternary weights", weights, -1, 1)
        _in_range(f"{self.act_bits}-bit activations", acts, *signed_range(self.act_bits))

    def operand_beats(self, weights, acts):
        """``weights`` ``[M, K]`` in {-1, 0, +1}, ``acts`` ``[T, K]`` signed; padding carries 0."""
        self.check_operands(weights, acts)
        w, a, _, sched = self._gather(weights, acts, act="act", weight="weight")
        return {"act": a, "weight": w, "last": sched.last.astype(np.int64)}

    def finish(self, acc):
        return {"acc": acc["main"] + acc["neg"]}


# -- xnor-popcount -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class XnorPopcountParams(EngineParams):
    """±1 × ±1 dot products by XNOR and popcount (BiBERT's binary linears and QKᵀ).

    Bit 1 encodes +1, bit 0 encodes −1. ``dot = 2·popcount(XNOR) − n`` with ``n`` the valid lanes, sent with
    each beat (``n_valid``); padded lanes carry act 0 and weight 1 so their XNOR is 0 (:meth:`operand_padding`).
    threshold : also output BiBERT's ``bool(score)``: ``"strict"`` (score > 0, the official code),
        ``"nonstrict"`` (score ≥ 0, the paper) or ``"none"``.
    """

    kind: ClassVar[UnitKind] = UnitKind.XNOR_POPCOUNT

    threshold: str = "none"

    def _validate(self):
        _choice("threshold", self.threshold, ("none", "strict", "nonstrict"))

    @property
    def count_bits(self) -> int:
        return (self.lanes).bit_length()

    def channels(self) -> tuple[Channel, ...]:
        return (Channel("pc", 0, 1, self.lanes), Channel("n", 0, self.lanes, 1, per_row=False))

    @property
    def dot_width(self) -> int:
        return signed_width(-self.max_k, self.max_k)

    def operand_padding(self):
        # XNOR(0, 1) = 0: a padded lane adds nothing to the popcount, and n_valid leaves it out of n.
        return {"act": {"lane": 0}, "weight": {"lane": 1, "row": 1}}

    @property
    def operand_layout(self) -> PayloadLayout:
        return self._operands(
            field("act", 1, "bit_pm1", "activation", {"lane": self.lanes}),
            field("weight", 1, "bit_pm1", "weight", {"row": self.rows, "lane": self.lanes}),
            field("n_valid", self.count_bits, "unsigned", "valid_lanes"),
            field("last", 1, "unsigned", "last"),
        )

    @property
    def result_layout(self) -> PayloadLayout:
        specs = [field("dot", self.dot_width, "twos_complement", "result", {"row": self.rows})]
        if self.threshold != "none":
            specs.append(field("bit", 1, "unsigned", "result", {"row": self.rows}))
        return PayloadLayout.sequential(*specs)

    def encoding_notes(self):
        return {
            "act": "activation signs; act[i] is reduction element k_chunk*lanes + i",
            "weight": "weight signs; weight[r][i] meets act[i] for output row row_block*rows + r",
            "n_valid": "lanes of this beat that are not padding (lanes, except on a reduction's partial last beat)",
            "dot": "2*popcount(XNOR(act, weight)) - n over the reduction, n the sum of n_valid",
            "bit": {"none": "absent", "strict": "1 iff dot > 0 (BiBERT's official bool)",
                    "nonstrict": "1 iff dot >= 0 (the paper's bool)"}[self.threshold],
        }

    def check_operands(self, weights, acts, alpha=None):
        # sign(0) cannot be a bit: a zero needs zero_policy "pos" or "neg" upstream
        _in_set("xnor-popcount weights", weights, (-1, 1))
        _in_set("xnor-popcount activations", acts, (-1, 1))

    def operand_beats(self, weights, acts):
        """``weights`` ``[M, K]`` and ``acts`` ``[T, K]`` in {-1, +1}."""
        self.check_operands(weights, acts)
        w, a, n_valid, sched = self._gather((np.asarray(weights) > 0).astype(np.int64),
                                            (np.asarray(acts) > 0).astype(np.int64), act="act", weight="weight")
        return {"act": a, "weight": w, "n_valid": n_valid, "last": sched.last.astype(np.int64)}

    def finish(self, acc):
        dot = 2 * acc["pc"] - acc["n"][:, None]
        out = {"dot": dot}
        if self.threshold == "strict":
            out["bit"] = (dot > 0).astype(np.int64)
        elif self.threshold == "nonstrict":
            out["bit"] = (dot >= 0).astype(np.int64)
        return out


# -- bamm ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BammParams(EngineParams):
    """BiBERT's BAMM: attention bits ``a ∈ {0,1}`` × values ``v ∈ ±1`` (bit 1 = +1), ``count = a·v``.

    Rows are value columns (d_h outputs), the reduction runs over keys.
    identity : ``"and"``: ``2·popcount(a AND v') − popcount(a)``; ``"xnor"``: ``popcount(XNOR(a, v')) +
        popcount(v') − n`` (the XNOR-popcount dot plus the column sum of v, halved). The two pad differently
        (:meth:`operand_padding`).
    zero_policy : sign of a zero count in the ``sign`` output: ``"torch"`` (0, the official code), ``"pos"``,
        ``"neg"``.
    """

    kind: ClassVar[UnitKind] = UnitKind.BAMM

    identity: str = "and"
    zero_policy: str = "torch"

    def _validate(self):
        _choice("identity", self.identity, ("and", "xnor"))
        _choice("zero_policy", self.zero_policy, ("torch", "pos", "neg"))

    @property
    def count_bits(self) -> int:
        return (self.lanes).bit_length()

    def channels(self) -> tuple[Channel, ...]:
        if self.identity == "and":
            return (Channel("and", 0, 1, self.lanes), Channel("a", 0, 1, self.lanes, per_row=False))
        return (Channel("xnor", 0, 1, self.lanes), Channel("v", 0, 1, self.lanes),
                Channel("n", 0, self.lanes, 1, per_row=False))

    @property
    def count_width(self) -> int:
        return signed_width(-self.max_k, self.max_k)

    def operand_padding(self):
        if self.identity == "and":
            # a = 0 zeroes both popcounts' terms (a AND v, and a itself).
            return {"a": {"lane": 0}, "v": {"lane": 0, "row": 0}}
        # XNOR(1, 0) = 0 and v = 0 add nothing, and n_valid leaves the lane out of n; the natural a = 0 would give
        # XNOR(0, 0) = 1, one too many per padded lane.
        return {"a": {"lane": 1}, "v": {"lane": 0, "row": 0}}

    @property
    def operand_layout(self) -> PayloadLayout:
        specs = [field("a", 1, "unsigned", "activation", {"lane": self.lanes}),
                 field("v", 1, "bit_pm1", "weight", {"row": self.rows, "lane": self.lanes})]
        if self.identity == "xnor":
            specs.append(field("n_valid", self.count_bits, "unsigned", "valid_lanes"))
        specs.append(field("last", 1, "unsigned", "last"))
        return self._operands(*specs)

    @property
    def result_layout(self) -> PayloadLayout:
        rows = {"row": self.rows}
        return PayloadLayout.sequential(field("count", self.count_width, "twos_complement", "result", rows),
                                        field("sign", 2, "twos_complement", "result", rows))

    def encoding_notes(self):
        notes = {
            "a": "attention bits, one per key; a[i] is key k_chunk*lanes + i",
            "v": "value signs; rows are value columns (d_h): v[r][i] is column row_block*rows + r of key i",
            "identity": "count = 2*popcount(a AND v) - popcount(a)" if self.identity == "and"
            else "count = popcount(XNOR(a, v)) + popcount(v) - n, n the sum of n_valid",
            "count": "sum over keys of a*v",
            "sign": f"+1, -1, and {({'torch': 0, 'pos': 1, 'neg': -1}[self.zero_policy])} for a zero count "
                    f"(zero_policy {self.zero_policy})",
        }
        if self.identity == "xnor":
            notes["n_valid"] = "keys of this beat that are not padding"
        return notes

    def check_operands(self, weights, acts, alpha=None):
        _in_set("bamm values", weights, (-1, 1))       # a zero sign of V needs zero_policy pos or neg upstream
        _in_set("bamm attention bits", acts, (0, 1))

    def operand_beats(self, weights, acts):
        """``weights`` = values ``[M=d_h, K=keys]`` in ±1 (transposed V), ``acts`` = bits ``[T=queries, K]``."""
        self.check_operands(weights, acts)
        w, a, n_valid, sched = self._gather((np.asarray(weights) > 0).astype(np.int64), np.asarray(acts, np.int64),
                                            act="a", weight="v")
        out = {"a": a, "v": w}
        if self.identity == "xnor":
            out["n_valid"] = n_valid
        out["last"] = sched.last.astype(np.int64)
        return out

    def finish(self, acc):
        if self.identity == "and":
            count = 2 * acc["and"] - acc["a"][:, None]
        else:
            count = acc["xnor"] + acc["v"] - acc["n"][:, None]
        zero = {"torch": 0, "pos": 1, "neg": -1}[self.zero_policy]
        return {"count": count, "sign": np.where(count > 0, 1, np.where(count < 0, -1, zero))}


# -- binary-basis --------------------------------------------------------------------------------------------

BILLM_GROUPS = ("concentrated", "sparse", "salient")


@dataclass(frozen=True)
class BinaryBasisParams(EngineParams):
    """Adder-only binary-basis engine (QBB; BiLLM's groups): sign-controlled sums of multi-bit activations.

    mode : ``"bases"`` (QBB): ``n_bases`` bit planes per row, ``S_i = Σ_j B_ij·x_j`` with ``B ∈ ±1``;
        ``"billm"``: per element a group (0 concentrated, 1 sparse, 2 salient) and two sign bits (the salient
        group's second-order residual uses the second), giving per row the signed sums ``S_g`` of each group, the
        salient second-order sum, and the plain group sums ``M_g`` for BiLLM's mean terms.
    act_bits : activation width (two's complement).
    lut_group : 0 for the direct datapath; μ > 0 builds, per beat and per group of μ lanes, the 2^μ partial sums
        of the activations (LUT-GEMM / T-MAC) and lets every basis row look its sum up by its μ bits (one more
        pipeline stage; ``"bases"`` mode only; lanes must be a multiple of μ).
    scale_bits : 0 outputs the per-basis sums; s > 0 also reads fixed-point scales ``alpha[n_bases][rows]``
        (signed, s bits) on the ``last`` beat and outputs ``y = Σ_i alpha_i·S_i`` — N multiplications per output
        (``"bases"`` mode only; one more pipeline stage).
    acc_width : width of each accumulator; ``None`` derives it from ``max_k``.

    Every sum uses ``Σ_j B_j·x_j = 2·Σ_{B_j=+1} x_j − Σ_j x_j``: a masked sum (an AND per bit, no negation) per
    plane and one plain sum shared by all planes.
    """

    kind: ClassVar[UnitKind] = UnitKind.BINARY_BASIS

    act_bits: int = 8
    n_bases: int = 4
    mode: str = "bases"
    lut_group: int = 0
    scale_bits: int = 0
    acc_width: int | None = None

    def _validate(self):
        _int_field("act_bits", self.act_bits, 2, 32)
        _choice("mode", self.mode, ("bases", "billm"))
        _int_field("n_bases", self.n_bases, 1, 16)
        if self.mode == "billm" and self.n_bases != 4:
            raise ValueError(f"billm mode has 4 signed sums per row (three groups and the salient residual); "
                             f"n_bases must be 4, not {self.n_bases}")
        _int_field("lut_group", self.lut_group, 0, 6)
        _int_field("scale_bits", self.scale_bits, 0, 32)
        if self.lut_group:
            if self.mode != "bases":
                raise ValueError(f"lut_group={self.lut_group} needs mode 'bases', not {self.mode!r}")
            if self.lanes % self.lut_group:
                raise ValueError(f"lanes={self.lanes} is not a multiple of lut_group={self.lut_group}")
        if self.scale_bits and self.mode != "bases":
            raise ValueError(f"scale_bits={self.scale_bits} needs mode 'bases', not {self.mode!r}")
        object.__setattr__(self, "acc_width", _acc_check(
            "acc_width", self.acc_width, signed_width(-self.sum_bound, self.sum_bound),
            f"max_k={self.max_k} with {self.act_bits}-bit activations"))

    @property
    def tree_terms(self) -> int:
        return self.lanes // self.lut_group if self.lut_group else self.lanes

    @property
    def pre_stages(self) -> int:
        return 1 if self.lut_group else 0

    @property
    def post_stages(self) -> int:
        return 2 if self.scale_bits else 1

    @property
    def planes(self) -> tuple[str, ...]:
        """Signed-sum outputs per row."""
        if self.mode == "bases":
            return tuple(f"s{i}" for i in range(self.n_bases))
        return ("concentrated", "sparse", "salient", "salient_o2")

    @property
    def macs_per_weight(self) -> int:
        """One MAC per basis; in BiLLM mode one (the groups are masks of one binarized weight)."""
        return self.n_bases if self.mode == "bases" else 1

    def channels(self) -> tuple[Channel, ...]:
        lo, hi = signed_range(self.act_bits)
        t = self.tree_terms
        # a lane term is x or 0; with a LUT, a term is the sum of a group of μ lanes' terms
        mu = self.lut_group or 1
        term = (min(lo, 0) * mu, max(hi, 0) * mu)
        if self.mode == "bases":
            return (*(Channel(f"p{i}", *term, t) for i in range(self.n_bases)),
                    Channel("total", lo * mu, hi * mu, t, per_row=False))
        masked = [Channel(f"p_{g}", lo, hi, self.lanes) for g in (*BILLM_GROUPS, "salient_o2")]
        plain = [Channel(f"m_{g}", lo, hi, self.lanes) for g in BILLM_GROUPS]
        return (*masked, *plain)

    @property
    def sum_bound(self) -> int:
        """|S| of any signed sum over ``max_k`` elements."""
        return -signed_range(self.act_bits)[0] * self.max_k

    @property
    def y_width(self) -> int:
        if not self.scale_bits:
            return 0
        bound = self.n_bases * self.sum_bound * (1 << (self.scale_bits - 1))
        return signed_width(-bound, bound)

    #: BiLLM group codes: the group index each code stands for; 0b11 puts the element in no group (it adds to no
    #: sum), which drivers do not send.
    GROUP_CODES: ClassVar[tuple[Code, ...]] = (
        *(Code(i, i, label=g) for i, g in enumerate(BILLM_GROUPS)),
        Code(0b11, None, reserved=True, label="none: the element adds to no sum"),
    )

    def operand_padding(self):
        # act = 0 makes every term of a padded lane 0 whatever the weight bits; padded rows are discarded, and
        # their scales are 0 so their y stays small.
        pad = {"lane": 0, "row": 0}
        if self.mode == "bases":
            return {"act": {"lane": 0}, "bases": pad, **({"alpha": {"row": 0}} if self.scale_bits else {})}
        return {"act": {"lane": 0}, "group": pad, "sign": pad, "sign2": pad}

    @property
    def operand_layout(self) -> PayloadLayout:
        rl = {"row": self.rows, "lane": self.lanes}
        specs = [field("act", self.act_bits, "twos_complement", "activation", {"lane": self.lanes})]
        if self.mode == "bases":
            specs.append(field("bases", 1, "bit_pm1", "weight", {"basis": self.n_bases, **rl}))
            if self.scale_bits:
                specs.append(field("alpha", self.scale_bits, "twos_complement", "scale",
                                   {"basis": self.n_bases, "row": self.rows}))
        else:
            specs += [field("group", 2, "code", "weight", rl, codes=self.GROUP_CODES),
                      field("sign", 1, "bit_pm1", "weight", rl), field("sign2", 1, "bit_pm1", "weight", rl)]
        specs.append(field("last", 1, "unsigned", "last"))
        return self._operands(*specs)

    @property
    def result_layout(self) -> PayloadLayout:
        specs = [field("sums", self.acc_width, "twos_complement", "result",
                       {"plane": len(self.planes), "row": self.rows})]
        if self.mode == "billm":
            specs.append(field("means", self.acc_width, "twos_complement", "result",
                               {"group": len(BILLM_GROUPS), "row": self.rows}))
        if self.scale_bits:
            specs.append(field("y", self.y_width, "twos_complement", "result", {"row": self.rows}))
        return PayloadLayout.sequential(*specs)

    def weight_planes(self) -> int | None:
        return self.n_bases if self.mode == "bases" else 3

    def encoding_notes(self):
        notes = {"act": "activation x; act[l] is reduction element k_chunk*lanes + l"}
        if self.mode == "bases":
            notes["bases"] = ("bases[i][r][l] = B_i[row_block*rows + r][k_chunk*lanes + l], the sign of basis i")
            notes["sums"] = "sums[i][r] = sum_l B_i[r][l]*act[l] over the reduction"
            if self.scale_bits:
                notes["alpha"] = f"alpha[i][r]: fixed-point scale of basis i, row r ({self.scale_bits} bits)"
                notes["y"] = "y[r] = sum_i alpha[i][r]*sums[i][r]"
            if self.lut_group:
                notes["lut_group"] = f"{self.lut_group} lanes share a {1 << self.lut_group}-entry table of partial sums"
        else:
            notes["group"] = "the element's group: 0 concentrated, 1 sparse, 2 salient (3 unused)"
            notes["sign"] = "sign of (w - mu) of the element's group"
            notes["sign2"] = "sign of the second-order residual, read in the salient group only"
            notes["sums"] = ("sums[g][r] for g = concentrated, sparse, salient, salient second order: sum of "
                             "sign*act over the group's elements")
            notes["means"] = "means[g][r]: sum of act over the group's elements (for the mu terms)"
        return notes

    def check_operands(self, weights, acts, alpha=None):
        weights = np.asarray(weights)
        if weights.ndim != 3 or weights.shape[0] != self.weight_planes():
            raise ValueError(f"binary-basis ({self.mode}) weights must be [{self.weight_planes()}, M, K], not "
                             f"{weights.shape}")
        if self.mode == "bases":
            _in_set("binary-basis bases", weights, (-1, 1))
        else:
            _in_set("billm groups (0 concentrated, 1 sparse, 2 salient)", weights[0], (0, 1, 2))
            _in_set("billm signs", weights[1:], (-1, 1))
        _in_range(f"{self.act_bits}-bit activations", acts, *signed_range(self.act_bits))
        if self.scale_bits:
            if alpha is None:
                raise ValueError(f"scale_bits={self.scale_bits} needs alpha [n_bases, M]")
            alpha = np.asarray(alpha)
            if alpha.shape != (self.n_bases, weights.shape[1]):
                raise ValueError(f"alpha must be [{self.n_bases}, {weights.shape[1]}], not {alpha.shape}")
            _in_range(f"{self.scale_bits}-bit scales alpha", alpha, *signed_range(self.scale_bits))
        elif alpha is not None:
            raise ValueError("alpha is only read by an engine with scale_bits > 0")

    def operand_beats(self, weights, acts, alpha=None):
        """``"bases"``: ``weights`` ``[N, M, K]`` in ±1. ``"billm"``: ``weights`` ``[3, M, K]`` = (group 0/1/2,
        sign ±1, second sign ±1 — only read in the salient group). ``acts`` ``[T, K]`` signed. ``alpha``
        ``[N, M]`` fixed-point scales when ``scale_bits`` > 0."""
        weights = np.asarray(weights)
        self.check_operands(weights, acts, alpha)
        if self.mode == "bases":
            bits = (weights > 0).astype(np.int64)
        else:
            bits = np.stack([weights[0], weights[1] > 0, weights[2] > 0]).astype(np.int64)
        w, a, _, sched = self._gather(bits, acts, act="act",
                                      weight="bases" if self.mode == "bases" else ("group", "sign", "sign2"))
        out = {"act": a}
        if self.mode == "bases":
            out["bases"] = w
            if self.scale_bits:
                alpha = np.asarray(alpha, np.int64)
                m = weights.shape[1]
                a_pad = np.full((self.n_bases, self.row_blocks(m) * self.rows),
                                self.operand_layout["alpha"].pad_value("row"), np.int64)
                a_pad[:, :m] = alpha
                out["alpha"] = a_pad.reshape(self.n_bases, -1, self.rows)[:, sched.row_block].transpose(1, 0, 2)
        else:
            out["group"], out["sign"], out["sign2"] = w[:, 0], w[:, 1], w[:, 2]
        out["last"] = sched.last.astype(np.int64)
        return out

    def finish(self, acc, alpha=None):
        if self.mode == "bases":
            sums = np.stack([2 * acc[f"p{i}"] - acc["total"][:, None] for i in range(self.n_bases)], axis=1)
            out = {"sums": sums}
            if self.scale_bits:
                out["y"] = (alpha * sums).sum(1)
            return out
        sums = [2 * acc[f"p_{g}"] - acc[f"m_{g}"] for g in BILLM_GROUPS]
        sums.append(2 * acc["p_salient_o2"] - acc["m_salient"])
        return {"sums": np.stack(sums, axis=1), "means": np.stack([acc[f"m_{g}"] for g in BILLM_GROUPS], axis=1)}


# -- int8-mac ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Int8MacParams(EngineParams):
    """Signed × signed multiply-accumulate baseline (TernaryBERT's attention, the W8A8 baseline).

    act_bits, weight_bits : operand widths (8 and 8 by default).
    acc_width : ``None`` derives it from ``max_k``.
    """

    kind: ClassVar[UnitKind] = UnitKind.INT8_MAC

    act_bits: int = 8
    weight_bits: int = 8
    acc_width: int | None = None

    def _validate(self):
        _int_field("act_bits", self.act_bits, 2, 16)
        _int_field("weight_bits", self.weight_bits, 2, 16)
        lo, hi = self.product_range()
        object.__setattr__(self, "acc_width", _acc_check(
            "acc_width", self.acc_width, signed_width(lo * self.max_k, hi * self.max_k),
            f"max_k={self.max_k} with {self.act_bits}×{self.weight_bits}-bit products"))

    def product_range(self) -> tuple[int, int]:
        a, w = code_range(self.act_bits), code_range(self.weight_bits)
        p = [x * y for x in a for y in w]
        return min(p), max(p)

    def channels(self) -> tuple[Channel, ...]:
        return (Channel("main", *self.product_range(), self.lanes),)

    def operand_padding(self):
        return {"act": {"lane": 0}, "weight": {"lane": 0, "row": 0}}

    @property
    def operand_layout(self) -> PayloadLayout:
        return self._operands(
            field("act", self.act_bits, "twos_complement", "activation", {"lane": self.lanes}),
            field("weight", self.weight_bits, "twos_complement", "weight", {"row": self.rows, "lane": self.lanes}),
            field("last", 1, "unsigned", "last"),
        )

    @property
    def result_layout(self) -> PayloadLayout:
        return PayloadLayout.sequential(field("acc", self.acc_width, "twos_complement", "result", {"row": self.rows}))

    def encoding_notes(self):
        return {"act": "act[i] is reduction element k_chunk*lanes + i of the token",
                "weight": "weight[r][i] multiplies act[i] for output row row_block*rows + r",
                "acc": "acc[r] = sum of w*x over the reduction"}

    def check_operands(self, weights, acts, alpha=None):
        _in_range(f"{self.weight_bits}-bit weights", weights, *signed_range(self.weight_bits))
        _in_range(f"{self.act_bits}-bit activations", acts, *signed_range(self.act_bits))

    def operand_beats(self, weights, acts):
        self.check_operands(weights, acts)
        w, a, _, sched = self._gather(weights, acts, act="act", weight="weight")
        return {"act": a, "weight": w, "last": sched.last.astype(np.int64)}

    def finish(self, acc):
        return {"acc": acc["main"]}


# -- systolic array (described for the simulator; no generator yet) ---------------------------------------------

@dataclass(frozen=True)
class SystolicArrayParams(UnitParams):
    """An R × C systolic array of int MACs — how the int8 baseline is usually built, and what SCALE-Sim models.

    rows, cols : processing elements (PE) per column and per row.
    dataflow : ``"os"`` (output stationary), ``"ws"`` (weight stationary) or ``"is"`` (input stationary).
    act_bits, weight_bits : operand widths; acc_width : the PE accumulator width.

    The simulator maps a GEMM ``[M × K]·[K × N]`` onto it (``sim/systolic.py``); there is no RTL generator for it
    yet, so it is not in :data:`UNIT_PARAMS`.
    """

    kind: ClassVar[UnitKind] = UnitKind.INT8_MAC

    rows: int
    cols: int
    dataflow: str = "os"
    act_bits: int = 8
    weight_bits: int = 8
    acc_width: int = 32

    def __post_init__(self):
        _int_field("rows", self.rows, 1, 4096)
        _int_field("cols", self.cols, 1, 4096)
        _choice("dataflow", self.dataflow, ("os", "ws", "is"))
        _int_field("act_bits", self.act_bits, 2, 32)
        _int_field("weight_bits", self.weight_bits, 2, 32)
        _int_field("acc_width", self.acc_width, 8, 64)

    @property
    def macs_per_cycle(self) -> int:
        return self.rows * self.cols

    @property
    def module_name(self) -> str:
        return f"systolic_{self.dataflow}_{self.rows}x{self.cols}_a{self.act_bits}_w{self.weight_bits}"


UNIT_PARAMS: dict[UnitKind, type[EngineParams]] = {
    UnitKind.TERNARY_MAC: TernaryMacParams,
    UnitKind.XNOR_POPCOUNT: XnorPopcountParams,
    UnitKind.BAMM: BammParams,
    UnitKind.BINARY_BASIS: BinaryBasisParams,
    UnitKind.INT8_MAC: Int8MacParams,
}


def params_for_unit(name: str) -> type[EngineParams]:
    """The parameter class of a unit given by its command-line name."""
    kind = UnitKind.parse(name)
    try:
        return UNIT_PARAMS[kind]
    except KeyError:
        have = ", ".join(k.value for k in UNIT_PARAMS)
        raise ValueError(f"unit {name!r} has no generator; available: {have}") from None

