"""The timing of a program (docs/isa.md §4) in one jitted pass over its instructions, in program order.

Every instruction is reduced to a class, a queue, its four dependency bits and its duration parameters (the
caller, ``sim.machine``, derives them from the instruction's fields and the design: in closed form in the fast
mode, from the unit kernels in the stepped mode). The pass keeps each queue's free cycle, the compute queue's
issue pipeline, and the four token queues as FIFOs of cycle numbers; because a well-formed program pushes every
token before it is popped (``isa.validate``), one pass in program order is exact.
"""

import numpy as np

from . import cached_njit

# instruction classes
TRANSFER = 0      # LOAD / STORE: `dur` cycles on its queue
MATMUL = 1        # `dur` beats every `ii` cycles, results `lat` cycles after the last beat
SERIAL = 2        # POST / HOST: `dur` cycles on the compute queue after every earlier compute instruction is done
SYNC = 3          # SYNC: one cycle on its queue; NOP (no queue): none
FINISH = 4

# queues
LOAD_Q, COMPUTE_Q, STORE_Q = 0, 1, 2

# dependency bits (docs/isa.md §3 header bits 4-7, shifted down)
POP_PREV, POP_NEXT, PUSH_PREV, PUSH_NEXT = 1, 2, 4, 8

# token queues: load→compute, compute→load, compute→store, store→compute
L2C, C2L, C2S, S2C = 0, 1, 2, 3

# status codes
OK = 0
TOKEN_MISSING = 1     # a pop found its token queue empty (isa.validate refuses such programs first)
NO_FINISH = 2


@cached_njit
def _pop_queue(q, prev):
    """The token queue an instruction of queue ``q`` pops from its previous (``prev``) or next neighbour."""
    if q == LOAD_Q:
        return -1 if prev else C2L
    if q == COMPUTE_Q:
        return L2C if prev else S2C
    return C2S if prev else -1


@cached_njit
def _push_queue(q, prev):
    """The token queue an instruction of queue ``q`` pushes to its previous (``prev``) or next neighbour."""
    if q == LOAD_Q:
        return -1 if prev else L2C
    if q == COMPUTE_Q:
        return C2L if prev else C2S
    return S2C if prev else -1


