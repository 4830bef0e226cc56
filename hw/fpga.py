"""FPGA resources of a whole accelerator description: the generated accelerator synthesised, beside the estimate
it replaces.

:func:`accelerator_resources` is the measurement: the whole accelerator of ``hw.accel`` (controller, movers, byte
rotators, MATMUL and post units, engines, buffers) generated with its buffers in block-RAM form
(:func:`hw.accel.ram.pumped_ram_module`) and synthesised by Yosys for the family, block RAM as the tool maps it;
cached on disk under the design, the family, the Yosys version and a digest of the generator's sources, so a
second ask costs nothing.

:func:`estimate_resources` is what ``--fpga`` reported before the accelerator existed and is kept beside the
measurement, with the error between them: the engines synthesised one by one (:func:`hw.synth.synthesize`) times
their ``count``, and the buffers' block RAMs by the packing rule of :func:`buffer_block_rams` — every bank its own
set of blocks in the primitive's cheapest aspect ratio, one replica per read port; no controller, movers, rotators
or post unit. :func:`design_resources` returns both.
"""

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from .accelerator import Accelerator, BufferSpec
from .engine import ENGINES
from .synth import check_family, synthesize

__all__ = ["BLOCK_RAMS", "BlockRam", "PARTS", "Part", "buffer_block_rams", "estimate_resources",
           "accelerator_resources",
           "design_resources", "resource_error", "RESOURCES"]

#: The resource classes reported, as :func:`hw.synth.count_resources` names them.
RESOURCES = ("luts", "ffs", "carries", "dsps", "brams")


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


@dataclass(frozen=True)
class Part:
    """The part of a family lowbit's boards use, with the resources a design is checked against.

    ``spram`` counts single-port RAM blocks (iCE40 UltraPlus SB_SPRAM256KA; none on ECP5), ``spram_bits`` and
    ``bram_bits`` are the bits of one such block and of one block RAM (parity bits included);
    ``memory_source`` says where the memory figures come from."""

    name: str
    luts: int
    ffs: int
    brams: int
    dsps: int
    source: str
    spram: int = 0
    spram_bits: int = 0
    bram_bits: int = 0
    memory_source: str = ""

    def overflows(self, used: dict) -> list[str]:
        """What of ``used`` (:data:`RESOURCES` counts, plus ``spram``) exceeds this part, each as
        ``"brams 412 > 208"``."""
        return [f"{k} {used[k]:,} > {getattr(self, k):,}" for k in ("luts", "ffs", "brams", "dsps", "spram")
                if used.get(k) is not None and used[k] > getattr(self, k)]


PARTS = {
    # iCEBreaker's part: 5,280 LUT4 (each with a flip-flop), 30 EBR of 4 Kbit, 8 SB_MAC16 and 4 SPRAM of 256 Kbit
    # (16K × 16 each) (iCE40 UltraPlus family data sheet FPGA-DS-02008; SPRAM: Lattice TN1314). synth_ice40 does
    # not infer SPRAM: a design has it only by instantiating SB_SPRAM256KA (counted by hw.board.build, not by
    # hw.synth.count_resources)
    "ice40": Part("iCE40 UP5K", 5280, 5280, 30, 8, "Lattice FPGA-DS-02008, iCE40 UltraPlus family data sheet",
                  spram=4, spram_bits=256 * 1024, bram_bits=4096,
                  memory_source="Lattice FPGA-DS-02008 (4 SPRAM × 256 Kbit, 30 EBR × 4 Kbit); SPRAM: "
                                "TN1314 iCE40 SPRAM Usage Guide (16K × 16 each); EBR: TN1250 iCE40 sysMEM"),
    # ULX3S-85F's part: 83,640 LUT4 and as many flip-flops, 208 DP16KD (18 Kbit), 156 18 × 18 multipliers, no SPRAM
    # (ECP5 family data sheet FPGA-DS-02012)
    "ecp5": Part("ECP5 LFE5U-85F", 83640, 83640, 208, 156, "Lattice FPGA-DS-02012, ECP5 family data sheet",
                 spram=0, spram_bits=0, bram_bits=18432,
                 memory_source="Lattice FPGA-DS-02012 (208 sysMEM EBR × 18 Kbit, no SPRAM); EBR: FPGA-TN-02204 "
                               "ECP5 sysMEM"),
}


