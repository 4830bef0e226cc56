"""The reference interpreter (sim/interpret.py) and the random program generator (sim/progen.py).

(a) The interpreter's MATMUL formulas against the units' own datapath (``finish`` of the summed per-beat
``contributions``) for every unit kind and option, on random operands. (b) Tiny hand-written programs, one per
opcode family, whose expected memories are derived by hand (the literals below), on the interpreter and on the
stepped machine. (c) Random programs on random small designs: each validates, has no race, and the stepped machine
leaves byte-identical DRAM and buffers to the interpreter's, with the fast mode's cycles equal to the stepped
mode's and every conflicting pair of instructions ordered in the run's own cycles. (d) Mutations the checks must
catch: dropped tokens.
"""

from dataclasses import replace

import numpy as np
import pytest

from hw.accelerator import Accelerator, load_design
from hw.units import BammParams, BinaryBasisParams, Int8MacParams, TernaryMacParams, XnorPopcountParams
from isa.program import Program, ProgramBuilder, ProgramError, address
from isa.spec import POST_AUX, POST_FUNCTIONS, POST_OPTIONS
from isa.validate import validate
from models import intpost
from sim.interpret import InterpretError, aux_elements, interpret, matmul_fields
from sim.machine import machine_shape, run
from sim.memory import Memories
from sim.progen import program_regions, races, random_design, random_program

W, A, KV = (lambda off: address("weights", off)), (lambda off: address("activations", off)), \
    (lambda off: address("kv", off))


# -- (a) formulas against the datapath ----------------------------------------------------------------------------

def datapath_fields(p, weights, acts, extra):
    """The result fields as the unit's datapath makes them: every beat's channel contributions summed over the
    reduction's chunks, finished by the unit's result stage, mapped back to ``[tokens, ..., n]``."""
    n, k = weights.shape[-2:]
    t = acts.shape[0]
    nb, nk = p.row_blocks(n), p.beats_per_reduction(k)
    acc = {ch: (v.reshape(nb * t, nk, p.rows) if v.ndim == 2 else v.reshape(nb * t, nk)).sum(axis=1)
           for ch, v in p.contributions(weights, acts).items()}
    last = np.flatnonzero(p.schedule(n, k, t).last)
    fields = p.finish(acc, p.result_extra(weights, acts, extra, last))
    return {name: p.collect_results(v, n, k, t) for name, v in fields.items()}


UNITS = [
    TernaryMacParams(lanes=4, rows=3, max_k=64, act_bits=8),
    TernaryMacParams(lanes=8, rows=2, max_k=64, act_bits=4, zero_skip=True),
    TernaryMacParams(lanes=4, rows=1, max_k=64, act_bits=16),
    *(XnorPopcountParams(lanes=8, rows=3, max_k=64, threshold=t) for t in ("none", "strict", "nonstrict")),
    *(BammParams(lanes=4, rows=3, max_k=64, identity=i, zero_policy=z)
      for i in ("and", "xnor") for z in ("torch", "pos", "neg")),
    BinaryBasisParams(lanes=4, rows=3, max_k=64, n_bases=1),
    BinaryBasisParams(lanes=8, rows=2, max_k=64, n_bases=4, act_bits=4),
    BinaryBasisParams(lanes=8, rows=3, max_k=64, n_bases=3, lut_group=2),
    BinaryBasisParams(lanes=4, rows=2, max_k=64, n_bases=2, scale_bits=5),
    BinaryBasisParams(lanes=6, rows=3, max_k=64, n_bases=4, lut_group=3, scale_bits=8, act_bits=6),
    BinaryBasisParams(lanes=8, rows=3, max_k=128, mode="billm"),
    BinaryBasisParams(lanes=4, rows=2, max_k=256, mode="billm", act_bits=4),
    Int8MacParams(lanes=4, rows=3, max_k=64),
    Int8MacParams(lanes=8, rows=2, max_k=64, act_bits=4, weight_bits=12),
    Int8MacParams(lanes=4, rows=2, max_k=64, act_bits=12, weight_bits=2),
]


