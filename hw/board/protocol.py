"""The host link's protocol: framed, checksummed commands over a UART, and the host's side of it.

No Amaranth here: the link engine (:mod:`hw.board.link`) and the host driver (:class:`Driver`) both read the
frame layout, the commands and the memory map from this module, so the two cannot drift apart.

**Frames.** Host to board: ``A5 op space a0 a1 a2 n0 n1 payload[n] crc``; board to host:
``5A op status n0 n1 payload[n] crc``. ``a`` is a 24-bit line address and ``n`` a 16-bit payload length, both
little-endian; ``crc`` is CRC-8 (polynomial 0x07, initial 0, :func:`crc8`) over every byte after the sync byte.
A write is committed only after its checksum has arrived and matched, so a corrupted frame gets a ``BAD_CRC``
reply and changes no memory.

**Commands** (:data:`OPS`): ``WRITE`` whole lines of a memory space from line ``a`` (``n`` a multiple of the
space's line width, at most :func:`frame_lines` lines), ``READ`` lines from ``a`` (``n`` = 0: one line; ``n`` = 1:
the payload byte is how many; the reply carries them), ``RUN`` the program in the instruction memory from instruction 0,
``STATUS`` (reply: a flags byte — bit 0 running, bit 1 finished, bit 2 error — and the accelerator's 32-bit
cycle count). Memory is written and read only while the accelerator is not running (``BUSY`` otherwise).

**Memory spaces** (:func:`link_spaces`): 0 the instruction memory (write only, 32-byte instruction words), then
each on-chip buffer of the plan in order, then the on-chip DRAM (:class:`hw.accel.dram.LocalDram`).
"""

import time
from dataclasses import dataclass

import numpy as np

__all__ = ["SYNC_HOST", "SYNC_BOARD", "OPS", "STATUS", "Space", "link_spaces", "crc8", "frame", "reply",
           "PAYLOAD_BYTES", "payload_capacity", "frame_lines",
           "LinkError", "Driver", "byte_cycles", "load_seconds", "HEADER_BYTES", "REPLY_HEADER_BYTES"]

SYNC_HOST, SYNC_BOARD = 0xA5, 0x5A
#: command codes
OPS = {"WRITE": 1, "READ": 2, "RUN": 3, "STATUS": 4}
#: reply status codes
STATUS = {"OK": 0, "BAD_CRC": 1, "BAD_OP": 2, "BAD_SPACE": 3, "BAD_ADDR": 4, "BAD_LEN": 5, "BUSY": 6}
_STATUS_NAMES = {v: k for k, v in STATUS.items()}
#: bytes of a host frame besides its payload (sync, op, space, 3 address, 2 length, crc) and of a reply
HEADER_BYTES, REPLY_HEADER_BYTES = 9, 6
#: the STATUS reply's payload: flags, then cycles (u32 little-endian)
STATUS_BYTES = 5
#: UART bits per byte on the wire (8N1: start, 8 data, stop)
BITS_PER_BYTE = 10
#: the payload a frame carries at most, unless one line of a space is wider (then one line): the board's payload
#: registers are this wide, so it trades flip-flops for link efficiency (a 4-byte line alone in a frame is 27 % of
#: the frame's bytes; 16 of them, 81 %)
PAYLOAD_BYTES = 64


def payload_capacity(spaces) -> int:
    """Bytes of payload a frame may carry on a link with these spaces: :data:`PAYLOAD_BYTES` or one widest line."""
    return max(PAYLOAD_BYTES, max(s.width for s in spaces))


