"""BiBERT (Qin et al., ICLR 2022): binarizers, float reference layers, Bi-Attention, BAMM identities, integer
hardware views and the Direction-Matching Distillation loss.

Semantics are those of the official code (htqin/BiBERT, ``transformer/utils_quant.py``,
``transformer/modeling_quant.py``, ``quant_task_glue.py``; ../shared/docs/quantization.md §1.1), the default
everywhere:

* **weights** (every encoder linear, the pooler, the word-embedding table), per row ``r``:
  ``Wb[r, :] = a_r · sign(W[r, :] − μ_r)`` with ``μ_r = mean_j W[r, j]`` and ``a_r = mean_j |W[r, j]|`` of the
  *un-centred* row;
* **activations** entering a binary linear: ``sign(x)``, no scale; ``y = F.linear(sign(x), Wb)`` then ``+ b``;
* **Bi-Attention**, per head: ``A = sign(Q)·sign(K)ᵀ / √d_h + mask``, no softmax, ``B_A = bool(A)`` with
  bool(x) = 1 iff ``x > 0`` (code; the paper's bool is ``x ≥ 0``, ``strict=False``), context
  ``C = B_A · sign(V)``, an integer in [−n, n];
* ``sign`` is ``torch.sign`` (sign(0) = 0, ``zero_policy="torch"``); ``"pos"``/``"neg"`` send 0 to ±1.

Gradients are the official straight-through estimators (see :class:`BinaryLinear` and :func:`bi_attention`).
Not modelled: the training-time dropout the official code applies to ``A`` before ``bool`` (it zeroes random
scores, which then give bit 0); evaluation has none.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .quant import ZeroPolicy, check_zero_policy, count_zeros, sign, sign_ste
from .units import UnitKind
from .validate import check_finite, check_matrix
from .views import IntPass, LinearView, MatmulView

__all__ = [
    "SCHEME",
    "MASK_VALUE",
    "BinaryWeights",
    "BinaryActivations",
    "binarize_weights",
    "binarize_activations",
    "binary_weight_ste",
    "attention_sign_ste",
    "bool_ste",
    "BinaryLinear",
    "BinaryEmbedding",
    "additive_mask",
    "BiAttentionOutput",
    "bi_attention",
    "bamm_and",
    "bamm_xnor",
    "linear_view",
    "qk_view",
    "av_view",
    "similarity",
    "normalized_distance",
    "dmd_loss",
]

#: Scheme name recorded in the integer views.
SCHEME = "bibert"
#: Additive attention-mask value on padded keys (BertModel.forward in the official code).
MASK_VALUE = -10000.0

ForwardMode = Literal["exact", "code"]
Identity = Literal["and", "xnor"]
Normalize = Literal["tensor", "matrix"]


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, not {value!r}")


def _code_bits(zero_policy: str) -> int:
    # ±1 fits one bit (bit 1 = +1); under "torch" a code can also be 0, which needs a second bit.
    return 2 if zero_policy == "torch" else 1


# -- quantizers ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BinaryWeights:
    """Row-wise binarized weights: ``W ≈ scale · codes``.

    ``codes`` (int8 ``[rows, cols]``) are ``sign(W − μ_row)``: ±1, or 0 where a centred value is exactly 0 and
    the zero policy is ``"torch"``. ``scale`` (``[rows, 1]``, W's dtype) is ``mean|W|`` of each un-centred row.
    ``zero_count`` is how many centred values were exactly 0.
    """

    codes: torch.Tensor
    scale: torch.Tensor
    zero_count: int

    def dequantized(self, dtype=torch.float32) -> torch.Tensor:
        """``scale · codes``: the weight the float reference multiplies with."""
        return self.scale.to(dtype) * self.codes.to(dtype)


@dataclass(frozen=True)
class BinaryActivations:
    """``codes = sign(x)`` (int8, no scale) and how many elements of ``x`` were exactly 0."""

    codes: torch.Tensor
    zero_count: int


def _centre(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # The official code's order: scale from the un-centred row, then subtract the row mean (in W's dtype).
    scale = w.abs().mean(dim=-1, keepdim=True)
    return w - w.mean(dim=-1, keepdim=True), scale


def binarize_weights(weight: torch.Tensor, *, zero_policy: ZeroPolicy = "torch") -> BinaryWeights:
    """Binarize a Linear weight ``[out, in]`` or an embedding table ``[tokens, dim]`` row by row.

    Parameters
    ----------
    weight : 2-D float tensor; a row is one output feature (Linear) or one token (embedding).
    zero_policy : ``sign(0)``: ``"torch"`` (0, the official code), ``"pos"`` (+1) or ``"neg"`` (−1).
    """
    check_zero_policy(zero_policy)
    check_matrix("weight", weight)
    check_finite("weight", weight)
    centred, scale = _centre(weight.detach())
    codes = sign(centred, zero_policy).to(torch.int8)
    return BinaryWeights(codes=codes, scale=scale, zero_count=count_zeros(centred))


def binarize_activations(x: torch.Tensor, *, zero_policy: ZeroPolicy = "torch") -> BinaryActivations:
    """``sign(x)`` as int8 codes (any shape), with the number of exact zeros."""
    check_zero_policy(zero_policy)
    check_finite("activations", x)
    x = x.detach()
    return BinaryActivations(codes=sign(x, zero_policy).to(torch.int8), zero_count=count_zeros(x))


# -- straight-through estimators ------------------------------------------------------------------------------

class _BinaryWeightSTE(torch.autograd.Function):
    """Forward ``a ⊙ sign(W − μ)`` exactly; backward the gradient of ``clamp(W − μ, −1, 1)`` with respect to W.

    This is the official estimator: the code writes ``Wb.detach() − c.detach() + c`` with
    ``c = clamp(W − mean(W), −1, 1)``, so the scale ``a`` (detached) does not enter the gradient and the row mean
    does: ``∂L/∂W = m ⊙ g − mean_row(m ⊙ g)``, ``m = [|W − μ| ≤ 1]`` (clamp passes its end points).
    """

    @staticmethod
    def forward(ctx, w, zero_policy):
        centred, scale = _centre(w)
        ctx.save_for_backward((centred.abs() <= 1).to(w.dtype))
        return scale * sign(centred, zero_policy)

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        g = grad * inside
        return g - g.mean(dim=-1, keepdim=True), None


class _CodeWeightSTE(torch.autograd.Function):
    """The official expression evaluated literally: ``Wb.detach() − c.detach() + c`` in floating point.

    Its forward value differs from ``a ⊙ sign(W − μ)`` by an ulp in a few percent of the entries (the
    subtraction and addition round); this mode exists only to reproduce official outputs bit for bit.
    """

    @staticmethod
    def forward(ctx, w, zero_policy):
        centred, scale = _centre(w)
        c = centred.clamp(-1.0, 1.0)
        ctx.save_for_backward((centred.abs() <= 1).to(w.dtype))
        return (scale * sign(centred, zero_policy) - c) + c

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        g = grad * inside
        return g - g.mean(dim=-1, keepdim=True), None


def binary_weight_ste(weight: torch.Tensor, zero_policy: ZeroPolicy = "torch", *,
                      forward_mode: ForwardMode = "exact") -> torch.Tensor:
    """Differentiable fake-quantized weight ``a ⊙ sign(W − μ)`` (rows = last-but-one dim) with the official STE.

    ``forward_mode="exact"`` returns the exact product; ``"code"`` evaluates the official
    ``Wb − clamp + clamp`` expression literally (same gradient, forward off by an ulp in places).
    """
    check_zero_policy(zero_policy)
    _check_choice("forward_mode", forward_mode, ("exact", "code"))
    fn = _BinaryWeightSTE if forward_mode == "exact" else _CodeWeightSTE
    return fn.apply(weight, zero_policy)


class _AttentionSignSTE(torch.autograd.Function):
    """``sign`` on Q, K, V in the attention (the code's ``BinaryQuantizer``): the gradient passes where
    ``|x| < 1`` (it is zeroed where ``x ≥ 1`` or ``x ≤ −1``, so the end points are cut)."""

    @staticmethod
    def forward(ctx, x, zero_policy):
        ctx.save_for_backward(x)
        return sign(x, zero_policy)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() < 1).to(grad.dtype), None


def attention_sign_ste(x: torch.Tensor, zero_policy: ZeroPolicy = "torch") -> torch.Tensor:
    """``sign(x)`` forward; backward passes the gradient where ``|x| < 1`` (official ``BinaryQuantizer``)."""
    check_zero_policy(zero_policy)
    return _AttentionSignSTE.apply(x, zero_policy)


class _BoolSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, strict):
        ctx.save_for_backward(x)
        ctx.strict = strict
        return (x > 0 if strict else x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        inside = x.abs() < 1 if ctx.strict else x.abs() <= 1
        return grad * inside.to(grad.dtype), None


def bool_ste(x: torch.Tensor, *, strict: bool = True) -> torch.Tensor:
    """BiBERT's ``bool``: 0/1 in x's dtype.

    ``strict=True`` (official ``ZMeanBinaryQuantizer``): 1 iff ``x > 0``, gradient passes where ``|x| < 1``.
    ``strict=False`` (the paper): 1 iff ``x ≥ 0``, gradient passes where ``|x| ≤ 1``. With ``d_h = 64`` the
    scores are multiples of 1/4, so both ``A = 0`` and ``|A| = 1`` occur and the two readings differ.
    """
    return _BoolSTE.apply(x, bool(strict))


# -- float reference layers -----------------------------------------------------------------------------------

class BinaryLinear(nn.Linear):
    """Float reference of BiBERT's binary linear (official ``QuantizeLinear`` with 1-bit weights and inputs):
    ``y = F.linear(sign(x), a ⊙ sign(W − μ)) + b``, trainable with the official straight-through estimators.

    Gradients: for the input, that of ``clamp(x, −1, 1)`` (passes where ``|x| ≤ 1``); for the weight, that of
    ``clamp(W − μ, −1, 1)`` (see :func:`binary_weight_ste`); the bias is ordinary. The bias is added after the
    product, as the official code does (not fused into ``F.linear``).

    Parameters
    ----------
    zero_policy : ``sign(0)`` for both the centred weights and the inputs (default ``"torch"``: 0).
    forward_mode : ``"exact"`` (default) computes ``a ⊙ sign(W − μ)`` exactly, the arithmetic the integer view
        and the hardware implement; ``"code"`` evaluates the official ``Wb − clamp + clamp`` expression, whose
        rounding perturbs a few weights by an ulp, to match official outputs bit for bit.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, zero_policy: ZeroPolicy = "torch",
                 forward_mode: ForwardMode = "exact", device=None, dtype=None):
        check_zero_policy(zero_policy)
        _check_choice("forward_mode", forward_mode, ("exact", "code"))
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.zero_policy = zero_policy
        self.forward_mode = forward_mode

    @classmethod
    def from_linear(cls, linear: nn.Linear, **opts) -> "BinaryLinear":
        """A BinaryLinear with a copy of ``linear``'s weight and bias (same device and dtype); ``opts`` are the
        keyword options of the constructor."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_linear needs an nn.Linear, not {type(linear).__name__}")
        w = linear.weight
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device=w.device,
                    dtype=w.dtype, **opts)
        with torch.no_grad():
            layer.weight.copy_(w)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    def binary_weight(self) -> torch.Tensor:
        """The differentiable fake-quantized weight ``a ⊙ sign(W − μ)``."""
        return binary_weight_ste(self.weight, self.zero_policy, forward_mode=self.forward_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1:] != (self.in_features,):
            raise ValueError(f"input has shape {tuple(x.shape)}; the last dimension must be {self.in_features}")
        check_finite("activations", x)
        y = F.linear(sign_ste(x, self.zero_policy), self.binary_weight())
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, zero_policy={self.zero_policy!r}, forward_mode={self.forward_mode!r}"


class BinaryEmbedding(nn.Embedding):
    """Word embedding with each token row binarized as ``a_r ⊙ sign(E[r] − μ_r)`` (official
    ``QuantizeEmbedding`` with 1 bit), same estimator as the linear weights. Position and token-type
    embeddings stay full precision in BiBERT: use plain ``nn.Embedding`` for them."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None, *,
                 zero_policy: ZeroPolicy = "torch", forward_mode: ForwardMode = "exact", device=None, dtype=None):
        check_zero_policy(zero_policy)
        _check_choice("forward_mode", forward_mode, ("exact", "code"))
        super().__init__(num_embeddings, embedding_dim, padding_idx=padding_idx, device=device, dtype=dtype)
        self.zero_policy = zero_policy
        self.forward_mode = forward_mode

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding, **opts) -> "BinaryEmbedding":
        """A BinaryEmbedding with a copy of ``embedding``'s table and padding index."""
        if not isinstance(embedding, nn.Embedding):
            raise TypeError(f"from_embedding needs an nn.Embedding, not {type(embedding).__name__}")
        w = embedding.weight
        layer = cls(embedding.num_embeddings, embedding.embedding_dim, embedding.padding_idx, device=w.device,
                    dtype=w.dtype, **opts)
        with torch.no_grad():
            layer.weight.copy_(w)
        return layer

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        table = binary_weight_ste(self.weight, self.zero_policy, forward_mode=self.forward_mode)
        return F.embedding(ids, table, self.padding_idx, self.max_norm, self.norm_type, self.scale_grad_by_freq,
                           self.sparse)


