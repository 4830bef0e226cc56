"""The systolic-array model (sim/systolic.py): stepped = closed form, exact products, hand-derived cycles and events.

Hand figures use SCALE-Sim's per-fold formulas: OS ``R + C + T - 2`` (paper convention ``2R + C + T - 2``), WS/IS
``2R + C + T - 2``, folds ``ceil(Sr/R)·ceil(Sc/C)`` with (Sr, Sc, T) = OS (M, N, K), WS (K, N, M), IS (K, M, N).
"""

import numpy as np
import pytest

import sim.systolic as systolic
from hw.params import SystolicArrayParams
from sim.systolic import DIMENSION_MAP, EVENTS, dimension_map, gemm

DATAFLOWS = ("os", "ws", "is")


def P(rows, cols, dataflow, **kw):
    return SystolicArrayParams(rows, cols, dataflow, **kw)


# -- hand-derived cycle counts -------------------------------------------------------------------------------

# (R, C, dataflow, m, k, n, cycles, SCALE-Sim 3.0.0's reported compute cycles for the same run)
# The last column was measured with scalesim 3.0.0 (CALC mode, no stalls) through benchmarks/bench_scalesim.py's
# driver; it is one less than ours every time (SCALE-Sim prints the last cycle's index, its issues #60/#125).
HAND_CYCLES = [
    # OS 4×4, 4·4·4: 1 fold × (4 + 4 + 4 - 2) = 10 — the paper's Fig. 4 case of SCALE-Sim issue #125 (it prints 9)
    (4, 4, "os", 4, 4, 4, 10, 9),
    # OS 2×2, 2·2·2: 1 × (2 + 2 + 2 - 2) = 4 — issue #60's "4 on paper, SCALE-Sim gives 3"
    (2, 2, "os", 2, 2, 2, 4, 3),
    # OS 4×4, m=5 k=6 n=3: Sr=M=5 → 2 row folds, Sc=N=3 → 1; T=K=6: 2 × (6 + 4 + 4 - 2) = 24
    (4, 4, "os", 5, 6, 3, 24, 23),
    # OS 2×3, m=4 k=3 n=5: Sr=4 → 2, Sc=5 → 2, T=3: 4 × (3 + 2 + 3 - 2) = 24
    (2, 3, "os", 4, 3, 5, 24, 23),
    # WS 4×4, m=5 k=6 n=3: Sr=K=6 → 2, Sc=N=3 → 1, T=M=5: 2 × (2·4 + 4 + 5 - 2) = 30
    (4, 4, "ws", 5, 6, 3, 30, 29),
    # WS 2×3, m=4 k=3 n=5: Sr=3 → 2, Sc=5 → 2, T=4: 4 × (4 + 3 + 4 - 2) = 36
    (2, 3, "ws", 4, 3, 5, 36, 35),
    # IS 4×4, m=5 k=6 n=3: Sr=K=6 → 2, Sc=M=5 → 2, T=N=3: 4 × (8 + 4 + 3 - 2) = 52
    (4, 4, "is", 5, 6, 3, 52, 51),
    # IS 2×3, m=4 k=3 n=5: Sr=3 → 2, Sc=4 → 2, T=5: 4 × (4 + 3 + 5 - 2) = 40
    (2, 3, "is", 4, 3, 5, 40, 39),
]


@pytest.mark.parametrize("R, C, df, m, k, n, cycles, scalesim", HAND_CYCLES)
@pytest.mark.parametrize("stepped", [False, True])
def test_hand_cycles(R, C, df, m, k, n, cycles, scalesim, stepped):
    run = gemm(P(R, C, df), m, k, n, stepped=stepped)
    assert run.cycles == cycles
    assert run.scalesim_cycles == scalesim


