"""QBB (Bulat, Ouali, Tzimiropoulos, NeurIPS 2024): weights as a sum of scaled binary bases.

``W ≈ Σ_{i<N} α_i ⊙ B_i`` with ``B_i ∈ {-1, +1}^(out×in)`` and ``α_i`` one scale per output channel
(quantization.md §1.5). A linear layer becomes ``y = Σ_i α_i ⊙ (B_i·x) + b``: N sign-controlled accumulations
(additions only) and N scalings per output. There is no official code; this reference follows the paper as
far as its text is known and states every choice that fills a gap:

1. **Analytic cascaded initialisation** (:func:`qbb_init`): ``R_0 = W``; ``B_i = sign(R_{i-1})``,
   ``α_i = mean_j |R_{i-1}[:, j]|``, ``R_i = R_{i-1} − α_i ⊙ B_i``. The paper writes
   ``α = (1/c_out)·‖Δ‖_{ℓ1,col}``, a vector with one entry per output channel; we read it as the mean of
   |Δ| over each output channel's row, i.e. divided by ``in`` (the least-squares scale for ``B = sign(Δ)``,
   as in XNOR-Net).
   The bases must be ±1, so ``sign(0)`` follows ``zero_policy`` ``"pos"`` (+1, default) or ``"neg"``;
   ``"torch"`` (0) is refused.
2. **Layer-wise, input-agnostic refinement** (:func:`qbb_refine`): gradient descent on
   ``‖W − Σ α_i B_i‖²`` with a progressive curriculum of N phases; phase i trains ``B_i`` through latent
   weights and a straight-through sign, the other bases frozen, and all scales train in every phase.
   The best state seen is kept, so the error never increases.
3. **Data-free distillation of the scales** (:class:`QBBLinear`, :func:`distill_scales`): only the scales
   of the QBB layers train, on random token sequences (or teacher continuations of random start tokens),
   filtered to those with the largest teacher–student gap, with an output-MSE loss and optional random
   swapping of teacher blocks into the student.

:func:`linear_view` is the integer hardware view. QBB keeps FP16 activations; an integer datapath needs
integer ones, so the view quantizes x per token (symmetric absmax) — a deviation stated in its ``notes``.
"""

import functools
import math
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .quant import ZERO_POLICIES, IntCodes, count_zeros, quantize_per_token, sign
from .units import UnitKind
from .validate import check_finite, check_matrix, check_positive_int
from .views import IntPass, LinearView

__all__ = [
    "DEFAULT_N_BASES",
    "QBBWeights",
    "qbb_init",
    "qbb_refine",
    "optimal_scales",
    "reconstruction_error",
    "average_bits",
    "QBBLinear",
    "quantize_linear",
    "distill_scales",
    "QBBActivations",
    "quantize_activations",
    "linear_view",
    "linear_view_from_weights",
]

#: Number of binary bases in the paper's analyses (N = 4 holds a 4-bit uniform grid exactly).
DEFAULT_N_BASES = 4
#: Default refinement length per phase and Adam step (the latter in units of the power-of-two-normalised weight).
DEFAULT_REFINE_STEPS = 100
DEFAULT_REFINE_LR = 1e-3
#: Smallest latent margin at the start of a phase, in normalised units: keeps sign(latent) = B_i exactly there.
_LATENT_FLOOR = 1e-3

BasesZeroPolicy = Literal["pos", "neg"]


def _check_zero_policy(zero_policy) -> None:
    if zero_policy == "torch":
        raise ValueError("zero_policy 'torch' would put sign(0) = 0 into a basis; QBB bases must be ±1, so use "
                         "'pos' (0 → +1) or 'neg' (0 → -1)")
    if zero_policy not in ZERO_POLICIES:
        raise ValueError(f"zero_policy must be 'pos' or 'neg', not {zero_policy!r}")


