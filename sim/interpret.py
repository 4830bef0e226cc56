"""The reference executor of a program: every instruction in program order on :class:`sim.memory.Memories`, with no
timing at all (docs/isa.md). The stepped machine (``sim.machine``) is checked against it byte for byte.

It is a *reference* because it shares as little as possible with the machine: tokens, queues and cycles are
ignored (a well-formed program means the same thing in program order), and a ``MATMUL``'s result fields are
computed straight from the decoded operands with plain NumPy integer matrix products (:func:`matmul_fields`) —
not through a unit's ``contributions`` or the cycle kernels. What it does share is the definition of the data:
the element formats (``sim.memory``), the engines' weight-tile format (``weights_from_image``/``weight_image``)
and result records (``pack_results``), and the normative POST functions of :mod:`models.intpost`.

Semantics chosen where docs/isa.md leaves room (each is also in the docstring of the function concerned):

* **B1 operands.** A B1 *activation* of an XNOR-popcount engine is a sign, bit 1 = +1 (``x = 2·bit − 1``); of a
  BAMM engine an attention bit as it is (0/1). A B1 matrix that ``pack`` turns into *weights* is a matrix of signs
  for every engine, bit 1 = +1 (``w = 2·bit − 1``): B1 weights are sign(K), sign(V) or sign(W) in every scheme.
* **count > 1.** ``count`` engines in lockstep are one engine ``count`` times as wide: ``rows × count`` output
  rows per row block, in the weight tile and in the results (as ``sim.model`` has always treated them).
* **BiLLM.** A MATMUL on a binary-basis engine in BiLLM mode covers one 128-column block (``k <=
  reduction_block``); larger ``k`` is refused (a program runs one MATMUL per block, and ``combine`` with
  ``blocks`` reads their records one after the other).
* **LOAD/STORE.** ``host`` reads or writes the same DRAM image as a plain transfer in v1; ``onchip`` (where the
  instruction set has it) copies between two buffers, ``dram`` holding a buffer address. Rows are copied in
  order, so on a written side whose stride is below ``row_bytes`` (``isa.validate`` refuses it) later rows win.
* **HOST** is refused: its functions are floating point, with no integer reference semantics in v1.

Every refusal is an :class:`InterpretError` naming the instruction index, its opcode and the field.
"""

import math

import numpy as np

from hw.accelerator import Accelerator, load_design
from hw.units import EngineParams
from isa.program import Instruction, Program, ProgramError, format_address, split_address
from isa.spec import (BUFFERS, FORMATS, HOST_FUNCTIONS, NO_ADDRESS, POST_AUX, POST_BLOCK_SOURCES,
                      POST_FUNCTIONS, POST_OPTIONS)
from models import intpost
from models.intops import signed_range
from models.units import UnitKind

from .memory import Memories, read_bytes, read_matrix, row_bytes, write_bytes, write_matrix

__all__ = ["InterpretError", "interpret", "matmul_fields", "engine_params", "act_format", "aux_elements",
           "PACK_UNITS", "HOST_REFUSAL"]

_FORMAT_NAMES = {v: k for k, v in FORMATS.items()}
_POST_NAMES = {v: k for k, v in POST_FUNCTIONS.items()}
_HOST_NAMES = {v: k for k, v in HOST_FUNCTIONS.items()}
_BUFFER_NAMES = {v: k for k, v in BUFFERS.items()}
_INT_FORMATS = ("I8", "I16", "I32", "B1")

#: Why a HOST instruction is refused (the message names the instruction and its function before this).
HOST_REFUSAL = ("HOST functions have no integer reference semantics in v1; the host computes them outside the "
                "program")

#: Engines whose weight operand is one plain ``[n, k]`` matrix, the only ones ``pack`` can write: binary-basis
#: weights are planes (bases, or BiLLM's group and two signs) with per-row scales no matrix region carries.
PACK_UNITS = frozenset({UnitKind.TERNARY_MAC, UnitKind.XNOR_POPCOUNT, UnitKind.BAMM, UnitKind.INT8_MAC})


class InterpretError(ProgramError):
    """A program the reference executor cannot run; the message names the instruction index and the field."""


class _Refuse:
    """Makes the refusals of one instruction: ``refuse("field k = 300 ...")``."""

    def __init__(self, ins: Instruction, what: str | None = None):
        self.where = f"instruction {ins.index} ({ins.opcode}{' ' + what if what else ''})"

    def __call__(self, message: str) -> InterpretError:
        return InterpretError(f"{self.where}: {message}")


# -- engines ---------------------------------------------------------------------------------------------------

