"""The board's end of the host link: parses the frames of :mod:`hw.board.protocol` from the UART receiver,
executes them on the accelerator's instruction memory, buffers and on-chip DRAM, and answers through the
transmitter.

A frame's payload (one line) is collected in a shift register and written only after the frame's CRC has
matched, so a corrupted frame changes no memory; every frame gets exactly one reply. The engine never waits on
the receiver: a frame takes ``10 × divisor`` cycles a byte to arrive, far longer than any action (at most four
cycles) takes.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .protocol import OPS, STATUS, STATUS_BYTES, SYNC_BOARD, SYNC_HOST, Space, crc8, frame_lines, payload_capacity

__all__ = ["LinkEngine", "crc8_next"]


def crc8_next(crc, byte):
    """The CRC-8 (0x07) of :func:`hw.board.protocol.crc8` after one more ``byte``, as logic. The step is linear
    over GF(2) in ``crc ^ byte``, so each output bit is the XOR of the input bits whose single-bit CRC has it set
    (a flat XOR per bit, not eight nested multiplexers)."""
    c = crc ^ byte
    columns = [crc8(bytes([1 << i])) for i in range(8)]
    return Cat(*[_xor([c[i] for i in range(8) if columns[i] >> j & 1]) for j in range(8)])


def _xor(bits):
    out = Const(0, 1)
    for b in bits:
        out = out ^ b
    return out


class LinkEngine(wiring.Component):
    """The link engine for the memory map ``spaces`` (:func:`hw.board.protocol.link_spaces`): space 0 is the
    instruction memory (``imem_*``), the last the on-chip DRAM (``dram_*``), the ones between the accelerator's
    buffers through its host port (``host_*``, ``host_buf`` = space − 1)."""

    #: Bugs :meth:`__init__` can plant (``faults=``), to show the board bench fails on them: a checksum that is
    #: never checked (corrupted frames are executed).
    FAULTS = ("ignore_crc",)

    def __init__(self, spaces: tuple[Space, ...], *, imem_data_bits: int, host_line_bits: int,
                 host_addr_bits: int, dram_addr_bits: int, imem_addr_bits: int, faults=()):
        unknown = set(faults) - set(self.FAULTS)
        if unknown:
            raise ValueError(f"unknown link fault(s) {sorted(unknown)}; known: {', '.join(self.FAULTS)}")
        self.faults = frozenset(faults)
        if spaces[0].name != "imem" or spaces[-1].name != "dram":
            raise ValueError("the link's spaces are the instruction memory, the buffers, then the DRAM")
        self.spaces = spaces
        #: the payload registers' width in bits: the most a frame carries (:func:`frame_lines`)
        self.width_bits = 8 * payload_capacity(spaces)
        dram_bits = 8 * spaces[-1].width
        super().__init__({
            "rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8)),
            "run": Out(1), "running": In(1), "finished": In(1), "error": In(1), "cycles": In(32),
            "imem_we": Out(1), "imem_addr": Out(imem_addr_bits), "imem_data": Out(imem_data_bits),
            "host_buf": Out(2), "host_en": Out(1), "host_we": Out(1), "host_line": Out(host_addr_bits),
            "host_wdata": Out(host_line_bits), "host_rdata": In(host_line_bits),
            "dram_en": Out(1), "dram_we": Out(1), "dram_line": Out(dram_addr_bits),
            "dram_wdata": Out(dram_bits), "dram_rdata": In(dram_bits),
            # a frame was refused (any status but OK): for an LED or a counter
            "refused": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        spaces, W = self.spaces, self.width_bits
        n_sp = len(spaces)

        op, space = Signal(8), Signal(8)
        addr, length = Signal(24), Signal(16)
        count = Signal(16)
        crc = Signal(8)
        inbuf = Signal(W)           # the payload: byte i in bits 8i .. 8i + 7
        byte = self.rx.payload
        got = self.rx.valid
        m.d.comb += self.rx.ready.eq(1)

        # what the reply carries
        r_status, r_len = Signal(8), Signal(16)
        outbuf = Signal(W)          # the reply payload, byte 0 in bits 0..7
        # this space's line width (bytes), line count, readable or not, and the lines a frame may carry; the
        # lines this frame's payload holds (a write) or asks for (a read), and whether its length is whole lines
        width, lines, readable, most = Signal(16), Signal(25), Signal(), Signal(8)
        k_write, whole, k_read = Signal(16), Signal(), Signal(8)
        with m.Switch(space):
            for s in spaces:
                with m.Case(s.index):
                    m.d.comb += [width.eq(s.width), lines.eq(s.lines), readable.eq(s.readable),
                                 most.eq(frame_lines(s, W // 8)), k_write.eq(length // s.width),
                                 whole.eq(length % s.width == 0)]
        valid_space = space < n_sp
        m.d.comb += k_read.eq(Mux(length == 0, 1, inbuf[:8]))
        todo = Signal(8)            # lines still to write or read
        done = Signal(8)            # lines read so far

        m.d.comb += [self.imem_addr.eq(addr), self.imem_data.eq(inbuf), self.host_line.eq(addr),
                     self.host_wdata.eq(inbuf), self.host_buf.eq(space - 1), self.dram_line.eq(addr),
                     self.dram_wdata.eq(inbuf)]
        m.d.sync += [self.run.eq(0), self.refused.eq(0)]
        wait = Signal(2)

        def field(state, target, nxt, shift=None):
            with m.State(state):
                with m.If(got):
                    m.d.sync += crc.eq(crc8_next(crc, byte))
                    if shift is None:
                        m.d.sync += target.eq(byte)
                    else:
                        m.d.sync += target.eq(target | (byte << shift))
                    m.next = nxt

        # the reply: sync, op, status, length (2), payload, crc
        t_crc = Signal(8)
        tx_byte = Signal(8)
        m.d.comb += self.tx.payload.eq(tx_byte)
        sent = self.tx.valid & self.tx.ready

        with m.FSM():
            with m.State("sync"):
                with m.If(got & (byte == SYNC_HOST)):
                    m.d.sync += [crc.eq(0), addr.eq(0), length.eq(0), count.eq(0)]
                    m.next = "op"
            field("op", op, "space")
            field("space", space, "a0")
            field("a0", addr, "a1", 0)
            field("a1", addr, "a2", 8)
            field("a2", addr, "n0", 16)
            field("n0", length, "n1", 0)
            with m.State("n1"):
                with m.If(got):
                    m.d.sync += [crc.eq(crc8_next(crc, byte)), length.eq(length | (byte << 8))]
                    m.next = "payload_or_crc"
            with m.State("payload_or_crc"):
                with m.If(length == 0):
                    m.next = "crc"
                with m.Else():
                    m.next = "payload"
            with m.State("payload"):
                with m.If(got):
                    m.d.sync += [crc.eq(crc8_next(crc, byte)), count.eq(count + 1)]
                    with m.If(count < W // 8):      # a longer payload is refused (BAD_LEN) once it is in
                        m.d.sync += inbuf.word_select(count[:max(1, (W // 8 - 1).bit_length())], 8).eq(byte)
                    with m.If(count + 1 == length):
                        m.next = "crc"
            with m.State("crc"):
                with m.If(got):
                    m.d.sync += [r_len.eq(0), wait.eq(0)]
                    with m.If((byte != crc) & ("ignore_crc" not in self.faults)):
                        m.d.sync += r_status.eq(STATUS["BAD_CRC"])
                        m.next = "reply"
                    with m.Else():
                        m.next = "exec"
            with m.State("exec"):
                def refuse(code):
                    m.d.sync += r_status.eq(STATUS[code])
                    m.next = "reply"
                with m.Switch(op):
                    with m.Case(OPS["WRITE"]):
                        with m.If(~valid_space):
                            refuse("BAD_SPACE")
                        with m.Elif((length == 0) | ~whole | (k_write > most)):
                            refuse("BAD_LEN")
                        with m.Elif(addr + k_write > lines):
                            refuse("BAD_ADDR")
                        with m.Elif(self.running):
                            refuse("BUSY")
                        with m.Else():
                            m.d.sync += todo.eq(k_write)
                            m.next = "write"
                    with m.Case(OPS["READ"]):
                        with m.If(~valid_space | ~readable):
                            refuse("BAD_SPACE")
                        with m.Elif((length > 1) | (k_read == 0) | (k_read > most)):
                            refuse("BAD_LEN")
                        with m.Elif(addr + k_read > lines):
                            refuse("BAD_ADDR")
                        with m.Elif(self.running):
                            refuse("BUSY")
                        with m.Else():
                            m.d.sync += [todo.eq(k_read), done.eq(0), wait.eq(0)]
                            m.next = "read"
                    with m.Case(OPS["RUN"]):
                        with m.If(length != 0):
                            refuse("BAD_LEN")
                        with m.Elif(self.running):
                            refuse("BUSY")
                        with m.Else():
                            m.d.sync += self.run.eq(1)
                            refuse("OK")
                    with m.Case(OPS["STATUS"]):
                        with m.If(length != 0):
                            refuse("BAD_LEN")
                        with m.Else():
                            m.d.sync += [outbuf.eq(Cat(self.running, self.finished, self.error, Const(0, 5),
                                                       self.cycles)),
                                         r_len.eq(STATUS_BYTES)]
                            refuse("OK")
                    with m.Default():
                        refuse("BAD_OP")
            with m.State("write"):
                # a line a cycle, from the payload's low bytes; then the next line moves down
                with m.If(space == 0):
                    m.d.comb += self.imem_we.eq(1)
                with m.Elif(space == n_sp - 1):
                    m.d.comb += [self.dram_en.eq(1), self.dram_we.eq(1)]
                with m.Else():
                    m.d.comb += [self.host_en.eq(1), self.host_we.eq(1)]
                with m.Switch(space):
                    for sp in spaces:
                        with m.Case(sp.index):
                            m.d.sync += inbuf.eq(inbuf >> (8 * sp.width))
                m.d.sync += [addr.eq(addr + 1), todo.eq(todo - 1)]
                with m.If(todo == 1):
                    refuse("OK")
            with m.State("read"):
                # each line's read is held for three cycles (registered reads need one; the port's line select
                # another), then lands at its place in the reply
                with m.If(space == n_sp - 1):
                    m.d.comb += self.dram_en.eq(1)
                with m.Else():
                    m.d.comb += self.host_en.eq(1)
                m.d.sync += wait.eq(wait + 1)
                with m.If(wait == 2):
                    data = Mux(space == n_sp - 1, self.dram_rdata, self.host_rdata)
                    with m.Switch(space):
                        for sp in spaces:
                            if not sp.readable:
                                continue
                            with m.Case(sp.index):
                                n = frame_lines(sp, W // 8)
                                idx = done[:max(1, (n - 1).bit_length())]
                                m.d.sync += outbuf.word_select(idx, 8 * sp.width).eq(data[:8 * sp.width])
                    m.d.sync += [wait.eq(0), addr.eq(addr + 1), done.eq(done + 1), todo.eq(todo - 1)]
                    with m.If(todo == 1):
                        m.d.sync += [r_len.eq((done + 1) * width), r_status.eq(STATUS["OK"])]
                        m.next = "reply"
            with m.State("reply"):
                m.d.comb += [tx_byte.eq(SYNC_BOARD), self.tx.valid.eq(1)]
                with m.If(sent):
                    m.d.sync += [t_crc.eq(0), count.eq(0), self.refused.eq(r_status != STATUS["OK"])]
                    m.next = "r_op"

            def reply_byte(state, value, nxt):
                with m.State(state):
                    m.d.comb += [tx_byte.eq(value), self.tx.valid.eq(1)]
                    with m.If(sent):
                        m.d.sync += t_crc.eq(crc8_next(t_crc, value))
                        m.next = nxt
            reply_byte("r_op", op, "r_status")
            reply_byte("r_status", r_status, "r_n0")
            reply_byte("r_n0", r_len[:8], "r_n1")
            with m.State("r_n1"):
                m.d.comb += [tx_byte.eq(r_len[8:]), self.tx.valid.eq(1)]
                with m.If(sent):
                    m.d.sync += t_crc.eq(crc8_next(t_crc, r_len[8:]))
                    with m.If(r_len == 0):
                        m.next = "r_crc"
                    with m.Else():
                        m.next = "r_payload"
            with m.State("r_payload"):
                m.d.comb += [tx_byte.eq(outbuf[:8]), self.tx.valid.eq(1)]
                with m.If(sent):
                    m.d.sync += [t_crc.eq(crc8_next(t_crc, outbuf[:8])), outbuf.eq(outbuf >> 8),
                                 count.eq(count + 1)]
                    with m.If(count + 1 == r_len):
                        m.next = "r_crc"
            with m.State("r_crc"):
                m.d.comb += [tx_byte.eq(t_crc), self.tx.valid.eq(1)]
                with m.If(sent):
                    m.d.sync += inbuf.eq(0)
                    m.next = "sync"
        return m
