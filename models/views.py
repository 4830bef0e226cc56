"""Integer hardware views: what a quantized layer asks of the hardware, as plain integer matrix products.

A layer's view is a set of :class:`IntPass` (``acc[t, o] = Σ_j act[t, j]·weight[o, j]`` over integer codes)
and a ``rescale`` function holding the full-precision work that turns the accumulators into the float output
(scales, means, biases). ``rescale(accumulate())`` must equal the scheme's float reference up to float rounding,
and each pass's accumulators must be exact: every scheme's tests check both.

Examples: BitNet b1.58 is one ternary × int8 pass; QBB is N passes (one per binary basis) combined with N
per-channel scales; BiLLM is several masked sign passes and plain-sum passes per 128-column block.
"""

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from .intops import code_range, dot_accumulator_width
from .units import UnitKind

__all__ = ["IntPass", "LinearView", "MatmulView"]


@dataclass(frozen=True, eq=False)
class IntPass:
    """One integer matrix product ``acc = act_codes · weight_codesᵀ`` (int64, exact)."""

    name: str
    unit: UnitKind
    weight_codes: np.ndarray          #: [out, k] integer codes
    act_codes: np.ndarray             #: [tokens, k] integer codes
    weight_bits: int
    act_bits: int
    weight_signed: bool = True
    act_signed: bool = True
    k_offset: int = 0                 #: first input column this pass reads (passes over column blocks)
    #: Values the codes can take, when narrower than the bit width allows (ternary weights: (-1, 1)).
    weight_range: tuple[int, int] | None = None
    act_range: tuple[int, int] | None = None

    def __post_init__(self):
        w, x = np.asarray(self.weight_codes), np.asarray(self.act_codes)
        if w.ndim != 2 or x.ndim != 2 or w.shape[1] != x.shape[1]:
            raise ValueError(f"pass {self.name!r}: weight codes {w.shape} and activation codes {x.shape} "
                             "do not form a matrix product")
        for what, a, (lo, hi) in (("weight", w, self.weight_value_range), ("activation", x, self.act_value_range)):
            if not np.issubdtype(a.dtype, np.integer):
                raise TypeError(f"pass {self.name!r}: {what} codes must be integers, not {a.dtype}")
            if a.size and (a.min() < lo or a.max() > hi):
                raise ValueError(f"pass {self.name!r}: {what} codes span [{a.min()}, {a.max()}], outside the "
                                 f"declared range [{lo}, {hi}]")

    @property
    def weight_value_range(self) -> tuple[int, int]:
        return self.weight_range or code_range(self.weight_bits, self.weight_signed)

    @property
    def act_value_range(self) -> tuple[int, int]:
        return self.act_range or code_range(self.act_bits, self.act_signed)

    @property
    def k(self) -> int:
        return self.weight_codes.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight_codes.shape[0]

    @property
    def tokens(self) -> int:
        return self.act_codes.shape[0]

    @property
    def acc_width(self) -> int:
        """Signed accumulator width the hardware needs for this pass (worst case over the code ranges)."""
        return dot_accumulator_width(self.k, self.weight_value_range, self.act_value_range)

    def accumulate(self) -> np.ndarray:
        """The exact integer accumulators ``[tokens, out]``."""
        return np.asarray(self.act_codes, dtype=np.int64) @ np.asarray(self.weight_codes, dtype=np.int64).T


@dataclass(frozen=True, eq=False)
class LinearView:
    """Integer view of one quantized linear layer applied to ``tokens`` input vectors."""

    scheme: str
    unit: UnitKind                                           #: the engine kind the layer runs on
    passes: tuple[IntPass, ...]
    rescale: Callable[[Mapping[str, np.ndarray]], np.ndarray] = field(repr=False)
    in_features: int
    out_features: int
    tokens: int
    notes: str = ""                                          #: deviations of the view from the float model
    #: How many exact zeros met a sign function, by operand (where ``zero_policy`` changes the result).
    zero_counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        names = [p.name for p in self.passes]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate pass names in view of {self.scheme}: {names}")
        for p in self.passes:
            if p.tokens != self.tokens or p.out_features != self.out_features:
                raise ValueError(f"pass {p.name!r} is [{p.tokens} tokens × {p.out_features} out], the view "
                                 f"[{self.tokens} × {self.out_features}]")

    def pass_named(self, name: str) -> IntPass:
        for p in self.passes:
            if p.name == name:
                return p
        raise KeyError(f"no pass {name!r}; passes: {[p.name for p in self.passes]}")

    @property
    def acc_width(self) -> int:
        return max(p.acc_width for p in self.passes)

    @property
    def macs(self) -> int:
        """Integer MACs over all passes (a masked pass counts its full k)."""
        return sum(p.tokens * p.out_features * p.k for p in self.passes)

    def accumulate(self) -> dict[str, np.ndarray]:
        return {p.name: p.accumulate() for p in self.passes}

    def output(self, acc: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """Float outputs ``[tokens, out]`` (float32) from the accumulators (computed exactly if not given)."""
        return self.rescale(self.accumulate() if acc is None else acc)


@dataclass(frozen=True, eq=False)
class MatmulView:
    """Integer view of an activation × activation product (attention scores, attention × values)."""

    scheme: str
    unit: UnitKind
    passes: tuple[IntPass, ...]
    rescale: Callable[[Mapping[str, np.ndarray]], np.ndarray] = field(repr=False)
    notes: str = ""
    zero_counts: dict[str, int] = field(default_factory=dict)

    def accumulate(self) -> dict[str, np.ndarray]:
        return {p.name: p.accumulate() for p in self.passes}

    def output(self, acc: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        return self.rescale(self.accumulate() if acc is None else acc)
