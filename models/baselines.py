"""The int8 baseline every report compares the low-bit schemes with: W8A8 linears.

Weights: per output row, symmetric, ``s_w = 127 / max|W_r|``; activations: per token, ``s_x = 127 / max|x_t|``
(both clamped at 1e-5 like b1.58's quantizer, rounded half to even). ``y = acc / (s_x · s_w)``.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .quant import quantize_per_token, straight_through
from .units import UnitKind
from .validate import check_finite, check_matrix
from .views import IntPass, LinearView

__all__ = ["quantize_rows_int8", "quantize_tokens_int8", "Int8Linear", "linear_view"]

_EPS = 1e-5


def quantize_rows_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row symmetric int8 codes and multipliers ``s_w`` ``[out, 1]``: ``W ≈ codes / s_w``."""
    check_finite("weight", weight)
    s = 127.0 / weight.detach().abs().amax(dim=1, keepdim=True).clamp(min=_EPS)
    return (weight.detach() * s).round().clamp(-127, 127).to(torch.int8), s


def quantize_tokens_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token symmetric int8 codes and multipliers ``s_x`` ``[tokens, 1]`` (``quantize_per_token``)."""
    q = quantize_per_token(x, 8)
    return q.codes, q.s


class Int8Linear(nn.Linear):
    """Float reference of the W8A8 baseline (fake-quantized operands, ``F.linear``)."""

    def forward(self, x):
        wc, sw = quantize_rows_int8(self.weight)
        xc, sx = quantize_tokens_int8(x)
        xq = straight_through(x, xc.to(x.dtype) / sx)
        wq = straight_through(self.weight, wc.to(x.dtype) / sw)
        return F.linear(xq, wq, self.bias)


def linear_view(weight: torch.Tensor, x: torch.Tensor, *, bias: torch.Tensor | None = None) -> LinearView:
    """One int8 × int8 pass, then ``acc / s_x / s_w (+ bias)``."""
    check_matrix("weight", weight)
    check_matrix("x", x, columns=weight.shape[1])
    wc, sw = quantize_rows_int8(weight.float())
    xc, sx = quantize_tokens_int8(x.float())
    b = None if bias is None else bias.detach().float()

    def rescale(acc):
        y = torch.from_numpy(np.asarray(acc["main"], np.int64)).to(torch.float32) / sx / sw[:, 0]
        return (y if b is None else y + b).numpy()

    main = IntPass("main", UnitKind.INT8_MAC, wc.numpy(), xc.numpy(), 8, 8, weight_range=(-127, 127),
                   act_range=(-127, 127))
    return LinearView("int8", UnitKind.INT8_MAC, (main,), rescale, weight.shape[1], weight.shape[0], x.shape[0])