def frame_lines(space, capacity: int) -> int:
    """Lines of ``space`` one frame carries at most (at least one)."""
    return max(1, min(255, capacity // space.width))


@dataclass(frozen=True)
class Space:
    """One memory space of the link: ``lines`` lines of ``width`` bytes; ``readable`` by ``READ``."""

    index: int
    name: str
    width: int
    lines: int
    readable: bool = True


def link_spaces(plan, dram_bytes: int) -> tuple[Space, ...]:
    """The link's memory map for an accelerator ``plan`` (:class:`hw.accel.plan.AccelPlan`) with ``dram_bytes`` of
    on-chip DRAM: the instruction memory, the buffers, the DRAM (their line widths are the hardware's ports)."""
    dline = plan.dram_line_bytes
    spaces = [Space(0, "imem", 32, plan.imem_depth, readable=False)]
    spaces += [Space(1 + i, b.name, b.line_bytes, b.lines) for i, b in enumerate(plan.buffers)]
    spaces.append(Space(1 + len(plan.buffers), "dram", dline, -(-dram_bytes // dline)))
    return tuple(spaces)


def crc8(data: bytes, crc: int = 0) -> int:
    """CRC-8, polynomial x^8 + x^2 + x + 1 (0x07), initial value ``crc``, no reflection, no final xor."""
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def frame(op: str | int, space: int = 0, addr: int = 0, payload: bytes = b"") -> bytes:
    """A host frame for command ``op`` (a name of :data:`OPS`, or a raw code: the benches send unknown ones)."""
    if not 0 <= addr < 1 << 24:
        raise ValueError(f"line address {addr} does not fit the frame's 24 bits")
    body = bytes([OPS[op] if isinstance(op, str) else op, space]) + addr.to_bytes(3, "little") + len(payload).to_bytes(2, "little") + payload
    return bytes([SYNC_HOST]) + body + bytes([crc8(body)])


def reply(op: int, status: int, payload: bytes = b"") -> bytes:
    """A board reply (what :mod:`hw.board.link` sends; used by the tests' expectations and a software board)."""
    body = bytes([op, status]) + len(payload).to_bytes(2, "little") + payload
    return bytes([SYNC_BOARD]) + body + bytes([crc8(body)])


def byte_cycles(divisor: int) -> int:
    """System cycles one byte takes on the wire at ``divisor`` clock cycles per bit."""
    return BITS_PER_BYTE * divisor


def load_seconds(spaces: tuple[Space, ...], lines: dict[str, int], baud: float) -> float:
    """Seconds the link takes to write ``lines[name]`` consecutive lines of each named space at ``baud``: full
    frames (:func:`frame_lines` lines each) and their replies; the board's turnaround of a few cycles a frame and
    the host's are left out."""
    by_name = {s.name: s for s in spaces}
    cap = payload_capacity(spaces)
    total = 0
    for k, n in lines.items():
        s = by_name[k]
        frames = -(-n // frame_lines(s, cap))
        total += frames * (HEADER_BYTES + REPLY_HEADER_BYTES) + n * s.width
    return total * BITS_PER_BYTE / baud


class LinkError(RuntimeError):
    """The board answered with an error status, a bad frame, or not at all."""


class Driver:
    """The host's side of the link over a byte transport with pyserial's ``write(bytes)`` / ``read(n)`` (a
    ``serial.Serial`` on a real port or on the simulated board's pseudo-terminal), for the memory map
    ``spaces``. Every call waits for its reply and raises :class:`LinkError` on anything but ``OK``."""

    def __init__(self, transport, spaces: tuple[Space, ...], *, timeout: float = 5.0):
        self.t, self.timeout = transport, timeout
        self.spaces = {s.name: s for s in spaces}
        self.capacity = payload_capacity(spaces)
        self.bytes_out = self.bytes_in = 0

    def _read_exact(self, n: int) -> bytes:
        out = b""
        deadline = time.monotonic() + self.timeout
        while len(out) < n:
            chunk = self.t.read(n - len(out))
            if chunk:
                out += chunk
                deadline = time.monotonic() + self.timeout
            elif time.monotonic() > deadline:
                raise LinkError(f"the board did not answer within {self.timeout:g} s "
                                f"(got {len(out)} of {n} bytes)")
        self.bytes_in += n
        return out

    def transact(self, op: str, space: int = 0, addr: int = 0, payload: bytes = b"") -> bytes:
        """Send one frame, return the reply's payload (after checking its sync byte, op, status and CRC)."""
        data = frame(op, space, addr, payload)
        self.t.write(data)
        self.bytes_out += len(data)
        head = self._read_exact(1)
        while head[0] != SYNC_BOARD:        # noise before a reply (a board just configured) is skipped
            head = self._read_exact(1)
        body = self._read_exact(4)
        n = int.from_bytes(body[2:4], "little")
        rest = self._read_exact(n + 1)
        got_op, status, payload_in, crc = body[0], body[1], rest[:n], rest[n]
        if crc8(body + payload_in) != crc:
            raise LinkError(f"reply to {op} has a bad checksum")
        if got_op != OPS[op]:
            raise LinkError(f"reply to {op} is for op {got_op}")
        if status != STATUS["OK"]:
            raise LinkError(f"{op} space {space} line {addr}: the board answered "
                            f"{_STATUS_NAMES.get(status, status)}")
        return payload_in

    def write_lines(self, space: str, data: np.ndarray | bytes, *, first: int = 0, skip_zero: bool = False) -> int:
        """Write ``data`` (bytes, padded to whole lines) into ``space`` from line ``first``; ``skip_zero`` leaves
        all-zero lines out (a board just configured holds zeros). Returns the lines sent."""
        s = self.spaces[space]
        raw = np.frombuffer(bytes(data), np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1)
        n = -(-raw.size // s.width)
        if first + n > s.lines:
            raise ValueError(f"{raw.size:,} bytes at line {first} do not fit {space} ({s.lines:,} lines of "
                             f"{s.width} bytes)")
        lines = np.zeros(n * s.width, np.uint8)
        lines[:raw.size] = raw
        lines = lines.reshape(n, s.width)
        most = frame_lines(s, self.capacity)
        keep = lines.any(axis=1) if skip_zero else np.ones(n, bool)
        sent = i = 0
        while i < n:
            if not keep[i]:
                i += 1
                continue
            j = i + 1               # a run of lines to send, at most a frame's worth
            while j < n and j - i < most and keep[j]:
                j += 1
            self.transact("WRITE", s.index, first + i, lines[i:j].tobytes())
            sent += j - i
            i = j
        return sent

    def read_lines(self, space: str, n: int, *, first: int = 0) -> np.ndarray:
        """Read ``n`` lines of ``space`` from line ``first`` (an ``[n, width]`` uint8 array)."""
        s = self.spaces[space]
        most = frame_lines(s, self.capacity)
        out = np.zeros((n, s.width), np.uint8)
        for i in range(0, n, most):
            k = min(most, n - i)
            got = self.transact("READ", s.index, first + i, bytes([k]) if k > 1 else b"")
            if len(got) != k * s.width:
                raise LinkError(f"READ of {k} lines of {space} returned {len(got)} bytes")
            out[i:i + k] = np.frombuffer(got, np.uint8).reshape(k, s.width)
        return out

    def load_program(self, words: np.ndarray) -> None:
        """Write the program's 256-bit instruction words (``isa`` encoding, ``[n, 32]`` bytes) from address 0."""
        self.write_lines("imem", np.asarray(words, np.uint8).reshape(-1, 32))

    def run(self) -> None:
        self.transact("RUN")

    def status(self) -> dict:
        """``running``, ``finished``, ``error`` and ``cycles`` as the board reports them."""
        p = self.transact("STATUS")
        return {"running": bool(p[0] & 1), "finished": bool(p[0] & 2), "error": bool(p[0] & 4),
                "cycles": int.from_bytes(p[1:5], "little")}

    def wait(self, *, timeout: float = 60.0, poll: float = 0.0) -> dict:
        """Poll ``STATUS`` until the program has finished (or stopped with an error); its status."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            if st["finished"] or st["error"]:
                return st
            if time.monotonic() > deadline:
                raise LinkError(f"the program did not finish within {timeout:g} s")
            if poll:
                time.sleep(poll)
