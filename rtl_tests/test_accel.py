"""The accelerator RTL (``hw.accel``) against the simulator (``sim.machine``): the same program on the same
description gives every byte of DRAM and of the buffers equal, and the RTL's cycle count equal to the simulator's —
on random valid programs on random small designs (Verilator; a subset on Icarus), on a hand-derived program whose
cycles are pinned, and under a DRAM that stalls at random (bytes equal, cycles never fewer). Planted controller
bugs (an ignored token, a row stride off by one, ties rounded up) must fail the comparison.

The accelerator executes everything but HOST (``hw.accel.plan.EXECUTES``): the random programs are
``sim.progen``'s with :data:`sim.progen.POST_STEPS` (tiles, activation blocks, MATMULs on every engine the feeder
drives, POSTs of every function but ``pack``, stores, reloads, on-chip copies, SYNCs, NOPs), on random designs that
between them have all five stream engines, with one post lane (the unit the generator builds); two more designs
run data-moving programs only. A directed program puts the POSTs' rounding on exact ties.
"""

from dataclasses import replace

import numpy as np
import pytest

from hw.accel.plan import AccelError, AccelPlan
from hw.accelerator import Accelerator, PostUnitSpec
from isa.program import ProgramBuilder, address
from sim.machine import run as sim_run
from sim.memory import Memories
from sim.progen import DATA_STEPS, races, random_design, random_program

from .accel import run_programs, runnable_programs

#: Random designs of the default suite (``sim.progen.random_design`` seeds) and the engines the feeder drives on
#: them — ternary-MAC, BAMM and int8-MAC, binary-basis, XNOR-popcount: all five — and programs on each: 8 × 26 = 208
#: programs with MATMULs, and 2 × 12 data-moving programs on two more designs.
DESIGN_SEEDS = (2, 5, 13, 15, 18, 19, 21, 26)
PROGRAMS_PER_DESIGN = 26
DATA_SEEDS = (100, 101)


def _reference(program, design, mem):
    return sim_run(program, design, mem, stepped=True)


def _same_memories(a: Memories, b: Memories) -> list[str]:
    diff = []
    if not np.array_equal(a.dram, b.dram):
        diff.append(f"DRAM ({int((a.dram != b.dram).sum())} bytes differ)")
    for k in a.buffers:
        if not np.array_equal(a.buffers[k], b.buffers[k]):
            diff.append(f"buffer {k} ({int((a.buffers[k] != b.buffers[k]).sum())} bytes differ)")
    return diff


def _random_runs(seed: int, n: int, *, data_only: bool = False):
    rng = np.random.default_rng(seed)
    design = random_design(rng, name=f"random-{seed}")
    design = replace(design, post=replace(design.post, lanes=1))       # the post unit the generator builds
    if data_only:
        return design, [random_program(rng, design, mix=DATA_STEPS) for _ in range(n)]
    return design, runnable_programs(rng, design, n)


@pytest.mark.parametrize("seed, data_only", [(s, False) for s in DESIGN_SEEDS] + [(s, True) for s in DATA_SEEDS])
def test_random_programs_equal_the_simulator_in_bytes_and_cycles(seed, data_only):
    design, runs = _random_runs(seed, 12 if data_only else PROGRAMS_PER_DESIGN, data_only=data_only)
    if not data_only:
        assert sum(len(p.indices("MATMUL")) for p, _ in runs) >= PROGRAMS_PER_DESIGN // 2
        assert sum(len(p.indices("POST")) for p, _ in runs) >= PROGRAMS_PER_DESIGN
    batch = run_programs(design, runs)
    for i, ((program, mem), got) in enumerate(zip(runs, batch.runs)):
        want = _reference(program, design, mem)
        assert got.finished and not got.error, f"program {i} did not finish"
        assert not _same_memories(want.memories, got.memories), f"program {i}: {_same_memories(want.memories, got.memories)}"
        assert got.cycles == want.cycles, f"program {i} ({len(program)} instructions): RTL {got.cycles} cycles, " \
                                          f"simulator {want.cycles}"


