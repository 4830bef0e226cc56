"""The in-memory program: instruction words in one NumPy structured array, the op table and metadata.

Two ways to build one:

* :func:`block` encodes ``n`` instructions of one opcode at once, every field broadcast from a scalar or taken
  from an array, range-checked vectorized; :meth:`Program.from_blocks` concatenates blocks. This is the
  compiler's path: a program of 10⁵ instructions is a few dozen array operations, not 10⁵ Python calls.
* :class:`ProgramBuilder` appends one instruction per call, for tests and small hand-written programs.

Both encode through the one field table of :mod:`isa.spec` (``FIELDS``), which :meth:`Program.field` and
:meth:`Program.instruction` decode with, so encoder and decoder cannot drift apart.

A :class:`Program` is structurally sound on construction (known opcodes, reserved bits 0, every ``op_ref`` inside
the op table); whether its fields, tokens and regions make sense on a machine is :func:`isa.validate.validate`'s
question.
"""

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from isa import spec
from isa.spec import (BUFFER_SHIFT, BUFFERS, DEP_FLAGS, FIELDS, FLAG_BITS, FORMATS, HEADER_RESERVED_MASK,
                      HOST_FUNCTIONS, NO_ADDRESS, NO_OP_REF, OP_REF_SHIFT, OPCODES, POST_FUNCTIONS, QUEUES, Field)

__all__ = ["WORD_DTYPE", "ProgramError", "Program", "Instruction", "ProgramBuilder", "block", "address",
           "split_address", "format_address", "format_value", "parse_value", "check_values"]

#: One instruction: a 32-bit header and seven 32-bit operand words, little-endian, exactly the file's layout.
WORD_DTYPE = np.dtype([("header", "<u4"), ("a", "<u4", (7,))])
assert WORD_DTYPE.itemsize == spec.WORD_BYTES


class ProgramError(ValueError):
    """A program, program file, listing or builder call the instruction set refuses. The one-line message names
    the instruction index and the field (or the byte offset of a file, or the line of a listing)."""


OPCODE_NAMES = {v: k for k, v in OPCODES.items()}
BUFFER_NAMES = {v: k for k, v in BUFFERS.items()}
_OFFSET_MASK = (1 << BUFFER_SHIFT) - 1

# Enumerated kinds: id → name, so a value is valid exactly when it is a key.
_ENUMS = {
    "format": {v: k for k, v in FORMATS.items()},
    "post_fn": {v: k for k, v in POST_FUNCTIONS.items()},
    "host_fn": {v: k for k, v in HOST_FUNCTIONS.items()},
    "queue": {v: k for k, v in QUEUES.items()},
}
_ENUM_WHAT = {"format": "format", "post_fn": "POST function", "host_fn": "HOST function", "queue": "queue"}
_ADDRESS_KINDS = ("address", "optional_address")


def _reserved_masks() -> np.ndarray:
    """[opcode 0..15, word 0..7] → the bits that must be 0: header bits 8–15 and every operand bit no field of
    that opcode covers. Unknown opcodes (8–15) get all operand bits, but they are refused before this is read."""
    masks = np.full((1 << spec.OPCODE_BITS, 8), 0xFFFF_FFFF, np.uint32)
    masks[:, 0] = HEADER_RESERVED_MASK
    for name, fields in FIELDS.items():
        used = [0] * 7
        for f in fields:
            used[f.word] |= f.mask
        masks[OPCODES[name], 1:] = [~u & 0xFFFF_FFFF for u in used]
    return masks


RESERVED_MASKS = _reserved_masks()
RESERVED_MASKS.setflags(write=False)


# -- addresses ---------------------------------------------------------------------------------------------

def _buffer_id(buffer) -> int:
    if isinstance(buffer, str):
        if buffer not in BUFFERS:
            raise ProgramError(f"unknown buffer {buffer!r} (buffers: {', '.join(BUFFERS)})")
        return BUFFERS[buffer]
    b = int(buffer)
    if b not in BUFFER_NAMES:
        raise ProgramError(f"unknown buffer id {b} (buffers: "
                           f"{', '.join(f'{k}={v}' for k, v in BUFFERS.items())})")
    return b


