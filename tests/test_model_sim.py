"""Whole models on described accelerators: stepped = fast, the required runs, energy that adds up from its
counters, BitNet's Table 1 through the workload, and refusals before any run."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from hw.accelerator import Accelerator, load_design
from lowbit.cli import main
from models.config import load_config
from models.workload import extract_workload
from sim.energy import arith_only, price_events
from sim.model import simulate_model
from sim.tech import bitnet_table1, get_technology

TINY_BERT = {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 64, "vocab_size": 50, "max_position_embeddings": 64, "type_vocab_size": 2}
TINY_LLAMA = {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "intermediate_size": 48, "vocab_size": 60, "max_position_embeddings": 64}


def _design(engines, *, bandwidth=0.4, banks=1, act_banks=1, kv_kib=64, w_kib=16, double_buffer=True,
            weights="stream") -> dict:
    """A design file's tables: the structure and, in its mapping table, the runs' default policy."""
    return {
        "name": "small", "clock_mhz": 100, "engines": engines,
        "buffers": {"weights": {"size_kib": w_kib, "banks": banks, "word_bits": 32},
                    "activations": {"size_kib": 16, "banks": act_banks, "word_bits": 32},
                    "kv": {"size_kib": kv_kib, "banks": 2, "word_bits": 32}},
        "dram": {"bandwidth_gbps": bandwidth, "latency_cycles": 3},
        "vector": {"lanes": 4},
        "mapping": {"double_buffer": double_buffer, "weights": weights},
    }


FP = {"unit": "fp-mac", "lanes": 4, "rows": 4}
ENGINES = {
    "bitnet-b1.58": [{"unit": "ternary-mac", "lanes": 8, "rows": 4, "max_k": 128}, FP],
    "ternarybert": [{"unit": "ternary-mac", "lanes": 8, "rows": 2, "max_k": 128, "count": 2},
                    {"unit": "int8-mac", "lanes": 4, "rows": 4, "max_k": 64}],
    "bibert:zero_policy=pos": [{"unit": "xnor-popcount", "lanes": 16, "rows": 4, "max_k": 128},
                               {"unit": "bamm", "lanes": 8, "rows": 8, "max_k": 64}],
    "qbb:n_bases=2": [{"unit": "binary-basis", "lanes": 8, "rows": 2, "max_k": 128, "n_bases": 2}, FP],
    "billm": [{"unit": "binary-basis", "lanes": 8, "rows": 2, "max_k": 128, "mode": "billm"}, FP],
    "int8": [{"unit": "int8-mac", "lanes": 8, "rows": 4, "max_k": 128}, FP],
}


@pytest.mark.parametrize("scheme", list(ENGINES))
@pytest.mark.parametrize("variant", [dict(), dict(bandwidth=0.05, double_buffer=False), dict(banks=1, bandwidth=5)])
def test_stepped_equals_fast_on_whole_models(scheme, variant):
    cfg = load_config(TINY_LLAMA if scheme in ("qbb:n_bases=2", "billm", "int8") else TINY_BERT)
    if scheme == "billm":
        cfg = cfg.replace(hidden_size=128, intermediate_size=256, num_heads=4, num_kv_heads=2, head_dim=32)
    design = _design(ENGINES[scheme], **variant)
    fast = simulate_model(cfg, scheme, design, seq_len=9, decode_steps=2 if cfg.is_decoder else 0)
    stepped = simulate_model(cfg, scheme, design, seq_len=9, decode_steps=2 if cfg.is_decoder else 0, stepped=True)
    assert [t.cycles for t in stepped.ops] == [t.cycles for t in fast.ops]
    assert stepped.cycles == fast.cycles
    assert any(t.stall_cycles > 0 for t in fast.ops if t.op.kind == "matmul") or variant == {}


def test_stalls_come_from_memory_and_ports():
    cfg = load_config(TINY_BERT)
    fast_dram = simulate_model(cfg, "bitnet-b1.58", _design(ENGINES["bitnet-b1.58"], bandwidth=50), seq_len=9)
    slow_dram = simulate_model(cfg, "bitnet-b1.58", _design(ENGINES["bitnet-b1.58"], bandwidth=0.05), seq_len=9)
    single = simulate_model(cfg, "bitnet-b1.58", _design(ENGINES["bitnet-b1.58"], bandwidth=0.05,
                                                         double_buffer=False), seq_len=9)
    assert fast_dram.cycles < slow_dram.cycles < single.cycles
    # 8 lanes × 4 rows × 2 bits = 64 weight bits a beat: one 32-bit bank halves the issue rate, two do not
    # (activations get two banks in both so the 8 × 8-bit activation beat is never the limiter)
    one_bank = simulate_model(cfg, "bitnet-b1.58", _design(ENGINES["bitnet-b1.58"], bandwidth=50, banks=1,
                                                           act_banks=2), seq_len=9)
    two_banks = simulate_model(cfg, "bitnet-b1.58", _design(ENGINES["bitnet-b1.58"], bandwidth=50, banks=2,
                                                            act_banks=2), seq_len=9)
    q = [t for t in one_bank.ops if t.op.name == "layer.attn.q"][0]
    assert "ii=2" in q.notes and "ii=1" in [t for t in two_banks.ops if t.op.name == "layer.attn.q"][0].notes
    assert two_banks.cycles < one_bank.cycles
    resident = simulate_model(cfg, "bitnet-b1.58", _design(ENGINES["bitnet-b1.58"], bandwidth=0.05,
                                                           weights="resident-if-fits"), seq_len=9)
    assert resident.weights_resident and resident.ops[0].op.name == "load_weights"


def test_resident_weights_hold_every_weight_matmul_in_its_engine_format():
    # Tiny LLaMA under int8: the linears on the int8 engine (8-bit weights, 4 rows), the LM head on the FP16
    # engine (4 rows): n·k bytes and 2·n·k bytes (every n here is a multiple of 4).
    ops = extract_workload(load_config(TINY_LLAMA), "int8", seq_len=9).ops
    weight_ops = [o for o in ops if o.kind == "matmul" and o.weight and o.phase == "prefill"]
    want = sum(o.n * o.k * (2 if o.unit == "fp-mac" else 1) * o.layers for o in weight_ops)
    assert any(o.unit == "fp-mac" for o in weight_ops)
    assert want == 2 * (32 * 32 * 2 + 16 * 32 * 2 + 48 * 32 * 2 + 32 * 48) + 60 * 32 * 2 == 19200
    small = simulate_model(TINY_LLAMA, "int8", _design(ENGINES["int8"], weights="resident-if-fits"), seq_len=9)
    assert small.weight_bytes == want and not small.weights_resident          # 19,200 bytes > 16 KiB
    big = simulate_model(TINY_LLAMA, "int8", _design(ENGINES["int8"], w_kib=32, weights="resident-if-fits"),
                         seq_len=9)
    assert big.weights_resident and big.ops[0].op.name == "load_weights"
    # 0.4 GB/s at 100 MHz: 4 bytes a cycle (the 8-byte buffer line is wider), + 3 of latency + 1 to set up; then the
    # compute queue's SYNC that takes the token: 1 cycle
    assert big.ops[0].cycles == 1 + math.ceil(want / 4) + 3 + 1
    assert all(t.dram_bytes == 0 for t in big.ops if t.op.kind == "matmul" and t.op.weight)


def test_energy_adds_up_from_its_counters():
    run = simulate_model("bert-base", "bitnet-b1.58", "ternary", seq_len=128)
    tech = get_technology("45nm")
    e = price_events(run.events(), tech, run.design)
    d = e.to_dict()
    assert math.isclose(d["total"], sum(c["count"] * c["pj_each"] * 1e-12 for c in d["counters"]), rel_tol=1e-12)
    assert math.isclose(d["total"], d["arith"]["total"] + d["registers"] + d["sram"] + d["dram"] + d["vector"],
                        rel_tol=1e-12)
    assert math.isclose(d["arith"]["total"], d["arith"]["mul"] + d["arith"]["add"] + d["arith"]["logic"],
                        rel_tol=1e-12)
    assert all(c["source"] for c in d["counters"])
    # the counters are the workload's: every MAC of the ternary engine ran through XOR/AND lane logic
    ternary_macs = run.macs_by_kind()["ternary-mac"]
    xor = [c for c in d["counters"] if c["event"] == "gate/xor"][0]["count"]
    assert xor >= ternary_macs * 8
    seven = price_events(run.events(), get_technology("7nm"), run.design).total()
    assert seven < e.total()


@pytest.mark.parametrize("node", ["45nm", "7nm"])
def test_arith_only_reproduces_bitnet_table1_from_the_workload(node):
    tech = get_technology(node)
    rule = {(r["size"], r["weight_format"]): r for r in bitnet_table1(tech)}
    for size in ("6.7B", "13B", "30B"):
        model = f"bitnet-paper-{size.lower()}"
        for fmt, scheme in (("fp32", "fp32"), ("fp16", "fp16"), ("bitnet", "bitnet-v1")):
            ops = [o for o in extract_workload(model, scheme, seq_len=512, pooler=False).ops if o.name != "lm_head"]
            e = arith_only(ops, tech)
            r = rule[(size, fmt)]
            assert e.total("arith.mul") == pytest.approx(r["mul_j"], rel=2e-3), (size, fmt)
            assert e.total("arith.add") == pytest.approx(r["add_j"], rel=2e-3), (size, fmt)


def _run_cli(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("scheme,design", [("bibert:zero_policy=pos", "xnor"), ("ternarybert", "ternary"),
                                           ("bitnet-b1.58", "ternary")])
def test_bert_base_runs(capsys, scheme, design):
    code, out, err = _run_cli(["simulate", "model", "--model", "bert-base", "--scheme", scheme, "--design", design,
                               "--seq", 128, "--json"], capsys)
    assert code == 0, err
    r = json.loads(out)
    for key in ("cycles", "latency_s", "energy_j", "ops_by_kind", "area", "model_size_bytes", "utilisation"):
        assert key in r
    for key in ("total", "arith", "sram", "dram", "vector"):
        assert key in r["energy_j"]
    assert {"mul", "add"} <= set(r["energy_j"]["arith"])
    assert r["latency_s"] == pytest.approx(r["cycles"] / 200e6)
    assert 0 < r["utilisation"] <= 1


@pytest.mark.parametrize("scheme,design,steps", [
    ("bitnet-b1.58", "ternary", 128), ("qbb", "binary-basis", 128),
    ("billm", "billm", 128)])                # BiLLM: a MATMUL per 128-column block, 13× the instructions (~20 s)
def test_llama_7b_prefill_and_decode_steps(capsys, scheme, design, steps):
    code, out, err = _run_cli(["simulate", "model", "--model", "llama-7b", "--scheme", scheme, "--design", design,
                               "--seq", 512, "--decode-steps", steps, "--tech", "7nm", "--json"], capsys)
    assert code == 0, err
    r = json.loads(out)
    assert r["decode_cycles"] > 0 and r["prefill_cycles"] > 0
    if steps == 128:                        # 128 decode steps each stream every weight: DRAM dominates
        assert r["energy_j"]["dram"] > 0.5 * r["energy_j"]["total"]
    # a decode step is memory-bound: it streams every weight but the embedding table (a gather reads one row), so
    # it takes at least those bytes at the DRAM bandwidth (25.6 GB/s at 200 MHz: 128 bytes a cycle)
    embedding = 32000 * 4096 * 2                                          # LLaMA-7B's FP16 token embeddings
    assert r["decode_cycles"] / steps >= (r["model_size_bytes"] - embedding) / 128


def test_opt_config_json_and_per_layer(capsys, tmp_path):
    from models.config import builtin_config_path
    cfg = tmp_path / "config.json"
    cfg.write_text(builtin_config_path("opt-125m").read_text())
    code, out, err = _run_cli(["simulate", "model", "--model", cfg, "--scheme", "int8", "--design", "int8",
                               "--seq", 64, "--decode-steps", 4, "--per-layer", "--json"], capsys)
    assert code == 0, err
    r = json.loads(out)
    assert sum(row["cycles"] for row in r["per_layer"]) == r["cycles"]
    assert sum(row["energy_j"] for row in r["per_layer"]) == pytest.approx(r["energy_j"]["total"], rel=1e-9)


@pytest.mark.parametrize("argv,message", [
    (["--scheme", "bibert:zero_policy=pos", "--design", "ternary"], "design 'ternary' has no xnor-popcount engine"),
    (["--scheme", "bitnet-b1.58", "--design", "ternary", "--tech", "5nm"], "5nm"),
    (["--scheme", "billm", "--design", "binary-basis"], "needs a binary-basis engine in billm mode"),
    # one QBB basis is also a 1-bit weight, but not BiLLM's grouped layout
    (["--scheme", "qbb:n_bases=1", "--design", "billm"], "needs a binary-basis engine in bases mode"),
    (["--scheme", "bitnet-b1.58", "--design", "nowhere"], "unknown design 'nowhere'"),
])
def test_refusals_before_any_run(capsys, argv, message):
    code, _, err = _run_cli(["simulate", "model", "--model", "llama-7b", "--seq", 16, *argv], capsys)
    assert code == 2 and message in err, err


def test_systolic_array_too_narrow_for_the_op_is_refused():
    d = load_design("systolic-ws-32").to_dict()
    d["engines"][0]["acc_width"] = 16          # 768-long int8 dot products need 8 + 8 + 10 − 1 = 25 bits
    with pytest.raises(ValueError, match=r"layer.attn.q: 25-bit accumulators exceed the systolic array's 16 bits"):
        simulate_model("bert-base", "int8", Accelerator.from_dict(d), seq_len=16)


def test_one_basis_qbb_runs_on_the_bases_engine():
    run = simulate_model("bert-base", "qbb:n_bases=1", "binary-basis", seq_len=16)
    q = [t for t in run.ops if t.op.name == "layer.attn.q"][0]
    assert q.op.weight_layout == "bases" and q.macs == 12 * 16 * 768 * 768    # one MAC a weight, 12 layers


def test_a_buffer_too_small_for_one_tile_is_refused():
    design = _design(ENGINES["bitnet-b1.58"])
    with pytest.raises(ValueError, match=r"the weights buffer \(16,384 bytes\) cannot hold 2 tile\(s\)"):
        simulate_model("bert-base", "bitnet-b1.58", Accelerator.from_dict({
            **design, "engines": [{"unit": "ternary-mac", "lanes": 8, "rows": 64, "max_k": 4096},
                                            {"unit": "fp-mac", "lanes": 4, "rows": 4}]}), seq_len=8)


@pytest.mark.parametrize("scheme", ["bitnet-b1.58", "ternarybert"])
def test_minilm_real_weights_on_the_engines_the_model_simulator_times(capsys, scheme):
    """all-MiniLM-L6-v2's real layer-0 query weights and the real hidden states of a real sentence: the engine run
    is exact against the scheme's integer view, and the whole-model simulator times that op with the same cycles."""
    import torch

    from models.checkpoint import load_minilm, minilm_dir
    from models.fidelity import tokenize
    from models.schemes import get_scheme
    from sim.engine import simulate
    from sim.linear import prepare_linear
    from sim.model import time_op

    model = load_minilm()
    ids, mask = tokenize(["Low-bit transformers run on adders and popcounts."])
    seen = {}
    hook = model.layers[0].attn.q.register_forward_hook(lambda mod, args, out: seen.setdefault("x", args[0]))
    with torch.no_grad():
        model(ids, mask)
    hook.remove()
    x = seen["x"][0].float()                                     # [tokens, 384]
    w = model.layers[0].attn.q.weight.detach().float()           # [384, 384]
    design = load_design("ternary")
    engine = design.engine_for("ternary-mac").params
    # the design's own engine (max_k 16,384) runs the layer's one integer pass
    view, _, [job] = prepare_linear(scheme, w.numpy(), x.numpy(), lanes=engine.lanes, rows=engine.rows)
    run = simulate(engine, job.weights, job.acts)
    acc = job.accumulators(run.results)
    [p] = view.passes
    np.testing.assert_array_equal(acc[p.name], p.accumulate())
    np.testing.assert_array_equal(view.output(acc), get_scheme(scheme).view(w, x).output())
    # the same op in the whole model's workload (tokens = this sentence), weights and activations on chip
    cfg = load_config(minilm_dir() / "config.json")
    [op] = [o for o in extract_workload(cfg, get_scheme(scheme), seq_len=x.shape[0]).ops if o.name == "layer.attn.q"]
    assert (op.m, op.k, op.n) == (x.shape[0], 384, 384)
    # + 3: the accelerator's feeder (a set-up cycle, the operand read, the assembly register; docs/isa.md §4.2) in
    # front of the engine's own stream
    assert time_op(op, design, weights_on_chip=True, kv_on_chip=True).cycles == run.cycles + 3
    # and the real checkpoint's config.json runs whole
    code, out, err = _run_cli(["simulate", "model", "--model", minilm_dir() / "config.json", "--scheme", scheme,
                               "--design", "ternary", "--seq", x.shape[0], "--json"], capsys)
    assert code == 0, err
    # 6 layers × (Q, K, V, O of 384 × 384 and two 384 ↔ 1,536 FFN linears); TernaryBERT also ternarizes the
    # pooler (one token), BitNet leaves it in floating point
    pooler = 384 * 384 if scheme == "ternarybert" else 0
    assert json.loads(out)["ops_by_kind"]["ternary-mac"] == 6 * 4 * x.shape[0] * 384 * 384 \
        + 6 * 2 * x.shape[0] * 384 * 1536 + pooler


