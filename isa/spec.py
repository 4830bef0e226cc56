"""Names and numbers of the instruction set v1 (docs/isa.md): opcodes, queues, formats, buffers and the POST and
HOST function tables, and the layout tables built on them (where each field sits in an instruction word, the
file header, the token queues, the auxiliary regions of POST and HOST). Everything else in ``isa`` is built from
these tables."""

from dataclasses import dataclass

__all__ = ["VERSION", "WORD_BYTES", "OPCODES", "QUEUES", "OPCODE_QUEUE", "FORMATS", "BUFFERS", "POST_FUNCTIONS",
           "HOST_FUNCTIONS", "NO_ADDRESS", "NO_OP_REF", "BUFFER_SHIFT",
           "MAGIC", "HEADER_BYTES", "KNOWN_VERSIONS", "FILE_HEADER", "OPCODE_BITS", "FLAG_BITS", "DEP_FLAGS",
           "HEADER_RESERVED_MASK", "OP_REF_SHIFT", "TOKEN_QUEUES", "TOKEN_ROUTES", "FORMAT_BITS", "Field",
           "FIELDS", "AuxRule", "POST_AUX", "HOST_AUX", "POST_FORMATS_IN", "POST_FORMATS_OUT", "PER_ROW_OUTPUT",
           "POST_BLOCK_SOURCES", "POST_OPTIONS", "field_table"]

#: Format version written into every program file; readers refuse any other.
VERSION = 1

#: Bytes per instruction word (a 32-bit header and seven 32-bit operand words).
WORD_BYTES = 32

OPCODES = {"NOP": 0, "LOAD": 1, "STORE": 2, "MATMUL": 3, "POST": 4, "HOST": 5, "SYNC": 6, "FINISH": 7}

#: Queues, in token order (load → compute → store).
QUEUES = {"load": 0, "compute": 1, "store": 2}

#: The queue each opcode executes on (SYNC names its queue in a0; FINISH and NOP: none).
OPCODE_QUEUE = {"LOAD": "load", "STORE": "store", "MATMUL": "compute", "POST": "compute", "HOST": "compute"}

#: Element formats of a region (docs/isa.md §2).
FORMATS = {"I8": 0, "I16": 1, "I32": 2, "B1": 3, "F32": 4, "ENG": 5}

#: On-chip buffers by number; an address is ``buffer << BUFFER_SHIFT | byte offset``.
BUFFERS = {"weights": 0, "activations": 1, "kv": 2}
BUFFER_SHIFT = 28

#: An address operand that is not used.
NO_ADDRESS = 0xFFFF_FFFF
#: An instruction that serves no workload operation.
NO_OP_REF = 0xFFFF

#: Integer post-processing functions (POST a0 bits 0–7). Their exact semantics are the functions of the same name
#: in ``models.intpost`` (rounding, saturation, the auxiliary region's layout); see that module.
POST_FUNCTIONS = {
    "combine": 1,        # round_shift(Σ_b Σ_w rec[w]·coef[w][j], shift) + bias[j]: rescale, QBB/BiLLM sums, bias
    "combine_rows": 2,   # round_shift(rowmul[t]·Σ_b Σ_w rec[w]·coef[w][j], shift) + bias[j], one rounding
                         # (dynamic per-token scales)
    "threshold": 3,      # rec[word] > thr[j] (or >=): BiBERT's sign of a scaled, biased output; B1 out
    "compare": 4,        # rec[word] > imm (or >=): Bi-Attention's bool; B1 out
    "absmax": 5,         # per-row max |x|: the dynamic activation scale
    "quantize": 6,       # per-row x·qmax / absmax, rounded and clamped: dynamic requantization
    "requant": 7,        # static clamp(round_shift(x·imm, shift)): gemmlowp-style requantization
    "add": 8,            # x + aux (residual), saturating to the output format
    "mul": 9,            # round_shift(x·aux, shift) (gating products)
    "relu": 10,
    "relu2": 11,         # round_shift(relu(x)², shift)
    "silu": 12,          # table form on the input's fixed-point range
    "pack": 13,          # a B1/I8 matrix (optionally transposed) into an engine's weight-tile format (ENG): keys
                         # and values of attention become the right operand of a MATMUL; semantics: the engine
                         # parameters' weight_image (hw.params), not models.intpost
}

