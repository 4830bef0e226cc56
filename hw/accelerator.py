"""The accelerator description: engines, clock, on-chip buffers, DRAM, a vector unit and a post-processing unit —
the hardware's structure — and, apart from it, the mapping policy a run uses.

A frozen dataclass tree, loadable from TOML, YAML or JSON and validated on construction with messages that name
the bad field (``buffers.weights.banks``). The simulator (``sim/model.py``) runs workloads on it; the same
description is what ``hw`` will generate as a whole accelerator, so every engine is a unit parameter object of
``hw.units`` and every buffer is sized in bytes, banks, ports and word width as a memory generator needs them.

:class:`Accelerator` is structure only. How a workload is mapped onto it (loop order, double buffering, resident
weights) is a :class:`MappingPolicy`, an argument of each run (``sim.model.simulate_model(..., policy=)``,
``lowbit simulate model --mapping key=value,...``). A design file may carry a ``[mapping]`` table: the policy its
runs use unless told otherwise. :func:`load_design` returns the structure, :func:`load_design_with_policy` the
structure and that default policy (the table, or :class:`MappingPolicy`'s defaults without one) — kept apart so
that two runs of one structure under two policies, or a search over policies, compare equal structures.

File format (TOML shown; YAML and JSON have the same keys)::

    name = "ternary-64x16"
    clock_mhz = 200               # 0.001 .. 100000 (1 kHz .. 100 GHz)
    [[engines]]                  # one table per engine kind; ``count`` engines work in lockstep
    unit = "ternary-mac"          # a UnitKind with an engine: the five generated units, "fp-mac", "systolic"
    count = 1
    lanes = 64                    # the unit's own parameters (hw.units)
    rows = 16
    max_k = 16384
    [buffers.weights]             # also buffers.activations and buffers.kv
    size_kib = 1024               # or size_bytes / size_mib; at most 1 TiB
    banks = 32
    ports = 1                     # read ports per bank, one word per port and cycle
    word_bits = 64
    [dram]
    bandwidth_gbps = 25.6         # GB/s, 1e-6 .. 1e6
    pj_per_bit = 20.0             # optional, 0.001 .. 10000; the technology's default otherwise
    latency_cycles = 0            # per transfer, 0 .. 10^9
    [vector]
    lanes = 16
    fp_bits = 16
    [dma]                         # optional: the transfer engines (LOAD/STORE)
    bytes_per_cycle = 128         # at most this many bytes a cycle; default: the DRAM's rate rounded up to a power
                                  # of two (at least 8, at most the widest buffer line)
    [post]                        # optional: the integer post-processing unit (docs/isa.md)
    lanes = 1                     # element lanes; default 1, the element-serial unit hw.accel generates
    latency = 2                   # cycles; default 2
    [mapping]                     # optional: the default mapping policy of runs on this design
    loop_order = "weights-outer"  # or "tokens-outer"
    double_buffer = true
    weights = "stream"            # or "resident-if-fits"
"""

import json
import math
import tomllib
from fractions import Fraction
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType

from models.units import UnitKind

from .units import FpMacParams, UnitParams, engine_params_for
from .units.base import _choice, _int_field

__all__ = ["CLOCK_MHZ", "DRAM_GBPS", "DRAM_PJ_PER_BIT", "BUFFER_MAX_BYTES", "BUFFER_ROLES", "FpMacParams",
           "BufferSpec", "DramSpec", "VectorUnitSpec", "PostUnitSpec", "DmaSpec", "EngineSlot", "MappingPolicy", "Accelerator",
           "load_design", "load_design_with_policy", "design_from_dict", "BUILTIN_DESIGNS", "design_path"]

_DESIGN_DIR = Path(__file__).with_name("designs")
BUILTIN_DESIGNS = tuple(sorted(p.stem for p in _DESIGN_DIR.glob("*.toml")))

#: The on-chip buffers every design has, in their stable order (the ISA numbers them 0, 1, 2 in this order).
BUFFER_ROLES = ("weights", "activations", "kv")