@pytest.mark.parametrize("p", UNITS, ids=lambda p: p.module_name)
@pytest.mark.parametrize("count", [1, 2])
def test_formulas_equal_the_datapath(p, count):
    p = replace(p, rows=p.rows * count) if count > 1 else p          # count engines in lockstep: one wider
    rng = np.random.default_rng(hash(p.module_name) % 2**32)
    top = min(p.max_k, p.reduction_block or p.max_k)
    for k in sorted({1, p.lanes, p.lanes + 1, 37 % top + 1, top}):
        for n in (1, p.rows, 2 * p.rows + 1):
            w, x, extra = p.random_operands(rng, 5, k, n)
            mine, theirs = matmul_fields(p, w, x, extra), datapath_fields(p, w, x, extra)
            assert mine.keys() == theirs.keys()
            for name in mine:
                assert mine[name].shape == theirs[name].shape, (name, k, n)
                np.testing.assert_array_equal(mine[name], theirs[name], err_msg=f"{name} k={k} n={n}")


def test_bamm_zero_counts_take_the_zero_policy():
    v = np.array([[1, -1, 1, -1]])
    a = np.array([[0, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0]])       # counts 0, 0, 2
    for policy, zero in (("torch", 0), ("pos", 1), ("neg", -1)):
        f = matmul_fields(BammParams(lanes=4, rows=1, zero_policy=policy), v, a)
        assert f["count"].ravel().tolist() == [0, 0, 2]
        assert f["sign"].ravel().tolist() == [zero, zero, 1]


# -- (b) hand-written programs ----------------------------------------------------------------------------------------

def design(*engines) -> Accelerator:
    return Accelerator.from_dict({
        "name": "hand", "clock_mhz": 100.0, "engines": list(engines),
        "buffers": {"weights": {"size_bytes": 1024}, "activations": {"size_bytes": 2048},
                    "kv": {"size_bytes": 512}},
        "dram": {"bandwidth_gbps": 1.0, "latency_cycles": 3}, "vector": {"lanes": 4}})


def i32(values) -> bytes:
    return np.asarray(values, "<i4").tobytes()


def execute(executor, d, build, dram: bytes, dram_bytes: int = 512) -> Memories:
    """Run the program ``build(ProgramBuilder)`` appends (then FINISH) on ``d`` from ``dram`` with zeroed
    buffers, checked by isa.validate first, on the interpreter or the stepped machine."""
    b = ProgramBuilder(d.name)
    build(b)
    b.finish()
    program = b.build()
    validate(program, machine_shape(d))
    mem = Memories.for_design(d, dram=dram, dram_bytes=dram_bytes)
    if executor == "interpret":
        return interpret(program, d, mem)
    return run(program, d, mem, stepped=True).memories


EXECUTORS = ["interpret", "stepped"]


@pytest.mark.parametrize("executor", EXECUTORS)
def test_load_store_strides_host_and_onchip(executor):
    d = design({"unit": "ternary-mac", "lanes": 4, "rows": 1})
    dram = bytes(range(64))

    def build(b):
        b.load(dram=2, sram=A(10), rows=3, row_bytes=4, dram_stride=6, sram_stride=5, push_next=True)
        b.load(dram=60, sram=A(100), rows=2, row_bytes=2, dram_stride=0, sram_stride=2)   # stride 0: broadcast
        b.sync("compute", pop_prev=True, push_next=True)
        b.store(dram=40, sram=A(15), rows=2, row_bytes=3, sram_stride=5, dram_stride=4, host=1, pop_prev=True)
        b.load(dram=A(10), sram=KV(0), rows=1, row_bytes=4, onchip=1)
        b.store(dram=W(8), sram=A(20), rows=1, row_bytes=4, onchip=1)

    mem = execute(executor, d, build, dram, 64)
    expect = list(range(64))
    expect[40:43], expect[44:47] = [8, 9, 10], [14, 15, 16]
    assert mem.dram.tolist() == expect
    act = mem.buffers[1]
    assert act[10:24].tolist() == [2, 3, 4, 5, 0, 8, 9, 10, 11, 0, 14, 15, 16, 17]
    assert act[100:104].tolist() == [60, 61, 60, 61]
    assert mem.buffers[2][:5].tolist() == [2, 3, 4, 5, 0]
    assert mem.buffers[0][6:14].tolist() == [0, 0, 14, 15, 16, 17, 0, 0]