def engine_params(design: Accelerator, engine: int) -> EngineParams:
    """The stream-engine parameters slot ``engine`` runs with: ``count`` engines in lockstep are one engine
    ``count`` times as wide (``rows × count`` output rows). Refuses (ValueError) a slot that is no integer stream
    engine (an FP MAC array or a systolic array: no integer reference)."""
    slot = design.engines[engine]
    p = slot.params
    if not isinstance(p, EngineParams):
        raise ValueError(f"no integer reference for engine {engine} ({slot.unit})")
    return slot.stream_params


def act_format(p: EngineParams) -> str:
    """The memory format of an engine's activations (docs/isa.md §2): the unit's own (``p.act_format``: B1 for
    XNOR-popcount and BAMM, else the narrowest of I8/I16/I32 holding ``act_bits``)."""
    return p.act_format


def matmul_fields(p: EngineParams, weights, acts, extra=None) -> dict[str, np.ndarray]:
    """The result fields of one problem, ``{field: [tokens, ..., n]}`` as ``pack_results`` takes them, from the
    unit's operands as ``weights_from_image`` returns them (``weights`` ``[n, k]``, binary-basis ``[planes, n,
    k]``; ``extra`` the scales ``alpha [n_bases, n]`` or None) and ``acts`` ``[tokens, k]`` (XNOR: ±1; BAMM:
    0/1 bits; else signed integers). Plain integer matrix products, one formula per unit:

    * ternary-mac, int8-mac: ``acc = x·wᵀ``;
    * xnor-popcount: ``dot = x·wᵀ`` (both ±1), ``bit = dot > 0`` (``threshold="strict"``) or ``dot >= 0``
      (``"nonstrict"``);
    * bamm: ``count = a·vᵀ``, ``sign`` its sign with the zero policy's value for 0;
    * binary-basis, bases mode: ``sums[i] = x·B_iᵀ`` per basis, with ``scale_bits`` also ``y = Σ_i alpha_i·sums[i]``;
      BiLLM mode: per group ``g`` the signed sum ``Σ_{group=g} sign·x``, the salient group's second-order sum
      ``Σ_{group=2} sign2·x``, and the plain group sums ``means[g] = Σ_{group=g} x``.
    """
    x = np.asarray(acts, np.int64)
    w = np.asarray(weights, np.int64)
    kind = p.kind
    if kind in (UnitKind.TERNARY_MAC, UnitKind.INT8_MAC):
        return {"acc": x @ w.T}
    if kind == UnitKind.XNOR_POPCOUNT:
        dot = x @ w.T
        out = {"dot": dot}
        if p.threshold == "strict":
            out["bit"] = (dot > 0).astype(np.int64)
        elif p.threshold == "nonstrict":
            out["bit"] = (dot >= 0).astype(np.int64)
        return out
    if kind == UnitKind.BAMM:
        count = x @ w.T
        return {"count": count, "sign": np.where(count > 0, 1, np.where(count < 0, -1, p.zero_sign))}
    if kind == UnitKind.BINARY_BASIS:
        if p.mode == "bases":
            sums = np.stack([x @ b.T for b in w], axis=1)                       # [tokens, n_bases, n]
            out = {"sums": sums}
            if p.scale_bits:
                out["y"] = (np.asarray(extra, np.int64)[None] * sums).sum(axis=1)
            return out
        group, sign, sign2 = w
        masks = [(group == g).astype(np.int64) for g in range(3)]
        sums = [x @ (m * sign).T for m in masks] + [x @ (masks[2] * sign2).T]
        return {"sums": np.stack(sums, axis=1), "means": np.stack([x @ m.T for m in masks], axis=1)}
    raise ValueError(f"no integer reference for a {kind.value} engine")


# -- memory regions ----------------------------------------------------------------------------------------------

def _space(refuse: _Refuse, mem: Memories, name: str, addr: int, *, dram: bool) -> tuple[np.ndarray, int]:
    """The byte array field ``name`` addresses and the offset in it."""
    if dram:
        return mem.dram, int(addr)
    b, off = split_address(int(addr))
    if b not in mem.buffers:
        raise refuse(f"field {name} = {int(addr):#x} names buffer {b}, which the machine does not have")
    return mem.buffers[b], off


def _check_span(refuse: _Refuse, name: str, addr: int, space: np.ndarray, off: int, extent: int, *,
                dram: bool) -> None:
    if extent and off + extent > space.size:
        where = "the DRAM image" if dram else f"the {_BUFFER_NAMES[split_address(int(addr))[0]]} buffer"
        shown = f"{int(addr):#x}" if dram else format_address(addr)
        raise refuse(f"field {name} = {shown}: the region of {extent} bytes runs {off + extent - space.size} bytes "
                     f"past the end of {where} ({space.size} bytes)")


