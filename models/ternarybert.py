"""TernaryBERT (Zhang et al., EMNLP 2020, arXiv 2009.12812): ternary weights, 8-bit activations, distillation.

Semantics follow the official PyTorch code (huawei-noah/Pretrained-Language-Model, ``TernaryBERT/transformer/
utils_quant.py`` and ``modeling_quant.py``; ../shared/docs/quantization.md §1.2), which is the default:

* **Weights, TWN**: clip to ``[-clip_val, clip_val]`` (``clip_val = 2.5``), ``delta = 0.7·mean|W|``,
  ``t = +1 if w > delta, -1 if w < -delta, else 0`` (strict: ``|w| == delta`` gives 0),
  ``alpha = mean(|w| over |w| > delta)``, ``W_q = alpha·t``. One ``(delta, alpha)`` per matrix (``"layer"``: every
  encoder linear and the pooler) or per row (``"row"``: the word embedding).
* **Activations**: 8-bit *symmetric* and per tensor: clip to ``[-2.5, 2.5]``, ``s = 127 / max|x|`` over the whole
  tensor (every token of every sequence in the batch, every head), ``x_q = round(x·s) / s`` with ``torch.round``
  (half to even). Applied to every linear input, to Q and K before ``QKᵀ`` and to the softmax output and V
  before ``A·V``.
* **Training**: every quantizer has the same straight-through estimator: the gradient passes unchanged where
  ``-clip_val < x < clip_val`` and is zero elsewhere (also at exactly ``±clip_val``).

Where the paper differs, its variant is an option: ``act_mode="minmax"`` is the paper's asymmetric min-max
quantizer ``Q(x) = round((x - x_min)/s)·s + x_min``, ``s = (x_max - x_min)/255`` (the official PyTorch code defines a
different, unused asymmetric quantizer; this is the paper's formula, after the same clip). ``lat_ternarize`` is the
paper's loss-aware ternarization, which the official code does not contain.

Two guards differ from the official code, which produces NaN in these cases: a matrix (or row) with no weight above
its threshold (only possible when it is all zero) gets ``alpha = 0`` (the official ``0/0``), and an all-zero
activation tensor gets zero codes with ``s = 2^(b-1) - 1`` (the official ``0·inf``).
"""

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .units import UnitKind
from .validate import check_finite, check_matrix, check_positive_int
from .views import IntPass, LinearView, MatmulView

__all__ = [
    "SCHEME",
    "CLIP_VAL",
    "TWN_DELTA_FACTOR",
    "ACT_BITS",
    "WEIGHT_BITS",
    "LAT_EPS",
    "ATTENTION_MASKED_BELOW",
    "TernaryWeights",
    "twn_ternarize",
    "lat_ternarize",
    "ternarize_embedding",
    "SymmetricActivations",
    "MinMaxActivations",
    "quantize_symmetric",
    "quantize_minmax",
    "quantize_activations",
    "fake_quantize_activations",
    "TernaryLinear",
    "TernaryEmbedding",
    "QuantizedAttention",
    "quantize_attention",
    "soft_cross_entropy",
    "prediction_loss",
    "hidden_state_loss",
    "attention_score_loss",
    "DistillationLoss",
    "distillation_loss",
    "linear_view",
    "qk_view",
    "av_view",
]

Granularity = Literal["layer", "row"]
ActMode = Literal["symmetric", "minmax"]

#: Scheme name in views and manifests.
SCHEME = "ternarybert"
#: ``--clip_val`` of the official scripts: every weight and activation quantizer clips to ``[-2.5, 2.5]`` first.
CLIP_VAL = 2.5
#: TWN threshold factor: ``delta = 0.7·mean|W|``.
TWN_DELTA_FACTOR = 0.7
#: Activation width (``--input_bits``).
ACT_BITS = 8
#: Storage width of one ternary weight code.
WEIGHT_BITS = 2
#: ``ε`` of ``D = diag(√v) + ε`` in LAT; the value of Hou & Kwok's loss-aware quantization code.
LAT_EPS = 1e-8
#: The official distillation zeroes attention-score entries at or below -100 (the -10000 padding mask) in both
#: student and teacher before the MSE.
ATTENTION_MASKED_BELOW = -1e2


# -- argument checks ---------------------------------------------------------------------------------------

def _check_granularity(granularity) -> None:
    if granularity not in ("layer", "row"):
        raise ValueError(f"granularity must be 'layer' or 'row', not {granularity!r}")


def _check_act_mode(act_mode) -> None:
    if act_mode not in ("symmetric", "minmax"):
        raise ValueError(f"act_mode must be 'symmetric' or 'minmax', not {act_mode!r}")


def _check_clip_val(clip_val) -> float | None:
    if clip_val is None:
        return None
    if isinstance(clip_val, bool) or not isinstance(clip_val, (int, float, np.integer, np.floating)):
        raise TypeError(f"clip_val must be a positive number or None, not {clip_val!r}")
    if not (math.isfinite(clip_val) and clip_val > 0):
        raise ValueError(f"clip_val must be a positive finite number or None, not {clip_val!r}")
    return float(clip_val)


