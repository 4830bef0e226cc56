"""Sentence-embedding fidelity of post-training schemes on all-MiniLM-L6-v2 with its real weights.

The 64 fixed evaluation sentences (``models/data/sentences.json``) are embedded the way sentence-transformers
embeds them for this model (mean pooling over the attention mask, then L2 normalisation) by the full-precision
model and by copies whose transformer-block linears (Q, K, V, O, FFN up and down) are quantized. The score is
the cosine similarity of each sentence's embedding with its full-precision embedding. Weight-only rows keep
activations, attention and embeddings in FP32, so they compare the weight quantizers alone.

:func:`integer_fidelity_table` runs each scheme's integer-only deployment path (``models.intpath``) in the encoder
instead: every quantized block linear (BiBERT: the whole attention block) integer from its quantized input to its
fixed-point output, the host ops in float, against FP32 and against the scheme's own float-simulated model.
"""

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .apply import quantize_model, replace_module
from .checkpoint import load_minilm, minilm_dir
from .schemes import BLOCK_LINEARS
from .transformer import TransformerModel, linear_layers

__all__ = ["sentences", "tokenize", "embed", "FidelityRow", "fidelity_table", "METHODS", "markdown", "INTEGER_SCHEMES",
           "IntegerLinear", "IntegerBiAttention", "integer_model", "IntegerRow", "integer_fidelity_table",
           "integer_markdown", "integer_section", "with_integer_section", "integer_section_of"]

_DATA = Path(__file__).with_name("data") / "sentences.json"


def sentences(split: str = "evaluation") -> list[str]:
    data = json.loads(_DATA.read_text())
    if split not in ("evaluation", "calibration"):
        raise ValueError(f"split must be 'evaluation' or 'calibration', not {split!r}")
    return data[split]


