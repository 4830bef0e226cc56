"""The BAMM unit: BiBERT's attention bits × value signs."""

from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import numpy as np

from hw.layout import PayloadLayout, field
from models.intops import signed_width
from models.units import UnitKind

from . import datapath
from .base import _choice, _in_set
from .channels import Channel
from .stream import EngineParams

__all__ = ["BammParams"]


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

    #: The ``sign`` output of a zero count under each zero policy (``models.quant.sign``'s ``sign(0)``).
    ZERO_SIGNS: ClassVar[dict[str, int]] = {"torch": 0, "pos": 1, "neg": -1}

    def _validate(self):
        _choice("identity", self.identity, ("and", "xnor"))
        _choice("zero_policy", self.zero_policy, tuple(self.ZERO_SIGNS))

    @property
    def zero_sign(self) -> int:
        """The ``sign`` of a zero count (:data:`ZERO_SIGNS` of the zero policy)."""
        return self.ZERO_SIGNS[self.zero_policy]

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

    @cached_property
    def operand_layout(self) -> PayloadLayout:
        specs = [field("a", 1, "unsigned", "activation", {"lane": self.lanes}),
                 field("v", 1, "bit_pm1", "weight", {"row": self.rows, "lane": self.lanes})]
        if self.identity == "xnor":
            specs.append(field("n_valid", self.count_bits, "unsigned", "valid_lanes"))
        specs.append(field("last", 1, "unsigned", "last"))
        return self._operands(*specs)

    @cached_property
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
            "sign": f"+1, -1, and {self.zero_sign} for a zero count (zero_policy {self.zero_policy})",
        }
        if self.identity == "xnor":
            notes["n_valid"] = "keys of this beat that are not padding"
        return notes

    # -- operands: ``weights`` = values [M=d_h, K=keys] in ±1 (transposed V), ``acts`` = bits [T=queries, K] ------

    def _check_weights(self, weights):
        _in_set("bamm values", weights, (-1, 1))       # a zero sign of V needs zero_policy pos or neg upstream

    def _check_acts(self, acts):
        _in_set("bamm attention bits", acts, (0, 1))

    def _weight_side(self, weights, extra):
        return {"v": (weights > 0).astype(np.int64)}

    def _weights_from_side(self, side):
        return 2 * side["v"] - 1, None

    def finish(self, acc, extra=None):
        if self.identity == "and":
            count = 2 * acc["and"] - acc["a"][:, None]
        else:
            count = acc["xnor"] + acc["v"] - acc["n"][:, None]
        return {"count": count, "sign": np.where(count > 0, 1, np.where(count < 0, -1, self.zero_sign))}

    # -- simulator ------------------------------------------------------------------------------------------

    def contributions(self, weights, acts):
        weights, acts = np.asarray(weights), np.asarray(acts)
        m, k = weights.shape[-2:]
        t = acts.shape[0]
        vbits = (weights > 0).astype(np.int64)                     # v' = bit(v = +1)
        and_ = datapath.per_beat(self, vbits, acts, 1)
        a_cnt = datapath.per_beat_shared(self, m, acts)
        if self.identity == "and":
            return {"and": and_, "a": a_cnt}
        v_cnt = datapath.per_beat_rows_only(self, vbits, t)
        n = datapath.valid_lanes(self, m, k, t)
        # XNOR(a, v') over the valid lanes = a·v' + (1−a)(1−v') = 2·a·v' − a − v' + 1
        return {"xnor": 2 * and_ - a_cnt[:, None] - v_cnt + n[:, None], "v": v_cnt, "n": n}

    def random_operands(self, rng, m, k, n):
        return rng.choice([-1, 1], (n, k)), rng.integers(0, 2, (m, k)), None

    def lane_events(self, rows_total):
        return Counter({("gate", "and" if self.identity == "and" else "xnor"): rows_total * self.lanes})

    def _result_arithmetic(self, rows_total):
        return Counter({("int_add", self.result_bits): rows_total})          # the count from its popcounts