def _check_bits(bits) -> int:
    bits = check_positive_int("bits", bits)
    if not 2 <= bits <= 16:
        raise ValueError(f"bits must be between 2 and 16, not {bits!r}")
    return bits


def _check_tensor(name: str, x) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, not {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, not {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty, but has shape {tuple(x.shape)}")
    check_finite(name, x)


def _clip(x: torch.Tensor, clip_val: float | None) -> torch.Tensor:
    # The official code clips with two torch.where calls; for finite values that is exactly clamp.
    return x if clip_val is None else x.clamp(-clip_val, clip_val)


class _ClippedSTE(torch.autograd.Function):
    """Forward ``quantize(x)``; backward passes the gradient where ``-clip < x < clip`` and zeroes it elsewhere,
    as every quantizer of the official code does (``clip=None``: identity)."""

    @staticmethod
    def forward(ctx, x, quantize, clip_val):
        ctx.save_for_backward(x)
        ctx.clip_val = clip_val
        return quantize(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        if ctx.clip_val is None:
            return grad, None, None
        inside = (x > -ctx.clip_val) & (x < ctx.clip_val)
        return torch.where(inside, grad, torch.zeros_like(grad)), None, None


# -- weights -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TernaryWeights:
    """Ternary weight codes with their scale: ``W_q = alpha · codes``.

    ``codes`` is int8 in {-1, 0, +1} with the weight's shape. ``alpha`` and ``delta`` (the threshold that chose
    the codes) are 0-d tensors for ``granularity="layer"`` and ``[rows, 1]`` for ``"row"``.
    """

    codes: torch.Tensor
    alpha: torch.Tensor
    delta: torch.Tensor
    granularity: str

    def dequantized(self, dtype=None) -> torch.Tensor:
        """``alpha · codes``: the fake-quantized weight the float reference multiplies with."""
        dtype = self.alpha.dtype if dtype is None else dtype
        return self.codes.to(dtype) * self.alpha.to(dtype)


def _ternary_codes(w: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    return (w > delta).to(torch.int8) - (w < -delta).to(torch.int8)


def twn_ternarize(weight: torch.Tensor, *, granularity: Granularity = "layer",
                  clip_val: float | None = CLIP_VAL) -> TernaryWeights:
    """TWN ternarization of a 2-D weight, as the official ``TwnQuantizer``.

    Parameters
    ----------
    weight : [rows, cols] float tensor (a Linear's ``[out, in]`` or an embedding table ``[vocab, hidden]``).
    granularity : ``"layer"`` (one ``delta``, ``alpha`` per matrix) or ``"row"`` (one per row).
    clip_val : clip to ``[-clip_val, clip_val]`` before anything else (official 2.5); ``None`` for plain TWN.

    The arithmetic follows the official order so float32 results match it bit for bit:
    ``m = ||W||_1 / n``, ``delta = 0.7·m``, ``alpha = Σ|w·mask| / Σmask``. A matrix or row without any
    ``|w| > delta`` (only an all-zero one) gets ``alpha = 0``; the official code gives NaN there.
    """
    _check_granularity(granularity)
    clip_val = _check_clip_val(clip_val)
    _check_tensor("weight", weight)
    check_matrix("weight", weight)
    w = _clip(weight.detach(), clip_val)
    if granularity == "layer":
        m = torch.linalg.vector_norm(w, 1) / w.numel()
        delta = TWN_DELTA_FACTOR * m
        mask = (w.abs() > delta).to(w.dtype)
        count = mask.sum()
        alpha = (mask * w).abs().sum() / count
    else:
        m = torch.linalg.vector_norm(w, 1, dim=1) / w.shape[1]
        delta = (TWN_DELTA_FACTOR * m).view(-1, 1)
        mask = (w.abs() > delta).to(w.dtype)
        count = mask.sum(dim=1)
        alpha = ((mask * w).abs().sum(dim=1) / count).view(-1, 1)
        count = count.view(-1, 1)
    alpha = torch.where(count > 0, alpha, torch.zeros_like(alpha))
    return TernaryWeights(codes=_ternary_codes(w, delta), alpha=alpha, delta=delta, granularity=granularity)


def ternarize_embedding(weight: torch.Tensor, *, clip_val: float | None = CLIP_VAL) -> TernaryWeights:
    """Row-wise TWN of a word-embedding table ``[vocab, hidden]`` (one ``alpha`` per token), as the official
    ``QuantizeEmbedding``."""
    return twn_ternarize(weight, granularity="row", clip_val=clip_val)


def lat_ternarize(weight: torch.Tensor, second_moment: torch.Tensor, *, granularity: Granularity = "layer",
                  iterations: int = 1, init_codes: torch.Tensor | None = None, eps: float = LAT_EPS,
                  tol: float | None = None, clip_val: float | None = None) -> TernaryWeights:
    """Loss-aware ternarization (LAT, the paper's second method; not in the official code).

    LAT picks ``alpha·t`` minimising ``(w - alpha·t)ᵀ D (w - alpha·t)`` with ``D = diag(√v) + ε`` (Adam's second
    moment ``v`` as a diagonal Hessian estimate). The problem splits per element, so for a fixed ``alpha`` the best
    code is ``t = I_{alpha/2}(w)`` (``+1`` if ``w > alpha/2``, ``-1`` if ``w < -alpha/2``, else 0; ``D`` cancels),
    and for fixed ``t`` the best scale is ``alpha = ||t ⊙ d ⊙ w||_1 / ||t ⊙ d||_1``. Each iteration does the
    ``alpha`` step then the ``t`` step, starting from ``init_codes`` (during training: the previous step's codes)
    or, by default, the TWN codes, as in Hou & Kwok's LAT code (ICLR 2018). ``iterations=1`` is the paper's
    one-step approximate solution; more iterations approach the exact alternating minimiser (``tol`` stops early
    once every ``alpha`` moves by less than it). With a constant ``D`` this is the TWN objective's alternating
    minimisation: ``alpha`` is then the plain mean ``|w|`` over the support.

    The paper's full text was not available here: the closed forms above are derived from the objective and
    match Hou & Kwok's code (which compares ``w/alpha > 0.5``; we compare ``w > alpha/2``, exact in floating
    point). ``clip_val`` defaults to ``None`` (no clip) because no LAT code clips. A support that becomes empty
    (all-zero ``init_codes``) gives ``alpha = 0``.
    """
    _check_granularity(granularity)
    clip_val = _check_clip_val(clip_val)
    iterations = check_positive_int("iterations", iterations)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, not {eps!r}")
    if tol is not None and (isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol >= 0):
        raise ValueError(f"tol must be a number >= 0 or None, not {tol!r}")
    _check_tensor("weight", weight)
    check_matrix("weight", weight)
    _check_tensor("second_moment", second_moment)
    if second_moment.shape != weight.shape:
        raise ValueError(f"second_moment has shape {tuple(second_moment.shape)}, the weight "
                         f"{tuple(weight.shape)}")
    if (second_moment < 0).any():
        raise ValueError(f"second_moment must be >= 0 (it is Adam's v), but its minimum is "
                         f"{second_moment.min().item()!r}")
    w = _clip(weight.detach(), clip_val)
    if init_codes is None:
        codes = twn_ternarize(w, granularity=granularity, clip_val=None).codes
    else:
        if not isinstance(init_codes, torch.Tensor) or init_codes.shape != weight.shape:
            raise ValueError(f"init_codes must be a tensor of the weight's shape {tuple(weight.shape)}")
        if not ((init_codes == -1) | (init_codes == 0) | (init_codes == 1)).all():
            raise ValueError("init_codes must hold only -1, 0 and +1")
        codes = init_codes.to(torch.int8)
    d = second_moment.detach().to(w.dtype).sqrt() + eps
    dims = None if granularity == "layer" else 1
    alpha = None
    for _ in range(iterations):
        support = codes.abs().to(w.dtype)
        num = (support * d * w.abs()).sum(dim=dims, keepdim=dims is not None)
        den = (support * d).sum(dim=dims, keepdim=dims is not None)
        new_alpha = torch.where(den > 0, num / den, torch.zeros_like(num))
        codes = _ternary_codes(w, new_alpha / 2)
        converged = alpha is not None and tol is not None and bool(((new_alpha - alpha).abs() < tol).all())
        alpha = new_alpha
        if converged:
            break
    return TernaryWeights(codes=codes, alpha=alpha, delta=alpha / 2, granularity=granularity)


# -- activations -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SymmetricActivations:
    """Signed activation codes and their per-tensor multiplier: ``x ≈ codes / s`` (codes in ``±(2^(b-1)-1)``)."""

    codes: torch.Tensor
    s: torch.Tensor
    bits: int

    def dequantized(self, dtype=None) -> torch.Tensor:
        """``codes / s`` in ``dtype`` (default: the input's), exactly the official ``round(x·s).div(s)``."""
        dtype = self.s.dtype if dtype is None else dtype
        return self.codes.to(dtype) / self.s.to(dtype)


@dataclass(frozen=True)
class MinMaxActivations:
    """Unsigned activation codes of the paper's min-max quantizer: ``x ≈ codes · step + x_min``."""

    codes: torch.Tensor
    step: torch.Tensor
    x_min: torch.Tensor
    bits: int

    def dequantized(self, dtype=None) -> torch.Tensor:
        dtype = self.step.dtype if dtype is None else dtype
        return self.codes.to(dtype) * self.step.to(dtype) + self.x_min.to(dtype)


def _symmetric_codes(x_clipped: torch.Tensor, s: torch.Tensor, bits: int, name: str) -> torch.Tensor:
    qmax = 2 ** (bits - 1) - 1
    codes = torch.round(x_clipped * s)
    if codes.abs().max() > qmax:
        raise ValueError(f"{name}: scale s = {s.item()!r} maps max|x| = {x_clipped.abs().max().item()!r} to "
                         f"{codes.abs().max().item()!r}, beyond the {bits}-bit code range ±{qmax}")
    return codes.to(torch.int8 if bits <= 8 else torch.int16)


def quantize_symmetric(x: torch.Tensor, *, clip_val: float | None = CLIP_VAL, bits: int = ACT_BITS,
                       name: str = "activations") -> SymmetricActivations:
    """Official ``SymQuantizer`` (layer-wise): clip, ``s = (2^(b-1)-1) / max|x|`` over the whole tensor,
    ``codes = round(x·s)`` (half to even).

    ``s`` is computed as ``int / tensor`` like the official code (PyTorch evaluates that as ``reciprocal(t)·int``),
    in the input's dtype. An all-zero tensor gets ``s = 2^(b-1)-1`` and zero codes (official: NaN).
    """
    clip_val = _check_clip_val(clip_val)
    bits = _check_bits(bits)
    _check_tensor(name, x)
    xc = _clip(x.detach(), clip_val)
    max_abs = xc.abs().max()
    max_abs = torch.where(max_abs > 0, max_abs, torch.ones_like(max_abs))
    s = (2 ** (bits - 1) - 1) / max_abs
    if not torch.isfinite(s):
        raise ValueError(f"{name}: max|x| = {max_abs.item()!r} is too small to scale in {x.dtype}")
    return SymmetricActivations(codes=_symmetric_codes(xc, s, bits, name), s=s, bits=bits)


def quantize_minmax(x: torch.Tensor, *, clip_val: float | None = CLIP_VAL, bits: int = ACT_BITS,
                    name: str = "activations") -> MinMaxActivations:
    """The paper's asymmetric min-max quantizer, per tensor: ``step = (x_max - x_min) / (2^b - 1)``,
    ``codes = round((x - x_min) / step)`` in ``[0, 2^b - 1]`` (half to even).

    The same clip as the official quantizers is applied first (``clip_val=None`` for the bare paper formula).
    A constant tensor gets ``step = 1`` and zero codes, so it dequantizes to ``x_min`` exactly.
    """
    clip_val = _check_clip_val(clip_val)
    bits = _check_bits(bits)
    _check_tensor(name, x)
    xc = _clip(x.detach(), clip_val)
    x_min, x_max = xc.min(), xc.max()
    levels = 2 ** bits - 1
    step = (x_max - x_min) / levels
    step = torch.where(step > 0, step, torch.ones_like(step))
    codes = torch.round((xc - x_min) / step).clamp(0, levels)
    return MinMaxActivations(codes=codes.to(torch.uint8 if bits <= 8 else torch.int32), step=step, x_min=x_min,
                             bits=bits)


def quantize_activations(x: torch.Tensor, *, mode: ActMode = "symmetric", clip_val: float | None = CLIP_VAL,
                         bits: int = ACT_BITS, name: str = "activations"):
    """Integer codes of ``x``: :func:`quantize_symmetric` (official, default) or :func:`quantize_minmax` (paper)."""
    _check_act_mode(mode)
    quantize = quantize_symmetric if mode == "symmetric" else quantize_minmax
    return quantize(x, clip_val=clip_val, bits=bits, name=name)


def fake_quantize_activations(x: torch.Tensor, *, mode: ActMode = "symmetric", clip_val: float | None = CLIP_VAL,
                              bits: int = ACT_BITS, name: str = "activations") -> torch.Tensor:
    """Quantize-dequantize ``x`` in its dtype, with the official clipped straight-through gradient."""
    _check_act_mode(mode)
    clip_val = _check_clip_val(clip_val)

    def quantize(t):
        return quantize_activations(t, mode=mode, clip_val=clip_val, bits=bits, name=name).dequantized(t.dtype)

    return _ClippedSTE.apply(x, quantize, clip_val)


# -- float reference layers --------------------------------------------------------------------------------

class TernaryLinear(nn.Linear):
    """Float reference of the official ``QuantizeLinear``: TWN weights times fake-quantized inputs, then bias.

    ``y = F.linear(Q_a(x), alpha·t) + b``. The activation scale is one per call over the whole input (every
    token of every sequence), so results depend on what is batched together, as in the official code. Both
    quantizers use the clipped straight-through gradient of the official code; ``clip_val`` applies to weights
    and activations alike (one ``--clip_val`` in the official scripts).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 granularity: Granularity = "layer", act_mode: ActMode = "symmetric",
                 clip_val: float | None = CLIP_VAL, act_bits: int = ACT_BITS, device=None, dtype=None):
        _check_granularity(granularity)
        _check_act_mode(act_mode)
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.granularity = granularity
        self.act_mode = act_mode
        self.clip_val = _check_clip_val(clip_val)
        self.act_bits = _check_bits(act_bits)

    @classmethod
    def from_linear(cls, linear: nn.Linear, **opts) -> "TernaryLinear":
        """A TernaryLinear holding a copy of ``linear``'s weight and bias; ``opts`` go to the constructor."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_linear needs an nn.Linear, not {type(linear).__name__}")
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                    device=linear.weight.device, dtype=linear.weight.dtype, **opts)
        with torch.no_grad():
            layer.weight.copy_(linear.weight)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    def ternary_weights(self) -> TernaryWeights:
        """The current weight's codes and scale (no gradient)."""
        return twn_ternarize(self.weight, granularity=self.granularity, clip_val=self.clip_val)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1:] != (self.in_features,):
            raise ValueError(f"input has shape {tuple(x.shape)}; its last dimension must be {self.in_features}")

        def quantize(w):
            return twn_ternarize(w, granularity=self.granularity, clip_val=self.clip_val).dequantized(w.dtype)

        w_q = _ClippedSTE.apply(self.weight, quantize, self.clip_val)
        x_q = fake_quantize_activations(x, mode=self.act_mode, clip_val=self.clip_val, bits=self.act_bits,
                                        name="input")
        out = F.linear(x_q, w_q)
        # The official layer adds the bias after the product (not fused into addmm).
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, granularity={self.granularity}, act_mode={self.act_mode}, "
                f"clip_val={self.clip_val}, act_bits={self.act_bits}")


class TernaryEmbedding(nn.Embedding):
    """Float reference of the official ``QuantizeEmbedding``: row-wise TWN of the table, clipped STE."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None, *,
                 clip_val: float | None = CLIP_VAL, device=None, dtype=None):
        super().__init__(num_embeddings, embedding_dim, padding_idx=padding_idx, device=device, dtype=dtype)
        self.clip_val = _check_clip_val(clip_val)

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding, **opts) -> "TernaryEmbedding":
        """A TernaryEmbedding holding a copy of ``embedding``'s table (and its padding index)."""
        if not isinstance(embedding, nn.Embedding):
            raise TypeError(f"from_embedding needs an nn.Embedding, not {type(embedding).__name__}")
        layer = cls(embedding.num_embeddings, embedding.embedding_dim, padding_idx=embedding.padding_idx,
                    device=embedding.weight.device, dtype=embedding.weight.dtype, **opts)
        with torch.no_grad():
            layer.weight.copy_(embedding.weight)
        return layer

    def ternary_weights(self) -> TernaryWeights:
        return ternarize_embedding(self.weight, clip_val=self.clip_val)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        def quantize(w):
            return ternarize_embedding(w, clip_val=self.clip_val).dequantized(w.dtype)

        w_q = _ClippedSTE.apply(self.weight, quantize, self.clip_val)
        return F.embedding(input_ids, w_q, self.padding_idx, self.max_norm, self.norm_type,
                           self.scale_grad_by_freq, self.sparse)


# -- attention ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class QuantizedAttention:
    """Result of :func:`quantize_attention` (all ``[batch, heads, seq, ·]``).

    ``scores`` is ``QqKqᵀ/√d_h + mask`` before softmax: the tensor the official code returns and distils.
    ``probs`` is the softmax before quantization, ``context`` is ``Pq·Vq`` (heads not merged). ``q``, ``k``,
    ``v`` and ``p`` are the integer codes and per-tensor multipliers of the four quantized operands.
    """

    context: torch.Tensor
    scores: torch.Tensor
    probs: torch.Tensor
    q: SymmetricActivations
    k: SymmetricActivations
    v: SymmetricActivations
    p: SymmetricActivations


def quantize_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, *,
                       clip_val: float | None = CLIP_VAL, bits: int = ACT_BITS) -> QuantizedAttention:
    """Scaled dot-product attention with the official quantization points, on ``[batch, heads, seq, d_h]``.

    Q and K are fake-quantized (symmetric 8-bit, one scale per tensor over all batches and heads) before
    ``QKᵀ``; ``scores = QqKqᵀ/√d_h + mask``; ``P = softmax(scores)``; P and V are fake-quantized before ``P·V``.
    ``mask`` is additive and broadcastable to ``[batch, heads, seq_q, seq_k]`` (BERT: 0 to keep, -10000 for
    padding). Softmax stays in floating point. Attention dropout (official: on P before quantization) is left
    out: this is the evaluation-mode forward. Gradients use the clipped straight-through estimator.
    """
    clip_val = _check_clip_val(clip_val)
    bits = _check_bits(bits)
    for name, t in (("q", q), ("k", k), ("v", v)):
        _check_tensor(name, t)
        if t.dim() != 4:
            raise ValueError(f"{name} must be [batch, heads, seq, d_h], but has shape {tuple(t.shape)}")
    if k.shape != v.shape or q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)} and v {tuple(v.shape)} do not form attention "
                         "(k and v must match; batch, heads and d_h must agree with q)")
    scores_shape = (*q.shape[:3], k.shape[2])
    if mask is not None:
        _check_tensor("mask", mask)
        try:
            ok = torch.broadcast_shapes(mask.shape, scores_shape) == scores_shape
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to the scores "
                             f"{scores_shape}")

    records = {}

    def fake(name, t):
        def quantize(x):
            records[name] = quantize_symmetric(x, clip_val=clip_val, bits=bits, name=name)
            return records[name].dequantized(x.dtype)
        return _ClippedSTE.apply(t, quantize, clip_val)

    q_f, k_f = fake("q", q), fake("k", k)
    scores = torch.matmul(q_f, k_f.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores + mask
    probs = torch.softmax(scores, dim=-1)
    context = torch.matmul(fake("p", probs), fake("v", v))
    return QuantizedAttention(context=context, scores=scores, probs=probs, **records)


# -- distillation ------------------------------------------------------------------------------------------

def _check_pair(name: str, student: torch.Tensor, teacher: torch.Tensor) -> None:
    _check_tensor(f"student {name}", student)
    _check_tensor(f"teacher {name}", teacher)
    if student.shape != teacher.shape:
        raise ValueError(f"student {name} has shape {tuple(student.shape)}, teacher {tuple(teacher.shape)}")


def _check_layers(name: str, student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor]) -> None:
    if isinstance(student, torch.Tensor) or isinstance(teacher, torch.Tensor):
        raise TypeError(f"{name} must be sequences of per-layer tensors, not a single tensor")
    if len(student) != len(teacher) or len(student) == 0:
        raise ValueError(f"{name}: the student gives {len(student)} layers, the teacher {len(teacher)}; "
                         "they must be equal and non-zero")
    for i, (s, t) in enumerate(zip(student, teacher)):
        _check_pair(f"{name}[{i}]", s, t)


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """``mean over examples of -Σ_c softmax(teacher)_c · log_softmax(student)_c`` (the official L_pred for
    classification). The teacher is detached."""
    _check_pair("logits", student_logits, teacher_logits)
    targets = torch.softmax(teacher_logits.detach(), dim=-1)
    return torch.sum(-targets * F.log_softmax(student_logits, dim=-1), dim=-1).mean()


