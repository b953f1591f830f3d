"""crossent.torch.linear_cross_entropy against F.cross_entropy(F.linear(...)) and the references.

Every test runs on CPU. The scores chunk is shrunk (autouse fixture) so that the small shapes
here span several chunks, the last one short.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
F = torch.nn.functional

from crossent.torch import (  # noqa: E402
    LinearCrossEntropyLoss,
    _chunked,
    _reference,
    linear_cross_entropy,
    linear_cross_entropy_reference,
)

TOL = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-6)}


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """Three float64 rows of 11 classes a chunk: the shapes below span several chunks."""
    monkeypatch.setattr(_chunked, "SCORES_BYTES", 3 * 11 * 8)


def _problem(lead, d, C, dtype, *, probs=False, ignore=None, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, d, generator=g, dtype=torch.float64).to(dtype)
    w = torch.randn(C, d, generator=g, dtype=torch.float64).to(dtype)
    b = torch.randn(C, generator=g, dtype=torch.float64).to(dtype) if bias else None
    if probs:
        t = torch.softmax(torch.randn(*lead, C, generator=g, dtype=torch.float64), -1).to(dtype)
    else:
        t = torch.randint(0, C, lead, generator=g)
        if ignore is not None and t.numel() > 1:
            t.view(-1)[:: max(2, t.numel() // 3)] = ignore  # some ignored, never all
            t.view(-1)[1] = 1
    return x, w, b, t


def _grads(loss, tensors):
    loss = loss.sum() if loss.ndim else loss
    params = [t for t in tensors if t is not None]
    return torch.autograd.grad(loss, params)


def _leaf(*tensors):
    return [None if t is None else t.detach().clone().requires_grad_() for t in tensors]


def _check(actual, desired, dtype, what):
    tol = TOL[dtype]
    np.testing.assert_allclose(
        actual.detach().double().numpy(), desired.detach().double().numpy(), **tol, err_msg=what
    )


def _torch_ce(logits, target, **opts):
    """F.cross_entropy with the class axis last (torch wants it at 1 for (N, C, d1) input)."""
    if logits.ndim > 2:
        logits = logits.movedim(-1, 1)
        target = target.movedim(-1, 1) if target.is_floating_point() else target
    loss = F.cross_entropy(logits, target, **opts)
    return loss


OPTIONS = list(
    itertools.product(
        ["index", "probs"],  # target kind
        [False, True],  # class weights
        [None, -100, 2],  # ignore_index
        [0.0, 0.3],  # label smoothing
        ["mean", "sum", "none"],
        [True, False],  # bias
    )
)
OPTIONS = [o for o in OPTIONS if not (o[0] == "probs" and o[2] is not None)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("lead", [(), (7,), (2, 5)], ids=str)
@pytest.mark.parametrize(
    ("kind", "weighted", "ignore", "smoothing", "reduction", "with_bias"), OPTIONS
)
def test_matches_torch_cross_entropy(
    dtype, lead, kind, weighted, ignore, smoothing, reduction, with_bias
):
    C, d = 11, 6
    x, w, b, t = _problem(lead, d, C, dtype, probs=kind == "probs", ignore=ignore, bias=with_bias)
    cw = torch.rand(C, generator=torch.Generator().manual_seed(1), dtype=dtype) + 0.5
    cw = cw if weighted else None
    opts = dict(weight=cw, label_smoothing=smoothing, reduction=reduction)
    if ignore is not None:
        opts["ignore_index"] = ignore
    x1, w1, b1 = _leaf(x, w, b)
    got = linear_cross_entropy(
        x1,
        w1,
        t,
        b1,
        class_weight=cw,
        ignore_index=ignore,
        label_smoothing=smoothing,
        reduction=reduction,
    )
    x2, w2, b2 = _leaf(x, w, b)
    want = _torch_ce(F.linear(x2, w2, b2), t, **opts)
    assert got.dtype == dtype and got.shape == want.shape
    _check(got, want, dtype, "loss")
    names = ("dx", "dW", "db")[: 3 if with_bias else 2]
    for name, g1, g2 in zip(
        names, _grads(got, (x1, w1, b1)), _grads(want, (x2, w2, b2)), strict=True
    ):
        _check(g1, g2, dtype, name)


@pytest.mark.parametrize("reduction", ["mean", "sum"])  # "none" has no fused path
def test_general_path_matches_fused(reduction):
    """return_lse=True takes the custom-op path (4 products); the gradients agree."""
    x, w, b, t = _problem((9,), 5, 11, torch.float64, ignore=-1)
    cw = torch.linspace(0.5, 2.0, 11, dtype=torch.float64)
    kw = dict(
        class_weight=cw,
        ignore_index=-1,
        label_smoothing=0.1,
        reduction=reduction,
        z_loss=0.01,
        softcap=3.0,
    )
    x1, w1, b1 = _leaf(x, w, b)
    loss1, lse = linear_cross_entropy(x1, w1, t, b1, return_lse=True, **kw)
    x2, w2, b2 = _leaf(x, w, b)
    loss2 = linear_cross_entropy(x2, w2, t, b2, **kw)
    _check(loss1, loss2, torch.float64, "loss")
    for g1, g2 in zip(_grads(loss1, (x1, w1, b1)), _grads(loss2, (x2, w2, b2)), strict=True):
        _check(g1, g2, torch.float64, "grad")
    assert lse.shape == (9,) and lse.dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_z_loss_and_softcap_match_reference(dtype, kind, reduction):
    x, w, b, t = _problem(
        (4, 3), 5, 11, dtype, probs=kind == "probs", ignore=None if kind == "probs" else 7
    )
    ignore = None if kind == "probs" else 7
    cw = torch.linspace(0.5, 2.0, 11, dtype=dtype)
    kw = dict(
        class_weight=cw,
        ignore_index=ignore,
        label_smoothing=0.2,
        reduction=reduction,
        z_loss=1e-2,
        softcap=2.5,
        return_lse=True,
    )
    x1, w1, b1 = _leaf(x, w, b)
    got, lse = linear_cross_entropy(x1, w1, t, b1, **kw)
    x2, w2, b2 = _leaf(x, w, b)
    want, lse_want = linear_cross_entropy_reference(x2, w2, t, b2, **kw)
    _check(got, want, dtype, "loss")
    _check(lse, lse_want, dtype, "lse")
    for g1, g2 in zip(_grads(got, (x1, w1, b1)), _grads(want, (x2, w2, b2)), strict=True):
        _check(g1, g2, dtype, "grad")


def test_z_loss_direct():
    """z-loss by hand: mean of lse² over the non-ignored rows, added to the mean loss."""
    x, w, b, t = _problem((6,), 4, 11, torch.float64, ignore=-100)
    logits = F.linear(x, w, b)
    lse = torch.logsumexp(logits, -1)
    keep = t != -100
    want = F.cross_entropy(logits, t) + 0.1 * lse[keep].square().mean()
    got = linear_cross_entropy(x, w, t, b, ignore_index=-100, z_loss=0.1)
    _check(got, want, torch.float64, "z-loss")
    cap = 1.5
    want = F.cross_entropy(cap * torch.tanh(logits / cap), t, reduction="sum")
    got = linear_cross_entropy(x, w, t, b, ignore_index=-100, softcap=cap, reduction="sum")
    _check(got, want, torch.float64, "softcap")


@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("fused", [True, False])
def test_gradcheck(kind, reduction, fused):
    x, w, b, t = _problem(
        (5,), 3, 11, torch.float64, probs=kind == "probs", ignore=None if kind == "probs" else 4
    )
    ignore = None if kind == "probs" else 4
    cw = torch.linspace(0.5, 2.0, 11, dtype=torch.float64)

    def f(x, w, b):
        out = linear_cross_entropy(
            x,
            w,
            t,
            b,
            class_weight=cw,
            ignore_index=ignore,
            label_smoothing=0.2,
            reduction=reduction,
            z_loss=0.05,
            softcap=4.0,
            return_lse=not fused,
        )
        return out if fused else out[0]

    # the fused path recomputes on a second backward: equal up to rounding, not bitwise
    assert torch.autograd.gradcheck(f, tuple(_leaf(x, w, b)), nondet_tol=1e-12)


def test_backend_contract_matches_reference():
    """_chunked.forward/backward == the materialising _reference (the Triton oracle too)."""
    g = torch.Generator().manual_seed(3)
    n, d, C = 10, 4, 11
    x, w, bias = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((n, d), (C, d), (C,)))
    target = torch.randint(0, C, (n,), generator=g)
    a, b, go, row_coef = (torch.rand(n, generator=g, dtype=torch.float64) for _ in range(4))
    cw = torch.rand(C, generator=g, dtype=torch.float64)
    P = torch.rand(n, C, generator=g, dtype=torch.float64)
    for cap, cw_, P_, bias_ in [(None, None, None, None), (2.0, cw, P, bias)]:
        args = (x, w, bias_, target, a, b, cw_, P_, cap)
        lse, dot = _chunked.forward(*args)
        lse_ref, dot_ref = _reference.forward(*args)
        _check(lse, lse_ref, torch.float64, "lse")
        _check(dot, dot_ref, torch.float64, "dot")
        got = _chunked.backward(*args, lse_ref, row_coef, go, True, True, bias_ is not None)
        want = _reference.backward(*args, lse_ref, row_coef, go, True, True, bias_ is not None)
        for name, g1, g2 in zip(("dx", "dW", "db"), got, want, strict=True):
            if g2 is None:
                assert g1 is None
            else:
                _check(g1, g2, torch.float64, name)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_low_precision_no_worse_than_naive(dtype, monkeypatch):
    monkeypatch.setattr(_chunked, "SCORES_BYTES", 16 * 300 * 4)
    g = torch.Generator().manual_seed(5)
    n, d, C = 64, 32, 300
    x64 = torch.randn(n, d, generator=g, dtype=torch.float64)
    w64 = torch.randn(C, d, generator=g, dtype=torch.float64) * 0.5
    t = torch.randint(0, C, (n,), generator=g)
    x, w = x64.to(dtype), w64.to(dtype)

    def run(fn, x, w):
        x, w = _leaf(x, w)
        loss = fn(x, w)
        return [loss.double(), *(g.double() for g in torch.autograd.grad(loss, (x, w)))]

    truth = run(lambda x, w: F.cross_entropy(F.linear(x, w), t), x.double(), w.double())
    naive = run(lambda x, w: F.cross_entropy(F.linear(x, w), t), x, w)
    ours = run(lambda x, w: linear_cross_entropy(x, w, t), x, w)
    for name, o, nv, tr in zip(("loss", "dx", "dW"), ours, naive, truth, strict=True):
        err_ours = (o - tr).abs().max().item()
        err_naive = (nv - tr).abs().max().item()
        tol = 1e-2 * tr.abs().max().item()
        assert err_ours <= err_naive + tol, f"{name}: crossent {err_ours} vs naive {err_naive}"


def test_lse_is_float32_for_bfloat16():
    x, w, b, t = _problem((2, 3), 4, 11, torch.bfloat16)
    loss, lse = linear_cross_entropy(x, w, t, b, reduction="none", return_lse=True)
    assert loss.dtype == torch.bfloat16 and loss.shape == (2, 3)
    assert lse.dtype == torch.float32 and lse.shape == (2, 3)


def test_scaled_upstream_gradient_and_retained_graph():
    x, w, b, t = _problem((8,), 4, 11, torch.float64)
    x1, w1, b1 = _leaf(x, w, b)
    loss = linear_cross_entropy(x1, w1, t, b1)
    (3.0 * loss).backward(retain_graph=True)
    first = [p.grad.clone() for p in (x1, w1, b1)]
    (3.0 * loss).backward()  # the second backward recomputes
    x2, w2, b2 = _leaf(x, w, b)
    want = _grads(3.0 * F.cross_entropy(F.linear(x2, w2, b2), t), (x2, w2, b2))
    for got, second, ref in zip(first, (x1.grad, w1.grad, b1.grad), want, strict=True):
        _check(got, ref, torch.float64, "first")
        _check(second, 2 * ref, torch.float64, "second")


def test_only_some_inputs_require_grad():
    x, w, b, t = _problem((8,), 4, 11, torch.float64)
    w1 = w.clone().requires_grad_()
    for reduction in ("mean", "none"):
        loss = linear_cross_entropy(x, w1, t, b, reduction=reduction)
        (got,) = _grads(loss, (w1,))
        w2 = w.clone().requires_grad_()
        (want,) = _grads(F.cross_entropy(F.linear(x, w2, b), t, reduction=reduction), (w2,))
        _check(got, want, torch.float64, reduction)
    with torch.no_grad():
        loss = linear_cross_entropy(x, w1, t, b)
    assert not loss.requires_grad


@pytest.mark.parametrize("int_dtype", [torch.int32, torch.int16, torch.uint8, torch.int64])
def test_any_integer_target_dtype(int_dtype):
    x, w, b, t = _problem((6,), 4, 11, torch.float64)
    got = linear_cross_entropy(x, w, t.to(int_dtype), b)
    _check(got, F.cross_entropy(F.linear(x, w, b), t), torch.float64, str(int_dtype))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_all_ignored_or_empty_is_zero(reduction):
    x, w, b, t = _problem((4,), 3, 11, torch.float64)
    t = torch.full_like(t, -100)
    x1, w1, b1 = _leaf(x, w, b)
    loss = linear_cross_entropy(x1, w1, t, b1, ignore_index=-100, reduction=reduction, z_loss=0.1)
    assert loss.item() == 0.0
    for g in _grads(loss, (x1, w1, b1)):
        assert torch.count_nonzero(g) == 0
    x1, w1 = _leaf(torch.zeros(0, 3, dtype=torch.float64), w)
    loss = linear_cross_entropy(x1, w1, torch.zeros(0, dtype=torch.int64))
    assert loss.item() == 0.0
    assert _grads(loss, (x1, w1))[1].abs().sum() == 0


def test_module():
    x, w, b, t = _problem((3, 4), 5, 11, torch.float64, ignore=-100)
    cw = torch.linspace(0.5, 2.0, 11, dtype=torch.float64)
    module = LinearCrossEntropyLoss(class_weight=cw, ignore_index=-100, label_smoothing=0.1)
    want = _torch_ce(F.linear(x, w, b), t, weight=cw, ignore_index=-100, label_smoothing=0.1)
    _check(module(x, w, t, b), want, torch.float64, "module")
    assert "label_smoothing=0.1" in repr(module)
    assert module.state_dict()["class_weight"] is not None


BAD = [
    (dict(w_shape=(11, 7)), ValueError, "weight must have shape"),
    (dict(w_dtype=torch.float32), TypeError, "weight must have x's dtype"),
    (dict(x_dtype=torch.int64), TypeError, "x must have a floating dtype"),
    (dict(b_shape=(10,)), ValueError, "bias must have shape"),
    (dict(t_shape=(5,)), ValueError, "class-index target must have shape"),
    (dict(t_float=True), TypeError, "class-index target must have an integer dtype"),
    (dict(t_value=11), ValueError, "outside"),
    (dict(reduction="avg"), ValueError, "reduction must be one of"),
    (dict(label_smoothing=1.5), ValueError, "label_smoothing must be a number in"),
    (dict(label_smoothing=-0.1), ValueError, "label_smoothing"),
    (dict(softcap=0.0), ValueError, "softcap must be None or a finite number > 0"),
    (dict(softcap=-1.0), ValueError, "softcap"),
    (dict(z_loss=-1.0), ValueError, "z_loss must be"),
    (dict(ignore_index=1.5), TypeError, "ignore_index must be an int"),
    (dict(class_weight_bad=True), ValueError, "class_weight must be finite and non-negative"),
    (dict(probs_ignore=True), ValueError, "ignore_index applies to class-index targets"),
    (dict(probs_bad=True), ValueError, "target must sum to 1"),
]


@pytest.mark.parametrize(("change", "error", "message"), BAD, ids=[m for _, _, m in BAD])
def test_bad_input(change, error, message):
    x, w, b, t = _problem((6,), 4, 11, torch.float64)
    x = x.long() if "x_dtype" in change else x
    w = torch.randn(*change.get("w_shape", (11, 4)), dtype=change.get("w_dtype", torch.float64))
    b = torch.randn(*change.get("b_shape", (11,)), dtype=torch.float64)
    if "t_shape" in change:
        t = torch.zeros(change["t_shape"], dtype=torch.int64)
    if "t_float" in change:
        t = t.double()
    if "t_value" in change:
        t[0] = change["t_value"]
    kw = {
        k: change[k]
        for k in ("reduction", "label_smoothing", "softcap", "z_loss", "ignore_index")
        if k in change
    }
    if "class_weight_bad" in change:
        kw["class_weight"] = -torch.ones(11, dtype=torch.float64)
    if "probs_ignore" in change or "probs_bad" in change:
        t = torch.full((6, 11), 1 / 11, dtype=torch.float64)
        if "probs_ignore" in change:
            kw["ignore_index"] = 0
        else:
            t[0, 0] = 1.0
    with pytest.raises(error, match=message):
        linear_cross_entropy(x, w, t, b, **kw)


def test_import_crossent_does_not_import_torch():
    code = "import sys, crossent; print(json.dumps('torch' in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", "import json; " + code],
        capture_output=True,
        text=True,
        check=True,
        env=_env(),
    )
    assert json.loads(out.stdout) is False


def test_torch_inside_the_package_is_pytorch():
    from crossent.torch import _dispatch, _function, _module

    for module in (_chunked, _reference, _dispatch, _function, _module):
        assert module.torch is sys.modules["torch"]
        assert hasattr(module.torch, "autograd")


def _env():
    env = dict(os.environ)
    src = os.path.join(os.path.dirname(__file__), os.pardir, "src")
    env["PYTHONPATH"] = os.pathsep.join([os.path.abspath(src), env.get("PYTHONPATH", "")])
    return env


def test_class_indices_equal_one_hot_probabilities():
    x, w, b, t = _problem((3, 4), 5, 11, torch.float64)
    onehot = F.one_hot(t, 11).double()
    cw = torch.linspace(0.5, 2.0, 11, dtype=torch.float64)
    for reduction in ("sum", "none"):
        kw = dict(label_smoothing=0.2, reduction=reduction, z_loss=0.01, softcap=3.0)
        by_index = linear_cross_entropy(x, w, t, b, **kw)
        by_probs = linear_cross_entropy(x, w, onehot, b, **kw)
        _check(by_index, by_probs, torch.float64, reduction)
    # with class weights the "mean" denominators differ (torch's rule), "sum" agrees
    got = linear_cross_entropy(x, w, t, b, class_weight=cw, reduction="sum")
    want = linear_cross_entropy(x, w, onehot, b, class_weight=cw, reduction="sum")
    _check(got, want, torch.float64, "weighted sum")


def test_cpu_tensors_use_the_chunked_back_end(monkeypatch):
    from crossent.torch import _dispatch

    x = torch.zeros(2, 3)
    assert _dispatch.backend_for(x) == (_chunked.forward, _chunked.backward)
    monkeypatch.setitem(_dispatch._TRITON, "module", object())  # "Triton importable"
    assert _dispatch.uses_chunked(x)  # still: Triton serves CUDA tensors only


def test_gradient_through_returned_lse():
    x, w, b, t = _problem((2, 3), 4, 11, torch.float64)
    x1, w1, b1 = _leaf(x, w, b)
    loss, lse = linear_cross_entropy(x1, w1, t, b1, softcap=2.0, return_lse=True)
    got = _grads(loss + 0.3 * lse.square().sum(), (x1, w1, b1))
    x2, w2, b2 = _leaf(x, w, b)
    logits = 2.0 * torch.tanh(F.linear(x2, w2, b2) / 2.0)
    want_loss = _torch_ce(logits, t)
    want = _grads(want_loss + 0.3 * torch.logsumexp(logits, -1).square().sum(), (x2, w2, b2))
    for g1, g2 in zip(got, want, strict=True):
        _check(g1, g2, torch.float64, "grad through lse")


@pytest.mark.parametrize("rows_per_chunk", [1, 4, 1000])
def test_result_does_not_depend_on_the_chunking(rows_per_chunk, monkeypatch):
    monkeypatch.setattr(_chunked, "SCORES_BYTES", rows_per_chunk * 11 * 8)
    x, w, b, t = _problem((9,), 4, 11, torch.float64, ignore=-100)
    x1, w1, b1 = _leaf(x, w, b)
    loss = linear_cross_entropy(x1, w1, t, b1, ignore_index=-100, label_smoothing=0.1)
    x2, w2, b2 = _leaf(x, w, b)
    want = F.cross_entropy(F.linear(x2, w2, b2), t, ignore_index=-100, label_smoothing=0.1)
    _check(loss, want, torch.float64, "loss")
    for g1, g2 in zip(_grads(loss, (x1, w1, b1)), _grads(want, (x2, w2, b2)), strict=True):
        _check(g1, g2, torch.float64, "grad")


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(0, 9),
    d=st.integers(1, 5),
    C=st.integers(1, 13),
    smoothing=st.sampled_from([0.0, 0.25, 1.0]),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    z_loss=st.sampled_from([0.0, 0.1]),
    softcap=st.sampled_from([None, 1.0, 30.0]),
    seed=st.integers(0, 2**16),
)
def test_any_shape_matches_reference(n, d, C, smoothing, reduction, z_loss, softcap, seed):
    g = torch.Generator().manual_seed(seed)
    x, w, b = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((n, d), (C, d), (C,)))
    t = torch.randint(0, C, (n,), generator=g)
    t[::3] = -1
    kw = dict(
        ignore_index=-1,
        label_smoothing=smoothing,
        reduction=reduction,
        z_loss=z_loss,
        softcap=softcap,
    )
    x1, w1, b1 = _leaf(x, w, b)
    got = linear_cross_entropy(x1, w1, t, b1, **kw)
    x2, w2, b2 = _leaf(x, w, b)
    want = linear_cross_entropy_reference(x2, w2, t, b2, **kw)
    _check(got, want, torch.float64, "loss")
    for g1, g2 in zip(_grads(got, (x1, w1, b1)), _grads(want, (x2, w2, b2)), strict=True):
        _check(g1, g2, torch.float64, "grad")
