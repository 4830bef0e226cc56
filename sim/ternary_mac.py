"""Cycle model of the ternary-MAC engine, built from the same :class:`hw.params.TernaryMacParams`.

Two modes that must agree (tests prove it):

* :func:`simulate` steps the engine clock by clock (Numba), computing the real accumulators, under any
  :class:`hw.contract.Traffic`;
* :func:`fast_cycles` is the closed form at full throughput (``TernaryMacParams.cycles``).
"""

from dataclasses import dataclass

import numpy as np

from hw.contract import Traffic, measured_cycles
from hw.params import TernaryMacParams
from models.validate import check_matrix

from .kernels import ternary_mac as kernel

__all__ = ["EngineRun", "simulate", "fast_cycles"]


@dataclass(frozen=True)
class EngineRun:
    """Outcome of one stepped run."""

    acc: np.ndarray            #: ``[tokens, M]`` int64 accumulators
    cycles: int                #: per ``hw.contract.CYCLE_COUNT_DEFINITION``
    first_input_cycle: int
    last_output_cycle: int
    input_beats: int
    result_beats: int
    active_macs: int           #: MACs with a non-zero weight (what a zero-skipping engine would do)
    issued_macs: int           #: lanes × rows × input beats (padding included)
    useful_macs: int           #: M × K × tokens
    macs_per_cycle: int

    @property
    def utilisation(self) -> float:
        """Useful MACs over the MAC slots available during the measured cycles."""
        return self.useful_macs / (self.cycles * self.macs_per_cycle)


def _as_codes(name: str, array, lo: int, hi: int, dtype) -> np.ndarray:
    a = np.asarray(array)
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array, not {a.dtype}")
    if a.size and (a.min() < lo or a.max() > hi):
        bad = a[(a < lo) | (a > hi)].flat[0]
        raise ValueError(f"{name} holds {int(bad)}, outside [{lo}, {hi}]")
    return np.ascontiguousarray(a, dtype=dtype)


def simulate(params: TernaryMacParams, weight_codes, act_codes, traffic: Traffic | None = None,
             *, max_cycles: int | None = None) -> EngineRun:
    """Run ``weight_codes[M, K] · act_codes[tokens, K]ᵀ`` through the stepped model."""
    check_matrix("weight codes", np.asarray(weight_codes))
    check_matrix("activation codes", np.asarray(act_codes), columns=np.asarray(weight_codes).shape[1])
    if params.act_bits > 16:
        raise ValueError(f"the cycle model holds activations in at most 16 bits; act_bits={params.act_bits}")
    w = _as_codes("weight codes", weight_codes, -1, 1, np.int8)
    lo, hi = -(1 << (params.act_bits - 1)), (1 << (params.act_bits - 1)) - 1
    # Two storage types only, so Numba compiles at most two specialisations.
    x = _as_codes("activation codes", act_codes, lo, hi, np.int8 if params.act_bits <= 8 else np.int16)
    m, k = w.shape
    tokens = x.shape[0]
    sched = params.schedule(m, k, tokens)
    traffic = traffic or Traffic.full()
    if max_cycles is None:
        # Every beat and result needs at least one offered / ready cycle; bound generously from the patterns.
        slow = int(np.ceil(traffic.offer.size / traffic.offer.sum() + traffic.ready.size / traffic.ready.sum()))
        max_cycles = (len(sched) + params.latency + 1) * (slow + 1) + traffic.offer.size + traffic.ready.size
    acc = np.zeros((tokens, m), np.int64)
    counters = np.zeros(5, np.int64)
    status = kernel.run_ternary_mac(w, x, sched.row_block, sched.token, sched.k_chunk, sched.last,
                                    params.lanes, params.rows, params.latency - 1,
                                    traffic.offer, traffic.ready, max_cycles, acc, counters)
    if status != kernel.OK:
        raise RuntimeError(f"cycle model stopped after {counters[2]} cycles without finishing "
                           f"(limit {max_cycles}); the traffic pattern starves the engine")
    first, last_out = int(counters[0]), int(counters[1])
    return EngineRun(
        acc=acc,
        cycles=measured_cycles(first, last_out),
        first_input_cycle=first,
        last_output_cycle=last_out,
        input_beats=int(counters[3]),
        result_beats=int(counters[4]),
        active_macs=int(np.count_nonzero(w)) * tokens,
        issued_macs=int(counters[3]) * params.macs_per_cycle,
        useful_macs=m * k * tokens,
        macs_per_cycle=params.macs_per_cycle,
    )


def fast_cycles(params: TernaryMacParams, m: int, k: int, tokens: int = 1) -> int:
    """Full-throughput cycle count without stepping (the formula owned by ``TernaryMacParams.cycles``)."""
    return params.cycles(m, k, tokens)
