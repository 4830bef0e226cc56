"""Stepped models of an R × C systolic array, one jitted call per GEMM (``sim/systolic.py`` drives them).

Every PE register is a NumPy array ``[R, C]`` (value and valid bit) updated in two phases: each cycle computes the
next register contents from the current ones for every PE, then commits them, so a value moves exactly one PE
per cycle, as in RTL. Padding is never streamed: an edge register that has no operand this cycle holds "invalid",
and a PE multiplies only when both of its operands are valid.

Two engines cover the three dataflows:

* :func:`run_os` — output stationary. A rows enter the left edge skewed by row, B columns the top edge skewed by
  column; each PE accumulates its own output. At the end of a fold the accumulators are copied into an output
  shift chain that moves down one row per cycle and writes the bottom row to SRAM (C outputs per cycle, bottom
  row first). ``overlap_drain`` lets the chain drain during the next fold (SCALE-Sim 3.0.0's timing); otherwise
  the array waits the R drain cycles after every fold (the SCALE-Sim paper's ``2R + C + T - 2``).
* :func:`run_stationary` — weight/input stationary. The stationary tile is shifted in from the top edge, one row
  per cycle for R cycles (bottom row first); then the streamed operand enters the left edge skewed by row,
  partial sums move down the columns, and the bottom row writes (read-modify-write across reduction folds) one
  output per column per cycle. WS streams A against a stationary B; IS is the same array fed Bᵀ against a
  stationary Aᵀ.

Folds run serially, column folds outermost, as SCALE-Sim orders them. Event counters are indexed by the module
constants below.
"""

import numpy as np
from . import cached_njit

#: Status codes.
OK = 0
DRAIN_CONFLICT = 1

#: Event counter indices (``counts`` arrays have :data:`N_EVENTS` entries).
MACS = 0
STREAM1_REG = 1      # OS: A register writes; stationary engine: streamed-operand register writes
STREAM2_REG = 2      # OS: B register writes; stationary engine: stationary-operand register writes (the load)
PSUM_REG = 3         # partial-sum / output register writes (OS: output chain; else: psums moving down)
SRAM1_READ = 4       # OS: A reads; stationary engine: streamed-operand reads
SRAM2_READ = 5       # OS: B reads; stationary engine: stationary-operand reads
SRAM_OUT_WRITE = 6
SRAM_OUT_READ = 7    # partial sums read back to add a later reduction fold
ACC_READ = 8         # OS: a PE reads its accumulator (each MAC, and once more to copy the output out)
ACC_WRITE = 9        # OS: a PE writes the sum back into its accumulator (each MAC)
N_EVENTS = 10


@cached_njit
def _drain_step(sh, sh_ok, sh_m, sh_n, out, counts):
    """One cycle of the OS output chain: the bottom row goes to SRAM, every other row moves down one PE.

    Returns how many outputs were written."""
    R, C = sh.shape
    written = 0
    for j in range(C):
        if sh_ok[R - 1, j]:
            out[sh_m[R - 1, j], sh_n[R - 1, j]] = sh[R - 1, j]
            counts[SRAM_OUT_WRITE] += 1
            written += 1
        for i in range(R - 1, 0, -1):
            sh[i, j] = sh[i - 1, j]
            sh_ok[i, j] = sh_ok[i - 1, j]
            sh_m[i, j] = sh_m[i - 1, j]
            sh_n[i, j] = sh_n[i - 1, j]
            if sh_ok[i, j]:
                counts[PSUM_REG] += 1
        sh_ok[0, j] = False
    return written


