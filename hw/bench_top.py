"""Pin-light place-and-route wrapper around any unit: serial operand in, serial result out.

A unit's stream ports are hundreds of bits wide and would not fit the I/O of a small FPGA package (an
iCE40 UP5K sg48 has 39 user I/Os). :class:`BenchTop` puts the unit between two shift registers so the
design needs six pins whatever the unit's size::

    sin ──► operand shift register ──► unit.operand ┐            ┌─► result shift register ──► sout
    load ─┘ (operand_layout.width bits)             unit (stream) ┘   (result_layout.width bits)  sout_valid

Protocol: hold ``load`` high for ``operand_layout.width`` cycles while driving the payload bits on ``sin``,
most significant bit first (each cycle shifts the register up by one, ``sin`` entering at bit 0). The cycle
``load`` falls, one beat is offered to the unit; it stays offered until the unit accepts it. When a result
is handed off it is captured whole and shifted out on ``sout`` LSB first, ``sout_valid`` high for exactly
``result_layout.width`` cycles; the unit's ``result.ready`` is low while the shift register is busy, so the
unit's real back-pressure logic is kept (a constant ``ready`` would let synthesis remove its stall path).

Every operand bit reaches the unit and every result bit reaches ``sout``, so synthesis can remove nothing
that the bare unit has. Ports: ``clk``, ``rst`` (synchronous, active high), ``sin``, ``load``, ``sout``,
``sout_valid``.
"""

from amaranth import Cat, Module, Signal, Value
from amaranth.back import verilog
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .export import build_component
from .params import UnitParams

__all__ = ["BenchTop", "bench_module_name", "generate_bench"]


def bench_module_name(params: UnitParams) -> str:
    """Verilog module name of the wrapper around ``params``' unit."""
    return f"{params.module_name}_bench"


def generate_bench(params: UnitParams) -> str:
    """Verilog text of the wrapper around ``params``' unit, top module :func:`bench_module_name`."""
    return verilog.convert(BenchTop(params), name=bench_module_name(params), emit_src=False)


class BenchTop(wiring.Component):
    """The wrapper: ``BenchTop(params)`` builds the unit with :func:`hw.export.build_component`.

    Parameters
    ----------
    params : the unit's parameter object (any :class:`~hw.params.UnitParams` with a generator).
    unit : an already built component of that unit (default: the standard generator's).
    """

    sin: In(1)
    load: In(1)
    sout: Out(1)
    sout_valid: Out(1)

    def __init__(self, params: UnitParams, unit: wiring.Component | None = None):
        if not isinstance(params, UnitParams):
            raise TypeError(f"BenchTop needs a unit parameter object, not {params!r}")
        self._params = params
        self._unit = unit if unit is not None else build_component(params)
        self._in_width = params.operand_layout.width
        self._out_width = params.result_layout.width
        super().__init__()

    @property
    def params(self) -> UnitParams:
        return self._params

    @property
    def unit(self) -> wiring.Component:
        return self._unit

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = unit = self._unit
        w_in, w_out = self._in_width, self._out_width

        # Operand side: shift in while `load`, offer one beat on its falling edge.
        shreg_in = Signal(w_in)
        load_q = Signal()
        pending = Signal()
        m.d.sync += load_q.eq(self.load)
        with m.If(self.load):
            m.d.sync += shreg_in.eq(Cat(self.sin, shreg_in[:-1]))
        m.d.comb += [
            unit.operand.payload.eq(shreg_in),
            unit.operand.valid.eq(pending),
        ]
        with m.If(load_q & ~self.load):
            m.d.sync += pending.eq(1)
        with m.Elif(unit.operand.ready):
            m.d.sync += pending.eq(0)

        # Result side: capture a whole result, then shift it out LSB first.
        shreg_out = Signal(w_out)
        left = Signal(range(w_out + 1))     # result bits still to shift out
        m.d.comb += [
            unit.result.ready.eq(left == 0),
            self.sout.eq(shreg_out[0]),
            self.sout_valid.eq(left != 0),
        ]
        with m.If(left != 0):
            m.d.sync += [shreg_out.eq(shreg_out >> 1), left.eq(left - 1)]
        with m.Elif(unit.result.valid):
            m.d.sync += [shreg_out.eq(Value.cast(unit.result.payload)), left.eq(w_out)]
        return m

