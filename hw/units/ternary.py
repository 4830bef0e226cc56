"""The ternary-MAC unit: {-1, 0, +1} weights × signed activations (BitNet b1.58, TernaryBERT)."""

from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import numpy as np

from hw.layout import Code, PayloadLayout, field
from models.intops import signed_range, signed_width
from models.units import UnitKind

from . import datapath
from .base import _acc_check, _in_range, _int_field
from .channels import Channel
from .stream import EngineParams

__all__ = ["TernaryMacParams"]


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

    @cached_property
    def operand_layout(self) -> PayloadLayout:
        """``act[lanes]`` (signed), ``weight[rows][lanes]`` (2-bit codes), ``last``."""
        return self._operands(
            field("act", self.act_bits, "twos_complement", "activation", {"lane": self.lanes}),
            field("weight", 2, "code", "weight", {"row": self.rows, "lane": self.lanes}, codes=self.weight_codes()),
            field("last", 1, "unsigned", "last"),
        )

    @cached_property
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

    # -- operands: ``weights`` [M, K] in {-1, 0, +1}, ``acts`` [T, K] signed; padding carries 0 ----------------

    def _check_weights(self, weights):
        _in_range("ternary weights", weights, -1, 1)

    def _check_acts(self, acts):
        _in_range(f"{self.act_bits}-bit activations", acts, *signed_range(self.act_bits))

    def _weight_side(self, weights, extra):
        return {"weight": weights}

    def _weights_from_side(self, side):
        return side["weight"], None

    def finish(self, acc, extra=None):
        return {"acc": acc["main"] + acc["neg"]}

    # -- simulator ------------------------------------------------------------------------------------------

    def contributions(self, weights, acts):
        weights, acts = np.asarray(weights), np.asarray(acts)
        dot = datapath.per_beat(self, weights, acts, 1 << (self.act_bits - 1))
        neg = datapath.per_beat_rows_only(self, (weights < 0).astype(np.int64), acts.shape[0])
        # lane term: x, ~x = -x-1 for a negative weight (its +1 goes to the neg channel), 0 for a zero weight
        return {"main": dot - neg, "neg": neg}

    def random_operands(self, rng, m, k, n):
        lo, hi = signed_range(self.act_bits)
        return rng.integers(-1, 2, (n, k)), rng.integers(lo, hi + 1, (m, k)), None

    def check_fits(self, op):
        super().check_fits(op)
        self._check_act_fits(op)

    def lane_events(self, rows_total):
        # the lane of TernaryMacEngine: x XOR negate (act_bits gates), AND nonzero (act_bits + 1, the neg bit too)
        return Counter({("gate", "xor"): rows_total * self.lanes * self.act_bits,
                        ("gate", "and"): rows_total * self.lanes * (self.act_bits + 1)})

    def _result_arithmetic(self, rows_total):
        return Counter({("int_add", self.result_bits): rows_total})          # acc = main + neg
