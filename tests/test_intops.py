import pytest

from models.intops import signed_width, ternary_accumulator_range, ternary_accumulator_width


@pytest.mark.parametrize("lo,hi,width", [(0, 0, 1), (-1, 0, 1), (-1, 1, 2), (-128, 127, 8), (-128, 128, 9),
                                         (-2 ** 19, 2 ** 19, 21), (-(2 ** 19) + 1, 2 ** 19 - 1, 20)])
def test_signed_width(lo, hi, width):
    assert signed_width(lo, hi) == width


def test_ternary_accumulator_width_matches_brute_force():
    for k in range(1, 70):
        lo, hi = ternary_accumulator_range(k, 8)
        assert (lo, hi) == (-128 * k, 128 * k)
        w = ternary_accumulator_width(k, 8)
        assert -(2 ** (w - 1)) <= lo and hi < 2 ** (w - 1)
        assert not (-(2 ** (w - 2)) <= lo and hi < 2 ** (w - 2))   # one bit less would not do


def test_published_widths():
    # quantization.md §2 quotes 20/21/22 bits for K = 4096/6912/11008 with |x| <= 127; the datapath also
    # accepts -128, which adds one bit only where 127·K and 128·K straddle a power of two.
    assert ternary_accumulator_width(4096, 8) == 21
    assert ternary_accumulator_width(6912, 8) == 21
    assert ternary_accumulator_width(11008, 8) == 22
