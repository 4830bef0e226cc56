"""Model size and operation counts of a model under a scheme, counted the way the papers count them.

**Sizes.** Every parameter of the model is placed in one category: ``quantized_weights`` (the scheme's codes, at
its bits per weight), ``scales`` (the scheme's floating-point scales, means and thresholds, at its FP width),
``index_bits`` (BiLLM's group flags and salient-column bitmap) and ``full_precision`` (everything the scheme leaves
in floating point). ``size_convention="full"`` counts all of it. ``"paper"`` applies the accounting a scheme's
paper used where ours differs; only BiBERT needs it (see :data:`PAPER_SIZE_CONVENTIONS`).

**Operations.** From the workload (``models.workload``): MACs by unit kind, and FLOPs under a stated convention.
``flops_convention="bops64"`` (default; Bi-Real Net / BiBERT): a floating-point MAC is 2 FLOPs; an integer MAC of
a-bit × b-bit operands is ``a·b`` binary operations and counts ``2·a·b/64`` FLOPs (so a 1-bit × 1-bit MAC is
2/64 FLOP and an int8 × int8 MAC 2 FLOPs); vector work counts ``models.workload.VECTOR_FLOPS`` per element.
``"macs"`` counts every MAC as 2 FLOPs whatever its width. The quantizers' own front and back ends (absmax,
quantize, sign, threshold, rescale) are reported separately as ``quantizer_flops``.
"""

from .config import ModelConfig, load_config
from .schemes import Scheme, get_scheme
from .shapes import ParamShape, parameter_shapes
from .units import UnitKind
from .workload import QUANTIZER_OPS, extract_workload

__all__ = ["analyze", "size_breakdown", "billm_average_bits", "PAPER_SIZE_CONVENTIONS", "FLOPS_CONVENTIONS",
           "MIB"]

MIB = 1 << 20
BILLM_BLOCK = 128
FLOPS_CONVENTIONS = ("bops64", "macs")

#: Per-scheme accounting that reproduces a paper's published size where the full count differs.
PAPER_SIZE_CONVENTIONS = {
    "bibert": ("binarized weights (encoder linears, pooler, word embedding) at 1 bit; LayerNorm parameters, biases "
               "and the linear layers' row scales at 16 bits; position and token-type embeddings and the word "
               "embedding's row scales not counted. Reverse-engineered: it is the accounting we found that gives "
               "the published 13.4 MB and 31.2x; the paper does not state its own."),
}


def billm_average_bits(salient_ratio: float = 0.1, block_size: int = BILLM_BLOCK) -> dict:
    """BiLLM eq. 14: bits per weight of the binarized parameters and of the storage flags."""
    if not 0 <= salient_ratio <= 1:
        raise ValueError(f"salient_ratio must be in [0, 1], not {salient_ratio!r}")
    return {"salient_ratio": salient_ratio, "block_size": block_size,
            "param_bits": 2 * salient_ratio + 1 * (1 - salient_ratio), "storing_bits": 1 + 1 / block_size}


def _tensors(cfg: ModelConfig, pooler: bool) -> list[ParamShape]:
    # The parameter list without building a model: `lowbit simulate model` needs no torch.
    return parameter_shapes(cfg, pooler=pooler)