def matmul_program(d, engine: int, tile: np.ndarray, acts: bytes, m: int, k: int, n: int, words: int,
                   astride: int = 0, rows: int = 1):
    """LOAD ``tile`` to weights+0 and the activations (``rows`` rows of equal length) to activations+0, MATMUL
    (results at activations+512), STORE the records to DRAM 256: the DRAM image and the build function."""
    dram = tile.tobytes() + bytes(128 - tile.size) + acts

    def build(b):
        b.load(dram=0, sram=W(0), rows=1, row_bytes=tile.size)
        rb = len(acts) // rows
        b.load(dram=128, sram=A(0), rows=rows, row_bytes=rb, push_next=True)
        b.matmul(engine=engine, w=W(0), a=A(0), r=A(512), m=m, k=k, n=n, astride=astride, pop_prev=True,
                 push_next=True)
        b.store(dram=256, sram=A(512), rows=m, row_bytes=n * words * 4, pop_prev=True)
    return dram, build


def records(mem: Memories, m: int, n: int, words: int) -> list:
    return np.frombuffer(mem.dram[256:256 + 4 * m * n * words].tobytes(), "<i4").reshape(m, n, words).tolist()


@pytest.mark.parametrize("executor", EXECUTORS)
def test_ternary_matmul_two_engines_in_lockstep_strided_activations(executor):
    d = design({"unit": "ternary-mac", "lanes": 4, "rows": 1, "count": 2, "max_k": 16})
    p = replace(d.engines[0].params, rows=2)                          # count 2: one engine two rows wide
    w = np.array([[1, 0, -1, 1, 1], [-1, -1, 0, 0, 1], [0, 1, 1, -1, -1]])
    x = np.array([[3, -2, 5, 7, -1, 0, 0, 0], [-128, 127, 0, 1, 2, 0, 0, 0]], np.int8)   # rows 8 bytes apart
    dram, build = matmul_program(d, 0, p.weight_image(w), x.tobytes(), m=2, k=5, n=3, words=1, astride=8, rows=2)
    mem = execute(executor, d, build, dram)
    assert records(mem, 2, 3, 1) == [[[4], [-2], [-3]], [[-125], [3], [124]]]


@pytest.mark.parametrize("executor", EXECUTORS)
def test_xnor_matmul_on_sign_bits(executor):
    d = design({"unit": "xnor-popcount", "lanes": 8, "rows": 2, "max_k": 16, "threshold": "strict"})
    p = d.engines[0].params
    w = np.array([[1, -1, 1], [-1, -1, -1]])
    # bits 1,0,1 and 0,0,1 (bit 1 = +1): x = [1, -1, 1], [-1, -1, 1]
    dram, build = matmul_program(d, 0, p.weight_image(w), bytes([0b101, 0b100]), m=2, k=3, n=2, words=2, rows=2)
    mem = execute(executor, d, build, dram)
    assert records(mem, 2, 2, 2) == [[[3, 1], [-1, 0]], [[1, 1], [1, 1]]]


