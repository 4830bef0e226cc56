"""The one vector suite of every unit: each level (reference, sim, Amaranth, cocotb) runs the same problems.

A case is a parameter set and a problem shape. Its problem has 1,000 seeded random activation vectors made by
the scheme's own quantizers in ``models`` from float data, plus tie and corner cases, and its expected results
come from ``models`` (the scheme's integer view, or its integer identities), never from ``hw`` or ``sim``:

* ternary-mac — b1.58 quantizer ties (x.5 rounding, the all-zero token, ±max) and raw integer corners (−128,
  which the quantizer never emits, +127, alternating) against all-zero, all-(+1) and all-(−1) weight rows, so the
  accumulators reach ±128·K;
* xnor-popcount — BiBERT's binarizers; tokens equal to, opposite to and half-agreeing with a weight row (dot =
  ±K and the popcount = K/2 tie, where ``strict`` and ``nonstrict`` thresholds differ);
* bamm — attention bits from Bi-Attention on random Q, K and uniform random bits; all-zero and all-one rows and
  balanced selections (count 0, where the zero policy decides the sign);
* binary-basis — QBB's cascaded bases and BiLLM's groups (zero_policy "pos": the bit planes hold ±1) on int8
  activations with −128 and +127 corners; fixed-point scales for ``scale_bits``;
* int8-mac — the W8A8 baseline's quantizers plus −128 corners.
"""

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch

from hw.units import (BammParams, BinaryBasisParams, EngineParams, Int8MacParams, TernaryMacParams,
                      XnorPopcountParams)
from models import baselines, bibert, billm, bitnet, qbb
from models.quant import sign as zero_policy_sign
from models.units import UnitKind
from models.views import IntPass

__all__ = ["UnitCase", "Problem", "CASES", "build_problem"]


@dataclass(frozen=True)
class UnitCase:
    name: str
    params: EngineParams
    m: int
    k: int
    n_random: int = 1000
    seed: int = 0
    source: str = ""            #: which float source the builder uses (e.g. "linear" or "qk" for xnor-popcount)

    def __post_init__(self):
        self.params.check_problem(self.m, self.k, 1)


@dataclass(frozen=True)
class Problem:
    case: UnitCase
    weights: np.ndarray
    acts: np.ndarray
    expected: dict[str, np.ndarray] = field(repr=False)   #: result field → [tokens, ..., M]
    labels: list[str] = field(repr=False)
    alpha: np.ndarray | None = None

    @property
    def tokens(self) -> int:
        return self.acts.shape[0]

    def head(self, n: int) -> "Problem":
        """The first ``n`` tokens (tie cases first)."""
        return replace(self, acts=self.acts[:n], expected={k: v[:n] for k, v in self.expected.items()},
                       labels=self.labels[:n])


def _t(a) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, np.float32))


def _pass(name: str, weights, acts, weight_abs: int) -> np.ndarray:
    """Exact accumulators of an integer pass, through models' own IntPass (which also checks the code ranges)."""
    return IntPass(name, UnitKind.BINARY_BASIS, np.asarray(weights, np.int64), np.asarray(acts, np.int64), 2, 8,
                   weight_range=(-weight_abs, weight_abs), act_range=(-128, 127)).accumulate()


# -- ternary-mac -----------------------------------------------------------------------------------------------

def _ternary_ties(k: int) -> tuple[np.ndarray, list[str]]:
    """Float tokens whose b1.58 quantization hits the tie rules; max|x| = 127 makes s = 1 exactly."""
    rows, labels = [], []
    j = np.arange(k)
    halves = np.where(j % 2 == 0, 1.0, -1.0) * ((j % 126) + 0.5)    # ±0.5, ±1.5, ... → round half to even
    halves[0] = 127.0
    rows.append(halves); labels.append("tie: x.5 rounding")
    rows.append(np.zeros(k)); labels.append("tie: all-zero token (1e-5 clamp)")
    single = np.zeros(k); single[-1] = -3.25
    rows.append(single); labels.append("tie: one non-zero element")
    rows.append(np.where(j % 2 == 0, 1.0, -1.0) * 5.0); labels.append("tie: ±max everywhere")
    return np.stack(rows), labels


def _corners(k: int, lo: int, hi: int) -> tuple[np.ndarray, list[str]]:
    j = np.arange(k)
    return (np.stack([np.full(k, lo), np.full(k, hi), np.where(j % 2 == 0, lo, hi)]),
            [f"corner: all {lo}", f"corner: all {hi:+d}", f"corner: alternating {lo}/{hi:+d}"])


