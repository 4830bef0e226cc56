"""Bit layout of stream payloads, in plain Python: what the manifest publishes and what drivers pack.

A payload is a sequence of fields packed LSB-first in declaration order (the order ``amaranth.lib.data``
uses for a ``StructLayout``). An array field stores its elements row-major, element 0 at the lowest
offset, each element ``elem_width`` bits (two's complement when ``signed``).
"""

from dataclasses import dataclass
from math import prod

import numpy as np

__all__ = ["Field", "PayloadLayout"]


@dataclass(frozen=True)
class Field:
    """One payload field: a scalar (``shape == ()``) or a row-major array of equal-width elements."""

    name: str
    offset: int
    elem_width: int
    signed: bool
    shape: tuple[int, ...] = ()

    @property
    def count(self) -> int:
        return prod(self.shape)

    @property
    def width(self) -> int:
        return self.count * self.elem_width

    def bit_offset(self, *index: int) -> int:
        """Offset of element ``index`` (row-major) within the whole payload."""
        if len(index) != len(self.shape) or any(not 0 <= i < n for i, n in zip(index, self.shape)):
            raise IndexError(f"index {index} out of range for field {self.name!r} of shape {self.shape}")
        flat = 0
        for i, n in zip(index, self.shape):
            flat = flat * n + i
        return self.offset + flat * self.elem_width

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "offset": self.offset,
            "width": self.width,
            "elem_width": self.elem_width,
            "signed": self.signed,
            "shape": list(self.shape),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Field":
        return cls(d["name"], int(d["offset"]), int(d["elem_width"]), bool(d["signed"]),
                   tuple(int(n) for n in d["shape"]))


@dataclass(frozen=True)
class PayloadLayout:
    """An ordered, gap-free set of fields."""

    fields: tuple[Field, ...]

    @classmethod
    def sequential(cls, *specs: tuple[str, int, bool, tuple[int, ...]]) -> "PayloadLayout":
        """Build a layout from ``(name, elem_width, signed, shape)`` specs placed one after the other."""
        fields, offset = [], 0
        for name, elem_width, signed, shape in specs:
            f = Field(name, offset, elem_width, signed, tuple(shape))
            fields.append(f)
            offset += f.width
        return cls(tuple(fields))

    @property
    def width(self) -> int:
        return sum(f.width for f in self.fields)

    @property
    def nbytes(self) -> int:
        return (self.width + 7) // 8

    def __getitem__(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"no field {name!r}; fields: {[f.name for f in self.fields]}")

    #: How a reader of the manifest finds an element (repeated in every manifest).
    PACKING = ("fields are packed LSB-first in the order listed; an array field stores its elements row-major, "
               "element 0 at the field offset, so element [i][j] of a field of shape [n, m] starts at bit "
               "offset + (i*m + j)*elem_width; signed elements are two's complement")

    def to_dict(self) -> dict:
        return {"width": self.width, "packing": self.PACKING, "fields": [f.to_dict() for f in self.fields]}

    @classmethod
    def from_dict(cls, d: dict) -> "PayloadLayout":
        layout = cls(tuple(Field.from_dict(f) for f in d["fields"]))
        if layout.width != int(d["width"]):
            raise ValueError(f"payload fields add up to {layout.width} bits, but the width says {d['width']}")
        return layout

    def pack(self, n: int, **values: np.ndarray) -> np.ndarray:
        """Pack ``n`` payloads into little-endian byte rows ``[n, nbytes]`` (uint8).

        ``values[name]`` has shape ``[n, *field.shape]``; every field must be given, and every value must
        fit its field (two's complement for signed fields).
        """
        missing = {f.name for f in self.fields} - values.keys()
        extra = values.keys() - {f.name for f in self.fields}
        if missing or extra:
            raise ValueError(f"pack needs exactly the fields {[f.name for f in self.fields]}; "
                             f"missing {sorted(missing)}, unexpected {sorted(extra)}")
        chunks = []
        for f in self.fields:
            v = np.asarray(values[f.name], dtype=np.int64).reshape(n, f.count)
            lo, hi = (-(1 << (f.elem_width - 1)), (1 << (f.elem_width - 1)) - 1) if f.signed \
                else (0, (1 << f.elem_width) - 1)
            if v.size and (v.min() < lo or v.max() > hi):
                bad = v[(v < lo) | (v > hi)][0]
                raise ValueError(f"field {f.name!r} value {int(bad)} does not fit {f.elem_width} "
                                 f"{'signed' if f.signed else 'unsigned'} bits")
            u = v.astype(np.uint64) & np.uint64((1 << f.elem_width) - 1)
            bits = (u[:, :, None] >> np.arange(f.elem_width, dtype=np.uint64)) & np.uint64(1)
            chunks.append(bits.reshape(n, f.width).astype(np.uint8))
        allbits = np.concatenate(chunks, axis=1) if chunks else np.zeros((n, 0), np.uint8)
        return np.packbits(allbits, axis=1, bitorder="little")

    def unpack(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Inverse of :meth:`pack`: byte rows ``[n, nbytes]`` → ``{name: int64 array [n, *shape]}``."""
        rows = np.asarray(rows, dtype=np.uint8)
        n = rows.shape[0]
        allbits = np.unpackbits(rows, axis=1, bitorder="little", count=self.width) if n else \
            np.zeros((0, self.width), np.uint8)
        out = {}
        for f in self.fields:
            bits = allbits[:, f.offset:f.offset + f.width].reshape(n, f.count, f.elem_width).astype(np.uint64)
            u = (bits << np.arange(f.elem_width, dtype=np.uint64)).sum(axis=2, dtype=np.uint64)
            if f.signed:
                if f.elem_width == 64:
                    v = u.view(np.int64)
                else:
                    v = u.astype(np.int64)
                    v = np.where(v >= (1 << (f.elem_width - 1)), v - (1 << f.elem_width), v)
            else:
                v = u.astype(np.int64)
            out[f.name] = v.reshape((n, *f.shape))
        return out

    @staticmethod
    def rows_to_ints(rows: np.ndarray) -> list[int]:
        """Byte rows → Python integers (what a simulator port is driven with)."""
        return [int.from_bytes(r.tobytes(), "little") for r in np.asarray(rows, dtype=np.uint8)]

    def ints_to_rows(self, values: list[int]) -> np.ndarray:
        """Python integers read from a port → byte rows."""
        return np.array([list(int(v).to_bytes(self.nbytes, "little")) for v in values],
                        dtype=np.uint8).reshape(len(values), self.nbytes)