@pytest.mark.parametrize("executor", EXECUTORS)
def test_bamm_matmul_counts_and_zero_policy(executor):
    d = design({"unit": "bamm", "lanes": 4, "rows": 2, "identity": "xnor", "zero_policy": "neg"})
    p = d.engines[0].params
    v = np.array([[1, 1, -1, -1, 1], [-1, 1, 1, -1, -1]])
    # attention bits [1,1,0,1,0] and [1,0,1,0,0]
    dram, build = matmul_program(d, 0, p.weight_image(v), bytes([0b01011, 0b00101]), m=2, k=5, n=2, words=2,
                                 rows=2)
    mem = execute(executor, d, build, dram)
    assert records(mem, 2, 2, 2) == [[[1, 1], [-1, -1]], [[0, -1], [0, -1]]]


@pytest.mark.parametrize("executor", EXECUTORS)
def test_binary_basis_with_scales(executor):
    d = design({"unit": "binary-basis", "lanes": 4, "rows": 2, "n_bases": 2, "scale_bits": 4})
    p = d.engines[0].params
    bases = np.array([[[1, -1, 1], [1, 1, 1]], [[-1, -1, 1], [1, -1, -1]]])
    alpha = np.array([[3, -2], [1, 7]])
    dram, build = matmul_program(d, 0, p.weight_image(bases, alpha), np.array([2, -3, 5], np.int8).tobytes(),
                                 m=1, k=3, n=2, words=3)
    mem = execute(executor, d, build, dram)
    assert records(mem, 1, 2, 3) == [[[10, 6, 36], [4, 0, -8]]]      # sums per basis, then y = Σ alpha·sums


@pytest.mark.parametrize("executor", EXECUTORS)
def test_int8_matmul_and_a_narrow_activation_refused(executor):
    d = design({"unit": "int8-mac", "lanes": 4, "rows": 1, "act_bits": 4, "weight_bits": 3})
    p = d.engines[0].params
    dram, build = matmul_program(d, 0, p.weight_image(np.array([[-4, 3]])), np.array([7, -8], np.int8).tobytes(),
                                 m=1, k=2, n=1, words=1)
    assert records(execute(executor, d, build, dram), 1, 1, 1) == [[[-52]]]
    if executor == "interpret":
        dram, build = matmul_program(d, 0, p.weight_image(np.array([[1, 1]])), np.array([9, 0], np.int8).tobytes(),
                                     m=1, k=2, n=1, words=1)
        with pytest.raises(InterpretError, match=r"instruction 2 \(MATMUL\): field a: activation 9 is outside the "
                                                 r"4-bit range \[-8, 7\] of engine 0"):
            execute(executor, d, build, dram)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_billm_blocks_and_their_combine(executor):
    d = design({"unit": "binary-basis", "lanes": 4, "rows": 1, "max_k": 256, "mode": "billm"})
    p = d.engines[0].params
    groups = np.array([[0, 1, 2, 2, 0, 1]])
    w = np.stack([groups, [[1, -1, 1, -1, -1, 1]], [[-1, 1, -1, -1, 1, 1]]])
    tile = p.weight_image(w)
    x = np.array([[10, 20, 30, 40, 50, 60], [-1, 2, -3, 4, -5, 6]], np.int8)
    coef = np.zeros((2, 7, 1), np.int64)
    coef[0, 0, 0], coef[1, 6, 0] = 1, 2                               # block 0's concentrated sum + 2 · block 1's
    aux = intpost.pack_aux("combine", 2, 1, 7, 2, coef=coef, bias=[5])   # salient plain sum, then bias 5
    dram = tile.tobytes() + bytes(64 - tile.size) + x.tobytes() + bytes(4) + aux.tobytes()

    def build(b):
        b.load(dram=0, sram=W(0), rows=1, row_bytes=tile.size)
        b.load(dram=64, sram=A(0), rows=2, row_bytes=6)
        b.load(dram=80, sram=A(64), rows=1, row_bytes=aux.size * 4, push_next=True)
        for blk in range(2):                                           # two 128-column runs, one record region
            b.matmul(engine=0, w=W(0), a=A(0), r=A(512 + blk * 56), m=2, k=6, n=1, pop_prev=blk == 0)
        b.post(fn="combine", in_fmt="I32", out_fmt="I32", words=7, src=A(512), dst=A(800), aux=A(64), rows=2,
               cols=1, shift=1, opts=2, push_next=True)
        b.store(dram=256, sram=A(512), rows=2, row_bytes=28, pop_prev=True)
        b.store(dram=320, sram=A(800), rows=2, row_bytes=4)

    mem = execute(executor, d, build, dram)
    assert records(mem, 2, 1, 7) == [[[-40, 40, -10, -70, 60, 80, 70]], [[4, 4, -7, -1, -6, 8, 1]]]
    # round_shift(−40 + 2·70, 1) + 5 = 55; round_shift(4 + 2·1, 1) + 5 = 8
    assert np.frombuffer(mem.dram[320:328].tobytes(), "<i4").tolist() == [55, 8]


