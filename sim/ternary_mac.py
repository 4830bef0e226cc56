"""The ternary-MAC engine's cycle model: the generic stepped model (``sim.engine``) with accumulators out.

Kept as the entry point of the vertical slice: :func:`simulate` returns :class:`TernaryRun` with ``acc``
``[tokens, M]``.
"""

from dataclasses import dataclass

import numpy as np

from hw.contract import Traffic
from hw.params import TernaryMacParams
from models.validate import check_matrix

from .engine import EngineRun
from .engine import simulate as simulate_engine

__all__ = ["TernaryRun", "simulate", "fast_cycles"]


@dataclass(frozen=True)
class TernaryRun:
    run: EngineRun

    @property
    def acc(self) -> np.ndarray:
        return self.run.results["acc"]

    def __getattr__(self, name):
        return getattr(self.run, name)


def simulate(params: TernaryMacParams, weight_codes, act_codes, traffic: Traffic | None = None,
             *, max_cycles: int | None = None) -> TernaryRun:
    """Run ``weight_codes[M, K] · act_codes[tokens, K]ᵀ`` through the stepped model."""
    check_matrix("weight codes", np.asarray(weight_codes))
    check_matrix("activation codes", np.asarray(act_codes), columns=np.asarray(weight_codes).shape[1])
    return TernaryRun(simulate_engine(params, weight_codes, act_codes, traffic, max_cycles=max_cycles))


def fast_cycles(params: TernaryMacParams, m: int, k: int, tokens: int = 1) -> int:
    """Full-throughput cycle count without stepping (the formula owned by ``TernaryMacParams.cycles``)."""
    return params.cycles(m, k, tokens)
