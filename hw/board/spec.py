"""The boards ``lowbit board build`` targets: their FPGA, board clock, Amaranth platform and UART.

No Amaranth (or anything importing it) at module level: the CLI lists and checks boards without elaborating
hardware. :attr:`Board.part` and :meth:`Board.platform` import what they need when called.
"""

import importlib
from dataclasses import dataclass

__all__ = ["Board", "BOARDS", "board"]


@dataclass(frozen=True)
class Board:
    """One board: what the build flow and the PLL planner need to know about it."""

    name: str                        #: command-line name, e.g. "icebreaker"
    family: str                      #: FPGA family: "ice40" or "ecp5" (a key of :data:`hw.fpga.PARTS`)
    platform_class: str              #: amaranth-boards platform as "module:Class"
    clock_hz: int                    #: the board's oscillator (the platform's default clock)
    clock_resource: str              #: the platform resource of that oscillator
    uart: str                        #: the platform resource of the host UART (number 0)
    led: str                         #: the resource driven by the heartbeat (number 0)
    pnr_args: tuple[str, ...]        #: nextpnr device and package arguments
    bitstream_suffix: str            #: ".bin" (icepack) or ".bit" (ecppack)
    pack_args: tuple[str, ...]       #: extra packer arguments
    source: str                      #: where the facts above come from
    extra_resources: tuple[str, ...] = ()   #: platform attributes with resources added before the build

    @property
    def part(self):
        """The board's FPGA (:class:`hw.fpga.Part`): the resources a design is checked against."""
        from hw.fpga import PARTS     # here: hw.fpga imports Amaranth (through hw.engine)

        return PARTS[self.family]

    def platform(self):
        """A fresh instance of the board's amaranth-boards platform."""
        module, cls = self.platform_class.split(":")
        return getattr(importlib.import_module(module), cls)()

    def to_dict(self) -> dict:
        """JSON-able summary (the part by name)."""
        return {"name": self.name, "family": self.family, "platform": self.platform_class,
                "clock_hz": self.clock_hz, "uart": self.uart, "part": self.part.name}


BOARDS = {
    # 1BitSquared iCEBreaker v1.0: iCE40UP5K-SG48, 12 MHz oscillator on pin 35 (a PLL-capable global input), FTDI
    # FT2232H channel B as the UART on pins 6 (rx) and 9 (tx), LEDs 0-1 on the board and 2-6 on the break-off
    # PMOD section (attached as shipped; on PMOD2) (amaranth-boards icebreaker.py).
    "icebreaker": Board(
        name="icebreaker", family="ice40", platform_class="amaranth_boards.icebreaker:ICEBreakerPlatform",
        clock_hz=12_000_000, clock_resource="clk12", uart="uart", led="led",
        pnr_args=("--up5k", "--package", "sg48"), bitstream_suffix=".bin", pack_args=(),
        source="amaranth-boards 0.0.21 icebreaker.py (iCE40UP5K SG48, clk12 on pin 35, uart rx 6 / tx 9)",
        extra_resources=("break_off_pmod",)),
    # Radiona ULX3S with the LFE5U-85F: 25 MHz oscillator on G2, FTDI FT231X UART on M1 (rx) / L4 (tx), 8 LEDs;
    # the platform packs with --compress (amaranth-boards ulx3s.py), and so does this flow.
    "ulx3s-85f": Board(
        name="ulx3s-85f", family="ecp5", platform_class="amaranth_boards.ulx3s:ULX3S_85F_Platform",
        clock_hz=25_000_000, clock_resource="clk25", uart="uart", led="led",
        pnr_args=("--85k", "--package", "CABGA381", "--speed", "6"), bitstream_suffix=".bit",
        pack_args=("--compress",),
        source="amaranth-boards 0.0.21 ulx3s.py (LFE5U-85F BG381 speed 6, clk25 on G2, uart rx M1 / tx L4)"),
}


def board(name) -> Board:
    """The board called ``name``; ``ValueError`` naming it and the known boards if there is none."""
    try:
        return BOARDS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown board {name!r}; known boards: {', '.join(BOARDS)}") from None
