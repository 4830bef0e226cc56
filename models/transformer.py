"""PyTorch builders of the three model families lowbit works with, with hooks for quantization schemes.

* ``bert``: post-norm encoder (word + position + token-type embeddings, LayerNorm), optional pooler.
* ``opt``: pre-norm decoder with learned positions (offset 2), non-gated ReLU FFN, tied LM head.
* ``llama``: pre-norm decoder with RMSNorm, RoPE, grouped-query attention, gated FFN (SiLU; ReLU² and the
  extra sub-norms for BitNet b1.58), separate or tied LM head.

Every linear layer carries a ``role`` (``attn.q``, ``attn.k``, ``attn.v``, ``attn.o``, ``ffn.gate``,
``ffn.up``, ``ffn.down``, ``pooler``, ``lm_head``, ``embed.project_in``, ``embed.project_out``), which is how a
scheme says what it quantizes; the attention arithmetic sits in a replaceable :class:`AttentionCore`.
Decoders take a KV cache for token-by-token decoding. Numerics follow the Hugging Face implementations
(checked by tests against ``transformers`` on shared random weights).
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig

__all__ = ["AttentionCore", "Attention", "FeedForward", "Block", "Embeddings", "TransformerModel", "ModelOutput",
           "build_model", "RMSNorm", "LINEAR_ROLES", "linear_layers", "activation"]

LINEAR_ROLES = ("attn.q", "attn.k", "attn.v", "attn.o", "ffn.gate", "ffn.up", "ffn.down", "pooler", "lm_head",
                "embed.project_in", "embed.project_out")

#: Additive mask value on padded/causally hidden keys (BERT's classic -10000; BiBERT's bool() relies on it).
MASK_VALUE = -10000.0


def activation(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "gelu":
        return F.gelu(x)
    if name == "gelu_new":
        return F.gelu(x, approximate="tanh")
    if name == "relu":
        return F.relu(x)
    if name == "silu":
        return F.silu(x)
    if name == "relu2":
        return F.relu(x) ** 2
    raise ValueError(f"unknown activation {name!r}")


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def _linear(in_f: int, out_f: int, bias: bool, role: str) -> nn.Linear:
    layer = nn.Linear(in_f, out_f, bias=bias)
    layer.role = role
    return layer


class AttentionCore(nn.Module):
    """``softmax(q·kᵀ/√d + mask)·v`` on ``[batch, heads, tokens, head_dim]`` tensors.

    Schemes replace this module (BiBERT's Bi-Attention, TernaryBERT's 8-bit operands); ``mask`` is additive,
    ``[batch or 1, 1, q_tokens, k_tokens]``, or None.
    """

    def forward(self, q, k, v, mask):
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        if mask is not None:
            scores = scores + mask
        probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        return probs @ v


def _rope(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d, hd = cfg.hidden_size, cfg.head_dim
        self.q = _linear(d, cfg.num_heads * hd, cfg.attention_bias, "attn.q")
        self.k = _linear(d, cfg.kv_dim, cfg.attention_bias, "attn.k")
        self.v = _linear(d, cfg.kv_dim, cfg.attention_bias, "attn.v")
        self.o = _linear(cfg.num_heads * hd, d, cfg.attention_bias, "attn.o")
        self.sub_norm = RMSNorm(cfg.num_heads * hd, cfg.norm_eps) if cfg.sub_norms else None
        self.core = AttentionCore()

    def forward(self, x, mask, rope=None, cache=None):
        b, t, _ = x.shape
        cfg = self.cfg
        q = self.q(x).view(b, t, cfg.num_heads, cfg.head_dim).transpose(1, 2)
        k = self.k(x).view(b, t, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
        v = self.v(x).view(b, t, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
        if rope is not None:
            q, k = _rope(q, *rope), _rope(k, *rope)
        if cache is not None:
            if cache[0] is not None:
                k = torch.cat([cache[0], k], dim=2)
                v = torch.cat([cache[1], v], dim=2)
            cache[0], cache[1] = k, v
        groups = cfg.num_heads // cfg.num_kv_heads
        if groups > 1:
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
        ctx = self.core(q, k, v, mask)
        ctx = ctx.transpose(1, 2).reshape(b, t, cfg.num_heads * cfg.head_dim)
        if self.sub_norm is not None:
            ctx = self.sub_norm(ctx)
        return self.o(ctx)


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d, f = cfg.hidden_size, cfg.intermediate_size
        self.gate = _linear(d, f, cfg.mlp_bias, "ffn.gate") if cfg.gated_ffn else None
        self.up = _linear(d, f, cfg.mlp_bias, "ffn.up")
        self.down = _linear(f, d, cfg.mlp_bias, "ffn.down")
        self.sub_norm = RMSNorm(f, cfg.norm_eps) if cfg.sub_norms else None

    def forward(self, x):
        if self.gate is not None:
            h = activation(self.cfg.hidden_act, self.gate(x)) * self.up(x)
        else:
            h = activation(self.cfg.hidden_act, self.up(x))
        if self.sub_norm is not None:
            h = self.sub_norm(h)
        return self.down(h)


def _norm(cfg: ModelConfig, dim: int) -> nn.Module:
    return RMSNorm(dim, cfg.norm_eps) if cfg.arch == "llama" else nn.LayerNorm(dim, eps=cfg.norm_eps)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.attn = Attention(cfg)
        self.attn_norm = _norm(cfg, cfg.hidden_size)
        self.ffn = FeedForward(cfg)
        self.ffn_norm = _norm(cfg, cfg.hidden_size)

    def forward(self, x, mask, rope=None, cache=None):
        if self.cfg.pre_norm:
            x = x + self.attn(self.attn_norm(x), mask, rope, cache)
            return x + self.ffn(self.ffn_norm(x))
        x = self.attn_norm(x + self.attn(x, mask, rope, cache))
        return self.ffn_norm(x + self.ffn(x))


class Embeddings(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        width = cfg.word_embed_proj_dim or cfg.hidden_size
        self.word = nn.Embedding(cfg.vocab_size, width)
        self.word.role = "embed.word"
        self.position = None
        self.token_type = None
        self.norm = None
        self.project_in = None
        if cfg.arch == "bert":
            self.position = nn.Embedding(cfg.max_positions, cfg.hidden_size)
            self.token_type = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
            self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)
        elif cfg.arch == "opt":
            self.position = nn.Embedding(cfg.max_positions + 2, cfg.hidden_size)   # OPT's offset of 2
            if cfg.word_embed_proj_dim:
                self.project_in = _linear(cfg.word_embed_proj_dim, cfg.hidden_size, False, "embed.project_in")
        for e in (self.position, self.token_type):
            if e is not None:
                e.role = "embed.other"

    def forward(self, ids, start: int = 0, token_type_ids=None):
        x = self.word(ids)
        if self.project_in is not None:
            x = self.project_in(x)
        positions = torch.arange(start, start + ids.shape[1], device=ids.device)
        if self.cfg.arch == "bert":
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(ids)
            x = x + self.token_type(token_type_ids) + self.position(positions)[None]
            return self.norm(x)
        if self.cfg.arch == "opt":
            return x + self.position(positions + 2)[None]
        return x


@dataclass
class ModelOutput:
    hidden: torch.Tensor                 #: [batch, tokens, hidden] after the final norm
    logits: torch.Tensor | None = None   #: decoders: [batch, tokens, vocab]
    pooled: torch.Tensor | None = None   #: BERT with pooler
    cache: list | None = None            #: decoders: per-layer [k, v]


class TransformerModel(nn.Module):
    """A BERT encoder or a decoder, built from a :class:`ModelConfig`."""

    def __init__(self, cfg: ModelConfig, *, pooler: bool = True):
        super().__init__()
        self.cfg = cfg
        self.embed = Embeddings(cfg)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.final_norm = _norm(cfg, cfg.hidden_size) if cfg.is_decoder and cfg.pre_norm else None
        self.project_out = None
        self.lm_head = None
        self.pooler = None
        if cfg.is_decoder:
            if cfg.word_embed_proj_dim:
                self.project_out = _linear(cfg.hidden_size, cfg.word_embed_proj_dim, False, "embed.project_out")
            self.lm_head = _linear(cfg.word_embed_proj_dim or cfg.hidden_size, cfg.vocab_size, False, "lm_head")
            if cfg.tie_word_embeddings:
                self.lm_head.weight = self.embed.word.weight
        elif pooler:
            self.pooler = _linear(cfg.hidden_size, cfg.hidden_size, True, "pooler")
        if cfg.arch == "llama":
            inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float32) / cfg.head_dim))
            self.register_buffer("inv_freq", inv_freq, persistent=False)

    def _rope(self, start: int, t: int, device, dtype):
        pos = torch.arange(start, start + t, device=device, dtype=torch.float32)
        freqs = torch.outer(pos, self.inv_freq.to(device))
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype)[None, None], emb.sin().to(dtype)[None, None]

    def new_cache(self) -> list:
        return [[None, None] for _ in self.layers]

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, cache: list | None = None) -> ModelOutput:
        cfg = self.cfg
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, tokens], not shape {tuple(input_ids.shape)}")
        b, t = input_ids.shape
        start = 0
        if cache is not None:
            if not cfg.is_decoder:
                raise ValueError("a KV cache is for decoders; this model is an encoder")
            start = 0 if cache[0][0] is None else cache[0][0].shape[2]
        x = self.embed(input_ids, start, token_type_ids)
        dtype = x.dtype
        mask = None
        if attention_mask is not None:
            keep = attention_mask[:, None, None, :].to(dtype)
            mask = (1.0 - keep) * MASK_VALUE
        if cfg.is_decoder:
            total = start + t
            causal = torch.full((t, total), MASK_VALUE, dtype=dtype, device=x.device)
            causal = torch.triu(causal, diagonal=start + 1)[None, None]
            mask = causal if mask is None else mask[..., -total:] + causal
        rope = self._rope(start, t, x.device, dtype) if cfg.arch == "llama" else None
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, rope, None if cache is None else cache[i])
        if self.final_norm is not None:
            x = self.final_norm(x)
        out = ModelOutput(hidden=x, cache=cache)
        if cfg.is_decoder:
            h = self.project_out(x) if self.project_out is not None else x
            out.logits = self.lm_head(h)
        elif self.pooler is not None:
            out.pooled = torch.tanh(self.pooler(x[:, 0]))
        return out


def linear_layers(model: nn.Module):
    """``(qualified name, module, role)`` of every role-tagged linear, in execution order."""
    for name, module in model.named_modules():
        role = getattr(module, "role", None)
        if role in LINEAR_ROLES:
            yield name, module, role


def build_model(cfg: ModelConfig, *, seed: int = 0, device="cpu", dtype=torch.float32, pooler: bool = True,
                init_std: float = 0.02) -> TransformerModel:
    """A model of ``cfg`` with seeded random weights (normal(0, init_std); norms at 1/0).

    ``device="meta"`` allocates nothing (for shape-only use on billion-parameter configs).
    """
    with torch.device(device):
        model = TransformerModel(cfg, pooler=pooler)
    model.to(dtype)
    if device != "meta":
        g = torch.Generator(device="cpu").manual_seed(seed)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.dim() >= 2:
                    p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32) * init_std)
                elif name.endswith("bias"):
                    p.zero_()
                else:
                    p.fill_(1.0)
    model.eval()
    return model