def test_lines_wider_than_one_ram():
    # a 1,024-byte weights line (128 banks × 64 bits) is kept in two RAMs side by side (hw.accel.memory.SLICE_BYTES)
    from hw.accel.plan import AccelPlan
    d = random_design(np.random.default_rng(DESIGN_SEEDS[0])).to_dict()
    d["buffers"]["weights"] = {"size_bytes": 8192, "banks": 128, "ports": 1, "word_bits": 64}
    design = Accelerator.from_dict(d)
    assert AccelPlan.of(design).buffers[0].line_bytes == 1024
    runs = runnable_programs(np.random.default_rng(7), design, 8)
    batch = run_programs(design, runs)
    for i, ((program, mem), got) in enumerate(zip(runs, batch.runs)):
        want = _reference(program, design, mem)
        assert not _same_memories(want.memories, got.memories), f"program {i}"
        assert got.cycles == want.cycles, f"program {i}: RTL {got.cycles}, simulator {want.cycles}"


@pytest.mark.parametrize("seed", (5, 19))
def test_a_stalling_dram_changes_cycles_never_bytes(seed):
    design, runs = _random_runs(seed, 12)
    batch = run_programs(design, runs, stall=True, seed=seed)
    slower = 0
    for i, ((program, mem), got) in enumerate(zip(runs, batch.runs)):
        want = _reference(program, design, mem)
        assert got.finished, f"program {i} did not finish under stalls"
        assert not _same_memories(want.memories, got.memories), f"program {i}: {_same_memories(want.memories, got.memories)}"
        assert got.cycles >= want.cycles, f"program {i}: {got.cycles} cycles under stalls, fewer than {want.cycles}"
        slower += got.cycles > want.cycles
    assert slower >= len(runs) // 2, f"only {slower} of {len(runs)} programs were slowed: the stalls did not bite"


def test_icarus_runs_the_same_programs():
    design, runs = _random_runs(DESIGN_SEEDS[0], 4)
    assert any(len(p.indices("MATMUL")) for p, _ in runs)
    batch = run_programs(design, runs, simulator="icarus")
    for i, ((program, mem), got) in enumerate(zip(runs, batch.runs)):
        want = _reference(program, design, mem)
        assert not _same_memories(want.memories, got.memories), f"program {i}"
        assert got.cycles == want.cycles, f"program {i}: Icarus {got.cycles}, simulator {want.cycles}"


def test_block_ram_buffers_run_the_same_programs():
    """The accelerator with its buffers in the block-RAM form FPGA synthesis maps (``ram_form="pumped"``: one
    replica per reader, a memory clock at writers + 1 times the system clock; ``hw.fpga``) executes the same
    programs with the same bytes and cycles."""
    design, runs = _random_runs(DESIGN_SEEDS[0], 8)
    assert sum(len(p.indices("MATMUL")) + len(p.indices("POST")) for p, _ in runs) >= 8
    batch = run_programs(design, runs, ram_form="pumped")
    for i, ((program, mem), got) in enumerate(zip(runs, batch.runs)):
        want = _reference(program, design, mem)
        assert got.finished, f"program {i} did not finish"
        diff = _same_memories(want.memories, got.memories)
        assert not diff, f"program {i}: {diff}"
        assert got.cycles == want.cycles, f"program {i}: RTL {got.cycles} cycles, simulator {want.cycles}"


# -- a hand-derived program -----------------------------------------------------------------------------------------

def _hand_design() -> Accelerator:
    # 1.6 GB/s at 250 MHz: 6.4 bytes a cycle; activations lines 1 bank × 64 bits = 8 bytes; latency 3
    return Accelerator.from_dict({
        "name": "hand", "clock_mhz": 250,
        "engines": [{"unit": "int8-mac", "lanes": 4, "rows": 2, "max_k": 64}],
        "buffers": {"weights": {"size_bytes": 256, "word_bits": 64}, "activations": {"size_bytes": 256,
                                                                                      "word_bits": 64},
                    "kv": {"size_bytes": 256, "banks": 2, "word_bits": 32}},
        "dram": {"bandwidth_gbps": 1.6, "latency_cycles": 3}, "vector": {"lanes": 4},
    })


