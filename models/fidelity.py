"""Sentence-embedding fidelity of post-training schemes on all-MiniLM-L6-v2 with its real weights.

The 64 fixed evaluation sentences (``models/data/sentences.json``) are embedded the way sentence-transformers
embeds them for this model (mean pooling over the attention mask, then L2 normalisation) by the full-precision
model and by copies whose transformer-block linears (Q, K, V, O, FFN up and down) are quantized. The score is
the cosine similarity of each sentence's embedding with its full-precision embedding. Weight-only rows keep
activations, attention and embeddings in FP32, so they compare the weight quantizers alone.
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

__all__ = ["sentences", "tokenize", "embed", "FidelityRow", "fidelity_table", "METHODS", "markdown"]

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
