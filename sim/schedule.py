"""The fast mode's schedule of one engine run: the feeder's tiles in closed form, one recurrence step per tile.

The stepped kernel (``sim/kernels/engine.py``) moves the same feeder cycle by cycle; :func:`feeder_schedule`
gives the same cycle numbers without stepping (tests check both on many shapes):

* tile ``j``'s load may start when the DRAM is free (one load at a time) and a buffer slot is free (with ``S``
  slots, tile ``j`` takes the slot tile ``j − S`` freed the cycle after its last beat issued);
* its data is usable ``load[j]`` cycles after the start;
* its first beat issues at ``max(ready, previous issue + ii)``, the others every ``ii`` cycles;
* the op ends when the result of the last beat hands off, ``latency`` cycles after it issued.
"""

from dataclasses import dataclass

import numpy as np

__all__ = ["FeederSchedule", "feeder_schedule"]


@dataclass(frozen=True)
class FeederSchedule:
    first_issue: int        #: cycle of the first beat's handshake
    last_issue: int         #: cycle of the last beat's handshake
    last_output: int        #: cycle of the last result's handshake
    dram_busy: int          #: cycles the DRAM channel spends loading
    stall_cycles: int       #: issue slots lost to loads and buffer ports (cycles - beats - latency)

    @property
    def cycles(self) -> int:
        """Cycles from the op's start (cycle 0) to its last result handshake, inclusive."""
        return self.last_output + 1


def feeder_schedule(tile_beats, load, *, slots: int, ii: int, latency: int, release: int = 1) -> FeederSchedule:
    """Closed-form schedule of an engine run fed tile by tile (see the module docstring). ``release``: cycles from
    a tile's last beat issue to its slot being free (1; the accelerator's feeder, which reads a beat over ``ii``
    cycles from its set-up cycle on: ``ii + 1``, docs/isa.md §4.2)."""
    beats = np.asarray(tile_beats, np.int64)
    loads = np.asarray(load, np.int64)
    if beats.ndim != 1 or beats.shape != loads.shape or beats.size == 0:
        raise ValueError("tile_beats and load must be equal-length, non-empty sequences")
    if (beats < 1).any() or (loads < 0).any() or slots < 1 or ii < 1 or latency < 1:
        raise ValueError(f"invalid schedule request: slots={slots}, ii={ii}, latency={latency}")
    n = beats.size
    last_issue = np.zeros(n, np.int64)
    dram_free = 0
    prev_last = None
    first_issue = 0
    for j in range(n):
        slot_free = 0 if j < slots else last_issue[j - slots] + release
        start = max(dram_free, slot_free)
        ready = start + int(loads[j])
        dram_free = ready
        first = ready if prev_last is None else max(ready, prev_last + ii)
        if j == 0:
            first_issue = first
        last_issue[j] = first + (int(beats[j]) - 1) * ii
        prev_last = int(last_issue[j])
    last_output = prev_last + latency
    total_beats = int(beats.sum())
    return FeederSchedule(first_issue, prev_last, last_output, int(loads.sum()),
                          last_output + 1 - total_beats - latency)
