"""The parameters of a model built by :func:`models.transformer.build_model`, as names and shapes, without torch.

Sizes and operation counts (``models.analysis``, and through it ``lowbit simulate model``) only need the
parameter list, and building even a ``meta``-device model costs the 1–2 s of importing torch. This module
walks the same structure in plain Python: every parameter ``named_parameters()`` yields, in the same order, with
the same names and shapes, tied weights once. ``tests/test_shapes.py`` holds it equal to the torch model for
every built-in configuration and both pooler settings, so the two cannot drift apart unnoticed.
"""

from dataclasses import dataclass

from .config import ModelConfig

__all__ = ["ParamShape", "parameter_shapes"]


@dataclass(frozen=True)
class ParamShape:
    """One parameter: its qualified name, shape and role.

    ``role`` is the owning layer's role (``attn.q``, ``ffn.up``, ``embed.word``, ``embed.other``, ``lm_head``, …)
    for a weight, ``"bias"`` for any bias, and ``"norm"`` for a norm's scale.
    """

    name: str
    shape: tuple[int, ...]
    role: str

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


def parameter_shapes(cfg: ModelConfig, *, pooler: bool = True) -> list[ParamShape]:
    """Every parameter of ``build_model(cfg, pooler=pooler)`` in ``named_parameters()`` order."""
    out: list[ParamShape] = []

    def linear(name: str, in_f: int, out_f: int, bias: bool, role: str) -> None:
        out.append(ParamShape(f"{name}.weight", (out_f, in_f), role))
        if bias:
            out.append(ParamShape(f"{name}.bias", (out_f,), "bias"))

    def norm(name: str, dim: int, *, rms: bool) -> None:
        out.append(ParamShape(f"{name}.weight", (dim,), "norm"))
        if not rms:                                   # LayerNorm also has a bias
            out.append(ParamShape(f"{name}.bias", (dim,), "bias"))

    d, hd, llama = cfg.hidden_size, cfg.head_dim, cfg.arch == "llama"
    width = cfg.word_embed_proj_dim or d
    out.append(ParamShape("embed.word.weight", (cfg.vocab_size, width), "embed.word"))
    if cfg.arch == "bert":
        out.append(ParamShape("embed.position.weight", (cfg.max_positions, d), "embed.other"))
        out.append(ParamShape("embed.token_type.weight", (cfg.type_vocab_size, d), "embed.other"))
        norm("embed.norm", d, rms=False)
    elif cfg.arch == "opt":
        out.append(ParamShape("embed.position.weight", (cfg.max_positions + 2, d), "embed.other"))
        if cfg.word_embed_proj_dim:
            linear("embed.project_in", cfg.word_embed_proj_dim, d, False, "embed.project_in")
    for i in range(cfg.num_layers):
        p = f"layers.{i}"
        linear(f"{p}.attn.q", d, cfg.num_heads * hd, cfg.attention_bias, "attn.q")
        linear(f"{p}.attn.k", d, cfg.kv_dim, cfg.attention_bias, "attn.k")
        linear(f"{p}.attn.v", d, cfg.kv_dim, cfg.attention_bias, "attn.v")
        linear(f"{p}.attn.o", cfg.num_heads * hd, d, cfg.attention_bias, "attn.o")
        if cfg.sub_norms:
            norm(f"{p}.attn.sub_norm", cfg.num_heads * hd, rms=True)
        norm(f"{p}.attn_norm", d, rms=llama)
        f = cfg.intermediate_size
        if cfg.gated_ffn:
            linear(f"{p}.ffn.gate", d, f, cfg.mlp_bias, "ffn.gate")
        linear(f"{p}.ffn.up", d, f, cfg.mlp_bias, "ffn.up")
        linear(f"{p}.ffn.down", f, d, cfg.mlp_bias, "ffn.down")
        if cfg.sub_norms:
            norm(f"{p}.ffn.sub_norm", f, rms=True)
        norm(f"{p}.ffn_norm", d, rms=llama)
    if cfg.is_decoder:
        if cfg.pre_norm:
            norm("final_norm", d, rms=llama)
        if cfg.word_embed_proj_dim:
            linear("project_out", d, cfg.word_embed_proj_dim, False, "embed.project_out")
        if not cfg.tie_word_embeddings:               # a tied head is the word embedding, listed once
            linear("lm_head", width, cfg.vocab_size, False, "lm_head")
    elif pooler:
        linear("pooler", d, d, True, "pooler")
    return out
