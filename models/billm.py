"""BiLLM (Huang et al., ICML 2024, arXiv 2402.04291): weight-only post-training binarization of LLM linears.

The default (``variant="code"``) follows the official code (Aaronhuang-778/BiLLM: bigptq.py, binary.py,
utils/structure.py, utils/autosearch.py, utils/mask.py, run with ``--salient_metric hessian`` as its README and
run.sh do); ``variant="paper"`` follows the paper's equations and Algorithm 2 where the two differ
(../shared/docs/quantization.md §1.4). Per linear layer ``W [out, in]`` with calibration Hessian ``H``:

1. ``H = 2·XᵀX/N`` (:class:`HessianAccumulator`). Dead inputs (``H_jj = 0``) get ``H_jj = 1`` and ``W[:, j] = 0``;
   ``1 %`` of the mean diagonal is added as damping; ``Hc`` is the upper Cholesky factor of ``H⁻¹``.
2. Column blocks of ``block_size`` (128); in each block the salience ``S = w²/Hc_jj²``.
3. Structural salient columns: columns ranked by ``Σ_i S_ij``; for ``k = 1 … salient_limit−1`` the top ``k``
   columns form the salient group and the ``k`` of least MSE wins.
   *code*: the MSE is that of order-2 residual binarization of both parts, computed on ``S`` itself.
   *paper* (eq. 5, Alg. 2 ``salient``): order-1 binarization of both parts, MSE on ``W``.
4. Bell-shaped split of the non-salient part at one of 81 percentiles (10 % … 90 %); least MSE of
   concentrated (order 1) + sparse (order 1) + salient (order 2) wins.
   *code*: on ``S``, percentiles of ``|S|`` over the whole block with the salient columns zeroed,
   sparse = ``S >= p``. *paper* (§3.2): on ``|w|``, percentiles over the non-salient weights,
   concentrated = ``|w| <= p`` (``A_c = [-p, p]``), sparse = ``|w| > p``.
5. Per (row, block, group) binarization of ``W``.
   *code*: ``mu = mean(w in g)``, ``alpha = mean|w − mu|``, ``q = alpha·sign(w − mu) + mu``.
   *paper* (eq. 1, 4, 12): ``alpha = mean|w|``, ``q = alpha·sign(w)``. The salient group gets a second pass
   of the same kind on the residual ``w − q₁`` (order 2, eq. 6–7).
6. Block-wise OBC/GPTQ compensation, no updates inside a block:
   ``Err = (W_b − Q_b)/diag(Hc_bb)``, ``W[:, end:] −= Err·Hc[b, end:]``.

``sign``: the code uses ``torch.sign`` (sign(0) = 0, so a weight equal to its group mean is stored as ``mu``);
the paper's eq. 2 maps 0 to +1. ``zero_policy`` defaults to ``"torch"`` for the code variant and ``"pos"`` for
the paper variant; :attr:`BiLLMWeights.zero_signs` counts how often the choice mattered.

The official code's float32 arithmetic (masked ``nanmean``, ``np.quantile`` break points, the order of the
running Hessian update and of ``alpha·sign + mu``, strict ``<`` in both searches so the first candidate wins a
tie) is followed step by step so that results should match it bit for bit on the same inputs; this has not
been cross-checked by running the official code. Where the code leaves something unspecified: ties in the
salient-column ranking (``torch.topk``) are broken here by the lower column index, and blocks narrower than
``salient_limit`` (``topk`` raises in the code) search ``k = 1 … width−1``. The salience is the same in both
variants: eq. 3 writes ``[H⁻¹]_jj`` but Algorithm 2, like the code, divides by the Cholesky factor's ``Hc_jj``.
"""

import math
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .quant import IntCodes, quantize_per_token, ZeroPolicy, check_zero_policy, sign
from .units import UnitKind
from .validate import check_finite, check_matrix, check_positive_int
from .views import IntPass, LinearView

__all__ = [
    "GROUPS",
    "ORDERS",
    "SPLIT_PERCENTILES",
    "HessianAccumulator",
    "GroupBinarization",
    "residual_binarize",
    "split_groups",
    "AverageBits",
    "eq14_bits",
    "BiLLMWeights",
    "billm_quantize",
    "sign_binarize",
    "BiLLMLinear",
    "LinearReport",
    "BiLLMReport",
    "quantize_model_sequential",
    "IntActivations",
    "quantize_activations",
    "linear_view",
]

Variant = Literal["code", "paper"]
SalientMetric = Literal["hessian", "magnitude"]
HessianCount = Literal["samples", "tokens"]

#: Weight groups of a block, in the official code's mask order; a weight's group id indexes this tuple.
GROUPS = ("concentrated", "sparse", "salient")
CONCENTRATED, SPARSE, SALIENT = 0, 1, 2
#: Binarization passes (residual orders) per group.
ORDERS = (1, 1, 2)
#: Candidate break-point percentiles of the split search (float32, as the code builds them).
SPLIT_PERCENTILES = torch.linspace(0.10, 0.90, 81)


