"""BitNet b1.58 and BitNet v1: quantizers, float reference BitLinears and their integer hardware views.

Semantics are those of the official code (microsoft/BitNet ``gpu/model.py`` and
``gpu/convert_checkpoint.py``; ../shared/docs/quantization.md §1.3), which is the default:

* weights, per tensor: ``s_w = 1 / clamp(mean|W|, 1e-5)``, ``W_t = clamp(round(W·s_w), -1, 1)``;
* activations, per token (last dimension): ``s_x = 127 / clamp(max|x|, 1e-5)``,
  ``x_q = clamp(round(x·s_x), -128, 127)``;
* output: ``y = (W_t·x_q) / s_x · (1/s_w)``, the order of the official int8×int2 kernel.

``round`` is ``torch.round``: round half to even. The paper variant (``variant="paper"``) divides the
weights by ``mean|W| + 1e-5`` instead of multiplying by the reciprocal of the clamped mean, and scales
activations by ``Q_b = 128`` instead of 127; its ``Clip(·, -Q_b+ε, Q_b-ε)`` is read as the int8 range
[-128, 127] after rounding, the only reading that fits 8 bits.
"""

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .quant import ZeroPolicy, quantize_per_token, sign, straight_through
from .units import UnitKind
from .validate import check_finite, check_matrix
from .views import IntPass, LinearView

__all__ = [
    "ACT_BITS",
    "WEIGHT_BITS",
    "TernaryWeights",
    "Int8Activations",
    "quantize_weights",
    "quantize_activations",
    "BitLinear158",
    "linear_view",
    "ternary_accumulate",
    "V1_QB",
    "BinaryWeightsV1",
    "quantize_weights_v1",
    "quantize_activations_v1",
    "BitLinearV1",
    "linear_view_v1",
]

Variant = Literal["code", "paper"]

#: Activation width of the integer view.
ACT_BITS = 8
#: Storage width of one ternary weight code.
WEIGHT_BITS = 2
_EPS = 1e-5


def _check_variant(variant: str) -> None:
    if variant not in ("code", "paper"):
        raise ValueError(f"variant must be 'code' or 'paper', not {variant!r}")


@dataclass(frozen=True)
class TernaryWeights:
    """Ternary weight codes and their per-tensor quantization multiplier.

    ``codes`` (int8, values in {-1, 0, +1}) approximate ``W·s``, so ``W ≈ codes / s``.
    """

    codes: torch.Tensor
    s: torch.Tensor

    def dequantized(self, dtype=torch.float32) -> torch.Tensor:
        """``codes / s``: the fake-quantized weight the float reference multiplies with."""
        return self.codes.to(dtype) / self.s.to(dtype)


@dataclass(frozen=True)
class Int8Activations:
    """Int8 activation codes and their per-token multiplier ``s`` (shape ``[..., 1]``): ``x ≈ codes / s``."""

    codes: torch.Tensor
    s: torch.Tensor

    def dequantized(self, dtype=torch.float32) -> torch.Tensor:
        return self.codes.to(dtype) / self.s.to(dtype)


def quantize_weights(weight: torch.Tensor, *, variant: Variant = "code") -> TernaryWeights:
    """Absmean ternary quantization of a whole weight tensor (b1.58)."""
    _check_variant(variant)
    check_finite("weight", weight)
    w = weight.detach()
    if variant == "code":
        s = 1.0 / w.abs().mean().clamp(min=_EPS)
        scaled = w * s
    else:
        gamma = w.abs().mean()
        s = 1.0 / (gamma + _EPS)
        scaled = w / (gamma + _EPS)
    codes = scaled.round().clamp(-1, 1).to(torch.int8)
    return TernaryWeights(codes=codes, s=s)


def quantize_activations(x: torch.Tensor, *, variant: Variant = "code") -> Int8Activations:
    """Per-token absmax int8 quantization over the last dimension (b1.58): the official code's
    ``127 / clamp(max|x|, 1e-5)`` (``models.quant.quantize_per_token`` at 8 bits), or the paper's ``Q_b = 128``."""
    _check_variant(variant)
    if variant == "code":
        q = quantize_per_token(x, 8)
        return Int8Activations(codes=q.codes, s=q.s)
    check_finite("activations", x)
    x = x.detach()
    s = 128.0 / x.abs().amax(dim=-1, keepdim=True).clamp(min=_EPS)
    codes = (x * s).round().clamp(-128, 127).to(torch.int8)
    return Int8Activations(codes=codes, s=s)


