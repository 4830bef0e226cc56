"""The host link's pieces on their own: the protocol's CRC and frames (hand-derived values), the UART in
Amaranth's simulator (every byte at several divisors, a framing error dropped), and the baud-rate arithmetic."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.board.protocol import HEADER_BYTES, REPLY_HEADER_BYTES, crc8, frame, load_seconds, reply, Space
from hw.board.uart import MIN_DIVISOR, UartRx, UartTx, divisor_for


def test_crc8_check_value():
    # CRC-8 (poly 0x07, init 0, no reflection; "CRC-8/SMBUS"): the catalogue's check value for "123456789"
    assert crc8(b"123456789") == 0xF4
    assert crc8(b"") == 0
    # by hand: 0x01 shifts up seven times to 0x80 with no feedback, the eighth shift drops the 1 and xors 0x07
    assert crc8(b"\x01") == 0x07


def test_frame_layout_by_hand():
    f = frame("WRITE", 3, 0x012345, b"\xAA\xBB")
    assert f[:8] == bytes([0xA5, 1, 3, 0x45, 0x23, 0x01, 2, 0]) and f[8:10] == b"\xAA\xBB"
    assert f[-1] == crc8(f[1:-1]) and len(f) == HEADER_BYTES + 2
    r = reply(4, 0, b"\x03\x10\x00\x00\x00")
    assert r[:5] == bytes([0x5A, 4, 0, 5, 0]) and len(r) == REPLY_HEADER_BYTES + 5
    with pytest.raises(ValueError, match="24 bits"):
        frame("READ", 1, 1 << 24)


def test_load_time_by_hand():
    spaces = (Space(0, "imem", 32, 16, False), Space(1, "dram", 4, 64))
    # a frame carries 64 bytes: 16 DRAM lines; 10 lines are one frame: 9 + 40 + 6 = 55 bytes, 550 bits at 1 Mbaud
    assert load_seconds(spaces, {"dram": 10}, 1e6) == pytest.approx(0.55e-3)
    # 40 lines: three frames (16 + 16 + 8): 3 × 15 + 160 = 205 bytes; 2 instruction words: one frame, 15 + 64
    assert load_seconds(spaces, {"dram": 40, "imem": 2}, 1e6) == pytest.approx((205 + 79) * 10 / 1e6)


def test_divisor_arithmetic():
    assert divisor_for(12e6, 1e6) == 12
    assert divisor_for(12e6, 115200) == 104          # 115,384 baud: 0.16 % off
    with pytest.raises(ValueError, match=r"baud rate 4e\+06 .* at least 4"):
        divisor_for(12e6, 4e6)
    with pytest.raises(ValueError, match=r"nearest divisor 5 .* off"):
        divisor_for(12e6, 2.2e6)


@pytest.mark.parametrize("divisor", [MIN_DIVISOR, 5, 12])
def test_uart_loopback_every_byte(divisor):
    """The transmitter's line into the receiver: all 256 bytes come out in order, each 10 × divisor cycles."""
    from amaranth.hdl import Module

    m = Module()
    m.submodules.tx = tx = UartTx(divisor)
    m.submodules.rx = rx = UartRx(divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    got, got_at = [], []

    async def bench(ctx):
        for b in range(256):
            ctx.set(tx.data.payload, b)
            ctx.set(tx.data.valid, 1)
            await ctx.tick().until(tx.data.ready)
        ctx.set(tx.data.valid, 0)
        await ctx.tick().repeat(12 * divisor)      # the last byte's bits, and the receiver's latency

    async def watch(ctx):
        cycle = 0
        async for _, _, valid, data, ferr in ctx.tick().sample(rx.data.valid, rx.data.payload, rx.framing_error):
            cycle += 1
            assert not ferr
            if valid:
                got.append(data)
                got_at.append(cycle)

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.add_process(watch)
    sim.run()
    assert got == list(range(256))
    # back-to-back bytes: one every 10 bit times
    assert set(np.diff(got_at)) == {10 * divisor}


def test_uart_drops_a_byte_without_stop_bit():
    div = 6
    rx = UartRx(div)
    seen = {"data": [], "ferr": 0}

    async def drive(ctx):
        def bits(byte, stop):
            return [0, *((byte >> i) & 1 for i in range(8)), stop]
        ctx.set(rx.rx, 1)
        await ctx.tick().repeat(5)
        for byte, stop in ((0x3C, 0), (0xC3, 1)):
            for bit in bits(byte, stop):
                ctx.set(rx.rx, bit)
                await ctx.tick().repeat(div)
            ctx.set(rx.rx, 1)
            await ctx.tick().repeat(3 * div)
        await ctx.tick().repeat(2)

    async def watch(ctx):
        async for _, _, valid, data, ferr in ctx.tick().sample(rx.data.valid, rx.data.payload, rx.framing_error):
            if valid:
                seen["data"].append(data)
            seen["ferr"] += ferr

    sim = Simulator(rx)
    sim.add_clock(1e-6)
    sim.add_testbench(drive)
    sim.add_process(watch)
    sim.run()
    assert seen == {"data": [0xC3], "ferr": 1}


def test_bad_divisor_is_refused():
    with pytest.raises(ValueError, match="UART divisor 3"):
        UartRx(3)
    with pytest.raises(ValueError, match="UART divisor 2.5"):
        UartTx(2.5)