# -- options ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Options:
    block_size: int
    salient_limit: int
    variant: str
    percdamp: float
    salient_metric: str
    zero_policy: str
    compensate: bool


def _resolve_options(*, block_size: int = 128, salient_limit: int = 50, variant: Variant = "code",
                     percdamp: float = 0.01, salient_metric: SalientMetric = "hessian",
                     zero_policy: ZeroPolicy | None = None, compensate: bool = True) -> _Options:
    """Validate the options of :func:`billm_quantize` (unknown names raise ``TypeError`` from Python)."""
    check_positive_int("block_size", block_size)
    check_positive_int("salient_limit", salient_limit)
    if variant not in ("code", "paper"):
        raise ValueError(f"variant must be 'code' or 'paper', not {variant!r}")
    if salient_metric not in ("hessian", "magnitude"):
        raise ValueError(f"salient_metric must be 'hessian' or 'magnitude', not {salient_metric!r}")
    if isinstance(percdamp, bool) or not isinstance(percdamp, (int, float)) or not math.isfinite(percdamp) \
            or percdamp < 0:
        raise ValueError(f"percdamp must be a finite number >= 0, not {percdamp!r}")
    if zero_policy is None:
        zero_policy = "torch" if variant == "code" else "pos"
    check_zero_policy(zero_policy)
    if not isinstance(compensate, bool):
        raise TypeError(f"compensate must be a bool, not {compensate!r}")
    return _Options(int(block_size), int(salient_limit), variant, float(percdamp), salient_metric, zero_policy,
                    compensate)


# -- calibration Hessian ---------------------------------------------------------------------------------------

