"""Seeded random small designs and valid programs with their data, for checking the executors against each other
(``tests/test_interpret.py``: the stepped machine against the reference interpreter, the fast mode's cycles against
the stepped mode's).

* :func:`random_design` — one to three stream engines of random kinds and options, small buffers, a random DRAM,
  vector and post unit, built through :meth:`hw.accelerator.Accelerator.from_dict` (so it is validated).
* :func:`random_program` — a DRAM image with random weight tiles (each engine's ENG format) and activations (its
  activation format), and a random program over them: LOADs of tiles, activation blocks and auxiliary operands,
  MATMULs (also several writing one blocked result region, and on tiles ``pack`` made), POSTs of every
  :mod:`models.intpost` function with valid operands, STOREs of results, reloads of stored data, on-chip copies,
  SYNCs and NOPs, with dependency tokens, then FINISH. Buffers are reused as a ring, so later instructions
  overwrite regions earlier ones read or wrote.
* :func:`races` — the conflicting pairs of a program that its tokens and queue rules leave unordered in time.

**Tokens.** The data an instruction reads or writes must be ordered, *in time*, after every earlier instruction
in program order that writes what it touches or reads what it overwrites; otherwise the result of a machine that
runs its queues concurrently (the RTL) would depend on timing, though both executors here run in program order.
Ordering comes from the queue rules of docs/isa.md §4 and from tokens; :class:`_Order` derives, conservatively,
which earlier instructions are complete (all accesses, or the reads) when an instruction starts. Conservatively
means valid under both the normative prose and ``sim.kernels.program``: a SYNC orders only the tokens it moves,
not the instructions after it on its queue, and a compute SYNC waits for the last non-SYNC compute instruction
only. The generator adds the tokens each instruction needs (popping a pending token that covers it, relaying
through SYNCs, fencing a MATMUL), on top of random voluntary pushes and pops, so every program it makes has no
race (``races`` returns nothing) and passes :func:`isa.validate.validate`.
"""

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from hw.accelerator import Accelerator
from hw.units import engine_params_for
from isa import spec
from isa.program import NO_ADDRESS, Program, ProgramBuilder, address, split_address
from isa.spec import (BUFFERS, FORMATS, OPCODE_QUEUE, POST_BLOCK_SOURCES, POST_FUNCTIONS, QUEUES, TOKEN_QUEUES,
                      TOKEN_ROUTES)
from models import intpost
from models.intops import signed_range
from models.units import UnitKind

from .interpret import PACK_UNITS, act_format, aux_elements, engine_params
from .memory import Memories, row_bytes, write_matrix

__all__ = ["ENGINE_KINDS", "DATA_STEPS", "MATMUL_STEPS", "POST_STEPS", "random_design", "random_program", "races",
           "program_regions"]

#: The engine kinds a random design draws from: every stream engine with an integer reference.
ENGINE_KINDS = ("ternary-mac", "xnor-popcount", "bamm", "binary-basis", "int8-mac")

_FORMAT_NAMES = {v: k for k, v in FORMATS.items()}
_POST_NAMES = {v: k for k, v in POST_FUNCTIONS.items()}
_QUEUE_NAMES = {v: k for k, v in QUEUES.items()}
_I32 = intpost.FORMATS["I32"]


# -- designs ---------------------------------------------------------------------------------------------------------

def _engine(rng: np.random.Generator, unit: str) -> dict:
    d = {"unit": unit, "count": int(rng.choice([1, 1, 2])), "lanes": int(rng.choice([2, 4, 8, 16, 32])),
         "rows": int(rng.choice([1, 2, 3, 4, 8])), "max_k": int(rng.choice([16, 32, 64, 128, 256]))}
    if unit == "ternary-mac":
        d["act_bits"] = int(rng.choice([8, 8, 4, 6, 12, 16]))
        d["zero_skip"] = bool(rng.random() < 0.3)
    elif unit == "xnor-popcount":
        d["threshold"] = str(rng.choice(["none", "strict", "nonstrict"]))
    elif unit == "bamm":
        d["identity"] = str(rng.choice(["and", "xnor"]))
        d["zero_policy"] = str(rng.choice(["torch", "pos", "neg"]))
    elif unit == "binary-basis":
        d["act_bits"] = int(rng.choice([8, 8, 4, 6]))
        if rng.random() < 0.35:
            d["mode"] = "billm"
        else:
            d["n_bases"] = int(rng.integers(1, 5))
            divisors = [mu for mu in (2, 3, 4) if d["lanes"] % mu == 0]
            if divisors and rng.random() < 0.35:
                d["lut_group"] = int(rng.choice(divisors))
            if rng.random() < 0.5:
                d["scale_bits"] = int(rng.integers(2, 9))
    elif unit == "int8-mac":
        d["act_bits"] = int(rng.choice([8, 8, 4, 12]))
        d["weight_bits"] = int(rng.choice([8, 8, 2, 5, 12]))
    if rng.random() < 0.3:                 # a shallower pipeline: latency is a parameter the timing must follow
        params = {k: v for k, v in d.items() if k not in ("unit", "count")}
        depth = engine_params_for(unit).from_dict(params).tree_depth
        d["tree_stages"] = int(rng.integers(0, depth + 1))
    return d


def random_design(rng: np.random.Generator, *, name: str = "random") -> Accelerator:
    """A small random design: one to three stream engines of distinct kinds among :data:`ENGINE_KINDS` (random
    lanes, rows, max_k, count 1–2 and unit options), buffers of a few KiB, a random clock, DRAM (bandwidth,
    latency), vector and post unit; validated by :meth:`Accelerator.from_dict`."""
    kinds = rng.choice(ENGINE_KINDS, size=int(rng.integers(1, 4)), replace=False)

    def buffer(sizes):
        size = int(rng.choice(sizes))
        return {"size_bytes": size, "banks": int(rng.choice([1, 2, 4])), "ports": int(rng.choice([1, 1, 2])),
                "word_bits": int(rng.choice([32, 64, 128]))}

    d = {
        "name": name,
        "clock_mhz": float(rng.choice([100.0, 200.0, 250.0, 400.0])),
        "engines": [_engine(rng, str(k)) for k in kinds],
        "buffers": {"weights": buffer([1024, 2048, 4096]), "activations": buffer([2048, 4096, 8192]),
                    "kv": buffer([512, 1024, 2048])},
        "dram": {"bandwidth_gbps": float(rng.choice([0.4, 1.6, 3.2, 6.4, 12.8, 25.6])),
                 "latency_cycles": int(rng.integers(0, 41))},
        "vector": {"lanes": int(rng.choice([4, 8, 16, 32]))},
    }
    if rng.random() < 0.7:
        d["post"] = {"lanes": int(rng.choice([1, 2, 4, 8, 16, 32])), "latency": int(rng.integers(0, 5))}
    return Accelerator.from_dict(d)


