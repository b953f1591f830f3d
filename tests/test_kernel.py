"""Tests of the compiled loss kernel (``crossent/_kernel.c`` via ``crossent._kernel``).

References: the NumPy kernel of :mod:`crossent.loss` (the oracle), SciPy's ``logsumexp``
and torch autograd in float64, and NumPy's ``exp``. Every test that goes through the public
functions runs twice, with the compiled kernel and with the NumPy fallback; only the direct
compiled-vs-NumPy comparisons skip when the extension is not built (in CI it must be).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.special
import torch
import torch.nn.functional as F

from conftest import in_ci
from crossent import _kernel, softmax_cross_entropy, softmax_cross_entropy_with_grad
from crossent.loss import _index_loss_grad_inplace, _numpy_loss_grad_inplace
from crossent.objective import LinearSoftmaxObjective

BUILT = _kernel.LIBRARY is not None
needs_build = pytest.mark.skipif(not BUILT, reason="the compiled kernel is not built")
DTYPES = [np.float32, np.float64]
SHAPES = [(1, 1), (3, 7), (47, 123), (5, 1000), (64, 1), (200, 10), (33, 32), (9, 33), (2, 5000)]
TOL = {np.float32: {"rtol": 2e-5, "atol": 1e-6}, np.float64: {"rtol": 1e-12, "atol": 1e-14}}


def test_built_in_ci():
    """CI builds the extension (pip install -e .): a silent NumPy fallback there is a bug."""
    if in_ci():
        assert BUILT, "crossent._ckernel was not built or not found next to crossent/_kernel.py"


def problem(shape, dtype, seed=0, scale=3.0, masked=False):
    rng = np.random.default_rng(seed)
    n, n_classes = shape
    logits = (rng.standard_normal(shape) * scale).astype(dtype)
    index = rng.integers(0, n_classes, n)
    weight = rng.uniform(0.5, 2.0, n)
    weight[rng.random(n) < 0.2] = 0.0
    if masked and n_classes > 1:  # -inf on some classes, never a row's target
        mask = rng.random(shape) < 0.3
        mask[np.arange(n), index] = False
        logits[mask] = -np.inf
    return logits, index, weight


def reference(logits, index, weight, scale=1.0):
    """Float64 loss sum and gradient ``scale s_i (softmax_i − e_k)`` by SciPy."""
    z = logits.astype(np.float64)
    rows = np.arange(z.shape[0])
    lse = scipy.special.logsumexp(z, axis=1)
    loss = float(np.sum(weight * (lse - z[rows, index])))
    grad = np.exp(z - lse[:, None])
    grad[rows, index] -= 1.0
    return loss, grad * (scale * weight)[:, None]


# ------------------------------------------------------------------ exp


@needs_build
@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_accuracy(dtype):
    """Within 2 ulp of the float64 (float32: exact-rounded) exp over the whole range."""
    lowest = float(np.log(np.finfo(dtype).tiny))  # below: flushed to 0
    x = -np.concatenate(
        [np.geomspace(1e-30, -lowest, 300_000), np.linspace(0.0, -lowest, 300_000)]
    ).astype(dtype)
    x = x[x >= lowest]
    got = _kernel.exp(x)
    if dtype == np.float32:
        want = np.exp(x.astype(np.float64))
        ulps = np.abs(got - want) / np.spacing(want.astype(np.float32)).astype(np.float64)
    else:
        want = np.exp(x)
        ulps = np.abs(got - want) / np.spacing(want)
    assert ulps.max() <= 2.0, f"exp off by {ulps.max():.2f} ulp at x = {x[np.argmax(ulps)]!r}"


@needs_build
def test_log_accuracy():
    """The normalisers' log: within 1 ulp of NumPy's over [1, 1e6], near 1, and beyond."""
    x = np.concatenate(
        [
            np.geomspace(1.0, 1e6, 200_000),
            1.0 + np.geomspace(1e-15, 0.5, 100_000),
            np.geomspace(1e-300, 1e300, 100_000),
        ]
    )
    got, want = _kernel.log(x), np.log(x)
    ulps = np.abs(got - want) / np.spacing(np.abs(want))
    assert ulps.max() <= 1.0, f"log off by {ulps.max():.2f} ulp at x = {x[np.argmax(ulps)]!r}"
    assert _kernel.log(np.array([1.0]))[0] == 0.0


@needs_build
@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_special_values(dtype):
    lowest = float(np.log(np.finfo(dtype).tiny))
    x = np.array([0.0, -0.0, -np.inf, lowest * 1.01, -1e30, -1.0], dtype=dtype)
    got = _kernel.exp(x)
    np.testing.assert_array_equal(got[:5], [1.0, 1.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(got[5], np.exp(-1.0), rtol=np.finfo(dtype).eps * 2)


# ------------------------------------------------------------------ compiled vs NumPy


@needs_build
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_loss_grad_matches_numpy_kernel_and_reference(dtype, shape, masked):
    logits, index, weight = problem(shape, dtype, masked=masked)
    scale = 0.37
    compiled = logits.copy()
    total_c, bad = _kernel.loss_grad(compiled, compiled, index, weight, scale)
    assert bad == -1
    oracle = logits.copy()
    total_n = _numpy_loss_grad_inplace(oracle, index, weight, scale)
    want_loss, want_grad = reference(logits, index, weight, scale)
    assert compiled.dtype == dtype
    np.testing.assert_allclose(total_c, total_n, **TOL[dtype])
    np.testing.assert_allclose(total_c, want_loss, **TOL[dtype])
    np.testing.assert_allclose(compiled, oracle, **TOL[dtype])
    np.testing.assert_allclose(compiled, want_grad, **TOL[dtype])
    assert not compiled[weight == 0].any(), "rows of weight 0 must get zero gradient rows"


@needs_build
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_out_of_place_bias_and_column_sums(dtype, shape):
    """Reading logits into a separate buffer, adding a bias inside, and fusing the column
    sums all agree with the plain in-place call."""
    logits, index, weight = problem(shape, dtype, seed=1)
    bias = np.random.default_rng(2).standard_normal(shape[1]).astype(dtype)
    shifted = logits + bias
    want = shifted.copy()
    want_total, _ = _kernel.loss_grad(want, want, index, weight, 1.0)
    before = logits.copy()
    out = np.empty_like(logits)
    col_sums = np.full(shape[1], 0.5)
    total, bad = _kernel.loss_grad(logits, out, index, weight, 1.0, bias=bias, col_sums=col_sums)
    assert bad == -1
    np.testing.assert_array_equal(logits, before)  # only read
    np.testing.assert_allclose(total, want_total, **TOL[dtype])
    np.testing.assert_allclose(out, want, **TOL[dtype])
    np.testing.assert_allclose(col_sums - 0.5, want.sum(axis=0, dtype=np.float64), **TOL[dtype])


@needs_build
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_nll_matches_reference(dtype, shape):
    logits, index, weight = problem(shape, dtype, seed=3, masked=True)
    before = logits.copy()
    losses = np.full(shape[0], np.nan)
    assert _kernel.nll(logits, index, weight, losses) == -1
    np.testing.assert_array_equal(logits, before)
    z = logits.astype(np.float64)
    lse = scipy.special.logsumexp(z, axis=1)
    want = np.where(weight > 0, weight * (lse - z[np.arange(shape[0]), index]), 0.0)
    np.testing.assert_allclose(losses, want, **TOL[dtype])


# ------------------------------------------------------------------ through loss.py (both kernels)


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (47, 123), (5, 1000), (300, 10)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_public_functions_against_torch(kernel, dtype, shape):
    logits, index, _ = problem(shape, dtype, seed=4, masked=True)
    z = torch.tensor(logits.astype(np.float64), requires_grad=True)
    want = F.cross_entropy(z, torch.from_numpy(index))
    want.backward()
    assert z.grad is not None
    for n_threads in (1, 2):
        loss, grad = softmax_cross_entropy_with_grad(logits, index, n_threads=n_threads)
        assert grad.dtype == dtype
        np.testing.assert_allclose(loss, want.item(), **TOL[dtype])
        np.testing.assert_allclose(grad, z.grad.numpy(), **TOL[dtype])
        forward = softmax_cross_entropy(logits, index, n_threads=n_threads)
        np.testing.assert_allclose(forward, want.item(), **TOL[dtype])


@pytest.mark.parametrize("bad_value", [-np.inf, np.inf, np.nan])
@pytest.mark.parametrize("n_classes", [1, 7, 300])
@pytest.mark.parametrize("dtype", DTYPES)
def test_undefined_rows(kernel, dtype, n_classes, bad_value):
    """A row that is all -inf, or holds a +inf or NaN: fine (zero gradient) at weight 0, a
    ValueError naming the row (counted from first_row) at weight > 0."""
    logits, index, weight = problem((50, n_classes), dtype, seed=5)
    weight[:] = 1.0
    if bad_value == -np.inf:
        logits[17] = -np.inf
    else:
        logits[17, n_classes // 2] = bad_value
    weight[17] = 0.0
    scores = logits.copy()
    total = _index_loss_grad_inplace(scores, index, weight, first_row=1000)
    assert np.isfinite(total)
    assert not scores[17].any()
    good = np.arange(50) != 17
    want_loss, want_grad = reference(logits[good], index[good], weight[good])
    np.testing.assert_allclose(total, want_loss, **TOL[dtype])
    np.testing.assert_allclose(scores[good], want_grad, **TOL[dtype])

    weight[17] = 0.5
    with pytest.raises(ValueError, match="logits row 1017 "):
        _index_loss_grad_inplace(logits.copy(), index, weight, first_row=1000)
    with pytest.raises(ValueError, match="logits row 17 "):
        softmax_cross_entropy(logits, index, weight=None, n_threads=2)
    with pytest.raises(ValueError, match="logits row 17 "):
        softmax_cross_entropy_with_grad(logits, index, n_threads=2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_undefined_row_in_a_later_block_is_numbered_globally(kernel, dtype):
    logits, index, _ = problem((4000, 10), dtype, seed=6)
    logits[3456, 3] = np.nan
    for n_threads in (1, 2):
        with pytest.raises(ValueError, match="logits row 3456 "):
            softmax_cross_entropy_with_grad(logits, index, n_threads=n_threads)
        with pytest.raises(ValueError, match="logits row 3456 "):
            softmax_cross_entropy(logits, index, n_threads=n_threads)
    ignored = softmax_cross_entropy(
        logits, np.where(np.arange(4000) == 3456, -1, index), ignore_index=-1
    )
    assert np.isfinite(ignored)


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_logits(kernel, dtype):
    """±1e4: far outside exp's range before the shift, exact after it."""
    rng = np.random.default_rng(7)
    logits = (rng.choice([-1e4, 1e4], size=(20, 9)) + rng.standard_normal((20, 9))).astype(dtype)
    index = rng.integers(0, 9, 20)
    loss, grad = softmax_cross_entropy_with_grad(logits, index, reduction="sum")
    want_loss, want_grad = reference(logits, index, np.ones(20))
    np.testing.assert_allclose(loss, want_loss, rtol=TOL[dtype]["rtol"])
    np.testing.assert_allclose(grad, want_grad, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_weights_everywhere(kernel, dtype):
    logits, index, _ = problem((30, 12), dtype, seed=8)
    scores = logits.copy()
    assert _index_loss_grad_inplace(scores, index, np.zeros(30)) == 0.0
    assert not scores.any()


def test_kernels_agree_through_the_switch(monkeypatch):
    """The module-level switch really selects the kernel (results equal to rounding)."""
    logits, index, _ = problem((64, 40), np.float32, seed=9)
    results = {}
    for enabled in (False, True) if BUILT else (False,):
        monkeypatch.setattr(_kernel, "ENABLED", enabled)
        results[enabled] = softmax_cross_entropy_with_grad(logits, index)
    for loss, grad in results.values():
        np.testing.assert_allclose(loss, results[False][0], **TOL[np.float32])
        np.testing.assert_allclose(grad, results[False][1], **TOL[np.float32])


# ------------------------------------------------------------------ the objective


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_objective_parity_kernel_vs_numpy(monkeypatch, dtype, sparse):
    """The objective (bias inside the kernel, fused intercept sums) equals its NumPy path."""
    rng = np.random.default_rng(10)
    n, d, n_classes = 501, 23, 7
    X = rng.standard_normal((n, d)).astype(dtype)
    if sparse:
        X[rng.random((n, d)) < 0.7] = 0.0
        X = sp.csr_matrix(X)
    y = rng.integers(0, n_classes, n)
    sample_weight = rng.uniform(0.0, 2.0, n)
    sample_weight[::7] = 0.0
    coef = rng.standard_normal((n_classes, d))
    intercept = rng.standard_normal(n_classes)
    results = {}
    for enabled in (False, True) if BUILT else (False,):
        monkeypatch.setattr(_kernel, "ENABLED", enabled)
        for n_threads in (1, 2):
            objective = LinearSoftmaxObjective(
                X,
                y,
                n_classes,
                l2=0.3,
                sample_weight=sample_weight,
                n_threads=n_threads,
                chunk_rows=64,
            )
            results[enabled, n_threads] = objective.loss_gradient(coef, intercept)
    tol = {"rtol": 1e-5, "atol": 1e-4} if dtype == np.float32 else {"rtol": 1e-11, "atol": 1e-11}
    want = results[False, 1]
    for got in results.values():
        np.testing.assert_allclose(got[0], want[0], **tol)
        np.testing.assert_allclose(got[1], want[1], **tol)
        np.testing.assert_allclose(got[2], want[2], **tol)
    # the fused intercept gradient is Σ_i s_i (ŷ_i − δ_i): check it against SciPy in float64
    Xd = X.toarray() if sparse else X
    z = Xd.astype(np.float64) @ coef.T + intercept
    probs = scipy.special.softmax(z, axis=1)
    probs[np.arange(n), y] -= 1.0
    np.testing.assert_allclose(
        results[True if BUILT else False, 2][2], (sample_weight[:, None] * probs).sum(axis=0), **tol
    )
