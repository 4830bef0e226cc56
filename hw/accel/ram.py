"""The buffers' RAM and byte shifters: plain Verilog modules, one per shape, instantiated by
:class:`hw.accel.memory.LineMemory`.

Why not ``amaranth.lib.memory`` here: Amaranth 0.5 writes every memory's initial contents into the netlist bit by
bit (``$meminit_v2``), so a 2 MiB buffer costs 16 million Python objects and tens of seconds before any Verilog
appears, and a 4 MB ``initial`` block after. A buffer has no initial contents (the program loads it), so the
RAM is this module with no ``initial`` at all: ``writers`` write ports with byte enables and ``readers``
registered read ports (``rdata`` holds the word read at the last cycle ``ren`` was high), the shape every
synthesis tool infers block RAM from when the ports fit the device's. Writes of several ports to one word in one
cycle land in port order (the last wins); the programs the accelerator runs never do that (``sim.progen.races``).
The small memories (instruction memory, index FIFOs, the bench's DRAM model) stay ``lib.memory``.

A buffer memory has several write ports (the two movers, the result writers, the post unit, the host), and no FPGA
block RAM has more than one or two. :func:`pumped_ram_module` is the same RAM in the form FPGA tools map to block
RAM — multi-pumping: a memory clock ``clk_mem`` at :attr:`RamShape.phases` times the system clock, edges aligned;
one replica per read port, each a simple dual-port RAM with a write clock and a read clock (what ``SB_RAM40_4K``
and ``DP16KD`` both are). Every replica is read at the system edge by its reader; the writes of a system cycle
are registered at its end and land, writer ``i`` in memory cycle ``i + 1``, during the next one. Reads therefore
see the state before the system cycle's writes and the writes land in port order, as in :func:`ram_module`, so the
two are equal cycle for cycle (``rtl_tests/test_pumped_ram.py`` checks it on Icarus, collisions included); no read
ever meets a write on the same edge, so the block RAM's collision behaviour never matters. The price is the memory
clock (the system clock is at most the block RAM's Fmax over ``phases``), a register per write port, and one copy
of the contents per read port.
"""

from dataclasses import dataclass

__all__ = ["RamShape", "ram_module", "pumped_ram_module", "RAM_FORMS", "ShiftShape", "shift_module"]

#: How a buffer's RAM is written (:class:`hw.accel.memory.LineMemory` ``ram_form``): ``behavioral`` for
#: simulation (one clock, any number of ports), ``pumped`` for FPGA synthesis (block RAM, a memory clock).
RAM_FORMS = ("behavioral", "pumped")


@dataclass(frozen=True)
class RamShape:
    width: int          #: bits a word (a whole number of bytes)
    depth: int
    writers: int
    readers: int

    @property
    def name(self) -> str:
        return f"lowbit_ram_w{self.width}_d{self.depth}_{self.writers}w{self.readers}r"

    @property
    def pumped_name(self) -> str:
        return self.name.replace("lowbit_ram_", "lowbit_rampump_", 1)

    @property
    def addr_bits(self) -> int:
        return max(1, (self.depth - 1).bit_length())

    @property
    def phases(self) -> int:
        """Memory cycles per system cycle in the pumped form: one per writer, and the last one free (its edge is
        the next system edge, where the reads happen)."""
        return self.writers + 1

    @property
    def replicas(self) -> int:
        """Copies of the contents in the pumped form: one per read port."""
        return self.readers


def ram_module(shape: RamShape) -> str:
    """The Verilog of one RAM shape (its module is :attr:`RamShape.name`)."""
    w, nb = shape.width, shape.width // 8
    ports = ["input wire clk", *_port_list(shape)]
    lines = [f"module {shape.name} (", ",\n".join(f"  {p}" for p in ports), ");",
             f"  reg [{w - 1}:0] mem [0:{shape.depth - 1}];",
             "  integer b;",
             "  always @(posedge clk) begin"]
    for i in range(shape.writers):
        lines += [f"    for (b = 0; b < {nb}; b = b + 1)",
                  f"      if (w{i}_en[b]) mem[w{i}_addr][b*8 +: 8] <= w{i}_data[b*8 +: 8];"]
    for i in range(shape.readers):
        lines += [f"    if (r{i}_en) r{i}_data <= mem[r{i}_addr];"]
    lines += ["  end", "endmodule", ""]
    return "\n".join(lines)


def _port_list(shape: RamShape) -> list[str]:
    w, a, nb = shape.width, shape.addr_bits, shape.width // 8
    ports = []
    for i in range(shape.writers):
        ports += [f"input wire [{nb - 1}:0] w{i}_en", f"input wire [{a - 1}:0] w{i}_addr",
                  f"input wire [{w - 1}:0] w{i}_data"]
    for i in range(shape.readers):
        ports += [f"input wire r{i}_en", f"input wire [{a - 1}:0] r{i}_addr", f"output reg [{w - 1}:0] r{i}_data"]
    return ports


#: Bugs :func:`pumped_ram_module` can plant (``fault=``), to show its equivalence check fails on them: writes not
#: deferred to the next system cycle (a read sees its own cycle's writes), and writers in reverse order (the first,
#: not the last, wins).
PUMP_FAULTS = ("read_after_writes", "writers_reversed")