def _read(refuse, mem, name, addr, rows, nbytes, stride, *, dram=False) -> np.ndarray:
    space, off = _space(refuse, mem, name, addr, dram=dram)
    extent = 0 if rows == 0 or nbytes == 0 else (rows - 1) * stride + nbytes
    _check_span(refuse, name, addr, space, off, extent, dram=dram)
    return read_bytes(space, off, rows, nbytes, stride)


def _write(refuse, mem, name, addr, data: np.ndarray, stride: int, *, dram=False) -> None:
    space, off = _space(refuse, mem, name, addr, dram=dram)
    rows, nbytes = data.shape
    extent = 0 if rows == 0 or nbytes == 0 else (rows - 1) * stride + nbytes
    _check_span(refuse, name, addr, space, off, extent, dram=dram)
    if rows > 1 and stride < nbytes:
        for r in range(rows):              # overlapping rows: written in order, later rows win
            write_bytes(space, off + r * stride, data[r:r + 1], nbytes)
    else:
        write_bytes(space, off, data, stride)


def _read_matrix(refuse, mem, name, addr, rows, cols, fmt, stride=0) -> np.ndarray:
    space, off = _space(refuse, mem, name, addr, dram=False)
    rb = row_bytes(cols, fmt)
    _check_span(refuse, name, addr, space, off, 0 if rows == 0 or rb == 0 else (rows - 1) * (stride or rb) + rb,
                dram=False)
    return read_matrix(space, off, rows, cols, fmt, stride)


def _write_matrix(refuse, mem, name, addr, values, fmt) -> None:
    space, off = _space(refuse, mem, name, addr, dram=False)
    rows, cols = values.shape
    _check_span(refuse, name, addr, space, off, rows * row_bytes(cols, fmt), dram=False)
    write_matrix(space, off, values, fmt)


def _buffer_role(refuse, name: str, addr: int, allowed: tuple[str, ...], what: str) -> None:
    b = split_address(int(addr))[0]
    if _BUFFER_NAMES.get(b) not in allowed:
        raise refuse(f"field {name} = {format_address(addr)}: the {what} must be in the {' or '.join(allowed)} "
                     f"buffer")


# -- the instructions ------------------------------------------------------------------------------------------------

def _transfer(ins: Instruction, mem: Memories) -> None:
    """LOAD / STORE: ``rows`` rows of ``row_bytes`` from one side to the other, each side with its row stride."""
    refuse = _Refuse(ins)
    rows, nbytes = ins["rows"], ins["row_bytes"]
    onchip = bool(ins.fields.get("onchip", 0))
    far = dict(dram=not onchip)
    if ins.opcode == "LOAD":
        data = _read(refuse, mem, "dram", ins["dram"], rows, nbytes, ins["dram_stride"], **far)
        _write(refuse, mem, "sram", ins["sram"], data, ins["sram_stride"])
    else:
        data = _read(refuse, mem, "sram", ins["sram"], rows, nbytes, ins["sram_stride"])
        _write(refuse, mem, "dram", ins["dram"], data, ins["dram_stride"], **far)


def _matmul(ins: Instruction, design: Accelerator, mem: Memories) -> None:
    refuse = _Refuse(ins)
    e = ins["engine"]
    if e >= len(design.engines):
        raise refuse(f"field engine = {e} names no engine (the design has {len(design.engines)})")
    try:
        p = engine_params(design, e)
    except ValueError as exc:
        raise refuse(f"field engine: {exc}") from None
    m, k, n = ins["m"], ins["k"], ins["n"]
    if p.reduction_block and k > p.reduction_block:
        raise refuse(f"field k = {k}: a MATMUL on engine {e} ({p.kind.value}, BiLLM mode) covers one "
                     f"{p.reduction_block}-column block")
    if k > p.max_k:
        raise refuse(f"field k = {k} exceeds max_k = {p.max_k} of engine {e} ({p.kind.value})")
    _buffer_role(refuse, "w", ins["w"], ("weights", "kv"), "weight tile")
    _buffer_role(refuse, "a", ins["a"], ("activations",), "activation region")
    _buffer_role(refuse, "r", ins["r"], ("activations",), "result region")
    tile = p.row_blocks(n) * p.beats_per_reduction(k) * p.weight_beat_bytes
    image = _read(refuse, mem, "w", ins["w"], 1, tile, tile).reshape(-1)
    weights, extra = p.weights_from_image(image, n, k)
    fmt = act_format(p)
    packed = row_bytes(k, fmt)
    astride = ins["astride"]
    if astride and astride < packed:
        raise refuse(f"field astride = {astride} is less than a packed row of k = {k} {fmt} activations "
                     f"({packed} bytes)")
    x = _read_matrix(refuse, mem, "a", ins["a"], m, k, fmt, astride)
    if p.kind == UnitKind.XNOR_POPCOUNT:
        x = 2 * x - 1                                   # a sign: bit 1 = +1
    elif fmt != "B1":
        lo, hi = signed_range(p.act_bits)
        if x.size and (x.min() < lo or x.max() > hi):
            bad = int(x[(x < lo) | (x > hi)].flat[0])
            raise refuse(f"field a: activation {bad} is outside the {p.act_bits}-bit range [{lo}, {hi}] of "
                         f"engine {e} ({p.kind.value})")
    try:
        p.check_operands(weights, x, extra)             # reserved weight codes (e.g. ternary 0b10) are refused
    except ValueError as exc:
        raise refuse(f"field w: the weight tile at {format_address(ins['w'])} holds values engine {e} "
                     f"({p.kind.value}) does not take: {exc}") from None
    try:
        records = p.pack_results(matmul_fields(p, weights, x, extra))
    except ValueError as exc:
        raise refuse(f"field r: {exc}") from None
    _write_matrix(refuse, mem, "r", ins["r"], records.reshape(m, -1).astype(np.int64), "I32")


