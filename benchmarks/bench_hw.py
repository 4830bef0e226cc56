"""The hardware table: every unit at three sizes on iCE40 UP5K, ECP5-85F and Xilinx 7 (synthesis only), with
an ASIC transistor estimate, against an unpipelined build of the same unit (a benchmark, not a test).

    .venv/bin/python benchmarks/bench_hw.py [--quick] [--csv out/hw_table.csv]

Per unit and size it prints LUTs per MAC lane (lanes × rows; LUT6 on Xilinx, LUT4 on iCE40/ECP5), flip-flops,
carry cells, DSPs, Fmax (nextpnr, seed 1) and the transistor estimate; then Fmax of the same unit built with
``tree_stages=0`` (an unpipelined reduction tree) and the ratio. Goals from the issue: XNOR-popcount ≤ 1.5 LUT6
per lane on Xilinx and ≥ 200 MHz on ECP5; ternary 2b × 8b ≤ 12 LUT6 per lane; every unit ≥ 2× the Fmax of its
unpipelined build (toolchain.md's naive 64-lane XNOR-popcount: 29 MHz iCE40, 87 MHz ECP5). Results are cached
(``~/.cache/lowbit/synth``), so a rerun prints at once.
"""

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hw.params import (BammParams, BinaryBasisParams, Int8MacParams, TernaryMacParams,  # noqa: E402
                       XnorPopcountParams)
from hw.synth import ToolError, synthesize  # noqa: E402

SIZES = {
    "xnor-popcount": [XnorPopcountParams(lanes=16, rows=1, max_k=64), XnorPopcountParams(lanes=64, rows=1, max_k=64),
                      XnorPopcountParams(lanes=64, rows=4, max_k=768)],
    "ternary-mac": [TernaryMacParams(lanes=8, rows=2, max_k=256), TernaryMacParams(lanes=16, rows=4, max_k=1024),
                    TernaryMacParams(lanes=32, rows=4, max_k=4096)],
    "bamm": [BammParams(lanes=16, rows=4, max_k=128), BammParams(lanes=64, rows=4, max_k=128),
             BammParams(lanes=64, rows=8, max_k=512)],
    "binary-basis": [BinaryBasisParams(lanes=8, rows=1, max_k=256, n_bases=4),
                     BinaryBasisParams(lanes=16, rows=2, max_k=1024, n_bases=4),
                     BinaryBasisParams(lanes=16, rows=2, max_k=1024, n_bases=4, lut_group=4)],
    "int8-mac": [Int8MacParams(lanes=4, rows=2, max_k=256), Int8MacParams(lanes=8, rows=2, max_k=1024),
                 Int8MacParams(lanes=16, rows=2, max_k=1024)],
}


def _fmt(v, spec=""):
    return "—" if v is None else format(v, spec)


def _error_line(error) -> str:
    """The tool's own ERROR line when its log tail has one, else the first line of the message."""
    lines = str(error).splitlines()
    return next((line for line in reversed(lines) if "ERROR" in line), lines[0] if lines else "")


class _Failed:
    """A synthesis the tools could not finish (reported in the row instead of stopping the table)."""

    def __init__(self, family, error):
        self.luts = self.ffs = self.carries = self.dsps = self.transistors = self.fmax_mhz = self.synth_note = None
        self.fmax_note = f"{family} failed: {_error_line(error)[:100]}"


def _synth(params, family, **kwargs):
    try:
        return synthesize(params, family, **kwargs)
    except ToolError as exc:
        print(f"  ({params.module_name} on {family}: {_error_line(exc)[:160]})", flush=True)
        return _Failed(family, exc)


def _per(v, n):
    return None if v is None else v / n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one size per unit")
    ap.add_argument("--csv", help="also write every result as CSV")
    args = ap.parse_args()
    rows, results = [], []
    for unit, sizes in SIZES.items():
        for p in sizes[:1] if args.quick else sizes:
            lanes = p.lanes * p.rows
            res = {f: _synth(p, f) for f in ("xilinx", "ice40", "ecp5")}
            flat = replace(p, tree_stages=0)
            res_flat = {f: _synth(flat, f, transistors=False) for f in ("ice40", "ecp5")}
            results += [r for r in (*res.values(), *res_flat.values()) if not isinstance(r, _Failed)]
            row = {"unit": unit, "size": f"{p.lanes}x{p.rows}" + (f" lut{p.lut_group}" if getattr(p, "lut_group", 0)
                                                                    else ""),
                   "lut6/lane": _per(res["xilinx"].luts, lanes), "carry4": res["xilinx"].carries,
                   "ff": res["xilinx"].ffs, "dsp(x7)": res["xilinx"].dsps,
                   "lut4/lane ice40": _per(res["ice40"].luts, lanes), "fmax ice40": res["ice40"].fmax_mhz,
                   "fmax ice40 flat": res_flat["ice40"].fmax_mhz,
                   "lut4/lane ecp5": _per(res["ecp5"].luts, lanes), "fmax ecp5": res["ecp5"].fmax_mhz,
                   "fmax ecp5 flat": res_flat["ecp5"].fmax_mhz, "transistors": res["xilinx"].transistors,
                   "ice40 note": (res["ice40"].fmax_note or "") if res["ice40"].fmax_mhz is None else "",
                   "ecp5 note": "ECP5 LUTs by classic abc (abc9 asserts)" if res["ecp5"].synth_note else ""}
            for fam in ("ice40", "ecp5"):
                a, b = row[f"fmax {fam}"], row[f"fmax {fam} flat"]
                row[f"x {fam}"] = a / b if a and b else None
            rows.append(row)
            print(f"{unit:14s} {row['size']:11s} {_fmt(row['lut6/lane'], '6.2f')} LUT6/lane {_fmt(row['ff'], '6d')} FF  "
                  f"iCE40 {_fmt(row['fmax ice40'], '.1f')} MHz (flat {_fmt(row['fmax ice40 flat'], '.1f')}, "
                  f"{_fmt(row['x ice40'], '.2f')}x)  ECP5 {_fmt(row['fmax ecp5'], '.1f')} MHz "
                  f"(flat {_fmt(row['fmax ecp5 flat'], '.1f')}, {_fmt(row['x ecp5'], '.2f')}x)  "
                  f"{_fmt(row['transistors'], ',')} transistors {row['ice40 note']} {row['ecp5 note']}", flush=True)
    table = pd.DataFrame(rows)
    print()
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    if args.csv:
        from hw.synth import write_csv
        write_csv(results, Path(args.csv))
        print(f"\nwrote {args.csv}")


if __name__ == "__main__":
    main()