@pytest.mark.parametrize("design,cycles", [
    # OS 32×32: ceil(128/32)·ceil(768/32) = 96 folds of R + C + T − 2 = 32 + 32 + 768 − 2 = 830 cycles
    ("systolic-os-32", 96 * 830),
    # WS 128×128: Sr = K = 768, Sc = N = 768 → 36 folds of 2R + C + T − 2 = 256 + 128 + 128 − 2 = 510
    ("systolic-ws-128", 36 * 510),
    # the int8 stream engine (32 lanes × 16 rows): 48 row blocks × 128 tokens × 24 K-chunks beats + its latency
    ("int8", None),
])
def test_simulate_gemm(capsys, design, cycles):
    code, out, err = _run_cli(["simulate", "gemm", "--m", 128, "--k", 768, "--n", 768, "--design", design, "--json"],
                              capsys)
    assert code == 0, err
    r = json.loads(out)
    if cycles is None:
        engine = load_design(design).engine_for("int8-mac").params
        # + the feeder's set-up, read and assembly cycles, and a second write cycle for the last result: 16 rows
        # of I32 records are 64 bytes, the activations buffer's line 4 banks × 64 bits = 32 (docs/isa.md §4.2)
        cycles = 48 * 128 * 24 + engine.latency + 3 + 1
    else:
        assert r["scalesim_cycles"] == cycles - 1          # SCALE-Sim prints the last cycle's index
    assert r["cycles"] == cycles
    assert r["utilisation"] == pytest.approx(128 * 768 * 768 / (cycles * (1024 if "32" in design else
                                                                           16384 if "128" in design else 512)))


