"""cocotb bench for the accelerator (``rtl_tests.accel_bench.AccelBench``): for each run of the stimulus file it
loads the program into the instruction memory, the DRAM image into the DRAM model and the buffers' contents through
the host ports, pulses ``run``, waits for ``finished`` (or ``error``, or a cycle budget), and reads DRAM and the
buffers back. Only NumPy (and the stdlib-only ``fsio``) is imported, so a launch stays cheap; the simulator runs
freely between ``run`` and ``finished`` (no Python per cycle)."""

import os
import time

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, First, ReadOnly, RisingEdge

from fsio import write_npz_atomic
from rtl_tests.cocotb_clocks import start_clocks


def _ints(lines: np.ndarray) -> list[int]:
    return [int.from_bytes(row.tobytes(), "little") for row in lines]


async def _write_lines(dut, edge, en, we, addr, wdata, lines: np.ndarray, extra=()) -> None:
    for s, v in extra:
        s.value = v
    en.value, we.value = 1, 1
    for i, value in enumerate(_ints(lines)):
        addr.value, wdata.value = i, value
        await edge
    en.value, we.value = 0, 0


async def _read_lines(dut, edge, en, we, addr, rdata, n: int, width: int, extra=()) -> np.ndarray:
    for s, v in extra:
        s.value = v
    out = np.zeros((n, width), np.uint8)
    en.value, we.value = 1, 0
    for i in range(n):
        addr.value = i
        await edge
        await ReadOnly()
        out[i] = np.frombuffer(rdata.value.to_unsigned().to_bytes(width, "little"), np.uint8)
        await edge
    en.value = 0
    return out


@cocotb.test()
async def programs(dut):
    stim = np.load(os.environ["LOWBIT_STIMULUS"])
    start_clocks(dut, int(stim["mem_phases"]))
    edge = RisingEdge(dut.clk)
    for s in (dut.run, dut.imem_we, dut.host_en, dut.host_we, dut.dram_en, dut.dram_we, dut.stall, dut.dead):
        s.value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    await edge

    out, run_cycles, run_seconds = {}, 0, 0.0
    start = time.perf_counter()
    for r in range(int(stim["n_runs"])):
        words = stim[f"run{r}_imem"]
        dut.imem_we.value = 1
        for i, w in enumerate(_ints(words)):
            dut.imem_addr.value, dut.imem_data.value = i, w
            await edge
        dut.imem_we.value = 0
        await _write_lines(dut, edge, dut.dram_en, dut.dram_we, dut.dram_line, dut.dram_wdata, stim[f"run{r}_dram"])
        for b in range(int(stim["n_buffers"])):
            await _write_lines(dut, edge, dut.host_en, dut.host_we, dut.host_line, dut.host_wdata,
                               stim[f"run{r}_buf{b}"], extra=[(dut.host_buf, b)])
        dut.stall.value, dut.seed.value = int(stim[f"run{r}_stall"]), int(stim[f"run{r}_seed"])
        dut.dead.value = int(stim[f"run{r}_dead"])
        dut.run.value = 1
        await edge
        dut.run.value = 0
        budget = int(stim[f"run{r}_max_cycles"])
        t0 = time.perf_counter()
        await First(RisingEdge(dut.finished), RisingEdge(dut.error), ClockCycles(dut.clk, budget))
        run_seconds += time.perf_counter() - t0
        await ReadOnly()
        finished, error = int(dut.finished.value), int(dut.error.value)
        cycles = int(dut.cycles.value) if finished else -1
        run_cycles += cycles if finished else budget
        await edge
        out[f"run{r}_finished"], out[f"run{r}_error"] = np.int64(finished), np.int64(error)
        out[f"run{r}_cycles"] = np.int64(cycles)
        dram = stim[f"run{r}_dram"]
        out[f"run{r}_dram"] = await _read_lines(dut, edge, dut.dram_en, dut.dram_we, dut.dram_line, dut.dram_rdata,
                                                dram.shape[0], dram.shape[1])
        for b in range(int(stim["n_buffers"])):
            shape = stim[f"run{r}_buf{b}"].shape
            lines = await _read_lines(dut, edge, dut.host_en, dut.host_we, dut.host_line, dut.host_rdata,
                                      shape[0], int(stim["host_width"]), extra=[(dut.host_buf, b)])
            out[f"run{r}_buf{b}"] = lines[:, :shape[1]]
    out["bench_seconds"] = np.float64(time.perf_counter() - start)
    out["program_cycles"] = np.int64(run_cycles)
    out["run_seconds"] = np.float64(run_seconds)
    write_npz_atomic(os.environ["LOWBIT_RESULT"], **out)