def prediction_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *,
                    regression: bool = False) -> torch.Tensor:
    """L_pred: soft cross-entropy for classification, MSE of the logits for regression (STS-B)."""
    if regression:
        _check_pair("logits", student_logits, teacher_logits)
        return F.mse_loss(student_logits, teacher_logits.detach())
    return soft_cross_entropy(student_logits, teacher_logits)


def hidden_state_loss(student_hidden: Sequence[torch.Tensor],
                      teacher_hidden: Sequence[torch.Tensor]) -> torch.Tensor:
    """``Σ_l MSE(H_l^S, H_l^T)`` over the L+1 hidden states (embedding output first, then every layer)."""
    _check_layers("hidden states", student_hidden, teacher_hidden)
    return sum(F.mse_loss(s, t.detach()) for s, t in zip(student_hidden, teacher_hidden))


def attention_score_loss(student_scores: Sequence[torch.Tensor], teacher_scores: Sequence[torch.Tensor], *,
                         masked_below: float = ATTENTION_MASKED_BELOW) -> torch.Tensor:
    """``Σ_l MSE(A_l^S, A_l^T)`` on the pre-softmax, masked attention scores (:attr:`QuantizedAttention.scores`).

    As in the official script, entries ``<= masked_below`` (-100: the -10000 padding mask) are set to 0 in both
    tensors first, so padded keys add nothing; the mean still counts them.
    """
    _check_layers("attention scores", student_scores, teacher_scores)

    def unmask(a):
        return torch.where(a <= masked_below, torch.zeros_like(a), a)

    return sum(F.mse_loss(unmask(s), unmask(t.detach())) for s, t in zip(student_scores, teacher_scores))


