"""Integer-range arithmetic shared by the references, the generators and the simulator.

The accumulator width a datapath needs is derived here once; ``hw`` sizes its registers with it and
``models`` reports it in each hardware view.
"""

__all__ = ["signed_width", "signed_range", "ternary_accumulator_range", "ternary_accumulator_width"]


def signed_width(lo: int, hi: int) -> int:
    """Smallest two's-complement width holding every integer in ``[lo, hi]``."""
    if lo > hi:
        raise ValueError(f"empty range [{lo}, {hi}]")
    width = 1
    while not (-(1 << (width - 1)) <= lo and hi <= (1 << (width - 1)) - 1):
        width += 1
    return width


def signed_range(bits: int) -> tuple[int, int]:
    """The ``(min, max)`` of a ``bits``-wide two's-complement integer."""
    if bits < 1:
        raise ValueError(f"a signed integer needs at least 1 bit, not {bits!r}")
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def ternary_accumulator_range(k: int, act_bits: int) -> tuple[int, int]:
    """Exact range of ``Σ_{j<k} w_j·x_j`` with ``w_j ∈ {-1,0,+1}`` and ``x_j`` a signed ``act_bits`` integer.

    The full two's-complement activation range is assumed, ``-2^(b-1)`` included: the datapath
    cannot know that the b1.58 quantizer never emits -128, so (-128)·(-1) = +128 is the worst term.
    """
    if k < 0:
        raise ValueError(f"reduction length must be >= 0, not {k!r}")
    x_min, _ = signed_range(act_bits)
    worst = -x_min * k
    return -worst, worst


def ternary_accumulator_width(k: int, act_bits: int) -> int:
    """Signed accumulator width that cannot overflow for a length-``k`` ternary × int dot product."""
    return signed_width(*ternary_accumulator_range(max(k, 1), act_bits))
