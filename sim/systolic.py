"""Cycle model of an R × C systolic array (``hw.params.SystolicArrayParams``) running one GEMM, SCALE-Sim style.

:func:`gemm` maps ``A[m × k] · B[k × n]`` (``k`` the reduction) onto the array and returns a :class:`SystolicRun`:
the compute cycles, folds, utilisation, mapping efficiency and the event counts an energy model prices. The fast
mode is a closed form per fold; ``stepped=True`` moves real integer operands through the PE registers cycle by
cycle (``sim/kernels/systolic.py``) and also returns the product. Both give the same cycles and event counts.

Mapping (SCALE-Sim's names: ``Sr`` spatial rows, ``Sc`` spatial columns, ``T`` time; see :data:`DIMENSION_MAP`):

========  ===========  ===========  ==========  =====================================================
dataflow  Sr (rows)    Sc (cols)    T (time)    held in the PEs
========  ===========  ===========  ==========  =====================================================
``os``    m            n            k           the outputs C (A enters the left edge, B the top edge)
``ws``    k            n            m           B (A streams in from the left, sums flow down)
``is``    k            m            n           A (B streams in from the left, sums flow down)
========  ===========  ===========  ==========  =====================================================

The GEMM is cut into ``ceil(Sr/R) · ceil(Sc/C)`` folds run one after another (column folds outermost); every
fold costs the full array's fill and drain even when it uses fewer PEs:

* OS: ``R + C + T - 2`` cycles per fold (SCALE-Sim 3.0.0's code): the last MAC is PE(R-1, C-1)'s at
  ``(T-1) + (R-1) + (C-1)``; the outputs leave through a shadow shift chain during the next fold, and the last
  fold's ``R`` drain cycles are not counted (they are reported as :attr:`SystolicRun.drain_tail`).
  ``convention="paper"`` gives the SCALE-Sim paper's ``2R + C + T - 2``: the array waits for the R drain cycles
  after every fold (their maintainers agree this is the intended count, scale-sim-v3 issue #4).
* WS and IS: ``2R + C + T - 2``: R cycles to shift the stationary tile in, then ``T + R + C - 2`` until the last
  partial sum leaves the bottom of the last column.

**Cycle definition.** ``cycles`` counts clock cycles from the first cycle of the first fold to the last cycle of
the last fold, inclusive (the project's ``last - first + 1``). SCALE-Sim 3.0.0 reports the index of that last
cycle instead, one less (their issues #60 and #125): in a stall-free run its "compute cycles" equal
:attr:`SystolicRun.scalesim_cycles` ``= cycles - 1`` under the default convention. SCALE-Sim adds memory stall
cycles to that figure; this model has no memory system (operands are always there).

**Events** (:meth:`SystolicRun.events`), all counted on valid data only (padding is never streamed):
``macs``; register writes in the PEs for A, B and the partial sums/outputs (a value latched by a PE, from the
array edge or a neighbour; a streamed operand crosses every PE of its row or column, used or not, as in
hardware; a stationary operand shifted in to row ``i`` is written ``i + 1`` times; an OS output in row ``i`` is
written ``R - i`` times on its way out); SRAM reads of A and B and writes of C, in elements, as SCALE-Sim counts
them, plus ``sram_c_reads``: WS/IS partial sums of one reduction fold read back to add the next (SCALE-Sim does
not count those; it also adds ``R + C`` phantom OFMAP writes per OS fold, which this model does not); and the
OS accumulator's ``acc_reads`` and ``acc_writes``: every MAC reads the PE's ``acc_width``-bit accumulator and
writes the sum back, and each finished output is read once more as it is copied into the output chain (ZigZag
counts its per-PE output register the same way); WS and IS have none (their partial sums move on, as
``psum_reg_writes``).
"""

from dataclasses import dataclass

import numpy as np

from hw.units import SystolicArrayParams
from models.intops import signed_range

from .kernels import systolic as kernel

__all__ = ["SystolicRun", "gemm", "dimension_map", "DIMENSION_MAP", "CONVENTIONS", "EVENTS", "MAX_STEPPED_WORK"]

#: Which GEMM dimension is SCALE-Sim's (Sr, Sc, T) for each dataflow.
DIMENSION_MAP = {"os": ("m", "n", "k"), "ws": ("k", "n", "m"), "is": ("k", "m", "n")}

#: Cycle conventions: ``"scalesim"`` follows SCALE-Sim 3.0.0's code, ``"paper"`` its ISPASS paper (OS only
#: differs).
CONVENTIONS = ("scalesim", "paper")

