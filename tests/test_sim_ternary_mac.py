"""Numba cycle model of the ternary-MAC engine: values equal models/, stepped cycles equal the formula."""

import numpy as np
import pytest

from hw.contract import Traffic, measured_cycles
from hw.params import TernaryMacParams
from models.bitnet import ternary_accumulate
from sim.ternary_mac import fast_cycles, simulate


def _problem(rng, m, k, tokens):
    return rng.integers(-1, 2, (m, k)).astype(np.int8), rng.integers(-128, 128, (tokens, k)).astype(np.int8)


def test_stepped_equals_formula_on_many_shapes():
    rng = np.random.default_rng(0)
    for _ in range(150):
        lanes, rows = int(rng.integers(1, 20)), int(rng.integers(1, 9))
        depth = max(0, (lanes - 1).bit_length())
        p = TernaryMacParams(lanes=lanes, rows=rows, max_k=64, tree_stages=int(rng.integers(0, depth + 1)))
        m, k, tokens = int(rng.integers(1, 20)), int(rng.integers(1, 65)), int(rng.integers(1, 5))
        w, x = _problem(rng, m, k, tokens)
        run = simulate(p, w, x)
        assert run.cycles == fast_cycles(p, m, k, tokens), (p, m, k, tokens)
        np.testing.assert_array_equal(run.acc, ternary_accumulate(w, x))
        assert run.input_beats == p.n_beats(m, k, tokens)
        assert run.result_beats == p.row_blocks(m) * tokens
        assert run.first_input_cycle == 0


@pytest.mark.parametrize("seed", range(6))
def test_stalls_keep_values_and_only_add_cycles(seed):
    rng = np.random.default_rng(seed)
    p = TernaryMacParams(lanes=4, rows=3, max_k=32, tree_stages=1)
    w, x = _problem(rng, 8, 30, 6)
    full = simulate(p, w, x)
    stalled = simulate(p, w, x, Traffic.random(seed, offer_prob=0.5, ready_prob=0.3))
    np.testing.assert_array_equal(stalled.acc, full.acc)
    assert stalled.cycles > full.cycles


def test_sink_that_never_stalls_but_source_gaps():
    # Source offers every other cycle: the engine idles in between, each gap costs exactly one cycle.
    p = TernaryMacParams(lanes=4, rows=2, max_k=16)
    rng = np.random.default_rng(3)
    w, x = _problem(rng, 2, 16, 1)
    run = simulate(p, w, x, Traffic(offer=np.array([True, False]), ready=np.array([True])))
    beats = p.n_beats(2, 16, 1)
    assert run.cycles == 2 * (beats - 1) + 1 + p.latency


def test_accounting():
    p = TernaryMacParams(lanes=8, rows=4, max_k=64)
    w = np.zeros((6, 20), np.int8)
    w[0, :5] = 1
    w[5, 19] = -1
    x = np.ones((3, 20), np.int8)
    run = simulate(p, w, x)
    assert run.useful_macs == 6 * 20 * 3
    assert run.active_macs == 6 * 3                         # non-zero weights × tokens
    assert run.input_beats == p.n_beats(6, 20, 3)
    assert run.utilisation == pytest.approx(360 / (run.cycles * 32))


def test_bad_inputs_are_refused():
    p = TernaryMacParams(lanes=4, rows=2, max_k=16)
    with pytest.raises(ValueError, match=r"K=17 exceeds max_k=16"):
        simulate(p, np.zeros((2, 17), np.int8), np.zeros((1, 17), np.int8))
    with pytest.raises(ValueError, match=r"ternary weights holds 2, outside \[-1, 1\]"):
        simulate(p, np.full((2, 4), 2, np.int8), np.zeros((1, 4), np.int8))
    with pytest.raises(ValueError, match=r"activation codes has 5 columns"):
        simulate(p, np.zeros((2, 4), np.int8), np.zeros((1, 5), np.int8))
    with pytest.raises(TypeError, match="must be an integer array"):
        simulate(p, np.zeros((2, 4)), np.zeros((1, 4), np.int8))
    with pytest.raises(ValueError, match="never high"):
        Traffic(offer=np.array([False]))
    with pytest.raises(ValueError, match="no complete run"):
        measured_cycles(-1, 5)
