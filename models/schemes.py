"""Registry of quantization schemes and baselines: what each quantizes, on which unit, at which widths.

A scheme is named on the command line as ``NAME`` or ``NAME:key=value,...`` (options go to the scheme's
layer functions, e.g. ``qbb:n_bases=2`` or ``bibert:zero_policy=pos``). The fields here are the one place the
rest of lowbit (workload extraction, size analysis, the simulator) learns a scheme's hardware needs.
"""

import importlib
import math
from dataclasses import dataclass, field, replace
from typing import Callable

from .units import UnitKind

__all__ = ["AttentionSpec", "Scheme", "SCHEMES", "get_scheme", "parse_scheme_name", "scheme_options", "BLOCK_LINEARS"]

#: Roles of the linears inside the transformer blocks (what LLM schemes quantize).
BLOCK_LINEARS = frozenset({"attn.q", "attn.k", "attn.v", "attn.o", "ffn.gate", "ffn.up", "ffn.down"})


@dataclass(frozen=True)
class AttentionSpec:
    """How a scheme computes attention: units and operand widths of QKᵀ and A·V, and the probability step."""

    qk_unit: UnitKind
    qk_bits: tuple[int, int]          #: (query bits, key bits)
    probs: str                        #: "softmax" or "bool" (BiBERT's bool(A), no softmax)
    av_unit: UnitKind
    av_bits: tuple[int, int]          #: (probability bits, value bits)
    quantize_operands: bool = False   #: TernaryBERT: 8-bit q, k, probs, v (per-tensor max reductions)


def _lazy(module: str, name: str) -> Callable:
    """A function imported on first call, so the registry loads without every scheme's dependencies."""
    def call(*args, **kwargs):
        return getattr(importlib.import_module(module), name)(*args, **kwargs)
    call.__name__ = f"{module}.{name}"
    call.target = (module, name)
    return call


#: Options a scheme takes besides its linear view's keywords: BiBERT's attention threshold; BiLLM's
#: post-training options (the view passes them on) and the ratio its size accounting assumes.
_EXTRA_OPTIONS = {
    "bibert": {"strict"},
    "billm": {"block_size", "salient_limit", "variant", "percdamp", "salient_metric", "zero_policy", "compensate",
              "salient_ratio"},
}


def scheme_options(scheme: "Scheme") -> frozenset[str]:
    """The option names ``NAME:key=value`` accepts for ``scheme``: its linear view's keywords and the extras."""
    import inspect

    base = scheme.base
    names = set(_EXTRA_OPTIONS.get(base, ()))
    if scheme.linear_view is not None:
        module, function = scheme.linear_view.target
        params = inspect.signature(getattr(importlib.import_module(module), function)).parameters.values()
        names |= {p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in ("bias", "calibration")}
    return frozenset(names)


#: Types of the extra options (the linear views' own keywords take theirs from their annotations).
_EXTRA_TYPES = {"bibert": {"strict": bool}, "billm": {"salient_ratio": float}}
#: QBB's bases: the binary-basis engine (hw.units.BinaryBasisParams) has at most 16 bit planes a row.
MAX_QBB_BASES = 16


def _option_types(scheme: "Scheme") -> dict[str, object]:
    """The annotated type of every option ``scheme`` takes (``bool``, ``int``, ``float``, a ``Literal``, ...)."""
    import typing

    base = scheme.base
    types = dict(_EXTRA_TYPES.get(base, {}))
    functions = [scheme.linear_view.target] if scheme.linear_view is not None else []
    if base == "billm":                       # its view passes the post-training options on to billm_quantize
        functions.append(("models.billm", "billm_quantize"))
    for module, function in functions:
        hints = typing.get_type_hints(getattr(importlib.import_module(module), function))
        types.update({k: v for k, v in hints.items() if k not in types})
    return types


def _check_option_value(spec: str, key: str, value, kind) -> None:
    """Refuse a value the option's annotation does not admit: ``bibert:strict=2`` would otherwise be accepted by
    the workload and only fail (or silently mean True) once the layer runs."""
    import typing

    args = typing.get_args(kind)
    if typing.get_origin(kind) is typing.Literal:
        ok, want = value in args, "one of " + ", ".join(map(str, args))
    elif args and type(None) in args:         # X | None: None cannot be spelled on the command line
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _check_option_value(spec, key, value, non_none[0])
        return
    elif kind is bool:
        ok, want = isinstance(value, bool), "true or false"
    elif kind is int:
        ok, want = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        want = "a finite number"
    else:
        return                                # tensors and other objects: not spelled on the command line
    if not ok:
        raise ValueError(f"scheme option {key}={value!r} in {spec!r} must be {want}")