def aux_elements(fn: str, rows: int, cols: int, words: int, opts: int) -> int:
    """I32 values of POST ``fn``'s auxiliary region by ``isa.spec.POST_AUX`` (0: it takes none); what
    :func:`models.intpost.aux_layout` must agree with."""
    rule = POST_AUX.get(fn)
    if rule is None:
        return 0
    symbols = {"rows": rows, "cols": cols, "words": words}
    for name, (lo, width, _) in POST_OPTIONS.get(fn, {}).items():
        symbols[name] = (opts >> lo) & ((1 << width) - 1)
    if "blocks" in symbols:
        symbols["blocks"] = max(1, symbols["blocks"])                 # 0 and 1 both mean one block
    return sum(c * math.prod(symbols[s] for s in names) for c, names in rule.terms)


def _formats(refuse, ins, allowed_in, allowed_out) -> tuple[str, str]:
    fmts = []
    for name, allowed in (("in_fmt", allowed_in), ("out_fmt", allowed_out)):
        code = ins[name]
        fmt = _FORMAT_NAMES.get(code)
        if fmt not in allowed:
            shown = fmt or code
            raise refuse(f"field {name} = {shown}: this function takes {', '.join(allowed)}")
        fmts.append(fmt)
    return fmts[0], fmts[1]


def _post_source(refuse, ins, mem, fmt, blocks) -> np.ndarray:
    """``[blocks][rows][cols][words]`` elements of ``fmt`` at ``src``: ``blocks × rows`` packed rows of ``cols ×
    words`` elements each (docs/isa.md §3)."""
    rows, cols, words = ins["rows"], ins["cols"], ins["words"]
    x = _read_matrix(refuse, mem, "src", ins["src"], blocks * rows, cols * words, fmt)
    return x.reshape(blocks, rows, cols, words)


def _post(ins: Instruction, design: Accelerator, mem: Memories) -> None:
    fn = _POST_NAMES.get(ins["fn"])
    if fn is None:
        raise _Refuse(ins)(f"field fn = {ins['fn']} is not a POST function")
    refuse = _Refuse(ins, fn)
    opts, words, word = ins["opts"], ins["words"], ins["word"]
    defined = sum(((1 << w) - 1) << lo for lo, w, _ in POST_OPTIONS.get(fn, {}).values())
    if opts & ~defined:
        raise refuse(f"field opts = {opts:#x} sets bits {fn} does not define ({opts & ~defined:#x})")
    if not 0 <= word < words:
        raise refuse(f"field word = {word} is not a word of a {words}-word record")
    if fn == "pack":
        return _pack(ins, refuse, design, mem)
    inp, out = _formats(refuse, ins, _INT_FORMATS, _INT_FORMATS)
    rows, cols = ins["rows"], ins["cols"]
    blocks = max(1, opts & 0xFFFF) if fn in POST_BLOCK_SOURCES else 1
    x = _post_source(refuse, ins, mem, inp, blocks)
    src = x if blocks > 1 else x[0]
    layout = intpost.aux_layout(fn, rows, cols, words, opts)
    size = sum(math.prod(shape) for _, shape in layout)
    spec_size = aux_elements(fn, rows, cols, words, opts)
    if size != spec_size:
        raise refuse(f"field aux: models.intpost.aux_layout gives {size} values, isa.spec.POST_AUX "
                     f"{spec_size}: the two definitions disagree")
    aux = None
    if fn in POST_AUX:
        if ins["aux"] == NO_ADDRESS:
            raise refuse(f"field aux = none, but {fn} reads {POST_AUX[fn].formula}")
        aux = _read_matrix(refuse, mem, "aux", ins["aux"], 1, size, "I32").reshape(-1)
    elif ins["aux"] != NO_ADDRESS:
        raise refuse(f"field aux = {format_address(ins['aux'])}, but {fn} takes no auxiliary operand")
    try:
        y = intpost.FUNCTIONS[fn](src, aux, imm=ins["imm"], shift=ins["shift"], options=opts, out=out, inp=inp,
                                  word=word)
    except ValueError as exc:              # IntPostOverflow included
        raise refuse(str(exc)) from None
    _write_matrix(refuse, mem, "dst", ins["dst"], np.asarray(y, np.int64).reshape(rows, -1), out)