@cached_njit
def run_os(a, b, rows, cols, overlap_drain, out, counts, timing):
    """Output-stationary GEMM ``out[M, N] = a[M, K] · b[K, N]`` on a ``rows × cols`` array.

    Array rows hold M (SCALE-Sim's Sr), columns N (Sc); K streams in time (T). ``timing`` receives
    ``[compute cycles, drain cycles after them]``. Returns a status code.
    """
    m, k = a.shape
    n = b.shape[1]
    R, C = rows, cols
    row_folds = (m + R - 1) // R
    col_folds = (n + C - 1) // C

    a_reg = np.zeros((R, C), np.int64)
    a_ok = np.zeros((R, C), np.bool_)
    b_reg = np.zeros((R, C), np.int64)
    b_ok = np.zeros((R, C), np.bool_)
    a_nxt = np.zeros((R, C), np.int64)
    a_nok = np.zeros((R, C), np.bool_)
    b_nxt = np.zeros((R, C), np.int64)
    b_nok = np.zeros((R, C), np.bool_)
    acc = np.zeros((R, C), np.int64)
    sh = np.zeros((R, C), np.int64)
    sh_ok = np.zeros((R, C), np.bool_)
    sh_m = np.zeros((R, C), np.int64)
    sh_n = np.zeros((R, C), np.int64)
    pending = 0          # outputs in the chain; an empty chain is not stepped (it would change nothing)

    cycle = 0
    for fc in range(col_folds):
        for fr in range(row_folds):
            r0 = fr * R
            c0 = fc * C
            ru = min(R, m - r0)
            cu = min(C, n - c0)
            a_ok[:, :] = False
            b_ok[:, :] = False
            acc[:, :] = 0
            # the last MAC of the fold is PE(R-1, C-1)'s k = K-1, at step (K-1) + (R-1) + (C-1)
            for t in range(k + R + C - 2):
                if overlap_drain and pending:
                    pending -= _drain_step(sh, sh_ok, sh_m, sh_n, out, counts)
                for i in range(R):
                    for j in range(C):
                        if j == 0:
                            kk = t - i
                            av_ok = i < ru and 0 <= kk < k
                            av = a[r0 + i, kk] if av_ok else 0
                            if av_ok:
                                counts[SRAM1_READ] += 1
                        else:
                            av_ok = a_ok[i, j - 1]
                            av = a_reg[i, j - 1]
                        if i == 0:
                            kk = t - j
                            bv_ok = j < cu and 0 <= kk < k
                            bv = b[kk, c0 + j] if bv_ok else 0
                            if bv_ok:
                                counts[SRAM2_READ] += 1
                        else:
                            bv_ok = b_ok[i - 1, j]
                            bv = b_reg[i - 1, j]
                        if av_ok and bv_ok:
                            acc[i, j] += av * bv
                            counts[MACS] += 1
                            counts[ACC_READ] += 1
                            counts[ACC_WRITE] += 1
                        a_nxt[i, j] = av
                        a_nok[i, j] = av_ok
                        b_nxt[i, j] = bv
                        b_nok[i, j] = bv_ok
                        if av_ok:
                            counts[STREAM1_REG] += 1
                        if bv_ok:
                            counts[STREAM2_REG] += 1
                a_reg, a_nxt = a_nxt, a_reg
                a_ok, a_nok = a_nok, a_ok
                b_reg, b_nxt = b_nxt, b_reg
                b_ok, b_nok = b_nok, b_ok
                cycle += 1
            # fold done: the finished accumulators enter the output chain (it must have drained by now)
            if pending:
                return DRAIN_CONFLICT
            for i in range(ru):
                for j in range(cu):
                    sh[i, j] = acc[i, j]
                    sh_ok[i, j] = True
                    sh_m[i, j] = r0 + i
                    sh_n[i, j] = c0 + j
                    counts[PSUM_REG] += 1
                    counts[ACC_READ] += 1
            pending = ru * cu
            if not overlap_drain:
                for _ in range(R):
                    pending -= _drain_step(sh, sh_ok, sh_m, sh_n, out, counts)
                    cycle += 1
    timing[0] = cycle
    tail = 0
    while pending:
        pending -= _drain_step(sh, sh_ok, sh_m, sh_n, out, counts)
        tail += 1
    timing[1] = tail
    return OK


