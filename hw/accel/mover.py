"""The transfer engine of one queue: a ``LOAD`` (DRAM or a buffer → a buffer) on the load queue, a ``STORE`` (a
buffer → DRAM or a buffer) on the store queue, with exactly the cycles of docs/isa.md §4.1.

Cycle by cycle, for a transfer started at cycle ``s`` (the set-up cycle: the fields are latched):

* **requests**, cycles ``s+1 …``: each row at its pacing (:class:`hw.accel.plan.Pacing`: ``q`` bytes a cycle, one
  more when the remainder counter wraps), a run of ``c`` bytes a cycle inside the row; a DRAM source gets a read
  request ``(addr, count)`` (held while the DRAM is not ready), a buffer source a run read;
* **data**: a DRAM read answers ``latency`` cycles later (``data``, ``count``, in request order); a buffer read the
  next cycle;
* **writes**: each answer is written where the destination's own row and column counters point: a buffer run
  write, or a DRAM write request ``(addr, count, data)`` (a buffer source holds its read while the DRAM is not
  ready);
* **finish**: in the cycle the last byte is written to a buffer, or the last DRAM write is acknowledged; the queue
  is free, and the instruction's tokens count, from the next cycle. Nothing to move: the set-up cycle finishes.

So a LOAD from DRAM takes ``1 + rows·ceil(row_bytes/rate) + latency`` cycles, a STORE to DRAM one more (its buffer
read), an on-chip copy ``1 + rows·ceil(row_bytes/rate) + 1`` — :meth:`hw.accelerator.Accelerator.transfer_cycles`.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .memory import _bits
from .plan import DRAM, AccelPlan

__all__ = ["Mover", "dram_read_request", "dram_read_data", "dram_write_request", "dram_write_ack"]


def dram_read_request(lanes: int) -> stream.Signature:
    """Read ``count`` (1 … lanes) bytes from DRAM byte ``addr``."""
    return stream.Signature(data.StructLayout({"addr": 32, "count": _bits(lanes + 1)}))


def dram_read_data(lanes: int) -> stream.Signature:
    """The answer to a read request, in request order: ``count`` bytes, byte 0 in ``data[0:8]``. The accelerator
    always takes it (``ready`` is 1)."""
    return stream.Signature(data.StructLayout({"data": 8 * lanes, "count": _bits(lanes + 1)}))


def dram_write_request(lanes: int) -> stream.Signature:
    """Write ``count`` bytes of ``data`` at DRAM byte ``addr``."""
    return stream.Signature(data.StructLayout({"addr": 32, "count": _bits(lanes + 1), "data": 8 * lanes}))


def dram_write_ack(lanes: int) -> stream.Signature:
    """A write request is done (``count`` bytes), in request order. The accelerator always takes it (``ready`` is
    1)."""
    return stream.Signature(data.StructLayout({"count": _bits(lanes + 1)}))


class Mover(wiring.Component):
    """One queue's transfer engine (``queue`` ``"load"`` or ``"store"``), fed by the controller's decoded fields."""

    def __init__(self, plan: AccelPlan, queue: str, *, stride_plus_one: bool = False):
        self.plan, self.queue, self._stride_bug = plan, queue, stride_plus_one
        P, D = plan.lanes, plan.dram_lanes
        self.addr_bits = max(b.lines * b.line_bytes for b in plan.buffers).bit_length()
        cw = _bits(P + 1)
        members = {
            "start": In(1), "src": In(2), "dst": In(2),
            "src_addr": In(32), "dst_addr": In(32), "src_stride": In(32), "dst_stride": In(32),
            "rows": In(32), "row_bytes": In(32),
            "busy": Out(1), "finish": Out(1),
            # the buffer side: one run read and one run write, routed by the controller to the buffer named
            "rd_en": Out(1), "rd_buf": Out(2), "rd_addr": Out(self.addr_bits), "rd_data": In(8 * P),
            "wr_en": Out(1), "wr_buf": Out(2), "wr_addr": Out(self.addr_bits), "wr_count": Out(cw),
            "wr_data": Out(8 * P),
        }
        if queue == "load":
            members.update({"dram_rreq": Out(dram_read_request(D)), "dram_rdata": In(dram_read_data(D))})
        else:
            members.update({"dram_wreq": Out(dram_write_request(D)), "dram_wack": In(dram_write_ack(D))})
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        plan, P, D = self.plan, self.plan.lanes, self.plan.dram_lanes
        cw = _bits(P + 1)

        busy = Signal()
        src, dst = Signal(2), Signal(2)
        src_row, src_col = Signal(32), Signal(32)
        dst_row, dst_col = Signal(32), Signal(32)
        src_stride, dst_stride, row_bytes = Signal(32), Signal(32), Signal(32)
        rows_left = Signal(32)                # rows still to request, the current one included
        left = Signal(32)                     # bytes of the current row still to request
        req_done = Signal()
        total, moved = Signal(64), Signal(64)
        den_w = max(1, plan.max_den.bit_length())
        rem = Signal(den_w + 1)
        q, r, den = Signal(cw), Signal(den_w + 1), Signal(den_w + 1)

        m.d.comb += self.busy.eq(busy)

        # the pacing of the (source, destination), registered at set-up (a combinational case on the latched pair
        # would start as X in an event-driven simulator when the first pair equals the registers' initial one)
        with m.If(self.start):
            with m.Switch(self.src << 2 | self.dst):
                for (s, d), p in plan.pacing.items():
                    with m.Case(s << 2 | d):
                        m.d.sync += [q.eq(p.q), r.eq(p.r), den.eq(p.den)]

        # -- set-up: latch the fields -------------------------------------------------------------------------------
        nothing = (self.rows == 0) | (self.row_bytes == 0)
        with m.If(self.start):
            m.d.sync += [src.eq(self.src), dst.eq(self.dst),
                         src_row.eq(self.src_addr), src_col.eq(0), dst_row.eq(self.dst_addr), dst_col.eq(0),
                         src_stride.eq(self.src_stride), dst_stride.eq(self.dst_stride),
                         row_bytes.eq(self.row_bytes), rows_left.eq(self.rows), left.eq(self.row_bytes),
                         req_done.eq(0), total.eq(self.rows * self.row_bytes), moved.eq(0), rem.eq(0)]
            with m.If(nothing):
                m.d.comb += self.finish.eq(1)
            with m.Else():
                m.d.sync += busy.eq(1)

        # -- requests: one paced run a cycle ---------------------------------------------------------------------
        acc = Signal(den_w + 2)
        carry = Signal()
        want = Signal(cw + 1)
        c = Signal(cw)
        m.d.comb += [acc.eq(rem + r), carry.eq(acc >= den), want.eq(q + carry),
                     c.eq(Mux(want < left, want, left))]
        requesting = busy & ~req_done
        advance = Signal()                     # this cycle's run (possibly of 0 bytes) is issued

        src_is_dram = src == DRAM
        dst_is_dram = dst == DRAM
        # a buffer source's read returns next cycle; `pend` is that answer, held while a DRAM write waits
        pend, pend_count = Signal(), Signal(cw)
        wack = self.dram_wack if self.queue == "store" else None
        wreq = self.dram_wreq if self.queue == "store" else None
        held = Signal()                        # the pending answer cannot be written this cycle
        if wreq is not None:
            m.d.comb += [held.eq(pend & dst_is_dram & ~wreq.ready), wack.ready.eq(1)]

        if self.queue == "load":
            m.d.comb += self.dram_rdata.ready.eq(1)
            rreq = self.dram_rreq
            m.d.comb += [rreq.payload.addr.eq(src_row + src_col), rreq.payload.count.eq(c)]
            with m.If(requesting & src_is_dram):
                m.d.comb += [rreq.valid.eq(c != 0), advance.eq((c == 0) | rreq.ready)]
        with m.If(requesting & ~src_is_dram):
            m.d.comb += [advance.eq(~held), self.rd_en.eq((c != 0) & ~held)]
        m.d.comb += [self.rd_buf.eq(src), self.rd_addr.eq(src_row + src_col)]

        with m.If(advance):
            row_ends = c == left
            with m.If(row_ends):
                m.d.sync += [src_row.eq(src_row + src_stride), src_col.eq(0), left.eq(row_bytes), rem.eq(0),
                             rows_left.eq(rows_left - 1)]
                with m.If(rows_left == 1):
                    m.d.sync += req_done.eq(1)
            with m.Else():
                m.d.sync += [src_col.eq(src_col + c), left.eq(left - c), rem.eq(Mux(carry, acc - den, acc))]

        with m.If(~held):
            m.d.sync += [pend.eq(advance & ~src_is_dram & (c != 0)), pend_count.eq(c)]

        # -- answers: the data to write, where the destination's counters point ----------------------------------
        ans_valid, ans_count, ans_data = Signal(), Signal(cw), Signal(8 * P)
        if self.queue == "load":
            rd = self.dram_rdata
            m.d.comb += [ans_valid.eq(Mux(src_is_dram, rd.valid, pend)),
                         ans_count.eq(Mux(src_is_dram, rd.payload.count, pend_count)),
                         ans_data.eq(Mux(src_is_dram, rd.payload.data, self.rd_data))]
        else:
            m.d.comb += [ans_valid.eq(pend), ans_count.eq(pend_count), ans_data.eq(self.rd_data)]

        written = Signal()                     # the answer leaves this cycle
        m.d.comb += [self.wr_buf.eq(dst), self.wr_addr.eq(dst_row + dst_col), self.wr_count.eq(ans_count),
                     self.wr_data.eq(ans_data)]
        with m.If(busy & ans_valid & ~dst_is_dram):
            m.d.comb += [self.wr_en.eq(1), written.eq(1)]
        if wreq is not None:
            m.d.comb += [wreq.payload.addr.eq(dst_row + dst_col), wreq.payload.count.eq(ans_count),
                         wreq.payload.data.eq(ans_data[:8 * D])]
            with m.If(busy & ans_valid & dst_is_dram):
                m.d.comb += [wreq.valid.eq(1), written.eq(wreq.ready)]
        with m.If(written):
            with m.If(dst_col + ans_count == row_bytes):
                m.d.sync += [dst_row.eq(dst_row + dst_stride + int(self._stride_bug)), dst_col.eq(0)]
            with m.Else():
                m.d.sync += dst_col.eq(dst_col + ans_count)

        # -- the end: the last byte written to a buffer, or the last DRAM write acknowledged ----------------------
        done_now = Signal(64)
        if wack is not None:
            m.d.comb += done_now.eq(Mux(dst_is_dram, Mux(wack.valid, wack.payload.count, 0),
                                        Mux(written, ans_count, 0)))
        else:
            m.d.comb += done_now.eq(Mux(written, ans_count, 0))
        with m.If(busy):
            m.d.sync += moved.eq(moved + done_now)
            with m.If(moved + done_now == total):
                m.d.comb += self.finish.eq(1)
                m.d.sync += busy.eq(0)
        return m
