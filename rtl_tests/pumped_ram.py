"""The pumped (block-RAM) form of a buffer RAM against the behavioral form, on Icarus.

Both RAMs of one :class:`hw.accel.ram.RamShape` get the same contents and the same random port traffic — every
writer and reader active at random, addresses drawn from a few words so that two writers hit one word in one
cycle and a reader reads a word in the cycle it is written (it must get the old bytes) and the cycle after (the
new ones) — and every reader's data is compared every system cycle. The behavioral RAM is the one the whole
accelerator is verified with (``rtl_tests/test_accel*.py``), so equality here carries that verification over to
the form FPGA synthesis maps (``hw.fpga.accelerator_resources``).

The bench is plain Verilog with its own clocks: the memory clock's rising edges every 2 time units, the system
clock's at every ``phases``-th of them (set in the same time step, so the two domains see each other's registers
as real aligned clocks do).
"""

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hw.accel.ram import RamShape, pumped_ram_module, ram_module

__all__ = ["PumpResult", "bench_verilog", "run_pumped_ram"]


@dataclass(frozen=True)
class PumpResult:
    """What the bench counted: cycles compared, reader mismatches, and the collisions it exercised."""

    cycles: int
    checks: int
    mismatches: int
    read_while_written: int    #: a reader read a word in the cycle a writer wrote it (old bytes expected)
    read_after_written: int    #: ... in the cycle after (new bytes expected)
    writers_collided: int      #: two writers wrote a byte of one word in one cycle (the last port wins)


def bench_verilog(shape: RamShape, cycles: int, seed: int) -> str:
    """The testbench module ``tb`` around both forms of ``shape``."""
    nb, a, k = shape.width // 8, shape.addr_bits, shape.phases
    words = min(shape.depth, 4)                       # few words: collisions every few cycles
    L = ["`timescale 1ns/1ps", "module tb;", "  reg clk = 0, clk_mem = 0;", "  integer n = 0, cyc = 0, i, j;",
         f"  integer seed = {seed};",
         "  integer checks = 0, mism = 0, rww = 0, raw = 0, ww = 0;"]
    conns = [".clk(clk)"]
    for i in range(shape.writers):
        L += [f"  reg [{nb - 1}:0] w{i}_en = 0;", f"  reg [{a - 1}:0] w{i}_addr = 0;",
              f"  reg [{shape.width - 1}:0] w{i}_data = 0;",
              f"  reg [{nb - 1}:0] p{i}_en = 0;", f"  reg [{a - 1}:0] p{i}_addr = 0;"]
        conns += [f".w{i}_en(w{i}_en)", f".w{i}_addr(w{i}_addr)", f".w{i}_data(w{i}_data)"]
    for r in range(shape.readers):
        L += [f"  reg r{r}_en = 0;", f"  reg [{a - 1}:0] r{r}_addr = 0;",
              f"  wire [{shape.width - 1}:0] a{r}_data, b{r}_data;"]
    conns_a = conns + [f".r{r}_en(r{r}_en), .r{r}_addr(r{r}_addr), .r{r}_data(a{r}_data)"
                       for r in range(shape.readers)]
    conns_b = [".clk_mem(clk_mem)"] + conns + [f".r{r}_en(r{r}_en), .r{r}_addr(r{r}_addr), .r{r}_data(b{r}_data)"
                                               for r in range(shape.readers)]
    L += [f"  {shape.name} gold ({', '.join(conns_a)});",
          f"  {shape.pumped_name} dut ({', '.join(conns_b)});",
          # the same random contents in both (in every replica of the pumped one)
          "  initial begin",
          f"    for (i = 0; i < {shape.depth}; i = i + 1) begin",
          f"      for (j = 0; j < {nb}; j = j + 1) gold.mem[i][j*8 +: 8] = $random(seed);"]
    L += [f"      dut.rep{r}[i] = gold.mem[i];" for r in range(shape.readers)]
    L += ["    end", "  end",
          # aligned clocks: the system edge is set in the same time step as every phases-th memory edge
          "  initial forever begin",
          "    #1 clk_mem = 1; clk = (n == 0);",
          f"    #1 clk_mem = 0; n = (n + 1) % {k};",
          "  end",
          # traffic, registered at the system edge as the accelerator's logic drives it
          "  always @(posedge clk) begin",
          "    cyc <= cyc + 1;"]
    for i in range(shape.writers):
        L += [f"    w{i}_en <= ($random(seed) & 1) ? $random(seed) : 0;",
              f"    w{i}_addr <= $unsigned($random(seed)) % {words};",
              f"    w{i}_data <= {{{', '.join(['$random(seed)'] * -(-shape.width // 32))}}};",
              f"    p{i}_en <= w{i}_en; p{i}_addr <= w{i}_addr;"]
    for r in range(shape.readers):
        L += [f"    r{r}_en <= $random(seed) & 1;", f"    r{r}_addr <= $unsigned($random(seed)) % {words};"]
    # checks: the data both forms registered at the last system edge, and what that read met
    for r in range(shape.readers):
        L += [f"    if (cyc > 1) begin checks = checks + 1; if (a{r}_data !== b{r}_data) mism = mism + 1; end"]
        for i in range(shape.writers):
            L += [f"    if (r{r}_en && w{i}_en != 0 && w{i}_addr == r{r}_addr) rww = rww + 1;",
                  f"    if (r{r}_en && p{i}_en != 0 && p{i}_addr == r{r}_addr) raw = raw + 1;"]
    for i in range(shape.writers):
        for j in range(i + 1, shape.writers):
            L += [f"    if ((w{i}_en & w{j}_en) != 0 && w{i}_addr == w{j}_addr) ww = ww + 1;"]
    L += [f"    if (cyc == {cycles}) begin",
          '      $display("RESULT cycles=%0d checks=%0d mismatches=%0d rww=%0d raw=%0d ww=%0d", cyc, checks, mism, '
          'rww, raw, ww);',
          "      $finish;", "    end",
          "  end", "endmodule", ""]
    return "\n".join(L)


def run_pumped_ram(shape: RamShape, work_dir: Path, *, cycles: int = 4000, seed: int = 1,
                   fault: str | None = None) -> PumpResult:
    """Compile both forms of ``shape`` and the bench with Icarus, run it, and return what it counted."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    src = work_dir / "pump_tb.v"
    src.write_text(ram_module(shape) + "\n" + pumped_ram_module(shape, fault=fault) + "\n"
                   + bench_verilog(shape, cycles, seed))
    subprocess.run(["iverilog", "-g2012", "-o", "pump_tb.vvp", "-s", "tb", src.name], cwd=work_dir, check=True,
                   capture_output=True, text=True)
    out = subprocess.run(["vvp", "-n", "pump_tb.vvp"], cwd=work_dir, check=True, capture_output=True,
                         text=True).stdout
    m = re.search(r"RESULT cycles=(\d+) checks=(\d+) mismatches=(\d+) rww=(\d+) raw=(\d+) ww=(\d+)", out)
    if m is None:
        raise RuntimeError(f"the pumped-RAM bench printed no result:\n{out[-2000:]}")
    return PumpResult(*(int(g) for g in m.groups()))