def _hand_program():
    b = ProgramBuilder("hand")
    # 2 rows × 10 bytes from DRAM 0 (stride 16) to activations 5 (stride 12): 1 + 2·ceil(10/6.4) + 3 = 8 cycles
    b.emit("LOAD", dram=0, sram=address("activations", 5), rows=2, row_bytes=10, dram_stride=16, sram_stride=12,
           push_next=True)
    # the compute queue relays the token: starts at 8, 1 cycle
    b.emit("SYNC", queue=1, pop_prev=True, push_next=True)
    # back to DRAM 40 (stride 11): starts at 9; 1 + 2·2 + 3 + 1 (its buffer read) = 9 cycles: done at 18
    b.emit("STORE", dram=40, sram=address("activations", 5), rows=2, row_bytes=10, dram_stride=11,
           sram_stride=12, pop_prev=True)
    b.finish()
    return b.build()


def _hand_memories(design):
    mem = Memories.for_design(design, dram=np.arange(64, dtype=np.uint8), dram_bytes=64)
    return mem


def test_hand_derived_cycles_and_bytes():
    design, program = _hand_design(), _hand_program()
    mem = _hand_memories(design)
    want = _reference(program, design, mem)
    assert want.cycles == 18 and list(want.start[:3]) == [0, 8, 9] and list(want.done[:3]) == [8, 9, 18]
    expected = mem.dram.copy()
    expected[40:50], expected[51:61] = np.arange(0, 10), np.arange(16, 26)
    assert np.array_equal(want.memories.dram, expected)
    got = run_programs(design, [(program, mem)]).runs[0]
    assert got.cycles == 18
    assert np.array_equal(got.memories.dram, expected)


def test_hand_derived_matmul():
    # int8-MAC, 4 lanes × 2 rows; y[t][j] = Σ_i x[t][i]·w[j][i] for 2 tokens, k = 6, n = 3: 2 row blocks × 2 tokens
    # × 2 chunks = 8 beats, one a cycle (4 activation bytes and an 8-byte beat image a cycle fit the 8-byte lines)
    design = _hand_design()
    p = design.engines[0].params
    rng = np.random.default_rng(5)
    w = rng.integers(-128, 128, (3, 6))
    x = rng.integers(-128, 128, (2, 6))
    image = p.weight_image(w)
    assert image.size == 2 * 2 * 8
    b = ProgramBuilder("hand")
    # the tile, 32 bytes: 1 + ceil(32 / 6.4) + 3 = 9 cycles; the activations, 2 rows of 6 bytes: 1 + 2 + 3 = 6
    b.emit("LOAD", dram=0, sram=address("weights", 0), rows=1, row_bytes=32)
    b.emit("LOAD", dram=32, sram=address("activations", 0), rows=2, row_bytes=6, push_next=True)
    # set up at 15; beats read in 16 … 23; the last beat's data registered at 24, to the engine at 25; its
    # result `latency` cycles later, written then: done at 26 + latency
    b.emit("MATMUL", engine=0, w=address("weights", 0), a=address("activations", 0), r=address("activations", 64),
           m=2, k=6, n=3, pop_prev=True, push_next=True)
    # the 2 × 3 records, 24 bytes, to DRAM 64: 1 + ceil(24 / 6.4) + 3 + 1 = 9 cycles
    b.emit("STORE", dram=64, sram=address("activations", 64), rows=1, row_bytes=24, pop_prev=True)
    b.finish()
    program = b.build()
    dram = np.zeros(96, np.uint8)
    dram[:32] = image
    dram[32:44] = x.astype(np.int8).view(np.uint8).reshape(-1)
    mem = Memories.for_design(design, dram=dram, dram_bytes=96)
    want_cycles = 26 + p.latency + 9
    expected = (x @ w.T).astype("<i4").view(np.uint8).reshape(-1)
    ref = _reference(program, design, mem)
    assert ref.cycles == want_cycles and np.array_equal(ref.memories.dram[64:88], expected)
    got = run_programs(design, [(program, mem)]).runs[0]
    assert got.cycles == want_cycles, f"RTL {got.cycles} cycles, by hand {want_cycles}"
    assert np.array_equal(got.memories.dram[64:88], expected)


