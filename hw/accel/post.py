"""The post unit: ``POST`` (docs/isa.md §3) on the buffers, element by element, with the integer semantics of
:mod:`models.intpost` bit for bit and the cycles of :meth:`hw.accelerator.PostUnitSpec.cycles`.

For a POST set up (started) in cycle ``c`` with ``E = rows·cols`` elements of ``S`` slots each
(:meth:`~hw.accelerator.PostUnitSpec.slots`), in row-major order:

* element ``e`` owns cycles ``c + 1 + e·S …``; in each slot it reads at most one 32-bit operand — a source
  element (I8, I16, I32, a B1 bit, or a record word), a coefficient, a bias, a row multiplier, a threshold, a row's
  absmax, the second operand, a table entry — on the buffer's first run reader (the MATMUL unit's, idle while a POST
  runs: the compute queue runs one at a time); the operand is there the slot after, where it is latched or
  accumulated;
* the element completes in the cycle after its last slot (its output saturated to the output format; B1 outputs
  are gathered into a byte, written when it is full or the row ends, the rest of the byte zero as
  ``numpy.packbits`` pads); the write goes out ``latency`` cycles later on the unit's own run writer of the
  destination buffer;
* ``quantize`` spends its last 33 slots forming ``|x|·qmax`` and dividing it by the row's absmax, one quotient bit a
  cycle (restoring division: no divider block), then rounds half to even on the remainder;
* the POST's last cycle is its last write's: ``c + 1 + E·S + latency``; its token pushes count from the cycle
  after.

Every intermediate is a signed 64-bit value, as ``models.intpost`` bounds them (it refuses any operand whose
worst case could reach 2^62, so the programs the simulator runs never overflow here).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.accelerator import POST_DIVIDE_STEPS, PostUnitSpec
from isa.spec import BUFFER_SHIFT, BUFFERS, FORMATS, POST_FUNCTIONS
from models import intpost

from .memory import RunRead, RunWrite
from .plan import POST_WRITES, AccelPlan, instruction_field

__all__ = ["PostUnit", "WRITES"]

#: Buffers the post unit writes (:data:`hw.accel.plan.POST_WRITES`).
WRITES = POST_WRITES

_FN = POST_FUNCTIONS
_I8, _I16, _I32, _B1 = (FORMATS[f] for f in ("I8", "I16", "I32", "B1"))
#: Saturation bounds of each output format: models.intpost's, the one definition.
_RANGES = {FORMATS[name]: intpost.FORMATS[name] for name in ("I8", "I16", "I32", "B1")}

# what a slot reads (the role of its operand when it arrives)
NONE, REC, COEF, ROWMUL, BIAS, SRC, THR, AM, Y, TABLE = range(10)


def _round_shift(m, x, s, name: str, *, half_up: bool = False):
    """``x / 2^s`` rounded half to even (models.intpost.round_shift) of a signed value, ``0 <= s <= 62``
    (``half_up``: ties up instead — a planted bug, for the tests that must catch it)."""
    q = Signal(signed(len(x)), name=f"{name}_q")
    m.d.comb += q.eq(x.as_signed() >> s)
    mask = Signal(64, name=f"{name}_mask")              # 2^s − 1, by a right shift (a left one would widen)
    amount = Signal(7, name=f"{name}_amount")
    m.d.comb += amount.eq(64 - s)
    m.d.comb += mask.eq(Const((1 << 64) - 1, 64) >> amount)
    r = Signal(64, name=f"{name}_r")
    m.d.comb += r.eq(x[:64] & mask)
    half = Signal(64, name=f"{name}_half")
    m.d.comb += half.eq((mask >> 1) + 1)
    up = (s != 0) & ((r > half) | ((r == half) & (1 if half_up else q[0])))
    out = Signal(signed(len(x) + 1), name=name)
    m.d.comb += out.eq(q + up)
    return out


class PostUnit(wiring.Component):
    """Ports: ``start`` with the instruction word ``ins`` (its POST fields, ``isa.spec``) and its two push flags;
    ``idle`` (registered), ``push_prev_now``/``push_next_now`` (the POST's last cycle); a run reader per buffer
    (``rd_weights``, ``rd_activations``, ``rd_kv``: the top shares each with the MATMUL unit's first) and a run
    writer per buffer of :data:`WRITES`."""

    def __init__(self, plan: AccelPlan, addr_bits: dict, lines: dict, *, round_half_up: bool = False):
        self.plan, self.round_half_up = plan, round_half_up
        self.latency = plan.design.post.latency
        members = {"start": In(1), "ins": In(256), "push_prev": In(1), "push_next": In(1),
                   "idle": Out(1), "push_prev_now": Out(1), "push_next_now": Out(1)}
        for name in BUFFERS:
            members[f"rd_{name}"] = Out(RunRead(addr_bits[name], lines[name]))
        for name in WRITES:
            members[f"wr_{name}"] = Out(RunWrite(addr_bits[name], lines[name]))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        ins = self.ins
        f = {name: instruction_field(ins, "POST", name) for name in
             ("fn", "out_fmt", "in_fmt", "words", "word", "src", "dst", "aux", "rows", "cols", "imm", "shift", "opts")}

        # -- set-up: the fields and what follows from them, registered in the start cycle ------------------------
        fn, out_fmt, in_fmt = Signal(8), Signal(4), Signal(4)
        W, word, rows, cols = Signal(8), Signal(8), Signal(16), Signal(16)
        imm, shift, opts = Signal(signed(32)), Signal(8), Signal(24)
        sbuf, dbuf_, abuf = Signal(2), Signal(2), Signal(2)
        es, src_row, bstride, out_row, osize = (Signal(32, name=n) for n in
                                                ("es", "src_row", "bstride", "out_row", "osize"))
        S, two_bw, cstep = (Signal(32, name=n) for n in ("slots", "two_bw", "cstep"))
        size = Signal(24)

        def fmt_bytes(fmt):
            return Mux(fmt == _I8, 1, Mux(fmt == _I16, 2, 4))

        is_comb = (f["fn"] == _FN["combine"]) | (f["fn"] == _FN["combine_rows"])
        blocks = Mux(is_comb & (f["opts"][:16] != 0), f["opts"][:16], 1)
        bw = Signal(32)
        m.d.comb += bw.eq(blocks * f["words"])
        s_es = Signal(32)
        m.d.comb += s_es.eq(f["words"] * fmt_bytes(f["in_fmt"]))
        s_row = Signal(32)
        m.d.comb += s_row.eq(Mux(f["in_fmt"] == _B1, (f["cols"] + 7) >> 3, f["cols"] * s_es))
        s_os = Signal(32)
        m.d.comb += s_os.eq(Mux(f["out_fmt"] == _B1, 1, fmt_bytes(f["out_fmt"])))
        # the slots of each function, as PostUnitSpec.slots states them (linear in blocks·words for the combines)
        slots = Const(1, 32)
        for name, code in _FN.items():
            one, two = PostUnitSpec.slots(name, 1, 1), PostUnitSpec.slots(name, 2, 1)
            slots = Mux(f["fn"] == code, (two - one) * bw + (2 * one - two) if one != two else one, slots)
        aux_off = f["aux"][:BUFFER_SHIFT]
        with m.If(self.start):
            m.d.sync += [fn.eq(f["fn"]), out_fmt.eq(f["out_fmt"]), in_fmt.eq(f["in_fmt"]), W.eq(f["words"]),
                         word.eq(f["word"]), rows.eq(f["rows"]), cols.eq(f["cols"]), imm.eq(f["imm"]),
                         shift.eq(f["shift"]), opts.eq(f["opts"]), size.eq(f["opts"]),
                         sbuf.eq(f["src"][BUFFER_SHIFT:BUFFER_SHIFT + 2]),
                         dbuf_.eq(f["dst"][BUFFER_SHIFT:BUFFER_SHIFT + 2]),
                         abuf.eq(f["aux"][BUFFER_SHIFT:BUFFER_SHIFT + 2]),
                         es.eq(s_es), src_row.eq(s_row), bstride.eq(f["rows"] * s_row), osize.eq(s_os),
                         out_row.eq(Mux(f["fn"] == _FN["absmax"], s_os,
                                        Mux(f["out_fmt"] == _B1, (f["cols"] + 7) >> 3, f["cols"] * s_os))),
                         S.eq(slots), two_bw.eq(2 * bw), cstep.eq(f["cols"] << 2)]

        # -- the walk: element (t, j), slot s ---------------------------------------------------------------------
        busy, run, tail = Signal(), Signal(), Signal(range(self.latency + 2))
        t, j, s = Signal(16), Signal(16), Signal(32)
        rowp, ep, orow, oe, cj, at, ap, rmp = (Signal(BUFFER_SHIFT, name=n) for n in
                                               ("rowp", "ep", "orow", "oe", "cj", "at", "ap", "rmp"))
        aux0 = Signal(BUFFER_SHIFT)
        rp, bp, cp = (Signal(BUFFER_SHIFT, name=n) for n in ("rp", "bp", "cp"))
        wcount = Signal(8)                  # record word of the next REC slot
        pp, pn = Signal(), Signal()
        m.d.comb += self.idle.eq(~busy)
        with m.If(self.start):
            src_off, dst_off = f["src"][:BUFFER_SHIFT], f["dst"][:BUFFER_SHIFT]
            m.d.sync += [busy.eq(1), run.eq(1), tail.eq(0), t.eq(0), j.eq(0), s.eq(0),
                         rowp.eq(src_off), ep.eq(src_off), rp.eq(src_off), bp.eq(src_off), wcount.eq(0),
                         orow.eq(dst_off), oe.eq(dst_off), aux0.eq(aux_off), cj.eq(aux_off), cp.eq(aux_off),
                         at.eq(aux_off), ap.eq(aux_off), rmp.eq(aux_off + ((f["cols"] * (bw + 1)) << 2)),
                         pp.eq(self.push_prev), pn.eq(self.push_next)]

        is_ = {name: fn == code for name, code in _FN.items()}
        combine = is_["combine"] | is_["combine_rows"]
        in_pairs = s < two_bw
        role = Signal(4)

        # pack: the weight tile's elements in image order (row block, chunk, row, lane), one a slot — a source
        # element where the matrix has one, the layout's padding elsewhere (hw.accel.plan.PackPlan)
        packs = {i: pk for i, pk in (self.plan.packs or {}).items() if not isinstance(pk, str)}
        pk_R, pk_L = Signal(16, name="pk_rows"), Signal(16, name="pk_lanes")
        pk_bits, pk_rpad, pk_lpad = Signal(4, name="pk_bits"), Signal(8, name="pk_rpad"), Signal(8, name="pk_lpad")
        pk_tr = Signal()
        out_rows, red = Signal(16), Signal(16)
        ob, qb, pr, pl = (Signal(17, name=n) for n in ("pk_ob", "pk_qb", "pk_r", "pk_l"))
        pk_src = Signal(BUFFER_SHIFT)
        with m.If(self.start):
            with m.Switch(f["opts"][:8]):
                for i, pk in packs.items():
                    with m.Case(i):
                        m.d.sync += [pk_R.eq(pk.rows), pk_L.eq(pk.lanes), pk_bits.eq(pk.bits),
                                     pk_rpad.eq(pk.row_pad), pk_lpad.eq(pk.lane_pad)]
            tr = f["opts"][8]
            m.d.sync += [pk_tr.eq(tr), out_rows.eq(Mux(tr, f["cols"], f["rows"])),
                         red.eq(Mux(tr, f["rows"], f["cols"])), ob.eq(0), qb.eq(0), pr.eq(0), pl.eq(0),
                         pk_src.eq(f["src"][:BUFFER_SHIFT])]
        po, pq = ob + pr, qb + pl
        pk_valid = (po < out_rows) & (pq < red)
        p_row, p_col = Mux(pk_tr, pq, po), Mux(pk_tr, po, pq)
        pk_addr = Signal(BUFFER_SHIFT)
        m.d.comb += pk_addr.eq(pk_src + p_row * src_row + Mux(in_fmt == _B1, p_col >> 3, p_col))
        pk_last_lane, pk_last_row = pl == pk_L - 1, pr == pk_R - 1
        pk_last_chunk, pk_last_block = qb + pk_L >= red, ob + pk_R >= out_rows
        pk_last = run & is_["pack"] & pk_last_lane & pk_last_row & pk_last_chunk & pk_last_block
        with m.If(run & is_["pack"]):
            with m.If(~pk_last_lane):
                m.d.sync += pl.eq(pl + 1)
            with m.Else():
                m.d.sync += pl.eq(0)
                with m.If(~pk_last_row):
                    m.d.sync += pr.eq(pr + 1)
                with m.Else():
                    m.d.sync += pr.eq(0)
                    with m.If(~pk_last_chunk):
                        m.d.sync += qb.eq(qb + pk_L)
                    with m.Else():
                        m.d.sync += [qb.eq(0), ob.eq(ob + pk_R)]

        with m.If(run):
            with m.If(is_["pack"]):
                m.d.comb += role.eq(Mux(pk_valid, SRC, NONE))
            with m.Elif(combine):
                with m.If(in_pairs):
                    m.d.comb += role.eq(Mux(s[0], COEF, REC))
                with m.Elif(is_["combine_rows"] & (s == two_bw)):
                    m.d.comb += role.eq(ROWMUL)
                with m.Else():
                    m.d.comb += role.eq(BIAS)
            with m.Elif(s == 0):
                m.d.comb += role.eq(SRC)
            with m.Elif(s == 1):
                m.d.comb += role.eq(Mux(is_["threshold"], THR, Mux(is_["quantize"], AM,
                                        Mux(is_["silu"], TABLE, Mux(is_["add"] | is_["mul"], Y, NONE)))))

        # the operand that arrives this cycle (the read of the cycle before)
        d_role, d_buf, d_bit, d_fmt = Signal(4), Signal(2), Signal(3), Signal(4)
        rd = {name: getattr(self, f"rd_{name}") for name in BUFFERS}
        raw = Signal(32)
        with m.Switch(d_buf):
            for name, code in BUFFERS.items():
                with m.Case(code):
                    m.d.comb += raw.eq(rd[name].data[:32])
        val = Signal(signed(33))                     # the arriving operand, as its format holds it
        with m.Switch(d_fmt):
            with m.Case(_I8):
                m.d.comb += val.eq(raw[:8].as_signed())
            with m.Case(_I16):
                m.d.comb += val.eq(raw[:16].as_signed())
            with m.Case(_B1):
                m.d.comb += val.eq(raw.bit_select(d_bit, 1))
            with m.Default():
                m.d.comb += val.eq(raw.as_signed())

        # silu: the table entry's address follows from x as it arrives
        x_rs = _round_shift(m, val, shift, "silu_rs")
        idx = Signal(signed(40))
        m.d.comb += idx.eq(x_rs - imm)
        inside = idx < size
        entry = Signal(24)
        m.d.comb += entry.eq(Mux(idx < 0, 0, Mux(inside, idx[:24], size - 1)))

        # -- reads --------------------------------------------------------------------------------------------------
        b1_in = in_fmt == _B1
        src_addr = Mux(b1_in, rowp + (j >> 3), ep + (word << 2))
        addr = Signal(BUFFER_SHIFT)
        rbuf = Signal(2)
        with m.Switch(role):
            with m.Case(REC):
                m.d.comb += [addr.eq(Mux(b1_in, rowp + (j >> 3), rp)), rbuf.eq(sbuf)]
            with m.Case(COEF, BIAS):
                m.d.comb += [addr.eq(cp), rbuf.eq(abuf)]
            with m.Case(ROWMUL):
                m.d.comb += [addr.eq(rmp), rbuf.eq(abuf)]
            with m.Case(SRC):
                m.d.comb += [addr.eq(Mux(is_["pack"], pk_addr, src_addr)), rbuf.eq(sbuf)]
            with m.Case(THR):
                m.d.comb += [addr.eq(cj), rbuf.eq(abuf)]
            with m.Case(AM):
                m.d.comb += [addr.eq(at), rbuf.eq(abuf)]
            with m.Case(Y):
                m.d.comb += [addr.eq(ap), rbuf.eq(abuf)]
            with m.Case(TABLE):
                m.d.comb += [addr.eq(aux0 + (entry << 2)), rbuf.eq(abuf)]
        for name, code in BUFFERS.items():
            m.d.comb += [rd[name].addr.eq(addr), rd[name].en.eq((role != NONE) & (rbuf == code))]
        m.d.sync += [d_role.eq(role), d_buf.eq(rbuf), d_bit.eq(Mux(is_["pack"], p_col[:3], j[:3])),
                     d_fmt.eq(Mux((role == SRC) | (role == REC), in_fmt, _I32))]

        # -- stepping -----------------------------------------------------------------------------------------------
        last_slot = run & (s == S - 1)
        last_col = j == cols - 1
        last_el = last_slot & last_col & (t == rows - 1)
        with m.If(run):
            with m.If(role == REC):
                with m.If(wcount == W - 1):
                    m.d.sync += [wcount.eq(0), bp.eq(bp + bstride), rp.eq(bp + bstride)]
                with m.Else():
                    m.d.sync += [wcount.eq(wcount + 1), rp.eq(rp + 4)]
            with m.If(role == COEF):
                m.d.sync += cp.eq(cp + cstep)
            with m.If(~last_slot):
                m.d.sync += s.eq(s + 1)
            with m.Else():
                m.d.sync += [s.eq(0), wcount.eq(0), ap.eq(ap + 4)]
                with m.If(Mux(is_["pack"], pk_last, last_el)):
                    m.d.sync += [run.eq(0)]
                with m.Elif(last_col):
                    nrow = rowp + src_row
                    m.d.sync += [j.eq(0), t.eq(t + 1), rowp.eq(nrow), ep.eq(nrow), rp.eq(nrow), bp.eq(nrow),
                                 orow.eq(orow + out_row), oe.eq(orow + out_row), cj.eq(aux0), cp.eq(aux0),
                                 at.eq(at + 4), rmp.eq(rmp + 4)]
                with m.Else():
                    m.d.sync += [j.eq(j + 1), ep.eq(ep + es), rp.eq(ep + es), bp.eq(ep + es), oe.eq(oe + osize),
                                 cj.eq(cj + 4), cp.eq(cj + 4)]
        with m.If(busy & ~run & ~self.start):
            m.d.sync += tail.eq(tail + 1)
        done_now = busy & ~run & (tail == self.latency)
        with m.If(done_now):
            m.d.sync += busy.eq(0)
        m.d.comb += [self.push_prev_now.eq(done_now & pp), self.push_next_now.eq(done_now & pn)]

        # the element's facts at its last slot, for its completion the cycle after
        fin, f_col, f_first, f_last, f_addr = Signal(), Signal(16), Signal(), Signal(), Signal(BUFFER_SHIFT)
        m.d.sync += fin.eq(last_slot)
        with m.If(last_slot):
            m.d.sync += [f_col.eq(Mux(is_["absmax"], 0, j)), f_first.eq(j == 0), f_last.eq(last_col),
                         f_addr.eq(Mux(is_["absmax"], orow, Mux(out_fmt == _B1, orow + (j >> 3), oe)))]
        d_first = Signal()                  # a COEF read in slot 1: the element's first (record, coefficient) pair
        m.d.sync += d_first.eq(s == 1)

        # -- the data path: what arrives is latched or accumulated, or completes the element -----------------------
        x, rec, acc = Signal(signed(33)), Signal(signed(33)), Signal(signed(64))
        amax, d, dk, rem, Q = Signal(33), Signal(32), Signal(64), Signal(64), Signal(32)
        ovf, silu_in = Signal(), Signal()
        prod = Signal(signed(66))
        m.d.comb += prod.eq(rec * val)
        n = Signal(64)
        m.d.comb += n.eq(Mux(x < 0, -x, x) * imm)
        with m.Switch(d_role):
            with m.Case(REC):
                m.d.sync += rec.eq(val)
            with m.Case(COEF):
                m.d.sync += acc.eq(Mux(d_first, prod, acc + prod))
            with m.Case(ROWMUL):
                m.d.sync += acc.eq((acc * val)[:64])
            with m.Case(SRC):
                m.d.sync += [x.eq(val), silu_in.eq(inside)]
            with m.Case(AM):
                m.d.sync += [d.eq(val), rem.eq(n), dk.eq(val[:32] << 31), Q.eq(0),
                             ovf.eq(n >= (val[:32] << 32))]
        with m.If(run & is_["quantize"] & (s >= PostUnitSpec.slots("quantize") - POST_DIVIDE_STEPS)):  # a bit a cycle
            ge = rem >= dk
            m.d.sync += [rem.eq(Mux(ge, rem - dk, rem)), Q.eq(Cat(ge, Q[:31])), dk.eq(dk >> 1)]

        # completion: one rounding, the function's value, saturation
        relu_v = Mux(val < 0, 0, val)
        pre = Signal(signed(68))
        with m.If(combine):
            m.d.comb += pre.eq(acc)
        with m.Elif(is_["requant"]):
            m.d.comb += pre.eq(val * imm)
        with m.Elif(is_["add"]):
            m.d.comb += pre.eq(x + val)
        with m.Elif(is_["mul"]):
            m.d.comb += pre.eq(x * val)
        with m.Elif(is_["relu"]):
            m.d.comb += pre.eq(relu_v)
        with m.Elif(is_["relu2"]):
            m.d.comb += pre.eq(relu_v * relu_v)
        rounded = _round_shift(m, pre, shift, "rs", half_up=self.round_half_up)
        mag_v = Mux(val < 0, -val, val)
        amax_new = Signal(33)
        m.d.comb += amax_new.eq(Mux(f_first | (mag_v > amax), mag_v, amax))
        two_r = Cat(Const(0, 1), rem)
        up = (two_r > d) | ((two_r == d) & Q[0])
        q_up = Signal(34)
        m.d.comb += q_up.eq(Q + up)
        qmax = imm.as_unsigned()
        mag = Mux(ovf | (q_up > qmax), qmax, q_up)
        ge_opt = opts[0]
        res = Signal(signed(72))
        with m.If(combine):
            m.d.comb += res.eq(rounded + val)
        with m.Elif(is_["threshold"]):
            m.d.comb += res.eq(Mux(ge_opt, x >= val, x > val))
        with m.Elif(is_["compare"]):
            m.d.comb += res.eq(Mux(ge_opt, val >= imm, val > imm))
        with m.Elif(is_["absmax"]):
            m.d.comb += res.eq(amax_new)
        with m.Elif(is_["quantize"]):
            m.d.comb += res.eq(Mux(d == 0, 0, Mux(x < 0, -mag, mag)))
        with m.Elif(is_["silu"]):
            m.d.comb += res.eq(Mux(silu_in, val, x))
        with m.Else():
            m.d.comb += res.eq(rounded)
        with m.If(fin & is_["absmax"]):
            m.d.sync += amax.eq(amax_new)
        sat = Signal(32)
        with m.Switch(out_fmt):
            for code, (lo, hi) in _RANGES.items():
                with m.Case(code):
                    m.d.comb += sat.eq(Mux(res < lo, lo, Mux(res > hi, hi, res))[:32])

        # -- the write: the element's value in its format; B1 gathered into its byte -------------------------------
        obits = Signal(8)
        pos = f_col[:3]
        byte = Signal(8)
        m.d.comb += byte.eq(Mux(pos == 0, 0, obits) | (sat[0] << pos)[:8])
        b1_out = out_fmt == _B1
        with m.If(fin & b1_out):
            m.d.sync += obits.eq(byte)
        w_en = fin & Mux(is_["absmax"], f_last, ~b1_out | (pos == 7) | f_last)
        w_count = Mux(b1_out | (out_fmt == _I8), 1, Mux(out_fmt == _I16, 2, 4))
        w_data = Mux(b1_out, byte, sat)
        # pack: each element's bits appended to a byte, written when it is full
        pk_d, pk_pad = Signal(), Signal(8)
        m.d.sync += [pk_d.eq(run & is_["pack"]), pk_pad.eq(Mux(po >= out_rows, pk_rpad, pk_lpad))]
        elem = Signal(8)
        m.d.comb += elem.eq(Mux(d_role == SRC, Mux(in_fmt == _B1, val[0], val[:8]), pk_pad) &
                            ((Const(1, 9) << pk_bits) - 1)[:8])
        pk_pos, pk_byte, pk_out = Signal(4), Signal(8), Signal(BUFFER_SHIFT)
        with m.If(self.start):
            m.d.sync += [pk_pos.eq(0), pk_out.eq(f["dst"][:BUFFER_SHIFT])]
        pk_new = Signal(8)
        m.d.comb += pk_new.eq(Mux(pk_pos == 0, 0, pk_byte) | (elem << pk_pos)[:8])
        pk_full = pk_pos + pk_bits == 8
        with m.If(pk_d):
            m.d.sync += [pk_byte.eq(pk_new), pk_pos.eq(Mux(pk_full, 0, pk_pos + pk_bits))]
            with m.If(pk_full):
                m.d.sync += pk_out.eq(pk_out + 1)
        stage = (Mux(is_["pack"], pk_d & pk_full, w_en), dbuf_, Mux(is_["pack"], pk_out, f_addr),
                 Mux(is_["pack"], 1, w_count), Mux(is_["pack"], pk_new, w_data))
        for k in range(self.latency):             # the pipeline's latency, as the description states it
            nxt = tuple(Signal.like(v, name=f"wr_{k}_{i}") for i, v in enumerate(stage))
            m.d.sync += [a.eq(b) for a, b in zip(nxt, stage)]
            stage = nxt
        en, buf, waddr, count, data = stage
        for name in WRITES:
            wr = getattr(self, f"wr_{name}")
            m.d.comb += [wr.en.eq(en & (buf == BUFFERS[name])), wr.addr.eq(waddr), wr.count.eq(count),
                         wr.data.eq(data)]
        return m