@dataclass(frozen=True)
class DistillationLoss:
    """``total = hidden + attention + prediction`` (L = L_trm + L_pred); disabled parts are 0."""

    total: torch.Tensor
    hidden: torch.Tensor
    attention: torch.Tensor
    prediction: torch.Tensor


def distillation_loss(*, student_logits: torch.Tensor | None = None, teacher_logits: torch.Tensor | None = None,
                      student_hidden: Sequence[torch.Tensor] | None = None,
                      teacher_hidden: Sequence[torch.Tensor] | None = None,
                      student_scores: Sequence[torch.Tensor] | None = None,
                      teacher_scores: Sequence[torch.Tensor] | None = None,
                      regression: bool = False) -> DistillationLoss:
    """The paper's distillation objective ``L = L_trm + L_pred`` with ``L_trm = Σ MSE(H) + Σ MSE(A)``.

    Give logits for L_pred (official ``--pred_distill``) and hidden states plus attention scores for L_trm
    (``--intermediate_distill``); at least one group is required, and each group needs both student and teacher.
    """
    groups = {"logits": (student_logits, teacher_logits), "hidden states": (student_hidden, teacher_hidden),
              "attention scores": (student_scores, teacher_scores)}
    for name, (s, t) in groups.items():
        if (s is None) != (t is None):
            raise ValueError(f"{name}: give both the student's and the teacher's, or neither")
    if (student_hidden is None) != (student_scores is None):
        raise ValueError("L_trm needs both hidden states and attention scores, or neither")
    if student_logits is None and student_hidden is None:
        raise ValueError("nothing to distil: give logits (L_pred) and/or hidden states and attention scores "
                         "(L_trm)")
    zero = torch.zeros(())
    pred = zero if student_logits is None else prediction_loss(student_logits, teacher_logits,
                                                               regression=regression)
    hidden = zero if student_hidden is None else hidden_state_loss(student_hidden, teacher_hidden)
    attention = zero if student_scores is None else attention_score_loss(student_scores, teacher_scores)
    return DistillationLoss(total=pred + hidden + attention, hidden=hidden, attention=attention, prediction=pred)