def test_paper_convention_adds_r_drain_cycles_per_os_fold():
    # OS 4×4, 4·4·4 under the paper: 2·4 + 4 + 4 - 2 = 14; 5·6·3: 2 folds × (8 + 4 + 6 - 2) = 32
    for stepped in (False, True):
        assert gemm(P(4, 4, "os"), 4, 4, 4, convention="paper", stepped=stepped).cycles == 14
        # SCALE-Sim's own figure does not change with lowbit's convention: 10 - 1 = 14 - 1 fold × R - 1 = 9
        assert gemm(P(4, 4, "os"), 4, 4, 4, convention="paper", stepped=stepped).scalesim_cycles == 9
        assert gemm(P(4, 4, "os"), 5, 6, 3, convention="paper", stepped=stepped).scalesim_cycles == 23
        assert gemm(P(4, 4, "os"), 5, 6, 3, convention="paper", stepped=stepped).cycles == 32
        # SCALE-Sim's code leaves the last fold's R drain cycles out (reported as drain_tail); the paper has none
        assert gemm(P(4, 4, "os"), 5, 6, 3, stepped=stepped).drain_tail == 4
        assert gemm(P(4, 4, "os"), 5, 6, 3, convention="paper", stepped=stepped).drain_tail == 0
    for df in ("ws", "is"):
        assert gemm(P(4, 4, df), 5, 6, 3, convention="paper").cycles == gemm(P(4, 4, df), 5, 6, 3).cycles


def test_dimension_map_is_explicit():
    assert DIMENSION_MAP == {"os": ("m", "n", "k"), "ws": ("k", "n", "m"), "is": ("k", "m", "n")}
    assert dimension_map("os", 2, 3, 5) == (2, 5, 3)
    assert dimension_map("ws", 2, 3, 5) == (3, 5, 2)
    assert dimension_map("is", 2, 3, 5) == (3, 2, 5)
    run = gemm(P(2, 2, "is"), 2, 3, 5)
    assert (run.sr, run.sc, run.t, run.row_folds, run.col_folds, run.folds) == (3, 2, 5, 2, 1, 2)


# -- hand-derived event counts -------------------------------------------------------------------------------

@pytest.mark.parametrize("stepped", [False, True])
def test_hand_events_os(stepped):
    # OS 2×2, m=3 k=2 n=2: row folds over M = [2, 1], one column fold [2]; T = K = 2
    run = gemm(P(2, 2, "os"), 3, 2, 2, stepped=stepped)
    assert run.events() == {
        "macs": 12,                # 3·2·2
        "a_reg_writes": 12,        # 3×2 A elements, each latched by both PEs of its row (C = 2), 1 column fold
        "b_reg_writes": 16,        # 2×2 B elements × 2 PEs of their column (R = 2) × 2 row folds
        # an output in row i is written R - i times (copy into the chain + moves): fold 1 rows 0, 1 → 2 + 1 = 3,
        # fold 2 row 0 → 2; × 2 columns: (3 + 2)·2 = 10
        "psum_reg_writes": 10,
        "sram_a_reads": 6,         # each A element once per column fold
        "sram_b_reads": 8,         # each B element once per row fold: 4 × 2
        "sram_c_writes": 6,        # M·N
        "sram_c_reads": 0,
        "acc_reads": 18,           # every MAC reads its PE's accumulator (12), each output once more on leaving (6)
        "acc_writes": 12,          # every MAC writes the sum back
    }
    # 2 folds × (2 + 2 + 2 - 2) = 8 cycles; the last fold's outputs drain R = 2 cycles later
    assert (run.cycles, run.drain_tail) == (8, 2)


@pytest.mark.parametrize("stepped", [False, True])
@pytest.mark.parametrize("df", ["ws", "is"])
def test_hand_events_stationary(df, stepped):
    # WS 2×2, m=2 k=3 n=1: Sr=K=3 → row folds [2, 1], Sc=N=1 → [1], T=M=2.
    # IS on the transposed problem m=1 k=3 n=2 has the same Sr, Sc, T with A and B swapped.
    m, n = (2, 1) if df == "ws" else (1, 2)
    run = gemm(P(2, 2, df), m, 3, n, stepped=stepped)
    stationary = 4     # fold 1: row 0 written once, row 1 twice (it shifts through row 0) → 3; fold 2: row 0 → 1
    streamed = 12      # 2 × 3 streamed elements, each crossing both columns
    ev = run.events()
    assert ev["macs"] == 6
    assert (ev["a_reg_writes"], ev["b_reg_writes"]) == ((streamed, stationary) if df == "ws" else
                                                        (stationary, streamed))
    assert ev["psum_reg_writes"] == 8          # 2 row folds × 2 sums × 1 column × R = 2 rows
    assert (ev["sram_a_reads"], ev["sram_b_reads"]) == ((6, 3) if df == "ws" else (3, 6))
    assert ev["sram_c_writes"] == 4            # 2 row folds × 2 outputs
    assert ev["sram_c_reads"] == 2             # the second fold reads the first fold's 2 partial sums back
    assert ev["acc_reads"] == ev["acc_writes"] == 0     # no accumulator in the PEs: the sums move on
    assert run.cycles == 12                    # 2 folds × (2·2 + 2 + 2 - 2)


