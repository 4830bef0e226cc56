"""What the accelerator generator builds from a description, in plain Python: buffer geometry, the transfer pacing
constants, the data-path widths, and the refusals — so the CLI and the benches can ask (and refuse bad input)
without importing Amaranth, and the generator, the bench and the manifest read the same numbers.

Every figure here is derived from :class:`hw.accelerator.Accelerator`; the timing it implements is docs/isa.md §4,
whose transfer formula is :meth:`Accelerator.transfer_cycles` (the RTL paces each row at exactly
:meth:`Accelerator.transfer_rate` bytes a cycle with a remainder counter: no division, no float).
"""

from dataclasses import dataclass, replace
from fractions import Fraction

from hw.accelerator import BUFFER_ROLES, Accelerator
from isa.program import Program, split_address
from isa.spec import BUFFER_SHIFT, OPCODES

__all__ = ["AccelError", "AccelPlan", "BufferPlan", "Pacing", "DRAM", "EXECUTES", "DEFAULT_IMEM_DEPTH",
           "MAX_IMEM_DEPTH"]

#: The side code of DRAM (and the host link, which v1 designs route over the DRAM port) in a transfer's
#: (source, destination); buffers are 0, 1, 2 (docs/isa.md §1).
DRAM = 3

#: Opcodes this version of the accelerator executes. POST and HOST are refused by :meth:`AccelPlan.check_program`
#: until the post unit is built; a MATMUL on an engine the feeder cannot drive (:attr:`EnginePlan.refusal`) too.
EXECUTES = ("NOP", "LOAD", "STORE", "MATMUL", "SYNC", "FINISH")

#: Instructions the on-chip instruction memory holds unless told otherwise; the generator accepts up to
#: :data:`MAX_IMEM_DEPTH`.
DEFAULT_IMEM_DEPTH = 1024
MAX_IMEM_DEPTH = 1 << 16


class AccelError(ValueError):
    """A design or program the accelerator generator cannot build or run; the message names the value."""


