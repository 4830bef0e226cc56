"""A UART (8 data bits, no parity, one stop bit) as two ``wiring.Component``\\ s: lowbit's own, since
amaranth-stdio is not released on PyPI.

The baud rate is ``clock / divisor``: ``divisor`` system cycles per bit, at least :data:`MIN_DIVISOR` (the
receiver samples each bit in its middle, ``divisor // 2`` cycles after the edge it counts from, and needs a few
cycles to see the start bit through its synchronizer). In simulation a small divisor keeps runs short; on a board
``clock // baud`` (12 MHz at 1 Mbaud: 12).
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["UartRx", "UartTx", "MIN_DIVISOR", "divisor_for"]

#: the smallest divisor the receiver samples reliably (two synchronizer cycles, then the middle of the bit)
MIN_DIVISOR = 4


def divisor_for(clock_hz: float, baud: float, *, tolerance: float = 0.02) -> int:
    """The divisor for ``baud`` at ``clock_hz``; refuses a rate the clock cannot make within ``tolerance`` (the
    receiver at the other end samples mid-bit: 2 % over a 10-bit frame keeps the stop bit in its window)."""
    if baud <= 0 or clock_hz <= 0:
        raise ValueError(f"baud rate {baud:g} at a {clock_hz:g} Hz clock: both must be positive")
    divisor = round(clock_hz / baud)
    if divisor < MIN_DIVISOR:
        raise ValueError(f"baud rate {baud:g} needs {clock_hz / baud:.2f} clock cycles a bit at {clock_hz / 1e6:g} "
                         f"MHz; the UART needs at least {MIN_DIVISOR} (at most {clock_hz / MIN_DIVISOR:,.0f} baud)")
    error = abs(clock_hz / divisor - baud) / baud
    if error > tolerance:
        raise ValueError(f"baud rate {baud:g} at {clock_hz / 1e6:g} MHz: the nearest divisor {divisor} gives "
                         f"{clock_hz / divisor:,.0f} baud, {100 * error:.1f} % off (at most {100 * tolerance:g} %)")
    return divisor


def _check_divisor(component, divisor: int) -> int:
    if not isinstance(divisor, int) or divisor < MIN_DIVISOR:
        # a component refused before it exists must not also warn that it was never elaborated
        component._MustUse__silence = True
        raise ValueError(f"UART divisor {divisor!r}: must be an integer of at least {MIN_DIVISOR} cycles a bit")
    return divisor


class UartRx(wiring.Component):
    """Receiver: ``rx`` is the line (idle high); each byte received with a good stop bit is offered on ``data``
    (a stream; its ``ready`` is not waited for — the byte is lost if the consumer is not ready, as on a wire).
    ``framing_error`` pulses for a byte whose stop bit was low (the byte is dropped)."""

    def __init__(self, divisor: int):
        self.divisor = _check_divisor(self, divisor)
        super().__init__({"rx": In(1, init=1), "data": Out(stream.Signature(8)), "framing_error": Out(1)})

    def elaborate(self, platform):
        m = Module()
        div = self.divisor
        # two flip-flops: the line is asynchronous to the clock
        s1, s2 = Signal(init=1), Signal(init=1)
        m.d.sync += [s1.eq(self.rx), s2.eq(s1)]
        timer = Signal(range(div + 1))
        bit = Signal(range(10))
        shift = Signal(8)
        m.d.sync += [self.data.valid.eq(0), self.framing_error.eq(0)]
        with m.FSM():
            with m.State("idle"):
                with m.If(~s2):
                    # the start bit's first sampled cycle: its middle is div // 2 - 1 cycles on
                    m.d.sync += timer.eq(div // 2 - 1)
                    m.next = "start"
            with m.State("start"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(s2):            # a glitch, not a start bit
                    m.next = "idle"
                with m.Else():
                    m.d.sync += [timer.eq(div - 1), bit.eq(0)]
                    m.next = "bits"
            with m.State("bits"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(bit == 8):      # the stop bit's middle
                    with m.If(s2):
                        m.d.sync += [self.data.payload.eq(shift), self.data.valid.eq(1)]
                    with m.Else():
                        m.d.sync += self.framing_error.eq(1)
                    m.next = "idle"
                with m.Else():
                    m.d.sync += [shift.eq(Cat(shift[1:], s2)), bit.eq(bit + 1), timer.eq(div - 1)]
        return m


class UartTx(wiring.Component):
    """Transmitter: takes a byte from the ``data`` stream when idle and sends it on ``tx`` (start bit, bits 0 to
    7, stop bit: ``10 × divisor`` cycles)."""

    def __init__(self, divisor: int):
        self.divisor = _check_divisor(self, divisor)
        super().__init__({"tx": Out(1, init=1), "data": In(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        div = self.divisor
        timer = Signal(range(div))
        bits = Signal(10)           # what is still to send, bit 0 first
        left = Signal(range(11))
        # ready in the stop bit's last cycle too: back-to-back bytes are exactly 10 × divisor cycles apart
        m.d.comb += self.data.ready.eq((left == 0) | ((left == 1) & (timer == 0)))
        with m.If(self.data.valid & self.data.ready):
            m.d.sync += [bits.eq(Cat(0, self.data.payload, 1)), left.eq(10), timer.eq(div - 1),
                         self.tx.eq(0)]
        with m.Elif(left != 0):
            with m.If(timer != 0):
                m.d.sync += timer.eq(timer - 1)
            with m.Else():
                m.d.sync += [timer.eq(div - 1), left.eq(left - 1), bits.eq(bits >> 1)]
                # the next bit goes out as the current one's time ends; after the stop bit the line stays high
                m.d.sync += self.tx.eq((bits >> 1)[0] | (left == 1))
        return m
