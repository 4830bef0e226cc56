"""Stepped cycle model of the ternary-MAC engine (``hw/ternary_mac.py``), one jitted call per run."""

import numpy as np
from numba import njit

#: Status codes returned by :func:`run_ternary_mac`.
OK = 0
CYCLE_LIMIT = 1


@njit(cache=True)
def run_ternary_mac(weight, act, row_block, token, k_chunk, last, lanes, rows, pipe_stages,
                    offer, ready, max_cycles, acc_out, counters):
    """Simulate the engine clock by clock.

    weight [M, K] and act [T, K] are int8 codes; row_block/token/k_chunk/last describe the beats in stream
    order (``TernaryMacParams.schedule``). ``pipe_stages`` is the number of registers before the
    accumulator (operand register + tree registers), i.e. ``latency - 1``. ``offer``/``ready`` are the
    periodic traffic patterns of ``hw.contract.Traffic``.

    Writes the accumulators of each result beat into ``acc_out[token, row]`` and the counts into
    ``counters``: [first input cycle, last output cycle, cycles simulated, input handshakes, output
    handshakes]. Returns a status code.
    """
    m, k = weight.shape
    n_beats = row_block.shape[0]
    n_results = 0
    for b in range(n_beats):
        if last[b]:
            n_results += 1

    # Pipeline registers before the accumulator: valid, beat index and the per-row partial sums.
    p = pipe_stages
    st_valid = np.zeros(p, np.bool_)
    st_beat = np.zeros(p, np.int64)
    st_sum = np.zeros((p, rows), np.int64)
    acc = np.zeros(rows, np.int64)
    out_valid = False
    out_beat = 0
    out_acc = np.zeros(rows, np.int64)

    next_beat = 0
    pending = False          # the source holds an offered, not yet accepted beat
    first_in = -1
    last_out = -1
    done = 0
    n_in = 0
    cycle = 0
    while done < n_results:
        if cycle >= max_cycles:
            counters[2] = cycle
            return CYCLE_LIMIT
        if not pending and next_beat < n_beats and offer[cycle % offer.shape[0]]:
            pending = True
        sink_ready = ready[cycle % ready.shape[0]]
        advance = (not out_valid) or sink_ready
        in_fire = pending and advance

        if out_valid and sink_ready:
            r0 = row_block[out_beat] * rows
            t = token[out_beat]
            for r in range(rows):
                if r0 + r < m:
                    acc_out[t, r0 + r] = out_acc[r]
            last_out = cycle
            done += 1

        if advance:
            # Register at the accumulator input: the last pipeline stage, or the operand beat itself.
            tail_valid = st_valid[p - 1]
            tail_beat = st_beat[p - 1]
            if tail_valid:
                if last[tail_beat]:
                    for r in range(rows):
                        out_acc[r] = acc[r] + st_sum[p - 1, r]
                        acc[r] = 0
                    out_beat = tail_beat
                    out_valid = True
                else:
                    for r in range(rows):
                        acc[r] += st_sum[p - 1, r]
                    out_valid = False
            else:
                out_valid = False
            for s in range(p - 1, 0, -1):
                st_valid[s] = st_valid[s - 1]
                st_beat[s] = st_beat[s - 1]
                for r in range(rows):
                    st_sum[s, r] = st_sum[s - 1, r]
            st_valid[0] = in_fire
            if in_fire:
                b = next_beat
                r0 = row_block[b] * rows
                k0 = k_chunk[b] * lanes
                t = token[b]
                n_lanes = min(lanes, k - k0)
                n_rows = min(rows, m - r0)
                for r in range(rows):
                    total = 0
                    if r < n_rows:
                        w_row = weight[r0 + r]
                        for l in range(n_lanes):
                            total += np.int64(w_row[k0 + l]) * np.int64(act[t, k0 + l])
                    st_sum[0, r] = total
                st_beat[0] = b
                if first_in < 0:
                    first_in = cycle
                next_beat += 1
                n_in += 1
                pending = False
        cycle += 1

    counters[0] = first_in
    counters[1] = last_out
    counters[2] = cycle
    counters[3] = n_in
    counters[4] = done
    return OK
