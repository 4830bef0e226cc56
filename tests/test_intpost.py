"""The POST functions' exact semantics: hand-derived integers for every function, every rounding tie, both clamps,
absmax = 0, overflow refusal, the fixed-point helpers and the host boundary."""

import math

import numpy as np
import pytest
import torch

from models import intpost as ip
from models.intpost import (IntPostOverflow, absmax, add, combine, combine_rows, compare, fixed_point,
                            fixed_point_array, from_float, mul, pack_aux, quantize, relu, relu2, requant, round_div,
                            round_shift, silu, silu_table, threshold, to_float)


def a(*rows):
    return np.array(rows, dtype=np.int64)


def test_function_table_is_the_instruction_sets_post_list():
    from isa.spec import POST_FUNCTIONS
    assert set(ip.FUNCTIONS) == set(POST_FUNCTIONS) - {"pack"}
    assert all(ip.FUNCTIONS[name].__name__ == name for name in ip.FUNCTIONS)


# -- rounding ----------------------------------------------------------------------------------------------

def test_round_shift_ties_go_to_even():
    # x/2 for -3.5 … 3.5: every tie of ±0.5, ±1.5, ±2.5, ±3.5
    assert round_shift(a(-7, -5, -3, -1, 1, 3, 5, 7), 1).tolist() == [-4, -2, -2, 0, 0, 2, 2, 4]
    # x/4 away from ties: -1.75 -1.25 -0.75 -0.25 0.25 0.75 1.25 1.75, and the ties -1.5, 1.5, -0.5, 0.5
    assert round_shift(a(-7, -5, -3, -1, 1, 3, 5, 7), 2).tolist() == [-2, -1, -1, 0, 0, 1, 1, 2]
    assert round_shift(a(-6, 6, -2, 2), 2).tolist() == [-2, 2, 0, 0]
    assert round_shift(a(-9, 0, 9), 0).tolist() == [-9, 0, 9]
    # the widest shift: 2^61/2^62 = 0.5 → 0, 3·2^60/2^62 = 0.75 → 1, -2^61/2^62 = -0.5 → 0
    assert round_shift(a(1 << 61, 3 << 60, -(1 << 61)), 62).tolist() == [0, 1, 0]


def test_round_shift_is_torch_round_of_the_exact_quotient():
    x = np.arange(-70000, 70000, 3, dtype=np.int64)
    for s in range(7):
        expect = torch.round(torch.from_numpy(x).to(torch.float64) / 2 ** s).to(torch.int64).numpy()
        assert np.array_equal(round_shift(x, s), expect), s


def test_round_div_ties_go_to_even():
    assert round_div(a(-5, -3, -1, 1, 3, 5), 2).tolist() == [-2, -2, 0, 0, 2, 2]       # ±2.5, ±1.5, ±0.5
    assert round_div(a(7, -7, 5, 10, 14, -14), a(3, 3, 4, 4, 4, 4)).tolist() == [2, -2, 1, 2, 4, -4]
    with pytest.raises(ValueError, match="positive divisors"):
        round_div(a(1), a(0))


def test_shift_out_of_range_is_refused():
    with pytest.raises(ValueError, match=r"shift must be an integer in \[0, 62\]"):
        round_shift(a(1), 63)
    with pytest.raises(ValueError, match="shift"):
        requant(a([1]), imm=1, shift=-1)


# -- each function, hand-derived --------------------------------------------------------------------------

def test_combine_weighted_words_then_bias_after_the_rounding():
    rec = np.array([[[3, 1], [5, -2]]])                       # rows 1, cols 2, words 2
    coef = np.array([[[2, 1], [3, -1]]])                       # coef[block 0][word][col]
    aux = pack_aux("combine", 1, 2, 2, coef=coef, bias=a(10, -10))
    # col 0: 3·2 + 1·3 = 9 → 4.5 → 4, + 10; col 1: 5·1 + (−2)(−1) = 7 → 3.5 → 4, − 10
    assert combine(rec, aux, shift=1).tolist() == [[14, -6]]
    assert aux.tolist() == [2, 1, 3, -1, 10, -10]              # coef[words][cols] then bias[cols], C order


