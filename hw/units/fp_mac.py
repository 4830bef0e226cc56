"""The floating-point MAC array: the work a scheme leaves in floating point (described for the simulator)."""

from collections import Counter
from dataclasses import dataclass
from typing import ClassVar

from models.units import UnitKind

from .base import StreamUnit, _choice, _int_field

__all__ = ["FpMacParams"]


@dataclass(frozen=True)
class FpMacParams(StreamUnit):
    """A floating-point MAC array for the work a scheme leaves in floating point (attention in the LLM schemes, the
    LM head, the FP baselines): ``rows`` outputs in parallel, ``lanes`` reduction elements per cycle, an FP adder
    tree of ``latency`` cycles. Described for the simulator; no generator (it streams beats like the generated
    engines, closed form in both of the simulator's modes)."""

    kind: ClassVar[UnitKind] = UnitKind.FP_MAC

    lanes: int
    rows: int
    fp_bits: int = 16
    latency: int = 8

    def __post_init__(self):
        _int_field("lanes", self.lanes, 1)
        _int_field("rows", self.rows, 1)
        _choice("fp_bits", self.fp_bits, (16, 32))
        _int_field("latency", self.latency, 1, 64)

    @property
    def macs_per_cycle(self) -> int:
        return self.lanes * self.rows

    @property
    def module_name(self) -> str:
        return f"fp_mac_l{self.lanes}_r{self.rows}_fp{self.fp_bits}"

    @property
    def act_bits(self) -> int:
        return self.fp_bits

    @property
    def weight_bits(self) -> int:
        return self.fp_bits

    @property
    def result_bits(self) -> int:
        return self.fp_bits

    def check_fits(self, op) -> None:
        if op.a_bits > self.fp_bits:
            raise ValueError(f"{op.name}: fp{op.a_bits} operands exceed the fp-mac engine's fp{self.fp_bits}")

    def lane_events(self, rows_total: int) -> Counter:
        return Counter({("fp_mul", self.fp_bits): rows_total * self.lanes,
                        ("fp_add", self.fp_bits): rows_total * self.lanes})

    def tree_events(self, rows_total: int) -> Counter:
        return Counter()                    # the FP adds are the lanes' own (lane_events)

    def result_events(self, rows_total: int) -> Counter:
        return Counter({("reg_bits",): rows_total * self.fp_bits})
