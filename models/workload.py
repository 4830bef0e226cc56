"""Workload extraction: the operations a model runs under a scheme, in execution order — the contract with sim/.

For a model config, a scheme, a sequence length (prefill) and a number of decode steps, :func:`extract_workload`
lists every operation with its unit kind, shapes, operand widths and repeat counts:

* ``matmul`` ops are ``[m × k] · [k × n]`` products: ``m`` rows of the left operand (tokens), ``k`` the reduction,
  ``n`` the outputs. For a linear layer the right operand is the stored weight (``weight=True``); for attention it
  is an activation (keys, values, or the KV cache). ``a_bits``/``b_bits`` are the operand widths,
  ``acc_bits`` the accumulator the integer units need.
* ``vector`` ops are element-wise or reduction work on ``m × n`` elements (norms, softmax, activations,
  residuals, bias adds, scaling, the dynamic-scale reductions of the quantizers), on the ``fp-vector`` unit,
  with ``flops_per_element`` from :data:`VECTOR_FLOPS`.
* ``memory`` ops move data without arithmetic (embedding gathers, KV-cache appends): ``bytes`` moved.

``count`` repeats an op inside its layer (attention heads); ``layers`` says how many identical layers execute
the op (the transformer blocks are listed once with ``layers = L``; embeddings and heads have ``layers = 1``).
Execution order: prefill (embeddings, the block × L, final norm, head), then each decode step in turn. Decode
step ``t`` (0-based) appends one token and attends over ``seq + t + 1`` keys.

The format is plain JSON (:meth:`Workload.to_json`); ``docs/workload.md`` describes it for other tools.
"""

import json
from dataclasses import asdict, dataclass, field

from .config import ModelConfig, load_config
from .intops import dot_accumulator_width, signed_range
from .schemes import Scheme, get_scheme
from .units import UnitKind

__all__ = ["Op", "Workload", "extract_workload", "VECTOR_FLOPS", "QUANTIZER_OPS", "FORMAT_VERSION"]

FORMAT_VERSION = 1

#: FLOPs counted per element of each vector op — the convention the analysis uses (one place).
#: Arithmetic and comparisons count 1; a transcendental (exp, tanh, erf, rsqrt) counts 1 as well.
VECTOR_FLOPS = {
    "add": 1,          # residual / bias / embedding sum
    "mul": 1,          # gating product, scaling
    "scale": 1,        # attention 1/sqrt(d)
    "mask": 1,         # additive attention mask
    "layernorm": 8,    # mean (1) + centre (1) + square (1) + var sum (1) + rsqrt·mul (2) + affine (2)
    "rmsnorm": 5,      # square (1) + sum (1) + rsqrt·mul (2) + weight (1)
    "softmax": 5,      # max (1) + subtract (1) + exp (1) + sum (1) + divide (1)
    "gelu": 12,        # 0.5·x·(1 + erf(x/√2)): scale, erf (8: a rational approximation), add, two multiplies
    "silu": 4,         # x · sigmoid(x): negate, exp, add, divide
    "relu": 1,
    "relu2": 2,        # relu then square
    "tanh": 1,
    "rope": 3,         # x·cos + rotate(x)·sin per element
    "absmax": 2,       # |x| and max per element (per-token or per-tensor reduction of a dynamic scale)
    "sign": 1,         # BiBERT activation binarization
    "bool": 1,         # BiBERT bool(A) threshold
    "quantize": 2,     # multiply by the scale and round
    "rescale": 1,      # one multiply per output by the combined scale
}

#: Vector ops that belong to a quantizer's front or back end (turning floats into codes and accumulators back
#: into floats). The analysis reports their FLOPs separately from the model's own arithmetic.
QUANTIZER_OPS = frozenset({"absmax", "sign", "bool", "quantize", "rescale"})