#: Physically sensible ranges of the description's real-valued fields: outside them the arithmetic overflows or
#: divides by zero (a 1e-300 GB/s DRAM, a 1e308 MHz clock) or the design is a typo (a clock of 1e-300 MHz).
CLOCK_MHZ = (1e-3, 1e5)              #: 1 kHz .. 100 GHz
DRAM_GBPS = (1e-6, 1e6)              #: 1 kB/s .. 1 PB/s
DRAM_PJ_PER_BIT = (1e-3, 1e4)        #: on-package HBM is ~1-4 pJ/bit, off-board DDR some tens
DRAM_LATENCY_CYCLES = 10**9          #: per transfer
BUFFER_MAX_BYTES = 1 << 40           #: 1 TiB of on-chip buffer is far beyond any die; above it is a typo
POST_MAX_LATENCY = 64                #: cycles of the post-processing pipeline


def _number(where: str, value, bounds: tuple[float, float], unit: str) -> float:
    """``value`` as a float inside ``bounds`` (inclusive); the message names the field, the bounds and the unit."""
    lo, hi = bounds
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{where} must be a number, not {value!r}")
    # NaN fails both comparisons; TOML and YAML can spell nan and inf
    if not (math.isfinite(value) and lo <= value <= hi):
        raise ValueError(f"{where} must be a number in [{lo:g}, {hi:g}] {unit}, not {value!r}")
    return float(value)


@dataclass(frozen=True)
class BufferSpec:
    """An on-chip SRAM buffer: ``banks`` × ``ports`` words of ``word_bits`` per cycle. ``name`` is its role (one
    of :data:`BUFFER_ROLES`)."""

    name: str
    size_bytes: int
    banks: int = 1
    ports: int = 1
    word_bits: int = 64

    def __post_init__(self):
        where = f"buffers.{self.name}"
        _int_field(f"{where}.size_bytes", self.size_bytes, 1, BUFFER_MAX_BYTES)
        _int_field(f"{where}.banks", self.banks, 1, 4096)
        _int_field(f"{where}.ports", self.ports, 1, 8)
        _int_field(f"{where}.word_bits", self.word_bits, 1, 4096)
        if self.size_bytes % self.banks or self.size_bytes * 8 // self.banks < self.word_bits:
            raise ValueError(f"{where}: {self.size_bytes:,} bytes do not split into {self.banks} equal banks of "
                             f"at least one {self.word_bits}-bit word")

    @property
    def bits_per_cycle(self) -> int:
        return self.banks * self.ports * self.word_bits

    @property
    def bank_bytes(self) -> int:
        return self.size_bytes // self.banks

    @property
    def line_bits(self) -> int:
        """Bits a transfer (``LOAD``/``STORE``) moves in or out of this buffer per cycle: one word per bank, on
        one port (the other read ports feed the engines)."""
        return self.banks * self.word_bits


@dataclass(frozen=True)
class DramSpec:
    bandwidth_gbps: float                 #: GB/s (10^9 bytes per second)
    pj_per_bit: float | None = None       #: None: the technology table's figure
    latency_cycles: int = 0               #: added to every transfer

    def __post_init__(self):
        _number("dram.bandwidth_gbps", self.bandwidth_gbps, DRAM_GBPS, "GB/s")
        if self.pj_per_bit is not None:
            _number("dram.pj_per_bit", self.pj_per_bit, DRAM_PJ_PER_BIT, "pJ/bit")
        _int_field("dram.latency_cycles", self.latency_cycles, 0, DRAM_LATENCY_CYCLES)


@dataclass(frozen=True)
class VectorUnitSpec:
    """The full-precision unit for element-wise and reduction work: ``lanes`` elements per cycle and pass."""

    lanes: int
    fp_bits: int = 16

    def __post_init__(self):
        _int_field("vector.lanes", self.lanes, 1, 65536)
        _choice("vector.fp_bits", self.fp_bits, (16, 32))


