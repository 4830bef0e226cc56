"""The datapath arithmetic of each unit: what every operand beat adds to every accumulator channel.

It is a fact of the unit, so it is a method of the unit's parameter class (``EngineParams.contributions``, built
from the per-beat sums of ``hw.units.datapath``); :func:`contributions` is the entry point the simulator had.
"""

import numpy as np

from hw.units import EngineParams

__all__ = ["contributions"]


def contributions(p: EngineParams, weights: np.ndarray, acts: np.ndarray) -> dict[str, np.ndarray]:
    """Per-beat channel sums ``{channel: [B, rows] or [B]}`` of the problem ``weights``/``acts`` on ``p``."""
    return p.contributions(weights, acts)
