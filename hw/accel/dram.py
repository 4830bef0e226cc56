"""A DRAM kept on chip: what answers the accelerator's DRAM port on a board without DRAM (weights resident) and in
the RTL benches.

:class:`LocalDram` serves exactly the description's latency (``dram.latency_cycles``): a read request accepted in
cycle ``t`` returns its bytes in cycle ``t + latency`` (the same cycle for latency 0); a write request accepted in
cycle ``t`` is written then and acknowledged in cycle ``t + latency``. The port's bandwidth is the accelerator's
side of the contract (:class:`hw.accel.plan.Pacing` paces every row); the memory takes one request a cycle of at
most ``dram_lanes`` bytes, so the simulator's DRAM timing (``sim.machine``) is met cycle for cycle. ``refuse_r`` /
``refuse_w`` turn requests away in the cycle they are high (the bench's random stalls; a board ties them low).
The host reads and writes it a line at a time (``host_*``) while the accelerator is not running.

``form`` is how the bytes are kept: ``"comb"`` (the benches': combinational reads, any latency), or a block-RAM
form of :data:`hw.accel.ram.RAM_FORMS` for a board (registered reads, so the latency must be at least one cycle:
the read happens in the accept cycle and its data is the first of the latency stages).
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .memory import LineMemory
from .mover import dram_read_data, dram_read_request, dram_write_ack, dram_write_request
from .plan import AccelPlan

__all__ = ["LocalDram"]


class LocalDram(wiring.Component):
    """``size_bytes`` of DRAM on chip for ``plan``'s accelerator. Connect ``rreq``/``rdata``/``wreq``/``wack`` to
    the accelerator's ``dram_*`` ports (the signatures are theirs, flipped)."""

    #: the forms: ``"comb"`` and the buffers' RAM forms
    FORMS = ("comb", "behavioral", "pumped")

    def __init__(self, plan: AccelPlan, size_bytes: int, *, form: str = "comb"):
        D = plan.dram_lanes
        if form not in self.FORMS:
            raise ValueError(f"on-chip DRAM form {form!r}: use one of {', '.join(self.FORMS)}")
        if form != "comb" and plan.design.dram.latency_cycles < 1:
            raise ValueError(f"dram.latency_cycles = {plan.design.dram.latency_cycles}: DRAM kept in block RAM "
                             f"reads a cycle late; describe it with latency_cycles = 1 or more")
        self.plan, self.form = plan, form
        self.line_bytes = plan.dram_line_bytes
        self.lines = -(-size_bytes // self.line_bytes)
        self.size_bytes = self.lines * self.line_bytes
        self._mem = LineMemory(self.size_bytes, self.line_bytes, D, writers=1, readers=1,
                               read_domain="comb" if form == "comb" else "sync",
                               ram_form="behavioral" if form == "comb" else form,
                               # in block RAM the host's port is the accelerator's (used only between runs): no
                               # replica of the weights for it
                               host_shared=form != "comb")
        super().__init__({
            "rreq": In(dram_read_request(D)), "rdata": Out(dram_read_data(D)),
            "wreq": In(dram_write_request(D)), "wack": Out(dram_write_ack(D)),
            "refuse_r": In(1), "refuse_w": In(1),
            "host_en": In(1), "host_we": In(1), "host_line": In(max(1, self.lines.bit_length())),
            "host_wdata": In(8 * self.line_bytes), "host_rdata": Out(8 * self.line_bytes),
        })

    @property
    def verilog_modules(self) -> dict[str, str]:
        return self._mem.verilog_modules

    @property
    def ram_shapes(self) -> list:
        """The RAM shapes the bytes are kept in (:class:`hw.accel.ram.RamShape`; none in the ``comb`` form)."""
        return self._mem.ram_shapes if self.form != "comb" else []

    def elaborate(self, platform):
        m = Module()
        lat = self.plan.design.dram.latency_cycles
        m.submodules.mem = mem = self._mem
        m.d.comb += [mem.host_en.eq(self.host_en), mem.host_we.eq(self.host_we), mem.host_line.eq(self.host_line),
                     mem.host_wdata.eq(self.host_wdata), self.host_rdata.eq(mem.host_rdata)]

        # reads: accept, read now, answer `lat` cycles later
        rq, rd = self.rreq, self.rdata
        m.d.comb += rq.ready.eq(~self.refuse_r)
        m.d.comb += mem.r0.addr.eq(rq.payload.addr)
        stage = (rq.valid & rq.ready, mem.r0.data, rq.payload.count)
        stages = lat
        if self.form != "comb":
            # a registered read: its data arrives with the first stage's valid and count
            m.d.comb += mem.r0.en.eq(stage[0])
            v, c = Signal(name="rd_v_mem"), Signal.like(rq.payload.count, name="rd_c_mem")
            m.d.sync += [v.eq(stage[0]), c.eq(stage[2])]
            stage, stages = (v, mem.r0.data, c), lat - 1
        for i in range(stages):
            v, d, c = Signal(name=f"rd_v{i}"), Signal.like(mem.r0.data, name=f"rd_d{i}"), \
                Signal.like(rq.payload.count, name=f"rd_c{i}")
            m.d.sync += [v.eq(stage[0]), d.eq(stage[1]), c.eq(stage[2])]
            stage = (v, d, c)
        m.d.comb += [rd.valid.eq(stage[0]), rd.payload.data.eq(stage[1]), rd.payload.count.eq(stage[2])]

        # writes: accept and write now, acknowledge `lat` cycles later
        wq, wa = self.wreq, self.wack
        m.d.comb += wq.ready.eq(~self.refuse_w)
        put = wq.valid & wq.ready
        m.d.comb += [mem.w0.en.eq(put), mem.w0.addr.eq(wq.payload.addr), mem.w0.count.eq(wq.payload.count),
                     mem.w0.data.eq(wq.payload.data)]
        ack = (put, wq.payload.count)
        for i in range(lat):
            v, c = Signal(name=f"wa_v{i}"), Signal.like(wq.payload.count, name=f"wa_c{i}")
            m.d.sync += [v.eq(ack[0]), c.eq(ack[1])]
            ack = (v, c)
        m.d.comb += [wa.valid.eq(ack[0]), wa.payload.count.eq(ack[1])]
        return m