def _tie_program(design):
    """POSTs whose values sit on rounding ties (and next to them): requant, relu, add and mul with shifts 1 … 3
    over every residue, quantize with codes at exact halves, a combine_rows whose product lands on ties — each
    stored to DRAM."""
    from models import intpost
    b = ProgramBuilder("ties")
    x = np.arange(-20, 20, dtype=np.int64)                      # 40 values: every residue mod 8, both signs
    img = [x.astype("<i4").tobytes()]
    am = np.array([8, 16, 6, 0], np.int64)                     # x·qmax / am = k + 1/2 for many x (qmax 1 and 3)
    img.append(am.astype("<i4").tobytes())
    coef = np.array([[3] * 10], np.int64)                      # combine_rows: (x·3·rowmul) >> 2, ties at odd ·2
    aux = intpost.pack_aux("combine_rows", 4, 10, 1, 0, coef=coef[None], bias=np.arange(10) - 5,
                           rowmul=np.array([1, -1, 2, -2]))
    img.append(aux.astype("<i4").tobytes())
    dram = np.frombuffer(b"".join(img), np.uint8)
    at = {"x": 0, "am": 160, "aux": 176}
    b.emit("LOAD", dram=0, sram=address("activations", 0), rows=1, row_bytes=len(dram), push_next=True)
    out = 256
    posts = [dict(fn="requant", imm=1, shift=1), dict(fn="requant", imm=3, shift=2), dict(fn="relu", shift=3),
             dict(fn="relu2", shift=3), dict(fn="add", shift=1, aux=address("activations", 0)),
             dict(fn="mul", shift=3, aux=address("activations", 0)),
             dict(fn="quantize", imm=1, aux=address("activations", at["am"]), out_fmt="I8"),
             dict(fn="quantize", imm=3, aux=address("activations", at["am"]), out_fmt="I8"),
             dict(fn="combine_rows", shift=2, aux=address("activations", at["aux"]))]
    for i, f in enumerate(posts):
        f = {"out_fmt": "I32", **f}
        b.post(in_fmt="I32", src=address("activations", 0), dst=address("activations", out), rows=4, cols=10,
               pop_prev=i == 0, **f)
        out += 4 * 40
    b.emit("SYNC", queue=1, push_next=True)
    b.emit("STORE", dram=len(dram), sram=address("activations", 256), rows=1, row_bytes=out - 256, pop_prev=True)
    b.finish()
    mem = Memories.for_design(design, dram=dram, dram_bytes=len(dram) + out - 256)
    return b.build(), mem


def _ties_design() -> Accelerator:
    d = _hand_design().to_dict()
    d["buffers"]["activations"]["size_bytes"] = 2048
    return Accelerator.from_dict(d)


def test_rounding_ties_are_exact():
    design = _ties_design()
    program, mem = _tie_program(design)
    assert races(program, design) == []
    want = _reference(program, design, mem)
    got = run_programs(design, [(program, mem)]).runs[0]
    assert not _same_memories(want.memories, got.memories) and got.cycles == want.cycles
    # the values really are ties: requant by 1 with shift 1 of x = 2q + 1 rounds to the even neighbour
    out = want.memories.dram[len(mem.dram) - 9 * 160:].view("<i4")
    x = np.tile(np.arange(-20, 20), 1)
    assert list(out[:40][x % 2 == 1][:4]) == [-10, -8, -8, -6]           # -19/2 → -10, -17/2 → -8, -15/2 → -8 …


