"""Drive a one-stream-in, one-stream-out unit in Amaranth's simulator, or in Verilator or Icarus under cocotb.

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

from .simulators import DEFAULT_SIMULATOR, build_model, check_simulator, run_test

__all__ = ["StreamJob", "StreamRun", "run_amaranth", "run_cocotb", "max_cycles_for"]

BENCH_MODULE = "rtl_tests.cocotb_stream_bench"


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


def run_cocotb(manifest_path: Path, jobs: list[StreamJob], *, simulator: str = DEFAULT_SIMULATOR,
               work_dir: Path | None = None, cache_dir: Path | None = None, log=None) -> list[StreamRun]:
    """Run all jobs in one simulator launch, using only what the unit's manifest says.

    ``manifest_path`` is the JSON written next to the Verilog by ``hw.export``; the model of the Verilog it names
    is built once and cached (:func:`rtl_tests.simulators.build_model`), so further calls with the same Verilog
    only run. ``work_dir`` keeps the stimulus, results and simulator log (a temporary folder otherwise);
    ``log`` hears one line when a model has to be built.
    """
    check_simulator(simulator)
    manifest_path = Path(manifest_path).resolve()
    manifest = json.loads(manifest_path.read_text())
    verilog = manifest_path.parent / manifest["verilog"]
    top = manifest["module"]
    in_stream = manifest["streams"]["in"]["name"]
    out_stream = manifest["streams"]["out"]["name"]
    in_layout = PayloadLayout.from_dict(manifest["streams"]["in"]["payload"])
    out_layout = PayloadLayout.from_dict(manifest["streams"]["out"]["payload"])
    latency = int(manifest["contract"]["latency_cycles"])
    for i, job in enumerate(jobs):
        if job.operands.shape[1:] != (in_layout.nbytes,):
            raise ValueError(f"job {i}: operand rows are {job.operands.shape[1:]} bytes wide, the manifest "
                             f"says {in_layout.nbytes}")

    model = build_model(simulator, verilog, top, cache_dir=cache_dir, log=log)
    own_dir = work_dir is None
    run_dir = Path(tempfile.mkdtemp(prefix="lowbit-cocotb-")) if own_dir else Path(work_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        stim = {"in_stream": in_stream, "out_stream": out_stream, "result_nbytes": out_layout.nbytes,
                "n_runs": len(jobs)}
        for i, job in enumerate(jobs):
            stim.update({f"run{i}_operands": job.operands, f"run{i}_offer": job.traffic.offer,
                         f"run{i}_ready": job.traffic.ready, f"run{i}_n_results": job.n_results,
                         f"run{i}_max_cycles": max_cycles_for(job, latency)})
        stim_path = run_dir / "stimulus.npz"
        result_path = run_dir / "result.npz"
        np.savez(stim_path, **stim)
        if result_path.exists():
            result_path.unlink()
        env = {
            "LOWBIT_STIMULUS": str(stim_path),
            "LOWBIT_RESULT": str(result_path),
            # Rewrite asserts in the bench only; the default ("*.py") re-parses every imported module.
            "COCOTB_REWRITE_ASSERTION_FILES": "cocotb_*.py",
            "PYTHONWARNINGS": "error::DeprecationWarning",
        }
        n_tests, n_failed = run_test(model, BENCH_MODULE, test_dir=run_dir, extra_env=env)
        if n_tests != 1 or n_failed or not result_path.exists():
            log_path = run_dir / "sim.log"
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:]) if log_path.exists() \
                else "(no log)"
            raise AssertionError(f"the cocotb bench on {top} ({simulator}) failed ({n_failed} of {n_tests} tests); "
                                 f"end of {log_path}:\n{tail}")
        data = np.load(result_path)
        return [StreamRun(data[f"run{i}_results"], int(data[f"run{i}_first_in"]), int(data[f"run{i}_last_out"]))
                for i in range(len(jobs))]
    finally:
        if own_dir:
            shutil.rmtree(run_dir, ignore_errors=True)