def _ternary(case: UnitCase, rng) -> Problem:
    m, k = case.m, case.k
    w = rng.standard_normal((m, k)).astype(np.float32)
    w[0] = 0.0
    codes = bitnet.quantize_weights(_t(w)).codes.numpy().astype(np.int64)
    codes[1], codes[2] = 1, -1
    ties, tie_labels = _ternary_ties(k)
    x = rng.standard_normal((case.n_random, k)).astype(np.float32)
    x *= rng.choice([0.01, 1.0, 100.0], size=(case.n_random, 1)).astype(np.float32)
    act = bitnet.quantize_activations(_t(np.concatenate([ties, x]))).codes.numpy().astype(np.int64)
    corners, corner_labels = _corners(k, -128, 127)
    acts = np.concatenate([act[:len(tie_labels)], corners, act[len(tie_labels):]])
    labels = tie_labels + corner_labels + [f"random {i}" for i in range(case.n_random)]
    return Problem(case, codes, acts, {"acc": bitnet.ternary_accumulate(codes, acts)}, labels)


# -- xnor-popcount ---------------------------------------------------------------------------------------------

def _xnor(case: UnitCase, rng) -> Problem:
    p: XnorPopcountParams = case.params
    m, k = case.m, case.k
    wf = rng.standard_normal((m, k)).astype(np.float32)
    xf = rng.standard_normal((case.n_random, k)).astype(np.float32)
    if case.source == "qk":
        # QKᵀ: both sides are sign() of real activations (no centring), as Bi-Attention does.
        w_codes = bibert.binarize_activations(_t(wf), zero_policy="pos").codes.numpy().astype(np.int64)
    else:
        w_codes = bibert.binarize_weights(_t(wf), zero_policy="pos").codes.numpy().astype(np.int64)
    row = w_codes[0].astype(np.float32)
    half = row.copy()
    half[k // 2:] *= -1
    ties = np.stack([row, -row, half])
    labels = ["tie: equal to row 0 (dot = K)", "tie: opposite to row 0 (dot = -K)",
              "tie: half agrees with row 0 (popcount = K/2 when K is even)"]
    floats = np.concatenate([ties, xf])
    acts = bibert.binarize_activations(_t(floats), zero_policy="pos").codes.numpy().astype(np.int64)
    if case.source == "qk":
        view = bibert.qk_view(_t(floats), _t(wf), strict=p.threshold != "nonstrict", zero_policy="pos")
        expected = {"dot": [q for q in view.passes if q.name == "qk"][0].accumulate()}
        if p.threshold != "none":
            expected["bit"] = np.asarray(view.output()).astype(np.int64)
    else:
        view = bibert.linear_view(_t(wf), _t(floats), zero_policy="pos")
        expected = {"dot": view.pass_named("main").accumulate()}
        if p.threshold == "strict":
            expected["bit"] = (expected["dot"] > 0).astype(np.int64)
        elif p.threshold == "nonstrict":
            expected["bit"] = (expected["dot"] >= 0).astype(np.int64)
    return Problem(case, w_codes, acts, expected, labels + [f"random {i}" for i in range(case.n_random)])


# -- bamm ------------------------------------------------------------------------------------------------------

def _bamm(case: UnitCase, rng) -> Problem:
    p: BammParams = case.params
    m, k = case.m, case.k                          # m = d_h value columns, k = keys
    v_float = rng.standard_normal((k, m)).astype(np.float32)
    v = bibert.binarize_activations(_t(v_float), zero_policy="pos").codes.numpy().astype(np.int64)   # [keys, d_h]
    half = rng.standard_normal((case.n_random // 2, m)).astype(np.float32)
    keys = rng.standard_normal((k, m)).astype(np.float32)
    attn = bibert.bi_attention(_t(half)[None, None], _t(keys)[None, None], _t(v_float)[None, None]).bits[0, 0]
    uniform = rng.integers(0, 2, (case.n_random - half.shape[0], k))
    balanced = np.zeros(k, np.int64)
    plus, minus = np.flatnonzero(v[:, 0] > 0), np.flatnonzero(v[:, 0] < 0)
    n = min(len(plus), len(minus))
    balanced[plus[:n]] = 1
    balanced[minus[:n]] = 1                        # column 0 sees as many +1 as −1: count 0
    ties = np.stack([np.zeros(k, np.int64), np.ones(k, np.int64), balanced])
    labels = ["tie: no key selected (count 0)", "corner: every key selected", "tie: balanced selection in column 0"]
    bits = np.concatenate([ties, attn.numpy().astype(np.int64), uniform])
    count = bibert.bamm_and(torch.from_numpy(bits), torch.from_numpy(v)).numpy()
    sign = zero_policy_sign(torch.from_numpy(count), p.zero_policy).numpy().astype(np.int64)
    labels += [f"bi-attention {i}" for i in range(half.shape[0])]
    labels += [f"random bits {i}" for i in range(uniform.shape[0])]
    return Problem(case, v.T.copy(), bits, {"count": count, "sign": sign}, labels)


# -- binary-basis ------------------------------------------------------------------------------------------------

def _int8_tokens(case: UnitCase, rng) -> tuple[np.ndarray, list[str]]:
    x = rng.standard_normal((case.n_random, case.k)).astype(np.float32)
    x *= rng.choice([0.01, 1.0, 100.0], size=(case.n_random, 1)).astype(np.float32)
    codes = qbb.quantize_activations(_t(x), act_bits=8).codes.numpy().astype(np.int64)
    corners, labels = _corners(case.k, -128, 127)
    return np.concatenate([corners, codes]), labels + [f"random {i}" for i in range(case.n_random)]


def _binary_basis(case: UnitCase, rng) -> Problem:
    p: BinaryBasisParams = case.params
    m, k = case.m, case.k
    acts, labels = _int8_tokens(case, rng)
    w = rng.standard_normal((m, k)).astype(np.float32)
    if p.mode == "bases":
        q = qbb.qbb_init(_t(w), p.n_bases, zero_policy="pos")
        bases = q.bases.numpy().astype(np.int64)
        bases[:, 0] = -1                           # row 0: every basis −1, so the −128 corner reaches +128·K
        # the QBB view's passes: basis i is an exact ±1 × int8 product
        sums = np.stack([_pass(f"basis{i}", bases[i], acts, 1) for i in range(p.n_bases)], axis=1)
        expected = {"sums": sums}
        alpha = None
        if p.scale_bits:
            # fixed-point scales: alpha_i rounded to scale_bits with the largest power-of-two fraction that fits
            scales = q.scales.numpy()
            frac = p.scale_bits - 2 - int(np.ceil(np.log2(max(np.abs(scales).max(), 1e-12))))
            alpha = np.clip(np.round(scales * 2.0 ** frac), -(2 ** (p.scale_bits - 1)),
                            2 ** (p.scale_bits - 1) - 1).astype(np.int64)
            expected["y"] = (alpha[None] * sums).sum(1)
        return Problem(case, bases, acts, expected, labels, alpha)
    # BiLLM: binarize a layer on its calibration Hessian; the engine's planes are its groups and signs.
    calibration = _t(rng.standard_normal((64, k)))
    acc = billm.HessianAccumulator(k)
    acc.add_batch(calibration)
    bw = billm.billm_quantize(_t(w), acc.hessian, block_size=k, zero_policy="pos")
    groups = bw.groups.numpy().astype(np.int64)
    s1, s2 = bw.signs[0].numpy().astype(np.int64), bw.signs[1].numpy().astype(np.int64)
    s1 = np.where(s1 == 0, 1, s1)                  # zero_policy "pos" leaves none; guard the planes' ±1 contract
    s2 = np.where(s2 == 0, 1, s2)
    masks = [(groups == g).astype(np.int64) for g in range(3)]
    # the BiLLM view's masked sign passes and plain-sum passes (over one block: K <= block size)
    sums = [_pass(f"{g}.sign", masks[g] * s1, acts, 1) for g in range(3)] + [_pass("o2", masks[2] * s2, acts, 1)]
    means = [_pass(f"{g}.sum", masks[g], acts, 1) for g in range(3)]
    return Problem(case, np.stack([groups, s1, s2]), acts,
                   {"sums": np.stack(sums, axis=1), "means": np.stack(means, axis=1)}, labels)


# -- int8-mac ----------------------------------------------------------------------------------------------------

def _int8(case: UnitCase, rng) -> Problem:
    m, k = case.m, case.k
    w = rng.standard_normal((m, k)).astype(np.float32)
    x = rng.standard_normal((case.n_random, k)).astype(np.float32)
    view = baselines.linear_view(_t(w), _t(x))
    main = view.pass_named("main")
    codes = main.weight_codes.astype(np.int64)
    codes[0] = -128                                # the datapath's extremes, beyond the baseline's ±127
    corners, labels = _corners(k, -128, 127)
    acts = np.concatenate([corners, main.act_codes.astype(np.int64)])
    return Problem(case, codes, acts, {"acc": _pass("main", codes, acts, 128)},
                   labels + [f"random {i}" for i in range(x.shape[0])])


#: The problem builder of each unit, by the unit's kind. The builders stay here, not on the unit classes: they
#: draw float data and run the schemes' quantizers in ``models`` (torch) so that the expected values never come
#: from ``hw`` or ``sim`` — test data, which ``hw``, imported by the simulator, must not depend on.
_BUILDERS: dict[UnitKind, Callable] = {UnitKind.TERNARY_MAC: _ternary, UnitKind.XNOR_POPCOUNT: _xnor,
                                       UnitKind.BAMM: _bamm, UnitKind.BINARY_BASIS: _binary_basis,
                                       UnitKind.INT8_MAC: _int8}


def build_problem(case: UnitCase) -> Problem:
    return _BUILDERS[case.params.kind](case, np.random.default_rng(case.seed))


CASES = [
    UnitCase("ternary/odd-k", TernaryMacParams(lanes=8, rows=4, max_k=64), m=10, k=37, seed=1),
    UnitCase("ternary/k-below-lanes", TernaryMacParams(lanes=16, rows=2, max_k=16), m=3, k=5, seed=2),
    UnitCase("ternary/k4096", TernaryMacParams(lanes=64, rows=2, max_k=4096), m=3, k=4096, seed=3),
    UnitCase("ternary/one-lane", TernaryMacParams(lanes=1, rows=1, max_k=8), m=3, k=7, seed=4),
    UnitCase("ternary/lanes-12-one-stage", TernaryMacParams(lanes=12, rows=3, max_k=100, tree_stages=1),
             m=7, k=100, seed=5),
    UnitCase("ternary/flat-tree", TernaryMacParams(lanes=32, rows=2, max_k=300, tree_stages=0), m=3, k=257, seed=6),
    UnitCase("ternary/zero-skip", TernaryMacParams(lanes=8, rows=4, max_k=64, zero_skip=True), m=6, k=45, seed=7),
    UnitCase("xnor/linear-odd-k-strict", XnorPopcountParams(lanes=16, rows=4, max_k=128, threshold="strict"),
             m=6, k=101, seed=11, source="linear"),
    UnitCase("xnor/qk-dh64-nonstrict", XnorPopcountParams(lanes=64, rows=2, max_k=64, threshold="nonstrict"),
             m=3, k=64, seed=12, source="qk"),
    UnitCase("xnor/qk-strict-one-stage", XnorPopcountParams(lanes=32, rows=4, max_k=64, tree_stages=1,
                                                            threshold="strict"), m=5, k=64, seed=13, source="qk"),
    UnitCase("xnor/k-below-lanes", XnorPopcountParams(lanes=32, rows=8, max_k=32, tree_stages=1), m=9, k=7, seed=14,
             source="linear"),
    UnitCase("bamm/and-torch", BammParams(lanes=16, rows=4, max_k=64), m=8, k=37, seed=21),
    UnitCase("bamm/xnor-pos", BammParams(lanes=8, rows=8, max_k=128, identity="xnor", zero_policy="pos"),
             m=8, k=128, seed=22),
    UnitCase("bamm/and-neg-flat", BammParams(lanes=32, rows=2, max_k=32, tree_stages=0, zero_policy="neg"),
             m=3, k=5, seed=23),
    UnitCase("binary-basis/qbb4", BinaryBasisParams(lanes=8, rows=2, max_k=64), m=5, k=40, seed=31),
    UnitCase("binary-basis/qbb2-lut4", BinaryBasisParams(lanes=16, rows=2, max_k=64, n_bases=2, lut_group=4),
             m=3, k=64, seed=32),
    UnitCase("binary-basis/qbb3-scaled", BinaryBasisParams(lanes=8, rows=2, max_k=64, n_bases=3, scale_bits=10),
             m=3, k=33, seed=33),
    UnitCase("binary-basis/billm", BinaryBasisParams(lanes=8, rows=4, max_k=128, mode="billm"), m=6, k=96, seed=34),
    UnitCase("int8/odd", Int8MacParams(lanes=8, rows=4, max_k=64), m=6, k=50, seed=41),
    UnitCase("int8/k300-two-stages", Int8MacParams(lanes=16, rows=2, max_k=300, tree_stages=2), m=4, k=300, seed=42),
]
