"""The stream dot-product engine all of lowbit's units are made of, and the five units (Amaranth 0.5).

Dataflow (one stream in, one stream out; the contract is in ``hw.params`` and each unit's manifest)::

    operand ─► operand register ─► [pre-stages] ─► lane terms ─► one pipelined tree per (channel, row)
           ─► accumulators ─► final-totals register ─► result arithmetic ─► [scale stage] ─► result register

Each unit says what its lane terms are (``_terms``) and how accumulated channel totals become result fields
(``_finish``); everything else — the operand register, tree pipelining, the valid/last delay line, the
accumulators that restart after a ``last`` beat, back-pressure — is shared, so every unit has the same timing
contract: one beat per cycle, latency ``params.latency``, and a global stall
``advance = ~result.valid | result.ready`` with ``operand.ready = advance``.

Weights are streamed with the activations, one ``rows × lanes`` block per beat: the engines hold no weight
memory; whatever feeds them (a testbench now, the accelerator's buffers later) decides reuse.
"""

from amaranth import Array, Cat, Module, Mux, Signal, Value, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .layout import PayloadLayout
from .rtl import amaranth_layout, delay, pipelined_tree, unpack
from .units import (BILLM_GROUPS, BammParams, BinaryBasisParams, EngineParams, Int8MacParams, TernaryMacParams,
                    XnorPopcountParams)

__all__ = ["StreamEngine", "TernaryMacEngine", "XnorPopcountEngine", "BammEngine", "BinaryBasisEngine",
           "Int8MacEngine", "ENGINES"]


def _masked(x: Value, bit: Value) -> Value:
    """``x`` where ``bit`` is 1, else 0 — an AND per bit, signedness kept."""
    return (x.as_unsigned() & bit.replicate(len(x))).as_signed() if x.shape().signed else \
        x & bit.replicate(len(x))


