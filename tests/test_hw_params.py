# amaranth: UnusedElaboratable=no
"""Parameter objects, payload layouts and the beat schedule of the ternary-MAC engine."""

import itertools
import re

import numpy as np
import pytest

from hw.contract import Traffic
from hw.layout import PayloadLayout
from hw.params import (CYCLES_FORMULA, BammParams, BinaryBasisParams, EngineParams, FpMacParams, Int8MacParams,
                       SystolicArrayParams, TernaryMacParams, XnorPopcountParams, params_for_unit)
from hw.rtl import amaranth_layout
from sim.engine import simulate


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


# -- the cycle formula against hand-counted cycles and the RTL's measured count -------------------------------------
#
# Counting rule (hw/contract.py: cycles = last output handshake - first input handshake + 1). At full throughput the
# source offers a beat every cycle and the sink is always ready, so beat b hands off in cycle b (b = 0 … B-1). A beat
# then crosses one register per cycle: the operand register, the pre-stages (zero_skip's gated terms, the LUT
# build), the registered tree levels, the final-totals register (it takes the accumulator's total on a `last`
# beat), the scale stage where there is one, and the result register, whose valid output hands off in the cycle it
# holds the result. The last beat (b = B-1) therefore leaves in cycle (B-1) + stages, and
# cycles = (B-1) + stages - 0 + 1 = B + stages. Every number below is counted from the parameters, not taken from
# hw/params.py.
#
# (name, params, M, K, tokens, beats B, registers crossed, cycles)
CYCLE_CASES = [
    # 1 row block, 1 token, 1 chunk: B = 1; operand + final totals + result = 3 registers (tree unregistered)
    ("ternary-one-beat", TernaryMacParams(lanes=4, rows=2, max_k=8, tree_stages=0), 1, 1, 1, 1, 3, 4),
    # M = 3 over 2 rows: 2 row blocks (rows 0-1; row 2 + a padded row); K = 5 over 4 lanes: 2 chunks (4 + 1 valid
    # lanes); 2 tokens: B = 2 · 2 · 2 = 8. No tree register: operand, final totals, result = 3. 8 + 3 = 11.
    ("ternary-flat", TernaryMacParams(lanes=4, rows=2, max_k=8, tree_stages=0), 3, 5, 2, 8, 3, 11),
    # Same problem, every tree level registered: the 4-term main tree (pairs) and the 4-term negation popcount
    # (triples) are both 2 levels deep, so 2 tree registers: 1 + 2 + 1 + 1 = 5. 8 + 5 = 13.
    ("ternary-full-tree", TernaryMacParams(lanes=4, rows=2, max_k=8, tree_stages=2), 3, 5, 2, 8, 5, 13),
    # zero_skip adds the gated-term register before a 1-stage tree: 1 + 1 + 1 + 1 + 1 = 5. 8 + 5 = 13.
    ("ternary-zero-skip", TernaryMacParams(lanes=4, rows=2, max_k=8, tree_stages=1, zero_skip=True), 3, 5, 2, 8, 5,
     13),
    # XNOR, 8 lanes: K = 10 is 2 chunks (8 + 2); 2 row blocks, 2 tokens: B = 8. The popcount tree adds triples:
    # 8 bits → 3 → 1, 2 levels, one of them registered: 1 + 1 + 1 + 1 = 4. 8 + 4 = 12.
    ("xnor-one-stage", XnorPopcountParams(lanes=8, rows=2, max_k=16, tree_stages=1), 3, 10, 2, 8, 4, 12),
    # binary-basis with a LUT of μ = 4: 8 lanes make 2 LUT terms per tree (1 level, registered); the LUT build is a
    # pre-stage: operand, LUT, tree, final totals, result = 5. K = 10: 2 chunks; B = 8. 8 + 5 = 13.
    ("binary-basis-lut", BinaryBasisParams(lanes=8, rows=2, max_k=16, n_bases=2, lut_group=4), 3, 10, 2, 8, 5, 13),
    # binary-basis with 4-bit scales: the scale stage sits between the final totals and the result register;
    # tree unregistered: operand, final totals, scale, result = 4. M = 3, K = 5 over 4 lanes, 2 tokens: B = 8.
    # 8 + 4 = 12.
    ("binary-basis-scaled", BinaryBasisParams(lanes=4, rows=2, max_k=8, n_bases=2, scale_bits=4, tree_stages=0),
     3, 5, 2, 8, 4, 12),
]


