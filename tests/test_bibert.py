"""BiBERT binarizers, STEs, Bi-Attention, BAMM identities, integer views and DMD loss (official-code semantics)."""

import math

import numpy as np
import pytest
import torch

from models import bibert
from models.units import UnitKind

# Rows chosen so every mean and scale is exact in float32:
#   row 0 [1, 2, 3, 6]:    μ = 3,   centred [-2, -1, 0, 3], a = 12/4 = 3   (one exact zero)
#   row 1 [-1, 3, -1, 3]:  μ = 1,   centred [-2, 2, -2, 2], a = 8/4 = 2
#   row 2 [.5, .5, .5, .5]: μ = .5, centred all 0,          a = .5          (four exact zeros)
W = torch.tensor([[1.0, 2.0, 3.0, 6.0], [-1.0, 3.0, -1.0, 3.0], [0.5, 0.5, 0.5, 0.5]])
CODES = {
    "torch": [[-1, -1, 0, 1], [-1, 1, -1, 1], [0, 0, 0, 0]],
    "pos": [[-1, -1, 1, 1], [-1, 1, -1, 1], [1, 1, 1, 1]],
    "neg": [[-1, -1, -1, 1], [-1, 1, -1, 1], [-1, -1, -1, -1]],
}
POLICIES = ("torch", "pos", "neg")


def _sign(a: np.ndarray, zero_policy: str) -> np.ndarray:
    """Independent NumPy sign with a zero policy (the test's own, not the library's)."""
    s = np.sign(a)
    if zero_policy == "pos":
        s[a == 0] = 1
    elif zero_policy == "neg":
        s[a == 0] = -1
    return s


# -- quantizers ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("policy", POLICIES)
def test_weight_codes_scales_and_zero_policy(policy):
    q = bibert.binarize_weights(W, zero_policy=policy)
    assert q.codes.dtype == torch.int8
    assert q.codes.tolist() == CODES[policy]
    assert q.scale[:, 0].tolist() == [3.0, 2.0, 0.5]          # mean|W| of the un-centred rows
    assert q.zero_count == 5                                  # 1 in row 0 + 4 in row 2, whatever the policy
    np.testing.assert_array_equal(q.dequantized().numpy(), np.array(CODES[policy]) * np.array([[3], [2], [0.5]]))


def test_weight_scale_is_not_taken_after_centring():
    # Row [1, 3]: μ = 2, centred [-1, 1]. mean|W| = 2 (un-centred); mean|W - μ| would be 1.
    q = bibert.binarize_weights(torch.tensor([[1.0, 3.0]]))
    assert q.scale.item() == 2.0 and q.codes.tolist() == [[-1, 1]]


@pytest.mark.parametrize("policy, expected", [("torch", [0, 0, 1, -1]), ("pos", [1, 1, 1, -1]),
                                              ("neg", [-1, -1, 1, -1])])
def test_activation_sign_zero_policy(policy, expected):
    # -0.0 is a zero too; 1e-30 is a tiny positive, not a zero.
    q = bibert.binarize_activations(torch.tensor([0.0, -0.0, 1e-30, -2.5]), zero_policy=policy)
    assert q.codes.tolist() == expected and q.codes.dtype == torch.int8
    assert q.zero_count == 2


def test_embedding_rows_are_binarized_like_weights():
    emb = bibert.BinaryEmbedding.from_embedding(torch.nn.Embedding.from_pretrained(W.clone(), freeze=False))
    out = emb(torch.tensor([[2, 0, 1]]))
    # token 2 → 0.5·[0,0,0,0]; token 0 → 3·[-1,-1,0,1]; token 1 → 2·[-1,1,-1,1]
    assert out.tolist() == [[[0.0, 0.0, 0.0, 0.0], [-3.0, -3.0, 0.0, 3.0], [-2.0, 2.0, -2.0, 2.0]]]


# -- float reference layer ----------------------------------------------------------------------------------

