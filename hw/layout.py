"""Bit layout of stream payloads, in plain Python: what the manifest publishes and what drivers pack.

A payload is a sequence of fields packed LSB-first in declaration order (the order ``amaranth.lib.data``
uses for a ``StructLayout``). An array field stores its elements row-major, element 0 at the lowest
offset, each element ``elem_width`` bits.

Besides its bits, a field says what it means, so that a bench written from the manifest alone needs no
guesses: the names of its array dimensions (``axes``, from :data:`AXES`), how an element's bits encode a
value (``encoding``, from :data:`ENCODINGS`; a ``"code"`` field carries its code table), what the element
is (``role``, from :data:`ROLES`), and for operand fields what a sender puts into padded lanes and rows
(``padding``, raw element bits per padded axis).
"""

from dataclasses import dataclass, replace
from math import prod

import numpy as np

__all__ = ["Code", "Field", "PayloadLayout", "field", "AXES", "ENCODINGS", "ROLES", "PADDED_AXES"]

#: Encodings of an element's bits (published in every manifest).
ENCODINGS = {
    "twos_complement": "a signed integer, two's complement in elem_width bits",
    "unsigned": "an unsigned integer in elem_width bits",
    "bit_pm1": "one bit standing for a sign: 1 = +1, 0 = -1",
    "code": "a bit pattern looked up in the field's codes table (bits written most significant first); "
            "codes marked reserved must not be sent",
}

#: Array dimensions a field may have, outermost first in ``axes`` (published in every manifest).
AXES = {
    "lane": "reduction element within the beat: element k_chunk*lanes + lane of the reduction",
    "row": "output row within the row block: output row row_block*rows + row",
    "basis": "binary basis (bit plane) of the weights",
    "plane": "signed-sum output: one per basis (bases mode) or concentrated, sparse, salient, salient second "
             "order (billm mode)",
    "group": "BiLLM group: concentrated, sparse, salient",
}

#: Axes along which a problem is padded up to whole beats: K up to a multiple of lanes, M of rows.
PADDED_AXES = ("lane", "row")

#: What an element is (published in every manifest).
ROLES = {
    "activation": "an element of the activation vector (token) of this beat",
    "weight": "a weight-side element of the row block of this beat",
    "scale": "a per-row value of the row block, read only on the beat with last=1 (lowbit's drivers repeat it on "
             "every beat of the block)",
    "valid_lanes": "the number of lanes of this beat that are not padding",
    "last": "1 on the final beat of a reduction, 0 on the others; the result follows that beat",
    "result": "a result value of the row block and token of the reduction that produced this result beat",
}


@dataclass(frozen=True)
class Code:
    """One entry of a ``"code"`` field's table: the bit pattern, the value it stands for, and whether it is reserved
    (decoded by the hardware, never produced by a driver). ``value`` is None where the code stands for no value."""

    bits: int
    value: int | None
    reserved: bool = False
    label: str = ""

    def to_dict(self, width: int) -> dict:
        d = {"bits": format(self.bits, f"0{width}b"), "value": self.value}
        if self.reserved:
            d["reserved"] = True
        if self.label:
            d["label"] = self.label
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Code":
        return cls(int(d["bits"], 2), d["value"], bool(d.get("reserved", False)), d.get("label", ""))


