"""One quantized linear layer through the generated RTL in Icarus (the ``--rtl`` path of ``lowbit simulate``)."""

import time
from pathlib import Path

from hw.contract import Traffic
from sim.linear import LinearResult, prepare_linear

from .levels import cocotb_level

__all__ = ["rtl_linear"]


def rtl_linear(scheme: str, weight, x, *, lanes: int, rows: int, work_dir: Path) -> LinearResult:
    """Quantize as ``sim.linear.simulate_linear`` does, then run the accumulation on the exported Verilog."""
    view, params = prepare_linear(scheme, weight, x, lanes=lanes, rows=rows)
    start = time.perf_counter()
    [run] = cocotb_level(params, view.weight_codes, view.act_codes, [Traffic.full()], work_dir=Path(work_dir))
    wall = time.perf_counter() - start
    return LinearResult(scheme, "rtl", params, view.rescale(run.acc), run.acc, run.cycles, view.weight_codes, wall)