@dataclass(frozen=True)
class Op:
    """One operation of the workload (see the module docstring for the fields' meaning)."""

    name: str
    kind: str                  #: "matmul" | "vector" | "memory"
    op: str                    #: linear, qk, av, lm_head, or a VECTOR_FLOPS key, or gather / kv_append
    unit: str                  #: a UnitKind value
    phase: str                 #: "prefill" | "decode"
    m: int = 0
    k: int = 0
    n: int = 0
    count: int = 1
    layers: int = 1
    a_bits: int = 0            #: left operand / vector element width
    b_bits: int = 0            #: right operand width (weights for linears)
    acc_bits: int = 0          #: integer accumulator width (0 for floating point)
    weight: bool = False       #: right operand is a stored weight
    role: str = ""             #: linear role (attn.q, ffn.up, ...)
    flops_per_element: int = 0
    bytes: int = 0             #: memory ops: bytes moved per execution
    step: int = -1             #: decode step, -1 in prefill
    weight_layout: str = ""    #: binary-basis linears: "billm" (BiLLM's grouped binarization) or "bases" (QBB)

    @property
    def executions(self) -> int:
        return self.count * self.layers

    @property
    def macs(self) -> int:
        return self.m * self.k * self.n * self.executions if self.kind == "matmul" else 0

    @property
    def elements(self) -> int:
        return self.m * self.n * self.executions if self.kind == "vector" else 0

    @property
    def vector_flops(self) -> int:
        return self.elements * self.flops_per_element

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Workload:
    model: str
    scheme: str
    seq_len: int
    decode_steps: int
    batch: int
    config: dict = field(repr=False)
    ops: tuple[Op, ...] = field(repr=False)

    def to_dict(self) -> dict:
        return {"format": "lowbit.workload", "version": FORMAT_VERSION, "model": self.model, "scheme": self.scheme,
                "seq_len": self.seq_len, "decode_steps": self.decode_steps, "batch": self.batch,
                "config": self.config, "ops": [o.to_dict() for o in self.ops]}

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, d: dict) -> "Workload":
        if d.get("format") != "lowbit.workload" or d.get("version") != FORMAT_VERSION:
            raise ValueError(f"not a lowbit workload of version {FORMAT_VERSION}: format={d.get('format')!r}, "
                             f"version={d.get('version')!r}")
        return cls(d["model"], d["scheme"], d["seq_len"], d["decode_steps"], d["batch"], d["config"],
                   tuple(Op(**o) for o in d["ops"]))

    @classmethod
    def from_json(cls, text: str) -> "Workload":
        return cls.from_dict(json.loads(text))

    def total_macs(self) -> int:
        return sum(o.macs for o in self.ops)

    def macs_by_unit(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.ops:
            if o.kind == "matmul":
                out[o.unit] = out.get(o.unit, 0) + o.macs
        return out

    def phase(self, phase: str) -> list[Op]:
        return [o for o in self.ops if o.phase == phase]


class _Builder:
    def __init__(self, cfg: ModelConfig, scheme: Scheme, batch: int):
        self.cfg, self.s, self.batch = cfg, scheme, batch
        self.ops: list[Op] = []

    # -- helpers -----------------------------------------------------------------------------------------
    def vec(self, name, op, m, n, *, phase, layers=1, count=1, bits=None, step=-1):
        self.ops.append(Op(name, "vector", op, UnitKind.FP_VECTOR.value, phase, m=m, n=n, count=count, layers=layers,
                           a_bits=bits or self.s.fp_bits, flops_per_element=VECTOR_FLOPS[op], step=step))

    def mem(self, name, op, nbytes, *, phase, layers=1, step=-1):
        self.ops.append(Op(name, "memory", op, UnitKind.FP_VECTOR.value, phase, layers=layers, bytes=nbytes,
                           step=step))

    def linear(self, name, role, m, k, n, *, phase, layers=1, bias=False, step=-1, shares_input=False):
        """A linear layer; ``shares_input``: its input was already quantized for a sibling (k, v after q)."""
        s, fp = self.s, self.s.fp_bits
        if s.quantizes(role):
            if not shares_input:
                if s.pre_linear_norm:
                    self.vec(f"{name}.subln", "layernorm", m, k, phase=phase, layers=layers, step=step)
                if s.act_quant == "sign":
                    self.vec(f"{name}.sign", "sign", m, k, phase=phase, layers=layers, step=step)
                elif s.act_quant:
                    self.vec(f"{name}.absmax", "absmax", m, k, phase=phase, layers=layers, step=step)
                    self.vec(f"{name}.quantize", "quantize", m, k, phase=phase, layers=layers, step=step)
            unit, a_bits = s.linear_unit, s.act_bits
            b_bits = max(1, int(round(s.weight_bits))) if s.name.split(":")[0] != "billm" else 1
            a_range = (-1, 1) if a_bits == 1 else signed_range(a_bits)
            b_range = (-1, 1) if unit in (UnitKind.XNOR_POPCOUNT, UnitKind.TERNARY_MAC, UnitKind.BINARY_BASIS) \
                else signed_range(b_bits)
            acc = dot_accumulator_width(k, a_range, b_range)
            layout = ("billm" if s.scale_layout == "billm" else "bases") if unit is UnitKind.BINARY_BASIS else ""
            self.ops.append(Op(name, "matmul", "linear", unit.value, phase, m=m, k=k, n=n, layers=layers,
                               a_bits=a_bits, b_bits=b_bits, acc_bits=acc, weight=True, role=role, step=step,
                               weight_layout=layout))
            passes = int(s.options.get("n_bases", 1)) if s.scale_layout == "qbb" else 1
            self.vec(f"{name}.rescale", "rescale", m, n, phase=phase, layers=layers, count=passes, step=step)
        else:
            self.ops.append(Op(name, "matmul", "lm_head" if role == "lm_head" else "linear", UnitKind.FP_MAC.value,
                               phase, m=m, k=k, n=n, layers=layers, a_bits=fp, b_bits=fp, weight=True, role=role,
                               step=step))
        if bias:
            self.vec(f"{name}.bias", "add", m, n, phase=phase, layers=layers, step=step)

    def attention(self, prefix, tq, tk, *, phase, layers, step=-1):
        cfg, att = self.cfg, self.s.attention
        h, dh = cfg.num_heads, cfg.head_dim
        fp = self.s.fp_bits
        if att.quantize_operands:
            for what, rows, width in (("q", tq, h * dh), ("k", tk, cfg.kv_dim)):
                self.vec(f"{prefix}.{what}_absmax", "absmax", rows, width, phase=phase, layers=layers, step=step)
                self.vec(f"{prefix}.{what}_quantize", "quantize", rows, width, phase=phase, layers=layers, step=step)
        if att.probs == "bool":
            self.vec(f"{prefix}.q_sign", "sign", tq, h * dh, phase=phase, layers=layers, step=step)
            self.vec(f"{prefix}.k_sign", "sign", tk, cfg.kv_dim, phase=phase, layers=layers, step=step)

        def mm(name, op, unit, bits, m, k, n):
            integer = unit not in (UnitKind.FP_MAC,)
            acc = dot_accumulator_width(k, (-1, 1) if bits[0] == 1 else signed_range(bits[0]),
                                        (-1, 1) if bits[1] == 1 else signed_range(bits[1])) if integer else 0
            self.ops.append(Op(name, "matmul", op, unit.value, phase, m=m, k=k, n=n, count=h, layers=layers,
                               a_bits=bits[0], b_bits=bits[1], acc_bits=acc, step=step))

        mm(f"{prefix}.qk", "qk", att.qk_unit, att.qk_bits, tq, dh, tk)
        if att.probs == "bool":
            self.vec(f"{prefix}.bool", "bool", tq, tk, count=h, phase=phase, layers=layers, step=step)
            self.vec(f"{prefix}.v_sign", "sign", tk, cfg.kv_dim, phase=phase, layers=layers, step=step)
        else:
            self.vec(f"{prefix}.scale", "scale", tq, tk, count=h, phase=phase, layers=layers, step=step)
            if phase == "prefill":     # padding or causal mask; a decode step sees every cached key
                self.vec(f"{prefix}.mask", "mask", tq, tk, count=h, phase=phase, layers=layers, step=step)
            self.vec(f"{prefix}.softmax", "softmax", tq, tk, count=h, phase=phase, layers=layers, step=step, bits=fp)
            if att.quantize_operands:
                self.vec(f"{prefix}.probs_quantize", "quantize", tq, tk, count=h, phase=phase, layers=layers,
                         step=step)
                self.vec(f"{prefix}.v_absmax", "absmax", tk, cfg.kv_dim, phase=phase, layers=layers, step=step)
                self.vec(f"{prefix}.v_quantize", "quantize", tk, cfg.kv_dim, phase=phase, layers=layers, step=step)
        mm(f"{prefix}.av", "av", att.av_unit, att.av_bits, tq, tk, dh)

    def block(self, t, kv, *, phase, step=-1):
        cfg = self.cfg
        L = cfg.num_layers
        d, f = cfg.hidden_size, cfg.intermediate_size
        norm = "rmsnorm" if cfg.arch == "llama" else "layernorm"
        ab, mb = cfg.attention_bias, cfg.mlp_bias
        p = "layer"
        if cfg.pre_norm:
            self.vec(f"{p}.attn_norm", norm, t, d, phase=phase, layers=L, step=step)
        self.linear(f"{p}.attn.q", "attn.q", t, d, cfg.num_heads * cfg.head_dim, phase=phase, layers=L, bias=ab,
                    step=step)
        self.linear(f"{p}.attn.k", "attn.k", t, d, cfg.kv_dim, phase=phase, layers=L, bias=ab, step=step,
                    shares_input=True)
        self.linear(f"{p}.attn.v", "attn.v", t, d, cfg.kv_dim, phase=phase, layers=L, bias=ab, step=step,
                    shares_input=True)
        if cfg.arch == "llama":
            self.vec(f"{p}.attn.rope", "rope", t, cfg.num_heads * cfg.head_dim + cfg.kv_dim, phase=phase, layers=L,
                     step=step)
        if cfg.is_decoder:
            self.mem(f"{p}.attn.kv_append", "kv_append", 2 * t * cfg.kv_dim * self.s.fp_bits // 8, phase=phase,
                     layers=L, step=step)
        self.attention(f"{p}.attn", t, kv, phase=phase, layers=L, step=step)
        if cfg.sub_norms:
            self.vec(f"{p}.attn.sub_norm", "rmsnorm", t, cfg.num_heads * cfg.head_dim, phase=phase, layers=L,
                     step=step)
        self.linear(f"{p}.attn.o", "attn.o", t, cfg.num_heads * cfg.head_dim, d, phase=phase, layers=L, bias=ab,
                    step=step)
        self.vec(f"{p}.attn.residual", "add", t, d, phase=phase, layers=L, step=step)
        if not cfg.pre_norm:
            self.vec(f"{p}.attn_norm", norm, t, d, phase=phase, layers=L, step=step)
        else:
            self.vec(f"{p}.ffn_norm", norm, t, d, phase=phase, layers=L, step=step)
        if cfg.gated_ffn:
            self.linear(f"{p}.ffn.gate", "ffn.gate", t, d, f, phase=phase, layers=L, bias=mb, step=step)
            self.linear(f"{p}.ffn.up", "ffn.up", t, d, f, phase=phase, layers=L, bias=mb, step=step, shares_input=True)
            self.vec(f"{p}.ffn.act", cfg.hidden_act.replace("gelu_new", "gelu"), t, f, phase=phase, layers=L, step=step)
            self.vec(f"{p}.ffn.gating", "mul", t, f, phase=phase, layers=L, step=step)
        else:
            self.linear(f"{p}.ffn.up", "ffn.up", t, d, f, phase=phase, layers=L, bias=mb, step=step)
            self.vec(f"{p}.ffn.act", cfg.hidden_act.replace("gelu_new", "gelu"), t, f, phase=phase, layers=L, step=step)
        if cfg.sub_norms:
            self.vec(f"{p}.ffn.sub_norm", "rmsnorm", t, f, phase=phase, layers=L, step=step)
        self.linear(f"{p}.ffn.down", "ffn.down", t, f, d, phase=phase, layers=L, bias=mb, step=step)
        self.vec(f"{p}.ffn.residual", "add", t, d, phase=phase, layers=L, step=step)
        if not cfg.pre_norm:
            self.vec(f"{p}.ffn_norm", norm, t, d, phase=phase, layers=L, step=step)

    def embeddings(self, t, *, phase, step=-1):
        cfg, fp = self.cfg, self.s.fp_bits
        width = cfg.word_embed_proj_dim or cfg.hidden_size
        emb_bits = {"binary-row": 1, "ternary-row": 2}.get(self.s.word_embedding, fp)
        self.mem("embed.word", "gather", t * width * emb_bits // 8 + (t * fp // 8 if self.s.word_embedding else 0),
                 phase=phase, step=step)
        if self.s.word_embedding:
            self.vec("embed.word.rescale", "rescale", t, width, phase=phase, step=step)
        if cfg.word_embed_proj_dim:
            self.linear("embed.project_in", "embed.project_in", t, width, cfg.hidden_size, phase=phase, step=step)
        if cfg.arch == "bert":
            self.mem("embed.position", "gather", t * cfg.hidden_size * fp // 8, phase=phase, step=step)
            self.mem("embed.token_type", "gather", t * cfg.hidden_size * fp // 8, phase=phase, step=step)
            self.vec("embed.sum", "add", t, cfg.hidden_size, count=2, phase=phase, step=step)
            self.vec("embed.norm", "layernorm", t, cfg.hidden_size, phase=phase, step=step)
        elif cfg.arch == "opt":
            self.mem("embed.position", "gather", t * cfg.hidden_size * fp // 8, phase=phase, step=step)
            self.vec("embed.sum", "add", t, cfg.hidden_size, phase=phase, step=step)

    def head(self, t_logits, *, phase, step=-1, pooler=False):
        cfg = self.cfg
        if cfg.is_decoder:
            if cfg.pre_norm:
                self.vec("final_norm", "rmsnorm" if cfg.arch == "llama" else "layernorm", t_logits, cfg.hidden_size,
                         phase=phase, step=step)
            if cfg.word_embed_proj_dim:
                self.linear("project_out", "embed.project_out", t_logits, cfg.hidden_size, cfg.word_embed_proj_dim,
                            phase=phase, step=step)
            self.linear("lm_head", "lm_head", t_logits, cfg.word_embed_proj_dim or cfg.hidden_size, cfg.vocab_size,
                        phase=phase, step=step)
        elif pooler:
            self.linear("pooler", "pooler", 1, cfg.hidden_size, cfg.hidden_size, phase=phase, bias=True, step=step)
            self.vec("pooler.tanh", "tanh", 1, cfg.hidden_size, phase=phase, step=step)


def extract_workload(model, scheme, *, seq_len: int, decode_steps: int = 0, batch: int = 1,
                     pooler: bool = True) -> Workload:
    """The operations of ``model`` (name, config.json path, HF config or :class:`ModelConfig`) under ``scheme``.

    Prefill runs ``seq_len`` tokens; decoders then run ``decode_steps`` single-token steps against the KV cache
    (logits only for the last prefill token and for each decode step). Encoders take no decode steps; with
    ``pooler`` the BERT pooler runs on the first token. ``batch`` multiplies the token dimension.
    """
    cfg = load_config(model)
    sch = get_scheme(scheme) if isinstance(scheme, str) else scheme
    for name, v in (("seq_len", seq_len), ("batch", batch)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, not {v!r}")
    if isinstance(decode_steps, bool) or not isinstance(decode_steps, int) or decode_steps < 0:
        raise ValueError(f"decode_steps must be a non-negative integer, not {decode_steps!r}")
    if decode_steps and not cfg.is_decoder:
        raise ValueError(f"{cfg.name} is an encoder; decode_steps={decode_steps} needs a decoder (opt, llama)")
    if seq_len + decode_steps > cfg.max_positions:
        raise ValueError(f"seq_len + decode_steps = {seq_len + decode_steps} exceeds {cfg.name}'s "
                         f"{cfg.max_positions} positions")
    b = _Builder(cfg, sch, batch)
    # Rows of every op are batch × tokens; attention of a row only reaches its own sequence's keys, so the
    # attention products are [batch·tq × d_h]·[d_h × tk] in MAC count.
    t = seq_len * batch
    b.embeddings(t, phase="prefill")
    b.block(t, seq_len, phase="prefill")
    b.head(batch if cfg.is_decoder else 1, phase="prefill", pooler=pooler and not cfg.is_decoder)
    for step in range(decode_steps):
        b.embeddings(batch, phase="decode", step=step)
        b.block(batch, seq_len + step + 1, phase="decode", step=step)
        b.head(batch, phase="decode", step=step)
    return Workload(cfg.name, sch.name, seq_len, decode_steps, batch, cfg.to_dict(), tuple(b.ops))
