"""The board's design: the accelerator of :mod:`hw.accel`, its DRAM kept on chip, and the host link (UART and
link engine) that loads programs and data, runs them and reads results back.

Everything the accelerator computes is the accelerator's alone: the link only writes memories while it is not
running, pulses ``run`` and reads ``cycles``; so a program's cycles on the board are the simulator's exactly
(``rtl_tests/test_board.py``), and what the host sees on top of them is the link's time (:mod:`hw.board.protocol`).
"""

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out, connect

from hw.accel.dram import LocalDram
from hw.accel.plan import AccelPlan
from hw.accel.top import WORD_BITS, Accelerator

from .link import LinkEngine
from .protocol import link_spaces
from .uart import UartRx, UartTx

__all__ = ["BoardTop", "MODULE", "board_ram_phases"]

MODULE = "lowbit_board"


class BoardTop(wiring.Component):
    """``plan``'s accelerator with ``dram_bytes`` of on-chip DRAM behind a UART at ``divisor`` cycles a bit.
    Ports: ``uart_rx`` / ``uart_tx`` (the line, idle high), and ``running`` / ``finished`` / ``error`` /
    ``refused`` for LEDs. ``ram_form="pumped"`` builds the buffers in block-RAM form, clocked by a ``mem`` domain
    at :attr:`ram_phases` times the system clock (the board's PLL makes it). ``faults`` plants bugs of
    :attr:`Accelerator.FAULTS` or :attr:`LinkEngine.FAULTS`."""

    module_name = MODULE

    def __init__(self, plan: AccelPlan, *, dram_bytes: int, divisor: int, ram_form: str = "behavioral",
                 dram_form: str | None = None, faults=()):
        self.plan, self.divisor = plan, divisor
        known = set(Accelerator.FAULTS) | set(LinkEngine.FAULTS)
        if set(faults) - known:
            raise ValueError(f"unknown fault(s) {sorted(set(faults) - known)}; known: {', '.join(sorted(known))}")
        self.acc = Accelerator(plan, faults=set(faults) & set(Accelerator.FAULTS), ram_form=ram_form)
        # the DRAM in block RAM wherever the buffers are; the benches' combinational DRAM otherwise
        self.dram = LocalDram(plan, dram_bytes, form=dram_form or ("comb" if ram_form == "behavioral" else ram_form))
        #: the link's memory map (the host driver's too)
        self.spaces = link_spaces(plan, self.dram.size_bytes)
        self.rx, self.tx = UartRx(divisor), UartTx(divisor)
        self.link = LinkEngine(self.spaces, imem_data_bits=WORD_BITS, host_line_bits=self.acc.line_bits,
                               host_addr_bits=len(self.acc.host_line), dram_addr_bits=len(self.dram.host_line),
                               imem_addr_bits=len(self.acc.imem_addr),
                               faults=set(faults) & set(LinkEngine.FAULTS))
        super().__init__({"uart_rx": In(1, init=1), "uart_tx": Out(1, init=1), "running": Out(1),
                          "finished": Out(1), "error": Out(1), "refused": Out(1)})

    @classmethod
    def of(cls, board_design, *, divisor: int | None = None, ram_form: str | None = None, faults=()):
        """The top of a :class:`hw.board.designs.BoardDesign`; ``divisor`` defaults to its baud rate's (a
        simulation passes a small one), ``ram_form`` to its own."""
        form = ram_form or board_design.ram_form
        return cls(board_design.plan(), dram_bytes=board_design.dram_bytes,
                   divisor=divisor or board_design.divisor, ram_form=form,
                   dram_form=form, faults=faults)

    @property
    def ram_phases(self) -> int:
        """The ``mem`` clock's multiple of the system clock: the most any pumped RAM needs (buffers, DRAM), else 1.
        A pumped RAM works with any multiple at least its own (its memory cycles after the last writer's idle)."""
        phases = [self.acc.ram_phases] if self.acc.ram_form == "pumped" else []
        if self.dram.form == "pumped":
            phases += [shape.phases for shape in self.dram.ram_shapes]
        return max(phases, default=1)

    @property
    def verilog_modules(self) -> dict[str, str]:
        return {**self.acc.verilog_modules, **self.dram.verilog_modules}

    def silence(self) -> "BoardTop":
        """Mark this top and its parts as deliberately never elaborated (a top built only to ask it something, or
        refused before its build): no "created but never used" warning for them."""
        for e in (self, self.acc, *self.acc.buffer_memories, self.dram, self.dram._mem, self.rx, self.tx, self.link):
            e._MustUse__silence = True
        return self

    def elaborate(self, platform):
        m = Module()
        m.submodules.acc = acc = self.acc
        m.submodules.dram = dram = self.dram
        m.submodules.rx = rx = self.rx
        m.submodules.tx = tx = self.tx
        m.submodules.link = link = self.link
        m.d.comb += [rx.rx.eq(self.uart_rx), self.uart_tx.eq(tx.tx)]
        connect(m, rx.data, link.rx)
        connect(m, link.tx, tx.data)

        connect(m, acc.dram_rreq, dram.rreq)
        connect(m, acc.dram_rdata, dram.rdata)
        connect(m, acc.dram_wreq, dram.wreq)
        connect(m, acc.dram_wack, dram.wack)
        for name in ("run", "imem_we", "imem_addr", "imem_data", "host_buf", "host_en", "host_we", "host_line",
                     "host_wdata"):
            m.d.comb += getattr(acc, name).eq(getattr(link, name))
        for name in ("running", "finished", "error", "cycles", "host_rdata"):
            m.d.comb += getattr(link, name).eq(getattr(acc, name))
        m.d.comb += [dram.host_en.eq(link.dram_en & ~acc.running), dram.host_we.eq(link.dram_we),
                     dram.host_line.eq(link.dram_line), dram.host_wdata.eq(link.dram_wdata),
                     link.dram_rdata.eq(dram.host_rdata)]
        m.d.comb += [self.running.eq(acc.running), self.finished.eq(acc.finished), self.error.eq(acc.error),
                     self.refused.eq(link.refused)]
        return m


def board_ram_phases(board_design) -> int:
    """:attr:`BoardTop.ram_phases` of a board design's top, without elaborating it (to plan its clocks first)."""
    return BoardTop.of(board_design).silence().ram_phases
