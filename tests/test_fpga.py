"""FPGA resources of a whole design (hw/fpga.py): block-RAM packing by hand, engines through the real Yosys."""

import pytest

from hw.accelerator import Accelerator, BufferSpec
from hw.fpga import BLOCK_RAMS, buffer_block_rams, design_resources
from hw.params import TernaryMacParams
from hw.synth import synthesize


@pytest.mark.parametrize("family, buffer, blocks", [
    # 16 KiB of 32-bit words on iCE40 (4 Kbit blocks, 256 × 16 … 2048 × 2): 4096 words, 32 blocks in any shape
    ("ice40", BufferSpec("w", 16 * 1024, banks=1, word_bits=32), 2 * 16),
    # the same in 4 banks: each bank 1024 words → 4 deep × 2 wide, ×4 banks; no saving, no loss
    ("ice40", BufferSpec("w", 16 * 1024, banks=4, word_bits=32), 4 * 2 * 4),
    # 12-bit words, 64 KiB = 43,691 words: 1024 × 4 blocks, 3 side by side × 43 deep (256 × 16 would take 171)
    ("ice40", BufferSpec("w", 64 * 1024, banks=1, word_bits=12), 3 * 43),
    # 8-bit words on ECP5 use a 2048 × 9 shape: 1 KiB per bank fits one block, 8 banks → 8 blocks
    ("ecp5", BufferSpec("a", 8 * 1024, banks=8, word_bits=8), 8),
    # 128-bit words on 7-series, 4096 of them: 4096 × 9 blocks, 15 side by side (512 × 72 would take 2 × 8)
    ("xilinx", BufferSpec("kv", 64 * 1024, banks=1, word_bits=128), 15),
    # 40-bit words, 13,108 of them: 4096 × 9 blocks, 5 side by side × 4 deep (512 × 72: 26)
    ("xilinx", BufferSpec("kv", 64 * 1024, banks=1, word_bits=40), 5 * 4),
    # four read ports: four replicas of the one-block bank (each block gives one read and one write port)
    ("ecp5", BufferSpec("a", 2048, banks=1, ports=4, word_bits=32), 4),
])
def test_buffer_block_rams(family, buffer, blocks):
    assert buffer_block_rams(buffer, family) == blocks
    # never fewer blocks than the bits need
    assert blocks * BLOCK_RAMS[family].bits >= buffer.size_bytes * 8 * buffer.ports


def test_design_resources_are_the_synthesised_engines_times_their_count(tmp_path):
    design = Accelerator.from_dict({
        "name": "tiny", "clock_mhz": 50,
        "engines": [{"unit": "ternary-mac", "lanes": 2, "rows": 1, "max_k": 4, "count": 3},
                    {"unit": "fp-mac", "lanes": 2, "rows": 2}],
        "buffers": {"weights": {"size_kib": 2, "word_bits": 16}, "activations": {"size_kib": 1, "word_bits": 16},
                    "kv": {"size_kib": 1, "word_bits": 16}},
        "dram": {"bandwidth_gbps": 1}, "vector": {"lanes": 2},
    })
    res = design_resources(design, "ice40", cache_dir=tmp_path)
    one = synthesize(TernaryMacParams(lanes=2, rows=1, max_k=4), "ice40", fmax=False, transistors=False,
                     cache_dir=tmp_path)
    ternary, fp = res["engines"]
    assert one.luts > 0 and ternary["luts"] == 3 * one.luts and ternary["ffs"] == 3 * one.ffs
    assert fp["luts"] is None and "no RTL generator" in fp["note"]
    # 2 KiB of 16-bit words = 1024 words = 4 blocks deep; 1 KiB = 2 blocks, twice
    assert res["buffer_brams"] == {"weights": 4, "activations": 2, "kv": 2}
    assert res["total"]["brams"] == 8 + 3 * one.brams
    assert res["total"]["luts"] == ternary["luts"]
    with pytest.raises(ValueError, match="gowin"):
        design_resources(design, "gowin")