# -- Bi-Attention ---------------------------------------------------------------------------------------------

def additive_mask(attention_mask: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """Turn a ``[batch, seq]`` keep-mask (1 = token, 0 = padding) into the official additive mask
    ``(1 − m) · −10000`` shaped ``[batch, 1, 1, seq]``."""
    if attention_mask.ndim != 2:
        raise ValueError(f"attention_mask must be [batch, seq], but has shape {tuple(attention_mask.shape)}")
    bad = (attention_mask != 0) & (attention_mask != 1)
    if bad.any():
        first = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(f"attention_mask must hold 0/1, but holds {attention_mask[first].item()!r} at {first}")
    m = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - m) * MASK_VALUE


@dataclass(frozen=True)
class BiAttentionOutput:
    """Result of :func:`bi_attention` (all ``[batch, heads, …]``, in q's dtype).

    ``context = bits · sign(V)`` holds integers in [−n_k, n_k]; ``scores`` is ``A`` after scale and mask;
    ``bits`` is ``bool(A)``. ``zero_counts``: exact zeros met by sign (``"q"``, ``"k"``, ``"v"``) and scores
    exactly 0 met by bool (``"scores"``, where ``strict`` decides the bit).
    """

    context: torch.Tensor
    bits: torch.Tensor
    scores: torch.Tensor
    zero_counts: dict[str, int] = field(default_factory=dict)


