"""FPGA resources of the built-in designs' whole accelerators (a benchmark, not a test: it prints, it does not
assert).

    .venv/bin/python benchmarks/bench_accel_area.py [--families ecp5,ice40] [--designs D,...] [--timeout S]

Each design's accelerator is generated with its buffers in block-RAM form and synthesised by Yosys
(``hw.fpga.accelerator_resources``, cached in ``$LOWBIT_CACHE``: a second run prints at once). Printed per design
and family: LUT, FF, carry, DSP and block-RAM counts, the memory clock the buffers need, the synthesis time, the
estimate ``--fpga`` used to report (engines one by one, buffers by packing rule: the baseline) with its error, and
whether the family's board part holds it (``hw.fpga.PARTS``).

The default designs are the built-in ones at ``@small`` (engines at most 4 rows × 32 lanes, buffers at most 64 KiB
in 4 banks). At full size their buffers alone are megabytes — the estimate's block-RAM count is printed for them
— and their byte rotators (lines of up to 512 bytes, one rotator per buffer port) are millions of LUTs, which
Yosys does not get through in this benchmark's time; they are listed with the arithmetic instead.
"""

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hw.accel.plan import AccelPlan  # noqa: E402
from hw.accelerator import BUILTIN_DESIGNS  # noqa: E402
from hw.fpga import (PARTS, accelerator_resources, buffer_block_rams, estimate_resources,  # noqa: E402
                     resource_error)
from hw.synth import ToolError  # noqa: E402
from rtl_tests.accel import design_for_variant  # noqa: E402

DEFAULT_DESIGNS = ("ternary", "xnor", "int8", "binary-basis", "billm", "fp16")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default="ecp5,ice40")
    ap.add_argument("--designs", default=",".join(f"{d}@small" for d in DEFAULT_DESIGNS))
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per synthesis (default 3600)")
    args = ap.parse_args()
    families = args.families.split(",")
    rows = []
    print("| design | family | LUT | FF | carry | DSP | BRAM | mem clock | synth s | estimate LUT/FF/BRAM | "
          "error LUT/FF/BRAM | fits the board part |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for spec in args.designs.split(","):
        design = design_for_variant(spec)
        for family in families:
            est = estimate_resources(design, family)["total"]
            t = time.perf_counter()
            try:
                r = accelerator_resources(design, family, timeout=args.timeout)
            except ToolError as exc:
                print(f"| {spec} | {family} | — | — | — | — | — | — | {time.perf_counter() - t:.0f} | "
                      f"{est['luts']:,} / {est['ffs']:,} / {est['brams']:,} | — | {str(exc).splitlines()[0]} |",
                      flush=True)
                continue
            err = resource_error(est, r)
            part = PARTS.get(family)
            over = part.overflows(r) if part else []
            fits = "—" if part is None else ("yes" if not over else "no: " + "; ".join(over))
            secs = "cached" if r["cached"] else f"{r['seconds']:.0f}"
            e = "/".join("—" if err[k] is None else f"{err[k]:+.0%}" for k in ("luts", "ffs", "brams"))
            print(f"| {spec} | {family} | {r['luts']:,} | {r['ffs']:,} | {r['carries']:,} | {r['dsps']} | "
                  f"{r['brams']:,} | {r['ram_phases']}× | {secs} | {est['luts']:,} / {est['ffs']:,} / "
                  f"{est['brams']:,} | {e} | {fits} |", flush=True)
            rows.append((spec, family, r))
    print()
    print("Full-size built-in designs: the buffers' block RAMs by the packing rule (a lower bound), against the "
          "board parts:")
    for name in sorted(BUILTIN_DESIGNS):
        from hw.accelerator import load_design
        design = load_design(name)
        try:
            AccelPlan.of(design)
        except ValueError as exc:
            print(f"  {name}: not generated ({exc})")
            continue
        kib = sum(b.size_bytes for b in design.buffers.values()) // 1024
        # the packing rule alone (no engine synthesis): one replica per engine read port, so a lower bound of
        # what the pumped form needs (one replica per reader: the movers and the host read too)
        counts = ", ".join(f"{f} {sum(buffer_block_rams(b, f) for b in design.buffers.values()):,} "
                           f"(part: {PARTS[f].brams})" for f in families if f in PARTS)
        print(f"  {name}: {kib:,} KiB of buffers → {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
