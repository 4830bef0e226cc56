"""Static checks of a program against a machine, before any run (docs/isa.md §3–4).

:func:`validate` refuses, with one line naming the instruction index and the field:

* a field outside its range (a decoded file is re-checked here), an enumeration value that names nothing, an
  address whose buffer does not exist; a program without exactly one FINISH, or with one that is not last;
* a dependency flag the instruction's queue cannot have (the load queue has no previous queue, the store queue no
  next one; NOP and FINISH run on no queue), and any pop that no earlier instruction (in program order) pushes
  into the same token queue: such a program could deadlock;
* a region that runs past its buffer's end or lies in a buffer the operand may not use, a write-side row stride
  below the row size (rows would overwrite each other), an engine the machine does not have, ``k`` above the
  engine's ``max_k``, a MATMUL result region overlapping its activation (or weight) region, a POST/HOST
  destination partially overlapping a source (coinciding exactly, in place, is allowed), formats a POST/HOST
  cannot read or write, a missing or superfluous auxiliary operand, option bits a function does not define.

The machine is a plain description (:class:`MachineShape`) that ``sim`` builds from an ``hw`` Accelerator, so
this package needs no ``hw`` import. Every check is vectorized over the instructions of one opcode.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from isa import spec
from isa.program import (BUFFER_NAMES, OPCODE_NAMES, Program, ProgramError, _problem, check_values,
                         format_address)
from isa.spec import (BUFFER_SHIFT, BUFFERS, DEP_FLAGS, FIELDS, FORMAT_BITS, FORMATS, HOST_AUX, HOST_FUNCTIONS,
                      NO_ADDRESS, OPCODES, POST_AUX, POST_FUNCTIONS, POST_OPTIONS, QUEUES, TOKEN_QUEUES,
                      TOKEN_ROUTES, AuxRule)

__all__ = ["EngineShape", "MachineShape", "Summary", "validate"]

_ACT_FORMATS = ("I8", "I16", "I32", "B1")


def _positive(where: str, v, lo: int = 1) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ProgramError(f"{where} must be an integer >= {lo}, not {v!r}")


@dataclass(frozen=True)
class EngineShape:
    """What the ISA needs to know of one engine slot.

    lanes : reduction elements per beat; rows_total : output rows per row block (the unit's rows × the slot's
    count); beat_image_bytes : bytes of one weight beat image (docs/isa.md §2, ENG), so a tile of ``n`` output
    rows and reduction ``k`` is ``ceil(n / rows_total) · ceil(k / lanes) · beat_image_bytes`` bytes;
    act_format / act_bits : the activation operand's memory format (I8, I16, I32 or B1) and its significant
    bits; result_words : I32 words per result record; max_k : the longest reduction it accepts.
    """

    name: str
    lanes: int
    rows_total: int
    beat_image_bytes: int
    act_format: str
    act_bits: int
    result_words: int
    max_k: int

    def __post_init__(self):
        where = f"engine {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise ProgramError(f"engine name must be a non-empty string, not {self.name!r}")
        for k in ("lanes", "rows_total", "beat_image_bytes", "result_words", "max_k", "act_bits"):
            _positive(f"{where}: {k}", getattr(self, k))
        if self.act_format not in _ACT_FORMATS:
            raise ProgramError(f"{where}: act_format {self.act_format!r} is not one of {', '.join(_ACT_FORMATS)}")
        if self.act_bits > FORMAT_BITS[self.act_format]:
            raise ProgramError(f"{where}: act_bits = {self.act_bits} do not fit its act_format {self.act_format}")


@dataclass(frozen=True)
class MachineShape:
    """The machine a program is checked against: buffer sizes in bytes by name (every name of
    ``spec.BUFFERS``), the engine slots in the design's order, the POST unit's and the vector unit's lanes."""

    buffers: Mapping[str, int]
    engines: tuple[EngineShape, ...]
    post_lanes: int
    vector_lanes: int

    def __post_init__(self):
        if not isinstance(self.buffers, Mapping) or set(self.buffers) != set(BUFFERS):
            got = sorted(self.buffers) if isinstance(self.buffers, Mapping) else self.buffers
            raise ProgramError(f"machine buffers must give the size of exactly {', '.join(BUFFERS)}, not {got!r}")
        for name, size in self.buffers.items():
            _positive(f"machine buffer {name} size", size)
            if size > 1 << BUFFER_SHIFT:
                raise ProgramError(f"machine buffer {name} size {size} exceeds the {1 << BUFFER_SHIFT} bytes an "
                                   f"address offset reaches")
        object.__setattr__(self, "buffers", MappingProxyType({k: int(self.buffers[k]) for k in BUFFERS}))
        engines = tuple(self.engines)
        if not engines or not all(isinstance(e, EngineShape) for e in engines):
            raise ProgramError("machine engines must be a non-empty sequence of EngineShape")
        object.__setattr__(self, "engines", engines)
        _positive("machine post_lanes", self.post_lanes)
        _positive("machine vector_lanes", self.vector_lanes)

    def buffer_size(self, buffer) -> int:
        """Size in bytes of ``buffer`` (a name or an id)."""
        return self.buffers[buffer if isinstance(buffer, str) else BUFFER_NAMES[buffer]]