def _check_mask(mask, shape: tuple[int, ...]) -> None:
    if mask is None:
        return
    check_finite("mask", mask)
    try:
        broadcast = torch.broadcast_shapes(tuple(mask.shape), shape)
    except RuntimeError:
        broadcast = None
    if broadcast != shape:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to the scores' shape {shape}")


def _scores(sq: torch.Tensor, sk: torch.Tensor, d_h: int, mask) -> torch.Tensor:
    # Shared by bi_attention and qk_view so both round identically: the ±1 product is exact in floating
    # point, then the official division by √d_h and the additive mask.
    a = torch.matmul(sq, sk.transpose(-1, -2)) / math.sqrt(d_h)
    return a if mask is None else a + mask.to(a.dtype)


def bi_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, *,
                 strict: bool = True, zero_policy: ZeroPolicy = "torch") -> BiAttentionOutput:
    """BiBERT's Bi-Attention on ``[batch, heads, seq, d_h]`` tensors (Q, K, V already split into heads).

    ``A = sign(Q)·sign(K)ᵀ / √d_h + mask``; ``bits = bool(A)``; ``context = bits · sign(V)``. The official code
    divides by √d_h (1/8 for BERT-base) and adds the mask *before* bool; the scale cannot flip a sign, and with
    the −10000 mask a padded key always gets bit 0, so padding never reaches the context (padded *queries*
    still produce rows, as in the official code). ``mask`` is additive and broadcasts to
    ``[batch, heads, n_q, n_k]`` (see :func:`additive_mask`).

    ``strict``: bool(A) = 1 iff ``A > 0`` (official code, default) or iff ``A ≥ 0`` (paper); a head-dimension tie
    (popcount = d_h/2) gives ``A = 0``. Differentiable with the official estimators: sign on Q, K, V passes the
    gradient where ``|x| < 1``, bool where ``|A| < 1`` (``|A| ≤ 1`` with ``strict=False``).
    """
    check_zero_policy(zero_policy)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.ndim != 4:
            raise ValueError(f"{name} must be [batch, heads, seq, d_h], but has shape {tuple(t.shape)}")
        check_finite(name, t)
    if q.shape[:2] != k.shape[:2] or k.shape[:2] != v.shape[:2]:
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)} and v {tuple(v.shape)} differ in batch or heads")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k differ in head size: {q.shape[-1]} vs {k.shape[-1]}")
    if k.shape[2] != v.shape[2]:
        raise ValueError(f"k and v differ in sequence length: {k.shape[2]} vs {v.shape[2]}")
    score_shape = (q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    _check_mask(mask, score_shape)

    sq, sk, sv = (attention_sign_ste(t, zero_policy) for t in (q, k, v))
    scores = _scores(sq, sk, q.shape[-1], mask)
    bits = bool_ste(scores, strict=strict)
    context = torch.matmul(bits, sv)
    zeros = {"q": count_zeros(q), "k": count_zeros(k), "v": count_zeros(v), "scores": count_zeros(scores)}
    return BiAttentionOutput(context=context, bits=bits, scores=scores, zero_counts=zeros)


# -- BAMM integer identities ----------------------------------------------------------------------------------

def _check_bamm_operands(a: torch.Tensor, v: torch.Tensor) -> None:
    for name, t in (("a", a), ("v", v)):
        if t.dtype.is_floating_point or t.dtype.is_complex:
            raise TypeError(f"{name} must be an integer or bool tensor, not {t.dtype}")
        if t.ndim < 2:
            raise ValueError(f"{name} must be a (batched) matrix, but has shape {tuple(t.shape)}")
    if a.shape[-1] != v.shape[-2]:
        raise ValueError(f"a {tuple(a.shape)} and v {tuple(v.shape)} do not form a matrix product")
    a64, v64 = a.to(torch.int64), v.to(torch.int64)
    bad_a = (a64 != 0) & (a64 != 1)
    if bad_a.any():
        first = tuple(int(i) for i in bad_a.nonzero()[0])
        raise ValueError(f"a must hold bits 0/1, but holds {int(a64[first])} at {first}")
    bad_v = v64.abs() != 1
    if bad_v.any():
        first = tuple(int(i) for i in bad_v.nonzero()[0])
        raise ValueError(f"v must hold ±1 (the identity cannot encode sign(0) = 0), but holds {int(v64[first])} "
                         f"at {first}; av_view adds a correction pass for zeros")


def bamm_and(a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``a·v`` as ``2·popcount(a AND v') − popcount(a)``, ``v' = [v = +1]``, on integer (batched) matrices.

    ``a`` ``[..., n, m]`` holds bits {0, 1}, ``v`` ``[..., m, d]`` holds ±1; returns int64 ``[..., n, d]``.
    ``popcount(a AND v')`` over the reduction dimension is the 0/1 matrix product ``a·v'``.
    """
    _check_bamm_operands(a, v)
    a64 = a.to(torch.int64)
    v_bit = (v == 1).to(torch.int64)
    and_count = torch.matmul(a64, v_bit)
    count = a64.sum(dim=-1, keepdim=True)
    return 2 * and_count - count


def bamm_xnor(a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``a·v`` as ``((2a − 1)·v + Σ_j v_j) >> 1``: an XNOR-popcount product of two ±1 operands, plus the column
    sums of ``v``, halved by a shift. Same operands and result as :func:`bamm_and`. The sum is always even
    (it equals ``2·a·v``); this is checked, so a broken datapath cannot hide behind the shift."""
    _check_bamm_operands(a, v)
    a64, v64 = a.to(torch.int64), v.to(torch.int64)
    total = torch.matmul(2 * a64 - 1, v64) + v64.sum(dim=-2, keepdim=True)
    if (total & 1).any():
        raise ValueError("XNOR + column-sum is odd somewhere; the BAMM identity does not hold for these operands")
    return total >> 1


# -- integer hardware views -----------------------------------------------------------------------------------

def _as_tensor(name: str, value) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a tensor or ndarray, not {type(value).__name__}")
    return value


def linear_view(weight: torch.Tensor, x: torch.Tensor, *, bias: torch.Tensor | None = None,
                zero_policy: ZeroPolicy = "torch") -> LinearView:
    """Integer view of :class:`BinaryLinear` on ``x`` ``[tokens, in]``: one XNOR-popcount pass
    ``sign(x)·sign(W − μ)ᵀ``, then ``acc · a_r (+ b)`` in float32.

    Codes are ±1 (1 bit) under ``"pos"``/``"neg"``; under ``"torch"`` they can be 0, so they are declared 2 bits
    wide with range [−1, 1], and an XNOR engine has to map or skip those zeros (counted in ``zero_counts``:
    ``"weight"`` = centred weights exactly 0, ``"act"`` = inputs exactly 0).
    """
    check_matrix("weight", weight)
    check_matrix("x", x, columns=weight.shape[1])
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"bias has shape {tuple(bias.shape)}, expected ({weight.shape[0]},)")
    if bias is not None:
        check_finite("bias", bias)
    wq = binarize_weights(weight.detach().float(), zero_policy=zero_policy)
    xq = binarize_activations(x.detach().float(), zero_policy=zero_policy)
    scale = wq.scale[:, 0].to(torch.float32)                # a_r per output feature
    b = None if bias is None else bias.detach().float()

    def rescale(acc):
        y = torch.from_numpy(np.asarray(acc["main"], np.int64)).to(torch.float32) * scale
        return (y if b is None else y + b).numpy()

    bits = _code_bits(zero_policy)
    main = IntPass("main", UnitKind.XNOR_POPCOUNT, wq.codes.numpy(), xq.codes.numpy(), bits, bits,
                   weight_range=(-1, 1), act_range=(-1, 1))
    notes = "" if zero_policy != "torch" else "sign(0) = 0 codes (2-bit) must be mapped or skipped by an XNOR engine"
    return LinearView(SCHEME, UnitKind.XNOR_POPCOUNT, (main,), rescale, weight.shape[1], weight.shape[0], x.shape[0],
                      notes=notes, zero_counts={"weight": wq.zero_count, "act": xq.zero_count})


def qk_view(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None, *, strict: bool = True,
            zero_policy: ZeroPolicy = "torch") -> MatmulView:
    """Integer view of one head's scores: an XNOR-popcount pass ``sign(Q)·sign(K)ᵀ`` (q ``[n_q, d_h]``, k
    ``[n_k, d_h]``), then ``bool(acc/√d_h + mask)`` as float32 0/1 ``[n_q, n_k]``, computed exactly as
    :func:`bi_attention` does. With a mask of only 0 and −10000 this is ``acc > 0`` (``acc ≥ 0`` when not
    ``strict``) on unmasked keys, i.e. popcount of agreeing bits > d_h/2: a compare, no arithmetic.

    ``zero_counts``: ``"q"``, ``"k"`` (exact zeros met by sign) and ``"scores"`` (scores exactly 0, the ties
    that ``strict`` decides).
    """
    check_zero_policy(zero_policy)
    check_matrix("q", q)
    check_matrix("k", k, columns=q.shape[1])
    check_finite("q", q)
    check_finite("k", k)
    _check_mask(mask, (q.shape[0], k.shape[0]))
    sq = binarize_activations(q.detach().float(), zero_policy=zero_policy)
    sk = binarize_activations(k.detach().float(), zero_policy=zero_policy)
    d_h = q.shape[1]
    m = None if mask is None else mask.detach().to(torch.float32)

    def scores(acc):
        a = torch.from_numpy(np.asarray(acc["qk"], np.int64)).to(torch.float32) / math.sqrt(d_h)
        return a if m is None else a + m

    def rescale(acc):
        a = scores(acc)
        return (a > 0 if strict else a >= 0).to(torch.float32).numpy()

    bits = _code_bits(zero_policy)
    qk = IntPass("qk", UnitKind.XNOR_POPCOUNT, sk.codes.numpy(), sq.codes.numpy(), bits, bits,
                 weight_range=(-1, 1), act_range=(-1, 1))
    ties = count_zeros(scores({"qk": qk.accumulate()}))
    return MatmulView(SCHEME, UnitKind.XNOR_POPCOUNT, (qk,), rescale,
                      notes=f"bool(A) with A {'>' if strict else '>='} 0 ({'code' if strict else 'paper'})",
                      zero_counts={"q": sq.zero_count, "k": sk.zero_count, "scores": ties})


def av_view(bits, v: torch.Tensor, *, identity: Identity = "and", zero_policy: ZeroPolicy = "torch") -> MatmulView:
    """Integer view of one head's BAMM product ``B_A · sign(V)`` (bits ``[n_q, n_k]`` 0/1, v ``[n_k, d_h]``).

    ``identity="and"``: passes ``and`` (bits × ``[sign(V) = +1]``, both {0, 1}) and ``count`` (bits × ones:
    popcount of each bit row, the same for every output column), output ``2·and − count``.
    ``identity="xnor"``: passes ``xnor`` (``2·bits − 1`` × sign(V), both ±1) and ``colsum`` (ones × sign(V)),
    output ``(xnor + colsum) / 2`` (the sum is checked to be even).

    Zeros in V: under ``zero_policy="torch"`` sign(V) can be 0, which neither identity can encode (``v'``
    has no third value; the XNOR operand must be ±1). Such zeros are then coded as −1 (``and``) or +1
    (``xnor``) and a third pass ``zero`` (bits × ``[V = 0]``, AND-popcount) corrects the result exactly:
    ``+zero`` for ``and``, ``−zero`` for ``xnor``. The pass exists only when V holds zeros; ``zero_counts["v"]``
    counts them. The output (float32 integers ``[n_q, d_h]``) equals :func:`bi_attention`'s context.
    """
    check_zero_policy(zero_policy)
    _check_choice("identity", identity, ("and", "xnor"))
    bits = _as_tensor("bits", bits)
    check_matrix("bits", bits)
    check_matrix("v", v)
    if v.shape[0] != bits.shape[1]:
        raise ValueError(f"bits has {bits.shape[1]} key columns but v has {v.shape[0]} rows")
    check_finite("v", v)
    bad = (bits != 0) & (bits != 1)
    if bad.any():
        first = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(f"bits must hold 0/1, but holds {bits[first].item()!r} at {first}")
    a = bits.detach().to(torch.int8).numpy()                          # [n_q, n_k]
    sv = binarize_activations(v.detach().float(), zero_policy=zero_policy)
    sv_t = sv.codes.T.contiguous().numpy()                             # [d_h, n_k]: weights are [out, k]
    zero = (sv_t == 0).astype(np.int8)
    n_q, (d_h, n_k) = a.shape[0], sv_t.shape
    unit = UnitKind.BAMM

    def pass01(name, w, x):
        return IntPass(name, unit, w, x, 1, 1, weight_signed=False, act_signed=False)

    if identity == "and":
        passes = [pass01("and", (sv_t == 1).astype(np.int8), a), pass01("count", np.ones((d_h, n_k), np.int8), a)]
    else:
        v_pm = np.where(sv_t == 0, 1, sv_t).astype(np.int8)            # zeros coded +1, corrected below
        passes = [IntPass("xnor", unit, v_pm, (2 * a - 1).astype(np.int8), 1, 1, weight_range=(-1, 1),
                          act_range=(-1, 1)),
                  IntPass("colsum", unit, v_pm, np.ones((n_q, n_k), np.int8), 1, 1, weight_range=(-1, 1),
                          act_signed=False)]
    if zero.any():
        passes.append(pass01("zero", zero, a))

    def rescale(acc):
        get = {name: np.asarray(val, np.int64) for name, val in acc.items()}
        fix = get["zero"] if "zero" in get else 0
        if identity == "and":
            out = 2 * get["and"] - get["count"] + fix
        else:
            total = get["xnor"] + get["colsum"]
            if (total & 1).any():
                raise ValueError("xnor + colsum is odd somewhere: the accumulators are not a BAMM result")
            out = (total >> 1) - fix
        return out.astype(np.float32)

    notes = f"BAMM, {identity} identity"
    if zero.any():
        notes += f"; {sv.zero_count} sign(V) = 0 code(s) corrected by the 'zero' pass"
    return MatmulView(SCHEME, unit, tuple(passes), rescale, notes=notes, zero_counts={"v": sv.zero_count})


# -- Direction-Matching Distillation ------------------------------------------------------------------------

def similarity(x: torch.Tensor) -> torch.Tensor:
    """Similarity pattern ``x·xᵀ / √d`` over the last two dimensions (``[..., n, d]`` → ``[..., n, n]``), as the
    official code forms it from the real-valued Q, K or V of each head (before binarization, without mask)."""
    if x.ndim < 2:
        raise ValueError(f"similarity needs [..., seq, d], but got shape {tuple(x.shape)}")
    return torch.matmul(x, x.transpose(-1, -2)) / math.sqrt(x.shape[-1])


def _normalized(s: torch.Tensor, name: str, normalize: str) -> torch.Tensor:
    if normalize == "tensor":
        norm = torch.linalg.vector_norm(s)
        if norm == 0:
            raise ValueError(f"{name} similarity is all zero and cannot be normalized")
        return s / norm
    norm = torch.linalg.vector_norm(s, dim=(-2, -1), keepdim=True)
    if (norm == 0).any():
        raise ValueError(f"{name} similarity has an all-zero [seq × seq] matrix that cannot be normalized")
    return s / norm


def normalized_distance(student: torch.Tensor, teacher: torch.Tensor, *, floor: float | None = -100.0,
                        normalize: Normalize = "tensor") -> torch.Tensor:
    """``‖S/‖S‖ − T/‖T‖‖₂`` over all elements: the official distance of DMD (and of its hidden-state
    distillation).

    ``floor``: entries ``≤ floor`` are set to 0 first in both tensors (official: −100, meant to drop masked
    scores; the similarity matrices carry no mask, so it only zeroes genuinely large negative
    similarities). ``None`` disables it. ``normalize="tensor"`` (official) divides by the Frobenius norm of the
    whole tensor (batch and heads together); ``"matrix"`` normalizes each ``[seq × seq]`` matrix, our reading
    of the paper's per-matrix notation ``P = X·Xᵀ/‖X·Xᵀ‖`` (unverified).
    """
    _check_choice("normalize", normalize, ("tensor", "matrix"))
    if student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} shapes differ")
    if normalize == "matrix" and student.ndim < 2:
        raise ValueError(f"normalize='matrix' needs [..., seq, seq], but got shape {tuple(student.shape)}")
    check_finite("student", student)
    check_finite("teacher", teacher)
    if floor is not None:
        student = torch.where(student <= floor, torch.zeros_like(student), student)
        teacher = torch.where(teacher <= floor, torch.zeros_like(teacher), teacher)
    diff = _normalized(student, "student", normalize) - _normalized(teacher, "teacher", normalize)
    return torch.linalg.vector_norm(diff)


_DMD_TERMS = ("q", "k", "v")


def dmd_loss(student, teacher, *, terms: Sequence[str] = _DMD_TERMS, floor: float | None = -100.0,
             normalize: Normalize = "tensor") -> torch.Tensor:
    """Direction-Matching Distillation loss (training only), as in the official ``quant_task_glue.py``.

    ``student`` and ``teacher`` are per-layer mappings ``{"q": Q, "k": K, "v": V}`` of real-valued,
    head-split activations ``[batch, heads, seq, d_h]`` (a single mapping means one layer). For each student
    layer ``i`` the teacher layer ``i·L_t/L_s + L_t/L_s − 1`` (the last of its block) is used, and

        loss = Σ_layers Σ_{X ∈ terms} normalized_distance(similarity(X_s), similarity(X_t))

    with the official Frobenius-norm (not squared, not averaged) distance; the official scripts enable all
    three terms. ``floor`` and ``normalize`` are passed to :func:`normalized_distance`.
    """
    student = [student] if isinstance(student, Mapping) else list(student)
    teacher = [teacher] if isinstance(teacher, Mapping) else list(teacher)
    terms = tuple(terms)
    if not terms:
        raise ValueError("terms must name at least one of 'q', 'k', 'v'")
    for t in terms:
        _check_choice("each DMD term", t, _DMD_TERMS)
    if not student or len(teacher) % len(student):
        raise ValueError(f"the teacher's {len(teacher)} layers must be a positive multiple of the student's "
                         f"{len(student)}")
    per_block = len(teacher) // len(student)
    loss = None
    for i, s_layer in enumerate(student):
        t_layer = teacher[i * per_block + per_block - 1]
        for t in terms:
            for who, layer in (("student", s_layer), ("teacher", t_layer)):
                if t not in layer:
                    raise ValueError(f"{who} layer has no {t!r} activations (keys: {sorted(layer)})")
            term = normalized_distance(similarity(s_layer[t]), similarity(t_layer[t]), floor=floor,
                                       normalize=normalize)
            loss = term if loss is None else loss + term
    return loss