@pytest.mark.parametrize("policy, expected", [
    # x = [1, -2, 0, 3] → sign "torch" [1, -1, 0, 1]; rows as CODES["torch"], scales [3, 2, .5], bias [.5, -1, 0]
    #   y0 = 3·(-1 + 1 + 0 + 1) + .5 = 3.5;  y1 = 2·(-1 - 1 + 0 + 1) - 1 = -3;  y2 = .5·0 + 0 = 0
    ("torch", [3.5, -3.0, 0.0]),
    # "pos": sign(x) = [1, -1, 1, 1]; row 0 [-1,-1,1,1] → 3·2 + .5 = 6.5; row 1 → 2·(-2) - 1 = -5; row 2 → .5·2 = 1
    ("pos", [6.5, -5.0, 1.0]),
])
def test_binary_linear_forward_by_hand(policy, expected):
    layer = bibert.BinaryLinear(4, 3, zero_policy=policy)
    with torch.no_grad():
        layer.weight.copy_(W)
        layer.bias.copy_(torch.tensor([0.5, -1.0, 0.0]))
    assert layer(torch.tensor([[1.0, -2.0, 0.0, 3.0]])).tolist() == [expected]


def test_binary_linear_is_bit_exact_to_the_official_expression():
    g = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(384, 512)
    with torch.no_grad():
        lin.weight.normal_(0, 0.04, generator=g)
        lin.bias.normal_(0, 1, generator=g)
    x = torch.randn(17, 384, generator=g)
    # Written out here: F.linear(sign(x), a·sign(W - μ)) and then "+ bias" (a fused addmm rounds differently).
    w = lin.weight.detach()
    wb = w.abs().mean(dim=-1, keepdim=True) * torch.sign(w - w.mean(dim=-1, keepdim=True))
    expected = torch.nn.functional.linear(torch.sign(x), wb) + lin.bias.detach()
    assert torch.equal(bibert.BinaryLinear.from_linear(lin)(x).detach(), expected)


def test_from_linear_copies_weight_and_bias():
    lin = torch.nn.Linear(6, 5)
    layer = bibert.BinaryLinear.from_linear(lin, zero_policy="neg")
    assert torch.equal(layer.weight, lin.weight) and torch.equal(layer.bias, lin.bias)
    assert layer.zero_policy == "neg" and layer.weight.data_ptr() != lin.weight.data_ptr()
    no_bias = bibert.BinaryLinear.from_linear(torch.nn.Linear(6, 5, bias=False))
    assert no_bias.bias is None
    with pytest.raises(TypeError, match="needs an nn.Linear, not Conv1d"):
        bibert.BinaryLinear.from_linear(torch.nn.Conv1d(1, 1, 1))


def test_forward_mode_code_reproduces_the_official_expression():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(64, 96, generator=g) * 0.04
    # The official expression, written out here: Wb.detach() - clamp(W - μ).detach() + clamp(W - μ).
    centred = w - w.mean(dim=-1, keepdim=True)
    wb = w.abs().mean(dim=-1, keepdim=True) * torch.sign(centred)
    c = centred.clamp(-1.0, 1.0)
    official = wb - c + c
    code = bibert.binary_weight_ste(w, forward_mode="code")
    exact = bibert.binary_weight_ste(w)
    assert torch.equal(code, official)
    assert torch.equal(exact, wb)
    differ = code != exact
    assert differ.any()                                      # the rounding is real, so the option matters
    assert ((code - exact).abs()[differ] <= 2 * torch.finfo(torch.float32).eps * c.abs().amax()).all()


# -- straight-through estimators ------------------------------------------------------------------------------

def test_linear_input_ste_passes_inside_closed_clip():
    # One output, weight row [1, -1, 1, -1, 1, -1, 1] (μ = 1/7 ≠ any entry), a = 1: ∂y/∂x_j = code_j·[|x_j| ≤ 1].
    layer = bibert.BinaryLinear(7, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0]]))
    x = torch.tensor([[-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5]], requires_grad=True)
    layer(x).sum().backward()
    # clamp's gradient includes its end points (torch.clamp backward): |x| = 1 passes, |x| = 1.5 does not.
    assert x.grad.tolist() == [[0.0, -1.0, 1.0, -1.0, 1.0, -1.0, 0.0]]


def test_weight_ste_is_the_gradient_of_the_centred_clamp():
    # W = [1, -0.5, 2.5, -3], μ = 0: inside mask [|W - μ| ≤ 1] = [1, 1, 0, 0] (1 is the end point, included).
    # Upstream G = [1, 2, 3, 4]: G·mask = [1, 2, 0, 0], row mean 0.75 → grad = [0.25, 1.25, -0.75, -0.75].
    w = torch.tensor([[1.0, -0.5, 2.5, -3.0]], requires_grad=True)
    wq = bibert.binary_weight_ste(w)
    # a = (1 + .5 + 2.5 + 3)/4 = 1.75; codes [1, -1, 1, -1]
    assert wq.tolist() == [[1.75, -1.75, 1.75, -1.75]]
    (wq * torch.tensor([[1.0, 2.0, 3.0, 4.0]])).sum().backward()
    assert w.grad.tolist() == [[0.25, 1.25, -0.75, -0.75]]
    w2 = w.detach().clone().requires_grad_()
    (bibert.binary_weight_ste(w2, forward_mode="code") * torch.tensor([[1.0, 2.0, 3.0, 4.0]])).sum().backward()
    assert w2.grad.tolist() == [[0.25, 1.25, -0.75, -0.75]]


