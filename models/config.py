"""Model configurations from Hugging Face config objects, config.json files or built-in names.

lowbit's builders understand three families: a BERT encoder (``bert``), an OPT/GPT-style decoder with a
non-gated FFN (``opt``) and a LLaMA-style decoder with RMSNorm, gated FFN, RoPE and grouped-query attention
(``llama``; BitNet b1.58's ``bitnet`` configs are LLaMA-style with a ReLU² gate and the extra sub-norms).
:class:`ModelConfig` is the normalised, validated form; the built-in names are real config.json files in
``models/configs``.
"""

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

__all__ = ["ModelConfig", "BUILTIN_MODELS", "load_config", "builtin_config_path"]

_CONFIG_DIR = Path(__file__).with_name("configs")
BUILTIN_MODELS = tuple(sorted(p.stem for p in _CONFIG_DIR.glob("*.json")))

_ACTIVATIONS = {"gelu", "gelu_new", "relu", "silu", "relu2"}


@dataclass(frozen=True)
class ModelConfig:
    """Shape and structure of a transformer, normalised across families."""

    name: str
    arch: str                      #: "bert" | "opt" | "llama"
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    max_positions: int
    norm_eps: float
    hidden_act: str
    type_vocab_size: int = 0       #: BERT token types
    attention_bias: bool = True
    mlp_bias: bool = True
    gated_ffn: bool = False        #: LLaMA: down(act(gate(x)) * up(x))
    sub_norms: bool = False        #: BitNet b1.58: RMSNorm before o_proj and down_proj
    tie_word_embeddings: bool = False
    rope_theta: float = 10000.0
    word_embed_proj_dim: int | None = None   #: OPT-350m style projection of the embeddings
    pre_norm: bool = True          #: OPT's do_layer_norm_before; BERT is post-norm
    pad_token_id: int = 0

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                     "intermediate_size", "max_positions"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"model config {self.name!r}: {name} must be a positive integer, not {v!r}")
        for name in ("norm_eps", "rope_theta"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"model config {self.name!r}: {name} must be a finite positive number, not {v!r}")
        if self.arch not in ("bert", "opt", "llama"):
            raise ValueError(f"model config {self.name!r}: unknown architecture {self.arch!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"model config {self.name!r}: num_heads={self.num_heads} is not a multiple of "
                             f"num_kv_heads={self.num_kv_heads}")
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"model config {self.name!r}: unsupported activation {self.hidden_act!r}; "
                             f"supported: {sorted(_ACTIVATIONS)}")
        if self.arch != "llama" and self.num_heads * self.head_dim != self.hidden_size:
            raise ValueError(f"model config {self.name!r}: {self.num_heads} heads × head_dim {self.head_dim} != "
                             f"hidden_size {self.hidden_size}")

    @property
    def is_decoder(self) -> bool:
        return self.arch in ("opt", "llama")

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    def to_dict(self) -> dict:
        return asdict(self)

    def replace(self, **changes) -> "ModelConfig":
        return ModelConfig(**{**asdict(self), **changes})


_REQUIRED = object()