# -- regions ---------------------------------------------------------------------------------------------------------

def _ext(rows: int, nbytes: int, stride: int) -> int:
    return 0 if rows == 0 or nbytes == 0 else (rows - 1) * stride + nbytes


def _regions(opcode: str, f: dict, design: Accelerator) -> tuple[list, list]:
    """The memory one instruction reads and writes: lists of ``(space, lo, hi)`` byte ranges, ``space`` "dram" or a
    buffer id (a strided region by its bounding range, which can only over-state a conflict)."""
    reads, writes = [], []

    def buf(addr, extent):
        b, off = split_address(int(addr))
        return (b, off, off + extent)

    if opcode in ("LOAD", "STORE"):
        rows, nb = f["rows"], f["row_bytes"]
        far_ext, near_ext = _ext(rows, nb, f["dram_stride"]), _ext(rows, nb, f["sram_stride"])
        far = buf(f["dram"], far_ext) if f.get("onchip", 0) else ("dram", f["dram"], f["dram"] + far_ext)
        near = buf(f["sram"], near_ext)
        (reads if opcode == "LOAD" else writes).append(far)
        (writes if opcode == "LOAD" else reads).append(near)
    elif opcode == "MATMUL":
        p = engine_params(design, f["engine"])
        m, k, n = f["m"], f["k"], f["n"]
        packed = row_bytes(k, act_format(p))
        reads.append(buf(f["w"], p.row_blocks(n) * p.beats_per_reduction(k) * p.weight_beat_bytes))
        reads.append(buf(f["a"], _ext(m, packed, f["astride"] or packed)))
        writes.append(buf(f["r"], m * n * p.result_words * 4))
    elif opcode == "POST":
        fn = _POST_NAMES[f["fn"]]
        rows, cols, words, opts = f["rows"], f["cols"], f["words"], f["opts"]
        inp, out = _FORMAT_NAMES[f["in_fmt"]], _FORMAT_NAMES[f["out_fmt"]]
        blocks = max(1, opts & 0xFFFF) if fn in POST_BLOCK_SOURCES else 1
        reads.append(buf(f["src"], blocks * rows * row_bytes(cols * words, inp)))
        if f["aux"] != NO_ADDRESS:
            reads.append(buf(f["aux"], 4 * aux_elements(fn, rows, cols, words, opts)))
        if fn == "pack":
            p = engine_params(design, opts & 0xFF)
            n, k = (cols, rows) if opts >> 8 & 1 else (rows, cols)
            writes.append(buf(f["dst"], p.row_blocks(n) * p.beats_per_reduction(k) * p.weight_beat_bytes))
        else:
            writes.append(buf(f["dst"], rows * row_bytes(1 if fn in spec.PER_ROW_OUTPUT else cols, out)))
    elif opcode == "HOST":
        raise ValueError("HOST instructions have no regions the reference executor defines")
    return reads, writes


def program_regions(program: Program, design: Accelerator) -> list[tuple[list, list]]:
    """Per instruction, the byte ranges it reads and writes (see :func:`races`)."""
    return [_regions(ins.opcode, dict(ins.fields), design) for ins in program]


def _overlaps(a: list, b: list) -> bool:
    return any(sa == sb and lo_a < hi_b and lo_b < hi_a and lo_a < hi_a and lo_b < hi_b
               for sa, lo_a, hi_a in a for sb, lo_b, hi_b in b)


# -- ordering in time ------------------------------------------------------------------------------------------------

_FLAG_OF_ROUTE = {(q, t): f for (q, f), t in TOKEN_ROUTES.items()}


def _kind(opcode: str) -> str:
    return {"LOAD": "transfer", "STORE": "transfer", "MATMUL": "matmul", "POST": "serial", "HOST": "serial",
            "SYNC": "sync"}.get(opcode, "none")


@dataclass
class _Node:
    """One instruction as the ordering sees it. ``sb``, ``hbr``, ``hba``: bit sets of the earlier instructions
    that started, finished reading, finished everything no later than this one starts (``hba ⊆ hbr ⊆ sb``)."""

    queue: str | None
    kind: str
    fence: bool
    gifts: list = field(default_factory=list)
    sb: int = 0
    hbr: int = 0
    hba: int = 0


