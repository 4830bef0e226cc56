"""The beat schedule and the accumulator channels of a stream engine: shared by the generator's trees
(``hw.rtl.pipelined_tree``, ``hw.engine``), the parameter classes' widths and the simulator's event counts."""

from dataclasses import dataclass

import numpy as np

from models.intops import signed_width

__all__ = ["BeatSchedule", "Channel"]


@dataclass(frozen=True)
class BeatSchedule:
    """Which slice of the problem each operand beat carries, in stream order."""

    row_block: np.ndarray  #: int64 [beats]: output rows ``row_block*rows … +rows-1``
    token: np.ndarray      #: int64 [beats]: which activation vector
    k_chunk: np.ndarray    #: int64 [beats]: reduction elements ``k_chunk*lanes … +lanes-1``
    last: np.ndarray       #: bool  [beats]: the beat that ends a reduction

    def __len__(self) -> int:
        return int(self.row_block.size)


@dataclass(frozen=True)
class Channel:
    """One accumulator channel of a row: the sum over beats of ``terms`` lane terms in ``[lo, hi]`` each.

    ``per_row=False`` channels are shared by all rows (e.g. the number of valid lanes). Channels of one-bit terms
    (popcounts) add three nodes at every tree level — three XNOR bits or three 2-bit counts are six inputs, one
    6-input LUT per output bit — where every other tree adds pairs on carry chains. Nodes of channels without
    negative terms are unsigned.
    """

    name: str
    lo: int
    hi: int
    terms: int
    per_row: bool = True

    @property
    def signed(self) -> bool:
        return self.lo < 0

    @property
    def arity(self) -> int:
        return 3 if (self.lo, self.hi) == (0, 1) else 2

    @property
    def depth(self) -> int:
        """Tree levels needed to reduce the terms to one."""
        d, n = 0, 1
        while n < self.terms:
            n *= self.arity
            d += 1
        return d

    def covered(self, level: int) -> int:
        """Terms under one node at ``level`` (0 = a term)."""
        return min(self.terms, self.arity ** level)

    def level_width(self, level: int) -> int:
        """Width of a tree node at ``level`` (0 = the terms themselves); signed iff the channel is."""
        n = self.covered(level)
        if not self.signed:
            return max(1, (self.hi * n).bit_length())
        return signed_width(self.lo * n, self.hi * n)

    def acc_width(self, max_k_beats: int) -> int:
        """Width of the (signed) accumulator summing ``max_k_beats`` tree outputs."""
        return signed_width(min(self.lo * self.terms, 0) * max_k_beats, max(self.hi * self.terms, 0) * max_k_beats)
