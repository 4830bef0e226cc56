"""One quantized linear layer, end to end on the cycle model: quantize (models) → engine runs (sim) → rescale.

A scheme's integer view (``models.views.LinearView``) is a set of integer passes; :func:`plan` maps them onto the
engine of the view's unit kind — BiBERT on the XNOR-popcount engine, TernaryBERT and BitNet on the ternary-MAC
engine, QBB on the binary-basis engine (all bases in one run), BiLLM on the binary-basis engine in its BiLLM mode
(one run per 128-column block, every group at once), the int8 baseline on the int8-MAC engine — and reads each
pass's accumulators back from the engine's result fields. The runs stream back to back through one engine sized
for the largest, so a layer takes ``Σ beats(run) + latency`` cycles.
"""

import re
import time
from dataclasses import dataclass, field

import numpy as np

from hw.units import (BILLM_GROUPS, BinaryBasisParams, EngineParams, Int8MacParams, TernaryMacParams,
                      XnorPopcountParams)
from models.intops import signed_width
from models.schemes import get_scheme
from models.units import UnitKind
from models.validate import check_finite, check_matrix
from models.views import IntPass, LinearView

from .engine import simulate

__all__ = ["EngineJob", "LinearResult", "check_linear", "prepare_linear", "plan", "simulate_linear",
           "combine_runs"]