def test_attention_sign_ste_cuts_the_end_points():
    x = torch.tensor([-1.0, -0.5, 0.0, 0.999, 1.0, 2.0], requires_grad=True)
    y = bibert.attention_sign_ste(x)
    assert y.tolist() == [-1.0, -1.0, 0.0, 1.0, 1.0, 1.0]
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0, 0.0]   # official BinaryQuantizer: ge(1)/le(-1) → 0


@pytest.mark.parametrize("strict, bits, grad", [
    (True, [0, 0, 0, 1, 1, 1], [0, 1, 1, 1, 0, 0]),            # code: x > 0, gradient |x| < 1
    (False, [0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]),           # paper: x ≥ 0, gradient |x| ≤ 1
])
def test_bool_ste(strict, bits, grad):
    x = torch.tensor([-1.0, -0.25, 0.0, 0.25, 1.0, 1.5], requires_grad=True)
    y = bibert.bool_ste(x, strict=strict)
    assert y.tolist() == bits
    y.sum().backward()
    assert x.grad.tolist() == grad


# -- Bi-Attention -------------------------------------------------------------------------------------------

def _hand_attention():
    # d_h = 4 (scale 1/2); sign(Q) = [1, 1, 1, 1].
    q = torch.tensor([[[[0.3, 2.0, 0.1, 5.0]]]])
    k = torch.tensor([[[[0.5, 1.0, -1.0, -2.0],      # [1,1,-1,-1]: dot 0, a tie (popcount = d_h/2) → A = 0
                        [1.0, 1.0, 1.0, -1.0],       # dot 2 → A = 1
                        [-1.0, -1.0, -1.0, 1.0],     # dot -2 → A = -1
                        [3.0, 3.0, 3.0, 3.0]]]])     # dot 4 → A = 2 - 10000, padded
    v = torch.tensor([[[[1.0, -1.0, 2.0, 0.0],       # sign "torch" [1, -1, 1, 0]
                        [-1.0, -1.0, 3.0, 4.0],      # [-1, -1, 1, 1]
                        [1.0, 1.0, 1.0, 1.0],
                        [5.0, 5.0, 5.0, 5.0]]]])
    mask = bibert.additive_mask(torch.tensor([[1, 1, 1, 0]]))
    return q, k, v, mask


@pytest.mark.parametrize("strict, policy, bits, context", [
    (True, "torch", [0, 1, 0, 0], [-1, -1, 1, 1]),            # only key 1 → sign(v1)
    (False, "torch", [1, 1, 0, 0], [0, -2, 2, 1]),            # v0 + v1 = [1-1, -1-1, 1+1, 0+1]
    (False, "pos", [1, 1, 0, 0], [0, -2, 2, 2]),              # sign(0) = +1 in v0
    (False, "neg", [1, 1, 0, 0], [0, -2, 2, 0]),              # sign(0) = -1 in v0
])
def test_bi_attention_by_hand(strict, policy, bits, context):
    q, k, v, mask = _hand_attention()
    out = bibert.bi_attention(q, k, v, mask, strict=strict, zero_policy=policy)
    assert out.scores.tolist() == [[[[0.0, 1.0, -1.0, -9998.0]]]]
    assert out.bits.tolist() == [[[bits]]]
    assert out.context.tolist() == [[[context]]]
    assert out.zero_counts == {"q": 0, "k": 0, "v": 1, "scores": 1}


def test_additive_mask():
    m = bibert.additive_mask(torch.tensor([[1, 0], [1, 1]]))
    assert m.shape == (2, 1, 1, 2) and m.flatten().tolist() == [0.0, -10000.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="must hold 0/1, but holds 2 at"):
        bibert.additive_mask(torch.tensor([[1, 2]]))