def pumped_ram_module(shape: RamShape, fault: str | None = None) -> str:
    """The Verilog of ``shape`` in block-RAM form (module :attr:`RamShape.pumped_name`; ports as
    :func:`ram_module`'s plus ``clk_mem``, a clock at :attr:`RamShape.phases` × ``clk`` or faster, rising edges
    aligned).

    Each replica is a dual-clock simple dual-port RAM: its read port is clocked by ``clk`` (``r*_data`` takes the
    word at the system edge that ends a cycle in which ``r*_en`` is high), its write port by ``clk_mem``. The write
    ports' inputs are registered at the system edge, and writer ``i``'s bytes are written into every replica at
    memory edge ``i + 1`` of the *next* system cycle: so a read at the end of cycle ``t`` sees every write of
    cycles before ``t`` and none of cycle ``t``, as in :func:`ram_module`, and no write ever shares an edge with a
    read. The memory domain finds a system cycle's first memory cycle from a toggle of ``clk`` (the toggle changes
    at a system edge, the memory domain sees it one memory edge later). Timing: a read address has the whole system
    cycle to settle and a write's slot multiplexer one memory cycle from registers — unlike reading in the first
    memory cycle, which left the accelerator's address logic one memory cycle (too little on an ECP5 at 9 ×)."""
    if fault is not None and fault not in PUMP_FAULTS:
        raise ValueError(f"unknown fault {fault!r}; known: {', '.join(PUMP_FAULTS)}")
    w, a, nb, k = shape.width, shape.addr_bits, shape.width // 8, shape.phases
    pb = max(1, (k - 1).bit_length())
    order = list(range(shape.writers))[::-1] if fault == "writers_reversed" else list(range(shape.writers))
    # the planted bug: writes not deferred, so a read at the end of a cycle sees that cycle's writes
    late = "" if fault == "read_after_writes" else "_q"
    ports = ["input wire clk", "input wire clk_mem", *_port_list(shape)]
    lines = [f"module {shape.pumped_name} (", ",\n".join(f"  {p}" for p in ports), ");",
             "  // the writes of the system cycle that just ended, written during the next one",
             *[x for i in range(shape.writers) for x in (
                 f"  reg [{nb - 1}:0] w{i}_en_q = {nb}'d0;", f"  reg [{a - 1}:0] w{i}_addr_q;",
                 f"  reg [{w - 1}:0] w{i}_data_q;")],
             "  always @(posedge clk) begin",
             *[f"    w{i}_en_q <= w{i}_en; w{i}_addr_q <= w{i}_addr; w{i}_data_q <= w{i}_data;"
               for i in range(shape.writers)],
             "  end",
             "  // which memory cycle of the system cycle this is: `first` is the memory edge after a system edge",
             "  reg tog = 1'b0, tog_q = 1'b0;",
             f"  reg [{pb - 1}:0] ph = {pb}'d0;",
             "  wire first = tog != tog_q;",
             f"  wire [{pb - 1}:0] cur = first ? {pb}'d0 : ph;",
             "  always @(posedge clk) tog <= ~tog;",
             "  always @(posedge clk_mem) begin",
             "    tog_q <= tog;",
             "    ph <= cur + 1'b1;",
             "  end",
             "  // the one write port of every replica: writer i at memory edge i + 1",
             f"  reg [{nb - 1}:0] we;", f"  reg [{a - 1}:0] wa;", f"  reg [{w - 1}:0] wd;",
             "  always @* begin",
             f"    we = {nb}'d0;", f"    wa = {a}'d0;", f"    wd = {w}'d0;",
             "    case (cur)"]
    for slot, i in enumerate(order):
        lines.append(f"      {pb}'d{slot}: begin we = w{i}_en{late}; wa = w{i}_addr{late}; wd = w{i}_data{late}; end")
    lines += ["      default: ;", "    endcase", "  end"]
    for r in range(shape.readers):
        lines += [f"  reg [{w - 1}:0] rep{r} [0:{shape.depth - 1}];",
                  f"  integer b{r};",
                  "  always @(posedge clk_mem)",
                  f"    for (b{r} = 0; b{r} < {nb}; b{r} = b{r} + 1)",
                  f"      if (we[b{r}]) rep{r}[wa][b{r}*8 +: 8] <= wd[b{r}*8 +: 8];",
                  f"  always @(posedge clk) if (r{r}_en) r{r}_data <= rep{r}[r{r}_addr];"]
    lines += ["endmodule", ""]
    return "\n".join(lines)


@dataclass(frozen=True)
class ShiftShape:
    """A shift by whole bytes: ``in_bytes`` in, ``out_bytes`` out, the amount in bytes on ``amount_bits`` bits.

    Why Verilog and not an Amaranth expression: Amaranth 0.5 builds its netlist bit by bit in Python, and the line
    rotators are the accelerator's widest logic — a 256-byte rotator took 1.9 s to convert, four of them per
    buffer, 35 s per built-in design. As a Verilog ``<<`` the synthesis tool builds the same barrel shifter."""

    in_bytes: int
    out_bytes: int
    amount_bits: int
    left: bool

    @property
    def name(self) -> str:
        return f"lowbit_sh{'l' if self.left else 'r'}_i{self.in_bytes}_o{self.out_bytes}_a{self.amount_bits}"


def shift_module(shape: ShiftShape) -> str:
    """``y = x << 8·amount`` (left: ``x`` zero-extended to the output first) or ``y = (x >> 8·amount)`` cut to
    the output, as a Verilog module."""
    i, o, a = 8 * shape.in_bytes, 8 * shape.out_bytes, shape.amount_bits
    head = [f"module {shape.name} (", f"  input wire [{i - 1}:0] x,", f"  input wire [{a - 1}:0] amount,",
            f"  output wire [{o - 1}:0] y", ");"]
    if shape.left:
        body = [f"  wire [{o - 1}:0] xe = x;", "  assign y = xe << {amount, 3'b000};"]
    else:
        body = [f"  wire [{i - 1}:0] s = x >> {{amount, 3'b000}};", f"  assign y = s[{o - 1}:0];"]
    return "\n".join(head + body + ["endmodule", ""])
