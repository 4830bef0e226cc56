"""FPGA resources of a whole accelerator description: the engines synthesised, the buffers counted in block RAMs.

Engines are measured, not estimated: each engine kind that has an RTL generator goes through
:func:`hw.synth.synthesize` (resources only, cached on disk) and its counts are multiplied by the slot's
``count``. Buffers are not generated yet (the accelerator RTL comes later), so their block-RAM count is the
packing rule of :func:`buffer_block_rams` — every bank its own set of blocks in the primitive's cheapest aspect
ratio, one replica per read port — and says so in its ``method``.
"""

from dataclasses import dataclass

from .accelerator import Accelerator, BufferSpec
from .engine import ENGINES
from .synth import check_family, synthesize

__all__ = ["BLOCK_RAMS", "BlockRam", "buffer_block_rams", "design_resources"]


@dataclass(frozen=True)
class BlockRam:
    """One family's block RAM primitive and the aspect ratios (``(width, depth)``) it can be configured in."""

    name: str
    bits: int                            #: bits per block, parity bits included where a mode can use them
    modes: tuple[tuple[int, int], ...]   #: (data width, depth) of each configuration with a read and a write port
    source: str


BLOCK_RAMS = {
    # iCE40 SB_RAM40_4K: 4 Kbit, one read and one write port, 256 × 16 / 512 × 8 / 1024 × 4 / 2048 × 2 (TN1250).
    "ice40": BlockRam("SB_RAM40_4K", 4096, ((16, 256), (8, 512), (4, 1024), (2, 2048)),
                      "Lattice TN1250, iCE40 sysMEM: 256 × 16 to 2048 × 2"),
    # ECP5 DP16KD: 18 Kbit, 16K × 1 to 1K × 18 true dual-port, 512 × 36 pseudo-dual-port (FPGA-TN-02204).
    "ecp5": BlockRam("DP16KD", 18432, ((36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384)),
                     "Lattice FPGA-TN-02204, ECP5 sysMEM: 16K × 1 to 1K × 18 TDP, 512 × 36 PDP"),
    # 7-series RAMB36E1: 36 Kbit, 32K × 1 to 1K × 36 true dual-port, 512 × 72 simple dual-port (UG473).
    "xilinx": BlockRam("RAMB36E1", 36864, ((72, 512), (36, 1024), (18, 2048), (9, 4096), (4, 8192), (2, 16384),
                                           (1, 32768)),
                       "Xilinx UG473, 7-series RAMB36E1: 32K × 1 to 1K × 36 TDP, 512 × 72 SDP"),
}


def buffer_block_rams(buffer: BufferSpec, family: str) -> int:
    """Blocks for ``buffer``: per bank, the cheapest aspect ratio with enough blocks side by side for a word and
    stacked for the bank's depth; every block is used as one read and one write port (a DRAM fill may write
    while the engine reads), so each of a bank's ``ports`` read ports is a replica of the bank."""
    ram = BLOCK_RAMS[check_family(family)]
    words = -(-buffer.size_bytes * 8 // (buffer.banks * buffer.word_bits))       # per bank, rounded up
    per_bank = min(-(-buffer.word_bits // width) * -(-words // depth) for width, depth in ram.modes)
    return buffer.banks * per_bank * buffer.ports


def design_resources(design: Accelerator, family: str, **synth_options) -> dict:
    """LUTs, FFs, carries, DSPs and block RAMs of ``design`` on ``family``, engine by engine.

    ``synth_options`` go to :func:`hw.synth.synthesize` (``cache_dir``, ``timeout``, ...); Fmax and the
    transistor estimate are not run here. Engines without an RTL generator yet (the FP MAC, the systolic
    baseline) are listed with ``None`` counts and the reason.
    """
    family = check_family(family)
    engines, totals = [], {"luts": 0, "ffs": 0, "carries": 0, "dsps": 0, "brams": 0}
    for slot in design.engines:
        row = {"unit": slot.unit, "count": slot.count}
        if slot.kind not in ENGINES:
            row.update({k: None for k in totals}, note="no RTL generator for this engine yet: not synthesised")
        else:
            r = synthesize(slot.params, family, fmax=False, transistors=False, **synth_options)
            for k in totals:
                row[k] = getattr(r, k) * slot.count
                totals[k] += row[k]
            row["note"] = f"{r.module} synthesised ({'cached' if r.cached else f'{r.seconds:.1f} s'})"
        engines.append(row)
    buffers = {}
    for b in design.buffers.values():
        buffers[b.name] = buffer_block_rams(b, family)
        totals["brams"] += buffers[b.name]
    ram = BLOCK_RAMS[family]
    return {"family": family, "engines": engines, "buffer_brams": buffers, "total": totals,
            "block_ram": ram.name,
            "method": f"engines: synthesised with hw.synth (Yosys, resources only); buffers: {ram.name} blocks, "
                      f"per bank the cheapest aspect ratio, ceil(word/width) side by side × ceil(words/depth) "
                      f"stacked, one replica per read port ({ram.source}); the vector unit and controller are not "
                      f"generated yet and not counted"}
