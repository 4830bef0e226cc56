"""The instruction set package (docs/isa.md): field table, builders, file format, listings, static checks, docs.

Round trips run on hand-written programs and on 500 seeded random ones; every refusal is checked with its
message. Speed is a benchmark (benchmarks/bench_isa.py), not a test.
"""

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from isa import asm, docs, encoding, spec
from isa.program import (NO_ADDRESS, NO_OP_REF, WORD_DTYPE, Program, ProgramBuilder, ProgramError, address, block,
                         format_address, split_address)
from isa.spec import BUFFERS, DEP_FLAGS, FIELDS, FORMATS, OPCODES, POST_FUNCTIONS, QUEUES, TOKEN_ROUTES
from isa.validate import EngineShape, MachineShape, validate

ROOT = Path(__file__).resolve().parents[1]

# A small machine: 4 KiB weights, 64 KiB activations, 1 KiB kv; a ternary engine (64 lanes × 16 rows, 256-byte
# beat images, I8 activations, 1-word records) and a binary one (B1 activations, 2-word records).
MACHINE = MachineShape(
    buffers={"weights": 4096, "activations": 1 << 16, "kv": 1024},
    engines=(EngineShape("ternary_mac", lanes=64, rows_total=16, beat_image_bytes=256, act_format="I8",
                         act_bits=8, result_words=1, max_k=4096),
             EngineShape("bamm", lanes=32, rows_total=8, beat_image_bytes=32, act_format="B1", act_bits=1,
                         result_words=2, max_k=1024)),
    post_lanes=16, vector_lanes=16)

ACT = BUFFERS["activations"] << spec.BUFFER_SHIFT


def act(offset: int) -> int:
    return address("activations", offset)


# -- a hand-written program --------------------------------------------------------------------------------

def tiny(changes: dict | None = None) -> ProgramBuilder:
    """LOAD a weight tile, MATMUL 4 tokens × 16 rows × k=64, requantize, STORE: well formed on MACHINE.
    ``changes`` maps an instruction index to field overrides."""
    changes = changes or {}
    b = ProgramBuilder("tiny", {"scheme": "bitnet", "seq": 4})
    q = b.op("layer0.attn.q", "linear", count=1, layers=[0])
    specs = [
        ("load", dict(dram=0x1000, sram="weights+0x0", rows=1, row_bytes=256, push_next=True, op_ref=q)),
        ("matmul", dict(engine=0, w="weights+0x0", a="activations+0x0", r="activations+0x100", m=4, k=64, n=16,
                        pop_prev=True, push_prev=True, op_ref=q)),
        ("post", dict(fn="requant", out_fmt="I8", in_fmt="I32", src="activations+0x100", dst="activations+0x200",
                      rows=4, cols=16, imm=-3, shift=7, push_next=True, op_ref=q)),
        ("store", dict(dram=0x8000, sram="activations+0x200", rows=4, row_bytes=16, pop_prev=True, op_ref=q)),
        ("finish", {}),
    ]
    for i, (method, kw) in enumerate(specs):
        getattr(b, method)(**{**kw, **changes.get(i, {})})
    return b


def test_hand_written_program_decodes_field_by_field():
    p = tiny().build()
    assert len(p) == 5 and p.design == "tiny" and p.meta == {"scheme": "bitnet", "seq": 4}
    assert p.op_table == [{"name": "layer0.attn.q", "kind": "linear", "count": 1, "layers": [0]}]
    assert p.opcodes.tolist() == [OPCODES[o] for o in ("LOAD", "MATMUL", "POST", "STORE", "FINISH")]
    assert p.deps.tolist() == [8, 1 | 4, 8, 1, 0]
    assert p.flag("push_prev").tolist() == [False, True, False, False, False]
    assert p.op_refs.tolist() == [0, 0, 0, 0, NO_OP_REF]
    assert p.field("MATMUL", "m").tolist() == [4] and p.field("POST", "imm").tolist() == [-3]
    assert p.field("LOAD", "sram_stride").tolist() == [256]          # defaults to row_bytes
    assert p.field("POST", "aux").tolist() == [NO_ADDRESS]
    ins = p.instruction(1)
    assert ins.opcode == "MATMUL" and ins.queue == "compute" and ins.op_ref == 0
    assert ins.flags == ("pop_prev", "push_prev")
    assert dict(ins.fields) == dict(engine=0, fence=0, w=0, a=ACT, r=ACT | 0x100, m=4, k=64, n=16, astride=0)
    assert ins["k"] == 64 and p.instruction(-1).opcode == "FINISH" and p.instruction(4).queue is None
    # The words are exactly the documented layout: header, then a0..a6.
    raw = p.words.view(np.uint32).reshape(5, 8)
    assert raw[1].tolist() == [3 | (1 | 4) << 4 | 0 << 16, 0, 0, ACT, ACT | 0x100, 4, 64, 16]
    assert raw[2, 1] == POST_FUNCTIONS["requant"] | FORMATS["I8"] << 8 | FORMATS["I32"] << 12 | 1 << 16
    assert raw[2, 6] == 0xFFFF_FFFD and raw[2, 7] == 7
    assert raw[4].tolist() == [7 | NO_OP_REF << 16, 0, 0, 0, 0, 0, 0, 0]
    assert p.words.dtype == WORD_DTYPE and not p.words.flags.writeable


def test_hand_written_round_trips(tmp_path):
    p = tiny().build()
    assert encoding.from_bytes(encoding.to_bytes(p)) == p
    assert encoding.read(encoding.write(p, tmp_path / "prog.bin")) == p
    text = asm.listing(p)
    assert asm.assemble(text) == p
    line = text.splitlines()[7]
    assert line == ("  1  MATMUL engine=0 fence=0 w=weights+0x0 a=activations+0x0 r=activations+0x100 m=4 k=64 n=16 "
                    "astride=0 [pop_prev push_prev] op=0  ; layer0.attn.q")
    assert text.startswith("; lowbit program, instruction set v1, design 'tiny'\n; 5 instructions (LOAD 1, "
                           "STORE 1, MATMUL 1, POST 1, FINISH 1), 1 ops\n;; isa 1\n;; design \"tiny\"\n")
    assert ';; op 0 {"name": "layer0.attn.q", "kind": "linear", "count": 1, "layers": [0]}' in text
    # Hand-written text: no indices, defaults left out, fields in any order, hex and names.
    q = asm.assemble(';; op 0 {"name": "x", "kind": "k"}\nLOAD rows=2 row_bytes=0x10 sram=kv+0x20 dram=7 '
                     '[push_next]\n; a comment\n\nSYNC queue=compute [pop_prev] op=0  ; why\nFINISH\n')
    assert q.field("LOAD", "sram").tolist() == [address("kv", 0x20)] and q.field("LOAD", "dram_stride") == [16]
    assert q.instruction(1).flags == ("pop_prev",) and q.op_refs.tolist() == [NO_OP_REF, 0, NO_OP_REF]


