"""Every unit: models/ reference = Numba cycle model = Amaranth simulation = Verilator (cocotb), bit for bit, and the
measured cycle counts equal the cycle model's, on every case of the vector suite, at full throughput and under
random stalls on both stream ends. Icarus, the second simulator, runs a cheaper subset: one case per unit, the first
:data:`ICARUS_VECTORS` vectors (tie and corner cases first) at full throughput and under stalls."""

import json

import numpy as np
import pytest

from hw.contract import Traffic
from hw.engine import ENGINES

from .levels import amaranth_level, assert_same_fields, cocotb_level, sim_level, stream_job
from .streams import run_amaranth, run_cocotb
from .vectors import CASES, build_problem

#: Vectors (tie cases first) also run under random stalls on both stream ends.
STALLED_VECTORS = 60
STALL_SEED = 7
#: Vectors of the Icarus subset (about 15 s for all five units, against about 10 s for the whole suite's
#: 20 cases on Verilator once its models are built).
ICARUS_VECTORS = 200


@pytest.fixture(scope="module", params=CASES, ids=[c.name for c in CASES])
def problem(request):
    return build_problem(request.param)


def _check(problem, full, stalled):
    """One level's full-throughput and stalled runs against the reference and the cycle model."""
    p = problem.case.params
    for run, prob, traffic in ((full, problem, Traffic.full()),
                               (stalled, problem.head(STALLED_VECTORS), Traffic.random(STALL_SEED))):
        assert_same_fields(prob.expected, run, prob.labels)
        expected_cycles = sim_level(p, prob.weights, prob.acts, traffic, prob.alpha).cycles
        assert run.cycles == expected_cycles, (
            f"{run.level}: measured {run.cycles} cycles, the cycle model says {expected_cycles} "
            f"({'full throughput' if traffic.is_full else 'stalled traffic'})")


def test_suite_covers_the_case(problem):
    assert problem.tokens >= 1000 + 3
    assert problem.labels[0].startswith(("tie", "corner"))


def test_sim_matches_reference_and_formula(problem):
    p = problem.case.params
    run = sim_level(p, problem.weights, problem.acts, Traffic.full(), problem.alpha)
    assert_same_fields(problem.expected, run, problem.labels)
    assert run.cycles == p.cycles(problem.case.m, problem.case.k, problem.tokens)
    head = problem.head(STALLED_VECTORS)
    stalled = sim_level(p, head.weights, head.acts, Traffic.random(STALL_SEED), head.alpha)
    assert_same_fields(head.expected, stalled)
    assert stalled.cycles > p.cycles(problem.case.m, problem.case.k, STALLED_VECTORS)


def test_amaranth_simulation(problem):
    p, head = problem.case.params, problem.head(STALLED_VECTORS)
    [full] = amaranth_level(p, problem.weights, problem.acts, [Traffic.full()], alpha=problem.alpha)
    [stalled] = amaranth_level(p, head.weights, head.acts, [Traffic.random(STALL_SEED)], alpha=head.alpha)
    _check(problem, full, stalled)


def _cocotb(problem, tmp_path, simulator):
    """Full throughput on the whole problem and stalls on its head, in one simulator launch per traffic."""
    p, head = problem.case.params, problem.head(STALLED_VECTORS)
    [full] = cocotb_level(p, problem.weights, problem.acts, [Traffic.full()], work_dir=tmp_path / "full",
                          alpha=problem.alpha, simulator=simulator)
    [stalled] = cocotb_level(p, head.weights, head.acts, [Traffic.random(STALL_SEED)], work_dir=tmp_path / "stalled",
                             alpha=head.alpha, simulator=simulator)
    _check(problem, full, stalled)


def test_cocotb_verilator(problem, tmp_path):
    _cocotb(problem, tmp_path, "verilator")


# -- Icarus, the second simulator: one case per unit ------------------------------------------------------------

FIRST_CASE_PER_UNIT = {c.params.kind: c for c in reversed(CASES)}


@pytest.mark.parametrize("case", list(FIRST_CASE_PER_UNIT.values()), ids=lambda c: c.name)
def test_cocotb_icarus(case, tmp_path):
    _cocotb(build_problem(case).head(ICARUS_VECTORS), tmp_path, "icarus")


# -- the checkers can fail ---------------------------------------------------------------------------------------