def test_a_planted_rounding_bug_fails():
    design = _ties_design()
    program, mem = _tie_program(design)
    want = _reference(program, design, mem)
    got = run_programs(design, [(program, mem)], faults=("round_half_up",)).runs[0]
    assert _same_memories(want.memories, got.memories), "ties rounded up went unnoticed"


def _pack_program(design, rng):
    """Every engine the post unit packs for, from each source format it packs, with and without transpose: a random
    matrix LOADed (each to its own place: no LOAD waits for a POST), packed into the kv or the weights buffer,
    padding rows and lanes included."""
    plan = AccelPlan.of(design)
    b = ProgramBuilder("packs")
    dram, at = [], 0
    kv_off = w_off = 0
    for e, pk in sorted(plan.packs.items()):
        if isinstance(pk, str):
            continue
        p = plan.engines[e].params
        for fmt in pk.formats:
            for transpose in (0, 1):
                n = int(rng.integers(1, 2 * p.rows + 2))
                k = int(rng.integers(1, min(p.max_k, 2 * p.lanes + 3) + 1))
                rows, cols = (k, n) if transpose else (n, k)
                raw = rng.integers(0, 2, (rows, cols)) if fmt == "B1" else rng.integers(-1, 2, (rows, cols))
                data = (np.packbits(raw.astype(np.uint8), axis=1, bitorder="little") if fmt == "B1"
                        else raw.astype(np.int8).view(np.uint8)).reshape(-1)
                b.emit("LOAD", dram=at, sram=address("activations", at), rows=1, row_bytes=data.size, push_next=True)
                tile = p.row_blocks(n) * p.beats_per_reduction(k) * p.weight_beat_bytes
                buf = "kv" if transpose else "weights"
                off = kv_off if buf == "kv" else w_off
                b.post(fn="pack", out_fmt="ENG", in_fmt=fmt, src=address("activations", at), dst=address(buf, off),
                       rows=rows, cols=cols, opts=e | transpose << 8, pop_prev=True)
                dram.append(data)
                at += data.size
                if buf == "kv":
                    kv_off += tile
                else:
                    w_off += tile
    b.finish()
    image = np.concatenate(dram)
    mem = Memories.for_design(design, dram=image, dram_bytes=image.size)
    for buf in mem.buffers.values():
        buf[:] = rng.integers(0, 256, buf.size, dtype=np.uint8)
    return b.build(), mem


@pytest.mark.parametrize("seed", (5, 19))
def test_pack_writes_the_tiles_the_simulator_writes(seed):
    rng = np.random.default_rng(seed)
    design = replace(random_design(rng, name=f"random-{seed}"), post=PostUnitSpec(lanes=1))
    program, mem = _pack_program(design, np.random.default_rng(100 + seed))
    assert len(program.indices("POST")) >= 4 and races(program, design) == []
    want = _reference(program, design, mem)
    got = run_programs(design, [(program, mem)]).runs[0]
    assert not _same_memories(want.memories, got.memories), _same_memories(want.memories, got.memories)
    assert got.cycles == want.cycles


@pytest.mark.parametrize("fault", ("ignore_pops", "stride_plus_one"))
def test_a_planted_controller_bug_fails(fault):
    design, program = _hand_design(), _hand_program()
    mem = _hand_memories(design)
    want = _reference(program, design, mem)
    got = run_programs(design, [(program, mem)], faults=(fault,)).runs[0]
    problems = _same_memories(want.memories, got.memories) + (["cycles"] if got.cycles != want.cycles else [])
    assert problems, f"the planted {fault} went unnoticed"


