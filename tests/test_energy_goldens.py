"""Absolute energy goldens: a tiny BERT on two small designs, every joule derived by hand from the cited unit costs.

Nothing here asks the code under test for a count or a cost: the operations of the model are listed from BERT's
structure, each op's events are counted from the engine's mapping rules (docs/simulator.md, docs/systolic.md), and
each category is ``bits or operations × the unit cost of docs/energy.md``, written out below. A doubled counter, a
wrong unit cost or a lost event in any category moves a pinned figure (issue 9 item 7: "the SRAM-read energy
counter doubled" must fail here).

The model: BERT, hidden 8, 1 layer, 2 heads (head width 4), intermediate 32, sequence 4, with the pooler.
Its operations at seq 4 (M = 4 tokens): three embedding gathers (word, position, token type), two adds and a
LayerNorm; Q, K, V [4 × 8]·[8 × 8] each with a bias add; per head QKᵀ [4 × 4]·[4 × 4], a scale, a mask, a softmax
and A·V [4 × 4]·[4 × 4]; O [4 × 8]·[8 × 8], its bias, the residual add and a LayerNorm; FFN up [4 × 8]·[8 × 32], its
bias and GELU, down [4 × 32]·[32 × 8], its bias, the residual and a LayerNorm; the pooler [1 × 8]·[8 × 8], its bias
and tanh. The int8 scheme adds absmax + quantize before each distinct linear input (Q/K/V share one) and a rescale
after each linear.
"""

import pytest

from sim.energy import price_events
from sim.model import simulate_model
from sim.tech import get_technology

# -- unit costs, 45 nm (pJ), each from docs/energy.md's table --------------------------------------------------------
FP32_ADD, FP32_MUL = 0.9, 3.7         # Horowitz ISSCC 2014: 32-bit FP add, mult
FP16_ADD, FP16_MUL = 0.4, 1.1         # Horowitz: 16-bit FP add, mult
FP32_SPECIAL = 4 * FP32_MUL           # exp / tanh / erf / rsqrt = 4 FP multiplies (the labelled assumption)
FP16_SPECIAL = 4 * FP16_MUL
INT8_MUL = 0.2                        # Horowitz: 8-bit int mult
INT32_ADD = 0.1                       # Horowitz: 32-bit int add
REG_BIT = 0.009                       # Aladdin register (Accelergy's library): per bit written, and per bit read
SRAM_8K_BIT = 10 / 64                 # Horowitz: 64-bit read of an 8 KB SRAM = 10 pJ; a write costs a read
SRAM_32K_BIT = 20 / 64                # Horowitz: 64-bit read of a 32 KB SRAM = 20 pJ
DRAM_BIT_TABLE = 1300 / 64            # Horowitz: DRAM 1.3 nJ per 64 bits (the low end), when the design gives none
PJ = 1e-12

CONFIG = {"model_type": "bert", "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
          "intermediate_size": 32, "vocab_size": 16, "max_position_embeddings": 8, "type_vocab_size": 2,
          "hidden_act": "gelu"}
SEQ = 4

# Buffers at Horowitz's table points, so no interpolation enters: weights and KV 8 KiB, activations 32 KiB.
BUFFERS = {"weights": {"size_bytes": 8192}, "activations": {"size_bytes": 32768}, "kv": {"size_bytes": 8192}}

# Vector work of the encoder, as (op, elements = M·N·heads, passes over the data, (FP adds, FP mults, specials)
# per element). The per-element mixes are the vector unit's documented costs (docs/simulator.md): add, mask and
# bias 1 add; scale and rescale 1 mult; LayerNorm 4 adds, 3 mults, 1 rsqrt in 2 passes; softmax 3 adds, 2 exps in
# 2 passes; GELU 2 adds, 3 mults, 7 specials; tanh 1 special; absmax 2 adds; quantize 1 add, 1 mult.
ADD, SCALE, NORM, SOFTMAX, GELU, TANH, ABSMAX, QUANT = ((1, 0, 0), (0, 1, 0), (4, 3, 1), (3, 0, 2), (2, 3, 7),
                                                        (0, 0, 1), (2, 0, 0), (1, 1, 0))
