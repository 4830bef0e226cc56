"""PLL settings for a board's clocks, and the gateware that makes the clock domains from them.

:func:`plan_clocks` finds the settings of the board FPGA's PLL that make the ``sync`` clock (within a tolerance,
0.5 % by default) and, when ``mem_ratio > 1``, a ``mem`` clock at exactly ``mem_ratio`` × ``sync`` with rising
edges aligned: both come from the same VCO through integer-related output dividers at zero phase, so every
``sync`` edge is also a ``mem`` edge and the paths between the domains are ordinary synchronous paths. The search
is pure Python (no Amaranth, no tools); :class:`ClockGen` is the Amaranth elaboratable that instantiates the PLL, and
its ``add_domains`` defines the domains in the parent module, with reset held until the PLL has locked.

**iCE40 UltraPlus** (Lattice TN1251, iCE40 sysCLOCK PLL design and usage guide; the relations are those of
icestorm's ``icepll`` for the SIMPLE feedback path): ``f_PFD = f_in / (DIVR + 1)``, ``f_VCO = f_PFD × (DIVF + 1)``,
``f_out = f_VCO / 2^DIVQ`` with DIVR 0..15, DIVF 0..127, DIVQ 1..6, f_PFD 10–133 MHz, f_VCO 533–1066 MHz,
f_out 16–275 MHz; FILTER_RANGE follows f_PFD. One output: ``SB_PLL40_PAD`` (GENCLK). Two: ``SB_PLL40_2F_PAD``
with port A the GENCLK (``mem``) and port B GENCLK_HALF (``sync``), so the iCE40 makes ``mem_ratio`` 2 only.
Both take the clock straight from the package pin (iCEBreaker's 12 MHz input on pin 35 is the PLL's pad).

**ECP5** (``EHXPLLL``; Lattice FPGA-TN-02200 ECP5 sysCLOCK guide, relations as prjtrellis' ``ecppll``), feedback
from CLKOP: ``f_PFD = f_in / CLKI_DIV``, ``f_CLKOP = f_PFD × CLKFB_DIV``, ``f_VCO = f_CLKOP × CLKOP_DIV``,
``f_CLKOS = f_VCO / CLKOS_DIV``, with CLKI_DIV 1..128, CLKFB_DIV 1..80, CLKOP/CLKOS_DIV 1..128, f_PFD ≥ 3.125 MHz,
f_VCO 400–800 MHz, outputs 3.125–400 MHz (FPGA-DS-02012's sysCLOCK PLL table). CLKOP is the fastest clock
(``mem`` when there is one, else ``sync``) and CLKOS with CLKOS_DIV = CLKOP_DIV × ``mem_ratio`` gives ``sync``; each
output's coarse phase (CPHASE) is DIV − 1 VCO cycles, the 0° setting Lattice's tools (and LiteX) use, so the
outputs' rising edges coincide.

Among the settings that make the frequency best, ties go to the VCO nearest the middle of its range (ECP5: 600 MHz,
as ``ecppll``) and then to the first in divider order (smallest input divider, i.e. the highest PFD).
"""

from dataclasses import asdict, dataclass, field
from fractions import Fraction

from .spec import Board, board as _board

__all__ = ["ClockPlan", "ClockGen", "plan_clocks", "reachable_range", "DEFAULT_TOLERANCE"]

#: Largest relative error of the ``sync`` clock accepted by default.
DEFAULT_TOLERANCE = 0.005

_MHZ = 1_000_000

# iCE40 sysCLOCK PLL limits (TN1251; icepll uses the same, and notes DIVF reaches 127 in SIMPLE feedback).
_ICE40 = {"in": (10 * _MHZ, 133 * _MHZ), "pfd": (10 * _MHZ, 133 * _MHZ), "vco": (533 * _MHZ, 1066 * _MHZ),
          "out": (16 * _MHZ, 275 * _MHZ), "divr": 15, "divf": 127, "divq": (1, 6)}
# ECP5 EHXPLLL limits (FPGA-TN-02200 / FPGA-DS-02012; ecppll's PFD/VCO bounds).
_ECP5 = {"pfd": (Fraction(3125, 1000) * _MHZ, 400 * _MHZ), "vco": (400 * _MHZ, 800 * _MHZ),
         "out": (Fraction(3125, 1000) * _MHZ, 400 * _MHZ), "clki": 128, "clkfb": 80, "clko": 128}


