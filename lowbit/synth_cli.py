"""``lowbit synth``: FPGA resources, Fmax and a transistor estimate of one unit (see :mod:`hw.synth`).

Registered on the main parser by ``lowbit.cli`` through :func:`register`. The unit's parameter object is
built generically from its dataclass fields: the common flags (``--lanes``, ``--rows``, ``--max-k``,
``--tree-stages``, ``--act-bits``, ``--acc-width``) and any number of ``--param key=value`` for
unit-specific fields; the parameter class itself refuses unknown keys and bad values. Refused input raises
``ValueError``/``TypeError`` naming the value before any tool runs (the main CLI prints it and exits 2).
"""

import argparse
import json
import sys
from pathlib import Path

from .unit_args import add_unit_arguments, params_from_args, parse_param_value

__all__ = ["register", "run"]

def _seed(text: str) -> int:
    value = parse_param_value(text)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"--seed must be a non-negative integer, not {text!r}")
    return value


def _check_csv_path(text: str) -> Path:
    from .cli import check_output      # the CLI's one output-path rule (imported here: cli imports this module)

    return check_output(text, "--csv path")


def _summary(r) -> str:
    parts = [f"{r.luts:,} LUTs", f"{r.ffs:,} FFs", f"{r.carries:,} carry cells", f"{r.brams} BRAMs", f"{r.dsps} DSPs"]
    fmax = f"Fmax {r.fmax_mhz:.2f} MHz" if r.fmax_mhz is not None else f"no Fmax ({r.fmax_note})"
    tr = f"{r.transistors:,} transistors (CMOS estimate)" if r.transistors is not None else "no transistor estimate"
    origin = "cached" if r.cached else f"{r.seconds:.1f} s"
    return (f"{r.unit} {r.module} on {r.family}: {', '.join(parts)}; {fmax}; {tr}; "
            f"{r.macs_per_cycle} MACs/cycle ({origin})")


def run(args) -> int:
    """Handler of ``lowbit synth`` (``args`` from the parser :func:`register` builds)."""
    from hw.synth import ToolError, ToolMissing, check_family, synthesize, write_csv

    check_family(args.family)
    seed = _seed(args.seed)
    csv_path = _check_csv_path(args.csv) if args.csv is not None else None
    params = params_from_args(args)
    try:
        result = synthesize(params, args.family, fmax=not args.no_fmax, transistors=not args.no_transistors,
                            seed=seed, cache_dir=args.cache_dir, use_cache=not args.no_cache)
    except ToolMissing as exc:
        print(f"lowbit: error: {exc}", file=sys.stderr)
        return 2
    except ToolError as exc:
        print(f"lowbit: error: {exc}", file=sys.stderr)
        return 1
    if csv_path is not None:
        write_csv([result], csv_path)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(_summary(result))
        if csv_path is not None:
            print(f"wrote {csv_path}")
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``synth`` sub-command to ``subparsers`` (from ``parser.add_subparsers()``); returns its parser."""
    from hw.synth import FAMILIES

    p = subparsers.add_parser(
        "synth", help="FPGA resources, Fmax and transistor estimate of a unit (Yosys/nextpnr)",
        description="Synthesise a unit with the YoWASP Yosys/nextpnr builds: LUT/FF/carry/BRAM/DSP counts, "
                    "Fmax after place and route (ice40, ecp5) and a CMOS transistor estimate. Results are "
                    "cached (default $LOWBIT_CACHE or ~/.cache/lowbit/synth).")
    add_unit_arguments(p)
    p.add_argument("--family", required=True, help=f"FPGA family: {'|'.join(FAMILIES)}")
    p.add_argument("--no-fmax", action="store_true", help="skip place and route")
    p.add_argument("--no-transistors", action="store_true", help="skip the CMOS transistor estimate")
    p.add_argument("--seed", default="1", help="nextpnr placement seed (default 1)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--csv", metavar="FILE", help="also write the result as a one-row CSV table")
    p.add_argument("--cache-dir", dest="cache_dir", help="result cache directory")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the result cache")
    p.set_defaults(func=run)
    return p