def test_program_equality_and_copy_semantics():
    p = tiny().build()
    raw = p.words.view(np.uint32).reshape(len(p), 8).copy()
    q = Program(raw, p.op_table, design="tiny", meta=p.meta)
    assert q == p and q != tiny({2: {"imm": 4}}).build() and (p == 3) is False
    raw[0, 1] = 99                                   # the program copied a writeable array
    assert q == p
    assert Program(raw, p.op_table, design="other", meta=p.meta) != p
    assert "5 instructions" in repr(p) and p.counts()["LOAD"] == 1


# -- the field table ---------------------------------------------------------------------------------------

def test_field_table_is_consistent():
    for opcode, fields in FIELDS.items():
        names = [f.name for f in fields]
        assert len(set(names)) == len(names), opcode
        used = [0] * 7
        for f in fields:
            assert 0 <= f.word < 7 and f.lo >= 0 and f.width >= 1 and f.lo + f.width <= 32, (opcode, f.name)
            assert used[f.word] & f.mask == 0, f"{opcode}.{f.name} overlaps another field"
            used[f.word] |= f.mask
            if isinstance(f.default, str):
                assert names.index(f.default) < names.index(f.name), f"{f.name}'s default comes later"
        assert set(spec.field_table(opcode)) == set(names)
    assert set(FIELDS) == set(OPCODES)
    assert {k for k, _ in TOKEN_ROUTES} <= set(QUEUES) and len(set(TOKEN_ROUTES.values())) == 4


def test_addresses():
    assert address("activations", 0x40) == 1 << 28 | 0x40 == address(1, 0x40)
    assert split_address(address("kv", 5)) == (2, 5)
    a = address("weights", np.array([0, 8, 16]))
    assert a.tolist() == [0, 8, 16] and [x.tolist() for x in split_address(a)] == [[0, 0, 0], [0, 8, 16]]
    assert format_address(address("kv", 0x10)) == "kv+0x10" and format_address(NO_ADDRESS) == "none"
    assert format_address(3 << 28) == "0x30000000"
    with pytest.raises(ProgramError, match=r"unknown buffer 'sram' \(buffers: weights, activations, kv\)"):
        address("sram", 0)
    with pytest.raises(ProgramError, match="unknown buffer id 7"):
        address(7, 0)
    with pytest.raises(ProgramError, match=r"buffer offset 0x10000000 is outside 0..0xfffffff"):
        address("kv", 1 << 28)
    with pytest.raises(ProgramError, match=r"buffer offset -0x1 at index 1 is outside"):
        address("kv", np.array([0, -1]))


# -- blocks ------------------------------------------------------------------------------------------------

def test_block_broadcasts_and_matches_the_scalar_builder():
    i = np.arange(6)
    blocks = [
        block("LOAD", 6, dram=i * 256, sram=address("weights", (i % 2) * 256), rows=1, row_bytes=256,
              pop_next=i >= 2, push_next=True, op_ref=0),
        block("MATMUL", w=address("weights", (i % 2) * 256), a=act(0), r=act(0x100 + 64 * i), engine=0, m=4,
              k=64, n=np.full(6, 16), deps=np.where(i < 4, 5, 1), op_ref=np.zeros(6, np.int32)),
        block("POST", 1, fn="combine", out_fmt="I8", in_fmt=FORMATS["I32"], src="activations+0x100",
              dst="activations+0x800", aux="activations+0xa00", rows=4, cols=96, imm=np.array([-2 ** 31]),
              deps=8, op_ref=None),
        block("STORE", 1, dram=0, sram="activations+0x800", rows=4, row_bytes=96, pop_prev=1),
        block("FINISH", 1),
    ]
    order = np.r_[0, 1, 6, 2, 7, 3, 8, 4, 9, 5, 10, 11, 12, 13, 14]
    p = Program.from_blocks(blocks, order=order, op_table=[{"name": "q", "kind": "linear"}], design="d")
    b = ProgramBuilder("d")
    b.op("q", "linear")
    for row in order.tolist():
        if row < 6:
            b.load(dram=row * 256, sram=address("weights", row % 2 * 256), rows=1, row_bytes=256,
                   pop_next=row >= 2, push_next=True, op_ref=0)
        elif row < 12:
            j = row - 6
            b.matmul(engine=0, w=address("weights", j % 2 * 256), a=act(0), r=act(0x100 + 64 * j), m=4, k=64, n=16,
                     pop_prev=True, push_prev=j < 4, op_ref=0)
        elif row == 12:
            b.post(fn="combine", out_fmt="I8", in_fmt="I32", src=act(0x100), dst=act(0x800), aux=act(0xa00),
                   rows=4, cols=96, imm=-2 ** 31, push_next=True)
        elif row == 13:
            b.store(dram=0, sram=act(0x800), rows=4, row_bytes=96, pop_prev=True)
        else:
            b.finish()
    assert p == b.build()
    assert p.field("POST", "imm").tolist() == [-2 ** 31]
    validate(p, MACHINE)
    assert Program.from_blocks([]) == Program(np.zeros(0, WORD_DTYPE))
    assert len(block("NOP", 0)) == 0


