"""One quantized linear layer through the generated RTL in Icarus (the ``--rtl`` path of ``lowbit simulate``)."""

import time
from pathlib import Path

from hw.contract import Traffic
from sim.linear import LinearResult, combine_passes, prepare_linear

from .levels import collect_accumulators, stream_job
from .streams import run_cocotb

__all__ = ["rtl_linear"]


def rtl_linear(scheme: str, weight, x, *, lanes: int, rows: int, work_dir: Path, **options) -> LinearResult:
    """Quantize as ``sim.linear.simulate_linear`` does, then run every pass on the exported Verilog
    (one Icarus launch, one stream job per pass)."""
    from hw.export import write_unit

    view, params = prepare_linear(scheme, weight, x, lanes=lanes, rows=rows, **options)
    start = time.perf_counter()
    unit = write_unit(params, Path(work_dir))
    jobs = [stream_job(params, p.weight_codes, p.act_codes, Traffic.full()) for p in view.passes]
    runs = run_cocotb(unit.manifest_path, jobs, build_dir=Path(work_dir) / "sim_build")
    acc, pass_cycles = {}, {}
    for p, run in zip(view.passes, runs):
        acc[p.name] = collect_accumulators(params, run, p.weight_codes, p.act_codes)
        pass_cycles[p.name] = run.cycles
    wall = time.perf_counter() - start
    return LinearResult(scheme, "rtl", params, view, view.output(acc), acc, pass_cycles,
                        combine_passes(params, pass_cycles), wall)
