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
from isa.spec import BUFFER_SHIFT, FORMATS, OPCODES, POST_FUNCTIONS, field_table

__all__ = ["instruction_field", "POST_WRITES", "AccelError", "AccelPlan", "BufferPlan", "Pacing", "DRAM", "EXECUTES",
           "DEFAULT_IMEM_DEPTH",
           "MAX_IMEM_DEPTH"]

#: The side code of DRAM (and the host link, which v1 designs route over the DRAM port) in a transfer's
#: (source, destination); buffers are 0, 1, 2 (docs/isa.md §1).
DRAM = 3

#: Opcodes this version of the accelerator executes. HOST (floating point, the host's) is refused by
#: :meth:`AccelPlan.check_program`; so are a MATMUL on an engine the feeder cannot drive (:attr:`EnginePlan.refusal`)
#: and a POST the post unit does not do (:meth:`AccelPlan.post_refusal`).
EXECUTES = ("NOP", "LOAD", "STORE", "MATMUL", "POST", "SYNC", "FINISH")

#: Buffers the post unit writes (a POST's destination): all three — results in the activations buffer, ``pack``'s
#: weight tiles (attention's keys and values) in the kv or the weights buffer.
POST_WRITES = ("weights", "activations", "kv")

#: Instructions the on-chip instruction memory holds unless told otherwise; the generator accepts up to
#: :data:`MAX_IMEM_DEPTH`.
DEFAULT_IMEM_DEPTH = 1024
MAX_IMEM_DEPTH = 1 << 16


def instruction_field(word, opcode: str, name: str):
    """Field ``name`` of an ``opcode`` instruction word (any value that slices: an Amaranth signal, a bit string),
    where ``isa.spec.FIELDS`` puts it: word ``w`` (0 the header) bits ``lo …``."""
    f = field_table(opcode)[name]
    lo = 32 * (f.word + 1) + f.lo
    return word[lo:lo + f.width]


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
        """Cycles between beats as the buffers' reads allow: :meth:`Accelerator.beat_ii` (a MATMUL stretches it for
        its result writes: :meth:`Accelerator.matmul_ii`)."""
        return design.beat_ii(self.index, w_buffer)

    def write_cycles(self, design: Accelerator) -> int:
        """Cycles one whole result takes to write: :meth:`Accelerator.result_write_cycles`."""
        return design.result_write_cycles(self.index)


def _engine_plan(design: Accelerator, index: int) -> EnginePlan:
    from hw.units import EngineParams

    slot = design.engines[index]
    p = slot.params
    if not isinstance(p, EngineParams):
        return EnginePlan(index, slot.unit, p, f"{slot.unit} has no generator (no integer stream engine)")
    wide = slot.stream_params
    mem_bits = wide.act_mem_bits
    if wide.lanes * mem_bits % 8:
        return EnginePlan(index, slot.unit, wide, f"engines[{slot.unit}].lanes = {wide.lanes}: a beat's "
                          f"{mem_bits}-bit activations are not whole bytes")
    words = wide.result_words
    plan = EnginePlan(index, slot.unit, wide, None, mem_bits, wide.lanes * mem_bits // 8, wide.weight_beat_bytes,
                      words)
    return plan


@dataclass(frozen=True)
class PackPlan:
    """How the post unit writes one engine's weight tile (``POST pack``): beat images of ``rows × lanes`` elements of
    ``bits`` each, row-major from bit 0, for each row block and lane chunk in turn; an element past the matrix's
    rows is ``row_pad``, past its reduction ``lane_pad`` (the layout's raw padding bits). ``formats``: the source
    formats for which this plain packing is the unit's own ``weight_image`` (checked on random values when the plan
    is made): ``B1`` (a sign bit is the element) and ``I8`` (its low ``bits`` are)."""

    engine: int
    rows: int
    lanes: int
    bits: int
    row_pad: int
    lane_pad: int
    formats: tuple[str, ...]


