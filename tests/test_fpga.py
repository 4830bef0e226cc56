"""FPGA resources of a whole design (hw/fpga.py): the estimate (block-RAM packing by hand, engines through the real
Yosys), the error against synthesis, and the whole accelerator synthesised (slow)."""

import pytest

from hw.accelerator import Accelerator, BufferSpec
from hw.fpga import (BLOCK_RAMS, accelerator_resources, buffer_block_rams, design_resources,
                     estimate_resources, resource_error)
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


TINY = {
        "name": "tiny", "clock_mhz": 50,
        "engines": [{"unit": "ternary-mac", "lanes": 2, "rows": 1, "max_k": 4, "count": 3},
                    {"unit": "fp-mac", "lanes": 2, "rows": 2}],
        "buffers": {"weights": {"size_kib": 2, "word_bits": 16}, "activations": {"size_kib": 1, "word_bits": 16},
                    "kv": {"size_kib": 1, "word_bits": 16}},
        "dram": {"bandwidth_gbps": 1}, "vector": {"lanes": 2},
}


def test_estimate_is_the_synthesised_engines_times_their_count(tmp_path):
    design = Accelerator.from_dict(TINY)
    res = estimate_resources(design, "ice40", cache_dir=tmp_path)
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
        estimate_resources(design, "gowin")
    with pytest.raises(ValueError, match="gowin"):
        design_resources(design, "gowin")


def test_bad_timeout_is_refused_not_reported(tmp_path):
    with pytest.raises(ValueError, match="timeout must be a positive number of seconds or None, not -1"):
        design_resources(Accelerator.from_dict(TINY), "ecp5", timeout=-1, cache_dir=tmp_path)


def test_a_design_the_generator_refuses_keeps_its_estimate(tmp_path):
    d = {**TINY, "buffers": {**TINY["buffers"], "kv": {"size_kib": 1, "word_bits": 12}}}
    res = design_resources(Accelerator.from_dict(d), "ice40", cache_dir=tmp_path)
    assert res["synthesized"] is None and "buffers.kv.word_bits = 12" in res["synthesis_problem"]
    assert res["estimate"]["total"]["brams"] > 0


def test_resource_error_by_hand():
    err = resource_error({"luts": 50, "ffs": 300, "carries": 0, "dsps": 2, "brams": None},
                         {"luts": 200, "ffs": 100, "carries": 0, "dsps": 0, "brams": 8})
    # (estimate − measured) / measured; nothing measured against something estimated has no ratio
    assert err == {"luts": -0.75, "ffs": 2.0, "carries": 0.0, "dsps": None, "brams": None}


def test_estimate_only_when_synthesis_is_not_asked(tmp_path):
    res = design_resources(Accelerator.from_dict(TINY), "ice40", synthesize_accelerator=False, cache_dir=tmp_path)
    assert res["synthesized"] is None and res["error"] is None
    assert "not asked" in res["synthesis_problem"]
    assert res["estimate"]["total"]["brams"] == 8 + sum(e["brams"] or 0 for e in res["estimate"]["engines"])


@pytest.mark.parametrize("family", [pytest.param("ice40", marks=pytest.mark.slow), "ecp5"])
def test_whole_accelerator_synthesised(family, tmp_path):
    """The tiny design's whole accelerator through Yosys (ECP5 about 40 s, iCE40 about 80 s: slow): block RAM for
    the instruction memory, the
    three instruction FIFOs and the buffers' replicas, far more logic than the engines alone, and a second ask
    answered from the cache."""
    design = Accelerator.from_dict(TINY)
    res = design_resources(design, family, cache_dir=tmp_path)
    syn = res["synthesized"]
    assert syn is not None, res["synthesis_problem"]
    # the instruction memory alone, 1024 words of 256 bits, is 64 blocks of 4 Kbit (iCE40, 256 × 16: 16 wide × 4
    # deep) or 16 of 18 Kbit (ECP5, 512 × 36: 8 wide × 2 deep); the FIFOs and the buffers' replicas come on top
    imem = {"ice40": 64, "ecp5": 16}[family]
    assert syn["brams"] > imem + res["estimate"]["total"]["brams"]
    # the whole accelerator is far more than its engines; nothing big is left in flip-flops
    assert syn["luts"] > 5 * res["estimate"]["total"]["luts"]
    assert syn["ffs"] < 60_000
    assert res["error"]["luts"] < -0.5
    again = accelerator_resources(design, family, cache_dir=tmp_path)
    assert again["cached"] and again["luts"] == syn["luts"]
