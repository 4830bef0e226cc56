"""BitNet b1.58: quantizers, the float reference BitLinear and its integer hardware view.

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

from .intops import ternary_accumulator_width
from .units import UnitKind
from .validate import check_finite, check_matrix

__all__ = [
    "ACT_BITS",
    "WEIGHT_BITS",
    "TernaryWeights",
    "Int8Activations",
    "quantize_weights",
    "quantize_activations",
    "BitLinear158",
    "TernaryLinearView",
    "integer_view",
    "ternary_accumulate",
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
    """Per-token absmax int8 quantization over the last dimension (b1.58)."""
    _check_variant(variant)
    check_finite("activations", x)
    x = x.detach()
    q_max = 127.0 if variant == "code" else 128.0
    s = q_max / x.abs().amax(dim=-1, keepdim=True).clamp(min=_EPS)
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
        xq = quantize_activations(x, variant=self.variant).dequantized(x.dtype)
        wq = quantize_weights(self.weight, variant=self.variant).dequantized(x.dtype)
        return F.linear(xq, wq, self.bias)


def ternary_accumulate(weight_codes: np.ndarray, act_codes: np.ndarray) -> np.ndarray:
    """Reference accumulators ``acc[t, o] = Σ_j act[t, j]·w[o, j]`` in int64, exact for any K."""
    return act_codes.astype(np.int64) @ weight_codes.astype(np.int64).T


@dataclass(frozen=True)
class TernaryLinearView:
    """Integer hardware view of a b1.58 BitLinear applied to a batch of tokens.

    The engine computes ``acc = act_codes · weight_codesᵀ``; everything else (quantization before,
    rescale after) is full-precision vector work.
    """

    weight_codes: np.ndarray   #: ``[out, in]`` int8 in {-1, 0, +1}
    weight_s: float            #: per-tensor weight multiplier ``s_w``
    act_codes: np.ndarray      #: ``[tokens, in]`` int8
    act_s: np.ndarray          #: ``[tokens]`` float32 per-token multipliers ``s_x``
    unit: UnitKind = UnitKind.TERNARY_MAC
    act_bits: int = ACT_BITS
    weight_bits: int = WEIGHT_BITS

    @property
    def in_features(self) -> int:
        return self.weight_codes.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight_codes.shape[0]

    @property
    def tokens(self) -> int:
        return self.act_codes.shape[0]

    @property
    def acc_width(self) -> int:
        """Signed accumulator width this layer needs (K = ``in_features``)."""
        return ternary_accumulator_width(self.in_features, self.act_bits)

    def accumulate(self) -> np.ndarray:
        """The integer accumulators ``[tokens, out]`` (int64)."""
        return ternary_accumulate(self.weight_codes, self.act_codes)

    def rescale(self, acc: np.ndarray) -> np.ndarray:
        """Float outputs from accumulators: ``acc / s_x · (1/s_w)`` in float32, as the official kernel."""
        acc = torch.from_numpy(np.asarray(acc, dtype=np.int64))
        s_x = torch.from_numpy(self.act_s.astype(np.float32))[:, None]
        w_scale = 1.0 / torch.tensor(self.weight_s, dtype=torch.float32)
        return (acc.to(torch.float32) / s_x * w_scale).numpy()


def integer_view(weight: torch.Tensor, x: torch.Tensor, *, variant: Variant = "code") -> TernaryLinearView:
    """Quantize ``weight`` ``[out, in]`` and ``x`` ``[tokens, in]`` into the b1.58 integer view."""
    check_matrix("weight", weight)
    check_matrix("x", x, columns=weight.shape[1])
    wq = quantize_weights(weight.float(), variant=variant)
    xq = quantize_activations(x.float(), variant=variant)
    return TernaryLinearView(
        weight_codes=wq.codes.numpy(),
        weight_s=float(wq.s),
        act_codes=xq.codes.numpy(),
        act_s=xq.s[:, 0].numpy().astype(np.float32),
    )