def _pack_plan(design: Accelerator, e: EnginePlan) -> PackPlan | str:
    """The :class:`PackPlan` of a fed engine, or why the post unit cannot write its weight tiles."""
    import numpy as np

    p = e.params
    layout = p.weight_beat_layout
    fields = layout.fields
    if len(fields) != 1 or fields[0].axes != ("row", "lane") or fields[0].offset != 0:
        return (f"{e.unit}'s weight tile has fields {[f.name for f in fields]}; the post unit packs a single "
                f"row × lane field")
    f = fields[0]
    if f.elem_width not in (1, 2, 4, 8) or p.rows * p.lanes * f.elem_width != 8 * layout.nbytes:
        return f"{e.unit}'s weight elements are {f.elem_width} bits; the post unit packs 1, 2, 4 or 8 into whole bytes"
    plan = PackPlan(e.index, p.rows, p.lanes, f.elem_width, f.pad("row"), f.pad("lane"), ())
    rng = np.random.default_rng(0)
    m, k = p.rows + 1, min(p.lanes + 3, p.max_k)
    formats = []
    for fmt in ("B1", "I8"):
        if (fmt == "B1") != (f.elem_width == 1):
            continue
        raw = rng.integers(0, 2, (m, k)) if fmt == "B1" else rng.integers(-1, 2, (m, k))
        values = 2 * raw - 1 if fmt == "B1" else raw          # B1 holds ±1 as 1/0 (sim.dataops.weight_values)
        try:
            image = p.weight_image(values)
        except ValueError:
            continue
        if np.array_equal(image, plain_pack(plan, raw)):
            formats.append(fmt)
    if not formats:
        return f"{e.unit}'s weight_image is not a plain packing of its source values"
    return replace(plan, formats=tuple(formats))