@dataclass(frozen=True, eq=False)
class EngineJob:
    """One engine run: the unit's operands and where each view pass finds its accumulators in the results."""

    name: str
    weights: np.ndarray
    acts: np.ndarray
    #: view pass name → (result field, plane index or None)
    outputs: dict[str, tuple[str, int | None]]

    @property
    def m(self) -> int:
        return self.weights.shape[-2]

    @property
    def k(self) -> int:
        return self.weights.shape[-1]

    def accumulators(self, results: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for name, (fld, plane) in self.outputs.items():
            value = results[fld]
            out[name] = value if plane is None else value[:, plane]
        return out


@dataclass(frozen=True)
class LinearResult:
    """Outputs of one layer run on one level (``sim`` or ``rtl``)."""

    scheme: str
    backend: str
    params: EngineParams
    view: LinearView = field(repr=False)
    jobs: tuple[EngineJob, ...] = field(repr=False)
    y: np.ndarray                       #: [tokens, out] float32
    acc: dict[str, np.ndarray]          #: view pass name → [tokens, out] int64 accumulators
    job_cycles: dict[str, int]          #: engine run → cycles of that run alone
    cycles: int                         #: the whole layer, runs back to back
    wall_seconds: float = 0.0

    @property
    def tokens(self) -> int:
        return self.view.tokens

    @property
    def out_features(self) -> int:
        return self.view.out_features

    @property
    def in_features(self) -> int:
        return self.view.in_features

    @property
    def macs(self) -> int:
        """MACs of the layer itself (tokens × out × in)."""
        return self.tokens * self.out_features * self.in_features

    @property
    def engine_macs(self) -> int:
        """MAC slots the engine's runs fill with real work (every basis of every run)."""
        return sum(j.m * j.k * self.tokens for j in self.jobs) * self.params.macs_per_weight

    @property
    def utilisation(self) -> float:
        """Engine MACs over the MAC slots available during the run."""
        return self.engine_macs / (self.cycles * self.params.macs_per_cycle)

    @property
    def zero_weight_fraction(self) -> float:
        total = sum(p.weight_codes.size for p in self.view.passes)
        return sum(int((p.weight_codes == 0).sum()) for p in self.view.passes) / total

    def stacked_acc(self) -> tuple[list[str], np.ndarray]:
        """Pass names and accumulators: ``[tokens, out]`` for one pass, ``[passes, tokens, out]`` for several."""
        names = [p.name for p in self.view.passes]
        if len(names) == 1:
            return names, self.acc[names[0]]
        return names, np.stack([self.acc[n] for n in names])


def _act_bits(passes) -> int:
    return max(2, max(signed_width(*p.act_value_range) for p in passes))


def _ternary_plan(view: LinearView, lanes: int, rows: int):
    for p in view.passes:
        lo, hi = p.weight_value_range
        if lo < -1 or hi > 1:
            raise ValueError(f"{view.scheme} pass {p.name!r} has weight codes in [{lo}, {hi}]; the ternary-MAC "
                             "engine takes {-1, 0, +1} only")
    params = TernaryMacParams(lanes=lanes, rows=rows, max_k=max(p.k for p in view.passes), act_bits=_act_bits(view.passes))
    jobs = [EngineJob(p.name, p.weight_codes, p.act_codes, {p.name: ("acc", None)}) for p in view.passes]
    return params, jobs


def _xnor_plan(view: LinearView, lanes: int, rows: int):
    for p in view.passes:
        for what, codes in (("weight", p.weight_codes), ("activation", p.act_codes)):
            zeros = int((codes == 0).sum())
            if zeros:
                raise ValueError(f"{view.scheme} pass {p.name!r} has {zeros} zero {what} sign(s) (sign(0) = 0 under "
                                 "zero_policy 'torch'); the XNOR-popcount engine holds ±1 only: use "
                                 f"{view.scheme}:zero_policy=pos or neg")
    params = XnorPopcountParams(lanes=lanes, rows=rows, max_k=max(p.k for p in view.passes))
    jobs = [EngineJob(p.name, p.weight_codes, p.act_codes, {p.name: ("dot", None)}) for p in view.passes]
    return params, jobs


def _int8_plan(view: LinearView, lanes: int, rows: int):
    params = Int8MacParams(lanes=lanes, rows=rows, max_k=max(p.k for p in view.passes),
                           act_bits=_act_bits(view.passes),
                           weight_bits=max(signed_width(*p.weight_value_range) for p in view.passes))
    jobs = [EngineJob(p.name, p.weight_codes, p.act_codes, {p.name: ("acc", None)}) for p in view.passes]
    return params, jobs


_BASIS = re.compile(r"basis(\d+)$")
_BILLM = re.compile(r"b(\d+)\.(concentrated|sparse|salient)(?:\.o(\d))?\.(sign|sum)$")


def _binary_basis_plan(view: LinearView, lanes: int, rows: int):
    names = [p.name for p in view.passes]
    if all(_BASIS.match(n) for n in names):                       # QBB: every basis in one run
        acts = view.passes[0].act_codes
        if any(not np.array_equal(p.act_codes, acts) for p in view.passes):
            raise ValueError(f"{view.scheme}: the basis passes do not share their activations")
        order = sorted(view.passes, key=lambda p: int(_BASIS.match(p.name).group(1)))
        params = BinaryBasisParams(lanes=lanes, rows=rows, max_k=order[0].k, act_bits=_act_bits(order),
                                   n_bases=len(order))
        bases = np.stack([p.weight_codes for p in order]).astype(np.int64)
        return params, [EngineJob("bases", bases, acts, {p.name: ("sums", i) for i, p in enumerate(order)})]
    if not all(_BILLM.match(n) for n in names):
        raise ValueError(f"{view.scheme}: passes {names} are neither QBB bases nor BiLLM block groups")
    blocks: dict[int, dict[str, IntPass]] = {}
    for p in view.passes:
        blocks.setdefault(int(_BILLM.match(p.name).group(1)), {})[p.name] = p
    jobs = []
    for b, passes in sorted(blocks.items()):
        first = next(iter(passes.values()))
        m, k = first.weight_codes.shape
        group = np.zeros((m, k), np.int64)
        signs = np.ones((2, m, k), np.int64)
        outputs = {}
        for name, p in passes.items():
            _, g, order, kind = _BILLM.match(name).groups()
            gi = BILLM_GROUPS.index(g)
            mask = p.weight_codes != 0
            if kind == "sum":
                group[mask] = gi
                outputs[name] = ("means", gi)
            else:
                o = int(order or 1) - 1
                signs[o][mask] = p.weight_codes[mask]
                outputs[name] = ("sums", 3 if (g == "salient" and o == 1) else gi)
        for name, p in passes.items():           # a sign pass may not carry a zero where its group is
            _, g, order, kind = _BILLM.match(name).groups()
            if kind == "sign":
                hole = (group == BILLM_GROUPS.index(g)) & (p.weight_codes == 0)
                if hole.any() and any(n.endswith(f"{g}.sum") for n in passes):
                    raise ValueError(f"{view.scheme} pass {name!r} has {int(hole.sum())} zero sign(s) inside its group "
                                     "(sign(0) = 0); the binary-basis engine holds ±1 only: use zero_policy pos or neg")
        if not any(n.endswith(".sum") for n in passes):
            raise ValueError(f"{view.scheme}: block {b} has no plain-sum passes (the paper variant); the engine's "
                             "BiLLM mode maps the code variant's groups")
        jobs.append(EngineJob(f"block{b}", np.stack([group, signs[0], signs[1]]), first.act_codes, outputs))
    params = BinaryBasisParams(lanes=lanes, rows=rows, max_k=max(j.k for j in jobs), act_bits=_act_bits(view.passes),
                               mode="billm")
    return params, jobs


#: How a view's integer passes become runs of an engine, by the unit kind the *view* names: each plan reads the
#: view's pass names and value ranges (``models.views``) and builds the engine parameters from them — an adapter
#: between a scheme's view and a unit, not a fact of the unit (which checks its operands itself).
_PLANS = {UnitKind.TERNARY_MAC: _ternary_plan, UnitKind.XNOR_POPCOUNT: _xnor_plan, UnitKind.INT8_MAC: _int8_plan,
          UnitKind.BINARY_BASIS: _binary_basis_plan}


def plan(view: LinearView, *, lanes: int, rows: int) -> tuple[EngineParams, list[EngineJob]]:
    """The engine (parameters) a view runs on and its runs, or an error naming what cannot run."""
    try:
        make = _PLANS[view.unit]
    except KeyError:
        raise ValueError(f"no engine runs {view.unit.value} layers") from None
    return make(view, lanes, rows)


def check_linear(scheme: str, weight, x, *, lanes: int, rows: int) -> None:
    """Refuse a bad layer before any work: unknown scheme, non-matrix or mismatched shapes, NaN/Inf,
    engine parameters that cannot work."""
    sch = get_scheme(scheme)
    if sch.linear_view is None:
        raise ValueError(f"scheme {scheme!r} keeps its linears in floating point; there is no integer engine to "
                         "simulate (use lowbit analyze for its sizes and operation counts)")
    weight = np.asarray(weight)
    x = np.asarray(x)
    check_matrix("weights W", weight)
    check_matrix("inputs X", x)
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"shape mismatch: W has shape {weight.shape} ([out, in], in = {weight.shape[1]}) but X has "
                         f"shape {x.shape} ([tokens, in], in = {x.shape[1]})")
    check_finite("weights W", weight)
    check_finite("inputs X", x)
    TernaryMacParams(lanes=lanes, rows=rows, max_k=weight.shape[1])


