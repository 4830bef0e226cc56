"""Integer-range arithmetic shared by the references, the generators and the simulator.

The accumulator width a datapath needs is derived here once; ``hw`` sizes its registers with it and
``models`` reports it in each hardware view.
"""

__all__ = ["signed_width", "signed_range", "unsigned_range", "code_range", "dot_range", "dot_accumulator_width",
           "ternary_accumulator_range", "ternary_accumulator_width"]


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


def unsigned_range(bits: int) -> tuple[int, int]:
    """The ``(min, max)`` of a ``bits``-wide unsigned integer."""
    if bits < 1:
        raise ValueError(f"an unsigned integer needs at least 1 bit, not {bits!r}")
    return 0, (1 << bits) - 1


def code_range(bits: int, signed: bool = True) -> tuple[int, int]:
    """Range of a ``bits``-wide integer code, two's complement when ``signed``."""
    return signed_range(bits) if signed else unsigned_range(bits)


def dot_range(k: int, a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    """Exact range of ``Σ_{j<k} a_j·b_j`` with every ``a_j`` in ``a`` and ``b_j`` in ``b`` (closed intervals)."""
    if k < 0:
        raise ValueError(f"reduction length must be >= 0, not {k!r}")
    products = [x * y for x in a for y in b]
    return k * min(products), k * max(products)


def dot_accumulator_width(k: int, a: tuple[int, int], b: tuple[int, int]) -> int:
    """Signed accumulator width that cannot overflow for a length-``k`` dot product of codes in ``a`` × ``b``."""
    return signed_width(*dot_range(max(k, 1), a, b))


def ternary_accumulator_range(k: int, act_bits: int) -> tuple[int, int]:
    """Exact range of ``Σ_{j<k} w_j·x_j`` with ``w_j ∈ {-1,0,+1}`` and ``x_j`` a signed ``act_bits`` integer.

    The full two's-complement activation range is assumed, ``-2^(b-1)`` included: the datapath
    cannot know that the b1.58 quantizer never emits -128, so (-128)·(-1) = +128 is the worst term.
    """
    return dot_range(k, (-1, 1), signed_range(act_bits))


def ternary_accumulator_width(k: int, act_bits: int) -> int:
    """Signed accumulator width that cannot overflow for a length-``k`` ternary × int dot product."""
    return signed_width(*ternary_accumulator_range(max(k, 1), act_bits))
