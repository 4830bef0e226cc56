"""Cycle model of every stream dot-product engine, built from the unit's parameter object (``hw.params``).

:func:`simulate` runs a problem (a weight side ``[..., M, K]`` and activation vectors ``[T, K]``) through the
stepped model under any :class:`hw.contract.Traffic` and returns the unit's result fields, mapped back to
``[T, ..., M]``, and the cycle count; the closed form is ``params.cycles`` at full throughput on chip, and
``sim.schedule.feeder_schedule`` behind a :class:`Feeder` (DRAM tiles, buffer slots, port-limited issue).
"""

from dataclasses import dataclass

import numpy as np

from hw.contract import Traffic, measured_cycles
from hw.units import EngineParams

from .kernels import engine as kernel

__all__ = ["EngineRun", "Feeder", "simulate", "MAX_STEPPED_BYTES"]

#: Largest per-beat channel table the stepped mode builds; beyond it use the closed form (fast mode).
MAX_STEPPED_BYTES = 2 << 30


@dataclass(frozen=True)
class EngineRun:
    """Outcome of one stepped run."""

    results: dict[str, np.ndarray]   #: result fields, ``[tokens, ..., M]``
    cycles: int                      #: per ``hw.contract.CYCLE_COUNT_DEFINITION``
    first_input_cycle: int
    last_output_cycle: int
    input_beats: int
    result_beats: int
    macs_per_cycle: int
    useful_macs: int                 #: MACs of the problem itself (planes × M × K × tokens)
    active_macs: int                 #: MACs with a non-zero weight (what a zero-skipping engine performs)

    @property
    def utilisation(self) -> float:
        """Useful MACs over the MAC slots available during the measured cycles."""
        return self.useful_macs / (self.cycles * self.macs_per_cycle)


def _max_cycles(n_beats: int, latency: int, traffic: Traffic) -> int:
    slow = int(np.ceil(traffic.offer.size / traffic.offer.sum() + traffic.ready.size / traffic.ready.sum()))
    return (n_beats + latency + 1) * (slow + 1) + traffic.offer.size + traffic.ready.size


@dataclass(frozen=True)
class Feeder:
    """What feeds the engine in an accelerator: tiles of beats loaded from DRAM into buffer slots.

    tile_beats : beats of each tile, in stream order (they sum to the problem's beats).
    load : DRAM load cycles of each tile (0 for data already on chip).
    slots : buffer slots (2 = double buffering).
    ii : minimum cycles between beat issues (buffer ports).
    """

    tile_beats: tuple[int, ...]
    load: tuple[int, ...]
    slots: int = 2
    ii: int = 1

    def __post_init__(self):
        if len(self.tile_beats) != len(self.load) or not self.tile_beats:
            raise ValueError("a feeder needs one load time per tile and at least one tile")
        if min(self.tile_beats) < 1 or min(self.load) < 0 or self.slots < 1 or self.ii < 1:
            raise ValueError(f"invalid feeder {self}")

    @classmethod
    def on_chip(cls, beats: int) -> "Feeder":
        """Everything already on chip, one beat per cycle: the engine alone (what the RTL benches measure)."""
        return cls((beats,), (0,), 1, 1)


def simulate(params: EngineParams, weights, acts, traffic: Traffic | None = None, *, extra=None,
             max_cycles: int | None = None, feeder: Feeder | None = None) -> EngineRun:
    """Run the problem through the stepped model of ``params``' engine (and its ``feeder``).

    ``weights``/``acts``/``extra`` are the unit's operands as ``params.operand_beats`` takes them (their values
    are checked there); ``extra`` is the unit's extra operand (the fixed-point scales ``alpha`` of a binary-basis
    engine with ``scale_bits``), None for the others.
    """
    weights = np.asarray(weights)
    acts = np.asarray(acts)
    if acts.ndim != 2:
        raise ValueError(f"activations must be [tokens, K], not shape {acts.shape}")
    *lead, m, k = weights.shape
    tokens = acts.shape[0]
    params.check_problem(m, k, tokens)
    params.check_operands(weights, acts, extra)
    n_beats = params.n_beats(m, k, tokens)
    n_ch = sum(params.rows if c.per_row else 1 for c in params.channels())
    if n_beats * n_ch * 8 > MAX_STEPPED_BYTES:
        raise ValueError(f"a stepped run of {n_beats:,} beats × {n_ch} channels needs more than "
                         f"{MAX_STEPPED_BYTES >> 30} GiB; use the closed form params.cycles for this size")
    contrib = params.contributions(weights, acts)
    channels = params.channels()
    table = np.concatenate([contrib[c.name] if c.per_row else contrib[c.name][:, None] for c in channels], axis=1)
    sched = params.schedule(m, k, tokens)
    traffic = traffic or Traffic.full()
    feeder = feeder or Feeder.on_chip(n_beats)
    if sum(feeder.tile_beats) != n_beats:
        raise ValueError(f"the feeder's tiles hold {sum(feeder.tile_beats)} beats, the problem has {n_beats}")
    limit = max_cycles if max_cycles is not None else \
        _max_cycles(n_beats * feeder.ii + sum(feeder.load), params.latency, traffic)
    n_results = params.row_blocks(m) * tokens
    out_acc = np.zeros((n_results, table.shape[1]), np.int64)
    out_beat = np.zeros(n_results, np.int64)
    counters = np.zeros(5, np.int64)
    tile_first = np.concatenate([[0], np.cumsum(feeder.tile_beats)]).astype(np.int64)
    status = kernel.run_engine(np.ascontiguousarray(table), sched.last, params.latency - 1, traffic.offer,
                               traffic.ready, limit, out_acc, out_beat, counters, tile_first,
                               np.asarray(feeder.load, np.int64), feeder.slots, feeder.ii)
    if status != kernel.OK:
        raise RuntimeError(f"cycle model stopped after {counters[2]} cycles without finishing (limit {limit}); "
                           "the traffic pattern starves the engine")
    acc, col = {}, 0
    for c in channels:
        width = params.rows if c.per_row else 1
        acc[c.name] = out_acc[:, col:col + width] if c.per_row else out_acc[:, col]
        col += width
    fields = params.finish(acc, params.result_extra(weights, acts, extra, out_beat))
    results = {name: params.collect_results(v, m, k, tokens) for name, v in fields.items()}
    planes = params.macs_per_weight            # BiLLM's planes are masks of one binarized weight: one MAC
    nonzero = int(np.count_nonzero(weights)) if not lead else m * k * planes
    first, last_out = int(counters[0]), int(counters[1])
    return EngineRun(results, measured_cycles(first, last_out), first, last_out, int(counters[3]),
                     int(counters[4]), params.macs_per_cycle, planes * m * k * tokens, nonzero * tokens)
