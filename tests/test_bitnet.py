"""BitNet b1.58 quantizers (official-code semantics), float reference and integer hardware view."""

import numpy as np
import pytest
import torch

from models import bitnet
from models.intops import ternary_accumulator_width
from models.schemes import get_scheme
from models.units import UnitKind


def test_activation_ties_round_half_to_even():
    # max|x| = 127 makes s = 1 exactly, so x·s = x and the .5 cases are exact ties.
    x = torch.tensor([[127.0, 2.5, -2.5, 0.5, -0.5, 1.5, -1.5, 126.5, 3.5]])
    q = bitnet.quantize_activations(x)
    assert q.s.item() == 1.0
    assert q.codes.tolist() == [[127, 2, -2, 0, 0, 2, -2, 126, 4]]
    assert q.codes.dtype == torch.int8


def test_activation_ties_after_a_non_unit_scale_round_half_to_even():
    # Ties that appear only after scaling (issue 9 item 7: a half-up rounding must fail here). Token 0:
    # max|x| = 254, s = 127/254 = 0.5 exactly, so the odd integers land on k + 0.5. Token 1: max|x| = 63.5,
    # s = 127/63.5 = 2 exactly, so quarters land on k + 0.5. Every product is exact in float32.
    x = torch.tensor([[254.0, 1.0, -1.0, 3.0, -3.0, 5.0, -5.0, 7.0, -7.0, 251.0, -253.0],
                      [-63.5, 0.25, -0.25, 0.75, -0.75, 1.25, -1.25, 1.75, -1.75, 62.75, -63.25]])
    q = bitnet.quantize_activations(x)
    assert q.s[:, 0].tolist() == [0.5, 2.0]
    # x·s:        ±127, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 3.5, -3.5, 125.5, -126.5
    # half-even:  ±127, 0,   0,    2,   -2,   2,   -2,   4,   -4,   126,   -126
    # (half-up would give 1, 0, 2, -1, 3, -2, 4, -3, 126, -126; half-away 1, -1, 2, -2, 3, -3, 4, -4, 126, -127)
    assert q.codes.tolist() == [[127, 0, 0, 2, -2, 2, -2, 4, -4, 126, -126],
                                [-127, 0, 0, 2, -2, 2, -2, 4, -4, 126, -126]]
    # the float reference multiplies exactly these codes back: codes / s
    np.testing.assert_array_equal(q.dequantized().numpy(), (q.codes.double() / q.s.double()).numpy())


def test_paper_and_v1_activation_ties_round_half_to_even():
    # The paper variant scales by Q_b = 128: max|x| = 256 gives s = 0.5, so odd integers land on k + 0.5.
    x = torch.tensor([[256.0, 1.0, -3.0, 5.0, -7.0, 251.0, -255.0]])
    q = bitnet.quantize_activations(x, variant="paper")
    assert q.s.item() == 0.5
    # x·s = 128, 0.5, -1.5, 2.5, -3.5, 125.5, -127.5 → 128 clamps to 127; -127.5 → -128 (even) still fits
    assert q.codes.tolist() == [[127, 0, -2, 2, -4, 126, -128]]
    # BitNet v1 (Q_b = 128, clipped to ±127): max|x| = 64 gives s = 2, so quarters land on k + 0.5
    x1 = torch.tensor([[64.0, 0.25, -0.75, 1.25, -1.75, 62.75, -0.25]])
    q1 = bitnet.quantize_activations_v1(x1)
    assert q1.s.item() == 2.0
    # x·s = 128, 0.5, -1.5, 2.5, -3.5, 125.5, -0.5 → [127 (clip), 0, -2, 2, -4, 126, 0]
    assert q1.codes.tolist() == [[127, 0, -2, 2, -4, 126, 0]]


def test_activation_scale_is_per_token():
    x = torch.tensor([[1.0, -0.5], [10.0, 2.5], [0.0, 0.0]])
    q = bitnet.quantize_activations(x)
    assert q.s[:, 0].tolist() == pytest.approx([127.0, 12.7, 127.0 / 1e-5], rel=1e-6)
    assert q.codes.tolist() == [[127, -64], [127, 32], [0, 0]]   # -63.5 → -64, 31.75 → 32


def test_activation_all_zero_token_uses_clamp():
    q = bitnet.quantize_activations(torch.zeros(2, 5))
    assert (q.codes == 0).all()
    assert torch.allclose(q.s, torch.full((2, 1), 127.0 / 1e-5))


def test_activation_paper_variant_scales_by_128():
    q = bitnet.quantize_activations(torch.tensor([[1.0, 0.5, -1.0]]), variant="paper")
    assert q.codes.tolist() == [[127, 64, -128]]   # 128 clamps to 127; -128 fits


