"""Energy and area of a simulated run: integer event counters × unit costs from a technology table.

Every joule in a result traces to one line of :attr:`Energy.lines` — an event (``int_add`` of a width, a gate, a
register bit, SRAM bits of a buffer, DRAM bits, a vector FP operation), how many of them the run counted, the unit
cost in pJ from ``sim.tech`` and where that cost comes from. ``full`` mode prices every event the simulator
counted; ``arith-only`` follows the BitNet paper's counting rule instead (arithmetic only, no memory): an FP MAC
is one multiply and one add of its format, an int8 × int8 MAC an INT8 multiply and add, a binary or ternary MAC
one INT8 add, and the quantizers' scaling multiplies are FP multiplies.

Area: the engines' ASIC area is their hardware inventory — the adders, gates, multipliers and register bits one
beat uses, each once — priced with the technology's area table, plus every buffer's SRAM area and the vector unit.
"""

from collections import Counter
from dataclasses import dataclass, field

from hw.accelerator import Accelerator

__all__ = ["EnergyLine", "Energy", "price_events", "arith_only", "area", "ENERGY_MODES"]

ENERGY_MODES = ("full", "arith-only")
PJ = 1e-12


@dataclass(frozen=True)
class EnergyLine:
    """One priced counter: ``count`` events of one kind at ``pj_each``, with the source of that unit cost."""

    event: str          #: e.g. "int_add/20", "gate/xnor", "reg_bits", "acc_read_bits", "sram_read/weights", "dram_bits"
    category: str       #: arith.add, arith.mul, arith.logic, registers, sram, dram, vector
    count: int
    pj_each: float
    source: str

    @property
    def joules(self) -> float:
        return self.count * self.pj_each * PJ


@dataclass
class Energy:
    """A priced run: its lines, and the totals by category (``mode`` "full" or "arith-only", ``tech`` the node)."""

    mode: str
    tech: str
    lines: list[EnergyLine] = field(default_factory=list)

    def total(self, prefix: str = "") -> float:
        """Joules of the lines whose category starts with ``prefix`` (all lines by default)."""
        return sum(line.joules for line in self.lines if line.category.startswith(prefix))

    def to_dict(self) -> dict:
        """The ``energy_j`` object of the CLI's JSON: totals by category, arithmetic by operation, the lines."""
        by_op: dict[str, float] = {}
        for line in self.lines:
            if line.category.startswith("arith"):
                by_op[line.event] = by_op.get(line.event, 0.0) + line.joules
        buffers: dict[str, float] = {}
        for line in self.lines:
            if line.category == "sram":
                name = line.event.split("/", 1)[1]
                buffers[name] = buffers.get(name, 0.0) + line.joules
        return {
            "total": self.total(),
            "arith": {"total": self.total("arith"), "mul": self.total("arith.mul"), "add": self.total("arith.add"),
                      "logic": self.total("arith.logic"), "by_op": by_op},
            "registers": self.total("registers"),
            "sram": self.total("sram"),
            "sram_by_buffer": buffers,
            "dram": self.total("dram"),
            "vector": self.total("vector"),
            "mode": self.mode,
            "tech": self.tech,
            "counters": [{"event": line.event, "category": line.category, "count": line.count,
                          "pj_each": line.pj_each, "joules": line.joules, "source": line.source}
                         for line in self.lines],
        }