def test_combine_sums_blocks_and_saturates_at_both_ends():
    rec = np.array([[[[3]]], [[[4]]]])                        # blocks 2, rows 1, cols 1, words 1
    aux = pack_aux("combine", 1, 1, 1, 2, coef=np.array([[[2]], [[5]]]), bias=a(0))
    assert combine(rec, aux, shift=2, options=2).tolist() == [[6]]          # (6 + 20)/4 = 6.5 → 6
    big = pack_aux("combine", 2, 1, 1, coef=np.array([[[1]]]), bias=a(0))
    assert combine(np.array([[[1000]], [[-1000]]]), big, out="I8").tolist() == [[127], [-128]]
    with pytest.raises(ValueError, match=r"rec\[2\]"):
        combine(np.array([[[3]]]), aux, options=2)


def test_combine_rows_multiplies_each_row_before_the_single_rounding():
    rec = np.array([[[3]], [[-3]]])                           # rows 2, cols 1, words 1
    aux = pack_aux("combine_rows", 2, 1, 1, coef=np.array([[[5]]]), bias=a(1), rowmul=a(3, 1))
    # row 0: 3·5·3 = 45 → 11.25 → 11, + 1; row 1: −15 → −3.75 → −4, + 1
    assert combine_rows(rec, aux, shift=2).tolist() == [[12], [-3]]
    assert aux.tolist() == [5, 1, 3, 1]


def test_threshold_and_compare():
    rec = np.array([[[-2, 9], [0, 9], [3, 9]]])
    thr = pack_aux("threshold", 1, 3, thr=a(-2, 0, 2))
    assert threshold(rec, thr, word=0).tolist() == [[0, 0, 1]]
    assert threshold(rec, thr, word=0, options=ip.OPT_GE).tolist() == [[1, 1, 1]]
    x = a([-1, 0, 1])
    assert compare(x, imm=0).tolist() == [[0, 0, 1]]                 # official bool: A > 0
    assert compare(x, imm=0, options=ip.OPT_GE).tolist() == [[0, 1, 1]]
    assert compare(np.array([[[5, -1], [0, 0], [-5, 1]]]), imm=0, word=1).tolist() == [[0, 0, 1]]
    with pytest.raises(ValueError, match="B1"):
        compare(x, imm=0, out="I8")


def test_absmax_of_zero_rows_is_zero_and_saturates():
    x = a([-3, 2], [0, 0], [-(1 << 31), 5])
    assert absmax(x).tolist() == [[3], [0], [(1 << 31) - 1]]


def test_quantize_ties_clamps_and_zero_rows():
    x = a([50, -25, 0, 100], [0, 0, 0, 0], [1, -1, 3, -3])
    aux = pack_aux("quantize", 3, 4, absmax=a(100, 0, 2))
    # row 0: 63.5 → 64, −31.75 → −32, 0, 127; row 1: absmax 0 → 0; row 2: ±63.5 → ±64, ±190.5 → ±127 (clamp)
    assert quantize(x, aux, imm=127).tolist() == [[64, -32, 0, 127], [0, 0, 0, 0], [64, -64, 127, -127]]
    # qmax 5, absmax 2: ±2.5 → ±2; qmax 3: ±1.5 → ±2; qmax 1: ±0.5 → 0
    one = pack_aux("quantize", 1, 2, absmax=a(2))
    assert quantize(a([-1, 1]), one, imm=5).tolist() == [[-2, 2]]
    assert quantize(a([-1, 1]), one, imm=3).tolist() == [[-2, 2]]
    assert quantize(a([-1, 1]), one, imm=1).tolist() == [[0, 0]]
    # the output format saturates after the ±qmax clamp
    assert quantize(a([-4, 4]), one, imm=200, out="I8").tolist() == [[-128, 127]]
    with pytest.raises(ValueError, match="absmax must be >= 0"):
        quantize(a([1]), pack_aux("quantize", 1, 1, absmax=a(-1)), imm=127)


