"""The ternary-MAC engine (kept as its own module for the vertical slice's imports); see ``hw.engine``."""

from .engine import TernaryMacEngine

__all__ = ["TernaryMacEngine"]
