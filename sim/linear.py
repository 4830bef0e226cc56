"""One quantized linear layer, end to end on the cycle model: quantize (models) → engine passes (sim) → rescale.

Every scheme's integer view (``models.views.LinearView``) is a set of integer passes. Until the dedicated
engines of the other unit kinds exist, every pass whose weights are in {-1, 0, +1} runs on the ternary-MAC
engine, which computes XNOR-popcount (±1 × ±1), masked sign sums and binary-basis passes exactly. The passes
stream back to back through one engine sized for the longest pass, so a layer takes
``Σ beats(pass) + latency`` cycles.
"""

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from hw.params import TernaryMacParams
from models.intops import signed_width
from models.schemes import get_scheme
from models.validate import check_finite, check_matrix
from models.views import IntPass, LinearView

from . import ternary_mac

__all__ = ["LinearResult", "check_linear", "prepare_linear", "simulate_linear", "engine_for_view",
           "MAX_SIM_ACT_BITS"]

#: Widest activation code the cycle model holds (int16 storage).
MAX_SIM_ACT_BITS = 16


@dataclass(frozen=True)
class LinearResult:
    """Outputs of one layer run on one level (``sim`` or ``rtl``)."""

    scheme: str
    backend: str
    params: TernaryMacParams
    view: LinearView = field(repr=False)
    y: np.ndarray                       #: [tokens, out] float32
    acc: dict[str, np.ndarray]          #: pass name → [tokens, out] int64 accumulators
    pass_cycles: dict[str, int]         #: pass name → cycles of that pass run alone
    cycles: int                         #: the whole layer, passes back to back
    wall_seconds: float = 0.0

    @property
    def tokens(self) -> int:
        return self.view.tokens

    @property
    def out_features(self) -> int:
        return self.view.out_features

    @property
    def in_features(self) -> int:
        return self.view.in_features

    @property
    def macs(self) -> int:
        """MACs of the layer itself (tokens × out × in)."""
        return self.tokens * self.out_features * self.in_features

    @property
    def engine_macs(self) -> int:
        """MACs the engine performs over all passes."""
        return self.view.macs

    @property
    def utilisation(self) -> float:
        """Engine MACs over the MAC slots available during the run."""
        return self.engine_macs / (self.cycles * self.params.macs_per_cycle)

    @property
    def zero_weight_fraction(self) -> float:
        total = sum(p.weight_codes.size for p in self.view.passes)
        return sum(int((p.weight_codes == 0).sum()) for p in self.view.passes) / total

    def stacked_acc(self) -> tuple[list[str], np.ndarray]:
        """Pass names and accumulators: ``[tokens, out]`` for one pass, ``[passes, tokens, out]`` for several."""
        names = [p.name for p in self.view.passes]
        if len(names) == 1:
            return names, self.acc[names[0]]
        return names, np.stack([self.acc[n] for n in names])


def _pass_act_bits(p: IntPass) -> int:
    return signed_width(*p.act_value_range)


def engine_for_view(view: LinearView, *, lanes: int, rows: int) -> TernaryMacParams:
    """The ternary-MAC engine that can run every pass of ``view``, or an error naming the pass that cannot."""
    for p in view.passes:
        lo, hi = p.weight_value_range
        if lo < -1 or hi > 1:
            raise ValueError(f"{view.scheme} pass {p.name!r} has weight codes in [{lo}, {hi}]; the ternary-MAC "
                             f"engine takes {{-1, 0, +1}} only (it needs the {p.unit.value} engine)")
        if _pass_act_bits(p) > MAX_SIM_ACT_BITS:
            raise ValueError(f"{view.scheme} pass {p.name!r} needs {_pass_act_bits(p)}-bit activations; the cycle "
                             f"model holds at most {MAX_SIM_ACT_BITS}")
    return TernaryMacParams(lanes=lanes, rows=rows, max_k=max(p.k for p in view.passes),
                            act_bits=max(max(_pass_act_bits(p) for p in view.passes), 2))


def check_linear(scheme: str, weight, x, *, lanes: int, rows: int) -> None:
    """Refuse a bad layer before any work: unknown scheme, non-matrix or mismatched shapes, NaN/Inf,
    engine parameters that cannot work."""
    sch = get_scheme(scheme)
    if sch.linear_view is None:
        raise ValueError(f"scheme {scheme!r} keeps its linears in floating point; there is no integer engine to "
                         "simulate (use lowbit analyze for its sizes and operation counts)")
    weight = np.asarray(weight)
    x = np.asarray(x)
    check_matrix("weights W", weight)
    check_matrix("inputs X", x)
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"shape mismatch: W has shape {weight.shape} ([out, in], in = {weight.shape[1]}) but X has "
                         f"shape {x.shape} ([tokens, in], in = {x.shape[1]})")
    check_finite("weights W", weight)
    check_finite("inputs X", x)
    TernaryMacParams(lanes=lanes, rows=rows, max_k=weight.shape[1])


def prepare_linear(scheme: str, weight, x, *, lanes: int, rows: int, **options) -> tuple[LinearView, TernaryMacParams]:
    """Check the float tensors (:func:`check_linear`), quantize them under ``scheme`` and size the engine.

    ``weight`` is ``[out, in]``, ``x`` is ``[tokens, in]`` (NumPy arrays); ``options`` go to the scheme's
    ``linear_view``.
    """
    check_linear(scheme, weight, x, lanes=lanes, rows=rows)
    view = get_scheme(scheme).view(torch.from_numpy(np.ascontiguousarray(weight, np.float32)),
                                   torch.from_numpy(np.ascontiguousarray(x, np.float32)), **options)
    return view, engine_for_view(view, lanes=lanes, rows=rows)


def combine_passes(params: TernaryMacParams, pass_cycles: dict[str, int]) -> int:
    """Cycles of the passes streamed back to back: each pass's beats, one pipeline latency at the end."""
    return sum(c - params.latency for c in pass_cycles.values()) + params.latency


def simulate_linear(scheme: str, weight, x, *, lanes: int, rows: int, **options) -> LinearResult:
    """Run the layer on the Numba cycle model of its engine."""
    view, params = prepare_linear(scheme, weight, x, lanes=lanes, rows=rows, **options)
    start = time.perf_counter()
    acc, pass_cycles = {}, {}
    for p in view.passes:
        run = ternary_mac.simulate(params, p.weight_codes, p.act_codes)
        acc[p.name], pass_cycles[p.name] = run.acc, run.cycles
    wall = time.perf_counter() - start
    return LinearResult(scheme, "sim", params, view, view.output(acc), acc, pass_cycles,
                        combine_passes(params, pass_cycles), wall)
