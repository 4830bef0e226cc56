"""One quantized linear layer, end to end on the cycle model: quantize (models) → engine (sim) → rescale."""

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from hw.params import TernaryMacParams
from models.schemes import get_scheme
from models.units import UnitKind
from models.validate import check_finite, check_matrix

from . import ternary_mac

__all__ = ["LinearResult", "check_linear", "prepare_linear", "simulate_linear", "engine_params"]


@dataclass(frozen=True)
class LinearResult:
    """Outputs of one layer run on one level (``sim`` or ``rtl``)."""

    scheme: str
    backend: str
    params: TernaryMacParams
    y: np.ndarray              #: [tokens, out] float32
    acc: np.ndarray            #: [tokens, out] int64 accumulators
    cycles: int
    weight_codes: np.ndarray = field(repr=False)
    wall_seconds: float = 0.0

    @property
    def tokens(self) -> int:
        return self.acc.shape[0]

    @property
    def out_features(self) -> int:
        return self.acc.shape[1]

    @property
    def in_features(self) -> int:
        return self.weight_codes.shape[1]

    @property
    def macs(self) -> int:
        return self.tokens * self.out_features * self.in_features

    @property
    def utilisation(self) -> float:
        return self.macs / (self.cycles * self.params.macs_per_cycle)

    @property
    def zero_weight_fraction(self) -> float:
        return float((self.weight_codes == 0).mean())


def engine_params(unit: UnitKind, *, lanes: int, rows: int, k: int) -> TernaryMacParams:
    """The engine a scheme's linears run on, sized for reductions of length ``k``."""
    if unit is not UnitKind.TERNARY_MAC:
        raise ValueError(f"no engine for unit {unit.value!r} yet; linear layers run on: ternary-mac")
    return TernaryMacParams(lanes=lanes, rows=rows, max_k=k)


def check_linear(scheme: str, weight, x, *, lanes: int, rows: int) -> TernaryMacParams:
    """Refuse a bad layer before any work: unknown scheme, non-matrix or mismatched shapes, NaN/Inf,
    engine parameters that cannot work. Returns the engine parameters the layer will run on."""
    sch = get_scheme(scheme)
    weight = np.asarray(weight)
    x = np.asarray(x)
    check_matrix("weights W", weight)
    check_matrix("inputs X", x)
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"shape mismatch: W has shape {weight.shape} ([out, in], in = {weight.shape[1]}) but X has "
                         f"shape {x.shape} ([tokens, in], in = {x.shape[1]})")
    check_finite("weights W", weight)
    check_finite("inputs X", x)
    return engine_params(sch.unit, lanes=lanes, rows=rows, k=weight.shape[1])


def prepare_linear(scheme: str, weight, x, *, lanes: int, rows: int):
    """Check the float tensors (:func:`check_linear`), quantize them under ``scheme`` and size the engine.

    ``weight`` is ``[out, in]``, ``x`` is ``[tokens, in]``; NumPy arrays. Returns
    ``(integer view, engine parameters)``.
    """
    params = check_linear(scheme, weight, x, lanes=lanes, rows=rows)
    view = get_scheme(scheme).linear_view(torch.from_numpy(np.ascontiguousarray(weight, np.float32)),
                                          torch.from_numpy(np.ascontiguousarray(x, np.float32)))
    return view, params


def simulate_linear(scheme: str, weight, x, *, lanes: int, rows: int) -> LinearResult:
    """Run the layer on the Numba cycle model of its engine."""
    view, params = prepare_linear(scheme, weight, x, lanes=lanes, rows=rows)
    start = time.perf_counter()
    run = ternary_mac.simulate(params, view.weight_codes, view.act_codes)
    wall = time.perf_counter() - start
    return LinearResult(scheme, "sim", params, view.rescale(run.acc), run.acc, run.cycles, view.weight_codes, wall)
