"""The int8-MAC unit: signed × signed multiply-accumulate, the baseline every report compares against."""

from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import numpy as np

from hw.layout import PayloadLayout, field
from models.intops import code_range, signed_range, signed_width
from models.units import UnitKind

from . import datapath
from .base import _acc_check, _in_range, _int_field
from .channels import Channel
from .stream import EngineParams

__all__ = ["Int8MacParams"]


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

    @cached_property
    def operand_layout(self) -> PayloadLayout:
        return self._operands(
            field("act", self.act_bits, "twos_complement", "activation", {"lane": self.lanes}),
            field("weight", self.weight_bits, "twos_complement", "weight", {"row": self.rows, "lane": self.lanes}),
            field("last", 1, "unsigned", "last"),
        )

    @cached_property
    def result_layout(self) -> PayloadLayout:
        return PayloadLayout.sequential(field("acc", self.acc_width, "twos_complement", "result", {"row": self.rows}))

    def encoding_notes(self):
        return {"act": "act[i] is reduction element k_chunk*lanes + i of the token",
                "weight": "weight[r][i] multiplies act[i] for output row row_block*rows + r",
                "acc": "acc[r] = sum of w*x over the reduction"}

    # -- operands: ``weights`` [M, K] and ``acts`` [T, K] signed ---------------------------------------------------

    def _check_weights(self, weights):
        _in_range(f"{self.weight_bits}-bit weights", weights, *signed_range(self.weight_bits))

    def _check_acts(self, acts):
        _in_range(f"{self.act_bits}-bit activations", acts, *signed_range(self.act_bits))

    def _weight_side(self, weights, extra):
        return {"weight": weights}

    def _weights_from_side(self, side):
        return side["weight"], None

    def finish(self, acc, extra=None):
        return {"acc": acc["main"]}

    # -- simulator ------------------------------------------------------------------------------------------

    def contributions(self, weights, acts):
        max_term = (1 << (self.act_bits - 1)) * (1 << (self.weight_bits - 1))
        return {"main": datapath.per_beat(self, np.asarray(weights), np.asarray(acts), max_term)}

    def random_operands(self, rng, m, k, n):
        lo, hi = signed_range(self.act_bits)
        w_lo, w_hi = signed_range(self.weight_bits)
        return rng.integers(w_lo, w_hi + 1, (n, k)), rng.integers(lo, hi + 1, (m, k)), None

    def check_fits(self, op):
        super().check_fits(op)
        self._check_act_fits(op)
        if op.b_bits > self.weight_bits:
            raise ValueError(f"{op.name}: {op.b_bits}-bit weights exceed the int8-mac engine's "
                             f"weight_bits={self.weight_bits}")

    def lane_events(self, rows_total):
        return Counter({("int_mul", self.act_bits, self.weight_bits): rows_total * self.lanes})
