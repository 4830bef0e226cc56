"""cocotb bench for the board top (``hw.board.top.BoardTop``), driven only through its UART pins.

A pseudo-terminal stands for the board's USB serial port: a bridge coroutine turns the bytes written to it into
bits on ``uart_rx`` (8N1 at the design's divisor) and decodes ``uart_tx`` back into bytes on it. The host runs in
a thread: the same :class:`hw.board.protocol.Driver` and :func:`hw.board.host.run_program` that drive a real board,
over pyserial on the terminal's other end. The job (stimulus file) is one program run, then the refusal checks:
a frame with a corrupted checksum, unknown op, space, address or length, and a write while running.
"""

import os
import sys
import threading
import time
import tty

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge

from fsio import write_npz_atomic
from rtl_tests.cocotb_clocks import start_clocks


async def _send_bits(dut, byte: int, divisor: int) -> None:
    for bit in [0, *((byte >> i) & 1 for i in range(8)), 1]:
        dut.uart_rx.value = bit
        await ClockCycles(dut.clk, divisor)


async def _host_to_board(dut, master: int, divisor: int, done: threading.Event) -> None:
    while not done.is_set():
        try:
            data = os.read(master, 4096)
        except BlockingIOError:
            data = b""
        if not data:
            await ClockCycles(dut.clk, 10 * divisor)
            continue
        for byte in data:
            await _send_bits(dut, byte, divisor)


