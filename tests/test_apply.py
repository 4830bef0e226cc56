"""Schemes applied to whole models: the right layers are replaced, the models run, and a quantized layer inside a
model computes what its integer view says."""

import numpy as np
import pytest
import torch

from models.apply import BiAttentionCore, TernaryBertAttentionCore, quantize_model
from models.config import load_config
from models.schemes import SCHEMES, get_scheme
from models.transformer import AttentionCore, build_model, linear_layers

BERT = {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 64, "vocab_size": 50, "max_position_embeddings": 32, "type_vocab_size": 2}
LLAMA = {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "intermediate_size": 48, "vocab_size": 60, "max_position_embeddings": 32}


def _calibrate(model):
    model(torch.randint(0, 50, (4, 10), generator=torch.Generator().manual_seed(9)))


@pytest.mark.parametrize("scheme", [s for s in SCHEMES if s not in ("fp32", "fp16")])
@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_every_scheme_quantizes_its_roles_and_runs(scheme, arch):
    model = build_model(load_config(BERT if arch == "bert" else LLAMA), seed=1)
    sch = get_scheme(scheme)
    q = quantize_model(model, scheme, calibration=_calibrate if scheme == "billm" else None)
    for (name, orig, role), (_, new, _) in zip(linear_layers(model), linear_layers(q)):
        replaced = type(new) is not torch.nn.Linear
        assert replaced == (role in sch.quantized_roles), (name, role, type(new).__name__)
    assert all(type(m) is torch.nn.Linear for _, m, _ in linear_layers(model))        # the original is untouched
    ids = torch.randint(0, 50, (2, 7))
    with torch.no_grad():
        out, ref = q(ids), model(ids)
    assert torch.isfinite(out.hidden).all()
    assert not torch.equal(out.hidden, ref.hidden)
    cores = {type(layer.attn.core) for layer in q.layers}
    expected = {"bibert": BiAttentionCore, "ternarybert": TernaryBertAttentionCore}.get(scheme, AttentionCore)
    assert cores == {expected}


def test_quantized_layer_in_a_model_equals_its_integer_view():
    model = build_model(load_config(BERT), seed=2)
    x = torch.randn(5, 32, generator=torch.Generator().manual_seed(3))
    for scheme in ("bitnet-b1.58", "bibert", "ternarybert"):
        layer = quantize_model(model, scheme).layers[0].ffn.up
        view = get_scheme(scheme).view(model.layers[0].ffn.up.weight.detach(), x,
                                       bias=model.layers[0].ffn.up.bias.detach())
        with torch.no_grad():
            y = layer(x).numpy()
        np.testing.assert_allclose(view.output(), y, rtol=1e-5, atol=1e-5, err_msg=scheme)
    # QBB keeps FP activations and refines its bases when quantizing a model; its view adds int8 activations,
    # so the layer is compared on the view's fake-quantized input, with the layer's own bases and scales.
    from models import qbb
    layer = quantize_model(model, "qbb:n_bases=2").layers[0].ffn.up
    view = qbb.linear_view_from_weights(layer.qbb_weights(), x, bias=layer.bias.detach())
    with torch.no_grad():
        y = layer(qbb.quantize_activations(x).dequantized()).numpy()
    np.testing.assert_allclose(view.output(), y, rtol=1e-5, atol=1e-5)


def test_billm_needs_calibration_and_refuses_an_empty_one():
    model = build_model(load_config(LLAMA), seed=1)
    with pytest.raises(ValueError, match="BiLLM needs calibration data"):
        quantize_model(model, "billm")
    with pytest.raises((ValueError, RuntimeError), match="(?i)calibration|batch"):
        quantize_model(model, "billm", calibration=lambda m: None)


def test_roles_can_be_narrowed_but_not_widened():
    model = build_model(load_config(BERT), seed=1)
    q = quantize_model(model, "bitnet-b1.58", roles={"ffn.up"}, attention=False)
    kinds = {role: type(m).__name__ for _, m, role in linear_layers(q)}
    assert kinds["ffn.up"] == "BitLinear158" and kinds["attn.q"] == "Linear"
    with pytest.raises(ValueError, match=r"does not quantize \['pooler'\]"):
        quantize_model(model, "bitnet-b1.58", roles={"pooler"})


def test_word_embeddings_follow_the_scheme():
    model = build_model(load_config(BERT), seed=1)
    assert type(quantize_model(model, "bibert").embed.word).__name__ == "BinaryEmbedding"
    assert type(quantize_model(model, "ternarybert").embed.word).__name__ == "TernaryEmbedding"
    assert type(quantize_model(model, "bitnet-b1.58").embed.word) is torch.nn.Embedding
