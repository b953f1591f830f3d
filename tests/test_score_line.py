"""Tests of the line on kept scores (crossent.score_line), L-BFGS's first step on it, and the
objective's zero-weight evaluation.

References: SciPy's ``logsumexp`` and ``softmax`` on the whole score matrix in float64, PyTorch
autograd (first and second derivatives along the line), the objective's own full evaluation
(a different code path: products with X, the loss kernel), and SciPy's bounded Brent
minimiser along the line.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp, softmax

from crossent import _kernel
from crossent.objective import LinearSoftmaxObjective
from crossent.score_line import ScoreLine
from crossent.solvers import _line_search
from crossent.solvers._lbfgs import lbfgs
from crossent.solvers._line_search import FirstStep, newton_on_line
from test_solvers import _classification, _digits, make_problem

pytestmark = pytest.mark.usefixtures("single_blas_thread")

BUILT = _kernel.LIBRARY is not None


def _reference_line(base, step, t, labels, weight):
    """φ, φ', φ'' of the loss of ``base + t step`` in float64 from SciPy."""
    step = step.astype(np.float64)
    scores = base.astype(np.float64) + t * step
    rows = np.arange(len(labels))
    probs = softmax(scores, axis=1)
    mean = (probs * step).sum(axis=1)
    loss = weight @ (logsumexp(scores, axis=1) - scores[rows, labels])
    first = weight @ (mean - step[rows, labels])
    second = weight @ ((probs * step * step).sum(axis=1) - mean * mean)
    return loss, first, second