@pytest.mark.parametrize("call, message", [
    (lambda: block("LOAD", 3, dram=0, sram=0, rows=np.array([1, 2, -3]), row_bytes=1),
     r"block\(LOAD\): field rows = -3 is out of range 0..4294967295 at position 2"),
    (lambda: block("MATMUL", 2, engine=0, w=0, a=ACT, r=ACT, m=np.array([1, 0]), k=1, n=1),
     r"block\(MATMUL\): field m = 0 is out of range 1..65535 at position 1"),
    (lambda: block("MATMUL", 2, engine=0, w=0, a=ACT, r=ACT, m=1 << 16, k=1, n=1),
     r"block\(MATMUL\): field m = 65536 is out of range 1..65535$"),
    (lambda: block("POST", 1, fn=99, out_fmt="I8", in_fmt="I8", src=ACT, dst=ACT, rows=1, cols=1),
     r"block\(POST\): field fn = 99 is not a POST function \(known: combine=1, "),
    (lambda: block("LOAD", 2, dram=0, sram=np.array([0, 3 << 28]), rows=1, row_bytes=1),
     r"field sram = 0x30000000 names buffer 3, which does not exist .* at position 1"),
    (lambda: block("MATMUL", 1, engine=0, w=NO_ADDRESS, a=ACT, r=ACT, m=1, k=1, n=1),
     r"field w = none, but MATMUL needs an address"),
    (lambda: block("LOAD", 2, dram=0, sram=0, rows=1, row_bytes=1, bogus=1),
     r"block\(LOAD\): LOAD has no field 'bogus' \(fields: dram, sram, "),
    (lambda: block("LOAD", n=2, dram=0, sram=0, rows=1, row_bytes=1),
     r"LOAD has no field 'n' .*give the instruction count positionally"),
    (lambda: block("LOAD", 2, dram=0, sram=0, row_bytes=1),
     r"block\(LOAD\): missing field 'rows' \(it has no default\)"),
    (lambda: block("LOAD", 2, dram=np.zeros(3, int), sram=0, rows=1, row_bytes=1),
     r"block\(LOAD\): field dram has 3 values, expected n = 2"),
    (lambda: block("LOAD", 2, dram=np.zeros(2), sram=0, rows=1, row_bytes=1),
     r"block\(LOAD\): field dram must be integers, not float64 values"),
    (lambda: block("LOAD", dram=0, sram=0, rows=1, row_bytes=1),
     r"block\(LOAD\): give n, or at least one value as an array"),
    (lambda: block("JUMP", 1), r"block: unknown opcode 'JUMP'"),
    (lambda: block("LOAD", 1, dram=0, sram=0, rows=1, row_bytes=1, op_ref=1 << 16),
     r"op_ref = 65536 is out of range 0..65535"),
    (lambda: block("LOAD", 2, dram=0, sram=0, rows=1, row_bytes=1, deps=np.array([0, 16])),
     r"deps = 16 at position 1 is out of range 0..15"),
    (lambda: block("LOAD", 1, dram=0, sram=0, rows=1, row_bytes=1, pop_prev=2),
     r"pop_prev = 2 is out of range 0..1"),
    (lambda: block("POST", 1, fn="combine", out_fmt="I9", in_fmt="I8", src=ACT, dst=ACT, rows=1, cols=1),
     r"POST field out_fmt: malformed number 'I9' \(expected an integer or one of I8, I16"),
    (lambda: Program.from_blocks([block("FINISH", 1)], order=[1]),
     r"from_blocks: order\[0\] = 1 is outside 0..0"),
    (lambda: Program.from_blocks([block("FINISH", 2)], order=[0, 0]),
     r"order is not a permutation: row 1 is never taken"),
    (lambda: Program.from_blocks([np.zeros(2, np.uint32)]), r"block 0 is not a 1-D WORD_DTYPE array"),
])
def test_block_refusals(call, message):
    with pytest.raises(ProgramError, match=message):
        call()


def test_builder_refusals():
    b = ProgramBuilder()
    b.nop()
    with pytest.raises(ProgramError, match=r"^instruction 1 \(MATMUL\): field k = 0 is out of range 1..4294967295$"):
        b.matmul(engine=0, w=0, a=ACT, r=ACT, m=1, k=0, n=1)
    with pytest.raises(ProgramError, match=r"^instruction 1 \(SYNC\): field queue = 3 is not a queue"):
        b.sync(3)
    with pytest.raises(ProgramError, match=r"^instruction 1 \(HOST\): missing field 'src'"):
        b.host(fn="gelu", dst=ACT, rows=1, cols=1)
    with pytest.raises(ProgramError, match=r"^instruction 1 \(LOAD\): field rows must be an integer, not 1.5"):
        b.load(dram=0, sram=0, rows=1.5, row_bytes=1)
    with pytest.raises(ProgramError, match=r"^instruction 1: unknown opcode 'JUMP'"):
        b.emit("JUMP")
    assert len(b) == 1


def test_construction_refuses_what_no_builder_makes():
    raw = np.zeros((3, 8), np.uint32)
    raw[:, 0] = 7                                     # FINISH ×3
    raw[2, 0] = 9
    with pytest.raises(ProgramError, match=r"^instruction 2: unknown opcode 9 in header bits 0–3 \(known: 0 NOP, "):
        Program(raw)
    raw[2, 0] = 7 | 1 << 9
    with pytest.raises(ProgramError, match=r"^instruction 2 \(FINISH\): reserved header bits set: 9 \(0x00000200\)"):
        Program(raw)
    raw[2, 0] = OPCODES["LOAD"]
    raw[2, 7] = 0b1100                                # a6 bit 0 is `host`, bit 1 `onchip`; bits 2 and 3 are reserved
    with pytest.raises(ProgramError, match=r"instruction 2 \(LOAD\): reserved operand word a6 bits set: 2, 3"):
        Program(raw)
    raw[2, 7] = 0
    raw[1, 0] = 7 | 3 << 16
    with pytest.raises(ProgramError, match=r"instruction 1 \(FINISH\): field op_ref = 3 is outside the op table "
                                           r"\(1 ops; 65535 means none\)"):
        Program(raw, [{"name": "a", "kind": "b"}])
    with pytest.raises(ProgramError, match=r"op table entry 0 needs a string 'kind'"):
        Program(raw[:1], [{"name": "a"}])
    with pytest.raises(ProgramError, match=r"op table must be a list of dicts, not dict"):
        Program(raw[:1], {"name": "a"})
    with pytest.raises(ProgramError, match=r"instruction words must be a WORD_DTYPE array or n × 8 uint32"):
        Program(np.zeros((2, 7), np.uint32))
    with pytest.raises(ProgramError, match=r"^instruction 1: word 3 = -1 is not a 32-bit word$"):
        Program(np.array([[7] + [0] * 7, [7, 0, 0, -1, 0, 0, 0, 0]]))


# -- 500 random programs ------------------------------------------------------------------------------------

