"""The accelerator top: instruction memory, dispatch, the load / compute / store queues with their dependency
tokens, the on-chip buffers, one transfer engine per data-moving queue and the DRAM port.

Timing (docs/isa.md §4, which :mod:`sim.machine` implements; this module meets it cycle for cycle):

* **Dispatch** reads instruction ``i`` in cycle ``i`` (cycle 0 is the first fetch after ``run``) and appends its
  index to its queue's index FIFO — never stalling: each FIFO is as deep as the instruction memory. ``NOP`` is
  dropped, ``FINISH`` stops dispatch.
* **A queue** starts its head instruction in the first cycle in which it is dispatched (the FIFO is bypassed when
  empty), the queue is free and every token it pops is there; the pops take effect that cycle.
* **Tokens** are four counters, one per token queue (``isa.spec.TOKEN_ROUTES``: one pusher and one popper each).
  A push counts from the cycle after the instruction's last cycle — its done cycle — so no decision of one queue
  reaches another in the same cycle.
* ``SYNC`` takes its start cycle; a transfer is :class:`hw.accel.mover.Mover`'s.
* **The count**: ``cycles`` is the first cycle, at or after ``FINISH``'s dispatch, in which every queue is empty
  and idle — the latest done cycle, as the simulator counts.
"""

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from isa.spec import BUFFER_SHIFT, FLAG_BITS, OPCODES, QUEUES, TOKEN_QUEUES, TOKEN_ROUTES

from .memory import LineMemory
from .mover import Mover, dram_read_data, dram_read_request, dram_write_ack, dram_write_request
from .plan import DRAM, AccelPlan, instruction_field as _field
from .post import WRITES as POST_WRITES, PostUnit

__all__ = ["Accelerator", "ram_phases"]

WORD_BITS = 256