def test_systolic_designs_run_whole_models():
    run = simulate_model("bert-base", "int8", "systolic-ws-32", seq_len=128)
    q = [t for t in run.ops if t.op.name == "layer.attn.q"][0]
    assert q.engine == "systolic" and "ws" in q.notes
    # Q projection [128 × 768]·[768 × 768] on WS 32×32: 24·24 folds of 2·32 + 32 + 128 − 2 = 222 cycles, or the
    # 768·768 weight bytes at 25.6 GB/s and 200 MHz (128 bytes a cycle) if that is longer; in each of 12 layers
    design = load_design("systolic-ws-32")
    dram = math.ceil(768 * 768 / design.dram_bytes_per_cycle) + design.dram.latency_cycles
    assert q.cycles == 12 * max(24 * 24 * 222, dram)


def test_report_model_writes_consistent_files(tmp_path, capsys):
    out = tmp_path / "rep"
    base = ["--model", "minilm-l6", "--scheme", "ternarybert", "--design", "ternary", "--seq", 16]
    code, stdout, err = _run_cli(["report", "model", *base, "--stem", "mini", "-o", out], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["mini.csv", "mini.json", "mini.md"]
    summary = json.loads((out / "mini.json").read_text())
    table = pd.read_csv(out / "mini.csv")
    # The per-operation rows are the whole run: cycles add up exactly, energies to float rounding.
    assert int(table["cycles"].sum()) == summary["cycles"]
    assert table["energy_j"].sum() == pytest.approx(summary["energy_j"]["total"], rel=1e-9)
    assert len(table) == len(summary["per_layer"]) and set(table["phase"]) == {"prefill"}
    # The report and `simulate model --json` are the same run.
    code, stdout, err = _run_cli(["simulate", "model", *base, "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["cycles"] == summary["cycles"]
    assert f"{summary['cycles']:,}" in (out / "mini.md").read_text()


@pytest.mark.parametrize("argv,message", [(["--design", "tpu-v9"], "tpu-v9"),
                                          (["--stem", "../escape"], "--stem must be a plain file name"),
                                          (["--stem", ""], "--stem must be a plain file name")])
def test_report_model_refuses_bad_input_before_writing(tmp_path, capsys, argv, message):
    code, _, err = _run_cli(["report", "model", *argv, "-o", tmp_path / "rep"], capsys)
    assert code == 2 and message in err, err
    assert not (tmp_path / "rep").exists() and not (tmp_path / "escape.md").exists()


def test_fp_mac_engine_area_by_hand():
    # 32 × 32 FP32 MAC array: every lane one multiplier and one adder (31 tree adders + the accumulator a row),
    # one 32-bit result register a row — priced from the 45 nm area table.
    from sim.energy import area
    tech = get_technology("45nm")
    a = area(load_design("fp32"), tech)["asic_um2"]
    want = 32 * 32 * (tech.fp_mul_area(32) + tech.fp_add_area(32)) + 32 * 32 * tech.register_bit_area()
    assert a["engines"]["fp-mac"] == pytest.approx(want)
    assert a["total"] == pytest.approx(sum(a["engines"].values()) + sum(a["sram"].values()) + a["vector"])


def test_stepped_mode_draws_operands_in_the_engines_ranges():
    # A 4-bit-activation ternary engine and a 4-bit-weight int8-MAC engine: the stepped kernel must run (its
    # operand checks refuse anything outside the engine's widths) and agree with the fast mode.
    from models.workload import Op
    from sim.model import time_op
    design = Accelerator.from_dict(_design([{"unit": "ternary-mac", "lanes": 8, "rows": 4, "max_k": 128, "act_bits": 4},
                                            {"unit": "int8-mac", "lanes": 8, "rows": 4, "max_k": 128, "act_bits": 4,
                                             "weight_bits": 4}]))
    for unit in ("ternary-mac", "int8-mac"):
        op = Op("probe", "matmul", "linear", unit, "prefill", m=5, k=40, n=12, a_bits=4, b_bits=2 if unit ==
                "ternary-mac" else 4, weight=True)
        fast = time_op(op, design, weights_on_chip=False, kv_on_chip=True)
        stepped = time_op(op, design, weights_on_chip=False, kv_on_chip=True, stepped=True)
        assert stepped.cycles == fast.cycles


def test_tokens_outer_steps_like_the_fast_mode():
    # tokens-outer streams every tile again for each token: one MATMUL per (token, tile), so the stepped mode runs
    # each through the engine's kernel like any other, and its cycles are the fast mode's
    cfg = load_config(TINY_BERT)
    design = {**_design(ENGINES["bitnet-b1.58"]), "mapping": {"loop_order": "tokens-outer"}}
    fast = simulate_model(cfg, "bitnet-b1.58", design, seq_len=9)
    weights_outer = simulate_model(cfg, "bitnet-b1.58", _design(ENGINES["bitnet-b1.58"]), seq_len=9)
    assert fast.cycles > weights_outer.cycles            # every token reloads every tile
    q = [t for t in fast.ops if t.op.name == "layer.attn.q"][0]
    assert f"{9 * math.ceil(q.op.n / 4) * q.op.layers} MATMUL(s)" in q.notes      # 4-row tiles, each token
    assert simulate_model(cfg, "bitnet-b1.58", design, seq_len=9, stepped=True).cycles == fast.cycles


def _token_block_design(act_bytes, bandwidth=0.8):
    return Accelerator.from_dict({
        "name": "blocks", "clock_mhz": 100,
        "engines": [{"unit": "ternary-mac", "lanes": 8, "rows": 4, "max_k": 64}],
        "buffers": {"weights": {"size_kib": 1, "word_bits": 64}, "activations": {"size_bytes": act_bytes,
                                                                                  "word_bits": 64},
                    "kv": {"size_kib": 1, "word_bits": 64}},
        "dram": {"bandwidth_gbps": bandwidth, "latency_cycles": 2}, "vector": {"lanes": 4},
    })


def test_activations_that_do_not_fit_stream_in_token_blocks():
    from models.workload import Op
    from sim.model import time_op
    from sim.schedule import feeder_schedule
    op = Op("probe", "matmul", "linear", "ternary-mac", "prefill", m=10, k=64, n=8, a_bits=8, b_bits=2,
            weight=True)
    # 10 tokens × 64 bytes and their results (two slots of 4 rows × 4 bytes a token) do not fit 512 bytes. A token
    # costs 2 ring slots × 64 bytes + 2 result slots × 16 bytes = 160 bytes: 512 // 160 = 3 tokens a block →
    # blocks of 3, 3, 3, 1 tokens, each meeting both 4-row weight tiles (64 bytes each: 4 × 64 × 2 bits), its
    # activations loaded with its first tile.
    design = _token_block_design(512)
    run = time_op(op, design, weights_on_chip=False, kv_on_chip=True)
    blocks = [3, 3, 3, 1]
    assert run.dram_bytes == 10 * 64 + len(blocks) * 2 * 64
    beats = [t * 8 for t in blocks for _ in range(2)]                # tokens × 8 K-chunks a tile
    # 8 bytes a cycle (DRAM and the 8-byte buffer lines) + 2 cycles of latency + 1 to set up per transfer: a block's
    # first tile is two LOADs (weights, activations)
    loads = [1 + math.ceil(64 / 8) + 2 + (1 + math.ceil(t * 64 / 8) + 2 if r == 0 else 0)
             for t in blocks for r in range(2)]
    # the accelerator's feeder (docs/isa.md §4.2): a set-up cycle, the operand read and the assembly register before
    # the engine's latency, and a tile's slot is free once its last beat is read (ii + 1 after that beat's set-up);
    # a result, 4 rows × 4 bytes, takes two writes of the 8-byte activations line: one cycle more for the last
    latency = design.engines[0].params.latency
    assert run.cycles == feeder_schedule(beats, loads, slots=2, ii=1, latency=latency + 3 + 1, release=2).cycles
    on_chip = time_op(op, _token_block_design(1024), weights_on_chip=False, kv_on_chip=True)
    assert on_chip.dram_bytes == 2 * 64                         # both tiles once; activations already there
    # the activation bits loaded are written into the activation buffer
    extra = run.events[("sram_write", "activations")] - on_chip.events[("sram_write", "activations")]
    assert extra == 10 * 64 * 8
    with pytest.raises(ValueError, match=r"probe: the activations buffer \(64 bytes\) cannot hold 2 block\(s\) "
                                         r"of one token's activations \(64 bytes\)"):
        time_op(op, _token_block_design(64), weights_on_chip=False, kv_on_chip=True)


# -- default designs and arith-only without buffer room (issue 9, item 4) -----------------------------------------

@pytest.mark.parametrize("scheme", ["fp32", "fp16", "int8", "bibert", "ternarybert", "bitnet-v1", "bitnet-b1.58",
                                    "billm", "qbb"])
def test_every_scheme_runs_on_its_default_design(capsys, scheme):
    from hw.accelerator import BUILTIN_DESIGNS
    from models.schemes import SCHEMES
    want = {"fp32": "fp32", "fp16": "fp16", "int8": "int8", "bibert": "xnor", "ternarybert": "ternary",
            "bitnet-v1": "ternary", "bitnet-b1.58": "ternary", "billm": "billm", "qbb": "binary-basis"}[scheme]
    assert set(SCHEMES) == {"fp32", "fp16", "int8", "bibert", "ternarybert", "bitnet-v1", "bitnet-b1.58", "billm",
                            "qbb"}, "a new scheme needs a default design and a row here"
    assert SCHEMES[scheme].default_design == want and want in BUILTIN_DESIGNS
    code, out, err = _run_cli(["simulate", "model", "--model", "bert-base", "--scheme", scheme, "--seq", 16, "--json"],
                              capsys)
    assert code == 0, err
    r = json.loads(out)
    assert (r["design"], r["design_source"], r["timed"]) == (want, f"default for scheme {scheme}", True)
    assert r["ops_by_kind"][SCHEMES[scheme].linear_unit.value] > 0          # the linears ran on the scheme's engine
    code, out, err = _run_cli(["simulate", "model", "--model", "bert-base", "--scheme", scheme, "--seq", 16], capsys)
    assert code == 0 and out.startswith(f"design: {want} (default for scheme {scheme})\n"), err


def test_a_given_design_is_marked_given_and_a_failing_default_is_named(capsys):
    code, out, err = _run_cli(["simulate", "model", "--model", "bert-base", "--scheme", "int8", "--design", "int8",
                               "--seq", 16, "--json"], capsys)
    assert code == 0 and json.loads(out)["design_source"] == "given"
    code, out, err = _run_cli(["simulate", "model", "--model", "llama-7b", "--scheme", "bibert", "--seq", 16], capsys)
    assert code == 2 and "(design 'xnor' is the default for scheme bibert; choose another with --design)" in err


def test_report_model_names_its_default_design(tmp_path, capsys):
    code, out, err = _run_cli(["report", "model", "--model", "minilm-l6", "--scheme", "qbb", "--seq", 16, "-o",
                               tmp_path], capsys)
    assert code == 0, err
    assert out.startswith("design: binary-basis (default for scheme qbb)\n")
    summary = json.loads((tmp_path / "model.json").read_text())
    assert (summary["design"], summary["design_source"]) == ("binary-basis", "default for scheme qbb")
    assert "'binary-basis'" in (tmp_path / "model.md").read_text().splitlines()[0]


SMALL_FP32 = """name = "small-fp32"
clock_mhz = 100
[[engines]]
unit = "fp-mac"
lanes = 4
rows = 4
fp_bits = 32
[buffers.weights]
size_kib = 1
word_bits = 32
[buffers.activations]
size_kib = 16
word_bits = 32
[buffers.kv]
size_kib = 64
word_bits = 32
[dram]
bandwidth_gbps = 0.4
[vector]
lanes = 4
fp_bits = 32
"""


def test_arith_only_counts_operations_on_buffers_too_small_to_time(tmp_path, capsys):
    cfg, design = tmp_path / "tiny.json", tmp_path / "small.toml"
    cfg.write_text(json.dumps(TINY_BERT))
    design.write_text(SMALL_FP32)
    argv = ["simulate", "model", "--model", cfg, "--scheme", "fp32", "--design", design, "--seq", 8]
    # full mode times the ops: FFN down's 4-row tiles of K=64 FP32 weights (1,024 bytes, two for double
    # buffering) do not fit the 1 KiB weight buffer
    code, _, err = _run_cli(argv, capsys)
    assert code == 2 and "layer.ffn.down: the weights buffer (1,024 bytes) cannot hold 2 tile(s) of 1,024 bytes" in err
    code, out, err = _run_cli([*argv, "--energy", "arith-only", "--per-layer", "--json"], capsys)
    assert code == 0, err
    r = json.loads(out)
    assert r["timed"] is False and r["cycles"] is None and "layer.ffn.down" in r["untimed_reason"]
    # by hand, 2 layers of seq 8, hidden 32, 2 heads of 16, FFN 64, plus the pooler on one token:
    # Q, K, V, O 4·8·32·32 + QKᵀ and A·V 2·2·8·8·16 + FFN 2·8·32·64 = 69,632 a layer; pooler 32·32
    macs = 2 * (4 * 8 * 32 * 32 + 2 * 2 * 8 * 8 * 16 + 2 * 8 * 32 * 64) + 32 * 32
    assert macs == 140_288 and r["ops_by_kind"] == {"fp-mac": macs}
    # each an FP32 multiply (3.7 pJ) and add (0.9 pJ) at 45 nm (Horowitz, ISSCC 2014)
    assert r["energy_j"]["arith"]["mul"] == pytest.approx(macs * 3.7e-12, rel=1e-12)
    assert r["energy_j"]["total"] == pytest.approx(6.453248e-07, rel=1e-12)
    assert sum(row["energy_j"] for row in r["per_layer"]) == pytest.approx(r["energy_j"]["total"], rel=1e-12)
    assert all(row["cycles"] is None for row in r["per_layer"])
    code, out, err = _run_cli([*argv, "--energy", "arith-only"], capsys)
    assert code == 0 and "not timed (layer.ffn.down: the weights buffer" in out and "6.453e-07 J" in out


def test_arith_only_on_the_default_design_of_a_model_too_big_for_it(capsys):
    # FP32 LLaMA-7B's FFN tiles (32 rows × K=11008 × 32 bits) do not fit the fp32 design's 2 MiB weight buffer
    argv = ["simulate", "model", "--model", "llama-7b", "--scheme", "fp32", "--seq", 16]
    code, _, err = _run_cli(argv, capsys)
    assert code == 2 and "cannot hold 2 tile(s)" in err and "default for scheme fp32" in err
    code, out, err = _run_cli([*argv, "--energy", "arith-only", "--json"], capsys)
    assert code == 0, err
    r = json.loads(out)
    # 32 layers of Q, K, V, O (4·16·4096²), gate, up, down (3·16·4096·11008) and 32 heads of QKᵀ and A·V
    # (2·32·16·16·128), the LM head on the last token (4096·32000); an FP32 multiply and add each, 4.6 pJ
    macs = 32 * (4 * 16 * 4096 ** 2 + 3 * 16 * 4096 * 11008 + 2 * 32 * 16 * 16 * 128) + 4096 * 32000
    assert r["ops_by_kind"] == {"fp-mac": macs} and not r["timed"]
    assert r["energy_j"]["total"] == pytest.approx(macs * 4.6e-12, rel=1e-12) == pytest.approx(0.477545627648)


def test_untimed_mac_counts_are_the_timed_ones():
    # workload_macs_by_kind (untimed arith-only) and ModelRun.macs_by_kind (timed) count the same MACs,
    # QBB's bases included
    from sim.model import workload_macs_by_kind
    for scheme, design in (("qbb:n_bases=3", "binary-basis"), ("billm", "billm"), ("bibert", "xnor"),
                           ("int8", "systolic-ws-32")):
        wl = extract_workload("bert-base", scheme, seq_len=16)
        run = simulate_model("bert-base", scheme, design, seq_len=16, workload=wl)
        assert workload_macs_by_kind(wl.ops) == run.macs_by_kind(), scheme


# -- the mapping policy is a per-run argument (issue 10, item 1) ---------------------------------------------------

def test_mapping_policy_is_an_argument_of_the_run(capsys, tmp_path):
    from hw.accelerator import MappingPolicy

    cfg = load_config(TINY_BERT)
    tables = _design(ENGINES["bitnet-b1.58"], bandwidth=0.05)
    structure = Accelerator.from_dict(tables)
    by_table = simulate_model(cfg, "bitnet-b1.58", {**tables, "mapping": {"double_buffer": False}}, seq_len=9)
    by_argument = simulate_model(cfg, "bitnet-b1.58", structure, seq_len=9, policy=MappingPolicy(double_buffer=False))
    default = simulate_model(cfg, "bitnet-b1.58", structure, seq_len=9)
    assert by_table.cycles == by_argument.cycles > default.cycles          # slow DRAM: double buffering hides loads
    assert by_argument.policy == MappingPolicy(double_buffer=False) and default.policy == MappingPolicy()
    # the CLI: --mapping overrides the design file's table, is reported, and refuses unknown keys by name
    path = tmp_path / "small.json"
    path.write_text(json.dumps(tables))
    base = ["simulate", "model", "--model", "bert-base", "--scheme", "bitnet-b1.58", "--design", "ternary",
            "--seq", 16, "--json"]
    code, out, _ = _run_cli(base, capsys)
    weights_outer = json.loads(out)
    code2, out2, _ = _run_cli([*base, "--mapping", "loop_order=tokens-outer"], capsys)
    tokens_outer = json.loads(out2)
    assert code == code2 == 0 and weights_outer["mapping"]["loop_order"] == "weights-outer"
    assert tokens_outer["mapping"] == {**weights_outer["mapping"], "loop_order": "tokens-outer"}
    assert tokens_outer["cycles"] != weights_outer["cycles"]
    code, _, err = _run_cli([*base, "--mapping", "loop_order=tokens-outer,colour=red"], capsys)
    assert code == 2 and "unknown mapping key(s) ['colour']" in err
    code, _, err = _run_cli(["report", "model", "--design", str(path), "--mapping", "double_buffer=perhaps",
                             "-o", tmp_path], capsys)
    assert code == 2 and "mapping.double_buffer must be true or false, not 'perhaps'" in err


def test_vector_mix_adds_up_to_the_workloads_vector_flops():
    from models.workload import VECTOR_FLOPS
    from sim.model import VECTOR_MIX

    assert VECTOR_MIX.keys() == VECTOR_FLOPS.keys()
    assert {op: sum(mix) for op, mix in VECTOR_MIX.items()} == VECTOR_FLOPS


@pytest.mark.parametrize("scheme", ["bitnet-b1.58", "int8"])
def test_a_program_timed_in_chunks_equals_it_timed_whole(monkeypatch, scheme):
    # long programs are compiled and timed in chunks of about CHUNK instructions (one timing state across them):
    # cutting a tiny LLaMA's prefill and decode steps into chunks (a layer block is never split) changes nothing
    import sim.model
    cfg = load_config(TINY_LLAMA)
    design = _design(ENGINES[scheme], bandwidth=0.2)
    whole = simulate_model(cfg, scheme, design, seq_len=9, decode_steps=3)
    monkeypatch.setattr(sim.model, "CHUNK", 40)
    chunked = simulate_model(cfg, scheme, design, seq_len=9, decode_steps=3)
    assert chunked.queue_summary["chunks"] >= 4 and whole.queue_summary["chunks"] == 1
    assert chunked.cycles == whole.cycles
    assert [(t.total_cycles, t.events, t.dram_bytes, t.instructions) for t in chunked.ops] == \
        [(t.total_cycles, t.events, t.dram_bytes, t.instructions) for t in whole.ops]
    for key in ("busy_cycles", "load_under_compute", "store_under_compute", "by_opcode", "instructions"):
        assert chunked.queue_summary[key] == whole.queue_summary[key], key
    # the meter's chunk-by-chunk measure is the one-pass kernel's on the whole program
    assert whole.program_run.overlap() == {k: whole.queue_summary[k] for k in ("load_under_compute",
                                                                                "store_under_compute")}
    assert whole.queue_summary["load_under_compute"] > 0
