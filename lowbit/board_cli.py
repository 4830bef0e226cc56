"""``lowbit board``: boards (iCEBreaker, ULX3S-85F) — what fits, bitstreams, and the host driver.

* ``lowbit board fit``: which models' encoder weights fit which board's memories, with the arithmetic;
* ``lowbit board build BOARD [--design D] [--model M --scheme S] -o DIR``: the board design's bitstream and report
  (:mod:`hw.board.build`);
* ``lowbit board run --port DEV --board BOARD --block SHAPE [--check]``: the host driver: loads a block's program
  and DRAM image over the UART, runs it, reads the output back, and checks it against ``models`` and the simulator;
* ``lowbit board serve --board BOARD``: the board design simulated (Verilator) behind a pseudo-terminal, for
  ``board run`` without a board.

Registered on the main parser by ``lowbit.cli`` through :func:`register`. Every refusal (unknown board, a design
or model that does not fit, a port that does not answer) raises ``ValueError`` naming the value; the main CLI prints
it on one line and exits 2.
"""

import argparse
import json
import sys
import time
from pathlib import Path

__all__ = ["register"]


def _boards() -> str:
    from hw.board.spec import BOARDS

    return ", ".join(BOARDS)


def _fit(args) -> int:
    from hw.board.designs import fit_table
    from hw.board.spec import board

    boards = args.boards.split(",") if args.boards else None
    for b in boards or ():
        board(b)
    rows = fit_table(boards, models=tuple(args.models.split(",")), schemes=tuple(args.schemes.split(",")))
    if args.json:
        print(json.dumps([{**r.__dict__, "resident_bytes": r.resident_bytes, "share": r.share} for r in rows],
                         indent=2))
        return 0
    print(f"{'board':<11} {'model':<10} {'scheme':<13} {'weights':>9} {'scales':>7} {'memory':>14} {'share':>7}  fits")
    for r in rows:
        print(f"{r.board:<11} {r.model:<10} {r.scheme:<13} {r.weight_bytes / 1024:>7.1f}Ki {r.scale_bytes:>7,} "
              f"{r.memory + ' ' + format(r.capacity // 1024, ',') + ' KiB':>14} {100 * r.share:>6.1f}%  "
              f"{'yes' if r.fits else 'no'}")
    print("weights: every encoder linear's out × in weights at the scheme's storage bits (embeddings, pooler and "
          "classifier stay on the host); memory: the board's SPRAM (iCE40 UP) or block RAM (ECP5, 8 data bits of "
          "every 9)")
    return 0


def _board_design(args):
    """The board design of ``--board`` with ``--design`` (an accelerator description) in place of its own."""
    from dataclasses import replace

    from hw.board.designs import board_design

    bd = board_design(args.board)
    if getattr(args, "design", None):
        from hw.accelerator import load_design

        acc = load_design(args.design)
        bd = replace(bd, name=f"{bd.board}+{acc.name}", accelerator=acc.to_dict())
    return bd


def _check_model(bd, model, scheme) -> None:
    """Refuse a model whose encoder weights do not fit the board design's on-chip DRAM."""
    from hw.board.designs import weight_fit

    if (model is None) != (scheme is None):
        raise ValueError("--model and --scheme go together")
    if model is None:
        return
    fit = weight_fit(bd.board, model, scheme)
    if fit.resident_bytes > bd.dram_bytes:
        raise ValueError(f"--model {model} --scheme {scheme}: its encoder weights take {fit.resident_bytes:,} bytes; "
                         f"board design {bd.name} keeps {bd.dram_bytes:,} bytes on chip")