@dataclass(frozen=True)
class Scheme:
    """One quantization scheme (or full-precision/int8 baseline) as the rest of lowbit sees it."""

    name: str
    description: str
    linear_unit: UnitKind                      #: engine of the quantized linears
    weight_bits: float                         #: storage bits per quantized weight (BiLLM: computed, see analysis)
    act_bits: int | None                       #: linear input code width; None = full precision
    act_quant: str | None                      #: reduction before a quantized linear: absmax-token, max-tensor, sign
    quantized_roles: frozenset[str]
    word_embedding: str | None                 #: None (FP) or "binary-row" / "ternary-row"
    scale_layout: str                          #: "row", "tensor", "billm", "qbb", "none"
    fp_bits: int                               #: width of everything kept in floating point
    attention: AttentionSpec
    linear_view: Callable | None = field(default=None, repr=False)
    pre_linear_norm: bool = False              #: BitNet v1's SubLN inside every BitLinear
    options: dict = field(default_factory=dict)
    reference: str = ""                        #: paper / code the semantics follow
    #: built-in design (hw/designs/NAME.toml) ``lowbit simulate model`` / ``report model`` run when no --design is
    #: given: the one place this choice is made (tests/test_model_sim.py runs every scheme on its default)
    default_design: str = ""

    @property
    def base(self) -> str:
        """The registry name without options: ``"qbb"`` for ``"qbb:n_bases=2"``."""
        return self.name.split(":")[0]

    @property
    def unit(self) -> UnitKind:
        return self.linear_unit

    def quantizes(self, role: str) -> bool:
        return role in self.quantized_roles

    def view(self, weight, x, **kwargs):
        """The integer view of one linear layer under this scheme (scheme options applied)."""
        if self.linear_view is None:
            raise ValueError(f"scheme {self.name!r} has no integer linear view (it keeps linears in floating point)")
        return self.linear_view(weight, x, **{**self.options, **kwargs})


def _fp_attention(bits: int) -> AttentionSpec:
    return AttentionSpec(UnitKind.FP_MAC, (bits, bits), "softmax", UnitKind.FP_MAC, (bits, bits))


_BERT_ROLES = BLOCK_LINEARS | {"pooler"}

SCHEMES: dict[str, Scheme] = {s.name: s for s in (
    Scheme("fp32", "full precision, 32-bit floating point", UnitKind.FP_MAC, 32, None, None, frozenset(), None,
           "none", 32, _fp_attention(32), default_design="fp32"),
    Scheme("fp16", "full precision, 16-bit floating point", UnitKind.FP_MAC, 16, None, None, frozenset(), None,
           "none", 16, _fp_attention(16), default_design="fp16"),
    Scheme("int8", "W8A8 baseline: per-row int8 weights, per-token int8 activations, FP16 attention",
           UnitKind.INT8_MAC, 8, 8, "absmax-token", BLOCK_LINEARS, None, "row", 16, _fp_attention(16),
           _lazy("models.baselines", "linear_view"), default_design="int8"),
    Scheme("bibert", "BiBERT: row-wise binary weights (scale mean|W|), sign activations, Bi-Attention + BAMM",
           UnitKind.XNOR_POPCOUNT, 1, 1, "sign", _BERT_ROLES, "binary-row", "row", 32,
           AttentionSpec(UnitKind.XNOR_POPCOUNT, (1, 1), "bool", UnitKind.BAMM, (1, 1)),
           _lazy("models.bibert", "linear_view"), reference="Qin et al., ICLR 2022; htqin/BiBERT",
           default_design="xnor"),
    Scheme("ternarybert", "TernaryBERT: TWN ternary weights (layer-wise; word embedding row-wise), 8-bit "
           "symmetric activations, 8-bit attention", UnitKind.TERNARY_MAC, 2, 8, "max-tensor", _BERT_ROLES,
           "ternary-row", "tensor", 32,
           AttentionSpec(UnitKind.INT8_MAC, (8, 8), "softmax", UnitKind.INT8_MAC, (8, 8), quantize_operands=True),
           _lazy("models.ternarybert", "linear_view"),
           reference="Zhang et al., EMNLP 2020; huawei-noah/Pretrained-Language-Model TernaryBERT",
           default_design="ternary"),
    Scheme("bitnet-v1", "BitNet: ±1 weights (centred sign, scale mean|W|), SubLN + per-token 8-bit absmax",
           UnitKind.TERNARY_MAC, 1, 8, "absmax-token", BLOCK_LINEARS, None, "tensor", 16, _fp_attention(16),
           _lazy("models.bitnet", "linear_view_v1"), pre_linear_norm=True, reference="Wang et al., arXiv 2310.11453",
           default_design="ternary"),       # ±1 weights are ternary codes that never use 0: the ternary engine
    Scheme("bitnet-b1.58", "BitNet b1.58: absmean ternary weights, per-token absmax int8 activations (official code)",
           UnitKind.TERNARY_MAC, 2, 8, "absmax-token", BLOCK_LINEARS, None, "tensor", 16, _fp_attention(16),
           _lazy("models.bitnet", "linear_view"), reference="Ma et al., arXiv 2402.17764; microsoft/BitNet",
           default_design="ternary"),
    Scheme("billm", "BiLLM: post-training binarization with salient residual and bell-shaped split; FP16 "
           "activations (int8 per token in the integer view)", UnitKind.BINARY_BASIS, 1.1, 8, "absmax-token",
           BLOCK_LINEARS, None, "billm", 16, _fp_attention(16), _lazy("models.billm", "linear_view"),
           reference="Huang et al., ICML 2024; Aaronhuang-778/BiLLM", default_design="billm"),
    Scheme("qbb", "QBB: N binary bases with per-channel scales (N=4 by default); FP16 activations (int8 per token "
           "in the integer view)", UnitKind.BINARY_BASIS, 4, 8, "absmax-token", BLOCK_LINEARS, None, "qbb", 16,
           _fp_attention(16), _lazy("models.qbb", "linear_view"), options={"n_bases": 4},
           reference="Bulat et al., NeurIPS 2024", default_design="binary-basis"),
)}