# -- stepped = fast, products exact -----------------------------------------------------------------------------

def _shapes(rng):
    """(R, C, m, k, n): smaller than the array, exact multiples, remainders, degenerate 1s."""
    out = [(4, 4, 2, 3, 1), (4, 4, 1, 1, 1), (1, 1, 3, 2, 4), (3, 2, 6, 4, 6), (2, 3, 6, 4, 6), (4, 2, 8, 8, 8),
           (3, 3, 9, 9, 9), (4, 3, 5, 7, 4), (5, 4, 11, 6, 9), (2, 5, 3, 13, 7)]
    for _ in range(14):
        R, C = (int(x) for x in rng.integers(1, 7, 2))
        m, k, n = (int(x) for x in rng.integers(1, 16, 3))
        out.append((R, C, m, k, n))
    return out


@pytest.mark.parametrize("df", DATAFLOWS)
@pytest.mark.parametrize("convention", ["scalesim", "paper"])
def test_stepped_equals_fast_and_product_exact(df, convention):
    rng = np.random.default_rng({"os": 1, "ws": 2, "is": 3}[df])
    for R, C, m, k, n in _shapes(rng):
        p = P(R, C, df)
        a = rng.integers(-128, 128, (m, k))
        b = rng.integers(-128, 128, (k, n))
        a.flat[0], b.flat[-1] = -128, -128        # the extreme codes must survive the array
        fast = gemm(p, m, k, n, convention=convention)
        step = gemm(p, m, k, n, stepped=True, a=a, b=b, convention=convention)
        shape = (R, C, m, k, n)
        assert step.cycles == fast.cycles, shape
        assert step.drain_tail == fast.drain_tail, shape
        assert step.events() == fast.events(), shape
        np.testing.assert_array_equal(step.product, a.astype(np.int64) @ b.astype(np.int64), err_msg=str(shape))
        assert fast.product is None and fast.stepped is False and step.stepped is True


def test_product_exact_at_wide_extremes():
    # 16-bit operands at -32768: every product is 2^30, k = 7 → each output is 7·2^30 = 7516192768 (beyond int32)
    p = P(3, 2, "ws", act_bits=16, weight_bits=16, acc_width=40)
    a = np.full((4, 7), -32768)
    b = np.full((7, 5), -32768)
    run = gemm(p, 4, 7, 5, stepped=True, a=a, b=b)
    assert (run.product == 7 * 2 ** 30).all()


# -- utilisation and mapping efficiency ----------------------------------------------------------------------------

@pytest.mark.parametrize("df", DATAFLOWS)
def test_utilisation_bounds(df):
    rng = np.random.default_rng(7)
    for R, C, m, k, n in _shapes(rng):
        run = gemm(P(R, C, df), m, k, n)
        # every fold lasts cycles_per_fold and keeps its mapped PEs busy for T cycles
        assert run.utilisation == pytest.approx(run.mapping_efficiency * run.t / run.cycles_per_fold, rel=1e-12)
        assert 0 < run.utilisation < run.mapping_efficiency <= 1 or (R == C == 1 and df == "os")


def test_utilisation_hand_values():
    # 1×1 OS: folds = m·n, each T + 1 + 1 - 2 = k cycles → the single PE is busy every cycle
    run = gemm(P(1, 1, "os"), 3, 5, 2)
    assert (run.cycles, run.utilisation, run.mapping_efficiency) == (30, 1.0, 1.0)
    # OS 4×4, m=5 k=6 n=3: folds map 4×3 and 1×3 PEs: efficiency (12 + 3) / (2 · 16) = 15/32;
    # utilisation = 5·6·3 MACs / (24 cycles · 16 PEs) = 90/384
    run = gemm(P(4, 4, "os"), 5, 6, 3)
    assert run.mapping_efficiency == 15 / 32
    assert run.utilisation == 90 / 384
    # WS 4×4 on exact multiples 8·8·8: efficiency 1, utilisation = 512 / (4 folds · (8+4+8-2 = 18) · 16) = 512/1152
    run = gemm(P(4, 4, "ws"), 8, 8, 8)
    assert (run.mapping_efficiency, run.utilisation) == (1.0, 512 / 1152)