def test_billm_matmul_covers_one_block():
    d = design({"unit": "binary-basis", "lanes": 4, "rows": 1, "max_k": 256, "mode": "billm"})
    p = d.engines[0].params
    w = np.stack([np.zeros((1, 129), np.int64), np.ones((1, 129), np.int64), np.ones((1, 129), np.int64)])
    dram, build = matmul_program(d, 0, p.weight_image(w), bytes(129), m=1, k=129, n=1, words=7)
    with pytest.raises(InterpretError, match=r"instruction 2 \(MATMUL\): field k = 129: a MATMUL on engine 0 "
                                             r"\(binary-basis, BiLLM mode\) covers one 128-column block"):
        execute("interpret", d, build, dram)


X = np.array([[-300, 5, 1000], [0, -7, 64]])


@pytest.mark.parametrize("executor", EXECUTORS)
def test_post_functions(executor):
    d = design({"unit": "ternary-mac", "lanes": 4, "rows": 1})
    dram = i32(X) + i32([0, 5, 64]) + i32([[1, 1, 1], [2, 2, 2]])

    def build(b):
        b.load(dram=0, sram=A(0), rows=1, row_bytes=24)
        b.load(dram=24, sram=KV(0), rows=1, row_bytes=36)              # thr[3], then y[2][3]
        post = dict(src=A(0), rows=2, cols=3, in_fmt="I32")
        b.post(fn="requant", out_fmt="I8", dst=A(100), imm=3, shift=2, **post)
        b.post(fn="threshold", out_fmt="B1", dst=A(110), aux=KV(0), opts=1, **post)
        b.post(fn="absmax", out_fmt="I32", dst=A(120), **post)
        b.post(fn="quantize", out_fmt="I8", dst=A(130), aux=A(120), imm=127, **post)
        b.post(fn="relu2", out_fmt="I16", dst=A(140), shift=4, **post)
        b.post(fn="add", out_fmt="I32", dst=A(0), aux=KV(12), shift=1, **post)       # in place
        b.store(dram=256, sram=A(0), rows=1, row_bytes=152)

    mem = execute(executor, d, build, dram)
    out = mem.dram[256:408].tobytes()
    assert np.frombuffer(out[100:106], np.int8).tolist() == [-128, 4, 127, 0, -5, 48]
    assert list(out[110:112]) == [0b110, 0b101]                       # x >= thr: [0,1,1], [1,0,1]
    assert np.frombuffer(out[120:128], "<i4").tolist() == [1000, 64]
    assert np.frombuffer(out[130:136], np.int8).tolist() == [-38, 1, 127, 0, -14, 127]
    assert np.frombuffer(out[140:152], "<i2").tolist() == [0, 2, 32767, 0, 0, 256]
    assert np.frombuffer(out[0:24], "<i4").tolist() == [-150, 3, 500, 1, -2, 33]   # ties to even


