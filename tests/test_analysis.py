"""``lowbit analyze``: the published sizes and operation counts, reproduced from first principles."""

import json

import pytest

from lowbit.cli import main
from models.analysis import MIB, analyze, billm_average_bits


def test_bert_base_fp32_size():
    r = analyze("bert-base", "fp32")
    assert r["model_size_bytes"] == 109_482_240 * 4
    assert round(r["model_size_mib"], 1) == 417.6


def test_ternarybert_size_and_compression():
    r = analyze("bert-base", "ternarybert")
    # 2 bits × (84,934,656 linear + 589,824 pooler + 23,440,896 word embedding) weights, FP32 for the rest and for
    # 73 matrix scales + 30,522 embedding row scales (quantization.md §3)
    expected = (2 * (84_934_656 + 589_824 + 23_440_896) / 8
                + 4 * (393_216 + 1_536 + 38_400 + 83_712) + 4 * (73 + 30_522))
    assert r["model_size_bytes"] == expected
    assert round(r["model_size_mib"], 1) == 28.1 and round(r["compression_vs_fp32"], 1) == 14.9


def test_bibert_size_paper_and_full_conventions():
    paper = analyze("bert-base", "bibert", size_convention="paper")
    assert round(paper["model_size_bytes"] / MIB, 1) == 13.4
    assert round(paper["compression_vs_fp32"], 1) == 31.2
    full = analyze("bert-base", "bibert")
    assert round(full["model_size_mib"], 1) == 15.4 and "every parameter" in full["size_convention_text"]


def test_bibert_flops():
    fp = analyze("bert-base", "fp32", seq_len=128)
    bi = analyze("bert-base", "bibert", seq_len=128)
    assert round(fp["flops"] / 1e9, 1) == 22.5
    assert round(bi["flops"] / 1e9, 1) == 0.4
    # The published 56.3x is the ratio of the rounded figures, 22.5 / 0.4 = 56.25, rounded half up.
    assert round(fp["flops"] / 1e9, 1) / round(bi["flops"] / 1e9, 1) == pytest.approx(56.25)
    # the binary part alone: 2 FLOPs per MAC / 64 over all 11.17 G MACs (+ pooler)
    assert bi["flops_by_part"]["quantized_matmul"] == pytest.approx(2 * 11_174_215_680 / 64)
    assert set(bi["macs_by_kind"]) == {"xnor-popcount", "bamm"}
    macs = analyze("bert-base", "bibert", flops_convention="macs")
    assert macs["flops"] > 22e9


def test_billm_eq14():
    b = billm_average_bits(0.1, 128)
    assert b["param_bits"] == pytest.approx(1.1) and b["storing_bits"] == 1 + 1 / 128
    r = analyze("llama-7b", "billm:salient_ratio=0.1", seq_len=16)
    assert r["billm_average_bits"]["param_bits"] == pytest.approx(1.1)


def test_qbb_size_scales_with_bases():
    sizes = [analyze("llama-7b", f"qbb:n_bases={n}", seq_len=8)["size_bytes_by_category"]["quantized_weights"]
             for n in (1, 2, 4)]
    assert sizes[1] == 2 * sizes[0] and sizes[2] == 4 * sizes[0]


def test_cli_json(capsys):
    assert main(["analyze", "--model", "bert-base", "--scheme", "bibert", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    for key in ("model_size_bytes", "size_bytes_by_category", "flops", "macs_by_kind", "convention"):
        assert key in r
    assert "2*a*b/64" in r["convention"]


def test_cli_errors(capsys):
    assert main(["analyze", "--model", "gpt-5", "--scheme", "fp32"]) == 2
    assert "unknown model 'gpt-5'; built-in models:" in capsys.readouterr().err
    assert main(["analyze", "--model", "bert-base", "--scheme", "bnn"]) == 2
    assert "unknown scheme 'bnn'; known schemes:" in capsys.readouterr().err
