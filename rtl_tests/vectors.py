"""The one vector suite of the ternary-MAC engine: every level (reference, sim, Amaranth, cocotb) runs it.

Each case is a parameter set and a problem shape. Its vectors are 1,000 seeded random activation
vectors pushed through the b1.58 quantizer of ``models``, plus the tie and corner cases:

* quantizer ties: values at x.5 after scaling (round half to even), an all-zero token (the 1e-5
  clamp), a token whose only non-zero is its maximum, ±max everywhere;
* integer corners fed as raw codes: all −128 (a code the quantizer never emits but the datapath must
  take), all +127, alternating −128/+127;
* weight rows: an all-zero row, an all-(+1) row and an all-(−1) row, so the corners above reach the
  accumulator extremes ±128·K.
"""

from dataclasses import dataclass, field

import numpy as np
import torch

from hw.params import TernaryMacParams
from models import bitnet

__all__ = ["TernaryMacCase", "TernaryMacVectors", "CASES", "ternary_mac_vectors"]


@dataclass(frozen=True)
class TernaryMacCase:
    name: str
    params: TernaryMacParams
    m: int
    k: int
    n_random: int = 1000
    seed: int = 0

    def __post_init__(self):
        if self.m < 3:
            raise ValueError(f"case {self.name!r}: m={self.m}, but the zero/+1/-1 weight rows need m >= 3")
        self.params.check_problem(self.m, self.k, 1)


CASES = [
    TernaryMacCase("odd-k", TernaryMacParams(lanes=8, rows=4, max_k=64), m=10, k=37, seed=1),
    TernaryMacCase("k-below-lanes", TernaryMacParams(lanes=16, rows=2, max_k=16), m=3, k=5, seed=2),
    TernaryMacCase("k4096", TernaryMacParams(lanes=64, rows=4, max_k=4096), m=4, k=4096, seed=3),
    TernaryMacCase("one-lane", TernaryMacParams(lanes=1, rows=1, max_k=8), m=3, k=7, seed=4),
    TernaryMacCase("lanes-12-one-stage", TernaryMacParams(lanes=12, rows=3, max_k=100, tree_stages=1),
                   m=7, k=100, seed=5),
    TernaryMacCase("flat-tree", TernaryMacParams(lanes=32, rows=8, max_k=300, tree_stages=0), m=16, k=257, seed=6),
]


@dataclass(frozen=True)
class TernaryMacVectors:
    case: TernaryMacCase
    weight_codes: np.ndarray      #: [m, k] int8
    act_codes: np.ndarray         #: [tokens, k] int8
    labels: list[str] = field(repr=False)

    @property
    def expected_acc(self) -> np.ndarray:
        """The models/ integer view's accumulators."""
        return bitnet.ternary_accumulate(self.weight_codes, self.act_codes)

    def head(self, n: int) -> "TernaryMacVectors":
        """The first ``n`` tokens (tie cases first)."""
        return TernaryMacVectors(self.case, self.weight_codes, self.act_codes[:n], self.labels[:n])


def _tie_tokens(k: int) -> tuple[np.ndarray, list[str]]:
    """Float tokens whose quantization hits the tie rules; scaled so that max|x| = 127 and s = 1 exactly."""
    rows, labels = [], []
    j = np.arange(k)
    halves = np.where(j % 2 == 0, 1.0, -1.0) * ((j % 126) + 0.5)    # ±0.5, ±1.5, ... → round half to even
    halves[0] = 127.0
    rows.append(halves); labels.append("tie: x.5 rounding")
    rows.append(np.zeros(k)); labels.append("tie: all-zero token (1e-5 clamp)")
    single = np.zeros(k); single[-1] = -3.25
    rows.append(single); labels.append("tie: one non-zero element")
    rows.append(np.where(j % 2 == 0, 1.0, -1.0) * 5.0); labels.append("tie: ±max everywhere")
    return np.stack(rows), labels


def ternary_mac_vectors(case: TernaryMacCase) -> TernaryMacVectors:
    rng = np.random.default_rng(case.seed)
    m, k = case.m, case.k

    w = rng.standard_normal((m, k)).astype(np.float32)
    w[0] = 0.0
    codes = bitnet.quantize_weights(torch.from_numpy(w)).codes.numpy()
    codes[1] = 1
    codes[2] = -1

    ties, tie_labels = _tie_tokens(k)
    x = rng.standard_normal((case.n_random, k)).astype(np.float32)
    x *= rng.choice([0.01, 1.0, 100.0], size=(case.n_random, 1)).astype(np.float32)   # varied token scales
    floats = np.concatenate([ties.astype(np.float32), x])
    act = bitnet.quantize_activations(torch.from_numpy(floats)).codes.numpy()

    j = np.arange(k)
    corners = np.stack([np.full(k, -128), np.full(k, 127), np.where(j % 2 == 0, -128, 127)]).astype(np.int8)
    corner_labels = ["corner: all -128", "corner: all +127", "corner: alternating -128/+127"]

    labels = tie_labels + corner_labels + [f"random {i}" for i in range(case.n_random)]
    act_codes = np.concatenate([act[:len(tie_labels)], corners, act[len(tie_labels):]])
    return TernaryMacVectors(case, codes.astype(np.int8), act_codes.astype(np.int8), labels)
