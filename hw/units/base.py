"""What every unit parameter class shares: validation helpers, integer helpers, serialisation, and the questions the
simulator, the energy model and the accelerator description ask a unit instead of switching on its type.

Two families implement the protocol of :class:`UnitParams`:

* :class:`StreamUnit` — units fed by operand beats of ``lanes`` reduction elements × ``rows`` output rows: the five
  stream dot-product engines (:class:`hw.units.stream.EngineParams`) and the FP MAC array
  (:class:`hw.units.fp_mac.FpMacParams`). Their tiles are row blocks, their cost is an event inventory per beat.
* :class:`hw.units.systolic.SystolicArrayParams` — an R × C array timed by ``sim.systolic``.
"""

from collections import Counter
from dataclasses import asdict, fields
from typing import ClassVar

import numpy as np

from models.units import UnitKind

__all__ = ["UnitParams", "StreamUnit", "ceil_div", "ceil_log2", "MAX_MACS_PER_CYCLE"]

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
    """Behaviour shared by every unit's parameter dataclass, and the questions the rest of lowbit asks a unit.

    Class attributes every unit sets:

    kind : the unit's name everywhere (:class:`models.units.UnitKind`).
    timing : how the simulator times a matmul on it: ``"stream"`` (tiles of operand beats through
        ``sim.schedule.feeder_schedule``) or ``"systolic"`` (``sim.systolic.gemm``).
    steppable : whether ``sim.engine`` has a cycle-by-cycle kernel of it (the stepped mode); the others are closed
        form in both modes.
    """

    kind: ClassVar[UnitKind]
    timing: ClassVar[str] = "stream"
    steppable: ClassVar[bool] = False

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

    # -- what a design and the simulator ask ------------------------------------------------------------------

    def serves(self, unit) -> bool:
        """Whether an engine of these parameters can run workload operations of ``unit`` (a :class:`UnitKind` or
        its name). A design prefers an engine of the very kind (``Accelerator.engine_for``)."""
        return unit == self.kind

    def check_count(self, count: int, where: str) -> None:
        """Refuse a ``count`` of engines in lockstep this unit cannot have; ``where`` names the design field."""

    @property
    def act_bits(self) -> int:
        """Bits of one activation element a beat carries per lane."""
        raise NotImplementedError

    @property
    def act_format(self) -> str:
        """The memory format of the activation operand (docs/isa.md §2): ``B1`` for one-bit activations, else the
        narrowest of ``I8``/``I16``/``I32`` that holds :attr:`act_bits`."""
        bits = self.act_bits
        return "B1" if bits == 1 else "I8" if bits <= 8 else "I16" if bits <= 16 else "I32"

    @property
    def act_mem_bits(self) -> int:
        """Bits one activation element takes in memory (:attr:`act_format`)."""
        return {"B1": 1, "I8": 8, "I16": 16, "I32": 32}[self.act_format]

    @property
    def weight_bits(self) -> int:
        """Bits of the weight side a beat carries per row and lane."""
        raise NotImplementedError

    @property
    def reduction_block(self) -> int | None:
        """Length of the blocks a reduction is cut into and closed after (BiLLM's 128 columns), None for whole
        reductions."""
        return None

    @property
    def macs_per_cycle(self) -> int:
        raise NotImplementedError

    def check_fits(self, op) -> None:
        """Refuse (``ValueError`` naming the op and the parameter) a workload operation (``models.workload.Op``)
        this engine cannot run."""
        raise NotImplementedError

    def weight_bytes(self, k: int, n: int, count: int = 1) -> int:
        """Bytes of an ``[n, k]`` right operand in the engine's format: what streaming it loads once per pass and
        what a resident copy occupies (``count`` engines in lockstep)."""
        raise NotImplementedError

    def inventory(self, count: int = 1) -> Counter:
        """The hardware one beat of ``count`` engines in lockstep uses, each piece once (the area's inventory):
        ``("int_add", width)``, ``("int_mul", a, b)``, ``("fp_add"|"fp_mul", bits)``, ``("gate", kind)``,
        ``("reg_bits",)``."""
        raise NotImplementedError


class StreamUnit(UnitParams):
    """A unit fed by operand beats, each ``lanes`` reduction elements of one activation vector and the matching
    weights of ``rows`` output rows; ``count`` such units in lockstep act as one ``rows × count`` wide.

    Subclasses are dataclasses with ``lanes`` and ``rows`` fields and a ``latency``.
    """

    lanes: int
    rows: int
    latency: int

    def beat_read_bits(self, count: int = 1) -> tuple[int, int]:
        """Bits read from the buffers for one beat of ``count`` units in lockstep: activations, weights (the payload
        bits; the integer stream engines read their stored activations and their weight-tile beat image,
        :meth:`hw.units.stream.EngineParams.beat_read_bits`)."""
        return self.lanes * self.act_bits, self.rows * count * self.lanes * self.weight_bits

    def beats_per_reduction(self, k: int) -> int:
        """Beats of one reduction over ``k`` elements."""
        return ceil_div(k, self.lanes)

    def row_blocks(self, m: int, count: int = 1) -> int:
        """Row blocks of ``rows × count`` outputs that ``m`` output rows take."""
        return ceil_div(m, self.rows * count)

    def k_chunks(self, k: int) -> int:
        """Beats of one token's reduction over ``k`` elements, each :attr:`reduction_block` closed on its own."""
        block = self.reduction_block
        if block is None:
            return self.beats_per_reduction(k)
        return sum(self.beats_per_reduction(min(block, k - s)) for s in range(0, k, block))

    def reductions(self, k: int) -> int:
        """Results one row and token yields for a reduction over ``k``: one per :attr:`reduction_block`."""
        return 1 if self.reduction_block is None else ceil_div(k, self.reduction_block)

    def weight_bytes(self, k: int, n: int, count: int = 1) -> int:
        """Rows padded to whole row blocks; each block's ``rows × count × k`` weights packed densely."""
        rows_total = self.rows * count
        return self.row_blocks(n, count) * ceil_div(rows_total * k * self.weight_bits, 8)

    @property
    def result_bits(self) -> int:
        """Bits of one output element the engine writes back (its first result field)."""
        raise NotImplementedError

    def lane_events(self, rows_total: int) -> Counter:
        """The lane logic of one beat (gates, multiplies), before the trees, for ``rows_total`` rows."""
        raise NotImplementedError

    def tree_events(self, rows_total: int) -> Counter:
        """Adds (by width) and register bits of one beat through the trees and accumulators."""
        raise NotImplementedError

    def result_events(self, rows_total: int) -> Counter:
        """Events of one result beat: the final-totals and result registers and the result arithmetic."""
        raise NotImplementedError

    def inventory(self, count: int = 1) -> Counter:
        rows = self.rows * count
        inv = Counter()
        for part in (self.lane_events(rows), self.tree_events(rows), self.result_events(rows)):
            inv.update(part)
        return inv


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