def random_value(rng, f: spec.Field) -> int:
    lo, hi = f.range
    if f.kind == "address" or (f.kind == "optional_address" and rng.random() < 0.8):
        return int(rng.integers(0, len(BUFFERS))) << spec.BUFFER_SHIFT | int(rng.integers(0, 1 << 28))
    if f.kind == "optional_address":
        return NO_ADDRESS
    table = {"format": FORMATS, "post_fn": POST_FUNCTIONS, "host_fn": spec.HOST_FUNCTIONS, "queue": QUEUES}
    if f.kind in table:
        return int(rng.choice(list(table[f.kind].values())))
    r = rng.random()
    return lo if r < 0.1 else hi if r < 0.2 else int(rng.integers(lo, hi, endpoint=True))


def random_program(seed: int):
    """A random well-formed program (fields in range, flags generated so every pop has an earlier push) and the
    values it was built from."""
    rng = np.random.default_rng(seed)
    n_ops = int(rng.integers(0, 4))
    b = ProgramBuilder(f"design-{seed}" if seed % 3 else "", {"seed": seed, "nested": {"x": [1.5, None]}})
    for k in range(n_ops):
        odd = ["", " ; x=1 [pop_prev]", "\n;; op 9 {}", "\u2028é\r\"\\"][seed % 4]   # must not break a listing
        b.op(f"op{k}{odd}", str(rng.choice(["linear", "attention", "vector"])), count=int(rng.integers(1, 4)))
    tokens = {t: 0 for t in spec.TOKEN_QUEUES}
    expected = []
    names = [o for o in OPCODES if o != "FINISH"]
    for _ in range(int(rng.integers(0, 40))):
        opcode = str(rng.choice(names))
        fields = {f.name: random_value(rng, f) for f in FIELDS[opcode]}
        queue = spec.OPCODE_QUEUE.get(opcode)
        if opcode == "SYNC":
            queue = {v: k for k, v in QUEUES.items()}[fields["queue"]]
        flags = []
        for flag in DEP_FLAGS:                         # pops first: an instruction pops before it pushes
            t = TOKEN_ROUTES.get((queue, flag))
            if t is None or rng.random() < 0.5:
                continue
            if flag.startswith("pop") and tokens[t] > 0:
                tokens[t] -= 1
                flags.append(flag)
            elif flag.startswith("push"):
                tokens[t] += 1
                flags.append(flag)
        ref = int(rng.integers(0, n_ops)) if n_ops and rng.random() < 0.7 else None
        b.emit(opcode, op_ref=ref, **{fl: True for fl in flags}, **fields)
        expected.append((opcode, fields, tuple(fl for fl in DEP_FLAGS if fl in flags), ref))
    b.finish()
    expected.append(("FINISH", {}, (), None))
    return b.build(), expected, tokens


def test_random_programs_round_trip():
    for seed in range(500):
        p, expected, tokens = random_program(seed)
        assert [(i.opcode, dict(i.fields), i.flags, i.op_ref) for i in p] == expected, seed
        for opcode in OPCODES:                          # the vectorized decoder agrees with the per-instruction one
            for f in FIELDS[opcode]:
                want = [fields[f.name] for op, fields, _, _ in expected if op == opcode]
                assert p.field(opcode, f.name).tolist() == want, (seed, opcode, f.name)
        data = encoding.to_bytes(p)
        assert len(data) == 64 + 32 * len(p) + struct.unpack_from("<I", data, 20)[0]
        assert encoding.from_bytes(data) == p, seed
        assert asm.assemble(asm.listing(p)) == p, seed
        # The block builder encodes the same words: one block per instruction, all fields given.
        blocks = [block(op, 1, op_ref=ref, **{fl: 1 for fl in flags}, **fields) for op, fields, flags, ref in expected]
        assert Program.from_blocks(blocks, op_table=p.op_table, design=p.design, meta=p.meta) == p, seed
        # Random fields rarely fit the machine, but the fields, flags and tokens are well formed: a refusal can
        # only be about regions, which come after the token phase.
        try:
            validate(p, MACHINE)
        except ProgramError as e:
            assert "pops" not in str(e) and "is not allowed" not in str(e) and "FINISH" not in str(e), (seed, e)
        # Its token skeleton (each instruction a SYNC on its queue with the same flags) validates, and the token
        # balance the generator kept is what validate reports.
        skeleton = ProgramBuilder()
        for i in p:
            if i.opcode == "FINISH":
                skeleton.finish()
            elif i.queue is None:
                skeleton.nop()
            else:
                skeleton.sync(i.queue, **{fl: True for fl in i.flags})
        summary = validate(skeleton.build(), MACHINE)
        assert dict(summary.leftover) == tokens, seed
        assert summary.instructions == len(p) and sum(summary.per_queue.values()) == len(p)


# -- file refusals -----------------------------------------------------------------------------------------

def file_of(p: Program | None = None) -> bytearray:
    return bytearray(encoding.to_bytes(p or tiny().build()))


def patched(offset: int, fmt: str, value) -> bytes:
    data = file_of()
    struct.pack_into(fmt, data, offset, value)
    return bytes(data)


def with_op_table(text: bytes, design: str = "tiny") -> bytes:
    data = file_of()
    n = struct.unpack_from("<I", data, 12)[0]
    end = 64 + 32 * n
    data[end:] = text
    struct.pack_into("<I", data, 20, len(text))
    struct.pack_into("8s", data, 24, encoding.design_hash(design))
    return bytes(data)


def word_patched(index: int, word: int, value: int) -> bytes:
    data = file_of()
    struct.pack_into("<I", data, 64 + 32 * index + 4 * word, value)
    return bytes(data)


GOOD = bytes(file_of())


