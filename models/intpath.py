"""Integer-only deployment paths: every scheme's linear layer, and the blocks the simulator must reproduce, as the
program will compute them — host ops, engine runs (``MATMUL``) and integer post-processing (``POST``).

The float reference of a scheme is what ``models/<scheme>.py`` computes. Its integer path computes the same thing
with integers only once the input is quantized: the input's quantization is a host op (the scheme's own quantizer,
so the codes — and hence the accumulators — are exactly those of the scheme's integer view, ``models.views``), or
an integer one (:func:`models.intpost.absmax` and :func:`models.intpost.quantize`) when the input is a previous
integer layer's output. Accumulators come from the engine (computed here in torch, exactly); the rescale, bias,
thresholds, activation and requantization are the ``POST`` functions of :mod:`models.intpost`, executed here from
the very operands an instruction would carry (:func:`run_post`).

Every function returns an :class:`IntPath`: the integer parameters (weight codes in the engine's view, POST
coefficients, biases, thresholds and shifts in the layouts of :mod:`models.intpost`) and an ordered list of
:class:`Stage` — one per host op, engine run or POST — each with its integer tensor. This list is what the program
compiler follows and what the simulator's outputs are compared with, stage by stage.

Fixed-point choices (one place; every stage records its ``frac``):

* ``coef_bits`` = 20: a POST coefficient vector is stored as 20-bit integers with one shared ``frac``
  (:func:`models.intpost.fixed_point_array`), error ``<= 2^-(frac+1)`` each.
* ``row_bits`` = 20: a per-token scale from the host (``1/s_x``) as an integer with one ``frac`` for the layer,
  chosen so the calibration's largest scale uses ``row_bits − 1`` bits (one bit of headroom); by default the
  calibration is the input itself (``row_max``). 20 + 20 bits leave the worst ``combine_rows`` product below
  2^62 up to LLaMA-7B's widest reduction (``127·11008·2^19·2^19 < 2^59``; BiLLM's 86 blocks × 7 words
  ``< 2^62``), and put the coefficient and scale error near 2^-19 of the output, below the 16 fractional bits'
  resolution for outputs up to a few units and far below the 8-bit codes' error everywhere.
* ``out_frac`` = 16: layer outputs are ``I32`` with 16 fractional bits (resolution 2^-16 ≈ 1.5e-5, range ±32768).

With these the integer output differs from the exact evaluation of the scheme's formula (its float32 scales
taken as exact reals) by at most ``2^-out_frac`` (the final rounding and the bias's) plus
``Σ_w |acc_w|·(|c_w|·2^-(Fr+1) + r·2^-(Fc+1) + 2^-(Fc+Fr+2))`` (coefficient and row-scale rounding; ``Fc``,
``Fr`` the stage's ``fracs``) — tests/test_intpath.py checks exactly this bound for every scheme.
"""

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from . import intpost as ip
from .units import UnitKind
from .views import LinearView

__all__ = ["Stage", "IntPath", "run_post", "sign_thresholds", "STAGE_KINDS", "COEF_BITS", "ROW_BITS", "OUT_FRAC",
           "bibert_linear", "ternarybert_linear", "bitnet_linear", "bitnet_v1_linear", "int8_linear", "qbb_linear",
           "billm_linear", "bibert_attention_block", "bitnet_ffn_block", "LINEAR_PATHS", "BILLM_WORDS",
           "PACK_TRANSPOSE"]

#: What a stage is: the program's float input, a host op (floating point, docs/intpost.md says why), an engine
#: run, or a POST.
STAGE_KINDS = ("input", "host", "matmul", "post")
COEF_BITS = 20
ROW_BITS = 20
OUT_FRAC = 16
#: The ``pack`` POST's transpose option (docs/isa.md, ``isa.spec.POST_OPTIONS``): the source matrix's columns are
#: the weight tile's output rows (V's bits ``[n_k][d_h]`` become the BAMM's ``[d_h][n_k]`` tile).
PACK_TRANSPOSE = 1 << 8
#: Record words of a binary-basis engine in BiLLM mode: its ``sums`` planes then its ``means`` (result_layout
#: order, hw.params.BinaryBasisParams).
BILLM_WORDS = ("sums.concentrated", "sums.sparse", "sums.salient", "sums.salient_o2",
               "means.concentrated", "means.sparse", "means.salient")
_BILLM_WORD = {("concentrated", 0, "sign"): 0, ("sparse", 0, "sign"): 1, ("salient", 0, "sign"): 2,
               ("salient", 1, "sign"): 3, ("concentrated", 0, "sum"): 4, ("sparse", 0, "sum"): 5,
               ("salient", 0, "sum"): 6}


@dataclass(frozen=True, eq=False)
class Stage:
    """One step of an integer path, as the program executes it.

    ``kind`` is one of :data:`STAGE_KINDS`; ``op`` the engine unit (``"ternary-mac"``, …) of a ``matmul``, the
    :mod:`models.intpost` function (or ``"pack"``) of a ``post``, the HOST function of a ``host`` stage.
    ``inputs`` name earlier stages (the first is the source / activation operand). ``tensor`` is the stage's
    output: int64 for every integer format, float32 for ``F32``; a matmul's is its records ``[tokens][rows][words]``
    (``[blocks][tokens][rows][words]`` for BiLLM's per-block runs) with ``fields`` naming the words.
    ``per_head``: the leading axis is the attention head, one instruction per head.

    POST operands: ``aux`` holds the static auxiliary segments (compile-time parameters), ``aux_inputs`` the
    runtime ones (segment name → stage), packed in :func:`models.intpost.aux_layout` order; ``imm``, ``shift``,
    ``options``, ``word`` and the formats ``inp``/``fmt`` are the instruction's fields. ``fracs`` gives the
    fractional bits of the fixed-point aux segments, ``frac`` that of the output.
    """

    name: str
    kind: str
    op: str
    inputs: tuple[str, ...]
    tensor: np.ndarray
    fmt: str
    frac: int | None = None
    fields: tuple[str, ...] = ()
    weight: str | None = None
    engine: dict = field(default_factory=dict)
    aux: dict = field(default_factory=dict)
    aux_inputs: dict = field(default_factory=dict)
    fracs: dict = field(default_factory=dict)
    imm: int = 0
    shift: int = 0
    options: int = 0
    word: int = 0
    inp: str = "I32"
    per_head: bool = False
    note: str = ""

    def __post_init__(self):
        if self.kind not in STAGE_KINDS:
            raise ValueError(f"stage {self.name!r}: kind must be one of {STAGE_KINDS}, not {self.kind!r}")


