"""Speed of the instruction-set package (a benchmark, not a test: it prints, it does not assert).

    .venv/bin/python benchmarks/bench_isa.py [--quick]

Builds a BERT-base-sized program (≈15k instructions: 96 linear ops of 77 double-buffered weight tiles) and a
LLaMA-7B-decode-sized one (≈150k: 224 ops of 333 tiles) the compiler's way (per op: one vectorized block per
opcode, interleaved by a permutation, isa.program.block + Program.from_blocks), then encodes, decodes and validates
it, and lists and assembles the small one. The baseline is the same program built one instruction at a time with
the scalar ProgramBuilder, timed in the same process.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import best_of  # noqa: E402
from isa import asm, encoding  # noqa: E402
from isa.program import Program, ProgramBuilder, address, block  # noqa: E402
from isa.validate import EngineShape, MachineShape, validate  # noqa: E402

MACHINE = MachineShape(
    buffers={"weights": 1 << 20, "activations": 1 << 20, "kv": 1 << 18},
    engines=(EngineShape("ternary_mac", lanes=64, rows_total=16, beat_image_bytes=256, act_format="I8", act_bits=8,
                         result_words=1, max_k=4096),),
    post_lanes=64, vector_lanes=64)

K, N, M = 768, 64, 16                                  # per tile: 64 output rows of a 768-long reduction, 16 tokens
TILE = -(-N // 16) * (K // 64) * 256                   # weight tile bytes (12 KiB)
R_BASE, OUT_BASE, RESULT = 0x10000, 0x80000, M * N * 4


def op_order(t: int) -> np.ndarray:
    """Program order of one op's rows (loads 0..t-1, matmuls t..2t-1, post 2t, store 2t+1): two loads ahead,
    then each matmul followed by the load two tiles on (double buffering), then the post and the store."""
    seq = [0, 1]
    for i in range(t):
        seq.append(t + i)
        if i + 2 < t:
            seq.append(i + 2)
    return np.array(seq + [2 * t, 2 * t + 1])


def build_blocks(n_ops: int, t: int) -> Program:
    i = np.arange(t)
    slot = address("weights", (i % 2) * TILE)
    blocks = []
    for op in range(n_ops):
        blocks += [
            block("LOAD", t, dram=(op * t + i) * TILE % (1 << 31), sram=slot, rows=1, row_bytes=TILE,
                  pop_next=i >= 2, push_next=1, op_ref=op),
            block("MATMUL", t, engine=0, w=slot, a=address("activations", 0),
                  r=address("activations", R_BASE + (i % 32) * RESULT), m=M, k=K, n=N, pop_prev=1,
                  push_prev=i < t - 2, op_ref=op),
            block("POST", 1, fn="requant", out_fmt="I8", in_fmt="I32", src=address("activations", R_BASE),
                  dst=address("activations", OUT_BASE), rows=M, cols=N, imm=3, shift=8, push_next=1, op_ref=op),
            block("STORE", 1, dram=op * M * N, sram=address("activations", OUT_BASE), rows=M, row_bytes=N,
                  pop_prev=1, op_ref=op),
        ]
    blocks.append(block("FINISH", 1))
    per_op = 2 * t + 2
    order = (op_order(t)[None, :] + per_op * np.arange(n_ops)[:, None]).ravel()
    order = np.concatenate([order, [n_ops * per_op]])
    ops = [{"name": f"layer{op // 8}.linear{op % 8}", "kind": "linear", "count": 1} for op in range(n_ops)]
    return Program.from_blocks(blocks, order=order, op_table=ops, design="bench", meta={"tiles": t})


def build_whole(n_ops: int, t: int) -> Program:
    """The same program from one block per opcode for the whole model (every field an array over all ops)."""
    i = np.tile(np.arange(t), n_ops)
    op = np.repeat(np.arange(n_ops), t)
    slot = address("weights", (i % 2) * TILE)
    ops = np.arange(n_ops)
    blocks = [
        block("LOAD", dram=(op * t + i) * TILE % (1 << 31), sram=slot, rows=1, row_bytes=TILE, pop_next=i >= 2,
              push_next=1, op_ref=op),
        block("MATMUL", n_ops * t, engine=0, w=slot, a=address("activations", 0),
              r=address("activations", R_BASE + (i % 32) * RESULT), m=M, k=K, n=N, pop_prev=1, push_prev=i < t - 2,
              op_ref=op),
        block("POST", n_ops, fn="requant", out_fmt="I8", in_fmt="I32", src=address("activations", R_BASE),
              dst=address("activations", OUT_BASE), rows=M, cols=N, imm=3, shift=8, push_next=1, op_ref=ops),
        block("STORE", dram=ops * M * N, sram=address("activations", OUT_BASE), rows=M, row_bytes=N, pop_prev=1,
              op_ref=ops),
        block("FINISH", 1),
    ]
    local = op_order(t)
    loads = n_ops * t
    # Row of each (op, local row) in the concatenation [all LOADs, all MATMULs, all POSTs, all STOREs, FINISH].
    o = ops[:, None]
    rows = np.where(local < t, o * t + local,
                    np.where(local < 2 * t, loads + o * t + local - t,
                             np.where(local == 2 * t, 2 * loads + o, 2 * loads + n_ops + o)))
    order = np.concatenate([rows.ravel(), [2 * loads + 2 * n_ops]])
    table = [{"name": f"layer{k // 8}.linear{k % 8}", "kind": "linear", "count": 1} for k in range(n_ops)]
    return Program.from_blocks(blocks, order=order, op_table=table, design="bench", meta={"tiles": t})


def build_scalar(n_ops: int, t: int) -> Program:
    b = ProgramBuilder("bench", {"tiles": t})
    for op in range(n_ops):
        ref = b.op(f"layer{op // 8}.linear{op % 8}", "linear", count=1)
        for row in op_order(t).tolist():
            if row < t:
                b.load(dram=(op * t + row) * TILE % (1 << 31), sram=address("weights", (row % 2) * TILE), rows=1,
                       row_bytes=TILE, pop_next=row >= 2, push_next=True, op_ref=ref)
            elif row < 2 * t:
                j = row - t
                b.matmul(engine=0, w=address("weights", (j % 2) * TILE), a=address("activations", 0),
                         r=address("activations", R_BASE + (j % 32) * RESULT), m=M, k=K, n=N, pop_prev=True,
                         push_prev=j < t - 2, op_ref=ref)
            elif row == 2 * t:
                b.post(fn="requant", out_fmt="I8", in_fmt="I32", src=address("activations", R_BASE),
                       dst=address("activations", OUT_BASE), rows=M, cols=N, imm=3, shift=8, push_next=True,
                       op_ref=ref)
            else:
                b.store(dram=op * M * N, sram=address("activations", OUT_BASE), rows=M, row_bytes=N, pop_prev=True,
                        op_ref=ref)
    b.finish()
    return b.build()


def bench(label: str, n_ops: int, t: int, repeat: int, *, text: bool) -> None:
    t_blocks, prog = best_of(lambda: build_blocks(n_ops, t), repeat, warm=True)
    t_whole, whole = best_of(lambda: build_whole(n_ops, t), repeat, warm=True)
    t_scalar, ref = best_of(lambda: build_scalar(n_ops, t), max(1, repeat // 3))
    assert prog == ref == whole, "the builders disagree"
    t_enc, data = best_of(lambda: encoding.to_bytes(prog), repeat)
    t_dec, back = best_of(lambda: encoding.from_bytes(data), repeat)
    assert back == prog
    # A Program caches the field columns it decodes; a fresh one (as the simulator gets from the compiler or a
    # file) pays for decoding them, so validate is timed on a freshly decoded program, less the decode.
    t_cold, summary = best_of(lambda: validate(encoding.from_bytes(data), MACHINE), repeat)
    t_val = t_cold - t_dec
    n = len(prog)
    print(f"{label}: {n:,} instructions, {n_ops} ops × {t} tiles ({4 * n_ops + 1} blocks), {len(data):,} bytes "
          f"(best of {repeat})")
    print(f"  build, blocks per op:   {t_blocks * 1e3:8.2f} ms  ({n / t_blocks / 1e6:.1f} M instr/s, "
          f"{t_blocks / (4 * n_ops + 1) * 1e6:.0f} µs per block)")
    print(f"  build, whole-model:     {t_whole * 1e3:8.2f} ms  (5 blocks, one per opcode, interleaved by order)")
    print(f"  build, ProgramBuilder:  {t_scalar * 1e3:8.2f} ms  (baseline; blocks are {t_scalar / t_blocks:.0f}× "
          f"faster)")
    print(f"  encode (to_bytes):      {t_enc * 1e3:8.2f} ms")
    print(f"  decode (from_bytes):    {t_dec * 1e3:8.2f} ms")
    print(f"  validate:               {t_val * 1e3:8.2f} ms  (fresh program; leftover tokens: "
          f"{sum(summary.leftover.values())})")
    if text:
        t_list, lst = best_of(lambda: asm.listing(prog), max(1, repeat // 3))
        t_asm, again = best_of(lambda: asm.assemble(lst), 1)
        assert again == prog
        print(f"  listing:                {t_list * 1e3:8.2f} ms   assemble: {t_asm * 1e3:.1f} ms")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    args = ap.parse_args()
    repeat = 3 if args.quick else 9
    bench("BERT-base size", 96, 77, repeat, text=True)
    bench("LLaMA-7B decode-step size", 224, 333, max(3, repeat // 3), text=False)


if __name__ == "__main__":
    main()