VECTOR_FP = [
    ("embed.sum", 4 * 8 * 2, 1, ADD), ("embed.norm", 32, 2, NORM),
    ("q.bias", 32, 1, ADD), ("k.bias", 32, 1, ADD), ("v.bias", 32, 1, ADD),
    ("attn.scale", 4 * 4 * 2, 1, SCALE), ("attn.mask", 32, 1, ADD), ("attn.softmax", 32, 2, SOFTMAX),
    ("o.bias", 32, 1, ADD), ("attn.residual", 32, 1, ADD), ("attn_norm", 32, 2, NORM),
    ("up.bias", 4 * 32, 1, ADD), ("ffn.act", 128, 1, GELU), ("down.bias", 32, 1, ADD),
    ("ffn.residual", 32, 1, ADD), ("ffn_norm", 32, 2, NORM), ("pooler.bias", 8, 1, ADD), ("pooler.tanh", 8, 1, TANH),
]
# the int8 scheme's quantizers: absmax + quantize on the inputs of Q/K/V (shared), O, up [4 × 8] and down [4 × 32];
# a rescale after each of the six int8 linears
VECTOR_INT8_EXTRA = [
    ("q.absmax", 32, 1, ABSMAX), ("q.quantize", 32, 1, QUANT), ("o.absmax", 32, 1, ABSMAX),
    ("o.quantize", 32, 1, QUANT), ("up.absmax", 32, 1, ABSMAX), ("up.quantize", 32, 1, QUANT),
    ("down.absmax", 128, 1, ABSMAX), ("down.quantize", 128, 1, QUANT),
    ("q.rescale", 32, 1, SCALE), ("k.rescale", 32, 1, SCALE), ("v.rescale", 32, 1, SCALE),
    ("o.rescale", 32, 1, SCALE), ("up.rescale", 128, 1, SCALE), ("down.rescale", 32, 1, SCALE),
]


def _vector(ops, bits):
    """(adds, mults, specials, SRAM bits read, SRAM bits written): every pass reads the data, one write."""
    adds = sum(n * mix[0] for _, n, _, mix in ops)
    muls = sum(n * mix[1] for _, n, _, mix in ops)
    special = sum(n * mix[2] for _, n, _, mix in ops)
    return adds, muls, special, sum(n * passes * bits for _, n, passes, _ in ops), sum(n * bits for _, n, _, _ in ops)


def _run(design: dict, scheme: str):
    run = simulate_model(CONFIG, scheme, design, seq_len=SEQ)        # the design's tables and its mapping policy
    return run, price_events(run.events(), get_technology("45nm"), run.design)


def _lines(energy) -> dict[str, tuple[int, float]]:
    return {line.event: (line.count, line.joules) for line in energy.lines}


# -- fp32 on an FP32 MAC array ----------------------------------------------------------------------------------------

FP32_DESIGN = {
    "name": "golden-fp32", "clock_mhz": 100,
    "engines": [{"unit": "fp-mac", "lanes": 4, "rows": 4, "fp_bits": 32}],
    "buffers": BUFFERS, "dram": {"bandwidth_gbps": 1.0}, "vector": {"lanes": 4, "fp_bits": 32},
    "mapping": {"weights": "resident-if-fits"},
}