@pytest.mark.skipif(not BUILT, reason="the compiled kernel is not built")
@pytest.mark.parametrize("dtype, rtol", [(np.float32, 2e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("shared_row", [False, True])
@pytest.mark.parametrize("n_classes", [3, 40, 1000])
def test_kernel_line_matches_scipy(dtype, rtol, shared_row, n_classes):
    rng = np.random.default_rng(n_classes)
    n = 60
    base = rng.standard_normal(n_classes) if shared_row else rng.standard_normal((n, n_classes))
    base = (base * 4).astype(dtype)
    step = rng.standard_normal((n, n_classes)).astype(dtype)
    labels = rng.integers(0, n_classes, n)
    weight = rng.uniform(0.0, 2.0, n)
    weight[:3] = 0.0
    for t in (0.0, 0.3, 5.0):
        got = _kernel.line(base, step, t, labels, weight)
        full = np.broadcast_to(base, step.shape)
        want = _reference_line(full, step, t, labels, weight)
        assert got[3] == -1
        np.testing.assert_allclose(got[:3], want, rtol=rtol, atol=rtol * np.abs(want).max())


@pytest.mark.skipif(not BUILT, reason="the compiled kernel is not built")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_line_skips_zero_weight_rows_and_reports_the_first_undefined_row(dtype):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((6, 5)).astype(dtype)
    step = rng.standard_normal((6, 5)).astype(dtype)
    labels = np.zeros(6, dtype=np.int64)
    weight = np.ones(6)
    weight[1] = 0.0
    step[1, 2] = np.nan  # a row of weight 0 is not read for its value
    assert _kernel.line(base, step, 1.0, labels, weight)[3] == -1
    step[4, 0] = np.inf
    assert _kernel.line(base, step, 1.0, labels, weight)[3] == 4
    with pytest.raises(TypeError, match="base must have shape"):
        _kernel.line(base[:, :3].copy(), step, 1.0, labels, weight)


def _line_case(sparse: bool, fit_intercept: bool, dtype=np.float64):
    X, y = _classification(n=300, d=14, n_classes=5, seed=3)
    X = X.astype(dtype)
    if sparse:
        X = np.where(np.abs(X) > 0.8, X, 0.0).astype(dtype)
        X = sp.csr_array(X)
    weight = np.random.default_rng(1).uniform(0.0, 2.0, size=len(y))
    weight[::17] = 0.0
    objective = LinearSoftmaxObjective(
        X, y, 5, l2=0.7, sample_weight=weight, fit_intercept=fit_intercept, chunk_rows=64
    )
    rng = np.random.default_rng(2)
    intercept = rng.standard_normal(5)
    coef_dir, intercept_dir = rng.standard_normal((5, 14)), rng.standard_normal(5)
    return objective, intercept, coef_dir, intercept_dir


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_line_values_are_the_objective_and_its_derivatives_by_autograd(
    kernel, sparse, fit_intercept
):
    torch = pytest.importorskip("torch")
    objective, intercept, coef_dir, intercept_dir = _line_case(sparse, fit_intercept)
    line = ScoreLine(objective, intercept, coef_dir, intercept_dir)
    X = objective.X.toarray() if sparse else objective.X
    Xt = torch.tensor(X, dtype=torch.float64)
    y = torch.tensor(objective.y)
    w = torch.tensor(objective.sample_weight)
    b_used = intercept if fit_intercept else np.zeros(5)
    bd_used = intercept_dir if fit_intercept else np.zeros(5)
    for t in (0.0, 0.4, 3.0):
        tt = torch.tensor(t, dtype=torch.float64, requires_grad=True)
        W = tt * torch.tensor(coef_dir)
        scores = Xt @ W.T + torch.tensor(b_used) + tt * torch.tensor(bd_used)
        losses = torch.logsumexp(scores, 1) - scores[torch.arange(len(y)), y]
        phi = (w * losses).sum() + 0.5 * objective.l2 * (W * W).sum()
        (first,) = torch.autograd.grad(phi, tt, create_graph=True)
        (second,) = torch.autograd.grad(first, tt)
        want = [phi.item(), first.item(), second.item()]
        np.testing.assert_allclose(line.values(t), want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_move_is_the_objectives_full_evaluation_at_the_step(kernel, sparse, fit_intercept, dtype):
    objective, intercept, coef_dir, intercept_dir = _line_case(sparse, fit_intercept, dtype)
    line = ScoreLine(objective, intercept, coef_dir, intercept_dir)
    t = 0.8
    coef = t * coef_dir
    got = line.move(t, coef)
    want = objective.loss_gradient(coef, intercept + t * intercept_dir)
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(got[0], want[0], rtol=rtol)
    for g, w in zip(got[1:], want[1:], strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * np.abs(w).max())


def test_line_refuses_objectives_whose_scores_do_not_fit(monkeypatch):
    objective, intercept, coef_dir, intercept_dir = _line_case(False, True)
    monkeypatch.setattr("crossent.score_line.KEEP_ROWS_BYTES", 300 * 5 * 8 - 1)
    assert not ScoreLine.fits(objective)
    with pytest.raises(ValueError, match="kept scores need"):
        ScoreLine(objective, intercept, coef_dir, intercept_dir)
    assert not ScoreLine.fits(object())


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zero_weight_evaluation_matches_scipy_on_the_full_scores(sparse, fit_intercept, dtype):
    objective, intercept, _, _ = _line_case(sparse, fit_intercept, dtype)
    X = objective.X.toarray() if sparse else objective.X
    n, d = X.shape
    loss, grad_coef, grad_intercept = objective.loss_gradient(np.zeros((5, d)), intercept)
    scores = np.broadcast_to(intercept if fit_intercept else np.zeros(5), (n, 5))
    rows = np.arange(n)
    w = objective.sample_weight
    want_loss = w @ (logsumexp(scores, axis=1) - scores[rows, objective.y])
    residual = softmax(scores, axis=1)
    residual[rows, objective.y] -= 1.0
    residual *= w[:, None]
    rtol = 1e-12 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(loss, want_loss, rtol=1e-12)
    np.testing.assert_allclose(
        grad_coef, residual.T @ X.astype(np.float64), rtol=rtol, atol=rtol * 10
    )
    want_intercept = residual.sum(axis=0) if fit_intercept else np.zeros(5)
    np.testing.assert_allclose(grad_intercept, want_intercept, rtol=1e-12, atol=1e-12)


def _convex_lines():
    """φ with φ, φ', φ'' in closed form, and a minimiser far from, near and below t = 1."""

    def softplus(a, b, c):  # Σ log(1 + e^{a t − b}) + c t²/2: convex, minimiser anywhere
        def phi(t):
            z = a * t - b
            sig = 0.5 * (1 + np.tanh(z / 2))
            return (
                float(np.logaddexp(0, z).sum() + 0.5 * c * t * t),
                float((a * sig).sum() + c * t),
                float((a * a * sig * (1 - sig)).sum() + c),
            )

        return phi

    return {
        "far": softplus(np.array([-1.0, 0.2]), np.array([0.0, 30.0]), 1e-4),
        "near": softplus(np.array([-2.0, 3.0]), np.array([-1.0, 2.0]), 0.1),
        "short": softplus(np.array([-1.0, 40.0]), np.array([0.0, 10.0]), 1.0),
    }


@pytest.mark.parametrize("case", sorted(_convex_lines()))
def test_newton_on_line_ends_near_the_minimum_with_armijos_decrease(case):
    phi = _convex_lines()[case]
    value, slope, _ = phi(0.0)
    t = newton_on_line(phi, value, slope)
    assert isinstance(t, float)
    f, first, second = phi(t)
    assert f <= value + _line_search.ARMIJO * t * slope
    best = minimize_scalar(
        lambda s: phi(s)[0], bounds=(0.0, 1e5), method="bounded", options={"xatol": 1e-10}
    )
    # within the promised fraction of the decrease (plus Newton's model error, small here)
    assert f - best.fun <= 0.2 * (value - f)
    assert first * first <= _line_search.NEAR_MINIMUM * 2 * second * (value - f)


def test_newton_on_line_reports_rounding_when_no_decrease_can_show():
    def rising(t):  # F's rounding: any step "increases" F, though the slope said down
        return 1.0 + 1e-15 * t, 1e-15, 0.0

    assert newton_on_line(rising, 1.0, -1e-30) == "rounding"
    assert newton_on_line(rising, 1.0, -1.0) == "failed"


@pytest.mark.parametrize("name", ["classification", "digits", "no-intercept"])
def test_first_step_ends_near_the_minimum_along_the_gradient(name):
    X, y = _digits() if name == "digits" else _classification()
    problem, x0 = make_problem(X, y, 1.0, fit_intercept=name != "no-intercept")
    first = FirstStep.for_problem(problem, x0)
    assert first is not None
    value, grad = problem.value_grad(x0)
    direction = -grad / np.linalg.norm(grad)
    x1, value1, grad1 = first.search(direction, value, float(grad @ direction))
    # the point and its gradient are the objective's own at x1
    want_value, want_grad = problem.value_grad(x1)
    np.testing.assert_allclose(value1, want_value, rtol=1e-12)
    np.testing.assert_allclose(grad1, want_grad, rtol=1e-9, atol=1e-12)
    best = minimize_scalar(
        lambda t: problem.value_grad(x0 + t * direction)[0],
        bounds=(0.0, 1e4),
        method="bounded",
        options={"xatol": 1e-8},
    )
    assert value1 - best.fun <= 0.2 * (value - value1)


def test_first_step_only_from_zero_weights_and_for_host_objectives():
    X, y = _classification()
    problem, x0 = make_problem(X, y, 1.0)
    assert FirstStep.for_problem(problem, x0) is not None
    x_warm = x0.copy()
    x_warm[0] = 0.5
    assert FirstStep.for_problem(problem, x_warm) is None


@pytest.mark.parametrize("name", ["classification", "digits"])
def test_lbfgs_with_and_without_the_first_step_reach_the_same_optimum(name, monkeypatch):
    X, y = _digits() if name == "digits" else _classification()
    problem, x0 = make_problem(X, y, 1.0)
    exact = lbfgs(problem, x0, max_iter=2000, tol=1e-9)
    monkeypatch.setattr(FirstStep, "for_problem", classmethod(lambda cls, p, x: None))
    halving = lbfgs(problem, x0, max_iter=2000, tol=1e-9)
    assert exact.converged and halving.converged
    np.testing.assert_allclose(exact.loss_curve[-1], halving.loss_curve[-1], rtol=1e-8)
    # the first step goes at least as far down as halving's
    assert exact.loss_curve[0] <= halving.loss_curve[0] * (1 + 1e-12)  # both may take t = 1


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_curvature_at_zero_weights_needs_no_product_and_matches_autograd(sparse, fit_intercept):
    torch = pytest.importorskip("torch")
    from crossent.hessian import softmax_curvature

    objective, intercept, coef_dir, intercept_dir = _line_case(sparse, fit_intercept)
    curvature = softmax_curvature(objective, np.zeros((5, 14)), intercept)
    assert curvature.n_products == 0 and curvature.probs is not None
    got_coef, got_intercept = curvature.product(coef_dir, intercept_dir)
    X = objective.X.toarray() if sparse else objective.X
    Xt, y = torch.tensor(X), torch.tensor(objective.y)
    w = torch.tensor(objective.sample_weight)
    W = torch.zeros((5, 14), dtype=torch.float64, requires_grad=True)
    b = torch.tensor(intercept if fit_intercept else np.zeros(5), requires_grad=True)
    scores = Xt @ W.T + b
    losses = torch.logsumexp(scores, 1) - scores[torch.arange(len(y)), y]
    total = (w * losses).sum() + 0.5 * objective.l2 * (W * W).sum()
    grad_W, grad_b = torch.autograd.grad(total, (W, b), create_graph=True)
    direction_b = torch.tensor(intercept_dir if fit_intercept else np.zeros(5))
    inner = (grad_W * torch.tensor(coef_dir)).sum() + (grad_b * direction_b).sum()
    want_W, want_b = torch.autograd.grad(inner, (W, b))
    np.testing.assert_allclose(got_coef, want_W.numpy(), rtol=1e-10, atol=1e-10)
    if fit_intercept:
        np.testing.assert_allclose(got_intercept, want_b.numpy(), rtol=1e-10, atol=1e-10)


def test_a_step_whose_scores_overflow_is_infinitely_bad_not_an_error(kernel):
    objective, intercept, coef_dir, intercept_dir = _line_case(False, True, np.float32)
    line = ScoreLine(objective, intercept, coef_dir * 1e34, intercept_dir)  # scores ~1e35
    assert np.isfinite(line.step).all()
    assert np.isfinite(line.values(1e-34)).all()
    value, first, second = line.values(1e5)  # scores of about 1e40: beyond float32
    assert value == np.inf and np.isnan(first) and np.isnan(second)


def test_newton_on_line_shortens_a_step_that_overflowed():
    def phi(t):  # (t − 3)², with "overflow" beyond t = 10
        if t > 10:
            return np.inf, np.nan, np.nan
        return (t - 3.0) ** 2, 2.0 * (t - 3.0), 2.0

    def far(t):  # minimiser at 50: Newton's step from 1 lands there, overflow from 20
        if t > 20:
            return np.inf, np.nan, np.nan
        return (t - 50.0) ** 2 / 100, (t - 50.0) / 50, 0.02

    assert newton_on_line(phi, 9.0, -6.0) == pytest.approx(3.0)
    t = newton_on_line(far, 25.0, -1.0)
    assert isinstance(t, float) and 1.0 <= t <= 20.0