@dataclass(frozen=True)
class BufferPlan:
    """One on-chip buffer as built: byte-addressed lines of ``line_bytes``, stored as two memories of even and odd
    lines so that any run of up to a line of bytes, at any address, is one write or read of each. A line is the
    most a transfer moves in a cycle: the described line (one word of every bank, ``port_bytes``) or the transfer
    engine's width (``dma.bytes_per_cycle``), whichever is narrower — a wider memory line would only widen the
    byte rotators (the RTL's largest part) for bandwidth no transfer uses."""

    name: str
    index: int
    size_bytes: int
    line_bytes: int
    port_bytes: int

    @property
    def lines(self) -> int:
        return -(-self.size_bytes // self.line_bytes)

    @property
    def half_depth(self) -> int:
        """Depth of the even and of the odd memory (one spare line: a run ending at the last byte still names the
        line after it, with no byte enabled)."""
        return (self.lines + 2) // 2


@dataclass(frozen=True)
class EnginePlan:
    """One engine slot as the feeder drives it: ``params`` are the unit's (``rows × count`` rows: lockstep engines
    are one wider engine, as the simulator runs them), a beat reads ``act_bytes`` of activations (``lanes``
    elements of ``act_mem_bits`` as stored) and ``image_bytes`` of weight-tile beat image, a result beat writes
    ``rows × words`` I32 record words. ``refusal`` says why the feeder cannot drive it (None: it can)."""

    index: int
    unit: str
    params: object
    refusal: str | None
    act_mem_bits: int = 0
    act_bytes: int = 0
    image_bytes: int = 0
    words: int = 0

    @property
    def record_bytes(self) -> int:
        return self.params.rows * self.words * 4

    def ii(self, design: Accelerator, w_buffer: int) -> int:
        """Cycles between beats: :meth:`Accelerator.beat_ii`, the formula the simulator times."""
        return design.beat_ii(self.index, w_buffer)


def _engine_plan(design: Accelerator, index: int) -> EnginePlan:
    from hw.units import EngineParams

    slot = design.engines[index]
    p = slot.params
    if not isinstance(p, EngineParams):
        return EnginePlan(index, slot.unit, p, f"{slot.unit} has no generator (no integer stream engine)")
    wide = slot.stream_params
    if wide.reduction_block:
        return EnginePlan(index, slot.unit, wide, f"{slot.unit} in BiLLM mode (per-block results) is not fed yet")
    mem_bits = wide.act_mem_bits
    if wide.lanes * mem_bits % 8:
        return EnginePlan(index, slot.unit, wide, f"engines[{slot.unit}].lanes = {wide.lanes}: a beat's "
                          f"{mem_bits}-bit activations are not whole bytes")
    words = wide.result_words
    plan = EnginePlan(index, slot.unit, wide, None, mem_bits, wide.lanes * mem_bits // 8, wide.weight_beat_bytes,
                      words)
    line = design.buffers["activations"].line_bits // 8
    if plan.record_bytes > line:
        return replace(plan, refusal=f"{slot.unit}: a result beat is {wide.rows} rows × {words} words × 4 = "
                                     f"{plan.record_bytes} bytes, more than the activations buffer's {line}-byte "
                                     f"line (one write a cycle)")
    return plan


@dataclass(frozen=True)
class Pacing:
    """Bytes a transfer moves per cycle, ``rate = q + r/den`` exactly: each cycle of a row moves ``q`` bytes, one
    more when a remainder counter (``+r`` a cycle) reaches ``den`` — so after ``c`` cycles a row has moved
    ``min(row_bytes, floor(c·rate))`` bytes and takes ``ceil(row_bytes / rate)`` cycles."""

    q: int
    r: int
    den: int

    @classmethod
    def of(cls, rate: Fraction) -> "Pacing":
        return cls(rate.numerator // rate.denominator, rate.numerator % rate.denominator, rate.denominator)

    @property
    def max_bytes(self) -> int:
        return self.q + (self.r > 0)


@dataclass(frozen=True)
class AccelPlan:
    design: Accelerator
    buffers: tuple[BufferPlan, ...]
    pacing: dict            # (src, dst) → Pacing, src/dst a buffer index or DRAM
    imem_depth: int
    engines: tuple = ()     # EnginePlan per engine slot

    @classmethod
    def of(cls, design: Accelerator, *, imem_depth: int = DEFAULT_IMEM_DEPTH) -> "AccelPlan":
        """The plan of ``design``, or :class:`AccelError` naming the field that cannot be built."""
        if isinstance(imem_depth, bool) or not isinstance(imem_depth, int) or not 2 <= imem_depth <= MAX_IMEM_DEPTH:
            raise AccelError(f"imem_depth must be an integer in [2, {MAX_IMEM_DEPTH}], not {imem_depth!r}")
        buffers = []
        for i, role in enumerate(BUFFER_ROLES):
            b = design.buffers[role]
            if b.word_bits % 8:
                raise AccelError(f"buffers.{role}.word_bits = {b.word_bits}: the accelerator's buffers are "
                                 f"byte-addressed, so a word must be whole bytes (a multiple of 8)")
            if b.size_bytes >= 1 << BUFFER_SHIFT:
                raise AccelError(f"buffers.{role}.size_bytes = {b.size_bytes:,}: an instruction addresses at most "
                                 f"{1 << BUFFER_SHIFT:,} bytes of a buffer")
            port = b.line_bits // 8
            buffers.append(BufferPlan(role, i, b.size_bytes, port, port))
        pacing = {}
        for src in (*range(len(BUFFER_ROLES)), DRAM):
            for dst in (*range(len(BUFFER_ROLES)), DRAM):
                if src == dst == DRAM:
                    continue
                rate = design.transfer_rate(None if src == DRAM else src, None if dst == DRAM else dst)
                pacing[(src, dst)] = Pacing.of(rate)
        engines = tuple(_engine_plan(design, i) for i in range(len(design.engines)))
        return cls(design, tuple(buffers), pacing, imem_depth, engines)

    @property
    def fed(self) -> tuple:
        """The engine slots the feeder drives."""
        return tuple(e for e in self.engines if e.refusal is None)

    # -- widths -----------------------------------------------------------------------------------------------------

    @property
    def lanes(self) -> int:
        """Bytes of a mover's data path: the most any transfer moves in a cycle."""
        return max(p.max_bytes for p in self.pacing.values())

    @property
    def dram_lanes(self) -> int:
        """Bytes of the DRAM port's data: the most a transfer to or from DRAM moves in a cycle."""
        return max(p.max_bytes for (s, d), p in self.pacing.items() if DRAM in (s, d))

    @property
    def max_den(self) -> int:
        return max(p.den for p in self.pacing.values())

    @property
    def max_line_bytes(self) -> int:
        return max(b.line_bytes for b in self.buffers)

    # -- programs ---------------------------------------------------------------------------------------------------

    def check_program(self, program: Program) -> None:
        """Refuse, naming the instruction, a program this accelerator cannot run: one longer than its
        instruction memory, or with an opcode it does not execute yet (:data:`EXECUTES`)."""
        if len(program) > self.imem_depth:
            raise AccelError(f"the program has {len(program):,} instructions; the accelerator's instruction memory "
                             f"holds {self.imem_depth:,} (imem_depth)")
        names = {v: k for k, v in OPCODES.items()}
        for i, code in enumerate(program.opcodes.tolist()):
            if names[int(code)] not in EXECUTES:
                raise AccelError(f"instruction {i}: {names[int(code)]} is not executed by this accelerator yet "
                                 f"(it runs {', '.join(EXECUTES)}); the post unit is not built")
        idx = program.indices("MATMUL")
        if len(idx):
            for j, e in zip(idx.tolist(), program.field("MATMUL", "engine").tolist()):
                if e < len(self.engines) and self.engines[e].refusal is not None:
                    raise AccelError(f"instruction {j}: MATMUL on engine {e}: {self.engines[e].refusal}")
        for name in ("LOAD", "STORE"):
            idx = program.indices(name)
            if not len(idx):
                continue
            for f in ("sram",):
                bufs, offs = split_address(program.field(name, f))
                for j, (b, o) in enumerate(zip(bufs.tolist(), offs.tolist())):
                    if b >= len(self.buffers):
                        raise AccelError(f"instruction {int(idx[j])}: {name} {f} names buffer {b}; there are "
                                         f"{len(self.buffers)}")

    def manifest(self) -> dict:
        """The facts a manifest states about the built accelerator (``hw.accel.export`` adds ports and files)."""
        return {
            "buffers": [{"name": b.name, "id": b.index, "size_bytes": b.size_bytes, "line_bytes": b.line_bytes,
                         "described_line_bytes": b.port_bytes,
                         "lines": b.lines, "memories": {"even": b.half_depth, "odd": b.half_depth}}
                        for b in self.buffers],
            "imem_depth": self.imem_depth,
            "dma_bytes_per_cycle": self.design.dma.bytes_per_cycle,
            "lanes": self.lanes,
            "dram_lanes": self.dram_lanes,
            "pacing": [{"src": _side(s), "dst": _side(d), "bytes_per_cycle": f"{p.q}+{p.r}/{p.den}"}
                       for (s, d), p in sorted(self.pacing.items())],
            "executes": list(EXECUTES),
            "engines": [{"slot": e.index, "unit": e.unit, "fed": e.refusal is None, "why_not": e.refusal,
                         **({"act_bytes": e.act_bytes, "image_bytes": e.image_bytes, "record_words": e.words,
                             "latency": e.params.latency} if e.refusal is None else {})}
                        for e in self.engines],
        }


def _side(x: int) -> str:
    return "dram" if x == DRAM else BUFFER_ROLES[x]
