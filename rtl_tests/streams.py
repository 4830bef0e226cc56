"""Drive a one-stream-in, one-stream-out unit in Amaranth's simulator or in Icarus under cocotb.

Both drivers follow ``hw.contract``: the same :class:`~hw.contract.Traffic`, the same cycle numbering,
and the same packed payloads (byte rows laid out by the unit's manifest). Each returns
:class:`StreamRun` objects; comparing their contents is the caller's business.
"""

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hw.contract import Traffic, measured_cycles
from hw.layout import PayloadLayout

__all__ = ["StreamJob", "StreamRun", "run_amaranth", "run_cocotb", "max_cycles_for", "IcarusMissing",
           "check_icarus"]

BENCH_MODULE = "rtl_tests.cocotb_stream_bench"


class IcarusMissing(RuntimeError):
    """Icarus Verilog is not installed."""


@dataclass(frozen=True)
class StreamJob:
    """Operand beats (byte rows) to send, under a traffic pattern, and how many results to expect."""

    operands: np.ndarray
    n_results: int
    traffic: Traffic

    def __post_init__(self):
        if self.n_results < 1:
            raise ValueError(f"a stream job must expect at least one result, not {self.n_results}")


@dataclass(frozen=True)
class StreamRun:
    """What a driver observed: result payloads (byte rows) and the handshake cycles."""

    results: np.ndarray
    first_input_cycle: int
    last_output_cycle: int

    @property
    def cycles(self) -> int:
        return measured_cycles(self.first_input_cycle, self.last_output_cycle)


def max_cycles_for(job: StreamJob, latency: int) -> int:
    """A generous cycle budget after which a bench declares the unit stuck."""
    t = job.traffic
    slow = t.offer.size / t.offer.sum() + t.ready.size / t.ready.sum()
    return int((len(job.operands) + latency + job.n_results + 8) * (slow + 1)) + t.offer.size + t.ready.size


def run_amaranth(component, jobs: list[StreamJob], *, in_stream: str, out_stream: str,
                 result_layout: PayloadLayout, latency: int) -> list[StreamRun]:
    """Run each job in Amaranth's Python simulator, on one fresh simulation per job."""
    from amaranth.sim import Simulator

    source = getattr(component, in_stream)
    sink = getattr(component, out_stream)
    in_payload = source.payload.as_value() if hasattr(source.payload, "as_value") else source.payload
    out_payload = sink.payload.as_value() if hasattr(sink.payload, "as_value") else sink.payload
    runs = []
    for job in jobs:
        ints = PayloadLayout.rows_to_ints(job.operands)
        offer, ready = job.traffic.offer, job.traffic.ready
        limit = max_cycles_for(job, latency)
        observed = {"results": [], "first": -1, "last": -1}

        async def bench(ctx):
            results = observed["results"]
            next_beat, pending, held, cycle = 0, False, None, 0
            while len(results) < job.n_results:
                assert cycle < limit, f"no progress: {len(results)}/{job.n_results} results after {cycle} cycles"
                if not pending and next_beat < len(ints) and offer[cycle % offer.size]:
                    pending = True
                    ctx.set(in_payload, ints[next_beat])
                ctx.set(source.valid, pending)
                sink_ready = bool(ready[cycle % ready.size])
                ctx.set(sink.ready, sink_ready)
                valid_now = bool(ctx.get(sink.valid))
                if held is not None:
                    assert valid_now, f"cycle {cycle}: result valid dropped before the handshake"
                    assert ctx.get(out_payload) == held, f"cycle {cycle}: result payload changed early"
                if pending and ctx.get(source.ready):
                    if observed["first"] < 0:
                        observed["first"] = cycle
                    next_beat += 1
                    pending = False
                held = None
                if valid_now:
                    value = ctx.get(out_payload)
                    if sink_ready:
                        results.append(value)
                        observed["last"] = cycle
                    else:
                        held = value
                await ctx.tick()
                cycle += 1

        sim = Simulator(component)
        sim.add_clock(1e-8)
        sim.add_testbench(bench)
        sim.run()
        runs.append(StreamRun(result_layout.ints_to_rows(observed["results"]),
                              observed["first"], observed["last"]))
    return runs