# -- bad input ---------------------------------------------------------------------------------------------------

def test_bad_sizes_and_options():
    p = P(4, 4, "os")
    with pytest.raises(ValueError, match="m must be a positive integer, not 0"):
        gemm(p, 0, 4, 4)
    with pytest.raises(ValueError, match="n must be a positive integer, not -3"):
        gemm(p, 4, 4, -3)
    with pytest.raises(TypeError, match="k must be a positive integer, not 2.5"):
        gemm(p, 4, 2.5, 4)
    with pytest.raises(TypeError, match="m must be a positive integer, not True"):
        gemm(p, True, 4, 4)
    with pytest.raises(ValueError, match="convention must be one of 'scalesim', 'paper', not 'rtl'"):
        gemm(p, 4, 4, 4, convention="rtl")
    with pytest.raises(TypeError, match="params must be a SystolicArrayParams, not dict"):
        gemm({"rows": 4}, 4, 4, 4)
    with pytest.raises(TypeError, match="stepped must be a bool, not 1"):
        gemm(p, 4, 4, 4, stepped=1)
    with pytest.raises(ValueError, match="dataflow must be one of 'os', 'ws', 'is', not 'rs'"):
        dimension_map("rs", 1, 1, 1)


def test_bad_operands():
    p = P(4, 4, "ws")
    a, b = np.zeros((3, 5), np.int64), np.zeros((5, 2), np.int64)
    with pytest.raises(ValueError, match=r"a \(8-bit activations\) must have shape \(3, 5\), not \(5, 3\)"):
        gemm(p, 3, 5, 2, stepped=True, a=a.T, b=b)
    bad = b.copy()
    bad[4, 1] = 128
    with pytest.raises(ValueError, match=r"b \(8-bit weights\) holds 128 at \(4, 1\), outside the 8-bit range "
                                         r"\[-128, 127\]"):
        gemm(p, 3, 5, 2, stepped=True, a=a, b=bad)
    with pytest.raises(TypeError, match="a .* must be an integer array, not float64"):
        gemm(p, 3, 5, 2, stepped=True, a=a.astype(float), b=b)
    with pytest.raises(ValueError, match="only read by the stepped mode"):
        gemm(p, 3, 5, 2, a=a, b=b)
    with pytest.raises(ValueError, match="give both operands or neither"):
        gemm(p, 3, 5, 2, stepped=True, a=a)


def test_accumulator_width_bound():
    # 16-bit accumulator holds up to 32767; one 8×8-bit product reaches (-128)·(-128) = 16384:
    # k = 1 fits exactly, k = 2 (32768) is one beyond
    p = P(2, 2, "os", acc_width=16)
    assert gemm(p, 2, 1, 2).cycles == 1 * (1 + 2 + 2 - 2)
    with pytest.raises(ValueError, match="k=2 products of 8×8-bit operands can reach 32768, beyond the 16-bit"):
        gemm(p, 2, 2, 2)


def test_stepped_size_limit(monkeypatch):
    monkeypatch.setattr(systolic, "MAX_STEPPED_WORK", 100)
    # OS 4×4, 4·4·4: (10 cycles + 4 drain) × 16 PEs = 224 > 100
    with pytest.raises(ValueError, match="exceeds 100 PE-cycles; use the fast mode"):
        gemm(P(4, 4, "os"), 4, 4, 4, stepped=True)
    assert gemm(P(4, 4, "os"), 4, 4, 4).cycles == 10


def test_events_names():
    run = gemm(P(2, 2, "os"), 1, 1, 1)
    assert tuple(run.events()) == EVENTS


# -- the output-stationary accumulator, priced -----------------------------------------------------------------

