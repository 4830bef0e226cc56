"""Integer paths compiled to programs on real data: a block of :mod:`models.intpath` (a scheme's linear, BiBERT's
attention block, BitNet's FFN) → a program (docs/isa.md) and the DRAM image it runs on, and back from the final
memories to the path's stage tensors, so the stepped machine's outputs can be compared with the integer path bit
for bit, stage by stage.

What the compiler does with each kind of stage:

* ``input`` and ``host`` stages are the host's (floating point; docs/isa.md says why): their tensors are in the
  DRAM image before the program starts (``x.codes`` as ``I8``, ``x.sign`` as ``B1``, ``x.scale`` as ``I32``).
* a ``matmul`` is a ``MATMUL`` on the design's engine for its unit: weights from the path's parameters go into the
  image in the engine's weight-tile format and are ``LOAD``\\ ed into the weights buffer; a weight written by a
  ``pack`` POST (attention's keys and values) is read where the POST put it (the KV buffer). A per-head stage is
  one ``MATMUL`` per head; BiLLM is one ``MATMUL`` per 128-column block, its activations the block's columns
  (``astride``: the whole row). Results are records in the activations buffer.
* a ``post`` is a ``POST`` (one per head for a per-head stage); its auxiliary region is the stage's static
  segments (from the image, ``LOAD``\\ ed) followed by its runtime ones: a host tensor is ``LOAD``\\ ed from the
  image, an on-chip one is read in place when it is the whole region, else copied after the static part by an
  on-chip ``STORE``.
* moving heads: a whole ``[n][H·d_h]`` matrix feeding a per-head stage is split into ``H`` contiguous ``[n][d_h]``
  regions (a matmul reads a head's columns in place instead, with ``astride``), and per-head outputs feeding a
  whole-matrix stage are merged back, each by strided on-chip ``STORE``\\ s on the store queue.
* the output stage is ``STORE``\\ d to the image.

Nothing is reused: every region gets its own bytes (a block fits its buffers; :class:`BlockCapacityError`
otherwise), so the only orderings the program needs are producer → consumer, which tokens give: a compute
instruction pops a load token after the loads it needs (the last of them pushes), an on-chip ``STORE`` pops a
token its producer pushed, and a compute instruction reading a copy pops the store queue's token. Loads for later
stages run while earlier ones compute, as far as those tokens allow.
"""

from dataclasses import dataclass, field

import numpy as np

from hw.accelerator import Accelerator
from isa.program import Program, ProgramBuilder, address
from isa.spec import NO_ADDRESS, POST_OPTIONS
from models import intpost
from models.intpath import IntPath, Stage

from .dataops import engine_params
from .machine import act_format
from .memory import Memories, read_bytes, read_matrix, row_bytes, write_matrix

__all__ = ["Region", "BlockProgram", "BlockCapacityError", "compile_path", "read_stages"]

ALIGN = 64


class BlockCapacityError(ValueError):
    """A block whose regions do not fit the design's buffers (or its DRAM image the 32-bit address space)."""


@dataclass(frozen=True)
class Region:
    """Where a stage's tensor (or one head of it) is: a buffer address, or a DRAM offset (``dram``); a ``rows ×
    cols`` matrix of ``fmt`` (records: ``cols`` records of ``words`` I32 words; ``ENG``: a weight tile of
    ``nbytes`` for an ``[rows, cols]`` problem of ``engine``)."""

    address: int
    fmt: str
    rows: int
    cols: int
    words: int = 1
    dram: bool = False
    engine: int = -1
    nbytes: int = 0

    @property
    def row_bytes(self) -> int:
        return row_bytes(self.cols * self.words, self.fmt)

    @property
    def size(self) -> int:
        return self.nbytes if self.fmt == "ENG" else self.rows * self.row_bytes


@dataclass
class BlockProgram:
    """A compiled block: the program, its DRAM image, and where every stage's tensor is when it has run."""

    program: Program
    dram: np.ndarray = field(repr=False)
    design: Accelerator = field(repr=False)
    path: IntPath = field(repr=False)
    regions: dict[str, list[Region]] = field(repr=False)     #: stage → its region, or one per head (or block)
    output: Region = field(repr=False)                       #: the output stage's copy in DRAM
    word_maps: dict[str, list[int]] = field(repr=False)      #: matmul stage → its fields' words in the records

    def memories(self) -> Memories:
        """Fresh memories for a run: the DRAM image, zeroed buffers."""
        return Memories.for_design(self.design, self.dram)


