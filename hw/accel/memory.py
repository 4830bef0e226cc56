"""A byte-addressed buffer that takes a run of up to a line of bytes at any address in one cycle.

A buffer of lines of ``L`` bytes (one word of each bank) is kept as two ``lib.memory`` memories, the even and the
odd lines. A run of ``c <= L`` bytes at byte address ``a`` touches at most two consecutive lines — one even, one
odd — so it is one write (with byte enables) or one read of each: the run is shifted to ``a mod L`` across a
double line (a Verilog byte shifter, :mod:`hw.accel.ram`), whose low half goes to line ``a div L`` and high half to
the line after. Reads are the same in reverse. Each :class:`RunPort` is one such port; a buffer has one per mover (the load and the store queue each
read and write it: on-chip copies) and a line-wide debug port for the host.
"""

from amaranth.hdl import Cat, ClockSignal, Instance, Module, Mux, Signal, unsigned
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from .ram import RAM_FORMS, RamShape, ShiftShape, pumped_ram_module, ram_module, shift_module

__all__ = ["RunWrite", "RunRead", "LineMemory", "SLICE_BYTES"]

#: Bytes of a line one RAM instance keeps (wider lines are several instances side by side).
SLICE_BYTES = 512


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length()) if n > 1 else 1


class RunWrite(wiring.Signature):
    """Write ``count`` bytes of ``data`` (byte 0 first) at byte ``addr`` when ``en``."""

    def __init__(self, addr_bits: int, lanes: int):
        super().__init__({"en": Out(1), "addr": Out(addr_bits), "count": Out(_bits(lanes + 1)),
                          "data": Out(8 * lanes)})


class RunRead(wiring.Signature):
    """Read ``lanes`` bytes from byte ``addr`` when ``en``; ``data`` holds them from the next cycle (``comb``
    memories: the same cycle) until the next read."""

    def __init__(self, addr_bits: int, lanes: int):
        super().__init__({"en": Out(1), "addr": Out(addr_bits), "data": In(8 * lanes)})


