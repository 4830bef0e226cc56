"""Regenerate the tables of docs/isa.md from isa.spec: ``python -m isa.docs`` (``--check``: only compare).

Each generated table sits between ``<!-- generated: NAME -->`` and ``<!-- end generated -->``; everything outside
the markers is prose and is left as it is. ``tests/test_isa.py`` checks that the file equals what this writes.
"""

import argparse
import re
import sys
from pathlib import Path

from isa import spec
from isa.spec import (DEP_FLAGS, FIELDS, FILE_HEADER, FLAG_BITS, FORMAT_BITS, FORMATS, HOST_AUX, HOST_FUNCTIONS,
                      OPCODE_QUEUE, OPCODES, POST_AUX, POST_FUNCTIONS, POST_OPTIONS, TOKEN_QUEUES, TOKEN_ROUTES)

__all__ = ["SECTIONS", "render", "generate", "main"]

DOC = Path(__file__).resolve().parents[1] / "docs" / "isa.md"

_BEGIN = re.compile(r"^<!-- generated: ([a-z_]+) -->$")
_END = "<!-- end generated -->"


def _table(head: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _bits(lo: int, width: int) -> str:
    return str(lo) if width == 1 else f"{lo}–{lo + width - 1}"


def _opcodes() -> str:
    rows = []
    for name, code in OPCODES.items():
        queue = "named by `queue`" if name == "SYNC" else OPCODE_QUEUE.get(name, "none")
        rows.append([code, f"`{name}`", queue, ", ".join(f"`{f.name}`" for f in FIELDS[name]) or "—"])
    return _table(["code", "opcode", "queue", "fields"], rows)


def _header() -> str:
    rows = [[_bits(0, spec.OPCODE_BITS), "`opcode`", "the opcode number (above); 8–15 are refused"]]
    meaning = {
        "pop_prev": "take a token from the previous queue's token queue before starting",
        "pop_next": "take a token from the next queue's token queue before starting",
        "push_prev": "give a token to the previous queue when done (§4: when that is)",
        "push_next": "give a token to the next queue when done",
    }
    rows += [[bit, f"`{name}`", f"{meaning[name]}; `deps` value {DEP_FLAGS[name]}"]
             for name, bit in FLAG_BITS.items()]
    lo = (spec.HEADER_RESERVED_MASK & -spec.HEADER_RESERVED_MASK).bit_length() - 1
    rows.append([_bits(lo, bin(spec.HEADER_RESERVED_MASK).count("1")), "reserved", "0"])
    rows.append([_bits(spec.OP_REF_SHIFT, 16), "`op_ref`",
                 f"index of the workload op this instruction serves in the op table ({spec.NO_OP_REF:#x}: none)"])
    return _table(["bits", "field", "meaning"], rows)


def _range(f: spec.Field) -> str:
    kinds = {"address": "buffer address", "optional_address": "buffer address or `none` (0xFFFFFFFF)",
             "dram": "32-bit address", "bits": "32-bit pattern", "format": "`FORMATS`",
             "post_fn": "`POST_FUNCTIONS`", "host_fn": "`HOST_FUNCTIONS`", "queue": "`QUEUES`", "flag": "0, 1"}
    if f.kind in kinds:
        return kinds[f.kind]
    lo, hi = f.range
    return f"{_num(lo)} … {_num(hi)}"


def _num(v: int) -> str:
    """Thousands separated by a thin space, as the prose writes them."""
    return f"{v:,}".replace(",", "\u2009")


def _default(f: spec.Field) -> str:
    if f.default is None:
        return "required"
    if isinstance(f.default, str):
        return f"= `{f.default}`"
    if f.kind == "optional_address":
        return "none"
    if f.kind == "format":
        return {v: k for k, v in FORMATS.items()}[f.default]
    return str(f.default)


def _fields() -> str:
    parts = []
    for name, fields in FIELDS.items():
        if not fields:
            parts.append(f"**`{name}`**: no operands (every operand bit is reserved, 0).")
            continue
        rows = [[f"`{f.name}`", f"a{f.word}", _bits(f.lo, f.width), ("signed " if f.signed else "") + _range(f),
                 _default(f), f.doc] for f in fields]
        parts.append(f"**`{name}`**\n\n" + _table(["field", "word", "bits", "range", "default", "meaning"], rows))
    parts.append("Operand bits no field covers are reserved and must be 0.")
    return "\n\n".join(parts)


def _formats() -> str:
    return _table(["id", "format", "bits per element"],
                  [[v, f"`{k}`", FORMAT_BITS[k] if FORMAT_BITS[k] else "the engine's tile (§2)"]
                   for k, v in FORMATS.items()])


def _buffers() -> str:
    return _table(["id", "buffer"], [[v, f"`{k}`"] for k, v in spec.BUFFERS.items()])


def _options(name: str) -> str:
    opts = POST_OPTIONS.get(name)
    if not opts:
        return "—"
    return ", ".join(f"`{k}` (bit{'s' if w > 1 else ''} {_bits(lo, w)}{f', at least {least}' if least else ''})"
                     for k, (lo, w, least) in opts.items())


def _post() -> str:
    rows = []
    for name, fid in POST_FUNCTIONS.items():
        rule = POST_AUX.get(name)
        out = "rows × 1" if name in spec.PER_ROW_OUTPUT else ("ENG tile" if name == "pack" else "rows × cols")
        src = "blocks × rows × cols × words" if name in spec.POST_BLOCK_SOURCES else "rows × cols × words"
        rows.append([fid, f"`{name}`", src, f"{rule.formula}: {rule.doc}" if rule else "none", out,
                     _options(name)])
    return _table(["id", "function", "source (in_fmt)", "aux", "output (out_fmt)", "options (bits of `opts`)"],
                  rows)


def _host() -> str:
    rows = []
    for name, fid in HOST_FUNCTIONS.items():
        rule = HOST_AUX.get(name)
        out = "rows × 1" if name in spec.PER_ROW_OUTPUT else "rows × cols"
        rows.append([fid, f"`{name}`", f"{rule.formula}: {rule.doc}" if rule else "none", out])
    return _table(["id", "function", "aux", "output"], rows)


def _tokens() -> str:
    rows = []
    for i, t in enumerate(TOKEN_QUEUES):
        pushers = ", ".join(f"`{f}` on {q}" for (q, f), tq in TOKEN_ROUTES.items() if tq == t and "push" in f)
        poppers = ", ".join(f"`{f}` on {q}" for (q, f), tq in TOKEN_ROUTES.items() if tq == t and "pop" in f)
        rows.append([i, t, pushers, poppers])
    return _table(["#", "token queue", "pushed by", "popped by"], rows)


def _file() -> str:
    rows = [[off, n, f"`{name}`", f"`{code}`", meaning] for name, off, n, code, meaning in FILE_HEADER]
    return _table(["byte offset", "bytes", "field", "struct", "meaning"], rows)


#: Generated sections by marker name.
SECTIONS = {"opcodes": _opcodes, "header": _header, "fields": _fields, "formats": _formats,
            "buffers": _buffers, "post": _post, "host": _host, "tokens": _tokens, "file": _file}


def render(name: str) -> str:
    """The generated text of section ``name``."""
    return SECTIONS[name]()


def generate(text: str) -> str:
    """``text`` with every generated section rewritten; refuses unknown or unclosed markers."""
    out, lines, i = [], text.split("\n"), 0
    seen = set()
    while i < len(lines):
        line = lines[i]
        out.append(line)
        m = _BEGIN.match(line)
        i += 1
        if not m:
            continue
        name = m.group(1)
        if name not in SECTIONS:
            raise ValueError(f"line {i}: unknown generated section {name!r} (sections: {', '.join(SECTIONS)})")
        if name in seen:
            raise ValueError(f"line {i}: generated section {name!r} appears twice")
        seen.add(name)
        end = next((j for j in range(i, len(lines)) if lines[j] == _END), None)
        if end is None:
            raise ValueError(f"line {i}: generated section {name!r} has no '{_END}'")
        out += ["", render(name), "", _END]
        i = end + 1
    return "\n".join(out)


def main(argv=None) -> int:
    """Rewrite docs/isa.md (or, with ``--check``, report whether it is up to date: exit status 1 if not)."""
    ap = argparse.ArgumentParser(prog="python -m isa.docs", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="do not write; exit 1 when docs/isa.md is stale")
    ap.add_argument("--path", type=Path, default=DOC, help="the document (default: docs/isa.md)")
    args = ap.parse_args(argv)
    text = args.path.read_text(encoding="utf-8")
    new = generate(text)
    if args.check:
        if new != text:
            print(f"{args.path} is stale: run python -m isa.docs", file=sys.stderr)
            return 1
        return 0
    if new != text:
        import fsio
        fsio.write_text_atomic(args.path, new)
        print(f"wrote {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