class _Order:
    """The conservative happens-before relation of a program, built one instruction at a time in program order."""

    def __init__(self):
        self.nodes: list[_Node] = []
        self.fifo = {t: deque() for t in TOKEN_QUEUES}       # pending tokens: (pusher, flag)
        self.last_pop = {t: -1 for t in TOKEN_QUEUES}         # the last instruction that popped each
        self.last_transfer = {"load": None, "store": None}
        self.compute: list[int] = []                          # compute instructions other than SYNC

    def _all(self, i: int) -> tuple[int, int, int]:
        """What "instruction i is complete" gives."""
        n, bit = self.nodes[i], 1 << i
        return n.sb | bit, n.hbr | n.hba | bit, n.hba | bit

    def _reads(self, i: int) -> tuple[int, int, int]:
        """What "instruction i has finished reading" gives (a MATMUL's last beat has issued)."""
        n, bit = self.nodes[i], 1 << i
        return n.sb | bit, n.hbr | n.hba | bit, n.hba

    def _started(self, i: int) -> tuple[int, int, int]:
        n = self.nodes[i]
        return n.sb | 1 << i, n.hbr, n.hba

    def gift(self, pusher: int, flag: str) -> tuple[int, int, int]:
        """What popping the token ``pusher`` pushed with ``flag`` gives (the cycle it carries, docs/isa.md §4)."""
        kind = self.nodes[pusher].kind
        if kind == "sync":
            return self._started(pusher)                      # a SYNC's token carries its start
        if kind == "matmul" and flag == "push_prev":
            return self._reads(pusher)                        # L + 1: the slot it read is free
        return self._all(pusher)                              # done (a MATMUL's push_next: D + 1)

    def base(self, queue, kind: str, fence: bool, upto: int | None = None) -> tuple[int, int, int]:
        """What the queue rules alone give an instruction of ``queue``/``kind``."""
        out = [0, 0, 0]

        def merge(g):
            for j in range(3):
                out[j] |= g[j]
        compute = self.compute if upto is None else [c for c in self.compute if c < upto]
        if queue in ("load", "store"):
            last = self.last_transfer[queue] if upto is None else next(
                (j for j in range(upto - 1, -1, -1) if self.nodes[j].queue == queue
                 and self.nodes[j].kind == "transfer"), None)
            if last is not None:
                merge(self._all(last))                        # the queue is serial
        elif queue == "compute" and compute:
            if kind == "serial" or (kind == "matmul" and fence):
                for c in compute:                             # waits for every earlier compute instruction
                    merge(self._all(c))
            elif kind == "matmul" and self.nodes[compute[-1]].kind == "matmul":
                merge(self._reads(compute[-1]))               # pipelined: issues after the last beat of the previous
            else:
                merge(self._all(compute[-1]))
        return tuple(out)

    def preview(self, queue, kind: str, fence: bool, pops) -> tuple[int, int, int]:
        """What an instruction would get from the queue rules and popping the heads of ``pops`` (flags)."""
        sb, hbr, hba = self.base(queue, kind, fence)
        for flag in pops:
            pusher, pflag = self.fifo[TOKEN_ROUTES[(queue, flag)]][0]
            g = self.gift(pusher, pflag)
            sb, hbr, hba = sb | g[0], hbr | g[1], hba | g[2]
        return sb | hbr | hba, hbr | hba, hba

    def add(self, queue, kind: str, fence: bool, flags) -> int:
        """Append an instruction with dependency ``flags``; refuses a pop of an empty token queue."""
        i = len(self.nodes)
        node = _Node(queue, kind, fence)
        self.nodes.append(node)
        pops = [f for f in flags if f.startswith("pop")]
        for f in pops:
            t = TOKEN_ROUTES.get((queue, f))
            if t is None or not self.fifo[t]:
                raise ValueError(f"instruction {i}: {f} finds no pending token")
        node.sb, node.hbr, node.hba = self.base(queue, kind, fence, upto=i)
        for f in pops:
            self.last_pop[TOKEN_ROUTES[(queue, f)]] = i
            pusher, pflag = self.fifo[TOKEN_ROUTES[(queue, f)]].popleft()
            node.gifts.append((pusher, pflag))
            g = self.gift(pusher, pflag)
            node.sb, node.hbr, node.hba = node.sb | g[0], node.hbr | g[1], node.hba | g[2]
        node.hbr |= node.hba
        node.sb |= node.hbr
        for f in flags:
            if f.startswith("push"):
                self.fifo[TOKEN_ROUTES[(queue, f)]].append((i, f))
        if kind == "transfer":
            self.last_transfer[queue] = i
        elif queue == "compute" and kind != "sync":
            self.compute.append(i)
        return i

    def can_push_late(self, i: int, flag: str) -> bool:
        """Whether instruction ``i`` may get push ``flag`` now: no later instruction has popped that token queue,
        so every pop already made keeps the token it took."""
        t = TOKEN_ROUTES.get((self.nodes[i].queue, flag))
        return t is not None and self.last_pop[t] < i

    def push_late(self, i: int, flag: str) -> int:
        """Give instruction ``i`` push ``flag`` (see :meth:`can_push_late`); returns the token's place in its
        queue."""
        fifo = self.fifo[TOKEN_ROUTES[(self.nodes[i].queue, flag)]]
        pos = sum(1 for pusher, _ in fifo if pusher < i)
        fifo.insert(pos, (i, flag))
        return pos

    def refence(self, i: int) -> None:
        """Instruction ``i`` (a MATMUL) gets ``fence``: it now waits for every earlier compute instruction. Only
        adds orderings, so what later instructions derived from it stays true."""
        node = self.nodes[i]
        node.fence = True
        g = self.base("compute", "matmul", True, upto=i)
        node.sb, node.hbr, node.hba = node.sb | g[0], node.hbr | g[1], node.hba | g[2]
        node.hbr |= node.hba
        node.sb |= node.hbr


def _bits(x: int):
    i = 0
    while x:
        if x & 1:
            yield i
        x >>= 1
        i += 1


def races(program: Program, design: Accelerator) -> list[str]:
    """The pairs of instructions whose accesses conflict (one writes what the other reads or writes) but that the
    program's queue rules and tokens do not order in time: for ``i < j``, ``i`` must have finished everything
    (``i`` writes) or its reads (``i`` only reads) before ``j`` starts. Conservative (see the module docstring);
    empty for a program whose results cannot depend on timing."""
    regions = program_regions(program, design)
    order = _Order()
    found = []
    for ins, (reads, writes) in zip(program, regions):
        queue = ins.queue
        i = order.add(queue, _kind(ins.opcode), bool(ins.fields.get("fence", 0)), ins.flags)
        node = order.nodes[i]
        for j in range(i):
            r_j, w_j = regions[j]
            if _overlaps(w_j, reads + writes) and not node.hba >> j & 1:
                found.append(f"instruction {i} ({ins.opcode}) may start before instruction {j} "
                             f"({program.instruction(j).opcode}) has written what it touches")
            elif _overlaps(r_j, writes) and not node.hbr >> j & 1:
                found.append(f"instruction {i} ({ins.opcode}) may overwrite what instruction {j} "
                             f"({program.instruction(j).opcode}) is still reading")
    return found


# -- programs --------------------------------------------------------------------------------------------------------

