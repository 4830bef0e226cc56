"""Model configurations from Hugging Face config objects, config.json files or built-in names.

lowbit's builders understand three families: a BERT encoder (``bert``), an OPT/GPT-style decoder with a
non-gated FFN (``opt``) and a LLaMA-style decoder with RMSNorm, gated FFN, RoPE and grouped-query attention
(``llama``; BitNet b1.58's ``bitnet`` configs are LLaMA-style with a ReLU² gate and the extra sub-norms).
:class:`ModelConfig` is the normalised, validated form; the built-in names are real config.json files in
``models/configs``.
"""

import json
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


def _need(d: Mapping[str, Any], key: str, where: str):
    if key not in d:
        raise ValueError(f"{where}: config of model_type {d.get('model_type')!r} lacks the field {key!r}")
    return d[key]


def _from_hf_dict(d: Mapping[str, Any], name: str) -> ModelConfig:
    where = f"model config {name!r}"
    mt = d.get("model_type")
    if mt is None:
        raise ValueError(f"{where}: no 'model_type' field; expected one of bert, opt, llama, bitnet")
    if mt == "bert":
        hidden = int(_need(d, "hidden_size", where))
        heads = int(_need(d, "num_attention_heads", where))
        if hidden % heads:
            raise ValueError(f"{where}: hidden_size {hidden} is not divisible by num_attention_heads {heads}")
        return ModelConfig(
            name=name, arch="bert", vocab_size=int(_need(d, "vocab_size", where)), hidden_size=hidden,
            num_layers=int(_need(d, "num_hidden_layers", where)), num_heads=heads, num_kv_heads=heads,
            head_dim=hidden // heads, intermediate_size=int(_need(d, "intermediate_size", where)),
            max_positions=int(_need(d, "max_position_embeddings", where)),
            norm_eps=float(d.get("layer_norm_eps", 1e-12)), hidden_act=str(d.get("hidden_act", "gelu")),
            type_vocab_size=int(d.get("type_vocab_size", 2)), pre_norm=False,
            pad_token_id=int(d.get("pad_token_id", 0) or 0))
    if mt == "opt":
        hidden = int(_need(d, "hidden_size", where))
        heads = int(_need(d, "num_attention_heads", where))
        if hidden % heads:
            raise ValueError(f"{where}: hidden_size {hidden} is not divisible by num_attention_heads {heads}")
        proj = int(d.get("word_embed_proj_dim", hidden))
        act = str(d.get("activation_function", "relu"))
        bias = bool(d.get("enable_bias", True))
        return ModelConfig(
            name=name, arch="opt", vocab_size=int(_need(d, "vocab_size", where)), hidden_size=hidden,
            num_layers=int(_need(d, "num_hidden_layers", where)), num_heads=heads, num_kv_heads=heads,
            head_dim=hidden // heads, intermediate_size=int(_need(d, "ffn_dim", where)),
            max_positions=int(_need(d, "max_position_embeddings", where)), norm_eps=1e-5, hidden_act=act,
            attention_bias=bias, mlp_bias=bias, tie_word_embeddings=bool(d.get("tie_word_embeddings", True)),
            word_embed_proj_dim=None if proj == hidden else proj,
            pre_norm=bool(d.get("do_layer_norm_before", True)), pad_token_id=int(d.get("pad_token_id", 1) or 0))
    if mt in ("llama", "bitnet"):
        hidden = int(_need(d, "hidden_size", where))
        heads = int(_need(d, "num_attention_heads", where))
        head_dim = int(d.get("head_dim") or hidden // heads)
        return ModelConfig(
            name=name, arch="llama", vocab_size=int(_need(d, "vocab_size", where)), hidden_size=hidden,
            num_layers=int(_need(d, "num_hidden_layers", where)), num_heads=heads,
            num_kv_heads=int(d.get("num_key_value_heads") or heads), head_dim=head_dim,
            intermediate_size=int(_need(d, "intermediate_size", where)),
            max_positions=int(_need(d, "max_position_embeddings", where)),
            norm_eps=float(d.get("rms_norm_eps", 1e-6)),
            hidden_act=str(d.get("hidden_act", "relu2" if mt == "bitnet" else "silu")),
            attention_bias=bool(d.get("attention_bias", False)), mlp_bias=bool(d.get("mlp_bias", False)),
            gated_ffn=True, sub_norms=(mt == "bitnet"), tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
            rope_theta=float(d.get("rope_theta", 10000.0)), pad_token_id=int(d.get("pad_token_id", 0) or 0))
    raise ValueError(f"{where}: unsupported model_type {mt!r}; supported: bert, opt, llama, bitnet")


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
        raise ValueError(f"model config file {str(path)!r} does not exist")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"model config file {str(path)!r} is not valid JSON: {exc}") from None
    if not isinstance(d, dict):
        raise ValueError(f"model config file {str(path)!r} does not hold a JSON object")
    return _from_hf_dict(d, name)