#: Event names of :meth:`SystolicRun.events`, in order.
EVENTS = ("macs", "a_reg_writes", "b_reg_writes", "psum_reg_writes", "sram_a_reads", "sram_b_reads",
          "sram_c_writes", "sram_c_reads", "acc_reads", "acc_writes")

#: Largest ``cycles × rows × cols`` (PE-cycles) the stepped mode accepts: about a minute of stepping at the
#: ~10⁸–4·10⁸ PE-cycles/s the kernels reach.
MAX_STEPPED_WORK = 10_000_000_000


@dataclass(frozen=True)
class SystolicRun:
    """One GEMM on the array: timing, mapping and event counts (see the module docstring for definitions)."""

    params: SystolicArrayParams
    m: int
    k: int
    n: int
    convention: str
    sr: int                  #: SCALE-Sim's Sr: the GEMM dimension spread over the array rows
    sc: int                  #: SCALE-Sim's Sc: the dimension spread over the array columns
    t: int                   #: SCALE-Sim's T: the dimension streamed in time
    row_folds: int           #: ``ceil(sr / rows)``
    col_folds: int           #: ``ceil(sc / cols)``
    cycles_per_fold: int
    cycles: int              #: compute cycles, first cycle of the first fold to the last of the last, inclusive
    drain_tail: int          #: cycles after ``cycles`` until the last output is in SRAM (OS, SCALE-Sim convention)
    macs: int
    a_reg_writes: int
    b_reg_writes: int
    psum_reg_writes: int
    sram_a_reads: int
    sram_b_reads: int
    sram_c_writes: int
    sram_c_reads: int
    acc_reads: int           #: OS: accumulator reads in the PEs, one per MAC and one per output leaving; WS/IS: 0
    acc_writes: int          #: OS: accumulator writes in the PEs, one per MAC; WS/IS: 0
    stepped: bool            #: counted by the stepped kernel rather than the closed form
    product: np.ndarray | None = None   #: ``a @ b`` as computed by the stepped array (int64), else None

    @property
    def folds(self) -> int:
        return self.row_folds * self.col_folds

    @property
    def dataflow(self) -> str:
        return self.params.dataflow

    @property
    def utilisation(self) -> float:
        """MACs over the MAC slots of the compute cycles: ``macs / (cycles · rows · cols)``."""
        return self.macs / (self.cycles * self.params.rows * self.params.cols)

    @property
    def mapping_efficiency(self) -> float:
        """Mean over folds of the fraction of PEs the fold maps (SCALE-Sim's "mapping efficiency")."""
        return self.sr * self.sc / (self.folds * self.params.rows * self.params.cols)

    @property
    def scalesim_cycles(self) -> int:
        """What SCALE-Sim 3.0.0 reports as compute cycles for this GEMM without stalls, under either convention:
        the index of the last cycle of its own timing (without the paper's per-fold OS drain)."""
        paper_drain = self.folds * self.params.rows if self.dataflow == "os" and self.convention == "paper" else 0
        return self.cycles - paper_drain - 1

    def events(self) -> dict[str, int]:
        """Event counts by name (:data:`EVENTS`), for an energy model to price."""
        return {name: getattr(self, name) for name in EVENTS}


def dimension_map(dataflow: str, m: int, k: int, n: int) -> tuple[int, int, int]:
    """``(Sr, Sc, T)`` of the GEMM ``[m × k]·[k × n]`` under ``dataflow`` (see :data:`DIMENSION_MAP`)."""
    if dataflow not in DIMENSION_MAP:
        raise ValueError(f"dataflow must be one of {', '.join(map(repr, DIMENSION_MAP))}, not {dataflow!r}")
    dims = {"m": m, "k": k, "n": n}
    return tuple(dims[d] for d in DIMENSION_MAP[dataflow])


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive integer, not {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return int(value)


def _operand(name: str, x, shape: tuple[int, int], bits: int) -> np.ndarray:
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array, not {x.dtype}")
    if x.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, not {x.shape}")
    lo, hi = signed_range(bits)
    bad = (x < lo) | (x > hi)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name} holds {int(x[idx])} at {idx}, outside the {bits}-bit range [{lo}, {hi}]")
    return np.ascontiguousarray(x, dtype=np.int64)