def _random_qkv(seed, batch=2, heads=3, n=12, d_h=64):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, n, d_h, generator=g) for _ in range(3))
    # Force popcount = d_h/2 ties: key 0 agrees with query 0 in exactly half of the dimensions.
    k[:, :, 0] = q[:, :, 0]
    k[:, :, 0, d_h // 2:] *= -1
    v[:, :, 1, :5] = 0.0                                      # exact zeros reach sign(V)
    q[0, 0, 2, 3] = 0.0
    keep = torch.ones(batch, n, dtype=torch.long)
    keep[:, -3:] = 0
    return q, k, v, bibert.additive_mask(keep)


def test_padding_never_reaches_the_context():
    q, k, v, mask = _random_qkv(0)
    out = bibert.bi_attention(q, k, v, mask)
    assert (out.bits[..., -3:] == 0).all()
    v2 = v.clone()
    v2[:, :, -3:] = torch.randn(2, 3, 3, 64)
    assert torch.equal(bibert.bi_attention(q, k, v2, mask).context, out.context)


def test_bi_attention_ties_follow_strict():
    q, k, v, mask = _random_qkv(1)
    strict = bibert.bi_attention(q, k, v, mask, strict=True)
    loose = bibert.bi_attention(q, k, v, mask, strict=False)
    assert (strict.scores[:, :, 0, 0] == 0).all()              # the forced ties
    assert (strict.bits[:, :, 0, 0] == 0).all() and (loose.bits[:, :, 0, 0] == 1).all()
    ties = strict.scores == 0
    assert strict.zero_counts["scores"] == int(ties.sum()) >= 6
    assert torch.equal(strict.bits, loose.bits * (~ties))


def test_bi_attention_is_differentiable():
    q, k, v, mask = _random_qkv(2)
    for t in (q, k, v):
        t.requires_grad_()
    bibert.bi_attention(q * 0.5, k * 0.5, v * 0.5, mask).context.sum().backward()
    for t in (q, k, v):
        assert t.grad is not None and torch.isfinite(t.grad).all() and (t.grad != 0).any()


# -- BAMM identities ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("a, v, expected", [
    # a·v = 1 - 1 + 1 = 1.  AND: v' = [1,0,0,1], pop(a AND v') = 2, pop(a) = 3 → 2·2 - 3 = 1.
    #   XNOR: (2a-1)·v = [1,-1,1,1]·[1,-1,-1,1] = 2, Σv = 0 → 2 >> 1 = 1.
    ([1, 0, 1, 1], [1, -1, -1, 1], 1),
    # a·v = -2.  AND: pop(a AND [0,0,1,1]) = 0, pop(a) = 2 → -2.  XNOR: [1,1,-1,-1]·v = -4, Σv = 0 → -4 >> 1 = -2.
    ([1, 1, 0, 0], [-1, -1, 1, 1], -2),
    # popcount(a) = 0: a·v = 0.  AND: 0 - 0.  XNOR: (-1)·v summed = -Σv = -2, + Σv = 0 → 0.
    ([0, 0, 0, 0], [1, 1, -1, 1], 0),
    # popcount(a) = n/2 with v all -1: a·v = -2.  AND: 0 - 2.  XNOR: [1,-1,1,-1]·(-1) = 0, Σv = -4 → -2.
    ([1, 0, 1, 0], [-1, -1, -1, -1], -2),
])
def test_bamm_identities_by_hand(a, v, expected):
    a_t = torch.tensor([a])
    v_t = torch.tensor(v)[:, None]
    assert bibert.bamm_and(a_t, v_t).item() == expected
    assert bibert.bamm_xnor(a_t, v_t).item() == expected


@pytest.mark.parametrize("seed", range(3))
def test_bamm_identities_equal_the_direct_product(seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, 2, (2, 3, 9, 16), generator=g)
    v = torch.randint(0, 2, (2, 3, 16, 5), generator=g) * 2 - 1
    a[0, 0, 0] = 0                                            # empty row
    a[0, 0, 1] = 1                                            # full row
    a[0, 0, 2] = torch.arange(16) % 2                         # popcount = n/2
    v[0, 0, :, 0] = 1                                         # all +1 column
    direct = torch.einsum("...nm,...md->...nd", a.double(), v.double()).long()   # independent float64 product
    np.testing.assert_array_equal(bibert.bamm_and(a, v).numpy(), direct.numpy())
    np.testing.assert_array_equal(bibert.bamm_xnor(a, v.to(torch.int8)).numpy(), direct.numpy())