def _cycle_operands(p, m, k, tokens, seed=0):
    """Operands in each unit's value set; the values do not change the count at full throughput."""
    rng = np.random.default_rng(seed)
    if isinstance(p, XnorPopcountParams):
        return rng.choice([-1, 1], (m, k)), rng.choice([-1, 1], (tokens, k)), None
    acts = rng.integers(-128, 128, (tokens, k))
    if isinstance(p, BinaryBasisParams):
        alpha = rng.integers(-8, 8, (p.n_bases, m)) if p.scale_bits else None
        return rng.choice([-1, 1], (p.n_bases, m, k)), acts, alpha
    return rng.integers(-1, 2, (m, k)), acts, None


@pytest.mark.parametrize("name,p,m,k,tokens,beats,stages,cycles", CYCLE_CASES, ids=[c[0] for c in CYCLE_CASES])
def test_cycle_formula_equals_hand_count(name, p, m, k, tokens, beats, stages, cycles):
    assert p.n_beats(m, k, tokens) == beats
    assert p.latency == stages
    assert p.cycles(m, k, tokens) == cycles


@pytest.mark.parametrize("name,p,m,k,tokens,beats,stages,cycles", CYCLE_CASES, ids=[c[0] for c in CYCLE_CASES])
def test_cycle_formula_equals_simulator_and_rtl(name, p, m, k, tokens, beats, stages, cycles):
    # The stepped model and the generated RTL (Amaranth's simulator) are measured, not computed from the formula:
    # a formula off by one, in the count or in any unit's stage count, disagrees with the RTL here.
    from rtl_tests.levels import amaranth_level

    w, x, alpha = _cycle_operands(p, m, k, tokens)
    sim = simulate(p, w, x, extra=alpha)
    [rtl] = amaranth_level(p, w, x, [Traffic.full()], alpha=alpha)
    assert (sim.first_input_cycle, sim.last_output_cycle) == (0, cycles - 1)
    assert sim.cycles == rtl.cycles == cycles
    assert p.cycles(m, k, tokens) == rtl.cycles
    for field_name, value in sim.results.items():
        np.testing.assert_array_equal(rtl.fields[field_name], value)


# -- per-unit facts asked of the unit (issue 10, item 1) ---------------------------------------------------------

UNITS = [
    TernaryMacParams(lanes=5, rows=3, max_k=64),
    TernaryMacParams(lanes=8, rows=2, max_k=64, act_bits=4, zero_skip=True),
    XnorPopcountParams(lanes=7, rows=3, max_k=64, threshold="strict"),
    BammParams(lanes=6, rows=4, max_k=64),
    BammParams(lanes=5, rows=2, max_k=64, identity="xnor", zero_policy="neg"),
    BinaryBasisParams(lanes=4, rows=3, max_k=64, n_bases=3),
    BinaryBasisParams(lanes=4, rows=2, max_k=64, n_bases=2, scale_bits=6),
    BinaryBasisParams(lanes=8, rows=2, max_k=64, n_bases=2, lut_group=4),
    BinaryBasisParams(lanes=4, rows=3, max_k=256, mode="billm"),
    Int8MacParams(lanes=5, rows=2, max_k=64),
    Int8MacParams(lanes=4, rows=3, max_k=64, act_bits=6, weight_bits=4),
]
_IDS = [p.module_name for p in UNITS]


