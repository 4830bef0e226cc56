"""Workload extraction: counted against a traced forward pass of the real modules, and against hand arithmetic."""

import json

import pytest
import torch

from models.config import load_config
from models.transformer import AttentionCore, build_model
from models.workload import Workload, extract_workload

TINY = {
    "bert": {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
             "intermediate_size": 64, "vocab_size": 50, "max_position_embeddings": 64, "type_vocab_size": 2},
    "opt": {"model_type": "opt", "hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4,
            "ffn_dim": 80, "vocab_size": 60, "max_position_embeddings": 64, "word_embed_proj_dim": 32},
    "llama": {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "intermediate_size": 48, "vocab_size": 70, "max_position_embeddings": 64},
}


def _trace(model, run):
    """MACs of every nn.Linear and every attention product actually executed by ``run()``."""
    counts = {"linear": 0, "attention": 0}

    def on_linear(mod, inp, out):
        counts["linear"] += inp[0].numel() // inp[0].shape[-1] * mod.in_features * mod.out_features

    def on_core(mod, inp, out):
        q, k, v, _ = inp
        b, h, tq, dh = q.shape
        counts["attention"] += b * h * tq * k.shape[2] * dh + b * h * tq * k.shape[2] * v.shape[3]

    handles = [m.register_forward_hook(on_linear) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    handles += [m.register_forward_hook(on_core) for m in model.modules() if isinstance(m, AttentionCore)]
    with torch.no_grad():
        run()
    for h in handles:
        h.remove()
    return counts


def _workload_macs(wl, phase):
    linear = sum(o.macs for o in wl.ops if o.phase == phase and o.op in ("linear", "lm_head"))
    attention = sum(o.macs for o in wl.ops if o.phase == phase and o.op in ("qk", "av"))
    return {"linear": linear, "attention": attention}


@pytest.mark.parametrize("arch", ["bert", "opt", "llama"])
def test_prefill_matches_traced_forward(arch):
    cfg = load_config(TINY[arch])
    model = build_model(cfg)
    seq = 9
    ids = torch.randint(0, cfg.vocab_size, (1, seq))
    traced = _trace(model, lambda: model(ids))
    wl = extract_workload(cfg, "fp32", seq_len=seq)
    got = _workload_macs(wl, "prefill")
    if cfg.is_decoder:
        # The traced forward computes logits for every token; the workload only for the last one.
        head = cfg.vocab_size * (cfg.word_embed_proj_dim or cfg.hidden_size)
        traced["linear"] -= (seq - 1) * head
        if cfg.word_embed_proj_dim:
            traced["linear"] -= (seq - 1) * cfg.hidden_size * cfg.word_embed_proj_dim
    else:
        # The pooler runs on the first token only, as in the model.
        pass
    assert got == traced


@pytest.mark.parametrize("arch", ["opt", "llama"])
def test_decode_steps_match_traced_kv_cache_decoding(arch):
    cfg = load_config(TINY[arch])
    model = build_model(cfg)
    seq, steps = 6, 4
    ids = torch.randint(0, cfg.vocab_size, (1, seq + steps))
    cache = model.new_cache()
    with torch.no_grad():
        model(ids[:, :seq], cache=cache)
    for t in range(steps):
        traced = _trace(model, lambda: model(ids[:, seq + t:seq + t + 1], cache=cache))
        wl = extract_workload(cfg, "fp32", seq_len=seq, decode_steps=steps)
        got = {k: sum(o.macs for o in wl.ops if o.step == t and o.op in ops)
               for k, ops in (("linear", ("linear", "lm_head")), ("attention", ("qk", "av")))}
        assert got == traced, t


def test_bert_base_macs_by_hand():
    wl = extract_workload("bert-base", "fp32", seq_len=128, pooler=False)
    # 128 tokens × 12 layers × (4·768² + 2·768·3072) + 12 layers × 2 products × 128² × 768
    assert wl.total_macs() == 128 * 12 * (4 * 768 ** 2 + 2 * 768 * 3072) + 12 * 2 * 128 ** 2 * 768 == 11_173_625_856


def test_units_and_widths_follow_the_scheme():
    ops = {o.name: o for o in extract_workload("bert-base", "bibert", seq_len=16).ops}
    assert ops["layer.attn.q"].unit == "xnor-popcount" and (ops["layer.attn.q"].a_bits, ops["layer.attn.q"].b_bits) == (1, 1)
    assert ops["layer.attn.qk"].unit == "xnor-popcount" and ops["layer.attn.av"].unit == "bamm"
    assert "layer.attn.softmax" not in ops and "layer.attn.bool" in ops
    ops = {o.name: o for o in extract_workload("bert-base", "ternarybert", seq_len=16).ops}
    assert ops["layer.attn.qk"].unit == "int8-mac" and ops["layer.ffn.up"].unit == "ternary-mac"
    assert ops["layer.ffn.down"].acc_bits == 20          # ±128·3072 = ±393,216 < 2^19
    ops = {o.name: o for o in extract_workload("llama-7b", "bitnet-b1.58", seq_len=16).ops}
    assert ops["lm_head"].unit == "fp-mac" and ops["layer.attn.qk"].unit == "fp-mac"
    assert ops["layer.attn.q"].unit == "ternary-mac" and "layer.attn.k.absmax" not in ops   # q, k, v share one input
    assert ops["layer.ffn.gate"].layers == 32
    ops = {o.name: o for o in extract_workload("llama-7b", "qbb:n_bases=3", seq_len=16).ops}
    assert ops["layer.attn.q"].unit == "binary-basis" and ops["layer.attn.q.rescale"].count == 3


def test_decode_attention_grows_and_json_round_trips(tmp_path):
    wl = extract_workload("llama-7b", "billm", seq_len=512, decode_steps=3)
    qk = [o for o in wl.ops if o.op == "qk" and o.phase == "decode"]
    assert [o.n for o in qk] == [513, 514, 515] and all(o.m == 1 and o.count == 32 for o in qk)
    again = Workload.from_json(wl.to_json())
    assert again == wl
    with pytest.raises(ValueError, match="not a lowbit workload"):
        Workload.from_dict({**json.loads(wl.to_json()), "version": 99})


@pytest.mark.parametrize("model", ["bert-base", "minilm-l6", "opt-1.3b", "llama-7b"])
def test_covers_prefill_and_decode_of_the_published_shapes(model):
    decoder = model in ("opt-1.3b", "llama-7b")
    wl = extract_workload(model, "bitnet-b1.58", seq_len=128, decode_steps=4 if decoder else 0)
    assert wl.phase("prefill") and (bool(wl.phase("decode")) == decoder)
    assert all(o.unit in {"ternary-mac", "fp-mac", "fp-vector"} for o in wl.ops)


def test_bad_requests_are_refused():
    with pytest.raises(ValueError, match="bert-base is an encoder; decode_steps=2 needs a decoder"):
        extract_workload("bert-base", "fp32", seq_len=8, decode_steps=2)
    with pytest.raises(ValueError, match="exceeds bert-base's 512 positions"):
        extract_workload("bert-base", "fp32", seq_len=600)
    with pytest.raises(ValueError, match="seq_len must be a positive integer, not 0"):
        extract_workload("bert-base", "fp32", seq_len=0)
    with pytest.raises(ValueError, match="unknown scheme 'binary'"):
        extract_workload("bert-base", "binary", seq_len=8)


def test_scheme_options_are_checked_and_reach_the_workload():
    # An option no layer function of the scheme takes would be silently ignored: refuse it, listing the real ones.
    with pytest.raises(ValueError, match=r"scheme 'bitnet-b1.58' has no option\(s\) \['act_bits'\]; its options: "
                                         r"variant"):
        extract_workload("bert-base", "bitnet-b1.58:act_bits=4", seq_len=8)
    with pytest.raises(ValueError, match=r"ternarybert needs act_bits in \[2, 8\], not 16"):
        extract_workload("bert-base", "ternarybert:act_bits=16", seq_len=8)
    # TernaryBERT's view takes act_bits; the workload's linears must carry the same width and a narrower
    # accumulator: 768 products of a 4-bit code (|x| ≤ 8) and a ternary weight need |acc| ≤ 6,144, 14 bits.
    q = [o for o in extract_workload("bert-base", "ternarybert:act_bits=4", seq_len=8).ops
         if o.name == "layer.attn.q"][0]
    assert (q.a_bits, q.acc_bits) == (4, 14)