# -- integer hardware views --------------------------------------------------------------------------------

def _acc_f32(acc) -> torch.Tensor:
    return torch.from_numpy(np.asarray(acc, np.int64)).to(torch.float32)


def linear_view(weight, x: torch.Tensor, *, bias: torch.Tensor | None = None, granularity: Granularity = "layer",
                act_mode: ActMode = "symmetric", clip_val: float | None = CLIP_VAL,
                act_bits: int = ACT_BITS) -> LinearView:
    """Integer view of a :class:`TernaryLinear` on ``x`` ``[tokens, in]``: one ternary × int pass.

    ``weight`` is a float ``[out, in]`` matrix (TWN with ``granularity`` and ``clip_val``) or ready
    :class:`TernaryWeights` (for instance from :func:`lat_ternarize`). The activation scale is one per call over
    all ``tokens``, as the float reference computes it.

    * ``act_mode="symmetric"`` (official): codes in ``±(2^(b-1)-1)``, ``y = alpha · acc / s (+ b)``.
    * ``act_mode="minmax"`` (paper): unsigned codes ``u`` in ``[0, 2^b-1]``,
      ``y = alpha · (step · acc + x_min · Σ_j t_oj) (+ b)``; the zero-point term is a per-row weight constant.
    """
    _check_act_mode(act_mode)
    clip_val = _check_clip_val(clip_val)
    if isinstance(weight, TernaryWeights):
        tw = weight
        check_matrix("weight codes", tw.codes)
    else:
        _check_tensor("weight", weight)
        check_matrix("weight", weight)
        tw = twn_ternarize(weight.float(), granularity=granularity, clip_val=clip_val)
    out_features, in_features = tw.codes.shape
    _check_tensor("x", x)
    check_matrix("x", x, columns=in_features)
    b = None
    if bias is not None:
        _check_tensor("bias", bias)
        if tuple(bias.shape) != (out_features,):
            raise ValueError(f"bias has shape {tuple(bias.shape)} but the layer has {out_features} outputs")
        b = bias.detach().float()
    alpha = tw.alpha.detach().float().reshape(-1)          # [1] or [out]: broadcasts along the output axis
    w_codes = tw.codes.numpy()
    if act_mode == "symmetric":
        xq = quantize_symmetric(x.detach().float(), clip_val=clip_val, bits=act_bits, name="x")
        qmax = 2 ** (xq.bits - 1) - 1
        s = xq.s

        def rescale(acc):
            y = _acc_f32(acc["main"]) / s * alpha
            return (y if b is None else y + b).numpy()

        main = IntPass("main", UnitKind.TERNARY_MAC, w_codes, xq.codes.numpy(), WEIGHT_BITS, xq.bits,
                       weight_range=(-1, 1), act_range=(-qmax, qmax))
        notes = "per-tensor activation scale: a max|x| reduction over every token precedes quantization"
    else:
        xq = quantize_minmax(x.detach().float(), clip_val=clip_val, bits=act_bits, name="x")
        step, x_min = xq.step, xq.x_min
        row_sums = torch.from_numpy(w_codes.astype(np.int64).sum(axis=1)).to(torch.float32)   # Σ_j t_oj

        def rescale(acc):
            y = (_acc_f32(acc["main"]) * step + x_min * row_sums) * alpha
            return (y if b is None else y + b).numpy()

        main = IntPass("main", UnitKind.TERNARY_MAC, w_codes, xq.codes.numpy(), WEIGHT_BITS, xq.bits,
                       act_signed=False, weight_range=(-1, 1))
        notes = ("min-max activations: unsigned codes; the zero point adds alpha·x_min·Σ_j t_oj per output; "
                 "min and max reductions over every token precede quantization")
    return LinearView(SCHEME, UnitKind.TERNARY_MAC, (main,), rescale, in_features, out_features, x.shape[0],
                      notes=notes)