def test_bamm_refuses_bad_operands():
    a, v = torch.tensor([[1, 0]]), torch.tensor([[1], [0]])
    with pytest.raises(ValueError, match=r"v must hold ±1 .* holds 0 at \(1, 0\)"):
        bibert.bamm_and(a, v)
    with pytest.raises(ValueError, match=r"a must hold bits 0/1, but holds 2"):
        bibert.bamm_xnor(torch.tensor([[2, 0]]), torch.tensor([[1], [1]]))
    with pytest.raises(TypeError, match="integer or bool tensor, not torch.float32"):
        bibert.bamm_and(a.float(), v)
    with pytest.raises(ValueError, match="do not form a matrix product"):
        bibert.bamm_and(a, torch.ones(3, 1, dtype=torch.long))


# -- integer views ------------------------------------------------------------------------------------------

def _grid_layer(seed, out_features=24, in_features=256, tokens=9):
    """Weights on a 2^-10 grid with 256 columns: row sums and means are exact in float32 and float64 alike, so
    the float64 reference below centres exactly as the float32 code does, exact zeros included."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(-50, 51, (out_features, in_features), generator=g).float() * 2.0 ** -10
    half = torch.randint(-50, 51, (in_features // 2,), generator=g).float() * 2.0 ** -10
    w[3] = torch.cat([half, -half])                           # μ = 0: every zero entry centres to exactly 0
    w[4] = 0.125                                              # constant row: all centred values are 0
    w[5] = 0.0                                                # all-zero row: a = 0
    x = torch.randint(-3, 4, (tokens, in_features), generator=g).float() * 0.25    # many exact zeros
    x[2] = 0.0
    bias = torch.randn(out_features, generator=g)
    return w, x, bias


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("seed", range(3))
def test_linear_view_accumulators_and_output(seed, policy):
    w, x, bias = _grid_layer(seed)
    view = bibert.linear_view(w, x, bias=bias, zero_policy=policy)

    w64, x64 = w.double().numpy(), x.double().numpy()
    centred = w64 - w64.mean(axis=1, keepdims=True)
    w_codes, x_codes = _sign(centred, policy), _sign(x64, policy)
    acc_ref = x_codes @ w_codes.T                               # float64, exact at K = 256
    acc = view.accumulate()["main"]
    assert acc.dtype == np.int64
    np.testing.assert_array_equal(acc, acc_ref.astype(np.int64))
    assert view.zero_counts == {"weight": int((centred == 0).sum()), "act": int((x64 == 0).sum())}
    assert view.zero_counts["weight"] >= 256 + 2               # rows 4 and 5 at least, plus row 3's zeros

    layer = bibert.BinaryLinear.from_linear(torch.nn.Linear(256, 24), zero_policy=policy)
    with torch.no_grad():
        layer.weight.copy_(w)
        layer.bias.copy_(bias)
    y_ref = layer(x).detach().double().numpy()
    y_int = view.output().astype(np.float64)
    a = np.abs(w64).mean(axis=1)
    magnitude = np.abs(x_codes) @ np.abs(w_codes).T * a + np.abs(bias.double().numpy())
    bound = 4 * 256 * np.finfo(np.float32).eps * magnitude + 1e-30
    assert (np.abs(y_int - y_ref) <= bound).all()


@pytest.mark.parametrize("policy, bits", [("torch", 2), ("pos", 1), ("neg", 1)])
def test_linear_view_declares_its_hardware(policy, bits):
    w, x, _ = _grid_layer(0)
    view = bibert.linear_view(w, x, zero_policy=policy)
    assert view.scheme == "bibert" and view.unit is UnitKind.XNOR_POPCOUNT
    [main] = view.passes
    assert (main.weight_bits, main.act_bits) == (bits, bits)
    assert main.weight_value_range == main.act_value_range == (-1, 1)
    assert view.acc_width == 10                                # |acc| ≤ 256 needs 10 signed bits
    values = {-1, 1} if policy != "torch" else {-1, 0, 1}
    assert set(np.unique(main.weight_codes)) == values and set(np.unique(main.act_codes)) == values


def test_linear_view_by_hand():
    # As test_binary_linear_forward_by_hand: acc = [1, -1, 0], y = acc·[3, 2, .5] + [.5, -1, 0] = [3.5, -3, 0].
    view = bibert.linear_view(W, torch.tensor([[1.0, -2.0, 0.0, 3.0]]), bias=torch.tensor([0.5, -1.0, 0.0]))
    assert view.accumulate()["main"].tolist() == [[1, -1, 0]]
    assert view.output().tolist() == [[3.5, -3.0, 0.0]]
    assert view.zero_counts == {"weight": 5, "act": 1}


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("policy", POLICIES)
def test_qk_view_equals_bi_attention_bits(strict, policy):
    q, k, v, mask = _random_qkv(3)
    out = bibert.bi_attention(q, k, v, mask, strict=strict, zero_policy=policy)
    total_ties = 0
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            view = bibert.qk_view(q[b, h], k[b, h], mask[b, 0], strict=strict, zero_policy=policy)
            [qk] = view.passes
            assert qk.unit is UnitKind.XNOR_POPCOUNT and qk.k == 64
            # the pass is the exact ±1 product, checked against an independent float64 product
            sq, sk = _sign(q[b, h].double().numpy(), policy), _sign(k[b, h].double().numpy(), policy)
            np.testing.assert_array_equal(view.accumulate()["qk"], (sq @ sk.T).astype(np.int64))
            np.testing.assert_array_equal(view.output(), out.bits[b, h].numpy())
            total_ties += view.zero_counts["scores"]
    assert total_ties == out.zero_counts["scores"] > 0


def test_qk_view_tie_by_hand():
    # popcount of agreements = 2 of d_h = 4 → acc = 0 → A = 0: strict 0, non-strict 1.
    q, k = torch.tensor([[1.0, 1.0, 1.0, 1.0]]), torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    assert bibert.qk_view(q, k).output().tolist() == [[0.0]]
    assert bibert.qk_view(q, k, strict=False).output().tolist() == [[1.0]]
    assert bibert.qk_view(q, k).zero_counts == {"q": 0, "k": 0, "scores": 1}


@pytest.mark.parametrize("identity", ["and", "xnor"])
@pytest.mark.parametrize("policy", POLICIES)
def test_av_view_equals_bi_attention_context(identity, policy):
    q, k, v, mask = _random_qkv(4)
    out = bibert.bi_attention(q, k, v, mask, zero_policy=policy)
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            view = bibert.av_view(out.bits[b, h], v[b, h], identity=identity, zero_policy=policy)
            assert view.unit is UnitKind.BAMM
            names = [p.name for p in view.passes]
            has_zeros = policy == "torch" and bool((v[b, h] == 0).any())
            base = ["and", "count"] if identity == "and" else ["xnor", "colsum"]
            assert names == base + (["zero"] if has_zeros else [])
            assert view.zero_counts == {"v": int((v[b, h] == 0).sum())}
            np.testing.assert_array_equal(view.output(), out.context[b, h].numpy())
            for p in view.passes:                              # BAMM operands are bits or ±1, never 0 in a ±1 slot
                lo, hi = p.weight_value_range
                assert set(np.unique(p.weight_codes)) <= ({0, 1} if lo == 0 else {-1, 1})


def test_av_view_zero_correction_by_hand():
    # bits [1, 1], sign(V) rows [1, 0] and [1, -1] ("torch"): context = [2, -1].
    bits, v = torch.tensor([[1.0, 1.0]]), torch.tensor([[3.0, 0.0], [2.0, -5.0]])
    # and: v' = [[1,0],[1,0]] → and = [2, 0]; count = [2, 2]; zero = [0, 1] → 2·and - count + zero = [2, -1]
    view = bibert.av_view(bits, v, identity="and")
    acc = view.accumulate()
    assert (acc["and"].tolist(), acc["count"].tolist(), acc["zero"].tolist()) == ([[2, 0]], [[2, 2]], [[0, 1]])
    assert view.output().tolist() == [[2.0, -1.0]]
    # xnor: zero coded +1 → v̂ = [[1,1],[1,-1]]; xnor = [2, 0]; colsum = [2, 0]; (2+2)/2 - 0 = 2, (0+0)/2 - 1 = -1
    view = bibert.av_view(bits, v, identity="xnor")
    acc = view.accumulate()
    assert (acc["xnor"].tolist(), acc["colsum"].tolist(), acc["zero"].tolist()) == ([[2, 0]], [[2, 0]], [[0, 1]])
    assert view.output().tolist() == [[2.0, -1.0]]


def test_av_view_rescale_rejects_odd_xnor_sums():
    view = bibert.av_view(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0], [-1.0]]), identity="xnor")
    acc = view.accumulate()
    acc["xnor"] = acc["xnor"] + 1
    with pytest.raises(ValueError, match="odd"):
        view.output(acc)


# -- DMD ----------------------------------------------------------------------------------------------------

def _layer(seed, shape=(2, 3, 5, 8)):
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(*shape, generator=g) for name in "qkv"}


def test_dmd_zero_for_identical_and_positive_otherwise():
    s = _layer(0)
    same = bibert.dmd_loss(s, {n: t.clone() for n, t in s.items()})
    assert same.item() == 0.0
    assert bibert.dmd_loss(s, _layer(1)).item() > 0.0
    # scale invariance: the teacher's activations times 3 give similarities times 9, the same directions
    scaled = bibert.dmd_loss(s, {n: 3 * t for n, t in s.items()})
    assert scaled.item() == pytest.approx(0.0, abs=1e-6)


def test_dmd_by_hand_with_and_without_floor():
    # One head, n = 2, d = 1. Student Q = [10, -20]: S = [[100, -200], [-200, 400]]; teacher Q = [1, 2]:
    # T = [[1, 2], [2, 4]], ‖T‖ = 5.
    qs = torch.tensor([10.0, -20.0]).reshape(1, 1, 2, 1)
    qt = torch.tensor([1.0, 2.0]).reshape(1, 1, 2, 1)
    t = [0.2, 0.4, 0.4, 0.8]
    # Floor -100 zeroes the two -200 entries: S → [100, 0, 0, 400], ‖S‖ = 100·√17.
    s = [1 / math.sqrt(17), 0.0, 0.0, 4 / math.sqrt(17)]
    expected = math.sqrt(sum((a - b) ** 2 for a, b in zip(s, t)))
    got = bibert.dmd_loss({"q": qs}, {"q": qt}, terms=("q",))
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # Without the floor: ‖S‖ = √(100² + 2·200² + 400²) = 500, S/‖S‖ = [.2, -.4, -.4, .8]; diff [0, -.8, -.8, 0].
    got = bibert.dmd_loss({"q": qs}, {"q": qt}, terms=("q",), floor=None)
    assert got.item() == pytest.approx(0.8 * math.sqrt(2), rel=1e-6)
    # The three terms add up.
    three = bibert.dmd_loss({n: qs for n in "qkv"}, {n: qt for n in "qkv"}, floor=None)
    assert three.item() == pytest.approx(3 * 0.8 * math.sqrt(2), rel=1e-6)


def test_dmd_normalization_granularity():
    # Two samples, 1×1 similarities: student [1, 4], teacher [4, 1].
    qs = torch.tensor([1.0, 2.0]).reshape(2, 1, 1, 1)
    qt = torch.tensor([2.0, 1.0]).reshape(2, 1, 1, 1)
    # "tensor" (official): [1, 4]/√17 - [4, 1]/√17 = [-3, 3]/√17 → √(18/17)
    tensor = bibert.dmd_loss({"q": qs}, {"q": qt}, terms="q")
    assert tensor.item() == pytest.approx(math.sqrt(18 / 17), rel=1e-6)
    # "matrix": each 1×1 matrix normalizes to 1 → 0
    assert bibert.dmd_loss({"q": qs}, {"q": qt}, terms="q", normalize="matrix").item() == 0.0


def test_dmd_uses_the_last_teacher_layer_of_each_block():
    student = [_layer(10), _layer(11)]
    # 4 teacher layers for 2 student layers: teacher layers 1 and 3 are compared, 0 and 2 are not.
    teacher = [_layer(20), student[0], _layer(21), student[1]]
    assert bibert.dmd_loss(student, teacher).item() == 0.0
    assert bibert.dmd_loss(student, [student[0], _layer(20), student[1], _layer(21)]).item() > 0.0
    with pytest.raises(ValueError, match="teacher's 3 layers must be a positive multiple of the student's 2"):
        bibert.dmd_loss(student, teacher[:3])


def test_dmd_gradient_is_finite_even_at_zero_distance():
    s = {n: t.requires_grad_() for n, t in _layer(0).items()}
    bibert.dmd_loss(s, {n: t.detach().clone() for n, t in s.items()}).backward()
    assert all(torch.isfinite(t.grad).all() for t in s.values())
    s2 = {n: t.detach().clone().requires_grad_() for n, t in s.items()}
    bibert.dmd_loss(s2, _layer(1)).backward()
    assert all((t.grad != 0).any() for t in s2.values())


def test_similarity_scales_by_root_d():
    x = torch.tensor([[[1.0, 1.0, 1.0, 1.0], [1.0, -1.0, 0.0, 0.0]]])
    # x·xᵀ = [[4, 0], [0, 2]], / √4
    assert bibert.similarity(x).tolist() == [[[2.0, 0.0], [0.0, 1.0]]]


# -- input validation ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_inputs_are_refused(bad):
    w = W.clone()
    w[1, 2] = bad
    with pytest.raises(ValueError, match=r"weight contains 1 non-finite value.*index \(1, 2\)"):
        bibert.binarize_weights(w)
    with pytest.raises(ValueError, match="activations contains 1 non-finite"):
        bibert.BinaryLinear(4, 3)(w)
    q, k, v, mask = _hand_attention()
    with pytest.raises(ValueError, match="v contains 1 non-finite"):
        bibert.bi_attention(q, k, v.masked_fill(v == 2.0, bad), mask)
    with pytest.raises(ValueError, match="teacher contains"):
        bibert.normalized_distance(torch.ones(2, 2), torch.full((2, 2), bad))


def test_unknown_options_are_refused():
    with pytest.raises(ValueError, match="zero_policy must be one of .* not 'zero'"):
        bibert.binarize_weights(W, zero_policy="zero")
    with pytest.raises(ValueError, match="zero_policy must be one of"):
        bibert.BinaryLinear(4, 3, zero_policy="zero")
    with pytest.raises(ValueError, match="forward_mode must be one of 'exact', 'code', not 'paper'"):
        bibert.BinaryLinear(4, 3, forward_mode="paper")
    with pytest.raises(ValueError, match="identity must be one of 'and', 'xnor', not 'or'"):
        bibert.av_view(torch.ones(1, 2), torch.ones(2, 3), identity="or")
    with pytest.raises(ValueError, match="normalize must be one of"):
        bibert.dmd_loss(_layer(0), _layer(1), normalize="row")
    with pytest.raises(ValueError, match="each DMD term must be one of .* not 'o'"):
        bibert.dmd_loss(_layer(0), _layer(1), terms=("q", "o"))


def test_shape_errors_are_refused():
    with pytest.raises(ValueError, match="must be a 2-D matrix"):
        bibert.binarize_weights(torch.ones(4))
    with pytest.raises(ValueError, match=r"x has 5 columns .* but 4 are needed"):
        bibert.linear_view(W, torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"bias has shape \(4,\), expected \(3,\)"):
        bibert.linear_view(W, torch.ones(2, 4), bias=torch.ones(4))
    with pytest.raises(ValueError, match="last dimension must be 4"):
        bibert.BinaryLinear(4, 3)(torch.ones(2, 5))
    q, k, v, mask = _hand_attention()
    with pytest.raises(ValueError, match=r"q must be \[batch, heads, seq, d_h\]"):
        bibert.bi_attention(q[0], k, v)
    with pytest.raises(ValueError, match="q and k differ in head size: 4 vs 3"):
        bibert.bi_attention(q, k[..., :3], v)
    with pytest.raises(ValueError, match="k and v differ in sequence length: 4 vs 3"):
        bibert.bi_attention(q, k, v[:, :, :3])
    with pytest.raises(ValueError, match=r"mask of shape \(1, 1, 1, 3\) does not broadcast"):
        bibert.bi_attention(q, k, v, mask[..., :3])
    with pytest.raises(ValueError, match=r"k has 3 columns"):
        bibert.qk_view(q[0, 0], k[0, 0, :, :3])
    with pytest.raises(ValueError, match=r"bits must hold 0/1, but holds 0.5"):
        bibert.av_view(torch.tensor([[0.5, 1.0]]), torch.ones(2, 3))
    with pytest.raises(ValueError, match="bits has 2 key columns but v has 3 rows"):
        bibert.av_view(torch.ones(1, 2), torch.ones(3, 3))
    with pytest.raises(ValueError, match="student .* and teacher .* shapes differ"):
        bibert.normalized_distance(torch.ones(2, 2), torch.ones(3, 3))
    with pytest.raises(ValueError, match="student similarity is all zero"):
        bibert.dmd_loss({"q": torch.zeros(1, 1, 2, 2)}, {"q": torch.ones(1, 1, 2, 2)}, terms="q")