def plain_pack(plan: PackPlan, raw) -> "np.ndarray":
    """What the post unit writes for the ``[out rows, reduction]`` matrix ``raw`` (B1 bits or integer values):
    uint8 bytes of every beat image, as :class:`PackPlan` describes."""
    import numpy as np

    raw = np.asarray(raw, np.int64)
    m, k = raw.shape
    R, L = plan.rows, plan.lanes
    nb, nk = -(-m // R), -(-k // L)
    full = np.full((nb * R, nk * L), plan.lane_pad, np.int64)
    full[m:, :] = plan.row_pad
    full[:m, :k] = raw & ((1 << plan.bits) - 1)
    beats = full.reshape(nb, R, nk, L).transpose(0, 2, 1, 3).reshape(-1)
    bits = (beats[:, None] >> np.arange(plan.bits)) & 1
    return np.packbits(bits.reshape(-1).astype(np.uint8), bitorder="little")


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
    packs: dict = None      # fed engine index → PackPlan, or why the post unit cannot pack for it

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
        packs = {e.index: _pack_plan(design, e) for e in engines if e.refusal is None}
        return cls(design, tuple(buffers), pacing, imem_depth, engines, packs)

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

    @property
    def dram_line_bytes(self) -> int:
        """Line width of an on-chip DRAM (:class:`hw.accel.dram.LocalDram`, the host link's DRAM space): a power
        of two at least the DRAM port's lanes (and 4)."""
        n = 4
        while n < self.dram_lanes:
            n *= 2
        return n

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
                raise AccelError(f"instruction {i}: {names[int(code)]} is not executed by this accelerator (it runs "
                                 f"{', '.join(EXECUTES)}; HOST work is the host's)")
        idx = program.indices("POST")
        if len(idx):
            fns = {v: k for k, v in POST_FUNCTIONS.items()}
            fmts = {v: k for k, v in FORMATS.items()}
            for j, fn, dst, opts, inp in zip(idx.tolist(), program.field("POST", "fn").tolist(),
                                             program.field("POST", "dst").tolist(),
                                             program.field("POST", "opts").tolist(),
                                             program.field("POST", "in_fmt").tolist()):
                why = self.post_refusal(fns.get(int(fn), str(fn)), int(dst) >> BUFFER_SHIFT, int(opts),
                                        fmts.get(int(inp), str(inp)))
                if why:
                    raise AccelError(f"instruction {j}: POST {fns.get(int(fn), fn)}: {why}")
        idx = program.indices("MATMUL")
        if len(idx):
            for j, e, k in zip(idx.tolist(), program.field("MATMUL", "engine").tolist(),
                               program.field("MATMUL", "k").tolist()):
                if e < len(self.engines) and self.engines[e].refusal is not None:
                    raise AccelError(f"instruction {j}: MATMUL on engine {e}: {self.engines[e].refusal}")
                block = e < len(self.engines) and self.engines[e].params.reduction_block
                if block and k > block:
                    raise AccelError(f"instruction {j}: MATMUL on engine {e} (BiLLM mode) with k = {k}: a MATMUL "
                                     f"covers one {block}-column block (one MATMUL per block, as sim.blocks emits)")
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

    def post_refusal(self, fn: str, dst_buffer: int, opts: int = 0, in_fmt: str = "I32") -> str | None:
        """Why the post unit cannot run a POST of ``fn`` writing buffer ``dst_buffer`` (None: it can). The unit is
        element-serial (``post.lanes`` 1), reads one 32-bit operand a slot, and writes the activations and kv
        buffers; ``pack`` writes the tiles of the engines :attr:`packs` describes, from the formats they list."""
        lanes = self.design.post.lanes
        if lanes != 1:
            return (f"post.lanes = {lanes}: the generated post unit has one lane (element-serial); set [post] "
                    f"lanes = 1 to run POSTs on this accelerator")
        if fn == "pack":
            engine = opts & 0xFF
            pack = (self.packs or {}).get(engine)
            if pack is None:
                return f"engine {engine} is not one the accelerator feeds, so it has no weight tile to pack"
            if isinstance(pack, str):
                return pack
            if in_fmt not in pack.formats:
                return f"a {in_fmt} source; the post unit packs {', '.join(pack.formats)} for engine {engine}"
        narrow = [b for b in self.buffers if b.line_bytes < 4]
        if narrow:
            return (f"buffers.{narrow[0].name} has {narrow[0].line_bytes}-byte lines; the post unit reads a 32-bit "
                    f"operand in one access (lines of at least 4 bytes)")
        if dst_buffer >= len(self.buffers) or self.buffers[dst_buffer].name not in POST_WRITES:
            name = self.buffers[dst_buffer].name if dst_buffer < len(self.buffers) else dst_buffer
            return f"its destination is in the {name} buffer; the post unit writes {', '.join(POST_WRITES)}"
        return None

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
            "post_unit": {
                "lanes": self.design.post.lanes, "latency": self.design.post.latency,
                "runs_posts": self.design.post.lanes == 1,
                "cycles": "2 + rows·ceil(cols/lanes)·slots(fn) + latency (docs/isa.md §4.3); pack: a slot per "
                          "element of the engine's weight tile",
                "slots": type(self.design.post).slot_table(),
                "writes": list(POST_WRITES),
                "pack": {str(e): (pk if isinstance(pk, str) else {"rows": pk.rows, "lanes": pk.lanes,
                                                                   "bits": pk.bits, "formats": list(pk.formats)})
                         for e, pk in (self.packs or {}).items()},
            },
            "engines": [{"slot": e.index, "unit": e.unit, "fed": e.refusal is None, "why_not": e.refusal,
                         **({"act_bytes": e.act_bytes, "image_bytes": e.image_bytes, "record_words": e.words,
                             "latency": e.params.latency, "result_write_cycles": e.write_cycles(self.design)}
                            if e.refusal is None else {})}
                        for e in self.engines],
        }


def _side(x: int) -> str:
    return "dram" if x == DRAM else BUFFER_ROLES[x]
