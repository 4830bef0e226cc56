"""One adapter per level for every unit: each runs the same problem and returns the unit's result fields (and,
where the level has a clock, the cycle count), so one assertion compares them all.

Levels: ``reference`` (expected values from models/, built by the vector suite), ``sim`` (Numba stepped model),
``amaranth`` (the generated component in Amaranth's simulator), ``cocotb/verilator`` and ``cocotb/icarus`` (the
exported Verilog in Verilator or Icarus, driven from its manifest only).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hw.contract import Traffic
from hw.units import EngineParams
from sim.engine import simulate

from .simulators import DEFAULT_SIMULATOR
from .streams import StreamJob, run_amaranth, run_cocotb

__all__ = ["LevelResult", "sim_level", "amaranth_level", "cocotb_level", "stream_job", "collect_fields",
           "assert_same_fields", "assert_same_accumulators", "collect_accumulators"]


@dataclass(frozen=True)
class LevelResult:
    level: str
    fields: dict[str, np.ndarray]     #: result field → [tokens, ..., M]
    cycles: int | None                #: None for the untimed reference

    @property
    def acc(self) -> np.ndarray:
        """The ``acc`` field (ternary-mac, int8-mac)."""
        return self.fields["acc"]


def _shape(weights) -> tuple[int, int]:
    w = np.asarray(weights)
    return w.shape[-2], w.shape[-1]


def stream_job(params: EngineParams, weights, acts, traffic: Traffic, alpha=None) -> StreamJob:
    """The packed operand beats of a problem; ``alpha`` (the vector suite's name for the binary-basis scales) is
    the unit's extra operand, None for units without one."""
    beats = params.operand_beats(weights, acts, alpha)
    n = len(beats["last"])
    m, _ = _shape(weights)
    return StreamJob(params.operand_layout.pack(n, **beats), params.row_blocks(m) * np.asarray(acts).shape[0],
                     traffic)


def collect_fields(params: EngineParams, run, weights, acts) -> dict[str, np.ndarray]:
    """Result beats of a stream run → ``{field: [tokens, ..., M]}``."""
    m, k = _shape(weights)
    fields = params.result_layout.unpack(run.results)
    return {name: params.collect_results(v, m, k, np.asarray(acts).shape[0]) for name, v in fields.items()}


def collect_accumulators(params, run, weight_codes, act_codes) -> np.ndarray:
    """The ``acc`` field of a ternary-MAC or int8-MAC stream run, ``[tokens, M]``."""
    return collect_fields(params, run, weight_codes, act_codes)["acc"]


def sim_level(params, weights, acts, traffic: Traffic, alpha=None) -> LevelResult:
    run = simulate(params, weights, acts, traffic, extra=alpha)
    return LevelResult("sim", run.results, run.cycles)


def amaranth_level(params, weights, acts, traffics: list[Traffic], *, component=None, alpha=None) -> list[LevelResult]:
    from hw.export import build_component

    component = component if component is not None else build_component(params)
    jobs = [stream_job(params, weights, acts, t, alpha) for t in traffics]
    runs = run_amaranth(component, jobs, in_stream="operand", out_stream="result",
                        result_layout=params.result_layout, latency=params.latency)
    return [LevelResult("amaranth", collect_fields(params, r, weights, acts), r.cycles) for r in runs]


def cocotb_level(params, weights, acts, traffics: list[Traffic], *, work_dir: Path, component=None,
                 alpha=None, simulator: str = DEFAULT_SIMULATOR) -> list[LevelResult]:
    """Export the Verilog + manifest into ``work_dir`` and run every traffic in one launch of ``simulator``
    (its model built once per Verilog and cached)."""
    from hw.export import write_unit

    exported = write_unit(params, Path(work_dir), component=component)
    jobs = [stream_job(params, weights, acts, t, alpha) for t in traffics]
    runs = run_cocotb(exported.manifest_path, jobs, simulator=simulator, work_dir=Path(work_dir) / "run")
    return [LevelResult(f"cocotb/{simulator}", collect_fields(params, r, weights, acts), r.cycles) for r in runs]


def assert_same_fields(expected: dict[str, np.ndarray], got: LevelResult, labels: list[str] | None = None) -> None:
    """Bit-exact comparison of every result field, naming the first differing token, row and field."""
    if set(got.fields) != set(expected):
        raise AssertionError(f"{got.level}: result fields {sorted(got.fields)}, expected {sorted(expected)}")
    for name, exp in expected.items():
        value = got.fields[name]
        if value.shape != exp.shape:
            raise AssertionError(f"{got.level}: field {name!r} has shape {value.shape}, expected {exp.shape}")
        diff = np.argwhere(value != exp)
        if diff.size:
            where = tuple(int(i) for i in diff[0])
            label = f" ({labels[where[0]]})" if labels else ""
            raise AssertionError(f"{got.level}: {len(diff)} value(s) of {name!r} differ from the reference; first at "
                                 f"index {where}, token {where[0]}{label}: expected {int(exp[where])}, "
                                 f"got {int(value[where])}")


def assert_same_accumulators(expected: np.ndarray, got: LevelResult, labels: list[str] | None = None) -> None:
    """:func:`assert_same_fields` for units whose only field is ``acc``."""
    assert_same_fields({"acc": expected}, got, labels)
