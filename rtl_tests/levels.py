"""One adapter per level for the ternary-MAC engine: each runs the same problem and returns accumulators
(and, where the level has a clock, the cycle count), so one assertion compares them all.

Levels: ``reference`` (models/ integer view), ``sim`` (Numba stepped model), ``amaranth`` (the generated
component in Amaranth's simulator), ``cocotb`` (the exported Verilog in Icarus, driven from its manifest).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hw.contract import Traffic
from hw.params import TernaryMacParams
from models.bitnet import ternary_accumulate
from sim import ternary_mac as sim_ternary_mac

from .streams import StreamJob, run_amaranth, run_cocotb

__all__ = ["LevelResult", "reference_level", "sim_level", "amaranth_level", "cocotb_level", "stream_job",
           "collect_accumulators", "assert_same_accumulators"]


@dataclass(frozen=True)
class LevelResult:
    level: str
    acc: np.ndarray          #: [tokens, M] int64
    cycles: int | None       #: None for the untimed reference


def stream_job(params: TernaryMacParams, weight_codes: np.ndarray, act_codes: np.ndarray,
               traffic: Traffic) -> StreamJob:
    beats = params.operand_beats(weight_codes, act_codes)
    n = len(beats["last"])
    m, tokens = weight_codes.shape[0], act_codes.shape[0]
    return StreamJob(params.operand_layout.pack(n, **beats), params.row_blocks(m) * tokens, traffic)


def collect_accumulators(params, run, weight_codes, act_codes) -> np.ndarray:
    """Result beats of a stream run → accumulators ``[tokens, M]``."""
    acc_beats = params.result_layout.unpack(run.results)["acc"]
    m, k = weight_codes.shape
    return params.collect_results(acc_beats, m, k, act_codes.shape[0])


def reference_level(weight_codes, act_codes) -> LevelResult:
    return LevelResult("reference", ternary_accumulate(weight_codes, act_codes), None)


def sim_level(params, weight_codes, act_codes, traffic: Traffic) -> LevelResult:
    run = sim_ternary_mac.simulate(params, weight_codes, act_codes, traffic)
    return LevelResult("sim", run.acc, run.cycles)


def amaranth_level(params, weight_codes, act_codes, traffics: list[Traffic], *, component=None) -> list[LevelResult]:
    from hw.export import build_component

    component = component if component is not None else build_component(params)
    jobs = [stream_job(params, weight_codes, act_codes, t) for t in traffics]
    runs = run_amaranth(component, jobs, in_stream="operand", out_stream="result",
                        result_layout=params.result_layout, latency=params.latency)
    return [LevelResult("amaranth", collect_accumulators(params, r, weight_codes, act_codes), r.cycles) for r in runs]


def cocotb_level(params, weight_codes, act_codes, traffics: list[Traffic], *, work_dir: Path,
                 component=None) -> list[LevelResult]:
    """Export the Verilog + manifest into ``work_dir`` and run every traffic in one Icarus launch."""
    from hw.export import write_unit

    exported = write_unit(params, Path(work_dir), component=component)
    jobs = [stream_job(params, weight_codes, act_codes, t) for t in traffics]
    runs = run_cocotb(exported.manifest_path, jobs, build_dir=Path(work_dir) / "sim_build")
    return [LevelResult("cocotb", collect_accumulators(params, r, weight_codes, act_codes), r.cycles) for r in runs]


def assert_same_accumulators(expected: np.ndarray, got: LevelResult, labels: list[str] | None = None) -> None:
    """Bit-exact comparison with a message naming the first differing token and row."""
    if got.acc.shape != expected.shape:
        raise AssertionError(f"{got.level}: accumulators have shape {got.acc.shape}, expected {expected.shape}")
    diff = np.argwhere(got.acc != expected)
    if diff.size:
        t, r = (int(i) for i in diff[0])
        label = f" ({labels[t]})" if labels else ""
        raise AssertionError(f"{got.level}: {len(diff)} accumulator(s) differ from the reference; first at "
                             f"token {t}{label}, row {r}: expected {int(expected[t, r])}, got {int(got.acc[t, r])}")
