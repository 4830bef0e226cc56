"""Names of the compute units. One unit has one name at every level (models, hw, sim, rtl_tests, CLI)."""

from enum import Enum

__all__ = ["UnitKind"]


class UnitKind(str, Enum):
    """The integer datapath a quantized operation needs.

    The string value is the unit's name on the command line, in manifests and in reports.
    """

    XNOR_POPCOUNT = "xnor-popcount"   #: ±1 × ±1 dot products (BiBERT linears, QK^T)
    BAMM = "bamm"                     #: {0,1} attention bits × sign(V) (BiBERT A·V)
    TERNARY_MAC = "ternary-mac"       #: {-1,0,+1} weights × int8 activations (BitNet b1.58, TernaryBERT)
    BINARY_BASIS = "binary-basis"     #: Σ αᵢ·(Bᵢ·x), adder-only (QBB, BiLLM)
    INT8_MAC = "int8-mac"             #: int8 × int8 baseline (TernaryBERT attention)
    FP_MAC = "fp-mac"                 #: floating-point multiply-accumulate (full-precision matmuls, baselines)
    FP_VECTOR = "fp-vector"           #: full-precision element-wise and reduction work
    SYSTOLIC = "systolic"             #: an R × C systolic array of int MACs (serves int8-MAC work; no generator)

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, name: str) -> "UnitKind":
        """Look a unit up by its command-line name, with an error that lists the known ones."""
        for kind in cls:
            if kind.value == name:
                return kind
        known = ", ".join(k.value for k in cls)
        raise ValueError(f"unknown unit {name!r}; known units: {known}")