def address(buffer, offset=0):
    """The address of byte ``offset`` of ``buffer`` (a name of ``spec.BUFFERS`` or its id): ``buffer << 28 |
    offset``. ``offset`` may be an integer array (the result is then an int64 array)."""
    b = _buffer_id(buffer)
    if isinstance(offset, (int, np.integer)):
        if not 0 <= offset <= _OFFSET_MASK:
            raise ProgramError(f"buffer offset {int(offset):#x} is outside 0..{_OFFSET_MASK:#x}")
        return b << BUFFER_SHIFT | int(offset)
    off = np.asarray(offset)
    if off.dtype.kind not in "iu":
        raise ProgramError(f"buffer offsets must be integers, not {off.dtype}")
    off = off.astype(np.int64)
    bad = (off < 0) | (off > _OFFSET_MASK)
    if bad.any():
        i = int(np.argmax(bad))
        raise ProgramError(f"buffer offset {int(off[i]):#x} at index {i} is outside 0..{_OFFSET_MASK:#x}")
    return off | (b << BUFFER_SHIFT)


def split_address(addr):
    """The inverse of :func:`address`: ``(buffer id, byte offset)``, of ints or of int64 arrays."""
    if isinstance(addr, (int, np.integer)):
        return int(addr) >> BUFFER_SHIFT, int(addr) & _OFFSET_MASK
    a = np.asarray(addr).astype(np.int64)
    return a >> BUFFER_SHIFT, a & _OFFSET_MASK


def format_address(addr: int) -> str:
    """``weights+0x400``; ``none`` for NO_ADDRESS; plain hex when the buffer number names no buffer."""
    addr = int(addr)
    if addr == NO_ADDRESS:
        return "none"
    b = addr >> BUFFER_SHIFT
    if b in BUFFER_NAMES:
        return f"{BUFFER_NAMES[b]}+{addr & _OFFSET_MASK:#x}"
    return f"{addr:#x}"


# -- field values: one check, one text form ----------------------------------------------------------------

def _problem(opcode: str, f: Field, v: int) -> str | None:
    """Why ``v`` is not a valid value of field ``f`` of ``opcode``, or None."""
    lo, hi = f.range
    if f.kind in _ADDRESS_KINDS and v == NO_ADDRESS:
        return None if f.kind == "optional_address" else f"field {f.name} = none, but {opcode} needs an address"
    if not lo <= v <= hi:
        shown = f"{v:#x}" if f.kind in ("dram", "bits") + _ADDRESS_KINDS else str(v)
        return f"field {f.name} = {shown} is out of range {lo}..{hi}"
    if f.kind in _ENUMS and v not in _ENUMS[f.kind]:
        known = ", ".join(f"{n}={i}" for i, n in _ENUMS[f.kind].items())
        return f"field {f.name} = {v} is not a {_ENUM_WHAT[f.kind]} (known: {known})"
    if f.kind in _ADDRESS_KINDS and (v >> BUFFER_SHIFT) not in BUFFER_NAMES:
        known = ", ".join(f"{n}={i}" for n, i in BUFFERS.items())
        return (f"field {f.name} = {v:#x} names buffer {v >> BUFFER_SHIFT}, which does not exist "
                f"(buffers: {known})")
    return None


def _enum_table(kind: str, width: int) -> np.ndarray:
    t = np.zeros(1 << width, bool)
    t[list(_ENUMS[kind])] = True
    return t


_ENUM_TABLES: dict[tuple[str, int], np.ndarray] = {}


_MAX_ADDRESS = len(BUFFERS) << BUFFER_SHIFT       # buffer ids are 0, 1, 2: every valid address is below this
assert sorted(BUFFER_NAMES) == list(range(len(BUFFERS)))


def check_values(opcode: str, f: Field, values: np.ndarray) -> int:
    """Position of the first invalid value of field ``f`` in the int64 array ``values``, or -1 (vectorized;
    :func:`_problem` says why)."""
    if values.size == 0:
        return -1
    vmin, vmax = int(values.min()), int(values.max())
    if f.kind in _ADDRESS_KINDS:
        if vmin >= 0 and vmax < _MAX_ADDRESS:
            return -1
        ok = (values >= 0) & (values < _MAX_ADDRESS)
        if f.kind == "optional_address":
            ok |= values == NO_ADDRESS
        return -1 if ok.all() else int(np.argmin(ok))
    lo, hi = f.range
    if vmin < lo or vmax > hi:
        return int(np.argmax((values < lo) | (values > hi)))
    if f.kind in _ENUMS:
        table = _ENUM_TABLES.get((f.kind, f.width))
        if table is None:
            table = _ENUM_TABLES[(f.kind, f.width)] = _enum_table(f.kind, f.width)
        ok = table[values]
        if not ok.all():
            return int(np.argmin(ok))
    return -1


def format_value(f: Field, v: int) -> str:
    """The listing's text of value ``v`` of field ``f`` (names for enumerations and buffers)."""
    if f.kind in _ADDRESS_KINDS:
        return format_address(v)
    if f.kind == "dram":
        return f"{v:#x}"
    if f.kind == "bits":
        return f"{v:#010x}"
    if f.kind in _ENUMS:
        return _ENUMS[f.kind].get(v, str(v))
    return str(v)