def test_weights_resident_programs_need_no_dram():
    # everything starts in the buffers (the host wrote them); the program copies on chip and moves tokens only,
    # so it runs exactly even though the DRAM never takes a request: what a board without DRAM runs
    design = _hand_design()
    b = ProgramBuilder("hand")
    b.emit("LOAD", dram=address("weights", 3), sram=address("activations", 0), rows=3, row_bytes=20, dram_stride=30,
           sram_stride=24, onchip=1, push_next=True)
    b.emit("SYNC", queue=1, pop_prev=True, push_next=True)
    b.emit("STORE", dram=address("kv", 7), sram=address("activations", 0), rows=3, row_bytes=20, dram_stride=21,
           sram_stride=24, onchip=1, pop_prev=True)
    b.finish()
    program = b.build()
    mem = Memories.for_design(design, dram_bytes=64)
    rng = np.random.default_rng(3)
    for buf in mem.buffers.values():
        buf[:] = rng.integers(0, 256, buf.size, dtype=np.uint8)
    want = _reference(program, design, mem)
    # 1 + 3 × ceil(20 / 8) + 1, then SYNC, then 1 + 3 × ceil(20 / 8) + 1 (kv lines are 2 × 4 bytes = 8)
    assert want.cycles == 11 + 1 + 11
    got = run_programs(design, [(program, mem)], dead_dram=True).runs[0]
    assert got.cycles == want.cycles and not _same_memories(want.memories, got.memories)


# -- refusals -------------------------------------------------------------------------------------------------------

def test_designs_and_programs_it_cannot_build_or_run_are_refused_by_name():
    d = _hand_design().to_dict()
    d["buffers"]["kv"]["word_bits"] = 12
    with pytest.raises(AccelError, match=r"buffers\.kv\.word_bits = 12"):
        AccelPlan.of(Accelerator.from_dict(d))
    with pytest.raises(AccelError, match="imem_depth"):
        AccelPlan.of(_hand_design(), imem_depth=1)
    plan = AccelPlan.of(_hand_design(), imem_depth=4)
    b = ProgramBuilder("hand")
    b.emit("SYNC", queue=0)
    b.emit("HOST", fn=1, src=address("activations", 0), dst=address("activations", 64), rows=1, cols=2)
    b.finish()
    with pytest.raises(AccelError, match=r"instruction 1: HOST is not executed by this accelerator"):
        plan.check_program(b.build())
    # POSTs the post unit does not do: a pack from a format the engine's tile is not a plain packing of (the
    # int8-MAC's 8-bit weights from B1 signs), into an engine that is not fed; a design with 4 post lanes
    for opts, why in ((0, r"instruction 0: POST pack: a B1 source; the post unit packs I8 for engine 0"),
                      (3, r"instruction 0: POST pack: engine 3 is not one the accelerator feeds")):
        b = ProgramBuilder("hand")
        b.post(fn="pack", out_fmt="ENG", in_fmt="B1", src=address("activations", 0), dst=address("kv", 0),
               rows=2, cols=2, opts=opts)
        b.finish()
        with pytest.raises(AccelError, match=why):
            plan.check_program(b.build())
    wide = AccelPlan.of(replace(_hand_design(), post=PostUnitSpec(lanes=4)), imem_depth=4)
    b = ProgramBuilder("hand")
    b.post(fn="relu", out_fmt="I32", in_fmt="I32", src=address("activations", 0), dst=address("activations", 64),
           rows=1, cols=2)
    b.finish()
    with pytest.raises(AccelError, match=r"POST relu: post\.lanes = 4: the generated post unit has one lane"):
        wide.check_program(b.build())
    # an engine the feeder cannot drive: the built-in ternary design's FP16 MAC array (slot 2)
    from hw.accelerator import load_design
    ternary = AccelPlan.of(load_design("ternary"), imem_depth=4)
    b = ProgramBuilder("ternary")
    b.emit("MATMUL", engine=2, w=address("weights", 0), a=address("activations", 0), r=address("activations", 64),
           m=1, k=4, n=2)
    b.finish()
    with pytest.raises(AccelError, match=r"instruction 0: MATMUL on engine 2: fp-mac has no generator"):
        ternary.check_program(b.build())
    with pytest.raises(AccelError, match=r"7 instructions.*holds 4"):
        long = ProgramBuilder("hand")
        for _ in range(6):
            long.emit("NOP")
        long.finish()
        plan.check_program(long.build())