@pytest.mark.parametrize("stepped", [False, True])
def test_os_accumulator_update_priced_by_hand(stepped):
    # Issue 9 item 8: an OS PE reads its acc_width-bit accumulator and writes the sum back on every MAC, and reads
    # it once more when the finished output is copied into the output chain (ZigZag's count of its per-PE output
    # register: reads to the MAC, writes from it, reads up to the next level). A tiny
    # GEMM on a 2×2 OS array, priced through the model simulator's event mapping at 45 nm, weights and activations
    # on chip (so no DRAM), against a figure derived here from the cited unit costs.
    from collections import Counter

    from hw.accelerator import Accelerator
    from models.workload import Op
    from sim.energy import price_events
    from sim.model import time_op
    from sim.tech import get_technology

    design = Accelerator.from_dict({
        "name": "os-2x2", "clock_mhz": 100,
        "engines": [{"unit": "systolic", "rows": 2, "cols": 2, "dataflow": "os"}],      # acc_width 32
        # 8 KiB buffers: Horowitz's table point, 10 pJ per 64-bit read → 10/64 = 0.15625 pJ per bit, writes alike
        "buffers": {name: {"size_bytes": 8192} for name in ("weights", "activations", "kv")},
        "dram": {"bandwidth_gbps": 1.0}, "vector": {"lanes": 2, "fp_bits": 16}})
    # [3 × 2]·[2 × 2] (the shape of test_hand_events_os): 12 MACs, row folds over M = [2, 1], one column fold
    op = Op("gemm", "matmul", "linear", "int8-mac", "prefill", m=3, k=2, n=2, a_bits=8, b_bits=8, acc_bits=32,
            weight=True)
    t = time_op(op, design, weights_on_chip=True, kv_on_chip=True)
    if stepped:      # the same events from the stepped array
        run = gemm(design.engines[0].params, 3, 2, 2, stepped=True)
        assert (run.acc_reads, run.acc_writes) == (18, 12)
    assert (t.events[("acc_read_bits",)], t.events[("acc_write_bits",)]) == (18 * 32, 12 * 32)
    e = price_events(Counter(t.events), get_technology("45nm"), design)
    by_event = {line.event: line.joules for line in e.lines}
    # Accumulator, 0.009 pJ per bit read or written (Aladdin register): reads (12 MACs + 6 outputs) × 32 bits =
    # 576 bits = 5.184 pJ; writes 12 × 32 = 384 bits = 3.456 pJ; 8.64 pJ in all.
    assert by_event["acc_read_bits"] == pytest.approx(5.184e-12, rel=1e-12)
    assert by_event["acc_write_bits"] == pytest.approx(3.456e-12, rel=1e-12)
    # Everything else, from the event counts of test_hand_events_os:
    # MACs: 12 × (8×8 multiply 0.2 pJ [Horowitz] + 32-bit add 0.1 pJ [Horowitz]) = 12 × 0.3 = 3.6 pJ
    # registers: A 12 × 8 bits + B 16 × 8 + output chain 10 × 32 = 96 + 128 + 320 = 544 bits × 0.009 = 4.896 pJ
    # SRAM reads: A 6 × 8 + B 8 × 8 = 112 bits; writes: C 6 × 32 = 192 bits; 304 bits × 0.15625 = 47.5 pJ
    arith = 3.6
    registers = 4.896 + 5.184 + 3.456
    sram = 47.5
    assert e.total("arith") == pytest.approx(arith * 1e-12, rel=1e-12)
    assert e.total("registers") == pytest.approx(registers * 1e-12, rel=1e-12)
    assert e.total("sram") == pytest.approx(sram * 1e-12, rel=1e-12)
    assert e.total() == pytest.approx((arith + registers + sram) * 1e-12, rel=1e-12)     # 64.636 pJ
    # the line says where its unit cost comes from
    line = next(line for line in e.lines if line.event == "acc_read_bits")
    assert "Aladdin" in line.source and line.category == "registers"


@pytest.mark.parametrize("df", ["ws", "is"])
def test_stationary_dataflows_have_no_accumulator_line(df):
    from hw.accelerator import Accelerator
    from models.workload import Op
    from sim.model import time_op

    design = Accelerator.from_dict({
        "name": "2x2", "clock_mhz": 100, "engines": [{"unit": "systolic", "rows": 2, "cols": 2, "dataflow": df}],
        "buffers": {name: {"size_bytes": 8192} for name in ("weights", "activations", "kv")},
        "dram": {"bandwidth_gbps": 1.0}, "vector": {"lanes": 2, "fp_bits": 16}})
    op = Op("gemm", "matmul", "linear", "int8-mac", "prefill", m=3, k=2, n=2, a_bits=8, b_bits=8, acc_bits=32,
            weight=True)
    t = time_op(op, design, weights_on_chip=True, kv_on_chip=True)
    assert t.events[("acc_read_bits",)] == t.events[("acc_write_bits",)] == 0