class LineMemory(wiring.Component):
    """``size_bytes`` bytes in lines of ``line_bytes``; ``writers`` run-write ports and ``readers`` run-read ports of
    ``lanes`` bytes, plus a line-wide ``host`` port (read or write one whole line). ``read_domain`` ``"sync"`` is a
    buffer (registered reads, block-RAM style); ``"comb"`` is the bench's DRAM model (reads in the cycle asked).
    ``ram_form`` (:data:`hw.accel.ram.RAM_FORMS`): ``"pumped"`` keeps the lines in the block-RAM form of
    :func:`hw.accel.ram.pumped_ram_module`, clocked by the ``mem`` domain (``phases`` × the system clock)."""

    def __init__(self, size_bytes: int, line_bytes: int, lanes: int, *, writers: int, readers: int,
                 read_domain: str = "sync", ram_form: str = "behavioral", host_shared: bool = False):
        if ram_form not in RAM_FORMS:
            raise ValueError(f"ram_form {ram_form!r}: use one of {', '.join(RAM_FORMS)}")
        if ram_form != "behavioral" and read_domain != "sync":
            raise ValueError("only a buffer (read_domain 'sync') has a block-RAM form")
        self.ram_form = ram_form
        if lanes > line_bytes:
            raise ValueError(f"runs of {lanes} bytes do not fit lines of {line_bytes}")
        self.line_bytes, self.lanes, self.read_domain = line_bytes, lanes, read_domain
        self.lines = -(-size_bytes // line_bytes)
        self.half = (self.lines + 2) // 2
        self.addr_bits = max(1, (self.lines * line_bytes).bit_length())
        self.line_addr_bits = max(1, self.lines.bit_length())
        members = {f"w{i}": In(RunWrite(self.addr_bits, lanes)) for i in range(writers)}
        members.update({f"r{i}": In(RunRead(self.addr_bits, lanes)) for i in range(readers)})
        members.update({"host_en": In(1), "host_we": In(1), "host_line": In(self.line_addr_bits),
                        "host_wdata": In(8 * line_bytes), "host_rdata": Out(8 * line_bytes)})
        self.writers, self.readers = writers, readers
        #: the host port takes writer 0's and reader 0's RAM ports while ``host_en`` is high (the owner keeps it
        #: low whenever those are in use) instead of RAM ports of its own: one replica and one memory cycle fewer
        self.host_shared = bool(host_shared)
        extra = 0 if self.host_shared else 1
        #: the RAM module the even and the odd lines are kept in (``"sync"``: see :mod:`hw.accel.ram`)
        self.ram = RamShape(8 * line_bytes, self.half, writers + extra, readers + extra) \
            if read_domain == "sync" else None
        # a line wider than SLICE_BYTES is kept in several RAMs side by side (same addresses, a slice of the bytes
        # each): Amaranth bounds an instance's outputs at 65,536 bits, and a 4 KiB line read on four ports is more
        self.slices = [] if self.ram is None else [
            (lo, min(line_bytes, lo + SLICE_BYTES)) for lo in range(0, line_bytes, SLICE_BYTES)]
        amount = max(1, (line_bytes - 1).bit_length())
        self._shl = ShiftShape(lanes, 2 * line_bytes, amount, True)
        self._shr = ShiftShape(2 * line_bytes, lanes, amount, False)
        super().__init__(members)

    @property
    def verilog_modules(self) -> dict[str, str]:
        """The Verilog modules this memory instantiates, by name (:mod:`hw.accel.ram`)."""
        mods = {s.name: shift_module(s) for s in (self._shl, self._shr)}
        for shape in self._slice_shapes():
            if self.ram_form == "pumped":
                mods[shape.pumped_name] = pumped_ram_module(shape)
            else:
                mods[shape.name] = ram_module(shape)
        return mods

    @property
    def ram_shapes(self) -> list:
        """The RAM instances of one of the two (even, odd) memories: a shape per slice of the line."""
        return [] if self.ram is None else self._slice_shapes()

    def _slice_shapes(self) -> list:
        return [RamShape(8 * (hi - lo), self.ram.depth, self.ram.writers, self.ram.readers)
                for lo, hi in self.slices]

    def _shift(self, m, shape: ShiftShape, x, amount, name: str):
        y = Signal(8 * shape.out_bytes, name=name)
        m.submodules[name] = Instance(shape.name, i_x=x, i_amount=amount, o_y=y)
        return y

    def elaborate(self, platform):
        m = Module()
        L, P = self.line_bytes, self.lanes
        wports, rports = [[], []], [[], []]          # per memory (even, odd): (en, addr, data) records
        if self.ram is None:                          # the bench's DRAM model: small, comb reads
            for parity in (0, 1):
                mem = memory.Memory(shape=unsigned(8 * L), depth=self.half, init=[])
                m.submodules[("even", "odd")[parity]] = mem
                for _ in range(self.writers + (not self.host_shared)):
                    wp = mem.write_port(granularity=8)
                    wports[parity].append((wp.en, wp.addr, wp.data))
                for _ in range(self.readers + (not self.host_shared)):
                    rp = mem.read_port(domain="comb")
                    rports[parity].append((None, rp.addr, rp.data))
        else:
            a = self.ram.addr_bits
            for parity in (0, 1):
                for i in range(self.ram.writers):
                    en, addr, dat = Signal(L, name=f"m{parity}_w{i}_en"), Signal(a, name=f"m{parity}_w{i}_addr"), \
                        Signal(8 * L, name=f"m{parity}_w{i}_data")
                    wports[parity].append((en, addr, dat))
                for i in range(self.ram.readers):
                    en, addr, dat = Signal(name=f"m{parity}_r{i}_en"), Signal(a, name=f"m{parity}_r{i}_addr"), \
                        Signal(8 * L, name=f"m{parity}_r{i}_data")
                    rports[parity].append((en, addr, dat))
                for n, ((lo, hi), shape) in enumerate(zip(self.slices, self._slice_shapes())):
                    conns = {"i_clk": ClockSignal()}
                    if self.ram_form == "pumped":
                        conns["i_clk_mem"] = ClockSignal("mem")
                    for i, (en, addr, dat) in enumerate(wports[parity]):
                        conns.update({f"i_w{i}_en": en[lo:hi], f"i_w{i}_addr": addr, f"i_w{i}_data": dat[8 * lo:8 * hi]})
                    for i, (en, addr, dat) in enumerate(rports[parity]):
                        conns.update({f"i_r{i}_en": en, f"i_r{i}_addr": addr, f"o_r{i}_data": dat[8 * lo:8 * hi]})
                    module = shape.pumped_name if self.ram_form == "pumped" else shape.name
                    m.submodules[f"{('even', 'odd')[parity]}{n}"] = Instance(module, **conns)

        shared_w, shared_r = {}, {}
        for i in range(self.writers):
            w = getattr(self, f"w{i}")
            off = Signal(range(L), name=f"w{i}_off")
            line = Signal(self.line_addr_bits + 1, name=f"w{i}_line")
            m.d.comb += [off.eq(w.addr % L), line.eq(w.addr // L)]
            wide = Signal(16 * L, name=f"w{i}_wide")
            mask = Signal(2 * L, name=f"w{i}_mask")
            m.d.comb += wide.eq(self._shift(m, self._shl, w.data, off, f"w{i}_rot"))
            # lane j of the double line is written when off <= j < off + count
            end = Signal(range(3 * L + 1), name=f"w{i}_end")
            m.d.comb += end.eq(off + w.count)
            m.d.comb += mask.eq(Cat(*[(off <= j) & (j < end) for j in range(2 * L)]))
            lo_d, hi_d = wide[:8 * L], wide[8 * L:]
            lo_m, hi_m = mask[:L], mask[L:]
            odd_first = line[0]
            for parity in (0, 1):
                en, addr, dat = wports[parity][i]
                if self.host_shared and i == 0:         # writer 0's values, muxed with the host's below
                    en, addr, dat = (Signal(L, name=f"m{parity}_w0_run_en"),
                                     Signal.like(addr, name=f"m{parity}_w0_run_addr"),
                                     Signal.like(dat, name=f"m{parity}_w0_run_data"))
                    shared_w[parity] = (en, addr, dat)
                mine_lo = odd_first if parity else ~odd_first     # the first line is this memory's
                m.d.comb += [
                    addr.eq(Mux(mine_lo, line >> 1, (line + 1) >> 1)),
                    dat.eq(Mux(mine_lo, lo_d, hi_d)),
                    en.eq(Mux(w.en, Mux(mine_lo, lo_m, hi_m), 0)),
                ]

        for i in range(self.readers):
            r = getattr(self, f"r{i}")
            off = Signal(range(L), name=f"r{i}_off")
            line = Signal(self.line_addr_bits + 1, name=f"r{i}_line")
            m.d.comb += [off.eq(r.addr % L), line.eq(r.addr // L)]
            datas = []
            for parity in (0, 1):
                en, addr, dat = rports[parity][i]
                if self.host_shared and i == 0:
                    run_en = Signal(name=f"m{parity}_r0_run_en") if en is not None else None
                    run_addr = Signal.like(addr, name=f"m{parity}_r0_run_addr")
                    shared_r[parity] = (run_en, run_addr)
                    en, addr = run_en, run_addr
                mine_lo = line[0] if parity else ~line[0]
                m.d.comb += addr.eq(Mux(mine_lo, line >> 1, (line + 1) >> 1))
                if en is not None:
                    m.d.comb += en.eq(r.en)
                datas.append(dat)
            if self.ram is None:
                off_q, odd_q = off, line[0]
            else:                                   # the realignment of the data the read returns next cycle
                off_q = Signal(range(L), name=f"r{i}_off_q")
                odd_q = Signal(name=f"r{i}_odd_q")
                with m.If(r.en):
                    m.d.sync += [off_q.eq(off), odd_q.eq(line[0])]
            lo = Mux(odd_q, datas[1], datas[0])
            hi = Mux(odd_q, datas[0], datas[1])
            m.d.comb += r.data.eq(self._shift(m, self._shr, Cat(lo, hi), off_q, f"r{i}_rot"))

        # the host's whole-line port (loading, read-back): line l is memory l & 1, entry l >> 1; its ports are the
        # last of each memory, or (host_shared) writer 0's and reader 0's, taken while host_en is high
        sel = Signal()
        hdata = []
        for parity in (0, 1):
            mine = self.host_line[0] == parity
            h_wen = Mux(self.host_en & self.host_we & mine, (1 << L) - 1, 0)
            h_ren = self.host_en & ~self.host_we
            if self.host_shared:
                (en, addr, dat), (w_en, w_addr, w_dat) = wports[parity][0], shared_w[parity]
                m.d.comb += [addr.eq(Mux(self.host_en, self.host_line >> 1, w_addr)),
                             dat.eq(Mux(self.host_en, self.host_wdata, w_dat)),
                             en.eq(Mux(self.host_en, h_wen, w_en))]
                (ren, raddr, rdat), (r_en, r_addr) = rports[parity][0], shared_r[parity]
                m.d.comb += raddr.eq(Mux(self.host_en, self.host_line >> 1, r_addr))
                if ren is not None:
                    m.d.comb += ren.eq(Mux(self.host_en, h_ren, r_en))
            else:
                en, addr, dat = wports[parity][self.writers]
                m.d.comb += [addr.eq(self.host_line >> 1), dat.eq(self.host_wdata), en.eq(h_wen)]
                ren, raddr, rdat = rports[parity][self.readers]
                m.d.comb += raddr.eq(self.host_line >> 1)
                if ren is not None:
                    m.d.comb += ren.eq(h_ren)
            hdata.append(rdat)
        with m.If(self.host_en & ~self.host_we):
            m.d.sync += sel.eq(self.host_line[0])
        m.d.comb += self.host_rdata.eq(Mux(sel, hdata[1], hdata[0]))
        return m
