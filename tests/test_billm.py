"""BiLLM: calibration Hessian, residual binarization, structural/split searches, compensation, eq. 14,
sequential model quantization and the integer hardware view."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from models import billm
from models.units import UnitKind

EPS32 = np.finfo(np.float32).eps


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _identity_hessian(n):
    return 2 * torch.eye(n)


# -- Hessian accumulation ------------------------------------------------------------------------------------

def test_hessian_matches_direct_computation_per_sample_and_per_token():
    g = _gen(0)
    x1, x2 = torch.randn(2, 5, 8, generator=g), torch.randn(3, 5, 8, generator=g)
    X = torch.cat([x1.reshape(-1, 8), x2.reshape(-1, 8)]).double()       # 25 tokens in 5 sequences
    direct = 2 * X.T @ X

    acc = billm.HessianAccumulator(8)                                     # official code: N counts sequences
    acc.add_batch(x1)
    acc.add_batch(x2)
    assert (acc.nsamples, acc.tokens) == (5, 25)
    torch.testing.assert_close(acc.hessian.double(), direct / 5, rtol=1e-5, atol=1e-5)

    acc_t = billm.HessianAccumulator(8, count="tokens")
    acc_t.add_batch(x1)
    acc_t.add_batch(x2.reshape(-1, 8))
    assert acc_t.nsamples == 25
    torch.testing.assert_close(acc_t.hessian.double(), direct / 25, rtol=1e-5, atol=1e-5)


def test_hessian_two_dimensional_batch_counts_as_one_sample():
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    acc = billm.HessianAccumulator(2)
    acc.add_batch(x)
    # 2·XᵀX / 1 = 2·[[1+9, 2-3], [2-3, 4+1]] = [[20, -2], [-2, 10]]
    np.testing.assert_allclose(acc.hessian.numpy(), [[20.0, -2.0], [-2.0, 10.0]], rtol=1e-6)


def test_hessian_refuses_bad_batches():
    acc = billm.HessianAccumulator(8)
    with pytest.raises(ValueError, match="no calibration batch"):
        acc.hessian
    with pytest.raises(ValueError, match=r"shape \(4, 7\).*in_features = 8"):
        acc.add_batch(torch.zeros(4, 7))
    with pytest.raises(ValueError, match=r"empty calibration batch \(shape \(0, 8\)\)"):
        acc.add_batch(torch.zeros(0, 8))
    with pytest.raises(ValueError, match="calibration activations contains 1 non-finite"):
        acc.add_batch(torch.tensor([[0.0] * 7 + [float("nan")]]))
    with pytest.raises(TypeError, match="torch.Tensor"):
        acc.add_batch(np.zeros((2, 8)))
    with pytest.raises(ValueError, match="'rows'"):
        billm.HessianAccumulator(8, count="rows")
    assert acc.nsamples == 0            # nothing was half-added


# -- group binarization, by hand -----------------------------------------------------------------------------

def test_residual_binarize_code_order1_and_zero_policies():
    w = torch.tensor([[1.0, 2.0, 3.0, 6.0]])
    mask = torch.ones_like(w, dtype=torch.bool)
    # mu = 12/4 = 3; w - mu = [-2, -1, 0, 3]; alpha = 6/4 = 1.5; the third weight meets sign(0).
    r = billm.residual_binarize(w, mask, 1)
    assert r.mu.tolist() == [[3.0]] and r.alpha.tolist() == [[1.5]]
    assert r.signs.tolist() == [[[-1, -1, 0, 1]]] and r.zeros == 1
    assert r.q.tolist() == [[1.5, 1.5, 3.0, 4.5]]
    assert billm.residual_binarize(w, mask, 1, zero_policy="pos").q.tolist() == [[1.5, 1.5, 4.5, 4.5]]
    assert billm.residual_binarize(w, mask, 1, zero_policy="neg").q.tolist() == [[1.5, 1.5, 1.5, 4.5]]


def test_residual_binarize_code_order2():
    w = torch.tensor([[1.0, 2.0, 3.0, 6.0]])
    r = billm.residual_binarize(w, torch.ones_like(w, dtype=torch.bool), 2)
    # order 1 as above: q1 = [1.5, 1.5, 3, 4.5]; residual [-0.5, 0.5, 0, 1.5], mu2 = 1.5/4 = 0.375,
    # residual - mu2 = [-0.875, 0.125, -0.375, 1.125], alpha2 = 2.5/4 = 0.625, q2 = [-0.25, 1, -0.25, 1].
    assert r.mu.tolist() == [[3.0, 0.375]] and r.alpha.tolist() == [[1.5, 0.625]]
    assert r.signs[1].tolist() == [[-1, 1, -1, 1]]
    assert r.q.tolist() == [[1.25, 2.5, 2.75, 5.5]]


def test_residual_binarize_paper_has_no_mean_and_maps_zero_by_policy():
    w = torch.tensor([[-1.0, 0.0, 2.0, 3.0]])
    mask = torch.ones_like(w, dtype=torch.bool)
    # alpha = (1 + 0 + 2 + 3)/4 = 1.5, B = sign(w); the paper's eq. 2 sends 0 to +1.
    r = billm.residual_binarize(w, mask, 1, center=False, zero_policy="pos")
    assert r.mu.tolist() == [[0.0]] and r.alpha.tolist() == [[1.5]]
    assert r.q.tolist() == [[-1.5, 1.5, 1.5, 1.5]] and r.zeros == 1
    assert billm.residual_binarize(w, mask, 1, center=False).q.tolist() == [[-1.5, 0.0, 1.5, 1.5]]


def test_residual_binarize_respects_the_mask_and_empty_rows():
    w = torch.tensor([[1.0, 2.0, 3.0, 6.0], [4.0, 0.0, 8.0, 100.0]])
    mask = torch.tensor([[True, True, False, False], [False, False, False, False]])
    r = billm.residual_binarize(w, mask, 2)
    # row 0 over {1, 2}: mu = 1.5, alpha = 0.5, q1 = [1, 2] exactly, then a zero residual (mu2 = alpha2 = 0).
    assert r.q.tolist() == [[1.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    assert r.alpha.tolist() == [[0.5, 0.0], [0.0, 0.0]] and r.mu.tolist() == [[1.5, 0.0], [0.0, 0.0]]
    assert r.signs[0].tolist() == [[-1, 1, 0, 0], [0, 0, 0, 0]]
    assert r.zeros == 2                   # the order-2 residuals of row 0 are exactly 0


@pytest.mark.parametrize("center", [True, False])
def test_batched_residual_binarize_equals_each_problem_alone(center):
    # The searches evaluate all candidates in one batched call; each must be bit-identical to its own call.
    g = torch.Generator().manual_seed(5)
    w = torch.randn(40, 128, generator=g)
    masks = torch.rand(7, 40, 128, generator=g) < torch.linspace(0.0, 1.0, 7)[:, None, None]
    batched = billm.residual_binarize(w, masks, 2, center=center)
    alone = [billm.residual_binarize(w, m, 2, center=center) for m in masks]
    assert torch.equal(batched.q, torch.stack([r.q for r in alone]))
    assert torch.equal(batched.alpha, torch.stack([r.alpha for r in alone]))
    assert torch.equal(batched.mu, torch.stack([r.mu for r in alone]))
    assert torch.equal(batched.signs, torch.stack([r.signs for r in alone], dim=1))
    assert batched.zeros == sum(r.zeros for r in alone)


def test_split_groups_threshold_ties():
    v = torch.tensor([[0.5, 1.0, 1.5, 9.0]])
    salient = torch.tensor([[False, False, False, True]])
    conc, sparse = billm.split_groups(v, salient, 1.0)
    # code: sparse is |s| >= p, so the tie at 1.0 is sparse; the salient entry is in neither group.
    assert conc.tolist() == [[True, False, False, False]] and sparse.tolist() == [[False, True, True, False]]
    conc, sparse = billm.split_groups(-v, salient, 1.0, variant="paper")
    # paper: concentrated is [-p, p], so the tie at |w| = 1.0 is concentrated.
    assert conc.tolist() == [[True, True, False, False]] and sparse.tolist() == [[False, False, True, False]]


def test_sign_binarize_by_hand():
    w = torch.tensor([[1.0, -3.0, 0.0, 2.0]])       # mean|w| = 1.5
    assert billm.sign_binarize(w).tolist() == [[1.5, -1.5, 0.0, 1.5]]
    assert billm.sign_binarize(w, zero_policy="pos").tolist() == [[1.5, -1.5, 1.5, 1.5]]


# -- the full algorithm --------------------------------------------------------------------------------------

def _layer(seed, out_features=64, in_features=256, tokens=512):
    g = _gen(seed)
    w = torch.randn(out_features, in_features, generator=g)
    x = torch.randn(tokens, in_features, generator=g)
    acc = billm.HessianAccumulator(in_features)
    acc.add_batch(x)
    return w, x, acc.hessian


@pytest.mark.parametrize("variant", ["code", "paper"])
def test_dequantized_is_alpha_sign_plus_mu_per_group(variant):
    g = _gen(1)
    w = torch.randn(4, 12, generator=g)
    wq = billm.billm_quantize(w, _identity_hessian(12), variant=variant)
    q = wq.dequantized()
    assert wq.n_blocks == 1 and wq.groups.shape == (4, 12)
    # Independent float64 recomputation from the group masks alone.
    w64 = w.double()
    for g_id, name in enumerate(billm.GROUPS):
        mask = wq.group_mask(name)
        for r in range(4):
            vals = w64[r][mask[r]]
            if vals.numel() == 0:
                continue
            expected = torch.zeros_like(vals)
            residual = vals.clone()
            for order in range(billm.ORDERS[g_id]):
                mu = residual.mean() if variant == "code" else torch.tensor(0.0, dtype=torch.float64)
                alpha = (residual - mu).abs().mean()
                s = torch.sign(residual - mu)
                if variant == "paper":
                    s[s == 0] = 1
                expected += alpha * s + mu
                residual = vals - expected
                assert wq.alpha[r, 0, g_id, order].item() == pytest.approx(alpha.item(), rel=1e-5, abs=1e-7)
                assert wq.mu[r, 0, g_id, order].item() == pytest.approx(mu.item(), rel=1e-5, abs=1e-7)
            torch.testing.assert_close(q[r][mask[r]].double(), expected, rtol=1e-5, atol=1e-6)
    # Codes: ±1 inside (no exact ties here), order 2 only in the salient group.
    assert set(wq.signs[0].unique().tolist()) == {-1, 1}
    assert (wq.signs[1][~wq.group_mask("salient")] == 0).all()
    assert set(wq.signs[1][wq.group_mask("salient")].unique().tolist()) <= {-1, 1}
    # Bit-exact: the sum of the per-group residual binarizations on the final masks (the algorithm's q).
    kw = dict(center=variant == "code", zero_policy=wq.zero_policy)
    q_alg = sum(billm.residual_binarize(w, wq.group_mask(n), billm.ORDERS[i], **kw).q
                for i, n in enumerate(billm.GROUPS))
    assert torch.equal(q, q_alg)


def test_constant_row_meets_sign_zero_and_is_stored_as_its_mean():
    w = torch.randn(3, 16, generator=_gen(2))
    w[1] = 0.5
    for policy in ("torch", "pos", "neg"):
        wq = billm.billm_quantize(w, _identity_hessian(16), zero_policy=policy)
        # Every group of row 1 has w - mu = 0 exactly, so alpha = 0 and q = mu = 0.5 whatever sign(0) is.
        assert wq.dequantized()[1].tolist() == [0.5] * 16
        code = {"torch": 0, "pos": 1, "neg": -1}[policy]
        salient = wq.group_mask("salient")[1]
        assert (wq.signs[0, 1] == code).all() and (wq.signs[1, 1][salient] == code).all()
        # Row 1 alone meets sign(0) 16 times at order 1 and once per salient column at order 2 (other rows
        # add theirs: a group holding one weight of a row always gives w - mu = 0).
        assert wq.zero_signs >= 16 + int(salient.sum())


@pytest.mark.parametrize("variant", ["code", "paper"])
def test_salient_search_picks_the_obviously_salient_column(variant):
    w = torch.randn(32, 128, generator=_gen(3)) * 0.1
    w[:, 37] *= 30
    wq = billm.billm_quantize(w, _identity_hessian(128), variant=variant)
    assert wq.salient_columns[0][0].item() == 37
    assert wq.group_mask("salient")[:, 37].all()


def test_salience_is_hessian_weighted():
    # Equal-sized weights, but input 90 carries 10⁴ times the energy: its Hc_jj is tiny, so w²/Hc_jj² ranks it first.
    w = torch.randn(32, 128, generator=_gen(4))
    h = torch.eye(128)
    h[90, 90] = 1e4
    assert billm.billm_quantize(w, h).salient_columns[0][0].item() == 90
    assert billm.billm_quantize(w, h, salient_metric="magnitude").salient_columns[0][0].item() != 90


@pytest.mark.parametrize("variant", ["code", "paper"])
def test_split_puts_the_tails_in_the_sparse_group(variant):
    w = torch.randn(64, 128, generator=_gen(5))
    # With H ∝ I every Hc_jj is equal, so the code's split on S = w²/Hc_jj² is a split on |w| as well.
    wq = billm.billm_quantize(w, _identity_hessian(128), variant=variant)
    conc, sparse = w[wq.group_mask("concentrated")].abs(), w[wq.group_mask("sparse")].abs()
    assert conc.numel() > 0 and sparse.numel() > 0
    assert sparse.min() >= conc.max()
    # The break point is one of the 10 %..90 % percentiles of the non-salient pool.
    frac_sparse = sparse.numel() / (conc.numel() + sparse.numel())
    assert 0.05 < frac_sparse < 0.95


def _ref_binarize(v, mask, order, center):
    """Float64 residual binarization, row by row (independent of models.billm)."""
    q = torch.zeros_like(v)
    for r in range(v.shape[0]):
        vals = v[r][mask[r]]
        if vals.numel() == 0:
            continue
        approx = torch.zeros_like(vals)
        for _ in range(order):
            res = vals - approx
            mu = res.mean() if center else 0.0
            approx = approx + (res - mu).abs().mean() * torch.sign(res - mu) + mu
        q[r][mask[r]] = approx
    return q


@pytest.mark.parametrize("variant", ["code", "paper"])
def test_searches_match_an_independent_float64_search(variant):
    g = _gen(15)
    w = torch.randn(16, 64, generator=g)
    x = torch.randn(256, 64, generator=g) * torch.logspace(-0.5, 0.5, 64)    # uneven input energies
    h = _hessian_of(x)
    wq = billm.billm_quantize(w, h, variant=variant, block_size=64)
    code = variant == "code"

    h64 = h.double() + 0.01 * torch.diagonal(h.double()).mean() * torch.eye(64, dtype=torch.float64)
    hc = torch.linalg.cholesky(torch.linalg.inv(h64), upper=True)
    w64 = w.double()
    s = w64 ** 2 / torch.diagonal(hc) ** 2                              # salience
    ranked = torch.argsort(s.sum(dim=0), descending=True)
    k = len(wq.salient_columns[0])
    assert wq.salient_columns[0].tolist() == ranked[:k].tolist()

    # Salient count: code = order-2 binarization of both parts of S, MSE on S; paper = order 1 on W.
    target, order = (s, 2) if code else (w64, 1)

    def mse(approx):
        return ((target - approx) ** 2).mean().item()

    errors = []
    for j in range(1, 50):
        m = torch.zeros(16, 64, dtype=torch.bool)
        m[:, ranked[:j]] = True
        errors.append(mse(_ref_binarize(target, m, order, code) + _ref_binarize(target, ~m, order, code)))
    assert errors[k - 1] <= min(errors) * (1 + 1e-5)

    # Break point: one of the 81 percentiles, least MSE of concentrated + sparse + order-2 salient.
    sal = wq.group_mask("salient")
    pool = (s * ~sal).abs().flatten() if code else w64[~sal].abs()
    candidates = np.quantile(pool.numpy(), np.linspace(0.1, 0.9, 81))
    values = s if code else w64
    q_sal = _ref_binarize(target, sal, 2, code)

    def split_error(p):
        a = values.abs()
        conc, sparse = ((a < p), (a >= p)) if code else ((a <= p), (a > p))
        conc, sparse = conc & ~sal, sparse & ~sal
        return mse(_ref_binarize(target, conc, 1, code) + _ref_binarize(target, sparse, 1, code) + q_sal)

    p = wq.split_points[0].item()
    assert np.min(np.abs(candidates - p)) <= 1e-5 * p
    assert split_error(p) <= min(split_error(c) for c in candidates) * (1 + 1e-5)


def test_compensation_reduces_output_error_on_correlated_calibration():
    g = _gen(0)
    z = torch.randn(1024, 16, generator=g)
    x = z @ torch.randn(16, 256, generator=g) + 0.1 * torch.randn(1024, 256, generator=g)   # low rank + noise
    w = torch.randn(32, 256, generator=g)
    acc = billm.HessianAccumulator(256)
    acc.add_batch(x)

    def out_err(q):
        return ((x @ (w - q).T) ** 2).mean().item()

    with_comp = out_err(billm.billm_quantize(w, acc.hessian).dequantized())
    without = out_err(billm.billm_quantize(w, acc.hessian, compensate=False).dequantized())
    assert with_comp < 0.85 * without          # measured: 0.65


def test_billm_beats_naive_sign_binarization():
    g = _gen(0)
    w = torch.randn(64, 256, generator=g) * 0.02
    w[:, torch.randperm(256, generator=g)[:4]] *= 8                     # a few outlier weight columns
    scales = torch.ones(256)
    scales[torch.randperm(256, generator=g)[:6]] = 20.0                # LLM-like outlier input channels
    x_cal = torch.randn(512, 256, generator=g) * scales
    x_test = torch.randn(256, 256, generator=g) * scales
    acc = billm.HessianAccumulator(256)
    acc.add_batch(x_cal)

    def out_err(q):
        return ((x_test @ (w - q).T) ** 2).mean().item()

    assert out_err(billm.billm_quantize(w, acc.hessian).dequantized()) < 0.5 * out_err(billm.sign_binarize(w))


def test_dead_inputs_are_zeroed_like_the_code():
    w, x, _ = _layer(6, out_features=16, in_features=160)
    x[:, 5] = 0
    acc = billm.HessianAccumulator(160)
    acc.add_batch(x)
    h = acc.hessian
    assert h[5, 5] == 0
    wq = billm.billm_quantize(w, h)
    w_dead = w.clone()
    w_dead[:, 5] = 0
    assert torch.isfinite(wq.dequantized()).all()
    assert torch.equal(wq.dequantized(), billm.billm_quantize(w_dead, h).dequantized())


def _compensated(w, h, q_head, end):
    """W[:, end:] after GPTQ compensation of columns [0, end) quantized to q_head, in float64 (independent)."""
    h = h.double().clone()
    h += 0.01 * torch.diagonal(h).mean() * torch.eye(h.shape[0], dtype=torch.float64)
    hc = torch.linalg.cholesky(torch.linalg.inv(h), upper=True)
    err = (w[:, :end].double() - q_head.double()) / torch.diagonal(hc)[:end]
    return w[:, end:].double() - err @ hc[:end, end:]


def test_narrow_last_block_and_no_salient_columns():
    w, x, h = _layer(7, out_features=8, in_features=130, tokens=300)
    wq = billm.billm_quantize(w, h)
    assert wq.n_blocks == 2 and wq.block_bounds(1) == (128, 130)
    assert len(wq.salient_columns[1]) == 1                       # a 2-column block can only try k = 1
    # The code's binarization of a group holding one weight per row gives mu = w, alpha = 0: block 1 stores
    # the compensated weights exactly, W₁ − Err₀·Hc[b₀, b₁] with Err₀ = (W₀ − Q₀)/diag(Hc).
    q = wq.dequantized()
    torch.testing.assert_close(q[:, 128:].double(), _compensated(w, h, q[:, :128], 128), rtol=1e-4, atol=1e-4)
    assert (wq.signs[:, :, 128:] == 0).all() and (wq.alpha[:, 1] == 0).all()
    view = billm.linear_view(w, x[:5], calibration=x)
    tail = [p.name for p in view.passes if p.name.startswith("b1.")]
    assert "b1.salient.sum" in tail and all(n.endswith(".sum") for n in tail)   # all-zero sign passes dropped

    none = billm.billm_quantize(w, h, salient_limit=1)
    assert none.salient_ratio == 0 and not none.group_mask("salient").any()
    assert none.average_bits().param_bits == 1.0


def test_hessian_scale_does_not_change_the_result():
    w, _, h = _layer(8, out_features=16, in_features=128)
    a, b = billm.billm_quantize(w, h), billm.billm_quantize(w, 4 * h)   # ×4 keeps float32 scaling exact
    assert torch.equal(a.groups, b.groups)
    torch.testing.assert_close(a.dequantized(), b.dequantized(), rtol=1e-5, atol=1e-6)


# -- average bits --------------------------------------------------------------------------------------------

def test_eq14_paper_example():
    n_param, n_storing = billm.eq14_bits(0.1, 128)
    assert n_param == pytest.approx(1.1, abs=1e-12)       # 2·0.1 + 1·0.9
    assert n_storing == 1.0078125                         # 1 + 1/128, the paper's "1.008"
    with pytest.raises(ValueError, match="1.5"):
        billm.eq14_bits(1.5, 128)


@pytest.mark.parametrize("variant, scale_bits", [("code", 1.0), ("paper", 0.5)])
def test_average_bits_from_actual_weights(variant, scale_bits):
    w, _, h = _layer(9)
    wq = billm.billm_quantize(w, h, variant=variant)
    bits = wq.average_bits()
    r = wq.group_mask("salient").float().mean().item()       # independent: the salient share of all weights
    assert bits.r_salient == pytest.approx(r)
    assert bits.param_bits == pytest.approx(1 + r)
    assert bits.flag_bits == 1.0078125
    # Both blocks have salient columns: per row and block 4 (group, order) slots × (alpha, mu) × 16 bits
    # = 128 bits per 128 weights for the code; alpha only for the paper.
    assert all(len(c) for c in wq.salient_columns)
    assert bits.scale_bits == scale_bits
    assert bits.storage_bits == pytest.approx(bits.param_bits + bits.flag_bits + scale_bits)


# -- bad inputs ----------------------------------------------------------------------------------------------

def test_quantize_refuses_bad_inputs():
    w = torch.zeros(4, 6)
    with pytest.raises(ValueError, match=r"hessian has shape \(5, 5\) but the weight \(4, 6\) needs \(6, 6\)"):
        billm.billm_quantize(w, torch.eye(5))
    with pytest.raises(ValueError, match="'papr'"):
        billm.billm_quantize(w, torch.eye(6), variant="papr")
    with pytest.raises(ValueError, match="block_size must be a positive integer, not 0"):
        billm.billm_quantize(w, torch.eye(6), block_size=0)
    with pytest.raises(ValueError, match="salient_limit"):
        billm.billm_quantize(w, torch.eye(6), salient_limit=-3)
    with pytest.raises(ValueError, match="percdamp"):
        billm.billm_quantize(w, torch.eye(6), percdamp=float("nan"))
    with pytest.raises(ValueError, match="'hess'"):
        billm.billm_quantize(w, torch.eye(6), salient_metric="hess")
    with pytest.raises(TypeError, match="blocksize"):
        billm.billm_quantize(w, torch.eye(6), blocksize=64)
    bad = torch.eye(6)
    bad[2, 3] = float("inf")
    with pytest.raises(ValueError, match=r"hessian contains 1 non-finite value.*\(2, 3\)"):
        billm.billm_quantize(w, bad)
    with pytest.raises(ValueError, match="not positive definite"):
        billm.billm_quantize(w, -torch.eye(6))


def test_view_refuses_bad_inputs():
    w, x = torch.randn(4, 6), torch.randn(3, 6)
    with pytest.raises(ValueError, match=r"empty calibration batch \(shape \(0, 6\)\)"):
        billm.linear_view(w, x, calibration=torch.zeros(0, 6))
    with pytest.raises(ValueError, match=r"shape \(5, 7\).*in_features = 6"):
        billm.linear_view(w, x, calibration=torch.zeros(5, 7))
    with pytest.raises(ValueError, match=r"x has 7 columns"):
        billm.linear_view(w, torch.zeros(3, 7))
    with pytest.raises(ValueError, match="act_bits .* not 17"):
        billm.linear_view(w, x, act_bits=17)
    with pytest.raises(ValueError, match=r"bias has shape \(5,\)"):
        billm.linear_view(w, x, bias=torch.zeros(5))
    with pytest.raises(ValueError, match="'papr'"):
        billm.linear_view(w, x, variant="papr")


# -- BiLLMLinear and sequential quantization -----------------------------------------------------------------

def test_billm_linear_forward_is_x_qT_plus_b():
    w, x, h = _layer(10, out_features=16, in_features=128, tokens=64)
    lin = nn.Linear(128, 16)
    with torch.no_grad():
        lin.weight.copy_(w)
    layer = billm.BiLLMLinear.from_linear(lin, h)
    q = billm.billm_quantize(w, h).dequantized()
    assert torch.equal(layer.weight, q)
    torch.testing.assert_close(layer(x), x @ q.T + lin.bias.detach(), rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match=r"bias has shape \(3,\)"):
        billm.BiLLMLinear(layer.billm, torch.zeros(3))


def _two_layer_model(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(24, 40), nn.ReLU(), nn.Linear(40, 8))


def test_sequential_calibrates_each_linear_on_quantized_predecessors():
    model = _two_layer_model(0)
    reference = copy.deepcopy(model)
    batches = [torch.randn(2, 16, 24, generator=_gen(11)), torch.randn(2, 16, 24, generator=_gen(12))]

    def run(m):
        for xb in batches:
            m(xb)

    report = billm.quantize_model_sequential(model, [("0", model[0]), ("2", model[2])], run, block_size=16)

    # Independent replay: quantize layer 0 on the inputs, then layer 2 on the *quantized* layer 0's outputs.
    acc0 = billm.HessianAccumulator(24)
    for xb in batches:
        acc0.add_batch(xb)
    q0 = billm.BiLLMLinear.from_linear(reference[0], acc0.hessian, block_size=16)
    acc2 = billm.HessianAccumulator(40)
    for xb in batches:
        acc2.add_batch(torch.relu(q0(xb)))
    q2 = billm.BiLLMLinear.from_linear(reference[2], acc2.hessian, block_size=16)

    assert isinstance(model[0], billm.BiLLMLinear) and isinstance(model[2], billm.BiLLMLinear)
    assert torch.equal(model[0].weight, q0.weight) and torch.equal(model[2].weight, q2.weight)
    assert torch.equal(model[2].bias, reference[2].bias)
    # Calibrating layer 2 on the float layer 0 instead would give different weights: the test can tell.
    acc_fp = billm.HessianAccumulator(40)
    for xb in batches:
        acc_fp.add_batch(torch.relu(reference[0](xb)).detach())
    assert not torch.equal(billm.billm_quantize(reference[2].weight, acc_fp.hessian, block_size=16).dequantized(),
                           q2.weight)

    assert [r.name for r in report.layers] == ["0", "2"]
    r2 = report.layers[1]
    assert r2.calibration_tokens == 64
    h_in = torch.cat([torch.relu(q0(xb)).reshape(-1, 40) for xb in batches]).detach()
    delta = reference[2].weight.detach() - q2.weight
    assert r2.output_mse == pytest.approx(((h_in @ delta.T) ** 2).mean().item(), rel=1e-3)
    assert r2.weight_mse == pytest.approx((delta ** 2).mean().item(), rel=1e-6)
    assert r2.salient_ratio == report.weights["2"].salient_ratio
    overall = report.average_bits()
    assert min(r.bits.param_bits for r in report.layers) <= overall.param_bits <= max(
        r.bits.param_bits for r in report.layers)


def test_sequential_refuses_bad_arguments():
    model = _two_layer_model(1)
    with pytest.raises(ValueError, match="never called linear '2'"):
        billm.quantize_model_sequential(model, [("2", model[2])], lambda m: None)
    with pytest.raises(ValueError, match="no submodule '5'"):
        billm.quantize_model_sequential(model, [("5", model[2])], lambda m: m(torch.randn(3, 24)))
    with pytest.raises(ValueError, match=r"model.0 is not the module given for '0'"):
        billm.quantize_model_sequential(model, [("0", model[2])], lambda m: m(torch.randn(3, 24)))
    with pytest.raises(TypeError, match="blocksize"):
        billm.quantize_model_sequential(model, [("0", model[0])], lambda m: None, blocksize=64)
    assert isinstance(model[0], nn.Linear)          # refused before any work


# -- integer hardware view -----------------------------------------------------------------------------------

def test_activation_quantizer_rounds_half_to_even():
    # max|x| = 127 makes s = 1, so every .5 is an exact tie.
    q = billm.quantize_activations(torch.tensor([[127.0, 2.5, -2.5, 0.5, -0.5, 3.5, -127.0]]))
    assert q.s.item() == 1.0 and q.codes.tolist() == [[127, 2, -2, 0, 0, 4, -127]]
    q4 = billm.quantize_activations(torch.tensor([[7.0, 3.5, -0.5, 1.5], [0.0, 0.0, 0.0, 0.0]]), bits=4)
    assert q4.codes.tolist() == [[7, 4, 0, 2], [0, 0, 0, 0]]
    assert q4.s[1].item() == pytest.approx(7 / 1e-5)


def _view_bound(wq, x_deq, bias):
    """A bound on |Σ_j x_j·w_j| evaluation differences: scales and means taken in magnitude."""
    mag = torch.zeros(wq.out_features, wq.in_features)
    for b in range(wq.n_blocks):
        st, ed = wq.block_bounds(b)
        for g in range(3):
            size = wq.alpha[:, b, g].sum(dim=1) + wq.mu[:, b, g].abs().sum(dim=1)
            mag[:, st:ed] = torch.where(wq.groups[:, st:ed] == g, size[:, None], mag[:, st:ed])
    magnitude = (x_deq.abs().double() @ mag.double().T) + (0 if bias is None else bias.abs().double())
    return 8 * (wq.in_features + 16) * EPS32 * magnitude.numpy()


@pytest.mark.parametrize("variant", ["code", "paper"])
@pytest.mark.parametrize("seed", range(2))
def test_view_is_exact_and_equals_billm_linear_on_quantized_input(variant, seed):
    g = _gen(100 + seed)
    w = torch.randn(24, 200, generator=g) * 0.05
    x = torch.randn(9, 200, generator=g) * torch.logspace(-1, 1, 9)[:, None]
    x[4] = 0                                               # an all-zero token
    cal = torch.randn(300, 200, generator=g)
    bias = torch.randn(24, generator=g)
    view = billm.linear_view(w, x, bias=bias, calibration=cal, variant=variant)
    acc = billm.HessianAccumulator(200)
    acc.add_batch(cal)
    wq = billm.billm_quantize(w, acc.hessian, variant=variant)
    layer = billm.BiLLMLinear(wq, bias)

    assert view.scheme == "billm" and view.unit is UnitKind.BINARY_BASIS
    assert (view.tokens, view.in_features, view.out_features) == (9, 200, 24)
    assert view.zero_counts == {"weight": wq.zero_signs}
    assert "activations" in view.notes and "8-bit" in view.notes

    # Activation codes: round(x·127/max|x|) per token, computed here independently.
    s = 127 / x.abs().amax(dim=1, keepdim=True).clamp(min=1e-5)
    expected_codes = torch.round(x * s).numpy()
    for p in view.passes:
        st = p.k_offset
        np.testing.assert_array_equal(p.act_codes, expected_codes[:, st:st + p.k])
        acc_p = p.accumulate()
        assert acc_p.dtype == np.int64
        exact = p.act_codes.astype(np.float64) @ p.weight_codes.astype(np.float64).T   # exact at these sizes
        np.testing.assert_array_equal(acc_p, exact.astype(np.int64))

    # Pass structure: per block, salient o1/o2 sign passes, then concentrated and sparse; sums for the code.
    names = [p.name for p in view.passes]
    per_block = ["salient.o1.sign", "salient.o2.sign", "salient.sum", "concentrated.sign", "concentrated.sum",
                 "sparse.sign", "sparse.sum"]
    if variant == "paper":
        per_block = [n for n in per_block if not n.endswith(".sum")]
    assert names == [f"b{b}.{n}" for b in range(2) for n in per_block]
    for b, (st, k) in enumerate([(0, 128), (128, 72)]):
        block = [p for p in view.passes if p.name.startswith(f"b{b}.")]
        assert all(p.k_offset == st and p.k == k for p in block)
        for gname in billm.GROUPS:
            mask = wq.group_mask(gname)[:, st:st + k].numpy()
            for p in block:
                if p.name.startswith(f"b{b}.{gname}.") and p.name.endswith(".sign"):
                    assert set(np.unique(p.weight_codes)) <= {-1, 0, 1}
                    o = 1 if ".o2." in p.name else 0
                    assert (p.weight_codes[~mask] == 0).all()
                    np.testing.assert_array_equal(p.weight_codes[mask], wq.signs[o, :, st:st + k].numpy()[mask])
            if variant == "code":
                np.testing.assert_array_equal(view.pass_named(f"b{b}.{gname}.sum").weight_codes, mask.astype(np.int8))

    # Output: BiLLMLinear on the fake-quantized input, to float32 rounding.
    x_deq = torch.from_numpy(expected_codes).float() / s
    y_ref = layer(x_deq).detach().double().numpy()
    y_view = view.output().astype(np.float64)
    assert (np.abs(y_view - y_ref) <= _view_bound(wq, x_deq, bias) + 1e-30).all()
    np.testing.assert_allclose(y_view[4], bias.double().numpy(), rtol=1e-6)    # zero token: bias only


def test_view_output_is_close_to_the_float_layer_and_honours_act_bits():
    w, x, _ = _layer(13, out_features=16, in_features=128, tokens=32)
    layer_out = billm.BiLLMLinear(billm.billm_quantize(w, _hessian_of(x)))(x).detach().numpy()
    err8 = np.abs(billm.linear_view(w, x).output() - layer_out).max()
    err12 = np.abs(billm.linear_view(w, x, act_bits=12).output() - layer_out).max()
    assert err12 < err8 / 8                          # 4 more bits: about 16× finer activations
    view4 = billm.linear_view(w, x, act_bits=4)
    assert all(p.act_value_range == (-7, 7) for p in view4.passes)


def _hessian_of(x):
    acc = billm.HessianAccumulator(x.shape[1])
    acc.add_batch(x)
    return acc.hessian


def test_salient_limit_one_view_has_no_salient_passes():
    w, x, _ = _layer(14, out_features=8, in_features=128, tokens=16)
    view = billm.linear_view(w, x, salient_limit=1)
    assert [p.name for p in view.passes] == ["b0.concentrated.sign", "b0.concentrated.sum", "b0.sparse.sign",
                                             "b0.sparse.sum"]