@cached_njit
def run_stationary(s, w, rows, cols, out, counts, timing):
    """Stationary-operand GEMM ``out[T, Sc] = s[T, Sr] · w[Sr, Sc]`` on a ``rows × cols`` array.

    ``w`` is held in the PEs (array rows hold Sr, columns Sc); rows of ``s`` stream in time (T). ``out`` must be
    zero on entry: reduction folds add into it. ``timing`` receives ``[cycles, 0]``. Returns a status code.
    """
    T, sr = s.shape
    sc = w.shape[1]
    R, C = rows, cols
    row_folds = (sr + R - 1) // R
    col_folds = (sc + C - 1) // C

    w_reg = np.zeros((R, C), np.int64)
    w_ok = np.zeros((R, C), np.bool_)
    x_reg = np.zeros((R, C), np.int64)
    x_ok = np.zeros((R, C), np.bool_)
    p_reg = np.zeros((R, C), np.int64)
    p_ok = np.zeros((R, C), np.bool_)
    x_nxt = np.zeros((R, C), np.int64)
    x_nok = np.zeros((R, C), np.bool_)
    p_nxt = np.zeros((R, C), np.int64)
    p_nok = np.zeros((R, C), np.bool_)

    cycle = 0
    for fc in range(col_folds):
        for fr in range(row_folds):
            r0 = fr * R
            c0 = fc * C
            ru = min(R, sr - r0)
            cu = min(C, sc - c0)
            # load: R cycles of shifting down; source row R-1-step enters at the top and ends in its own row
            w_ok[:, :] = False
            for step in range(R):
                src = R - 1 - step
                for j in range(C):
                    for i in range(R - 1, 0, -1):
                        w_reg[i, j] = w_reg[i - 1, j]
                        w_ok[i, j] = w_ok[i - 1, j]
                        if w_ok[i, j]:
                            counts[STREAM2_REG] += 1
                    ok = src < ru and j < cu
                    w_reg[0, j] = w[r0 + src, c0 + j] if ok else 0
                    w_ok[0, j] = ok
                    if ok:
                        counts[STREAM2_REG] += 1
                        counts[SRAM2_READ] += 1
                cycle += 1
            # stream: the last psum leaves PE(R-1, C-1) for t = T-1 at step (T-1) + (R-1) + (C-1)
            x_ok[:, :] = False
            p_ok[:, :] = False
            for t in range(T + R + C - 2):
                for i in range(R):
                    for j in range(C):
                        if j == 0:
                            tt = t - i
                            xv_ok = i < ru and 0 <= tt < T
                            xv = s[tt, r0 + i] if xv_ok else 0
                            if xv_ok:
                                counts[SRAM1_READ] += 1
                        else:
                            xv_ok = x_ok[i, j - 1]
                            xv = x_reg[i, j - 1]
                        if i == 0:
                            # a partial sum starts at the top of a loaded column with its first operand
                            pv_ok = xv_ok and w_ok[0, j]
                            pv = 0
                        else:
                            pv_ok = p_ok[i - 1, j]
                            pv = p_reg[i - 1, j]
                        if xv_ok and w_ok[i, j]:
                            pv += xv * w_reg[i, j]
                            counts[MACS] += 1
                        x_nxt[i, j] = xv
                        x_nok[i, j] = xv_ok
                        p_nxt[i, j] = pv
                        p_nok[i, j] = pv_ok
                        if xv_ok:
                            counts[STREAM1_REG] += 1
                        if pv_ok:
                            counts[PSUM_REG] += 1
                            if i == R - 1:
                                # the bottom PE's sum goes to SRAM at this clock edge (added to earlier folds)
                                tt = t - (R - 1) - j
                                if fr > 0:
                                    counts[SRAM_OUT_READ] += 1
                                out[tt, c0 + j] += pv
                                counts[SRAM_OUT_WRITE] += 1
                x_reg, x_nxt = x_nxt, x_reg
                x_ok, x_nok = x_nok, x_ok
                p_reg, p_nxt = p_nxt, p_reg
                p_ok, p_nok = p_nok, p_ok
                cycle += 1
    timing[0] = cycle
    timing[1] = 0
    return OK