def _parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_scheme_name(spec: str) -> tuple[str, dict]:
    """``"qbb:n_bases=2"`` → ``("qbb", {"n_bases": 2})``.

    A ``:`` promises at least one option; every item must be ``key=value`` with both sides non-empty, each key
    at most once (a silently dropped or overridden option would simulate a different scheme than the one asked).
    """
    if not isinstance(spec, str):
        raise TypeError(f"a scheme is named by a string NAME[:key=value,...], not {spec!r}")
    name, colon, rest = spec.partition(":")
    options = {}
    if colon and not rest.strip():
        raise ValueError(f"scheme {spec!r} has an empty option list after ':'; give NAME or NAME:key=value,...")
    if colon:
        for item in rest.split(","):
            key, eq, value = (part.strip() for part in item.partition("="))
            if not eq or not key or not value:
                raise ValueError(f"scheme option {item!r} in {spec!r} is not key=value (both sides non-empty)")
            if key in options:
                raise ValueError(f"scheme option {key!r} is given twice in {spec!r}")
            options[key] = _parse_value(value)
    return name, options


def get_scheme(spec: str) -> Scheme:
    """Look a scheme up by ``NAME[:key=value,...]``, with an error listing the known names."""
    name, options = parse_scheme_name(spec)
    try:
        scheme = SCHEMES[name]
    except KeyError:
        raise ValueError(f"unknown scheme {name!r}; known schemes: {', '.join(SCHEMES)}") from None
    if not options:
        return scheme
    accepted = scheme_options(scheme)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(f"scheme {name!r} has no option(s) {unknown}; its options: "
                         f"{', '.join(sorted(accepted)) or 'none'}")
    types = _option_types(scheme)
    for key, value in options.items():
        if key in types:
            _check_option_value(spec, key, value, types[key])
    merged = {**scheme.options, **options}
    weight_bits, act_bits = scheme.weight_bits, scheme.act_bits
    if "act_bits" in options:                  # the workload and the engines must see the width the view uses
        a = options["act_bits"]
        if isinstance(a, bool) or not isinstance(a, int) or not 2 <= a <= 8:
            raise ValueError(f"{name} needs act_bits in [2, 8], not {a!r}")
        act_bits = a
    if name == "qbb":
        n = merged["n_bases"]
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_QBB_BASES:
            raise ValueError(f"qbb needs n_bases in [1, {MAX_QBB_BASES}] (the binary-basis engine's bit planes), "
                             f"not {n!r}")
        weight_bits = n
    return replace(scheme, name=spec, options=merged, weight_bits=weight_bits, act_bits=act_bits)