def _int(d: Mapping[str, Any], key: str, where: str, *, default=_REQUIRED, lo: int = 1) -> int:
    """``d[key]`` as a JSON integer >= ``lo``. A missing field (or, for an optional one, ``null``: Hugging Face's
    own "not set", e.g. ``num_key_value_heads=None`` in LlamaConfig) gives ``default``; strings, floats (even
    768.0), booleans, NaN and ``null`` for a required field are refused: ``int()`` would accept several of them
    silently, and a 0 head count divides by zero further on."""
    if key not in d or (d[key] is None and default is not _REQUIRED):
        if default is _REQUIRED:
            raise ValueError(f"{where}: config of model_type {d.get('model_type')!r} lacks the field {key!r}")
        return default
    value = d[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        kind = "a positive integer" if lo == 1 else f"an integer >= {lo}"
        raise ValueError(f"{where}: {key} must be {kind}, not {value!r}")
    return value


def _real(d: Mapping[str, Any], key: str, where: str, default: float) -> float:
    """``d[key]`` as a finite positive number (norm epsilons, RoPE base), ``default`` when missing or null."""
    value = d.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{where}: {key} must be a finite positive number, not {value!r}")
    return float(value)


def _flag(d: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    """``d[key]`` as a JSON boolean: ``bool("false")`` would be True."""
    value = d.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ValueError(f"{where}: {key} must be true or false, not {value!r}")
    return value


def _text(d: Mapping[str, Any], key: str, where: str, default: str) -> str:
    value = d.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ValueError(f"{where}: {key} must be a string, not {value!r}")
    return value


def _heads(d: Mapping[str, Any], where: str, *, need_divisible: bool = True) -> tuple[int, int]:
    hidden = _int(d, "hidden_size", where)
    heads = _int(d, "num_attention_heads", where)
    if need_divisible and hidden % heads:
        raise ValueError(f"{where}: hidden_size {hidden} is not divisible by num_attention_heads {heads}")
    return hidden, heads


def _from_hf_dict(d: Mapping[str, Any], name: str, where: str | None = None) -> ModelConfig:
    where = where or f"model config {name!r}"
    mt = d.get("model_type")
    if mt is None:
        raise ValueError(f"{where}: no 'model_type' field; expected one of bert, opt, llama, bitnet")
    if mt == "bert":
        hidden, heads = _heads(d, where)
        vocab = _int(d, "vocab_size", where)
        return _checked(where, vocab, dict(
            name=name, arch="bert", vocab_size=vocab, hidden_size=hidden,
            num_layers=_int(d, "num_hidden_layers", where), num_heads=heads, num_kv_heads=heads,
            head_dim=hidden // heads, intermediate_size=_int(d, "intermediate_size", where),
            max_positions=_int(d, "max_position_embeddings", where),
            norm_eps=_real(d, "layer_norm_eps", where, 1e-12), hidden_act=_text(d, "hidden_act", where, "gelu"),
            type_vocab_size=_int(d, "type_vocab_size", where, default=2), pre_norm=False,
            pad_token_id=_int(d, "pad_token_id", where, default=0, lo=0)))
    if mt == "opt":
        hidden, heads = _heads(d, where)
        proj = _int(d, "word_embed_proj_dim", where, default=hidden)
        bias = _flag(d, "enable_bias", where, True)
        vocab = _int(d, "vocab_size", where)
        return _checked(where, vocab, dict(
            name=name, arch="opt", vocab_size=vocab, hidden_size=hidden,
            num_layers=_int(d, "num_hidden_layers", where), num_heads=heads, num_kv_heads=heads,
            head_dim=hidden // heads, intermediate_size=_int(d, "ffn_dim", where),
            max_positions=_int(d, "max_position_embeddings", where), norm_eps=1e-5,
            hidden_act=_text(d, "activation_function", where, "relu"),
            attention_bias=bias, mlp_bias=bias, tie_word_embeddings=_flag(d, "tie_word_embeddings", where, True),
            word_embed_proj_dim=None if proj == hidden else proj,
            pre_norm=_flag(d, "do_layer_norm_before", where, True),
            pad_token_id=_int(d, "pad_token_id", where, default=1, lo=0)))
    if mt in ("llama", "bitnet"):
        # an explicit head_dim need not divide hidden_size (the projections are hidden → heads·head_dim)
        explicit_head_dim = d.get("head_dim") is not None
        hidden, heads = _heads(d, where, need_divisible=not explicit_head_dim)
        kv_heads = _int(d, "num_key_value_heads", where, default=heads)
        if heads % kv_heads:
            raise ValueError(f"{where}: num_attention_heads {heads} is not a multiple of num_key_value_heads "
                             f"{kv_heads}")
        vocab = _int(d, "vocab_size", where)
        return _checked(where, vocab, dict(
            name=name, arch="llama", vocab_size=vocab, hidden_size=hidden,
            num_layers=_int(d, "num_hidden_layers", where), num_heads=heads, num_kv_heads=kv_heads,
            head_dim=_int(d, "head_dim", where, default=hidden // heads),
            intermediate_size=_int(d, "intermediate_size", where),
            max_positions=_int(d, "max_position_embeddings", where),
            norm_eps=_real(d, "rms_norm_eps", where, 1e-6),
            hidden_act=_text(d, "hidden_act", where, "relu2" if mt == "bitnet" else "silu"),
            attention_bias=_flag(d, "attention_bias", where, False), mlp_bias=_flag(d, "mlp_bias", where, False),
            gated_ffn=True, sub_norms=(mt == "bitnet"),
            tie_word_embeddings=_flag(d, "tie_word_embeddings", where, False),
            rope_theta=_real(d, "rope_theta", where, 10000.0),
            pad_token_id=_int(d, "pad_token_id", where, default=0, lo=0)))
    raise ValueError(f"{where}: unsupported model_type {mt!r}; supported: bert, opt, llama, bitnet")


def _checked(where: str, vocab: int, fields: dict) -> ModelConfig:
    if fields["pad_token_id"] >= vocab:
        raise ValueError(f"{where}: pad_token_id {fields['pad_token_id']} is not below vocab_size {vocab}")
    try:
        return ModelConfig(**fields)
    except ValueError as exc:                 # ModelConfig's own checks name the model; name the file instead
        message, prefix = str(exc), f"model config {fields['name']!r}: "
        raise ValueError(f"{where}: {message.removeprefix(prefix)}") from None


def builtin_config_path(name: str) -> Path:
    if name not in BUILTIN_MODELS:
        raise ValueError(f"unknown model {name!r}; built-in models: {', '.join(BUILTIN_MODELS)} "
                         "(or give a config.json path)")
    return _CONFIG_DIR / f"{name}.json"


def load_config(model) -> ModelConfig:
    """A :class:`ModelConfig` from a built-in name, a config.json path, a dict, or a Hugging Face config object."""
    if isinstance(model, ModelConfig):
        return model
    if hasattr(model, "to_dict") and hasattr(model, "model_type"):       # transformers.PretrainedConfig
        return _from_hf_dict(model.to_dict(), getattr(model, "name_or_path", "") or model.model_type)
    if isinstance(model, Mapping):
        return _from_hf_dict(model, str(model.get("_name_or_path", model.get("model_type", "config"))))
    text = str(model)
    path = Path(text)
    where = None                       # a built-in is named by its name; a user's file by its path
    if text in BUILTIN_MODELS:
        path = builtin_config_path(text)
        name = text
    elif path.suffix == ".json" or path.exists():
        name = path.stem if path.name != "config.json" else path.parent.name or "config"
    else:
        builtin_config_path(text)      # raises with the list of names
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        state = "is not a regular file" if path.exists() else "does not exist"
        raise ValueError(f"model config file {str(path)!r} {state}")
    if text not in BUILTIN_MODELS:
        where = f"model config file {str(path)!r}"
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"model config file {str(path)!r} is not valid JSON: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:        # unreadable, or not text at all
        raise ValueError(f"model config file {str(path)!r} cannot be read: {exc}") from None
    if not isinstance(d, dict):
        raise ValueError(f"model config file {str(path)!r} does not hold a JSON object")
    return _from_hf_dict(d, name, where)