#: Floating-point work left to the host in v1 (HOST a0 bits 0–7), timed on the design's vector unit. The reason it
#: stays on the host is in docs/isa.md; the names are the workload's vector op kinds.
HOST_FUNCTIONS = {
    "layernorm": 1, "rmsnorm": 2, "softmax": 3, "gelu": 4, "silu": 5, "tanh": 6, "rope": 7, "scale": 8,
    "mask": 9, "add": 10, "mul": 11, "relu": 12, "relu2": 13, "absmax": 14, "quantize": 15, "rescale": 16,
    "sign": 17, "bool": 18,
}


# -- instruction layout (docs/isa.md §3) ------------------------------------------------------------------------
# Everything below is the one description of where each value sits in an instruction word. The encoder
# (isa.program.block, ProgramBuilder), the decoder (Program.field, Program.instruction), the assembler, the
# validator and the generated tables of docs/isa.md all read it, so they cannot drift apart.

#: File magic, header size and the format versions this package reads (docs/isa.md §5).
MAGIC = b"LOWBITPG"
HEADER_BYTES = 64
KNOWN_VERSIONS = (1,)

#: The file header: (name, byte offset, bytes, struct code, meaning). Bytes 32–63 are reserved and must be 0.
FILE_HEADER = (
    ("magic", 0, 8, "8s", 'b"LOWBITPG"'),
    ("version", 8, 2, "<H", "format version (VERSION)"),
    ("flags", 10, 2, "<H", "file flags; none are defined in v1, so 0"),
    ("count", 12, 4, "<I", "instruction count N"),
    ("ops_offset", 16, 4, "<I", "byte offset of the op table: always 64 + 32·N"),
    ("ops_length", 20, 4, "<I", "op table length in bytes; the file ends right after it"),
    ("design_hash", 24, 8, "8s", "first 8 bytes of SHA-256 of the design name (UTF-8)"),
    ("reserved", 32, 32, "32s", "0"),
)

#: Header word: opcode in bits 0–3, the four dependency flags in bits 4–7, op_ref in bits 16–31.
OPCODE_BITS = 4
FLAG_BITS = {"pop_prev": 4, "pop_next": 5, "push_prev": 6, "push_next": 7}
#: The flags as a 4-bit ``deps`` value (header bits 4–7 shifted down): what Program.deps returns and block takes.
DEP_FLAGS = {name: 1 << (bit - 4) for name, bit in FLAG_BITS.items()}
HEADER_RESERVED_MASK = 0x0000_FF00
OP_REF_SHIFT = 16

#: The four token queues between neighbouring queues (as VTA), by number.
TOKEN_QUEUES = ("load→compute", "compute→load", "compute→store", "store→compute")

#: (queue, flag) → the token queue the flag pops from or pushes into. A pair missing here is a flag that queue
#: cannot have (the load queue has no previous queue, the store queue no next one).
TOKEN_ROUTES = {
    ("load", "pop_next"): "compute→load", ("load", "push_next"): "load→compute",
    ("compute", "pop_prev"): "load→compute", ("compute", "pop_next"): "store→compute",
    ("compute", "push_prev"): "compute→load", ("compute", "push_next"): "compute→store",
    ("store", "pop_prev"): "compute→store", ("store", "push_prev"): "store→compute",
}

#: Bits per element of each format (ENG: an engine's weight tile, sized by the engine, see isa.validate).
FORMAT_BITS = {"I8": 8, "I16": 16, "I32": 32, "B1": 1, "F32": 32, "ENG": None}


@dataclass(frozen=True)
class Field:
    """One named operand field: ``width`` bits from bit ``lo`` of operand word ``a<word>``.

    kind : how the value reads: ``int``, ``flag`` (0/1), ``address`` (``buffer << 28 | offset``),
        ``optional_address`` (an address or NO_ADDRESS), ``dram`` (a 32-bit DRAM address), ``format``
        (FORMATS), ``post_fn`` / ``host_fn`` (POST_FUNCTIONS / HOST_FUNCTIONS), ``queue`` (QUEUES), ``bits`` (a
        raw 32-bit pattern, e.g. an F32 parameter).
    minimum : smallest valid value, where it is above the width's own range.
    default : the value a builder or the assembler uses when the field is not given; ``None``: the field is
        required; a string: the value of that other field of the same instruction.
    """

    name: str
    word: int
    lo: int
    width: int
    signed: bool = False
    kind: str = "int"
    minimum: int | None = None
    default: int | str | None = None
    doc: str = ""

    @property
    def mask(self) -> int:
        """The field's bits within its operand word."""
        return ((1 << self.width) - 1) << self.lo

    @property
    def range(self) -> tuple[int, int]:
        """Smallest and largest value the field may hold (enumerations further restrict it)."""
        if self.signed:
            lo, hi = -(1 << (self.width - 1)), (1 << (self.width - 1)) - 1
        else:
            lo, hi = 0, (1 << self.width) - 1
        return (lo if self.minimum is None else max(lo, self.minimum)), hi


