"""Ternary-MAC engine: models/ reference = Numba cycle model = Amaranth simulation = Icarus (cocotb), bit for
bit, and the measured cycle counts equal the cycle model's, on every case of the vector suite."""

import numpy as np
import pytest

from hw.contract import Traffic
from hw.ternary_mac import TernaryMacEngine

from .levels import (amaranth_level, assert_same_accumulators, cocotb_level, reference_level, sim_level)
from .vectors import CASES, ternary_mac_vectors

#: Vectors (tie cases first) also run under random stalls on both stream ends.
STALLED_VECTORS = 60
STALL_SEED = 7


@pytest.fixture(scope="module", params=CASES, ids=[c.name for c in CASES])
def vectors(request):
    return ternary_mac_vectors(request.param)


def _traffics():
    return [Traffic.full(), Traffic.random(STALL_SEED)]


def _check_levels(vectors, results):
    """``results``: one level's [full, stalled] runs; compare with the reference and with sim."""
    p = vectors.case.params
    full_vectors, stalled_vectors = vectors, vectors.head(STALLED_VECTORS)
    for run, vec, traffic in zip(results, (full_vectors, stalled_vectors), _traffics()):
        assert_same_accumulators(vec.expected_acc, run, vec.labels)
        expected_cycles = sim_level(p, vec.weight_codes, vec.act_codes, traffic).cycles
        assert run.cycles == expected_cycles, (
            f"{run.level}: measured {run.cycles} cycles, the cycle model says {expected_cycles} "
            f"({'full throughput' if traffic.is_full else 'stalled traffic'})")


def test_vector_suite_covers_cases(vectors):
    assert vectors.act_codes.shape[0] >= 1000 + 7
    assert {-128, 127} <= set(np.unique(vectors.act_codes).tolist())
    assert set(np.unique(vectors.weight_codes).tolist()) == {-1, 0, 1}
    assert (vectors.weight_codes[0] == 0).all()
    k = vectors.case.k
    # The corners reach the accumulator extremes the width was sized for.
    acc = vectors.expected_acc
    assert acc.max() == 128 * k and acc.min() == -128 * k
    assert vectors.case.params.acc_width >= int(acc.max()).bit_length() + 1


def test_sim_matches_reference_and_formula(vectors):
    p, w, x = vectors.case.params, vectors.weight_codes, vectors.act_codes
    ref = reference_level(w, x)
    run = sim_level(p, w, x, Traffic.full())
    assert_same_accumulators(ref.acc, run, vectors.labels)
    assert run.cycles == p.cycles(*w.shape, x.shape[0])
    stalled = sim_level(p, w, x[:STALLED_VECTORS], Traffic.random(STALL_SEED))
    assert_same_accumulators(ref.acc[:STALLED_VECTORS], stalled)
    assert stalled.cycles > p.cycles(*w.shape, STALLED_VECTORS)


def test_amaranth_simulation(vectors):
    p = vectors.case.params
    full = amaranth_level(p, vectors.weight_codes, vectors.act_codes, [Traffic.full()])
    stalled = amaranth_level(p, vectors.weight_codes, vectors.act_codes[:STALLED_VECTORS],
                             [Traffic.random(STALL_SEED)])
    _check_levels(vectors, full + stalled)


def test_cocotb_icarus(vectors, tmp_path):
    p = vectors.case.params
    full = cocotb_level(p, vectors.weight_codes, vectors.act_codes, [Traffic.full()], work_dir=tmp_path / "full")
    stalled = cocotb_level(p, vectors.weight_codes, vectors.act_codes[:STALLED_VECTORS],
                           [Traffic.random(STALL_SEED)], work_dir=tmp_path / "stalled")
    _check_levels(vectors, full + stalled)


class FlippedSignLane(TernaryMacEngine):
    """A planted bug: lane 0 of row 1 negates the product it should pass through, and vice versa."""

    def _lane_product(self, act, code, row, lane):
        product = super()._lane_product(act, code, row, lane)
        return -product if (row, lane) == (1, 0) else product


@pytest.fixture(scope="module")
def small_case():
    return ternary_mac_vectors(CASES[0]).head(40)


