"""One quantized linear layer through the generated RTL in Icarus (the ``--rtl`` path of ``lowbit simulate``)."""

import time
from pathlib import Path

from hw.contract import Traffic
from sim.linear import LinearResult, combine_runs, prepare_linear

from .levels import collect_fields, stream_job
from .streams import run_cocotb

__all__ = ["rtl_linear"]


def rtl_linear(scheme: str, weight, x, *, lanes: int, rows: int, work_dir: Path, **options) -> LinearResult:
    """Quantize and plan as ``sim.linear.simulate_linear`` does, then run every engine run on the exported
    Verilog of the planned engine (one Icarus launch, one stream job per run)."""
    from hw.export import write_unit

    view, params, jobs = prepare_linear(scheme, weight, x, lanes=lanes, rows=rows, **options)
    start = time.perf_counter()
    unit = write_unit(params, Path(work_dir))
    runs = run_cocotb(unit.manifest_path, [stream_job(params, j.weights, j.acts, Traffic.full()) for j in jobs],
                      build_dir=Path(work_dir) / "sim_build")
    acc, job_cycles = {}, {}
    for job, run in zip(jobs, runs):
        acc.update(job.accumulators(collect_fields(params, run, job.weights, job.acts)))
        job_cycles[job.name] = run.cycles
    wall = time.perf_counter() - start
    return LinearResult(scheme, "rtl", params, view, tuple(jobs), view.output(acc), acc, job_cycles,
                        combine_runs(params, job_cycles), wall)