@pytest.mark.parametrize("data, message", [
    (b"LOWBITPX" + GOOD[8:], r"^not a lowbit program: the magic at byte offset 0 is b'LOWBITPX', expected "
                             r"b'LOWBITPG'$"),
    (b"", r"^truncated file: 0 bytes, but the header alone is 64$"),
    (GOOD[:5], r"^truncated file: 5 bytes, but the header alone is 64$"),
    (GOOD[:40], r"^truncated file: 40 bytes, but the header alone is 64$"),
    (patched(8, "<H", 2), r"^unknown program format version 2 at byte offset 8 \(known: 1\)$"),
    (patched(10, "<H", 1), r"^unknown file flags 0x0001 at byte offset 10 \(version 1 defines none\)$"),
    (patched(41, "B", 7), r"^reserved header byte at byte offset 41 is 0x07; bytes 32–63 must be 0$"),
    (patched(16, "<I", 100), r"^op-table offset 100 at byte offset 16 does not follow the 5 instructions "
                             r"\(expected 224\)$"),
    (GOOD[:-1], rf"^truncated file: {len(GOOD) - 1} bytes, expected {len(GOOD)} \(64-byte header, 5 instructions "
                rf"× 32 bytes, {len(GOOD) - 224}-byte op table\)$"),
    (GOOD[:100], rf"^truncated file: 100 bytes, expected {len(GOOD)} "),
    (GOOD + b"\0\0", rf"^2 unexpected bytes after the end of the program at byte offset {len(GOOD)} "),
    (with_op_table(b'{"design": "tiny", "ops": ['), r"^the op table at byte offset 224 is not valid UTF-8 JSON: "),
    (with_op_table(b'\xff\xfe'), r"^the op table at byte offset 224 is not valid UTF-8 JSON: "),
    (with_op_table(b'[]'), r"^the op table at byte offset 224 must be a JSON object with exactly a string 'design', "),
    (with_op_table(b'{"design": "tiny", "meta": {}, "ops": [{"name": 3, "kind": "x"}]}'),
     r"^the op table at byte offset 224: op table entry 0 needs a string 'name'"),
    (with_op_table(b'{"design": "other", "meta": {}, "ops": []}'),
     r"^the design-name hash at byte offset 24 \([0-9a-f]{16}\) does not match the op table's design name 'other'"),
    (word_patched(3, 0, 12), r"^instruction 3 \(byte offset 160\): unknown opcode 12 in header bits 0–3"),
    (word_patched(4, 0, 7 | 1 << 15), r"^instruction 4 \(byte offset 192\) \(FINISH\): reserved header bits set: 15"),
    (word_patched(1, 1, 1 << 20), r"^instruction 1 \(byte offset 96\) \(MATMUL\): reserved operand word a0 bits "
                                  r"set: 20 \(0x00100000\); they must be 0$"),
    (word_patched(2, 0, OPCODES["POST"] | 1 << 16), r"^instruction 2 \(byte offset 128\) \(POST\): field op_ref = 1 "
                                                    r"is outside the op table \(1 ops; 65535 means none\)$"),
])
def test_file_refusals(data, message):
    with pytest.raises(ProgramError, match=message):
        encoding.from_bytes(data)


def test_file_write_is_atomic_and_read_names_the_file(tmp_path):
    path = tmp_path / "prog.bin"
    p = tiny().build()
    encoding.write(p, path)
    assert path.read_bytes() == encoding.to_bytes(p) and not list(tmp_path.glob(".*.tmp"))
    path.write_bytes(GOOD[:70])
    with pytest.raises(ProgramError, match=rf"^{path}: truncated file: 70 bytes, expected "):
        encoding.read(path)
    with pytest.raises(ProgramError, match="cannot be written as JSON"):
        encoding.to_bytes(Program(p.words, p.op_table, meta={"x": float("nan")}))
    # The magic is checked on every byte a file has, even a short one.
    with pytest.raises(ProgramError, match="not a lowbit program: the magic at byte offset 0 is b'LOX'"):
        encoding.from_bytes(b"LOX")
    with pytest.raises(ProgramError, match="truncated file: 3 bytes"):
        encoding.from_bytes(b"LOW")


# -- listing refusals --------------------------------------------------------------------------------------

LISTING = asm.listing(tiny().build())


def edited(old: str, new: str) -> str:
    assert LISTING.count(old) == 1, old
    return LISTING.replace(old, new)


@pytest.mark.parametrize("text, message", [
    (edited("MATMUL engine=0", "MATMLU engine=0"), r"^line 8: unknown opcode 'MATMLU' \(opcodes: NOP, LOAD, "),
    (edited("m=4 ", "q=4 "), r"^line 8: MATMUL has no field 'q' \(fields: engine, fence, w, a, r, m, k, n, astride\)$"),
    (edited("m=4 ", ""), r"^line 8: instruction 1 \(MATMUL\): missing field 'm' \(it has no default\)$"),
    (edited("m=4 ", "m=70000 "), r"^line 8: instruction 1 \(MATMUL\): field m = 70000 is out of range 1..65535$"),
    (edited("k=64 ", "k=x64 "), r"^line 8: MATMUL field k: malformed number 'x64' \(expected an integer\)$"),
    (edited("fn=requant", "fn=requantize"), r"^line 9: POST field fn: malformed number 'requantize' \(expected an "
                                            r"integer or one of combine, "),
    (edited("r=activations+0x100", "r=sram+0x100"), r"^line 8: MATMUL field r: malformed number 'sram\+0x100' "
                                                    r"\(expected an integer or buffer\+offset"),
    (edited("[pop_prev push_prev]", "[pop_prev push]"), r"^line 8: unknown flag 'push' \(flags: pop_prev, "),
    (edited("[pop_prev push_prev]", "[pop_prev pop_prev]"), r"^line 8: a flag is given twice"),
    (edited("m=4 ", "m=4 m=4 "), r"^line 8: field m is given twice$"),
    (edited("  1  MATMUL", "  7  MATMUL"), r"^line 8: instruction index 7 does not match its position 1$"),
    (edited("[pop_prev push_prev] op=0", "op=3"), r"^line 8: op=3 is outside the op table \(1 ops\)$"),
    (edited("[pop_prev push_prev] op=0", "op=zero"), r"^line 8: malformed number 'zero' for op"),
    (edited("m=4 ", "m4 "), r"^line 8: expected field=value, got 'm4'$"),
    (edited(";; isa 1", ";; isa 2"), r"^line 3: the listing is for instruction set v2; this assembler reads v1$"),
    (edited(";; op 0", ";; op 1"), r"^the op table skips op 0"),
    (edited(';; op 0 {"name"', ';; op 0 {name'), r"^line 6: malformed JSON in the 'op' directive: "),
    (edited(';; design "tiny"', ';; design 5'), r"^line 4: the design name must be a JSON string, not '5'$"),
    (edited(";; isa 1", ";; isa 1\n;; version 1"), r"^line 4: unknown directive 'version'"),
    (edited("[pop_prev push_prev]", "[pop_prev push_prev"), r"^line 8: unbalanced \[ \] around the flags$"),
])
def test_listing_refusals(text, message):
    with pytest.raises(ProgramError, match=message):
        asm.assemble(text)