class StreamEngine(wiring.Component):
    """Base class: ``StreamEngine(params)``; subclasses fill in ``_terms`` and ``_finish``.

    Ports: ``operand`` (stream in) and ``result`` (stream out), payloads as ``params.operand_layout`` and
    ``params.result_layout``.
    """

    params_class: type[EngineParams] = EngineParams

    def __init__(self, params: EngineParams):
        if not isinstance(params, self.params_class):
            raise TypeError(f"{type(self).__name__} needs {self.params_class.__name__}, not {params!r}")
        self._params = params
        super().__init__(self.signature_for(params))

    @staticmethod
    def signature_for(params: EngineParams) -> wiring.Signature:
        """The port signature, available without building (and having to elaborate) a component."""
        return wiring.Signature({
            "operand": In(stream.Signature(amaranth_layout(params.operand_layout))),
            "result": Out(stream.Signature(amaranth_layout(params.result_layout))),
        })

    @property
    def params(self) -> EngineParams:
        return self._params

    # -- unit hooks -------------------------------------------------------------------------------------

    def _prepare(self, m: Module, op, advance: Value):
        """Operands as the lane terms see them, after ``params.pre_stages`` registers (default: none).

        ``op`` holds the registered operand beat element by element (:func:`hw.rtl.unpack`): ``op.act[i]``,
        ``op.weight[r][i]``, ``op.last``; reuse these Values rather than slicing the payload again."""
        return op

    def _terms(self, m: Module, op) -> dict:
        """``{channel: [[term per lane] per row]}`` for per-row channels, ``{channel: [terms]}`` for shared."""
        raise NotImplementedError

    def _finish(self, m: Module, totals: dict, extra) -> dict:
        """Result field values from the registered channel totals (``[value per row]`` or a value); ``extra`` is
        ``_carry`` of the ``last`` beat, delayed alongside."""
        raise NotImplementedError

    def _carry(self, op) -> Value | None:
        """An operand value the result stage needs from the ``last`` beat (delayed alongside valid/last);
        ``op`` is the operand register as a ``lib.data`` view."""
        return None

    # -- shared pipeline ----------------------------------------------------------------------------------

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

        elements = unpack(op.as_value(), p.operand_layout)
        view = self._prepare(m, elements, advance)
        terms = self._terms(m, view)

        # One tree per channel and row; every tree has the same depth and registers.
        sums = {}
        for ch in p.channels():
            def tree(ts, name, ch=ch):
                return pipelined_tree(m, ts, channel=ch, depth=p.tree_depth, registered_levels=p.registered_levels,
                                      enable=advance, name=name)
            if ch.per_row:
                sums[ch.name] = [tree(terms[ch.name][r], f"{ch.name}_r{r}") for r in range(p.rows)]
            else:
                sums[ch.name] = tree(terms[ch.name], ch.name)

        # valid/last (and what the result stage reads from the last beat) travel beside the data.
        stages = p.pre_stages + p.tree_stages
        tail_valid = delay(m, op_valid, stages, enable=advance, name="valid")
        tail_last = delay(m, elements.last, stages, enable=advance, name="last")
        carry = self._carry(op)
        tail_carry = delay(m, carry, stages, enable=advance, name="carry") if carry is not None else None

        # Accumulate; a `last` beat's totals go on to the result stage and the accumulators restart from zero.
        beats = -(-p.max_k // p.lanes)
        totals, updates, clears = {}, [], []
        for ch in p.channels():
            width = ch.acc_width(beats)

            def accumulate(value, name):
                acc = Signal(signed(width), name=name)
                total = Signal(signed(width), name=f"{name}_total")
                m.d.comb += total.eq(acc + value)
                updates.append(acc.eq(total))
                clears.append(acc.eq(0))
                return total
            if ch.per_row:
                totals[ch.name] = [accumulate(sums[ch.name][r], f"acc_{ch.name}_r{r}") for r in range(p.rows)]
            else:
                totals[ch.name] = accumulate(sums[ch.name], f"acc_{ch.name}")

        with m.If(advance):
            with m.If(tail_valid & tail_last):
                m.d.sync += clears
            with m.Elif(tail_valid):
                m.d.sync += updates

        # The finished totals are registered before the result arithmetic (2·popcount − n, sums of channels, signs),
        # so no path runs an accumulator adder and the result logic in one cycle.
        done = tail_valid & tail_last
        final_valid = Signal(name="final_valid")
        finals = {}
        loads = []
        for ch in p.channels():
            width = ch.acc_width(beats)
            if ch.per_row:
                regs = [Signal(signed(width), name=f"final_{ch.name}_r{r}") for r in range(p.rows)]
                loads += [reg.eq(total) for reg, total in zip(regs, totals[ch.name])]
            else:
                regs = Signal(signed(width), name=f"final_{ch.name}")
                loads.append(regs.eq(totals[ch.name]))
            finals[ch.name] = regs
        final_carry = None
        if tail_carry is not None:
            final_carry = Signal.like(tail_carry, name="final_carry")
            loads.append(final_carry.eq(tail_carry))
        with m.If(advance):
            m.d.sync += final_valid.eq(done)
            with m.If(done):
                m.d.sync += loads

        fields = self._finish(m, finals, final_carry)
        self._result_stage(m, fields, final_valid, advance, final_carry)
        return m

    def _result_stage(self, m: Module, fields: dict, done: Value, advance: Value, carry: Value | None) -> None:
        """Load the result register from the finished fields when a reduction completes."""
        payload = self.result.payload
        loads = []
        for name, value in fields.items():
            target = getattr(payload, name)
            loads += _assign(target, value)
        with m.If(advance):
            with m.If(done):
                m.d.sync += loads
            m.d.sync += self.result.valid.eq(done)


def _assign(target, value) -> list:
    """Assignments of a (nested) list of values to an ArrayLayout view of the same shape."""
    if isinstance(value, (list, tuple)):
        out = []
        for i, v in enumerate(value):
            out += _assign(target[i], v)
        return out
    return [target.eq(value)]


# -- ternary-mac -----------------------------------------------------------------------------------------------

class TernaryMacEngine(StreamEngine):
    """{-1, 0, +1} weights × signed activations. A lane term is ``x``, ``~x`` or 0 as the weight is +1, −1 or 0:
    ``-x`` is ``~x`` plus one, and the plus-ones are counted in a second, 1-bit-per-lane channel (``neg``), so no
    lane has a negation adder, and ``~x`` is formed once per lane for all rows. With ``zero_skip`` each lane's term
    is registered behind a clock enable that is low for a zero weight (a zero weight toggles no register), and a
    registered non-zero flag masks the held value."""

    params_class = TernaryMacParams

    @staticmethod
    def _inverted(m: Module, acts: list[Value]) -> list[Value]:
        """``~x`` of every lane as a named signal: an expression would be lowered again for every row that uses it
        (Amaranth rebuilds expression trees before lowering, so only signals are shared)."""
        inverted = []
        for lane, act in enumerate(acts):
            inv = Signal.like(act, name=f"inv_l{lane}")
            m.d.comb += inv.eq(~act)
            inverted.append(inv)
        return inverted

    @staticmethod
    def _lane(act: Value, inverted: Value, code: Value) -> tuple[Value, Value]:
        """(main term, neg term) of one lane: bit 0 of the code is "non-zero", bit 1 "negate"; ``inverted`` is
        ``~act``. (Selects rather than XOR/AND masks: the same logic, a third less for Amaranth to lower.)"""
        nz, neg = code[0], code[1]
        return Mux(nz, Mux(neg, inverted, act), 0), neg & nz

    def _prepare(self, m, op, advance):
        p = self._params
        if not p.zero_skip:
            return op
        gated = {"main": [], "neg": []}
        inverted = self._inverted(m, op.act)
        for r in range(p.rows):
            mains, negs = [], []
            for lane in range(p.lanes):
                main, neg = self._lane(op.act[lane], inverted[lane], op.weight[r][lane])
                nz = Signal(name=f"nz_r{r}_l{lane}")
                reg = Signal(signed(p.act_bits), name=f"term_r{r}_l{lane}")
                neg_reg = Signal(name=f"neg_r{r}_l{lane}")
                with m.If(advance):
                    m.d.sync += nz.eq(op.weight[r][lane][0])
                    # The clock enable: a zero weight loads nothing, so its register does not toggle; the
                    # registered non-zero flag masks the stale value.
                    with m.If(op.weight[r][lane][0]):
                        m.d.sync += [reg.eq(main), neg_reg.eq(neg)]
                mains.append(_masked(reg, nz))
                negs.append(neg_reg & nz)
            gated["main"].append(mains)
            gated["neg"].append(negs)
        return gated

    def _terms(self, m, view):
        p = self._params
        if p.zero_skip:
            return view
        main, neg = [], []
        inverted = self._inverted(m, view.act)
        for r in range(p.rows):
            lanes = [self._lane(view.act[lane], inverted[lane], view.weight[r][lane]) for lane in range(p.lanes)]
            main.append([t for t, _ in lanes])
            neg.append([n for _, n in lanes])
        return {"main": main, "neg": neg}

    def _finish(self, m, totals, extra):
        return {"acc": [a + n for a, n in zip(totals["main"], totals["neg"])]}


# -- xnor-popcount ------------------------------------------------------------------------------------------------

class XnorPopcountEngine(StreamEngine):
    """±1 × ±1 by XNOR and popcount; ``dot = 2·popcount − n`` and optionally BiBERT's ``bool(dot)``."""

    params_class = XnorPopcountParams

    def _xnor(self, act: Value, weight: Value, row: int, lane: int) -> Value:
        return ~(act ^ weight)

    def _terms(self, m, op):
        p = self._params
        pc = [[self._xnor(op.act[lane], op.weight[r][lane], r, lane) for lane in range(p.lanes)]
              for r in range(p.rows)]
        return {"pc": pc, "n": [op.n_valid]}

    def _finish(self, m, totals, extra):
        p = self._params
        dots = [(pc << 1) - totals["n"] for pc in totals["pc"]]
        out = {"dot": dots}
        if p.threshold == "strict":
            out["bit"] = [d > 0 for d in dots]
        elif p.threshold == "nonstrict":
            out["bit"] = [d >= 0 for d in dots]
        return out


# -- bamm -------------------------------------------------------------------------------------------------------

class BammEngine(StreamEngine):
    """BiBERT's attention bits × sign(V), by AND-popcount or by XNOR-popcount plus the column sum of V."""

    params_class = BammParams

    def _terms(self, m, op):
        p = self._params
        if p.identity == "and":
            return {"and": [[op.a[lane] & op.v[r][lane] for lane in range(p.lanes)] for r in range(p.rows)],
                    "a": [op.a[lane] for lane in range(p.lanes)]}
        return {"xnor": [[~(op.a[lane] ^ op.v[r][lane]) for lane in range(p.lanes)] for r in range(p.rows)],
                "v": [[op.v[r][lane] for lane in range(p.lanes)] for r in range(p.rows)],
                "n": [op.n_valid]}

    def _finish(self, m, totals, extra):
        p = self._params
        if p.identity == "and":
            counts = [(c << 1) - totals["a"] for c in totals["and"]]
        else:
            counts = [x + v - totals["n"] for x, v in zip(totals["xnor"], totals["v"])]
        signs = [Mux(c > 0, 1, Mux(c < 0, -1, p.zero_sign)) for c in counts]
        return {"count": counts, "sign": signs}


# -- binary-basis ----------------------------------------------------------------------------------------------

class BinaryBasisEngine(StreamEngine):
    """Adder-only sums of multi-bit activations under binary bases (QBB) or BiLLM's groups.

    Every signed sum is ``2·(masked sum) − (plain sum)``: lane terms are activations ANDed with a bit, never
    negated. With ``lut_group`` μ the engine first builds, for every group of μ lanes, the 2^μ partial sums of
    its activations (a registered LUT shared by all bases and rows), and each basis row then selects one entry per
    group by its μ bits. With ``scale_bits`` the result stage multiplies the N sums of a row by their
    fixed-point scales (read from the ``last`` beat) and adds them: N multiplications per output.
    """

    params_class = BinaryBasisParams

    def _carry(self, op):
        return op.alpha.as_value() if self._params.scale_bits else None

    def _prepare(self, m, op, advance):
        p = self._params
        if not p.lut_group:
            return op
        mu = p.lut_group
        width = p.act_bits + mu.bit_length()
        luts = []
        for g in range(p.lanes // mu):
            entries = []
            for pattern in range(1 << mu):
                e = Signal(signed(width), name=f"lut_g{g}_p{pattern}")
                value = 0
                for k in range(mu):
                    if pattern >> k & 1:
                        value = value + op.act[g * mu + k]
                with m.If(advance):
                    m.d.sync += e.eq(value)
                entries.append(e)
            luts.append(Array(entries))
        # The bases wait one cycle beside the LUT build; unpacked again, element by element.
        field = p.operand_layout["bases"]
        flat = [op.bases[i][r][lane] for i in range(p.n_bases) for r in range(p.rows) for lane in range(p.lanes)]
        bases = Signal(field.width, name="bases_d")
        with m.If(advance):
            m.d.sync += bases.eq(Cat(*flat))
        delayed = unpack(bases, PayloadLayout.sequential(("bases", 1, False, field.shape)))
        return {"luts": luts, "bases": delayed.bases}

    def _terms(self, m, op):
        p = self._params
        if p.mode == "bases" and p.lut_group:
            mu, luts, bases = p.lut_group, op["luts"], op["bases"]
            out = {}
            for i in range(p.n_bases):
                out[f"p{i}"] = [[luts[g][Cat(*bases[i][r][g * mu:(g + 1) * mu])]
                                 for g in range(len(luts))] for r in range(p.rows)]
            out["total"] = [lut[(1 << mu) - 1] for lut in luts]
            return out
        x = [op.act[lane] for lane in range(p.lanes)]
        if p.mode == "bases":
            out = {f"p{i}": [[_masked(x[lane], op.bases[i][r][lane]) for lane in range(p.lanes)]
                             for r in range(p.rows)] for i in range(p.n_bases)}
            out["total"] = x
            return out
        out = {}
        for gi, g in enumerate(BILLM_GROUPS):
            member = [[op.group[r][lane] == gi for lane in range(p.lanes)] for r in range(p.rows)]
            out[f"p_{g}"] = [[_masked(x[lane], member[r][lane] & op.sign[r][lane]) for lane in range(p.lanes)]
                             for r in range(p.rows)]
            out[f"m_{g}"] = [[_masked(x[lane], member[r][lane]) for lane in range(p.lanes)] for r in range(p.rows)]
        out["p_salient_o2"] = [[_masked(x[lane], (op.group[r][lane] == 2) & op.sign2[r][lane])
                                for lane in range(p.lanes)] for r in range(p.rows)]
        return out

    def _finish(self, m, totals, extra):
        p = self._params
        if p.mode == "billm":
            sums = [[(totals[f"p_{g}"][r] << 1) - totals[f"m_{g}"][r] for r in range(p.rows)] for g in BILLM_GROUPS]
            sums.append([(totals["p_salient_o2"][r] << 1) - totals["m_salient"][r] for r in range(p.rows)])
            return {"sums": sums, "means": [[totals[f"m_{g}"][r] for r in range(p.rows)] for g in BILLM_GROUPS]}
        sums = [[(totals[f"p{i}"][r] << 1) - totals["total"] for r in range(p.rows)] for i in range(p.n_bases)]
        return {"sums": sums}

    def _result_stage(self, m, fields, done, advance, carry):
        p = self._params
        if not p.scale_bits:
            return super()._result_stage(m, fields, done, advance, carry)
        # Post-stage: register the sums and the scales, then N multiplications and an add per output.
        alpha_layout = self.operand.payload.shape()["alpha"].shape
        sums_reg = [[Signal(signed(p.acc_width), name=f"sum_b{i}_r{r}") for r in range(p.rows)]
                    for i in range(p.n_bases)]
        alpha_reg = Signal(alpha_layout, name="alpha_reg")
        post_valid = Signal()
        alpha_in = carry
        with m.If(advance):
            m.d.sync += post_valid.eq(done)
            with m.If(done):
                m.d.sync += [alpha_reg.eq(alpha_in)]
                for i in range(p.n_bases):
                    for r in range(p.rows):
                        m.d.sync += sums_reg[i][r].eq(fields["sums"][i][r])
        y = []
        for r in range(p.rows):
            acc = 0
            for i in range(p.n_bases):
                acc = acc + alpha_reg[i][r] * sums_reg[i][r]
            y.append(acc)
        loads = _assign(self.result.payload.sums, sums_reg) + _assign(self.result.payload.y, y)
        with m.If(advance):
            with m.If(post_valid):
                m.d.sync += loads
            m.d.sync += self.result.valid.eq(post_valid)


# -- int8-mac ---------------------------------------------------------------------------------------------------

class Int8MacEngine(StreamEngine):
    """Signed × signed multiply-accumulate (the baseline every report compares with)."""

    params_class = Int8MacParams

    def _terms(self, m, op):
        p = self._params
        return {"main": [[op.act[lane] * op.weight[r][lane] for lane in range(p.lanes)] for r in range(p.rows)]}

    def _finish(self, m, totals, extra):
        return {"acc": totals["main"]}


ENGINES = {cls.params_class.kind: cls for cls in (TernaryMacEngine, XnorPopcountEngine, BammEngine,
                                                   BinaryBasisEngine, Int8MacEngine)}