def price_events(events: Counter, tech, design: Accelerator) -> Energy:
    """``full`` mode: every counted event (``sim.model.ModelRun.events``) × its unit cost from ``tech`` (a
    :class:`sim.tech.Technology`); SRAM events are priced at their buffer's size in ``design``, DRAM bits at the
    design's ``dram.pj_per_bit`` when it gives one."""
    energy = Energy("full", tech.name)
    for key in sorted(events, key=str):
        count = int(events[key])
        if not count:
            continue
        kind = key[0]
        if kind == "int_add":
            pj, src, cat, name = tech.int_add(key[1]), tech.provenance("int_add", key[1]), "arith.add", f"int_add/{key[1]}"
        elif kind == "int_mul":
            pj, src = tech.int_mul(key[1], key[2]), tech.provenance("int_mul", key[1], key[2])
            cat, name = "arith.mul", f"int_mul/{key[1]}x{key[2]}"
        elif kind in ("fp_add", "fp_mul", "fp_special"):
            pj, src = getattr(tech, kind)(key[1]), tech.provenance(kind, key[1])
            cat = "arith.mul" if kind != "fp_add" else "arith.add"
            name = f"{kind}/fp{key[1]}"
        elif kind == "vector":
            op, bits = key[1], key[2]
            pj, src, cat, name = getattr(tech, op)(bits), tech.provenance(op, bits), "vector", f"vector/{op}/fp{bits}"
        elif kind == "gate":
            pj, src, cat, name = tech.gate(key[1]), tech.provenance("gate", key[1]), "arith.logic", f"gate/{key[1]}"
        elif kind == "reg_bits":
            pj, src, cat, name = tech.register_bit(), tech.provenance("register_bit"), "registers", "reg_bits"
        elif kind == "acc_read_bits":           # an OS PE reads its accumulator for each add and to copy it out
            pj, src = tech.register_read_bit(), tech.provenance("register_read_bit")
            cat, name = "registers", "acc_read_bits"
        elif kind == "acc_write_bits":          # ... and writes each sum back
            pj, src, cat, name = tech.register_bit(), tech.provenance("register_bit"), "registers", "acc_write_bits"
        elif kind in ("sram_read", "sram_write"):
            size = design.buffers[key[1]].size_bytes
            method = f"{kind}_bits"
            pj = getattr(tech, method)(size, 1)
            src = tech.provenance(method, size, 1)
            cat, name = "sram", f"{kind}/{key[1]}"
        elif kind == "dram_bits":
            if design.dram.pj_per_bit is not None:
                pj, src = design.dram.pj_per_bit, f"design {design.name!r}: dram.pj_per_bit"
            else:
                pj, src = tech.dram_bits(1), tech.provenance("dram_bits", 1)
            cat, name = "dram", "dram_bits"
        else:
            raise ValueError(f"no price for event {key!r}")
        energy.lines.append(EnergyLine(name, cat, count, float(pj), src))
    return energy


def arith_only(ops, tech) -> Energy:
    """The BitNet paper's arithmetic-only counting on a workload's operations (see the module docstring)."""
    counts: Counter = Counter()
    for o in ops:
        if o.kind == "matmul":
            macs = o.macs
            if o.unit == "fp-mac":
                counts[("fp_mul", o.a_bits)] += macs
                counts[("fp_add", o.a_bits)] += macs
            elif o.unit == "int8-mac":
                counts[("int_mul", 8, 8)] += macs
                counts[("int_add", 8)] += macs
            else:
                counts[("int_add", 8)] += macs          # a binary or ternary MAC: one INT8 add (BitNet's rule)
        elif o.kind == "vector" and o.op in ("rescale", "quantize"):
            counts[("fp_mul", o.a_bits if o.a_bits in (16, 32) else 16)] += o.elements
    energy = Energy("arith-only", tech.name)
    for key in sorted(counts, key=str):
        kind = key[0]
        if kind == "int_add":
            pj, src, cat, name = tech.int_add(key[1]), tech.provenance("int_add", key[1]), "arith.add", f"int_add/{key[1]}"
        elif kind == "int_mul":
            pj, src, cat, name = tech.int_mul(8, 8), tech.provenance("int_mul", 8, 8), "arith.mul", "int_mul/8x8"
        else:
            pj, src = getattr(tech, kind)(key[1]), tech.provenance(kind, key[1])
            cat, name = ("arith.add" if kind == "fp_add" else "arith.mul"), f"{kind}/fp{key[1]}"
        energy.lines.append(EnergyLine(name, cat, int(counts[key]), float(pj), src))
    return energy


def area(design: Accelerator, tech) -> dict:
    """ASIC area (µm²) of the design's engines, buffers and vector unit from the technology's area tables."""
    engines = {}
    for slot in design.engines:
        um2 = 0.0
        for key, count in slot.params.inventory(slot.count).items():
            kind = key[0]
            if kind == "int_add":
                um2 += count * tech.int_add_area(key[1])
            elif kind == "int_mul":
                um2 += count * tech.int_mul_area(key[1], key[2])
            elif kind == "fp_add":
                um2 += count * tech.fp_add_area(key[1])
            elif kind == "fp_mul":
                um2 += count * tech.fp_mul_area(key[1])
            elif kind == "gate":
                um2 += count * tech.gate_area(key[1])
            elif kind == "reg_bits":
                um2 += count * tech.register_bit_area()
            else:
                raise ValueError(f"no area for inventory item {key!r} of the {slot.unit} engine")
        engines[slot.unit] = um2
    sram = {b.name: tech.sram_area(b.size_bytes) for b in design.buffers.values()}
    v = design.vector
    vector = v.lanes * (tech.fp_add_area(v.fp_bits) + tech.fp_mul_area(v.fp_bits))
    total = sum(engines.values()) + sum(sram.values()) + vector
    return {"asic_um2": {"engines": engines, "sram": sram, "vector": vector, "total": total},
            "asic_mm2": total / 1e6, "tech": tech.name,
            "method": "engines: the adders, gates, multipliers and register bits one beat uses, priced with the "
                      "technology's area table; SRAM: bitcell area × bits / array efficiency; vector: lanes × "
                      "(FP add + FP multiply)"}
