"""The accelerator's simulation top: the generated :class:`hw.accel.top.Accelerator` and, around it, the bench's
DRAM model — serving exactly the description's latency, or stalling at random.

The DRAM model answers the accelerator's DRAM port (:mod:`hw.accel.mover`): a read request accepted in cycle
``t`` returns its bytes in cycle ``t + latency`` (the same cycle for latency 0); a write request accepted in cycle
``t`` is written then and acknowledged in cycle ``t + latency``. The port's bandwidth is the accelerator's side
of the contract: its movers pace every row at the description's rate (``hw.accel.plan.Pacing``); the model takes
one request a cycle of at most ``dram_lanes`` bytes. With ``dead`` high it takes none (a board without DRAM).
With ``stall`` high, a 16-bit LFSR (seeded by ``seed`` at
``run``) refuses read and write requests on random cycles (about one in four each) — more cycles, never other
data. The host loads and reads DRAM a line at a time through ``dram_*`` ports.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.accel.memory import LineMemory
from hw.accel.plan import AccelPlan
from hw.accel.top import WORD_BITS, Accelerator

__all__ = ["AccelBench", "dram_line_bytes"]


def dram_line_bytes(plan: AccelPlan) -> int:
    """Line width of the DRAM model: a power of two at least the port's lanes (and 4)."""
    n = 4
    while n < plan.dram_lanes:
        n *= 2
    return n


class AccelBench(wiring.Component):
    module_name = "accel_bench"

    def __init__(self, plan: AccelPlan, dram_bytes: int, *, faults=(), ram_form: str = "behavioral"):
        self.plan = plan
        self.dram_line_bytes = dram_line_bytes(plan)
        self.dram_lines = -(-dram_bytes // self.dram_line_bytes)
        self.acc = Accelerator(plan, faults=faults, ram_form=ram_form)
        self._dram = LineMemory(self.dram_lines * self.dram_line_bytes, self.dram_line_bytes, plan.dram_lanes,
                                writers=1, readers=1, read_domain="comb")
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
        lat = self.plan.design.dram.latency_cycles
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

        # random refusals
        lfsr = Signal(16, init=1)
        with m.If(self.run):
            m.d.sync += lfsr.eq(self.seed | 1)
        with m.Else():
            m.d.sync += lfsr.eq(Mux(lfsr[0], (lfsr >> 1) ^ 0xB400, lfsr >> 1))
        # `dead`: a DRAM that never takes a request (what a board without DRAM is to a program that needs none)
        stall_r = (self.stall & lfsr[0] & lfsr[1]) | self.dead
        stall_w = (self.stall & lfsr[2] & lfsr[3]) | self.dead

        # reads: accept, read now, answer `lat` cycles later
        rq, rd = acc.dram_rreq, acc.dram_rdata
        m.d.comb += rq.ready.eq(~stall_r)
        take = rq.valid & rq.ready
        m.d.comb += [dram.r0.addr.eq(rq.payload.addr)]
        stage = (take, dram.r0.data, rq.payload.count)
        for i in range(lat):
            v, d, c = Signal(name=f"rd_v{i}"), Signal.like(dram.r0.data, name=f"rd_d{i}"), \
                Signal.like(rq.payload.count, name=f"rd_c{i}")
            m.d.sync += [v.eq(stage[0]), d.eq(stage[1]), c.eq(stage[2])]
            stage = (v, d, c)
        m.d.comb += [rd.valid.eq(stage[0]), rd.payload.data.eq(stage[1]), rd.payload.count.eq(stage[2])]

        # writes: accept and write now, acknowledge `lat` cycles later
        wq, wa = acc.dram_wreq, acc.dram_wack
        m.d.comb += wq.ready.eq(~stall_w)
        put = wq.valid & wq.ready
        m.d.comb += [dram.w0.en.eq(put), dram.w0.addr.eq(wq.payload.addr), dram.w0.count.eq(wq.payload.count),
                     dram.w0.data.eq(wq.payload.data)]
        ack = (put, wq.payload.count)
        for i in range(lat):
            v, c = Signal(name=f"wa_v{i}"), Signal.like(wq.payload.count, name=f"wa_c{i}")
            m.d.sync += [v.eq(ack[0]), c.eq(ack[1])]
            ack = (v, c)
        m.d.comb += [wa.valid.eq(ack[0]), wa.payload.count.eq(ack[1])]
        return m