async def _board_to_host(dut, master: int, divisor: int, counters: dict) -> None:
    while True:
        await FallingEdge(dut.uart_tx)
        await ClockCycles(dut.clk, divisor // 2)
        await ReadOnly()
        if int(dut.uart_tx.value) != 0:
            continue                        # a glitch
        byte = 0
        for i in range(8):
            await ClockCycles(dut.clk, divisor)
            await ReadOnly()
            byte |= int(dut.uart_tx.value) << i
        await ClockCycles(dut.clk, divisor)
        await ReadOnly()
        if int(dut.uart_tx.value) != 1:
            counters["framing_errors"] += 1
            continue
        counters["log"].append(byte)
        if not counters["local"]:
            os.write(master, bytes([byte]))


def _host(job, port: str, result: dict) -> None:
    """The host thread: everything here is what ``lowbit board run`` does against a real board."""
    import serial

    from hw.board.host import run_program
    from hw.board.protocol import STATUS, Driver, LinkError, Space, frame

    spaces = tuple(Space(int(i), str(n), int(w), int(lines), bool(r))
                   for i, n, w, lines, r in zip(job["sp_index"], job["sp_name"], job["sp_width"], job["sp_lines"],
                                                job["sp_readable"]))
    try:
        with serial.Serial(port, baudrate=115200, timeout=0.05) as ser:
            drv = Driver(ser, spaces, timeout=float(job["timeout"]))
            run = run_program(drv, job["words"], job["dram"], fresh=True, timeout=float(job["timeout"]))
            result.update(cycles=run.cycles, finished=run.finished, error=run.error, dram=run.dram,
                          bytes_out=run.bytes_out, bytes_in=run.bytes_in, lines_written=run.lines_written)
            # -- refusals: each answered with its status, no memory changed ---------------------------------------
            dram = next(s for s in spaces if s.name == "dram")
            line = 0
            before = drv.read_lines("dram", 1, first=line)[0]
            junk = bytes((before + 1) & 0xFF)           # differs from the line in every byte
            good = frame("WRITE", dram.index, line, junk)
            statuses = {}
            bad = bytearray(good)
            bad[-1] ^= 0x5A                             # the checksum
            statuses["crc"] = _raw(drv, ser, bytes(bad))
            bad = bytearray(good)
            bad[9] ^= 0x01                              # a payload byte: the checksum no longer matches
            statuses["payload"] = _raw(drv, ser, bytes(bad))
            statuses["op"] = _raw(drv, ser, frame(0x7E, dram.index, line))
            statuses["space"] = _raw(drv, ser, frame("READ", 200, 0))
            statuses["addr"] = _raw(drv, ser, frame("READ", dram.index, dram.lines))
            statuses["len"] = _raw(drv, ser, frame("WRITE", dram.index, line, junk[:-1]))
            statuses["imem_read"] = _raw(drv, ser, frame("READ", 0, 0))
            after = drv.read_lines("dram", 1, first=line)[0]
            result["unchanged"] = bool(np.array_equal(before, after))
            result["line0"] = after
            result["busy_frame"] = np.frombuffer(frame("READ", dram.index, line), np.uint8)
            result["run_frame"] = np.frombuffer(frame("RUN"), np.uint8)
            result["read_frame"] = np.frombuffer(frame("READ", dram.index, line), np.uint8)
            result["statuses"] = statuses
            result["ok_code"] = STATUS["OK"]
            try:
                drv.transact("READ", 200, 0)
                result["raises"] = False
            except LinkError as exc:
                result["raises"] = "BAD_SPACE" in str(exc)
    except Exception as exc:                            # reported by the bench, not lost in the thread
        result["exception"] = f"{type(exc).__name__}: {exc}"


async def _exchange(dut, counters: dict, divisor: int, data: bytes) -> list[int]:
    """Send a frame on the pins and wait for its whole reply (decoded by the receiving coroutine)."""
    n0 = len(counters["log"])
    for byte in data:
        await _send_bits(dut, byte, divisor)
    while len(counters["log"]) < n0 + 5 or len(counters["log"]) < n0 + 6 + int.from_bytes(
            bytes(counters["log"][n0 + 3:n0 + 5]), "little"):
        await ClockCycles(dut.clk, divisor)
    return counters["log"][n0:]


def _raw(drv, ser, data: bytes) -> int:
    """Send ``data`` as it is and return the reply's status byte."""
    ser.write(data)
    head = drv._read_exact(1)
    while head[0] != 0x5A:
        head = drv._read_exact(1)
    body = drv._read_exact(4)
    drv._read_exact(int.from_bytes(body[2:4], "little") + 1)
    return int(body[1])


@cocotb.test()
async def board(dut):
    job = dict(np.load(os.environ["LOWBIT_STIMULUS"]))
    divisor = int(job["divisor"])
    start_clocks(dut, int(job["mem_phases"]))
    dut.uart_rx.value = 1
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)

    # The host thread waits for the GIL between the bridge's callbacks; the default 5 ms switch interval would
    # make every frame's round trip cost that much wall time.
    sys.setswitchinterval(1e-4)
    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    os.set_blocking(master, False)
    done = threading.Event()
    counters = {"log": [], "framing_errors": 0, "local": False}
    result: dict = {}
    cocotb.start_soon(_host_to_board(dut, master, divisor, done))
    cocotb.start_soon(_board_to_host(dut, master, divisor, counters))
    if os.environ.get("LOWBIT_SERVE"):
        # `lowbit board serve`: the board waits for a host on the terminal until the process is stopped
        from fsio import write_text_atomic

        write_text_atomic(os.environ["LOWBIT_SERVE"], os.ttyname(slave) + "\n")
        # until the server removes the file (it does on its way out, however it ends): never an orphan simulator
        while os.path.exists(os.environ["LOWBIT_SERVE"]):
            await ClockCycles(dut.clk, 20_000)
        return
    start = time.perf_counter()
    host = threading.Thread(target=_host, args=(job, os.ttyname(slave), result), daemon=True)
    host.start()
    cycles = 0
    while host.is_alive():
        await ClockCycles(dut.clk, 1000)
        cycles += 1000
    done.set()
    assert "exception" not in result, result["exception"]
    # A frame while the program runs (a READ: the shortest that touches memory), sent by the bench itself right
    # after RUN's reply: the host thread's timing is the machine's, not the simulation's, and the program may be
    # over before its next frame arrives.
    counters["local"] = True
    busy = await _exchange(dut, counters, divisor, bytes(result["run_frame"]))
    assert busy[2] == 0, f"RUN refused with status {busy[2]}"
    reply = await _exchange(dut, counters, divisor, bytes(result["busy_frame"]))
    result.setdefault("statuses", {})["busy"] = reply[2]
    running_after = int(dut.running.value)
    if not int(dut.finished.value):
        await RisingEdge(dut.finished)
    reply = await _exchange(dut, counters, divisor, bytes(result["read_frame"]))
    result["after_busy"] = bool(np.array_equal(np.frombuffer(bytes(reply[5:-1]), np.uint8), result["line0"]))
    result["busy_while_running"] = bool(running_after)
    os.close(slave)
    os.close(master)
    assert counters["framing_errors"] == 0, f"{counters['framing_errors']} bytes from the board without a stop bit"
    out = {k: np.asarray(v) for k, v in result.items() if k != "statuses"}
    for k, v in result.get("statuses", {}).items():
        out[f"status_{k}"] = np.int64(v)
    out["session_cycles"] = np.int64(cycles)
    out["session_seconds"] = np.float64(time.perf_counter() - start)
    write_npz_atomic(os.environ["LOWBIT_RESULT"], **out)
