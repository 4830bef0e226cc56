"""The data semantics of the instructions that move or post-process data (docs/isa.md §2–3): LOAD, STORE and POST
on :class:`sim.memory.Memories`. One definition, used by both executors — the stepped machine (``sim.machine``)
and the reference interpreter (``sim.interpret``), which differ in how they compute a ``MATMUL``.

``POST`` calls the normative integer function of :mod:`models.intpost`; ``pack`` turns a matrix into an engine's
weight tile through the unit's own ``weight_image``.
"""

from dataclasses import replace

import numpy as np

from isa.spec import BUFFERS, POST_FUNCTIONS, POST_OPTIONS
from models import intpost

from .memory import Memories, read_bytes, read_matrix, write_bytes, write_matrix

__all__ = ["execute_transfer", "execute_post", "engine_params", "post_source", "weight_values"]

_POST_NAMES = {v: k for k, v in POST_FUNCTIONS.items()}
_FORMAT_NAMES = None


def _fmt(code: int) -> str:
    global _FORMAT_NAMES
    if _FORMAT_NAMES is None:
        from isa.spec import FORMATS
        _FORMAT_NAMES = {v: k for k, v in FORMATS.items()}
    return _FORMAT_NAMES[int(code)]


def _option(fn: str, opts: int, name: str) -> int:
    lo, width, _ = POST_OPTIONS[fn][name]
    return (int(opts) >> lo) & ((1 << width) - 1)


def engine_params(design, engine: int):
    """The parameters an engine slot runs with: ``count`` engines in lockstep are one engine ``count`` times as
    wide (as the simulator has always treated them)."""
    slot = design.engines[engine]
    p = slot.params
    return replace(p, rows=p.rows * slot.count) if slot.count > 1 and p.timing == "stream" else p


def execute_transfer(ins, mem: Memories) -> None:
    """LOAD / STORE: ``rows`` rows of ``row_bytes`` between DRAM (or the host link, the same image in v1; or, with
    ``onchip``, another buffer) and a buffer, each side with its own row stride."""
    rows, nbytes = ins["rows"], ins["row_bytes"]
    if rows == 0 or nbytes == 0:
        return
    far, far_off = mem.space(ins["dram"], dram=not ins["onchip"])
    near, near_off = mem.space(ins["sram"], dram=False)
    if ins.opcode == "LOAD":
        data = read_bytes(far, far_off, rows, nbytes, ins["dram_stride"])
        write_bytes(near, near_off, data, ins["sram_stride"])
    else:
        data = read_bytes(near, near_off, rows, nbytes, ins["sram_stride"])
        write_bytes(far, far_off, data, ins["dram_stride"])


def post_source(ins, mem: Memories) -> np.ndarray:
    """A POST's source operand as :mod:`models.intpost` takes it: a matrix ``[rows][cols]`` of its input format,
    or I32 records ``[rows][cols][words]`` (``[blocks][rows][cols][words]`` for a multi-block combine)."""
    fn = _POST_NAMES[ins["fn"]]
    rows, cols, words = ins["rows"], ins["cols"], ins["words"]
    fmt = _fmt(ins["in_fmt"])
    space, off = mem.space(ins["src"], dram=False)
    blocks = max(1, _option(fn, ins["opts"], "blocks")) if fn in ("combine", "combine_rows") else 1
    if words == 1 and blocks == 1:
        return read_matrix(space, off, rows, cols, fmt)
    rec = read_matrix(space, off, blocks * rows, cols * words, fmt).reshape(blocks, rows, cols, words)
    return rec[0] if blocks == 1 else rec


def weight_values(p, field_name: str, values: np.ndarray, fmt: str) -> np.ndarray:
    """Values of a matrix region as a unit's weights: B1 bits are signs, 1 = +1 and 0 = −1, whatever the unit
    (docs/isa.md §2: B1 holds ±1 as 1/0); integer formats as they are."""
    return 2 * values - 1 if fmt == "B1" else values


def execute_post(ins, design, mem: Memories, index: int) -> None:
    """POST: the function of :mod:`models.intpost` on the decoded source and auxiliary region, its output written
    in the output format (packed rows); ``pack``: a matrix into an engine's weight tile."""
    fn = _POST_NAMES[ins["fn"]]
    rows, cols, words = ins["rows"], ins["cols"], ins["words"]
    out_fmt, in_fmt = _fmt(ins["out_fmt"]), _fmt(ins["in_fmt"])
    dst, dst_off = mem.space(ins["dst"], dram=False)
    if fn == "pack":
        p = engine_params(design, _option("pack", ins["opts"], "engine"))
        space, off = mem.space(ins["src"], dram=False)
        # the source is rows × cols records of `words` elements: the matrix is their word `word`
        matrix = read_matrix(space, off, rows, cols * words, in_fmt).reshape(rows, cols, words)[..., ins["word"]]
        if _option("pack", ins["opts"], "transpose"):
            matrix = matrix.T                                   # the matrix's columns are the engine's output rows
        weight_field = next(f.name for f in p.operand_layout.fields if f.role == "weight")
        image = p.weight_image(weight_values(p, weight_field, matrix, in_fmt))
        write_bytes(dst, dst_off, image.reshape(1, -1), image.size)
        return
    src = post_source(ins, mem)
    layout = intpost.aux_layout(fn, rows, cols, words, ins["opts"])
    aux = None
    if layout:
        size = sum(int(np.prod(shape)) for _, shape in layout)
        space, off = mem.space(ins["aux"], dram=False)
        aux = read_matrix(space, off, 1, size, "I32").ravel()
    try:
        out = intpost.FUNCTIONS[fn](src, aux, imm=ins["imm"], shift=ins["shift"], options=ins["opts"], out=out_fmt,
                                    inp=in_fmt, word=ins["word"])
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"instruction {index} (POST {fn}): {exc}") from None
    out = np.asarray(out, np.int64)
    write_matrix(dst, dst_off, out.reshape(out.shape[0], -1), out_fmt)


# Buffers by number, for messages.
BUFFER_NAMES = {v: k for k, v in BUFFERS.items()}