@cached_njit
def schedule(cls, queue, deps, dur, ii, lat, fence, feed, start, done, last_issue, push_prev_at, push_next_at,
             summary, state, tokens, head, tail, first_index, expand):
    """Time the instructions of one chunk of a program, continuing from ``state``. Inputs (length n): ``cls``
    class, ``queue`` (-1 for none), ``deps`` bits, ``dur`` (cycles, or beats for a MATMUL), ``ii`` and ``lat``
    (MATMUL), ``fence`` (MATMUL: wait for the compute queue to drain). Outputs (length n): ``start`` and ``done``
    cycles, ``last_issue`` (MATMUL: cycle of the last beat, else -1) and the cycles the pushed tokens carry (-1:
    none). ``summary`` = [end cycle so far, index of a failing instruction (-1: none), busy cycles of the load,
    compute and store queues] (the busy cycles accumulate). ``state`` = [issue_free, comp_done, free of the load,
    compute and store queues] carries from chunk to chunk, as do the token queues ``tokens`` [4, capacity] with
    their ``head``/``tail`` indices (capacity: what is queued plus this chunk's instructions). Instruction ``i`` of
    the chunk is instruction ``first_index + i`` of the program (dispatched at that cycle). ``cls``, ``queue``,
    ``dur``, ``ii``, ``lat`` and ``fence`` may be given once per representative of a repeated segment: instruction
    ``i`` reads entry ``expand[i]`` of them (its own ``deps[i]``, the outputs ``[i]``). Returns OK after a FINISH,
    NO_FINISH when the chunk ends without one (the program goes on), or TOKEN_MISSING."""
    n = expand.shape[0]
    issue_free = state[0]                 # compute queue: first cycle a following MATMUL may issue a beat
    comp_done = state[1]                  # compute queue: every earlier compute instruction done by then
    end = summary[0]
    for i in range(n):
        x = expand[i]
        c = cls[x]
        q = queue[x]
        d = deps[i]
        t = first_index + i                # dispatched one per cycle in program order
        last_issue[i] = -1
        push_prev_at[i] = -1
        push_next_at[i] = -1
        if c == FINISH:
            start[i] = max(t, end)
            done[i] = start[i]
            summary[0] = done[i]
            summary[1] = -1
            state[0] = issue_free
            state[1] = comp_done
            return OK
        for prev in (True, False):
            if d & (POP_PREV if prev else POP_NEXT):
                tq = _pop_queue(q, prev)
                if tq < 0 or head[tq] == tail[tq]:
                    summary[1] = i
                    return TOKEN_MISSING
                t = max(t, tokens[tq, head[tq]])
                head[tq] += 1
        if c == TRANSFER:
            t = max(t, state[2 + q])
            e = t + dur[x]
            state[2 + q] = e
            summary[2 + q] += dur[x]
            tp = e
            tn = e
        elif c == MATMUL:
            t = max(t, comp_done if fence[x] else issue_free)
            # fed (stream engines): `t` is the set-up cycle; beat b's operands are read in cycles t + 1 + b·ii …
            # + ii - 1, registered into the assembly registers as they arrive, handed to the engine the cycle
            # after, and the result comes `lat` cycles after the last beat (docs/isa.md §4.2; hw.accel's feeder)
            f = feed[x]
            li = t + (dur[x] - 1) * ii[x]
            dd = li + f * (ii[x] + 2) + lat[x]
            issue_free = li + ii[x]        # the next MATMUL's set-up overlaps this one's last read
            e = dd + 1
            comp_done = max(comp_done, e)
            last_issue[i] = li
            summary[2 + COMPUTE_Q] += dur[x] * ii[x]
            tp = li + 1 + f * ii[x]        # every operand read: the buffer slot it read is free again
            tn = e                         # its results are written
        elif c == SERIAL:
            t = max(t, comp_done)
            e = t + dur[x]
            comp_done = e
            issue_free = e
            summary[2 + COMPUTE_Q] += dur[x]
            tp = e
            tn = e
        elif q < 0:                        # NOP: no queue, no cycles (dispatch drops it)
            e = t
            tp = t
            tn = t
        else:                              # SYNC: one cycle on its queue
            if q == COMPUTE_Q:
                t = max(t, comp_done)
                e = t + 1
                issue_free = max(issue_free, e)
                comp_done = e
            else:
                t = max(t, state[2 + q])
                e = t + 1
                state[2 + q] = e
            summary[2 + q] += 1
            tp = e
            tn = e
        start[i] = t
        done[i] = e
        end = max(end, e)
        for prev in (True, False):
            if d & (PUSH_PREV if prev else PUSH_NEXT):
                tq = _push_queue(q, prev)
                if tq < 0:
                    summary[1] = i
                    return TOKEN_MISSING
                at = tp if prev else tn
                tokens[tq, tail[tq]] = at
                tail[tq] += 1
                if prev:
                    push_prev_at[i] = at
                else:
                    push_next_at[i] = at
                end = max(end, at)
    summary[0] = end
    summary[1] = -1
    state[0] = issue_free
    state[1] = comp_done
    return NO_FINISH


@cached_njit
def overlap(start, done, queue, qa, qb):
    """Cycles during which queue ``qa`` and queue ``qb`` both had an instruction in flight (``[start, done)``
    intervals; each queue's starts are in program order, so its intervals are merged in one pass)."""
    n = start.shape[0]
    # merged intervals of each queue
    a_s = np.empty(n, np.int64)
    a_e = np.empty(n, np.int64)
    b_s = np.empty(n, np.int64)
    b_e = np.empty(n, np.int64)
    na = 0
    nb = 0
    for i in range(n):
        if done[i] <= start[i]:
            continue
        if queue[i] == qa:
            if na and start[i] <= a_e[na - 1]:
                a_e[na - 1] = max(a_e[na - 1], done[i])
            else:
                a_s[na] = start[i]
                a_e[na] = done[i]
                na += 1
        elif queue[i] == qb:
            if nb and start[i] <= b_e[nb - 1]:
                b_e[nb - 1] = max(b_e[nb - 1], done[i])
            else:
                b_s[nb] = start[i]
                b_e[nb] = done[i]
                nb += 1
    total = 0
    i = 0
    j = 0
    while i < na and j < nb:
        lo = max(a_s[i], b_s[j])
        hi = min(a_e[i], b_e[j])
        if hi > lo:
            total += hi - lo
        if a_e[i] < b_e[j]:
            i += 1
        else:
            j += 1
    return total


