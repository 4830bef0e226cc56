"""``lowbit`` command line: thin argparse layer over models, hw, sim, rtl_tests and reports.

Every argument is checked before any generation or simulation starts; errors name the offending value
and exit with status 2. Output files are written atomically (complete or absent).
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from models.schemes import SCHEMES
from models.units import UnitKind
from rtl_tests.streams import IcarusMissing, check_icarus

from . import synth_cli
from .unit_args import add_unit_arguments

__all__ = ["main"]

DEFAULT_LANES = 64
DEFAULT_ROWS = 16


class UsageError(Exception):
    """A refused input: printed as ``lowbit: error: ...``, exit status 2."""


def _positive_int(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def _load_matrix(path: Path, what: str) -> np.ndarray:
    if not path.exists():
        raise UsageError(f"{what} file {str(path)!r} does not exist")
    if not path.is_file():
        raise UsageError(f"{what} path {str(path)!r} is not a file")
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as exc:   # np.load raises several types for malformed files
        raise UsageError(f"could not read {what} file {str(path)!r} as a .npy array: {exc}") from None
    if not isinstance(array, np.ndarray):
        raise UsageError(f"{what} file {str(path)!r} holds an archive, not a single .npy array")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise UsageError(f"{what} file {str(path)!r} has dtype {array.dtype}; a real-valued array is needed")
    if array.ndim != 2:
        raise UsageError(f"{what} file {str(path)!r} holds an array of shape {array.shape}; a 2-D matrix is needed")
    return array.astype(np.float32, copy=False)


def _check_output_file(path: Path) -> None:
    parent = path.resolve().parent
    if not parent.is_dir():
        raise UsageError(f"output directory {str(parent)!r} does not exist")
    if path.exists() and path.is_dir():
        raise UsageError(f"output path {str(path)!r} is a directory")


def _save_npz_atomic(path: Path, **arrays) -> None:
    tmp = path.resolve().parent / f".{path.name}.partial.npz"
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# -- lowbit verilog ---------------------------------------------------------------------------------------

def _cmd_verilog(args) -> int:
    from .unit_args import params_from_args

    params = params_from_args(args)
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"output path {str(out)!r} exists and is not a directory")

    from hw.export import write_unit

    start = time.perf_counter()
    unit = write_unit(params, out)
    print(f"wrote {unit.verilog_path} and {unit.manifest_path.name} "
          f"({params.macs_per_cycle} MACs/cycle, latency {params.latency}) in {time.perf_counter() - start:.1f} s")
    return 0


# -- lowbit simulate linear --------------------------------------------------------------------------------

def _cmd_simulate_linear(args) -> int:
    from sim.linear import check_linear, simulate_linear

    out = Path(args.out)
    _check_output_file(out)
    weight = _load_matrix(Path(args.weights), "weights")
    x = _load_matrix(Path(args.inputs), "inputs")
    # Refuse bad shapes, values and parameters before any long run.
    check_linear(args.scheme, weight, x, lanes=args.lanes, rows=args.rows)
    if args.rtl:
        from rtl_tests.linear import rtl_linear

        check_icarus()
        with tempfile.TemporaryDirectory(prefix="lowbit-rtl-") as work:
            result = rtl_linear(args.scheme, weight, x, lanes=args.lanes, rows=args.rows, work_dir=Path(work))
    else:
        result = simulate_linear(args.scheme, weight, x, lanes=args.lanes, rows=args.rows)
    names, acc = result.stacked_acc()
    runs = list(result.job_cycles)
    _save_npz_atomic(out, y=result.y, acc=acc, acc_names=np.array(names), cycles=np.int64(result.cycles),
                     unit=np.str_(result.params.kind.value), runs=np.array(runs),
                     run_cycles=np.array([result.job_cycles[n] for n in runs], np.int64),
                     backend=np.str_(result.backend), scheme=np.str_(result.scheme),
                     lanes=np.int64(args.lanes), rows=np.int64(args.rows))
    print(f"{result.backend} on {result.params.kind.value}: {result.macs:,} MACs in {result.cycles:,} cycles "
          f"(utilisation {result.utilisation:.1%}) → {out}")
    return 0


# -- lowbit report linear -----------------------------------------------------------------------------------

def _cmd_report_linear(args) -> int:
    import torch

    from hw.export import write_unit
    from reports.linear import RtlCheck, write_linear_report
    from sim.linear import check_linear, prepare_linear, simulate_linear

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"output path {str(out)!r} exists and is not a directory")
    if args.rtl_tokens > args.tokens:
        raise UsageError(f"--rtl-tokens {args.rtl_tokens} exceeds --tokens {args.tokens}")
    if args.rtl_tokens:
        check_icarus()

    # A BitNet-b1.58-2B-shaped layer (FFN up-projection by default) with seeded random weights.
    g = torch.Generator().manual_seed(args.seed)
    weight = (torch.randn(args.out_features, args.in_features, generator=g) * 0.02).numpy()
    x = torch.randn(args.tokens, args.in_features, generator=g).numpy()
    check_linear(args.scheme, weight, x, lanes=args.lanes, rows=args.rows)
    _, params, _ = prepare_linear(args.scheme, weight, x[:1], lanes=args.lanes, rows=args.rows)

    t0 = time.perf_counter()
    unit = write_unit(params, out / "verilog")
    print(f"[1/3] Verilog + manifest: {unit.verilog_path} ({time.perf_counter() - t0:.1f} s)")

    result = simulate_linear(args.scheme, weight, x, lanes=args.lanes, rows=args.rows)
    names, acc = result.stacked_acc()
    _save_npz_atomic(out / "linear_sim.npz", y=result.y, acc=acc, acc_names=np.array(names),
                     cycles=np.int64(result.cycles))
    print(f"[2/3] cycle model: {result.macs:,} MACs in {result.cycles:,} cycles, utilisation "
          f"{result.utilisation:.1%} ({result.wall_seconds:.2f} s)")

    check = None
    if args.rtl_tokens:
        from rtl_tests.linear import rtl_linear

        xs = x[:args.rtl_tokens]
        sim_part = simulate_linear(args.scheme, weight, xs, lanes=args.lanes, rows=args.rows)
        with tempfile.TemporaryDirectory(prefix="lowbit-rtl-") as work:
            rtl_part = rtl_linear(args.scheme, weight, xs, lanes=args.lanes, rows=args.rows, work_dir=Path(work))
        check = RtlCheck(args.rtl_tokens, rtl_part, sim_part)
        status = "bit-exact" if check.bit_exact else "MISMATCH"
        print(f"[3/3] RTL (Icarus) on {args.rtl_tokens} token(s): {status}, {rtl_part.cycles:,} cycles "
              f"({'equal to' if check.cycles_equal else 'DIFFERENT from'} the model) ({rtl_part.wall_seconds:.1f} s)")
    else:
        print("[3/3] RTL check skipped (--rtl-tokens 0)")

    md, csv = write_linear_report(out, result, check, verilog_path=unit.verilog_path,
                                  title=f"{args.out_features}×{args.in_features} linear layer")
    print(f"report: {md} and {csv}")
    if check is not None and not (check.bit_exact and check.cycles_equal):
        print("lowbit: error: the RTL disagrees with the cycle model (see the report)", file=sys.stderr)
        return 1
    return 0


# -- lowbit simulate model / gemm ----------------------------------------------------------------------------

def _cmd_simulate_model(args) -> int:
    import json

    from reports.model import model_result

    result = model_result(args.model, args.scheme, args.design, seq_len=args.seq, decode_steps=args.decode_steps,
                          tech=args.tech, energy=args.energy, stepped=args.stepped, per_layer=args.per_layer,
                          counters=args.counters)
    if args.fpga:
        from hw.accelerator import load_design
        from hw.fpga import design_resources
        from hw.synth import ToolError, ToolMissing
        try:
            result["area"]["fpga"] = design_resources(load_design(args.design), args.fpga)
        except (ToolMissing, ToolError) as exc:      # as `lowbit synth`: 2 for a missing tool, 1 for a failed run
            print(f"lowbit: error: {exc}", file=sys.stderr)
            return 2 if isinstance(exc, ToolMissing) else 1
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    e = result["energy_j"]
    print(f"{result['model']} / {result['scheme']} on {result['design']} @ {result['clock_mhz']:g} MHz: "
          f"{result['cycles']:,} cycles = {result['latency_s'] * 1e3:,.3f} ms (prefill {result['prefill_cycles']:,}, "
          f"decode {result['decode_cycles']:,}); utilisation {result['utilisation']:.1%}")
    print(f"  energy ({e['mode']}, {e['tech']}): {e['total']:.4g} J = arith {e['arith']['total']:.3g} "
          f"(mul {e['arith']['mul']:.3g}, add {e['arith']['add']:.3g}, logic {e['arith']['logic']:.3g}) + registers "
          f"{e['registers']:.3g} + SRAM {e['sram']:.3g} + DRAM {e['dram']:.3g} + vector {e['vector']:.3g}")
    print(f"  area: {result['area']['asic_mm2']:.3f} mm² ({result['area']['tech']} estimate); model "
          f"{result['model_size_bytes']:,} bytes; simulated in {result['wall_seconds']:.2f} s")
    if args.fpga:
        f = result["area"]["fpga"]
        t = f["total"]
        print(f"  {f['family']}: {t['luts']:,} LUTs, {t['ffs']:,} FFs, {t['dsps']} DSPs in the engines; {t['brams']} "
              f"{f['block_ram']} (buffers {f['buffer_brams']})")
        for eng in f["engines"]:
            if eng["luts"] is None:
                print(f"    {eng['unit']} ×{eng['count']}: {eng['note']}")
    if args.per_layer:
        import pandas as pd

        from reports.linear import markdown_table
        from reports.model import PER_LAYER_COLUMNS
        print(markdown_table(pd.DataFrame(result["per_layer"], columns=PER_LAYER_COLUMNS)))
    return 0


def _cmd_report_model(args) -> int:
    from reports.model import model_result, write_model_report

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"output path {str(out)!r} exists and is not a directory")
    if not args.stem or args.stem.startswith(".") or Path(args.stem).name != args.stem:
        raise UsageError(f"--stem must be a plain file name without directories, not {args.stem!r}")
    result = model_result(args.model, args.scheme, args.design, seq_len=args.seq, decode_steps=args.decode_steps,
                          tech=args.tech, per_layer=True, counters=True)
    paths = write_model_report(out, result, stem=args.stem)
    print(f"{result['model']} / {result['scheme']} on {result['design']}: {result['cycles']:,} cycles, "
          f"{result['energy_j']['total'] * 1e3:.4g} mJ ({result['energy_j']['tech']}); report: "
          + ", ".join(str(p) for p in paths))
    return 0


def _cmd_simulate_gemm(args) -> int:
    import json

    from hw.accelerator import load_design
    from models.workload import Op
    from sim.model import time_op

    design = load_design(args.design)
    slot = design.engine_for("int8-mac", op="the GEMM")
    op = Op("gemm", "matmul", "linear", "int8-mac", "prefill", m=args.m, k=args.k, n=args.n, a_bits=8, b_bits=8,
            acc_bits=32, weight=True)
    compute = time_op(op, design, weights_on_chip=True, kv_on_chip=True)
    with_memory = time_op(op, design, weights_on_chip=False, kv_on_chip=True)
    result = {"design": design.name, "engine": slot.unit, "m": args.m, "k": args.k, "n": args.n,
              "cycles": compute.cycles, "utilisation": compute.macs / compute.mac_slots,
              # the op as the model simulator times it: to the last output in the buffer, operands on chip or
              # the weights streamed from DRAM
              "cycles_on_chip": compute.cycles, "cycles_with_dram": with_memory.cycles, "macs": compute.macs,
              "notes": compute.notes}
    if slot.unit == "systolic":
        from sim.systolic import gemm
        r = gemm(slot.params, args.m, args.k, args.n)
        # cycles: compute only, first to last cycle inclusive, as SCALE-Sim times a GEMM (its own figure is one
        # less: scalesim_cycles); the output-stationary drain after the last fold is drain_tail
        result.update(cycles=r.cycles, utilisation=r.utilisation, drain_tail=r.drain_tail,
                      scalesim_cycles=r.scalesim_cycles, folds=r.folds, mapping_efficiency=r.mapping_efficiency,
                      dataflow=slot.params.dataflow, array=f"{slot.params.rows}x{slot.params.cols}",
                      events=r.events())
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        drain = f" + {result['drain_tail']:,} drain" if result.get("drain_tail") else ""
        print(f"[{args.m} × {args.k}]·[{args.k} × {args.n}] on {design.name} ({slot.unit}): {result['cycles']:,} "
              f"compute cycles{drain}, utilisation {result['utilisation']:.1%}; {result['cycles_with_dram']:,} "
              "with the weights streamed from DRAM")
    return 0


# -- lowbit analyze / workload ------------------------------------------------------------------------------

def _cmd_analyze(args) -> int:
    import json

    from models.analysis import MIB, analyze

    result = analyze(args.model, args.scheme, seq_len=args.seq, decode_steps=args.decode_steps,
                     size_convention=args.size_convention, flops_convention=args.flops_convention)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['model']} under {result['scheme']} (seq {result['seq_len']}, decode {result['decode_steps']})")
    print(f"  size: {result['model_size_bytes'] / MIB:,.2f} MiB ({result['compression_vs_fp32']:.1f}x smaller "
          f"than FP32; {result['size_convention']} accounting)")
    for cat, n in result["size_bytes_by_category"].items():
        print(f"    {cat:18s} {n / MIB:12,.3f} MiB")
    print(f"  FLOPs: {result['flops'] / 1e9:,.3f} G ({result['flops_reduction_vs_fp32']:.1f}x fewer than FP32); "
          f"quantizer ops {result['quantizer_flops'] / 1e9:,.3f} G")
    for unit, macs in result["macs_by_kind"].items():
        print(f"    {unit:18s} {macs / 1e9:12,.3f} G MACs")
    print(f"  {result['convention']}")
    return 0


def _cmd_workload(args) -> int:
    from models.workload import extract_workload
    from reports.io import write_text_atomic

    wl = extract_workload(args.model, args.scheme, seq_len=args.seq, decode_steps=args.decode_steps,
                          batch=args.batch)
    out = Path(args.output)
    if out.exists() and out.is_dir():
        raise UsageError(f"output path {str(out)!r} is a directory")
    write_text_atomic(out, wl.to_json(indent=1))
    print(f"wrote {len(wl.ops)} operations ({wl.total_macs() / 1e9:,.2f} G MACs) to {out}")
    return 0


FIDELITY_NOTE = (
    "\n\nReading it: with one basis QBB's cascaded initialisation is the naive row-wise binarization itself "
    "(sign(W_r)·mean|W_r| is the L2 optimum), so qbb-n1 equals sign; its data-free distillation on random tokens "
    "does not help a single basis. BiLLM at 1.1 bits and QBB from two bases up beat the naive binarization by a "
    "wide margin (checked by tests/test_fidelity.py: the whole-model ranking with BiLLM is slow-marked, "
    "`./run.sh test -m slow`; the default suite checks QBB's ranking on the whole model and BiLLM against sign on "
    "two real MiniLM linears with real activations); the ternary schemes sit in between. These are post-training "
    "numbers on a 6-layer sentence encoder without any fine-tuning.")


def _cmd_fidelity(args) -> int:
    from models.fidelity import fidelity_table, markdown
    from reports.io import write_text_atomic

    rows = fidelity_table(args.methods or None, qbb_refine_steps=args.qbb_refine_steps,
                          qbb_distill_steps=args.qbb_distill_steps)
    table = markdown(rows)
    command = "lowbit fidelity" + (f" --methods {' '.join(args.methods)}" if args.methods else "") + \
        (f" --qbb-refine-steps {args.qbb_refine_steps}" if args.qbb_refine_steps != 50 else "") + \
        (f" --qbb-distill-steps {args.qbb_distill_steps}" if args.qbb_distill_steps != 60 else "") + \
        (f" -o {args.output}" if args.output else "")
    text = (f"# Sentence-embedding fidelity on all-MiniLM-L6-v2 (real weights)\n\nGenerated by `{command}`.\n\n"
            "Cosine similarity of each of the 64 fixed evaluation sentences' embeddings (mean pooling, L2 "
            "normalised) with the full-precision model's; the transformer-block linears (Q, K, V, O, FFN up and "
            "down) are quantized, embeddings stay FP32. Weight-only rows keep activations and attention in FP32. "
            "Sentences: models/data/sentences.json.\n\n" + table + FIDELITY_NOTE + "\n")
    if args.output:
        write_text_atomic(Path(args.output), text)
        print(f"wrote {args.output}")
    print(table)
    return 0


# -- parser -------------------------------------------------------------------------------------------------

def _engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lanes", type=_positive_int, default=DEFAULT_LANES,
                   help=f"reduction elements per cycle (default {DEFAULT_LANES})")
    p.add_argument("--rows", type=_positive_int, default=DEFAULT_ROWS,
                   help=f"outputs computed in parallel (default {DEFAULT_ROWS})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lowbit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    units = [k.value for k in UnitKind if k not in (UnitKind.FP_VECTOR, UnitKind.FP_MAC)]
    v = sub.add_parser("verilog", help="generate a unit's Verilog and JSON manifest")
    add_unit_arguments(v)
    v.add_argument("-o", "--output", required=True, help="output directory")
    v.set_defaults(func=_cmd_verilog)

    synth_cli.register(sub)

    s = sub.add_parser("simulate", help="run a workload on the cycle model (or the RTL)")
    ssub = s.add_subparsers(dest="what", required=True)
    lin = ssub.add_parser("linear", help="one quantized linear layer")
    lin.add_argument("--scheme", required=True,
                     help=f"NAME[:key=value,...], NAME one of {', '.join(SCHEMES)}")
    lin.add_argument("--weights", required=True, help="float weights W, .npy of shape [out, in]")
    lin.add_argument("--inputs", required=True, help="float inputs X, .npy of shape [tokens, in]")
    _engine_args(lin)
    lin.add_argument("--rtl", action="store_true", help="run the generated Verilog in Icarus instead")
    lin.add_argument("--out", required=True, help="output .npz (fields y, acc, cycles)")
    lin.set_defaults(func=_cmd_simulate_linear)

    from hw.accelerator import BUILTIN_DESIGNS
    from hw.synth import FAMILIES
    from sim.energy import ENERGY_MODES
    from sim.tech import TECHNOLOGIES

    design_help = f"built-in design ({', '.join(BUILTIN_DESIGNS)}) or a .toml/.yaml/.json file"
    sm = ssub.add_parser("model", help="a whole model on an accelerator: cycles, energy, area")
    sm.add_argument("--model", required=True, help="built-in model name or a config.json path")
    sm.add_argument("--scheme", required=True, help=f"NAME[:key=value,...], NAME one of {', '.join(SCHEMES)}")
    sm.add_argument("--design", required=True, help=design_help)
    sm.add_argument("--seq", type=_positive_int, default=128, help="prefill tokens (default 128)")
    sm.add_argument("--decode-steps", type=_non_negative_int, default=0)
    tech_help = f"technology node: {' or '.join(TECHNOLOGIES)} (default 45nm)"
    sm.add_argument("--tech", default="45nm", help=tech_help)
    sm.add_argument("--energy", choices=ENERGY_MODES, default="full")
    sm.add_argument("--stepped", action="store_true", help="step the matmuls cycle by cycle (small shapes)")
    sm.add_argument("--per-layer", action="store_true", help="add a table of every operation")
    sm.add_argument("--counters", action="store_true", help="list every energy counter in the JSON")
    sm.add_argument("--fpga", choices=FAMILIES,
                    help="also synthesise the engines for this FPGA family (cached) and count buffer block RAMs")
    sm.add_argument("--json", action="store_true")
    sm.set_defaults(func=_cmd_simulate_model)

    sg = ssub.add_parser("gemm", help="one int8 GEMM [M × K]·[K × N] on a design's int8 engine or systolic array")
    sg.add_argument("--m", type=_positive_int, required=True)
    sg.add_argument("--k", type=_positive_int, required=True, help="the reduction dimension")
    sg.add_argument("--n", type=_positive_int, required=True)
    sg.add_argument("--design", required=True, help=design_help)
    sg.add_argument("--json", action="store_true")
    sg.set_defaults(func=_cmd_simulate_gemm)

    from models.config import BUILTIN_MODELS

    model_help = f"built-in name ({', '.join(BUILTIN_MODELS)}) or a config.json path"
    scheme_help = f"NAME[:key=value,...], NAME one of {', '.join(SCHEMES)}"
    a = sub.add_parser("analyze", help="model size and operation counts under a scheme")
    a.add_argument("--model", required=True, help=model_help)
    a.add_argument("--scheme", required=True, help=scheme_help)
    a.add_argument("--seq", type=_positive_int, default=128, help="sequence length (default 128)")
    a.add_argument("--decode-steps", type=_non_negative_int, default=0, help="decoder steps after the prefill")
    a.add_argument("--size-convention", choices=("full", "paper"), default="full",
                   help="full: every parameter; paper: the accounting that reproduces the scheme's paper")
    a.add_argument("--flops-convention", choices=("bops64", "macs"), default="bops64")
    a.add_argument("--json", action="store_true", help="print one JSON object")
    a.set_defaults(func=_cmd_analyze)

    w = sub.add_parser("workload", help="write the operation list of a model under a scheme (JSON)")
    w.add_argument("--model", required=True, help=model_help)
    w.add_argument("--scheme", required=True, help=scheme_help)
    w.add_argument("--seq", type=_positive_int, default=128)
    w.add_argument("--decode-steps", type=_non_negative_int, default=0)
    w.add_argument("--batch", type=_positive_int, default=1)
    w.add_argument("-o", "--output", required=True, help="output .json")
    w.set_defaults(func=_cmd_workload)

    f = sub.add_parser("fidelity", help="MiniLM sentence-embedding fidelity of post-training schemes")
    f.add_argument("--methods", nargs="*", help="subset of methods (default: all)")
    f.add_argument("--qbb-refine-steps", type=_non_negative_int, default=50,
                   help="refinement steps per phase of the qbb-nN-full rows (default 50)")
    f.add_argument("--qbb-distill-steps", type=_non_negative_int, default=60,
                   help="scale-distillation steps of the qbb-nN-full rows (default 60)")
    f.add_argument("-o", "--output", help="write the Markdown page here")
    f.set_defaults(func=_cmd_fidelity)

    r = sub.add_parser("report", help="run a built-in flow and write a Markdown + CSV report")
    rsub = r.add_subparsers(dest="what", required=True)
    rl = rsub.add_parser("linear", help="Verilog + cycle model + RTL check of one layer (the main job)")
    rl.add_argument("--scheme", default="bitnet-b1.58",
                    help=f"NAME[:key=value,...], NAME one of {', '.join(SCHEMES)} (default bitnet-b1.58)")
    rl.add_argument("--in-features", type=_positive_int, default=2560)
    rl.add_argument("--out-features", type=_positive_int, default=6912)
    rl.add_argument("--tokens", type=_positive_int, default=8)
    rl.add_argument("--rtl-tokens", type=_non_negative_int, default=1,
                    help="tokens also run on the RTL in Icarus (0 skips the RTL check)")
    rl.add_argument("--seed", type=_non_negative_int, default=0)
    _engine_args(rl)
    rl.add_argument("-o", "--output", default="out", help="output directory (default: out)")
    rl.set_defaults(func=_cmd_report_linear)
    rm = rsub.add_parser("model", help="a whole model on a design: summary and per-operation table (MD, CSV, JSON)")
    rm.add_argument("--model", default="bert-base", help=f"{model_help} (default bert-base)")
    rm.add_argument("--scheme", default="bitnet-b1.58", help=f"{scheme_help} (default bitnet-b1.58)")
    rm.add_argument("--design", default="ternary", help=f"{design_help} (default ternary)")
    rm.add_argument("--seq", type=_positive_int, default=128)
    rm.add_argument("--decode-steps", type=_non_negative_int, default=0)
    rm.add_argument("--tech", default="45nm", help=tech_help)
    rm.add_argument("--stem", default="model", help="file names: STEM.md, STEM.csv, STEM.json (default model)")
    rm.add_argument("-o", "--output", default="out", help="output directory (default: out)")
    rm.set_defaults(func=_cmd_report_model)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, ValueError, TypeError, IcarusMissing) as exc:
        print(f"lowbit: error: {exc}", file=sys.stderr)
        return 2