def test_weight_boundaries_and_clamp():
    # Σ|W| = 8 over 8 entries: mean|W| = 1, s = 1, so ±0.5 and ±1.5 are exact ties.
    w = torch.tensor([[0.5, -0.5, 1.5, -1.5], [0.0, 0.0, 1.0, -3.0]])
    q = bitnet.quantize_weights(w)
    assert q.s.item() == 1.0
    assert q.codes.tolist() == [[0, 0, 1, -1], [0, 0, 1, -1]]
    # Scaling by a power of two keeps every tie exact.
    q2 = bitnet.quantize_weights(w * 2.0 ** -10)
    assert q2.s.item() == 1024.0 and q2.codes.tolist() == q.codes.tolist()


def test_weight_mean_clamp_for_tiny_and_zero_tensors():
    assert (bitnet.quantize_weights(torch.zeros(3, 4)).codes == 0).all()
    q = bitnet.quantize_weights(torch.full((2, 2), 1e-7))
    assert q.s.item() == pytest.approx(1e5)
    assert (q.codes == 0).all()       # 1e-7 · 1e5 = 0.01 → 0


def test_weight_all_zero_row_stays_zero():
    w = torch.randn(4, 16, generator=torch.Generator().manual_seed(0))
    w[2] = 0
    assert (bitnet.quantize_weights(w).codes[2] == 0).all()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_inputs_are_refused(bad):
    w = torch.randn(3, 4)
    w[1, 2] = bad
    with pytest.raises(ValueError, match=r"weight contains 1 non-finite value.*index \(1, 2\)"):
        bitnet.quantize_weights(w)
    with pytest.raises(ValueError, match="activations contains 1 non-finite"):
        bitnet.quantize_activations(w)


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="'papr'"):
        bitnet.quantize_weights(torch.ones(2, 2), variant="papr")


def _random_layer(seed, out_features=48, in_features=200, tokens=17):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_features, in_features, generator=g) * 0.02
    x = torch.randn(tokens, in_features, generator=g) * torch.logspace(-2, 2, tokens)[:, None]
    x[3] = 0          # all-zero token
    w[5] = 0          # all-zero row
    return w, x


@pytest.mark.parametrize("seed", range(5))
def test_integer_accumulators_equal_float_reference_exactly(seed):
    w, x = _random_layer(seed)
    layer = bitnet.BitLinear158(w.shape[1], w.shape[0])
    with torch.no_grad():
        layer.weight.copy_(w)
    view = bitnet.linear_view(w, x)

    # Recover the reference's integer operands from its fake-quantized tensors, independently of the view.
    xq = bitnet.quantize_activations(x)
    wq = bitnet.quantize_weights(w)
    x_ints = xq.dequantized().double() * xq.s.double()
    w_ints = wq.dequantized().double() * wq.s.double()
    assert (x_ints - x_ints.round()).abs().max() < 1e-3 and (w_ints - w_ints.round()).abs().max() < 1e-3
    acc_ref = (x_ints.round() @ w_ints.round().T).numpy()   # exact in float64 at these sizes

    acc = view.accumulate()["main"]
    assert acc.dtype == np.int64
    np.testing.assert_array_equal(acc, acc_ref.astype(np.int64))

    # Outputs agree to float32 rounding: bound the error by K ulps of the magnitude sum.
    y_ref = layer(x).detach().double().numpy()
    y_int = view.output().astype(np.float64)
    magnitude = (xq.dequantized().abs() @ wq.dequantized().abs().T).double().numpy()
    bound = 4 * w.shape[1] * np.finfo(np.float32).eps * magnitude + 1e-30
    assert (np.abs(y_int - y_ref) <= bound).all()


def test_float_reference_matches_official_formula_by_hand():
    # One token, two outputs, values picked so every step is exact in float32.
    w = torch.tensor([[1.0, -1.0, 0.25, 0.0], [2.0, 0.5, -0.25, -0.5]])   # mean|W| = 0.6875
    x = torch.tensor([[4.0, -2.0, 1.0, 0.0]])
    layer = bitnet.BitLinear158(4, 2)
    with torch.no_grad():
        layer.weight.copy_(w)
    # s_w = 1/0.6875; W·s_w = [[1.45,-1.45,.36,0],[2.9,.73,-.36,-.73]] → [[1,-1,0,0],[1,1,0,-1]]
    assert bitnet.quantize_weights(w).codes.tolist() == [[1, -1, 0, 0], [1, 1, 0, -1]]
    # s_x = 127/4; x·s_x = [127, -63.5, 31.75, 0] → [127, -64, 32, 0]
    assert bitnet.quantize_activations(x).codes.tolist() == [[127, -64, 32, 0]]
    view = bitnet.linear_view(w, x)
    assert view.accumulate()["main"].tolist() == [[127 + 64, 127 - 64]]
    expected = np.array([[191, 63]], np.float32) / np.float32(127 / 4) * np.float32(0.6875)
    np.testing.assert_allclose(view.output(), expected, rtol=1e-6)
    np.testing.assert_allclose(layer(x).detach().numpy(), expected, rtol=1e-6)