@dataclass(frozen=True, eq=False)
class IntPath:
    """An integer path: its stages in program order, its integer parameters and which stage is the output.

    ``params`` maps ``<layer>.weight`` to the weight codes in the engine's view and ``<stage>.<segment>`` to every
    static POST segment. ``views`` maps a matmul stage to the scheme's :class:`~models.views.LinearView` whose
    passes it runs, ``pass_words`` each view pass to its ``(block or None, word)`` in that stage's records.
    """

    scheme: str
    stages: tuple[Stage, ...]
    params: dict
    output: str
    views: dict = field(default_factory=dict)
    pass_words: dict = field(default_factory=dict)
    notes: str = ""

    def __getitem__(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"no stage {name!r}; stages: {[s.name for s in self.stages]}")

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    @property
    def out_frac(self) -> int:
        return self[self.output].frac

    @property
    def y_fixed(self) -> np.ndarray:
        """The output as the program leaves it: fixed point, ``out_frac`` fractional bits."""
        return self[self.output].tensor

    @property
    def y(self) -> np.ndarray:
        """The output as float32 (:func:`models.intpost.to_float`)."""
        return ip.to_float(self.y_fixed, self.out_frac)

    def tensors(self) -> dict[str, np.ndarray]:
        return {s.name: s.tensor for s in self.stages}

    def accumulators(self, matmul: str) -> dict[str, np.ndarray]:
        """The view passes' accumulators ``[tokens, out]`` as read from a matmul stage's records."""
        rec = self[matmul].tensor
        return {name: (rec[..., w] if b is None else rec[b, ..., w]) for name, (b, w) in self.pass_words[matmul].items()}


# -- building blocks --------------------------------------------------------------------------------------------

def run_post(stage: Stage, tensors: Mapping[str, np.ndarray]) -> np.ndarray:
    """Execute a ``post`` stage from its instruction operands: the source is ``tensors[stage.inputs[0]]``, the
    auxiliary region is packed from the static segments and the runtime ones (read from ``tensors``). Per-head
    stages run once per head. This is how every POST output of this module is computed."""
    if stage.kind != "post" or stage.op not in ip.FUNCTIONS:
        raise ValueError(f"stage {stage.name!r} is not a POST of models.intpost")
    src = np.asarray(tensors[stage.inputs[0]])
    heads = range(src.shape[0]) if stage.per_head else [None]
    outs = []
    for h in heads:
        s = src if h is None else src[h]
        if stage.op in ("combine", "combine_rows") and s.ndim == 4:
            s4 = s                                              # [blocks][rows][cols][words]
        else:
            s4 = (s if s.ndim == 3 else s[..., None])[None]
        rows, cols, words = s4.shape[1:]
        segs = dict(stage.aux)
        layout = dict(ip.aux_layout(stage.op, rows, cols, words, stage.options))
        for seg, name in stage.aux_inputs.items():
            t = np.asarray(tensors[name])
            segs[seg] = (t if h is None or not stage.per_head else t[h]).reshape(layout[seg])
        aux = ip.pack_aux(stage.op, rows, cols, words, stage.options, **segs) if layout else None
        outs.append(ip.FUNCTIONS[stage.op](s, aux, imm=stage.imm, shift=stage.shift, options=stage.options,
                                           out=stage.fmt, inp=stage.inp, word=stage.word))
    return outs[0] if not stage.per_head else np.stack(outs)


class _Builder:
    """Collects stages; POST stages are executed through :func:`run_post` as they are added."""

    def __init__(self, prefix: str = ""):
        self.stages: list[Stage] = []
        self.tensors: dict[str, np.ndarray] = {}
        self.params: dict[str, np.ndarray] = {}
        self.views: dict[str, LinearView] = {}
        self.pass_words: dict[str, dict] = {}
        self.prefix = prefix

    def add(self, **kw) -> Stage:
        s = Stage(**kw)
        if s.name in self.tensors:
            raise ValueError(f"duplicate stage name {s.name!r}")
        self.stages.append(s)
        self.tensors[s.name] = s.tensor
        for seg, v in s.aux.items():
            self.params[f"{s.name}.{seg}"] = v
        return s

    def post(self, name, op, inputs, fmt, **kw) -> Stage:
        probe = Stage(name=name, kind="post", op=op, inputs=tuple(inputs), tensor=np.zeros(0, np.int64), fmt=fmt, **kw)
        out = run_post(probe, self.tensors)
        return self.add(name=name, kind="post", op=op, inputs=tuple(inputs), tensor=out, fmt=fmt, **kw)

    def path(self, scheme: str, output: str, notes: str = "") -> IntPath:
        return IntPath(scheme, tuple(self.stages), dict(self.params), output, dict(self.views), dict(self.pass_words),
                       notes)


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def _int_matmul(act, weight) -> np.ndarray:
    """Exact ``act · weightᵀ`` of integer matrices (``[t, k]`` × ``[m, k]`` → int64 ``[t, m]``): a float64 product
    in torch, exact because every partial sum is an integer below 2^53 (checked)."""
    a = torch.as_tensor(np.asarray(act, dtype=np.int64)).to(torch.float64)
    w = torch.as_tensor(np.asarray(weight, dtype=np.int64)).to(torch.float64)
    bound = a.shape[-1] * float(a.abs().max() if a.numel() else 0) * float(w.abs().max() if w.numel() else 0)
    if bound >= 2.0 ** 53:
        raise ValueError(f"integer matmul bound {bound:.3g} reaches 2^53: not exact in float64")
    return (a @ w.transpose(-1, -2)).to(torch.int64).numpy()


def _frac_for(max_abs: float, bits: int, headroom: int = 1) -> int:
    """Largest ``frac`` with ``max_abs·2^frac < 2^(bits − 1 − headroom)``."""
    if not max_abs > 0:
        return bits - 1 - headroom
    return bits - 1 - headroom - math.frexp(float(max_abs))[1]