def test_cycles_formula_text_is_the_method():
    """The manifest's prose formula, evaluated, equals EngineParams.cycles on many shapes of every unit."""
    from fractions import Fraction
    from math import ceil

    from hw.export import _contract

    assert _contract(UNITS[0])["cycles_at_full_throughput"] == CYCLES_FORMULA
    rng = np.random.default_rng(5)
    for p in UNITS:
        for _ in range(40):
            m, k, t = (int(v) for v in (rng.integers(1, 40), rng.integers(1, p.max_k + 1), rng.integers(1, 9)))
            names = {"M": Fraction(m), "K": Fraction(k), "tokens": t, "rows": p.rows, "lanes": p.lanes,
                     "latency_cycles": p.latency, "ceil": ceil}
            assert eval(CYCLES_FORMULA, {"__builtins__": {}}, names) == p.cycles(m, k, t), (p, m, k, t)


def test_operand_widths_come_from_the_payload_layout():
    # Units with an act_bits / weight_bits parameter keep it as a field; the layout-derived value must agree.
    for p in UNITS:
        assert EngineParams.act_bits.fget(p) == p.act_bits, p
        assert EngineParams.weight_bits.fget(p) == p.weight_bits, p
    widths = {p.module_name: (p.act_bits, p.weight_bits) for p in UNITS}
    assert widths[UNITS[0].module_name] == (8, 2)          # 2-bit ternary codes
    assert widths[UNITS[2].module_name] == (1, 1)          # XNOR bits
    assert widths[UNITS[3].module_name] == (1, 1)          # BAMM: attention bit, value sign
    assert widths[UNITS[5].module_name] == (8, 3)          # one bit per basis
    assert widths[UNITS[8].module_name] == (8, 4)          # BiLLM: 2-bit group + two signs
    assert widths[UNITS[10].module_name] == (6, 4)
    fp = FpMacParams(lanes=4, rows=4, fp_bits=32)
    assert (fp.act_bits, fp.weight_bits, fp.result_bits) == (32, 32, 32)


@pytest.mark.parametrize("p", UNITS, ids=_IDS)
def test_random_operands_are_valid_operands_and_finish_takes_one_signature(p):
    rng = np.random.default_rng(3)
    m, k, n = 3, min(p.max_k, 11), 5
    w, x, extra = p.random_operands(rng, m, k, n)
    p.check_operands(w, x, extra)                       # the unit's own value sets
    run = simulate(p, w, x, extra=extra)
    beats = p.operand_beats(w, x, extra)
    assert set(beats) == {f.name for f in p.operand_layout.fields}
    assert set(run.results) == {f.name for f in p.result_layout.fields}
    if extra is None:
        with pytest.raises(ValueError, match="alpha|no extra operand"):
            p.operand_beats(w, x, np.zeros((p.n_bases if hasattr(p, "n_bases") else 1, n), np.int64))


