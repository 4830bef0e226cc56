"""Ternary-MAC matrix-vector engine (BitNet b1.58 and TernaryBERT linears) in Amaranth 0.5.

Dataflow (one stream in, one stream out; see :class:`hw.params.TernaryMacParams` for the contract)::

    operand ──► operand register ──► rows × lanes ternary products ──► rows adder trees
                (act, weight, last)   (0, +x or −x: a mux, no multiplier)   (tree_stages registers)
            ──► accumulators ──► result register ──► result

Weights are streamed with the activations, one ``rows × lanes`` block per beat, so the engine holds no
weight memory: whatever feeds it (a testbench today, the accelerator's weight buffer later) decides
reuse. A beat flagged ``last`` closes a reduction; its sum plus the accumulators goes to the result
register and the accumulators restart from zero, so reductions run back to back with no bubble.

Back-pressure is global: the whole pipeline advances when the result register is empty or being read
(``advance = ~result.valid | result.ready``), and ``operand.ready`` is ``advance``. At full throughput
the engine takes one beat per cycle and a result appears ``latency`` cycles after its last beat.
"""

from amaranth import Module, Mux, Signal, Value, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .params import TernaryMacParams
from .rtl import amaranth_layout, pipelined_tree

__all__ = ["TernaryMacEngine"]


class TernaryMacEngine(wiring.Component):
    """The generator: ``TernaryMacEngine(TernaryMacParams(...))``.

    Ports: ``operand`` (stream in: ``act``, ``weight``, ``last``) and ``result`` (stream out: ``acc``).
    """

    def __init__(self, params: TernaryMacParams):
        if not isinstance(params, TernaryMacParams):
            raise TypeError(f"TernaryMacEngine needs TernaryMacParams, not {params!r}")
        self._params = params
        super().__init__(self.signature_for(params))

    @staticmethod
    def signature_for(params: TernaryMacParams) -> wiring.Signature:
        """The port signature, available without building (and having to elaborate) a component."""
        return wiring.Signature({
            "operand": In(stream.Signature(amaranth_layout(params.operand_layout))),
            "result": Out(stream.Signature(amaranth_layout(params.result_layout))),
        })

    @property
    def params(self) -> TernaryMacParams:
        return self._params

    def _lane_product(self, act: Value, code: Value, row: int, lane: int) -> Value:
        """``code · act`` for a 2-bit two's-complement ternary code: bit 0 non-zero, bit 1 negate."""
        return Mux(code[0], Mux(code[1], -act, act), 0)

    def elaborate(self, platform):
        m = Module()
        p = self._params

        advance = Signal()
        m.d.comb += [
            advance.eq(~self.result.valid | self.result.ready),
            self.operand.ready.eq(advance),
        ]

        # Operand register.
        op = Signal(self.operand.payload.shape())
        op_valid = Signal()
        with m.If(advance):
            m.d.sync += [op.eq(self.operand.payload), op_valid.eq(self.operand.valid)]

        # Products and one reduction tree per row.
        product_width = p.level_width(0)
        row_sums = []
        for r in range(p.rows):
            terms = []
            for lane in range(p.lanes):
                prod = Signal(signed(product_width), name=f"prod_r{r}_l{lane}")
                m.d.comb += prod.eq(self._lane_product(op.act[lane], op.weight[r][lane], r, lane))
                terms.append(prod)
            row_sums.append(pipelined_tree(m, terms, level_width=p.level_width,
                                           registered_levels=p.registered_levels, enable=advance,
                                           name=f"tree_r{r}"))

        # valid/last travel beside the data through the registered tree levels.
        tail_valid, tail_last = op_valid, op.last
        for stage in range(p.tree_stages):
            v, last = Signal(name=f"stage{stage}_valid"), Signal(name=f"stage{stage}_last")
            with m.If(advance):
                m.d.sync += [v.eq(tail_valid), last.eq(tail_last)]
            tail_valid, tail_last = v, last

        # Accumulate; a `last` beat moves the total to the result register and restarts from zero.
        accs = [Signal(signed(p.acc_width), name=f"acc_r{r}") for r in range(p.rows)]
        with m.If(advance):
            with m.If(tail_valid & tail_last):
                for r in range(p.rows):
                    m.d.sync += [self.result.payload.acc[r].eq(accs[r] + row_sums[r]), accs[r].eq(0)]
                m.d.sync += self.result.valid.eq(1)
            with m.Else():
                with m.If(tail_valid):
                    for r in range(p.rows):
                        m.d.sync += accs[r].eq(accs[r] + row_sums[r])
                m.d.sync += self.result.valid.eq(0)
        return m
