"""Stepped cycle model of a stream dot-product engine (``hw/engine.py``) and its operand feeder, one jitted call.

The datapath's per-beat sums arrive precomputed (``contrib``); this kernel steps the registers clock by clock —
operand register, extra stages and tree registers as a delay line of beat sums, the accumulators, the result
register, back-pressure — exactly as the RTL's ``advance`` logic does, so with the trivial feeder its cycle count
is the RTL's under any traffic.

The feeder models what sits in front of the engine in an accelerator: the beats come in *tiles* (a weight tile
and the activations it meets), each tile is loaded from DRAM into one of ``slots`` buffer slots (``slots = 2``
is double buffering; one load at a time, ``load[j]`` cycles each; 0 for data already on chip), a tile's beats may issue only once its load is done,
consecutive beats are at least ``ii`` cycles apart (buffer ports), and a tile's slot is free again the cycle after
its last beat issues. ``sim/schedule.py`` computes the same schedule in closed form per tile (the fast mode);
tests check both agree.
"""

import numpy as np
from . import cached_njit

#: Status codes returned by :func:`run_engine`.
OK = 0
CYCLE_LIMIT = 1


@cached_njit
def run_engine(contrib, last, pipe_stages, offer, ready, max_cycles, out_acc, out_beat, counters,
               tile_first, load, slots, ii):
    """Simulate the feeder and the engine clock by clock.

    contrib [B, C] int64: what beat b adds to accumulator channel c. last [B]: the beat ends a reduction.
    pipe_stages: registers before the accumulators (``latency - 1``). offer/ready: periodic traffic patterns
    (``hw.contract.Traffic``). tile_first [T+1]: first beat of each tile (the last entry is B); load [T]: load
    cycles of each tile; slots: buffer slots (1 or 2); ii: minimum cycles between beat issues. Writes each
    result's accumulator vector to ``out_acc[i]`` and the index of its last beat to ``out_beat[i]``;
    ``counters`` = [first input cycle, last output cycle, cycles simulated, input handshakes, output handshakes].
    Returns a status code.
    """
    n_beats, n_ch = contrib.shape
    n_tiles = load.shape[0]
    n_results = 0
    for b in range(n_beats):
        if last[b]:
            n_results += 1

    p = pipe_stages
    st_valid = np.zeros(p, np.bool_)
    st_beat = np.zeros(p, np.int64)
    acc = np.zeros(n_ch, np.int64)
    out_valid = False
    held_beat = 0
    held = np.zeros(n_ch, np.int64)

    # feeder state
    ready_at = np.full(n_tiles, -1, np.int64)      # cycle a tile's data is usable; -1 while not loaded
    next_load = 0
    dram_free_at = 0
    free_slots = slots
    tile = 0
    last_issue = -ii

    next_beat = 0
    pending = False
    first_in = -1
    last_out = -1
    done = 0
    cycle = 0
    while done < n_results:
        if cycle >= max_cycles:
            counters[2] = cycle
            return CYCLE_LIMIT
        # DRAM: one load at a time, into a free slot (loads of data already on chip take no time, so several
        # of them can start in one cycle)
        while next_load < n_tiles and free_slots > 0 and cycle >= dram_free_at:
            ready_at[next_load] = cycle + load[next_load]
            dram_free_at = cycle + load[next_load]
            free_slots -= 1
            next_load += 1
        if not pending and next_beat < n_beats:
            while next_beat >= tile_first[tile + 1]:
                tile += 1
            if (ready_at[tile] >= 0 and cycle >= ready_at[tile] and cycle - last_issue >= ii
                    and offer[cycle % offer.shape[0]]):
                pending = True
        sink_ready = ready[cycle % ready.shape[0]]
        advance = (not out_valid) or sink_ready
        in_fire = pending and advance

        if out_valid and sink_ready:
            for c in range(n_ch):
                out_acc[done, c] = held[c]
            out_beat[done] = held_beat
            last_out = cycle
            done += 1

        if advance:
            if st_valid[p - 1]:
                b = st_beat[p - 1]
                for c in range(n_ch):
                    acc[c] += contrib[b, c]
                if last[b]:
                    for c in range(n_ch):
                        held[c] = acc[c]
                        acc[c] = 0
                    held_beat = b
                    out_valid = True
                else:
                    out_valid = False
            else:
                out_valid = False
            for s in range(p - 1, 0, -1):
                st_valid[s] = st_valid[s - 1]
                st_beat[s] = st_beat[s - 1]
            st_valid[0] = in_fire
            if in_fire:
                st_beat[0] = next_beat
                if first_in < 0:
                    first_in = cycle
                last_issue = cycle
                next_beat += 1
                pending = False
                if next_beat == tile_first[tile + 1]:
                    free_slots += 1          # the slot is free from the next cycle on (loads start above)
        cycle += 1

    counters[0] = first_in
    counters[1] = last_out
    counters[2] = cycle
    counters[3] = next_beat
    counters[4] = done
    return OK