def _check_float_tensor(name: str, t) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, not {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, not {t.dtype}")


def _check_weight(weight) -> None:
    _check_float_tensor("weight", weight)
    check_matrix("weight", weight)
    check_finite("weight", weight)


def _check_positive_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a positive number, not {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, not {value!r}")
    return float(value)


def _check_steps(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a non-negative integer, not {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be a non-negative integer, not {value!r}")
    return int(value)


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, not {seed!r}")
    return int(seed)


def _check_bias(bias, out_features: int) -> None:
    if bias is None:
        return
    _check_float_tensor("bias", bias)
    if tuple(bias.shape) != (out_features,):
        raise ValueError(f"bias has shape {tuple(bias.shape)} but ({out_features},) is needed")
    check_finite("bias", bias)


# -- the representation ---------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class QBBWeights:
    """N binary bases and their per-output-channel scales: ``W ≈ Σ_i scales[i][:, None] · bases[i]``.

    Attributes
    ----------
    bases : int8 tensor ``[N, out, in]``, values in {-1, +1}.
    scales : float tensor ``[N, out]`` (float32 from this module).
    sign_zeros : how many exact zeros the sign function met while the bases were produced (resolved by
        ``zero_policy``); 0 for bases built elsewhere.
    """

    bases: torch.Tensor
    scales: torch.Tensor
    sign_zeros: int = 0

    def __post_init__(self):
        b, s = self.bases, self.scales
        if not isinstance(b, torch.Tensor) or b.dtype != torch.int8 or b.ndim != 3:
            raise TypeError(f"bases must be an int8 tensor [N, out, in], not "
                            f"{getattr(b, 'dtype', type(b).__name__)} of shape {tuple(getattr(b, 'shape', ()))}")
        if 0 in b.shape:
            raise ValueError(f"bases must not be empty, but have shape {tuple(b.shape)}")
        bad = (b != 1) & (b != -1)
        if bad.any():
            first = tuple(int(i) for i in bad.nonzero()[0])
            raise ValueError(f"bases must be ±1, but hold {int(b[first])} at index {first}")
        _check_float_tensor("scales", s)
        if tuple(s.shape) != tuple(b.shape[:2]):
            raise ValueError(f"scales have shape {tuple(s.shape)} but bases {tuple(b.shape)} need {tuple(b.shape[:2])}")
        check_finite("scales", s)

    @property
    def n_bases(self) -> int:
        return self.bases.shape[0]

    @property
    def out_features(self) -> int:
        return self.bases.shape[1]

    @property
    def in_features(self) -> int:
        return self.bases.shape[2]

    def dequantized(self, dtype=torch.float32) -> torch.Tensor:
        """``Σ_i α_i ⊙ B_i`` ``[out, in]``, summed in basis order in ``dtype``."""
        s = self.scales.to(dtype)
        w = torch.zeros(self.bases.shape[1:], dtype=dtype)
        for i in range(self.n_bases):
            w = w + s[i, :, None] * self.bases[i].to(dtype)
        return w

    def average_bits(self, scale_bits: int = 16) -> float:
        """Storage bits per weight: see :func:`average_bits`."""
        return average_bits(self.in_features, n_bases=self.n_bases, scale_bits=scale_bits)


def average_bits(in_features: int, *, n_bases: int = DEFAULT_N_BASES, scale_bits: int = 16) -> float:
    """Bits per weight of a QBB layer: N bits per weight plus N scales of ``scale_bits`` per output row.

    ``(N·out·in + N·out·scale_bits) / (out·in) = N + N·scale_bits/in`` (bias not counted); e.g. N = 4,
    in = 4096, FP16 scales: 4 + 64/4096 = 4.015625.
    """
    in_features = check_positive_int("in_features", in_features)
    n_bases = check_positive_int("n_bases", n_bases)
    scale_bits = check_positive_int("scale_bits", scale_bits)
    return n_bases + n_bases * scale_bits / in_features


def reconstruction_error(weight: torch.Tensor, qbb: QBBWeights) -> float:
    """``‖W − Σ α_i B_i‖²`` (sum of squares over the whole matrix), in float64."""
    _check_weight(weight)
    _check_same_shape(weight, qbb)
    diff = weight.detach().double() - qbb.dequantized(torch.float64)
    return float((diff * diff).sum())


def _check_same_shape(weight: torch.Tensor, qbb: QBBWeights) -> None:
    if not isinstance(qbb, QBBWeights):
        raise TypeError(f"qbb must be QBBWeights, not {type(qbb).__name__}")
    if tuple(weight.shape) != (qbb.out_features, qbb.in_features):
        raise ValueError(f"weight has shape {tuple(weight.shape)} but the bases are "
                         f"[{qbb.out_features}, {qbb.in_features}] ([out, in])")


# -- stage 1: analytic cascaded initialisation ----------------------------------------------------------------

def qbb_init(weight: torch.Tensor, n_bases: int = DEFAULT_N_BASES, *,
             zero_policy: BasesZeroPolicy = "pos") -> QBBWeights:
    """Cascaded initialisation: each basis binarizes the residual the previous ones left.

    ``R_0 = W``; for i = 1..N: ``B_i = sign(R_{i-1})``, ``α_i = mean_j |R_{i-1}[:, j]|`` (per output row),
    ``R_i = R_{i-1} − α_i ⊙ B_i``. Each step lowers the squared error of row r by exactly ``in·α_{i,r}²``, so
    the error never grows with N. Computed in float32 (``weight`` is converted).

    ``zero_policy`` says where ``sign(0)`` goes (``"pos"`` → +1, default; ``"neg"`` → -1): bases must be ±1,
    and the paper does not say. An all-zero row gets ``B = ±1`` and ``α = 0``.
    """
    _check_weight(weight)
    n_bases = check_positive_int("n_bases", n_bases)
    _check_zero_policy(zero_policy)
    residual = weight.detach().to(torch.float32)
    bases = torch.empty((n_bases, *residual.shape), dtype=torch.int8)
    scales = torch.empty((n_bases, residual.shape[0]), dtype=torch.float32)
    zeros = 0
    for i in range(n_bases):
        zeros += count_zeros(residual)
        b = sign(residual, zero_policy)
        alpha = residual.abs().mean(dim=1)
        bases[i] = b.to(torch.int8)
        scales[i] = alpha
        residual = residual - alpha[:, None] * b
    return QBBWeights(bases=bases, scales=scales, sign_zeros=zeros)


# -- stage 2: layer-wise refinement ---------------------------------------------------------------------------

def optimal_scales(weight: torch.Tensor, bases: torch.Tensor) -> torch.Tensor:
    """Least-squares scales for fixed bases: per output row r, ``argmin_a ‖W[r] − Σ_i a_i·B_i[r]‖²``.

    Solves the N×N normal equations ``G a = c`` (``G_ij = B_i[r]·B_j[r]``, ``c_i = B_i[r]·W[r]``) in float64
    with a pseudo-inverse, so rank-deficient rows (e.g. two equal bases) get the minimum-norm solution, as
    ``numpy.linalg.lstsq`` does. Returns float32 ``[N, out]``.
    """
    _check_weight(weight)
    if not isinstance(bases, torch.Tensor) or bases.ndim != 3 or bases.is_floating_point() or bases.is_complex():
        raise TypeError(f"bases must be an integer tensor [N, out, in], not {getattr(bases, 'dtype', type(bases))}"
                        f" of shape {tuple(getattr(bases, 'shape', ()))}")
    if tuple(bases.shape[1:]) != tuple(weight.shape):
        raise ValueError(f"bases have shape {tuple(bases.shape)} but weight {tuple(weight.shape)} needs "
                         f"[N, {weight.shape[0]}, {weight.shape[1]}]")
    b = bases.to(torch.float64).transpose(0, 1)            # [out, N, in]
    gram = b @ b.transpose(1, 2)                           # [out, N, N], exact integers
    rhs = b @ weight.detach().to(torch.float64)[:, :, None]
    return (torch.linalg.pinv(gram, hermitian=True) @ rhs)[:, :, 0].T.to(torch.float32).contiguous()


def _power_of_two_below(x: float) -> float:
    """Largest power of two <= x (x > 0): dividing by it is exact, so the refinement is scale-free for free."""
    mantissa, exponent = math.frexp(x)                     # x = mantissa·2^exponent, mantissa in [0.5, 1)
    return math.ldexp(1.0, exponent - 1)


def _sign_ste(latent: torch.Tensor, zero_policy: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(hard, ste)``: the ±1 signs, and the same values carrying the identity gradient to ``latent``.

    Identity, not clipped: the latent weights are unbounded (they live on the weight's scale), so there is no
    [-1, 1] box to clip the gradient to. ``hard + (latent − latent)`` keeps the forward value exactly ±1.
    """
    hard = sign(latent.detach(), zero_policy)
    return hard, hard + (latent - latent.detach())


def _closed_form(w, bases_f, scales, err, sse):
    """The least-squares scales for ``bases_f`` if they lower the error, else the current ones."""
    candidate = optimal_scales(w, bases_f.to(torch.int8))
    candidate_err = sse(bases_f, candidate)
    return (candidate_err, candidate) if candidate_err < err else (err, scales)


def _qbb_refine(weight: torch.Tensor, qbb: QBBWeights, *, steps_per_phase: int = DEFAULT_REFINE_STEPS,
               lr: float = DEFAULT_REFINE_LR, seed: int = 0, zero_policy: BasesZeroPolicy = "pos",
               closed_form_scales: bool = False) -> QBBWeights:
    """Refine bases and scales by gradient descent on ``‖W − Σ α_i B_i‖²`` with a progressive curriculum.

    N phases, in basis order. Phase i trains ``B_i = sign(L_i)`` through latent weights ``L_i`` (identity
    straight-through estimator) with the other bases frozen, and all scales in every phase (block-coordinate
    descent, as the paper describes); each phase has a fresh Adam optimiser and runs ``steps_per_phase`` steps.
    ``L_i`` starts at ``B_i ⊙ max(|R_{i-1}|, floor)`` with ``R_{i-1} = W − Σ_{j<i} α_j B_j``, the residual the
    cascade binarized, so ``sign(L_i) = B_i`` at the start and weights near the cascade's decision boundary
    flip first. Our choices where the paper is silent: that latent, Adam, the phase order and a normalisation
    of W by the power of two just below mean|W| (exact, so ``lr`` is relative to the weight's scale).

    The state with the least error seen (including ``qbb`` itself) is kept, and each phase starts from it,
    so the returned error is never above the input's. With ``closed_form_scales=True`` (not in the paper)
    the scales are also replaced by :func:`optimal_scales` for the current bases before the first phase and
    after every phase, whenever that lowers the error.

    ``seed`` is accepted for symmetry with :func:`distill_scales`: the full-batch descent draws no random
    numbers, so the result is deterministic. With ``steps_per_phase=0`` (and no closed-form scales) ``qbb``
    itself is returned.
    """
    _check_weight(weight)
    _check_same_shape(weight, qbb)
    steps_per_phase = _check_steps("steps_per_phase", steps_per_phase)
    lr = _check_positive_float("lr", lr)
    _check_seed(seed)
    _check_zero_policy(zero_policy)
    if steps_per_phase == 0 and not closed_form_scales:
        return qbb

    w32 = weight.detach().to(torch.float32)
    mean_abs = float(w32.abs().mean())
    norm = _power_of_two_below(mean_abs) if mean_abs > 0 else 1.0
    w = w32 / norm
    best_bases = qbb.bases.to(torch.float32)              # ±1, kept as float for the products
    best_scales = qbb.scales.detach().to(torch.float32) / norm

    def sse(bases_f, scales):
        diff = w - torch.einsum("no,noi->oi", scales, bases_f)
        return float((diff * diff).sum())

    best_err = sse(best_bases, best_scales)
    if closed_form_scales:
        best_err, best_scales = _closed_form(w, best_bases, best_scales, best_err, sse)
    extra_zeros = 0
    for i in range(qbb.n_bases):
        phase_zeros = 0
        if steps_per_phase:
            residual = w - torch.einsum("no,noi->oi", best_scales[:i], best_bases[:i])
            latent = nn.Parameter(best_bases[i] * residual.abs().clamp(min=_LATENT_FLOOR))
            alpha = nn.Parameter(best_scales.clone())
            others = best_bases.clone()
            others[i] = 0                                  # the frozen part of the approximation
            opt = torch.optim.Adam([latent, alpha], lr=lr)
            for step in range(steps_per_phase + 1):
                hard, b_i = _sign_ste(latent, zero_policy)
                approx = torch.einsum("no,noi->oi", alpha, others) + alpha[i, :, None] * b_i
                diff = w - approx
                loss = (diff * diff).sum()
                value = loss.item()
                if value < best_err:
                    best_err = value
                    best_bases = others.clone()
                    best_bases[i] = hard
                    best_scales = alpha.detach().clone()
                    phase_zeros = count_zeros(latent.detach())
                if step == steps_per_phase:
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        extra_zeros += phase_zeros
        if closed_form_scales:
            best_err, best_scales = _closed_form(w, best_bases, best_scales, best_err, sse)

    refined = QBBWeights(bases=best_bases.to(torch.int8), scales=(best_scales * norm).contiguous(),
                         sign_zeros=qbb.sign_zeros + extra_zeros)
    # The float32 losses above rank the candidates; the float64 check makes "never worse" hold exactly.
    if reconstruction_error(weight, refined) > reconstruction_error(weight, qbb):
        return qbb
    return refined


# -- stage 3: the layer and data-free distillation of its scales ----------------------------------------------

class QBBLinear(nn.Module):
    """Linear layer with QBB weights: ``y = Σ_i α_i ⊙ (x·B_iᵀ) + b``.

    ``bases`` (int8 ``[N, out, in]``) is a buffer, ``scales`` (``[N, out]``) and ``bias`` are parameters;
    :func:`distill_scales` trains only the scales. The per-basis products are computed first and scaled
    afterwards, the order of the adder-only hardware. ``forward`` checks the feature count but, being called
    in training loops, not for NaN/Inf.
    """

    def __init__(self, bases: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        qbb = QBBWeights(bases=bases, scales=scales)      # validates shapes and values
        _check_bias(bias, qbb.out_features)
        self.register_buffer("bases", qbb.bases.detach().clone())
        self.scales = nn.Parameter(qbb.scales.detach().clone().to(torch.float32))
        if bias is None:
            self.register_parameter("bias", None)
        else:
            self.bias = nn.Parameter(bias.detach().clone().to(torch.float32))

    @classmethod
    def from_weights(cls, qbb: QBBWeights, bias: torch.Tensor | None = None) -> "QBBLinear":
        return cls(qbb.bases, qbb.scales, bias)

    @property
    def n_bases(self) -> int:
        return self.bases.shape[0]

    @property
    def out_features(self) -> int:
        return self.bases.shape[1]

    @property
    def in_features(self) -> int:
        return self.bases.shape[2]

    def qbb_weights(self) -> QBBWeights:
        """The layer's current bases and scales (a detached copy)."""
        return QBBWeights(bases=self.bases.clone(), scales=self.scales.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"input has {x.shape[-1]} features (shape {tuple(x.shape)}) but the layer takes "
                             f"{self.in_features}")
        n, out = self.n_bases, self.out_features
        per_basis = F.linear(x, self.bases.reshape(n * out, -1).to(x.dtype)).unflatten(-1, (n, out))
        y = (per_basis * self.scales.to(x.dtype)).sum(dim=-2)
        return y if self.bias is None else y + self.bias.to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, n_bases={self.n_bases}"


def quantize_linear(linear: nn.Linear, *, n_bases: int = DEFAULT_N_BASES, refine_steps: int = DEFAULT_REFINE_STEPS,
                    lr: float = DEFAULT_REFINE_LR, seed: int = 0, zero_policy: BasesZeroPolicy = "pos",
                    closed_form_scales: bool = False) -> QBBLinear:
    """Replace an ``nn.Linear`` by a :class:`QBBLinear`: :func:`qbb_init` then :func:`qbb_refine`
    (``refine_steps`` per phase; 0 keeps the initialisation). The bias is copied."""
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"linear must be an nn.Linear, not {type(linear).__name__}")
    qbb = qbb_init(linear.weight, n_bases, zero_policy=zero_policy)
    qbb = qbb_refine(linear.weight, qbb, steps_per_phase=refine_steps, lr=lr, seed=seed, zero_policy=zero_policy,
                     closed_form_scales=closed_form_scales)
    return QBBLinear.from_weights(qbb, None if linear.bias is None else linear.bias.detach())


def _check_tokens(what: str, tokens) -> None:
    if not isinstance(tokens, torch.Tensor) or tokens.is_floating_point() or tokens.is_complex() \
            or tokens.dtype == torch.bool:
        raise TypeError(f"{what} must return an integer tensor of token ids, not "
                        f"{getattr(tokens, 'dtype', type(tokens).__name__)}")
    if tokens.ndim != 2 or 0 in tokens.shape:
        raise ValueError(f"{what} must return token ids [batch, seq], not shape {tuple(tokens.shape)}")


def _default_forward(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    return model(tokens)


def _contains(root: nn.Module, module: nn.Module) -> bool:
    return any(m is module for m in root.modules())


def _distill_scales(student: nn.Module, teacher: nn.Module, *,
                   make_inputs: Callable[[torch.Generator], torch.Tensor],
                   forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
                   steps: int = 100, lr: float = 1e-4, select_fraction: float = 0.5,
                   generate: Callable[[nn.Module, torch.Tensor, torch.Generator], torch.Tensor] | None = None,
                   swap_blocks: tuple[nn.ModuleList, nn.ModuleList] | None = None, swap_prob: float = 0.5,
                   seed: int = 0) -> list[float]:
    """Data-free distillation of the QBB scales: the student's :class:`QBBLinear` scales are the only
    trainable values (Adam, ``lr`` in absolute units of the scales).

    Each step:

    1. ``tokens = make_inputs(generator)``: random token ids ``[batch, seq]`` (encoders), or random start
       tokens that ``generate(teacher, tokens, generator)`` continues autoregressively (decoders).
    2. The teacher–student gap of every sequence (mean squared output difference) is measured without
       gradients, and the ``ceil(select_fraction·batch)`` sequences with the largest gap are kept.
    3. ``loss = mean((forward(student, x) − forward(teacher, x))²)`` on them; one Adam step on the scales.
       ``forward(model, tokens)`` returns what is matched, logits or final hidden states (default
       ``model(tokens)``). The paper sums squares and adds a per-block feature MSE; we take the mean of the
       output term only.

    ``swap_blocks = (student_blocks, teacher_blocks)`` (two ``nn.ModuleList`` of equal length, inside the
    two models) enables block swapping: for the training forward, each student block is replaced by the teacher's
    with probability ``swap_prob·(1 − step/steps)`` (linear decay to 0, our reading of the paper's gradual
    swapping; at least one student block is always kept), so early steps train a hybrid that is mostly teacher.
    Filtering (2) always uses the pure student. Selection is redone on a fresh batch every step (the paper
    filters a generated pool; its sizes are not known).

    Both models run in eval mode; training flags and ``requires_grad`` are restored afterwards. Returns the
    training loss of every step (before its update).
    """
    for name, model in (("student", student), ("teacher", teacher)):
        if not isinstance(model, nn.Module):
            raise TypeError(f"{name} must be an nn.Module, not {type(model).__name__}")
    if student is teacher:
        raise ValueError("student and teacher must be different modules")
    if not callable(make_inputs):
        raise TypeError(f"make_inputs must be callable, not {make_inputs!r}")
    if generate is not None and not callable(generate):
        raise TypeError(f"generate must be callable or None, not {generate!r}")
    forward = _default_forward if forward is None else forward
    if not callable(forward):
        raise TypeError(f"forward must be callable or None, not {forward!r}")
    steps = check_positive_int("steps", steps)
    lr = _check_positive_float("lr", lr)
    if isinstance(select_fraction, bool) or not isinstance(select_fraction, (int, float)) \
            or not 0 < select_fraction <= 1:
        raise ValueError(f"select_fraction must be in (0, 1], not {select_fraction!r}")
    if isinstance(swap_prob, bool) or not isinstance(swap_prob, (int, float)) or not 0 <= swap_prob <= 1:
        raise ValueError(f"swap_prob must be in [0, 1], not {swap_prob!r}")
    seed = _check_seed(seed)
    if swap_blocks is not None:
        if not isinstance(swap_blocks, tuple) or len(swap_blocks) != 2 \
                or not all(isinstance(m, nn.ModuleList) for m in swap_blocks):
            raise TypeError("swap_blocks must be a pair (student_blocks, teacher_blocks) of nn.ModuleList")
        s_blocks, t_blocks = swap_blocks
        if len(s_blocks) != len(t_blocks) or len(s_blocks) == 0:
            raise ValueError(f"swap_blocks must be two non-empty lists of equal length, not {len(s_blocks)} "
                             f"student and {len(t_blocks)} teacher blocks")
        if not _contains(student, s_blocks) or not _contains(teacher, t_blocks):
            raise ValueError("swap_blocks[0] must be a ModuleList inside the student and swap_blocks[1] one "
                             "inside the teacher")
    scales = [m.scales for m in student.modules() if isinstance(m, QBBLinear)]
    if not scales:
        raise ValueError("the student has no QBBLinear layer, so there are no scales to distill")

    gen = torch.Generator().manual_seed(seed)
    params = {id(p): p for p in [*student.parameters(), *teacher.parameters()]}
    saved_grad = {k: p.requires_grad for k, p in params.items()}
    saved_mode = {m: m.training for m in [*student.modules(), *teacher.modules()]}
    trainable = {id(p) for p in scales}
    losses: list[float] = []
    try:
        for k, p in params.items():
            p.requires_grad_(k in trainable)
        student.eval()
        teacher.eval()
        opt = torch.optim.Adam(scales, lr=lr)
        for step in range(steps):
            with torch.no_grad():
                tokens = make_inputs(gen)
                _check_tokens("make_inputs", tokens)
                if generate is not None:
                    tokens = generate(teacher, tokens, gen)
                    _check_tokens("generate", tokens)
                target = forward(teacher, tokens)
                if not isinstance(target, torch.Tensor) or target.ndim == 0 or target.shape[0] != tokens.shape[0]:
                    raise ValueError(f"forward must return a tensor with the batch first; got "
                                     f"{getattr(target, 'shape', type(target).__name__)} for {tokens.shape[0]} "
                                     "sequences")
                keep = max(1, math.ceil(select_fraction * tokens.shape[0]))
                if keep < tokens.shape[0]:
                    gap = (forward(student, tokens) - target).pow(2).flatten(1).mean(dim=1)
                    chosen = torch.sort(gap, descending=True, stable=True).indices[:keep]
                    tokens, target = tokens[chosen], target[chosen]
            swapped = []
            if swap_blocks is not None:
                p_swap = swap_prob * (1 - step / steps)
                mask = torch.rand(len(s_blocks), generator=gen) < p_swap
                if bool(mask.all()):
                    mask[int(torch.randint(len(s_blocks), (1,), generator=gen))] = False
                swapped = [(j, s_blocks[j]) for j in range(len(s_blocks)) if mask[j]]
            try:
                for j, _ in swapped:
                    s_blocks[j] = t_blocks[j]
                out = forward(student, tokens)
            finally:
                for j, original in swapped:
                    s_blocks[j] = original
            if out.shape != target.shape:
                raise ValueError(f"student output {tuple(out.shape)} and teacher output {tuple(target.shape)} differ")
            loss = F.mse_loss(out, target)
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(f"distillation loss became {value} at step {step}; lower lr")
            losses.append(value)
            opt.zero_grad(set_to_none=True)
            if loss.requires_grad:                         # every QBB layer may sit in a swapped-out block
                loss.backward()
                opt.step()
    finally:
        for k, p in params.items():
            p.requires_grad_(saved_grad[k])
        for m, mode in saved_mode.items():
            m.training = mode
    return losses


# -- integer hardware view ------------------------------------------------------------------------------------

#: Per-token activation codes of the view (``models.quant``'s shared type).
QBBActivations = IntCodes


def _check_act_bits(act_bits) -> int:
    if isinstance(act_bits, bool) or not isinstance(act_bits, (int, np.integer)):
        raise TypeError(f"act_bits must be an integer, not {act_bits!r}")
    if not 2 <= act_bits <= 16:
        raise ValueError(f"act_bits must be between 2 and 16 (signed codes of at most 16 bits), not {act_bits!r}")
    return int(act_bits)


def quantize_activations(x: torch.Tensor, *, act_bits: int = 8) -> QBBActivations:
    """Symmetric absmax quantization per token, ``models.quant.quantize_per_token``. Not part of QBB, which
    keeps FP16 activations: the integer view needs integer codes."""
    _check_float_tensor("x", x)
    return quantize_per_token(x.to(torch.float32), _check_act_bits(act_bits))


def linear_view(weight: torch.Tensor, x: torch.Tensor, *, bias: torch.Tensor | None = None,
                n_bases: int = DEFAULT_N_BASES, refine_steps: int = 0, act_bits: int = 8,
                zero_policy: BasesZeroPolicy = "pos", lr: float = DEFAULT_REFINE_LR, seed: int = 0) -> LinearView:
    """Integer view of a QBB linear on ``x`` ``[tokens, in]``: :func:`qbb_init` (then :func:`qbb_refine` with
    ``refine_steps`` per phase if > 0), then :func:`linear_view_from_weights`."""
    _check_weight(weight)
    _check_float_tensor("x", x)
    check_matrix("x", x, columns=weight.shape[1])
    check_finite("x", x)
    _check_bias(bias, weight.shape[0])
    _check_act_bits(act_bits)
    refine_steps = _check_steps("refine_steps", refine_steps)
    qbb = qbb_init(weight, n_bases, zero_policy=zero_policy)
    if refine_steps:
        qbb = qbb_refine(weight, qbb, steps_per_phase=refine_steps, lr=lr, seed=seed, zero_policy=zero_policy)
    return linear_view_from_weights(qbb, x, bias=bias, act_bits=act_bits)


def linear_view_from_weights(qbb: QBBWeights, x: torch.Tensor, *, bias: torch.Tensor | None = None,
                             act_bits: int = 8) -> LinearView:
    """Integer view of an already-quantized QBB layer.

    N passes ``basis0 … basis{N-1}``: ±1 weight codes ``B_i`` times the per-token activation codes of
    :func:`quantize_activations`, on the binary-basis (adder-only) unit. The rescale is
    ``(Σ_i α_i ⊙ acc_i) / s_x (+ b)`` in float32: N scalings per output, one division per output.
    It equals :class:`QBBLinear` applied to the fake-quantized ``x`` up to float32 rounding.
    """
    if not isinstance(qbb, QBBWeights):
        raise TypeError(f"qbb must be QBBWeights, not {type(qbb).__name__}")
    _check_float_tensor("x", x)
    check_matrix("x", x, columns=qbb.in_features)
    _check_bias(bias, qbb.out_features)
    xq = quantize_activations(x, act_bits=act_bits)
    q_max = 2 ** (act_bits - 1) - 1
    s_x = xq.s.to(torch.float32)                           # [tokens, 1]
    scales = qbb.scales.detach().to(torch.float32)
    b = None if bias is None else bias.detach().to(torch.float32)
    names = [f"basis{i}" for i in range(qbb.n_bases)]

    def rescale(acc):
        y = torch.zeros((x.shape[0], qbb.out_features), dtype=torch.float32)
        for i, name in enumerate(names):
            y = y + scales[i] * torch.from_numpy(np.asarray(acc[name], np.int64)).to(torch.float32)
        y = y / s_x
        return (y if b is None else y + b).numpy()

    codes = xq.codes.numpy()
    passes = tuple(IntPass(name, UnitKind.BINARY_BASIS, qbb.bases[i].numpy(), codes, 1, act_bits,
                           weight_range=(-1, 1), act_range=(-q_max, q_max))
                   for i, name in enumerate(names))
    notes = (f"QBB keeps FP16 activations; this view quantizes x per token to {act_bits}-bit symmetric absmax "
             f"codes (±{q_max}, round half to even) so the datapath is integer. The {qbb.n_bases} scalings per "
             "output and the division by the activation scale are float32 work after the passes.")
    return LinearView("qbb", UnitKind.BINARY_BASIS, passes, rescale, qbb.in_features, qbb.out_features, x.shape[0],
                      notes=notes, zero_counts={"weight": qbb.sign_zeros})


@functools.wraps(_qbb_refine)
def qbb_refine(*args, **kwargs) -> QBBWeights:
    # Gradient descent inside: work the same when called under torch.no_grad() (e.g. while quantizing a model).
    with torch.enable_grad():
        return _qbb_refine(*args, **kwargs)


@functools.wraps(_distill_scales)
def distill_scales(*args, **kwargs) -> list[float]:
    with torch.enable_grad():
        return _distill_scales(*args, **kwargs)