def test_requant_add_mul_relu_relu2():
    assert requant(a([-5, -3, -1, 1, 3, 5]), imm=1, shift=1, out="I32").tolist() == [[-2, -2, 0, 0, 2, 2]]
    assert requant(a([1, 2, 10]), imm=3, shift=2).tolist() == [[1, 2, 8]]           # 0.75, 1.5, 7.5
    assert requant(a([1000, -1000]), imm=1).tolist() == [[127, -128]]
    assert add(a([1, 2]), pack_aux("add", 1, 2, y=a([2, 3])), shift=1).tolist() == [[2, 2]]    # 1.5, 2.5
    assert add(a([100, -100]), pack_aux("add", 1, 2, y=a([100, -100])), out="I8").tolist() == [[127, -128]]
    assert mul(a([3, -3]), pack_aux("mul", 1, 2, y=a([5, 5])), shift=1).tolist() == [[8, -8]]  # ±7.5
    assert relu(a([-3, 0, 5]), shift=1).tolist() == [[0, 0, 2]]                               # 2.5 → 2
    assert relu2(a([-3, 3, 5]), shift=2).tolist() == [[0, 2, 6]]                              # 2.25, 6.25
    assert relu2(a([1, 3]), shift=1).tolist() == [[0, 4]]                                     # 0.5, 4.5


def test_silu_table_lookup_and_pass_through():
    table = pack_aux("silu", 1, 8, options=4, table=a(10, 20, 30, 40))
    x = a([-10, -4, -1, 0, 1, 2, 3, 100])
    # round_shift(x, 1) = −5 −2 0 0 0 1 2 50; minus lo = −2: −3 0 2 2 2 3 4 52 → below, T0, T2, T2, T2, T3, x, x
    assert silu(x, table, imm=-2, shift=1, options=4).tolist() == [[10, 10, 30, 30, 30, 40, 3, 100]]
    # entry 1 at c = 0.25 with frac 2: silu(0.25) = 0.140… → 0.562 quarters → 1
    assert silu_table(2, 0, 0, 2).tolist() == [0, 1]


def test_silu_table_error_bound():
    frac, shift, lo, size = 8, 2, -(8 << 6), 16 << 6                # inputs −8 … 8, step 2^(shift−frac)
    tab = silu_table(frac, shift, lo, size)
    x = np.arange(-12 * 256, 12 * 256, 7, dtype=np.int64)[None]
    got = ip.to_float(silu(x, tab, imm=lo, shift=shift, options=size), frac).astype(np.float64)
    c = x[0] / 2.0 ** frac
    exact = c / (1 + np.exp(-c))
    inside = (c >= lo * 2.0 ** (shift - frac)) & (c < (lo + size) * 2.0 ** (shift - frac))
    err = np.abs(got[0] - exact)
    assert err[inside].max() <= 1.1 * 2.0 ** (shift - 1 - frac) + 2.0 ** -(frac + 1)
    above = c >= (lo + size - 0.5) * 2.0 ** (shift - frac)
    assert (err[above] <= np.abs(c[above] * np.exp(-c[above]))).all()


# -- refusals -----------------------------------------------------------------------------------------------

def test_overflow_is_refused_with_a_clear_error():
    aux = pack_aux("combine_rows", 1, 1, 1, coef=np.array([[[(1 << 31) - 1]]]), bias=a(0), rowmul=a((1 << 31) - 1))
    with pytest.raises(IntPostOverflow, match="combine_rows's weighted sum can reach .* 2\\^62"):
        combine_rows(np.array([[[1 << 20]]]), aux)
    four = pack_aux("combine", 1, 1, 4, coef=np.full((1, 4, 1), (1 << 31) - 1), bias=a(0))
    with pytest.raises(IntPostOverflow, match="combine's weighted sum"):          # 4 words of 31·31 bits
        combine(np.full((1, 1, 4), -(1 << 31)), four)
    # below the bound the value is formed exactly (2^62 − 2^32 + 1) and saturates to the output format
    assert combine_rows(np.array([[[1]]]), aux).tolist() == [[(1 << 31) - 1]]
    # every other function stays below 2^62 for int32 operands: (2^31 − 1)² and (2^31 − 1)·qmax
    assert quantize(a([(1 << 31) - 1]), pack_aux("quantize", 1, 1, absmax=a((1 << 31) - 1)),
                    imm=(1 << 31) - 1, out="I32").tolist() == [[(1 << 31) - 1]]