class BitLinear158(nn.Linear):
    """Float reference BitLinear: fake-quantized activations times fake-quantized weights.

    This is the official fallback path (``BitLinear`` in gpu/model.py) with the weights of
    ``quant_weight_fp16`` in gpu/convert_checkpoint.py: both operands are quantized and divided back
    by their multipliers, and the product is an ordinary ``F.linear`` in the input dtype.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False, *, variant: Variant = "code",
                 device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        _check_variant(variant)
        self.variant = variant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Straight-through estimators (as BitNet trains): the forward values are the quantized ones exactly,
        # the gradient flows to the latent float tensors unchanged.
        xq = straight_through(x, quantize_activations(x, variant=self.variant).dequantized(x.dtype))
        wq = straight_through(self.weight, quantize_weights(self.weight, variant=self.variant).dequantized(x.dtype))
        return F.linear(xq, wq, self.bias)


def ternary_accumulate(weight_codes: np.ndarray, act_codes: np.ndarray) -> np.ndarray:
    """Reference accumulators ``acc[t, o] = Σ_j act[t, j]·w[o, j]`` in int64, exact for any K."""
    return act_codes.astype(np.int64) @ weight_codes.astype(np.int64).T


def linear_view(weight: torch.Tensor, x: torch.Tensor, *, bias: torch.Tensor | None = None,
                variant: Variant = "code") -> LinearView:
    """Integer view of a b1.58 BitLinear on ``x`` ``[tokens, in]``: one ternary × int8 pass, then
    ``acc / s_x · (1/s_w) (+ bias)`` in float32, the order of the official int8×int2 kernel."""
    check_matrix("weight", weight)
    check_matrix("x", x, columns=weight.shape[1])
    wq = quantize_weights(weight.float(), variant=variant)
    xq = quantize_activations(x.float(), variant=variant)
    s_x = xq.s.to(torch.float32)                          # [tokens, 1]
    w_scale = 1.0 / wq.s.to(torch.float32)
    b = None if bias is None else bias.detach().float()

    def rescale(acc):
        y = torch.from_numpy(np.asarray(acc["main"], np.int64)).to(torch.float32) / s_x * w_scale
        return (y if b is None else y + b).numpy()

    main = IntPass("main", UnitKind.TERNARY_MAC, wq.codes.numpy(), xq.codes.numpy(), WEIGHT_BITS, ACT_BITS,
                   weight_range=(-1, 1))
    return LinearView("bitnet-b1.58", UnitKind.TERNARY_MAC, (main,), rescale, weight.shape[1], weight.shape[0],
                      x.shape[0])


# -- BitNet v1 (arXiv 2310.11453) -------------------------------------------------------------------------

#: Q_b of the v1 paper for 8-bit activations.
V1_QB = 128


@dataclass(frozen=True)
class BinaryWeightsV1:
    """±1 weight codes ``Sign(W − mean W)`` and ``beta = mean|W|``: ``W ≈ beta · codes``."""

    codes: torch.Tensor
    beta: torch.Tensor


def quantize_weights_v1(weight: torch.Tensor, *, zero_policy: ZeroPolicy = "neg") -> BinaryWeightsV1:
    """BitNet v1 weight binarization (paper; no official code exists): centre by the tensor mean, take the
    sign (the paper's Sign is +1 iff > 0, so ``zero_policy="neg"``), scale by the mean |W| of the
    un-centred tensor."""
    check_finite("weight", weight)
    w = weight.detach()
    codes = sign(w - w.mean(), zero_policy).to(torch.int8)
    return BinaryWeightsV1(codes=codes, beta=w.abs().mean())


def quantize_activations_v1(x: torch.Tensor, *, bits: int = 8) -> Int8Activations:
    """BitNet v1 absmax activations, per token: ``x·Q_b/γ`` rounded and clipped to ``[-(Q_b-1), Q_b-1]``.

    The paper clips to ``(-Q_b+ε, Q_b-ε)`` and writes no rounding; every implementation rounds, and the
    clip keeps the code inside ``bits`` signed bits. ``s = Q_b/γ`` is returned as the multiplier.
    """
    check_finite("activations", x)
    qb = 2 ** (bits - 1)
    gamma = x.detach().abs().amax(dim=-1, keepdim=True).clamp(min=_EPS)
    s = qb / gamma
    codes = (x.detach() * s).round().clamp(-(qb - 1), qb - 1).to(torch.int8 if bits <= 8 else torch.int16)
    return Int8Activations(codes=codes, s=s)


class BitLinearV1(nn.Linear):
    """Float reference of BitNet v1's BitLinear: SubLN (LayerNorm without affine), absmax 8-bit activations,
    binarized weights, output ``(W̃·x̃)·β·γ/Q_b``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False, *, zero_policy: ZeroPolicy = "neg",
                 ln_eps: float = 1e-5, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.zero_policy = zero_policy
        self.ln_eps = ln_eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x, (x.shape[-1],), eps=self.ln_eps)
        xq = straight_through(x, quantize_activations_v1(x).dequantized(x.dtype))
        wq = quantize_weights_v1(self.weight, zero_policy=self.zero_policy)
        w = straight_through(self.weight, wq.codes.to(x.dtype) * wq.beta.to(x.dtype))
        return F.linear(xq, w, self.bias)


def linear_view_v1(weight: torch.Tensor, x: torch.Tensor, *, bias: torch.Tensor | None = None,
                   zero_policy: ZeroPolicy = "neg", ln_eps: float = 1e-5) -> LinearView:
    """Integer view of :class:`BitLinearV1`: SubLN and quantization before, one ±1 × int8 pass, then
    ``acc / s_x · β``. ``x`` is the BitLinear input (before SubLN)."""
    check_matrix("weight", weight)
    check_matrix("x", x, columns=weight.shape[1])
    x_ln = F.layer_norm(x.float(), (x.shape[-1],), eps=ln_eps)
    xq = quantize_activations_v1(x_ln)
    wq = quantize_weights_v1(weight.float(), zero_policy=zero_policy)
    s_x = xq.s.to(torch.float32)
    beta = wq.beta.to(torch.float32)
    b = None if bias is None else bias.detach().float()

    def rescale(acc):
        y = torch.from_numpy(np.asarray(acc["main"], np.int64)).to(torch.float32) / s_x * beta
        return (y if b is None else y + b).numpy()

    unit = UnitKind.TERNARY_MAC       # ±1 × int8: add/sub, the ternary engine without zero codes
    main = IntPass("main", unit, wq.codes.numpy(), xq.codes.numpy(), 2, ACT_BITS, weight_range=(-1, 1),
                   act_range=(-(V1_QB - 1), V1_QB - 1))
    return LinearView("bitnet-v1", unit, (main,), rescale, weight.shape[1], weight.shape[0], x.shape[0],
                      notes="SubLN (LayerNorm without affine) runs before the quantizer as vector work")
