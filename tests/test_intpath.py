"""Integer-only deployment paths: accumulators bit-exact against the schemes' integer views, outputs within the
bound the fixed-point precision gives against the float references, the blocks stage by stage on random shapes
and on real all-MiniLM-L6-v2 weights."""

import numpy as np
import pytest
import torch

from models import intpath as P
from models import intpost as ip

torch.manual_seed(0)
RNG = np.random.default_rng(0)


def _rand(*shape, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale


def combine_bound(path: P.IntPath, name: str | None = None) -> np.ndarray:
    """The error of a ``combine``/``combine_rows`` output against the exact real ``Σ c·acc·r + b`` (the float
    scales taken as exact), derived here from the stage's fixed-point precision: the final rounding and the
    bias's (2^-out_frac together), each coefficient within 2^-(Fc+1) of its real value, each row scale within
    2^-(Fr+1)."""
    y = path[name or path.output]
    rec = path[y.inputs[0]].tensor
    rec = (rec if rec.ndim == 4 else rec[None]).astype(np.float64)          # [B, t, j, w]
    fc, fo = y.fracs["coef"], y.frac
    c = np.abs(y.aux["coef"]) * 2.0 ** -fc + 2.0 ** -(fc + 1)               # ≥ |real coefficient|, [B, w, j]
    absrec = np.abs(rec)
    if "rowmul" in y.fracs:
        fr = y.fracs["rowmul"]
        r = np.abs(path[y.inputs[1]].tensor.reshape(-1, 1)) * 2.0 ** -fr + 2.0 ** -(fr + 1)     # [t, 1]
        per = np.einsum("btjw,bwj->tj", absrec, c) * 2.0 ** -(fr + 1) \
            + absrec.sum(axis=(0, 3)) * (r * 2.0 ** -(fc + 1) + 2.0 ** -(fc + fr + 2))
    else:
        per = absrec.sum(axis=(0, 3)) * 2.0 ** -(fc + 1)
    return 2.0 ** -fo + per


def check_stages(path: P.IntPath) -> None:
    """Structure every compiler relies on: known kinds, inputs defined earlier, record words named, every POST
    reproduced from its own operands, B1 tensors holding bits, formats respected."""
    seen = set()
    for s in path.stages:
        assert s.kind in P.STAGE_KINDS
        assert all(i in seen for i in s.inputs), (s.name, s.inputs)
        if s.kind == "matmul":
            assert s.tensor.shape[-1] == len(s.fields), s.name
            assert s.weight in path.params or s.weight in seen, s.name
        if s.kind == "post" and s.op in ip.FUNCTIONS:
            assert np.array_equal(P.run_post(s, path.tensors()), s.tensor), s.name
        if s.fmt in ip.FORMATS:
            lo, hi = ip.FORMATS[s.fmt]
            assert s.tensor.dtype == np.int64 and lo <= s.tensor.min() and s.tensor.max() <= hi, s.name
        seen.add(s.name)


def check_accumulators(path: P.IntPath, views: dict | None = None) -> None:
    views = views or path.views
    assert views
    for stage, view in views.items():
        accs = path.accumulators(stage)
        for p in view.passes:
            assert np.array_equal(accs[p.name], p.accumulate()), (stage, p.name)


def check_billm_accumulators(path: P.IntPath, view) -> None:
    """BiLLM: every pass equal to its record word, except in rows where the pass's codes are all 0 inside a
    non-empty group (sign(0) under zero_policy "torch" for a group whose every weight equals its mean, so its α is
    0): the engine holds ±1 and sends +1 there, and the POST multiplies that word by a zero coefficient."""
    accs = path.accumulators("acc")
    coef = path["y"].aux["coef"]
    for p in view.passes:
        blk, word = path.pass_words["acc"][p.name]
        degenerate = ~p.weight_codes.any(axis=1)
        assert np.array_equal(accs[p.name][:, ~degenerate], p.accumulate()[:, ~degenerate]), p.name
        if p.name.endswith(".sign"):
            assert (coef[blk, word][degenerate] == 0).all(), p.name


# -- one linear of every scheme, random shapes -------------------------------------------------------------

def _reference_module(scheme, w, bias):
    """The scheme's float reference layer on the same weights."""
    from torch import nn
    lin = nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        lin.weight.copy_(w)
        lin.bias.copy_(bias)
    if scheme == "bibert":
        from models.bibert import BinaryLinear
        return BinaryLinear.from_linear(lin, zero_policy="pos")
    from models.apply import LINEAR_FACTORIES
    return LINEAR_FACTORIES[scheme](lin)


@pytest.mark.parametrize("scheme", ["bibert", "ternarybert", "bitnet-v1", "bitnet-b1.58", "int8", "qbb", "billm"])
def test_linear_path_is_exact_and_within_its_bound(scheme):
    t, d, o = 10, 200, 24                     # d > 128: BiLLM gets two column blocks
    x, w, bias = _rand(t, d, seed=1), _rand(o, d, scale=0.05, seed=2), _rand(o, scale=0.1, seed=3)
    path = P.LINEAR_PATHS[scheme](w, x, bias=bias)
    check_stages(path)
    if scheme == "billm":
        from models.billm import linear_view
        view = linear_view(w, x, bias=bias)
        check_billm_accumulators(path, view)
        assert path["acc"].tensor.shape == (2, t, o, 7) and path["y"].options == 2
    else:
        view = path.views["acc"]
        check_accumulators(path)
    assert path.out_frac == 16 and path.y_fixed.shape == (t, o)
    bound = combine_bound(path)
    ref = view.output().astype(np.float64)                       # the view's float32 rescale of the same integers
    slack = 1e-5 * np.abs(ref).max()                             # its own float32 roundings
    err = np.abs(path.y.astype(np.float64) - ref)
    assert (err <= bound + slack).all(), float((err - bound).max())
    assert bound.max() < 2e-3 * np.abs(ref).max()                # the precision is meaningful, not vacuous
    # … and the scheme's float reference layer (QBB and BiLLM on the fake-quantized input, as their views state)
    if scheme in ("qbb", "billm"):
        return
    with torch.no_grad():
        y_ref = _reference_module(scheme, w, bias)(x).numpy().astype(np.float64)
    assert np.abs(path.y - y_ref).max() <= bound.max() + 1e-4 * np.abs(y_ref).max()


def test_qbb_and_billm_against_their_float_layers_on_the_quantized_input():
    from models.billm import BiLLMLinear, HessianAccumulator, billm_quantize, quantize_activations
    from models.qbb import QBBLinear, qbb_init
    x, w, bias = _rand(8, 256, seed=4), _rand(16, 256, scale=0.05, seed=5), _rand(16, scale=0.1, seed=6)
    xq = quantize_activations(x).dequantized()
    qw = qbb_init(w, 3)
    path = P.qbb_linear(qw, x, bias=bias)
    with torch.no_grad():
        ref = QBBLinear.from_weights(qw, bias)(xq).numpy()
    assert np.abs(path.y - ref).max() <= combine_bound(path).max() + 1e-5 * np.abs(ref).max()
    assert path["acc"].fields == ("sums.s0", "sums.s1", "sums.s2")
    h = HessianAccumulator(256)
    h.add_batch(x)
    bw = billm_quantize(w, h.hessian)
    path = P.billm_linear(bw, x, bias=bias)
    with torch.no_grad():
        ref = BiLLMLinear(bw, bias)(xq).numpy()
    assert np.abs(path.y - ref).max() <= combine_bound(path).max() + 1e-5 * np.abs(ref).max()
    assert path["acc"].fields == P.BILLM_WORDS


def test_integer_paths_refuse_what_the_engines_cannot_hold():
    x, w = _rand(4, 16, seed=7), _rand(8, 16, seed=8)
    with pytest.raises(ValueError, match="zero_policy must be 'pos' or 'neg'"):
        P.bibert_linear(w, x, zero_policy="torch")
    with pytest.raises(ValueError, match="paper variant"):
        P.billm_linear(w, x, variant="paper")
    with pytest.raises(TypeError, match="floating-point"):
        P.bitnet_linear(w, x.to(torch.int64))


# -- thresholds -----------------------------------------------------------------------------------------------

def test_sign_thresholds_hand_values():
    k = 10
    # −b/a = −0.5: acc ≥ 0 is positive either way
    assert P.sign_thresholds([0.5], [0.25], k, zero_policy="neg").tolist() == [-1]
    assert P.sign_thresholds([0.5], [0.25], k, zero_policy="pos").tolist() == [-1]
    # −b/a = 2: acc = 2 gives y = 0, −1 under "neg" (acc > 2), +1 under "pos" (acc > 1)
    assert P.sign_thresholds([0.5], [-1.0], k, zero_policy="neg").tolist() == [2]
    assert P.sign_thresholds([0.5], [-1.0], k, zero_policy="pos").tolist() == [1]
    # zero scale: a constant bit; far thresholds are clamped to [−k−1, k]
    assert P.sign_thresholds([0, 0, 0, 0], [0.3, -0.3, 0.0, 0.0], k, zero_policy="pos").tolist()[:3] == [-11, 10, -11]
    assert P.sign_thresholds([0], [0.0], k, zero_policy="neg").tolist() == [10]
    assert P.sign_thresholds([1e-6], [1.0], k).tolist() == [-11]
    with pytest.raises(ValueError, match="non-negative scales"):
        P.sign_thresholds([-1.0], [0.0], k)


def test_sign_thresholds_equal_the_exact_sign_for_every_accumulator():
    k = 64
    a = (RNG.uniform(0, 0.1, 200)).astype(np.float32)
    b = (RNG.normal(0, 1.0, 200)).astype(np.float32)
    b[:20] = (a[:20].astype(np.float64) * RNG.integers(-k, k, 20)).astype(np.float32)   # ties on the grid
    acc = np.arange(-k, k + 1)
    for policy, zero in (("pos", 1), ("neg", 0)):
        thr = P.sign_thresholds(a, b, k, zero_policy=policy)
        y = a.astype(np.float64)[None] * acc[:, None] + b.astype(np.float64)[None]   # exact in float64
        want = np.where(y > 0, 1, np.where(y < 0, 0, zero))
        assert np.array_equal((acc[:, None] > thr[None]).astype(int), want)


# -- BiBERT attention block -----------------------------------------------------------------------------------

def _bibert_reference(x, ws, bs, heads, strict, zero_policy):
    """The float reference in float64 (exact for these sizes: ±a sums of ≤ 2^10 float32 terms)."""
    from models.bibert import BinaryLinear, bi_attention
    from torch import nn

    def lin(w, b):
        base = nn.Linear(w.shape[1], w.shape[0]).double()
        with torch.no_grad():
            base.weight.copy_(w)
            base.bias.copy_(b)
        return BinaryLinear.from_linear(base, zero_policy=zero_policy)

    n, d = x.shape
    xd = x.double()
    q, k, v = (lin(w, b)(xd).detach() for w, b in zip(ws[:3], bs[:3]))
    split = lambda t: t.view(1, n, heads, d // heads).transpose(1, 2)           # noqa: E731
    att = bi_attention(split(q), split(k), split(v), strict=strict, zero_policy=zero_policy)
    ctx = att.context.detach().transpose(1, 2).reshape(n, d)
    y = lin(ws[3], bs[3])(ctx).detach()
    return q, k, v, att, y


def _check_bibert_block(x, ws, bs, heads, strict, zero_policy):
    from models.quant import sign
    path = P.bibert_attention_block(x, *ws, bq=bs[0], bk=bs[1], bv=bs[2], bo=bs[3], heads=heads, strict=strict,
                                    zero_policy=zero_policy)
    check_stages(path)
    check_accumulators(path)
    n, d = x.shape
    dh = d // heads
    q, k, v, att, y = _bibert_reference(x, ws, bs, heads, strict, zero_policy)
    for nm, ref in (("q", q), ("k", k), ("v", v)):
        assert np.array_equal(2 * path[f"{nm}.sign"].tensor - 1, sign(ref, zero_policy).numpy()), nm
    qk = path["qk"].tensor                                                     # [h, n, n, (dot, bit)]
    assert qk.shape == (heads, n, n, 2) and np.abs(qk[..., 0]).max() <= dh and (qk[..., 0] % 2 == dh % 2).all()
    assert np.array_equal(path["attn.bits"].tensor, att.bits[0].numpy().astype(np.int64))
    assert np.array_equal(path["attn.bits"].tensor, qk[..., 1])               # the engine's bit is bool(A)
    ctx = path["ctx"].tensor
    assert np.array_equal(ctx[..., 0], att.context[0].numpy().astype(np.int64))
    assert np.abs(ctx[..., 0]).max() <= n and set(np.unique(ctx[..., 1])) <= {-1, 1}
    assert np.array_equal(2 * path["ctx.sign"].tensor - 1, ctx[..., 1])       # the BAMM's own sign word, as bits
    assert path["o.acc"].tensor.shape == (n, d, 1) and np.abs(path["o.acc"].tensor).max() <= d
    assert (np.abs(path.y - y.numpy()) <= combine_bound(path) + 1e-9).all()
    return path


@pytest.mark.parametrize("strict,zero_policy", [(True, "pos"), (False, "neg")])
def test_bibert_attention_block_random(strict, zero_policy):
    n, d, heads = 9, 48, 3
    ws = [_rand(d, d, scale=0.05, seed=10 + i) for i in range(4)]
    bs = [_rand(d, scale=0.05, seed=20 + i) for i in range(4)]
    path = _check_bibert_block(_rand(n, d, seed=30), ws, bs, heads, strict, zero_policy)
    assert path.names == ["x", "x.sign", "q.acc", "q.sign", "k.acc", "k.sign", "v.acc", "v.sign", "k.pack", "v.pack",
                          "qk", "attn.bits", "ctx", "ctx.sign", "o.acc", "o.y"]
    assert [path[s].kind for s in ("x.sign", "q.acc", "q.sign", "qk", "ctx", "o.y")] == \
           ["host", "matmul", "post", "matmul", "matmul", "post"]
    assert path["qk"].engine == {"threshold": "strict" if strict else "nonstrict"} and path["qk"].per_head


# -- real MiniLM weights ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def minilm():
    """MiniLM and the real inputs of a few of its linears on two evaluation sentences (real tokens only)."""
    from models.checkpoint import load_minilm
    from models.fidelity import embed, sentences, tokenize
    model = load_minilm()
    names = ["layers.0.attn.q", "layers.2.attn.q", "layers.0.ffn.up", "layers.0.ffn.down"]
    mods = dict(model.named_modules())
    seen = {}

    def keep(nm):
        def hook(_module, args, _output):
            seen.setdefault(nm, args[0].detach())          # returns None: the output stays the layer's own
        return hook

    hooks = [mods[nm].register_forward_hook(keep(nm)) for nm in names]
    ids, mask = tokenize(sentences("evaluation")[:2])
    embed(model, ids, mask)
    for h in hooks:
        h.remove()
    first = int(mask[0].sum())
    return model, {nm: t[0, :first] for nm, t in seen.items()}, {nm: t[mask.bool()] for nm, t in seen.items()}


def test_bibert_attention_block_on_minilm(minilm):
    model, one, _ = minilm
    attn = model.layers[0].attn
    ws = [getattr(attn, nm).weight.detach() for nm in "qkvo"]
    bs = [getattr(attn, nm).bias.detach() for nm in "qkvo"]
    path = _check_bibert_block(one["layers.0.attn.q"], ws, bs, 12, True, "pos")
    assert path["qk"].tensor.shape[:3] == (12, one["layers.0.attn.q"].shape[0], one["layers.0.attn.q"].shape[0])


@pytest.mark.parametrize("scheme", ["ternarybert", "qbb", "billm"])
def test_issue_linears_on_minilm(scheme, minilm):
    model, _, real = minilm
    layer = dict(model.named_modules())["layers.2.attn.q"]
    x = real["layers.2.attn.q"]
    path = P.LINEAR_PATHS[scheme](layer.weight.detach(), x, bias=layer.bias.detach())
    check_stages(path)
    if scheme == "billm":
        from models.billm import linear_view
        view = linear_view(layer.weight.detach(), x, bias=layer.bias.detach())
        check_billm_accumulators(path, view)
        assert path["acc"].tensor.shape[0] == 3                  # 384 columns: three 128-column blocks
    else:
        view = path.views["acc"]
        check_accumulators(path)
    ref = view.output().astype(np.float64)
    err = np.abs(path.y - ref)
    assert (err <= combine_bound(path) + 1e-5 * np.abs(ref).max()).all()
    assert path["x.codes"].tensor.min() >= -127 and path["x.codes"].tensor.max() <= 127


# -- BitNet b1.58 FFN block -----------------------------------------------------------------------------------

def _ffn_reference(x, wg, wu, wd):
    from models.bitnet import BitLinear158

    def bl(w):
        m = BitLinear158(w.shape[1], w.shape[0])
        with torch.no_grad():
            m.weight.copy_(w)
        return m

    with torch.no_grad():
        g, u = bl(wg)(x), bl(wu)(x)
        h = torch.relu(g) ** 2 * u
        return g, u, h, bl(wd)(h)


def _check_ffn(x, wg, wu, wd):
    from models.bitnet import quantize_activations
    path = P.bitnet_ffn_block(x, wg, wu, wd)
    check_stages(path)
    check_accumulators(path)
    assert path.names == ["x", "x.scale", "x.codes", "gate.acc", "gate.y", "up.acc", "up.y", "act", "h", "h.absmax",
                          "h.codes", "down.acc", "y"]
    assert [path[s].op for s in ("gate.y", "act", "h", "h.absmax", "h.codes", "y")] == \
           ["combine_rows", "relu2", "mul", "absmax", "quantize", "combine_rows"]
    g, u, h, y = (t.numpy().astype(np.float64) for t in _ffn_reference(x, wg, wu, wd))
    for nm, ref in (("gate", g), ("up", u)):
        assert (np.abs(path[f"{nm}.y"].tensor * 2.0 ** -path[f"{nm}.y"].frac - ref)
                <= combine_bound(path, f"{nm}.y") + 1e-5 * np.abs(ref).max()).all(), nm
    hv = path["h"].tensor * 2.0 ** -path["h"].frac
    assert np.abs(hv - h).max() <= 1e-4 * np.abs(h).max() + 2.0 ** -path["h"].frac
    # absmax is the row max of |h|; codes are round(h·127/absmax) (ties to even), checked with exact fractions
    hi = path["h"].tensor
    assert np.array_equal(path["h.absmax"].tensor[:, 0], np.abs(hi).max(1))
    for t in range(0, hi.shape[0], max(1, hi.shape[0] // 4)):
        am = int(np.abs(hi[t]).max())
        want = [0 if am == 0 else _round_half_even(int(v) * 127, am) for v in hi[t]]
        assert path["h.codes"].tensor[t].tolist() == want
    # against the float reference's codes of its own h: one code apart at most, almost always equal
    ref_codes = quantize_activations(torch.from_numpy(h).float()).codes.numpy()
    diff = np.abs(path["h.codes"].tensor - ref_codes)
    assert diff.max() <= 1 and (diff == 0).mean() > 0.95
    assert np.abs(path.y - y).max() <= 0.02 * np.abs(y).max()
    cos = (path.y.astype(np.float64) * y).sum() / np.linalg.norm(path.y) / np.linalg.norm(y)
    assert cos > 0.999
    # the output against the exact formula on the path's own integer codes: the combine bound
    from models.bitnet import quantize_weights
    c = 1.0 / float(quantize_weights(wd).s) / 127
    exact = path["down.acc"].tensor[..., 0] * c * (path["h.absmax"].tensor * 2.0 ** -path["h"].frac)
    assert (np.abs(path.y - exact) <= combine_bound(path) + 1e-9).all()
    return path


def _round_half_even(n: int, d: int) -> int:
    q, r = divmod(n, d)
    return q + (1 if 2 * r > d or (2 * r == d and q % 2) else 0)


def test_bitnet_ffn_block_random():
    d, f = 64, 160
    path = _check_ffn(_rand(12, d, seed=40), _rand(f, d, scale=0.05, seed=41), _rand(f, d, scale=0.05, seed=42),
                      _rand(d, f, scale=0.05, seed=43))
    assert "no sub-norm" in path.notes


def test_bitnet_ffn_block_on_minilm(minilm):
    model, one, _ = minilm
    # MiniLM's FFN is not gated: its layer-0 up and down, and layer 1's up as the gate
    _check_ffn(one["layers.0.ffn.up"], model.layers[1].ffn.up.weight.detach(), model.layers[0].ffn.up.weight.detach(),
               model.layers[0].ffn.down.weight.detach())