def test_fp32_bert_on_fp_mac_array_by_hand():
    run, e = _run(FP32_DESIGN, "fp32")
    # Weights: Q, K, V, O 8×8, up 8×32, down 32×8, pooler 8×8 = 4·64 + 256 + 256 + 64 = 832 FP32 values = 3328 B;
    # 3328 ≤ 8192, so they are resident: loaded once (DRAM read + weight-buffer write of 3328·8 = 26,624 bits).
    assert (run.weights_resident, run.weight_bytes) == (True, 3328)

    # Matmuls on the 4-lane × 4-row FP32 MAC array: a beat is 4 reduction elements of one token for 4 output rows.
    # beats = ceil(N/4) row blocks × M tokens × ceil(K/4) chunks:
    #   Q, K, V, O: 2·4·2 = 16 each (64); up: 8·4·2 = 64; down: 2·4·8 = 64; QKᵀ, A·V: 1·4·1 = 4 per head, 2 heads
    #   each (16); pooler: 2·1·2 = 4. All 212 beats; 196 read the weight buffer, the 16 attention beats the KV one.
    beats, weight_beats, kv_beats = 212, 196, 16
    # results (one per row block and token): Q..O 2·4 = 8 each, up 32, down 8, QKᵀ/A·V 4·2 each, pooler 2 → 90
    results = 4 * 8 + 32 + 8 + 8 + 8 + 2
    # outputs written (M·N·heads): Q..O 32 each, up 128, down 32, QKᵀ 32, A·V 32, pooler 8 → 360 FP32 values
    outputs = 4 * 32 + 128 + 32 + 32 + 32 + 8
    macs = 16 * beats                                   # 4 × 4 multiply-adds a beat: 3392 (= Σ M·K·N, no padding)
    # registers: the operand register takes 4 activations + 4×4 weights of 32 bits + `last` = 641 bits a beat;
    # the result register 4 rows × 32 bits per result
    reg_bits = 641 * beats + 128 * results              # 135,892 + 11,520 = 147,412
    v_add, v_mul, v_special, v_read, v_write = _vector(VECTOR_FP, 32)
    assert (v_add, v_mul, v_special, v_read, v_write) == (1192, 704, 1064, 28160, 24064)
    gathers = 3 * 4 * 8 * 32                            # word, position, token-type rows: 4 tokens × 8 × FP32

    act_read = 4 * 32 * beats + v_read                  # engine activations (27,136) + vector passes = 55,296 bits
    weight_read = 4 * 4 * 32 * weight_beats             # 100,352 bits
    kv_read = 4 * 4 * 32 * kv_beats                     # 8,192 bits
    act_write = 32 * outputs + v_write + gathers        # 11,520 + 24,064 + 3,072 = 38,656 bits
    weight_write = 3328 * 8                             # the one-time load
    dram = gathers + 3328 * 8                           # 29,696 bits

    lines = _lines(e)
    assert {k: v[0] for k, v in lines.items() if k.startswith(("sram", "dram"))} == {
        "sram_read/activations": 55296, "sram_read/weights": 100352, "sram_read/kv": 8192,
        "sram_write/activations": 38656, "sram_write/weights": 26624, "dram_bits": 29696}
    assert (act_read, weight_read, kv_read, act_write, weight_write, dram) == (55296, 100352, 8192, 38656, 26624,
                                                                                29696)

    sram_read_pj = act_read * SRAM_32K_BIT + (weight_read + kv_read) * SRAM_8K_BIT      # 17,280 + 16,960
    sram_write_pj = act_write * SRAM_32K_BIT + weight_write * SRAM_8K_BIT                # 12,080 + 4,160
    dram_pj = dram * DRAM_BIT_TABLE                                                      # 603,200
    arith_pj = macs * (FP32_MUL + FP32_ADD)                                              # 15,603.2
    reg_pj = reg_bits * REG_BIT                                                          # 1,326.708
    vector_pj = v_add * FP32_ADD + v_mul * FP32_MUL + v_special * FP32_SPECIAL           # 19,424.8
    total_pj = sram_read_pj + sram_write_pj + dram_pj + arith_pj + reg_pj + vector_pj
    # the same figures as literals, so a slip in the arithmetic above cannot hide
    assert (sram_read_pj, sram_write_pj, dram_pj) == pytest.approx((34240.0, 16240.0, 603200.0), rel=1e-12)
    assert (arith_pj, reg_pj, vector_pj) == pytest.approx((15603.2, 1326.708, 19424.8), rel=1e-12)
    assert total_pj == pytest.approx(690034.708, rel=1e-12)

    got_read = sum(j for k, (_, j) in lines.items() if k.startswith("sram_read"))
    got_write = sum(j for k, (_, j) in lines.items() if k.startswith("sram_write"))
    assert got_read == pytest.approx(sram_read_pj * PJ, rel=1e-12)
    assert got_write == pytest.approx(sram_write_pj * PJ, rel=1e-12)
    assert e.total("dram") == pytest.approx(dram_pj * PJ, rel=1e-12)
    assert e.total("arith") == pytest.approx(arith_pj * PJ, rel=1e-12)
    assert e.total("registers") == pytest.approx(reg_pj * PJ, rel=1e-12)
    assert e.total("vector") == pytest.approx(vector_pj * PJ, rel=1e-12)
    assert e.total() == pytest.approx(690034.708e-12, rel=1e-12)