def test_planted_bug_fails_amaranth(small_case):
    p = small_case.case.params
    [run] = amaranth_level(p, small_case.weight_codes, small_case.act_codes, [Traffic.full()],
                           component=FlippedSignLane(p))
    with pytest.raises(AssertionError, match="differ from the reference"):
        assert_same_accumulators(small_case.expected_acc, run, small_case.labels)


def test_planted_bug_fails_cocotb(small_case, tmp_path):
    p = small_case.case.params
    [run] = cocotb_level(p, small_case.weight_codes, small_case.act_codes, [Traffic.full()],
                         work_dir=tmp_path, component=FlippedSignLane(p))
    with pytest.raises(AssertionError, match="differ from the reference"):
        assert_same_accumulators(small_case.expected_acc, run, small_case.labels)


def test_failing_cocotb_bench_fails_the_caller(small_case, tmp_path):
    """A bench that cannot even find its ports must surface as an error, not as an empty pass."""
    import json

    from hw.export import write_unit

    from .levels import stream_job
    from .streams import run_cocotb

    p = small_case.case.params
    unit = write_unit(p, tmp_path)
    broken = dict(unit.manifest)
    broken["streams"] = {**unit.manifest["streams"], "in": {**unit.manifest["streams"]["in"], "name": "operands"}}
    unit.manifest_path.write_text(json.dumps(broken))
    job = stream_job(p, small_case.weight_codes, small_case.act_codes[:2], Traffic.full())
    with pytest.raises(AssertionError, match=r"(?s)the cocotb bench on .* failed.*no port 'operands__payload'"):
        run_cocotb(unit.manifest_path, [job], build_dir=tmp_path / "build")


def test_weight_code_table_is_what_the_rtl_does():
    """The manifest's code table (TernaryMacParams.WEIGHT_CODES) against the RTL, reserved code included."""
    from hw.export import manifest
    from hw.params import TernaryMacParams

    from .streams import StreamJob, run_amaranth

    p = TernaryMacParams(lanes=4, rows=1, max_k=4)
    acts = np.array([[3, -5, 7, -128], [-1, 2, -3, 4], [127, 127, -128, -128]])
    signed_codes = {0b00: 0, 0b01: 1, 0b11: -1, 0b10: -2}          # the 2-bit patterns as signed fields
    patterns = np.array([[0b00, 0b01, 0b11, 0b10], [0b10, 0b10, 0b01, 0b11], [0b11, 0b01, 0b10, 0b00]])
    weight = np.vectorize(signed_codes.get)(patterns)[:, None, :]
    job = StreamJob(p.operand_layout.pack(3, act=acts, weight=weight, last=np.ones(3)), 3, Traffic.full())
    [run] = run_amaranth(TernaryMacEngine(p), [job], in_stream="operand", out_stream="result",
                         result_layout=p.result_layout, latency=p.latency)
    got = p.result_layout.unpack(run.results)["acc"][:, 0]
    expected = (np.vectorize(p.WEIGHT_CODES.get)(patterns) * acts).sum(axis=1)
    np.testing.assert_array_equal(got, expected)
    table = manifest(p)["encodings"]["weight"]["codes"]
    assert table == {"0b00": 0, "0b01": 1, "0b11": -1, "0b10": "reserved, decodes as 0"}


@pytest.mark.slow
def test_main_job_layer_on_rtl(tmp_path):
    """The README's main-job layer (6912×2560 on 64 lanes × 16 rows), one token, RTL = model (≈1 min)."""
    import torch

    from hw.params import TernaryMacParams
    from models import bitnet

    g = torch.Generator().manual_seed(0)
    w = torch.randn(6912, 2560, generator=g) * 0.02
    x = torch.randn(1, 2560, generator=g)
    [main] = bitnet.linear_view(w, x).passes
    p = TernaryMacParams(lanes=64, rows=16, max_k=2560)
    [run] = cocotb_level(p, main.weight_codes, main.act_codes, [Traffic.full()], work_dir=tmp_path)
    assert_same_accumulators(main.accumulate(), run)
    assert run.cycles == sim_level(p, main.weight_codes, main.act_codes, Traffic.full()).cycles == p.cycles(6912, 2560)
