"""Apply a scheme to a model: replace the layers the scheme quantizes with its reference layers.

``quantize_model(model, scheme)`` returns a quantized deep copy. Quantization-aware schemes (BiBERT, TernaryBERT,
BitNet v1/b1.58, the int8 baseline) swap in fake-quantized layers that quantize their latent float weights on
every forward, so the result can be fine-tuned; post-training schemes (BiLLM, QBB) run their algorithms, which
need calibration data (BiLLM) or none (QBB's layer-wise stages; its data-free distillation is a separate step).
Which layers are touched is the scheme's ``quantized_roles`` (models.schemes); attention changes where the scheme
changes it (BiBERT's Bi-Attention, TernaryBERT's 8-bit operands).
"""

import copy
from typing import Callable

import torch
from torch import nn

from .schemes import Scheme, get_scheme
from .transformer import AttentionCore, TransformerModel, linear_layers

__all__ = ["quantize_model", "replace_module", "BiAttentionCore", "TernaryBertAttentionCore", "LINEAR_FACTORIES"]


def replace_module(root: nn.Module, qualified_name: str, new: nn.Module) -> None:
    """Put ``new`` where ``qualified_name`` is, keeping the old module's ``role``."""
    parent_name, _, attr = qualified_name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    old = getattr(parent, attr)
    if hasattr(old, "role"):
        new.role = old.role
    setattr(parent, attr, new)


def _copy_linear(cls, linear: nn.Linear, **kwargs) -> nn.Module:
    new = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, **kwargs)
    with torch.no_grad():
        new.weight.copy_(linear.weight)
        if linear.bias is not None:
            new.bias.copy_(linear.bias)
    return new


def _bitnet_158(linear, **opts):
    from .bitnet import BitLinear158
    return _copy_linear(BitLinear158, linear, **opts)


def _bitnet_v1(linear, **opts):
    from .bitnet import BitLinearV1
    return _copy_linear(BitLinearV1, linear, **opts)


def _int8(linear, **opts):
    from .baselines import Int8Linear
    return _copy_linear(Int8Linear, linear)


def _bibert(linear, **opts):
    from .bibert import BinaryLinear
    return BinaryLinear.from_linear(linear, **{k: v for k, v in opts.items() if k in ("zero_policy", "forward_mode")})


def _ternarybert(linear, **opts):
    from .ternarybert import TernaryLinear
    keep = ("act_mode", "granularity", "clip_val", "act_bits")
    return TernaryLinear.from_linear(linear, **{k: v for k, v in opts.items() if k in keep})


def _qbb(linear, **opts):
    from .qbb import quantize_linear
    return quantize_linear(linear, **{k: v for k, v in opts.items() if k in ("n_bases", "refine_steps")})


#: Scheme name → ``(nn.Linear, **options) -> replacement module`` for the per-layer schemes.
LINEAR_FACTORIES: dict[str, Callable] = {
    "bitnet-b1.58": _bitnet_158, "bitnet-v1": _bitnet_v1, "int8": _int8, "bibert": _bibert,
    "ternarybert": _ternarybert, "qbb": _qbb,
}


class BiAttentionCore(AttentionCore):
    """BiBERT's Bi-Attention (bool of the XNOR-popcount scores, BAMM with sign(V)) in place of softmax attention."""

    def __init__(self, *, strict: bool = True, zero_policy: str = "torch"):
        super().__init__()
        self.strict = strict
        self.zero_policy = zero_policy

    def forward(self, q, k, v, mask):
        from .bibert import bi_attention
        return bi_attention(q, k, v, mask, strict=self.strict, zero_policy=self.zero_policy).context


class TernaryBertAttentionCore(AttentionCore):
    """TernaryBERT's attention: 8-bit symmetric Q, K before QKᵀ and 8-bit softmax output and V before A·V."""

    def __init__(self, *, clip_val: float | None = 2.5, bits: int = 8):
        super().__init__()
        self.clip_val = clip_val
        self.bits = bits

    def forward(self, q, k, v, mask):
        from .ternarybert import quantize_attention
        return quantize_attention(q, k, v, mask, clip_val=self.clip_val, bits=self.bits).context


def _attention_core(scheme: Scheme) -> Callable[[], AttentionCore] | None:
    base = scheme.name.split(":")[0]
    if base == "bibert":
        opts = {k: v for k, v in scheme.options.items() if k in ("strict", "zero_policy")}
        return lambda: BiAttentionCore(**opts)
    if base == "ternarybert":
        opts = {k: v for k, v in scheme.options.items() if k == "clip_val"}
        return lambda: TernaryBertAttentionCore(**opts)
    return None


def _embedding(scheme: Scheme, emb: nn.Embedding) -> nn.Module | None:
    base = scheme.name.split(":")[0]
    if base == "bibert":
        from .bibert import BinaryEmbedding
        return BinaryEmbedding.from_embedding(emb, **{k: v for k, v in scheme.options.items() if k == "zero_policy"})
    if base == "ternarybert":
        from .ternarybert import TernaryEmbedding
        return TernaryEmbedding.from_embedding(emb)
    return None


def quantize_model(model: TransformerModel, scheme, *, roles: set[str] | None = None,
                   calibration: Callable[[nn.Module], None] | None = None, attention: bool = True,
                   embeddings: bool = True) -> TransformerModel:
    """A quantized deep copy of ``model`` under ``scheme`` (a name, ``name:opt=value`` or a Scheme).

    ``roles`` narrows the linears touched (default: the scheme's ``quantized_roles``); ``attention`` and
    ``embeddings`` switch off the scheme's attention and embedding changes (for weight-only comparisons).
    ``calibration(model)`` runs calibration batches through the model; BiLLM needs it.
    """
    sch = get_scheme(scheme) if isinstance(scheme, str) else scheme
    base = sch.name.split(":")[0]
    if base in ("fp32", "fp16"):
        return copy.deepcopy(model).to(torch.float32 if base == "fp32" else torch.float16)
    wanted = set(sch.quantized_roles if roles is None else roles)
    unknown = wanted - set(sch.quantized_roles) if roles is not None else set()
    if unknown:
        raise ValueError(f"{sch.name} does not quantize {sorted(unknown)}; it quantizes {sorted(sch.quantized_roles)}")
    q = copy.deepcopy(model)
    targets = [(name, module) for name, module, role in linear_layers(q) if role in wanted]
    if base == "billm":
        if calibration is None:
            raise ValueError("BiLLM needs calibration data: pass calibration=callable(model) that runs batches")
        from .billm import quantize_model_sequential
        keep = ("block_size", "salient_limit", "variant", "percdamp", "salient_metric", "zero_policy", "compensate")
        quantize_model_sequential(q, targets, calibration, **{k: v for k, v in sch.options.items() if k in keep})
        for name, module in targets:             # the replacements keep the role the scheme is keyed on
            q.get_submodule(name).role = module.role
    else:
        factory = LINEAR_FACTORIES[base]
        for name, module in targets:
            replace_module(q, name, factory(module, **sch.options))
    if attention:
        make_core = _attention_core(sch)
        if make_core is not None:
            for layer in q.layers:
                layer.attn.core = make_core()
    if embeddings and sch.word_embedding is not None:
        new = _embedding(sch, q.embed.word)
        if new is not None:
            q.embed.word = new
    return q