_NAMES_BY_KIND = {
    "format": FORMATS, "post_fn": POST_FUNCTIONS, "host_fn": HOST_FUNCTIONS, "queue": QUEUES,
}


def parse_value(opcode: str, f: Field, text: str) -> int:
    """The value of field ``f`` written as ``text`` (a number in any base Python reads, an enumeration name, or an
    address ``buffer+offset`` / ``none``); refuses malformed text, naming the field. Range is not checked here."""
    t = text.strip()
    if f.kind in _NAMES_BY_KIND and t in _NAMES_BY_KIND[f.kind]:
        return _NAMES_BY_KIND[f.kind][t]
    if f.kind in _ADDRESS_KINDS:
        if t == "none":
            return NO_ADDRESS
        name, plus, rest = t.partition("+")
        if name in BUFFERS:
            off = _number(opcode, f, rest) if plus else 0
            if not 0 <= off <= _OFFSET_MASK:
                raise ProgramError(f"{opcode} field {f.name}: offset {rest} is outside 0..{_OFFSET_MASK:#x}")
            return BUFFERS[name] << BUFFER_SHIFT | off
    return _number(opcode, f, t)


def _number(opcode: str, f: Field, t: str) -> int:
    try:
        return int(t, 0)
    except ValueError:
        names = ""
        if f.kind in _NAMES_BY_KIND:
            names = f" or one of {', '.join(_NAMES_BY_KIND[f.kind])}"
        elif f.kind in _ADDRESS_KINDS:
            names = f" or buffer+offset ({', '.join(BUFFERS)}) or none"
        raise ProgramError(f"{opcode} field {f.name}: malformed number {t!r} (expected an integer{names})") from None


# -- blocks ------------------------------------------------------------------------------------------------

def _array(where: str, what: str, x, n: int) -> np.ndarray:
    """``x`` as a 1-D int64 array of length ``n``, refused naming ``what`` if it is not one."""
    a = np.asarray(x)
    if a.dtype.kind not in "iub":
        raise ProgramError(f"{where}: {what} must be integers, not {a.dtype} values")
    if a.ndim != 1:
        raise ProgramError(f"{where}: {what} must be a scalar or a 1-D array, not shape {a.shape}")
    if len(a) != n:
        raise ProgramError(f"{where}: {what} has {len(a)} values, expected n = {n}")
    return a.astype(np.int64, copy=False)


_INTS = (int, np.integer, np.bool_)
_PLAIN_KINDS = ("int", "flag", "dram", "bits")          # kinds whose validity is just the range
# Per opcode: the field table by name, and per field (field, column of the n × 8 word array, lo, value mask,
# smallest and largest value, whether the range is all there is to check).
_TABLES = {op: spec.field_table(op) for op in FIELDS}
_PLANS = {op: tuple((f, f.word + 1, f.lo, (1 << f.width) - 1, *f.range, f.kind in _PLAIN_KINDS) for f in fields)
          for op, fields in FIELDS.items()}
_MISSING = object()
_FLAG_ARGS = tuple(DEP_FLAGS.items())


def _size_of(x) -> int | None:
    if isinstance(x, (_INTS, str)) or x is None:
        return None
    a = np.asarray(x)
    return len(a) if a.ndim else None


