"""Model builders against the Hugging Face implementations (shared random weights), real MiniLM weights,
configs and checkpoint checks."""

import json

import numpy as np
import pytest
import torch

from models.checkpoint import load_minilm, load_state_dict, minilm_dir
from models.config import BUILTIN_MODELS, load_config
from models.transformer import build_model, linear_layers

transformers = pytest.importorskip("transformers")


def _tiny(kind):
    if kind == "bert":
        return transformers.BertConfig(vocab_size=101, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                                       intermediate_size=96, max_position_embeddings=64, type_vocab_size=2)
    if kind == "opt":
        return transformers.OPTConfig(vocab_size=103, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                                      ffn_dim=96, max_position_embeddings=64, word_embed_proj_dim=48)
    return transformers.LlamaConfig(vocab_size=107, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                                    num_key_value_heads=2, intermediate_size=96, max_position_embeddings=64,
                                    rms_norm_eps=1e-6, rope_theta=10000.0)


def _hf_model(kind, hf_cfg):
    torch.manual_seed(0)
    if kind == "bert":
        m = transformers.BertModel(hf_cfg)
    elif kind == "opt":
        m = transformers.OPTForCausalLM(hf_cfg)
    else:
        m = transformers.LlamaForCausalLM(hf_cfg)
    # Randomise the norms too, so a mis-mapped norm cannot hide behind its ones/zeros init.
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.dim() == 1:
                p.copy_(torch.randn_like(p) * 0.1 + (1.0 if name.endswith("weight") else 0.0))
    return m.eval()


@pytest.mark.parametrize("kind", ["bert", "opt", "llama"])
def test_builders_match_hugging_face(kind):
    hf_cfg = _tiny(kind)
    hf = _hf_model(kind, hf_cfg)
    ours = build_model(load_config(hf_cfg))
    load_state_dict(ours, hf.state_dict(), source="hf")
    ids = torch.randint(0, hf_cfg.vocab_size, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        if kind == "bert":
            mask = torch.ones_like(ids)
            mask[1, 7:] = 0
            ref = hf(input_ids=ids, attention_mask=mask)
            out = ours(ids, attention_mask=mask)
            torch.testing.assert_close(out.hidden[mask.bool()], ref.last_hidden_state[mask.bool()],
                                       rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(out.pooled, ref.pooler_output, rtol=1e-5, atol=1e-5)
        else:
            ref = hf(input_ids=ids).logits
            out = ours(ids).logits
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["opt", "llama"])
def test_kv_cache_decode_equals_full_forward(kind):
    model = build_model(load_config(_tiny(kind)), seed=3)
    ids = torch.randint(0, 100, (1, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(ids).logits
        cache = model.new_cache()
        prefill = model(ids[:, :5], cache=cache).logits
        steps = [model(ids[:, i:i + 1], cache=cache).logits for i in range(5, 9)]
    torch.testing.assert_close(torch.cat([prefill, *steps], dim=1), full, rtol=1e-5, atol=1e-5)
    assert cache[0][0].shape[2] == 9


def test_gqa_and_roles():
    cfg = load_config(_tiny("llama"))
    model = build_model(cfg)
    roles = [r for _, _, r in linear_layers(model)]
    assert roles[:7] == ["attn.q", "attn.k", "attn.v", "attn.o", "ffn.gate", "ffn.up", "ffn.down"]
    assert roles[-1] == "lm_head"
    assert model.layers[0].attn.k.out_features == 2 * 12     # 2 KV heads of 12


def test_builtin_configs_and_parameter_counts():
    assert {"bert-base", "minilm-l6", "opt-1.3b", "llama-7b"} <= set(BUILTIN_MODELS)
    bert = build_model(load_config("bert-base"), device="meta")
    assert sum(p.numel() for p in bert.parameters()) == 109_482_240          # BERT-base with pooler
    llama = build_model(load_config("llama-7b"), device="meta")
    assert sum(p.numel() for p in llama.parameters()) == 6_738_415_616       # LLaMA-7B
    opt = build_model(load_config("opt-1.3b"), device="meta")
    assert sum(p.numel() for p in opt.parameters()) == 1_315_758_080         # OPT-1.3B (tied head)


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown model 'bert-huge'; built-in models: .*bert-base"):
        load_config("bert-huge")
    p = tmp_path / "config.json"
    p.write_text(json.dumps({"model_type": "bert", "hidden_size": 64}))
    with pytest.raises(ValueError, match="lacks the field 'num_attention_heads'"):
        load_config(p)
    p.write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(ValueError, match="unsupported model_type 't5'"):
        load_config(p)
    p.write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        load_config(p)
    with pytest.raises(ValueError, match="does not exist"):
        load_config(tmp_path / "nope" / "config.json")


def test_checkpoint_name_and_shape_errors():
    hf_cfg = _tiny("bert")
    hf = _hf_model("bert", hf_cfg)
    ours = build_model(load_config(hf_cfg))
    sd = dict(hf.state_dict())
    bad = dict(sd)
    bad["encoder.layer.0.attention.self.query.weight"] = torch.zeros(48, 47)
    with pytest.raises(ValueError, match=r"'encoder.layer.0.attention.self.query.weight' has shape \(48, 47\)"):
        load_state_dict(ours, bad)
    missing = {k: v for k, v in sd.items() if "layer.1.output.dense" not in k}
    with pytest.raises(ValueError, match=r"no tensor for layers.1.ffn.down.bias, layers.1.ffn.down.weight"):
        load_state_dict(ours, missing)
    extra = dict(sd)
    extra["encoder.layer.0.crossattention.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="has no place in a bert model"):
        load_state_dict(ours, extra)
    extra = dict(sd)
    extra["encoder.layer.2.output.dense.weight"] = torch.zeros(48, 96)
    with pytest.raises(ValueError, match="which this .* model does not have"):
        load_state_dict(ours, extra)


def test_minilm_real_weights_match_hugging_face():
    d = minilm_dir()
    ours = load_minilm()
    hf_cfg = transformers.BertConfig.from_json_file(str(d / "config.json"))
    hf = transformers.BertModel(hf_cfg, add_pooling_layer=False).eval()
    from safetensors.torch import load_file
    hf.load_state_dict(load_file(str(d / "model.safetensors")), strict=False)
    ids = torch.tensor([[101, 7592, 2088, 1010, 2023, 2003, 1037, 3231, 1012, 102]])
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).hidden, hf(input_ids=ids).last_hidden_state, rtol=1e-5, atol=1e-5)
    # The weights are the real ones, not an init: statistics a random init would not have.
    w = ours.layers[0].attn.q.weight.detach()
    assert abs(float(w.std()) - 0.02) > 0.005 and np.isfinite(float(w.abs().max()))