@cached_njit
def overlap_bounded(start, done, queue, expand, carry, last_start, dispatched, out):
    """:func:`overlap` for one chunk of a longer program, exactly: intervals ``[start, done)`` of the load (0),
    compute (1) and store (2) queues, after the ``carry`` rows ``[s, e, queue]`` left by earlier chunks, are merged
    per queue; their parts before the bound — the earliest cycle any later instruction can start, ``min`` over the
    queues of ``max(latest start so far, dispatched)``, since each queue starts in order and no instruction starts
    before its dispatch — are intersected (load with compute, store with compute), the rest is written to ``out``
    to be carried. ``last_start`` (per queue) is updated. Returns (load ∩ compute, store ∩ compute, rows in
    ``out``). Instruction ``i``'s queue is ``queue[expand[i]]``."""
    n = start.shape[0]
    k = carry.shape[0]
    cap = n + k
    ms = np.empty((3, cap), np.int64)
    me = np.empty((3, cap), np.int64)
    cnt = np.zeros(3, np.int64)
    for j in range(k + n):
        if j < k:
            s = carry[j, 0]
            e = carry[j, 1]
            q = carry[j, 2]
        else:
            i = j - k
            q = queue[expand[i]]
            if q < 0 or q > 2:
                continue
            s = start[i]
            e = done[i]
            if s > last_start[q]:
                last_start[q] = s
        if e <= s:
            continue
        c = cnt[q]
        if c > 0 and s <= me[q, c - 1]:
            if e > me[q, c - 1]:
                me[q, c - 1] = e
        else:
            ms[q, c] = s
            me[q, c] = e
            cnt[q] = c + 1
    bound = max(last_start[0], dispatched)
    for q in range(1, 3):
        bound = min(bound, max(last_start[q], dispatched))
    n_out = 0
    for q in range(3):
        for c in range(cnt[q]):
            if me[q, c] > bound:
                out[n_out, 0] = max(ms[q, c], bound)
                out[n_out, 1] = me[q, c]
                out[n_out, 2] = q
                n_out += 1
                me[q, c] = bound               # the part before the bound (empty when it starts after it)
    totals = np.zeros(2, np.int64)
    for t in range(2):
        qa = 0 if t == 0 else 2
        a = 0
        b = 0
        while a < cnt[qa] and b < cnt[1]:
            lo = max(ms[qa, a], ms[1, b])
            hi = min(me[qa, a], me[1, b])
            if hi > lo:
                totals[t] += hi - lo
            if me[qa, a] < me[1, b]:
                a += 1
            else:
                b += 1
    return totals[0], totals[1], n_out


@cached_njit
def credit_compute(done, queue, refs, expand, prev_end, n_ops, out):
    """The compute queue's timeline cut at its instructions, credited to their ops: each compute-queue
    instruction ``i`` (queue ``queue[expand[i]]``, op ``refs[expand[i]]``) takes the cycles from the previous one's
    end (``prev_end`` before the first) to its own end, its op ``out[ref] +=`` them (``ref >= n_ops``: none).
    Returns the new end and the last instruction's op (-1: none)."""
    end = prev_end
    last = -1
    for i in range(done.shape[0]):
        x = expand[i]
        if queue[x] != COMPUTE_Q:
            continue
        e = max(end, done[i])
        r = refs[x]
        if r < n_ops:
            out[r] += e - end
        end = e
        last = r
    return end, last
