"""Per-beat channel sums of a whole problem, the building blocks of each unit's ``contributions``.

Computed per problem, in the beat order of ``EngineParams.schedule`` (row blocks, tokens, K chunks), one K chunk
at a time with BLAS matrix products instead of materialising the beats. A chunk's partial sum has at most
``lanes`` terms; the products run in float32 when ``lanes × max|term|`` stays below 2^24 and in float64 otherwise,
so every partial sum is an exactly representable integer and the conversion back is exact. The RTL computes the
same sums with its lane terms and trees.
"""

import numpy as np

__all__ = ["per_beat", "per_beat_rows_only", "per_beat_shared", "valid_lanes"]


def _float_type(p, max_term: int):
    return np.float32 if p.lanes * max_term < (1 << 24) else np.float64


def per_beat(p, w: np.ndarray, x: np.ndarray, max_term: int) -> np.ndarray:
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


def per_beat_rows_only(p, w: np.ndarray, t: int) -> np.ndarray:
    """Σ_l w per (row block, K chunk, row), the same for every token: ``[B, rows]``."""
    m, k = w.shape
    R, L = p.rows, p.lanes
    nb, nk = p.row_blocks(m), p.beats_per_reduction(k)
    wp = np.zeros((nb * R, nk * L), np.int8 if np.abs(w).max(initial=0) < 128 else np.int64)
    wp[:m, :k] = w
    s = wp.reshape(nb, R, nk, L).sum(-1, dtype=np.int64).transpose(0, 2, 1)   # [nb, nk, R]
    return np.broadcast_to(s[:, None], (nb, t, nk, R)).reshape(-1, R).copy()


def per_beat_shared(p, m: int, x: np.ndarray) -> np.ndarray:
    """Σ_l x per (token, K chunk), the same for every row block: ``[B]`` (a channel shared by the rows)."""
    t, k = x.shape
    L = p.lanes
    nb, nk = p.row_blocks(m), p.beats_per_reduction(k)
    xp = np.zeros((t, nk * L), np.int64)
    xp[:, :k] = x
    s = xp.reshape(t, nk, L).sum(-1)
    return np.broadcast_to(s[None], (nb, t, nk)).reshape(-1).copy()


def valid_lanes(p, m: int, k: int, t: int) -> np.ndarray:
    """Lanes of each beat that are not padding: ``[B]``."""
    nb, nk, L = p.row_blocks(m), p.beats_per_reduction(k), p.lanes
    n_chunk = np.minimum(L, k - np.arange(nk) * L)
    return np.broadcast_to(n_chunk, (nb, t, nk)).reshape(-1).copy()
