"""Quantization primitives shared by every scheme: sign with an explicit zero policy, rounding and the
straight-through estimators used in training.

``sign(0)`` differs between the official code paths and the papers (quantization.md §0): ``torch.sign``
gives 0, BitNet v1's paper maps 0 to −1, BiLLM's paper maps 0 to +1. Every function that takes a sign
accepts ``zero_policy`` so the choice is explicit, and :func:`count_zeros` says how often it matters.
"""

from typing import Literal

import torch

__all__ = ["ZeroPolicy", "ZERO_POLICIES", "sign", "count_zeros", "check_zero_policy", "SignSTE", "sign_ste",
           "round_ste", "clip_ste"]

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