@pytest.mark.parametrize("p", UNITS, ids=_IDS)
def test_weight_image_is_the_weight_side_of_the_operand_beats(p):
    rng = np.random.default_rng(4)
    m, k = 2 * p.rows + 1, min(p.max_k, 3 * p.lanes - 1)       # a partial row block and a partial chunk
    w, x, extra = p.random_operands(rng, 1, k, m)
    image = p.weight_image(w, extra)
    nb, nk = p.row_blocks(m), p.beats_per_reduction(k)
    assert image.dtype == np.uint8 and image.shape == (nb * nk * p.weight_beat_bytes,)
    assert p.weight_beat_bytes == -(-p.weight_beat_layout.width // 8)
    # one token: the beats run in (row block, chunk) order, exactly the image's order
    beats = p.operand_beats(w, x, extra)
    layout = p.weight_beat_layout
    packed = layout.pack(len(beats["last"]), **{f.name: beats[f.name] for f in layout.fields})
    np.testing.assert_array_equal(image.reshape(nb * nk, -1), packed)
    back, back_extra = p.weights_from_image(image, m, k)
    np.testing.assert_array_equal(back, w)
    if extra is None:
        assert back_extra is None
    else:
        np.testing.assert_array_equal(back_extra, extra)
    with pytest.raises(ValueError, match="weight image"):
        p.weights_from_image(image[:-1], m, k)


@pytest.mark.parametrize("p", UNITS, ids=_IDS)
def test_result_records_round_trip(p):
    rng = np.random.default_rng(6)
    m, k, t = 7, min(p.max_k, 9), 3
    w, x, extra = p.random_operands(rng, t, k, m)
    fields = simulate(p, w, x, extra=extra).results
    records = p.pack_results(fields)
    assert records.dtype == np.int32 and records.shape == (t, m, p.result_words)
    back = p.unpack_results(records)
    assert list(back) == [f.name for f in p.result_layout.fields]
    for name, value in fields.items():
        np.testing.assert_array_equal(back[name], value)
    # record layout: the first field's elements first (docs/isa.md §2)
    first = p.result_layout.fields[0]
    np.testing.assert_array_equal(records[..., 0], np.moveaxis(fields[first.name], -1, 1).reshape(t, m, -1)[..., 0])


def test_result_words_per_unit():
    words = {p.module_name: p.result_words for p in UNITS}
    assert [words[p.module_name] for p in (UNITS[0], UNITS[2], UNITS[3], UNITS[5], UNITS[6], UNITS[8], UNITS[9])] \
        == [1, 2, 2, 3, 3, 7, 1]     # acc; dot+bit; count+sign; 3 sums; 2 sums + y; 4 sums + 3 means; acc
    with pytest.raises(ValueError, match="outside int32"):
        UNITS[0].pack_results({"acc": np.full((1, 2), 1 << 40)})


def test_fit_rules_are_the_units_and_name_the_op():
    from models.workload import Op

    def op(**kw):
        return Op("layer.x", "matmul", "linear", "ternary-mac", "prefill", **{"m": 4, "k": 64, "n": 8, "a_bits": 8,
                                                                              "b_bits": 2, **kw})

    cases = [
        (TernaryMacParams(lanes=4, rows=2, max_k=32), op(),
         "reductions of 64 exceed the ternary-mac engine's max_k=32"),
        (TernaryMacParams(lanes=4, rows=2, act_bits=4), op(), "8-bit activations exceed the ternary-mac engine's "
                                                             "act_bits=4"),
        (Int8MacParams(lanes=4, rows=2, weight_bits=4), op(b_bits=8), "8-bit weights exceed the int8-mac engine's "
                                                                     "weight_bits=4"),
        (BinaryBasisParams(lanes=4, rows=2), op(weight_layout="billm"), "needs a binary-basis engine in billm mode"),
        (BinaryBasisParams(lanes=4, rows=2, n_bases=2), op(b_bits=3, weight_layout="bases"),
         "3 binary bases exceed the binary-basis engine's n_bases=2"),
        (SystolicArrayParams(rows=2, cols=2, acc_width=16), op(acc_bits=25), "25-bit accumulators exceed the systolic"),
        (FpMacParams(lanes=2, rows=2), op(a_bits=32), "fp32 operands exceed the fp-mac engine's fp16"),
    ]
    for p, o, message in cases:
        with pytest.raises(ValueError, match=re.escape(f"layer.x: {message}")):
            p.check_fits(o)
    # BiLLM reduces per 128-column block: a 4096-long row fits a max_k=128 engine
    billm = BinaryBasisParams(lanes=4, rows=2, max_k=128, mode="billm")
    assert billm.reduction_block == 128 and BinaryBasisParams(lanes=4, rows=2).reduction_block is None
    billm.check_fits(op(k=4096, weight_layout="billm"))
    assert (billm.k_chunks(300), billm.reductions(300)) == (32 + 32 + 11, 3)


def test_systolic_array_has_its_own_kind_and_serves_int8_work():
    from models.units import UnitKind

    array = SystolicArrayParams(rows=4, cols=4)
    assert array.kind is UnitKind.SYSTOLIC and array.serves("int8-mac") and array.serves(UnitKind.SYSTOLIC)
    assert not array.serves("ternary-mac") and not Int8MacParams(lanes=2, rows=2).serves("systolic")
    with pytest.raises(ValueError, match="has no generator"):
        params_for_unit("systolic")