# -- validate ----------------------------------------------------------------------------------------------

def refused(b: ProgramBuilder, message: str):
    with pytest.raises(ProgramError, match=message):
        validate(b.build(), MACHINE)


def test_validate_accepts_and_summarises():
    s = validate(tiny().build(), MACHINE)
    assert s.instructions == 5 and dict(s.per_queue) == {"load": 1, "compute": 2, "store": 1, "none": 1}
    assert s.per_opcode["MATMUL"] == 1 and s.per_opcode["SYNC"] == 0
    assert dict(s.pushed) == {"load→compute": 1, "compute→load": 1, "compute→store": 1, "store→compute": 0}
    assert dict(s.popped) == {"load→compute": 1, "compute→load": 0, "compute→store": 1, "store→compute": 0}
    assert dict(s.leftover) == {"load→compute": 0, "compute→load": 1, "compute→store": 0, "store→compute": 0}


def test_validate_refuses_a_deadlock_naming_the_instruction():
    b = ProgramBuilder()
    b.load(dram=0, sram=0, rows=1, row_bytes=256, push_next=True)
    b.matmul(engine=0, w=0, a=act(0), r=act(0x100), m=1, k=64, n=16, pop_prev=True, push_prev=True)
    b.load(dram=0, sram=0, rows=1, row_bytes=256, pop_next=True)          # takes the matmul's token: fine
    b.load(dram=0, sram=0, rows=1, row_bytes=256, pop_next=True)          # nothing left to take
    b.finish()
    refused(b, r"^instruction 3 \(LOAD\): pop_next pops a compute→load token that no earlier instruction pushes: "
               r"the program would deadlock$")
    # A pop whose push comes later in program order deadlocks too (the queues run in program order).
    b = ProgramBuilder()
    b.store(dram=0, sram=act(0), rows=0, row_bytes=0, pop_prev=True)
    b.sync("compute", push_next=True)
    b.finish()
    refused(b, r"^instruction 0 \(STORE\): pop_prev pops a compute→store token that no earlier instruction pushes")


@pytest.mark.parametrize("opcode, kw, flag, message", [
    ("load", dict(dram=0, sram=0, rows=0, row_bytes=0), "pop_prev", "the load queue has no previous queue"),
    ("load", dict(dram=0, sram=0, rows=0, row_bytes=0), "push_prev", "the load queue has no previous queue"),
    ("store", dict(dram=0, sram=0, rows=0, row_bytes=0), "push_next", "the store queue has no next queue"),
    ("sync", dict(queue="store"), "pop_next", "the store queue has no next queue"),
    ("nop", {}, "push_next", "NOP runs on no queue, so it can move no token"),
])
def test_validate_refuses_flags_a_queue_cannot_have(opcode, kw, flag, message):
    b = ProgramBuilder()
    b.sync("compute", push_next=True, push_prev=True)
    getattr(b, opcode)(**kw, **{flag: True})
    b.finish()
    refused(b, rf"^instruction 1 \({opcode.upper()}\): flag {flag} is not allowed: {message}$")
    b = ProgramBuilder()
    b.finish(push_prev=True)
    refused(b, r"^instruction 0 \(FINISH\): flag push_prev is not allowed: FINISH runs on no queue")


def test_validate_finish():
    b = ProgramBuilder()
    b.nop()
    refused(b, r"^the program has no FINISH \(1 instructions\); it must end with exactly one$")
    b.finish()
    b.nop()
    refused(b, r"^instruction 1 \(FINISH\): FINISH is not last: instructions 2..2 follow it$")
    b = ProgramBuilder()
    b.finish()
    b.finish()
    refused(b, r"^instruction 1 \(FINISH\): a second FINISH \(the first is instruction 0\); there must be exactly one$")


def test_validate_rechecks_decoded_fields():
    raw = tiny().build().words.view(np.uint32).reshape(5, 8).copy()
    raw[2, 1] = (raw[2, 1] & 0xFFFF_FF00) | 99                     # POST fn 99
    p = Program(raw, tiny().op_table)
    with pytest.raises(ProgramError, match=r"^instruction 2 \(POST\): field fn = 99 is not a POST function"):
        validate(p, MACHINE)
    raw[2, 1] = (raw[2, 1] & 0xFFFF_FF00) | 1
    raw[1, 5] = 0                                                  # MATMUL m = 0
    with pytest.raises(ProgramError, match=r"^instruction 1 \(MATMUL\): field m = 0 is out of range 1..65535$"):
        validate(Program(raw, tiny().op_table), MACHINE)
    raw[1, 5] = 4
    raw[1, 4] = 5 << 28                                            # MATMUL r in buffer 5
    with pytest.raises(ProgramError, match=r"^instruction 1 \(MATMUL\): field r = 0x50000000 names buffer 5"):
        validate(Program(raw, tiny().op_table), MACHINE)


def test_validate_regions_one_byte_past_the_end():
    # The activation buffer is 65536 bytes: 4 rows of 16 bytes ending exactly at its end fit, one byte more not.
    end = MACHINE.buffers["activations"]
    validate(tiny({3: dict(sram=act(end - 64))}).build(), MACHINE)
    refused(tiny({3: dict(sram=act(end - 63))}),
            r"^instruction 3 \(STORE\): field sram: the buffer region activations\+0xffc1 of 64 bytes runs 1 byte "
            r"past the end of the activations buffer \(65536 bytes\)$")
    # Strided: 4 rows of 16 bytes at stride 32 span 3·32 + 16 = 112 bytes.
    validate(tiny({3: dict(sram=act(end - 112), sram_stride=32)}).build(), MACHINE)
    refused(tiny({3: dict(sram=act(end - 111), sram_stride=32)}), r"runs 1 byte past the end")
    # A weight tile: 16 rows × 64 lanes is one 256-byte beat image; the weight buffer is 4096 bytes.
    validate(tiny({0: dict(sram="weights+0xf00"), 1: dict(w="weights+0xf00")}).build(), MACHINE)
    refused(tiny({0: dict(sram="weights+0xf00"), 1: dict(w="weights+0xf01")}),
            r"^instruction 1 \(MATMUL\): field w: the weight tile region weights\+0xf01 of 256 bytes runs 1 byte past")
    refused(tiny({0: dict(sram="weights+0xf00"), 1: dict(w="weights+0xf00", n=17)}),
            r"^instruction 1 \(MATMUL\): field w: the weight tile region weights\+0xf00 of 512 bytes runs 256 bytes "
            r"past the end of the weights buffer \(4096 bytes\)")
    # DRAM: 32-bit addresses.
    refused(tiny({3: dict(dram=0xFFFF_FFF0)}),
            r"^instruction 3 \(STORE\): field dram = 0xfffffff0: the DRAM region of 64 bytes runs 48 bytes past the "
            r"32-bit address space$")
    # An empty transfer may sit anywhere, even at a buffer's end, with its tokens.
    validate(tiny({3: dict(sram=act(end), rows=0)}).build(), MACHINE)