@dataclass(frozen=True)
class ClockPlan:
    """How a board makes its ``sync`` (and ``mem``) clock: the PLL primitive and its parameters, or no PLL.

    Frequencies are in Hz; ``sync_hz``/``mem_hz`` are what the settings achieve, ``requested_sync_hz`` what was
    asked. ``params`` are the primitive's Verilog parameters exactly as :class:`ClockGen` instantiates them."""

    board: str
    family: str
    input_hz: float
    requested_sync_hz: float
    sync_hz: float
    mem_ratio: int
    mem_hz: float | None               #: None when ``mem_ratio`` is 1 (the ``mem`` domain is then ``sync``)
    primitive: str | None              #: "SB_PLL40_PAD", "SB_PLL40_2F_PAD", "EHXPLLL", or None (no PLL)
    params: dict = field(default_factory=dict, hash=False)
    pfd_hz: float | None = None
    vco_hz: float | None = None

    @property
    def uses_pll(self) -> bool:
        return self.primitive is not None

    @property
    def clocks(self) -> dict[str, float]:
        """Achieved frequency per domain: ``{"sync": ..., "mem": ...}`` (``mem`` only with ``mem_ratio`` > 1)."""
        return {"sync": self.sync_hz, **({"mem": self.mem_hz} if self.mem_hz is not None else {})}

    @property
    def error(self) -> float:
        """Relative error of the achieved ``sync`` frequency."""
        return (self.sync_hz - self.requested_sync_hz) / self.requested_sync_hz

    def to_dict(self) -> dict:
        """JSON-able form (frequencies in Hz, plus the relative error)."""
        return {**asdict(self), "params": dict(self.params), "error": self.error}


# -- search -------------------------------------------------------------------------------------------------

def _ice40_filter_range(pfd) -> int:
    # The loop filter setting for the PFD frequency, by the thresholds icepll uses (TN1251's table).
    for bound, value in ((17, 1), (26, 2), (44, 3), (66, 4), (101, 5)):
        if pfd < bound * _MHZ:
            return value
    return 6


def _ice40_settings(fin: int, ratio: int):
    """Every SIMPLE-feedback setting: ``(sync, mem, pfd, vco, divr, divf, divq)``, in divider order."""
    lim = _ICE40
    if not lim["in"][0] <= fin <= lim["in"][1]:
        return
    for divr in range(lim["divr"] + 1):
        pfd = Fraction(fin, divr + 1)
        if not lim["pfd"][0] <= pfd <= lim["pfd"][1]:
            continue
        for divf in range(lim["divf"] + 1):
            vco = pfd * (divf + 1)
            if not lim["vco"][0] <= vco <= lim["vco"][1]:
                continue
            for divq in range(lim["divq"][0], lim["divq"][1] + 1):
                out = vco / 2 ** divq          # GENCLK: mem when there are two clocks, else sync
                if not lim["out"][0] <= out <= lim["out"][1]:
                    continue
                yield (out / ratio, out if ratio > 1 else None, pfd, vco, divr, divf, divq)


