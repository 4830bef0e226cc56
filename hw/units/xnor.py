"""The XNOR-popcount unit: ±1 × ±1 dot products (BiBERT's binary linears and QKᵀ)."""

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

__all__ = ["XnorPopcountParams"]


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

    @cached_property
    def operand_layout(self) -> PayloadLayout:
        return self._operands(
            field("act", 1, "bit_pm1", "activation", {"lane": self.lanes}),
            field("weight", 1, "bit_pm1", "weight", {"row": self.rows, "lane": self.lanes}),
            field("n_valid", self.count_bits, "unsigned", "valid_lanes"),
            field("last", 1, "unsigned", "last"),
        )

    @cached_property
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

    # -- operands: ``weights`` [M, K] and ``acts`` [T, K] in {-1, +1} -------------------------------------------

    def _check_weights(self, weights):
        # sign(0) cannot be a bit: a zero needs zero_policy "pos" or "neg" upstream
        _in_set("xnor-popcount weights", weights, (-1, 1))

    def _check_acts(self, acts):
        _in_set("xnor-popcount activations", acts, (-1, 1))

    def _weight_side(self, weights, extra):
        return {"weight": (weights > 0).astype(np.int64)}

    def _weights_from_side(self, side):
        return 2 * side["weight"] - 1, None

    def finish(self, acc, extra=None):
        dot = 2 * acc["pc"] - acc["n"][:, None]
        out = {"dot": dot}
        if self.threshold == "strict":
            out["bit"] = (dot > 0).astype(np.int64)
        elif self.threshold == "nonstrict":
            out["bit"] = (dot >= 0).astype(np.int64)
        return out

    # -- simulator ------------------------------------------------------------------------------------------

    def contributions(self, weights, acts):
        weights, acts = np.asarray(weights), np.asarray(acts)
        m, k = weights.shape[-2:]
        # ±1 codes: Σ a·w over the valid lanes = 2·popcount(XNOR) − n
        dot = datapath.per_beat(self, weights, acts, 1)
        n = datapath.valid_lanes(self, m, k, acts.shape[0])
        return {"pc": (dot + n[:, None]) // 2, "n": n}

    def random_operands(self, rng, m, k, n):
        return rng.choice([-1, 1], (n, k)), rng.choice([-1, 1], (m, k)), None

    def lane_events(self, rows_total):
        return Counter({("gate", "xnor"): rows_total * self.lanes})

    def _result_arithmetic(self, rows_total):
        return Counter({("int_add", self.result_bits): rows_total})          # dot = 2·pc − n