@pytest.mark.parametrize("changes, message", [
    ({1: dict(engine=2)}, r"^instruction 1 \(MATMUL\): field engine = 2 names no engine \(the machine has 2: "
                          r"0 ternary_mac, 1 bamm\)$"),
    ({1: dict(k=4097)}, r"^instruction 1 \(MATMUL\): field k = 4097 exceeds max_k = 4096 of engine 0 \(ternary_mac\)$"),
    ({1: dict(w="activations+0x0")}, r"^instruction 1 \(MATMUL\): field w = activations\+0x0: the weight tile must be "
                                     r"in the weights or kv buffer$"),
    ({1: dict(a="kv+0x0")}, r"field a = kv\+0x0: the activation must be in the activations buffer$"),
    ({1: dict(r="activations+0xff")}, r"^instruction 1 \(MATMUL\): field r: the result region activations\+0xff of "
                                      r"256 bytes overlaps the activation region activations\+0x0 of 256 bytes "
                                      r"\(field a\)$"),
    ({1: dict(astride=63)}, r"field astride = 63 is less than a packed activation row of k = 64 I8 elements "
                            r"\(64 bytes\)$"),
    ({1: dict(r="activations+0xff01")}, r"field r: the result region activations\+0xff01 of 256 bytes runs 1 byte "
                                        r"past the end"),
    ({3: dict(sram_stride=8)}, None),                  # the read side of a STORE may repeat rows
    ({3: dict(dram_stride=8)}, r"^instruction 3 \(STORE\): field dram_stride = 8 is less than row_bytes = 16: the "
                               r"rows it writes would overlap$"),
    ({0: dict(rows=2, row_bytes=128, sram_stride=64)}, r"^instruction 0 \(LOAD\): field sram_stride = 64 is less "
                                                       r"than row_bytes = 128"),
    ({2: dict(aux="activations+0x800")}, r"^instruction 2 \(POST\): field aux = activations\+0x800, but requant "
                                         r"takes no auxiliary operand \(give none\)$"),
    ({2: dict(fn="combine")}, r"^instruction 2 \(POST\): field aux = none, but combine reads an auxiliary operand "
                              r"of blocks·words·cols \+ cols I32$"),
    ({2: dict(dst="activations+0x140")}, r"^instruction 2 \(POST\): field dst: the destination region "
                                         r"activations\+0x140 of 64 bytes overlaps the source region "
                                         r"activations\+0x100 of 256 bytes \(field src\) \(a destination may coincide "
                                         r"with a source exactly, in place, but not overlap it partially\)$"),
    ({2: dict(dst="activations+0x100")}, None),       # in place
    ({2: dict(in_fmt="F32")}, r"^instruction 2 \(POST\): field in_fmt = F32: a POST cannot read it \(formats: I8, "
                              r"I16, I32, B1\)$"),
    ({2: dict(out_fmt="ENG")}, r"field out_fmt = ENG is only the output of pack$"),
    ({2: dict(word=1)}, r"field word = 1 is not a word of a 1-word record$"),
    ({2: dict(opts=1)}, r"^instruction 2 \(POST\): field opts = 0x1 sets bits requant does not define \(0x1; its "
                        r"options: none\)$"),
    ({2: dict(rows=1100)}, r"field src: the source region activations\+0x100 of 70400 bytes runs 5120 bytes past"),
])
def test_validate_region_and_operand_refusals(changes, message):
    b = tiny(changes)
    if message is None:
        validate(b.build(), MACHINE)
    else:
        refused(b, message)


def post_program(**post) -> ProgramBuilder:
    b = ProgramBuilder()
    b.post(**post)
    b.finish()
    return b