def _transfer_fields(direction: str) -> tuple[Field, ...]:
    return (
        Field("dram", 0, 0, 32, kind="dram", doc="DRAM (or host-link) byte address"),
        Field("sram", 1, 0, 32, kind="address", doc="buffer address"),
        Field("rows", 2, 0, 32, doc="rows to copy (0: nothing)"),
        Field("row_bytes", 3, 0, 32, doc="bytes per row"),
        Field("dram_stride", 4, 0, 32, default="row_bytes", doc="DRAM row stride in bytes"),
        Field("sram_stride", 5, 0, 32, default="row_bytes", doc="buffer row stride in bytes"),
        Field("host", 6, 0, 1, kind="flag", default=0, doc=f"{direction} the host link instead of DRAM"),
        Field("onchip", 6, 1, 1, kind="flag", default=0,
              doc="a copy between buffers: `dram` holds a buffer address (e.g. a KV-cache append on chip); timed "
                  "at the narrower buffer line (§4.1)"),
    )


#: Operand fields of every opcode, in listing order (docs/isa.md §3). Bits not covered are reserved (0).
FIELDS: dict[str, tuple[Field, ...]] = {
    "NOP": (),
    "LOAD": _transfer_fields("read from"),
    "STORE": _transfer_fields("write to"),
    "MATMUL": (
        Field("engine", 0, 0, 8, doc="engine slot (the design's order)"),
        Field("fence", 0, 8, 1, kind="flag", default=0,
              doc="wait until every earlier compute instruction is done"),
        Field("w", 1, 0, 32, kind="address", doc="weight tile (ENG), in the weights or kv buffer"),
        Field("a", 2, 0, 32, kind="address", doc="activations, in the activations buffer"),
        Field("r", 3, 0, 32, kind="address", doc="result records (I32), in the activations buffer"),
        Field("m", 4, 0, 16, minimum=1, doc="tokens (activation rows)"),
        Field("k", 5, 0, 32, minimum=1, doc="reduction length"),
        Field("n", 6, 0, 16, minimum=1, doc="output rows"),
        Field("astride", 6, 16, 16, default=0, doc="activation row stride in bytes (0: packed)"),
    ),
    "POST": (
        Field("fn", 0, 0, 8, kind="post_fn", doc="function (POST_FUNCTIONS)"),
        Field("out_fmt", 0, 8, 4, kind="format", doc="output format"),
        Field("in_fmt", 0, 12, 4, kind="format", doc="input format"),
        Field("words", 0, 16, 8, minimum=1, default=1, doc="I32 words per input record (1: a plain matrix)"),
        Field("word", 0, 24, 8, default=0, doc="the record word a compare or threshold reads"),
        Field("src", 1, 0, 32, kind="address", doc="source: rows × cols records of `words` elements (× blocks)"),
        Field("dst", 2, 0, 32, kind="address", doc="destination"),
        Field("aux", 3, 0, 32, kind="optional_address", default=NO_ADDRESS,
              doc="auxiliary operand (POST_AUX), or none"),
        Field("rows", 4, 0, 16, minimum=1, doc="rows"),
        Field("cols", 4, 16, 16, minimum=1, doc="columns (records per row)"),
        Field("imm", 5, 0, 32, signed=True, default=0, doc="immediate (a multiplier, qmax, a compare bound)"),
        Field("shift", 6, 0, 8, default=0, doc="right shift of the rounding"),
        Field("opts", 6, 8, 24, default=0, doc="options, per function (POST_OPTIONS)"),
    ),
    "HOST": (
        Field("fn", 0, 0, 8, kind="host_fn", doc="function (HOST_FUNCTIONS)"),
        Field("out_fmt", 0, 8, 4, kind="format", default=FORMATS["F32"], doc="output format"),
        Field("in_fmt", 0, 12, 4, kind="format", default=FORMATS["F32"], doc="input format"),
        Field("src", 1, 0, 32, kind="address", doc="source: rows × cols elements"),
        Field("dst", 2, 0, 32, kind="address", doc="destination"),
        Field("aux", 3, 0, 32, kind="optional_address", default=NO_ADDRESS,
              doc="auxiliary operand (HOST_AUX), or none"),
        Field("rows", 4, 0, 16, minimum=1, doc="rows"),
        Field("cols", 4, 16, 16, minimum=1, doc="columns"),
        Field("p0", 5, 0, 32, kind="bits", default=0, doc="parameter (e.g. an F32 epsilon or scale, as bits)"),
        Field("p1", 6, 0, 32, kind="bits", default=0, doc="parameter"),
    ),
    "SYNC": (Field("queue", 0, 0, 2, kind="queue", doc="the queue whose tokens move (QUEUES)"),),
    "FINISH": (),
}


