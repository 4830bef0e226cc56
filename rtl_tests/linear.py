"""One quantized linear layer through the generated RTL in Verilator or Icarus (the ``--rtl`` path of ``lowbit simulate``)."""

import time
from pathlib import Path

from hw.contract import Traffic
from sim.linear import LinearResult, combine_runs, prepare_linear

from .levels import collect_fields, stream_job
from .simulators import DEFAULT_SIMULATOR
from .streams import run_cocotb

__all__ = ["rtl_linear"]


def rtl_linear(scheme: str, weight, x, *, lanes: int, rows: int, work_dir: Path,
               simulator: str = DEFAULT_SIMULATOR, exported=None, log=None, **options) -> LinearResult:
    """Quantize and plan as ``sim.linear.simulate_linear`` does, then run every engine run on the exported
    Verilog of the planned engine (one ``simulator`` launch, one stream job per run; the model is built once and
    cached, ``log`` hears when a build has to run).

    ``exported`` is an :class:`hw.export.ExportedUnit` already written for this layer's engine (the main job
    writes it anyway), used instead of generating the Verilog again; it must be of the planned parameters.
    """
    view, params, jobs = prepare_linear(scheme, weight, x, lanes=lanes, rows=rows, **options)
    start = time.perf_counter()
    if exported is None:
        from hw.export import write_unit

        unit = write_unit(params, Path(work_dir))
    elif exported.manifest["parameters"] != params.to_dict():
        raise ValueError(f"the exported unit {exported.manifest['module']} is not the engine this layer plans "
                         f"({params.module_name})")
    else:
        unit = exported
    runs = run_cocotb(unit.manifest_path, [stream_job(params, j.weights, j.acts, Traffic.full()) for j in jobs],
                      simulator=simulator, work_dir=Path(work_dir) / "run", log=log)
    acc, job_cycles = {}, {}
    for job, run in zip(jobs, runs):
        acc.update(job.accumulators(collect_fields(params, run, job.weights, job.acts)))
        job_cycles[job.name] = run.cycles
    wall = time.perf_counter() - start
    return LinearResult(scheme, "rtl", params, view, tuple(jobs), view.output(acc), acc, job_cycles,
                        combine_runs(params, job_cycles), wall)