@dataclass
class _Val:
    """Data the generator knows the meaning of, at ``buf`` offset ``off`` (``extent`` bytes).

    kind "tile": a weight tile of ``engine`` for ``n`` × ``k``; "matrix": ``rows × cols`` of ``fmt``, row
    ``stride`` bytes, values in ``bounds[0]``; "records": MATMUL results of ``engine``, ``rows`` tokens × ``cols``
    output rows × ``words``, ``blocks`` regions one after the other, word ``w`` in ``bounds[w]``.
    """

    kind: str
    buf: int
    off: int
    extent: int
    engine: int = -1
    n: int = 0
    k: int = 0
    rows: int = 0
    cols: int = 0
    fmt: str = "I32"
    stride: int = 0
    words: int = 1
    blocks: int = 1
    bounds: tuple = ((0, 0),)

    @property
    def addr(self) -> int:
        return address(self.buf, self.off)

    @property
    def packed(self) -> bool:
        return self.stride == row_bytes(self.cols * self.words, self.fmt)


def _record_bounds(p, k: int) -> tuple:
    """Bounds of each word of ``p``'s result records for reductions of ``k``."""
    kind = p.kind
    if kind in (UnitKind.XNOR_POPCOUNT, UnitKind.BAMM):
        first = (-k, k)
        second = (0, 1) if kind == UnitKind.XNOR_POPCOUNT else (-1, 1)
        return (first,) + ((second,) if p.result_words > 1 else ())
    x = -signed_range(p.act_bits)[0]
    if kind == UnitKind.INT8_MAC:
        b = x * -signed_range(p.weight_bits)[0] * k
        return ((-b, b),)
    if kind == UnitKind.TERNARY_MAC:
        return ((-x * k, x * k),)
    s = x * k                                      # binary-basis: every sum and plain sum
    words = [(-s, s)] * (p.result_words - (1 if p.scale_bits else 0))
    if p.scale_bits:
        y = p.n_bases * s * (1 << (p.scale_bits - 1))
        words.append((-y, y))
    return tuple(words)