#: Steps of the post unit's divider (``quantize``): one quotient bit a cycle, 32 bits (a code's magnitude is at most
#: ``qmax < 2^31``, so a quotient of 2^32 or more only says "clamp").
POST_DIVIDE_STEPS = 32


@dataclass(frozen=True)
class PostUnitSpec:
    """The integer post-processing unit (requantize, rescale, thresholds, residual adds: docs/isa.md ``POST``):
    ``lanes`` element lanes (None: 1, the element-serial unit ``hw.accel`` generates; more lanes are modelled —
    each slot reads the lanes' operands as one run — but not generated), a write pipeline of ``latency`` cycles.
    Its timing is :meth:`cycles`, the one formula the simulator and the RTL share (docs/isa.md §4)."""

    lanes: int | None = None
    latency: int = 2

    def __post_init__(self):
        if self.lanes is not None:
            _int_field("post.lanes", self.lanes, 1, 65536)
        _int_field("post.latency", self.latency, 0, POST_MAX_LATENCY)

    @staticmethod
    def slots(fn: str, words: int = 1, blocks: int = 1) -> int:
        """Cycles the unit spends on one element (a group of ``lanes``) of POST function ``fn``: one slot per
        operand it reads from a buffer (one read port, one read a cycle), the divider's steps for ``quantize``:

        * ``combine``: a record word and its coefficient per (block, word), then the bias — ``2·blocks·words + 1``;
          ``combine_rows`` reads the row multiplier too — ``+ 2``;
        * ``threshold`` (the word, the threshold), ``add`` and ``mul`` (x, y), ``silu`` (x, then the table entry
          it selects): 2; ``quantize``: x, the row's absmax, a cycle to form ``|x|·qmax``, then
          :data:`POST_DIVIDE_STEPS` — 35;
        * ``compare``, ``absmax``, ``requant``, ``relu``, ``relu2``, ``pack``: 1.
        """
        if fn in ("combine", "combine_rows"):
            return 2 * max(1, blocks) * words + (1 if fn == "combine" else 2)
        if fn in ("threshold", "add", "mul", "silu"):
            return 2
        if fn == "quantize":
            return 3 + POST_DIVIDE_STEPS
        return 1

    @classmethod
    def slot_table(cls) -> dict[str, str]:
        """:meth:`slots` of every POST function as text (the manifest's and the docs' table): a number, or for the
        combines ``2·blocks·words + c``."""
        from isa.spec import POST_FUNCTIONS
        out = {}
        for fn in POST_FUNCTIONS:
            one, two = cls.slots(fn, 1, 1), cls.slots(fn, 2, 1)
            out[fn] = str(one) if one == two else f"{two - one}·blocks·words + {2 * one - two}"
        return out

    def cycles(self, fn: str, rows: int, cols: int, words: int = 1, blocks: int = 1, *,
               elements: int | None = None) -> int:
        """Cycles of a POST: a set-up cycle, ``slots`` for each group of ``lanes`` elements of each row (an
        operand read in a slot is there the slot after, so the last element completes one cycle after its last
        slot), then ``latency`` cycles before its last write — ``2 + rows·ceil(cols/lanes)·slots + latency``; with
        more than one lane, ``absmax`` adds a ``ceil(log2 lanes)``-cycle reduction per row. ``elements`` replaces
        ``rows·ceil(cols/lanes)`` where the output is not the source's shape (``pack``: the weight tile's elements,
        padding included — :meth:`Accelerator.post_cycles`)."""
        lanes = self.lanes or 1
        groups = rows * -(-cols // lanes) if elements is None else elements
        n = 2 + groups * self.slots(fn, words, blocks) + self.latency
        if fn == "absmax" and lanes > 1:
            n += rows * (lanes - 1).bit_length()
        return n


@dataclass(frozen=True)
class DmaSpec:
    """The transfer engines of ``LOAD``/``STORE`` (one per data-moving queue): at most ``bytes_per_cycle`` bytes a
    cycle (None: resolved by :class:`Accelerator` to the DRAM's rate rounded up to a power of two, at least 8 and
    at most the widest buffer line). It caps on-chip copies (whose buffer lines may be far wider than DRAM's
    rate) and sizes the RTL's data path (``hw.accel``)."""

    bytes_per_cycle: int | None = None

    def __post_init__(self):
        if self.bytes_per_cycle is not None:
            _int_field("dma.bytes_per_cycle", self.bytes_per_cycle, 1, 1 << 16)


@dataclass(frozen=True)
class EngineSlot:
    """``count`` engines of one kind working in lockstep (as one engine ``count`` times as wide)."""

    params: UnitParams
    count: int = 1

    def __post_init__(self):
        _int_field(f"engines[{self.unit}].count", self.count, 1, 1024)
        self.params.check_count(self.count, f"engines[{self.unit}]")

    @property
    def unit(self) -> str:
        return self.params.kind.value

    @property
    def kind(self) -> UnitKind:
        return self.params.kind

    @property
    def macs_per_cycle(self) -> int:
        return self.params.macs_per_cycle * self.count

    @property
    def stream_params(self) -> UnitParams:
        """The unit as the ``count`` engines in lockstep act: one unit ``rows × count`` rows wide."""
        return replace(self.params, rows=self.params.rows * self.count) if self.count > 1 else self.params


@dataclass(frozen=True)
class MappingPolicy:
    """How a run maps workloads onto a design (the choices the simulator exposes); not part of the design's
    structure: an argument of every run, by default the design file's ``[mapping]`` table.

    loop_order : ``"weights-outer"`` (a weight tile stays while every token passes: weight reuse) or
        ``"tokens-outer"`` (each token streams every weight tile again: activation reuse).
    double_buffer : load the next weight tile while the engine works on the current one.
    weights : ``"stream"`` (every matmul loads its weights from DRAM) or ``"resident-if-fits"`` (when the whole
        model's quantized weights fit in the weight buffer they are loaded once and stay).
    """

    loop_order: str = "weights-outer"
    double_buffer: bool = True
    weights: str = "stream"

    def __post_init__(self):
        _choice("mapping.loop_order", self.loop_order, ("weights-outer", "tokens-outer"))
        if not isinstance(self.double_buffer, bool):
            raise TypeError(f"mapping.double_buffer must be true or false, not {self.double_buffer!r}")
        _choice("mapping.weights", self.weights, ("stream", "resident-if-fits"))

    def to_dict(self) -> dict:
        """The ``[mapping]`` table of a design file."""
        return asdict(self)

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The policy's keys, in table order."""
        return tuple(f.name for f in fields(cls))

    def with_overrides(self, overrides: Mapping | None) -> "MappingPolicy":
        """This policy with some keys replaced (``{"double_buffer": False}``), refusing unknown keys by name."""
        overrides = dict(overrides or {})
        self._check_keys(overrides)
        return replace(self, **overrides)

    @classmethod
    def parse_overrides(cls, text: str) -> dict:
        """``"loop_order=tokens-outer,double_buffer=false"`` → the overrides :meth:`with_overrides` takes (``true``
        and ``false`` as booleans), refusing unknown keys and malformed items by name."""
        out = {}
        for item in text.split(","):
            key, sep, value = item.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or not key:
                raise ValueError(f"expected key=value items separated by commas, not {item.strip()!r}")
            out[key] = {"true": True, "false": False}.get(value.lower(), value)
        cls._check_keys(out)
        return out

    @classmethod
    def _check_keys(cls, d: Mapping) -> None:
        unknown = sorted(set(d) - set(cls.keys()))
        if unknown:
            raise ValueError(f"unknown mapping key(s) {unknown}; known: {', '.join(cls.keys())}")


@dataclass(frozen=True)
class Accelerator:
    """A whole accelerator's structure (see the module docstring for the file format).

    ``buffers`` maps each role of :data:`BUFFER_ROLES` to its :class:`BufferSpec`, in that order; ``post`` is the
    post-processing unit (one lane by default: the unit the generator builds).
    """

    name: str
    clock_mhz: float
    engines: tuple[EngineSlot, ...]
    buffers: Mapping[str, BufferSpec] = field(hash=False)
    dram: DramSpec
    vector: VectorUnitSpec
    post: PostUnitSpec | None = None
    dma: DmaSpec | None = None

    def __post_init__(self):
        _number("clock_mhz", self.clock_mhz, CLOCK_MHZ, "MHz (1 kHz to 100 GHz)")
        if not self.engines:
            raise ValueError(f"design {self.name!r} has no engines")
        kinds = [e.unit for e in self.engines]
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"design {self.name!r} lists an engine kind twice: {kinds}")
        buffers = dict(self.buffers)
        for role in BUFFER_ROLES:
            if role not in buffers:
                raise ValueError(f"design {self.name!r}: missing buffers.{role}")
            if buffers[role].name != role:
                raise ValueError(f"design {self.name!r}: buffers.{role} is named {buffers[role].name!r}")
        if set(buffers) != set(BUFFER_ROLES):
            raise ValueError(f"design {self.name!r}: unknown buffer(s) {sorted(set(buffers) - set(BUFFER_ROLES))}; "
                             f"known: {list(BUFFER_ROLES)}")
        object.__setattr__(self, "buffers", MappingProxyType({role: buffers[role] for role in BUFFER_ROLES}))
        post = self.post if self.post is not None else PostUnitSpec()
        if post.lanes is None:
            post = replace(post, lanes=1)
        object.__setattr__(self, "post", post)
        dma = self.dma if self.dma is not None else DmaSpec()
        if dma.bytes_per_cycle is None:
            widest = max(b.line_bits // 8 for b in buffers.values())
            want = max(8, 1 << max(0, math.ceil(self.dram_rate) - 1).bit_length())
            dma = DmaSpec(max(1, min(widest, want)))
        object.__setattr__(self, "dma", dma)

    @property
    def weight_buffer(self) -> BufferSpec:
        return self.buffers["weights"]

    @property
    def activation_buffer(self) -> BufferSpec:
        return self.buffers["activations"]

    @property
    def kv_buffer(self) -> BufferSpec:
        return self.buffers["kv"]

    @property
    def clock_hz(self) -> float:
        return self.clock_mhz * 1e6

    @property
    def dram_bytes_per_cycle(self) -> float:
        return self.dram.bandwidth_gbps * 1e9 / self.clock_hz

    @property
    def dram_rate(self) -> Fraction:
        """DRAM bytes per cycle, exactly: the decimal bandwidth and clock as written (25.6 GB/s at 200 MHz is 128),
        so the simulator and the RTL's pacing (a remainder counter, no division) agree on every cycle."""
        return Fraction(repr(self.dram.bandwidth_gbps)) * 1000 / Fraction(repr(self.clock_mhz))

    def transfer_rate(self, src: int | None, dst: int | None) -> Fraction:
        """Bytes per cycle of a transfer from ``src`` to ``dst`` (a buffer's index in :data:`BUFFER_ROLES`, or None
        for DRAM and the host link): the slowest of the DRAM's rate (when one side is DRAM) and the buffers' line
        widths (:attr:`BufferSpec.line_bits`)."""
        rates = [self.dram_rate] if src is None or dst is None else []
        rates += [Fraction(self.buffers[BUFFER_ROLES[b]].line_bits, 8) for b in (src, dst) if b is not None]
        return min(rates + [Fraction(self.dma.bytes_per_cycle)])

    def beat_ii(self, engine: int, w_buffer: int) -> int:
        """Cycles between a stream engine's beats in a ``MATMUL`` (docs/isa.md §4.2, the one place this formula
        lives): what a beat reads (:meth:`UnitParams.beat_read_bits`) over the activations buffer's and the weight
        source's (``w_buffer``, an index of :data:`BUFFER_ROLES`) bits per cycle, at least 1."""
        slot = self.engines[engine]
        act_bits, weight_bits = slot.params.beat_read_bits(slot.count)
        w_src = self.buffers[BUFFER_ROLES[w_buffer]]
        return max(1, -(-act_bits // self.activation_buffer.bits_per_cycle), -(-weight_bits // w_src.bits_per_cycle))

    def result_write_cycles(self, engine: int, rows: int | None = None) -> int:
        """Cycles the activations buffer takes to write one result of a stream engine — ``rows`` (default: all of
        the slot's ``rows × count``) × its result words × 4 bytes of I32 records, a line a cycle (docs/isa.md §4.2,
        the one place this formula lives)."""
        p = self.engines[engine].stream_params
        words = getattr(p, "result_words", 1)
        line = self.activation_buffer.line_bits // 8
        return max(1, -(-(p.rows if rows is None else rows) * words * 4 // line))

    def matmul_ii(self, engine: int, k: int, w_buffer: int) -> int:
        """Cycles between a stream engine's beats in a ``MATMUL`` with reduction ``k`` (docs/isa.md §4.2):
        :meth:`beat_ii`, stretched when the results come faster than the activations buffer can write them — one
        result per row block and token every ``k_chunks(k)`` beats, each :meth:`result_write_cycles` long — so a
        result is written before the next arrives."""
        p = self.engines[engine].stream_params
        per = p.k_chunks(k) if hasattr(p, "k_chunks") else 1
        return max(self.beat_ii(engine, w_buffer), -(-self.result_write_cycles(engine) // per))

    def post_cycles(self, fn: str, rows: int, cols: int, words: int = 1, opts: int = 0) -> int:
        """Cycles of one ``POST`` (docs/isa.md §4): :meth:`PostUnitSpec.cycles`, with ``blocks`` from a combine's
        options, and for ``pack`` one slot per element of the engine's weight tile — its output rows and reduction
        (``rows × cols``, or ``cols × rows`` transposed) padded to whole row blocks and lane chunks, a lane each."""
        blocks = max(1, opts & 0xFFFF) if fn in ("combine", "combine_rows") else 1
        if fn != "pack":
            return self.post.cycles(fn, rows, cols, words, blocks)
        engine, transpose = opts & 0xFF, (opts >> 8) & 1
        if engine >= len(self.engines):
            return self.post.cycles(fn, rows, cols)
        p = self.engines[engine].stream_params
        out_rows, red = (cols, rows) if transpose else (rows, cols)
        elements = p.row_blocks(out_rows) * p.rows * p.beats_per_reduction(red) * p.lanes
        return self.post.cycles(fn, rows, cols, elements=-(-elements // (self.post.lanes or 1)))

    def transfer_cycles(self, rows: int, row_bytes: int, src: int | None, dst: int | None) -> int:
        """Cycles of one ``LOAD``/``STORE`` (docs/isa.md §4.1, the one place this formula lives): a cycle to set
        up; then each row at :meth:`transfer_rate` (a row's last cycle may move fewer bytes: rows are not merged),
        plus the DRAM's latency when one side is DRAM, plus one cycle when a buffer is read (its read is
        registered). Nothing to move (0 rows or 0 bytes) takes the set-up cycle only."""
        if rows * row_bytes == 0:
            return 1
        rate = self.transfer_rate(src, dst)
        per_row = -(-row_bytes * rate.denominator // rate.numerator)
        dram = src is None or dst is None
        return 1 + rows * per_row + (self.dram.latency_cycles if dram else 0) + (src is not None)

    def engine_for(self, unit: str, *, op: str = "") -> EngineSlot:
        """The engine slot that runs ``unit`` work: an engine of that very kind, else one whose unit serves it
        (``UnitParams.serves``: the int8 work may run on a systolic array)."""
        for e in self.engines:
            if e.unit == unit:
                return e
        for e in self.engines:
            if e.params.serves(unit):
                return e
        have = ", ".join(e.unit for e in self.engines)
        raise ValueError(f"design {self.name!r} has no {unit} engine{f' (needed by {op})' if op else ''}; it has: "
                         f"{have}")

    def to_dict(self) -> dict:
        """The structure as a design file's tables (no ``[mapping]``: that is a policy,
        :meth:`MappingPolicy.to_dict`)."""
        def engine(e: EngineSlot) -> dict:
            return {"unit": e.unit, "count": e.count, **e.params.to_dict()}
        return {
            "name": self.name, "clock_mhz": self.clock_mhz, "engines": [engine(e) for e in self.engines],
            "buffers": {b.name: {k: v for k, v in asdict(b).items() if k != "name"} for b in self.buffers.values()},
            "dram": asdict(self.dram), "vector": asdict(self.vector), "post": asdict(self.post),
            "dma": asdict(self.dma),
        }

    @classmethod
    def from_dict(cls, d: dict, *, source: str = "design") -> "Accelerator":
        """Build and validate from a mapping; every error names the field. A ``mapping`` table is validated too
        (:func:`design_from_dict` returns it as a policy)."""
        return design_from_dict(d, source=source)[0]


def design_from_dict(d: dict, *, source: str = "design") -> tuple[Accelerator, MappingPolicy]:
    """The structure and the default mapping policy of a design given as a mapping (a design file's tables);
    every error names the field."""
    if not isinstance(d, dict):
        raise ValueError(f"{source}: a design must be a table/object, not {type(d).__name__}")
    known = {"name", "clock_mhz", "engines", "buffers", "dram", "vector", "post", "dma", "mapping"}
    _known(d, known, source)
    for key in ("name", "clock_mhz", "engines", "buffers", "dram", "vector"):
        if key not in d:
            raise ValueError(f"{source}: missing field {key!r}")
    if not isinstance(d["name"], str) or not d["name"]:
        raise ValueError(f"{source}: name must be a non-empty string, not {d['name']!r}")
    if not isinstance(d["engines"], list):
        raise ValueError(f"{source}: engines must be an array of tables ([[engines]] in TOML), not "
                         f"{type(d['engines']).__name__}")
    engines = []
    for i, e in enumerate(d["engines"]):
        engines.append(_engine(e, f"{source}: engines[{i}]"))
    buffers = _table(d, "buffers", source)
    _known(buffers, set(BUFFER_ROLES), f"{source}: buffers")
    built = {}
    for name in BUFFER_ROLES:
        if name not in buffers:
            raise ValueError(f"{source}: missing buffers.{name}")
        built[name] = _buffer(name, buffers[name], source)
    dram = _table(d, "dram", source)
    _known(dram, {"bandwidth_gbps", "pj_per_bit", "latency_cycles"}, f"{source}: dram")
    vector = _table(d, "vector", source)
    _known(vector, {"lanes", "fp_bits"}, f"{source}: vector")
    post = _table(d, "post", source) if "post" in d else {}
    _known(post, {"lanes", "latency"}, f"{source}: post")
    dma = _table(d, "dma", source) if "dma" in d else {}
    _known(dma, {"bytes_per_cycle"}, f"{source}: dma")
    mapping = _table(d, "mapping", source) if "mapping" in d else {}
    _known(mapping, set(MappingPolicy.keys()), f"{source}: mapping")
    try:
        accelerator = Accelerator(name=d["name"], clock_mhz=d["clock_mhz"], engines=tuple(engines), buffers=built,
                                  dram=DramSpec(**dram), vector=VectorUnitSpec(**vector), post=PostUnitSpec(**post),
                                  dma=DmaSpec(**dma))
        policy = MappingPolicy(**mapping)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{source}: {exc}") from None
    return accelerator, policy


def _table(d: dict, key: str, source: str) -> dict:
    if not isinstance(d[key], dict):
        raise ValueError(f"{source}: {key} must be a table, not {d[key]!r}")
    return dict(d[key])


def _known(d: dict, known: set, where: str) -> None:
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; known: {sorted(known)}")


def _engine(e: dict, where: str) -> EngineSlot:
    if not isinstance(e, dict) or "unit" not in e:
        raise ValueError(f"{where}: an engine needs a 'unit' field")
    e = dict(e)
    unit = e.pop("unit")
    count = e.pop("count", 1)
    try:
        return EngineSlot(engine_params_for(unit).from_dict(e), count)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{where} ({unit}): {exc}") from None


def _buffer(name: str, b: dict, source: str) -> BufferSpec:
    where = f"{source}: buffers.{name}"
    if not isinstance(b, dict):
        raise ValueError(f"{where} must be a table")
    b = dict(b)
    _known(b, {"size_bytes", "size_kib", "size_mib", "banks", "ports", "word_bits"}, where)
    sizes = [k for k in ("size_bytes", "size_kib", "size_mib") if k in b]
    if len(sizes) != 1:
        raise ValueError(f"{where}: give exactly one of size_bytes, size_kib, size_mib (got {sizes or 'none'})")
    key = sizes[0]
    value = b.pop(key)
    scale = {"size_bytes": 1, "size_kib": 1 << 10, "size_mib": 1 << 20}[key]
    # the bound before the multiplication: 1e308 MiB would overflow to inf, and NaN fails every comparison
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0
            or value * scale > BUFFER_MAX_BYTES):
        raise ValueError(f"{where}.{key} must be a positive number of at most {BUFFER_MAX_BYTES // scale:,} "
                         f"(1 TiB), not {value!r}")
    size = value * scale
    if size != int(size):
        raise ValueError(f"{where}.{key} = {value!r} is not a whole number of bytes")
    size = int(size)
    try:
        return BufferSpec(name, size, **b)
    except (TypeError, ValueError) as exc:      # its checks name the field as buffers.NAME.FIELD
        raise type(exc)(f"{source}: {exc}") from None


def design_path(name: str) -> Path:
    if name not in BUILTIN_DESIGNS:
        raise ValueError(f"unknown design {name!r}; built-in designs: {', '.join(BUILTIN_DESIGNS)} (or give a "
                         ".toml, .yaml or .json path)")
    return _DESIGN_DIR / f"{name}.toml"


def _design_dict(design) -> tuple[dict, str]:
    """The tables of a design given by built-in name or file path, and the source its messages name."""
    text = str(design)
    path = Path(text)
    if text in BUILTIN_DESIGNS:
        path = design_path(text)
    elif not path.suffix and not path.is_dir():
        design_path(text)                      # raises with the list of built-in designs
    if path.is_dir():
        raise ValueError(f"design path {str(path)!r} is a directory, not a .toml, .yaml or .json file")
    if not path.is_file():
        state = "is not a regular file" if path.exists() else "does not exist"
        raise ValueError(f"design file {str(path)!r} {state}")
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:        # unreadable, or not text at all
        raise ValueError(f"design file {str(path)!r} cannot be read: {exc}") from None
    try:
        if path.suffix == ".toml":
            d = tomllib.loads(raw)
        elif path.suffix in (".yaml", ".yml"):
            import yaml
            d = yaml.safe_load(raw)
        elif path.suffix == ".json":
            d = json.loads(raw)
        else:
            raise ValueError(f"design file {str(path)!r}: unknown format {path.suffix!r} (use .toml, .yaml or .json)")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"design file {str(path)!r} is not valid {path.suffix[1:].upper()}: {exc}") from None
    except Exception as exc:               # yaml.YAMLError without importing yaml up front
        if type(exc).__module__.startswith("yaml"):
            raise ValueError(f"design file {str(path)!r} is not valid YAML: {exc}") from None
        raise
    return d, str(path)


def load_design_with_policy(design) -> tuple[Accelerator, MappingPolicy]:
    """The structure and the default mapping policy of a design: a built-in name, a TOML/YAML/JSON file or a dict
    (the policy is its ``[mapping]`` table, the defaults without one), or an :class:`Accelerator` (the default
    policy)."""
    if isinstance(design, Accelerator):
        return design, MappingPolicy()
    if isinstance(design, dict):
        return design_from_dict(design)
    d, source = _design_dict(design)
    return design_from_dict(d, source=source)


def load_design(design) -> Accelerator:
    """An :class:`Accelerator` from a built-in name, a TOML/YAML/JSON file, a dict, or an Accelerator."""
    return load_design_with_policy(design)[0]
