"""Tests of crossent.hessian: Hessian-vector products of L_total.

References: torch.autograd's Hessian-vector product of ``L_total`` written with
``torch.nn.functional.cross_entropy`` in float64, and central finite differences of the
objective's own gradient; dense and CSR ``X``, with and without intercept and weights, the
probabilities cached and recomputed, one chunk and many.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from crossent.hessian import hessian_product, softmax_curvature
from crossent.objective import LinearSoftmaxObjective
from crossent.solvers import Preconditioner, Problem

N, D, C = 47, 31, 5  # odd shapes on purpose
L2 = 0.7


def _data(sparse: bool, dtype=np.float64, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, D)) * np.geomspace(0.1, 10, D) + 0.5
    if sparse:
        X[rng.random(X.shape) < 0.7] = 0.0
        X = sp.csr_matrix(X)
    y = rng.integers(0, C, N)
    return X.astype(dtype), y, rng


def torch_hvp(X, y, W, b, V, c, l2, sample_weight, fit_intercept):
    """``∇²L_total(W, b) (V, c)`` by torch.autograd in float64."""
    X_t = torch.tensor(X.toarray() if sp.issparse(X) else X, dtype=torch.float64)
    y_t = torch.as_tensor(y, dtype=torch.long)
    s_t = torch.tensor(sample_weight, dtype=torch.float64)

    def l_total(W_t, b_t):
        scores = X_t @ W_t.T + (b_t if fit_intercept else 0.0)
        data = (F.cross_entropy(scores, y_t, reduction="none") * s_t).sum()
        return data + 0.5 * l2 * (W_t * W_t).sum()

    args = (torch.tensor(W), torch.tensor(b))
    _, (hess_W, hess_b) = torch.autograd.functional.hvp(
        l_total, args, (torch.tensor(V), torch.tensor(c))
    )
    return hess_W.numpy(), (hess_b.numpy() if fit_intercept else np.zeros_like(b))


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("cache", [True, False], ids=["cached", "recomputed"])
def test_hessian_product_matches_torch_autograd(sparse, fit_intercept, weighted, cache):
    X, y, rng = _data(sparse)
    weights = rng.uniform(0.0, 3.0, N) if weighted else np.ones(N)
    objective = LinearSoftmaxObjective(
        X, y, C, l2=L2, sample_weight=weights, fit_intercept=fit_intercept, chunk_rows=8
    )
    W, b = rng.standard_normal((C, D)) * 0.2, rng.standard_normal(C)
    V, c = rng.standard_normal((C, D)), rng.standard_normal(C)
    curvature = softmax_curvature(objective, W, b, cache_bytes=None if cache else 0)
    assert (curvature.probs is not None) == cache
    hess_W, hess_b = curvature.product(V, c)
    ref_W, ref_b = torch_hvp(X, y, W, b, V, c, L2, weights, fit_intercept)
    np.testing.assert_allclose(hess_W, ref_W, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hess_b, ref_b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_float32_data_give_the_float64_product_to_float32_precision(sparse):
    X, y, rng = _data(sparse)
    W, b = rng.standard_normal((C, D)) * 0.2, rng.standard_normal(C)
    V, c = rng.standard_normal((C, D)), rng.standard_normal(C)
    exact = hessian_product(LinearSoftmaxObjective(X, y, C, l2=L2), W, b, V, c)
    single = hessian_product(LinearSoftmaxObjective(X.astype(np.float32), y, C, l2=L2), W, b, V, c)
    for got, want in zip(single, exact, strict=True):
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("n_threads", [1, 3])
def test_thread_count_changes_only_rounding(n_threads):
    X, y, rng = _data(False)
    W, b = rng.standard_normal((C, D)) * 0.2, rng.standard_normal(C)
    V, c = rng.standard_normal((C, D)), rng.standard_normal(C)
    one = hessian_product(LinearSoftmaxObjective(X, y, C, l2=L2, chunk_rows=8), W, b, V, c)
    many = hessian_product(
        LinearSoftmaxObjective(X, y, C, l2=L2, chunk_rows=8, n_threads=n_threads), W, b, V, c
    )
    np.testing.assert_allclose(many[0], one[0], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(many[1], one[1], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_problem_hessian_matches_central_differences_of_its_gradient(sparse, fit_intercept):
    """In the preconditioned coordinates: ``∇²F(x) v ≈ (∇F(x + εv) − ∇F(x − εv)) / 2ε``."""
    X, y, rng = _data(sparse, seed=1)
    weights = rng.uniform(0.1, 2.0, N)
    objective = LinearSoftmaxObjective(
        X, y, C, l2=L2, sample_weight=weights, fit_intercept=fit_intercept, chunk_rows=16
    )
    precond = Preconditioner.from_data(X, weights, center=fit_intercept, l2=L2)
    problem = Problem(objective, precond, float(weights.sum()))
    x = rng.standard_normal(C * (D + 1)) * 0.3
    v = rng.standard_normal(C * (D + 1))
    if not fit_intercept:
        x[C * D :] = v[C * D :] = 0.0
    hessp = problem.hessian_at(x)
    product = hessp(v)
    eps = 1e-5
    diff = (problem.value_grad(x + eps * v)[1] - problem.value_grad(x - eps * v)[1]) / (2 * eps)
    np.testing.assert_allclose(product, diff, rtol=1e-6, atol=1e-8 * np.abs(diff).max())
    assert hessp.n_products == 3  # the softmax pass, then two products per call


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("n_threads", [1, 3])
def test_the_softmax_kept_by_an_evaluation_gives_the_same_products(
    sparse, fit_intercept, n_threads
):
    """keep_rows: the curvature at the evaluated point needs no product over X, and its
    Hessian-vector products still match torch autograd (weights with zeros among them)."""
    X, y, rng = _data(sparse)
    weights = rng.uniform(0.0, 3.0, N)
    weights[::7] = 0.0  # their gradient rows are 0: p cannot be recovered, nor is it needed
    objective = LinearSoftmaxObjective(
        X,
        y,
        C,
        l2=L2,
        sample_weight=weights,
        fit_intercept=fit_intercept,
        chunk_rows=8,
        n_threads=n_threads,
    )
    W, b = rng.standard_normal((C, D)) * 0.2, rng.standard_normal(C)
    V, c = rng.standard_normal((C, D)), rng.standard_normal(C)
    objective.keep_rows = True
    objective.loss_gradient(W, b)
    reused = softmax_curvature(objective, W, b)
    assert reused.n_products == 0
    fresh = softmax_curvature(objective, W + 1e-3, b)  # elsewhere: p is computed
    assert fresh.n_products == 1
    ref_W, ref_b = torch_hvp(X, y, W, b, V, c, L2, weights, fit_intercept)
    hess_W, hess_b = reused.product(V, c)
    np.testing.assert_allclose(hess_W, ref_W, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hess_b, ref_b, rtol=1e-10, atol=1e-12)
    objective.keep_rows = False
    objective.loss_gradient(W, b)
    assert objective.kept_rows is None
    assert softmax_curvature(objective, W, b).n_products == 1


def test_newton_cg_skips_the_softmax_pass_its_evaluation_made():
    """One product fewer per Newton iteration, the same optimum; keep_rows is off after.

    p from the kept gradient rows differs from a fresh softmax by rounding, so the two runs
    may differ in their last, rounding-bound iteration: compared at tol 1e-6."""
    from crossent.solvers._newton import newton_cg

    X, y, _ = _data(True)
    objective = LinearSoftmaxObjective(X, y, C, l2=L2)
    precond = Preconditioner.from_data(X, None, center=True, l2=L2)
    problem = Problem(objective, precond, float(N))
    x0 = np.zeros(C * (D + 1))
    counted = []
    original = softmax_curvature.__globals__["_probabilities_from_kept_rows"]

    def disabled(*args):
        counted.append(original(*args) is not None)
        return None

    result = newton_cg(problem, x0, max_iter=50, tol=1e-6)
    softmax_curvature.__globals__["_probabilities_from_kept_rows"] = disabled
    try:
        plain = newton_cg(problem, x0, max_iter=50, tol=1e-6)
    finally:
        softmax_curvature.__globals__["_probabilities_from_kept_rows"] = original
    assert len(counted) >= 3 and all(counted)  # each iteration's evaluation could be reused
    assert result.converged and plain.converged
    np.testing.assert_allclose(result.x, plain.x, rtol=1e-5, atol=1e-7)
    assert not objective.keep_rows and objective.kept_rows is None