# -- int8 on a 4 × 4 output-stationary systolic array, weights streamed ------------------------------------------------

INT8_DESIGN = {
    "name": "golden-int8-os", "clock_mhz": 100,
    "engines": [{"unit": "systolic", "rows": 4, "cols": 4, "dataflow": "os"},        # int8 × int8, 32-bit accs
                {"unit": "fp-mac", "lanes": 4, "rows": 4, "fp_bits": 16}],           # attention and the pooler
    "buffers": BUFFERS, "dram": {"bandwidth_gbps": 1.0, "pj_per_bit": 8.0}, "vector": {"lanes": 4, "fp_bits": 16},
}


def test_int8_bert_on_output_stationary_array_by_hand():
    run, e = _run(INT8_DESIGN, "int8")
    assert run.weights_resident is False                 # the mapping streams every weight from DRAM

    # The six int8 linears on the 4 × 4 OS array (docs/systolic.md's event table; Sr = M = 4 → one row fold,
    # r = 4; Sc = N → cf = N/4 column folds; T = K):
    #   A register writes cf·K·4·4, B register writes K·N·4, output-chain writes N·(4·4 − 4·3/2) = 10·N,
    #   A reads cf·4·K, B reads K·N, C writes 4·N, MACs 4·K·N; the accumulators: a read and a write per MAC and
    #   one more read per output (C writes) as it leaves for the output chain.
    #   Q, K, V, O (K = 8, N = 8, cf = 2): A 256, B 256, chain 80, A reads 64, B reads 64, C 32, MACs 256 each
    #   up (K = 8, N = 32, cf = 8):       A 1024, B 1024, chain 320, A reads 256, B reads 256, C 128, MACs 1024
    #   down (K = 32, N = 8, cf = 2):     A 1024, B 1024, chain 80, A reads 256, B reads 256, C 32, MACs 1024
    macs = 4 * 256 + 1024 + 1024                         # 3072
    a_reg, b_reg, chain = 4 * 256 + 2048, 4 * 256 + 2048, 4 * 80 + 320 + 80    # 3072, 3072, 720
    a_reads, b_reads, c_writes = 4 * 64 + 512, 4 * 64 + 512, 4 * 32 + 128 + 32  # 768, 768, 288
    weight_bytes = 4 * 64 + 256 + 256                    # K·N int8 weights, streamed once per linear: 768 B
    # The FP16 MAC array (4 lanes × 4 rows): QKᵀ and A·V 4 beats a head (8 each), the pooler 2·1·2 = 4 beats;
    # results 4 a head each (8 + 8) and 2; outputs 32 + 32 + 8 = 72 FP16 values. The pooler's weights stream
    # from DRAM in its 2 row-block tiles of 4 rows × 8 × 16 bits = 64 B each: 1024 bits.
    fp_beats, fp_results, fp_outputs, pooler_load = 20, 18, 72, 2 * 64 * 8
    attn_beats, pooler_beats = 16, 4
    v_add, v_mul, v_special, v_read, v_write = _vector(VECTOR_FP + VECTOR_INT8_EXTRA, 16)
    assert (v_add, v_mul, v_special, v_read, v_write) == (1864, 1216, 1064, 25856, 23808)
    gathers = 3 * 4 * 8 * 16                             # three FP16 embedding rows per token: 1536 bits

    act_read = a_reads * 8 + 4 * 16 * fp_beats + v_read                 # 6,144 + 1,280 + 25,856 = 33,280
    weight_read = b_reads * 8 + 4 * 4 * 16 * pooler_beats               # 6,144 + 1,024 = 7,168
    kv_read = 4 * 4 * 16 * attn_beats                                   # 4,096
    act_write = c_writes * 32 + 16 * fp_outputs + v_write + gathers     # 9,216 + 1,152 + 23,808 + 1,536 = 35,712
    weight_write = weight_bytes * 8 + pooler_load                       # 6,144 + 1,024 = 7,168
    dram = weight_bytes * 8 + pooler_load + gathers                     # 8,704 bits at the design's 8 pJ/bit
    # registers: systolic A, B 8 bits, output chain 32 bits; the FP16 array's operand register 4·16 + 4·4·16 + 1 =
    # 321 bits a beat and result register 4·16 bits; the OS accumulators, 32 bits an access
    reg_bits = a_reg * 8 + b_reg * 8 + chain * 32 + 321 * fp_beats + 64 * fp_results    # 72,192 + 7,572 = 79,764
    acc_read_bits = (macs + c_writes) * 32                                                # 3,360 reads: 107,520
    acc_write_bits = macs * 32                                                            # 3,072 writes: 98,304

    lines = _lines(e)
    assert {k: v[0] for k, v in lines.items() if k.startswith(("sram", "dram", "acc", "reg"))} == {
        "sram_read/activations": 33280, "sram_read/weights": 7168, "sram_read/kv": 4096,
        "sram_write/activations": 35712, "sram_write/weights": 7168, "dram_bits": 8704,
        "reg_bits": 79764, "acc_read_bits": 107520, "acc_write_bits": 98304}
    assert (act_read, weight_read, kv_read, act_write, weight_write, dram, reg_bits, acc_read_bits,
            acc_write_bits) == (33280, 7168, 4096, 35712, 7168, 8704, 79764, 107520, 98304)

    sram_read_pj = act_read * SRAM_32K_BIT + (weight_read + kv_read) * SRAM_8K_BIT     # 10,400 + 1,760
    sram_write_pj = act_write * SRAM_32K_BIT + weight_write * SRAM_8K_BIT               # 11,160 + 1,120
    dram_pj = dram * 8.0                                                                # 69,632
    arith_pj = macs * (INT8_MUL + INT32_ADD) + 320 * (FP16_MUL + FP16_ADD)             # 921.6 + 480
    reg_pj = (reg_bits + acc_read_bits + acc_write_bits) * REG_BIT      # 717.876 + 967.68 + 884.736 = 2,570.292
    vector_pj = v_add * FP16_ADD + v_mul * FP16_MUL + v_special * FP16_SPECIAL          # 6,764.8
    total_pj = sram_read_pj + sram_write_pj + dram_pj + arith_pj + reg_pj + vector_pj
    assert (sram_read_pj, sram_write_pj, dram_pj) == pytest.approx((12160.0, 12280.0, 69632.0), rel=1e-12)
    assert (arith_pj, reg_pj, vector_pj) == pytest.approx((1401.6, 2570.292, 6764.8), rel=1e-12)
    assert total_pj == pytest.approx(104808.692, rel=1e-12)

    got_read = sum(j for k, (_, j) in lines.items() if k.startswith("sram_read"))
    got_write = sum(j for k, (_, j) in lines.items() if k.startswith("sram_write"))
    assert got_read == pytest.approx(sram_read_pj * PJ, rel=1e-12)
    assert got_write == pytest.approx(sram_write_pj * PJ, rel=1e-12)
    assert e.total("dram") == pytest.approx(dram_pj * PJ, rel=1e-12)
    assert e.total("arith") == pytest.approx(arith_pj * PJ, rel=1e-12)
    assert e.total("registers") == pytest.approx(reg_pj * PJ, rel=1e-12)
    assert lines["acc_read_bits"][1] == pytest.approx(967.68 * PJ, rel=1e-12)         # 107,520 bits × 0.009 pJ
    assert e.total("vector") == pytest.approx(vector_pj * PJ, rel=1e-12)
    assert e.total() == pytest.approx(104808.692e-12, rel=1e-12)
