"""models.shapes lists exactly the parameters the torch model has: names, order, shapes and roles, tied weights once.

The expected values come from the real torch model (``build_model`` on the meta device), never from
``models.shapes`` itself."""

import pytest

from models.config import BUILTIN_MODELS, load_config
from models.shapes import parameter_shapes
from models.transformer import build_model


def _torch_parameters(cfg, pooler):
    model = build_model(cfg, device="meta", pooler=pooler)
    owner = {}
    for mname, module in model.named_modules():
        for pname, _ in module.named_parameters(recurse=False):
            owner[f"{mname}.{pname}" if mname else pname] = (module, pname)
    out = []
    for name, p in model.named_parameters():
        module, pname = owner[name]
        role = "bias" if pname == "bias" else getattr(module, "role", None) or "norm"
        out.append((name, tuple(p.shape), role))
    return out


CONFIGS = [(name, pooler) for name in BUILTIN_MODELS for pooler in (True, False)]


@pytest.mark.parametrize("name,pooler", CONFIGS, ids=[f"{n}-{'pooler' if p else 'nopooler'}" for n, p in CONFIGS])
def test_parameter_shapes_are_the_torch_models(name, pooler):
    cfg = load_config(name)
    got = [(p.name, p.shape, p.role) for p in parameter_shapes(cfg, pooler=pooler)]
    assert got == _torch_parameters(cfg, pooler)


@pytest.mark.parametrize("changes", [
    {"tie_word_embeddings": True}, {"tie_word_embeddings": False}, {"word_embed_proj_dim": 32},
    {"attention_bias": True, "mlp_bias": True}, {"pre_norm": False}, {"sub_norms": True},
])
def test_variants_of_the_structure(changes):
    """The flags the built-in configs may not all exercise (an OPT-350m-style projection, tied heads, biases)."""
    base = load_config("opt-125m") if "word_embed_proj_dim" in changes or "pre_norm" in changes else \
        load_config("llama-7b")
    cfg = base.replace(hidden_size=64, num_heads=4, num_kv_heads=2 if base.arch == "llama" else 4, head_dim=16,
                       intermediate_size=96, num_layers=2, vocab_size=100, **changes)
    got = [(p.name, p.shape, p.role) for p in parameter_shapes(cfg)]
    assert got == _torch_parameters(cfg, True)