def block(opcode: str, n: int | None = None, /, *, op_ref=NO_OP_REF, deps=0, pop_prev=0, pop_next=0, push_prev=0,
          push_next=0, **fields) -> np.ndarray:
    """``n`` instructions of ``opcode`` as a WORD_DTYPE array, vectorized.

    Every field (``spec.FIELDS[opcode]``), ``op_ref`` (None or NO_OP_REF: none), ``deps`` (the 4-bit flag value,
    ``spec.DEP_FLAGS``) and the four flags is a scalar, broadcast, or a length-``n`` integer (or bool) array;
    enumerations and addresses may also be given by name (``fn="combine"``, ``sram="activations+0x40"``). Fields
    with a default may be left out. ``n`` (positional: MATMUL has a field ``n``) may be left out when some value
    is an array. Every value is range-checked; a bad one is refused naming the field and its position in the
    block.
    """
    plan = _PLANS.get(opcode)
    if plan is None:
        raise ProgramError(f"block: unknown opcode {opcode!r} (opcodes: {', '.join(OPCODES)})")
    where = f"block({opcode})"
    table = _TABLES[opcode]
    for k in fields:
        if k not in table:
            hint = " (give the instruction count positionally: block(opcode, n, ...))" if k == "n" else ""
            raise ProgramError(f"{where}: {opcode} has no field {k!r} (fields: {', '.join(table) or 'none'})"
                               f"{hint}")
    flag_values = (pop_prev, pop_next, push_prev, push_next)
    if n is None:
        n = next((s for s in map(_size_of, (*fields.values(), op_ref, deps, *flag_values)) if s is not None), None)
        if n is None:
            raise ProgramError(f"{where}: give n, or at least one value as an array")
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
        raise ProgramError(f"{where}: n must be a non-negative integer, not {n!r}")
    n = int(n)

    consts = [0] * 8                       # per column: every scalar field ORed together
    parts: list[list] = [[] for _ in range(8)]   # per column: (array, lo) of the array fields, range-checked
    resolved: dict[str, object] = {}
    for f, col, lo, mask, vlo, vhi, plain in plan:
        x = fields.get(f.name, _MISSING)
        if x is _MISSING:
            if f.default is None:
                raise ProgramError(f"{where}: missing field {f.name!r} (it has no default)")
            v = resolved[f.default] if isinstance(f.default, str) else f.default   # valid by construction
        else:
            if isinstance(x, str):
                x = parse_value(opcode, f, x)
            if isinstance(x, _INTS):
                v = int(x)
                if not (plain and vlo <= v <= vhi):
                    why = _problem(opcode, f, v)
                    if why:
                        raise ProgramError(f"{where}: {why}")
            else:
                v = _array(where, f"field {f.name}", x, n)
                i = check_values(opcode, f, v)
                if i >= 0:
                    raise ProgramError(f"{where}: {_problem(opcode, f, int(v[i]))} at position {i}")
        resolved[f.name] = v
        if isinstance(v, int):
            consts[col] |= (v & mask) << lo
        else:
            parts[col].append((v & mask if f.signed else v, lo))   # the & makes a signed value two's complement

    # Header: opcode | deps << 4 | op_ref << 16.
    consts[0] = OPCODES[opcode]
    for (name, bit), x in zip((("deps", 1), *_FLAG_ARGS), (deps, *flag_values)):
        hi = 15 if name == "deps" else 1
        if isinstance(x, _INTS):
            v = int(x)
            if not 0 <= v <= hi:
                raise ProgramError(f"{where}: {name} = {v} is out of range 0..{hi}")
            consts[0] |= (v * bit) << 4
        else:
            a = np.asarray(x)
            if a.dtype != bool:
                a = _array(where, name, a, n)
                if a.size and (a.min() < 0 or a.max() > hi):
                    i = int(np.argmax((a < 0) | (a > hi)))
                    raise ProgramError(f"{where}: {name} = {int(a[i])} at position {i} is out of range 0..{hi}")
            elif a.shape != (n,):
                raise ProgramError(f"{where}: {name} has shape {a.shape}, expected ({n},)")
            parts[0].append((a, 4 + bit.bit_length() - 1))
    if op_ref is None:
        op_ref = NO_OP_REF
    if isinstance(op_ref, _INTS):
        if not 0 <= op_ref <= NO_OP_REF:
            raise ProgramError(f"{where}: op_ref = {op_ref} is out of range 0..{NO_OP_REF}")
        consts[0] |= int(op_ref) << OP_REF_SHIFT
    else:
        a = _array(where, "op_ref", op_ref, n)
        if a.size and (a.min() < 0 or a.max() > NO_OP_REF):
            i = int(np.argmax((a < 0) | (a > NO_OP_REF)))
            raise ProgramError(f"{where}: op_ref = {int(a[i])} at position {i} is out of range 0..{NO_OP_REF}")
        parts[0].append((a, OP_REF_SHIFT))

    words = np.empty((n, 8), np.uint32)
    words[:] = consts                       # one broadcast for every scalar; array columns are redone below
    for col in range(8):
        if not parts[col]:
            continue
        # Every value is checked to fit its bits, so shifting and ORing cannot spill into a neighbour; the
        # column assignment casts to uint32 exactly.
        acc = None
        for v, lo in parts[col]:
            x = (v.astype(np.int64) << lo) if lo else v
            acc = x if acc is None else acc | x
        words[:, col] = acc | consts[col] if consts[col] else acc
    return words.view(WORD_DTYPE)[:, 0]


def _extract(col: np.ndarray, f: Field) -> np.ndarray:
    """Field ``f`` from the uint32 column ``col`` as int64 (sign-extended when the field is signed)."""
    if f.width == 32:
        v = col.astype(np.int64)
    else:
        v = ((col >> np.uint32(f.lo)) & np.uint32((1 << f.width) - 1)).astype(np.int64)
    if f.signed:
        v = np.where(v >= 1 << (f.width - 1), v - (1 << f.width), v)
    return v


