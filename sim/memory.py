"""The machine's memories as byte arrays, and the element formats of docs/isa.md §2: reading and writing matrix
regions of DRAM and the on-chip buffers. Both executors of a program (``sim.machine`` and the reference
``sim.interpret``) move data through these functions, so a format has one definition."""

from dataclasses import dataclass, field

import numpy as np

from isa.program import split_address
from isa.spec import BUFFERS

__all__ = ["Memories", "row_bytes", "read_matrix", "write_matrix", "read_bytes", "write_bytes"]

_BYTES = {"I8": 1, "I16": 2, "I32": 4, "F32": 4}
_DTYPES = {"I8": "<i1", "I16": "<i2", "I32": "<i4", "F32": "<f4"}


def row_bytes(cols: int, fmt: str) -> int:
    """Bytes of one packed row of ``cols`` elements of ``fmt``."""
    if fmt == "B1":
        return -(-cols // 8)
    return cols * _BYTES[fmt]


@dataclass
class Memories:
    """DRAM and the buffers, each a uint8 array; ``buffers[id]`` by the ISA's buffer numbers."""

    dram: np.ndarray
    buffers: dict[int, np.ndarray] = field(default_factory=dict)

    @classmethod
    def for_design(cls, design, dram: np.ndarray | bytes | None = None, dram_bytes: int = 0) -> "Memories":
        """Zeroed buffers of the design's sizes and a DRAM image (copied), at least ``dram_bytes`` long."""
        image = np.frombuffer(bytes(dram), np.uint8).copy() if dram is not None else np.zeros(0, np.uint8)
        if image.size < dram_bytes:
            image = np.concatenate([image, np.zeros(dram_bytes - image.size, np.uint8)])
        bufs = {BUFFERS[name]: np.zeros(spec.size_bytes, np.uint8) for name, spec in design.buffers.items()}
        return cls(image, bufs)

    def space(self, address: int, *, dram: bool) -> tuple[np.ndarray, int]:
        """The byte array an address falls in and the offset in it."""
        if dram:
            return self.dram, int(address)
        b, off = split_address(int(address))
        return self.buffers[b], off

    def copy(self) -> "Memories":
        return Memories(self.dram.copy(), {k: v.copy() for k, v in self.buffers.items()})


def read_bytes(mem: np.ndarray, offset: int, rows: int, nbytes: int, stride: int) -> np.ndarray:
    """``rows`` rows of ``nbytes`` bytes starting at ``offset``, ``stride`` apart: uint8 ``[rows, nbytes]``."""
    if rows == 0 or nbytes == 0:
        return np.zeros((rows, nbytes), np.uint8)
    idx = offset + np.arange(rows)[:, None] * stride + np.arange(nbytes)[None, :]
    if idx.max() >= mem.size:
        raise IndexError(f"a region of {rows} × {nbytes} bytes at {offset:#x} (stride {stride}) runs past the end "
                         f"of a {mem.size}-byte memory")
    return mem[idx]


def write_bytes(mem: np.ndarray, offset: int, data: np.ndarray, stride: int) -> None:
    """Write uint8 ``[rows, nbytes]`` at ``offset`` with ``stride`` bytes between rows."""
    data = np.asarray(data, np.uint8)
    rows, nbytes = data.shape
    if rows == 0 or nbytes == 0:
        return
    idx = offset + np.arange(rows)[:, None] * stride + np.arange(nbytes)[None, :]
    if idx.max() >= mem.size:
        raise IndexError(f"a region of {rows} × {nbytes} bytes at {offset:#x} (stride {stride}) runs past the end "
                         f"of a {mem.size}-byte memory")
    mem[idx] = data


def read_matrix(mem: np.ndarray, offset: int, rows: int, cols: int, fmt: str, stride: int = 0) -> np.ndarray:
    """A ``rows × cols`` matrix of ``fmt`` (int64; float32 for F32); ``stride`` 0 means packed rows."""
    rb = row_bytes(cols, fmt)
    raw = read_bytes(mem, offset, rows, rb, stride or rb)
    if fmt == "B1":
        return np.unpackbits(raw, axis=1, bitorder="little", count=cols).astype(np.int64)
    values = raw.copy().view(_DTYPES[fmt]).reshape(rows, cols)
    return values.astype(np.float32) if fmt == "F32" else values.astype(np.int64)


def write_matrix(mem: np.ndarray, offset: int, values, fmt: str, stride: int = 0) -> None:
    """Write a ``rows × cols`` matrix in ``fmt``; integer values must fit the format (refused otherwise)."""
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"a matrix region takes a 2-D array, not shape {values.shape}")
    rows, cols = values.shape
    rb = row_bytes(cols, fmt)
    if fmt == "B1":
        if values.size and (values.min() < 0 or values.max() > 1):
            raise ValueError("a B1 region holds bits 0 and 1 only")
        raw = np.packbits(values.astype(np.uint8), axis=1, bitorder="little")
    elif fmt == "F32":
        raw = np.ascontiguousarray(values, "<f4").view(np.uint8).reshape(rows, rb)
    else:
        info = np.iinfo(_DTYPES[fmt])
        if values.size and (values.min() < info.min or values.max() > info.max):
            raise ValueError(f"a value outside {fmt}'s range [{info.min}, {info.max}]")
        raw = np.ascontiguousarray(values.astype(_DTYPES[fmt])).view(np.uint8).reshape(rows, rb)
    write_bytes(mem, offset, raw, stride or rb)
