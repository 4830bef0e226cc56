"""The readable form of a program: :func:`listing` writes it, :func:`assemble` reads it back, exactly.

A listing is a few comment lines for people (``; …``), directive lines for the assembler (``;; …``: the
instruction-set version, the design name, the metadata and every op-table entry as JSON), then one instruction
per line::

    ;; isa 1
    ;; design "tiny"
    ;; meta {}
    ;; op 0 {"name": "layer.attn.q", "kind": "linear", "count": 1}
       12  MATMUL engine=0 fence=0 w=weights+0x400 a=activations+0x0 r=activations+0x8000 m=128 k=768 n=16
           astride=0 [pop_prev push_prev push_next] op=0  ; layer.attn.q

(the last two lines are one line of a listing, wrapped here).

The leading index is optional (when given it must equal the instruction's position); ``field=value`` pairs may
come in any order, and fields with a default may be left out; the flags go in brackets; ``op=N`` is the op_ref
(absent: none); text after a single ``;`` is a comment. ``assemble(listing(p)) == p`` for every program.
"""

import json
import re

from isa import spec
from isa.program import (NO_OP_REF, Program, ProgramBuilder, ProgramError, format_value, parse_value)
from isa.spec import DEP_FLAGS, FIELDS, OPCODES, VERSION

__all__ = ["listing", "assemble"]


def listing(program: Program) -> str:
    """One instruction per line, with a header and the op table as directives (see the module docstring)."""
    n = len(program)
    counts = ", ".join(f"{k} {v}" for k, v in program.counts().items() if v) or "none"
    out = [f"; lowbit program, instruction set v{VERSION}, design {program.design!r}",
           f"; {n} instructions ({counts}), {len(program.op_table)} ops",
           f";; isa {VERSION}",
           f";; design {json.dumps(program.design, ensure_ascii=False)}",
           f";; meta {_json(program.meta, 'metadata')}"]
    out += [f";; op {i} {_json(op, f'op table entry {i}')}" for i, op in enumerate(program.op_table)]
    # Decode column-wise per opcode (vectorized), then format each line from plain Python lists.
    cols = {}
    for name, fields in FIELDS.items():
        if fields:
            cols[name] = [program.field(name, f.name).tolist() for f in fields]
    pos = {name: 0 for name in FIELDS}
    names = {code: name for name, code in OPCODES.items()}
    flag_names = list(DEP_FLAGS.items())
    width = len(str(max(n - 1, 0)))
    for i, (code, deps, ref) in enumerate(zip(program.opcodes.tolist(), program.deps.tolist(),
                                              program.op_refs.tolist())):
        op = names[code]
        parts = [f"{i:>{width + 2}}  {op}"]
        if op in cols:
            j = pos[op]
            pos[op] += 1
            parts += [f"{f.name}={format_value(f, col[j])}" for f, col in zip(FIELDS[op], cols[op])]
        if deps:
            parts.append("[" + " ".join(fn for fn, bit in flag_names if deps & bit) + "]")
        line = " ".join(parts)
        if ref != NO_OP_REF:
            # The name as a JSON string body: a newline or a ';' in it cannot break the line.
            line += f" op={ref}  ; {json.dumps(program.op_table[ref]['name'], ensure_ascii=False)[1:-1]}"
        out.append(line)
    return "\n".join(out) + "\n"