def _pack(ins: Instruction, refuse: _Refuse, design: Accelerator, mem: Memories) -> None:
    """``pack``: the source matrix (record word ``word``) becomes the weight operand of engine ``opts`` bits 0–7,
    written at ``dst`` as its weight tile (``weight_image``). Without ``transpose`` (bit 8) the matrix's rows are
    the engine's output rows (``[n][k]``), with it its columns (``[k][n]``, e.g. V for BAMM). B1 elements are
    signs, bit 1 = +1; integer formats are the weight values as they are."""
    inp, _ = _formats(refuse, ins, _INT_FORMATS, ("ENG",))
    opts = ins["opts"]
    e, transpose = opts & 0xFF, (opts >> 8) & 1
    if e >= len(design.engines):
        raise refuse(f"field opts = {opts:#x}: pack's engine {e} names no engine (the design has "
                     f"{len(design.engines)})")
    try:
        p = engine_params(design, e)
    except ValueError as exc:
        raise refuse(f"field opts: {exc}") from None
    if p.kind not in PACK_UNITS:
        raise refuse(f"field opts = {opts:#x}: pack writes one [n, k] weight matrix; engine {e} "
                     f"({p.kind.value}) takes weight planes no matrix region carries")
    if ins["aux"] != NO_ADDRESS:
        raise refuse(f"field aux = {format_address(ins['aux'])}, but pack takes no auxiliary operand")
    x = _post_source(refuse, ins, mem, inp, 1)[0, :, :, ins["word"]]
    if inp == "B1":
        x = 2 * x - 1                                   # signs: bit 1 = +1
    w = x.T if transpose else x
    n, k = w.shape
    if k > p.max_k:
        which = "rows" if transpose else "cols"
        raise refuse(f"field {which}: a reduction of {k} exceeds max_k = {p.max_k} of engine {e} ({p.kind.value})")
    try:
        image = p.weight_image(w)
    except ValueError as exc:
        raise refuse(f"field src: engine {e} ({p.kind.value}) does not take these weights: {exc}") from None
    _write(refuse, mem, "dst", ins["dst"], image.reshape(1, -1), image.size)


def interpret(program: Program, design, memories: Memories) -> Memories:
    """Execute ``program`` on ``design`` (an :class:`~hw.accelerator.Accelerator` or anything
    :func:`~hw.accelerator.load_design` takes) from ``memories``, instruction after instruction in program order,
    ignoring tokens and timing; returns the final memories (new arrays: ``memories`` is not modified). Stops at
    FINISH. Refuses (:class:`InterpretError`, naming the instruction and the field) what it cannot execute: a
    region outside its memory, a MATMUL on an engine without an integer reference or on operands the engine does
    not take, a POST its function refuses, any HOST instruction."""
    if not isinstance(program, Program):
        raise InterpretError(f"interpret needs a Program, not {type(program).__name__}")
    if not isinstance(memories, Memories):
        raise InterpretError(f"interpret needs Memories, not {type(memories).__name__}")
    design = design if isinstance(design, Accelerator) else load_design(design)
    mem = memories.copy()
    for ins in program:
        op = ins.opcode
        if op in ("LOAD", "STORE"):
            _transfer(ins, mem)
        elif op == "MATMUL":
            _matmul(ins, design, mem)
        elif op == "POST":
            _post(ins, design, mem)
        elif op == "HOST":
            name = _HOST_NAMES.get(ins["fn"], str(ins["fn"]))
            raise _Refuse(ins, name)(f"field fn: {HOST_REFUSAL}")
        elif op == "FINISH":
            break
        # SYNC and NOP move no data
    return mem

