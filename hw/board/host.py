"""The host's work on a board, over :class:`hw.board.protocol.Driver`: load a program and its DRAM image, run it,
read the results back. The same code drives a real board (``lowbit board run --port /dev/ttyUSB1``) and the
simulated one (``rtl_tests/test_board.py``: the board top in Verilator behind a pseudo-terminal). No Amaranth."""

import time
from dataclasses import dataclass, field

import numpy as np

from .protocol import Driver

__all__ = ["BoardRun", "run_program", "open_port"]


@dataclass
class BoardRun:
    """What a run on the board gave: the accelerator's ``cycles`` (its own count, the simulator's program cycles),
    ``finished``/``error``, the DRAM read back (``dram``, the image's length), and the link's traffic."""

    cycles: int
    finished: bool
    error: bool
    dram: np.ndarray = field(repr=False)
    lines_written: int
    bytes_out: int
    bytes_in: int
    seconds: dict


def run_program(driver: Driver, words: np.ndarray, dram: np.ndarray, *, fresh: bool = False,
                read_back: tuple[int, int] | None = None, timeout: float = 60.0) -> BoardRun:
    """Load the program (``words``: ``[n, 32]`` instruction bytes) and the DRAM image ``dram``, run, wait, and
    read back DRAM bytes ``read_back = (start, stop)`` (default: the whole image). ``fresh``: the board was just
    configured (its memories hold zeros), so all-zero lines need not be sent. Buffers are not loaded: a program
    loads what it reads from DRAM."""
    t0 = time.perf_counter()
    sent = driver.write_lines("dram", dram, skip_zero=fresh)
    driver.load_program(words)
    sent += len(words)
    t1 = time.perf_counter()
    driver.run()
    st = driver.wait(timeout=timeout)
    t2 = time.perf_counter()
    start, stop = read_back or (0, dram.size)
    width = driver.spaces["dram"].width
    first, last = start // width, -(-stop // width)
    lines = driver.read_lines("dram", last - first, first=first).reshape(-1)
    out = np.zeros(dram.size, np.uint8)
    out[first * width:min(dram.size, last * width)] = lines[:min(dram.size, last * width) - first * width]
    t3 = time.perf_counter()
    return BoardRun(st["cycles"], st["finished"], st["error"], out, sent, driver.bytes_out, driver.bytes_in,
                    {"load": t1 - t0, "run": t2 - t1, "read": t3 - t2})


def open_port(port: str, baud: int, *, timeout: float = 0.05):
    """A ``serial.Serial`` on ``port`` at ``baud`` (8N1, raw); refuses a port that does not exist, by name."""
    import serial

    try:
        return serial.Serial(port, baudrate=baud, timeout=timeout)
    except (serial.SerialException, OSError) as exc:
        raise ValueError(f"--port {port}: cannot open it ({exc})") from None