class Accelerator(wiring.Component):
    """The accelerator of ``plan`` (:class:`hw.accel.plan.AccelPlan`). Ports:

    * ``run`` (a one-cycle pulse) starts the program in the instruction memory at instruction 0; ``running``,
      ``finished`` (until the next ``run``), ``cycles`` (the count, valid with ``finished``), ``error`` (dispatch
      met an opcode this accelerator does not execute; it stops);
    * ``imem_we``/``imem_addr``/``imem_data``: write an instruction (the 256-bit little-endian word of
      ``isa.encoding``) while not running;
    * ``host_*``: read or write one whole line of the buffer ``host_buf`` (registered read: ``host_rdata`` the next
      cycle), while not running;
    * the DRAM port: ``dram_rreq``/``dram_rdata`` (reads, load queue) and ``dram_wreq``/``dram_wack`` (writes,
      store queue), streams as :mod:`hw.accel.mover` documents.

    ``ram_form="pumped"`` builds the buffers in their block-RAM form (:func:`hw.accel.ram.pumped_ram_module`, what
    FPGA synthesis maps): the module then has a ``mem_clk`` input, a clock at :attr:`ram_phases` times ``clk``
    with rising edges aligned. Behaviour is the same cycle for cycle (``rtl_tests/test_pumped_ram.py``).
    """

    #: Bugs :meth:`__init__` can plant (``faults=``), to show that the verification fails on them: a queue that
    #: ignores the tokens it pops, a mover whose destination rows are one byte too far apart, and a post unit that
    #: rounds ties up instead of to even.
    FAULTS = ("ignore_pops", "stride_plus_one", "round_half_up")

    def __init__(self, plan: AccelPlan, *, faults=(), ram_form: str = "behavioral"):
        unknown = set(faults) - set(self.FAULTS)
        if unknown:
            raise ValueError(f"unknown fault(s) {sorted(unknown)}; known: {', '.join(self.FAULTS)}")
        self.plan, self.faults = plan, frozenset(faults)
        D, N = plan.dram_lanes, plan.imem_depth
        # the buffers: the load queue's mover is run port 0 of each, the store queue's port 1; then the engines'
        # operand readers (each buffer's `ports`) and, on the activations buffer, one result writer per fed engine
        d = plan.design
        # and, last, the post unit's writer on each buffer it writes
        self.buffer_memories = [
            LineMemory(b.size_bytes, b.line_bytes, b.line_bytes,
                       writers=2 + (len(plan.fed) if b.name == "activations" else 0) + (b.name in POST_WRITES),
                       readers=2 + d.buffers[b.name].ports, ram_form=ram_form)
            for b in plan.buffers]
        self.ram_form = ram_form
        self.line_bits = 8 * plan.max_line_bytes
        super().__init__({
            "run": In(1), "running": Out(1), "finished": Out(1), "cycles": Out(32), "error": Out(1),
            "imem_we": In(1), "imem_addr": In(range(N)), "imem_data": In(WORD_BITS),
            "host_buf": In(2), "host_en": In(1), "host_we": In(1),
            "host_line": In(max(1, max(b.lines for b in plan.buffers).bit_length())),
            "host_wdata": In(self.line_bits), "host_rdata": Out(self.line_bits),
            "dram_rreq": Out(dram_read_request(D)), "dram_rdata": In(dram_read_data(D)),
            "dram_wreq": Out(dram_write_request(D)), "dram_wack": In(dram_write_ack(D)),
        })

    @property
    def ram_phases(self) -> int:
        """Memory cycles per system cycle the pumped buffers need: the most of any RAM (its writers + 1)."""
        return max(shape.phases for mem in self.buffer_memories for shape in mem.ram_shapes)

    @property
    def verilog_modules(self) -> dict[str, str]:
        """The Verilog modules (:mod:`hw.accel.ram`: RAMs, byte shifters) this accelerator instantiates, by name."""
        mods = {}
        for mem in self.buffer_memories:
            mods.update(mem.verilog_modules)
        return mods

    def elaborate(self, platform):
        m = Module()
        plan, N = self.plan, self.plan.imem_depth

        # -- the instruction memory and dispatch --------------------------------------------------------------------
        m.submodules.imem = imem = memory.Memory(shape=unsigned(WORD_BITS), depth=N, init=[])
        iw = imem.write_port()
        m.d.comb += [iw.addr.eq(self.imem_addr), iw.data.eq(self.imem_data), iw.en.eq(self.imem_we & ~self.running)]

        running, fin_seen, error = Signal(), Signal(), Signal()
        pc = Signal(range(N + 1))
        cycle = Signal(32)
        m.d.comb += [self.running.eq(running), self.error.eq(error)]

        # Every read of the instruction memory and the queues' FIFOs is synchronous (block RAM on an FPGA; an
        # asynchronous read of 1024 × 256 bits is a quarter of a million flip-flops): each is addressed with the
        # next cycle's address, so its registered data is this cycle's word. The memories are written only while
        # not running (imem) or in the cycle read (a FIFO's push to its head: the read is transparent to it).
        pc_next = Signal.like(pc)
        dispatching = running & ~fin_seen & (pc < N)
        m.d.comb += pc_next.eq(Mux(self.run, 0, Mux(dispatching, pc + 1, pc)))
        m.d.sync += pc.eq(pc_next)
        dport = imem.read_port(transparent_for=(iw,))
        m.d.comb += dport.addr.eq(pc_next)
        ins = dport.data                                    # imem[pc]
        opcode = ins[:4]
        push_q = [Signal(name=f"dispatch_{q}") for q in QUEUES]
        with m.If(dispatching):
            with m.Switch(opcode):
                with m.Case(OPCODES["NOP"]):
                    pass
                with m.Case(OPCODES["LOAD"]):
                    m.d.comb += push_q[QUEUES["load"]].eq(1)
                with m.Case(OPCODES["STORE"]):
                    m.d.comb += push_q[QUEUES["store"]].eq(1)
                with m.Case(OPCODES["SYNC"]):
                    qf = _field(ins, "SYNC", "queue")
                    for name, qi in QUEUES.items():
                        m.d.comb += push_q[qi].eq(qf == qi)
                with m.Case(OPCODES["MATMUL"], OPCODES["POST"]):
                    m.d.comb += push_q[QUEUES["compute"]].eq(1)
                with m.Case(OPCODES["FINISH"]):
                    m.d.sync += fin_seen.eq(1)
                with m.Default():               # HOST: not executed (AccelPlan refuses it)
                    m.d.sync += [error.eq(1), running.eq(0)]

        # -- tokens -----------------------------------------------------------------------------------------------
        tok_bits = max(1, N.bit_length()) + 1
        tokens = [Signal(tok_bits, name=f"tokens_{i}") for i in range(len(TOKEN_QUEUES))]
        inc = [Signal(range(len(plan.fed) + 3), name=f"tok_inc_{i}") for i in range(len(TOKEN_QUEUES))]
        dec = [Signal(name=f"tok_dec_{i}") for i in range(len(TOKEN_QUEUES))]
        for t, i_, d_ in zip(tokens, inc, dec):
            m.d.sync += t.eq(t + i_ - d_)

        def route(queue: str, flag: str):
            name = TOKEN_ROUTES.get((queue, flag))
            return None if name is None else TOKEN_QUEUES.index(name)

        # -- the buffers --------------------------------------------------------------------------------------------
        bufs = self.buffer_memories
        for b, mem in zip(plan.buffers, bufs):
            m.submodules[f"buf_{b.name}"] = mem
        host_sel = Signal(2)
        with m.If(self.host_en & ~self.host_we):
            m.d.sync += host_sel.eq(self.host_buf)
        for i, mem in enumerate(bufs):
            m.d.comb += [mem.host_en.eq(self.host_en & (self.host_buf == i) & ~running), mem.host_we.eq(self.host_we),
                         mem.host_line.eq(self.host_line), mem.host_wdata.eq(self.host_wdata)]
        with m.Switch(host_sel):
            for i, mem in enumerate(bufs):
                with m.Case(i):
                    m.d.comb += self.host_rdata.eq(mem.host_rdata)

        # -- the MATMUL unit: engine readers after the movers' (run ports 2 …), result writers after theirs --------
        from .compute import MatmulUnit
        addr_bits = {b.name: mem.addr_bits for b, mem in zip(plan.buffers, bufs)}
        mm = MatmulUnit(plan, addr_bits)
        m.submodules.matmul = mm
        by_name = {b.name: mem for b, mem in zip(plan.buffers, bufs)}
        # the post unit: each buffer's first engine reader is shared with it (the compute queue runs a POST only
        # when no MATMUL is in flight, and a MATMUL only when the POST is done); its own writer is each buffer's last
        post = PostUnit(plan, addr_bits, {b.name: b.line_bytes for b in plan.buffers},
                        round_half_up="round_half_up" in self.faults)
        m.submodules.post = post
        for tag, name in (("w", "weights"), ("k", "kv"), ("a", "activations")):
            for p in range(plan.design.buffers[name].ports):
                mine, port = getattr(mm, f"rd_{tag}{p}"), getattr(by_name[name], f"r{2 + p}")
                if p:
                    connect(m, mine, port)
                    continue
                theirs = getattr(post, f"rd_{name}")
                m.d.comb += [port.en.eq(mine.en | theirs.en), port.addr.eq(Mux(post.idle, mine.addr, theirs.addr)),
                             mine.data.eq(port.data), theirs.data.eq(port.data)]
        for i, e in enumerate(plan.fed):
            connect(m, getattr(mm, f"wr{e.index}"), getattr(by_name["activations"], f"w{2 + i}"))
        for name in POST_WRITES:
            connect(m, getattr(post, f"wr_{name}"), getattr(by_name[name], f"w{by_name[name].writers - 1}"))
        compute_idle = mm.idle & post.idle

        # -- the queues ---------------------------------------------------------------------------------------------
        fifo_empty, idle = [], []
        for qname, qi in QUEUES.items():
            # the queue's FIFO holds the dispatched instruction words themselves (an index FIFO would need a
            # second, dependent read of the instruction memory in the same cycle)
            fifo = memory.Memory(shape=unsigned(WORD_BITS), depth=N, init=[])
            m.submodules[f"fifo_{qname}"] = fifo
            fw = fifo.write_port()
            fr = fifo.read_port(transparent_for=(fw,))
            wptr, rptr = Signal(range(N + 1), name=f"{qname}_wptr"), Signal(range(N + 1), name=f"{qname}_rptr")
            rptr_next = Signal.like(rptr, name=f"{qname}_rptr_next")
            with m.If(self.run):
                m.d.sync += wptr.eq(0)
            m.d.sync += rptr.eq(rptr_next)
            m.d.comb += [fw.addr.eq(wptr), fw.data.eq(ins), fw.en.eq(push_q[qi]), fr.addr.eq(rptr_next)]
            with m.If(push_q[qi]):
                m.d.sync += wptr.eq(wptr + 1)
            empty = rptr == wptr
            head_valid = ~empty | push_q[qi]
            hi = Mux(empty, ins, fr.data)                   # the head instruction: fifo[rptr], or imem[pc]
            hop = hi[:4]
            flags = {f: hi[bit] for f, bit in FLAG_BITS.items()}

            free = Signal(name=f"{qname}_free")
            mover = None
            if qname in ("load", "store"):
                mover = Mover(plan, qname, stride_plus_one="stride_plus_one" in self.faults)
                m.submodules[f"mover_{qname}"] = mover
                m.d.comb += free.eq(~mover.busy)
            else:
                # a SYNC (or a fenced MATMUL) waits for every earlier compute instruction; a MATMUL for the
                # feeder (which takes the next one in the current one's last read cycle)
                is_mm = hop == OPCODES["MATMUL"]
                fence = _field(hi, "MATMUL", "fence")
                m.d.comb += free.eq(Mux(is_mm, mm.accept & (~fence | mm.idle) & post.idle, compute_idle))

            tokens_ok = Signal(name=f"{qname}_tokens_ok")
            conds = []
            for f in ("pop_prev", "pop_next"):
                t = route(qname, f)
                if t is not None:
                    conds.append(~flags[f] | (tokens[t] != 0))
            m.d.comb += tokens_ok.eq(1)
            for cnd in (conds if "ignore_pops" not in self.faults else ()):
                with m.If(~cnd):
                    m.d.comb += tokens_ok.eq(0)
            start = Signal(name=f"{qname}_start")
            m.d.comb += start.eq(running & head_valid & free & tokens_ok)
            m.d.comb += rptr_next.eq(Mux(self.run, 0, rptr + start))
            with m.If(start):
                for f in ("pop_prev", "pop_next"):
                    t = route(qname, f)
                    if t is not None:
                        m.d.comb += dec[t].eq(flags[f])

            # pushes: at the instruction's last cycle (SYNC: its start; a transfer: its mover's finish)
            pushes = {f: Signal(name=f"{qname}_{f}_latched") for f in ("push_prev", "push_next")}
            is_sync = hop == OPCODES["SYNC"]
            if mover is not None:
                with m.If(start & ~is_sync):
                    m.d.sync += [pushes[f].eq(flags[f]) for f in pushes]
                transfer_start = start & ~is_sync
            for f in pushes:
                t = route(qname, f)
                if t is None:
                    continue
                now = start & is_sync & flags[f]
                if mover is not None:
                    now = now | (mover.finish & Mux(transfer_start, flags[f], pushes[f]))
                    m.d.comb += inc[t].eq(now)
                else:                           # the compute queue: SYNC now, MATMUL when the unit says
                    extra = (mm.push_prev_now + post.push_prev_now if f == "push_prev"
                             else mm.push_next_now + post.push_next_now)
                    m.d.comb += inc[t].eq(now + extra)
            if mover is None:
                mm_start = start & (hop == OPCODES["MATMUL"])
                addr = {x: _field(hi, "MATMUL", x) for x in ("w", "a", "r")}
                m.d.comb += [mm.start.eq(mm_start), mm.engine.eq(_field(hi, "MATMUL", "engine")),
                             mm.w_buf.eq(addr["w"][BUFFER_SHIFT:BUFFER_SHIFT + 2]),
                             mm.w.eq(addr["w"][:BUFFER_SHIFT]), mm.a.eq(addr["a"][:BUFFER_SHIFT]),
                             mm.r.eq(addr["r"][:BUFFER_SHIFT]),
                             mm.m.eq(_field(hi, "MATMUL", "m")), mm.k.eq(_field(hi, "MATMUL", "k")),
                             mm.n.eq(_field(hi, "MATMUL", "n")), mm.astride.eq(_field(hi, "MATMUL", "astride")),
                             mm.push_prev.eq(flags["push_prev"]), mm.push_next.eq(flags["push_next"])]
                m.d.comb += [post.start.eq(start & (hop == OPCODES["POST"])), post.ins.eq(hi),
                             post.push_prev.eq(flags["push_prev"]), post.push_next.eq(flags["push_next"])]

            if mover is not None:
                load = qname == "load"
                op = "LOAD" if load else "STORE"
                onchip = _field(hi, op, "onchip")
                far, near = _field(hi, op, "dram"), _field(hi, op, "sram")
                far_side = Mux(onchip, far[BUFFER_SHIFT:BUFFER_SHIFT + 2], DRAM)
                far_addr = Mux(onchip, far[:BUFFER_SHIFT], far)
                near_side, near_addr = near[BUFFER_SHIFT:BUFFER_SHIFT + 2], near[:BUFFER_SHIFT]
                far_stride, near_stride = _field(hi, op, "dram_stride"), _field(hi, op, "sram_stride")
                src, src_addr, src_stride = (far_side, far_addr, far_stride) if load else (near_side, near_addr,
                                                                                           near_stride)
                dst, dst_addr, dst_stride = (near_side, near_addr, near_stride) if load else (far_side, far_addr,
                                                                                              far_stride)
                m.d.comb += [mover.start.eq(transfer_start), mover.src.eq(src), mover.dst.eq(dst),
                             mover.src_addr.eq(src_addr), mover.dst_addr.eq(dst_addr),
                             mover.src_stride.eq(src_stride), mover.dst_stride.eq(dst_stride),
                             mover.rows.eq(_field(hi, op, "rows")), mover.row_bytes.eq(_field(hi, op, "row_bytes"))]
                w, r = (0, 0) if load else (1, 1)
                for i, mem in enumerate(bufs):
                    wp, rp = getattr(mem, f"w{w}"), getattr(mem, f"r{r}")
                    m.d.comb += [wp.en.eq(mover.wr_en & (mover.wr_buf == i)), wp.addr.eq(mover.wr_addr),
                                 wp.count.eq(mover.wr_count), wp.data.eq(mover.wr_data),
                                 rp.en.eq(mover.rd_en & (mover.rd_buf == i)), rp.addr.eq(mover.rd_addr)]
                with m.Switch(mover.rd_buf):
                    for i, mem in enumerate(bufs):
                        with m.Case(i):
                            m.d.comb += mover.rd_data.eq(getattr(mem, f"r{r}").data)
                if load:
                    connect(m, mover.dram_rreq, flipped(self.dram_rreq))
                    connect(m, flipped(self.dram_rdata), mover.dram_rdata)
                else:
                    connect(m, mover.dram_wreq, flipped(self.dram_wreq))
                    connect(m, flipped(self.dram_wack), mover.dram_wack)
            fifo_empty.append(empty & ~push_q[qi])
            idle.append(Signal.like(free, name=f"{qname}_idle"))
            m.d.comb += idle[-1].eq(free if mover is not None else compute_idle)

        # -- run and the count ---------------------------------------------------------------------------------------
        finishing = running & (fin_seen | (dispatching & (opcode == OPCODES["FINISH"])))
        for e, i in zip(fifo_empty, idle):
            finishing = finishing & e & i
        with m.If(running):
            m.d.sync += cycle.eq(cycle + 1)
        with m.If(finishing):
            m.d.sync += [running.eq(0), self.finished.eq(1), self.cycles.eq(cycle)]
        with m.If(self.run):
            m.d.sync += [running.eq(1), cycle.eq(0), fin_seen.eq(0), error.eq(0), self.finished.eq(0)]
            m.d.sync += [t.eq(0) for t in tokens]
        return m


def ram_phases(plan: AccelPlan) -> int:
    """:attr:`Accelerator.ram_phases` of ``plan``'s accelerator, without elaborating it (for reports and benches)."""
    top = Accelerator(plan, ram_form="pumped")
    for e in (top, *top.buffer_memories):       # never elaborated, on purpose: no "unused elaboratable" warning
        e._MustUse__silence = True
    return top.ram_phases