@dataclass(frozen=True)
class Summary:
    """What :func:`validate` found: instructions per queue (``none``: NOP, FINISH) and per opcode, tokens pushed
    and popped per token queue, and the tokens left over at FINISH (allowed: nobody waits for them)."""

    instructions: int
    per_queue: Mapping[str, int]
    per_opcode: Mapping[str, int]
    pushed: Mapping[str, int]
    popped: Mapping[str, int]
    leftover: Mapping[str, int] = field(default_factory=dict)


# Per-instruction tables are indexed by key = queue·16 + deps (queue NO_QUEUE for NOP and FINISH), so each
# question below is one gather over the program.
NO_QUEUE = len(QUEUES)
_OPCODE_QUEUE = np.full(16, NO_QUEUE, np.uint8)
for _op, _q in spec.OPCODE_QUEUE.items():
    _OPCODE_QUEUE[OPCODES[_op]] = QUEUES[_q]


def _key_tables() -> tuple[np.ndarray, list[np.ndarray]]:
    """key → the flags that queue cannot have; and per token queue, key → +1 (a push into it), −1 (a pop from
    it) or 0."""
    stray = np.zeros(64, np.uint8)
    deltas = [np.zeros(64, np.int8) for _ in TOKEN_QUEUES]
    for key in range(64):
        q, deps = divmod(key, 16)
        for flag, bit in DEP_FLAGS.items():
            if not deps & bit:
                continue
            qname = next((name for name, v in QUEUES.items() if v == q), None)
            t = TOKEN_ROUTES.get((qname, flag))
            if t is None:
                stray[key] |= bit
            else:
                deltas[TOKEN_QUEUES.index(t)][key] += 1 if flag.startswith("push") else -1
    return stray, deltas


_STRAY, _TOKEN_DELTAS = _key_tables()


class _Failures:
    """The earliest refusal among several vectorized checks: each check offers its first failing instruction, the
    message is made only for the one that is raised."""

    def __init__(self, program: Program):
        self.program = program
        self.best: tuple[int, object] | None = None

    def check(self, bad: np.ndarray, idx: np.ndarray, message) -> None:
        """``bad`` over the instructions ``idx``; ``message(pos)`` says what is wrong at position ``pos``."""
        if bad.any():
            pos = int(np.argmax(bad))
            i = int(idx[pos])
            if self.best is None or i < self.best[0]:
                self.best = (i, lambda: message(pos))

    def raise_first(self) -> None:
        if self.best is not None:
            i, message = self.best
            op = OPCODE_NAMES[int(self.program.opcodes[i])]
            raise ProgramError(f"instruction {i} ({op}): {message()}")


def _member(values: np.ndarray, allowed) -> np.ndarray:
    """``values`` ∈ ``allowed`` (a few small non-negative ints): faster than np.isin for these tiny sets."""
    ok = values == allowed[0]
    for a in allowed[1:]:
        ok |= values == a
    return ok