class _Gen:
    def __init__(self, rng: np.random.Generator, design: Accelerator):
        self.rng = rng
        self.design = design
        self.sizes = {BUFFERS[name]: spec_.size_bytes for name, spec_ in design.buffers.items()}
        self.ptr = {b: int(rng.integers(0, max(1, s // 2))) for b, s in self.sizes.items()}
        self.live: list[_Val] = []
        self.stored: list[tuple[int, int, int, _Val]] = []       # (dram address, rows, dram stride, value)
        self.dram = bytearray()
        self.specs: list[tuple[str, dict, list]] = []           # (opcode, fields, flags)
        self.regions: list[tuple[list, list]] = []
        self.order = _Order()
        self.engines = list(range(len(design.engines)))
        self.params = [engine_params(design, e) for e in self.engines]
        self.ops = 0

    # -- memory ---------------------------------------------------------------------------------------------

    def dram_put(self, data: bytes, align: int = 1) -> int:
        gap = int(self.rng.integers(0, 9))
        at = len(self.dram) + gap
        at += -at % align
        self.dram.extend(bytes(at - len(self.dram)))
        self.dram.extend(data)
        return at

    def dram_rows(self, rows: np.ndarray) -> tuple[int, int]:
        """Write uint8 ``[r, nbytes]`` rows to DRAM with a random gap between rows; (address, stride)."""
        r, nb = rows.shape
        stride = nb + int(self.rng.choice([0, 0, 1, 3, 8]))
        blob = np.zeros(max(0, (r - 1) * stride + nb), np.uint8)
        for i in range(r):
            blob[i * stride:i * stride + nb] = rows[i]
        return self.dram_put(blob.tobytes(), int(self.rng.choice([1, 4]))), stride

    def alloc(self, buf: int, nbytes: int, pinned=()) -> int | None:
        """A region of ``nbytes`` in buffer ``buf`` avoiding the ``pinned`` values (the operands of the instruction
        being made): usually the next place of a ring, sometimes anywhere. Kills the live values it overwrites."""
        size = self.sizes[buf]
        if nbytes > size or nbytes <= 0:
            return None
        keep = [v for v in pinned if v.buf == buf]
        for attempt in range(6):
            if attempt < 3 and self.rng.random() < 0.8:
                start = self.ptr[buf]
                start += -start % int(self.rng.choice([1, 2, 4]))
                if start + nbytes > size:
                    start = 0
            else:
                start = int(self.rng.integers(0, size - nbytes + 1))
            clash = [v for v in keep if start < v.off + v.extent and v.off < start + nbytes]
            if clash:
                self.ptr[buf] = max(v.off + v.extent for v in clash)
                continue
            self.ptr[buf] = start + nbytes + int(self.rng.choice([0, 0, 1, 4]))
            self.kill(buf, start, nbytes)
            return start
        return None

    def kill(self, buf: int, off: int, nbytes: int) -> None:
        self.live = [v for v in self.live if not (v.buf == buf and off < v.off + v.extent and v.off < off + nbytes)]

    # -- emitting ---------------------------------------------------------------------------------------------

    def _needs(self, reads: list, writes: list) -> tuple[int, int]:
        need_all = need_reads = 0
        touched = reads + writes
        for j, (r_j, w_j) in enumerate(self.regions):
            if _overlaps(w_j, touched):
                need_all |= 1 << j
            elif _overlaps(r_j, writes):
                need_reads |= 1 << j
        return need_all, need_reads

    def _raw_emit(self, opcode: str, fields: dict, flags: list, regions=([], [])) -> int:
        queue = _QUEUE_NAMES[fields["queue"]] if opcode == "SYNC" else OPCODE_QUEUE.get(opcode)
        i = self.order.add(queue, _kind(opcode), bool(fields.get("fence", 0)), flags)
        self.specs.append((opcode, fields, list(flags)))
        self.regions.append(regions)
        return i

    def _sync(self, queue: str, flags: list) -> int:
        return self._raw_emit("SYNC", {"queue": QUEUES[queue]}, flags)

    def _satisfy(self, queue: str, kind: str, fence: bool, need_all: int, need_reads: int) -> tuple[bool, list]:
        """The fence and pops an instruction of ``queue``/``kind`` needs so every instruction in ``need_all`` is
        complete (``need_reads``: has finished reading) when it starts; emits the SYNCs that drain tokens ahead of
        the one it pops, or that relay a token from a queue it has no route from."""
        pops: list[str] = []
        for _ in range(16):
            _, hbr, hba = self.order.preview(queue, kind, fence, pops)
            miss_all, miss_reads = need_all & ~hba, need_reads & ~hbr
            miss = miss_all | miss_reads
            if not miss:
                return fence, pops
            nodes = self.order.nodes
            if any(nodes[j].queue == queue for j in _bits(miss)):
                if queue == "compute" and kind == "matmul" and not fence:
                    fence = True
                    continue
                last = self.order.compute[-1] if self.order.compute else None
                if queue == "compute" and kind == "sync" and last is not None and nodes[last].kind == "matmul" \
                        and not nodes[last].fence:
                    self._refence(last)
                    continue
                raise AssertionError(f"progen: cannot order instruction {len(nodes)} after same-queue "
                                     f"{list(_bits(miss))}")
            # The token route each missing instruction can reach this one through.
            if queue == "compute":
                groups = {"pop_prev": "load", "pop_next": "store"}
                flag = next(f for f, q in groups.items() if any(nodes[j].queue == q for j in _bits(miss)))
                mask = sum(1 << j for j in _bits(miss) if nodes[j].queue == groups[flag])
            else:
                flag = "pop_next" if queue == "load" else "pop_prev"
                mask = miss
            if flag in pops:
                raise AssertionError("progen: a popped token did not give what it was chosen for")
            route = TOKEN_ROUTES[(queue, flag)]
            want_all, want_reads = miss_all & mask, miss_reads & mask
            pos = self._providing(route, want_all, want_reads)
            if pos is None:
                pos = self._push_late(route, want_all, want_reads)
            if pos is None:
                self._relay(route, want_all, want_reads)
                pos = len(self.order.fifo[route]) - 1
            for _ in range(pos):                         # drain the tokens ahead of it
                self._sync(queue, [flag])
            pops.append(flag)
        raise AssertionError("progen: tokens did not converge")

    def _providing(self, route: str, want_all: int, want_reads: int) -> int | None:
        for pos, (pusher, pflag) in enumerate(self.order.fifo[route]):
            _, hbr, hba = self.order.gift(pusher, pflag)
            if not want_all & ~hba and not want_reads & ~(hbr | hba):
                return pos
        return None

    def _push_late(self, route: str, want_all: int, want_reads: int) -> int | None:
        """Give the last instruction of the pushing queue the push into ``route`` it lacks, when that is allowed
        and its token would give what is wanted (how a compiler sets the flag on the producer itself); returns
        the token's place, or None."""
        (src, push), = [(q, f) for (q, f), t in TOKEN_ROUTES.items() if t == route and f.startswith("push")]
        order = self.order
        last = order.last_transfer[src] if src != "compute" else (order.compute[-1] if order.compute else None)
        if last is None or push in self.specs[last][2] or not order.can_push_late(last, push):
            return None
        _, hbr, hba = order.gift(last, push)
        if want_all & ~hba or want_reads & ~(hbr | hba):
            return None
        self.specs[last][2].append(push)
        return order.push_late(last, push)

    def _relay(self, route: str, want_all: int, want_reads: int) -> None:
        """A SYNC on the queue that pushes into ``route``, after everything wanted, pushing one token into it."""
        (src, push), = [(q, f) for (q, f), t in TOKEN_ROUTES.items() if t == route and f.startswith("push")]
        _, pops = self._satisfy(src, "sync", False, want_all, want_reads)
        self._sync(src, pops + [push])

    def _refence(self, i: int) -> None:
        self.order.refence(i)
        self.specs[i][1]["fence"] = 1

    def emit(self, opcode: str, fields: dict, *, push_prev: float = 0.0, push_next: float = 0.0,
             pop: float = 0.4) -> int:
        """Append ``opcode`` with ``fields`` after the tokens it needs; random voluntary pushes (probabilities)
        and, with probability ``pop``, a voluntary pop of a pending token."""
        queue = OPCODE_QUEUE[opcode]
        reads, writes = _regions(opcode, fields, self.design)
        need_all, need_reads = self._needs(reads, writes)
        fence = bool(fields.get("fence", 0))
        fence, pops = self._satisfy(queue, _kind(opcode), fence, need_all, need_reads)
        if opcode == "MATMUL":
            fields["fence"] = int(fence)
        for f in ("pop_prev", "pop_next"):
            t = TOKEN_ROUTES.get((queue, f))
            if t and f not in pops and self.order.fifo[t] and self.rng.random() < pop:
                pops.append(f)
        flags = list(pops)
        for f, prob in (("push_prev", push_prev), ("push_next", push_next)):
            if (queue, f) in TOKEN_ROUTES and self.rng.random() < prob:
                flags.append(f)
        return self._raw_emit(opcode, fields, flags, (reads, writes))

    def transfer(self, opcode: str, dram: int, sram: int, rows: int, row_bytes_: int, dram_stride: int,
                 sram_stride: int, *, onchip: bool = False, **probs) -> int:
        f = {"dram": dram, "sram": sram, "rows": rows, "row_bytes": row_bytes_, "dram_stride": dram_stride,
             "sram_stride": sram_stride, "host": int(not onchip and self.rng.random() < 0.15)}
        if onchip:
            f["onchip"] = 1
        return self.emit(opcode, f, **probs)

    # -- the operations -----------------------------------------------------------------------------------------

    def load_tile(self) -> bool:
        e = int(self.rng.choice(self.engines))
        p = self.params[e]
        buf = BUFFERS[str(self.rng.choice(["weights", "weights", "kv"]))]
        kmax = min(p.max_k, p.reduction_block or p.max_k, 96)
        k = int(self.rng.integers(1, kmax + 1))
        n = int(self.rng.integers(1, min(3 * p.rows, 24) + 1))
        tile = p.row_blocks(n) * p.beats_per_reduction(k) * p.weight_beat_bytes
        if tile > self.sizes[buf] // 2:
            return False
        w, _, extra = p.random_operands(self.rng, 1, k, n)
        image = p.weight_image(w, extra)
        divisors = [d for d in range(1, min(tile, 8) + 1) if tile % d == 0]
        rows = int(self.rng.choice(divisors))
        addr, stride = self.dram_rows(image.reshape(rows, -1))
        off = self.alloc(buf, tile)
        if off is None:
            return False
        self.transfer("LOAD", addr, address(buf, off), rows, tile // rows, stride, tile // rows, push_next=0.1)
        self.live.append(_Val("tile", buf, off, tile, engine=e, n=n, k=k))
        return True

    def load_acts(self) -> bool:
        e = int(self.rng.choice(self.engines))
        p = self.params[e]
        fmt = act_format(p)
        m = int(self.rng.integers(1, 7))
        k = int(self.rng.integers(1, min(p.max_k, p.reduction_block or p.max_k, 96) + 1))
        if fmt == "B1":
            x, bounds = self.rng.integers(0, 2, (m, k)), (0, 1)
        else:
            lo, hi = signed_range(p.act_bits)
            if self.rng.random() < 0.3:                # a narrower range: more engines can take it
                lo, hi = max(lo, -8), min(hi, 7)
            x, bounds = self.rng.integers(lo, hi + 1, (m, k)), (lo, hi)
        packed = row_bytes(k, fmt)
        raw = np.zeros(m * packed, np.uint8)
        write_matrix(raw, 0, x, fmt)
        raw = raw.reshape(m, packed)
        addr, dstride = self.dram_rows(raw)
        sstride = packed + int(self.rng.choice([0, 0, 0, 1, 5]))
        extent = _ext(m, packed, sstride)
        buf = BUFFERS["activations"]
        off = self.alloc(buf, extent)
        if off is None:
            return False
        self.transfer("LOAD", addr, address(buf, off), m, packed, dstride, sstride, push_next=0.1)
        self.live.append(_Val("matrix", buf, off, extent, rows=m, cols=k, fmt=fmt, stride=sstride, bounds=(bounds,)))
        return True

    def _acts_for(self, p, k_min: int) -> list[_Val]:
        fmt = act_format(p)
        lo, hi = signed_range(p.act_bits)
        return [v for v in self.live if v.kind == "matrix" and v.fmt == fmt and v.cols >= k_min
                and v.buf == BUFFERS["activations"] and v.stride <= 0xFFFF
                and (fmt == "B1" or (lo <= v.bounds[0][0] and v.bounds[0][1] <= hi))]

    def matmul(self) -> bool:
        e = int(self.rng.choice(self.engines))
        p = self.params[e]
        tiles = [v for v in self.live if v.kind == "tile" and v.engine == e]
        if not tiles:
            return False
        blocks = 2 if self.rng.random() < 0.3 else 1          # one result region for two runs (BiLLM blocks)
        chosen = [tiles[int(i)] for i in self.rng.integers(0, len(tiles), blocks)]
        n = int(self.rng.integers(1, min(t.n for t in chosen) + 1))
        plan = []
        for t in chosen:
            k = t.k
            if p.row_blocks(n) == 1 and k > 1 and self.rng.random() < 0.2:
                k = int(self.rng.integers(1, k + 1))   # a prefix of the tile's chunks: one row block only
            acts = self._acts_for(p, k)
            if not acts:
                return False
            plan.append((t, k, acts[int(self.rng.integers(len(acts)))]))
        m = int(self.rng.integers(1, min(a.rows for _, _, a in plan) + 1))
        words = p.result_words
        each = m * n * words * 4
        buf = BUFFERS["activations"]
        off = self.alloc(buf, blocks * each, pinned=[x for t, _, a in plan for x in (t, a)])
        if off is None:
            return False
        bounds = None
        for b, (t, k, a) in enumerate(plan):
            packed = row_bytes(k, a.fmt)
            astride = a.stride if (a.stride != packed or self.rng.random() < 0.3) else 0
            self.emit("MATMUL", {"engine": e, "w": t.addr, "a": a.addr, "r": address(buf, off + b * each), "m": m,
                                 "k": k, "n": n, "astride": astride, "fence": int(self.rng.random() < 0.1)},
                      push_prev=0.3, push_next=0.5)
            kb = _record_bounds(p, k)
            bounds = kb if bounds is None else tuple((min(x[0], y[0]), max(x[1], y[1])) for x, y in zip(bounds, kb))
        self.live.append(_Val("records", buf, off, blocks * each, engine=e, rows=m, cols=n, words=words,
                              blocks=blocks, stride=n * words * 4, bounds=bounds))
        return True

    def _aux(self, values: np.ndarray, pinned) -> _Val | None:
        """Load int32 ``values`` into a buffer region (any buffer) for a POST's auxiliary operand."""
        data = np.asarray(values, "<i4").tobytes()
        addr = self.dram_put(data, int(self.rng.choice([1, 4])))
        buf = BUFFERS[str(self.rng.choice(["activations", "activations", "kv", "weights"]))]
        off = self.alloc(buf, len(data), pinned)
        if off is None:
            return None
        self.transfer("LOAD", addr, address(buf, off), 1, len(data), len(data), len(data), push_next=0.1)
        v = _Val("matrix", buf, off, len(data), rows=1, cols=len(values), fmt="I32", stride=len(data),
                 bounds=((int(np.min(values, initial=0)), int(np.max(values, initial=0))),))
        self.live.append(v)
        return v

    def post_nopack(self) -> bool:
        """A POST of any function but ``pack`` (what the accelerator's post unit runs)."""
        return self.post(pack=False)

    def post(self, pack: bool = True) -> bool:
        rng = self.rng
        sources = [v for v in self.live if v.kind in ("records", "matrix") and v.packed]
        if not sources:
            return False
        src = sources[int(rng.integers(len(sources)))]
        fns = ["combine", "combine_rows", "threshold", "compare", "absmax", "quantize", "requant", "add", "mul",
               "relu", "relu2", "silu", "pack"]
        if src.blocks > 1 and rng.random() < 0.7:
            fn = str(rng.choice(["combine", "combine_rows"]))       # BiLLM's per-block records
        elif src.fmt == "B1" and pack and rng.random() < 0.5:
            fn = "pack"                                              # signs become a weight tile (K, V)
        else:
            fn = str(rng.choice(fns if pack else fns[:-1]))
        rows, cols, words, inp = src.rows, src.cols, src.words, src.fmt
        word = int(rng.integers(words))
        blocks = src.blocks if fn in POST_BLOCK_SOURCES else 1         # otherwise: the first block's records
        lo, hi = (min(b[0] for b in src.bounds), max(b[1] for b in src.bounds)) if fn in POST_BLOCK_SOURCES \
            else src.bounds[word]
        big = max(abs(lo), abs(hi), 1)
        f = {"fn": POST_FUNCTIONS[fn], "in_fmt": FORMATS[inp], "words": words, "word": word, "src": src.addr,
             "rows": rows, "cols": cols, "imm": 0, "shift": 0, "opts": 0, "aux": NO_ADDRESS}
        out = str(rng.choice(["I32", "I32", "I16", "I8"]))
        out_bounds = intpost.FORMATS[out]
        aux = None
        if fn in ("combine", "combine_rows"):
            cb = int(rng.integers(0, 11))
            segs = {"coef": rng.integers(-(1 << cb), (1 << cb) + 1, (blocks, words, cols)),
                    "bias": rng.integers(-(1 << 16), (1 << 16) + 1, cols)}
            if fn == "combine_rows":
                segs["rowmul"] = rng.integers(-256, 257, rows)
            f["opts"] = blocks if blocks > 1 or rng.random() < 0.5 else 0
            f["shift"] = int(rng.integers(0, 25))
            aux = intpost.pack_aux(fn, rows, cols, words, f["opts"], **segs)
        elif fn == "threshold":
            aux = rng.integers(max(lo, _I32[0] + 1) - 1, min(hi, _I32[1] - 1) + 1, cols)
            f["opts"], out, out_bounds = int(rng.integers(2)), "B1", (0, 1)
        elif fn == "compare":
            f["imm"] = int(rng.integers(max(lo, _I32[0] + 1) - 1, min(hi, _I32[1] - 1) + 1))
            f["opts"], out, out_bounds = int(rng.integers(2)), "B1", (0, 1)
        elif fn == "absmax":
            out_bounds = (0, min(big, out_bounds[1]))
        elif fn == "quantize":
            qmax = int(rng.choice([1, 3, 7, 127])) if out == "I8" else int(rng.integers(1, 1000))
            f["imm"], out_bounds = qmax, (-qmax, qmax)
            absmaxes = [v for v in self.live if v.kind == "matrix" and v.fmt == "I32" and v.cols == 1
                        and v.rows == rows and v.packed and v.bounds[0][0] >= 0]
            if absmaxes and rng.random() < 0.7:
                aux = absmaxes[int(rng.integers(len(absmaxes)))]
            else:
                aux = rng.integers(0, big + 1, rows)
                aux[rng.random(rows) < 0.2] = 0
        elif fn == "requant":
            f["imm"] = int(rng.integers(-(1 << 15), (1 << 15) + 1))
            f["shift"] = int(rng.integers(0, 31))
        elif fn in ("add", "mul"):
            f["shift"] = int(rng.integers(0, 20))
            ys = [v for v in self.live if v.kind == "matrix" and v.fmt == "I32" and v.rows == rows and v.cols == cols
                  and v.packed and (fn == "add" or big < (1 << 30))]
            if ys and rng.random() < 0.5:
                aux = ys[int(rng.integers(len(ys)))]
            else:
                aux = rng.integers(-(1 << 20), (1 << 20) + 1, (rows, cols))
        elif fn in ("relu", "relu2"):
            f["shift"] = int(rng.integers(0, 24))
            out_bounds = (0, out_bounds[1])
        elif fn == "silu":
            size = int(rng.integers(1, 65))
            f["opts"], f["imm"], f["shift"] = size, int(rng.integers(-64, 65)), int(rng.integers(0, 9))
            aux = rng.integers(-(1 << 20), (1 << 20) + 1, size)
        elif fn == "pack":
            return self._pack(src, f, word, lo, hi)
        if isinstance(aux, np.ndarray):
            aux = self._aux(aux.reshape(-1), pinned=[src])
            if aux is None:
                return False
        if aux is not None:
            f["aux"] = aux.addr
        f["out_fmt"] = FORMATS[out]
        out_cols = 1 if fn in spec.PER_ROW_OUTPUT else cols
        nbytes = rows * row_bytes(out_cols, out)
        in_place = (words == 1 and blocks == 1 and src.blocks == 1 and out_cols == cols and out == inp
                    and rng.random() < 0.3)
        if in_place:
            off, buf = src.off, src.buf
            self.kill(buf, off, nbytes)
        else:
            buf = BUFFERS[str(rng.choice(["activations", "activations", "activations", "kv"]))]
            off = self.alloc(buf, nbytes, pinned=[src] + ([aux] if aux is not None else []))
            if off is None:
                return False
        f["dst"] = address(buf, off)
        self.emit("POST", f, push_prev=0.2, push_next=0.1)
        self.live.append(_Val("matrix", buf, off, nbytes, rows=rows, cols=out_cols, fmt=out,
                              stride=row_bytes(out_cols, out), bounds=(out_bounds,)))
        return True

    def _pack(self, src: _Val, f: dict, word: int, lo: int, hi: int) -> bool:
        rng = self.rng
        transpose = int(rng.integers(2))
        n, k = (src.cols, src.rows) if transpose else (src.rows, src.cols)
        fits = []
        for e in self.engines:
            p = self.params[e]
            if p.kind not in PACK_UNITS or k > p.max_k:
                continue
            if src.fmt == "B1":
                fits.append(e)                          # signs suit every engine that packs
            elif p.kind == UnitKind.TERNARY_MAC and -1 <= lo and hi <= 1:
                fits.append(e)
            elif p.kind == UnitKind.INT8_MAC and signed_range(p.weight_bits)[0] <= lo \
                    and hi <= signed_range(p.weight_bits)[1]:
                fits.append(e)
        if not fits:
            return False
        e = int(rng.choice(fits))
        p = self.params[e]
        tile = p.row_blocks(n) * p.beats_per_reduction(k) * p.weight_beat_bytes
        buf = BUFFERS[str(rng.choice(["weights", "kv"]))]
        off = self.alloc(buf, tile, pinned=[src])
        if off is None:
            return False
        f.update(out_fmt=FORMATS["ENG"], opts=e | transpose << 8, dst=address(buf, off), word=word)
        self.emit("POST", f, push_prev=0.2, push_next=0.3)
        self.live.append(_Val("tile", buf, off, tile, engine=e, n=n, k=k))
        return True

    def store(self) -> bool:
        values = [v for v in self.live if v.kind in ("records", "matrix", "tile")]
        if not values:
            return False
        v = values[int(self.rng.integers(len(values)))]
        if v.kind == "tile":
            rows, nb, sstride = 1, v.extent, v.extent
        else:
            rows = v.rows * v.blocks
            nb, sstride = row_bytes(v.cols * v.words, v.fmt), v.stride
        dstride = nb + int(self.rng.choice([0, 0, 2, 7]))
        addr = self.dram_put(bytes(_ext(rows, nb, dstride)), int(self.rng.choice([1, 4])))
        self.transfer("STORE", addr, v.addr, rows, nb, dstride, sstride, push_prev=0.4)
        self.stored.append((addr, rows, dstride, v))
        return True

    def reload(self) -> bool:
        """Load stored data back (its DRAM region was written by a STORE: ordered through the compute queue)."""
        if not self.stored:
            return False
        addr, rows, dstride, v = self.stored[int(self.rng.integers(len(self.stored)))]
        nb = v.extent if v.kind == "tile" else row_bytes(v.cols * v.words, v.fmt)
        buf = v.buf if v.kind == "tile" else BUFFERS["activations"]
        off = self.alloc(buf, rows * nb)
        if off is None:
            return False
        self.transfer("LOAD", addr, address(buf, off), rows, nb, dstride, nb, push_next=0.6)
        self.live.append(_Val(v.kind, buf, off, rows * nb, engine=v.engine, n=v.n, k=v.k, rows=v.rows, cols=v.cols,
                              fmt=v.fmt, stride=nb if v.kind != "tile" else 0, words=v.words, blocks=v.blocks,
                              bounds=v.bounds))
        return True

    def copy_onchip(self) -> bool:
        """A buffer-to-buffer copy (LOAD or STORE with ``onchip``) of a live value."""
        if "onchip" not in spec.field_table("LOAD"):
            return False
        values = [v for v in self.live if v.kind in ("tile", "matrix", "records")]
        if not values:
            return False
        v = values[int(self.rng.integers(len(values)))]
        if v.kind == "tile":
            buf = BUFFERS[str(self.rng.choice(["weights", "kv"]))]
        else:
            buf = BUFFERS[str(self.rng.choice(["activations", "activations", "kv"]))]
        off = self.alloc(buf, v.extent, pinned=[v])
        if off is None:
            return False
        opcode = str(self.rng.choice(["LOAD", "STORE"]))
        # LOAD: `dram` is the source buffer address; STORE: the destination.
        far, near = (v.addr, address(buf, off)) if opcode == "LOAD" else (address(buf, off), v.addr)
        self.transfer(opcode, far, near, 1, v.extent, v.extent, v.extent, onchip=True,
                      **({"push_next": 0.6} if opcode == "LOAD" else {"push_prev": 0.4}))
        self.live.append(_Val(v.kind, buf, off, v.extent, engine=v.engine, n=v.n, k=v.k, rows=v.rows,
                              cols=v.cols, fmt=v.fmt, stride=v.stride, words=v.words, blocks=v.blocks,
                              bounds=v.bounds))
        return True

    def noise(self) -> bool:
        """A SYNC moving random tokens, or a NOP."""
        if self.rng.random() < 0.3:
            self.specs.append(("NOP", {}, []))
            self.regions.append(([], []))
            self.order.add(None, "none", False, [])
            return True
        queue = str(self.rng.choice(list(QUEUES)))
        flags = []
        for (q, f), t in TOKEN_ROUTES.items():
            if q != queue:
                continue
            if f.startswith("pop") and self.order.fifo[t] and self.rng.random() < 0.5:
                flags.append(f)
            elif f.startswith("push") and self.rng.random() < 0.4:
                flags.append(f)
        self._sync(queue, flags)
        return True

    def build(self) -> Program:
        b = ProgramBuilder(self.design.name, {"generator": "sim.progen"})
        refs = [b.op(f"op{i}", "random") for i in range(int(self.rng.integers(0, 3)))]
        for opcode, fields, flags in self.specs:
            ref = int(self.rng.choice(refs)) if refs and self.rng.random() < 0.5 else None
            b.emit(opcode, op_ref=ref, **fields, **{f: True for f in flags})
        b.finish()
        return b.build()


_STEPS = (("load_tile", 3), ("load_acts", 3), ("matmul", 5), ("post", 5), ("store", 2), ("reload", 0.5),
          ("copy_onchip", 0.5), ("noise", 0.7))

#: A mix of operations that only move data (LOAD, STORE, on-chip copies, SYNC, NOP).
DATA_STEPS = (("load_tile", 2), ("load_acts", 3), ("store", 3), ("reload", 1.5), ("copy_onchip", 1.5), ("noise", 2))

#: Everything but POST (and so HOST-free): data movement and MATMULs.
MATMUL_STEPS = (("load_tile", 3), ("load_acts", 3), ("matmul", 5), ("store", 2), ("reload", 0.5),
                ("copy_onchip", 0.5), ("noise", 0.7))


#: MATMULs and POSTs (HOST-free): what the accelerator RTL runs (``hw.accel.plan.EXECUTES``).
POST_STEPS = MATMUL_STEPS + (("post", 5),)


def random_program(rng: np.random.Generator, design: Accelerator, *, steps: int | None = None,
                   mix: tuple = _STEPS) -> tuple[Program, Memories]:
    """A random valid program on ``design`` (an integer stream-engine design such as :func:`random_design` makes)
    and the memories it starts from: a DRAM image with its weight tiles, activations and auxiliary operands and
    room for its stores, and buffers of random bytes. ``steps`` operations (default 6–24), each a few
    instructions; see the module docstring. ``mix``: the operations and their weights (:data:`DATA_STEPS`: data
    movement only)."""
    g = _Gen(rng, design)
    steps = int(rng.integers(6, 25)) if steps is None else steps
    names, weights = zip(*mix)
    prob = np.array(weights, float) / sum(weights)
    done = 0
    for e in g.engines:                             # something to multiply from the start
        g.load_tile()
        g.load_acts()
    for _ in range(20 * steps):
        if done >= steps:
            break
        if getattr(g, str(rng.choice(names, p=prob)))():
            done += 1
    program = g.build()
    mem = Memories.for_design(design, dram=bytes(g.dram), dram_bytes=len(g.dram) + 16)
    for buf in mem.buffers.values():
        buf[:] = rng.integers(0, 256, buf.size, dtype=np.uint8)
    return program, mem
