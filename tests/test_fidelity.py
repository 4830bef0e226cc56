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
