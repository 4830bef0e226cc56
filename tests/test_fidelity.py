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


# -- the integer-only deployment path (models.intpath) ------------------------------------------------------

def test_integer_rows_follow_their_float_models():
    from models.fidelity import integer_fidelity_table
    rows = {r.scheme: r for r in integer_fidelity_table(["bitnet-b1.58", "int8"])}
    for r in rows.values():
        # the integer path is the float-simulated model up to the fixed-point rescale: as close to it as the same
        # float model is to itself in float64 (requantizing every linear input carries any rounding difference on)
        assert r.int_vs_float > 0.99 and abs(r.int_cos - r.float_cos) < 0.005, r
        assert r.float64_cos > 0.99
    assert rows["int8"].int_cos > 0.99 and rows["bitnet-b1.58"].int_cos < 0.6     # W8A8 stays close, 1.58 bits not


def test_integer_bibert_attention_equals_the_float_model_on_real_tokens():
    from models.apply import quantize_model
    from models.checkpoint import load_minilm
    from models.fidelity import IntegerBiAttention
    model = quantize_model(load_minilm(), "bibert:zero_policy=pos")
    ids, mask = tokenize(["A short one.", "A much longer sentence than the first one, with many more words."])
    x = model.embed(ids)
    additive = (1.0 - mask[:, None, None, :].float()) * -10000.0
    attn = model.layers[0].attn
    with torch.no_grad():
        want = attn(x, additive)
        got = IntegerBiAttention(attn)(x, additive)
    real = mask.bool()
    # float32 reference vs the exact integer path: its rescale bound (2^-16 + 2^-21·Σ|dot|) plus float32 slack
    assert (got[real] - want[real]).abs().max() < 1e-3
    assert (got[~real] == 0).all()


def test_integer_section_is_the_pages_last_and_is_replaced_in_place():
    from models.fidelity import INTEGER_HEADING, integer_section, integer_section_of, with_integer_section
    page = "# Title\n\nbody\n"
    sec = integer_section("| t |", "lowbit fidelity --integer")
    once = with_integer_section(page, sec)
    assert once.startswith(page.rstrip("\n")) and once.endswith(sec) and once.count(INTEGER_HEADING) == 1
    assert with_integer_section(once, integer_section("| u |", "cmd")).count(INTEGER_HEADING) == 1
    assert integer_section_of(once) == sec and integer_section_of(page) is None
    assert with_integer_section(once, None) == page
    with pytest.raises(ValueError, match="no integer path for \\['gptq'\\]"):
        from models.fidelity import integer_fidelity_table
        integer_fidelity_table(["gptq"])


def test_cli_integer_flag_rewrites_only_the_integer_section(tmp_path, capsys):
    from lowbit.cli import main
    from models.fidelity import INTEGER_HEADING
    page = tmp_path / "fidelity.md"
    page.write_text("# Kept\n\n| method | mean cos |\n| sign | 0.2671 |\n")
    assert main(["fidelity", "--integer", "--methods", "int8", "-o", str(page)]) == 0
    text = page.read_text()
    assert text.startswith("# Kept\n\n| method | mean cos |\n| sign | 0.2671 |\n\n" + INTEGER_HEADING)
    assert "`lowbit fidelity --integer --methods int8 -o " in text and "| int8 | 8 |" in text
    assert main(["fidelity", "--integer", "--methods", "int8", "-o", str(page)]) == 0
    assert page.read_text().count(INTEGER_HEADING) == 1
    assert main(["fidelity", "--integer", "--methods", "gptq"]) == 2
    assert "no integer path for ['gptq']" in capsys.readouterr().err