@pytest.mark.parametrize("executor", EXECUTORS)
def test_pack_then_matmul(executor):
    d = design({"unit": "xnor-popcount", "lanes": 4, "rows": 2}, {"unit": "bamm", "lanes": 4, "rows": 2,
                                                                  "zero_policy": "pos"},
               {"unit": "ternary-mac", "lanes": 4, "rows": 1})
    # sign bits [3][2] (bit 1 = +1): [[1,0],[0,0],[1,1]]
    dram = bytes([0b01, 0b00, 0b11]) + bytes([0b01]) + bytes([0b011]) + bytes([0b101]) + np.array(
        [5, 6, 7], np.int8).tobytes()

    def build(b):
        b.load(dram=0, sram=A(0), rows=1, row_bytes=9, push_next=True)
        b.post(fn="pack", in_fmt="B1", out_fmt="ENG", src=A(0), dst=W(0), rows=3, cols=2, opts=0, pop_prev=True)
        b.post(fn="pack", in_fmt="B1", out_fmt="ENG", src=A(0), dst=KV(0), rows=3, cols=2, opts=1 | 1 << 8)
        b.post(fn="pack", in_fmt="B1", out_fmt="ENG", src=A(5), dst=W(64), rows=1, cols=3, opts=2)
        b.matmul(engine=0, w=W(0), a=A(3), r=A(512), m=1, k=2, n=3)       # q = [1, -1]
        b.matmul(engine=1, w=KV(0), a=A(4), r=A(528), m=1, k=3, n=2)      # a = [1, 1, 0]
        b.matmul(engine=2, w=W(64), a=A(6), r=A(544), m=1, k=3, n=1, fence=1)   # x = [5, 6, 7]
        b.store(dram=256, sram=A(512), rows=1, row_bytes=36, push_prev=False)

    mem = execute(executor, d, build, dram)
    got = np.frombuffer(mem.dram[256:292].tobytes(), "<i4").tolist()
    assert got[0:3] == [2, 0, 0]                       # K = [[1,-1],[-1,-1],[1,1]]: dot with [1,-1]
    assert got[4:8] == [0, 1, -2, -1]                  # V transposed = [[1,-1,1],[-1,-1,1]]: counts, signs (0 → +1)
    assert got[8] == 6                                 # B1 weights are signs on a ternary engine too: 5 − 6 + 7


def test_refusals_name_the_instruction_and_field():
    d = design({"unit": "binary-basis", "lanes": 4, "rows": 1})
    mem = Memories.for_design(d, dram_bytes=64)
    b = ProgramBuilder()
    b.host(fn="softmax", src=A(0), dst=A(64), rows=1, cols=4)
    b.finish()
    with pytest.raises(InterpretError, match=r"instruction 0 \(HOST softmax\): field fn: HOST functions have no "
                                             r"integer reference semantics in v1"):
        interpret(b.build(), d, mem)
    b = ProgramBuilder()
    b.post(fn="pack", in_fmt="B1", out_fmt="ENG", src=A(0), dst=W(0), rows=1, cols=4, opts=0)
    b.finish()
    with pytest.raises(InterpretError, match=r"instruction 0 \(POST pack\): field opts = 0x0: pack writes one "
                                             r"\[n, k\] weight matrix; engine 0 \(binary-basis\)"):
        interpret(b.build(), d, mem)
    b = ProgramBuilder()
    b.load(dram=60, sram=A(0), rows=2, row_bytes=4)
    b.finish()
    with pytest.raises(InterpretError, match=r"instruction 0 \(LOAD\): field dram = 0x3c: the region of 8 bytes "
                                             r"runs 4 bytes past the end of the DRAM image \(64 bytes\)"):
        interpret(b.build(), d, mem)
    billm = load_design("billm")                        # engine 1 is an FP MAC array
    b = ProgramBuilder()
    b.matmul(engine=1, w=W(0), a=A(0), r=A(256), m=1, k=4, n=1)
    b.finish()
    with pytest.raises(InterpretError, match=r"instruction 0 \(MATMUL\): field engine: no integer reference for "
                                             r"engine 1 \(fp-mac\)"):
        interpret(b.build(), billm, Memories.for_design(billm))