class HessianAccumulator:
    """Running ``H = 2·XᵀX/N`` over calibration activations of one linear layer.

    Parameters
    ----------
    in_features:
        Width of the layer input (last dimension of every batch).
    count:
        What ``N`` counts. ``"samples"`` (official code): the sequences of a batch, i.e. the product of the
        leading dimensions before the token axis of a ``[..., tokens, in]`` batch, and 1 for a 2-D (or 1-D)
        batch. ``"tokens"``: every input row. ``H`` differs only by a constant factor between the two, and
        BiLLM's result does not depend on that factor (damping is relative, salience ranks and compensation
        are scale-free) beyond float rounding.

    Notes
    -----
    The update order is the code's: the old sum is rescaled by ``N_old/N_new`` and ``sqrt(2/N_new)·x``
    is added as an outer product, so float32 rounding matches it batch for batch.
    """

    def __init__(self, in_features: int, *, count: HessianCount = "samples"):
        self.in_features = check_positive_int("in_features", in_features)
        if count not in ("samples", "tokens"):
            raise ValueError(f"count must be 'samples' or 'tokens', not {count!r}")
        self.count = count
        self.nsamples = 0            #: ``N`` so far
        self.tokens = 0              #: input rows seen so far (whatever ``count`` is)
        self._h = torch.zeros(self.in_features, self.in_features, dtype=torch.float32)

    def add_batch(self, x: torch.Tensor) -> None:
        """Add activations ``[..., in_features]`` (any leading shape, at least one row)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"calibration activations must be a torch.Tensor, not {type(x).__name__}")
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"calibration activations have shape {tuple(x.shape)}; the last dimension must be "
                             f"in_features = {self.in_features}")
        if x.numel() == 0:
            raise ValueError(f"empty calibration batch (shape {tuple(x.shape)})")
        check_finite("calibration activations", x)
        rows = x.detach().reshape(-1, self.in_features)
        m = rows.shape[0] if self.count == "tokens" else (math.prod(x.shape[:-2]) if x.ndim >= 3 else 1)
        self._h *= self.nsamples / (self.nsamples + m)
        self.nsamples += m
        self.tokens += rows.shape[0]
        cols = (math.sqrt(2 / self.nsamples) * rows.float()).t()          # [in, rows]
        self._h += cols.matmul(cols.t())

    @property
    def hessian(self) -> torch.Tensor:
        """A copy of ``H`` ``[in, in]`` (float32); refused before any batch."""
        if self.nsamples == 0:
            raise ValueError("no calibration batch has been added: the Hessian is undefined")
        return self._h.clone()


# -- group binarization and the searches ----------------------------------------------------------------------

@dataclass(frozen=True)
class GroupBinarization:
    """Residual binarization of one group mask, per row.

    ``q`` is the approximation (0 outside the mask); ``signs[o]`` the order-``o`` sign codes (int8, 0 outside
    the mask, and 0 at exact ties under ``zero_policy="torch"``); ``alpha[:, o]``, ``mu[:, o]`` the per-row
    scale and mean of order ``o``; ``zeros`` how many in-mask values met sign() at exactly 0.
    """

    q: torch.Tensor
    signs: torch.Tensor
    alpha: torch.Tensor
    mu: torch.Tensor
    zeros: int


def residual_binarize(w: torch.Tensor, mask: torch.Tensor, order: int = 1, *, center: bool = True,
                      zero_policy: ZeroPolicy = "torch") -> GroupBinarization:
    """Binarize the masked entries of each row of ``w`` ``[..., rows, cols]`` with ``order`` residual passes.

    Pass ``o`` works on the residual ``r = w − q`` left by the previous passes: with ``center`` (official code)
    ``mu = mean(r in mask)``, ``alpha = mean|r − mu|``, ``q += alpha·sign(r − mu) + mu``; without it (paper)
    ``mu = 0``, ``alpha = mean|r|``, ``q += alpha·sign(r)``. A row with an empty mask gets ``alpha = mu = 0``.
    ``mask`` broadcasts against ``w``; leading dimensions batch independent problems (the searches evaluate all
    their candidates in one call), and every row's result is the same as binarizing that row alone.
    """
    check_positive_int("order", order)
    check_zero_policy(zero_policy)
    mask = mask.bool()
    w, mask = torch.broadcast_tensors(w.float(), mask)
    q = torch.zeros_like(w)
    target = w * mask
    nan = torch.tensor(float("nan"))
    signs = torch.zeros((order, *w.shape), dtype=torch.int8)
    alphas = torch.zeros(*w.shape[:-1], order)
    mus = torch.zeros(*w.shape[:-1], order)
    zeros = 0
    for o in range(order):
        # NaN outside the mask so that nanmean averages over the group only (the code's formulation).
        r = torch.where(mask, target - q, nan)
        if center:
            mu = torch.nanmean(r, dim=-1)
            mu = torch.where(torch.isnan(mu), 0.0, mu)
            r = r - mu[..., None]
        else:
            mu = torch.zeros(w.shape[:-1])
        alpha = torch.nanmean(r.abs(), dim=-1)
        alpha = torch.where(torch.isnan(alpha), 0.0, alpha)
        s = torch.where(mask, sign(r, zero_policy), 0.0)
        zeros += int(((r == 0) & mask).sum())
        q = q + torch.where(mask, s * alpha[..., None] + mu[..., None], 0.0)
        signs[o] = s.to(torch.int8)
        alphas[..., o] = alpha
        mus[..., o] = mu
    return GroupBinarization(q, signs, alphas, mus, zeros)


def split_groups(values: torch.Tensor, salient: torch.Tensor, p, *, variant: Variant = "code"
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks ``(concentrated, sparse)`` of the non-salient entries split at break point ``p``.

    ``code``: concentrated ``|v| < p``, sparse ``|v| >= p`` (``v`` is the salience). ``paper``: concentrated
    ``|v| <= p`` (the interval ``[-p, p]``), sparse ``|v| > p`` (``v`` is the weight). ``p`` is compared in
    ``values``' dtype (float32), as in the code.
    """
    if variant not in ("code", "paper"):
        raise ValueError(f"variant must be 'code' or 'paper', not {variant!r}")
    rest = ~salient.bool()
    a = values.abs()
    p = torch.as_tensor(p, dtype=a.dtype)
    if variant == "code":
        return (a < p) & rest, (a >= p) & rest
    return (a <= p) & rest, (a > p) & rest


def _mse(target: torch.Tensor, approx: torch.Tensor) -> float:
    return torch.mean((target - approx) ** 2).item()


# Candidates are evaluated in batches of about this many block elements: large enough to amortise torch's
# per-call overhead (the searches' cost), small enough to bound memory on LLM-sized blocks.
_BATCH_ELEMENTS = 1 << 22


