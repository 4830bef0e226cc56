"""Training utilities the schemes rely on, and a small quantization-aware training demo.

The straight-through estimators live in ``models.quant`` (``sign_ste``, ``round_ste``, ``clip_ste``,
``straight_through``) and in the scheme modules (BiBERT's clipped estimators); the distillation losses in the
scheme modules (``bibert.dmd_loss``, ``ternarybert``'s hidden/attention/logit losses). This module strings them
together: :func:`qat_demo` trains a tiny BERT-style classifier under a scheme, optionally distilled from a
full-precision teacher, and reports the loss curve.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .apply import quantize_model
from .config import load_config
from .transformer import TransformerModel, build_model

__all__ = ["TinyClassifier", "toy_task", "QATResult", "qat_demo", "TINY_BERT"]

#: A BERT of toy size for demos and fast tests.
TINY_BERT = {"model_type": "bert", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "intermediate_size": 128, "vocab_size": 32, "max_position_embeddings": 32, "type_vocab_size": 2}


class TinyClassifier(nn.Module):
    """Encoder + mean pooling + a full-precision classifier (the classifier stays FP in every scheme)."""

    def __init__(self, encoder: TransformerModel, n_classes: int = 2):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.cfg.hidden_size, n_classes)

    def forward(self, ids):
        hidden = self.encoder(ids).hidden
        return self.head(hidden.mean(dim=1)), hidden


def toy_task(n: int, *, seq: int = 12, vocab: int = 32, marker: int = 5, generator: torch.Generator):
    """Sequences of random tokens; label 1 iff the marker token occurs (half the sequences get it)."""
    ids = torch.randint(6, vocab, (n, seq), generator=generator)
    labels = torch.randint(0, 2, (n,), generator=generator)
    where = torch.randint(0, seq, (n,), generator=generator)
    ids[labels.bool(), where[labels.bool()]] = marker
    return ids, labels


@dataclass
class QATResult:
    scheme: str
    losses: list[float]
    accuracy: float          #: on held-out sequences
    teacher_accuracy: float

    @property
    def first_loss(self) -> float:
        return sum(self.losses[:10]) / min(10, len(self.losses))

    @property
    def last_loss(self) -> float:
        return sum(self.losses[-10:]) / min(10, len(self.losses))


def _train(model, steps, lr, g, *, teacher=None, distill_weight=1.0):
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    model.train()
    for _ in range(steps):
        ids, labels = toy_task(64, generator=g)
        logits, hidden = model(ids)
        loss = F.cross_entropy(logits, labels)
        if teacher is not None:
            with torch.no_grad():
                t_logits, t_hidden = teacher(ids)
            # TernaryBERT-style distillation: hidden states (MSE) and soft cross-entropy on the logits.
            soft = -(F.softmax(t_logits, -1) * F.log_softmax(logits, -1)).sum(-1).mean()
            loss = loss + distill_weight * (F.mse_loss(hidden, t_hidden) + soft)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def _accuracy(model, g) -> float:
    ids, labels = toy_task(512, generator=g)
    with torch.no_grad():
        return float((model(ids)[0].argmax(-1) == labels).float().mean())


def qat_demo(scheme: str = "bitnet-b1.58", *, steps: int = 300, teacher_steps: int = 300, lr: float = 2e-3,
             distill: bool = True, seed: int = 0) -> QATResult:
    """Train a full-precision teacher on the toy task, then quantization-aware train a copy under ``scheme``
    (starting from the teacher's weights, distilled from it when ``distill``). Returns the student's loss curve."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    cfg = load_config(TINY_BERT)
    teacher = TinyClassifier(build_model(cfg, seed=seed, pooler=False))
    _train(teacher, teacher_steps, lr, g)
    teacher_acc = _accuracy(teacher, torch.Generator().manual_seed(seed + 1))
    student = TinyClassifier(quantize_model(teacher.encoder, scheme))
    student.head.load_state_dict(teacher.head.state_dict())
    losses = _train(student, steps, lr, g, teacher=teacher if distill else None)
    return QATResult(scheme, losses, _accuracy(student, torch.Generator().manual_seed(seed + 1)), teacher_acc)