def _head_codes(name: str, x: torch.Tensor, scale, clip_val: float | None, bits: int) -> SymmetricActivations:
    """Symmetric codes of one head's operand, with the whole tensor's multiplier when ``scale`` is given."""
    if scale is None:
        return quantize_symmetric(x.detach().float(), clip_val=clip_val, bits=bits, name=name)
    s = torch.as_tensor(scale, dtype=torch.float32).detach().cpu()
    if s.numel() != 1 or not torch.isfinite(s).all() or not (s > 0).all():
        raise ValueError(f"{name}_scale must be one positive finite multiplier, not {scale!r}")
    s = s.reshape(())
    xc = _clip(x.detach().float(), clip_val)
    return SymmetricActivations(codes=_symmetric_codes(xc, s, bits, name), s=s, bits=bits)


def qk_view(q: torch.Tensor, k: torch.Tensor, *, mask: torch.Tensor | None = None, q_scale=None, k_scale=None,
            clip_val: float | None = CLIP_VAL, bits: int = ACT_BITS) -> MatmulView:
    """Integer view of one head's attention scores ``QqKqᵀ/√d_h (+ mask)``; ``q`` ``[seq_q, d_h]``, ``k``
    ``[seq_k, d_h]``.

    One int8 × int8 pass (``acc[i, j] = Σ_d qc[i, d]·kc[j, d]``) on the multiplier unit, then
    ``acc / s_q / s_k / √d_h``. The official scales are per tensor over all batches and heads: pass them as
    ``q_scale``/``k_scale`` (``quantize_attention(...).q.s``); without them the head's own max is used.
    """
    clip_val = _check_clip_val(clip_val)
    bits = _check_bits(bits)
    _check_tensor("q", q)
    _check_tensor("k", k)
    check_matrix("q", q)
    check_matrix("k", k, columns=q.shape[1])
    m = None
    if mask is not None:
        _check_tensor("mask", mask)
        shape = (q.shape[0], k.shape[0])
        try:
            ok = torch.broadcast_shapes(mask.shape, shape) == shape
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to the scores {shape}")
        m = mask.detach().float()
    qq = _head_codes("q", q, q_scale, clip_val, bits)
    kq = _head_codes("k", k, k_scale, clip_val, bits)
    qmax = 2 ** (bits - 1) - 1
    sqrt_d = math.sqrt(q.shape[1])

    def rescale(acc):
        y = _acc_f32(acc["qk"]) / qq.s / kq.s / sqrt_d
        return (y if m is None else y + m).numpy()

    p = IntPass("qk", UnitKind.INT8_MAC, kq.codes.numpy(), qq.codes.numpy(), bits, bits,
                weight_range=(-qmax, qmax), act_range=(-qmax, qmax))
    return MatmulView(SCHEME, UnitKind.INT8_MAC, (p,), rescale,
                      notes="weight operand = K codes, activation operand = Q codes; softmax follows on FP")