_RESERVED64 = RESERVED_MASKS.view(np.uint64)       # [opcode, 4]: the same masks, two words at a time


def _check_structure(words: np.ndarray, n_ops: int, where=lambda i: f"instruction {i}") -> None:
    """Refuse unknown opcodes, reserved bits set and op_refs outside the op table, naming the first instruction;
    ``where(i)`` names instruction i (a file reader adds its byte offset). The common case, nothing wrong, is
    three whole-array tests; the culprit is only looked for when one fails."""
    n = len(words)
    if n == 0:
        return
    raw = words.view(np.uint32).reshape(n, 8)
    header = raw[:, 0]
    op = header & 0xF
    if int(op.max()) >= len(OPCODES):
        i = int(np.argmax(op >= len(OPCODES)))
        raise ProgramError(f"{where(i)}: unknown opcode {int(op[i])} in header bits 0–3 (known: "
                           f"{', '.join(f'{v} {k}' for k, v in OPCODES.items())})")
    if (raw.view(np.uint64) & _RESERVED64.take(op, axis=0)).any():
        bad = raw & RESERVED_MASKS[op]
        i = int(np.argmax(bad.any(axis=1)))
        w = int(np.argmax(bad[i] != 0))
        bits = int(bad[i, w])
        which = "header" if w == 0 else f"operand word a{w - 1}"
        set_bits = [b for b in range(32) if bits >> b & 1]
        raise ProgramError(f"{where(i)} ({OPCODE_NAMES[int(op[i])]}): reserved {which} bits set: "
                           f"{', '.join(map(str, set_bits))} ({bits:#010x}); they must be 0")
    # op_ref + 1 (mod 2**16) is 0 for none and ref + 1 otherwise, so one maximum tests every reference.
    ref1 = ((header >> OP_REF_SHIFT) + 1) & 0xFFFF
    if int(ref1.max()) > n_ops:
        i = int(np.argmax(ref1 > n_ops))
        raise ProgramError(f"{where(i)} ({OPCODE_NAMES[int(op[i])]}): field op_ref = {int(ref1[i]) - 1} is "
                           f"outside the op table ({n_ops} ops; {NO_OP_REF} means none)")


# -- the program -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Instruction:
    """One decoded instruction (listings, the reference interpreter): ``ins["m"]`` reads a field."""

    index: int
    opcode: str
    fields: Mapping[str, int]
    flags: tuple[str, ...]
    op_ref: int | None

    def __getitem__(self, name: str) -> int:
        return self.fields[name]

    @property
    def queue(self) -> str | None:
        """The queue the instruction executes on (None for NOP and FINISH)."""
        if self.opcode == "SYNC":
            return {v: k for k, v in QUEUES.items()}.get(self.fields["queue"])
        return spec.OPCODE_QUEUE.get(self.opcode)


def _check_op_table(op_table) -> list[dict]:
    if isinstance(op_table, (str, bytes, Mapping)) or not isinstance(op_table, Iterable):
        raise ProgramError(f"op table must be a list of dicts, not {type(op_table).__name__}")
    ops = list(op_table)
    for i, op in enumerate(ops):
        if not isinstance(op, Mapping):
            raise ProgramError(f"op table entry {i} must be a dict, not {type(op).__name__}")
        for key in ("name", "kind"):
            if not isinstance(op.get(key), str):
                raise ProgramError(f"op table entry {i} needs a string {key!r} (it has {dict(op)!r:.80})")
    if len(ops) >= NO_OP_REF:
        raise ProgramError(f"op table has {len(ops)} ops; op_ref holds at most {NO_OP_REF - 1} (16 bits, "
                           f"{NO_OP_REF} meaning none)")
    return [dict(op) for op in ops]


