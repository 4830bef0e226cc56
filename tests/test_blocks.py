"""Integer paths compiled to programs and executed by the stepped machine on real data (sim.blocks): every stage's
tensor as the final memories hold it equals models.intpath's bit for bit, the reference interpreter ends in the
same memories, fast and stepped timing agree, and the program has no race its tokens leave open."""

import math

import numpy as np
import pytest
import torch

from hw.accelerator import Accelerator, load_design
from isa.validate import validate
from models import intpath as P
from sim.blocks import BlockCapacityError, compile_path, read_stages
from sim.interpret import interpret
from sim.machine import machine_shape, run
from sim.progen import races


def _rand(*shape, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale


def _xnor_pos() -> Accelerator:
    """The built-in xnor design with its BAMM's sign of a zero count at +1, as BiBERT's integer path needs (the
    XNOR engine holds no zero: zero_policy pos)."""
    d = load_design("xnor").to_dict()
    d["engines"][1]["zero_policy"] = "pos"
    return Accelerator.from_dict(d)


def run_block(path, design):
    """Compile, check, execute stepped on the data; compare every stage; returns (block, run)."""
    bp = compile_path(path, design)
    validate(bp.program, machine_shape(design))
    assert races(bp.program, design) == []
    pr = run(bp.program, design, bp.memories(), stepped=True)
    got = read_stages(bp, pr.memories)
    for s in path.stages:
        if s.name in got:
            np.testing.assert_array_equal(got[s.name], s.tensor, err_msg=f"stage {s.name}")
    np.testing.assert_array_equal(got[f"{path.output}@dram"], path.y_fixed)
    ref = interpret(bp.program, design, bp.memories())
    np.testing.assert_array_equal(ref.dram, pr.memories.dram)
    for b in ref.buffers:
        np.testing.assert_array_equal(ref.buffers[b], pr.memories.buffers[b])
    assert run(bp.program, design).cycles == pr.cycles                    # fast == stepped
    return bp, pr


# -- the issue's cases on random data ------------------------------------------------------------------------------

@pytest.mark.parametrize("strict", [True, False])
def test_bibert_attention_block(strict):
    x = _rand(10, 64, seed=5)
    ws = [_rand(64, 64, seed=10 + i, scale=0.05) for i in range(4)]
    bs = [_rand(64, seed=20 + i, scale=0.1) for i in range(4)]
    design = _xnor_pos()
    if not strict:
        d = design.to_dict()
        d["engines"][0]["threshold"] = "nonstrict"
        design = Accelerator.from_dict(d)
    path = P.bibert_attention_block(x, *ws, bq=bs[0], bk=bs[1], bv=bs[2], bo=bs[3], heads=4, strict=strict)
    bp, _ = run_block(path, design)
    ops = bp.program.counts()
    # per head: pack K, pack V, QKᵀ, compare, context, compare; Q, K, V, O linears; heads split and merged
    assert ops["MATMUL"] == 4 + 2 * 4 and ops["POST"] == 3 + 4 * 4 + 1


def test_bitnet_ffn_block():
    path = P.bitnet_ffn_block(_rand(12, 64, seed=40), _rand(160, 64, scale=0.05, seed=41),
                              _rand(160, 64, scale=0.05, seed=42), _rand(64, 160, scale=0.05, seed=43))
    bp, _ = run_block(path, load_design("ternary"))
    # y's row multiplier is h.absmax, written on chip: copied after y's coefficients by an on-chip STORE
    stores = [ins for ins in bp.program if ins.opcode == "STORE"]
    assert [s["onchip"] for s in stores] == [1, 0]


@pytest.mark.parametrize("scheme,design", [("ternarybert", "ternary"), ("bitnet-b1.58", "ternary"),
                                           ("qbb", "binary-basis"), ("billm", "billm"), ("bibert", None),
                                           ("int8", "ternary")])
def test_linears(scheme, design):
    x = _rand(12, 256, seed=1)
    path = P.LINEAR_PATHS[scheme](_rand(48, 256, seed=2, scale=0.05), x, bias=_rand(48, seed=3))
    bp, _ = run_block(path, _xnor_pos() if design is None else load_design(design))
    if scheme == "billm":                                      # one MATMUL per 128-column block
        assert bp.program.counts()["MATMUL"] == 2


def test_a_billm_linear_of_one_block():
    # k = 128: one 128-column block, one MATMUL (its weights are still a list of one block)
    path = P.billm_linear(_rand(8, 128, seed=2, scale=0.05), _rand(5, 128, seed=1), bias=_rand(8, seed=3))
    bp, _ = run_block(path, load_design("billm"))
    assert bp.program.counts()["MATMUL"] == 1


def test_hand_derived_cycles_of_a_ternarybert_linear():
    # ternary design: DRAM 128 bytes a cycle + 20 cycles a transfer; buffer lines: weights 64 × 8 = 512 bytes,
    # activations 8 × 8 = 64 bytes (so transfers to or from activations move 64 bytes a cycle); every transfer has
    # a set-up cycle, a STORE one more for its buffer read; the post unit one lane, 2 cycles of latency.
    # Load queue: x.codes 12·64 B (1 + 12 + 20), the weight tile 3 row blocks × 256 B (1 + 6 + 20), coef and bias 48
    # words each (1 + 3 + 20 twice), the row scales 12 words (1 + 1 + 20): done at 130. The MATMUL (36 beats) is
    # done long before; the combine_rows POST waits for its aux, then takes a set-up cycle, 4 slots per element (the
    # record's one word, its coefficient, the row multiplier, the bias), a cycle for the last operand to arrive and
    # 2 of latency: 130 + 1 + 12·48·4 + 1 + 2 = 2438; the STORE of y, 12·48 words: 2438 + 1 + 36 + 20 + 1 = 2496.
    path = P.ternarybert_linear(_rand(48, 64, seed=2, scale=0.05), _rand(12, 64, seed=1), bias=_rand(48, seed=3))
    bp, pr = run_block(path, load_design("ternary"))
    assert pr.cycles == 2496
    assert [ins.opcode for ins in bp.program] == ["LOAD", "LOAD", "MATMUL", "LOAD", "LOAD", "LOAD", "POST", "STORE",
                                                  "FINISH"]
    assert pr.done[5] == 33 + 27 + 24 + 24 + 22 and pr.done[6] == 2438
    assert pr.busy["load"] == 130 and pr.busy["store"] == 1 + 12 * math.ceil(48 * 4 / 64) + 20 + 1 == 58


# -- real MiniLM weights --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def minilm_inputs():
    from models.checkpoint import load_minilm
    from models.fidelity import embed, sentences, tokenize
    model = load_minilm()
    mods = dict(model.named_modules())
    seen = {}
    names = ["layers.0.attn.q", "layers.2.attn.q", "layers.0.ffn.up"]
    def keep(nm):
        def hook(_module, args, _output):
            seen.setdefault(nm, args[0].detach())          # returns None: the layer's output stays its own
        return hook

    hooks = [mods[nm].register_forward_hook(keep(nm)) for nm in names]
    ids, mask = tokenize(sentences("evaluation")[:1])
    embed(model, ids, mask)
    for h in hooks:
        h.remove()
    n = int(mask[0].sum())
    return model, {nm: t[0, :n] for nm, t in seen.items()}


def test_bibert_attention_block_on_minilm(minilm_inputs):
    model, xs = minilm_inputs
    attn = model.layers[0].attn
    ws = [getattr(attn, nm).weight.detach() for nm in "qkvo"]
    bs = [getattr(attn, nm).bias.detach() for nm in "qkvo"]
    path = P.bibert_attention_block(xs["layers.0.attn.q"], *ws, bq=bs[0], bk=bs[1], bv=bs[2], bo=bs[3], heads=12)
    bp, pr = run_block(path, _xnor_pos())
    assert bp.program.counts()["MATMUL"] == 4 + 2 * 12


def test_bitnet_ffn_block_on_minilm(minilm_inputs):
    model, xs = minilm_inputs
    # MiniLM's FFN is not gated: layer 1's up as the gate, layer 0's up and down
    path = P.bitnet_ffn_block(xs["layers.0.ffn.up"], model.layers[1].ffn.up.weight.detach(),
                              model.layers[0].ffn.up.weight.detach(), model.layers[0].ffn.down.weight.detach())
    run_block(path, load_design("ternary"))


@pytest.mark.parametrize("scheme,design", [("ternarybert", "ternary"), ("qbb", "binary-basis"), ("billm", "billm")])
def test_issue_linears_on_minilm(scheme, design, minilm_inputs):
    model, xs = minilm_inputs
    layer = dict(model.named_modules())["layers.2.attn.q"]
    path = P.LINEAR_PATHS[scheme](layer.weight.detach(), xs["layers.2.attn.q"], bias=layer.bias.detach())
    run_block(path, load_design(design))


# -- the checker can fail; refusals ----------------------------------------------------------------------------

def test_a_corrupted_weight_byte_is_caught():
    # plant a bug in the data: one byte of the weight tile in the DRAM image. The comparison must go red.
    path = P.ternarybert_linear(_rand(48, 64, seed=2, scale=0.05), _rand(12, 64, seed=1))
    design = load_design("ternary")
    bp = compile_path(path, design)
    w_load = [ins for ins in bp.program if ins.opcode == "LOAD"][1]
    mem = bp.memories()
    tile = mem.dram[w_load["dram"]:w_load["dram"] + w_load["row_bytes"]]
    tile[np.flatnonzero(tile)[0]] = 0                       # four weight codes of one byte, some non-zero, to 0
    pr = run(bp.program, design, mem, stepped=True)
    got = read_stages(bp, pr.memories)
    assert not np.array_equal(got["acc"], path["acc"].tensor)
    assert not np.array_equal(got["y@dram"], path.y_fixed)


def test_an_engine_configured_otherwise_is_refused():
    path = P.bibert_attention_block(_rand(8, 64, seed=5), *[_rand(64, 64, seed=i, scale=0.05) for i in range(4)],
                                    heads=4)
    with pytest.raises(ValueError, match=r"stage ctx: needs a bamm engine with zero_policy = 'pos'; design 'xnor' "
                                         r"has zero_policy = 'torch'"):
        compile_path(path, load_design("xnor"))
    with pytest.raises(ValueError, match=r"design 'xnor' has no ternary-mac engine \(needed by acc\)"):
        compile_path(P.ternarybert_linear(_rand(8, 64), _rand(4, 64)), load_design("xnor"))


def test_a_block_that_does_not_fit_is_refused():
    d = load_design("ternary").to_dict()
    d["buffers"]["weights"] = {"size_kib": 1, "word_bits": 64}
    with pytest.raises(BlockCapacityError, match=r"stage acc weights: the weights buffer \(1,024 bytes\) is full"):
        compile_path(P.ternarybert_linear(_rand(64, 256, scale=0.05), _rand(4, 256)), Accelerator.from_dict(d))
