"""The compute queue's MATMUL unit: a feeder that reads each beat's operands from the buffers, the stream engines
(``hw.engine``, the verified units), and a writer of their result records — with exactly the cycles of docs/isa.md
§4.2.

For a MATMUL started (set up) in cycle ``s`` with ``B`` beats every ``ii`` cycles, in (row block, token, chunk)
order as the engines' beat schedule has them:

* beat ``b`` reads in cycles ``s + 1 + b·ii + j`` (``j < ii``): on each of the activation buffer's ``ports`` run
  readers a line of the beat's activations, and on each of the weight buffer's a line of its weight-tile beat
  image (``ENG``: the weight-side fields of the operand payload, packed as the engine takes them);
* what a read returns is registered into the beat's assembly registers the cycle after; the cycle after the last
  of them, the beat goes to the engine (activation lanes past ``k`` replaced by the unit's padding, ``n_valid``
  and ``last`` added);
* the engine's result for a (row block, token) comes ``latency`` cycles after its ``last`` beat (the unit's
  contract) and is written that cycle as ``rows × words`` I32 records (each field's elements, sign- or
  zero-extended);
* the next MATMUL may set up in this one's last read cycle; a MATMUL's ``push_prev`` counts from the cycle after
  its last read, its ``push_next`` from the cycle after its last result is written, in program order.
"""

import itertools

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from hw.engine import ENGINES
from hw.rtl import unpack

from .memory import RunRead, RunWrite
from .plan import AccelPlan

__all__ = ["MatmulUnit"]

#: MATMULs in flight (set up, results not all written) the unit tracks; more than the deepest engine pipeline
#: can hold at one beat per MATMUL.
INFLIGHT = 64


