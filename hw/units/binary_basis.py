"""The binary-basis unit: adder-only sums of activations under binary bases (QBB) or BiLLM's groups."""

from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import numpy as np

from hw.layout import Code, PayloadLayout, field
from models.analysis import BILLM_BLOCK
from models.intops import signed_range, signed_width
from models.units import UnitKind

from . import datapath
from .base import _acc_check, _choice, _in_range, _in_set, _int_field
from .channels import Channel
from .stream import EngineParams

__all__ = ["BinaryBasisParams", "BILLM_GROUPS", "BILLM_BLOCK"]

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

    Operands (:meth:`operand_beats`): ``"bases"``: ``weights`` ``[N, M, K]`` in ±1. ``"billm"``: ``weights``
    ``[3, M, K]`` = (group 0/1/2, sign ±1, second sign ±1 — only read in the salient group). ``acts`` ``[T, K]``
    signed. ``extra``: the fixed-point scales ``alpha`` ``[N, M]`` when ``scale_bits`` > 0, else None.
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

    @property
    def reduction_block(self) -> int | None:
        """BiLLM closes its sums every :data:`BILLM_BLOCK` columns (each block has its own group means and scales);
        bases mode reduces whole rows."""
        return BILLM_BLOCK if self.mode == "billm" else None

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

    @cached_property
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

    @cached_property
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

    # -- operands --------------------------------------------------------------------------------------------

    def _check_weights(self, weights):
        if weights.ndim != 3 or weights.shape[0] != self.weight_planes():
            raise ValueError(f"binary-basis ({self.mode}) weights must be [{self.weight_planes()}, M, K], not "
                             f"{weights.shape}")
        if self.mode == "bases":
            _in_set("binary-basis bases", weights, (-1, 1))
        else:
            _in_set("billm groups (0 concentrated, 1 sparse, 2 salient)", weights[0], (0, 1, 2))
            _in_set("billm signs", weights[1:], (-1, 1))

    def _check_acts(self, acts):
        _in_range(f"{self.act_bits}-bit activations", acts, *signed_range(self.act_bits))

    def _check_extra(self, weights, extra):
        alpha = extra
        if self.scale_bits:
            if alpha is None:
                raise ValueError(f"scale_bits={self.scale_bits} needs alpha [n_bases, M]")
            alpha = np.asarray(alpha)
            if alpha.shape != (self.n_bases, weights.shape[1]):
                raise ValueError(f"alpha must be [{self.n_bases}, {weights.shape[1]}], not {alpha.shape}")
            _in_range(f"{self.scale_bits}-bit scales alpha", alpha, *signed_range(self.scale_bits))
        elif alpha is not None:
            raise ValueError("alpha is only read by an engine with scale_bits > 0")

    def _weight_side(self, weights, extra):
        if self.mode == "billm":
            return {"group": weights[0], "sign": (weights[1] > 0).astype(np.int64),
                    "sign2": (weights[2] > 0).astype(np.int64)}
        side = {"bases": (weights > 0).astype(np.int64)}
        if self.scale_bits:
            side["alpha"] = np.asarray(extra, np.int64)
        return side

    def _weights_from_side(self, side):
        if self.mode == "billm":
            return np.stack([side["group"], 2 * side["sign"] - 1, 2 * side["sign2"] - 1]), None
        return 2 * side["bases"] - 1, side.get("alpha")

    def finish(self, acc, extra=None):
        if self.mode == "bases":
            sums = np.stack([2 * acc[f"p{i}"] - acc["total"][:, None] for i in range(self.n_bases)], axis=1)
            out = {"sums": sums}
            if self.scale_bits:
                out["y"] = (extra["alpha"] * sums).sum(1)
            return out
        sums = [2 * acc[f"p_{g}"] - acc[f"m_{g}"] for g in BILLM_GROUPS]
        sums.append(2 * acc["p_salient_o2"] - acc["m_salient"])
        return {"sums": np.stack(sums, axis=1), "means": np.stack([acc[f"m_{g}"] for g in BILLM_GROUPS], axis=1)}

    # -- simulator ------------------------------------------------------------------------------------------

    def contributions(self, weights, acts):
        weights, acts = np.asarray(weights), np.asarray(acts)
        m = weights.shape[-2]
        x_max = 1 << (self.act_bits - 1)
        if self.mode == "bases":
            out = {f"p{i}": datapath.per_beat(self, (weights[i] > 0).astype(np.int64), acts, x_max)
                   for i in range(self.n_bases)}
            out["total"] = datapath.per_beat_shared(self, m, acts)
            return out
        group, s1, s2 = weights[0], weights[1] > 0, weights[2] > 0
        out = {}
        for gi, name in enumerate(BILLM_GROUPS):
            mask = (group == gi)
            out[f"p_{name}"] = datapath.per_beat(self, (mask & s1).astype(np.int64), acts, x_max)
            out[f"m_{name}"] = datapath.per_beat(self, mask.astype(np.int64), acts, x_max)
        out["p_salient_o2"] = datapath.per_beat(self, ((group == 2) & s2).astype(np.int64), acts, x_max)
        return out

    def random_operands(self, rng, m, k, n):
        lo, hi = signed_range(self.act_bits)
        if self.mode == "billm":
            w = np.stack([rng.integers(0, 3, (n, k)), rng.choice([-1, 1], (n, k)), rng.choice([-1, 1], (n, k))])
        else:
            w = rng.choice([-1, 1], (self.n_bases, n, k))
        x = rng.integers(lo, hi + 1, (m, k))
        alpha = rng.integers(*signed_range(self.scale_bits), (self.n_bases, n), endpoint=True) \
            if self.scale_bits else None
        return w, x, alpha

    def check_fits(self, op):
        super().check_fits(op)
        self._check_act_fits(op)
        billm = op.weight_layout == "billm"
        if billm != (self.mode == "billm"):
            raise ValueError(f"{op.name}: needs a binary-basis engine in {'billm' if billm else 'bases'} mode, the "
                             f"design's is in {self.mode!r} mode")
        if self.mode == "bases" and op.b_bits > self.n_bases:
            raise ValueError(f"{op.name}: {op.b_bits} binary bases exceed the binary-basis engine's "
                             f"n_bases={self.n_bases}")

    def lane_events(self, rows_total):
        ev = Counter()
        if self.lut_group:
            mu = self.lut_group
            groups = self.lanes // mu
            # the table of 2^μ partial sums per group of μ lanes: 2^μ − 1 − μ adds (μ entries are single lanes)
            ev[("int_add", self.act_bits + mu)] += groups * ((1 << mu) - 1 - mu) * max(1, rows_total // self.rows)
        else:
            planes = sum(1 for c in self.channels() if c.per_row)    # the sign-gated sums (BiLLM: and mask sums)
            ev[("gate", "and")] += planes * rows_total * self.lanes * self.act_bits
        return ev

    def _result_arithmetic(self, rows_total):
        ev = Counter()
        if self.scale_bits:
            ev[("int_mul", self.scale_bits, self.acc_width)] += self.n_bases * rows_total
        ev[("int_add", self.result_bits)] += len(self.planes) * rows_total     # 2·masked − plain per plane
        return ev