def tokenize(texts: list[str], max_length: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask from all-MiniLM-L6-v2's own tokenizer.json, padded to the longest."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length)
    enc = tok.encode_batch(texts)
    n = max(len(e.ids) for e in enc)
    ids = torch.zeros(len(enc), n, dtype=torch.long)
    mask = torch.zeros(len(enc), n, dtype=torch.long)
    for i, e in enumerate(enc):
        ids[i, :len(e.ids)] = torch.tensor(e.ids)
        mask[i, :len(e.ids)] = 1
    return ids, mask


def embed(model: TransformerModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sentence embeddings: mean of the token states under the mask, L2-normalised."""
    with torch.no_grad():
        h = model(ids, attention_mask=mask).hidden
    m = mask[..., None].to(h.dtype)
    pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


def _weight_only(quantize: Callable[[torch.Tensor], torch.Tensor]) -> Callable:
    def apply(model: TransformerModel, _calibrate) -> TransformerModel:
        import copy
        q = copy.deepcopy(model)
        with torch.no_grad():
            for _, module, role in linear_layers(q):
                if role in BLOCK_LINEARS:
                    module.weight.copy_(quantize(module.weight.detach()))
        return q
    return apply


def _sign(w):
    from .billm import sign_binarize
    return sign_binarize(w)


def _absmean(w):
    from .bitnet import quantize_weights
    return quantize_weights(w).dequantized()


def _twn(w):
    from .ternarybert import twn_ternarize
    return twn_ternarize(w).dequantized()


def _qbb(n_bases: int, refine_steps: int):
    def quantize(w):
        from .qbb import qbb_init, qbb_refine
        q = qbb_init(w, n_bases)
        if refine_steps:
            q = qbb_refine(w, q, steps_per_phase=refine_steps)
        return q.dequantized()
    return quantize


def _billm(model, calibrate):
    targets = [(name, module) for name, module, role in linear_layers(model) if role in BLOCK_LINEARS]
    import copy
    from .billm import quantize_model_sequential
    q = copy.deepcopy(model)
    targets = [(name, q.get_submodule(name)) for name, _ in targets]
    quantize_model_sequential(q, targets, calibrate)
    return q


def _scheme(name):
    return lambda model, _calibrate: quantize_model(model, name)


def _qbb_distilled(n_bases: int, refine_steps: int, distill_steps: int, lr: float = 1e-4):
    """QBB's three stages: cascaded init, layer-wise refinement, then data-free distillation of the scales
    (random token sequences, the full-precision model as teacher, final hidden states matched)."""
    def build(model, _calibrate):
        from .qbb import distill_scales
        student = quantize_model(model, f"qbb:n_bases={n_bases},refine_steps={refine_steps}")
        vocab = model.cfg.vocab_size

        def make_inputs(g):
            # Random word-piece ids (skipping [PAD] and the special tokens below 1000), framed by [CLS] … [SEP].
            body = torch.randint(1000, vocab, (16, 22), generator=g)
            return torch.cat([torch.full((16, 1), 101), body, torch.full((16, 1), 102)], dim=1)

        distill_scales(student, model, make_inputs=make_inputs, forward=lambda m, ids: m(ids).hidden,
                       steps=distill_steps, lr=lr, select_fraction=0.5, swap_blocks=(student.layers, model.layers))
        return student
    return build


#: Method name → (bits per block weight, builder(model, calibrate) → quantized model, description).
METHODS = {
    "fp32": (32, lambda model, _calibrate: model, "the full-precision model itself (the check of the check)"),
    "sign": (1, _weight_only(_sign), "naive row-wise sign binarization (mean|W_r|·sign(W_r)), weights only"),
    "b1.58-absmean": (1.58, _weight_only(_absmean), "BitNet b1.58 absmean ternary weights, weights only"),
    "twn": (1.58, _weight_only(_twn), "TernaryBERT TWN, layer-wise (0.7·mean|W| threshold), weights only"),
    "billm": (1.1, _billm, "BiLLM (code variant), calibrated on 32 separate sentences, weights only"),
    **{f"qbb-n{n}": (n, _weight_only(_qbb(n, 0)), f"QBB, {n} binary bases, cascaded init only, weights only")
       for n in (1, 2, 3, 4)},
    # QBB's three stages; refinement and distillation lengths come from fidelity_table's arguments.
    **{f"qbb-n{n}-full": (n, None, "QBB, {n} binary bases: cascaded init, {r} refinement steps per phase, {d} steps of "
                                    "data-free scale distillation (random token sequences, FP teacher)")
       for n in (1, 2, 3, 4)},
    "bitnet-b1.58": (1.58, _scheme("bitnet-b1.58"), "BitNet b1.58 scheme: ternary weights and int8 activations"),
}


@dataclass(frozen=True)
class FidelityRow:
    method: str
    bits: float
    mean_cos: float
    min_cos: float
    seconds: float
    description: str


def fidelity_table(methods: list[str] | None = None, *, qbb_refine_steps: int = 50, qbb_distill_steps: int = 60,
                   model: TransformerModel | None = None) -> list[FidelityRow]:
    """Cosine similarity to full precision for each method (all by default), on the 64 evaluation sentences."""
    methods = [m for m in METHODS if m != "fp32"] if methods is None else methods
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown fidelity method(s) {unknown}; known: {', '.join(METHODS)}")
    model = model if model is not None else load_minilm()
    ids, mask = tokenize(sentences("evaluation"))
    cal_ids, cal_mask = tokenize(sentences("calibration"))
    reference = embed(model, ids, mask)

    def calibrate(m):
        m(cal_ids, attention_mask=cal_mask)

    rows = []
    for name in methods:
        bits, build, description = METHODS[name]
        if name.endswith("-full"):
            n = int(bits)
            build = _qbb_distilled(n, qbb_refine_steps, qbb_distill_steps)
            description = description.format(n=n, r=qbb_refine_steps, d=qbb_distill_steps)
        start = time.perf_counter()
        quantized = build(model, calibrate)
        cos = (embed(quantized, ids, mask) * reference).sum(-1).numpy()
        rows.append(FidelityRow(name, bits, float(np.mean(cos)), float(np.min(cos)), time.perf_counter() - start,
                                description))
    return rows


def markdown(rows: list[FidelityRow]) -> str:
    lines = ["| method | bits/weight | mean cos | min cos | time (s) | what |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.method} | {r.bits:g} | {r.mean_cos:.4f} | {r.min_cos:.4f} | {r.seconds:.1f} | "
                     f"{r.description} |")
    return "\n".join(lines)


# -- the integer-only deployment path (models.intpath) ---------------------------------------------------------

#: Scheme → (bits per block weight, the float-simulated scheme the integer path deploys, description). BiBERT runs
#: with zero_policy "pos" in both: its XNOR engine holds ±1 only (the official sign(0) = 0 has no bit). QBB is its
#: cascaded initialisation (the qbb-n4 row above).
INTEGER_SCHEMES = {
    "bibert": (1, "bibert:zero_policy=pos", "binary Q/K/V/O and FFN linears (XNOR-popcount, thresholds, combine), "
               "Bi-Attention integer (XNOR QKᵀ bit, BAMM count and sign); binary word embedding, LayerNorm, GELU on "
               "the host"),
    "ternarybert": (1.58, "ternarybert", "ternary-mac linears, host per-tensor 8-bit codes, combine_rows; "
                    "8-bit fake-quantized attention with float softmax, LayerNorm, GELU on the host"),
    "bitnet-v1": (1, "bitnet-v1", "±1 weights on the ternary-mac engine, host SubLN and absmax codes, "
                  "combine_rows; attention, LayerNorm, GELU on the host"),
    "bitnet-b1.58": (1.58, "bitnet-b1.58", "ternary-mac linears, host per-token absmax codes, combine_rows; "
                     "attention, LayerNorm, GELU on the host"),
    "int8": (8, "int8", "int8-mac linears (W8A8), host per-token codes, combine_rows; attention, LayerNorm, GELU "
             "on the host"),
    "qbb": (4, "qbb:refine_steps=0", "4 binary bases on the binary-basis engine (one run), host per-token int8 "
            "codes, combine_rows; attention, LayerNorm, GELU on the host"),
    "billm": (1.1, "billm", "binary-basis engine in BiLLM mode (one run per 128-column block), host per-token "
              "int8 codes, one combine_rows over the blocks; attention, LayerNorm, GELU on the host"),
}

#: Heading of the integer-only section of docs/fidelity.md (``lowbit fidelity --integer`` rewrites that section).
INTEGER_HEADING = "## Integer-only deployment path"


class IntegerLinear(torch.nn.Module):
    """A scheme's float-simulated linear replaced by its integer-only path (``models.intpath``): the float input
    is quantized on the host by the scheme's own quantizer, everything after it is integer, and the fixed-point
    output is handed back to the host as float32. The fixed-point exponents of the per-token scales are fitted to
    the batch being run, as a compiler calibrating on it would."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.inner = module
        self.role = getattr(module, "role", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from . import intpath
        from .baselines import Int8Linear
        from .bibert import BinaryLinear
        from .billm import BiLLMLinear
        from .bitnet import BitLinear158, BitLinearV1
        from .qbb import QBBLinear
        from .ternarybert import TernaryLinear
        m = self.inner
        x2 = x.reshape(-1, x.shape[-1]).float()
        bias = None if getattr(m, "bias", None) is None else m.bias.detach()
        if isinstance(m, BitLinear158):
            path = intpath.bitnet_linear(m.weight, x2, bias=bias)
        elif isinstance(m, BitLinearV1):
            path = intpath.bitnet_v1_linear(m.weight, x2, bias=bias, ln_eps=m.ln_eps)
        elif isinstance(m, Int8Linear):
            path = intpath.int8_linear(m.weight, x2, bias=bias)
        elif isinstance(m, BinaryLinear):
            path = intpath.bibert_linear(m.weight, x2, bias=bias, zero_policy=m.zero_policy)
        elif isinstance(m, TernaryLinear):
            if m.act_mode != "symmetric":
                raise ValueError("the integer path implements TernaryBERT's official symmetric activations")
            path = intpath.ternarybert_linear(m.weight, x2, bias=bias, clip_val=m.clip_val, act_bits=m.act_bits,
                                              granularity=m.granularity)
        elif isinstance(m, QBBLinear):
            path = intpath.qbb_linear(m.qbb_weights(), x2, bias=bias)
        elif isinstance(m, BiLLMLinear):
            path = intpath.billm_linear(m.billm, x2, bias=bias)
        else:
            raise TypeError(f"no integer path for {type(m).__name__}")
        return torch.from_numpy(path.y).reshape(*x.shape[:-1], -1)


class IntegerBiAttention(torch.nn.Module):
    """BiBERT's attention (binary Q/K/V/O linears and Bi-Attention) on ``models.intpath.bibert_attention_block``,
    one sequence at a time at its own length (right padding: the additive mask's zero entries are the tokens;
    padded keys are left out, which is what the −10000 mask does to their bits, and padded query rows are 0)."""

    def __init__(self, attn: torch.nn.Module):
        super().__init__()
        self.attn = attn

    def forward(self, x, mask, rope=None, cache=None):
        from .intpath import bibert_attention_block
        a = self.attn
        out = torch.zeros(x.shape[0], x.shape[1], a.o.out_features)
        lengths = [x.shape[1]] * x.shape[0] if mask is None else (mask[:, 0, 0, :] == 0).sum(-1).tolist()
        for i, n in enumerate(lengths):
            path = bibert_attention_block(
                x[i, :n].float(), a.q.weight, a.k.weight, a.v.weight, a.o.weight, bq=a.q.bias, bk=a.k.bias,
                bv=a.v.bias, bo=a.o.bias, heads=a.cfg.num_heads, strict=a.core.strict, zero_policy=a.q.zero_policy)
            out[i, :n] = torch.from_numpy(path.y)
        return out


def integer_model(quantized: TransformerModel) -> TransformerModel:
    """A copy of a scheme's float-simulated model with every quantized block linear on its integer-only path
    (BiBERT: the whole attention block too); embeddings, norms, GELU and the rest stay where they were."""
    import copy
    from .apply import BiAttentionCore
    q = copy.deepcopy(quantized)
    bibert = isinstance(q.layers[0].attn.core, BiAttentionCore)
    replaced = 0
    for name, module, role in list(linear_layers(q)):
        if role in BLOCK_LINEARS and not (bibert and role.startswith("attn.")):
            replace_module(q, name, IntegerLinear(module))
            replaced += 1
    if not replaced:
        raise ValueError("no block linear found to put on its integer path (are the layers' roles set?)")
    if bibert:
        for layer in q.layers:
            layer.attn = IntegerBiAttention(layer.attn)
    return q


@dataclass(frozen=True)
class IntegerRow:
    scheme: str
    bits: float
    float_cos: float          #: the scheme's float-simulated model against FP32 (mean)
    int_cos: float            #: the integer-only path against FP32 (mean)
    int_min: float
    int_vs_float: float       #: the integer-only path against the scheme's float-simulated model (mean)
    int_vs_float_min: float
    float64_cos: float        #: the float-simulated model in float32 against itself in float64 (mean): the floor
    seconds: float
    description: str


def integer_fidelity_table(schemes: list[str] | None = None, *, model: TransformerModel | None = None
                           ) -> list[IntegerRow]:
    """Cosine similarity of each scheme's integer-only path (``models.intpath``) with the FP32 model and with
    the scheme's own float-simulated model, on the 64 evaluation sentences."""
    schemes = list(INTEGER_SCHEMES) if schemes is None else schemes
    unknown = [s for s in schemes if s not in INTEGER_SCHEMES]
    if unknown:
        raise ValueError(f"no integer path for {unknown}; known: {', '.join(INTEGER_SCHEMES)}")
    model = model if model is not None else load_minilm()
    ids, mask = tokenize(sentences("evaluation"))
    cal_ids, cal_mask = tokenize(sentences("calibration"))
    reference = embed(model, ids, mask)

    def calibrate(m):
        m(cal_ids, attention_mask=cal_mask)

    import copy
    rows = []
    for name in schemes:
        bits, spec, description = INTEGER_SCHEMES[name]
        start = time.perf_counter()
        if name == "billm":
            simulated = _billm(model, calibrate)
            for lname, _, role in linear_layers(model):       # the BiLLM layers keep the role integer_model keys on
                if role in BLOCK_LINEARS:
                    simulated.get_submodule(lname).role = role
        else:
            simulated = quantize_model(model, spec)
        floating = embed(simulated, ids, mask)
        # The same float model in float64: how far mere rounding differences carry through its requantizations.
        floating64 = embed(copy.deepcopy(simulated).double(), ids, mask).float()
        integer = embed(integer_model(simulated), ids, mask)
        to_ref = (integer * reference).sum(-1).numpy()
        to_float = (integer * floating).sum(-1).numpy()
        rows.append(IntegerRow(name, bits, float(np.mean((floating * reference).sum(-1).numpy())),
                               float(np.mean(to_ref)), float(np.min(to_ref)), float(np.mean(to_float)),
                               float(np.min(to_float)), float(np.mean((floating * floating64).sum(-1).numpy())),
                               time.perf_counter() - start, description))
    return rows


def integer_markdown(rows: list[IntegerRow]) -> str:
    lines = ["| scheme | bits/weight | float-simulated vs FP32 (mean cos) | integer-only vs FP32 (mean / min cos) | "
             "integer-only vs float-simulated (mean / min cos) | float-simulated, float32 vs float64 (mean cos) | "
             "time (s) | integer path |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.scheme} | {r.bits:g} | {r.float_cos:.4f} | {r.int_cos:.4f} / {r.int_min:.4f} | "
                     f"{r.int_vs_float:.6f} / {r.int_vs_float_min:.6f} | {r.float64_cos:.6f} | {r.seconds:.1f} | "
                     f"{r.description} |")
    return "\n".join(lines)


INTEGER_NOTE = (
    "Every quantized block linear runs on its integer-only path (models/intpath.py, docs/intpost.md): the host "
    "quantizes its float input with the scheme's own quantizer (so the codes, and the engine's accumulators, are "
    "exactly the scheme's integer view), the engine's accumulators are rescaled by the POST functions in fixed "
    "point (20-bit coefficients and per-token scales, outputs I32 with 16 fractional bits), and the output is "
    "handed back to the host as float32 for what stays there (embeddings, LayerNorm, GELU, softmax). BiBERT's "
    "attention is integer end to end (thresholds, XNOR QKᵀ, bool, BAMM, sign), one sentence at a time, with "
    "zero_policy pos in both its columns (the XNOR engine has no sign(0)). \"float-simulated\" is the scheme's "
    "float reference model (models/apply.py).\n\n"
    "Reading it: the integer path moves no scheme's fidelity to FP32 by more than 0.003 except BiBERT's (QBB, "
    "whose float model keeps FP32 activations, loses 0.0024 to the integer path's 8-bit per-token codes, BiLLM "
    "0.0014). Against its own float-simulated model an integer path agrees about as well as that float model "
    "agrees with itself computed in float64 (the float32 vs float64 column): every linear requantizes its input, "
    "so any rounding difference — the fixed-point rescale, or float32 against float64 — moves a few codes across "
    "a rounding boundary and is carried on. QBB's and BiLLM's float models quantize no activation, hence their "
    "float64 column of 1.0 and their integer paths' 0.997–0.998 (the 8-bit codes). BiBERT's float model is "
    "chaotic here (signs of near-zero values everywhere; post-training, without the distillation it was designed "
    "for, it does not work on this encoder at all), so both of its agreement columns are low; its integer attention "
    "block matches the float64 reference's signs, bits and counts exactly (tests/test_intpath.py). The BiLLM float-simulated "
    "model gives 0.5884 today, also through `fidelity_table([\"billm\"])`; the billm row of the table above "
    "(0.6087) was generated earlier and is kept as it was.")


def integer_section(table: str, command: str) -> str:
    """The integer-only section of docs/fidelity.md: heading, how it was made, the table, the note."""
    return (f"{INTEGER_HEADING}\n\nGenerated by `{command}` (it rewrites only this section of the page).\n\n"
            f"{table}\n\n{INTEGER_NOTE}\n")


def with_integer_section(page: str, section: str | None) -> str:
    """``page`` with its integer-only section replaced by ``section`` (appended if it has none; removed if
    ``section`` is None). The section is always the page's last."""
    head = page.split(INTEGER_HEADING, 1)[0].rstrip("\n")
    return head + "\n" if section is None else f"{head}\n\n{section}"


def integer_section_of(page: str) -> str | None:
    """The integer-only section of an existing page, or None."""
    return INTEGER_HEADING + page.split(INTEGER_HEADING, 1)[1] if INTEGER_HEADING in page else None