def prepare_linear(scheme: str, weight, x, *, lanes: int, rows: int, **options):
    """Check the float tensors (:func:`check_linear`), quantize them under ``scheme`` and plan the engine runs.

    ``weight`` is ``[out, in]``, ``x`` is ``[tokens, in]`` (NumPy arrays); ``options`` go to the scheme's
    ``linear_view``. Returns ``(view, engine parameters, jobs)``.
    """
    import torch     # here, not at the top: reports import this module, and only quantizing needs torch

    check_linear(scheme, weight, x, lanes=lanes, rows=rows)
    view = get_scheme(scheme).view(torch.from_numpy(np.ascontiguousarray(weight, np.float32)),
                                   torch.from_numpy(np.ascontiguousarray(x, np.float32)), **options)
    params, jobs = plan(view, lanes=lanes, rows=rows)
    return view, params, jobs


def combine_runs(params: EngineParams, job_cycles: dict[str, int]) -> int:
    """Cycles of the runs streamed back to back at full throughput: every run's beats (its cycles alone, less the
    pipeline's fill), then one pipeline latency at the end (``EngineParams.cycles_for_beats``)."""
    return params.cycles_for_beats(sum(params.beats_of_cycles(c) for c in job_cycles.values()))


def simulate_linear(scheme: str, weight, x, *, lanes: int, rows: int, **options) -> LinearResult:
    """Run the layer on the Numba cycle model of its engine."""
    view, params, jobs = prepare_linear(scheme, weight, x, lanes=lanes, rows=rows, **options)
    start = time.perf_counter()
    acc, job_cycles = {}, {}
    for job in jobs:
        run = simulate(params, job.weights, job.acts)
        acc.update(job.accumulators(run.results))
        job_cycles[job.name] = run.cycles
    wall = time.perf_counter() - start
    return LinearResult(scheme, "sim", params, view, tuple(jobs), view.output(acc), acc, job_cycles,
                        combine_runs(params, job_cycles), wall)