def test_operands_outside_their_formats_are_refused():
    with pytest.raises(ValueError, match="outside its format I8"):
        relu(a([200]), inp="I8")
    with pytest.raises(ValueError, match="outside its format I32"):
        pack_aux("add", 1, 1, y=a([1 << 31]))
    with pytest.raises(ValueError, match="must hold 3 int32 values"):
        threshold(a([1, 2, 3]), a(1, 2))
    with pytest.raises(ValueError, match="reads no auxiliary region"):
        relu(a([1]), a(1))
    with pytest.raises(ValueError, match="imm must be a signed 32-bit"):
        requant(a([1]), imm=1 << 31)
    with pytest.raises(ValueError, match="unknown POST format"):
        relu(a([1]), out="I4")


def test_aux_layout_is_the_documented_order():
    assert ip.aux_layout("combine_rows", 2, 3, 4, 2) == (("coef", (2, 4, 3)), ("bias", (3,)), ("rowmul", (2,)))
    assert ip.aux_layout("combine", 2, 3, 1) == (("coef", (1, 1, 3)), ("bias", (3,)))
    assert ip.aux_layout("quantize", 5, 3) == (("absmax", (5,)),)
    assert ip.aux_layout("relu2", 5, 3) == ()


# -- fixed point and the host boundary ----------------------------------------------------------------------

def test_fixed_point_hand_values():
    assert fixed_point(0.5, 8) == (64, 7)
    assert fixed_point(1 / 3, 8) == (85, 8)               # 0.667·128 = 85.3 → 85, e = −1
    assert fixed_point(1.0, 32) == (1 << 30, 30)
    assert fixed_point(0.999999, 8) == (64, 6)            # 127.99 rounds to 128: halved, exponent bumped
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="positive finite"):
            fixed_point(bad)
    with pytest.raises(ValueError, match="shift field"):
        fixed_point(2.0 ** 40, 32)


def test_fixed_point_error_bound_on_many_scales():
    rng = np.random.default_rng(0)
    for bits in (8, 16, 24, 32):
        # scales up to 2^(bits−2): above 2^(bits−1) the multiplier would need a negative shift (refused)
        for scale in np.exp(rng.uniform(math.log(1e-9), math.log(2.0 ** (bits - 2)), 500)):
            m, s = fixed_point(float(scale), bits)
            assert 1 << (bits - 2) <= m < 1 << (bits - 1)
            err = abs(m * 2.0 ** -s - scale)
            assert err <= 2.0 ** -(s + 1) * (1 + 1e-12)
            assert err <= scale * 2.0 ** -(bits - 1) * (1 + 1e-12)


def test_fixed_point_array_shares_one_frac():
    ints, frac = fixed_point_array([0.1, -0.25, 1e-3], 8)
    assert frac == 8 and ints.tolist() == [26, -64, 0]     # 0.25·256 = 64 < 128; 0.1·256 = 25.6 → 26
    assert fixed_point_array([0.0, 0.0], 16)[1] == 0
    ints, frac = fixed_point_array([0.999999], 8)           # rounds to 128 = 2^7: one frac less
    assert (ints.tolist(), frac) == ([64], 6)


def test_host_boundary_rounds_ties_to_even_and_saturates():
    assert from_float([0.375, -0.375, 0.125, -0.125, 1.5], 2).tolist() == [2, -2, 0, 0, 6]   # 1.5, −1.5, ±0.5
    assert from_float([1e9, -1e9], 16).tolist() == [(1 << 31) - 1, -(1 << 31)]
    assert from_float([1.0], 0, "I8").tolist() == [1]
    assert to_float(a(3, -3), 2).tolist() == [0.75, -0.75]
    x = np.random.default_rng(1).normal(size=1000).astype(np.float32)
    assert np.abs(to_float(from_float(x, 16), 16) - x).max() <= 2.0 ** -17
    with pytest.raises(ValueError, match="finite"):
        from_float([float("nan")], 4)


def test_docs_page_is_generated_from_the_docstrings():
    from pathlib import Path
    page = Path(__file__).resolve().parents[1] / "docs" / "intpost.md"
    assert page.read_text() == ip.markdown(), "regenerate: python -m models.intpost -o docs/intpost.md"