class _Alloc:
    def __init__(self, name: str, size: int):
        self.name, self.size, self.top = name, size, 0

    def take(self, nbytes: int, what: str) -> int:
        at = self.top
        self.top = -(-(at + max(1, nbytes)) // ALIGN) * ALIGN
        if self.top > self.size:
            raise BlockCapacityError(f"{what}: the {self.name} buffer ({self.size:,} bytes) is full ({at:,} bytes "
                                     f"used, {nbytes:,} more needed); enlarge buffers.{self.name}")
        return at


@dataclass
class _Ins:
    opcode: str
    queue: str
    fields: dict
    op_ref: int | None
    flags: set = field(default_factory=set)

    def update(self, *, opcode: str, op_ref, **fields) -> None:
        self.opcode, self.op_ref = opcode, op_ref
        self.fields.update(fields)


class _BlockCompiler:
    def __init__(self, path: IntPath, design: Accelerator):
        self.path, self.design = path, design
        self.bufs = {name: _Alloc(name, spec.size_bytes) for name, spec in design.buffers.items()}
        self.image = bytearray()
        self.ins: list[_Ins] = []
        self.regions: dict[str, list[Region]] = {}
        self.on_chip: dict[str, list[Region]] = {}           # host stages loaded into the activations buffer
        self.word_maps: dict[str, list[int]] = {}
        self.writer: dict[tuple, int] = {}                    # (address, size) of a region → its last writer
        self.ops: list[dict] = []
        self.op_of: dict[str, int] = {}
        # token bookkeeping: what the consumer side has already waited for
        self.loads_seen = -1        # compute has waited for every LOAD up to this index
        self.stores_seen = -1       # compute has waited for every STORE up to this index
        self.compute_seen = -1      # the store queue has waited for every compute instruction up to this index
        self.last_load = self.last_store = -1

    # -- memory --------------------------------------------------------------------------------------------------
    def dram_put(self, data: bytes) -> int:
        at = -(-len(self.image) // ALIGN) * ALIGN
        self.image.extend(b"\0" * (at - len(self.image)))
        self.image.extend(data)
        if len(self.image) > 1 << 32:
            raise BlockCapacityError("the block's DRAM image exceeds the 32-bit address space")
        return at

    def alloc(self, buf: str, fmt: str, rows: int, cols: int, what: str, words: int = 1, engine: int = -1,
              nbytes: int = 0) -> Region:
        r = Region(0, fmt, rows, cols, words, engine=engine, nbytes=nbytes)
        off = self.bufs[buf].take(r.size, what)
        return Region(address(buf, off), fmt, rows, cols, words, engine=engine, nbytes=nbytes)

    # -- instructions --------------------------------------------------------------------------------------------
    def op_ref(self, stage: Stage) -> int:
        if stage.name not in self.op_of:
            self.op_of[stage.name] = len(self.ops)
            self.ops.append({"name": stage.name, "kind": {"matmul": "matmul", "post": "vector"}.get(stage.kind,
                                                                                                  "memory"),
                             "op": stage.op, "unit": stage.op if stage.kind == "matmul" else "post",
                             "phase": "prefill", "count": 1, "layers": 1})
        return self.op_of[stage.name]

    def emit(self, opcode: str, queue: str, op_ref, **fields) -> int:
        self.ins.append(_Ins(opcode, queue, fields, op_ref))
        return len(self.ins) - 1

    def load(self, dram: int, dst: Region, nbytes: int, op_ref, rows: int = 1, dram_stride: int = 0,
             sram_stride: int = 0) -> int:
        i = self.emit("LOAD", "load", op_ref, dram=dram, sram=dst.address, rows=rows, row_bytes=nbytes,
                      dram_stride=dram_stride or nbytes, sram_stride=sram_stride or nbytes)
        self.last_load = i
        self.wrote(dst, i)
        return i

    def wrote(self, region: Region, i: int) -> None:
        self.writer[(region.address, region.size)] = i

    def copy(self, src: Region, dst: Region, rows: int, nbytes: int, src_stride: int, dst_stride: int, op_ref,
             src_offset: int = 0) -> int:
        """An on-chip copy on the store queue, after the compute instruction that wrote ``src``: it pushes a
        compute→store token (unless the store queue has already waited for it or a later one) and the copy pops
        it. Producers are POSTs: a POST is done only when every earlier compute instruction is, so waiting for
        it covers them all."""
        i = self._to_store(self.writer[(src.address, src.size)])
        self.ins[i].update(opcode="STORE", dram=dst.address, sram=src.address + src_offset, rows=rows, row_bytes=nbytes,
                           dram_stride=dst_stride, sram_stride=src_stride, onchip=1, op_ref=op_ref)
        self.wrote(dst, i)
        return i

    def _to_store(self, producer: int) -> int:
        """A new store-queue instruction (fields filled by the caller) that waits for compute ``producer``."""
        p = self.ins[producer]
        if p.queue != "compute" or p.opcode != "POST":
            raise ValueError(f"internal: a copy must follow a POST, not a {p.opcode} ({p.queue} queue)")
        i = self.emit("STORE", "store", None)
        if producer > self.compute_seen:
            p.flags.add("push_next")
            self.ins[i].flags.add("pop_prev")
            self.compute_seen = producer
        self.last_store = i
        return i

    def compute(self, opcode: str, op_ref, reads: list[Region], **fields) -> int:
        """A compute instruction after what it reads: when a LOAD (or an on-chip STORE) it has not waited for yet
        wrote one of ``reads``, the latest LOAD (STORE) emitted so far pushes a token and this instruction pops it
        (each queue runs in order, so that covers every earlier one)."""
        i = self.emit(opcode, "compute", op_ref, **fields)
        ws = [self.writer[(r.address, r.size)] for r in reads if (r.address, r.size) in self.writer]
        loads = [w for w in ws if self.ins[w].queue == "load"]
        stores = [w for w in ws if self.ins[w].queue == "store"]
        if loads and max(loads) > self.loads_seen:
            self.ins[self.last_load].flags.add("push_next")
            self.ins[i].flags.add("pop_prev")
            self.loads_seen = self.last_load
        if stores and max(stores) > self.stores_seen:
            self.ins[self.last_store].flags.add("push_prev")
            self.ins[i].flags.add("pop_next")
            self.stores_seen = self.last_store
        return i

    # -- stage operands ------------------------------------------------------------------------------------------
    def stage(self, name: str) -> Stage:
        return self.path[name]

    def host_region(self, name: str) -> Region:
        """A host stage's tensor in the DRAM image."""
        if name not in self.regions:
            s = self.stage(name)
            t = np.asarray(s.tensor)
            t2 = t.reshape(t.shape[0], -1)
            buf = np.zeros(row_bytes(t2.shape[1], s.fmt) * t2.shape[0], np.uint8)
            write_matrix(buf, 0, t2, s.fmt)
            at = self.dram_put(buf.tobytes())
            self.regions[name] = [Region(at, s.fmt, t2.shape[0], t2.shape[1], dram=True)]
        return self.regions[name][0]

    def split_heads(self, name: str, heads: int, op_ref) -> list[Region]:
        """A whole ``[n][H·d_h]`` matrix as ``heads`` contiguous ``[n][d_h]`` regions: strided LOADs from the image
        for a host tensor, strided on-chip copies for one written on chip."""
        key = f"{name}#heads"
        if key not in self.on_chip:
            s = self.stage(name)
            whole = self.host_region(name) if s.kind in ("input", "host") else self.regions[name][0]
            dh = whole.cols // heads
            self._byte_aligned(name, whole.fmt, dh)
            hb = row_bytes(dh, whole.fmt)
            parts = []
            for h in range(heads):
                dst = self.alloc("activations", whole.fmt, whole.rows, dh, f"stage {name}, head {h}")
                if whole.dram:
                    self.load(whole.address + h * hb, dst, hb, op_ref, rows=whole.rows, dram_stride=whole.row_bytes,
                              sram_stride=hb)
                else:
                    self.copy(whole, dst, whole.rows, hb, whole.row_bytes, hb, op_ref, src_offset=h * hb)
                parts.append(dst)
            self.on_chip[key] = parts
        return self.on_chip[key]

    def merge_heads(self, name: str, op_ref) -> Region:
        """Per-head ``[n][d_h]`` regions side by side as one ``[n][H·d_h]`` matrix (strided on-chip copies)."""
        key = f"{name}#merged"
        if key not in self.on_chip:
            parts = self.regions[name]
            first = parts[0]
            self._byte_aligned(name, first.fmt, first.cols)
            hb = first.row_bytes
            whole = self.alloc("activations", first.fmt, first.rows, first.cols * len(parts),
                               f"stage {name} (heads merged)")
            for h, part in enumerate(parts):
                self.copy(part, Region(whole.address + h * hb, part.fmt, part.rows, part.cols), part.rows, hb, hb,
                          whole.row_bytes, op_ref)
            self.wrote(whole, self.last_store)
            self.on_chip[key] = [whole]
        return self.on_chip[key][0]

    @staticmethod
    def _byte_aligned(name: str, fmt: str, cols: int) -> None:
        if fmt == "B1" and cols % 8:
            raise BlockCapacityError(f"stage {name}: a head of {cols} B1 columns is not a whole number of bytes; "
                                     "heads are moved with byte strides")

    # -- the engines --------------------------------------------------------------------------------------------
    def engine(self, stage: Stage, unit: str) -> int:
        """The design's engine slot for ``unit``, refused unless configured as the stage needs."""
        slot = self.design.engine_for(unit, op=stage.name)
        e = self.design.engines.index(slot)
        p = engine_params(self.design, e)
        for key, want in stage.engine.items():
            if key in ("unit", "blocks", "block_size"):
                continue
            have = getattr(p, key, None)
            if have != want:
                raise ValueError(f"stage {stage.name}: needs a {unit} engine with {key} = {want!r}; design "
                                 f"{self.design.name!r} has {key} = {have!r} (set it in the design's engine table)")
        return e

    @staticmethod
    def words_of(p, stage: Stage) -> list[int]:
        """The record words of ``stage``'s fields in engine ``p``'s records (by field name: ``sums.s0`` is a word
        of the engine's ``sums``)."""
        names = []
        for f in p.result_layout.fields:
            names += [f.name] * (f.count // p.rows)
        bases = [sf.split(".")[0] for sf in stage.fields]
        if bases == names:
            return list(range(len(names)))
        out = []
        for sf, base in zip(stage.fields, bases):
            hits = [w for w, en in enumerate(names) if en == base]
            if len(hits) != 1:
                raise ValueError(f"stage {stage.name}: field {sf!r} is not one word of the {p.kind.value} engine's "
                                 f"records ({', '.join(names)})")
            out.append(hits[0])
        return out

    @staticmethod
    def _check_shape(s: Stage, m: int, k: int, n: int, p) -> None:
        if m > 0xFFFF or n > 0xFFFF:
            raise BlockCapacityError(f"stage {s.name}: m = {m}, n = {n}; a MATMUL takes at most 65,535 of each")
        max_k = getattr(p, "max_k", None)
        if max_k and k > max_k:
            raise ValueError(f"stage {s.name}: k = {k} exceeds the {p.kind.value} engine's max_k = {max_k}")

    # -- stages -------------------------------------------------------------------------------------------------
    def operand(self, name: str, ref) -> Region:
        """A stage's whole tensor on chip: host tensors are loaded into the activations buffer once, per-head
        outputs merged."""
        s = self.stage(name)
        if s.kind in ("input", "host"):
            if name not in self.on_chip:
                src = self.host_region(name)
                dst = self.alloc("activations", src.fmt, src.rows, src.cols, f"stage {name}")
                self.load(src.address, dst, src.size, ref)
                self.on_chip[name] = [dst]
            return self.on_chip[name][0]
        if s.per_head:
            return self.merge_heads(name, ref)
        return self.regions[name][0]

    def _alias(self, parts: list[Region], whole: Region) -> None:
        """Sub-regions read in place have the writer of the region they are part of."""
        w = self.writer.get((whole.address, whole.size))
        if w is not None:
            for part in parts:
                self.writer[(part.address, part.size)] = w

    def head_operands(self, name: str, heads: int, ref) -> list[Region]:
        s = self.stage(name)
        return self.regions[name] if s.per_head else self.split_heads(name, heads, ref)

    def _weights(self, s: Stage, image: np.ndarray, n: int, k: int, e: int, ref) -> Region:
        at = self.dram_put(image.tobytes())
        reg = self.alloc("weights", "ENG", n, k, f"stage {s.name} weights", engine=e, nbytes=image.size)
        self.load(at, reg, image.size, ref)
        return reg

    def matmul(self, s: Stage) -> None:
        ref = self.op_ref(s)
        e = self.engine(s, s.op)
        p = engine_params(self.design, e)
        self.word_maps[s.name] = self.words_of(p, s)
        words = p.result_words
        act_stage = self.stage(s.inputs[0])
        if act_stage.fmt != act_format(p):
            raise ValueError(f"stage {s.name}: the {p.kind.value} engine takes {act_format(p)} activations; stage "
                             f"{act_stage.name} is {act_stage.fmt}")
        if s.per_head:                     # attention: weights written on chip by a pack, one MATMUL per head
            w_regs = self.regions[s.weight]
            heads = len(w_regs)
            if act_stage.per_head or act_stage.kind in ("input", "host"):
                acts = [(a, 0) for a in self.head_operands(act_stage.name, heads, ref)]
            else:                          # a head's columns read in place, a whole row apart
                whole = self.operand(act_stage.name, ref)
                dh = whole.cols // heads
                self._byte_aligned(act_stage.name, whole.fmt, dh)
                hb = row_bytes(dh, whole.fmt)
                acts = [(Region(whole.address + h * hb, whole.fmt, whole.rows, dh), whole.row_bytes)
                        for h in range(heads)]
                self._alias([a for a, _ in acts], whole)
            regs = []
            for h, (w_reg, (a, astride)) in enumerate(zip(w_regs, acts)):
                m, k, n = a.rows, w_reg.cols, w_reg.rows
                if a.cols != k:
                    raise ValueError(f"stage {s.name}, head {h}: activations have {a.cols} columns, the weight "
                                     f"tile reduces over {k}")
                self._check_shape(s, m, k, n, p)
                r = self.alloc("activations", "I32", m, n, f"stage {s.name} records, head {h}", words=words)
                i = self.compute("MATMUL", ref, [a, w_reg], engine=e, w=w_reg.address, a=a.address, r=r.address,
                                 m=m, k=k, n=n, astride=astride)
                self.wrote(r, i)
                regs.append(r)
            self.regions[s.name] = regs
            return
        acts = self.operand(act_stage.name, ref)
        m = acts.rows
        weights = self.path.params[s.weight]
        blocks = s.engine.get("blocks") or 1
        # BiLLM: one MATMUL per column block, reading the block's columns in place; its records one block after
        # another (combine's `blocks` option reads them so)
        # (a BiLLM path's weights are a list of blocks even when there is one: k = 128)
        per_block = [np.asarray(weights[b]) for b in range(blocks)] if s.engine.get("blocks") else \
            [np.asarray(weights)]
        n = per_block[0].shape[-2]
        r = self.alloc("activations", "I32", blocks * m, n, f"stage {s.name} records", words=words)
        col = 0
        for b, w in enumerate(per_block):
            k = w.shape[-1]
            self._check_shape(s, m, k, n, p)
            w_reg = self._weights(s, p.weight_image(w), n, k, e, ref)
            a = Region(acts.address + row_bytes(col, acts.fmt), acts.fmt, m, k)
            self._alias([a], acts)
            i = self.compute("MATMUL", ref, [a, w_reg], engine=e, w=w_reg.address, a=a.address,
                             r=r.address + b * m * n * words * 4, m=m, k=k, n=n,
                             astride=acts.row_bytes if blocks > 1 else 0)
            col += k
            self.wrote(r, i)
        if col != acts.cols:
            raise ValueError(f"stage {s.name}: its weights reduce over {col} columns, its activations have "
                             f"{acts.cols}")
        self.regions[s.name] = [r]

    def post(self, s: Stage) -> None:
        ref = self.op_ref(s)
        if s.op == "pack":
            self._pack(s, ref)
            return
        src_stage = self.stage(s.inputs[0])
        heads = np.asarray(s.tensor).shape[0] if s.per_head else 1
        srcs = self.head_operands(src_stage.name, heads, ref) if s.per_head else [self.operand(src_stage.name, ref)]
        blocks = (src_stage.engine.get("blocks") or 1) if src_stage.kind == "matmul" else 1
        regs = []
        for h, src in enumerate(srcs):
            rows, cols = src.rows // blocks, src.cols
            word = s.word
            if src_stage.kind == "matmul":
                word = self.word_maps[src_stage.name][s.word] if s.op in ("threshold", "compare") else 0
            dst = self.alloc("activations", s.fmt, rows, 1 if s.op == "absmax" else cols,
                             f"stage {s.name}" + (f", head {h}" if s.per_head else ""))
            aux, aux_reads = self._aux(s, src_stage, rows, cols, src.words, h, ref)
            i = self.compute("POST", ref, [src, *aux_reads], fn=s.op, out_fmt=s.fmt, in_fmt=src.fmt,
                             words=src.words, word=word, src=src.address, dst=dst.address, aux=aux, rows=rows,
                             cols=cols, imm=s.imm, shift=s.shift, opts=s.options)
            self.wrote(dst, i)
            regs.append(dst)
        self.regions[s.name] = regs

    def _aux(self, s: Stage, src_stage: Stage, rows: int, cols: int, words: int, h: int, ref):
        """The POST's auxiliary region: ``(address, the regions it is made of)``."""
        layout = intpost.aux_layout(s.op, rows, cols, words, s.options)
        if not layout:
            return NO_ADDRESS, []
        # a single runtime segment written on chip: read in place
        if len(layout) == 1 and layout[0][0] in s.aux_inputs:
            name = s.aux_inputs[layout[0][0]]
            st = self.stage(name)
            if st.kind not in ("input", "host"):
                reg = self.regions[name][h if st.per_head else 0]
                if reg.size != 4 * int(np.prod(layout[0][1])) or reg.fmt != "I32":
                    raise ValueError(f"stage {s.name}: aux {layout[0][0]} from stage {name} is {reg.fmt} "
                                     f"{reg.rows}×{reg.cols}, not {layout[0][1]} I32")
                return reg.address, [reg]
        total = sum(int(np.prod(shape)) for _, shape in layout)
        aux = self.alloc("activations", "I32", 1, total, f"stage {s.name} auxiliary")
        at, parts = aux.address, []
        for seg, shape in layout:
            size = int(np.prod(shape))
            part = Region(at, "I32", 1, size)
            if seg in s.aux:
                v = self._static_segment(s, src_stage, seg, shape)
                self.load(self.dram_put(np.ascontiguousarray(v.astype("<i4")).tobytes()), part, 4 * size, ref)
            else:
                name = s.aux_inputs[seg]
                st = self.stage(name)
                src = self.host_region(name) if st.kind in ("input", "host") else \
                    self.regions[name][h if st.per_head else 0]
                if src.size != 4 * size or src.fmt != "I32":
                    raise ValueError(f"stage {s.name}: aux {seg} from stage {name} is {src.fmt} "
                                     f"{src.rows}×{src.cols}, not {shape} I32")
                if src.dram:
                    self.load(src.address, part, 4 * size, ref)
                else:
                    self.copy(src, part, 1, 4 * size, 4 * size, 4 * size, ref)
            parts.append(part)
            at += 4 * size
        return aux.address, parts

    def _static_segment(self, s: Stage, src_stage: Stage, seg: str, shape) -> np.ndarray:
        """A static segment as the instruction reads it; a combine's coefficients are spread over the engine's
        record words (zero for the words the path does not read)."""
        v = np.asarray(s.aux[seg], np.int64)
        if seg == "coef" and src_stage.kind == "matmul":
            b, _, cols = shape
            full = np.zeros(shape, np.int64)
            full[:, self.word_maps[src_stage.name], :] = v.reshape(b, -1, cols)
            return full
        return v.reshape(shape)

    def _pack(self, s: Stage, ref) -> None:
        heads = np.asarray(s.tensor).shape[0] if s.per_head else 1
        srcs = self.head_operands(s.inputs[0], heads, ref) if s.per_head else [self.operand(s.inputs[0], ref)]
        e = self.engine(s, s.engine["unit"])
        p = engine_params(self.design, e)
        lo, width, _ = POST_OPTIONS["pack"]["transpose"]
        transpose = (s.options >> lo) & ((1 << width) - 1)
        regs = []
        for h, src in enumerate(srcs):
            out_rows, red = (src.cols, src.rows) if transpose else (src.rows, src.cols)
            nbytes = p.row_blocks(out_rows) * p.beats_per_reduction(red) * p.weight_beat_bytes
            dst = self.alloc("kv", "ENG", out_rows, red, f"stage {s.name}, head {h}", engine=e, nbytes=nbytes)
            i = self.compute("POST", ref, [src], fn="pack", out_fmt="ENG", in_fmt=src.fmt, words=1, word=0,
                             src=src.address, dst=dst.address, rows=src.rows, cols=src.cols, opts=e | s.options)
            self.wrote(dst, i)
            regs.append(dst)
        self.regions[s.name] = regs

    # -- the whole block ----------------------------------------------------------------------------------------
    def run(self) -> BlockProgram:
        for s in self.path.stages:
            if s.kind == "matmul":
                self.matmul(s)
            elif s.kind == "post":
                self.post(s)
        out_stage = self.path[self.path.output]
        if out_stage.per_head:
            raise ValueError(f"the output stage {out_stage.name} is per head; a block's output is one matrix")
        [reg] = self.regions[out_stage.name]
        output = Region(self.dram_put(bytes(reg.size)), reg.fmt, reg.rows, reg.cols, reg.words, dram=True)
        i = self._to_store(self.writer[(reg.address, reg.size)])
        self.ins[i].update(opcode="STORE", op_ref=self.op_ref(out_stage), dram=output.address, sram=reg.address,
                           rows=1, row_bytes=reg.size)
        self.emit("FINISH", "", None)
        b = ProgramBuilder(self.design.name, meta={"block": self.path.scheme, "output": out_stage.name,
                                                   "notes": self.path.notes, "dram_bytes": len(self.image)})
        for op in self.ops:
            b.op(**op)
        for ins in self.ins:
            b.emit(ins.opcode, op_ref=ins.op_ref, **{f: True for f in ins.flags}, **ins.fields)
        return BlockProgram(b.build(), np.frombuffer(bytes(self.image), np.uint8).copy(), self.design, self.path,
                            self.regions, output, self.word_maps)


def compile_path(path: IntPath, design: Accelerator) -> BlockProgram:
    """Compile an integer path (its leading host stages done by the host) into a program for ``design`` and the
    DRAM image it starts from. Refuses a stage the design's engines cannot run as configured (``ValueError``
    naming the stage and the engine field) and a block that does not fit (:class:`BlockCapacityError`)."""
    return _BlockCompiler(path, design).run()


def read_stages(bp: BlockProgram, mem: Memories) -> dict[str, np.ndarray]:
    """The tensors of every matmul and post stage as the final memories hold them, in the path's own shapes (a
    matmul's fields picked from its engine's record words; a pack's weight tile decoded to its ±1 matrix), and
    ``"<output>@dram"``: the output as stored to DRAM."""
    out = {}
    for s in bp.path.stages:
        if s.kind not in ("matmul", "post"):
            continue
        parts = []
        for reg in bp.regions[s.name]:
            space, off = mem.space(reg.address, dram=False)
            if reg.fmt == "ENG":
                p = engine_params(bp.design, reg.engine)
                image = read_bytes(space, off, 1, reg.nbytes, reg.nbytes).ravel()
                w, _ = p.weights_from_image(image, reg.rows, reg.cols)
                parts.append(np.asarray(w, np.int64))
            elif s.kind == "matmul":
                rec = read_matrix(space, off, reg.rows, reg.cols * reg.words, "I32").reshape(reg.rows, reg.cols,
                                                                                            reg.words)
                rec = rec[..., bp.word_maps[s.name]]
                blocks = s.engine.get("blocks")        # BiLLM's records, a block after another (even of one)
                parts.append(rec.reshape(blocks, -1, reg.cols, rec.shape[-1]) if blocks else rec)
            else:
                parts.append(read_matrix(space, off, reg.rows, reg.cols, reg.fmt))
        out[s.name] = np.stack(parts) if s.per_head else parts[0]
    o = bp.output
    out[f"{bp.path.output}@dram"] = read_matrix(mem.dram, o.address, o.rows, o.cols, o.fmt)
    return out