def _json(obj, what: str) -> str:
    try:
        return json.dumps(obj, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ProgramError(f"the {what} cannot be written as JSON: {e}") from None


_FLAGS_RE = re.compile(r"\[([^\]]*)\]")


def assemble(text: str) -> Program:
    """The program a listing describes; refusals name the line and the field."""
    builder = ProgramBuilder()
    ops: dict[int, dict] = {}
    op_lines: dict[int, int] = {}
    ref_lines: list[tuple[int, int]] = []      # (line, op_ref) to check once the whole op table is known
    design = meta = None
    # Lines end at "\n" only: str.splitlines would also split at U+2028 and friends, which JSON may hold verbatim.
    for ln, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if line.startswith(";;"):
            d = _directive(ln, line[2:].strip())
            if d[0] == "design":
                design = d[1]
            elif d[0] == "meta":
                meta = d[1]
            elif d[0] == "op":
                if d[1] in ops:
                    raise ProgramError(f"line {ln}: op {d[1]} is defined twice (first on line {op_lines[d[1]]})")
                ops[d[1]], op_lines[d[1]] = d[2], ln
            continue
        line = line.split(";", 1)[0].strip()
        if not line:
            continue
        try:
            ref = _instruction(ln, line, builder)
        except ProgramError as e:
            msg = str(e)
            raise ProgramError(msg if msg.startswith(f"line {ln}:") else f"line {ln}: {msg}") from None
        if ref is not None:
            ref_lines.append((ln, ref))
    missing = [i for i in range(len(ops)) if i not in ops]
    if missing:
        raise ProgramError(f"the op table skips op {missing[0]} (ops must be numbered 0, 1, … without gaps)")
    for ln, ref in ref_lines:
        if ref >= len(ops):
            raise ProgramError(f"line {ln}: op={ref} is outside the op table ({len(ops)} ops)")
    builder.design = "" if design is None else design
    builder.meta = meta or {}
    builder.op_table = [ops[i] for i in range(len(ops))]
    return builder.build()


def _directive(ln: int, body: str):
    word, _, rest = body.partition(" ")
    rest = rest.strip()
    try:
        if word == "isa":
            if rest != str(VERSION):
                raise ProgramError(f"line {ln}: the listing is for instruction set v{rest}; this assembler reads "
                                   f"v{VERSION}")
            return ("isa",)
        if word == "design":
            v = json.loads(rest)
            if not isinstance(v, str):
                raise ProgramError(f"line {ln}: the design name must be a JSON string, not {rest!r}")
            return ("design", v)
        if word == "meta":
            v = json.loads(rest)
            if not isinstance(v, dict):
                raise ProgramError(f"line {ln}: the metadata must be a JSON object, not {rest!r:.60}")
            return ("meta", v)
        if word == "op":
            num, _, obj = rest.partition(" ")
            if not num.isdigit():
                raise ProgramError(f"line {ln}: malformed op number {num!r} (expected ';; op N {{json}}')")
            v = json.loads(obj)
            if not isinstance(v, dict) or not isinstance(v.get("name"), str) or not isinstance(v.get("kind"), str):
                raise ProgramError(f"line {ln}: op {num} must be a JSON object with string 'name' and 'kind'")
            return ("op", int(num), v)
    except json.JSONDecodeError as e:
        raise ProgramError(f"line {ln}: malformed JSON in the '{word}' directive: {e}") from None
    raise ProgramError(f"line {ln}: unknown directive {word!r} (directives: isa, design, meta, op)")


def _instruction(ln: int, line: str, builder: ProgramBuilder) -> int | None:
    flags: list[str] = []
    brackets = _FLAGS_RE.findall(line)
    if len(brackets) > 1:
        raise ProgramError("the flags are given twice (one [ … ] group per instruction)")
    if brackets:
        flags = brackets[0].split()
        line = _FLAGS_RE.sub(" ", line)
    if "[" in line or "]" in line:
        raise ProgramError("unbalanced [ ] around the flags")
    tokens = line.split()
    index = len(builder)
    if tokens[0].isdigit():
        if int(tokens[0]) != index:
            raise ProgramError(f"instruction index {tokens[0]} does not match its position {index}")
        tokens = tokens[1:]
        if not tokens:
            raise ProgramError("an index but no opcode")
    opcode = tokens[0]
    if opcode not in OPCODES:
        raise ProgramError(f"unknown opcode {opcode!r} (opcodes: {', '.join(OPCODES)})")
    table = spec.field_table(opcode)
    values: dict[str, int] = {}
    ref = None
    for tok in tokens[1:]:
        name, eq, text = tok.partition("=")
        if not eq or not name:
            raise ProgramError(f"expected field=value, got {tok!r}")
        if name in values or (name == "op" and ref is not None):
            raise ProgramError(f"field {name} is given twice")
        if name == "op":
            try:
                ref = int(text, 0)
            except ValueError:
                raise ProgramError(f"malformed number {text!r} for op (the op_ref)") from None
            if not 0 <= ref < NO_OP_REF:
                raise ProgramError(f"op={ref} is out of range 0..{NO_OP_REF - 1}")
            continue
        if name not in table:
            raise ProgramError(f"{opcode} has no field {name!r} (fields: {', '.join(table) or 'none'})")
        values[name] = parse_value(opcode, table[name], text)
    for fl in flags:
        if fl not in DEP_FLAGS:
            raise ProgramError(f"unknown flag {fl!r} (flags: {', '.join(DEP_FLAGS)})")
    if len(set(flags)) != len(flags):
        raise ProgramError(f"a flag is given twice in [{' '.join(flags)}]")
    builder.emit(opcode, op_ref=ref, **{fl: True for fl in flags}, **values)
    return ref