def av_view(probs: torch.Tensor, v: torch.Tensor, *, probs_scale=None, v_scale=None,
            clip_val: float | None = CLIP_VAL, bits: int = ACT_BITS) -> MatmulView:
    """Integer view of one head's context ``Pq·Vq``; ``probs`` ``[seq_q, seq_k]`` (softmax output, in [0, 1]),
    ``v`` ``[seq_k, d_h]``.

    One int8 × int8 pass (``acc[i, d] = Σ_j pc[i, j]·vc[j, d]``; probability codes are in ``[0, 2^(b-1)-1]``), then
    ``acc / s_p / s_v``. Pass the whole tensors' multipliers as ``probs_scale``/``v_scale``
    (``quantize_attention(...).p.s`` and ``.v.s``) to match the official per-tensor scales.
    """
    clip_val = _check_clip_val(clip_val)
    bits = _check_bits(bits)
    _check_tensor("probs", probs)
    _check_tensor("v", v)
    check_matrix("probs", probs)
    check_matrix("v", v)
    if probs.shape[1] != v.shape[0]:
        raise ValueError(f"probs {tuple(probs.shape)} and v {tuple(v.shape)} do not form a product")
    if probs.min() < 0 or probs.max() > 1:
        raise ValueError(f"probs must lie in [0, 1] (a softmax output), but span "
                         f"[{probs.min().item()!r}, {probs.max().item()!r}]")
    pq = _head_codes("probs", probs, probs_scale, clip_val, bits)
    vq = _head_codes("v", v, v_scale, clip_val, bits)
    qmax = 2 ** (bits - 1) - 1

    def rescale(acc):
        return (_acc_f32(acc["av"]) / pq.s / vq.s).numpy()

    p = IntPass("av", UnitKind.INT8_MAC, vq.codes.numpy().T.copy(), pq.codes.numpy(), bits, bits,
                weight_range=(-qmax, qmax), act_range=(0, qmax))
    return MatmulView(SCHEME, UnitKind.INT8_MAC, (p,), rescale,
                      notes="weight operand = Vᵀ codes, activation operand = P codes (non-negative)")
