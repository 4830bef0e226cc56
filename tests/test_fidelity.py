"""MiniLM sentence-embedding fidelity: real weights, real tokenizer, the post-training schemes ranked."""

import pytest
import torch

from models.fidelity import embed, fidelity_table, sentences, tokenize


def test_sentence_sets_are_fixed_and_disjoint():
    ev, cal = sentences("evaluation"), sentences("calibration")
    assert len(ev) == 64 and len(cal) == 32 and not set(ev) & set(cal)
    ids, mask = tokenize(ev[:2])
    assert ids[0, 0] == 101 and (ids * mask).max() < 30522           # [CLS] first, vocabulary ids
    assert mask.sum(1).tolist() == [int((ids[i] != 0).sum()) for i in range(2)]


def test_embeddings_are_unit_and_ignore_padding():
    from models.checkpoint import load_minilm
    model = load_minilm()
    ids, mask = tokenize(["A short one.", "A much longer sentence than the first one, with many more words."])
    e = embed(model, ids, mask)
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(2))
    alone = embed(model, *tokenize(["A short one."]))
    torch.testing.assert_close(e[:1], alone, rtol=1e-5, atol=1e-5)   # padding does not change the embedding


def test_qbb_beats_naive_sign_binarization():
    rows = {r.method: r for r in fidelity_table(["fp32", "sign", "qbb-n1", "qbb-n2", "qbb-n4"])}
    sign = rows["sign"].mean_cos
    assert rows["qbb-n2"].mean_cos > sign + 0.1 and rows["qbb-n4"].mean_cos > rows["qbb-n2"].mean_cos
    # One basis with the cascaded init is the naive binarization itself (sign(W)·mean|W_r|, the L2 optimum).
    assert rows["qbb-n1"].mean_cos == pytest.approx(sign, abs=1e-6)


def test_billm_beats_naive_sign_binarization_on_real_minilm_layers():
    # The default suite's BiLLM check on real weights and real activations: two of MiniLM's linears quantized
    # alone (Hessian from the calibration sentences' inputs to them), judged on the evaluation sentences'
    # outputs. The whole-model ranking below is the slow test (BiLLM over all 36 linears takes a minute).
    from models.billm import HessianAccumulator, billm_quantize, sign_binarize
    from models.checkpoint import load_minilm
    from models.transformer import linear_layers
    model = load_minilm()
    layers = {name: module for name, module, _ in linear_layers(model)}
    names = ["layers.2.attn.q", "layers.2.ffn.down"]
    seen = {n: [] for n in names}
    hooks = [layers[n].register_forward_hook(lambda _m, args, _o, n=n: seen[n].append(args[0].detach()))
             for n in names]
    inputs = {}
    for split in ("calibration", "evaluation"):
        for n in names:
            seen[n].clear()
        ids, mask = tokenize(sentences(split))
        embed(model, ids, mask)
        inputs[split] = {n: seen[n][0][mask.bool()] for n in names}         # real tokens only
    for h in hooks:
        h.remove()
    for n in names:
        w = layers[n].weight.detach()
        hessian = HessianAccumulator(w.shape[1])
        hessian.add_batch(inputs["calibration"][n])
        x = inputs["evaluation"][n]
        ref = x @ w.T

        def rel_err(q):
            return float(((x @ q.T - ref) ** 2).mean() / (ref ** 2).mean())

        billm, sign = rel_err(billm_quantize(w, hessian.hessian).dequantized()), rel_err(sign_binarize(w))
        assert billm < 0.5 * sign, (n, billm, sign)


@pytest.mark.slow
def test_billm_and_qbb_beat_naive_sign_binarization():
    rows = {r.method: r for r in fidelity_table(["fp32", "sign", "billm", "qbb-n1", "qbb-n2", "qbb-n4"])}
    assert rows["fp32"].mean_cos == pytest.approx(1.0, abs=1e-6)
    sign = rows["sign"].mean_cos
    assert rows["billm"].mean_cos > sign + 0.1
    assert rows["qbb-n2"].mean_cos > sign + 0.1 and rows["qbb-n4"].mean_cos > rows["qbb-n2"].mean_cos
    # One basis with the cascaded init is the naive binarization itself (sign(W)·mean|W_r|, the L2 optimum).
    assert rows["qbb-n1"].mean_cos == pytest.approx(sign, abs=1e-6)


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match=r"unknown fidelity method\(s\) \['gptq'\]"):
        fidelity_table(["gptq"])