class Program:
    """Instruction words (a read-only WORD_DTYPE array, ``words``), the op table (``op_table``: list of dicts with
    at least ``name`` and ``kind``), the design name and free-form metadata (``meta``, JSON-able).

    Construction refuses unknown opcodes, reserved bits and op_refs outside the op table. A writeable ``words``
    array is copied (so later writes by the caller cannot change the program).
    """

    __slots__ = ("words", "op_table", "design", "meta", "_cache")

    def __init__(self, words, op_table=(), *, design: str = "", meta: Mapping | None = None):
        w = np.asarray(words)
        if w.dtype != WORD_DTYPE:
            if w.dtype.kind in "iu" and w.ndim == 2 and w.shape[1] == 8:
                if w.dtype != np.uint32 and w.size and (w.min() < 0 or w.max() > 0xFFFF_FFFF):
                    i, j = np.argwhere((w < 0) | (w > 0xFFFF_FFFF))[0]
                    raise ProgramError(f"instruction {i}: word {j} = {int(w[i, j])} is not a 32-bit word")
                w = np.ascontiguousarray(w, dtype="<u4").view(WORD_DTYPE)[:, 0]
            else:
                raise ProgramError(f"instruction words must be a WORD_DTYPE array or n × 8 uint32, not "
                                   f"{w.dtype} of shape {w.shape}")
        if w.ndim != 1:
            raise ProgramError(f"instruction words must be 1-D, not shape {w.shape}")
        if w.flags.writeable or not w.flags.c_contiguous:
            w = w.copy()
        self._init(w, op_table, design, meta)

    def _init(self, w, op_table, design, meta, where=lambda i: f"instruction {i}"):
        if not isinstance(design, str):
            raise ProgramError(f"design name must be a string, not {type(design).__name__}")
        if meta is not None and not isinstance(meta, Mapping):
            raise ProgramError(f"program metadata must be a dict, not {type(meta).__name__}")
        w.setflags(write=False)
        self.op_table = _check_op_table(op_table)
        _check_structure(w, len(self.op_table), where)
        self.words = w
        self.design = design
        self.meta = dict(meta or {})
        self._cache = {}

    @classmethod
    def from_blocks(cls, blocks: Iterable[np.ndarray], *, order=None, op_table=(), design: str = "",
                    meta: Mapping | None = None) -> "Program":
        """Concatenate :func:`block` arrays into a program: in the given order, or, with ``order`` (a permutation
        of all their instructions), instruction ``j`` of the program is row ``order[j]`` of the concatenation
        (how a compiler interleaves per-opcode blocks, e.g. load i+1 before matmul i)."""
        parts = list(blocks)
        for i, b in enumerate(parts):
            if not isinstance(b, np.ndarray) or b.dtype != WORD_DTYPE or b.ndim != 1:
                raise ProgramError(f"from_blocks: block {i} is not a 1-D WORD_DTYPE array (use isa.program.block)")
        # Joining the raw bytes is several times faster than concatenating structured arrays, and the result,
        # a view of an immutable bytes object, is read-only as a Program's words must be.
        w = np.frombuffer(b"".join(b if b.flags.c_contiguous else b.copy() for b in parts), WORD_DTYPE)
        if order is not None:
            order = np.asarray(order)
            if order.dtype.kind not in "iu" or order.shape != w.shape:
                raise ProgramError(f"from_blocks: order must be {len(w)} integers (a permutation of the blocks' "
                                   f"instructions), not {order.dtype} of shape {order.shape}")
            if len(w) and (order.min() < 0 or order.max() >= len(w)):
                j = int(np.argmax((order < 0) | (order >= len(w))))
                raise ProgramError(f"from_blocks: order[{j}] = {int(order[j])} is outside 0..{len(w) - 1}")
            hit = np.zeros(len(w), bool)
            hit[order] = True
            if not hit.all():
                raise ProgramError(f"from_blocks: order is not a permutation: row {int(np.argmin(hit))} is never "
                                   f"taken (another is taken twice)")
            w = w.view("V32")[order].view(WORD_DTYPE)     # a plain 32-byte gather, no per-field copy
        p = cls.__new__(cls)
        p._init(w, op_table, design, meta)
        return p

    @classmethod
    def _adopt(cls, words: np.ndarray, op_table, design, meta, where=lambda i: f"instruction {i}", *,
               checked: bool = False) -> "Program":
        """Wrap ``words`` as it is (a file reader's read-only view), checked as usual; ``where(i)`` names
        instruction i in a refusal. ``checked``: the words were made by :func:`block` (every field range-checked,
        reserved bits zero by construction) and op_refs are known to be in the op table, so the whole-array
        structure check is skipped (the compiler's chunks, hundreds of MB for a long decode run)."""
        p = cls.__new__(cls)
        if checked:
            words.setflags(write=False)
            p.op_table = _check_op_table(op_table)
            p.words, p.design, p.meta, p._cache = words, design, dict(meta or {}), {}
            return p
        p._init(words, op_table, design, meta, where)
        return p

    # -- vectorized views ------------------------------------------------------------------------------

    def _get(self, key, make):
        v = self._cache.get(key)
        if v is None:
            v = self._cache[key] = make()
            if isinstance(v, np.ndarray):
                v.setflags(write=False)
        return v

    def __len__(self) -> int:
        return len(self.words)

    @property
    def opcodes(self) -> np.ndarray:
        """Opcode number of every instruction (uint8)."""
        return self._get("opcodes", lambda: (self.words["header"] & 0xF).astype(np.uint8))

    @property
    def deps(self) -> np.ndarray:
        """The four dependency flags of every instruction as a 4-bit value (uint8, ``spec.DEP_FLAGS`` bits)."""
        return self._get("deps", lambda: ((self.words["header"] >> 4) & 0xF).astype(np.uint8))

    def flag(self, name: str) -> np.ndarray:
        """Whether each instruction has flag ``name`` (pop_prev, pop_next, push_prev, push_next); bool array."""
        if name not in DEP_FLAGS:
            raise ProgramError(f"unknown flag {name!r} (flags: {', '.join(DEP_FLAGS)})")
        return self._get(("flag", name), lambda: (self.deps & DEP_FLAGS[name]) != 0)

    @property
    def op_refs(self) -> np.ndarray:
        """Op-table index of every instruction (uint16; NO_OP_REF: none)."""
        return self._get("op_refs", lambda: (self.words["header"] >> OP_REF_SHIFT).astype(np.uint16))

    def indices(self, opcode: str) -> np.ndarray:
        """Program indices of the instructions of ``opcode``, in program order (int64)."""
        if opcode not in OPCODES:
            raise ProgramError(f"unknown opcode {opcode!r} (opcodes: {', '.join(OPCODES)})")
        return self._get(("idx", opcode), lambda: np.flatnonzero(self.opcodes == OPCODES[opcode]))

    def field(self, opcode: str, name: str) -> np.ndarray:
        """Field ``name`` of every ``opcode`` instruction, in program order (int64; see :meth:`indices`)."""
        f = _TABLES[opcode].get(name) if opcode in _TABLES else None
        if f is None:
            self.indices(opcode)                         # refuses an unknown opcode
            raise ProgramError(f"{opcode} has no field {name!r} (fields: {', '.join(_TABLES[opcode]) or 'none'})")
        return self._get(("field", opcode, name), lambda: _extract(self._rows(opcode)[:, 1 + f.word], f))

    def _rows(self, opcode: str) -> np.ndarray:
        """The words of every ``opcode`` instruction as a k × 8 uint32 array: one gather of whole 32-byte rows per
        opcode, which every field of that opcode then reads."""
        def make():
            idx = self.indices(opcode)
            rows = self.words.view("V32")[idx] if len(idx) != len(self.words) else self.words.view("V32")
            return rows.view(np.uint32).reshape(len(idx), 8)
        return self._get(("rows", opcode), make)

    def counts(self) -> dict[str, int]:
        """Instructions per opcode (every opcode, zeros included)."""
        c = np.bincount(self.opcodes, minlength=len(OPCODES))
        return {name: int(c[code]) for name, code in OPCODES.items()}

    # -- one instruction -------------------------------------------------------------------------------

    def instruction(self, i: int) -> Instruction:
        """Instruction ``i`` decoded into named fields."""
        n = len(self.words)
        if not -n <= i < n:
            raise IndexError(f"instruction {i} is outside the program ({n} instructions)")
        i = int(i) % n
        header = int(self.words["header"][i])
        a = [int(x) for x in self.words["a"][i]]
        opcode = OPCODE_NAMES[header & 0xF]
        fields = {}
        for f in FIELDS[opcode]:
            v = (a[f.word] >> f.lo) & ((1 << f.width) - 1)
            if f.signed and v >> (f.width - 1):
                v -= 1 << f.width
            fields[f.name] = v
        flags = tuple(name for name, bit in FLAG_BITS.items() if header >> bit & 1)
        ref = header >> OP_REF_SHIFT
        return Instruction(i, opcode, MappingProxyType(fields), flags, None if ref == NO_OP_REF else ref)

    def __iter__(self) -> Iterator[Instruction]:
        return (self.instruction(i) for i in range(len(self.words)))

    def op_name(self, ref: int | None) -> str | None:
        """The op-table name of ``ref`` (None for none)."""
        return None if ref is None or ref == NO_OP_REF else self.op_table[ref]["name"]

    # -- comparison ------------------------------------------------------------------------------------

    def __eq__(self, other) -> bool:
        if not isinstance(other, Program):
            return NotImplemented
        return (len(self.words) == len(other.words) and self.words.tobytes() == other.words.tobytes()
                and self.op_table == other.op_table and self.design == other.design and self.meta == other.meta)

    __hash__ = None

    def __repr__(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.counts().items() if v)
        return (f"Program({len(self.words)} instructions [{counts}], {len(self.op_table)} ops, "
                f"design={self.design!r})")