def _chunks(total: int, size: int) -> np.ndarray:
    """Sizes of the folds of ``total`` over ``size`` PEs: full ones, then the remainder."""
    sizes = np.full(-(-total // size), size, np.int64)
    sizes[-1] = total - size * (sizes.size - 1)
    return sizes


def _closed_form(p: SystolicArrayParams, m: int, k: int, n: int, convention: str) -> dict[str, int]:
    R, C = p.rows, p.cols
    sr, sc, t = dimension_map(p.dataflow, m, k, n)
    ru, cu = _chunks(sr, R), _chunks(sc, C)
    rf, cf = ru.size, cu.size
    if p.dataflow == "os":
        per_fold = t + R + C - 2 + (R if convention == "paper" else 0)
        ev = dict(
            a_reg_writes=cf * t * sr * C,                 # each A element crosses all C PEs of its row, per col fold
            b_reg_writes=rf * t * sc * R,                 # each B element crosses all R PEs of its column, per row fold
            # an output in row i is copied into the chain and moves R-1-i times: R - i writes
            psum_reg_writes=sc * int(np.sum(ru * R - ru * (ru - 1) // 2)),
            sram_a_reads=cf * sr * t,
            sram_b_reads=rf * t * sc,
            sram_c_writes=m * n,
            sram_c_reads=0,
            acc_reads=m * k * n + m * n,                  # every MAC, then the copy into the output chain
            acc_writes=m * k * n,                         # every MAC writes its sum back
        )
        drain_tail = R if convention == "scalesim" else 0
    else:
        per_fold = 2 * R + C + t - 2
        stat_writes = sc * int(np.sum(ru * (ru + 1) // 2))   # row i of a tile is written i + 1 times on its way in
        stream_writes = cf * t * sr * C
        stream_reads = cf * t * sr
        stat_reads = sr * sc
        a_reg, b_reg = (stream_writes, stat_writes) if p.dataflow == "ws" else (stat_writes, stream_writes)
        a_rd, b_rd = (stream_reads, stat_reads) if p.dataflow == "ws" else (stat_reads, stream_reads)
        ev = dict(
            a_reg_writes=a_reg,
            b_reg_writes=b_reg,
            psum_reg_writes=rf * t * sc * R,              # each partial sum crosses all R PEs of its column
            sram_a_reads=a_rd,
            sram_b_reads=b_rd,
            sram_c_writes=rf * t * sc,
            sram_c_reads=(rf - 1) * t * sc,
            acc_reads=0,                                  # a partial sum moves on: psum_reg_writes
            acc_writes=0,
        )
        drain_tail = 0
    return dict(sr=sr, sc=sc, t=t, row_folds=rf, col_folds=cf, cycles_per_fold=per_fold,
                cycles=rf * cf * per_fold, drain_tail=drain_tail, macs=m * k * n, **ev)


def _stepped(p: SystolicArrayParams, a: np.ndarray, b: np.ndarray, convention: str) -> tuple[dict, np.ndarray]:
    m, k = a.shape
    n = b.shape[1]
    counts = np.zeros(kernel.N_EVENTS, np.int64)
    timing = np.zeros(2, np.int64)
    if p.dataflow == "os":
        out = np.zeros((m, n), np.int64)
        status = kernel.run_os(a, b, p.rows, p.cols, convention == "scalesim", out, counts, timing)
        product = out
        a_reg, b_reg = counts[kernel.STREAM1_REG], counts[kernel.STREAM2_REG]
        a_rd, b_rd = counts[kernel.SRAM1_READ], counts[kernel.SRAM2_READ]
    elif p.dataflow == "ws":
        out = np.zeros((m, n), np.int64)
        status = kernel.run_stationary(a, b, p.rows, p.cols, out, counts, timing)
        product = out
        a_reg, b_reg = counts[kernel.STREAM1_REG], counts[kernel.STREAM2_REG]
        a_rd, b_rd = counts[kernel.SRAM1_READ], counts[kernel.SRAM2_READ]
    else:
        # IS is the stationary engine holding Aᵀ while Bᵀ streams: it computes (A·B)ᵀ = Bᵀ·Aᵀ
        out = np.zeros((n, m), np.int64)
        status = kernel.run_stationary(np.ascontiguousarray(b.T), np.ascontiguousarray(a.T), p.rows, p.cols, out,
                                       counts, timing)
        product = out.T.copy()
        a_reg, b_reg = counts[kernel.STREAM2_REG], counts[kernel.STREAM1_REG]
        a_rd, b_rd = counts[kernel.SRAM2_READ], counts[kernel.SRAM1_READ]
    if status != kernel.OK:
        raise RuntimeError(f"stepped systolic model stopped with status {status} (output chain not drained)")
    ev = dict(cycles=int(timing[0]), drain_tail=int(timing[1]), macs=int(counts[kernel.MACS]),
              a_reg_writes=int(a_reg), b_reg_writes=int(b_reg), psum_reg_writes=int(counts[kernel.PSUM_REG]),
              sram_a_reads=int(a_rd), sram_b_reads=int(b_rd), sram_c_writes=int(counts[kernel.SRAM_OUT_WRITE]),
              sram_c_reads=int(counts[kernel.SRAM_OUT_READ]), acc_reads=int(counts[kernel.ACC_READ]),
              acc_writes=int(counts[kernel.ACC_WRITE]))
    return ev, product


def gemm(params: SystolicArrayParams, m: int, k: int, n: int, *, stepped: bool = False, a=None, b=None,
         convention: str = "scalesim", seed: int = 0) -> SystolicRun:
    """Run the GEMM ``A[m × k] · B[k × n]`` on the array described by ``params``.

    Parameters
    ----------
    params : the array (rows × cols PEs, dataflow, operand and accumulator widths).
    m, k, n : GEMM sizes; ``k`` is the reduction.
    stepped : step the PE array cycle by cycle (Numba) instead of the closed form; also returns the product.
    a, b : integer operands ``[m, k]`` and ``[k, n]`` within ``params.act_bits``/``weight_bits`` (signed), read only
        by the stepped mode; without them it steps random operands drawn with ``seed``.
    convention : ``"scalesim"`` (default, SCALE-Sim 3.0.0's code) or ``"paper"`` (the SCALE-Sim paper's OS
        timing, ``2R + C + T - 2`` per fold); WS and IS are the same under both.

    Raises
    ------
    TypeError, ValueError : bad params, sizes, options or operands (shape, dtype, range), an accumulator too
        narrow for ``k`` worst-case products, or a stepped run above :data:`MAX_STEPPED_WORK`.
    """
    if not isinstance(params, SystolicArrayParams):
        raise TypeError(f"params must be a SystolicArrayParams, not {type(params).__name__}")
    m, k, n = _positive("m", m), _positive("k", k), _positive("n", n)
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {', '.join(map(repr, CONVENTIONS))}, not {convention!r}")
    if not isinstance(stepped, bool):
        raise TypeError(f"stepped must be a bool, not {stepped!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, not {seed!r}")
    # the worst-case dot product must fit the PE accumulator (signed acc_width bits)
    alo, ahi = signed_range(params.act_bits)
    wlo, whi = signed_range(params.weight_bits)
    worst = k * max(abs(x * y) for x in (alo, ahi) for y in (wlo, whi))
    acc_hi = signed_range(params.acc_width)[1]
    if worst > acc_hi:
        raise ValueError(f"k={k} products of {params.act_bits}×{params.weight_bits}-bit operands can reach {worst}, "
                         f"beyond the {params.acc_width}-bit accumulator's {acc_hi}")
    if not stepped and (a is not None or b is not None):
        raise ValueError("operands a and b are only read by the stepped mode: pass stepped=True")
    if (a is None) != (b is None):
        raise ValueError(f"give both operands or neither (a is {'set' if a is not None else 'None'}, "
                         f"b is {'set' if b is not None else 'None'})")

    if a is not None:
        a = _operand(f"a ({params.act_bits}-bit activations)", a, (m, k), params.act_bits)
        b = _operand(f"b ({params.weight_bits}-bit weights)", b, (k, n), params.weight_bits)

    fast = _closed_form(params, m, k, n, convention)
    if not stepped:
        return SystolicRun(params, m, k, n, convention, stepped=False, **fast)

    work = (fast["cycles"] + fast["drain_tail"]) * params.rows * params.cols
    if work > MAX_STEPPED_WORK:
        raise ValueError(f"a stepped run of {fast['cycles']:,} cycles × {params.rows}×{params.cols} PEs exceeds "
                         f"{MAX_STEPPED_WORK:,} PE-cycles; use the fast mode (stepped=False) for this size")
    if a is None:
        rng = np.random.default_rng(seed)
        a = rng.integers(alo, ahi, (m, k), endpoint=True, dtype=np.int64)
        b = rng.integers(wlo, whi, (k, n), endpoint=True, dtype=np.int64)
    ev, product = _stepped(params, a, b, convention)
    geometry = {key: fast[key] for key in ("sr", "sc", "t", "row_folds", "col_folds", "cycles_per_fold")}
    return SystolicRun(params, m, k, n, convention, stepped=True, product=product, **geometry, **ev)
