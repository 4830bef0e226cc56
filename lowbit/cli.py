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

from models.schemes import SCHEMES
from rtl_tests.simulators import DEFAULT_SIMULATOR, SIMULATORS, SimulatorMissing, check_simulator

from . import board_cli, synth_cli
from .unit_args import add_unit_arguments

__all__ = ["main", "run"]

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


def _mapping_overrides(text: str | None) -> dict | None:
    """``--mapping key=value,...``: overrides of the design file's ``[mapping]`` table; an unknown key or a bad value
    is refused (``ValueError``, exit 2) before the run."""
    if text is None:
        return None
    from hw.accelerator import MappingPolicy

    try:
        overrides = MappingPolicy.parse_overrides(text)
        MappingPolicy().with_overrides(overrides)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--mapping: {exc}") from None
    return overrides


def _load_matrix(path: Path, what: str):
    import numpy as np

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


def check_output(path, what: str = "output path", *, directory: bool = False) -> Path:
    """The one rule for every command's output location, checked before any generation starts.

    An output *file* (``directory=False``) must be a missing or regular file in an existing directory; an output
    *directory* may be missing if its parent exists (the writer creates that last level only). Either way the
    directory written into must accept a new file: probed by creating and removing a temporary file, because
    permission bits alone do not tell (root ignores them, a read-only mount does not show in them). Raises
    ``ValueError`` naming the path (``what`` names the option in the message, e.g. ``"--csv path"``).
    """
    path = Path(path)
    shown = str(path)
    if directory:
        if path.exists() and not path.is_dir():
            raise ValueError(f"{what} {shown!r} exists and is not a directory")
        target = path if path.is_dir() else path.parent
    else:
        if path.is_dir():
            raise ValueError(f"{what} {shown!r} is a directory; give a file name")
        if path.exists() and not path.is_file():        # e.g. /dev/null: the atomic rename would replace it
            raise ValueError(f"{what} {shown!r} exists and is not a regular file")
        target = path.parent
    if not target.is_dir():
        state = "is not a directory" if target.exists() else "does not exist"
        raise ValueError(f"cannot write to {shown!r}: directory {str(target)!r} {state}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".lowbit-probe-", dir=target)
    except OSError as exc:
        raise ValueError(f"cannot write to {shown!r}: directory {str(target)!r} is not writable "
                         f"({exc.strerror})") from None
    os.close(fd)
    os.unlink(probe)
    return path


def _save_npz_atomic(path: Path, **arrays) -> None:
    # Imported where used, like this module's other helpers, so that commands which write no arrays (and
    # `lowbit --help`) import nothing more.
    from fsio import write_npz_atomic

    write_npz_atomic(path, **arrays)


# -- lowbit verilog ---------------------------------------------------------------------------------------

def _cmd_verilog(args) -> int:
    if args.unit == "accelerator":
        return _verilog_accelerator(args)
    if args.design is not None or args.imem_depth is not None or args.ram_form is not None:
        raise UsageError("--design, --imem-depth and --ram-form are for `lowbit verilog accelerator`, not for a unit")
    from .unit_args import params_from_args

    params = params_from_args(args)
    out = check_output(args.output, directory=True)

    from hw.export import write_unit

    start = time.perf_counter()
    unit = write_unit(params, out)
    print(f"wrote {unit.verilog_path} and {unit.manifest_path.name} "
          f"({params.macs_per_cycle} MACs/cycle, latency {params.latency}) in {time.perf_counter() - start:.1f} s")
    return 0


def _verilog_accelerator(args) -> int:
    """``lowbit verilog accelerator --design D -o DIR``: the whole accelerator's Verilog and manifest."""
    from hw.accel.plan import DEFAULT_IMEM_DEPTH, AccelPlan
    from hw.accelerator import load_design

    from .unit_args import COMMON_FLAGS

    if args.design is None:
        raise UsageError("lowbit verilog accelerator needs --design (a built-in design name or a design file)")
    given = [f"--{f.replace('_', '-')}" for f in COMMON_FLAGS if getattr(args, f) is not None] + \
        (["--param"] if args.param else [])
    if given:
        raise UsageError(f"{', '.join(given)}: unit options; an accelerator takes its units from --design")
    plan = AccelPlan.of(load_design(args.design), imem_depth=args.imem_depth or DEFAULT_IMEM_DEPTH)
    out = check_output(args.output, directory=True)

    from hw.accel.export import write_accelerator

    start = time.perf_counter()
    verilog_path, manifest_path = write_accelerator(plan, out, ram_form=args.ram_form or "behavioral")
    b = ", ".join(f"{x.name} {x.size_bytes:,} B in {x.line_bytes}-byte lines" for x in plan.buffers)
    print(f"wrote {verilog_path} and {manifest_path.name} ({plan.design.name}: {b}; {plan.imem_depth} "
          f"instructions) in {time.perf_counter() - start:.1f} s")
    return 0


# -- lowbit verify accelerator -----------------------------------------------------------------------------

def _cmd_verify_accelerator(args) -> int:
    """The accelerator RTL against the simulator and ``models``: whole blocks (``--shapes``, the default) or random
    programs (``--programs``); a table, exit 1 on any difference."""
    check_simulator(args.simulator)
    if args.programs is not None or args.stall:
        if args.shapes:
            raise UsageError("--shapes runs blocks; --programs and --stall run random programs: give one or the other")
        return _verify_random_programs(args)
    return _verify_shapes(args)


def _split(text: str | None, what: str) -> list[str]:
    items = [x.strip() for x in (text or "").split(",") if x.strip()]
    if text is not None and not items:
        raise UsageError(f"{what}: give at least one {what.lstrip('-').rstrip('s')}")
    return items


def _verify_shapes(args) -> int:
    from rtl_tests.accel import (BLOCK_DESIGNS, DEFAULT_SHAPES, compile_pairs, design_for_variant, parse_shape,
                                 verify_shapes)

    shapes, designs = _split(args.shapes, "--shapes"), _split(args.designs, "--designs")
    try:
        for sh in shapes:
            parse_shape(sh)
        for d in designs:
            design_for_variant(d)
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None
    if not shapes and not designs:
        pairs = list(DEFAULT_SHAPES)
    elif not designs:
        pairs = [(sh, BLOCK_DESIGNS[parse_shape(sh).block]) for sh in shapes]
    else:
        pairs = [(sh, d) for sh in (shapes or list(dict.fromkeys(s for s, _ in DEFAULT_SHAPES))) for d in designs]
    # every pair must compile and every design build before any RTL run; a pair whose design lacks the block's
    # engine is skipped when the user crossed lists, refused when they named it alone
    runnable = []
    for pair in pairs:
        try:
            compile_pairs([pair], seed=args.seed)
        except (ValueError, OSError) as exc:
            if len(pairs) == 1 or (shapes and not designs):
                raise UsageError(str(exc)) from None
            _note(f"skipped: {exc}")
            continue
        runnable.append(pair)
    if not runnable:
        raise UsageError("no shape runs on any of the designs given (each was skipped above)")
    rows = verify_shapes(runnable, seed=args.seed, simulator=args.simulator, log=_note)
    print("| shape | design | instructions | sim cycles | RTL cycles | cycles equal | output = models/ | "
          "bytes = sim |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        yes = {True: "yes", False: "**no**"}
        print(f"| {r.shape} | {r.design} | {r.instructions} | {r.sim_cycles:,} | {r.rtl_cycles:,} | "
              f"{yes[r.sim_cycles == r.rtl_cycles]} | {yes[r.outputs_equal]} | {yes[r.bytes_equal]} |")
    bad = [f"{r.shape} on {r.design}" for r in rows if not r.ok]
    print(f"{'all equal' if not bad else 'DIFFERENT: ' + '; '.join(bad)} ({len(rows)} blocks, {args.simulator}; "
          f"seed {args.seed})")
    return 1 if bad else 0


def _verify_random_programs(args) -> int:
    from rtl_tests.accel import design_for, verify

    designs = _split(args.designs, "--designs") or ["random:2", "random:5", "random:15", "random:18", "random:19"]
    from hw.accel.plan import AccelPlan
    for d in designs:                      # every design must load and be buildable before any run
        AccelPlan.of(design_for(d))
    rows = verify(designs, programs=args.programs or 20, seed=args.seed, simulator=args.simulator, stall=args.stall,
                  log=lambda line: print(line, file=sys.stderr))
    cyc = "RTL ≥ sim" if args.stall else "cycles equal"
    print(f"| design | programs | instructions | MATMULs | POSTs | sim cycles | RTL cycles | {cyc} | bytes equal | s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.design} | {r.programs} | {r.instructions:,} | {r.matmuls:,} | {r.posts:,} | {r.sim_cycles:,} | "
              f"{r.rtl_cycles:,} | {r.cycles_equal}/{r.programs} | {r.bytes_equal}/{r.programs} | "
              f"{r.seconds:.1f} |")
    bad = [r.design for r in rows if not r.ok]
    print(f"{'all equal' if not bad else 'DIFFERENT on ' + ', '.join(bad)} ({args.simulator}"
          f"{', stalling DRAM' if args.stall else ''}; seed {args.seed})")
    return 1 if bad else 0


# -- lowbit simulate linear --------------------------------------------------------------------------------

def _cmd_simulate_linear(args) -> int:
    from sim.linear import check_linear, simulate_linear

    out = check_output(args.out, "--out path")
    weight = _load_matrix(Path(args.weights), "weights")
    x = _load_matrix(Path(args.inputs), "inputs")
    # Refuse bad shapes, values and parameters before any long run.
    check_linear(args.scheme, weight, x, lanes=args.lanes, rows=args.rows)
    if args.rtl:
        from rtl_tests.linear import rtl_linear

        check_simulator(args.simulator)
        with tempfile.TemporaryDirectory(prefix="lowbit-rtl-") as work:
            result = rtl_linear(args.scheme, weight, x, lanes=args.lanes, rows=args.rows, work_dir=Path(work),
                                simulator=args.simulator, log=_note)
    else:
        result = simulate_linear(args.scheme, weight, x, lanes=args.lanes, rows=args.rows)
    import numpy as np

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

def _note(line: str) -> None:
    """A progress line of a long step, on stderr so that stdout stays the result."""
    print(f"      {line}", file=sys.stderr, flush=True)


def _cmd_report_linear(args) -> int:
    t0 = time.perf_counter()
    import numpy as np
    import torch

    from hw.export import write_unit
    from reports.linear import RtlCheck, write_linear_report
    from sim.linear import check_linear, prepare_linear, simulate_linear

    out = check_output(args.output, directory=True)
    if args.rtl_tokens > args.tokens:
        raise UsageError(f"--rtl-tokens {args.rtl_tokens} exceeds --tokens {args.tokens}")
    if args.rtl_tokens:
        check_simulator(args.simulator)

    # A BitNet-b1.58-2B-shaped layer (FFN up-projection by default) with seeded random weights.
    g = torch.Generator().manual_seed(args.seed)
    weight = (torch.randn(args.out_features, args.in_features, generator=g) * 0.02).numpy()
    x = torch.randn(args.tokens, args.in_features, generator=g).numpy()
    check_linear(args.scheme, weight, x, lanes=args.lanes, rows=args.rows)
    _, params, _ = prepare_linear(args.scheme, weight, x[:1], lanes=args.lanes, rows=args.rows)
    print(f"[1/4] layer {args.out_features}×{args.in_features} under {args.scheme}, {args.tokens} tokens, on "
          f"{params.kind.value} {args.lanes}×{args.rows} ({time.perf_counter() - t0:.1f} s, imports included)")

    t = time.perf_counter()
    unit = write_unit(params, out / "verilog")
    print(f"[2/4] Verilog + manifest: {unit.verilog_path} ({time.perf_counter() - t:.1f} s)")

    t = time.perf_counter()
    result = simulate_linear(args.scheme, weight, x, lanes=args.lanes, rows=args.rows)
    names, acc = result.stacked_acc()
    _save_npz_atomic(out / "linear_sim.npz", y=result.y, acc=acc, acc_names=np.array(names),
                     cycles=np.int64(result.cycles))
    print(f"[3/4] cycle model: {result.macs:,} MACs in {result.cycles:,} cycles, utilisation "
          f"{result.utilisation:.1%} ({time.perf_counter() - t:.1f} s)")

    check = None
    if args.rtl_tokens:
        from rtl_tests.linear import rtl_linear

        t = time.perf_counter()
        xs = x[:args.rtl_tokens]
        sim_part = simulate_linear(args.scheme, weight, xs, lanes=args.lanes, rows=args.rows)
        with tempfile.TemporaryDirectory(prefix="lowbit-rtl-") as work:
            rtl_part = rtl_linear(args.scheme, weight, xs, lanes=args.lanes, rows=args.rows, work_dir=Path(work),
                                  simulator=args.simulator, exported=unit, log=_note)
        check = RtlCheck(args.rtl_tokens, rtl_part, sim_part, simulator=args.simulator)
        status = "bit-exact" if check.bit_exact else "MISMATCH"
        print(f"[4/4] RTL ({args.simulator}) on {args.rtl_tokens} token(s): {status}, {rtl_part.cycles:,} cycles "
              f"({'equal to' if check.cycles_equal else 'DIFFERENT from'} the model) "
              f"({time.perf_counter() - t:.1f} s)")
    else:
        print("[4/4] RTL check skipped (--rtl-tokens 0)")

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

    from reports.model import model_result, resolve_design

    if args.fpga_estimate and not args.fpga:
        raise UsageError("--fpga-estimate needs --fpga FAMILY (the family to estimate for)")
    program = None
    if args.program:
        from isa.encoding import read
        if args.mapping:
            raise UsageError("--mapping does not apply to --program: a program was compiled under its own mapping")
        program = read(args.program)
    result = model_result(args.model, args.scheme, args.design, seq_len=args.seq, decode_steps=args.decode_steps,
                          tech=args.tech, energy=args.energy, stepped=args.stepped, per_layer=args.per_layer,
                          counters=args.counters, mapping=_mapping_overrides(args.mapping), program=program)
    if args.fpga:
        from hw.accelerator import load_design
        from hw.fpga import design_resources
        from hw.synth import ToolError, ToolMissing
        try:
            design = load_design(resolve_design(args.design, args.scheme)[0])
            with _ticker(f"synthesising the {design.name} accelerator for {args.fpga} (cached afterwards)") as tick:
                result["area"]["fpga"] = design_resources(design, args.fpga,
                                                          synthesize_accelerator=not args.fpga_estimate,
                                                          timeout=args.synth_timeout, progress=tick)
        except (ToolMissing, ToolError) as exc:      # as `lowbit synth`: 2 for a missing tool, 1 for a failed run
            print(f"lowbit: error: {exc}", file=sys.stderr)
            return 2 if isinstance(exc, ToolMissing) else 1
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    e = result["energy_j"]
    if result["design_source"] != "given":
        print(f"design: {result['design']} ({result['design_source']})")
    if result["timed"]:
        print(f"{result['model']} / {result['scheme']} on {result['design']} @ {result['clock_mhz']:g} MHz: "
              f"{result['cycles']:,} cycles = {result['latency_s'] * 1e3:,.3f} ms (prefill "
              f"{result['prefill_cycles']:,}, decode {result['decode_cycles']:,}); utilisation "
              f"{result['utilisation']:.1%}")
    else:           # arith-only on buffers too small to time: the operation counts are still priced
        print(f"{result['model']} / {result['scheme']} on {result['design']} @ {result['clock_mhz']:g} MHz: not "
              f"timed ({result['untimed_reason']}); the arithmetic-only energy counts the operations")
    print(f"  energy ({e['mode']}, {e['tech']}): {e['total']:.4g} J = arith {e['arith']['total']:.3g} "
          f"(mul {e['arith']['mul']:.3g}, add {e['arith']['add']:.3g}, logic {e['arith']['logic']:.3g}) + registers "
          f"{e['registers']:.3g} + SRAM {e['sram']:.3g} + DRAM {e['dram']:.3g} + vector {e['vector']:.3g}")
    if result["timed"]:
        print("  " + program_summary(result["program"], result["cycles"]))
    print(f"  area: {result['area']['asic_mm2']:.3f} mm² ({result['area']['tech']} estimate); model "
          f"{result['model_size_bytes']:,} bytes; simulated in {result['wall_seconds']:.2f} s")
    if args.fpga:
        for line in fpga_lines(result["area"]["fpga"]):
            print(f"  {line}")
    if args.per_layer:
        import pandas as pd

        from reports.linear import markdown_table
        from reports.model import PER_LAYER_COLUMNS
        print(markdown_table(pd.DataFrame(result["per_layer"], columns=PER_LAYER_COLUMNS)))
    return 0


def fpga_lines(f: dict) -> list[str]:
    """``--fpga`` in words: the synthesised accelerator, the estimate it replaces, the error between them."""
    est, syn, ram = f["estimate"]["total"], f["synthesized"], f["block_ram"]
    out = []
    if syn is not None:
        how = "cached" if syn["cached"] else f"{syn['seconds']:,.0f} s"
        out.append(f"{f['family']}, the whole accelerator synthesised ({how}): {syn['luts']:,} LUTs, {syn['ffs']:,} "
                   f"FFs, {syn['carries']:,} carries, {syn['dsps']} DSPs, {syn['brams']:,} {ram}; its block-RAM "
                   f"buffers need a memory clock of {syn['ram_phases']}× the system clock")
    else:
        out.append(f"{f['family']}: the accelerator not synthesised: {f['synthesis_problem']}")
    out.append(f"estimate (engines synthesised one by one, buffers by packing rule): {est['luts']:,} LUTs, "
               f"{est['ffs']:,} FFs, {est['dsps']} DSPs, {est['brams']:,} {ram}")
    if f["error"] is not None:
        err = ", ".join(f"{k} {v:+.0%}" for k, v in f["error"].items() if v is not None)
        out.append(f"estimate's error against synthesis: {err}")
    for eng in f["estimate"]["engines"]:
        if eng["luts"] is None:
            out.append(f"  {eng['unit']} ×{eng['count']}: {eng['note']}")
    return out


class _ticker:
    """Elapsed time of a long step on stderr (rewritten in place on a terminal, a line a minute otherwise); the
    step's own ``progress(text)`` messages replace the label."""

    def __init__(self, label: str):
        self.label, self.t0, self._stop, self._minute = label, time.perf_counter(), None, 0

    def __call__(self, text: str) -> None:
        self.label = text
        self._show(force=True)

    def _show(self, force: bool = False) -> None:
        s = int(time.perf_counter() - self.t0)
        if sys.stderr.isatty():
            print(f"\r      {self.label} … {s // 60}:{s % 60:02d}", end="", file=sys.stderr, flush=True)
        elif force or s // 60 > self._minute:      # a line a minute: the loop's ticks drift past exact seconds
            self._minute = s // 60
            print(f"      {self.label} … {s // 60}:{s % 60:02d}", file=sys.stderr, flush=True)

    def __enter__(self):
        import threading

        self._stop = threading.Event()

        def run():
            while not self._stop.wait(1.0):
                self._show()
        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        if sys.stderr.isatty():
            print(file=sys.stderr, flush=True)
        return False


def program_summary(prog: dict, cycles: int) -> str:
    """One line on the program's view of a run: instructions, how busy each queue was, the overlap achieved."""
    busy = prog["busy_cycles"]
    moved = busy["load"] + busy["store"]
    hidden = prog["load_under_compute"] + prog["store_under_compute"]
    ops = ", ".join(f"{k} {v:,}" for k, v in prog["by_opcode"].items() if k != "FINISH")
    return (f"program: {prog['instructions']:,} instructions ({ops}); busy load {busy['load'] / cycles:.0%}, "
            f"compute {busy['compute'] / cycles:.0%}, store {busy['store'] / cycles:.0%} of the cycles; "
            f"{hidden / moved if moved else 1:.0%} of the transfer cycles hidden under compute")


def _cmd_compile(args) -> int:
    from hw.accelerator import load_design_with_policy
    from isa.asm import listing
    from isa.encoding import write
    from reports.model import resolve_design
    from sim.model import compile_model

    out = check_output(args.output, "-o path")
    lst = None
    if args.listing:
        lst = Path(args.output).with_suffix(".lst") if args.listing is True else Path(args.listing)
        check_output(lst, "--listing path")
        if lst.resolve() == out.resolve():
            raise UsageError(f"--listing {str(lst)!r} is the program file itself; give another name")
    design, source = resolve_design(args.design, args.scheme)
    acc, policy = load_design_with_policy(design)
    policy = policy.with_overrides(_mapping_overrides(args.mapping))
    compiled = compile_model(args.model, args.scheme, acc, seq_len=args.seq, decode_steps=args.decode_steps,
                             policy=policy)
    prog = compiled.program
    from isa.validate import validate
    from sim.machine import machine_shape
    validate(prog, machine_shape(acc))          # a compiler bug must not reach a file
    write(prog, out)
    if lst is not None:
        from fsio import write_text_atomic
        write_text_atomic(lst, listing(prog))
    if source:
        print(f"design: {acc.name} ({source})")
    counts = ", ".join(f"{k} {v:,}" for k, v in prog.counts().items() if v)
    print(f"{out}: {len(prog):,} instructions ({counts}), {len(prog.op_table)} ops; weights "
          f"{'resident' if compiled.weights_resident else 'streamed'} ({compiled.weight_bytes:,} bytes), KV cache "
          f"{'on chip' if compiled.kv_on_chip else 'in DRAM'}; DRAM image {compiled.dram_bytes:,} bytes"
          + (f"; listing {lst}" if lst is not None else ""))
    return 0


def _cmd_report_model(args) -> int:
    start = time.perf_counter()
    from reports.model import model_result, write_model_report

    out = check_output(args.output, directory=True)
    if not args.stem or args.stem.startswith(".") or Path(args.stem).name != args.stem:
        raise UsageError(f"--stem must be a plain file name without directories, not {args.stem!r}")
    result = model_result(args.model, args.scheme, args.design, seq_len=args.seq, decode_steps=args.decode_steps,
                          tech=args.tech, per_layer=True, counters=True, mapping=_mapping_overrides(args.mapping))
    paths = write_model_report(out, result, stem=args.stem)
    if result["design_source"] != "given":
        print(f"design: {result['design']} ({result['design_source']})")
    print(f"{result['model']} / {result['scheme']} on {result['design']}: {result['cycles']:,} cycles, "
          f"{result['energy_j']['total'] * 1e3:.4g} mJ ({result['energy_j']['tech']}); report: "
          + ", ".join(str(p) for p in paths) + f" ({time.perf_counter() - start:.1f} s, imports included)")
    return 0


def _cmd_simulate_gemm(args) -> int:
    import json

    from hw.accelerator import load_design_with_policy
    from models.units import UnitKind
    from models.workload import Op
    from sim.model import time_op

    design, policy = load_design_with_policy(args.design)
    slot = design.engine_for("int8-mac", op="the GEMM")
    op = Op("gemm", "matmul", "linear", "int8-mac", "prefill", m=args.m, k=args.k, n=args.n, a_bits=8, b_bits=8,
            acc_bits=32, weight=True)
    compute = time_op(op, design, weights_on_chip=True, kv_on_chip=True, policy=policy)
    with_memory = time_op(op, design, weights_on_chip=False, kv_on_chip=True, policy=policy)
    result = {"design": design.name, "engine": slot.unit, "m": args.m, "k": args.k, "n": args.n,
              "cycles": compute.cycles, "utilisation": compute.macs / compute.mac_slots,
              # the op as the model simulator times it: to the last output in the buffer, operands on chip or
              # the weights streamed from DRAM
              "cycles_on_chip": compute.cycles, "cycles_with_dram": with_memory.cycles, "macs": compute.macs,
              "notes": compute.notes}
    if slot.kind is UnitKind.SYSTOLIC:            # the array's own figures: folds, fill and drain, SCALE-Sim's count
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

    out = check_output(args.output)
    wl = extract_workload(args.model, args.scheme, seq_len=args.seq, decode_steps=args.decode_steps,
                          batch=args.batch)
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

    if args.output:
        check_output(args.output)
    if args.integer:            # only the page's integer-only section (models.intpath; docs/intpost.md)
        from models.fidelity import integer_fidelity_table, integer_markdown, integer_section, with_integer_section
        table = integer_markdown(integer_fidelity_table(args.methods or None))
        command = "lowbit fidelity --integer" + (f" --methods {' '.join(args.methods)}" if args.methods else "") + \
            (f" -o {args.output}" if args.output else "")
        if args.output:
            page = Path(args.output).read_text() if Path(args.output).exists() else ""
            write_text_atomic(Path(args.output), with_integer_section(page, integer_section(table, command)))
            print(f"wrote {args.output}")
        print(table)
        return 0
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
        from models.fidelity import integer_section_of, with_integer_section
        old = Path(args.output).read_text() if Path(args.output).exists() else ""
        text = with_integer_section(text, integer_section_of(old))       # keep the integer-only section
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


def _simulator_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--simulator", choices=SIMULATORS, default=DEFAULT_SIMULATOR,
                   help=f"RTL simulator (default {DEFAULT_SIMULATOR}; its model is built once per Verilog and "
                        "cached in $LOWBIT_CACHE/rtl or ~/.cache/lowbit/rtl)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lowbit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    v = sub.add_parser("verilog", help="generate a unit's (or the whole accelerator's) Verilog and JSON manifest")
    add_unit_arguments(v)
    v.add_argument("-o", "--output", required=True, help="output directory")
    v.add_argument("--design", help="with unit `accelerator`: built-in design name or a design file")
    v.add_argument("--imem-depth", dest="imem_depth", type=_positive_int,
                   help="with unit `accelerator`: instructions the instruction memory holds (default 1024)")
    v.add_argument("--ram-form", choices=("behavioral", "pumped"),
                   help="with unit `accelerator`: the buffers' RAMs for simulation (behavioral, the default) or in "
                        "block-RAM form for FPGA synthesis (pumped: a mem_clk input at the manifest's ram_phases "
                        "× clk)")
    v.set_defaults(func=_cmd_verilog)

    synth_cli.register(sub)
    board_cli.register(sub)

    ver = sub.add_parser("verify", help="check the generated RTL against the simulator")
    vsub = ver.add_subparsers(dest="what", required=True)
    va = vsub.add_parser("accelerator", help="blocks (or random programs) on each design's accelerator RTL, against "
                                             "the simulator and models/")
    va.add_argument("--shapes", help="comma-separated blocks BLOCK:MxKxN (BLOCK: bibert, ternarybert, bitnet-b1.58, "
                                     "int8, qbb, billm, bitnet-ffn, bibert-attn); default: the 24 of the docs' table")
    va.add_argument("--designs", help="comma-separated built-in designs or files, with @ports1, @slow-dram, @pos "
                                      "variants (e.g. ternary@ports1+slow-dram), or random:N; with --shapes every "
                                      "shape runs on every design that has its engine")
    va.add_argument("--programs", type=_positive_int, default=None,
                    help="random programs per design instead of blocks (designs default to random:2,random:5,"
                         "random:15,random:18,random:19: all five stream engines)")
    va.add_argument("--seed", type=_non_negative_int, default=0)
    va.add_argument("--stall", action="store_true", help="random programs on a DRAM that refuses requests at random")
    _simulator_arg(va)
    va.set_defaults(func=_cmd_verify_accelerator)

    s = sub.add_parser("simulate", help="run a workload on the cycle model (or the RTL)")
    ssub = s.add_subparsers(dest="what", required=True)
    lin = ssub.add_parser("linear", help="one quantized linear layer")
    lin.add_argument("--scheme", required=True,
                     help=f"NAME[:key=value,...], NAME one of {', '.join(SCHEMES)}")
    lin.add_argument("--weights", required=True, help="float weights W, .npy of shape [out, in]")
    lin.add_argument("--inputs", required=True, help="float inputs X, .npy of shape [tokens, in]")
    _engine_args(lin)
    lin.add_argument("--rtl", action="store_true", help="run the generated Verilog instead (see --simulator)")
    _simulator_arg(lin)
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
    sm.add_argument("--design", help=f"{design_help} (default: the scheme's own, e.g. ternary for bitnet-b1.58)")
    sm.add_argument("--seq", type=_positive_int, default=128, help="prefill tokens (default 128)")
    sm.add_argument("--decode-steps", type=_non_negative_int, default=0)
    tech_help = f"technology node: {' or '.join(TECHNOLOGIES)} (default 45nm)"
    sm.add_argument("--tech", default="45nm", help=tech_help)
    sm.add_argument("--energy", choices=ENERGY_MODES, default="full")
    sm.add_argument("--stepped", action="store_true", help="step the matmuls cycle by cycle (small shapes)")
    sm.add_argument("--per-layer", action="store_true", help="add a table of every operation")
    sm.add_argument("--counters", action="store_true", help="list every energy counter in the JSON")
    sm.add_argument("--fpga", choices=FAMILIES,
                    help="also the FPGA resources: the whole generated accelerator synthesised for this family "
                         "(cached), beside the estimate it replaces and the error between them")
    sm.add_argument("--fpga-estimate", action="store_true",
                    help="with --fpga: the estimate only (engines one by one, buffers by packing rule), no "
                         "synthesis of the accelerator")
    sm.add_argument("--synth-timeout", type=_positive_int, default=3600,
                    help="with --fpga: seconds the synthesis may take (default 3600); the estimate is shown "
                         "either way")
    mapping_help = ("mapping policy overrides, e.g. loop_order=tokens-outer,double_buffer=false,"
                    "weights=resident-if-fits (default: the design file's [mapping] table)")
    sm.add_argument("--mapping", help=mapping_help)
    sm.add_argument("--program", help="time this program file (from lowbit compile) instead of compiling one")
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
    c = sub.add_parser("compile", help="compile a model under a scheme for a design into a program file (docs/isa.md)")
    c.add_argument("--model", required=True, help=model_help)
    c.add_argument("--scheme", required=True, help=scheme_help)
    c.add_argument("--design", help=f"{design_help} (default: the scheme's own, e.g. ternary for bitnet-b1.58)")
    c.add_argument("--seq", type=_positive_int, default=128, help="prefill tokens (default 128)")
    c.add_argument("--decode-steps", type=_non_negative_int, default=0)
    c.add_argument("--mapping", help=mapping_help)
    c.add_argument("-o", "--output", required=True, help="program file to write (e.g. prog.bin)")
    c.add_argument("--listing", nargs="?", const=True, metavar="PATH",
                   help="also write the readable listing (default path: the output's with .lst)")
    c.set_defaults(func=_cmd_compile)

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
    f.add_argument("--integer", action="store_true",
                   help="the schemes' integer-only paths (models.intpath) instead; --methods then names schemes, "
                        "and -o rewrites only the page's integer-only section")
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
                    help="tokens also run on the RTL (0 skips the RTL check)")
    _simulator_arg(rl)
    rl.add_argument("--seed", type=_non_negative_int, default=0)
    _engine_args(rl)
    rl.add_argument("-o", "--output", default="out", help="output directory (default: out)")
    rl.set_defaults(func=_cmd_report_linear)
    rm = rsub.add_parser("model", help="a whole model on a design: summary and per-operation table (MD, CSV, JSON)")
    rm.add_argument("--model", default="bert-base", help=f"{model_help} (default bert-base)")
    rm.add_argument("--scheme", default="bitnet-b1.58", help=f"{scheme_help} (default bitnet-b1.58)")
    rm.add_argument("--design", help=f"{design_help} (default: the scheme's own, e.g. ternary for bitnet-b1.58)")
    rm.add_argument("--seq", type=_positive_int, default=128)
    rm.add_argument("--decode-steps", type=_non_negative_int, default=0)
    rm.add_argument("--tech", default="45nm", help=tech_help)
    rm.add_argument("--mapping", help=mapping_help)
    rm.add_argument("--stem", default="model", help="file names: STEM.md, STEM.csv, STEM.json (default model)")
    rm.add_argument("-o", "--output", default="out", help="output directory (default: out)")
    rm.set_defaults(func=_cmd_report_model)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``lowbit`` command: 0 on success, 2 for a refused input (one ``lowbit: error:`` line), 1 for a
    failed write, 130 for Ctrl-C (one ``lowbit: interrupted`` line; the writers' atomic renames leave no partial
    file behind)."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        return args.func(args)
    except (UsageError, ValueError, TypeError, SimulatorMissing) as exc:
        print(f"lowbit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lowbit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`lowbit ... --json | head`): stop quietly, and point stdout at /dev/null so that
        # the interpreter's flush at exit does not raise again
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1
    except OSError as exc:                 # checked up front, but a disk can still fill or a mount vanish mid-run
        print(f"lowbit: error: {exc}", file=sys.stderr)
        return 1


def run() -> None:
    """The ``lowbit`` command (and ``python -m lowbit``): :func:`main`, then exit with its status.

    After a Ctrl-C that :func:`main` has reported, the process leaves through ``os._exit(130)``: when the interrupt
    landed inside an import that a C extension runs through ``PyRun_*`` (torch's start-up does), CPython has flagged
    it as unhandled even though :func:`main` handled it, and a normal exit would re-raise SIGINT on the process
    (status −2, not 130; tests/test_bad_input.py caught it). Outputs are atomic and their temporary files were
    removed while the exception unwound, so skipping the interpreter's teardown loses nothing."""
    code = main()
    if code == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    raise SystemExit(code)
