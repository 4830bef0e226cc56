"""The datapath arithmetic of each unit: what every operand beat adds to every accumulator channel.

Computed per problem, in the beat order of ``EngineParams.schedule`` (row blocks, tokens, K chunks), one K chunk
at a time with BLAS matrix products instead of materialising the beats. A chunk's partial sum has at most
``lanes`` terms; the products run in float32 when ``lanes × max|term|`` stays below 2^24 and in float64 otherwise,
so every partial sum is an exactly representable integer and the conversion back is exact. The channel
definitions are those of ``hw.params`` (``EngineParams.channels``); the RTL computes the same sums with its lane
terms and trees.
"""

import numpy as np

from hw.params import BILLM_GROUPS, BammParams, BinaryBasisParams, EngineParams, Int8MacParams, TernaryMacParams, \
    XnorPopcountParams

__all__ = ["contributions"]


def _float_type(p: EngineParams, max_term: int):
    return np.float32 if p.lanes * max_term < (1 << 24) else np.float64


def _per_beat(p: EngineParams, w: np.ndarray, x: np.ndarray, max_term: int) -> np.ndarray:
    """Σ_l w·x for every (row block, token, K chunk) and row: ``[B, rows]`` int64 in schedule order."""
    m, k = w.shape
    t = x.shape[0]
    R, L = p.rows, p.lanes
    nb, nk = p.row_blocks(m), p.beats_per_reduction(k)
    ft = _float_type(p, max_term)
    wp = np.zeros((nb * R, nk * L), ft)
    wp[:m, :k] = w
    xp = np.zeros((t, nk * L), ft)
    xp[:, :k] = x
    # one batched product per K chunk: [nk, rows_total, L] · [nk, L, t] → [nk, rows_total, t]
    part = np.matmul(wp.reshape(nb * R, nk, L).transpose(1, 0, 2), xp.reshape(t, nk, L).transpose(1, 2, 0))
    part = np.rint(part).astype(np.int64).reshape(nk, nb, R, t)
    return part.transpose(1, 3, 0, 2).reshape(nb * t * nk, R)


def _per_beat_rows_only(p: EngineParams, w: np.ndarray, t: int) -> np.ndarray:
    """Σ_l w per (row block, K chunk, row), the same for every token: ``[B, rows]``."""
    m, k = w.shape
    R, L = p.rows, p.lanes
    nb, nk = p.row_blocks(m), p.beats_per_reduction(k)
    wp = np.zeros((nb * R, nk * L), np.int8 if np.abs(w).max(initial=0) < 128 else np.int64)
    wp[:m, :k] = w
    s = wp.reshape(nb, R, nk, L).sum(-1, dtype=np.int64).transpose(0, 2, 1)   # [nb, nk, R]
    return np.broadcast_to(s[:, None], (nb, t, nk, R)).reshape(-1, R).copy()


def _per_beat_shared(p: EngineParams, m: int, x: np.ndarray) -> np.ndarray:
    """Σ_l x per (token, K chunk), the same for every row block: ``[B]`` (a channel shared by the rows)."""
    t, k = x.shape
    L = p.lanes
    nb, nk = p.row_blocks(m), p.beats_per_reduction(k)
    xp = np.zeros((t, nk * L), np.int64)
    xp[:, :k] = x
    s = xp.reshape(t, nk, L).sum(-1)
    return np.broadcast_to(s[None], (nb, t, nk)).reshape(-1).copy()


def _valid_lanes(p: EngineParams, m: int, k: int, t: int) -> np.ndarray:
    nb, nk, L = p.row_blocks(m), p.beats_per_reduction(k), p.lanes
    n_chunk = np.minimum(L, k - np.arange(nk) * L)
    return np.broadcast_to(n_chunk, (nb, t, nk)).reshape(-1).copy()


def contributions(p: EngineParams, weights: np.ndarray, acts: np.ndarray) -> dict[str, np.ndarray]:
    """Per-beat channel sums ``{channel: [B, rows] or [B]}`` of the problem ``weights``/``acts`` on ``p``."""
    weights = np.asarray(weights)
    acts = np.asarray(acts)
    m, k = weights.shape[-2:]
    t = acts.shape[0]
    if isinstance(p, TernaryMacParams):
        x_max = 1 << (p.act_bits - 1)
        dot = _per_beat(p, weights, acts, x_max)
        neg = _per_beat_rows_only(p, (weights < 0).astype(np.int64), t)
        # lane term: x, ~x = -x-1 for a negative weight (its +1 goes to the neg channel), 0 for a zero weight
        return {"main": dot - neg, "neg": neg}
    if isinstance(p, Int8MacParams):
        return {"main": _per_beat(p, weights, acts, (1 << (p.act_bits - 1)) * (1 << (p.weight_bits - 1)))}
    if isinstance(p, XnorPopcountParams):
        # ±1 codes: Σ a·w over the valid lanes = 2·popcount(XNOR) − n
        dot = _per_beat(p, weights, acts, 1)
        n = _valid_lanes(p, m, k, t)
        return {"pc": (dot + n[:, None]) // 2, "n": n}
    if isinstance(p, BammParams):
        vbits = (weights > 0).astype(np.int64)                     # v' = bit(v = +1)
        and_ = _per_beat(p, vbits, acts, 1)
        a_cnt = _per_beat_shared(p, m, acts)
        if p.identity == "and":
            return {"and": and_, "a": a_cnt}
        v_cnt = _per_beat_rows_only(p, vbits, t)
        n = _valid_lanes(p, m, k, t)
        # XNOR(a, v') over the valid lanes = a·v' + (1−a)(1−v') = 2·a·v' − a − v' + 1
        return {"xnor": 2 * and_ - a_cnt[:, None] - v_cnt + n[:, None], "v": v_cnt, "n": n}
    if isinstance(p, BinaryBasisParams):
        x_max = 1 << (p.act_bits - 1)
        if p.mode == "bases":
            out = {f"p{i}": _per_beat(p, (weights[i] > 0).astype(np.int64), acts, x_max) for i in range(p.n_bases)}
            out["total"] = _per_beat_shared(p, m, acts)
            return out
        group, s1, s2 = weights[0], weights[1] > 0, weights[2] > 0
        out = {}
        for gi, name in enumerate(BILLM_GROUPS):
            mask = (group == gi)
            out[f"p_{name}"] = _per_beat(p, (mask & s1).astype(np.int64), acts, x_max)
            out[f"m_{name}"] = _per_beat(p, mask.astype(np.int64), acts, x_max)
        out["p_salient_o2"] = _per_beat(p, ((group == 2) & s2).astype(np.int64), acts, x_max)
        return out
    raise TypeError(f"no datapath model for {type(p).__name__}")