def field_table(opcode: str) -> dict[str, Field]:
    """The fields of ``opcode`` by name."""
    return {f.name: f for f in FIELDS[opcode]}


@dataclass(frozen=True)
class AuxRule:
    """The auxiliary region a POST or HOST function reads, as ``isa.validate`` sizes it: ``Σ coefficient ·
    Π symbols`` elements of ``fmt`` (``"in"``/``"out"``: the instruction's input or output format), laid out flat;
    with ``matrix`` a ``rows × cols`` matrix whose rows start on a byte (only B1 pads). Symbols: ``rows``,
    ``cols``, ``words`` (record words), and the function's options (``POST_OPTIONS``), e.g. ``blocks`` and
    ``size``.
    """

    fmt: str
    terms: tuple[tuple[int, tuple[str, ...]], ...] = ()
    matrix: bool = False
    doc: str = ""

    @property
    def formula(self) -> str:
        """The size as docs/isa.md prints it."""
        if self.matrix:
            return f"rows × cols {self.fmt}"
        parts = ["·".join(([str(c)] if c != 1 else []) + list(sym)) for c, sym in self.terms]
        return " + ".join(parts) + f" {self.fmt}"


#: Auxiliary operands of the POST functions, as ``models.intpost.aux_layout`` defines them (flat int32 values); a
#: function missing here takes none (aux must be none).
POST_AUX = {
    "combine": AuxRule("I32", ((1, ("blocks", "words", "cols")), (1, ("cols",))),
                       doc="coef[blocks][words][cols], then bias[cols]"),
    "combine_rows": AuxRule("I32", ((1, ("blocks", "words", "cols")), (1, ("cols",)), (1, ("rows",))),
                            doc="as combine, then rowmul[rows]"),
    "threshold": AuxRule("I32", ((1, ("cols",)),), doc="thr[cols]"),
    "quantize": AuxRule("I32", ((1, ("rows",)),), doc="absmax[rows]"),
    "add": AuxRule("I32", ((1, ("rows", "cols")),), doc="y[rows][cols], the second operand"),
    "mul": AuxRule("I32", ((1, ("rows", "cols")),), doc="y[rows][cols], the second operand"),
    "silu": AuxRule("I32", ((1, ("size",)),), doc="table[size]"),
}

#: Auxiliary operands of the HOST functions (as POST_AUX). Provisional: no normative host semantics exist yet.
HOST_AUX = {
    "layernorm": AuxRule("F32", ((2, ("cols",)),), doc="gamma[cols], then beta[cols]"),
    "rmsnorm": AuxRule("F32", ((1, ("cols",)),), doc="gamma[cols]"),
    "rope": AuxRule("F32", matrix=True, doc="cos and sin per row (position) and column pair"),
    "mask": AuxRule("B1", matrix=True, doc="1: keep, 0: masked"),
    "add": AuxRule("in", matrix=True, doc="the second operand"),
    "mul": AuxRule("in", matrix=True, doc="the second operand"),
    "quantize": AuxRule("F32", ((1, ("rows",)),), doc="absmax per row"),
    "rescale": AuxRule("F32", ((1, ("cols",)),), doc="scale per column"),
}

#: Functions whose output is one element per row rather than rows × cols (POST and HOST alike).
PER_ROW_OUTPUT = frozenset({"absmax"})

#: POST functions whose source is ``blocks`` record regions one after the other (BiLLM's 128-column runs).
POST_BLOCK_SOURCES = frozenset({"combine", "combine_rows"})

#: Formats a POST may read and write: it is integer work (ENG only as the output of ``pack``).
POST_FORMATS_IN = ("I8", "I16", "I32", "B1")
POST_FORMATS_OUT = ("I8", "I16", "I32", "B1", "ENG")

#: Options of the POST functions that have any (``opts`` = a6 bits 8–31): name → (bit offset within ``opts``,
#: width, smallest valid value). Bits a function does not define are reserved. ``blocks`` 0 means 1.
POST_OPTIONS = {
    "combine": {"blocks": (0, 16, 0)},
    "combine_rows": {"blocks": (0, 16, 0)},
    "threshold": {"ge": (0, 1, 0)},
    "compare": {"ge": (0, 1, 0)},
    "silu": {"size": (0, 24, 1)},
    "pack": {"engine": (0, 8, 0), "transpose": (8, 1, 0)},
}