def _ecp5_settings(fin: int, ratio: int):
    """Per (CLKI_DIV, CLKFB_DIV), the CLKOP_DIV with the VCO nearest 600 MHz:
    ``(sync, mem, pfd, vco, clki, clkfb, clkop)``, in divider order."""
    lim = _ECP5
    for clki in range(1, lim["clki"] + 1):
        pfd = Fraction(fin, clki)
        if pfd < lim["pfd"][0]:
            break                              # larger dividers only lower it
        if pfd > lim["pfd"][1]:
            continue
        for clkfb in range(1, lim["clkfb"] + 1):
            op = pfd * clkfb                   # CLKOP: mem when there are two clocks, else sync
            if not lim["out"][0] <= op <= lim["out"][1]:
                continue
            # CLKOP_DIV keeps the VCO in range; CLKOS_DIV = CLKOP_DIV × ratio must fit its 7 bits too.
            lo = -(-lim["vco"][0] // op)
            hi = min(lim["vco"][1] // op, lim["clko"] // ratio)
            if lo > hi:
                continue
            sync = op / ratio
            if not lim["out"][0] <= sync <= lim["out"][1]:
                continue
            best = min(range(int(lo), int(hi) + 1), key=lambda d: (abs(op * d - 600 * _MHZ), d))
            yield (sync, op if ratio > 1 else None, pfd, op * best, clki, clkfb, best)


def _settings(family: str, fin: int, ratio: int):
    return _ice40_settings(fin, ratio) if family == "ice40" else _ecp5_settings(fin, ratio)


def _vco_mid(family: str):
    lo, hi = (_ICE40 if family == "ice40" else _ECP5)["vco"]
    return 600 * _MHZ if family == "ecp5" else Fraction(lo + hi, 2)


def reachable_range(board_or_name, mem_ratio: int = 1) -> tuple[float, float]:
    """Lowest and highest ``sync`` frequency (Hz) the board's PLL makes with ``mem_ratio``; the set between is
    discrete (see :func:`plan_clocks`). ``ValueError`` if the PLL cannot make that ratio at all."""
    b = board_or_name if isinstance(board_or_name, Board) else _board(board_or_name)
    _check_ratio(b, mem_ratio)
    syncs = [s[0] for s in _settings(b.family, b.clock_hz, mem_ratio)]
    if not syncs:
        raise ValueError(f"the {b.name}'s PLL cannot make a mem clock at {mem_ratio} × sync")
    return float(min(syncs)), float(max(syncs))


def _check_ratio(b: Board, mem_ratio) -> None:
    if isinstance(mem_ratio, bool) or not isinstance(mem_ratio, int) or mem_ratio < 1:
        raise ValueError(f"mem_ratio must be a positive integer, not {mem_ratio!r}")
    if b.family == "ice40" and mem_ratio > 2:
        raise ValueError(f"the {b.name}'s iCE40 PLL makes a second clock only at half its first (SB_PLL40_2F_PAD "
                         f"GENCLK_HALF): mem_ratio must be 1 or 2, not {mem_ratio}")


def _mhz(hz) -> str:
    return f"{float(hz) / _MHZ:.6g} MHz"


def plan_clocks(board, sync_hz=None, mem_ratio: int = 1, *, tolerance: float = DEFAULT_TOLERANCE) -> ClockPlan:
    """PLL settings for ``board`` (a :class:`~hw.board.spec.Board` or its name) that make a ``sync`` clock within
    ``tolerance`` (relative) of ``sync_hz`` (default: the board clock) and, for ``mem_ratio`` > 1, a ``mem`` clock
    at exactly ``mem_ratio`` × the achieved ``sync``, edge-aligned with it.

    With ``mem_ratio`` 1 and ``sync_hz`` within ``tolerance`` of the board clock no PLL is used. Of the settings that
    come nearest, the one with the VCO nearest mid-range wins, then the first in divider order.

    Raises ``ValueError`` for an unknown board, a bad frequency, ratio or tolerance, a ratio the PLL cannot make
    (the iCE40 makes 1 or 2) and a frequency no setting reaches within ``tolerance`` (naming the frequency, the
    nearest the PLL makes and its range)."""
    b = board if isinstance(board, Board) else _board(board)
    fin = b.clock_hz
    if sync_hz is None:
        sync_hz = fin
    if isinstance(sync_hz, bool) or not isinstance(sync_hz, (int, float)) or not sync_hz > 0 \
            or sync_hz == float("inf"):
        raise ValueError(f"sync_hz must be a positive frequency in Hz, not {sync_hz!r}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance <= 0.1:
        raise ValueError(f"tolerance must be a relative error between 0 and 0.1, not {tolerance!r}")
    _check_ratio(b, mem_ratio)
    target = Fraction(sync_hz)
    if mem_ratio == 1 and abs(target - fin) <= tolerance * target:
        return ClockPlan(b.name, b.family, fin, float(sync_hz), float(fin), 1, None, None)

    mid = _vco_mid(b.family)
    best, best_key, lo, hi = None, None, None, None
    for s in _settings(b.family, fin, mem_ratio):
        sync = s[0]
        lo = sync if lo is None or sync < lo else lo
        hi = sync if hi is None or sync > hi else hi
        key = (abs(sync - target), abs(s[3] - mid))
        if best_key is None or key < best_key:       # strict: the first in divider order keeps a tie
            best, best_key = s, key
    what = f"a {_mhz(target)} sync clock" + (f" with mem at {mem_ratio} × sync" if mem_ratio > 1 else "")
    if best is None:
        raise ValueError(f"the {b.name}'s PLL cannot make {what} from its {_mhz(fin)} clock at all")
    if best_key[0] > tolerance * target:
        raise ValueError(f"no PLL setting of the {b.name} makes {what} from its {_mhz(fin)} clock within "
                         f"{tolerance:.2%}: the nearest is {_mhz(best[0])}; the PLL reaches {_mhz(lo)} to "
                         f"{_mhz(hi)} in discrete steps" + ("" if mem_ratio > 1 else f", or {_mhz(fin)} without it"))
    sync, mem, pfd, vco = best[:4]
    if b.family == "ice40":
        divr, divf, divq = best[4:]
        params = {"FEEDBACK_PATH": "SIMPLE", "DIVR": divr, "DIVF": divf, "DIVQ": divq,
                  "FILTER_RANGE": _ice40_filter_range(pfd)}
        if mem_ratio == 1:
            primitive = "SB_PLL40_PAD"
            params["PLLOUT_SELECT"] = "GENCLK"
        else:
            primitive = "SB_PLL40_2F_PAD"
            params.update(PLLOUT_SELECT_PORTA="GENCLK", PLLOUT_SELECT_PORTB="GENCLK_HALF")
    else:
        clki, clkfb, clkop = best[4:]
        primitive = "EHXPLLL"
        params = {"CLKI_DIV": clki, "CLKFB_DIV": clkfb, "FEEDBK_PATH": "CLKOP",
                  "CLKOP_ENABLE": "ENABLED", "CLKOP_DIV": clkop, "CLKOP_CPHASE": clkop - 1, "CLKOP_FPHASE": 0}
        if mem_ratio > 1:
            clkos = clkop * mem_ratio
            params.update(CLKOS_ENABLE="ENABLED", CLKOS_DIV=clkos, CLKOS_CPHASE=clkos - 1, CLKOS_FPHASE=0)
    return ClockPlan(b.name, b.family, fin, float(sync_hz), float(sync), mem_ratio,
                     None if mem is None else float(mem), primitive, params, float(pfd), float(vco))


# -- gateware -----------------------------------------------------------------------------------------------

#: Cycles of the new ``sync`` clock that reset is held after lock (and after configuration without a PLL): iCE40
#: block RAM reads as zero for about 3 µs after configuration, Amaranth's own iCE40 reset waits 15 µs, so do we.
POR_SECONDS = 15e-6


def _make_clockgen():
    from amaranth.hdl import ClockDomain, ClockSignal, Const, Elaboratable, Instance, Module, ResetSignal, Signal
    from amaranth.lib import io
    from amaranth.lib.cdc import FFSynchronizer

    class ClockGen(Elaboratable):
        """The Amaranth elaboratable that makes ``plan``'s clocks: it requests the board clock from the platform
        and instantiates the PLL (none for a plan without one). :meth:`add_domains` defines ``ClockDomain("sync")``
        and, for ``mem_ratio`` > 1, ``ClockDomain("mem")`` on its outputs in the module that instantiates it (Amaranth
        0.6 will not let a domain defined in a submodule reach its parent). Both resets are held until the PLL has
        locked and then for :data:`POR_SECONDS` of ``sync`` cycles, and released together on a ``sync`` edge (a
        ``mem`` edge too).

        The class is made on first use (``hw.board.pll.ClockGen`` is resolved lazily), so that importing this
        module does not import Amaranth."""

        def __init__(self, plan: ClockPlan):
            if not isinstance(plan, ClockPlan):
                raise TypeError(f"ClockGen needs a ClockPlan, not {plan!r}")
            self.plan = plan
            #: High once the PLL reports lock (always, without one); asynchronous to every domain.
            self.locked = Signal()
            #: The clocks (``mem_clk`` is driven only for ``mem_ratio`` > 1) and their common reset.
            self.sync_clk, self.mem_clk = Signal(name="sync_clk"), Signal(name="mem_clk")
            self.rst = Signal(init=1, name="rst")

        def add_domains(self, m) -> None:
            """Define the ``sync`` (and ``mem``) domain in the module ``m`` (which has this as a submodule)."""
            m.domains.sync = ClockDomain("sync")
            m.d.comb += [ClockSignal("sync").eq(self.sync_clk), ResetSignal("sync").eq(self.rst)]
            if self.plan.mem_ratio > 1:
                m.domains.mem = ClockDomain("mem")
                m.d.comb += [ClockSignal("mem").eq(self.mem_clk), ResetSignal("mem").eq(self.rst)]

        def elaborate(self, platform):
            """The PLL, the reset timer and the domains; ``platform`` must have the plan's board clock resource."""
            if platform is None:
                raise ValueError("ClockGen needs the board's platform (it requests the board clock)")
            plan, m = self.plan, Module()
            b = _board(plan.board)
            pin = platform.request(b.clock_resource, 0, dir="-")
            sync_clk, mem_clk = self.sync_clk, self.mem_clk
            if not plan.uses_pll:
                m.submodules.clk_buf = buf = io.Buffer("i", pin)
                m.d.comb += [sync_clk.eq(buf.i), self.locked.eq(1)]
            elif plan.family == "ice40":
                # The PAD variants take the clock straight from the package pin, without an input buffer.
                ports = {"i_PACKAGEPIN": pin.io, "i_RESETB": Const(1), "i_BYPASS": Const(0), "o_LOCK": self.locked}
                if plan.mem_ratio == 1:
                    ports["o_PLLOUTGLOBAL"] = sync_clk
                else:
                    ports.update(o_PLLOUTGLOBALA=mem_clk, o_PLLOUTGLOBALB=sync_clk)
                m.submodules.pll = Instance(plan.primitive, **{f"p_{k}": v for k, v in plan.params.items()},
                                            **ports)
            else:
                m.submodules.clk_buf = buf = io.Buffer("i", pin)
                fast = mem_clk if plan.mem_ratio > 1 else sync_clk
                ports = {"i_CLKI": buf.i, "i_CLKFB": fast, "o_CLKOP": fast, "o_LOCK": self.locked,
                         "i_RST": Const(0), "i_STDBY": Const(0), "i_PHASESEL0": Const(0), "i_PHASESEL1": Const(0),
                         "i_PHASEDIR": Const(0), "i_PHASESTEP": Const(0), "i_PHASELOADREG": Const(0),
                         "i_PLLWAKESYNC": Const(0), "i_ENCLKOP": Const(0)}
                if plan.mem_ratio > 1:
                    ports["o_CLKOS"] = sync_clk
                fixed = {"PLLRST_ENA": "DISABLED", "INTFB_WAKE": "DISABLED", "STDBY_ENABLE": "DISABLED",
                         "DPHASE_SOURCE": "DISABLED", "OUTDIVIDER_MUXA": "DIVA", "OUTDIVIDER_MUXB": "DIVB"}
                # Loop-filter settings every open-source EHXPLLL flow uses (ecppll, LiteX), and the frequencies
                # for the vendor tools' reports; nextpnr derives the outputs' constraints from the dividers.
                attrs = {"ICP_CURRENT": "12", "LPF_RESISTOR": "8", "MFG_ENABLE_FILTEROPAMP": "1",
                         "MFG_GMCREF_SEL": "2", "FREQUENCY_PIN_CLKI": f"{plan.input_hz / _MHZ:g}",
                         "FREQUENCY_PIN_CLKOP": f"{(plan.mem_hz or plan.sync_hz) / _MHZ:g}"}
                if plan.mem_ratio > 1:
                    attrs["FREQUENCY_PIN_CLKOS"] = f"{plan.sync_hz / _MHZ:g}"
                m.submodules.pll = Instance(plan.primitive, **{f"a_{k}": v for k, v in attrs.items()},
                                            **{f"p_{k}": v for k, v in {**fixed, **plan.params}.items()}, **ports)

            # Reset: LOCK is asynchronous to the new clock, so it is synchronised first; the timer counts in a
            # domain of its own without reset (nothing resets it but the lock going away).
            m.domains.por = ClockDomain("por", reset_less=True, local=True)
            m.d.comb += ClockSignal("por").eq(sync_clk)
            locked = Signal()
            m.submodules.lock_sync = FFSynchronizer(self.locked, locked, o_domain="por")
            delay = max(1, int(POR_SECONDS * plan.sync_hz))
            timer = Signal(range(delay + 1))
            ready = Signal()
            with m.If(~locked):
                m.d.por += [timer.eq(0), ready.eq(0)]
            with m.Elif(timer == delay):
                m.d.por += ready.eq(1)
            with m.Else():
                m.d.por += timer.eq(timer + 1)

            m.d.comb += self.rst.eq(~ready)
            return m

    return ClockGen


_LAZY = {}


def __getattr__(name):
    # ClockGen subclasses Amaranth's Elaboratable (Amaranth elaborates nothing else): made on first access.
    if name == "ClockGen":
        if name not in _LAZY:
            _LAZY[name] = _make_clockgen()
        return _LAZY[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
