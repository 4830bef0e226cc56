"""Frozen parameter objects of lowbit's units: one object drives the generator, the simulator and the benches.

Plain Python and NumPy only (no Amaranth), so ``sim`` can import it. Each parameter class validates itself on
construction, resolves derived values (accumulator widths, pipeline depth) into its fields, and owns everything
that is a fact of the unit: its I/O contract (payload layouts with each field's axes, encoding and role, the pad
values of a problem that does not fill whole beats, how a problem is cut into operand beats and how result beats
map back, the weight-tile image and result records of docs/isa.md), the accumulator channels the datapath keeps
and its arithmetic, the closed-form cycle count, and what the simulator and the energy model ask of an engine
(operand widths, fit rules, event inventories, random operands). See :class:`hw.units.base.UnitParams`.

All five generated units are *stream dot-product engines* with one structure (``hw/engine.py``): an operand beat
carries ``lanes`` reduction elements of one activation vector and the matching elements of ``rows`` weight rows;
each row reduces its lane terms in a pipelined tree per accumulator channel, accumulates until a beat flagged
``last``, and a result beat leaves with the finished values. They differ in their operands and channels:

============== ============================================ ==========================================
unit           operands                                     result per row
============== ============================================ ==========================================
ternary-mac    int activations × {-1, 0, +1} weights        Σ w·x
xnor-popcount  ±1 activations × ±1 weights (as bits)        2·popcount(XNOR) − n [, bool(score)]
bamm           {0,1} attention bits × ±1 values (as bits)   Σ a·v and its sign under a zero policy
binary-basis   int activations × N binary bases (or BiLLM   Σ_j B_ij·x_j per basis (adder-only)
               groups with signs)                           [, Σ_i α_i·S_i with fixed-point α]
int8-mac       int8 activations × int8 weights              Σ w·x
============== ============================================ ==========================================

Two more engine kinds a design may list have no generator yet: the FP MAC array (``fp_mac``) and the systolic
array (``systolic``). One module per unit; ``hw.params`` re-exports everything here.
"""

from models.units import UnitKind

from .bamm import BammParams
from .base import MAX_MACS_PER_CYCLE, StreamUnit, UnitParams, ceil_div, ceil_log2
from .binary_basis import BILLM_BLOCK, BILLM_GROUPS, BinaryBasisParams
from .channels import BeatSchedule, Channel
from .fp_mac import FpMacParams
from .int8 import Int8MacParams
from .stream import CYCLES_FORMULA, EngineParams
from .systolic import SystolicArrayParams
from .ternary import TernaryMacParams
from .xnor import XnorPopcountParams

__all__ = ["UnitParams", "StreamUnit", "EngineParams", "TernaryMacParams", "XnorPopcountParams", "BammParams",
           "BinaryBasisParams", "Int8MacParams", "FpMacParams", "SystolicArrayParams", "BeatSchedule", "Channel",
           "UNIT_PARAMS", "ENGINE_PARAMS", "params_for_unit", "engine_params_for", "ceil_div", "ceil_log2",
           "MAX_MACS_PER_CYCLE", "CYCLES_FORMULA", "BILLM_GROUPS", "BILLM_BLOCK"]

#: The units with an RTL generator (``hw.engine.ENGINES``), by kind.
UNIT_PARAMS: dict[UnitKind, type[EngineParams]] = {
    UnitKind.TERNARY_MAC: TernaryMacParams,
    UnitKind.XNOR_POPCOUNT: XnorPopcountParams,
    UnitKind.BAMM: BammParams,
    UnitKind.BINARY_BASIS: BinaryBasisParams,
    UnitKind.INT8_MAC: Int8MacParams,
}

#: Every engine kind an accelerator description may list (``hw.accelerator``), by kind.
ENGINE_PARAMS: dict[UnitKind, type[UnitParams]] = {
    **UNIT_PARAMS,
    UnitKind.FP_MAC: FpMacParams,
    UnitKind.SYSTOLIC: SystolicArrayParams,
}


def params_for_unit(name: str) -> type[EngineParams]:
    """The parameter class of a unit given by its command-line name."""
    kind = UnitKind.parse(name)
    try:
        return UNIT_PARAMS[kind]
    except KeyError:
        have = ", ".join(k.value for k in UNIT_PARAMS)
        raise ValueError(f"unit {name!r} has no generator; available: {have}") from None


def engine_params_for(name: str) -> type[UnitParams]:
    """The parameter class of an engine a design lists by its unit name (every kind in :data:`ENGINE_PARAMS`)."""
    kind = UnitKind.parse(name)
    try:
        return ENGINE_PARAMS[kind]
    except KeyError:
        raise ValueError(f"unit {name!r} cannot be an engine") from None
