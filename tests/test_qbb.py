"""QBB: cascaded initialisation, refinement, scale distillation, average bits and the integer view."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from models import qbb
from models.intops import dot_accumulator_width
from models.units import UnitKind

HAND_ROW = [[0.75, -0.25, 0.5, 0.0]]     # every value below is exact in float32


def _random_weight(seed, out_features=32, in_features=96):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(out_features, in_features, generator=g) * 0.02


# -- stage 1: cascaded initialisation -------------------------------------------------------------------------

def test_init_one_row_by_hand():
    w = torch.tensor(HAND_ROW)
    # N = 1: B1 = sign(W) with sign(0) → +1; α1 = (0.75 + 0.25 + 0.5 + 0)/4 = 0.375.
    q1 = qbb.qbb_init(w, 1)
    assert q1.bases.dtype == torch.int8 and q1.scales.dtype == torch.float32
    assert q1.bases.tolist() == [[[1, -1, 1, 1]]]
    assert q1.scales.tolist() == [[0.375]]
    # R1 = W − 0.375·B1 = [0.375, 0.125, 0.125, -0.375]: error 2·0.375² + 2·0.125² = 0.3125.
    assert qbb.reconstruction_error(w, q1) == 0.3125
    # N = 2: B2 = sign(R1) = [1, 1, 1, -1]; α2 = (0.375 + 0.125 + 0.125 + 0.375)/4 = 0.25.
    q2 = qbb.qbb_init(w, 2)
    assert q2.bases.tolist() == [[[1, -1, 1, 1]], [[1, 1, 1, -1]]]
    assert q2.scales.tolist() == [[0.375], [0.25]]
    # Σ α B = [0.625, -0.125, 0.625, 0.125]; the error is 4·0.125² = 0.0625 = 0.3125 − 4·0.25².
    assert q2.dequantized().tolist() == [[0.625, -0.125, 0.625, 0.125]]
    assert qbb.reconstruction_error(w, q2) == 0.0625
    assert q1.sign_zeros == q2.sign_zeros == 1          # the 0.0 of W; R1 has no zero


def test_init_sign_of_zero_follows_zero_policy():
    w = torch.tensor(HAND_ROW)
    # "neg": B1 = [1, -1, 1, -1]; R1 = W − 0.375·B1 = [0.375, 0.125, 0.125, 0.375]; B2 = all +1, α2 = 0.25.
    q = qbb.qbb_init(w, 2, zero_policy="neg")
    assert q.bases.tolist() == [[[1, -1, 1, -1]], [[1, 1, 1, 1]]]
    assert q.scales.tolist() == [[0.375], [0.25]]
    assert q.dequantized().tolist() == [[0.625, -0.125, 0.625, -0.125]]
    with pytest.raises(ValueError, match=r"zero_policy 'torch' would put sign\(0\) = 0 into a basis"):
        qbb.qbb_init(w, 2, zero_policy="torch")
    with pytest.raises(ValueError, match="zero_policy must be 'pos' or 'neg', not 'zero'"):
        qbb.qbb_init(w, 2, zero_policy="zero")


def test_init_zero_in_the_middle_of_the_cascade_and_all_zero_row():
    w = torch.tensor([[0.0, 0.0, 0.0], [1.0, -2.0, 3.0]])
    # Row 1: α1 = 2, R1 = [1−2, −2+2, 3−2] = [-1, 0, 1], so B2 meets sign(0) at column 1; α2 = 2/3.
    # Row 0 stays 0: every basis meets 3 zeros and gets α = 0. Zeros met: 3 (step 1) + 3 + 1 (step 2) = 7.
    q = qbb.qbb_init(w, 2)
    assert q.bases[1].tolist() == [[1, 1, 1], [-1, 1, 1]]
    assert qbb.qbb_init(w, 2, zero_policy="neg").bases[1].tolist() == [[-1, -1, -1], [-1, -1, 1]]
    assert q.scales[:, 0].tolist() == [0.0, 0.0]
    assert q.scales[:, 1].tolist() == pytest.approx([2.0, 2.0 / 3.0], rel=1e-7)
    assert q.sign_zeros == 7


def _grid(n_bases, rows, reps, seed):
    """Rows holding every one of the 2^N sign patterns ``reps`` times (shuffled), scale s_r = 2^-(r+3):
    ``W[r] = Σ_i 2^i·s_r·T_i[r]`` with T the true bases (LSB first)."""
    g = torch.Generator().manual_seed(seed)
    patterns = torch.tensor([[1 if (p >> i) & 1 else -1 for p in range(2 ** n_bases)] for i in range(n_bases)])
    truth = torch.empty((n_bases, rows, reps * 2 ** n_bases), dtype=torch.int8)
    for r in range(rows):
        cols = patterns.repeat(1, reps)
        truth[:, r] = cols[:, torch.randperm(cols.shape[1], generator=g)]
    s = torch.tensor([2.0 ** -(r + 3) for r in range(rows)])
    w = sum(2.0 ** i * s[:, None] * truth[i].float() for i in range(n_bases))
    return w, truth, s


@pytest.mark.parametrize("n_bases", [1, 2, 3, 4])
def test_balanced_uniform_grid_is_reconstructed_exactly(n_bases):
    # |W| takes s·1, s·3, …, s·(2^N − 1) equally often, so mean|W| = s·2^(N−1), and sign(W) is the top basis
    # (the lower ones add at most (2^(N−1) − 1)·s). The residual is the balanced (N−1)-basis grid: by induction
    # the cascade finds the true bases, MSB first, with α_k = 2^(N−1−k)·s, exactly.
    w, truth, s = _grid(n_bases, rows=3, reps=2, seed=n_bases)
    q = qbb.qbb_init(w, n_bases)
    for k in range(n_bases):
        assert torch.equal(q.bases[k], truth[n_bases - 1 - k])
        assert torch.equal(q.scales[k], 2.0 ** (n_bases - 1 - k) * s)
    assert torch.equal(q.dequantized(), w)
    assert qbb.reconstruction_error(w, q) == 0.0


def test_unbalanced_uniform_grid_is_representable_and_refinement_helps():
    # Random (unbalanced) bit patterns: the 4-bit grid is still Σ 2^i s B_i exactly, so least squares on the
    # true bases recovers α_i = 2^i·s_r; the greedy cascade is no longer exact.
    g = torch.Generator().manual_seed(7)
    truth = torch.where(torch.rand(4, 5, 64, generator=g) < 0.3, 1, -1).to(torch.int8)
    s = torch.tensor([2.0 ** -(r + 3) for r in range(5)])
    w = sum(2.0 ** i * s[:, None] * truth[i].float() for i in range(4))
    scales = qbb.optimal_scales(w, truth)
    for i in range(4):
        np.testing.assert_allclose(scales[i].numpy(), (2.0 ** i * s).numpy(), rtol=1e-6)
    assert qbb.reconstruction_error(w, qbb.QBBWeights(truth, scales)) < 1e-12 * float((w * w).sum())
    init = qbb.qbb_init(w, 4)
    e_init = qbb.reconstruction_error(w, init)
    assert e_init > 1e-6 * float((w * w).sum())
    assert qbb.reconstruction_error(w, qbb.qbb_refine(w, init, steps_per_phase=40)) < e_init


def test_init_error_never_grows_with_n():
    # One cascade step on row r: ‖R − αB‖² = ‖R‖² − 2α·Σ|R| + in·α² = ‖R‖² − in·α², as Σ|R| = in·α.
    w = _random_weight(1, 16, 64)
    previous = float((w.double() ** 2).sum())
    for n in range(1, 7):
        q = qbb.qbb_init(w, n)
        err = qbb.reconstruction_error(w, q)
        drop = 64 * float((q.scales[n - 1].double() ** 2).sum())
        assert err == pytest.approx(previous - drop, rel=1e-4)
        assert err < previous
        previous = err


# -- stage 2: refinement --------------------------------------------------------------------------------------

def test_optimal_scales_match_numpy_lstsq():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(6, 40, generator=g)
    bases = torch.where(torch.rand(3, 6, 40, generator=g) < 0.5, 1, -1).to(torch.int8)
    bases[1, 2] = bases[0, 2]             # rank-deficient rows: lstsq and pinv both give the minimum-norm answer
    bases[2, 4] = -bases[0, 4]
    got = qbb.optimal_scales(w, bases).numpy()
    assert got.shape == (3, 6) and got.dtype == np.float32
    for r in range(6):
        design = bases[:, r, :].double().numpy().T               # [in, N]
        expected, *_ = np.linalg.lstsq(design, w[r].double().numpy(), rcond=None)
        np.testing.assert_allclose(got[:, r], expected, rtol=1e-5, atol=1e-6)


def test_optimal_scale_of_one_sign_basis_is_the_init_scale():
    # For B = sign(W) the least-squares α is Σ|W|/in: the cascade's α1.
    w = _random_weight(4, 8, 50)
    init = qbb.qbb_init(w, 1)
    np.testing.assert_allclose(qbb.optimal_scales(w, init.bases).numpy(), init.scales.numpy(), rtol=1e-5)


@pytest.mark.parametrize("n_bases", [2, 3, 4])
def test_refinement_improves_on_init(n_bases):
    w = _random_weight(n_bases)
    init = qbb.qbb_init(w, n_bases)
    refined = qbb.qbb_refine(w, init, steps_per_phase=50)
    assert refined.bases.shape == init.bases.shape and refined.bases.dtype == torch.int8
    assert qbb.reconstruction_error(w, refined) < 0.995 * qbb.reconstruction_error(w, init)


@pytest.mark.parametrize("n_bases, lr", [(1, 1e-3), (3, 10.0), (4, 100.0)])
def test_refinement_never_increases_the_error(n_bases, lr):
    # A huge step size diverges; keeping the best state must still return something no worse than the input.
    w = _random_weight(10 + n_bases)
    init = qbb.qbb_init(w, n_bases)
    refined = qbb.qbb_refine(w, init, steps_per_phase=20, lr=lr)
    assert qbb.reconstruction_error(w, refined) <= qbb.reconstruction_error(w, init)


def test_refinement_with_outliers_keeps_bases_binary():
    # Outliers 300× the typical weight put latents far outside [-1, 1]; the bases must still be exactly ±1.
    w = _random_weight(12, 16, 64)
    w[::3, ::5] *= 300
    init = qbb.qbb_init(w, 3)
    refined = qbb.qbb_refine(w, init, steps_per_phase=20)
    assert set(refined.bases.unique().tolist()) == {-1, 1}
    assert qbb.reconstruction_error(w, refined) < qbb.reconstruction_error(w, init)


def test_refinement_without_steps_returns_the_input_and_is_deterministic():
    w = _random_weight(5)
    init = qbb.qbb_init(w, 3)
    assert qbb.qbb_refine(w, init, steps_per_phase=0) is init
    a = qbb.qbb_refine(w, init, steps_per_phase=10, seed=0)
    b = qbb.qbb_refine(w, init, steps_per_phase=10, seed=1)
    assert torch.equal(a.bases, b.bases) and torch.equal(a.scales, b.scales)


def test_refinement_with_closed_form_scales():
    w = _random_weight(6)
    init = qbb.qbb_init(w, 3)
    ls_init = qbb.QBBWeights(init.bases, qbb.optimal_scales(w, init.bases))
    refined = qbb.qbb_refine(w, init, steps_per_phase=30, closed_form_scales=True)
    assert qbb.reconstruction_error(w, refined) <= qbb.reconstruction_error(w, ls_init)
    np.testing.assert_allclose(refined.scales.numpy(), qbb.optimal_scales(w, refined.bases).numpy(),
                               rtol=1e-4, atol=1e-7)


def test_refinement_is_invariant_to_power_of_two_weight_scale():
    # W is normalised by a power of two, so 2^k·W refines to the same bases with scales × 2^k.
    w = _random_weight(8, 12, 40)
    a = qbb.qbb_refine(w, qbb.qbb_init(w, 2), steps_per_phase=15)
    b = qbb.qbb_refine(w * 64, qbb.qbb_init(w * 64, 2), steps_per_phase=15)
    assert torch.equal(a.bases, b.bases)
    assert torch.equal(a.scales * 64, b.scales)


# -- average bits ---------------------------------------------------------------------------------------------

def test_average_bits():
    assert qbb.average_bits(4096) == 4 + 4 * 16 / 4096 == 4.015625
    assert qbb.average_bits(128, n_bases=2, scale_bits=32) == 2.5          # 2 + 2·32/128
    assert qbb.qbb_init(torch.ones(3, 64), 3).average_bits() == 3.75       # 3 + 3·16/64
    with pytest.raises(ValueError, match="in_features must be a positive integer, not 0"):
        qbb.average_bits(0)


# -- stage 3: the layer and distillation ----------------------------------------------------------------------

def test_qbb_linear_by_hand():
    layer = qbb.QBBLinear(torch.tensor([[[1, -1]], [[1, 1]]], dtype=torch.int8), torch.tensor([[0.5], [0.25]]),
                          torch.tensor([1.0]))
    # B0·x = 2 − 4 = −2, B1·x = 6: 0.5·(−2) + 0.25·6 + 1 = 1.5.
    assert layer(torch.tensor([[2.0, 4.0]])).tolist() == [[1.5]]
    assert layer(torch.zeros(2, 3, 2)).shape == (2, 3, 1)
    assert {n for n, _ in layer.named_parameters()} == {"scales", "bias"}
    assert dict(layer.named_buffers())["bases"].dtype == torch.int8
    with pytest.raises(ValueError, match=r"input has 3 features .* the layer takes 2"):
        layer(torch.zeros(1, 3))
    no_bias = qbb.quantize_linear(nn.Linear(2, 3, bias=False), n_bases=2, refine_steps=0)
    assert no_bias.bias is None and set(no_bias.state_dict()) == {"scales", "bases"}
    assert no_bias(torch.ones(5, 2)).shape == (5, 3)


def test_qbb_linear_equals_linear_with_dequantized_weight():
    w = _random_weight(2, 10, 30)
    q = qbb.qbb_init(w, 3)
    b = torch.randn(10, generator=torch.Generator().manual_seed(0))
    x = torch.randn(4, 7, 30, generator=torch.Generator().manual_seed(1))
    y = qbb.QBBLinear.from_weights(q, b)(x)
    expected = torch.nn.functional.linear(x.double(), q.dequantized(torch.float64), b.double())
    np.testing.assert_allclose(y.detach().numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)


def test_quantize_linear():
    lin = nn.Linear(40, 12)
    with torch.no_grad():
        lin.weight.copy_(_random_weight(9, 12, 40))
    init = qbb.qbb_init(lin.weight, 2)
    q0 = qbb.quantize_linear(lin, n_bases=2, refine_steps=0)
    assert torch.equal(q0.bases, init.bases) and torch.equal(q0.scales.detach(), init.scales)
    assert torch.equal(q0.bias.detach(), lin.bias.detach())
    q1 = qbb.quantize_linear(lin, n_bases=2, refine_steps=30)
    assert qbb.reconstruction_error(lin.weight, q1.qbb_weights()) < qbb.reconstruction_error(lin.weight, init)
    with pytest.raises(TypeError, match="linear must be an nn.Linear, not Conv1d"):
        qbb.quantize_linear(nn.Conv1d(2, 2, 1))


class _Tiny(nn.Module):
    """Token ids → logits: an embedding, then two blocks (Linear + ReLU, Linear)."""

    def __init__(self, vocab=32, d=16, h=32):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(d, h), nn.ReLU()), nn.Linear(h, vocab)])

    def forward(self, tokens):
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return x


def _teacher_student(n_bases=1):
    torch.manual_seed(0)
    teacher = _Tiny()
    student = copy.deepcopy(teacher)
    student.blocks[0][0] = qbb.quantize_linear(teacher.blocks[0][0], n_bases=n_bases, refine_steps=0)
    student.blocks[1] = qbb.quantize_linear(teacher.blocks[1], n_bases=n_bases, refine_steps=0)
    return teacher, student


def _gap(student, teacher):
    tokens = torch.randint(0, 32, (64, 8), generator=torch.Generator().manual_seed(123))
    with torch.no_grad():
        return float(((student(tokens) - teacher(tokens)) ** 2).mean())


def _random_tokens(g):
    return torch.randint(0, 32, (16, 8), generator=g)


def test_distillation_lowers_the_gap_and_trains_only_scales():
    teacher, student = _teacher_student()
    teacher_state = copy.deepcopy(teacher.state_dict())
    student_state = copy.deepcopy(student.state_dict())
    student.train()
    before = _gap(student, teacher)
    losses = qbb.distill_scales(student, teacher, make_inputs=_random_tokens, steps=60, lr=1e-3,
                                select_fraction=0.5, seed=0)
    assert len(losses) == 60 and all(math.isfinite(v) for v in losses)
    assert _gap(student, teacher) < 0.9 * before
    for name, value in student.state_dict().items():
        assert torch.equal(value, student_state[name]) == (not name.endswith("scales")), name
    for name, value in teacher.state_dict().items():
        assert torch.equal(value, teacher_state[name]), name
    assert student.training and all(m.training for m in student.modules())     # modes restored
    assert all(p.requires_grad for p in student.parameters())


def test_distillation_with_generation_and_block_swapping():
    teacher, student = _teacher_student()
    original_blocks = list(student.blocks)
    calls = {"generate": 0, "swapped": 0, "hybrid_forwards": 0}

    def make_start_tokens(g):
        return torch.randint(0, 32, (16, 1), generator=g)

    def greedy(model, tokens, g):
        assert model is teacher
        calls["generate"] += 1
        for _ in range(5):
            tokens = torch.cat([tokens, model(tokens)[:, -1].argmax(-1, keepdim=True)], dim=1)
        return tokens

    def forward(model, tokens):
        if model is student:
            used = [student.blocks[j] is teacher.blocks[j] for j in range(2)]
            assert not all(used)                           # at least one student block always stays
            calls["swapped"] += any(used)
            calls["hybrid_forwards"] += 1
        return model(tokens)

    before = _gap(student, teacher)
    losses = qbb.distill_scales(student, teacher, make_inputs=make_start_tokens, forward=forward, steps=60,
                                lr=1e-3, select_fraction=0.25, generate=greedy,
                                swap_blocks=(student.blocks, teacher.blocks), swap_prob=1.0, seed=1)
    assert len(losses) == 60 and calls["generate"] == 60
    assert calls["swapped"] > 0
    assert list(student.blocks) == original_blocks and all(a is b for a, b in zip(student.blocks, original_blocks))
    assert _gap(student, teacher) < before


def test_distillation_trains_on_the_sequences_with_the_largest_gap():
    teacher, student = _teacher_student()
    batch = torch.randint(0, 32, (16, 8), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():                              # the gap per sequence, computed here independently
        gap = ((student(batch) - teacher(batch)) ** 2).mean(dim=(1, 2))
    expected = batch[gap.argsort(descending=True)[:4]]  # ceil(0.25·16) = 4
    seen = []

    def forward(model, tokens):
        if model is student:
            seen.append(tokens.clone())
        return model(tokens)

    qbb.distill_scales(student, teacher, make_inputs=lambda g: batch, forward=forward, steps=1, lr=1e-3,
                       select_fraction=0.25)
    assert len(seen) == 2 and torch.equal(seen[0], batch)   # the filter sees the whole batch, training the top 4
    assert torch.equal(seen[1], expected)


def test_distillation_refuses_bad_arguments():
    teacher, student = _teacher_student()
    kw = dict(make_inputs=_random_tokens, steps=2, lr=1e-3)
    with pytest.raises(ValueError, match="the student has no QBBLinear layer"):
        qbb.distill_scales(copy.deepcopy(teacher), teacher, **kw)
    with pytest.raises(ValueError, match="student and teacher must be different modules"):
        qbb.distill_scales(student, student, **kw)
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match=f"select_fraction must be in \\(0, 1\\], not {bad}"):
            qbb.distill_scales(student, teacher, select_fraction=bad, **kw)
    with pytest.raises(ValueError, match="two non-empty lists of equal length, not 2 student and 1 teacher"):
        qbb.distill_scales(student, teacher, swap_blocks=(student.blocks, nn.ModuleList([teacher.embed])), **kw)
    with pytest.raises(ValueError, match="swap_blocks\\[0\\] must be a ModuleList inside the student"):
        qbb.distill_scales(student, teacher, swap_blocks=(teacher.blocks, student.blocks), **kw)
    with pytest.raises(TypeError, match="make_inputs must return an integer tensor of token ids, not torch.float32"):
        qbb.distill_scales(student, teacher, make_inputs=lambda g: torch.zeros(2, 3), steps=1)
    with pytest.raises(ValueError, match="lr must be a positive finite number, not nan"):
        qbb.distill_scales(student, teacher, make_inputs=_random_tokens, steps=1, lr=float("nan"))


# -- integer hardware view ------------------------------------------------------------------------------------

def test_activation_quantizer_ties_round_half_to_even():
    # max|x| = 127 makes s = 127/127 = 1, so the .5 values are exact ties.
    q = qbb.quantize_activations(torch.tensor([[127.0, 2.5, -2.5, 0.5, -0.5, 1.5, 126.5, -127.0]]))
    assert q.s.item() == 1.0 and q.codes.dtype == torch.int8
    assert q.codes.tolist() == [[127, 2, -2, 0, 0, 2, 126, -127]]
    # 4 bits: q_max = 7, max|x| = 7 → s = 1; 2.5 → 2, 3.5 → 4, -0.5 → 0.
    assert qbb.quantize_activations(torch.tensor([[7.0, 2.5, 3.5, -0.5]]), act_bits=4).codes.tolist() == \
        [[7, 2, 4, 0]]
    zero = qbb.quantize_activations(torch.zeros(2, 3), act_bits=12)
    assert zero.codes.dtype == torch.int16 and (zero.codes == 0).all() and torch.isfinite(zero.s).all()


def test_view_by_hand():
    w = torch.tensor(HAND_ROW)                         # N = 2: B0 = [1,-1,1,1], B1 = [1,1,1,-1], α = 0.375, 0.25
    x = torch.tensor([[63.5, -32.0, 16.0, 0.0]])       # s_x = 127/63.5 = 2 → codes [127, -64, 32, 0]
    view = qbb.linear_view(w, x, n_bases=2, bias=torch.tensor([0.5]))
    assert view.pass_named("basis0").act_codes.tolist() == [[127, -64, 32, 0]]
    acc = view.accumulate()
    assert acc["basis0"].tolist() == [[127 + 64 + 32 + 0]]          # 223
    assert acc["basis1"].tolist() == [[127 - 64 + 32 - 0]]          # 95
    # (0.375·223 + 0.25·95)/2 + 0.5 = (83.625 + 23.75)/2 + 0.5 = 54.1875
    assert view.output().tolist() == [[54.1875]]


@pytest.mark.parametrize("seed, act_bits", [(0, 8), (1, 8), (2, 12)])
def test_view_is_exact_and_equals_qbb_linear(seed, act_bits):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(24, 100, generator=g) * 0.02
    w[5] = 0                                            # all-zero row: 100 zeros met by each of the 4 signs
    x = torch.randn(9, 100, generator=g) * torch.logspace(-2, 2, 9)[:, None]
    x[3] = 0
    b = torch.randn(24, generator=g)
    view = qbb.linear_view(w, x, bias=b, n_bases=4, act_bits=act_bits)
    q_max = 2 ** (act_bits - 1) - 1

    assert view.scheme == "qbb" and view.unit is UnitKind.BINARY_BASIS
    assert [p.name for p in view.passes] == ["basis0", "basis1", "basis2", "basis3"]
    assert view.zero_counts == {"weight": 400}
    assert "FP16 activations" in view.notes
    for p in view.passes:
        assert p.unit is UnitKind.BINARY_BASIS and p.weight_range == (-1, 1)
        assert set(np.unique(p.weight_codes)) == {-1, 1}
        assert np.abs(p.act_codes).max() <= q_max
    assert view.acc_width == dot_accumulator_width(100, (-1, 1), (-q_max, q_max))

    # Integer operands recovered from the fake-quantized activations, independently of the view.
    xq = qbb.quantize_activations(x, act_bits=act_bits)
    x_fq = xq.dequantized()
    x_ints = x_fq.double() * xq.s.double()
    assert (x_ints - x_ints.round()).abs().max() < 1e-3
    q = qbb.qbb_init(w, 4)
    acc = view.accumulate()
    for i in range(4):
        expected = (x_ints.round() @ q.bases[i].double().T).numpy()     # exact in float64 at these sizes
        assert acc[f"basis{i}"].dtype == np.int64
        np.testing.assert_array_equal(acc[f"basis{i}"], expected.astype(np.int64))

    # The output equals QBBLinear on the fake-quantized x, up to float32 rounding of K-term sums.
    y_ref = qbb.QBBLinear.from_weights(q, b)(x_fq).detach().double().numpy()
    y_int = view.output().astype(np.float64)
    magnitude = (x_fq.abs().double() @ q.dequantized(torch.float64).abs().T
                 + (q.scales.double().abs().sum(0) * x_fq.abs().double().sum(1, keepdim=True))
                 + b.abs().double()).numpy()
    bound = 8 * 100 * np.finfo(np.float32).eps * magnitude
    assert (np.abs(y_int - y_ref) <= bound).all()


def test_view_from_weights_matches_linear_view_with_refinement():
    w = _random_weight(11, 12, 48)
    x = torch.randn(5, 48, generator=torch.Generator().manual_seed(2))
    view = qbb.linear_view(w, x, n_bases=3, refine_steps=10)
    refined = qbb.qbb_refine(w, qbb.qbb_init(w, 3), steps_per_phase=10)
    direct = qbb.linear_view_from_weights(refined, x)
    for a, c in zip(view.passes, direct.passes):
        np.testing.assert_array_equal(a.weight_codes, c.weight_codes)
        np.testing.assert_array_equal(a.act_codes, c.act_codes)
    np.testing.assert_array_equal(view.output(), direct.output())


# -- bad inputs -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_inputs_are_refused(bad):
    w = torch.randn(3, 4)
    w[1, 2] = bad
    with pytest.raises(ValueError, match=r"weight contains 1 non-finite value.*index \(1, 2\)"):
        qbb.qbb_init(w)
    with pytest.raises(ValueError, match=r"x contains 1 non-finite"):
        qbb.linear_view(torch.randn(4, 3), w.T.contiguous())
    with pytest.raises(ValueError, match="activations contains 1 non-finite"):
        qbb.linear_view_from_weights(qbb.qbb_init(torch.randn(2, 4)), w)


def test_bad_shapes_types_and_options_are_refused():
    w = torch.randn(4, 6)
    q = qbb.qbb_init(w, 2)
    with pytest.raises(ValueError, match="weight must be a 2-D matrix"):
        qbb.qbb_init(torch.randn(6))
    with pytest.raises(TypeError, match="weight must be a floating-point tensor, not torch.int64"):
        qbb.qbb_init(torch.ones(2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="n_bases must be a positive integer, not 0"):
        qbb.qbb_init(w, 0)
    with pytest.raises(TypeError, match="n_bases must be a positive integer, not True"):
        qbb.qbb_init(w, True)
    with pytest.raises(ValueError, match=r"weight has shape \(4, 5\) but the bases are \[4, 6\]"):
        qbb.qbb_refine(torch.randn(4, 5), q)
    with pytest.raises(ValueError, match="lr must be a positive finite number, not 0"):
        qbb.qbb_refine(w, q, lr=0)
    with pytest.raises(ValueError, match="steps_per_phase must be a non-negative integer, not -1"):
        qbb.qbb_refine(w, q, steps_per_phase=-1)
    with pytest.raises(ValueError, match=r"bases have shape \(2, 4, 5\) but weight \(4, 6\)"):
        qbb.optimal_scales(w, torch.ones(2, 4, 5, dtype=torch.int8))
    with pytest.raises(ValueError, match=r"x has 7 columns .* but 6 are needed"):
        qbb.linear_view(w, torch.zeros(3, 7))
    with pytest.raises(ValueError, match="act_bits must be between 2 and 16"):
        qbb.linear_view(w, torch.zeros(3, 6), act_bits=17)
    with pytest.raises(ValueError, match="act_bits must be between 2 and 16"):
        qbb.linear_view_from_weights(q, torch.zeros(3, 6), act_bits=1)
    with pytest.raises(ValueError, match=r"bias has shape \(3,\) but \(4,\) is needed"):
        qbb.linear_view(w, torch.zeros(3, 6), bias=torch.zeros(3))
    with pytest.raises(ValueError, match=r"bases must be ±1, but hold 0 at index \(1, 2, 3\)"):
        bases = q.bases.clone()
        bases[1, 2, 3] = 0
        qbb.QBBWeights(bases, q.scales)
    with pytest.raises(ValueError, match=r"scales have shape \(2, 3\) but bases \(2, 4, 6\) need \(2, 4\)"):
        qbb.QBBWeights(q.bases, torch.ones(2, 3))
    with pytest.raises(TypeError, match="bases must be an int8 tensor"):
        qbb.QBBWeights(q.bases.float(), q.scales)