# -- the scalar builder ------------------------------------------------------------------------------------

class ProgramBuilder:
    """Appends one instruction per call (tests, small hand-written programs); :meth:`build` makes the Program.

    Every method takes the opcode's fields as keywords (names or numbers as :func:`block` does), the four flags
    as booleans and ``op_ref`` (an op-table index, or None), checks every value and returns the new
    instruction's index. A refusal names that index and the field.
    """

    def __init__(self, design: str = "", meta: Mapping | None = None):
        self.design = design
        self.meta = dict(meta or {})
        self.op_table: list[dict] = []
        self._rows: list[tuple[int, ...]] = []

    def __len__(self) -> int:
        return len(self._rows)

    def op(self, name: str, kind: str, **info) -> int:
        """Add a workload op to the op table; returns its op_ref."""
        self.op_table.append({"name": name, "kind": kind, **info})
        return len(self.op_table) - 1

    def emit(self, opcode: str, /, *, op_ref: int | None = None, pop_prev=False, pop_next=False, push_prev=False,
             push_next=False, **fields) -> int:
        """Append one ``opcode`` instruction; returns its index."""
        i = len(self._rows)
        if opcode not in FIELDS:
            raise ProgramError(f"instruction {i}: unknown opcode {opcode!r} (opcodes: {', '.join(OPCODES)})")
        where = f"instruction {i} ({opcode})"
        table = spec.field_table(opcode)
        for k in fields:
            if k not in table:
                raise ProgramError(f"{where}: {opcode} has no field {k!r} (fields: {', '.join(table) or 'none'})")
        a = [0] * 7
        values: dict[str, int] = {}
        for f in FIELDS[opcode]:
            if f.name in fields:
                x = fields[f.name]
                v = parse_value(opcode, f, x) if isinstance(x, str) else x
                if not isinstance(v, (int, np.integer, np.bool_)):
                    raise ProgramError(f"{where}: field {f.name} must be an integer, not {v!r}")
                v = int(v)
                why = _problem(opcode, f, v)
                if why:
                    raise ProgramError(f"{where}: {why}")
            elif f.default is None:
                raise ProgramError(f"{where}: missing field {f.name!r} (it has no default)")
            else:
                v = values[f.default] if isinstance(f.default, str) else f.default
            values[f.name] = v
            a[f.word] |= (v & ((1 << f.width) - 1)) << f.lo
        deps = 0
        for name, on in (("pop_prev", pop_prev), ("pop_next", pop_next), ("push_prev", push_prev),
                         ("push_next", push_next)):
            if on not in (0, 1):
                raise ProgramError(f"{where}: {name} = {on!r} must be true or false")
            deps |= DEP_FLAGS[name] if on else 0
        ref = NO_OP_REF if op_ref is None else op_ref
        if not isinstance(ref, (int, np.integer)) or not 0 <= ref <= NO_OP_REF:
            raise ProgramError(f"{where}: field op_ref = {ref!r} is out of range 0..{NO_OP_REF}")
        self._rows.append((OPCODES[opcode] | deps << 4 | int(ref) << OP_REF_SHIFT, *a))
        return i

    def nop(self, **kw) -> int:
        """Append a NOP."""
        return self.emit("NOP", **kw)

    def load(self, **kw) -> int:
        """Append a LOAD (dram, sram, rows, row_bytes[, dram_stride, sram_stride, host])."""
        return self.emit("LOAD", **kw)

    def store(self, **kw) -> int:
        """Append a STORE (dram, sram, rows, row_bytes[, dram_stride, sram_stride, host])."""
        return self.emit("STORE", **kw)

    def matmul(self, **kw) -> int:
        """Append a MATMUL (engine, w, a, r, m, k, n[, fence, astride])."""
        return self.emit("MATMUL", **kw)

    def post(self, **kw) -> int:
        """Append a POST (fn, out_fmt, in_fmt, src, dst, rows, cols[, words, word, aux, imm, shift, opts])."""
        return self.emit("POST", **kw)

    def host(self, **kw) -> int:
        """Append a HOST (fn, src, dst, rows, cols[, out_fmt, in_fmt, aux, p0, p1])."""
        return self.emit("HOST", **kw)

    def sync(self, queue, **kw) -> int:
        """Append a SYNC on ``queue`` (a name or number): it only moves tokens."""
        return self.emit("SYNC", queue=queue, **kw)

    def finish(self, **kw) -> int:
        """Append the FINISH that ends the program."""
        return self.emit("FINISH", **kw)

    def build(self) -> Program:
        """The program built so far."""
        rows = np.array(self._rows, dtype=np.uint32).reshape(len(self._rows), 8)
        return Program._adopt(rows.view(WORD_DTYPE)[:, 0], self.op_table, self.design, self.meta)