def test_finish_ends_and_the_input_memories_stay():
    d = design({"unit": "ternary-mac", "lanes": 4, "rows": 1})
    mem = Memories.for_design(d, dram=bytes(range(16)), dram_bytes=16)
    b = ProgramBuilder()
    b.load(dram=0, sram=A(0), rows=1, row_bytes=4)
    b.nop()
    b.sync("load")
    b.finish()
    b.store(dram=8, sram=A(0), rows=1, row_bytes=4)     # after FINISH: not executed (isa.validate refuses it)
    out = interpret(b.build(), d, mem)
    assert out.buffers[1][:5].tolist() == [0, 1, 2, 3, 0]
    assert out.dram.tolist() == list(range(16))
    assert not mem.buffers[1].any()                      # the input was not touched


def test_aux_sizes_agree_with_the_instruction_set():
    rng = np.random.default_rng(1)
    for fn in POST_FUNCTIONS:
        if fn == "pack":
            continue
        for _ in range(20):
            rows, cols, words = (int(v) for v in rng.integers(1, 9, 3))
            opts = 0
            for lo, width, least in POST_OPTIONS.get(fn, {}).values():
                opts |= int(rng.integers(least, min(1 << width, 40))) << lo
            layout = intpost.aux_layout(fn, rows, cols, words, opts)
            assert sum(int(np.prod(s)) for _, s in layout) == aux_elements(fn, rows, cols, words, opts), fn
            assert (fn in POST_AUX) == bool(layout)


# -- (c) random programs --------------------------------------------------------------------------------------------

def _overlap(a, b) -> bool:
    return any(sa == sb and la < hb and lb < ha and la < ha and lb < hb for sa, la, ha in a for sb, lb, hb in b)


def ordered_in_time(program: Program, design: Accelerator, timing) -> list[str]:
    """Conflicting pairs ``i < j`` that the run's own cycles leave unordered: ``j`` starts before ``i`` is done
    (``i`` writes what ``j`` touches) or before ``i`` has read everything (a MATMUL: its last beat has issued)."""
    regions = program_regions(program, design)
    matmul = program.opcodes == 3
    bad = []
    for j, (rj, wj) in enumerate(regions):
        for i in range(j):
            ri, wi = regions[i]
            if _overlap(wi, rj + wj) and timing.start[j] < timing.done[i]:
                bad.append(f"{j} starts at {timing.start[j]} before {i} is done at {timing.done[i]}")
            elif _overlap(ri, wj):
                read = timing.last_issue[i] + 1 if matmul[i] else timing.done[i]
                if timing.start[j] < read:
                    bad.append(f"{j} overwrites at {timing.start[j]} what {i} reads until {read}")
    return bad


SEEDS = range(240)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_program_stepped_equals_interpreter(seed):
    rng = np.random.default_rng(seed)
    d = random_design(rng, name=f"random-{seed}")
    program, mem = random_program(rng, d)
    validate(program, machine_shape(d))
    assert races(program, d) == []
    ref = interpret(program, d, mem)
    stepped = run(program, d, mem, stepped=True)
    assert stepped.memories.dram.tobytes() == ref.dram.tobytes()
    for b, buf in ref.buffers.items():
        assert stepped.memories.buffers[b].tobytes() == buf.tobytes(), f"buffer {b}"
    fast = run(program, d)
    assert fast.cycles == stepped.cycles
    assert ordered_in_time(program, d, fast) == []


