"""Quantization primitives shared by every scheme: sign with an explicit zero policy, rounding and the
straight-through estimators used in training.

``sign(0)`` differs between the official code paths and the papers (quantization.md §0): ``torch.sign``
gives 0, BitNet v1's paper maps 0 to −1, BiLLM's paper maps 0 to +1. Every function that takes a sign
accepts ``zero_policy`` so the choice is explicit, and :func:`count_zeros` says how often it matters.
"""

from typing import Literal

from dataclasses import dataclass

import torch

from .validate import check_finite

__all__ = ["ZeroPolicy", "ZERO_POLICIES", "sign", "count_zeros", "check_zero_policy", "SignSTE", "sign_ste",
           "round_ste", "clip_ste", "straight_through", "IntCodes", "quantize_per_token", "ABSMAX_EPS"]

ZeroPolicy = Literal["torch", "pos", "neg"]
#: ``torch``: sign(0) = 0 (what the official PyTorch code does); ``pos``: +1; ``neg``: −1.
ZERO_POLICIES = ("torch", "pos", "neg")


def check_zero_policy(zero_policy: str) -> None:
    if zero_policy not in ZERO_POLICIES:
        raise ValueError(f"zero_policy must be one of {', '.join(ZERO_POLICIES)}, not {zero_policy!r}")


def sign(x: torch.Tensor, zero_policy: ZeroPolicy = "torch") -> torch.Tensor:
    """Sign of ``x`` in x's dtype, with ``sign(0)`` chosen by ``zero_policy``."""
    check_zero_policy(zero_policy)
    s = torch.sign(x)
    if zero_policy == "pos":
        s = torch.where(x == 0, torch.ones_like(s), s)
    elif zero_policy == "neg":
        s = torch.where(x == 0, -torch.ones_like(s), s)
    return s


def count_zeros(x: torch.Tensor) -> int:
    """How many elements of ``x`` are exactly zero (where the zero policy changes the result)."""
    return int((x == 0).sum())


class SignSTE(torch.autograd.Function):
    """Forward ``sign`` (with a zero policy); backward passes the gradient where ``|x| <= 1`` (the clipped
    straight-through estimator of BinaryConnect/BiBERT)."""

    @staticmethod
    def forward(ctx, x, zero_policy="torch"):
        ctx.save_for_backward(x)
        return sign(x, zero_policy)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype), None


def sign_ste(x: torch.Tensor, zero_policy: ZeroPolicy = "torch") -> torch.Tensor:
    return SignSTE.apply(x, zero_policy)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``torch.round`` (half to even) forward, identity backward."""
    return x + (torch.round(x) - x).detach()


def clip_ste(x: torch.Tensor, lo, hi) -> torch.Tensor:
    """``clamp`` forward, identity backward (the gradient is not cut at the clip points)."""
    return x + (x.clamp(lo, hi) - x).detach()


class _PassThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, latent, quantized):
        return quantized.detach().clone()

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def straight_through(latent: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
    """Exactly ``quantized`` in the forward pass, the incoming gradient unchanged to ``latent`` in the backward.

    Unlike ``latent + (quantized - latent).detach()``, which can be an ulp off ``quantized``, this keeps the
    forward bit-exact, so a trainable layer computes the same values as its integer view.
    """
    if not latent.requires_grad:
        return quantized
    return _PassThrough.apply(latent, quantized)


#: Floor of the absmax in per-token quantizers (BitNet b1.58's official ``clamp_(min=1e-5)``).
ABSMAX_EPS = 1e-5


@dataclass(frozen=True)
class IntCodes:
    """Integer activation codes and their per-token multipliers ``s`` (``[..., 1]``): ``x ≈ codes / s``."""

    codes: torch.Tensor
    s: torch.Tensor
    bits: int

    def dequantized(self, dtype=torch.float32) -> torch.Tensor:
        return self.codes.to(dtype) / self.s.to(dtype)


def quantize_per_token(x: torch.Tensor, bits: int = 8, *, name: str = "activations") -> IntCodes:
    """Symmetric absmax quantization per token (last dimension), BitNet b1.58's quantizer generalised to
    ``bits``: ``s = (2^(bits−1) − 1) / clamp(max|x|, 1e-5)``, ``codes = round(x·s)`` (half to even).

    ``|x·s| ≤ 2^(bits−1) − 1`` up to one rounding of the division, so the codes span
    ``[−(2^(bits−1) − 1), 2^(bits−1) − 1]`` (the clamp only absorbs that rounding); for 8 bits this is exactly
    the official b1.58 code, whose clamp to [−128, 127] never acts on the low side. Used by every integer view
    that needs integer activations where the scheme itself has none (BiLLM, QBB, the int8 baseline).
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ValueError(f"activation bits must be an integer in [2, 16], not {bits!r}")
    check_finite(name, x)
    q_max = 2 ** (bits - 1) - 1
    x = x.detach()
    s = q_max / x.abs().amax(dim=-1, keepdim=True).clamp(min=ABSMAX_EPS)
    codes = (x * s).round().clamp(-q_max, q_max).to(torch.int8 if bits <= 8 else torch.int16)
    return IntCodes(codes, s, bits)
