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
"""

from dataclasses import dataclass

__all__ = ["RamShape", "ram_module", "ShiftShape", "shift_module"]


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
    def addr_bits(self) -> int:
        return max(1, (self.depth - 1).bit_length())


def ram_module(shape: RamShape) -> str:
    """The Verilog of one RAM shape (its module is :attr:`RamShape.name`)."""
    w, a, nb = shape.width, shape.addr_bits, shape.width // 8
    ports = ["input wire clk"]
    for i in range(shape.writers):
        ports += [f"input wire [{nb - 1}:0] w{i}_en", f"input wire [{a - 1}:0] w{i}_addr",
                  f"input wire [{w - 1}:0] w{i}_data"]
    for i in range(shape.readers):
        ports += [f"input wire r{i}_en", f"input wire [{a - 1}:0] r{i}_addr", f"output reg [{w - 1}:0] r{i}_data"]
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