class MatmulUnit(wiring.Component):
    """Ports: ``start`` with the decoded fields (``engine``, ``w_buf``, ``w``, ``a``, ``r`` byte offsets, ``m``,
    ``k``, ``n``, ``astride``, the two push flags); ``accept`` (a start may happen this cycle), ``idle`` (nothing in
    flight: registered), ``push_prev_now``/``push_next_now`` (token counts, 0 … fed engines); run readers
    ``rd_w{p}`` (weights buffer), ``rd_k{p}`` (kv), ``rd_a{p}`` (activations); one run writer ``wr{e}`` per fed
    engine (activations)."""

    def __init__(self, plan: AccelPlan, addr_bits: dict):
        # a MATMUL leaves the feeder at least a cycle after the one before, and its last result comes latency + 2
        # cycles after its last read: at most latency + 3 are in flight
        deepest = max((e.params.latency for e in plan.fed), default=0)
        if deepest + 4 > INFLIGHT:
            raise ValueError(f"an engine latency of {deepest} cycles leaves more MATMULs in flight than the {INFLIGHT} "
                             f"the MATMUL unit tracks")
        self.plan = plan
        d = plan.design
        self.fed = plan.fed
        self.ports = {name: d.buffers[name].ports for name in ("weights", "activations", "kv")}
        lines = {b.name: b.line_bytes for b in plan.buffers}
        self.lines = lines
        members = {
            "start": In(1), "engine": In(8), "w_buf": In(2), "w": In(28), "a": In(28), "r": In(28),
            "m": In(16), "k": In(32), "n": In(16), "astride": In(16), "push_prev": In(1), "push_next": In(1),
            "accept": Out(1), "idle": Out(1),
            "push_prev_now": Out(1), "push_next_now": Out(range(len(self.fed) + 2)),
        }
        for tag, name in (("w", "weights"), ("k", "kv"), ("a", "activations")):
            for p in range(self.ports[name]):
                members[f"rd_{tag}{p}"] = Out(RunRead(addr_bits[name], lines[name]))
        for e in self.fed:
            members[f"wr{e.index}"] = Out(RunWrite(addr_bits["activations"], lines["activations"]))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        plan, design = self.plan, self.plan.design
        fed = self.fed
        if not fed:                      # no engine to feed: never busy; MATMULs are refused before a run
            m.d.comb += [self.accept.eq(1), self.idle.eq(1)]
            return m
        La, Lw, Lk = self.lines["activations"], self.lines["weights"], self.lines["kv"]
        Pa, Pw, Pk = self.ports["activations"], self.ports["weights"], self.ports["kv"]
        A = max(e.act_bytes for e in fed)
        W = max(e.image_bytes for e in fed)

        # -- the latched MATMUL -------------------------------------------------------------------------------------
        busy = Signal()
        eng, wsel = Signal(8, name="eng"), Signal(name="wsel")     # wsel: weights from kv
        m_, k_, n_ = Signal(16, name="mm_m"), Signal(32, name="mm_k"), Signal(16, name="mm_n")
        w_rb, w_cur, a_t, a_cur, a_base, r_base = (Signal(28, name=x) for x in
                                                   ("w_rb", "w_cur", "a_t", "a_cur", "a_base", "r_base"))
        astride = Signal(32, name="astride")
        rb, t, c, j = Signal(16, name="rb"), Signal(16, name="tok"), Signal(32, name="chunk"), Signal(8, name="j")
        kc, rbr = Signal(32, name="kc"), Signal(17, name="rbr")     # c·lanes, rb·rows
        pp_flag, pn_flag = Signal(name="pp_flag"), Signal(name="pn_flag")
        seq_head, seq_tail = Signal(range(INFLIGHT)), Signal(range(INFLIGHT))   # next to complete / next to issue
        seq_cur = Signal(range(INFLIGHT))            # the latched MATMUL's sequence number
        # per-engine constants of the latched engine, registered at set-up (a combinational case on the latched
        # engine number would start as X in an event-driven simulator: nothing changes to evaluate it)
        lanes, rows, abytes, wbytes, ii, words = (Signal(32, name=f"sel_{x}") for x in
                                                  ("lanes", "rows", "abytes", "wbytes", "ii", "words"))
        with m.If(self.start):
            with m.Switch(self.engine):
                for e in fed:
                    with m.Case(e.index):
                        # the beat interval: the reads' (Accelerator.beat_ii), stretched to ceil(w / chunks) when a
                        # result (w write cycles) would come before the one before is written
                        # (Accelerator.matmul_ii): chunks = ceil(k / lanes) < w only for k <= (w - 1)·lanes
                        w_ = e.write_cycles(design)
                        stretch = Const(1, 32)
                        for c_ in reversed(range(1, w_)):
                            stretch = Mux(self.k <= c_ * e.params.lanes, -(-w_ // c_), stretch)
                        base = Mux(self.w_buf == 2, e.ii(design, 2), e.ii(design, 0))
                        m.d.sync += [lanes.eq(e.params.lanes), rows.eq(e.params.rows), abytes.eq(e.act_bytes),
                                     wbytes.eq(e.image_bytes), words.eq(e.words),
                                     ii.eq(Mux(stretch > base, stretch, base))]

        last_read = busy & (j == ii - 1)
        last_chunk = kc + lanes >= k_
        last_token = t + 1 == m_
        last_block = rbr + rows >= n_
        final = last_read & last_chunk & last_token & last_block        # the MATMUL's last read cycle
        m.d.comb += self.accept.eq(~busy | final)

        # set-up
        with m.If(self.start):
            # the packed activation row (astride 0): k elements as stored, rounded up to bytes
            mem_bits = Signal(8)
            with m.Switch(self.engine):
                for e in fed:
                    with m.Case(e.index):
                        m.d.comb += mem_bits.eq(e.act_mem_bits)
            packed = (self.k * mem_bits + 7) >> 3
            m.d.sync += [busy.eq(1), eng.eq(self.engine), wsel.eq(self.w_buf == 2), m_.eq(self.m), k_.eq(self.k),
                         n_.eq(self.n), w_rb.eq(self.w), w_cur.eq(self.w), a_base.eq(self.a), a_t.eq(self.a),
                         a_cur.eq(self.a), r_base.eq(self.r), astride.eq(Mux(self.astride != 0, self.astride, packed)),
                         rb.eq(0), t.eq(0), c.eq(0), j.eq(0), kc.eq(0), rbr.eq(0),
                         pp_flag.eq(self.push_prev), pn_flag.eq(self.push_next), seq_cur.eq(seq_tail)]
        with m.Elif(busy):
            with m.If(j != ii - 1):
                m.d.sync += j.eq(j + 1)
            with m.Else():
                m.d.sync += j.eq(0)
                with m.If(~last_chunk):
                    m.d.sync += [c.eq(c + 1), kc.eq(kc + lanes), w_cur.eq(w_cur + wbytes), a_cur.eq(a_cur + abytes)]
                with m.Elif(~last_token):
                    m.d.sync += [c.eq(0), kc.eq(0), t.eq(t + 1), w_cur.eq(w_rb), a_t.eq(a_t + astride),
                                 a_cur.eq(a_t + astride)]
                with m.Elif(~last_block):
                    m.d.sync += [c.eq(0), kc.eq(0), t.eq(0), rb.eq(rb + 1), rbr.eq(rbr + rows),
                                 w_rb.eq(w_cur + wbytes), w_cur.eq(w_cur + wbytes), a_t.eq(a_base), a_cur.eq(a_base)]
                with m.Else():
                    m.d.sync += busy.eq(0)

        # -- reads: slice s = j·ports + p of the beat's image / activations, a line each --------------------------
        def reads(tag, ports, line, base, total, enable):
            out = []
            for p in range(ports):
                rd = getattr(self, f"rd_{tag}{p}")
                off = (j * ports + p) * line
                m.d.comb += [rd.addr.eq(base + off), rd.en.eq(enable & (off < total))]
                out.append(rd)
            return out
        rw = reads("w", Pw, Lw, w_cur, wbytes, busy & ~wsel)
        rk = reads("k", Pk, Lk, w_cur, wbytes, busy & wsel)
        ra = reads("a", Pa, La, a_cur, abytes, busy)

        # stage D: the read data arrives; registered into the assembly registers at its slice
        d_valid, d_j, d_wsel = Signal(), Signal(8), Signal()
        m.d.sync += [d_valid.eq(busy), d_j.eq(j), d_wsel.eq(wsel)]
        img, act = Signal(8 * W), Signal(8 * A)
        max_j = max(-(-W // min(Pw * Lw, Pk * Lk)), -(-A // (Pa * La)))
        with m.If(d_valid):
            with m.Switch(d_j):
                for jj in range(max_j):
                    with m.Case(jj):
                        for p, rd in enumerate(rw):
                            lo = (jj * Pw + p) * Lw
                            if lo < W:
                                with m.If(~d_wsel):
                                    m.d.sync += img[8 * lo:8 * min(W, lo + Lw)].eq(rd.data[:8 * (min(W, lo + Lw) - lo)])
                        for p, rd in enumerate(rk):
                            lo = (jj * Pk + p) * Lk
                            if lo < W:
                                with m.If(d_wsel):
                                    m.d.sync += img[8 * lo:8 * min(W, lo + Lk)].eq(rd.data[:8 * (min(W, lo + Lk) - lo)])
                        for p, rd in enumerate(ra):
                            lo = (jj * Pa + p) * La
                            if lo < A:
                                m.d.sync += act[8 * lo:8 * min(A, lo + La)].eq(rd.data[:8 * (min(A, lo + La) - lo)])

        # the beat's facts, carried along: read stage → data stage → handshake stage
        def carried(*sigs):
            return ([Signal(len(s), name=f"beat{i}_d") for i, s in enumerate(sigs)],
                    [Signal(len(s), name=f"beat{i}_h") for i, s in enumerate(sigs)])
        beat_last = Signal()
        valid_lanes = Signal(32)
        res_addr = Signal(28)
        res_rows = Signal(17)
        mm_final = Signal()
        m.d.comb += [beat_last.eq(last_chunk), valid_lanes.eq(Mux(k_ - kc < lanes, k_ - kc, lanes)),
                     res_addr.eq(r_base + ((t * n_ + rbr) * words << 2)),
                     res_rows.eq(Mux(n_ - rbr < rows, n_ - rbr, rows)), mm_final.eq(final)]
        stage_r = [last_read, eng, beat_last, valid_lanes, res_addr, res_rows, mm_final, seq_cur]
        stage_d, stage_h = carried(*stage_r)
        m.d.sync += [dst.eq(src) for dst, src in zip(stage_d, stage_r)]
        m.d.sync += [dst.eq(src) for dst, src in zip(stage_h, stage_d)]
        h_valid, h_eng, h_last, h_lanes, h_addr, h_rows, h_final, h_seq = stage_h

        # push_prev: every operand of the MATMUL read (its last read cycle)
        m.d.comb += self.push_prev_now.eq(final & pp_flag)

        # -- the engines --------------------------------------------------------------------------------------------
        # MATMULs in flight, in program order: a sequence number each, done bits, the push_next flags
        n_flight = Signal(range(INFLIGHT + 1))
        done_bits = Signal(INFLIGHT)
        pn_bits = Signal(INFLIGHT)
        completes = []                                  # (valid, sequence number) of MATMULs whose last result lands
        for e in fed:
            p = e.params
            engine = ENGINES[p.kind](p)
            m.submodules[f"engine{e.index}"] = engine
            layout = p.operand_layout
            parts = []
            for f in layout.fields:
                if f.role == "activation":
                    pad = f.pad("lane")
                    lanes_v = []
                    for i in range(p.lanes):
                        raw = act[i * e.act_mem_bits:i * e.act_mem_bits + f.elem_width]
                        lanes_v.append(Mux(i < h_lanes, raw, Const(pad, f.elem_width)))
                    parts.append(Cat(*lanes_v))
                elif f.role == "valid_lanes":
                    parts.append(h_lanes[:f.width])
                elif f.role == "last":
                    parts.append(h_last)
            # the weight side: one contiguous run of the payload, exactly the beat image's bits
            wfields = [f for f in layout.fields if f.role not in ("activation", "valid_lanes", "last")]
            wbits = sum(f.width for f in wfields)
            first = min(f.offset for f in wfields)
            payload = Signal(layout.width, name=f"payload{e.index}")
            m.d.comb += payload[:first].eq(parts[0])
            # lanes past k carry the unit's padding, whatever the tile holds there (a tile may be read as a
            # shorter reduction than it was made for)
            elems = []
            for f in wfields:
                pad = f.pad("lane") if "lane" in f.axes else None
                for index in itertools.product(*(range(n) for n in f.shape)):
                    lo = f.bit_offset(*index) - first
                    bits = img[lo:lo + f.elem_width]
                    if pad is not None:
                        bits = Mux(index[f.axes.index("lane")] < h_lanes, bits, Const(pad, f.elem_width))
                    elems.append(bits)
            m.d.comb += payload[first:first + wbits].eq(Cat(*elems))
            rest = Cat(*parts[1:])
            m.d.comb += payload[first + wbits:].eq(rest)
            m.d.comb += [engine.operand.payload.eq(payload), engine.operand.valid.eq(h_valid & (h_eng == e.index)),
                         engine.result.ready.eq(1)]

            # where each result goes: (address, rows, final-of-its-MATMUL, sequence), queued at the last beat
            depth = p.latency + 4
            qa = memory.Memory(shape=28 + 17 + 1 + len(seq_tail), depth=depth, init=[])
            m.submodules[f"resq{e.index}"] = qa
            qw, qr = qa.write_port(), qa.read_port(domain="comb")
            wp, rp = Signal(range(depth), name=f"resq{e.index}_w"), Signal(range(depth), name=f"resq{e.index}_r")
            push = h_valid & (h_eng == e.index) & h_last
            m.d.comb += [qw.addr.eq(wp), qw.data.eq(Cat(h_addr, h_rows, h_final, h_seq)), qw.en.eq(push),
                         qr.addr.eq(rp)]
            with m.If(push):
                m.d.sync += wp.eq(Mux(wp == depth - 1, 0, wp + 1))
            got = engine.result.valid
            with m.If(got):
                m.d.sync += rp.eq(Mux(rp == depth - 1, 0, rp + 1))
            q_addr, q_rows, q_final, q_seq = qr.data[:28], qr.data[28:45], qr.data[45], qr.data[46:]

            # the records: row r's words, each field's elements other than the row axis, I32 each
            res = unpack(engine.result.payload.as_value(), p.result_layout)
            words_v = []
            for r in range(p.rows):
                for f in p.result_layout.fields:
                    elems = _row_elements(getattr(res, f.name), f, r)
                    words_v.extend(elems)
            rec = Cat(*[_i32(w_) for w_ in words_v])
            wr = getattr(self, f"wr{e.index}")
            nbytes = Signal(range(e.record_bytes + 1), name=f"res{e.index}_bytes")
            m.d.comb += nbytes.eq(q_rows * (e.words * 4))
            if e.record_bytes <= La:                      # a whole result in one line write
                m.d.comb += [wr.en.eq(got), wr.addr.eq(q_addr), wr.count.eq(nbytes), wr.data.eq(rec)]
                completes.append((got & q_final, q_seq))
                continue
            # wider than a line: its first line now, the rest a line a cycle from a holding register (the next
            # result comes no sooner than they are all written: Accelerator.matmul_ii)
            hold = Signal(8 * e.record_bytes, name=f"res{e.index}_hold")
            h_at, h_left = Signal(28, name=f"res{e.index}_at"), Signal(range(e.record_bytes + 1),
                                                                       name=f"res{e.index}_left")
            h_fin, h_sq = Signal(name=f"res{e.index}_fin"), Signal(len(seq_tail), name=f"res{e.index}_seq")
            holding = h_left != 0
            with m.If(got):
                m.d.comb += [wr.en.eq(1), wr.addr.eq(q_addr), wr.count.eq(Mux(nbytes > La, La, nbytes)),
                             wr.data.eq(rec[:8 * La])]
                m.d.sync += [hold.eq(rec >> (8 * La)), h_at.eq(q_addr + La),
                             h_left.eq(Mux(nbytes > La, nbytes - La, 0)), h_fin.eq(q_final), h_sq.eq(q_seq)]
            with m.Elif(holding):
                m.d.comb += [wr.en.eq(1), wr.addr.eq(h_at), wr.count.eq(Mux(h_left > La, La, h_left)),
                             wr.data.eq(hold[:8 * La])]
                m.d.sync += [hold.eq(hold >> (8 * La)), h_at.eq(h_at + La),
                             h_left.eq(Mux(h_left > La, h_left - La, 0))]
            completes.append((got & q_final & (nbytes <= La), q_seq))
            completes.append((~got & holding & (h_left <= La) & h_fin, h_sq))

        # -- in-order completion of MATMULs -------------------------------------------------------------------------
        set_bits = Signal(INFLIGHT)
        for v, sq in completes:
            with m.If(v):
                m.d.comb += set_bits.bit_select(sq, 1).eq(1)
        bits_now = Signal(INFLIGHT)
        m.d.comb += bits_now.eq(done_bits | set_bits)
        # advance over up to len(fed) consecutive done entries from the head (a cycle can finish that many)
        adv, pushes = Signal(range(len(fed) + 2)), Signal(range(len(fed) + 2))
        ok = Const(1)
        cnt_adv, cnt_push = [], []
        for i in range(len(fed)):
            idx = (seq_head + i) % INFLIGHT
            ok = ok & (n_flight > i) & bits_now.bit_select(idx, 1)
            cnt_adv.append(ok)
            cnt_push.append(ok & pn_bits.bit_select(idx, 1))
        m.d.comb += [adv.eq(sum(cnt_adv)), pushes.eq(sum(cnt_push)), self.push_next_now.eq(pushes)]
        clear = Signal(INFLIGHT)
        m.d.comb += clear.eq(0)
        for i in range(len(fed)):
            idx = (seq_head + i) % INFLIGHT
            with m.If(cnt_adv[i]):
                m.d.comb += clear.bit_select(idx, 1).eq(1)
        m.d.sync += done_bits.eq(bits_now & ~clear)
        m.d.sync += seq_head.eq((seq_head + adv) % INFLIGHT)
        started = self.start
        with m.If(started):
            m.d.sync += [seq_tail.eq((seq_tail + 1) % INFLIGHT),
                         pn_bits.eq((pn_bits & ~(Const(1, INFLIGHT) << seq_tail)) |
                                    (self.push_next.as_unsigned() << seq_tail))]
        m.d.sync += n_flight.eq(n_flight + started - adv)
        m.d.comb += self.idle.eq((n_flight == 0) & ~busy)
        return m


def _i32(v):
    """A record word: ``v`` sign- or zero-extended (or cut) to 32 bits."""
    return v.as_signed()[:32] if len(v) >= 32 else Cat(v, v[-1].replicate(32 - len(v))) if v.shape().signed \
        else Cat(v, Const(0, 32 - len(v)))


def _row_elements(tree, f, r: int) -> list:
    """The elements of field ``f`` for output row ``r``, other axes row-major (``tree`` as ``hw.rtl.unpack`` nests
    them, in ``f.axes`` order)."""
    if "row" not in f.axes:
        raise ValueError(f"result field {f.name} has no row axis")
    out = []

    def walk(node, axes, shape):
        if not axes:
            out.append(node)
            return
        if axes[0] == "row":
            walk(node[r], axes[1:], shape[1:])
        else:
            for i in range(shape[0]):
                walk(node[i], axes[1:], shape[1:])
    walk(tree, list(f.axes), list(f.shape))
    return out
