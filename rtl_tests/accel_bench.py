"""The accelerator's simulation top: the generated :class:`hw.accel.top.Accelerator` and, around it, the bench's
DRAM model — serving exactly the description's latency, or stalling at random.

The DRAM model is :class:`hw.accel.dram.LocalDram` (the boards' on-chip DRAM too): the description's latency,
one request a cycle. With ``dead`` high it takes none (a board without DRAM). With ``stall`` high, a 16-bit LFSR
(seeded by ``seed`` at ``run``) refuses read and write requests on random cycles (about one in four each) — more
cycles, never other data. The host loads and reads DRAM a line at a time through ``dram_*`` ports.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out, connect

from hw.accel.dram import LocalDram
from hw.accel.plan import AccelPlan
from hw.accel.top import WORD_BITS, Accelerator

__all__ = ["AccelBench"]


class AccelBench(wiring.Component):
    module_name = "accel_bench"

    def __init__(self, plan: AccelPlan, dram_bytes: int, *, faults=(), ram_form: str = "behavioral"):
        self.plan = plan
        self.acc = Accelerator(plan, faults=faults, ram_form=ram_form)
        self._dram = LocalDram(plan, dram_bytes)
        self.dram_line_bytes, self.dram_lines = self._dram.line_bytes, self._dram.lines
        N = plan.imem_depth
        super().__init__({
            "run": In(1), "running": Out(1), "finished": Out(1), "cycles": Out(32), "error": Out(1),
            "imem_we": In(1), "imem_addr": In(range(N)), "imem_data": In(WORD_BITS),
            "host_buf": In(2), "host_en": In(1), "host_we": In(1), "host_line": In(len(self.acc.host_line)),
            "host_wdata": In(self.acc.line_bits), "host_rdata": Out(self.acc.line_bits),
            "dram_en": In(1), "dram_we": In(1), "dram_line": In(max(1, self.dram_lines.bit_length())),
            "dram_wdata": In(8 * self.dram_line_bytes), "dram_rdata": Out(8 * self.dram_line_bytes),
            "stall": In(1), "seed": In(16), "dead": In(1),
        })

    @property
    def verilog_modules(self) -> dict[str, str]:
        return {**self.acc.verilog_modules, **self._dram.verilog_modules}

    def elaborate(self, platform):
        m = Module()
        m.submodules.acc = acc = self.acc
        for name in ("run", "imem_we", "imem_addr", "imem_data", "host_buf", "host_en", "host_we", "host_line",
                     "host_wdata"):
            m.d.comb += getattr(acc, name).eq(getattr(self, name))
        for name in ("running", "finished", "cycles", "error", "host_rdata"):
            m.d.comb += getattr(self, name).eq(getattr(acc, name))

        dram = self._dram
        m.submodules.dram = dram
        m.d.comb += [dram.host_en.eq(self.dram_en & ~acc.running), dram.host_we.eq(self.dram_we),
                     dram.host_line.eq(self.dram_line), dram.host_wdata.eq(self.dram_wdata),
                     self.dram_rdata.eq(dram.host_rdata)]
        connect(m, acc.dram_rreq, dram.rreq)
        connect(m, acc.dram_rdata, dram.rdata)
        connect(m, acc.dram_wreq, dram.wreq)
        connect(m, acc.dram_wack, dram.wack)

        # random refusals
        lfsr = Signal(16, init=1)
        with m.If(self.run):
            m.d.sync += lfsr.eq(self.seed | 1)
        with m.Else():
            m.d.sync += lfsr.eq(Mux(lfsr[0], (lfsr >> 1) ^ 0xB400, lfsr >> 1))
        # `dead`: a DRAM that never takes a request (what a board without DRAM is to a program that needs none)
        m.d.comb += [dram.refuse_r.eq((self.stall & lfsr[0] & lfsr[1]) | self.dead),
                     dram.refuse_w.eq((self.stall & lfsr[2] & lfsr[3]) | self.dead)]
        return m