def _check_block_rams(bd) -> None:
    """Refuse, before anything is elaborated, a design whose buffers alone need more block RAM than the board's part
    has: the packing rule of :func:`hw.fpga.buffer_block_rams` (one replica per read port) is a lower bound of
    what synthesis maps (docs/accelerator.md), so a design over it cannot fit, and a full-size design would take
    minutes to elaborate before synthesis said so."""
    from hw.board.spec import board
    from hw.fpga import BLOCK_RAMS, buffer_block_rams

    b = board(bd.board)
    need = sum(buffer_block_rams(spec, b.family) for spec in bd.design().buffers.values())
    if need > b.part.brams:
        raise ValueError(f"board design {bd.name}: its buffers alone need at least {need:,} "
                         f"{BLOCK_RAMS[b.family].name} (one replica per read port), the {b.name}'s {b.part.name} "
                         f"has {b.part.brams}")


def _build(args) -> int:
    from hw.board.build import BoardFitError, build_board
    from hw.board.pll import plan_clocks
    from hw.board.top import BoardTop, board_ram_phases

    from .cli import check_output

    bd = _board_design(args)
    _check_model(bd, args.model, args.scheme)
    out = check_output(args.output, "-o directory", directory=True)
    _check_block_rams(bd)
    phases = board_ram_phases(bd)
    plan_clocks(bd.board, bd.clock_hz, phases)        # a clock no PLL can make: refused before anything is built
    top = BoardTop.of(bd)
    started = time.perf_counter()

    def progress(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {msg}", file=sys.stderr, flush=True)

    try:
        # classic ABC: Yosys 0.70's abc9 takes many minutes on a whole accelerator (hw.synth)
        result = build_board(bd.board, top, out, sync_hz=bd.clock_hz, mem_ratio=top.ram_phases, seed=args.seed,
                             timeout=args.timeout, progress=progress, classic_abc=True)
    except BoardFitError as exc:
        raise ValueError(f"board design {bd.name}: {exc}") from None
    finally:
        top.silence()           # refused before elaboration (bad seed, a missing tool): not "never used" either
    from reports.board import write_board_report

    report = write_board_report(bd, result, out)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print((out / "board.md").read_text())
    return 0


def _open_driver(args, bd):
    from hw.board.host import open_port
    from hw.board.protocol import Driver, LinkError, link_spaces

    ser = open_port(args.port, args.baud or bd.baud)
    drv = Driver(ser, link_spaces(bd.plan(), bd.dram_bytes), timeout=args.timeout)
    try:
        drv.status()
    except LinkError:
        ser.close()
        raise ValueError(f"--port {args.port}: no board answered a STATUS frame within {args.timeout:g} s") from None
    return ser, drv


def _run(args) -> int:
    import numpy as np

    from hw.board.host import run_program
    from rtl_tests.board import compile_board_block

    bd = _board_design(args)
    shape, path, bp = compile_board_block(args.block, bd)
    ser, drv = _open_driver(args, bd)
    with ser:
        words = bp.program.words.view(np.uint8).reshape(len(bp.program), 32)
        o = bp.output
        run = run_program(drv, words, bp.dram, fresh=args.fresh, timeout=args.run_timeout)
    line = (f"{shape} on {bd.name}: {'finished' if run.finished else 'ERROR' if run.error else 'not finished'} in "
            f"{run.cycles:,} cycles; link: {run.bytes_out:,} bytes out, {run.bytes_in:,} in; load "
            f"{run.seconds['load']:.2f} s, run {run.seconds['run']:.2f} s, read {run.seconds['read']:.2f} s")
    print(line)
    if not args.check:
        return 0 if run.finished else 1
    from sim.blocks import read_matrix
    from sim.machine import run as sim_run

    want = sim_run(bp.program, bd.design(), bp.memories(), stepped=True)
    y = read_matrix(run.dram, o.address, o.rows, o.cols, o.fmt)
    same_y = bool(np.array_equal(y, path.y_fixed))
    same_cycles = run.cycles == want.cycles
    print(f"check: output {'equals' if same_y else 'DIFFERS FROM'} models' integer path; cycles "
          f"{'equal' if same_cycles else 'DIFFER FROM'} the simulator's ({want.cycles:,})")
    return 0 if (same_y and same_cycles and run.finished) else 1


def _serve(args) -> int:
    import signal

    from rtl_tests.board import serve_board

    bd = _board_design(args)

    def stop(signum, frame):                # `kill` ends it like Ctrl-C: the simulator is stopped, not orphaned
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)

    def ready(path: str) -> None:
        print(f"board {bd.name} (simulated) on {path}", flush=True)
        if args.port_file:
            from fsio import write_text_atomic

            write_text_atomic(args.port_file, path + "\n")

    serve_board(bd, divisor=args.divisor, simulator=args.simulator, ready=ready,
                log=lambda s: print(s, file=sys.stderr, flush=True))
    return 0


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def register(sub) -> None:
    """Add ``lowbit board`` and its subcommands to the main parser's subparsers ``sub``."""
    from .cli import _positive_int, _simulator_arg

    b = sub.add_parser("board", help="FPGA boards: what fits, bitstreams, the host driver")
    bsub = b.add_subparsers(dest="what", required=True)

    f = bsub.add_parser("fit", help="which models' encoder weights fit which board's memories")
    f.add_argument("--boards", help="comma-separated boards (default: all)")
    f.add_argument("--models", default="bert-tiny", help="comma-separated models (default bert-tiny)")
    f.add_argument("--schemes", default="bibert,bitnet-b1.58,ternarybert,int8", help="comma-separated schemes")
    f.add_argument("--json", action="store_true")
    f.set_defaults(func=_fit)

    def board_args(p, positional: bool):
        if positional:
            p.add_argument("board", help="icebreaker or ulx3s-85f")
        else:
            p.add_argument("--board", required=True, help="icebreaker or ulx3s-85f")
        p.add_argument("--design", help="an accelerator description (built-in name or file) in place of the board "
                                        "design's own (its clock, link and on-chip DRAM stay the board's)")

    bb = bsub.add_parser("build", help="the board design's bitstream and a report (yosys, nextpnr, icepack/ecppack)")
    board_args(bb, True)
    bb.add_argument("--model", help="refuse unless this model's encoder weights fit the design's on-chip DRAM")
    bb.add_argument("--scheme", help="the scheme of --model")
    bb.add_argument("-o", "--output", required=True, help="output directory (bitstream, report.json, report.md)")
    bb.add_argument("--seed", type=int, default=1, help="nextpnr's placement seed")
    bb.add_argument("--timeout", type=_positive_float, default=3600, help="seconds each tool may take")
    bb.add_argument("--json", action="store_true")
    bb.set_defaults(func=_build)

    br = bsub.add_parser("run", help="the host driver: load, run and read back a block over the UART")
    br.add_argument("--port", required=True, help="serial port of the board (or of `lowbit board serve`)")
    board_args(br, False)
    br.add_argument("--block", required=True, help="BLOCK:MxKxN, e.g. bitnet-ffn:4x64x80 (lowbit verify accelerator)")
    br.add_argument("--baud", type=_positive_int, help="link rate (default: the board design's)")
    br.add_argument("--check", action="store_true", help="compare the output with models/ and the cycles with sim/")
    br.add_argument("--fresh", action="store_true", help="the board was just configured: skip all-zero lines")
    br.add_argument("--timeout", type=_positive_float, default=5.0, help="seconds to wait for each reply")
    br.add_argument("--run-timeout", dest="run_timeout", type=_positive_float, default=60.0,
                    help="seconds to wait for the program")
    br.set_defaults(func=_run)

    bs = bsub.add_parser("serve", help="the board design in simulation behind a pseudo-terminal (Ctrl-C stops)")
    board_args(bs, False)
    bs.add_argument("--divisor", type=_positive_int, default=4, help="UART cycles a bit in simulation (default 4)")
    bs.add_argument("--port-file", dest="port_file", help="also write the terminal's path to this file")
    _simulator_arg(bs)
    bs.set_defaults(func=_serve)
