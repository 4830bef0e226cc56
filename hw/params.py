"""Frozen parameter objects of lowbit's units: one object drives the generator, the simulator and the benches.

Plain Python and NumPy only (no Amaranth), so ``sim`` can import it. Each parameter class validates itself
on construction, resolves derived values (accumulator width, pipeline depth) into its fields, and owns the
unit's I/O contract: payload layouts, the order in which operand beats are streamed, and the closed-form
cycle count at full throughput.
"""

from dataclasses import asdict, dataclass, fields
from typing import ClassVar

import numpy as np

from models.intops import signed_range, signed_width, ternary_accumulator_range, ternary_accumulator_width
from models.units import UnitKind

from .layout import PayloadLayout

__all__ = ["UnitParams", "TernaryMacParams", "BeatSchedule", "UNIT_PARAMS", "params_for_unit"]

#: Largest ``lanes × rows`` a generator accepts; beyond it the payload and the design become impractical.
MAX_MACS_PER_CYCLE = 1 << 16


def _int_field(name: str, value, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if value < lo or (hi is not None and value > hi):
        bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be {bound}, not {value!r}")
    return int(value)


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
            raise ValueError(f"unknown {cls.kind.value} parameter(s) {sorted(unknown)}; "
                             f"known: {sorted(names)}")
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
class TernaryMacParams(UnitParams):
    """Ternary-weight × signed-activation matrix-vector engine (BitNet b1.58, TernaryBERT linears).

    Each beat carries ``lanes`` activations and a ``rows × lanes`` block of ternary weights; the engine
    forms the ``rows`` partial dot products in a ``lanes``-input adder tree per row and accumulates them
    until a beat flagged ``last``, then emits the ``rows`` accumulators as one result beat.

    Parameters
    ----------
    lanes : reduction elements consumed per cycle (any positive integer).
    rows : output rows computed in parallel.
    max_k : longest reduction the accumulators are sized for.
    act_bits : activation width (two's complement); 8 for b1.58.
    tree_stages : register stages inside each adder tree, ``0 … ceil(log2(lanes))``;
        ``None`` registers every tree level.
    acc_width : accumulator width; ``None`` derives the narrowest width that cannot overflow for
        ``max_k``. A narrower value is refused.
    """

    kind: ClassVar[UnitKind] = UnitKind.TERNARY_MAC

    lanes: int
    rows: int
    max_k: int = 4096
    act_bits: int = 8
    tree_stages: int | None = None
    acc_width: int | None = None

    def __post_init__(self):
        _int_field("lanes", self.lanes, 1)
        _int_field("rows", self.rows, 1)
        _int_field("max_k", self.max_k, 1)
        _int_field("act_bits", self.act_bits, 2, 32)
        if self.lanes * self.rows > MAX_MACS_PER_CYCLE:
            raise ValueError(f"lanes × rows = {self.lanes} × {self.rows} = {self.lanes * self.rows} exceeds "
                             f"the generator limit of {MAX_MACS_PER_CYCLE} MACs per cycle")
        depth = ceil_log2(self.lanes)
        if self.tree_stages is None:
            object.__setattr__(self, "tree_stages", depth)
        _int_field(f"tree_stages (lanes={self.lanes} gives a {depth}-level tree)", self.tree_stages, 0, depth)
        needed = ternary_accumulator_width(self.max_k, self.act_bits)
        if self.acc_width is None:
            object.__setattr__(self, "acc_width", needed)
        _int_field("acc_width", self.acc_width, 1, 64)
        if self.acc_width < needed:
            lo, hi = ternary_accumulator_range(self.max_k, self.act_bits)
            raise ValueError(f"acc_width={self.acc_width} is too narrow for max_k={self.max_k} with "
                             f"{self.act_bits}-bit activations: the sum spans [{lo}, {hi}] and needs "
                             f"{needed} bits")
        for name in ("lanes", "rows", "max_k", "act_bits", "tree_stages", "acc_width"):
            object.__setattr__(self, name, int(getattr(self, name)))

    # -- structure ---------------------------------------------------------------------------------------

    @property
    def tree_depth(self) -> int:
        """Adder levels in each row's reduction tree."""
        return ceil_log2(self.lanes)

    @property
    def registered_levels(self) -> tuple[int, ...]:
        """Tree levels (1-based) followed by a register; ``tree_stages`` of them, spread evenly, the last
        level always registered when any is."""
        d, s = self.tree_depth, self.tree_stages
        return tuple(lv for lv in range(1, d + 1) if (lv * s) // d > ((lv - 1) * s) // d) if d else ()

    @property
    def latency(self) -> int:
        """Cycles from an input handshake to the cycle its result can hand off: operand register,
        ``tree_stages`` tree registers, output register."""
        return self.tree_stages + 2

    @property
    def macs_per_cycle(self) -> int:
        return self.lanes * self.rows

    def product_range(self) -> tuple[int, int]:
        lo, _ = signed_range(self.act_bits)
        return lo, -lo

    def level_width(self, level: int) -> int:
        """Signed width of a node at tree ``level`` (0 = lane products)."""
        lo, hi = self.product_range()
        n = min(1 << level, self.lanes)
        return signed_width(lo * n, hi * n)

    @property
    def module_name(self) -> str:
        """Verilog module name: every parameter that changes the netlist appears in it."""
        return (f"ternary_mac_l{self.lanes}_r{self.rows}_k{self.max_k}_a{self.act_bits}"
                f"_t{self.tree_stages}_w{self.acc_width}")

    # -- I/O contract -----------------------------------------------------------------------------------

    @property
    def operand_layout(self) -> PayloadLayout:
        """``act[lanes]`` (signed), ``weight[rows][lanes]`` (2-bit codes), ``last``."""
        return PayloadLayout.sequential(
            ("act", self.act_bits, True, (self.lanes,)),
            ("weight", 2, True, (self.rows, self.lanes)),
            ("last", 1, False, ()),
        )

    @property
    def result_layout(self) -> PayloadLayout:
        """``acc[rows]``, signed ``acc_width`` bits each."""
        return PayloadLayout.sequential(("acc", self.acc_width, True, (self.rows,)))

    #: 2-bit weight code → the weight the RTL applies. Two's complement, so bit 1 is "negate" and bit 0
    #: "non-zero"; the unused code 0b10 decodes as 0 (drivers must not send it).
    WEIGHT_CODES: ClassVar[dict[int, int]] = {0b00: 0, 0b01: +1, 0b11: -1, 0b10: 0}
    WEIGHT_CODES_VALID: ClassVar[frozenset[int]] = frozenset({0b00, 0b01, 0b11})

    def check_problem(self, m: int, k: int, tokens: int) -> None:
        """Refuse a problem this engine cannot run, naming the value."""
        for name, v in (("M (output rows)", m), ("K (reduction length)", k), ("tokens", tokens)):
            _int_field(name, v, 1)
        if k > self.max_k:
            raise ValueError(f"K={k} exceeds max_k={self.max_k} of this engine (its {self.acc_width}-bit "
                             f"accumulators could overflow); regenerate with max_k >= {k}")

    def beats_per_reduction(self, k: int) -> int:
        return ceil_div(k, self.lanes)

    def row_blocks(self, m: int) -> int:
        return ceil_div(m, self.rows)

    def n_beats(self, m: int, k: int, tokens: int = 1) -> int:
        """Operand beats for ``W[m, k] · X[tokens, k]ᵀ``: K padded to lanes, M padded to rows."""
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

    def operand_beats(self, weight_codes: np.ndarray, act_codes: np.ndarray) -> dict[str, np.ndarray]:
        """Materialise the beats of ``weight_codes[m, k] · act_codes[tokens, k]ᵀ`` as field arrays.

        Padding lanes carry activation 0 and weight 0; padding rows carry weight 0 (their results are
        discarded by :meth:`collect_results`).
        """
        m, k = weight_codes.shape
        tokens = act_codes.shape[0]
        sched = self.schedule(m, k, tokens)
        L, R = self.lanes, self.rows
        nk = self.beats_per_reduction(k)
        x_pad = np.zeros((tokens, nk * L), np.int64)
        x_pad[:, :k] = act_codes
        w_pad = np.zeros((self.row_blocks(m) * R, nk * L), np.int64)
        w_pad[:m, :k] = weight_codes
        act = x_pad.reshape(tokens, nk, L)[sched.token, sched.k_chunk]
        weight = w_pad.reshape(-1, R, nk, L)[sched.row_block, :, sched.k_chunk, :]
        return {"act": act, "weight": weight, "last": sched.last.astype(np.int64)}

    def collect_results(self, acc_beats: np.ndarray, m: int, k: int, tokens: int = 1) -> np.ndarray:
        """Result beats ``[n_results, rows]`` in stream order → accumulators ``[tokens, m]``."""
        nb = self.row_blocks(m)
        expected = nb * tokens
        if acc_beats.shape != (expected, self.rows):
            raise ValueError(f"expected {expected} result beats of {self.rows} accumulators, "
                             f"got an array of shape {acc_beats.shape}")
        # Result beats come in (row block, token) order.
        acc = acc_beats.reshape(nb, tokens, self.rows).transpose(1, 0, 2).reshape(tokens, nb * self.rows)
        return acc[:, :m]


UNIT_PARAMS: dict[UnitKind, type[UnitParams]] = {
    UnitKind.TERNARY_MAC: TernaryMacParams,
}


def params_for_unit(name: str) -> type[UnitParams]:
    """The parameter class of a unit given by its command-line name."""
    kind = UnitKind.parse(name)
    try:
        return UNIT_PARAMS[kind]
    except KeyError:
        have = ", ".join(k.value for k in UNIT_PARAMS)
        raise ValueError(f"unit {name!r} has no generator yet; available: {have}") from None
