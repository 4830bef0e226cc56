"""The program file (docs/isa.md §5): a 64-byte header, the instruction words, the op table as UTF-8 JSON.

Reading refuses anything but a well-formed file, with one line naming the byte offset or the instruction index:
a wrong magic, an unknown version or file flag, reserved header bytes set, a truncated (or over-long) file, an op
table that is not JSON of the expected shape or whose design name does not match the header's hash, an unknown
opcode or a reserved instruction bit set, an op_ref outside the op table. The words are not copied: the Program
views the file's bytes.
"""

import hashlib
import json
import struct
from pathlib import Path

import numpy as np

import fsio
from isa.program import WORD_DTYPE, Program, ProgramError
from isa.spec import FILE_HEADER, HEADER_BYTES, KNOWN_VERSIONS, MAGIC, VERSION, WORD_BYTES

__all__ = ["to_bytes", "from_bytes", "write", "read", "design_hash"]

_OFF = {name: off for name, off, _, _, _ in FILE_HEADER}
_HEADER = struct.Struct("<8sHHIII8s32s")
assert _HEADER.size == HEADER_BYTES
assert [o for _, o, _, _, _ in FILE_HEADER] == [0, 8, 10, 12, 16, 20, 24, 32]


def design_hash(name: str) -> bytes:
    """The header's design-name hash: the first 8 bytes of SHA-256 of the name in UTF-8."""
    return hashlib.sha256(name.encode("utf-8")).digest()[:8]


def _op_table_json(program: Program) -> bytes:
    doc = {"design": program.design, "meta": program.meta, "ops": program.op_table}
    try:
        # allow_nan=False: NaN/Infinity are not JSON, and other readers of the file would refuse them.
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise ProgramError(f"the op table or metadata cannot be written as JSON: {e}") from None


def to_bytes(program: Program) -> bytes:
    """The file image of ``program``."""
    if not isinstance(program, Program):
        raise ProgramError(f"to_bytes needs a Program, not {type(program).__name__}")
    ops = _op_table_json(program)
    n = len(program)
    header = _HEADER.pack(MAGIC, VERSION, 0, n, HEADER_BYTES + WORD_BYTES * n, len(ops),
                          design_hash(program.design), bytes(32))
    return b"".join((header, program.words.tobytes(), ops))


def from_bytes(data) -> Program:
    """The program in a file image (bytes-like); refuses a malformed image (see the module docstring)."""
    data = bytes(data)     # an immutable copy, so that the program's read-only view of it stays valid
    size = len(data)
    if data[:len(MAGIC)] != MAGIC[:size]:
        raise ProgramError(f"not a lowbit program: the magic at byte offset 0 is {data[:len(MAGIC)]!r}, "
                           f"expected {MAGIC!r}")
    if size < HEADER_BYTES:
        raise ProgramError(f"truncated file: {size} bytes, but the header alone is {HEADER_BYTES}")
    _, version, flags, count, ops_off, ops_len, dhash, reserved = _HEADER.unpack_from(data)
    if version not in KNOWN_VERSIONS:
        raise ProgramError(f"unknown program format version {version} at byte offset {_OFF['version']} (known: "
                           f"{', '.join(map(str, KNOWN_VERSIONS))})")
    if flags:
        raise ProgramError(f"unknown file flags {flags:#06x} at byte offset {_OFF['flags']} (version {version} "
                           f"defines none)")
    if any(reserved):
        at = _OFF["reserved"] + next(i for i, b in enumerate(reserved) if b)
        raise ProgramError(f"reserved header byte at byte offset {at} is {data[at]:#04x}; bytes "
                           f"{_OFF['reserved']}–{HEADER_BYTES - 1} must be 0")
    words_end = HEADER_BYTES + WORD_BYTES * count
    if ops_off != words_end:
        raise ProgramError(f"op-table offset {ops_off} at byte offset {_OFF['ops_offset']} does not follow the "
                           f"{count} instructions (expected {words_end})")
    expected = words_end + ops_len
    if size < expected:
        raise ProgramError(f"truncated file: {size} bytes, expected {expected} ({HEADER_BYTES}-byte header, "
                           f"{count} instructions × {WORD_BYTES} bytes, {ops_len}-byte op table)")
    if size > expected:
        raise ProgramError(f"{size - expected} unexpected bytes after the end of the program at byte offset "
                           f"{expected} (the header says the file is {expected} bytes)")
    try:
        doc = json.loads(data[ops_off:expected].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProgramError(f"the op table at byte offset {ops_off} is not valid UTF-8 JSON: {e}") from None
    if not (isinstance(doc, dict) and set(doc) == {"design", "meta", "ops"} and isinstance(doc["design"], str)
            and isinstance(doc["meta"], dict) and isinstance(doc["ops"], list)):
        raise ProgramError(f"the op table at byte offset {ops_off} must be a JSON object with exactly a string "
                           f"'design', an object 'meta' and a list 'ops'")
    if design_hash(doc["design"]) != dhash:
        raise ProgramError(f"the design-name hash at byte offset {_OFF['design_hash']} ({dhash.hex()}) does not "
                           f"match the op table's design name {doc['design']!r} ({design_hash(doc['design']).hex()})")
    words = np.frombuffer(data, WORD_DTYPE, count, HEADER_BYTES)
    try:
        return Program._adopt(words, doc["ops"], doc["design"], doc["meta"],
                              where=lambda i: f"instruction {i} (byte offset {HEADER_BYTES + WORD_BYTES * i})")
    except ProgramError as e:
        if str(e).startswith("op table"):
            raise ProgramError(f"the op table at byte offset {ops_off}: {e}") from None
        raise


def write(program: Program, path) -> Path:
    """Write ``program`` to ``path`` atomically (a reader sees the old file or the new one); returns the path."""
    return fsio.write_bytes_atomic(path, to_bytes(program))


def read(path) -> Program:
    """The program in the file at ``path``; refusals name the file."""
    data = Path(path).read_bytes()
    try:
        return from_bytes(data)
    except ProgramError as e:
        raise ProgramError(f"{path}: {e}") from None