def buffer_block_rams(buffer: BufferSpec, family: str) -> int:
    """Blocks for ``buffer``: per bank, the cheapest aspect ratio with enough blocks side by side for a word and
    stacked for the bank's depth; every block is used as one read and one write port (a DRAM fill may write
    while the engine reads), so each of a bank's ``ports`` read ports is a replica of the bank."""
    ram = BLOCK_RAMS[check_family(family)]
    words = -(-buffer.size_bytes * 8 // (buffer.banks * buffer.word_bits))       # per bank, rounded up
    per_bank = min(-(-buffer.word_bits // width) * -(-words // depth) for width, depth in ram.modes)
    return buffer.banks * per_bank * buffer.ports


def estimate_resources(design: Accelerator, family: str, **synth_options) -> dict:
    """The estimate: LUTs, FFs, carries, DSPs and block RAMs of ``design``'s engines on ``family``, engine by
    engine, plus the buffers' block RAMs by :func:`buffer_block_rams`.

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
                      f"stacked, one replica per read port ({ram.source}); the controller, movers, byte rotators "
                      f"and post unit are not counted (the estimate the synthesised accelerator replaces)"}


def _generator_digest() -> str:
    """SHA-256 over the sources the accelerator's Verilog is generated from (``hw``, ``isa``, ``models``): a cached
    synthesis is reused only for the generator that produced it."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for pkg in ("hw", "isa", "models"):
        for f in sorted((root / pkg).rglob("*.py")):
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def accelerator_resources(design: Accelerator, family: str, *, cache_dir=None, use_cache: bool = True,
                          timeout: float | None = None, work_dir=None, progress=None) -> dict:
    """The whole generated accelerator of ``design`` synthesised for ``family`` (Yosys, resources only).

    Returns ``luts``, ``ffs``, ``carries``, ``dsps``, ``brams`` (:data:`RESOURCES`), ``cells``, ``ram_phases``
    (the memory clock the block-RAM buffers need, in system clocks), ``verilog_bytes``, ``seconds`` (generation
    and synthesis), ``cached``. ``progress(text)`` is told each step. Raises ``ValueError`` for a design the
    generator refuses (before anything runs), :class:`hw.synth.ToolMissing` / :class:`hw.synth.ToolError` as
    :func:`hw.synth.synthesize` does."""
    from .accel.plan import AccelPlan
    from .synth import (FLOW_VERSION, _cache_lock, _check_tool, _read_entry, _write_entry, cache_key,
                        default_cache_dir, synthesize_verilog)

    family = check_family(family)
    plan = AccelPlan.of(design)           # refuses what cannot be generated, naming it, before any tool runs
    say = progress or (lambda text: None)
    inputs = {"flow": FLOW_VERSION, "what": "accelerator", "design": design.to_dict(), "family": family,
              "yosys": _check_tool("yosys"), "generator": _generator_digest()}
    key = cache_key(inputs)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache / f"accel-{key}.json"
    if use_cache:
        cache.mkdir(parents=True, exist_ok=True)
    from contextlib import nullcontext
    with (_cache_lock(cache, f"accel-{key}", f"synthesis of the {design.name} accelerator for {family}")
          if use_cache else nullcontext()):
        stored = _read_entry(path, key) if use_cache else None
        if stored is not None:
            return {**stored, "cached": True}
        from .accel.export import MODULE, generate
        from .accel.top import ram_phases

        t0 = time.perf_counter()
        say(f"generating the {design.name} accelerator (buffers in block-RAM form)")
        phases = ram_phases(plan)
        text = generate(plan, ram_form="pumped")
        t_gen = time.perf_counter() - t0
        say(f"synthesising it for {family} with Yosys ({len(text) / 1e6:.1f} MB of Verilog)")
        # classic ABC from the start: abc9 asserted on the accelerator after minutes on ECP5 (Yosys 0.70) and ran
        # for eight minutes on iCE40 without finishing, where classic ABC takes 81 s (the tiny test design)
        r = synthesize_verilog(text, MODULE, family, what=f"the {design.name} accelerator", classic_abc=True,
                               cache_dir=cache_dir, use_cache=use_cache, timeout=timeout, work_dir=work_dir)
        result = {k: r[k] for k in (*RESOURCES, "cells", "yosys", "synth_note")}
        result.update(ram_phases=phases, verilog_bytes=len(text), generate_seconds=round(t_gen, 3),
                      seconds=round(time.perf_counter() - t0, 3) if not r["cached"] else round(t_gen, 3))
        if use_cache:
            _write_entry(path, key, inputs, result)
    return {**result, "cached": False}


def resource_error(estimate: dict, measured: dict) -> dict:
    """Relative error of the estimate against the synthesised count, per resource: ``(estimate − measured) /
    measured``; None where nothing was measured (a count of 0 against an estimate of 0 is no error)."""
    out = {}
    for k in RESOURCES:
        e, m = estimate.get(k), measured.get(k)
        if e is None or m is None:
            out[k] = None
        elif m == 0:
            out[k] = 0.0 if e == 0 else None
        else:
            out[k] = (e - m) / m
    return out


def design_resources(design: Accelerator, family: str, *, synthesize_accelerator: bool = True,
                     timeout: float | None = None, progress=None, **synth_options) -> dict:
    """``--fpga``: the synthesised accelerator (:func:`accelerator_resources`), the estimate it replaces
    (:func:`estimate_resources`) and the error between them.

    ``synthesized`` is None when it was not asked for, or when the accelerator cannot be generated or synthesised
    (``synthesis_problem`` says why: e.g. an engine without a generator makes MATMULs on it refused, but the
    design still builds; a timeout); the estimate is always there. ``synth_options`` go to both (``cache_dir``,
    ``use_cache``)."""
    family = check_family(family)
    est = estimate_resources(design, family, **synth_options)
    out = {"family": family, "estimate": est, "synthesized": None, "synthesis_problem": None, "error": None,
           "block_ram": est["block_ram"]}
    if not synthesize_accelerator:
        out["synthesis_problem"] = "not asked for (estimate only)"
        return out
    from .accel.plan import AccelError
    from .synth import ToolError
    if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds or None, not {timeout!r}")
    try:
        syn = accelerator_resources(design, family, timeout=timeout, progress=progress,
                                    **{k: v for k, v in synth_options.items() if k in ("cache_dir", "use_cache")})
    except (ToolError, AccelError) as exc:     # AccelError: hw.accel.plan refuses to build the design
        out["synthesis_problem"] = str(exc).splitlines()[0]
        return out
    out["synthesized"] = syn
    out["error"] = resource_error(est["total"], syn)
    return out
