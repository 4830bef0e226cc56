"""cocotb bench for any lowbit unit with one operand stream in and one result stream out.

It knows nothing about the unit: the stimulus file (written by ``rtl_tests.streams.run_cocotb``) gives the stream port
names from the unit's manifest, the packed operand beats, the traffic patterns and the number of results
to wait for. It drives the source and sink exactly as ``hw.contract`` specifies, checks the stream
protocol on the result port, and writes the result payloads and handshake cycles back for the Python
side to compare with ``models`` and ``sim``. Only NumPy (and the stdlib-only ``fsio``) is imported, so a
simulator launch stays cheap. The same bench runs on Verilator and Icarus.
"""

import os
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from fsio import write_npz_atomic

RESET_CYCLES = 2


def _port(dut, name):
    try:
        return getattr(dut, name)
    except AttributeError:
        raise AssertionError(f"the top level has no port {name!r}") from None


async def _run_one(dut, ports, operands, offer, ready, n_results, max_cycles):
    in_payload, in_valid, in_ready, out_payload, out_valid, out_ready = ports
    ints = [int.from_bytes(row.tobytes(), "little") for row in operands]

    # Reset; cycle 0 is the first cycle with rst low.
    dut.rst.value = 1
    in_valid.value = 0
    out_ready.value = 0
    for _ in range(RESET_CYCLES):
        await RisingEdge(dut.clk)
    dut.rst.value = 0

    results, first_in, last_out = [], -1, -1
    next_beat, pending = 0, False
    held = None                    # (payload) of a result offered but not taken last cycle
    cycle = 0
    driven_valid = driven_ready = 0
    read_only, edge = ReadOnly(), RisingEdge(dut.clk)
    offer, ready = [bool(v) for v in offer], [bool(v) for v in ready]
    while len(results) < n_results:
        assert cycle < max_cycles, f"no progress: {len(results)}/{n_results} results after {cycle} cycles"
        if not pending and next_beat < len(ints) and offer[cycle % len(offer)]:
            pending = True
            in_payload.value = ints[next_beat]
        # A port is written only when its value changes: every write is a VPI call, and at full throughput these
        # two stay high for the whole run.
        if pending != driven_valid:
            in_valid.value = driven_valid = int(pending)
        sink = ready[cycle % len(ready)]
        if sink != driven_ready:
            out_ready.value = driven_ready = int(sink)

        await read_only
        valid_now = bool(out_valid.value)
        if held is not None:
            assert valid_now, f"cycle {cycle}: result valid dropped before the handshake"
            assert out_payload.value.to_unsigned() == held, \
                f"cycle {cycle}: result payload changed before the handshake"
        if pending and bool(in_ready.value):
            if first_in < 0:
                first_in = cycle
            next_beat += 1
            pending = False
        held = None
        if valid_now:
            value = out_payload.value.to_unsigned()   # raises on X/Z
            if sink:
                results.append(value)
                last_out = cycle
            else:
                held = value
        await edge
        cycle += 1
    return results, first_in, last_out


@cocotb.test()
async def stream_runs(dut):
    stim = np.load(os.environ["LOWBIT_STIMULUS"])
    result_path = os.environ["LOWBIT_RESULT"]
    in_name, out_name = str(stim["in_stream"]), str(stim["out_stream"])
    ports = tuple(_port(dut, f"{s}__{m}") for s, m in
                  ((in_name, "payload"), (in_name, "valid"), (in_name, "ready"),
                   (out_name, "payload"), (out_name, "valid"), (out_name, "ready")))
    result_nbytes = int(stim["result_nbytes"])
    Clock(dut.clk, 10, unit="ns").start()

    out, cycles = {}, 0
    start = time.perf_counter()
    for i in range(int(stim["n_runs"])):
        results, first_in, last_out = await _run_one(
            dut, ports, stim[f"run{i}_operands"], stim[f"run{i}_offer"], stim[f"run{i}_ready"],
            int(stim[f"run{i}_n_results"]), int(stim[f"run{i}_max_cycles"]))
        out[f"run{i}_results"] = np.array(
            [list(v.to_bytes(result_nbytes, "little")) for v in results], dtype=np.uint8
        ).reshape(len(results), result_nbytes)
        out[f"run{i}_first_in"] = np.int64(first_in)
        out[f"run{i}_last_out"] = np.int64(last_out)
        cycles += int(last_out) + RESET_CYCLES + 1
    # What the benchmarks quote as the simulator's speed: clock cycles driven per second of the stream loop.
    out["bench_seconds"] = np.float64(time.perf_counter() - start)
    out["bench_cycles"] = np.int64(cycles)
    write_npz_atomic(result_path, **out)