def check_icarus() -> None:
    """Raise :class:`IcarusMissing` with the install command unless iverilog and vvp are on PATH."""
    missing = [tool for tool in ("iverilog", "vvp") if shutil.which(tool) is None]
    if missing:
        raise IcarusMissing(f"{' and '.join(missing)} not found on PATH: install Icarus Verilog "
                            "(Debian/Ubuntu: sudo apt-get install iverilog) or run ./run.sh, which does")


def run_cocotb(manifest_path: Path, jobs: list[StreamJob], *, build_dir: Path | None = None,
               keep: bool = False) -> list[StreamRun]:
    """Run all jobs in one Icarus launch, using only what the unit's manifest says.

    ``manifest_path`` is the JSON written next to the Verilog by ``hw.export``; the Verilog file it names
    is compiled once per ``build_dir`` (recompiled when it changes).
    """
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    check_icarus()
    manifest_path = Path(manifest_path).resolve()
    manifest = json.loads(manifest_path.read_text())
    verilog = manifest_path.parent / manifest["verilog"]
    top = manifest["module"]
    in_stream = manifest["streams"]["in"]["name"]
    out_stream = manifest["streams"]["out"]["name"]
    in_layout = PayloadLayout.from_dict(manifest["streams"]["in"]["payload"])
    out_layout = PayloadLayout.from_dict(manifest["streams"]["out"]["payload"])
    latency = int(manifest["contract"]["latency_cycles"])

    own_dir = build_dir is None
    build_dir = Path(tempfile.mkdtemp(prefix="lowbit-cocotb-")) if own_dir else Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    try:
        stim = {"in_stream": in_stream, "out_stream": out_stream, "result_nbytes": out_layout.nbytes,
                "n_runs": len(jobs)}
        for i, job in enumerate(jobs):
            if job.operands.shape[1:] != (in_layout.nbytes,):
                raise ValueError(f"job {i}: operand rows are {job.operands.shape[1:]} bytes wide, the manifest "
                                 f"says {in_layout.nbytes}")
            stim.update({f"run{i}_operands": job.operands, f"run{i}_offer": job.traffic.offer,
                         f"run{i}_ready": job.traffic.ready, f"run{i}_n_results": job.n_results,
                         f"run{i}_max_cycles": max_cycles_for(job, latency)})
        stim_path = build_dir / "stimulus.npz"
        result_path = build_dir / "result.npz"
        np.savez(stim_path, **stim)
        if result_path.exists():
            result_path.unlink()

        runner = get_runner("icarus")
        log = build_dir / "cocotb.log"
        runner.build(sources=[verilog], hdl_toplevel=top, build_dir=build_dir, timescale=("1ns", "1ps"),
                     always=False, log_file=build_dir / "build.log")
        env = {
            "LOWBIT_STIMULUS": str(stim_path),
            "LOWBIT_RESULT": str(result_path),
            # Rewrite asserts in the bench only; the default ("*.py") re-parses every imported module.
            "COCOTB_REWRITE_ASSERTION_FILES": "cocotb_*.py",
            "PYTHONWARNINGS": "error::DeprecationWarning",
        }
        try:
            xml = runner.test(hdl_toplevel=top, test_module=BENCH_MODULE, build_dir=build_dir,
                              extra_env=env, test_dir=build_dir, log_file=log)
            n_tests, n_failed = get_results(Path(xml))
        except SystemExit:       # what runner.test does on failure when it runs under pytest
            n_tests, n_failed = 1, 1
        if n_tests != 1 or n_failed or not result_path.exists():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:]) if log.exists() else "(no log)"
            raise AssertionError(f"the cocotb bench on {top} failed ({n_failed} of {n_tests} tests); "
                                 f"end of {log}:\n{tail}")
        data = np.load(result_path)
        return [StreamRun(data[f"run{i}_results"], int(data[f"run{i}_first_in"]), int(data[f"run{i}_last_out"]))
                for i in range(len(jobs))]
    finally:
        if own_dir and not keep:
            shutil.rmtree(build_dir, ignore_errors=True)