def size_breakdown(model, scheme, *, convention: str = "full", pooler: bool = True,
                   embeddings: bool = True) -> dict:
    """Bytes by category (see the module docstring) and the parameter counts behind them; ``embeddings=False``
    leaves the embedding tables out (what stays on the host when a board keeps only the encoder)."""
    cfg = load_config(model)
    sch = get_scheme(scheme) if isinstance(scheme, str) else scheme
    base = sch.name.split(":")[0]
    if convention not in ("full", "paper"):
        raise ValueError(f"size convention must be 'full' or 'paper', not {convention!r}")
    paper = convention == "paper" and base in PAPER_SIZE_CONVENTIONS
    fp = sch.fp_bits
    bits = {"quantized_weights": 0.0, "scales": 0.0, "index_bits": 0.0, "full_precision": 0.0}
    params = {"quantized": 0, "full_precision": 0}
    opts = sch.options
    for t in _tensors(cfg, pooler):
        if not embeddings and t.role.startswith("embed"):
            continue
        quantized_linear = t.role in sch.quantized_roles and len(t.shape) == 2
        quantized_embedding = t.role == "embed.word" and sch.word_embedding is not None
        if quantized_linear or quantized_embedding:
            rows, cols = t.shape
            params["quantized"] += t.numel
            if base == "billm":
                avg = billm_average_bits(float(opts.get("salient_ratio", 0.1)))
                bits["quantized_weights"] += t.numel * avg["param_bits"]
                bits["index_bits"] += t.numel * avg["storing_bits"]
                # (alpha[, mu]) for each of salient order 1, salient order 2, concentrated, sparse
                per_block = 4 if opts.get("variant") == "paper" else 8
                bits["scales"] += rows * -(-cols // BILLM_BLOCK) * per_block * fp
                continue
            bits["quantized_weights"] += t.numel * sch.weight_bits
            layout = "row" if quantized_embedding else sch.scale_layout
            n_scales = {"row": rows, "tensor": 1, "qbb": int(opts.get("n_bases", 4)) * rows, "none": 0}[layout]
            if paper and base == "bibert":
                bits["scales"] += 0 if quantized_embedding else n_scales * 16
            else:
                bits["scales"] += n_scales * fp
        else:
            params["full_precision"] += t.numel
            if paper and base == "bibert":
                if t.role == "embed.other":
                    continue
                bits["full_precision"] += t.numel * 16
            else:
                bits["full_precision"] += t.numel * fp
    by_category = {k: int(-(-v // 8)) for k, v in bits.items()}
    return {"size_bytes_by_category": by_category, "model_size_bytes": sum(by_category.values()), "params": params}


def analyze(model, scheme, *, seq_len: int = 128, decode_steps: int = 0, size_convention: str = "full",
            flops_convention: str = "bops64", pooler: bool = True) -> dict:
    """Sizes and operation counts of ``model`` under ``scheme`` (the JSON of ``lowbit analyze``)."""
    cfg = load_config(model)
    sch: Scheme = get_scheme(scheme) if isinstance(scheme, str) else scheme
    if flops_convention not in FLOPS_CONVENTIONS:
        raise ValueError(f"flops convention must be one of {', '.join(FLOPS_CONVENTIONS)}, not {flops_convention!r}")
    size = size_breakdown(cfg, sch, convention=size_convention, pooler=pooler)
    fp32 = size_breakdown(cfg, "fp32", pooler=pooler)["model_size_bytes"]
    wl = extract_workload(cfg, sch, seq_len=seq_len, decode_steps=decode_steps, pooler=pooler)

    macs_by_kind: dict[str, int] = {}
    flops = {"fp_matmul": 0.0, "quantized_matmul": 0.0, "vector": 0.0}
    binary_ops = 0
    quantizer_flops = 0
    for o in wl.ops:
        if o.kind == "matmul":
            macs_by_kind[o.unit] = macs_by_kind.get(o.unit, 0) + o.macs
            if o.unit == UnitKind.FP_MAC.value:
                flops["fp_matmul"] += 2 * o.macs
            else:
                binary_ops += o.macs * o.a_bits * o.b_bits
                scale = o.a_bits * o.b_bits / 64 if flops_convention == "bops64" else 1
                flops["quantized_matmul"] += 2 * o.macs * scale
        elif o.kind == "vector":
            if o.op in QUANTIZER_OPS:
                quantizer_flops += o.vector_flops
            else:
                flops["vector"] += o.vector_flops
    total_flops = sum(flops.values())
    fp32_wl = analyze_flops_fp32(cfg, seq_len, decode_steps, pooler) if sch.name != "fp32" else total_flops
    convention = (
        "FLOPs: a floating-point MAC counts 2; an integer MAC of a-bit by b-bit operands counts a*b binary operations "
        "and 2*a*b/64 FLOPs (BOPs/64, as Bi-Real Net and BiBERT); vector work counts the per-element costs of "
        "models.workload.VECTOR_FLOPS; quantizer front/back-end ops are in quantizer_flops, not in flops"
        if flops_convention == "bops64" else
        "FLOPs: every MAC counts 2, whatever its operand widths; vector work as models.workload.VECTOR_FLOPS; "
        "quantizer front/back-end ops are in quantizer_flops, not in flops")
    result = {
        "model": cfg.name,
        "scheme": sch.name,
        "seq_len": seq_len,
        "decode_steps": decode_steps,
        "model_size_bytes": size["model_size_bytes"],
        "model_size_mib": size["model_size_bytes"] / MIB,
        "size_bytes_by_category": size["size_bytes_by_category"],
        "size_convention": size_convention if not (size_convention == "paper" and sch.name.split(":")[0]
                                                   in PAPER_SIZE_CONVENTIONS) else "paper",
        "size_convention_text": PAPER_SIZE_CONVENTIONS.get(sch.name.split(":")[0], "every parameter counted")
        if size_convention == "paper" else "every parameter counted: codes at the scheme's bits, scales and "
        "full-precision parameters at its floating-point width",
        "compression_vs_fp32": fp32 / size["model_size_bytes"],
        "params": size["params"],
        "flops": total_flops,
        "flops_by_part": flops,
        "quantizer_flops": quantizer_flops,
        "flops_reduction_vs_fp32": fp32_wl / total_flops if total_flops else None,
        "macs_by_kind": macs_by_kind,
        "macs": sum(macs_by_kind.values()),
        "binary_ops": binary_ops,
        "convention": convention,
    }
    if sch.name.split(":")[0] == "billm":
        result["billm_average_bits"] = billm_average_bits(float(sch.options.get("salient_ratio", 0.1)))
    return result


def analyze_flops_fp32(cfg: ModelConfig, seq_len: int, decode_steps: int, pooler: bool) -> float:
    """FLOPs of the same model in full precision (the reference of ``flops_reduction_vs_fp32``)."""
    return analyze(cfg, "fp32", seq_len=seq_len, decode_steps=decode_steps, pooler=pooler)["flops"]