def _float_input(name: str, x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point torch.Tensor, not {type(x).__name__}")
    if x.ndim != 2 or 0 in x.shape:
        raise ValueError(f"{name} must be a non-empty [tokens, features] matrix, not shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return x.detach().float()


def _bias(bias, out: int) -> np.ndarray | None:
    if bias is None:
        return None
    b = _np(bias).astype(np.float64).reshape(-1)
    if b.shape != (out,):
        raise ValueError(f"bias has shape {b.shape}, expected ({out},)")
    return b


def _host_scale(b: _Builder, prefix: str, x_stage: str, r: np.ndarray, row_max, row_bits: int, note: str) -> str:
    """A host stage emitting the per-token scale ``r[t]`` (``1/s_x``) as fixed point, one ``frac`` per layer."""
    top = float(np.abs(r).max()) if row_max is None else float(row_max)
    frac = _frac_for(top, row_bits)
    b.add(name=f"{prefix}x.scale", kind="host", op="absmax", inputs=(x_stage,), fmt="I32", frac=frac,
          tensor=ip.from_float(r.reshape(-1, 1), frac, "I32"), note=note)
    return f"{prefix}x.scale"


def _rescale(b: _Builder, name: str, acc_stage: str, coef: np.ndarray, bias, *, scale_stage: str | None,
             out_frac: int, coef_bits: int, blocks: int = 1, note: str = "") -> Stage:
    """``combine`` (no row scale) or ``combine_rows`` (``scale_stage`` gives ``rowmul``) of an accumulator stage
    with float coefficients ``coef[blocks][words][cols]`` and a float bias, to ``I32`` with ``out_frac``."""
    coef_i, fc = ip.fixed_point_array(coef, coef_bits)
    cols = coef.shape[-1]
    bias_i = np.zeros(cols, np.int64) if bias is None else ip.from_float(bias, out_frac, "I32")
    fr = 0 if scale_stage is None else next(s for s in b.stages if s.name == scale_stage).frac
    shift = fc + fr - out_frac
    if shift < 0:
        # Coefficients coarser than the output: give them fractional bits down to the output's instead.
        raise ValueError(f"{name}: coefficients ({fc} fractional bits) and row scale ({fr}) give fewer than "
                         f"out_frac = {out_frac} fractional bits")
    op = "combine" if scale_stage is None else "combine_rows"
    aux_inputs = {} if scale_stage is None else {"rowmul": scale_stage}
    inputs = (acc_stage,) if scale_stage is None else (acc_stage, scale_stage)
    return b.post(name, op, inputs, "I32", frac=out_frac, aux={"coef": coef_i.reshape(blocks, -1, cols),
                                                                 "bias": bias_i},
                  aux_inputs=aux_inputs, fracs={"coef": fc, "bias": out_frac, **({"rowmul": fr} if scale_stage else {})},
                  shift=shift, options=blocks if blocks > 1 else 0, note=note)


def _matmul(b: _Builder, name: str, unit: UnitKind, act_stage: str, weight_name: str, weight_codes, act_codes,
            fields=("acc",), engine=None, note: str = "") -> Stage:
    """One engine run with a single-word result (``acc`` or ``dot``): records ``[tokens][out][1]``."""
    b.params[weight_name] = np.asarray(weight_codes, np.int64)
    rec = _int_matmul(act_codes, weight_codes)[..., None]
    return b.add(name=name, kind="matmul", op=unit.value, inputs=(act_stage,), weight=weight_name, tensor=rec,
                 fmt="I32", fields=tuple(fields), engine=dict(engine or {}), note=note)


def _single_view(b: _Builder, stage: str, view: LinearView) -> None:
    b.views[stage] = view
    b.pass_words[stage] = {view.passes[0].name: (None, 0)}


# -- thresholds ------------------------------------------------------------------------------------------------

def sign_thresholds(scale, bias, k: int, *, zero_policy: str = "pos") -> np.ndarray:
    """Integer thresholds ``thr[j]`` with ``sign(scale_j·acc + bias_j) = +1  ⟺  acc > thr[j]`` for every integer
    accumulator ``|acc| <= k`` (the ``threshold`` POST, strict compare), computed exactly from the float values.

    ``zero_policy`` says where ``sign(0)`` goes: ``"neg"`` (−1): ``acc > floor(−b/a)``; ``"pos"`` (+1):
    ``acc >= ceil(−b/a)``, i.e. ``acc > ceil(−b/a) − 1``. A zero scale makes the bit constant (threshold
    ``−k−1``: always 1, or ``k``: never). Thresholds are clamped to ``[−k−1, k]``, which changes no bit and keeps
    them in int32. Negative scales are refused (BiBERT's ``mean|W_r|`` is never negative; FINN would negate the
    weight row).
    """
    if zero_policy not in ("pos", "neg"):
        raise ValueError(f"zero_policy must be 'pos' or 'neg' (a B1 bit has no zero), not {zero_policy!r}")
    a = _np(scale).astype(np.float64).reshape(-1)
    bb = np.zeros_like(a) if bias is None else _np(bias).astype(np.float64).reshape(-1)
    if (a < 0).any():
        raise ValueError(f"sign_thresholds needs non-negative scales; column {int(np.argmax(a < 0))} has "
                         f"{a[a < 0][0]!r} (negate that weight row instead)")
    thr = np.empty(a.shape, np.int64)
    for j, (aj, bj) in enumerate(zip(a.tolist(), bb.tolist())):
        if aj == 0:
            on = bj > 0 or (bj == 0 and zero_policy == "pos")
            thr[j] = -k - 1 if on else k
            continue
        t = -Fraction(bj) / Fraction(aj)                 # exact: float values are dyadic rationals
        v = math.floor(t) if zero_policy == "neg" else math.ceil(t) - 1
        thr[j] = min(max(v, -k - 1), k)
    return thr


# -- per-scheme linear paths -----------------------------------------------------------------------------------

def _dynamic_linear(scheme: str, b: _Builder, prefix: str, unit: UnitKind, x: torch.Tensor, codes, r, weight_codes,
                    coef, bias, *, row_max, out_frac, coef_bits, row_bits, host_note, engine=None,
                    x_stage: str | None = None) -> Stage:
    """Host quantization (codes, per-token scale) → one engine run → ``combine_rows``."""
    if x_stage is None:
        x_stage = f"{prefix}x"
        b.add(name=x_stage, kind="input", op="input", inputs=(), tensor=_np(x).astype(np.float32), fmt="F32")
    scale = _host_scale(b, prefix, x_stage, np.asarray(r, np.float64), row_max, row_bits,
                        note=f"1/s_x per token, fixed point ({host_note})")
    b.add(name=f"{prefix}x.codes", kind="host", op="quantize", inputs=(x_stage,), tensor=_np(codes).astype(np.int64),
          fmt="I8", note=host_note)
    acc = _matmul(b, f"{prefix}acc", unit, f"{prefix}x.codes", f"{prefix}weight", weight_codes, _np(codes),
                  engine=engine)
    return _rescale(b, f"{prefix}y", acc.name, np.asarray(coef, np.float64).reshape(1, 1, -1), bias,
                    scale_stage=scale, out_frac=out_frac, coef_bits=coef_bits,
                    note="y = acc·c_j·(1/s_x) + b_j")


def bitnet_linear(weight, x, *, bias=None, row_max=None, out_frac: int = OUT_FRAC, coef_bits: int = COEF_BITS,
                  row_bits: int = ROW_BITS, prefix: str = "") -> IntPath:
    """BitNet b1.58 (official code): host per-token absmax int8 codes and ``1/s_x`` → ternary-mac ``acc`` →
    ``combine_rows`` with ``c = 1/s_w`` (per tensor) → ``y`` (``I32``, ``out_frac``). Float reference:
    :class:`models.bitnet.BitLinear158`; view: :func:`models.bitnet.linear_view`."""
    from .bitnet import linear_view, quantize_activations, quantize_weights
    x = _float_input("x", x)
    w = weight.detach().float()
    view = linear_view(w, x, bias=None if bias is None else bias.detach())
    wq, xq = quantize_weights(w), quantize_activations(x)
    b = _Builder()
    _dynamic_linear("bitnet-b1.58", b, prefix, UnitKind.TERNARY_MAC, x, xq.codes, 1.0 / _np(xq.s).astype(np.float64),
                    view.passes[0].weight_codes, np.full(w.shape[0], 1.0 / float(wq.s)), _bias(bias, w.shape[0]),
                    row_max=row_max, out_frac=out_frac, coef_bits=coef_bits, row_bits=row_bits,
                    host_note="b1.58 per-token absmax: codes = round(x·127/max|x|)")
    _single_view(b, f"{prefix}acc", view)
    return b.path("bitnet-b1.58", f"{prefix}y")


def bitnet_v1_linear(weight, x, *, bias=None, ln_eps: float = 1e-5, row_max=None, out_frac: int = OUT_FRAC,
                     coef_bits: int = COEF_BITS, row_bits: int = ROW_BITS, prefix: str = "") -> IntPath:
    """BitNet v1: host SubLN (LayerNorm without affine) and absmax codes (``Q_b = 128``, clip ±127) → ±1 weights
    on the ternary-mac engine → ``combine_rows`` with ``c = β = mean|W|``. Reference:
    :class:`models.bitnet.BitLinearV1`; view: :func:`models.bitnet.linear_view_v1`."""
    from .bitnet import linear_view_v1, quantize_activations_v1, quantize_weights_v1
    x = _float_input("x", x)
    w = weight.detach().float()
    view = linear_view_v1(w, x, bias=None if bias is None else bias.detach(), ln_eps=ln_eps)
    x_ln = F.layer_norm(x, (x.shape[-1],), eps=ln_eps)
    xq, wq = quantize_activations_v1(x_ln), quantize_weights_v1(w)
    b = _Builder()
    b.add(name=f"{prefix}x", kind="input", op="input", inputs=(), tensor=_np(x).astype(np.float32), fmt="F32")
    b.add(name=f"{prefix}x.norm", kind="host", op="layernorm", inputs=(f"{prefix}x",), fmt="F32",
          tensor=_np(x_ln).astype(np.float32), note="SubLN: LayerNorm without affine (floating point, host)")
    _dynamic_linear("bitnet-v1", b, prefix, UnitKind.TERNARY_MAC, x_ln, xq.codes, 1.0 / _np(xq.s).astype(np.float64),
                    view.passes[0].weight_codes, np.full(w.shape[0], float(wq.beta)), _bias(bias, w.shape[0]),
                    row_max=row_max, out_frac=out_frac, coef_bits=coef_bits, row_bits=row_bits,
                    host_note="v1 absmax: codes = clip(round(x·128/max|x|), ±127)", x_stage=f"{prefix}x.norm")
    _single_view(b, f"{prefix}acc", view)
    return b.path("bitnet-v1", f"{prefix}y")


def int8_linear(weight, x, *, bias=None, row_max=None, out_frac: int = OUT_FRAC, coef_bits: int = COEF_BITS,
                row_bits: int = ROW_BITS, prefix: str = "") -> IntPath:
    """The W8A8 baseline: host per-token int8 codes → int8-mac → ``combine_rows`` with ``c_j = 1/s_w[j]``.
    Reference: :class:`models.baselines.Int8Linear`; view: :func:`models.baselines.linear_view`."""
    from .baselines import linear_view, quantize_rows_int8, quantize_tokens_int8
    x = _float_input("x", x)
    w = weight.detach().float()
    view = linear_view(w, x, bias=None if bias is None else bias.detach())
    _, sw = quantize_rows_int8(w)
    xc, sx = quantize_tokens_int8(x)
    b = _Builder()
    _dynamic_linear("int8", b, prefix, UnitKind.INT8_MAC, x, xc, 1.0 / _np(sx).astype(np.float64),
                    view.passes[0].weight_codes, 1.0 / _np(sw).astype(np.float64).reshape(-1), _bias(bias, w.shape[0]),
                    row_max=row_max, out_frac=out_frac, coef_bits=coef_bits, row_bits=row_bits,
                    host_note="per-token absmax: codes = round(x·127/max|x|)")
    _single_view(b, f"{prefix}acc", view)
    return b.path("int8", f"{prefix}y")


def ternarybert_linear(weight, x, *, bias=None, clip_val: float | None = 2.5, act_bits: int = 8,
                       granularity: str = "layer", row_max=None, out_frac: int = OUT_FRAC,
                       coef_bits: int = COEF_BITS, row_bits: int = ROW_BITS, prefix: str = "") -> IntPath:
    """TernaryBERT (official code): host clip to ±2.5 and per-*tensor* symmetric 8-bit codes (one ``s`` over every
    token: the host's reduction), ``1/s`` repeated per row → ternary-mac ``acc`` with TWN codes →
    ``combine_rows`` with ``c = α`` → ``y``. Reference: :class:`models.ternarybert.TernaryLinear`; view:
    :func:`models.ternarybert.linear_view`."""
    from .ternarybert import linear_view, quantize_symmetric, twn_ternarize
    x = _float_input("x", x)
    w = weight.detach().float()
    view = linear_view(w, x, bias=None if bias is None else bias.detach(), granularity=granularity, clip_val=clip_val,
                       act_bits=act_bits)
    tw = twn_ternarize(w, granularity=granularity, clip_val=clip_val)
    xq = quantize_symmetric(x, clip_val=clip_val, bits=act_bits, name="x")
    alpha = _np(tw.alpha).astype(np.float64).reshape(-1)
    coef = np.broadcast_to(alpha, (w.shape[0],)) if alpha.size == 1 else alpha
    r = np.full(x.shape[0], 1.0 / float(xq.s))
    b = _Builder()
    _dynamic_linear("ternarybert", b, prefix, UnitKind.TERNARY_MAC, x, xq.codes, r, view.passes[0].weight_codes,
                    coef, _bias(bias, w.shape[0]), row_max=row_max, out_frac=out_frac, coef_bits=coef_bits,
                    row_bits=row_bits,
                    host_note=f"per-tensor symmetric: clip ±{clip_val}, codes = round(x·{2 ** (act_bits - 1) - 1}/max|x|)")
    _single_view(b, f"{prefix}acc", view)
    return b.path("ternarybert", f"{prefix}y")


def qbb_linear(weights, x, *, bias=None, n_bases: int = 4, act_bits: int = 8, row_max=None, out_frac: int = OUT_FRAC,
               coef_bits: int = COEF_BITS, row_bits: int = ROW_BITS, prefix: str = "") -> IntPath:
    """QBB: host per-token int8 codes → binary-basis engine, all bases in one run (records: one signed sum per
    basis, ``sums.s0 …``) → ``combine_rows`` with ``coef[i][j] = α_i[j]`` → ``y``. ``weights`` is a float
    ``[out, in]`` (cascaded init, ``n_bases``) or :class:`models.qbb.QBBWeights`. Reference:
    :class:`models.qbb.QBBLinear` on the fake-quantized input; view: :func:`models.qbb.linear_view_from_weights`."""
    from .qbb import QBBWeights, linear_view_from_weights, qbb_init, quantize_activations
    x = _float_input("x", x)
    qw = weights if isinstance(weights, QBBWeights) else qbb_init(weights.detach().float(), n_bases)
    view = linear_view_from_weights(qw, x, bias=None if bias is None else bias.detach().float(), act_bits=act_bits)
    xq = quantize_activations(x, act_bits=act_bits)
    n, out = qw.n_bases, qw.out_features
    b = _Builder()
    b.add(name=f"{prefix}x", kind="input", op="input", inputs=(), tensor=_np(x).astype(np.float32), fmt="F32")
    scale = _host_scale(b, prefix, f"{prefix}x", 1.0 / _np(xq.s).astype(np.float64), row_max, row_bits,
                        note="1/s_x per token, fixed point")
    codes = _np(xq.codes)
    b.add(name=f"{prefix}x.codes", kind="host", op="quantize", inputs=(f"{prefix}x",), tensor=codes.astype(np.int64),
          fmt="I8", note=f"per-token absmax: codes = round(x·{2 ** (act_bits - 1) - 1}/max|x|)")
    bases = _np(qw.bases).astype(np.int64)
    b.params[f"{prefix}weight"] = bases
    rec = _int_matmul(codes, bases.reshape(n * out, -1)).reshape(codes.shape[0], n, out).transpose(0, 2, 1)
    b.add(name=f"{prefix}acc", kind="matmul", op=UnitKind.BINARY_BASIS.value, inputs=(f"{prefix}x.codes",),
          weight=f"{prefix}weight", tensor=np.ascontiguousarray(rec), fmt="I32",
          fields=tuple(f"sums.s{i}" for i in range(n)), engine={"mode": "bases", "n_bases": n, "scale_bits": 0})
    _rescale(b, f"{prefix}y", f"{prefix}acc", _np(qw.scales).astype(np.float64).reshape(1, n, out),
             _bias(bias, out), scale_stage=scale, out_frac=out_frac, coef_bits=coef_bits,
             note="y = Σ_i α_i[j]·S_i·(1/s_x) + b_j")
    b.views[f"{prefix}acc"] = view
    b.pass_words[f"{prefix}acc"] = {f"basis{i}": (None, i) for i in range(n)}
    return b.path("qbb", f"{prefix}y")


def billm_linear(weights, x, *, bias=None, calibration=None, act_bits: int = 8, row_max=None,
                 out_frac: int = OUT_FRAC, coef_bits: int = COEF_BITS, row_bits: int = ROW_BITS, prefix: str = "",
                 **billm_options) -> IntPath:
    """BiLLM (code variant): host per-token int8 codes → the binary-basis engine in BiLLM mode, one run per
    128-column block (records per block: :data:`BILLM_WORDS`, the four signed group sums then the three plain
    sums) → one ``combine_rows`` over every block (``options`` = blocks) with the ``α`` of each sign sum and the
    ``μ`` (``μ₁ + μ₂`` for the salient group) of each plain sum → ``y``.

    ``weights`` is :class:`models.billm.BiLLMWeights` or a float ``[out, in]`` binarized here on the Hessian of
    ``calibration`` (default ``x``) with ``billm_options``. The view (:func:`models.billm.linear_view`) is not
    rebuilt here (it would binarize again): :attr:`IntPath.pass_words` maps its pass names to record words. The
    engine holds ±1 signs. Under the code's ``zero_policy="torch"`` a group whose every weight equals its mean (a
    single salient column, say) has sign(0) = 0 throughout and ``α = 0``: those elements go to the engine as +1,
    so that row's sign sum differs from the view's pass (which counts 0) and meets a zero coefficient; ``y`` is
    unchanged. A sign(0) inside a group with a non-zero ``α`` would change ``y`` and is refused (binarize with
    ``zero_policy="pos"`` or ``"neg"``). The paper variant has no plain sums for the engine's mode and is refused.
    """
    from .billm import GROUPS, ORDERS, BiLLMWeights, HessianAccumulator, billm_quantize, quantize_activations
    x = _float_input("x", x)
    if isinstance(weights, BiLLMWeights):
        if billm_options:
            raise ValueError(f"billm options {sorted(billm_options)} apply only when binarizing a float weight")
        bw = weights
    else:
        h = HessianAccumulator(weights.shape[1])
        h.add_batch(x if calibration is None else calibration)
        bw = billm_quantize(weights.detach().float(), h.hessian, **billm_options)
    if bw.variant != "code":
        raise ValueError("billm_linear maps the code variant (group means μ); the paper variant has no plain sums")
    xq = quantize_activations(x, bits=act_bits)
    codes = _np(xq.codes).astype(np.int64)
    out, nb = bw.out_features, bw.n_blocks
    groups, signs = _np(bw.groups).astype(np.int64), _np(bw.signs).astype(np.int64)
    alpha, mu = _np(bw.alpha).astype(np.float64), _np(bw.mu)
    b = _Builder()
    b.add(name=f"{prefix}x", kind="input", op="input", inputs=(), tensor=_np(x).astype(np.float32), fmt="F32")
    scale = _host_scale(b, prefix, f"{prefix}x", 1.0 / _np(xq.s).astype(np.float64), row_max, row_bits,
                        note="1/s_x per token, fixed point")
    b.add(name=f"{prefix}x.codes", kind="host", op="quantize", inputs=(f"{prefix}x",), tensor=codes, fmt="I8",
          note=f"per-token absmax: codes = round(x·{2 ** (act_bits - 1) - 1}/max|x|)")
    eng_w, recs = [], []
    coef = np.zeros((nb, len(BILLM_WORDS), out))
    words = {}
    for blk in range(nb):
        st, ed = bw.block_bounds(blk)
        g, s1, s2 = groups[:, st:ed], signs[0, :, st:ed], signs[1, :, st:ed]
        for gi, name in enumerate(GROUPS):
            for o in range(ORDERS[gi]):
                s = (s1, s2)[o]
                hole = (g == gi) & (s == 0) & (alpha[:, blk, gi, o][:, None] != 0)
                if hole.any():
                    raise ValueError(f"block {blk} group {name} order {o + 1}: {int(hole.sum())} sign(0) = 0 with a "
                                     "non-zero α; the engine holds ±1 only: binarize with zero_policy pos or neg")
        e1, e2 = np.where(s1 == 0, 1, s1), np.where(s2 == 0, 1, s2)     # engine bits; zeros only where α = 0
        eng_w.append(np.stack([g, e1, e2]))
        planes = [np.where(g == 0, e1, 0), np.where(g == 1, e1, 0), np.where(g == 2, e1, 0), np.where(g == 2, e2, 0),
                  (g == 0).astype(np.int64), (g == 1).astype(np.int64), (g == 2).astype(np.int64)]
        r = _int_matmul(codes[:, st:ed], np.concatenate(planes)).reshape(codes.shape[0], 7, out).transpose(0, 2, 1)
        recs.append(r)
        coef[blk, 0], coef[blk, 1] = alpha[:, blk, 0, 0], alpha[:, blk, 1, 0]
        coef[blk, 2], coef[blk, 3] = alpha[:, blk, 2, 0], alpha[:, blk, 2, 1]
        coef[blk, 4], coef[blk, 5] = mu[:, blk, 0, 0], mu[:, blk, 1, 0]
        coef[blk, 6] = mu[:, blk, 2, :2].sum(axis=1)          # float32 sum, as the view forms μ₁ + μ₂
        for (gname, o, kind), wi in _BILLM_WORD.items():
            pname = f"b{blk}.{gname}" + (f".o{o + 1}" if gname == "salient" and kind == "sign" else "") + f".{kind}"
            words[pname] = (blk, wi)
    b.params[f"{prefix}weight"] = np.stack(eng_w) if len({w.shape for w in eng_w}) == 1 else tuple(eng_w)
    b.add(name=f"{prefix}acc", kind="matmul", op=UnitKind.BINARY_BASIS.value, inputs=(f"{prefix}x.codes",),
          weight=f"{prefix}weight", tensor=np.ascontiguousarray(np.stack(recs)), fmt="I32", fields=BILLM_WORDS,
          engine={"mode": "billm", "block_size": bw.block_size, "blocks": nb},
          note="one run per column block; records [blocks][tokens][rows][7]")
    _rescale(b, f"{prefix}y", f"{prefix}acc", coef, _bias(bias, out), scale_stage=scale, out_frac=out_frac,
             coef_bits=coef_bits, blocks=nb, note="y = Σ_b Σ_g (α·S + μ·M)·(1/s_x) + b_j")
    b.pass_words[f"{prefix}acc"] = words
    return b.path("billm", f"{prefix}y")


def bibert_linear(weight, x, *, bias=None, zero_policy: str = "pos", out_frac: int = OUT_FRAC,
                  coef_bits: int = COEF_BITS, prefix: str = "") -> IntPath:
    """BiBERT binary linear: host ``sign(x)`` (B1) → XNOR-popcount ``dot`` with ``sign(W − μ_r)`` → ``combine``
    with ``c_j = a_j = mean|W_j|`` and the bias → ``y``. No activation scale, hence no row multiplier.
    ``zero_policy`` must be ``"pos"`` or ``"neg"``: the XNOR engine holds ±1 only (the official ``"torch"``,
    sign(0) = 0, is refused). Reference: :class:`models.bibert.BinaryLinear` with the same ``zero_policy``."""
    from .bibert import binarize_activations, binarize_weights, linear_view
    _check_xnor_policy(zero_policy)
    x = _float_input("x", x)
    w = weight.detach().float()
    view = linear_view(w, x, bias=None if bias is None else bias.detach(), zero_policy=zero_policy)
    wq = binarize_weights(w, zero_policy=zero_policy)
    b = _Builder()
    b.add(name=f"{prefix}x", kind="input", op="input", inputs=(), tensor=_np(x).astype(np.float32), fmt="F32")
    codes = _np(binarize_activations(x, zero_policy=zero_policy).codes).astype(np.int64)
    b.add(name=f"{prefix}x.sign", kind="host", op="sign", inputs=(f"{prefix}x",), tensor=(codes > 0).astype(np.int64),
          fmt="B1", note=f"sign(x), zero_policy {zero_policy}: bit 1 = +1")
    _matmul(b, f"{prefix}acc", UnitKind.XNOR_POPCOUNT, f"{prefix}x.sign", f"{prefix}weight",
            view.passes[0].weight_codes, codes, fields=("dot",))
    _rescale(b, f"{prefix}y", f"{prefix}acc", _np(wq.scale).astype(np.float64).reshape(1, 1, -1),
             _bias(bias, w.shape[0]), scale_stage=None, out_frac=out_frac, coef_bits=coef_bits,
             note="y = a_j·dot + b_j")
    _single_view(b, f"{prefix}acc", view)
    return b.path("bibert", f"{prefix}y")


def _check_xnor_policy(zero_policy: str) -> None:
    if zero_policy not in ("pos", "neg"):
        raise ValueError(f"the XNOR-popcount engine holds ±1 only: zero_policy must be 'pos' or 'neg', not "
                         f"{zero_policy!r} (the official 'torch' sign(0) = 0 has no bit)")


#: Scheme name → its integer linear path ``f(weight, x, *, bias=None, ...) -> IntPath``.
LINEAR_PATHS = {"bibert": bibert_linear, "ternarybert": ternarybert_linear, "bitnet-v1": bitnet_v1_linear,
                "bitnet-b1.58": bitnet_linear, "billm": billm_linear, "qbb": qbb_linear, "int8": int8_linear}


# -- blocks ----------------------------------------------------------------------------------------------------

def bibert_attention_block(x, wq, wk, wv, wo, *, bq=None, bk=None, bv=None, bo=None, heads: int,
                           strict: bool = True, zero_policy: str = "pos", out_frac: int = OUT_FRAC,
                           coef_bits: int = COEF_BITS) -> IntPath:
    """BiBERT's attention block on one sequence ``x`` ``[n, d]`` (no padding: run each sequence at its length;
    the −10000 mask only ever zeroes padded keys' bits), integer from the input's sign to the output linear's
    fixed-point output. Stages (unit / POST and the result words read):

    1. ``x.sign`` host ``sign`` (B1).
    2. ``{q,k,v}.acc`` matmul, xnor-popcount, word ``dot`` (weights ``sign(W − μ_r)``).
    3. ``{q,k,v}.sign`` POST ``threshold`` on ``dot``: ``sign(a_j·dot + b_j)`` as ``dot > thr[j]``
       (:func:`sign_thresholds`; B1).
    4. ``k.pack``, ``v.pack`` POST ``pack`` (the ISA's layout transform, defined by the engines' weight images):
       per head, K's bits ``[n_k][d_h]`` become the xnor-popcount weight tile, V's ``[d_h][n_k]`` (transposed) the
       BAMM's. Tensors: the ±1 codes ``[heads][…]``.
    5. ``qk`` matmul per head, xnor-popcount with ``threshold = "strict"`` (``"nonstrict"`` when not
       ``strict``): words ``dot`` (``sign(Q)·sign(K)ᵀ``) and ``bit``. **The engine's ``bit`` is already
       Bi-Attention's ``bool(A)``**: ``A = dot/√d_h`` (no mask inside one sequence) is ``> 0`` exactly when
       ``dot > 0``.
    6. ``attn.bits`` POST ``compare`` (``dot > 0``, ``>=`` when not strict; B1), per head: equal to ``qk``'s
       ``bit`` word, needed only on an engine built without it.
    7. ``ctx`` matmul per head, BAMM (``identity="and"``, ``zero_policy``): words ``count`` (``bits·sign(V)``,
       the context) and ``sign``.
    8. ``ctx.sign`` POST ``compare`` on ``count`` (``> 0``, or ``>= 0`` under ``zero_policy="pos"``; B1), per
       head: the BAMM's own ``sign`` word as bits; head ``h`` fills columns ``h·d_h … (h+1)·d_h − 1`` of the
       output linear's input ``[n][d]``.
    9. ``o.acc`` matmul, xnor-popcount (word ``dot``); ``o.y`` POST ``combine`` (``a_j``, bias) → ``I32`` with
       ``out_frac``: the block's output.

    ``zero_policy`` (``"pos"``/``"neg"``) replaces the official ``sign(0) = 0`` everywhere a sign meets the
    XNOR engine (inputs, Q/K/V, the context); the float reference with the same policy
    (``bibert.BinaryLinear`` and ``bibert.bi_attention``) gives the same bits and counts.
    """
    from .bibert import binarize_activations, binarize_weights, linear_view
    _check_xnor_policy(zero_policy)
    x = _float_input("x", x)
    n, d = x.shape
    if d % heads:
        raise ValueError(f"hidden size {d} is not a multiple of heads = {heads}")
    dh = d // heads
    b = _Builder()
    b.add(name="x", kind="input", op="input", inputs=(), tensor=_np(x).astype(np.float32), fmt="F32")
    xs = _np(binarize_activations(x, zero_policy=zero_policy).codes).astype(np.int64)
    b.add(name="x.sign", kind="host", op="sign", inputs=("x",), tensor=(xs > 0).astype(np.int64), fmt="B1",
          note=f"sign(x), zero_policy {zero_policy}")
    signs = {}
    for nm, w, bias in (("q", wq, bq), ("k", wk, bk), ("v", wv, bv)):
        w = w.detach().float()
        view = linear_view(w, x, bias=None if bias is None else bias.detach(), zero_policy=zero_policy)
        acc = _matmul(b, f"{nm}.acc", UnitKind.XNOR_POPCOUNT, "x.sign", f"{nm}.weight", view.passes[0].weight_codes,
                      xs, fields=("dot",))
        _single_view(b, acc.name, view)
        thr = sign_thresholds(binarize_weights(w, zero_policy=zero_policy).scale, bias, d, zero_policy=zero_policy)
        st = b.post(f"{nm}.sign", "threshold", (acc.name,), "B1", aux={"thr": thr}, word=0,
                    note=f"sign(a_j·dot + b_j) (zero_policy {zero_policy}) as dot > thr[j]")
        signs[nm] = 2 * st.tensor - 1                                        # ±1, [n, d]
    per_head = {nm: signs[nm].reshape(n, heads, dh).transpose(1, 0, 2) for nm in signs}    # [h, n, d_h]
    b.add(name="k.pack", kind="post", op="pack", inputs=("k.sign",), tensor=per_head["k"], fmt="ENG", per_head=True,
          engine={"unit": UnitKind.XNOR_POPCOUNT.value}, note="K bits [n_k][d_h] per head → xnor weight tile")
    b.add(name="v.pack", kind="post", op="pack", inputs=("v.sign",), tensor=np.ascontiguousarray(
        per_head["v"].transpose(0, 2, 1)), fmt="ENG", per_head=True, engine={"unit": UnitKind.BAMM.value},
        options=PACK_TRANSPOSE,
        note="V bits transposed, [d_h][n_k] per head → BAMM weight tile")
    dot = np.stack([_int_matmul(per_head["q"][h], per_head["k"][h]) for h in range(heads)])      # [h, n, n]
    bit = (dot > 0) if strict else (dot >= 0)
    b.add(name="qk", kind="matmul", op=UnitKind.XNOR_POPCOUNT.value, inputs=("q.sign", "k.pack"), weight="k.pack",
          tensor=np.stack([dot, bit.astype(np.int64)], axis=-1), fmt="I32", fields=("dot", "bit"), per_head=True,
          engine={"threshold": "strict" if strict else "nonstrict"},
          note="the bit word is bool(A) itself: A = dot/√d_h > 0 ⟺ dot > 0")
    bits = b.post("attn.bits", "compare", ("qk",), "B1", word=0, imm=0, options=0 if strict else ip.OPT_GE,
                  per_head=True, note="bool(A) = dot > 0 (official; >= 0 paper): equals qk's bit word").tensor
    vt = b.tensors["v.pack"]                                                 # [h, d_h, n_k] ±1
    count = np.stack([_int_matmul(bits[h], (vt[h] > 0).astype(np.int64)) * 2 - bits[h].sum(1, keepdims=True)
                      for h in range(heads)])                                # 2·popcount(a AND v') − popcount(a)
    zero = {"pos": 1, "neg": -1}[zero_policy]
    sgn = np.where(count > 0, 1, np.where(count < 0, -1, zero))
    b.add(name="ctx", kind="matmul", op=UnitKind.BAMM.value, inputs=("attn.bits", "v.pack"), weight="v.pack",
          tensor=np.stack([count, sgn], axis=-1), fmt="I32", fields=("count", "sign"), per_head=True,
          engine={"identity": "and", "zero_policy": zero_policy}, note="context C = bool(A)·sign(V), in [−n, n]")
    ctx_bits = b.post("ctx.sign", "compare", ("ctx",), "B1", word=0, imm=0,
                      options=ip.OPT_GE if zero_policy == "pos" else 0, per_head=True,
                      note="sign(C) as bits (the BAMM's sign word): count > 0 (>= 0 under zero_policy pos); head h "
                           "fills columns h·d_h … (h+1)·d_h − 1 of the output linear's input").tensor
    merged = ctx_bits.transpose(1, 0, 2).reshape(n, d)                     # heads side by side: [n, d]
    wo = wo.detach().float()
    ctx_pm = torch.from_numpy((2 * merged - 1).astype(np.float32))
    view_o = linear_view(wo, ctx_pm, bias=None if bo is None else bo.detach(), zero_policy=zero_policy)
    _matmul(b, "o.acc", UnitKind.XNOR_POPCOUNT, "ctx.sign", "o.weight", view_o.passes[0].weight_codes,
            2 * merged - 1, fields=("dot",), note="activations: ctx.sign with the heads side by side, [n][heads·d_h]")
    _single_view(b, "o.acc", view_o)
    _rescale(b, "o.y", "o.acc", _np(binarize_weights(wo, zero_policy=zero_policy).scale).astype(np.float64).reshape(
        1, 1, -1), _bias(bo, wo.shape[0]), scale_stage=None, out_frac=out_frac, coef_bits=coef_bits,
             note="y = a_j·dot + b_j")
    return b.path("bibert", "o.y", notes=f"strict={strict}, zero_policy={zero_policy}, heads={heads}")


def bitnet_ffn_block(x, w_gate, w_up, w_down, *, calibration=None, out_frac: int = OUT_FRAC,
                     coef_bits: int = COEF_BITS, row_bits: int = ROW_BITS, hidden_bits: int = 24,
                     act_bits: int = 8) -> IntPath:
    """BitNet b1.58's gated FFN, ``y = down(relu(gate(x))² · up(x))``, integer after the input's quantization —
    the issue's chain exactly, **without** the official model's sub-norm (RMSNorm before ``down``), which would
    be a host op. Stages (unit / POST):

    1. ``x`` input; ``x.scale``, ``x.codes`` host (per-token absmax: ``1/s_x`` in fixed point, int8 codes).
    2. ``gate.acc``, ``up.acc`` matmul, ternary-mac, word ``acc``.
    3. ``gate.y``, ``up.y`` POST ``combine_rows`` (``c = 1/s_w``, ``rowmul = 1/s_x``) → ``I32``, ``frac`` f1.
    4. ``act`` POST ``relu2`` on ``gate.y`` (``shift`` = 2·f1 − f2) → f2.
    5. ``h`` POST ``mul`` with ``up.y`` (``shift`` = f2 + f1 − fh) → fh.
    6. ``h.absmax`` POST ``absmax`` → ``[tokens, 1]``, fh.
    7. ``h.codes`` POST ``quantize`` (``qmax = 127``, aux ``absmax``) → I8: the down projection's per-token codes,
       integer (the float reference quantizes the float ``h``; the two agree except where float32 rounding moved
       a product across a ``.5`` tie, by one code).
    8. ``down.acc`` matmul, ternary-mac.
    9. ``y`` POST ``combine_rows`` (``c = (1/s_w)/127``, ``rowmul = h.absmax``: ``1/s_h = absmax·2^-fh/127``) →
       ``I32`` with ``out_frac``.

    The fractional bits f1, f2, fh are compile-time choices fitted to ``calibration`` (default ``x``): the
    largest with one bit of headroom in ``hidden_bits`` (24) bits for ``gate``/``up``/``act`` and in 23 bits for
    ``h`` (its absmax is the down projection's row multiplier, so the product stays below 2^62).
    """
    from .bitnet import linear_view, quantize_activations, quantize_weights
    x = _float_input("x", x)
    cal = x if calibration is None else _float_input("calibration", calibration)
    wg, wu, wd = (w.detach().float() for w in (w_gate, w_up, w_down))
    if wg.shape != wu.shape or wd.shape != (wg.shape[1], wg.shape[0]) or wg.shape[1] != x.shape[1]:
        raise ValueError(f"gate {tuple(wg.shape)}, up {tuple(wu.shape)}, down {tuple(wd.shape)} and x "
                         f"{tuple(x.shape)} do not form a gated FFN")
    # Calibration: the float reference's magnitudes fix the fractional bits.
    with torch.no_grad():
        def ref(w, t):
            return (quantize_activations(t).dequantized() @ quantize_weights(w).dequantized().T)
        g_c, u_c = ref(wg, cal), ref(wu, cal)
        h_c = torch.relu(g_c) ** 2 * u_c
    top = float(torch.maximum(g_c.abs().max(), u_c.abs().max()))
    f1 = _frac_for(top, hidden_bits)
    f2 = min(_frac_for(float(torch.relu(g_c).max() ** 2), hidden_bits), 2 * f1)
    fh = min(_frac_for(float(h_c.abs().max()), hidden_bits - 1), f1 + f2)
    b = _Builder()
    b.add(name="x", kind="input", op="input", inputs=(), tensor=_np(x).astype(np.float32), fmt="F32")
    xq = quantize_activations(x)
    scale = _host_scale(b, "", "x", 1.0 / _np(xq.s).astype(np.float64), None, row_bits,
                        note="1/s_x per token, fixed point")
    b.add(name="x.codes", kind="host", op="quantize", inputs=("x",), tensor=_np(xq.codes).astype(np.int64), fmt="I8",
          note="b1.58 per-token absmax: codes = round(x·127/max|x|)")
    for nm, w in (("gate", wg), ("up", wu)):
        view = linear_view(w, x)
        acc = _matmul(b, f"{nm}.acc", UnitKind.TERNARY_MAC, "x.codes", f"{nm}.weight", view.passes[0].weight_codes,
                      _np(xq.codes))
        _single_view(b, acc.name, view)
        _rescale(b, f"{nm}.y", acc.name, np.full((1, 1, w.shape[0]), 1.0 / float(quantize_weights(w).s)), None,
                 scale_stage=scale, out_frac=f1, coef_bits=coef_bits, note="y = acc·(1/s_w)·(1/s_x)")
    b.post("act", "relu2", ("gate.y",), "I32", frac=f2, shift=2 * f1 - f2, note="relu(gate)²")
    b.post("h", "mul", ("act", "up.y"), "I32", frac=fh, aux_inputs={"y": "up.y"}, shift=f2 + f1 - fh,
           note="relu(gate)²·up")
    b.post("h.absmax", "absmax", ("h",), "I32", frac=fh, note="per-token max|h|: the down projection's scale")
    qmax = 2 ** (act_bits - 1) - 1
    hc = b.post("h.codes", "quantize", ("h", "h.absmax"), "I8", aux_inputs={"absmax": "h.absmax"}, imm=qmax,
                note=f"codes = round(h·{qmax}/absmax), integer")
    view_d = _IntView(wd, hc.tensor)
    _matmul(b, "down.acc", UnitKind.TERNARY_MAC, "h.codes", "down.weight", view_d.weight_codes, hc.tensor)
    b.views["down.acc"] = view_d.view
    b.pass_words["down.acc"] = {"main": (None, 0)}
    _rescale(b, "y", "down.acc", np.full((1, 1, wd.shape[0]), 1.0 / float(quantize_weights(wd).s) / qmax), None,
             scale_stage="h.absmax", out_frac=out_frac, coef_bits=coef_bits,
             note=f"y = acc·(1/s_w)/{qmax}·absmax_h")
    return b.path("bitnet-b1.58", "y", notes=f"f1={f1}, f2={f2}, fh={fh}; no sub-norm before down")


class _IntView:
    """The down projection's integer view on codes produced by an integer quantize (not from a float input)."""

    def __init__(self, weight: torch.Tensor, codes: np.ndarray):
        from .bitnet import quantize_weights
        from .views import IntPass
        wq = quantize_weights(weight)
        self.weight_codes = _np(wq.codes).astype(np.int64)
        main = IntPass("main", UnitKind.TERNARY_MAC, _np(wq.codes), np.asarray(codes, np.int8), 2, 8,
                       weight_range=(-1, 1))
        self.view = LinearView("bitnet-b1.58", UnitKind.TERNARY_MAC, (main,), lambda acc: acc["main"],
                               weight.shape[1], weight.shape[0], codes.shape[0],
                               notes="activation codes from the integer absmax + quantize POSTs")