def _first_best(target: torch.Tensor, n_candidates: int, approximate) -> int:
    """Index of the candidate whose ``approximate(batch)`` has the lowest MSE; the first one wins a tie."""
    step = max(1, _BATCH_ELEMENTS // max(1, target.numel()))
    best_err, best = math.inf, 0
    for start in range(0, n_candidates, step):
        batch = range(start, min(start + step, n_candidates))
        for i, approx in zip(batch, approximate(batch)):
            err = _mse(target, approx)
            if err < best_err:             # strict: the earliest candidate wins a tie
                best_err, best = err, i
    return best


def _search_salient(score: torch.Tensor, w: torch.Tensor, opts: _Options) -> torch.Tensor:
    """Block-relative indices of the salient columns, in rank order (structural search, step 3)."""
    n_cols = score.shape[1]
    ranked = torch.sort(score.abs().sum(dim=0), descending=True, stable=True).indices
    code = opts.variant == "code"
    target, order = (score, 2) if code else (w, 1)
    n_candidates = min(opts.salient_limit, n_cols) - 1          # k = 1 .. n_candidates salient columns
    if n_candidates < 1:
        return ranked[:0]
    rank_of_column = torch.empty(n_cols, dtype=torch.long)
    rank_of_column[ranked] = torch.arange(n_cols)
    kw = dict(center=code, zero_policy=opts.zero_policy)

    def approximate(batch):
        k = torch.tensor(batch) + 1
        masks = (rank_of_column[None, :] < k[:, None])[:, None, :]           # [batch, 1, cols]: top k columns
        return residual_binarize(target, masks, order, **kw).q + residual_binarize(target, ~masks, order, **kw).q

    return ranked[:_first_best(target, n_candidates, approximate) + 1]


def _search_split(score: torch.Tensor, w: torch.Tensor, salient: torch.Tensor, opts: _Options) -> torch.Tensor:
    """The break point ``p*`` (float32 scalar) of the bell-shaped split (step 4)."""
    code = opts.variant == "code"
    if code:
        # The code takes percentiles over the whole block, the zeroed salient columns included.
        values, target = score, score
        pool = (score * ~salient).abs().flatten()
    else:
        values, target = w, w
        pool = w[~salient].abs()
    if pool.numel() == 0:
        return torch.tensor(0.0)
    candidates = torch.as_tensor(np.quantile(pool.numpy(), q=SPLIT_PERCENTILES.numpy())).float()
    kw = dict(center=code, zero_policy=opts.zero_policy)
    q_salient = residual_binarize(target, salient, 2, **kw).q

    def approximate(batch):
        p = candidates[batch.start:batch.stop, None, None]
        conc, sparse = split_groups(values, salient, p, variant=opts.variant)              # [batch, rows, cols]
        return residual_binarize(target, conc, 1, **kw).q + residual_binarize(target, sparse, 1, **kw).q + q_salient

    return candidates[_first_best(target, len(candidates), approximate)]


# -- the quantized layer ---------------------------------------------------------------------------------------

def eq14_bits(r_salient: float, block_size: int) -> tuple[float, float]:
    """BiLLM eq. 14: ``(N_param, N_storing) = (2·r + 1·(1 − r), 1 + 1/b_size)``."""
    if not 0 <= r_salient <= 1:
        raise ValueError(f"r_salient must lie in [0, 1], not {r_salient!r}")
    check_positive_int("block_size", block_size)
    return 2 * r_salient + 1 * (1 - r_salient), 1 + 1 / block_size


@dataclass(frozen=True)
class AverageBits:
    """Bits per weight of a binarized layer.

    ``param_bits`` and ``flag_bits`` are eq. 14's ``N_param`` (binary planes used in compute) and
    ``N_storing`` (1 concentrated/sparse flag per weight + ``1/b_size`` for the salient-column bitmap).
    ``scale_bits`` counts the stored per-(row, block, group, order) scales at ``scale_width`` bits each
    (alpha and mu for the code variant, alpha only for the paper's), which eq. 14 leaves out.
    """

    r_salient: float
    param_bits: float
    flag_bits: float
    scale_bits: float

    @property
    def storage_bits(self) -> float:
        """Everything stored, per weight: binary planes + flags + scales (our accounting; Table 6 of the paper
        compresses the bitmap instead)."""
        return self.param_bits + self.flag_bits + self.scale_bits


@dataclass(frozen=True, eq=False)
class BiLLMWeights:
    """A BiLLM-binarized weight ``[out, in]``: everything the hardware needs to apply it.

    Attributes
    ----------
    groups:
        int8 ``[out, in]``: each weight's group id, an index into :data:`GROUPS` (0 concentrated, 1 sparse,
        2 salient). Salient weights fill whole columns of a block.
    signs:
        int8 ``[2, out, in]``: order-1 sign codes of every weight and order-2 codes of salient weights (0
        elsewhere). Values ±1, and 0 where the sign met an exact 0 under ``zero_policy="torch"``.
    alpha, mu:
        float32 ``[out, n_blocks, 3, 2]``: scale and mean per (row, block, group, order); order-2 slots of the
        non-salient groups are 0, and ``mu`` is 0 throughout for the paper variant.
    salient_columns:
        Per block, the absolute indices of its salient columns (int64, in salience rank order).
    split_points:
        float32 ``[n_blocks]``: the chosen break point ``p*`` of each block (on ``S`` or ``|w|``).
    """

    groups: torch.Tensor
    signs: torch.Tensor
    alpha: torch.Tensor
    mu: torch.Tensor
    salient_columns: tuple[torch.Tensor, ...]
    split_points: torch.Tensor
    block_size: int
    variant: str
    zero_policy: str
    #: How many exact zeros met sign() (where ``zero_policy`` changes the result).
    zero_signs: int = 0
    #: The code's GPTQ proxy loss ``Σ (w − q)²/Hc_jj² / 2`` over the layer.
    hessian_error: float = 0.0

    @property
    def out_features(self) -> int:
        return self.groups.shape[0]

    @property
    def in_features(self) -> int:
        return self.groups.shape[1]

    @property
    def n_blocks(self) -> int:
        return len(self.salient_columns)

    def block_bounds(self, b: int) -> tuple[int, int]:
        """Columns ``[start, end)`` of block ``b``."""
        if not 0 <= b < self.n_blocks:
            raise IndexError(f"block {b!r} out of range for {self.n_blocks} blocks")
        start = b * self.block_size
        return start, min(start + self.block_size, self.in_features)

    def group_mask(self, group: str) -> torch.Tensor:
        """Bool ``[out, in]`` mask of one group (``"concentrated"``, ``"sparse"`` or ``"salient"``)."""
        if group not in GROUPS:
            raise ValueError(f"group must be one of {', '.join(GROUPS)}, not {group!r}")
        return self.groups == GROUPS.index(group)

    @property
    def salient_ratio(self) -> float:
        """Fraction of the weights in salient columns (eq. 14's ``r_salient``)."""
        return sum(len(c) for c in self.salient_columns) / self.in_features

    def dequantized(self) -> torch.Tensor:
        """The float32 weight ``q`` ``[out, in]`` the algorithm produced, bit for bit:
        ``alpha₁·s₁ + mu₁`` per group, plus ``alpha₂·s₂ + mu₂`` in the salient group."""
        q = torch.zeros(self.out_features, self.in_features)
        for b in range(self.n_blocks):
            st, ed = self.block_bounds(b)
            groups = self.groups[:, st:ed]
            for g in range(len(GROUPS)):
                mask = groups == g
                if not mask.any():
                    continue
                value = self.signs[0, :, st:ed].float() * self.alpha[:, b, g, 0, None] + self.mu[:, b, g, 0, None]
                if ORDERS[g] == 2:
                    value = value + (self.signs[1, :, st:ed].float() * self.alpha[:, b, g, 1, None]
                                     + self.mu[:, b, g, 1, None])
                q[:, st:ed] = torch.where(mask, value, q[:, st:ed])
        return q

    def average_bits(self, *, scale_width: int = 16) -> AverageBits:
        """Eq. 14 from the actual salient ratio and block size, plus the stored scales at ``scale_width`` bits."""
        check_positive_int("scale_width", scale_width)
        r = self.salient_ratio
        n_param, n_storing = eq14_bits(r, self.block_size)
        per_slot = 2 if self.variant == "code" else 1          # (alpha, mu) or alpha alone
        slots = sum(2 + (2 if len(c) else 0) for c in self.salient_columns)   # per row: 2 groups + 2 salient orders
        scale_bits = slots * per_slot * scale_width / self.in_features
        return AverageBits(r, n_param, n_storing, scale_bits)


def _check_weight_and_hessian(weight, hessian) -> None:
    for name, t in (("weight", weight), ("hessian", hessian)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, not {type(t).__name__}")
    check_matrix("weight", weight)
    n_in = weight.shape[1]
    if tuple(hessian.shape) != (n_in, n_in):
        raise ValueError(f"hessian has shape {tuple(hessian.shape)} but the weight {tuple(weight.shape)} needs "
                         f"({n_in}, {n_in})")
    check_finite("weight", weight)
    check_finite("hessian", hessian)


def billm_quantize(weight: torch.Tensor, hessian: torch.Tensor, *, block_size: int = 128, salient_limit: int = 50,
                   variant: Variant = "code", percdamp: float = 0.01, salient_metric: SalientMetric = "hessian",
                   zero_policy: ZeroPolicy | None = None, compensate: bool = True) -> BiLLMWeights:
    """Binarize ``weight`` ``[out, in]`` with BiLLM given the calibration Hessian ``[in, in]``.

    Parameters
    ----------
    block_size:
        Columns per block (search, scales and compensation granularity); the last block may be narrower.
    salient_limit:
        The salient search tries ``k = 1 … salient_limit − 1`` columns (the code's ``up_lim = 50``);
        1 disables salient columns.
    variant:
        ``"code"`` (official code, default) or ``"paper"``; see the module docstring for every difference.
    percdamp:
        Damping as a fraction of the mean Hessian diagonal.
    salient_metric:
        ``"hessian"``: ``S = w²/Hc_jj²`` (the README's setting, default); ``"magnitude"``: ``S = w`` (the
        code's argparse default).
    zero_policy:
        sign(0); ``None`` picks ``"torch"`` (code) or ``"pos"`` (paper eq. 2).
    compensate:
        Block-wise OBC/GPTQ error compensation (the code's ``disable_gptq`` turns it off).
    """
    _check_weight_and_hessian(weight, hessian)
    opts = _resolve_options(block_size=block_size, salient_limit=salient_limit, variant=variant, percdamp=percdamp,
                            salient_metric=salient_metric, zero_policy=zero_policy, compensate=compensate)
    n_out, n_in = weight.shape
    W = weight.detach().float().clone()
    H = hessian.detach().float().clone()
    dead = torch.diagonal(H) == 0
    H[dead, dead] = 1                      # two bool masks pair up: the dead diagonal entries only
    W[:, dead] = 0
    damp = opts.percdamp * torch.mean(torch.diagonal(H))
    idx = torch.arange(n_in)
    H[idx, idx] += damp
    try:
        hc = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    except torch.linalg.LinAlgError as e:
        raise ValueError(f"the damped Hessian is not positive definite (percdamp={percdamp!r}); pass a larger "
                         "percdamp or more calibration data") from e

    n_blocks = math.ceil(n_in / opts.block_size)
    groups = torch.zeros(n_out, n_in, dtype=torch.int8)
    signs = torch.zeros(2, n_out, n_in, dtype=torch.int8)
    alpha = torch.zeros(n_out, n_blocks, len(GROUPS), 2)
    mu = torch.zeros(n_out, n_blocks, len(GROUPS), 2)
    salient_columns, split_points = [], torch.zeros(n_blocks)
    zero_signs, loss = 0, torch.zeros(n_out)
    center = opts.variant == "code"
    for b in range(n_blocks):
        st, ed = b * opts.block_size, min((b + 1) * opts.block_size, n_in)
        wb = W[:, st:ed].clone()
        d = torch.diagonal(hc[st:ed, st:ed])
        score = wb ** 2 / d.reshape(1, -1) ** 2 if opts.salient_metric == "hessian" else wb
        cols = _search_salient(score, wb, opts)
        salient = torch.zeros(wb.shape, dtype=torch.bool)
        salient[:, cols] = True
        p = _search_split(score, wb, salient, opts)
        conc, sparse = split_groups(wb if opts.variant == "paper" else score, salient, p, variant=opts.variant)
        qb = torch.zeros_like(wb)
        for g, mask in ((CONCENTRATED, conc), (SPARSE, sparse), (SALIENT, salient)):
            res = residual_binarize(wb, mask, ORDERS[g], center=center, zero_policy=opts.zero_policy)
            qb = qb + res.q
            groups[:, st:ed][mask] = g
            signs[:ORDERS[g], :, st:ed] += res.signs        # the groups' codes are disjoint (0 off-mask)
            alpha[:, b, g, :ORDERS[g]] = res.alpha
            mu[:, b, g, :ORDERS[g]] = res.mu
            zero_signs += res.zeros
        salient_columns.append(cols + st)
        split_points[b] = p
        loss += torch.sum((wb - qb) ** 2 / d ** 2, 1) / 2
        W[:, st:ed] = qb
        if opts.compensate:
            err = (wb - qb) / d
            W[:, ed:] -= err.matmul(hc[st:ed, ed:])
    return BiLLMWeights(groups, signs, alpha, mu, tuple(salient_columns), split_points, opts.block_size,
                        opts.variant, opts.zero_policy, zero_signs, float(loss.sum()))


def sign_binarize(weight: torch.Tensor, *, zero_policy: ZeroPolicy = "torch") -> torch.Tensor:
    """Naive baseline: row-wise ``mean|W_r|·sign(W_r)``, no Hessian, no groups (float32)."""
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a torch.Tensor, not {type(weight).__name__}")
    check_matrix("weight", weight)
    check_finite("weight", weight)
    w = weight.detach().float()
    return w.abs().mean(dim=1, keepdim=True) * sign(w, zero_policy)


class BiLLMLinear(nn.Module):
    """A linear layer with BiLLM-binarized weights: ``y = x·qᵀ + b`` (``q`` = :meth:`BiLLMWeights.dequantized`).

    ``q`` is held as a float32 buffer ``weight`` and cast to the input dtype in ``forward``.
    """

    def __init__(self, weights: BiLLMWeights, bias: torch.Tensor | None = None):
        super().__init__()
        if not isinstance(weights, BiLLMWeights):
            raise TypeError(f"weights must be BiLLMWeights, not {type(weights).__name__}")
        self.billm = weights
        self.in_features, self.out_features = weights.in_features, weights.out_features
        self.register_buffer("weight", weights.dequantized())
        if bias is None:
            self.register_parameter("bias", None)
        else:
            if tuple(bias.shape) != (self.out_features,):
                raise ValueError(f"bias has shape {tuple(bias.shape)} but the layer has {self.out_features} outputs")
            check_finite("bias", bias)
            self.bias = nn.Parameter(bias.detach().float().clone(), requires_grad=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear, hessian: torch.Tensor, **options) -> "BiLLMLinear":
        """Binarize an ``nn.Linear`` with :func:`billm_quantize` (``options`` are passed on)."""
        return cls(billm_quantize(linear.weight, hessian, **options), linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"variant={self.billm.variant!r}, salient_ratio={self.billm.salient_ratio:.4f}")


# -- sequential (GPTQ-style) model quantization ----------------------------------------------------------------

@dataclass(frozen=True)
class LinearReport:
    """What binarizing one linear did."""

    name: str
    weight_mse: float          #: mean (W − q)² against the layer's original weight
    output_mse: float          #: mean squared output error over the calibration inputs (from H)
    hessian_error: float       #: the code's proxy loss (see :attr:`BiLLMWeights.hessian_error`)
    salient_ratio: float
    bits: AverageBits
    calibration_tokens: int


@dataclass(frozen=True)
class BiLLMReport:
    """Per-linear results of :func:`quantize_model_sequential`, in execution order."""

    layers: tuple[LinearReport, ...]
    weights: dict[str, BiLLMWeights]

    def average_bits(self, *, scale_width: int = 16) -> AverageBits:
        """Bits per weight over all binarized linears, weighted by their sizes."""
        sizes = [self.weights[r.name].out_features * self.weights[r.name].in_features for r in self.layers]
        bits = [self.weights[r.name].average_bits(scale_width=scale_width) for r in self.layers]
        total = sum(sizes)
        return AverageBits(*(sum(getattr(b, f) * n for b, n in zip(bits, sizes)) / total
                             for f in ("r_salient", "param_bits", "flag_bits", "scale_bits")))


def quantize_model_sequential(model: nn.Module, linears: Sequence[tuple[str, nn.Linear]],
                              run_calibration: Callable[[nn.Module], object], **options) -> BiLLMReport:
    """Binarize ``linears`` of ``model`` one after the other, GPTQ style.

    For each ``(name, linear)`` in execution order, ``run_calibration(model)`` runs under ``torch.no_grad()``
    with a forward hook accumulating that linear's input Hessian, so every linear is calibrated on the
    outputs of the already binarized ones. The linear is then binarized (:func:`billm_quantize` with
    ``options``) and replaced in its parent module by a :class:`BiLLMLinear`. ``name`` is the module's
    qualified name in ``model``.

    The official code calibrates all linears of one transformer block in the same forward pass of the
    not-yet-quantized block (only whole blocks are sequential); this function is sequential per linear.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, not {type(model).__name__}")
    if not callable(run_calibration):
        raise TypeError(f"run_calibration must be callable, not {run_calibration!r}")
    _resolve_options(**options)
    linears = list(linears)
    if not linears:
        raise ValueError("linears is empty: nothing to quantize")
    seen = set()
    for item in linears:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise TypeError(f"linears must hold (name, nn.Linear) pairs, not {item!r}")
        name, linear = item
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"{name!r} is a {type(linear).__name__}, not an nn.Linear")
        if name in seen:
            raise ValueError(f"linear {name!r} is listed twice")
        seen.add(name)
        try:
            found = model.get_submodule(name)
        except AttributeError as e:
            raise ValueError(f"model has no submodule {name!r}") from e
        if found is not linear:
            raise ValueError(f"model.{name} is not the module given for {name!r}")

    reports, all_weights = [], {}
    for name, linear in linears:
        acc = HessianAccumulator(linear.in_features)

        def hook(_module, inputs, _output, acc=acc):
            acc.add_batch(inputs[0])

        handle = linear.register_forward_hook(hook)
        try:
            with torch.no_grad():
                run_calibration(model)
        finally:
            handle.remove()
        if acc.nsamples == 0:
            raise ValueError(f"run_calibration(model) never called linear {name!r}")
        h = acc.hessian
        weights = billm_quantize(linear.weight, h, **options)
        q = weights.dequantized()
        delta = linear.weight.detach().float() - q
        # mean over calibration tokens and outputs of (ΔW·x)²: H = 2·Σ xxᵀ / N, so Σ_t |ΔW x_t|² = tr(ΔW H ΔWᵀ)·N/2.
        output_mse = float(torch.sum(delta.matmul(h) * delta)) * acc.nsamples / (2 * acc.tokens * q.shape[0])
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child,
                BiLLMLinear(weights, linear.bias))
        all_weights[name] = weights
        reports.append(LinearReport(name, float(torch.mean(delta ** 2)), output_mse, weights.hessian_error,
                                    weights.salient_ratio, weights.average_bits(), acc.tokens))
    return BiLLMReport(tuple(reports), all_weights)


# -- integer hardware view -------------------------------------------------------------------------------------

#: Per-token integer activation codes of the view (``models.quant``'s shared type).
IntActivations = IntCodes


def quantize_activations(x: torch.Tensor, *, bits: int = 8) -> IntActivations:
    """Symmetric per-token absmax quantization, ``models.quant.quantize_per_token`` (BitNet b1.58's quantizer
    generalised): BiLLM keeps FP16 activations; the integer view needs integer codes."""
    return quantize_per_token(x.float(), bits)


def linear_view(weight: torch.Tensor, x: torch.Tensor, *, bias: torch.Tensor | None = None,
                calibration: torch.Tensor | None = None, act_bits: int = 8, **billm_options) -> LinearView:
    """Integer view of a BiLLM linear on ``x`` ``[tokens, in]``.

    The weight is binarized with :func:`billm_quantize` (``billm_options``) on the Hessian of
    ``calibration`` (default ``x``). ``x`` is quantized per token to ``act_bits`` (:func:`quantize_activations`).
    Per block ``b`` and non-empty group ``g`` the view has a masked sign pass per order (weights
    ``sign(w − mu)`` inside the group, 0 outside; ``b{b}.{g}.sign``, or ``.o1.sign``/``.o2.sign`` for the
    salient group) and, for the code variant, a masked plain-sum pass (weight 1 inside the group;
    ``b{b}.{g}.sum``), each over the block's columns only. Rescale:
    ``y = Σ_b Σ_g (Σ_o alpha_o·sign_acc_o + (Σ_o mu_o)·sum_acc) / s_x (+ bias)`` in float32.

    Passes that would be all zero are left out: empty groups, and sign passes of groups whose every weight
    equals its mean (then ``alpha = 0``), which is what the code makes of a group holding one weight per row,
    e.g. a single salient column: that weight is stored exactly, as ``mu``.
    """
    for name, t in (("weight", weight), ("x", x)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, not {type(t).__name__}")
    check_matrix("weight", weight)
    check_matrix("x", x, columns=weight.shape[1])
    check_finite("weight", weight)
    check_finite("x", x)
    if isinstance(act_bits, bool) or not isinstance(act_bits, int) or not 2 <= act_bits <= 16:
        raise ValueError(f"act_bits must be an integer in [2, 16], not {act_bits!r}")
    if bias is not None:
        if tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(f"bias has shape {tuple(bias.shape)} but the weight has {weight.shape[0]} outputs")
        check_finite("bias", bias)
    opts = _resolve_options(**billm_options)
    acc = HessianAccumulator(weight.shape[1])
    acc.add_batch(x if calibration is None else calibration)

    wq = billm_quantize(weight, acc.hessian, **billm_options)
    xq = quantize_activations(x, bits=act_bits)
    q_max = 2 ** (act_bits - 1) - 1
    passes, coefficients = [], []
    for b in range(wq.n_blocks):
        st, ed = wq.block_bounds(b)
        act = xq.codes[:, st:ed].numpy()
        for g in (SALIENT, CONCENTRATED, SPARSE):
            mask = wq.groups[:, st:ed] == g
            if not mask.any():
                continue
            for o in range(ORDERS[g]):
                name = f"b{b}.{GROUPS[g]}" + (f".o{o + 1}" if ORDERS[g] > 1 else "") + ".sign"
                codes = torch.where(mask, wq.signs[o, :, st:ed], torch.zeros_like(wq.signs[o, :, st:ed]))
                if not codes.any():
                    continue            # every weight equals its mean (alpha = 0): the pass would add nothing
                passes.append(IntPass(name, UnitKind.BINARY_BASIS, codes.numpy(), act, 2, act_bits, k_offset=st,
                                      weight_range=(-1, 1), act_range=(-q_max, q_max)))
                coefficients.append((name, wq.alpha[:, b, g, o].clone()))
            if opts.variant == "code":
                name = f"b{b}.{GROUPS[g]}.sum"
                passes.append(IntPass(name, UnitKind.BINARY_BASIS, mask.to(torch.int8).numpy(), act, 1, act_bits,
                                      weight_signed=False, k_offset=st, act_range=(-q_max, q_max)))
                coefficients.append((name, wq.mu[:, b, g, :ORDERS[g]].sum(dim=1)))
    s_x = xq.s.float()
    b_float = None if bias is None else bias.detach().float()

    def rescale(accumulators):
        y = torch.zeros(x.shape[0], weight.shape[0])
        for name, c in coefficients:
            y += torch.from_numpy(np.asarray(accumulators[name], np.int64)).float() * c
        y = y / s_x
        return (y if b_float is None else y + b_float).numpy()

    notes = (f"BiLLM keeps activations in FP16; this view quantizes them per token to {act_bits}-bit integers "
             "(symmetric absmax, round half to even), so it equals BiLLMLinear on the fake-quantized input, not "
             f"on x. Weights binarized with variant={opts.variant!r}, zero_policy={opts.zero_policy!r}; "
             "scales (alpha, mu) are applied in float32 after each block's integer passes.")
    return LinearView("billm", UnitKind.BINARY_BASIS, tuple(passes), rescale, weight.shape[1], weight.shape[0],
                      x.shape[0], notes=notes, zero_counts={"weight": wq.zero_signs})