def _mutant(engine_class):
    """The engine with one planted bug: row 1, lane 0 of its first per-row channel computes the wrong term
    (a flipped bit, or a negated value)."""
    class Mutant(engine_class):
        def _terms(self, m, op):
            terms = super()._terms(m, op)
            channel = next(c.name for c in self.params.channels() if c.per_row)
            t = terms[channel][1][0]
            terms[channel][1][0] = ~t if len(t) == 1 else -t
            return terms
    return Mutant


@pytest.mark.parametrize("case", list(FIRST_CASE_PER_UNIT.values()), ids=lambda c: c.params.kind.value)
def test_planted_bug_fails_every_rtl_level(case, tmp_path):
    problem = build_problem(case).head(40)
    p = case.params
    mutant = _mutant(ENGINES[p.kind])
    runs = amaranth_level(p, problem.weights, problem.acts, [Traffic.full()], component=mutant(p),
                          alpha=problem.alpha)
    for simulator in ("verilator", "icarus"):
        runs += cocotb_level(p, problem.weights, problem.acts, [Traffic.full()], work_dir=tmp_path / simulator,
                             component=mutant(p), alpha=problem.alpha, simulator=simulator)
    assert [r.level for r in runs] == ["amaranth", "cocotb/verilator", "cocotb/icarus"]
    for run in runs:
        with pytest.raises(AssertionError, match="differ from the reference"):
            assert_same_fields(problem.expected, run, problem.labels)


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_failing_cocotb_bench_fails_the_caller(tmp_path, simulator):
    """A bench that cannot even find its ports must surface as an error, not as an empty pass."""
    from hw.export import write_unit

    problem = build_problem(CASES[0]).head(2)
    p = CASES[0].params
    unit = write_unit(p, tmp_path)
    broken = dict(unit.manifest)
    broken["streams"] = {**unit.manifest["streams"], "in": {**unit.manifest["streams"]["in"], "name": "operands"}}
    unit.manifest_path.write_text(json.dumps(broken))
    job = stream_job(p, problem.weights, problem.acts, Traffic.full())
    with pytest.raises(AssertionError, match=r"(?s)the cocotb bench on .* failed.*no port 'operands__payload'"):
        run_cocotb(unit.manifest_path, [job], simulator=simulator, work_dir=tmp_path / "run")


def test_weight_code_table_is_what_the_rtl_does():
    """The manifest's code table (TernaryMacParams.WEIGHT_CODES) against the RTL, reserved code included."""
    from hw.export import manifest
    from hw.params import TernaryMacParams
    from hw.ternary_mac import TernaryMacEngine
    from .streams import StreamJob

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


def test_main_job_layer_on_rtl(tmp_path):
    """The README's main-job layer (6912×2560 on 64 lanes × 16 rows), one full token (17,289 cycles) on Verilator:
    RTL = model, bit for bit and cycle for cycle (about 20 s with the model's build, 5 s once it is cached)."""
    import torch

    from hw.params import TernaryMacParams
    from models import bitnet

    g = torch.Generator().manual_seed(0)
    w = torch.randn(6912, 2560, generator=g) * 0.02
    x = torch.randn(1, 2560, generator=g)
    [main] = bitnet.linear_view(w, x).passes
    p = TernaryMacParams(lanes=64, rows=16, max_k=2560)
    [run] = cocotb_level(p, main.weight_codes, main.act_codes, [Traffic.full()], work_dir=tmp_path)
    assert_same_fields({"acc": main.accumulate()}, run)
    assert run.cycles == sim_level(p, main.weight_codes, main.act_codes, Traffic.full()).cycles == p.cycles(6912, 2560)


@pytest.mark.parametrize("case", list(FIRST_CASE_PER_UNIT.values()), ids=lambda c: c.params.kind.value)
def test_results_identical_at_every_pipeline_depth(case):
    """Every register placement of the reduction trees (0 … depth stages) gives the same results, and the cycle
    model follows the latency each placement has."""
    from dataclasses import replace

    problem = build_problem(case).head(24)
    for stages in range(case.params.tree_depth + 1):
        p = replace(case.params, tree_stages=stages)
        [run] = amaranth_level(p, problem.weights, problem.acts, [Traffic.random(stages)], alpha=problem.alpha)
        assert_same_fields(problem.expected, run, problem.labels)
        assert run.cycles == sim_level(p, problem.weights, problem.acts, Traffic.random(stages), problem.alpha).cycles