def _option_text(fname: str) -> str:
    opts = POST_OPTIONS.get(fname)
    if not opts:
        return "none"
    return ", ".join(f"{name} (bits {lo}–{lo + width - 1})" if width > 1 else f"{name} (bit {lo})"
                     for name, (lo, width, _) in opts.items())


def _engine_columns(machine: MachineShape, e: np.ndarray):
    """``col(attr)``: that engine attribute for each instruction's engine ``e``. A plain int when every instruction
    uses the same engine (the common case), which also lets NumPy divide by a scalar, several times faster than
    by an array."""
    if len(e) and int(e.min()) == int(e.max()):
        one = machine.engines[int(e[0])]
        return lambda attr: getattr(one, attr) if attr != "act_format" else FORMAT_BITS[one.act_format]
    table = {}

    def col(attr):
        if attr not in table:
            vals = [FORMAT_BITS[x.act_format] if attr == "act_format" else getattr(x, attr) for x in machine.engines]
            table[attr] = np.array(vals, np.int64)[e]
        return table[attr]
    return col


def _ceil_div(a, b):
    return -(-a // b)


def _bytes(elements, bits):
    """Bytes of ``elements`` packed elements of ``bits`` each (B1: eight per byte)."""
    return (elements * bits + 7) >> 3


def validate(program: Program, machine: MachineShape) -> Summary:
    """Refuse ``program`` unless it is well formed and fits ``machine`` (see the module docstring); returns the
    :class:`Summary`."""
    if not isinstance(program, Program):
        raise ProgramError(f"validate needs a Program, not {type(program).__name__}")
    if not isinstance(machine, MachineShape):
        raise ProgramError(f"validate needs a MachineShape, not {type(machine).__name__}")
    n = len(program)
    ops = program.opcodes
    fails = _Failures(program)

    # 1. Fields, FINISH, flags the queue cannot have.
    for opcode, fields in FIELDS.items():
        idx = program.indices(opcode)
        if not len(idx):
            continue
        for f in fields:
            v = program.field(opcode, f.name)
            pos = check_values(opcode, f, v)
            if pos >= 0:
                fails.check(np.arange(len(idx)) == pos, idx,
                            lambda p, f=f, v=v, opcode=opcode: _problem(opcode, f, int(v[p])))
    finish = program.indices("FINISH")
    if len(finish) == 0:
        raise ProgramError(f"the program has no FINISH ({n} instructions); it must end with exactly one")
    if len(finish) > 1:
        fails.check(np.ones(len(finish) - 1, bool), finish[1:],
                    lambda p: f"a second FINISH (the first is instruction {int(finish[0])}); there must be "
                              f"exactly one")
    elif finish[0] != n - 1:
        fails.check(np.ones(1, bool), finish,
                    lambda p: f"FINISH is not last: instructions {int(finish[0]) + 1}..{n - 1} follow it")
    queue = _OPCODE_QUEUE.take(ops)                           # NO_QUEUE for NOP and FINISH
    sync = program.indices("SYNC")
    if len(sync):
        queue[sync] = program.field("SYNC", "queue")       # a queue id that names nothing fails above
    fails.raise_first()
    key = queue * np.uint8(16) + program.deps                 # (queue, flags) in one of 64 values
    stray = _STRAY.take(key)
    everything = np.arange(n)
    fails.check(stray != 0, everything, lambda p: _stray_flag(program, p, int(queue[p]), int(stray[p])))
    fails.raise_first()

    # 2. Tokens, in program order: the k-th pop of a token queue takes the k-th push into it, which must come
    # earlier in the program. Then, by induction over program order, every instruction can run: no deadlock. No
    # instruction pushes and pops the same token queue (pushers and poppers sit on different queues), so the
    # condition is that the running balance, pushes minus pops, never goes below zero.
    per_key = np.bincount(key, minlength=64)
    pushed, popped = {}, {}
    for t, delta in zip(TOKEN_QUEUES, _TOKEN_DELTAS):
        pushed[t] = int(per_key[delta > 0].sum())
        popped[t] = int(per_key[delta < 0].sum())
        if not popped[t]:
            continue                                          # nothing waits on this token queue
        balance = np.cumsum(delta.take(key), dtype=np.int32)
        if balance.min() < 0:
            i = int(np.argmax(balance < 0))
            flag = next(f for (q, f), tq in TOKEN_ROUTES.items() if tq == t and f.startswith("pop")
                        and QUEUES[q] == queue[i])
            fails.check(np.ones(1, bool), np.array([i]), lambda p, t=t, flag=flag: (
                f"{flag} pops a {t} token that no earlier instruction pushes: the program would deadlock"))
    fails.raise_first()

    # 3. Regions, engines, formats.
    sizes = np.array([machine.buffers[BUFFER_NAMES[b]] for b in sorted(BUFFER_NAMES)], np.int64)
    _transfers(program, fails, sizes)
    _matmuls(program, fails, sizes, machine)
    _post_host(program, fails, sizes, machine, "POST")
    _post_host(program, fails, sizes, machine, "HOST")
    fails.raise_first()

    counts = per_key.reshape(NO_QUEUE + 1, 16).sum(axis=1)
    per_queue = {**{name: int(counts[q]) for name, q in QUEUES.items()}, "none": int(counts[NO_QUEUE])}
    return Summary(n, MappingProxyType(per_queue), MappingProxyType(program.counts()), MappingProxyType(pushed),
                   MappingProxyType(popped), MappingProxyType({t: pushed[t] - popped[t] for t in TOKEN_QUEUES}))


def _stray_flag(program: Program, i: int, q: int, bits: int) -> str:
    flag = next(name for name, bit in DEP_FLAGS.items() if bits & bit)
    if q == NO_QUEUE:
        op = OPCODE_NAMES[int(program.opcodes[i])]
        return f"flag {flag} is not allowed: {op} runs on no queue, so it can move no token"
    qname = {v: k for k, v in QUEUES.items()}[q]
    side = "previous" if flag.endswith("prev") else "next"
    return f"flag {flag} is not allowed: the {qname} queue has no {side} queue"


# -- regions -----------------------------------------------------------------------------------------------

def _region(fails, idx, sizes, name: str, what: str, addr, extent, allowed=None, present=None) -> None:
    """Refuse a region of ``extent`` bytes at buffer address ``addr`` that lies in a buffer outside ``allowed``
    (names) or runs past its buffer's end. ``present``: which instructions have the operand at all."""
    buf = addr >> BUFFER_SHIFT
    off = addr & ((1 << BUFFER_SHIFT) - 1)
    b = int(buf[0])
    if present is None and (allowed is None or BUFFER_NAMES.get(b) in allowed) and b in BUFFER_NAMES \
            and int(buf.min()) == int(buf.max()):
        # Every region in one allowed buffer (the common case): compare with a scalar, no per-instruction size.
        size = int(sizes[b])
        fails.check(off + extent > size, idx, lambda p: _past_end(name, what, addr[p], extent[p], size))
        return
    live = np.ones(len(idx), bool) if present is None else present
    if allowed is not None:
        ok_buf = _member(buf, [BUFFERS[b] for b in allowed])
        fails.check(live & ~ok_buf, idx,
                    lambda p: f"field {name} = {format_address(addr[p])}: the {what} must be in the "
                              f"{' or '.join(allowed)} buffer")
        live = live & ok_buf
    size = sizes.take(np.minimum(buf, len(sizes) - 1))   # absent operands (NO_ADDRESS) are masked by live
    end = off + extent
    fails.check(live & (end > size), idx, lambda p: _past_end(name, what, addr[p], extent[p], size[p]))


def _past_end(name, what, addr, extent, size) -> str:
    addr, extent, size = int(addr), int(extent), int(size)
    over = (addr & ((1 << BUFFER_SHIFT) - 1)) + extent - size
    buf = BUFFER_NAMES[addr >> BUFFER_SHIFT]
    return (f"field {name}: the {what} region {format_address(addr)} of {extent} bytes runs {over} "
            f"byte{'s' if over != 1 else ''} past the end of the {buf} buffer ({size} bytes)")


def _overlap(fails, idx, name1, what1, a1, e1, name2, what2, a2, e2, *, in_place_ok: bool, present=None) -> None:
    """Refuse region 1 overlapping region 2 (same buffer, a common byte); with ``in_place_ok`` two regions that
    start at the same address are allowed (an element-wise operation in place)."""
    bad = ((a1 >> BUFFER_SHIFT) == (a2 >> BUFFER_SHIFT)) & (a1 < a2 + e2) & (a2 < a1 + e1) & (e1 > 0) & (e2 > 0)
    if in_place_ok:
        bad &= a1 != a2
    if present is not None:
        bad &= present
    extra = (" (a destination may coincide with a source exactly, in place, but not overlap it partially)"
             if in_place_ok else "")
    fails.check(bad, idx, lambda p: (
        f"field {name1}: the {what1} region {format_address(a1[p])} of {int(e1[p])} bytes overlaps the {what2} "
        f"region {format_address(a2[p])} of {int(e2[p])} bytes (field {name2}){extra}"))


def _transfers(program, fails, sizes) -> None:
    for opcode, write_side in (("LOAD", "sram"), ("STORE", "dram")):
        idx = program.indices(opcode)
        if not len(idx):
            continue
        g = {f.name: program.field(opcode, f.name) for f in FIELDS[opcode]}
        rows, rb = g["rows"], g["row_bytes"]
        stride = g[f"{write_side}_stride"]
        # (Default arguments: the messages are made after the loop has moved on to the next opcode.)
        fails.check((rows > 1) & (stride < rb), idx, lambda p, s=write_side, stride=stride, rb=rb: (
            f"field {s}_stride = {int(stride[p])} is less than row_bytes = {int(rb[p])}: the rows it writes would "
            f"overlap"))
        empty = (rows == 0) | (rb == 0)
        for side in ("sram", "dram"):
            ext = np.where(empty, 0, (rows - 1) * g[f"{side}_stride"] + rb)
            if side == "sram":
                _region(fails, idx, sizes, "sram", "buffer", g["sram"], ext)
            else:
                # An on-chip copy's `dram` is a buffer address: checked as a buffer region; a DRAM address
                # against the 32-bit space.
                onchip = g["onchip"].astype(bool)
                if onchip.any():
                    _region(fails, idx, sizes, "dram", "buffer", g["dram"], ext, allowed=tuple(BUFFERS),
                            present=onchip)
                end = g["dram"] + ext
                fails.check(~onchip & (end > 1 << 32), idx, lambda p, ext=ext, g=g: (
                    f"field dram = {int(g['dram'][p]):#x}: the DRAM region of {int(ext[p])} bytes runs "
                    f"{int(g['dram'][p] + ext[p] - (1 << 32))} bytes past the 32-bit address space"))


def _matmuls(program, fails, sizes, machine: MachineShape) -> None:
    idx = program.indices("MATMUL")
    if not len(idx):
        return
    g = {f.name: program.field("MATMUL", f.name) for f in FIELDS["MATMUL"]}
    eng = g["engine"]
    ne = len(machine.engines)
    fails.check(eng >= ne, idx, lambda p: (
        f"field engine = {int(eng[p])} names no engine (the machine has {ne}: "
        f"{', '.join(f'{i} {e.name}' for i, e in enumerate(machine.engines))})"))
    ok = eng < ne
    e = np.where(ok, eng, 0)
    col = _engine_columns(machine, e)
    lanes, rows_total, beat, words, max_k = (col(a) for a in ("lanes", "rows_total", "beat_image_bytes",
                                                              "result_words", "max_k"))
    bits = col("act_format")                              # bits per activation element
    m, k, n_ = g["m"], g["k"], g["n"]
    fails.check(ok & (k > max_k), idx, lambda p: (
        f"field k = {int(k[p])} exceeds max_k = {machine.engines[int(eng[p])].max_k} of engine {int(eng[p])} "
        f"({machine.engines[int(eng[p])].name})"))
    packed = _bytes(k, bits)
    astride = g["astride"]
    fails.check(ok & (astride != 0) & (astride < packed), idx, lambda p: (
        f"field astride = {int(astride[p])} is less than a packed activation row of k = {int(k[p])} "
        f"{machine.engines[int(eng[p])].act_format} elements ({int(packed[p])} bytes)"))
    stride = np.where(astride == 0, packed, astride)
    w_ext = _ceil_div(n_, rows_total) * _ceil_div(k, lanes) * beat
    a_ext = (m - 1) * stride + packed
    r_ext = m * n_ * words * 4
    _region(fails, idx, sizes, "w", "weight tile", g["w"], w_ext, ("weights", "kv"), ok)
    _region(fails, idx, sizes, "a", "activation", g["a"], a_ext, ("activations",), ok)
    _region(fails, idx, sizes, "r", "result", g["r"], r_ext, ("activations",), ok)
    _overlap(fails, idx, "r", "result", g["r"], r_ext, "a", "activation", g["a"], a_ext, in_place_ok=False,
             present=ok)
    _overlap(fails, idx, "r", "result", g["r"], r_ext, "w", "weight tile", g["w"], w_ext, in_place_ok=False,
             present=ok)


def _aux_extent(rule: AuxRule, symbols: dict, in_bits, out_bits):
    """Bytes of the auxiliary region ``rule`` describes, per instruction (``symbols``: rows, cols, words and the
    function's options, as arrays)."""
    bits = {"in": in_bits, "out": out_bits}.get(rule.fmt)
    if bits is None:
        bits = FORMAT_BITS[rule.fmt]
    if rule.matrix:
        return symbols["rows"] * _bytes(symbols["cols"], bits)
    elements = 0
    for coefficient, names in rule.terms:
        term = coefficient
        for name in names:
            term = term * symbols[name]
        elements = elements + term
    return _bytes(elements, bits)


def _post_host(program, fails, sizes, machine: MachineShape, opcode: str) -> None:
    idx = program.indices(opcode)
    if not len(idx):
        return
    g = {f.name: program.field(opcode, f.name) for f in FIELDS[opcode]}
    functions = POST_FUNCTIONS if opcode == "POST" else HOST_FUNCTIONS
    aux_rules = POST_AUX if opcode == "POST" else HOST_AUX
    fn = g["fn"]
    fmt_in, fmt_out = g["in_fmt"], g["out_fmt"]
    symbols: dict = {}                                        # what aux sizes are made of (spec.AuxRule)
    if opcode == "POST":
        ins, outs = spec.POST_FORMATS_IN, spec.POST_FORMATS_OUT
    else:
        ins = outs = tuple(f for f in FORMATS if f != "ENG")
    fmt_names = {v: k for k, v in FORMATS.items()}
    for name, values, okset, role in (("in_fmt", fmt_in, ins, "read"), ("out_fmt", fmt_out, outs, "write")):
        fails.check(~_member(values, [FORMATS[x] for x in okset]), idx, lambda p, name=name, values=values,
                    okset=okset, role=role: (f"field {name} = {fmt_names[int(values[p])]}: a {opcode} cannot "
                                             f"{role} it (formats: {', '.join(okset)})"))
    pack = fn == POST_FUNCTIONS["pack"] if opcode == "POST" else np.zeros(len(idx), bool)
    eng_out = fmt_out == FORMATS["ENG"]
    if opcode == "POST":
        fails.check(pack != eng_out, idx, lambda p: (
            "field out_fmt = ENG is only the output of pack" if eng_out[p]
            else f"field out_fmt = {fmt_names[int(fmt_out[p])]}: pack writes an engine weight tile (ENG)"))
        fails.check(g["word"] >= g["words"], idx, lambda p: (
            f"field word = {int(g['word'][p])} is not a word of a {int(g['words'][p])}-word record"))
        # Option bits a function does not define are reserved; defined ones may have a minimum.
        defined = np.zeros(256, np.int64)
        for fname, opts in POST_OPTIONS.items():
            defined[POST_FUNCTIONS[fname]] = sum(((1 << w) - 1) << lo for lo, w, _ in opts.values())
        opts = g["opts"]
        stray = opts & ~defined[fn]
        fn_names = {v: k for k, v in POST_FUNCTIONS.items()}
        fails.check(stray != 0, idx, lambda p: (
            f"field opts = {int(opts[p]):#x} sets bits {fn_names[int(fn[p])]} does not define "
            f"({int(stray[p]):#x}; its options: {_option_text(fn_names[int(fn[p])])})"))
        for fname, options in POST_OPTIONS.items():
            sel = fn == POST_FUNCTIONS[fname]
            if not sel.any():
                continue
            for oname, (lo, width, least) in options.items():
                value = (opts >> lo) & ((1 << width) - 1)
                symbols[oname] = np.where(sel, value, symbols.get(oname, 0))
                if least:
                    fails.check(sel & (value < least), idx, lambda p, fname=fname, oname=oname, lo=lo,
                                width=width, least=least: (
                        f"field opts = {int(opts[p]):#x}: {fname}'s {oname} (opts bits {lo}–{lo + width - 1}) "
                        f"must be at least {least}"))
        symbols["blocks"] = np.maximum(symbols.get("blocks", 1), 1)          # 0 and 1 both mean one block
    bits_table = np.array([FORMAT_BITS[fmt_names[i]] or 0 if i in fmt_names else 0 for i in range(16)], np.int64)
    in_bits, out_bits = bits_table[fmt_in], bits_table[fmt_out]
    rows, cols = g["rows"], g["cols"]
    words = g.get("words", np.ones(len(idx), np.int64))
    if opcode == "POST":
        blocks = np.where(_member(fn, [POST_FUNCTIONS[f] for f in sorted(spec.POST_BLOCK_SOURCES)]),
                          symbols["blocks"], 1)
    else:
        blocks = 1
    src_ext = blocks * rows * _bytes(cols * words, in_bits)
    symbols.update(rows=rows, cols=cols, words=words)
    per_row = _member(fn, [functions[f] for f in sorted(spec.PER_ROW_OUTPUT) if f in functions] or [-1])
    dst_ext = rows * _bytes(np.where(per_row, 1, cols), out_bits)
    live = np.ones(len(idx), bool)
    if opcode == "POST" and pack.any():
        eng = symbols["engine"]
        ne = len(machine.engines)
        fails.check(pack & (eng >= ne), idx, lambda p: (
            f"field opts = {int(opts[p]):#x}: pack's engine {int(eng[p])} names no engine (the machine has {ne})"))
        live = ~pack | (eng < ne)
        col = _engine_columns(machine, np.where(pack & (eng < ne), eng, 0))   # opts mean no engine elsewhere
        transpose = symbols["transpose"]
        out_rows, red = np.where(transpose == 1, cols, rows), np.where(transpose == 1, rows, cols)
        tile = _ceil_div(out_rows, col("rows_total")) * _ceil_div(red, col("lanes")) * col("beat_image_bytes")
        dst_ext = np.where(pack, tile, dst_ext)
    _region(fails, idx, sizes, "src", "source", g["src"], src_ext)
    _region(fails, idx, sizes, "dst", "destination", g["dst"], dst_ext, present=live)
    _overlap(fails, idx, "dst", "destination", g["dst"], dst_ext, "src", "source", g["src"], src_ext,
             in_place_ok=True)
    # The auxiliary operand: required, sized by the function's rule; absent for a function without one.
    aux = g["aux"]
    has_aux = aux != NO_ADDRESS
    needs = np.zeros(len(idx), bool)
    aux_ext = np.zeros(len(idx), np.int64)
    fn_names = {v: k for k, v in functions.items()}
    for fname, rule in aux_rules.items():
        sel = fn == functions[fname]
        if sel.any():
            needs |= sel
            aux_ext = np.where(sel, _aux_extent(rule, symbols, in_bits, out_bits), aux_ext)
    fails.check(needs & ~has_aux, idx, lambda p: (
        f"field aux = none, but {fn_names[int(fn[p])]} reads an auxiliary operand of "
        f"{aux_rules[fn_names[int(fn[p])]].formula}"))
    fails.check(~needs & has_aux, idx, lambda p: (
        f"field aux = {format_address(aux[p])}, but {fn_names[int(fn[p])]} takes no auxiliary operand (give none)"))
    present = needs & has_aux
    _region(fails, idx, sizes, "aux", "auxiliary", np.where(present, aux, 0), aux_ext, present=present)
    _overlap(fails, idx, "dst", "destination", g["dst"], dst_ext, "aux", "auxiliary", aux, aux_ext,
             in_place_ok=True, present=present)