@dataclass(frozen=True)
class Field:
    """One payload field: a scalar (``shape == ()``) or a row-major array of equal-width elements.

    ``signed`` is how lowbit's own drivers hold an element as a Python integer (:meth:`PayloadLayout.pack`) and
    the Amaranth element shape; the manifest publishes ``encoding`` instead. A ``"code"`` field's integer view is
    chosen so that the integer of every non-reserved code is the value it stands for (the ternary weight: two's
    complement, 0b11 = -1), so drivers pack values directly. ``padding`` holds ``(axis, raw bits)`` pairs.
    """

    name: str
    offset: int
    elem_width: int
    signed: bool
    shape: tuple[int, ...] = ()
    axes: tuple[str, ...] = ()
    encoding: str = ""
    codes: tuple[Code, ...] = ()
    role: str = ""
    padding: tuple[tuple[str, int], ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        object.__setattr__(self, "axes", tuple(self.axes))
        object.__setattr__(self, "codes", tuple(self.codes))
        pads = dict(self.padding)
        if set(pads) - set(PADDED_AXES):
            raise ValueError(f"field {self.name!r}: padding along {sorted(set(pads) - set(PADDED_AXES))}; only "
                             f"{list(PADDED_AXES)} are padded")
        object.__setattr__(self, "padding", tuple((a, int(pads[a])) for a in PADDED_AXES if a in pads))
        if not self.encoding:
            object.__setattr__(self, "encoding", "twos_complement" if self.signed else "unsigned")
        where = f"field {self.name!r}"
        if self.encoding not in ENCODINGS:
            raise ValueError(f"{where}: encoding {self.encoding!r} is not one of {sorted(ENCODINGS)}")
        if self.encoding == "code":
            self._check_codes()
        elif self.signed != (self.encoding == "twos_complement") or self.codes:
            raise ValueError(f"{where}: encoding {self.encoding!r} with signed={self.signed} "
                             f"and {len(self.codes)} codes")
        if self.encoding == "bit_pm1" and self.elem_width != 1:
            raise ValueError(f"{where}: a bit_pm1 element is one bit, not {self.elem_width}")
        if self.axes and (len(self.axes) != len(self.shape) or set(self.axes) - AXES.keys()
                          or len(set(self.axes)) != len(self.axes)):
            raise ValueError(f"{where}: axes {list(self.axes)} do not name the {len(self.shape)} dimensions of shape "
                             f"{list(self.shape)} with distinct names from {sorted(AXES)}")
        if self.role and self.role not in ROLES:
            raise ValueError(f"{where}: role {self.role!r} is not one of {sorted(ROLES)}")
        for axis, bits in self.padding:
            if axis not in self.axes:
                raise ValueError(f"{where}: padding for axis {axis!r}, which the field does not have")
            if not 0 <= bits < 1 << self.elem_width:
                raise ValueError(f"{where}: padding {bits} for {axis!r} does not fit {self.elem_width} raw bits")
            if self.codes and any(c.bits == bits and c.reserved for c in self.codes):
                raise ValueError(f"{where}: padding {bits:#b} for {axis!r} is a reserved code")

    def _check_codes(self) -> None:
        where = f"code field {self.name!r}"
        patterns = [c.bits for c in self.codes]
        if not self.codes or len(set(patterns)) != len(patterns) or \
                any(not 0 <= b < 1 << self.elem_width for b in patterns):
            raise ValueError(f"{where}: codes {patterns} must be distinct {self.elem_width}-bit patterns")
        for c in self.codes:
            if not c.reserved and c.value != self.from_bits(c.bits):
                raise ValueError(f"{where}: code {c.bits:#b} stands for {c.value}, but a driver packing {c.value} "
                                 f"writes {c.value & ((1 << self.elem_width) - 1):#b}")

    @staticmethod
    def code_view_signed(codes) -> bool:
        """The integer view of a code field: two's complement iff a non-reserved code stands for a negative value."""
        return any(not c.reserved and c.value is not None and c.value < 0 for c in codes)

    @property
    def count(self) -> int:
        return prod(self.shape)

    @property
    def width(self) -> int:
        return self.count * self.elem_width

    def from_bits(self, bits: int) -> int:
        """An element's raw bits as the integer lowbit's drivers hold (see ``signed``)."""
        if self.signed and bits >> (self.elem_width - 1) & 1:
            return bits - (1 << self.elem_width)
        return bits

    def pad(self, axis: str) -> int | None:
        """Raw bits a sender puts into elements padded along ``axis`` (``"lane"``: K, ``"row"``: M), or None."""
        return dict(self.padding).get(axis)

    def pad_value(self, axis: str) -> int:
        """:meth:`pad` as the integer :meth:`PayloadLayout.pack` takes; refuses an axis without padding."""
        bits = self.pad(axis)
        if bits is None:
            raise KeyError(f"field {self.name!r} has no padding along {axis!r}")
        return self.from_bits(bits)

    def bit_offset(self, *index: int) -> int:
        """Offset of element ``index`` (row-major) within the whole payload."""
        if len(index) != len(self.shape) or any(not 0 <= i < n for i, n in zip(index, self.shape)):
            raise IndexError(f"index {index} out of range for field {self.name!r} of shape {self.shape}")
        flat = 0
        for i, n in zip(index, self.shape):
            flat = flat * n + i
        return self.offset + flat * self.elem_width

    def to_dict(self) -> dict:
        """The manifest entry: placement, axes, encoding (code table), role, and for operands the padding."""
        d = {
            "name": self.name,
            "offset": self.offset,
            "width": self.width,
            "elem_width": self.elem_width,
            "shape": list(self.shape),
            "axes": list(self.axes),
            "encoding": self.encoding,
        }
        if self.codes:
            d["codes"] = [c.to_dict(self.elem_width) for c in self.codes]
        d["role"] = self.role
        if self.role != "result":
            d["padding"] = dict(self.padding)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Field":
        codes = tuple(Code.from_dict(c) for c in d.get("codes", ()))
        encoding = d["encoding"]
        signed = Field.code_view_signed(codes) if encoding == "code" else encoding == "twos_complement"
        return cls(d["name"], int(d["offset"]), int(d["elem_width"]), signed, tuple(int(n) for n in d["shape"]),
                   tuple(d["axes"]), encoding, codes, d.get("role", ""), tuple(d.get("padding", {}).items()))


def field(name: str, elem_width: int, encoding: str, role: str, dims: dict[str, int] | None = None, *,
          codes=()) -> Field:
    """A field spec for :meth:`PayloadLayout.sequential`: ``dims`` maps axis names to sizes, outermost first."""
    dims = dims or {}
    signed = Field.code_view_signed(codes) if encoding == "code" else encoding == "twos_complement"
    return Field(name, 0, elem_width, signed, tuple(dims.values()), tuple(dims), encoding, tuple(codes), role)


@dataclass(frozen=True)
class PayloadLayout:
    """An ordered, gap-free set of fields."""

    fields: tuple[Field, ...]

    @classmethod
    def sequential(cls, *specs) -> "PayloadLayout":
        """Build a layout from specs placed one after the other: :func:`field` specs, or plain
        ``(name, elem_width, signed, shape)`` tuples (unnamed axes, encoding from ``signed``)."""
        fields, offset = [], 0
        for spec in specs:
            if not isinstance(spec, Field):
                name, elem_width, signed, shape = spec
                spec = Field(name, 0, elem_width, signed, tuple(shape))
            f = replace(spec, offset=offset)
            fields.append(f)
            offset += f.width
        return cls(tuple(fields))

    def with_padding(self, padding: dict[str, dict[str, int]]) -> "PayloadLayout":
        """The layout with ``padding[field][axis]`` (raw bits) attached; every field with a padded axis must get
        a value for each such axis, and no other field may be named."""
        unknown = padding.keys() - {f.name for f in self.fields}
        if unknown:
            raise ValueError(f"padding for fields {sorted(unknown)} that the layout does not have")
        out = []
        for f in self.fields:
            pads = padding.get(f.name, {})
            needed = [a for a in PADDED_AXES if a in f.axes]
            if sorted(pads) != sorted(needed):
                raise ValueError(f"field {f.name!r} has padded axes {needed} but padding for {sorted(pads)}")
            out.append(replace(f, padding=tuple(pads.items())))
        return PayloadLayout(tuple(out))

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
               "offset + (i*m + j)*elem_width; each element's bits are read as its encoding says")

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