def test_random_programs_cover_the_instruction_set():
    """The generator's mix over the seeds the suite runs: every opcode but HOST, every POST function, every
    dependency flag, fences, multi-block combines, pack then MATMUL, host and on-chip transfers, every unit kind
    in lockstep and alone."""
    seen = set()
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        d = random_design(rng, name=f"random-{seed}")
        program, _ = random_program(rng, d)
        seen |= {("unit", e.unit, e.count > 1) for e in d.engines}
        packed = set()
        for ins in program:
            seen.add(ins.opcode)
            seen |= {(ins.opcode, f) for f in ins.flags}
            if ins.opcode == "POST":
                fn = {v: k for k, v in POST_FUNCTIONS.items()}[ins["fn"]]
                seen.add(fn)
                if fn == "pack":
                    packed.add(ins["dst"])
                if fn in ("combine", "combine_rows") and ins["opts"] > 1:
                    seen.add("blocks")
            elif ins.opcode == "MATMUL":
                seen |= {"fence"} if ins["fence"] else set()
                seen |= {"pack→matmul"} if ins["w"] in packed else set()
            elif ins.opcode in ("LOAD", "STORE"):
                seen |= {k for k in ("host", "onchip") if ins.fields.get(k)}
    want = {"LOAD", "STORE", "MATMUL", "POST", "SYNC", "NOP", "FINISH", "fence", "blocks", "pack→matmul", "host",
            "onchip", *(f for f in POST_FUNCTIONS),
            *(("unit", u, c) for u in ("ternary-mac", "xnor-popcount", "bamm", "binary-basis", "int8-mac")
              for c in (False, True)),
            ("LOAD", "pop_next"), ("LOAD", "push_next"), ("STORE", "pop_prev"), ("STORE", "push_prev"),
            *((op, f) for op in ("MATMUL", "POST", "SYNC") for f in ("pop_prev", "pop_next", "push_prev",
                                                                      "push_next"))}
    assert want <= seen, sorted(map(str, want - seen))


# -- (d) mutations the checks catch -------------------------------------------------------------------------------

def _without(program: Program, index: int, flag: str) -> Program:
    words = program.words.copy()
    words["header"][index] &= ~np.uint32(1 << {"pop_prev": 4, "pop_next": 5, "push_prev": 6, "push_next": 7}[flag])
    return Program(words, program.op_table, design=program.design, meta=program.meta)


def test_dropped_tokens_are_caught():
    """Dropping every pop leaves a race (validate cannot see it: nothing pops); dropping a push whose token is
    popped is refused by validate (a pop without a push: a deadlock) or leaves a race."""
    caught_pops = caught_pushes = 0
    for seed in range(30):
        rng = np.random.default_rng(seed)
        d = random_design(rng)
        program, _ = random_program(rng, d)
        stripped = program
        for ins in program:
            for f in ins.flags:
                if f.startswith("pop"):
                    stripped = _without(stripped, ins.index, f)
        validate(stripped, machine_shape(d))
        assert races(stripped, d), seed
        caught_pops += 1
        pushes = [(ins.index, f) for ins in program for f in ins.flags if f.startswith("push")]
        i, f = pushes[int(rng.integers(len(pushes)))]
        mutated = _without(program, i, f)
        try:
            validate(mutated, machine_shape(d))
        except ProgramError as exc:
            assert "the program would deadlock" in str(exc)
            caught_pushes += 1
            continue
        # the token was one nobody needed (left over at FINISH), or a later push took its place: then any pop
        # that now takes an earlier token than before may leave a race, which is what races() is for
        if races(mutated, d):
            caught_pushes += 1
    assert caught_pops == 30 and caught_pushes >= 10


def test_a_program_without_tokens_races():
    d = design({"unit": "ternary-mac", "lanes": 4, "rows": 1})
    b = ProgramBuilder()
    b.load(dram=0, sram=W(0), rows=1, row_bytes=1)
    b.load(dram=8, sram=A(0), rows=1, row_bytes=4)
    b.matmul(engine=0, w=W(0), a=A(0), r=A(64), m=1, k=4, n=1)
    b.store(dram=16, sram=A(64), rows=1, row_bytes=4)
    b.finish()
    found = races(b.build(), d)
    assert len(found) == 3 and "instruction 2 (MATMUL) may start before instruction 0 (LOAD)" in found[0]