def test_integer_view_declares_its_hardware():
    w, x = _random_layer(0)
    view = bitnet.linear_view(w, x)
    assert view.unit is UnitKind.TERNARY_MAC
    [main] = view.passes
    assert (main.act_bits, main.weight_bits) == (8, 2)
    assert view.acc_width == main.acc_width == ternary_accumulator_width(200, 8)
    assert set(np.unique(main.weight_codes)) <= {-1, 0, 1}


def test_integer_view_refuses_shape_mismatch():
    with pytest.raises(ValueError, match=r"x has 7 columns .* but 6 are needed"):
        bitnet.linear_view(torch.zeros(4, 6), torch.zeros(3, 7))
    with pytest.raises(ValueError, match="must be a 2-D matrix"):
        bitnet.linear_view(torch.zeros(4, 6), torch.zeros(6))


def test_scheme_registry():
    assert get_scheme("bitnet-b1.58").unit is UnitKind.TERNARY_MAC
    with pytest.raises(ValueError, match=r"unknown scheme 'bitnet'; known schemes: fp32, fp16, int8, bibert"):
        get_scheme("bitnet")


# -- BitNet v1 ----------------------------------------------------------------------------------------------

def test_v1_weights_centre_sign_and_beta():
    # mean W = 0.5; W - 0.5 = [[0.5, -1.5], [0, 1.0]]; the paper's Sign sends 0 to -1.
    w = torch.tensor([[1.0, -1.0], [0.5, 1.5]])
    q = bitnet.quantize_weights_v1(w)
    assert q.codes.tolist() == [[1, -1], [-1, 1]]
    assert q.beta.item() == 1.0                              # mean|W| of the un-centred tensor
    assert bitnet.quantize_weights_v1(w, zero_policy="pos").codes.tolist() == [[1, -1], [1, 1]]


def test_v1_activations_scale_by_qb_and_clip_to_127():
    q = bitnet.quantize_activations_v1(torch.tensor([[2.0, 1.0, -0.5, 0.00390625]]))
    # s = 128/2 = 64: [128 → 127, 64, -32, 0.25 → 0]
    assert q.codes.tolist() == [[127, 64, -32, 0]]


@pytest.mark.parametrize("seed", range(3))
def test_v1_integer_view_equals_float_reference(seed):
    w, x = _random_layer(seed)
    layer = bitnet.BitLinearV1(w.shape[1], w.shape[0])
    with torch.no_grad():
        layer.weight.copy_(w)
    view = bitnet.linear_view_v1(w, x)
    [main] = view.passes
    assert set(np.unique(main.weight_codes)) == {-1, 1}
    x_ln = torch.nn.functional.layer_norm(x, (x.shape[1],), eps=1e-5)
    xq = bitnet.quantize_activations_v1(x_ln)
    np.testing.assert_array_equal(main.act_codes, xq.codes.numpy())
    y_ref = layer(x).detach().double().numpy()
    y_int = view.output().astype(np.float64)
    magnitude = (xq.dequantized().abs().sum(dim=1, keepdim=True) * w.abs().mean()).double().numpy()
    assert (np.abs(y_int - y_ref) <= 4 * 200 * np.finfo(np.float32).eps * magnitude).all()


def test_trainable_layers_forward_exactly_the_quantized_values_and_pass_gradients():
    w, x = _random_layer(4)
    layer = bitnet.BitLinear158(w.shape[1], w.shape[0])
    with torch.no_grad():
        layer.weight.copy_(w)
    x = x.clone().requires_grad_(True)
    y = layer(x)
    frozen = bitnet.linear_view(w, x.detach()).output()
    with torch.no_grad():
        exact = torch.nn.functional.linear(bitnet.quantize_activations(x).dequantized(),
                                           bitnet.quantize_weights(w).dequantized())
    assert torch.equal(y.detach(), exact)                    # the STE does not perturb the forward by an ulp
    assert np.allclose(y.detach().numpy(), frozen, rtol=1e-4, atol=1e-6)
    y.sum().backward()
    # straight-through: d(sum y)/dW[o, j] = Σ_t xq[t, j] for every o, unchanged by the rounding
    xq = bitnet.quantize_activations(x.detach()).dequantized()
    torch.testing.assert_close(layer.weight.grad, xq.sum(0).expand_as(w))
    assert x.grad is not None and torch.isfinite(x.grad).all()
