"""The systolic array: an R × C array of int MACs, described for the simulator (``sim/systolic.py``)."""

from collections import Counter
from dataclasses import dataclass
from typing import ClassVar

from models.units import UnitKind

from .base import UnitParams, _choice, _int_field, ceil_div

__all__ = ["SystolicArrayParams"]


@dataclass(frozen=True)
class SystolicArrayParams(UnitParams):
    """An R × C systolic array of int MACs — how the int8 baseline is usually built, and what SCALE-Sim models.

    rows, cols : processing elements (PE) per column and per row.
    dataflow : ``"os"`` (output stationary), ``"ws"`` (weight stationary) or ``"is"`` (input stationary).
    act_bits, weight_bits : operand widths; acc_width : the PE accumulator width.

    The simulator maps a GEMM ``[M × K]·[K × N]`` onto it (``sim/systolic.py``); there is no RTL generator for it
    yet, so it is not in :data:`hw.units.UNIT_PARAMS`. It serves a workload's int8-MAC operations.
    """

    kind: ClassVar[UnitKind] = UnitKind.SYSTOLIC
    timing: ClassVar[str] = "systolic"

    rows: int
    cols: int
    dataflow: str = "os"
    act_bits: int = 8
    weight_bits: int = 8
    acc_width: int = 32

    def __post_init__(self):
        _int_field("rows", self.rows, 1, 4096)
        _int_field("cols", self.cols, 1, 4096)
        _choice("dataflow", self.dataflow, ("os", "ws", "is"))
        _int_field("act_bits", self.act_bits, 2, 32)
        _int_field("weight_bits", self.weight_bits, 2, 32)
        _int_field("acc_width", self.acc_width, 8, 64)

    @property
    def macs_per_cycle(self) -> int:
        return self.rows * self.cols

    @property
    def module_name(self) -> str:
        return f"systolic_{self.dataflow}_{self.rows}x{self.cols}_a{self.act_bits}_w{self.weight_bits}"

    def serves(self, unit) -> bool:
        """Its own kind and the workload's int8-MAC operations (the array is an int8 baseline)."""
        return unit in (UnitKind.SYSTOLIC, UnitKind.INT8_MAC)

    def check_count(self, count: int, where: str) -> None:
        if count != 1:
            raise ValueError(f"{where}.count must be 1, not {count}: describe a bigger array with rows and cols "
                             "instead")

    def check_fits(self, op) -> None:
        for what, need, have in (("activations", op.a_bits, self.act_bits), ("weights", op.b_bits, self.weight_bits),
                                 ("accumulators", op.acc_bits, self.acc_width)):
            if need > have:
                raise ValueError(f"{op.name}: {need}-bit {what} exceed the systolic array's {have} bits")

    def weight_bytes(self, k: int, n: int, count: int = 1) -> int:
        """The ``[k, n]`` operand packed densely (the array streams it; no row blocks)."""
        return ceil_div(k * n * self.weight_bits, 8)

    def inventory(self, count: int = 1) -> Counter:
        """Every PE: a multiplier, an accumulator adder and its operand and accumulator registers."""
        pes = self.rows * self.cols * count
        return Counter({("int_mul", self.act_bits, self.weight_bits): pes, ("int_add", self.acc_width): pes,
                        ("reg_bits",): pes * (self.act_bits + self.weight_bits + self.acc_width)})
