"""TernaryBERT: TWN/LAT ternarization, 8-bit activations (official symmetric and paper min-max), float reference
layers, attention quantization points, distillation losses and integer hardware views."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import ternarybert as tb
from models.intops import dot_accumulator_width
from models.units import UnitKind

F32_EPS = np.finfo(np.float32).eps

# Σ|W| = 0.875 + 1.5 + 0.25 + 2.0 + 0.375 = 5 over 8 entries: mean|W| = 0.625, and 0.7·0.625 rounds to 0.4375 in
# float32 (0.7f·0.625 = 0.43749999255, nearer to 0.4375 than to the float below), so ±0.4375 sit exactly at delta.
TIE_W = torch.tensor([[0.4375, -0.4375, 1.0, -0.5], [0.25, 2.0, -0.375, 0.0]])


# -- TWN -----------------------------------------------------------------------------------------------------

def test_twn_weight_exactly_at_delta_is_zero_and_alpha_by_hand():
    tw = tb.twn_ternarize(TIE_W)
    assert tw.delta.item() == 0.4375
    # 0.4375 is not > delta → 0; 1.0 → +1; -0.5 < -delta → -1; 0.25, -0.375, 0 → 0; 2.0 → +1.
    assert tw.codes.tolist() == [[0, 0, 1, -1], [0, 1, 0, 0]]
    assert tw.codes.dtype == torch.int8
    # alpha = mean of |w| over the support {1.0, 0.5, 2.0} = 3.5 / 3
    assert tw.alpha.item() == np.float32(3.5) / np.float32(3)
    assert tw.alpha.shape == ()
    np.testing.assert_array_equal(tw.dequantized().numpy(), tw.codes.numpy() * (np.float32(3.5) / np.float32(3)))


def test_twn_row_granularity_differs_from_layer():
    tw = tb.twn_ternarize(TIE_W, granularity="row")
    # row 0: mean|w| = 2.375/4 = 0.59375, delta = 0.415625 → [1, -1, 1, -1], alpha = 2.375/4 = 0.59375
    # row 1: mean|w| = 2.625/4 = 0.65625, delta = 0.459375 → [0, 1, 0, 0], alpha = 2.0
    assert tw.codes.tolist() == [[1, -1, 1, -1], [0, 1, 0, 0]]
    assert tw.alpha.shape == (2, 1) and tw.delta.shape == (2, 1)
    assert tw.alpha[:, 0].tolist() == [0.59375, 2.0]
    np.testing.assert_allclose(tw.delta[:, 0].numpy(), [0.415625, 0.459375], rtol=1e-6)
    assert tb.ternarize_embedding(TIE_W).codes.tolist() == tw.codes.tolist()


def test_twn_clips_before_threshold_and_alpha():
    w = torch.tensor([[3.0, 0.5], [-10.0, 0.0]])
    # clipped [[2.5, 0.5], [-2.5, 0]]: mean 1.375, delta 0.9625 → [[1, 0], [-1, 0]], alpha = 2.5
    tw = tb.twn_ternarize(w)
    assert tw.codes.tolist() == [[1, 0], [-1, 0]]
    assert tw.alpha.item() == 2.5
    assert tw.delta.item() == pytest.approx(0.9625, rel=1e-6)
    # unclipped: mean 3.375, delta 2.3625 → same codes, alpha = (3 + 10)/2 = 6.5
    raw = tb.twn_ternarize(w, clip_val=None)
    assert raw.codes.tolist() == [[1, 0], [-1, 0]] and raw.alpha.item() == 6.5


def test_twn_all_zero_matrix_and_row_get_alpha_zero_not_nan():
    tw = tb.twn_ternarize(torch.zeros(3, 4))
    assert (tw.codes == 0).all() and tw.alpha.item() == 0.0
    w = torch.tensor([[1.0, -2.0], [0.0, 0.0]])
    rows = tb.twn_ternarize(w, granularity="row")
    assert rows.alpha[:, 0].tolist() == [2.0, 0.0]            # row 0: delta 1.05 → only -2 survives
    assert rows.codes.tolist() == [[0, -1], [0, 0]]
    assert torch.isfinite(rows.dequantized()).all()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_twn_refuses_non_finite(bad):
    w = torch.ones(2, 3)
    w[1, 0] = bad
    with pytest.raises(ValueError, match=r"weight contains 1 non-finite value.*index \(1, 0\)"):
        tb.twn_ternarize(w)


def test_twn_refuses_bad_options_and_shapes():
    with pytest.raises(ValueError, match="'column'"):
        tb.twn_ternarize(TIE_W, granularity="column")
    with pytest.raises(ValueError, match="must be a 2-D matrix"):
        tb.twn_ternarize(torch.ones(4))
    with pytest.raises(ValueError, match="clip_val .* not -1"):
        tb.twn_ternarize(TIE_W, clip_val=-1)
    with pytest.raises(TypeError, match="clip_val .* not True"):
        tb.twn_ternarize(TIE_W, clip_val=True)
    with pytest.raises(TypeError, match="floating-point"):
        tb.twn_ternarize(torch.ones(2, 2, dtype=torch.int64))


# -- LAT -----------------------------------------------------------------------------------------------------

LAT_W = torch.tensor([[4.0, 1.25, 1.0, 0.0]])
# TWN start: mean|w| = 1.5625, delta = 1.09375 → codes [1, 1, 0, 0].


@pytest.mark.parametrize("v", [0.25, 4.0, 100.0])
def test_lat_with_constant_d_is_the_twn_alternating_minimisation(v):
    vm = torch.full_like(LAT_W, v)
    # D constant cancels: alpha = mean|w| over the support.
    # step 1: alpha = (4 + 1.25)/2 = 2.625, codes = I_{1.3125}(w) = [1, 0, 0, 0]
    one = tb.lat_ternarize(LAT_W, vm, iterations=1)
    assert one.alpha.item() == 2.625 and one.codes.tolist() == [[1, 0, 0, 0]]
    # step 2: alpha = 4, codes = I_2(w) = [1, 0, 0, 0]: a fixed point, so more steps change nothing
    for n in (2, 5):
        tw = tb.lat_ternarize(LAT_W, vm, iterations=n)
        assert tw.alpha.item() == 4.0 and tw.codes.tolist() == [[1, 0, 0, 0]]
        assert tw.delta.item() == 2.0


def test_lat_curvature_weights_the_scale():
    v = torch.tensor([[1.0, 9.0, 1.0, 1.0]])                   # d = [1, 3, 1, 1] (+1e-8, lost in float32)
    # step 1 from [1, 1, 0, 0]: alpha = (1·4 + 3·1.25)/(1 + 3) = 1.9375 → I_{0.96875} → [1, 1, 1, 0]
    one = tb.lat_ternarize(LAT_W, v)
    assert one.alpha.item() == 1.9375 and one.codes.tolist() == [[1, 1, 1, 0]]
    # step 2: alpha = (4 + 3.75 + 1)/(1 + 3 + 1) = 1.75 → I_{0.875} → [1, 1, 1, 0]
    two = tb.lat_ternarize(LAT_W, v, iterations=2)
    assert two.alpha.item() == 1.75 and two.codes.tolist() == [[1, 1, 1, 0]]
    # tol stops once alpha moves by less than it: step 3 repeats 1.75
    assert tb.lat_ternarize(LAT_W, v, iterations=50, tol=1e-6).alpha.item() == 1.75


def test_lat_threshold_tie_is_zero():
    w = torch.tensor([[3.0, 1.0, 0.5, 0.0]])
    # TWN start: mean 1.125, delta 0.7875 → [1, 1, 0, 0]; alpha = 2, threshold 1 = |w[1]| → 0
    tw = tb.lat_ternarize(w, torch.ones_like(w))
    assert tw.alpha.item() == 2.0 and tw.codes.tolist() == [[1, 0, 0, 0]]


def test_lat_rows_and_init_codes():
    w = torch.cat([LAT_W, torch.tensor([[3.0, 1.0, 0.5, 0.0]])])
    tw = tb.lat_ternarize(w, torch.ones_like(w), granularity="row")
    assert tw.alpha[:, 0].tolist() == [2.625, 2.0]
    assert tw.codes.tolist() == [[1, 0, 0, 0], [1, 0, 0, 0]]
    # warm start from given codes: support {4, 1.25, 1} → alpha = 6.25/3, threshold 1.0416 → [1, 1, 0, 0]
    warm = tb.lat_ternarize(LAT_W, torch.ones_like(LAT_W), init_codes=torch.tensor([[1, 1, 1, 0]]))
    assert warm.alpha.item() == pytest.approx(6.25 / 3, rel=1e-6)
    assert warm.codes.tolist() == [[1, 1, 0, 0]]


def test_lat_refuses_bad_second_moment():
    with pytest.raises(ValueError, match="second_moment has shape"):
        tb.lat_ternarize(LAT_W, torch.ones(2, 4))
    with pytest.raises(ValueError, match="must be >= 0"):
        tb.lat_ternarize(LAT_W, -torch.ones_like(LAT_W))
    with pytest.raises(ValueError, match="second_moment contains 1 non-finite"):
        tb.lat_ternarize(LAT_W, torch.tensor([[1.0, float("nan"), 1.0, 1.0]]))
    with pytest.raises(ValueError, match="only -1, 0 and \\+1"):
        tb.lat_ternarize(LAT_W, torch.ones_like(LAT_W), init_codes=torch.tensor([[2, 0, 0, 0]]))
    with pytest.raises(ValueError, match="iterations must be a positive integer, not 0"):
        tb.lat_ternarize(LAT_W, torch.ones_like(LAT_W), iterations=0)


# -- activations ---------------------------------------------------------------------------------------------

def _official_s(max_abs: float, bits: int = 8) -> np.float32:
    """The official ``(2^(b-1)-1) / max`` as PyTorch evaluates a scalar over a tensor: reciprocal, then multiply."""
    return (np.float32(1) / np.float32(max_abs)) * np.float32(2 ** (bits - 1) - 1)


def test_symmetric_ties_round_half_to_even():
    # max|x| = 127/64 makes s = 64 exactly, so (k + 0.5)/64 scales to an exact tie.
    x = torch.tensor([127.0, 2.5, -2.5, 0.5, -0.5, 1.5, 3.5, 126.5, -127.0]) / 64
    q = tb.quantize_symmetric(x)
    assert q.s.item() == 64.0
    assert q.codes.tolist() == [127, 2, -2, 0, 0, 2, 4, 126, -127]
    assert q.codes.dtype == torch.int8


def test_symmetric_clip_and_scale_by_hand():
    x = torch.tensor([3.0, -10.0, 1.25, 0.0])
    q = tb.quantize_symmetric(x)
    # clipped to [2.5, -2.5, 1.25, 0]; s = fl(fl(1/2.5)·127) = 50.79999923706055;
    # 1.25·s = 63.4999990 rounds to the float32 63.5, a tie → 64 (even)
    assert q.s.item() == _official_s(2.5) == np.float32(50.79999923706055)
    assert q.codes.tolist() == [127, -127, 64, 0]
    expected = np.round(np.float32([2.5, -2.5, 1.25, 0.0]) * _official_s(2.5))   # independent float32 path
    np.testing.assert_array_equal(q.codes.numpy(), expected)
    # without the clip: max 10, s = 12.7: [38.1 → 38, -127, 15.875 → 16, 0]
    raw = tb.quantize_symmetric(x, clip_val=None)
    assert raw.codes.tolist() == [38, -127, 16, 0]


def test_symmetric_scale_is_one_per_tensor():
    x = torch.zeros(2, 3, 4)
    x[1, 2, 3] = 1.984375                       # s = 64 for the whole tensor
    x[0, 0, 0] = 0.5
    q = tb.quantize_symmetric(x)
    assert q.s.shape == () and q.s.item() == 64.0
    assert q.codes[0, 0, 0].item() == 32 and q.codes[1, 2, 3].item() == 127


def test_symmetric_all_zero_and_low_bits():
    q = tb.quantize_symmetric(torch.zeros(3, 2))
    assert (q.codes == 0).all() and q.s.item() == 127.0
    assert torch.equal(q.dequantized(), torch.zeros(3, 2))
    q4 = tb.quantize_symmetric(torch.tensor([1.0, 0.5, -0.5, 0.0714285746216774]), bits=4)
    # s = 7: [7, 3.5 → 4, -3.5 → -4, 0.5 → 0]
    assert q4.codes.tolist() == [7, 4, -4, 0]


def test_minmax_ties_round_half_to_even():
    # x_min = -1, x_max = 255/128 - 1: step = 1/128, so -1 + (k + 0.5)/128 is an exact tie.
    x = torch.tensor([-1.0, 0.9921875, -1 + 2.5 / 128, -1 + 3.5 / 128, -1 + 0.5 / 128, 0.0])
    q = tb.quantize_minmax(x)
    assert q.step.item() == 1 / 128 and q.x_min.item() == -1.0
    assert q.codes.tolist() == [0, 255, 2, 4, 0, 128]
    assert q.codes.dtype == torch.uint8
    # dequantized: code·step + x_min, exact here
    assert q.dequantized().tolist() == [-1.0, 0.9921875, -1 + 2 / 128, -1 + 4 / 128, -1.0, 0.0]


def test_minmax_clip_constant_and_bits():
    x = torch.tensor([-4.0, 3.0, 0.75])
    q = tb.quantize_minmax(x)
    step = np.float32(5) / np.float32(255)                            # clipped range [-2.5, 2.5]
    assert q.x_min.item() == -2.5 and q.step.item() == step
    expected = np.round((np.float32([-2.5, 2.5, 0.75]) - np.float32(-2.5)) / step)
    np.testing.assert_array_equal(q.codes.numpy(), expected)
    assert q.codes.tolist() == [0, 255, 166]                          # 3.25/(5/255) = 165.75 → 166
    raw = tb.quantize_minmax(x, clip_val=None)
    assert raw.x_min.item() == -4.0 and raw.codes.tolist() == [0, 255, 173]   # 4.75·255/7 = 173.04 → 173
    # a constant tensor: step 1, every code 0, dequantized exactly to x_min
    c = tb.quantize_minmax(torch.full((2, 3), 0.3))
    assert c.step.item() == 1.0 and (c.codes == 0).all()
    assert torch.equal(c.dequantized(), torch.full((2, 3), 0.3))
    q4 = tb.quantize_minmax(torch.tensor([0.0, 1.5, 0.5]), bits=4)
    assert q4.codes.tolist() == [0, 15, 5]                            # step 0.1: 0.5/0.1 = 5


@pytest.mark.parametrize("quantize", [tb.quantize_symmetric, tb.quantize_minmax])
def test_activation_quantizers_refuse_bad_input(quantize):
    with pytest.raises(ValueError, match=r"activations contains 1 non-finite value.*index \(2,\)"):
        quantize(torch.tensor([1.0, 2.0, float("inf")]))
    with pytest.raises(ValueError, match="bits must be between 2 and 16, not 17"):
        quantize(torch.ones(3), bits=17)
    with pytest.raises(ValueError, match="must not be empty"):
        quantize(torch.ones(0))
    with pytest.raises(ValueError, match="'asym'"):
        tb.quantize_activations(torch.ones(3), mode="asym")


@pytest.mark.parametrize("mode", ["symmetric", "minmax"])
def test_fake_quant_gradient_is_cut_outside_the_clip(mode):
    x = torch.tensor([3.0, 2.5, 1.0, -0.5, -2.5, -3.0], requires_grad=True)
    y = tb.fake_quantize_activations(x, mode=mode)
    y.backward(torch.arange(1.0, 7.0))
    # official: zero where x >= 2.5 or x <= -2.5, identity elsewhere
    assert x.grad.tolist() == [0, 0, 3, 4, 0, 0]
    x.grad = None
    tb.fake_quantize_activations(x, mode=mode, clip_val=None).sum().backward()
    assert x.grad.tolist() == [1] * 6


def test_fake_quant_values_equal_codes_over_scale():
    x = torch.randn(5, 7, generator=torch.Generator().manual_seed(1))
    q = tb.quantize_symmetric(x)
    assert torch.equal(tb.fake_quantize_activations(x), q.codes.float() / q.s)
    m = tb.quantize_minmax(x)
    assert torch.equal(tb.fake_quantize_activations(x, mode="minmax"), m.codes.float() * m.step + m.x_min)


# -- float reference layers ----------------------------------------------------------------------------------

def _layer(weight, bias=None, **opts):
    lin = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        lin.weight.copy_(weight)
        if bias is not None:
            lin.bias.copy_(bias)
    return tb.TernaryLinear.from_linear(lin, **opts)


def test_ternary_linear_by_hand():
    layer = _layer(TIE_W, torch.tensor([0.5, -1.0]))
    x = torch.tensor([[1.984375, 1.0, 0.5, -0.25]])        # s = 64: codes [127, 64, 32, -16], x_q = x
    alpha = np.float32(3.5) / np.float32(3)
    # y0 = alpha·(0.5 - (-0.25)) + 0.5, y1 = alpha·1.0 - 1
    expected = np.array([[alpha * np.float32(0.75) + np.float32(0.5), alpha - np.float32(1)]], np.float32)
    np.testing.assert_allclose(layer(x).detach().numpy(), expected, rtol=1e-6)
    assert layer.ternary_weights().codes.tolist() == [[0, 0, 1, -1], [0, 1, 0, 0]]


def test_ternary_linear_gradients_follow_the_clipped_ste():
    w = torch.tensor([[3.0, 2.5, 2.0], [-2.5, 0.5, -4.0]])
    layer = _layer(w)
    x = torch.tensor([[1.0, -2.0, 3.0], [0.5, 2.5, 1.0]], requires_grad=True)
    layer(x).sum().backward()
    # weights at or beyond ±2.5 get no gradient; the rest get Σ_t x_q[t, j] (column sums 1.5, 0.5, 3.5 ≠ 0)
    assert (layer.weight.grad != 0).tolist() == [[False, False, True], [False, True, False]]
    # clipped W: mean|W| = 12.5/6, delta = 1.458 → codes [[1, 1, 1], [-1, 0, -1]], alpha = 12/5;
    # d(Σy)/dx_j = Σ_o W_q[o, j] = alpha·[0, 1, 0], cut where x is at or beyond ±2.5
    alpha = np.float32(12) / np.float32(5)
    assert x.grad.tolist() == [[0.0, alpha, 0.0], [0.0, 0.0, 0.0]]
    x.grad = None
    _layer(w, clip_val=None)(x).sum().backward()             # no clip: identity STE everywhere
    assert (x.grad != 0).any()


def test_ternary_linear_scale_spans_the_whole_batch():
    g = torch.Generator().manual_seed(2)
    layer = _layer(torch.randn(6, 8, generator=g) * 0.1, torch.randn(6, generator=g))
    x = torch.randn(3, 5, 8, generator=g)
    np.testing.assert_array_equal(layer(x).detach().reshape(15, 6).numpy(), layer(x.reshape(15, 8)).detach().numpy())
    with pytest.raises(ValueError, match="last dimension must be 8"):
        layer(torch.ones(2, 7))


def test_ternary_linear_refuses_bad_options():
    with pytest.raises(ValueError, match="'tensor'"):
        tb.TernaryLinear(4, 3, granularity="tensor")
    with pytest.raises(ValueError, match="'asymmetric'"):
        tb.TernaryLinear(4, 3, act_mode="asymmetric")
    with pytest.raises(TypeError, match="nn.Linear"):
        tb.TernaryLinear.from_linear(torch.nn.Conv1d(1, 1, 1))


def test_ternary_embedding_rows():
    emb = torch.nn.Embedding(2, 4, padding_idx=0)
    with torch.no_grad():
        emb.weight.copy_(TIE_W)
    temb = tb.TernaryEmbedding.from_embedding(emb)
    assert temb.padding_idx == 0
    out = temb(torch.tensor([[1, 0, 1]]))
    # row-wise TWN (see test_twn_row_granularity_differs_from_layer): row 0 = 0.59375·[1,-1,1,-1], row 1 = 2·e_1
    row0 = [0.59375, -0.59375, 0.59375, -0.59375]
    assert out[0].tolist() == [[0.0, 2.0, 0.0, 0.0], row0, [0.0, 2.0, 0.0, 0.0]]


# -- attention -----------------------------------------------------------------------------------------------

def _attention_inputs(seed, batch=2, heads=3, seq=5, d=8):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, seq, d, generator=g) for _ in range(3))
    q[1, 2] *= 4                                   # pushes some values past the clip
    keep = torch.ones(batch, seq)
    keep[1, -2:] = 0                               # two padded keys in the second sequence
    mask = ((1.0 - keep) * -10000.0)[:, None, None, :]
    return q, k, v, mask


def _np_sym(x: np.ndarray, clip=2.5):
    xc = np.clip(x.astype(np.float32), -clip, clip)
    s = _official_s(np.abs(xc).max())
    return np.round(xc * s), s


def test_quantize_attention_against_independent_numpy():
    q, k, v, mask = _attention_inputs(0)
    att = tb.quantize_attention(q, k, v, mask)
    qc, s_q = _np_sym(q.numpy())
    kc, s_k = _np_sym(k.numpy())
    vc, s_v = _np_sym(v.numpy())
    np.testing.assert_array_equal(att.q.codes.numpy(), qc)
    np.testing.assert_array_equal(att.v.codes.numpy(), vc)
    assert att.q.s.item() == s_q and att.k.s.item() == s_k
    # scores = (qc/s_q)(kc/s_k)ᵀ/√8 + mask in float64, then softmax
    scores = (qc / np.float64(s_q)) @ np.swapaxes(kc / np.float64(s_k), -1, -2) / math.sqrt(8) + mask.numpy()
    np.testing.assert_allclose(att.scores.numpy(), scores, rtol=1e-5, atol=1e-3)
    assert (att.probs[1, :, :, -2:] < 1e-30).all()             # padded keys get no weight
    # P is quantized with its own per-tensor scale (max prob over everything) before P·V
    pc, s_p = _np_sym(att.probs.numpy())
    np.testing.assert_array_equal(att.p.codes.numpy(), pc)
    context = (pc / np.float64(s_p)) @ (vc / np.float64(s_v))
    np.testing.assert_allclose(att.context.numpy(), context, rtol=1e-5, atol=1e-5)


def test_quantize_attention_tie_and_gradients():
    q = torch.zeros(1, 1, 2, 2)
    q[0, 0, 0, 0], q[0, 0, 1, 1] = 1.984375, 0.9921875       # s = 64; 0.9921875·64 = 63.5 → 64
    k = q.clone().requires_grad_(True)
    att = tb.quantize_attention(q, k, torch.ones(1, 1, 2, 2))
    assert att.q.codes[0, 0].tolist() == [[127, 0], [0, 64]]
    att.context.sum().backward()
    assert k.grad is not None and torch.isfinite(k.grad).all()


def test_quantize_attention_refuses_bad_shapes():
    q, k, v, mask = _attention_inputs(0)
    with pytest.raises(ValueError, match=r"q must be \[batch, heads, seq, d_h\]"):
        tb.quantize_attention(q[0], k, v)
    with pytest.raises(ValueError, match="do not form attention"):
        tb.quantize_attention(q, k, v[..., :4])
    with pytest.raises(ValueError, match="does not broadcast"):
        tb.quantize_attention(q, k, v, torch.zeros(2, 1, 1, 4))


@pytest.mark.parametrize("seed", range(3))
def test_attention_views_equal_fake_quant_attention(seed):
    q, k, v, mask = _attention_inputs(seed)
    att = tb.quantize_attention(q, k, v, mask)
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            qk = tb.qk_view(q[b, h], k[b, h], mask=mask[b, 0], q_scale=att.q.s, k_scale=att.k.s)
            assert qk.unit is UnitKind.INT8_MAC and qk.scheme == "ternarybert"
            [p] = qk.passes
            np.testing.assert_array_equal(p.act_codes, att.q.codes[b, h].numpy())
            np.testing.assert_array_equal(p.weight_codes, att.k.codes[b, h].numpy())
            acc = p.accumulate()
            assert acc.dtype == np.int64
            exact = p.act_codes.astype(np.float64) @ p.weight_codes.astype(np.float64).T
            np.testing.assert_array_equal(acc, exact.astype(np.int64))
            qf, kf = att.q.dequantized()[b, h].double(), att.k.dequantized()[b, h].double()
            bound = 4 * 8 * F32_EPS * ((qf.abs() @ kf.abs().T) / math.sqrt(8) + mask[b, 0].abs()).numpy()
            assert (np.abs(qk.output() - att.scores[b, h].double().numpy()) <= bound + 1e-30).all()

            av = tb.av_view(att.probs[b, h], v[b, h], probs_scale=att.p.s, v_scale=att.v.s)
            [p] = av.passes
            assert p.act_value_range == (0, 127)
            np.testing.assert_array_equal(p.act_codes, att.p.codes[b, h].numpy())
            np.testing.assert_array_equal(p.weight_codes, att.v.codes[b, h].numpy().T)
            pf, vf = att.p.dequantized()[b, h].double(), att.v.dequantized()[b, h].double()
            bound = 4 * 5 * F32_EPS * (pf.abs() @ vf.abs()).numpy()
            assert (np.abs(av.output() - att.context[b, h].double().numpy()) <= bound + 1e-30).all()


def test_attention_views_by_hand_and_errors():
    q = torch.tensor([[1.984375, 0.0], [0.0, 0.9921875]])     # s_q = 64: codes [[127, 0], [0, 64]]
    k = torch.tensor([[0.9921875, 0.5], [-1.984375, 0.0]])    # s_k = 64: codes [[64, 32], [-127, 0]]
    view = tb.qk_view(q, k)
    # acc = [[127·64, -127·127], [64·32, 0]]
    assert view.accumulate()["qk"].tolist() == [[8128, -16129], [2048, 0]]
    np.testing.assert_allclose(view.output(), np.array([[8128, -16129], [2048, 0]]) / 4096 / math.sqrt(2),
                               rtol=1e-6)
    probs = torch.tensor([[1.0, 0.0], [0.5, 0.5]])             # s_p = 127: codes [[127, 0], [64, 64]] (63.5 → 64)
    v = torch.tensor([[1.984375, -0.5], [0.25, 1.0]])          # s_v = 64: codes [[127, -32], [16, 64]]
    av = tb.av_view(probs, v)
    assert av.passes[0].act_codes.tolist() == [[127, 0], [64, 64]]
    assert av.accumulate()["av"].tolist() == [[127 * 127, -127 * 32], [64 * 143, 64 * 32]]
    with pytest.raises(ValueError, match=r"probs must lie in \[0, 1\]"):
        tb.av_view(-probs, v)
    with pytest.raises(ValueError, match="beyond the 8-bit code range"):
        tb.qk_view(q, k, q_scale=128.0)                         # 1.984375·128 = 254
    with pytest.raises(ValueError, match="q_scale must be one positive finite"):
        tb.qk_view(q, k, q_scale=0.0)
    with pytest.raises(ValueError, match=r"k has 3 columns"):
        tb.qk_view(q, torch.ones(2, 3))


# -- distillation --------------------------------------------------------------------------------------------

def test_soft_cross_entropy_by_hand():
    ln3 = math.log(3.0)
    student = torch.tensor([[0.0, 0.0], [ln3, 0.0]])
    teacher = torch.tensor([[ln3, 0.0], [ln3, 0.0]])           # teacher probs [0.75, 0.25]
    # row 0: -(0.75·ln 0.5 + 0.25·ln 0.5) = ln 2; row 1: entropy of [0.75, 0.25]
    row1 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert tb.soft_cross_entropy(student, teacher).item() == pytest.approx((math.log(2) + row1) / 2, rel=1e-6)
    assert tb.prediction_loss(student, teacher, regression=True).item() == pytest.approx(ln3 ** 2 / 4, rel=1e-6)


def test_hidden_and_attention_losses_by_hand():
    # layer 0: ((1-0)² + (2-0)²)/2 = 2.5; layer 1: (3-0)²/3 = 3
    hs = [torch.tensor([[1.0, 2.0]]), torch.zeros(1, 3)]
    ht = [torch.zeros(1, 2), torch.tensor([[3.0, 0.0, 0.0]])]
    assert tb.hidden_state_loss(hs, ht).item() == pytest.approx(5.5)
    # entries <= -100 become 0 in both: [1, 0] vs [0, 0] → 0.5; -100 exactly is masked, -99.5 is not
    a_s = [torch.tensor([[1.0, -10000.0]]), torch.tensor([[-100.0, -99.5]])]
    a_t = [torch.tensor([[0.0, -10000.5]]), torch.zeros(1, 2)]
    assert tb.attention_score_loss(a_s, a_t).item() == pytest.approx(0.5 + 99.5 ** 2 / 2)


def test_distillation_loss_sums_parts_and_detaches_teacher():
    ln3 = math.log(3.0)
    s_logits = torch.tensor([[0.0, 0.0]], requires_grad=True)
    t_logits = torch.tensor([[ln3, 0.0]], requires_grad=True)
    hs, ht = [torch.tensor([[1.0, 2.0]], requires_grad=True)], [torch.zeros(1, 2, requires_grad=True)]
    a_s, a_t = [torch.tensor([[1.0, -10000.0]])], [torch.zeros(1, 2)]
    loss = tb.distillation_loss(student_logits=s_logits, teacher_logits=t_logits, student_hidden=hs,
                                teacher_hidden=ht, student_scores=a_s, teacher_scores=a_t)
    assert loss.prediction.item() == pytest.approx(math.log(2), rel=1e-6)
    assert (loss.hidden.item(), loss.attention.item()) == (2.5, 0.5)
    assert loss.total.item() == pytest.approx(math.log(2) + 3.0, rel=1e-6)
    loss.total.backward()
    assert s_logits.grad is not None and hs[0].grad is not None
    assert t_logits.grad is None and ht[0].grad is None
    only_pred = tb.distillation_loss(student_logits=s_logits, teacher_logits=t_logits)
    assert only_pred.hidden.item() == 0 and only_pred.total.item() == pytest.approx(math.log(2), rel=1e-6)


def test_distillation_loss_refuses_incomplete_groups():
    with pytest.raises(ValueError, match="nothing to distil"):
        tb.distillation_loss()
    with pytest.raises(ValueError, match="logits: give both"):
        tb.distillation_loss(student_logits=torch.zeros(1, 2))
    with pytest.raises(ValueError, match="needs both hidden states and attention scores"):
        tb.distillation_loss(student_hidden=[torch.zeros(1)], teacher_hidden=[torch.zeros(1)])
    with pytest.raises(ValueError, match="student gives 2 layers, the teacher 1"):
        tb.hidden_state_loss([torch.zeros(1)] * 2, [torch.zeros(1)])
    with pytest.raises(ValueError, match=r"student logits has shape \(1, 3\), teacher \(1, 2\)"):
        tb.soft_cross_entropy(torch.zeros(1, 3), torch.zeros(1, 2))


# -- linear integer views ------------------------------------------------------------------------------------

def _random_layer(seed, out_features=24, in_features=96, tokens=13):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_features, in_features, generator=g) * 0.05
    w[3, :5] = 3.0                                  # some weights past the clip
    w[7] = 0                                        # an all-zero row
    x = torch.randn(tokens, in_features, generator=g) * torch.logspace(-1, 0.5, tokens)[:, None] - 0.3
    x[4] = 0
    b = torch.randn(out_features, generator=g)
    return w, x, b


def _np_twn_codes(w: np.ndarray, clip=2.5, rows=False):
    wc = np.clip(w.astype(np.float64), -clip, clip)
    m = np.abs(wc).mean(axis=1, keepdims=True) if rows else np.abs(wc).mean()
    delta = 0.7 * m
    return (wc > delta).astype(np.int64) - (wc < -delta).astype(np.int64)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("granularity", ["layer", "row"])
def test_symmetric_linear_view_equals_reference(seed, granularity):
    w, x, b = _random_layer(seed)
    view = tb.linear_view(w, x, bias=b, granularity=granularity)
    [main] = view.passes
    # codes recomputed independently in NumPy
    xc, _ = _np_sym(x.numpy())
    np.testing.assert_array_equal(main.act_codes, xc)
    np.testing.assert_array_equal(main.weight_codes, _np_twn_codes(w.numpy(), rows=granularity == "row"))
    acc = view.accumulate()["main"]
    assert acc.dtype == np.int64
    np.testing.assert_array_equal(acc, (xc @ main.weight_codes.T.astype(np.float64)).astype(np.int64))
    # outputs agree with the float reference to float32 rounding
    layer = _layer(w, b, granularity=granularity)
    y_ref = layer(x).detach().double().numpy()
    x_q = tb.fake_quantize_activations(x).double()
    w_q = layer.ternary_weights().dequantized().double()
    magnitude = (x_q.abs() @ w_q.abs().T + b.abs().double()).numpy()
    assert (np.abs(view.output().astype(np.float64) - y_ref) <= 4 * 96 * F32_EPS * magnitude + 1e-30).all()


@pytest.mark.parametrize("seed", range(4))
def test_minmax_linear_view_equals_reference(seed):
    w, x, b = _random_layer(seed)
    view = tb.linear_view(w, x, bias=b, act_mode="minmax")
    [main] = view.passes
    assert not main.act_signed and main.act_value_range == (0, 255)
    xq = tb.quantize_minmax(x)
    np.testing.assert_array_equal(main.act_codes, xq.codes.numpy())
    exact = main.act_codes.astype(np.float64) @ main.weight_codes.astype(np.float64).T
    np.testing.assert_array_equal(view.accumulate()["main"], exact.astype(np.int64))
    layer = _layer(w, b, act_mode="minmax")
    y_ref = layer(x).detach().double().numpy()
    tw = layer.ternary_weights()
    alpha, step, x_min = tw.alpha.double().item(), xq.step.double().item(), xq.x_min.double().item()
    # the zero point makes step·acc and x_min·Σt cancel, so bound by the parts, not the result
    t_abs = np.abs(main.weight_codes).astype(np.float64)
    magnitude = alpha * (step * main.act_codes.astype(np.float64) @ t_abs.T + abs(x_min) * t_abs.sum(1)) \
        + np.abs(b.double().numpy())
    assert (np.abs(view.output().astype(np.float64) - y_ref) <= 4 * 96 * F32_EPS * magnitude + 1e-30).all()


def test_linear_views_by_hand():
    x = torch.tensor([[1.984375, 1.0, 0.5, -0.25]])          # s = 64: codes [127, 64, 32, -16]
    view = tb.linear_view(TIE_W, x, bias=torch.tensor([0.5, -1.0]))
    # TWN codes [[0, 0, 1, -1], [0, 1, 0, 0]]: acc = [32 + 16, 64]
    assert view.accumulate()["main"].tolist() == [[48, 64]]
    alpha = np.float32(3.5) / np.float32(3)
    np.testing.assert_allclose(view.output(), [[alpha * 0.75 + 0.5, alpha - 1.0]], rtol=1e-6)

    x = torch.tensor([[-1.0, 0.9921875, 0.0, -0.5]])         # step 1/128, x_min -1: codes [0, 255, 128, 64]
    mm = tb.linear_view(TIE_W, x, act_mode="minmax")
    assert mm.passes[0].act_codes.tolist() == [[0, 255, 128, 64]]
    assert mm.accumulate()["main"].tolist() == [[128 - 64, 255]]
    # y0 = alpha·(64/128 + (-1)·(1 - 1)) = 0.5·alpha; y1 = alpha·(255/128 - 1·1) = alpha·0.9921875
    np.testing.assert_allclose(mm.output(), [[0.5 * alpha, 0.9921875 * alpha]], rtol=1e-6)


def test_linear_view_takes_lat_weights():
    w, x, b = _random_layer(0)
    v = torch.rand(w.shape, generator=torch.Generator().manual_seed(5))
    tw = tb.lat_ternarize(w, v, iterations=3)
    view = tb.linear_view(tw, x, bias=b)
    y_ref = (F.linear(tb.fake_quantize_activations(x), tw.dequantized()) + b).double().numpy()
    magnitude = (tb.fake_quantize_activations(x).abs() @ tw.dequantized().abs().T + b.abs()).double().numpy()
    assert (np.abs(view.output() - y_ref) <= 4 * 96 * F32_EPS * magnitude + 1e-30).all()


def test_linear_view_declares_its_hardware():
    w, x, b = _random_layer(1)
    view = tb.linear_view(w, x)
    assert view.scheme == "ternarybert" and view.unit is UnitKind.TERNARY_MAC
    [main] = view.passes
    assert (main.weight_bits, main.act_bits) == (2, 8)
    assert main.weight_value_range == (-1, 1) and main.act_value_range == (-127, 127)
    assert set(np.unique(main.weight_codes)) <= {-1, 0, 1}
    assert view.acc_width == dot_accumulator_width(96, (-1, 1), (-127, 127))
    mm = tb.linear_view(w, x, act_mode="minmax")
    assert mm.acc_width == dot_accumulator_width(96, (-1, 1), (0, 255))
    assert (view.in_features, view.out_features, view.tokens) == (96, 24, 13)


def test_linear_view_refuses_bad_input():
    w, x, b = _random_layer(0)
    with pytest.raises(ValueError, match=r"x has 95 columns .* but 96 are needed"):
        tb.linear_view(w, x[:, :95])
    with pytest.raises(ValueError, match=r"bias has shape \(23,\)"):
        tb.linear_view(w, x, bias=b[:23])
    with pytest.raises(ValueError, match="act_mode must be .* not 'int8'"):
        tb.linear_view(w, x, act_mode="int8")
    x[2, 3] = float("nan")
    with pytest.raises(ValueError, match=r"x contains 1 non-finite value.*index \(2, 3\)"):
        tb.linear_view(w, x)
