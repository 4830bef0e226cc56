# amaranth: UnusedElaboratable=no
"""Parameter objects, payload layouts and the beat schedule of the ternary-MAC engine."""

import itertools

import numpy as np
import pytest

from hw.layout import PayloadLayout
from hw.params import TernaryMacParams, params_for_unit
from hw.rtl import amaranth_layout


@pytest.mark.parametrize("kwargs,message", [
    (dict(lanes=0, rows=1), r"lanes must be >= 1, not 0"),
    (dict(lanes=-4, rows=1), r"lanes must be >= 1, not -4"),
    (dict(lanes=2.5, rows=1), r"lanes must be an integer, not 2.5"),
    (dict(lanes=True, rows=1), r"lanes must be an integer, not True"),
    (dict(lanes=4, rows="2"), r"rows must be an integer, not '2'"),
    (dict(lanes=4, rows=2, max_k=0), r"max_k must be >= 1, not 0"),
    (dict(lanes=4, rows=2, act_bits=1), r"act_bits must be in \[2, 32\], not 1"),
    (dict(lanes=8, rows=2, tree_stages=4), r"tree_stages \(8 terms per tree give 3 levels\) must be in \[0, 3\], not 4"),
    (dict(lanes=4, rows=2, max_k=4096, acc_width=20),
     r"acc_width=20 is too narrow: max_k=4096 with 8-bit activations \(the sum spans \[-524288, 524288\]\) "
     r"needs 21 bits"),
    (dict(lanes=4096, rows=32), r"lanes × rows = 4096 × 32 = 131072 exceeds"),
])
def test_invalid_parameters_are_refused(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        TernaryMacParams(**kwargs)


def test_derived_values_resolve_into_fields():
    p = TernaryMacParams(lanes=64, rows=16, max_k=4096)
    assert (p.tree_stages, p.acc_width, p.latency, p.macs_per_cycle) == (6, 21, 9, 1024)
    assert TernaryMacParams.from_dict(p.to_dict()) == p
    assert TernaryMacParams(lanes=64, rows=16, max_k=4096, acc_width=32).acc_width == 32
    with pytest.raises(ValueError, match=r"unknown ternary-mac parameter\(s\) \['colour'\]"):
        TernaryMacParams.from_dict({"lanes": 2, "rows": 2, "colour": 1})


@pytest.mark.parametrize("lanes", [1, 2, 3, 7, 8, 12, 64, 100])
def test_registered_levels_spread_over_tree(lanes):
    depth = TernaryMacParams(lanes=lanes, rows=1).tree_depth
    assert 2 ** depth >= lanes > 2 ** (depth - 1) if depth else lanes == 1
    for stages in range(depth + 1):
        p = TernaryMacParams(lanes=lanes, rows=1, tree_stages=stages)
        levels = p.registered_levels
        assert len(levels) == stages and len(set(levels)) == stages
        assert all(1 <= lv <= depth for lv in levels)
        if stages:
            assert levels[-1] == depth
        assert p.latency == stages + 3              # operand register, tree stages, final totals, result


def test_level_widths_hold_their_sums():
    p = TernaryMacParams(lanes=12, rows=1)
    main, neg = p.channels()
    for level in range(p.tree_depth + 1):
        n = min(2 ** level, 12)
        w = main.level_width(level)
        # lane terms x or ~x lie in [-128, 127]; n of them in [-128·n, 127·n], one bit less would not hold it
        assert -(2 ** (w - 1)) <= -128 * n and 127 * n < 2 ** (w - 1)
        assert not (-(2 ** (w - 2)) <= -128 * n and 127 * n < 2 ** (w - 2))
        # the negation count is a popcount: unsigned, three nodes per level, 3^level lanes under a node
        assert neg.level_width(level) == min(12, 3 ** level).bit_length()


def test_problem_checks_name_the_value():
    p = TernaryMacParams(lanes=8, rows=4, max_k=64)
    with pytest.raises(ValueError, match=r"K=65 exceeds max_k=64"):
        p.cycles(4, 65)
    with pytest.raises(ValueError, match=r"tokens must be >= 1, not 0"):
        p.schedule(4, 8, 0)


def test_operand_beats_match_a_naive_loop():
    rng = np.random.default_rng(0)
    p = TernaryMacParams(lanes=5, rows=3, max_k=64)
    m, k, tokens = 7, 13, 4
    w = rng.integers(-1, 2, (m, k))
    x = rng.integers(-128, 128, (tokens, k))
    beats = p.operand_beats(w, x)
    i = 0
    for rb, t, kc in itertools.product(range(3), range(tokens), range(3)):
        for lane in range(5):
            j = kc * 5 + lane
            assert beats["act"][i, lane] == (x[t, j] if j < k else 0)
            for r in range(3):
                row = rb * 3 + r
                assert beats["weight"][i, r, lane] == (w[row, j] if row < m and j < k else 0)
        assert beats["last"][i] == (kc == 2)
        i += 1
    assert i == len(beats["last"]) == p.n_beats(m, k, tokens)


def test_collect_results_reorders_and_unpads():
    p = TernaryMacParams(lanes=4, rows=2)
    m, tokens = 3, 2
    # Result beats come in (row block, token) order; tag each accumulator with (row, token).
    beats = np.array([[0, 1], [10, 11], [2, 3], [12, 13]])    # rb0 t0, rb0 t1, rb1 t0, rb1 t1
    acc = p.collect_results(beats, m, 4, tokens)
    assert acc.tolist() == [[0, 1, 2], [10, 11, 12]]
    with pytest.raises(ValueError, match=r"expected 4 result beats of 2 rows"):
        p.collect_results(beats[:3], m, 4, tokens)


def test_layout_pack_unpack_round_trip_and_amaranth_agreement():
    rng = np.random.default_rng(1)
    p = TernaryMacParams(lanes=6, rows=3, max_k=100, act_bits=5)
    layout = p.operand_layout
    n = 50
    values = {"act": rng.integers(-16, 16, (n, 6)), "weight": rng.integers(-1, 2, (n, 3, 6)),
              "last": rng.integers(0, 2, n)}
    rows = layout.pack(n, **values)
    back = layout.unpack(rows)
    for name in values:
        np.testing.assert_array_equal(back[name], values[name])
    # Amaranth's own packing of the same values gives the same integers.
    alayout = amaranth_layout(layout)
    for i in range(5):
        const = alayout.const({"act": values["act"][i].tolist(), "weight": values["weight"][i].tolist(),
                               "last": int(values["last"][i])})
        assert const.as_value().value == PayloadLayout.rows_to_ints(rows[i:i + 1])[0]
    for name, field in alayout:
        assert field.offset == layout[name].offset


def test_pack_refuses_values_that_do_not_fit():
    layout = TernaryMacParams(lanes=2, rows=1).operand_layout
    with pytest.raises(ValueError, match=r"field 'act' value 128 does not fit 8 signed bits"):
        layout.pack(1, act=np.array([[128, 0]]), weight=np.zeros((1, 1, 2)), last=np.zeros(1))


def test_wide_signed_fields_round_trip():
    layout = PayloadLayout.sequential(("a", 64, True, (2,)), ("b", 33, False, ()))
    vals = {"a": np.array([[-(2 ** 63), 2 ** 63 - 1]]), "b": np.array([2 ** 33 - 1])}
    back = layout.unpack(layout.pack(1, **vals))
    assert back["a"].tolist() == vals["a"].tolist() and back["b"].tolist() == [2 ** 33 - 1]


def test_unit_lookup():
    assert params_for_unit("ternary-mac") is TernaryMacParams
    with pytest.raises(ValueError, match="unknown unit 'ternary'"):
        params_for_unit("ternary")
    with pytest.raises(ValueError, match="unit 'fp-vector' has no generator; available: ternary-mac"):
        params_for_unit("fp-vector")
