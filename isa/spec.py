"""Names and numbers of the instruction set v1 (docs/isa.md): opcodes, queues, formats, buffers and the POST and
HOST function tables. Everything else in ``isa`` is built from these tables."""

__all__ = ["VERSION", "WORD_BYTES", "OPCODES", "QUEUES", "OPCODE_QUEUE", "FORMATS", "BUFFERS", "POST_FUNCTIONS",
           "HOST_FUNCTIONS", "NO_ADDRESS", "NO_OP_REF", "BUFFER_SHIFT"]

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
    "combine": 1,        # round_shift(Σ_w rec[w]·coef[w][j] + bias[j], shift): rescale, QBB/BiLLM sums, bias
    "combine_rows": 2,   # as combine, then × a per-row multiplier and shift (dynamic per-token scales)
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