def test_validate_post_and_host_operands():
    # combine over 2-word records of 8 columns: aux = (2 + 1)·8 I32 = 96 bytes.
    kw = dict(fn="combine", out_fmt="I8", in_fmt="I32", words=2, src=act(0), dst=act(0x1000), rows=2, cols=8)
    validate(post_program(**kw, aux=act(0x2000)).build(), MACHINE)
    validate(post_program(**kw, aux=act(0x10000 - 96)).build(), MACHINE)
    refused(post_program(**kw, aux=act(0x10000 - 95)), r"field aux: the auxiliary region activations\+0xffa1 of 96 "
                                                       r"bytes runs 1 byte past")
    refused(post_program(**kw, aux=act(0x100F)), r"field dst: the destination region activations\+0x1000 of 16 bytes "
                                                 r"overlaps the auxiliary region activations\+0x100f")
    # threshold and compare read a selected word; their output is B1: 2 rows of ceil(8/8) bytes.
    validate(post_program(**{**kw, "fn": "threshold", "out_fmt": "B1", "word": 1}, aux=act(0x2000), opts=1).build(),
             MACHINE)
    refused(post_program(**{**kw, "fn": "compare", "out_fmt": "B1"}, opts=2),
            r"field opts = 0x2 sets bits compare does not define \(0x2; its options: ge \(bit 0\)\)$")
    # BiLLM's runs: combine over 3 blocks reads 3 record regions and (3·2 + 1)·8 I32 of aux.
    validate(post_program(**kw, opts=3, aux=act(0x10000 - 224)).build(), MACHINE)
    refused(post_program(**kw, opts=3, aux=act(0x10000 - 223)), r"field aux: the auxiliary region activations\+0xff21 "
                                                               r"of 224 bytes runs 1 byte past")
    refused(post_program(**{**kw, "rows": 2000}, opts=3, aux=act(0x8000)),
            r"field src: the source region activations\+0x0 of 384000 bytes runs")
    # absmax writes one element per row; silu reads a table of `size` (opts) I32 entries.
    validate(post_program(fn="absmax", out_fmt="I32", in_fmt="I8", src=act(0), dst=act(0x10000 - 8), rows=2,
                          cols=64).build(), MACHINE)
    silu = dict(fn="silu", out_fmt="I8", in_fmt="I8", src=act(0), dst=act(0x100), rows=2, cols=64)
    validate(post_program(**silu, opts=64, aux=act(0x10000 - 256)).build(), MACHINE)
    refused(post_program(**silu, opts=65, aux=act(0x10000 - 256)), r"field aux: the auxiliary region "
                                                                  r"activations\+0xff00 of 260 bytes runs 4 bytes past")
    refused(post_program(**silu, opts=0, aux=act(0x1000)),
            r"^instruction 0 \(POST\): field opts = 0x0: silu's size \(opts bits 0–23\) must be at least 1$")
    # pack writes engine 1's tile: 16 rows → 2 row blocks of 8, 64 columns → 2 chunks of 32, 32-byte images.
    pack = dict(fn="pack", out_fmt="ENG", in_fmt="B1", src=act(0), rows=16, cols=64, opts=1)
    validate(post_program(**pack, dst=address("kv", 1024 - 128)).build(), MACHINE)
    refused(post_program(**pack, dst=address("kv", 1024 - 127)), r"field dst: the destination region kv\+0x381 of "
                                                                  r"128 bytes runs 1 byte past")
    refused(post_program(**{**pack, "opts": 5}, dst=address("kv", 0)),
            r"field opts = 0x5: pack's engine 5 names no engine \(the machine has 2\)")
    refused(post_program(**{**pack, "out_fmt": "I8"}, dst=address("kv", 0)),
            r"field out_fmt = I8: pack writes an engine weight tile \(ENG\)")
    # HOST: layernorm reads gamma and beta (2·cols F32); F32 rows of 64 columns.
    b = ProgramBuilder()
    b.host(fn="layernorm", src=act(0), dst=act(0x400), aux=act(0x10000 - 512), rows=2, cols=64, p0=0x3727C5AC)
    b.finish()
    validate(b.build(), MACHINE)
    b = ProgramBuilder()
    b.host(fn="softmax", src=act(0), dst=act(0x100), rows=2, cols=64)
    b.finish()
    refused(b, r"^instruction 0 \(HOST\): field dst: the destination region activations\+0x100 of 512 bytes overlaps "
               r"the source region activations\+0x0 of 512 bytes")
    b = ProgramBuilder()
    b.host(fn="gelu", src=act(0), dst=act(0x400), rows=2, cols=64, out_fmt="ENG")
    b.finish()
    refused(b, r"field out_fmt = ENG: a HOST cannot write it")


def test_post_aux_sizes_are_models_intpost_layouts():
    """The aux sizes the validator checks are the layouts models.intpost (the POST semantics) reads."""
    from models import intpost
    from isa.validate import _aux_extent
    assert set(intpost.FUNCTIONS) == set(POST_FUNCTIONS) - {"pack"}
    rng = np.random.default_rng(0)
    for name in intpost.FUNCTIONS:
        rule = spec.POST_AUX.get(name)
        for _ in range(20):
            rows, cols, words = (int(x) for x in rng.integers(1, 40, 3))
            options = {"blocks": int(rng.integers(0, 5)), "size": int(rng.integers(1, 300))}
            packed = sum(int(options.get(o, 0)) << lo for o, (lo, _, _) in spec.POST_OPTIONS.get(name, {}).items())
            layout = intpost.aux_layout(name, rows, cols, words, packed)
            want = sum(int(np.prod(shape)) for _, shape in layout) * 4
            if rule is None:
                assert want == 0, name
                continue
            symbols = dict(rows=rows, cols=cols, words=words, blocks=max(options["blocks"], 1), size=options["size"])
            assert _aux_extent(rule, symbols, 32, 32) == want, (name, rows, cols, words, options)


def test_machine_shape_refusals():
    e = MACHINE.engines[0]
    with pytest.raises(ProgramError, match=r"machine buffers must give the size of exactly weights, activations, kv"):
        MachineShape({"weights": 1}, (e,), 1, 1)
    with pytest.raises(ProgramError, match=r"machine buffer kv size must be an integer >= 1, not 0"):
        MachineShape({"weights": 1, "activations": 1, "kv": 0}, (e,), 1, 1)
    with pytest.raises(ProgramError, match=r"engine 'x': act_format 'I4' is not one of I8, I16, I32, B1"):
        EngineShape("x", 1, 1, 1, "I4", 4, 1, 1)
    with pytest.raises(ProgramError, match=r"engine 'x': lanes must be an integer >= 1, not 0"):
        EngineShape("x", 0, 1, 1, "I8", 8, 1, 1)
    with pytest.raises(ProgramError, match=r"machine post_lanes must be an integer >= 1"):
        MachineShape(dict(MACHINE.buffers), (e,), 0, 1)
    assert MACHINE.buffer_size("kv") == MACHINE.buffer_size(2) == 1024


# -- docs and layering -------------------------------------------------------------------------------------

def test_docs_tables_are_generated_from_spec():
    text = (ROOT / "docs" / "isa.md").read_text(encoding="utf-8")
    assert docs.generate(text) == text, "docs/isa.md is stale: run python -m isa.docs"
    for name in docs.SECTIONS:
        assert f"<!-- generated: {name} -->" in text
    assert "| `m` | a4 | 0–15 | 1 … 65\u2009535 | required |" in text
    with pytest.raises(ValueError, match=r"line 1: unknown generated section 'nope'"):
        docs.generate("<!-- generated: nope -->\n<!-- end generated -->")
    with pytest.raises(ValueError, match=r"line 1: generated section 'file' has no '<!-- end generated -->'"):
        docs.generate("<!-- generated: file -->\n")
    assert docs.main(["--check"]) == 0


def test_isa_imports_nothing_above_it():
    code = ("import sys, isa, isa.docs; print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'torch', 'amaranth', 'models', 'hw', 'sim', 'reports', 'lowbit', 'numba', 'pandas'}))")
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
    assert json.loads(json.dumps(sorted(spec.__all__)))      # spec's exports stay plain names
