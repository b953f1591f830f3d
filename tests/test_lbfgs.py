"""Tests of crossent's own L-BFGS (crossent.solvers._lbfgs).

References: the BFGS inverse-Hessian update written out as dense matrices (Nocedal & Wright,
eq. 6.17), SciPy's L-BFGS-B on the same objective, and the closed-form minimiser of a
quadratic.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize
from sklearn.datasets import load_wine

from crossent.solvers import Problem
from crossent.solvers._lbfgs import _Pairs, lbfgs
from test_solvers import _classification, make_problem

pytestmark = pytest.mark.usefixtures("single_blas_thread")


def _dense_inverse_hessian(pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """``H`` after the BFGS updates by ``pairs`` from ``H₀ = (sᵀy / yᵀy) I`` of the last."""
    s_last, y_last = pairs[-1]
    n = s_last.size
    H = np.eye(n) * (s_last @ y_last) / (y_last @ y_last)
    for s, y in pairs:
        rho = 1.0 / (s @ y)
        left = np.eye(n) - rho * np.outer(s, y)
        H = left @ H @ left.T + rho * np.outer(s, s)
    return H


@pytest.mark.parametrize("n_pairs, memory", [(1, 5), (3, 5), (5, 5), (8, 5)])
def test_two_loop_direction_is_minus_the_bfgs_inverse_hessian_times_the_gradient(n_pairs, memory):
    rng = np.random.default_rng(n_pairs)
    n = 7
    A = rng.standard_normal((n, n))
    A = A @ A.T + n * np.eye(n)  # s, y from a positive definite quadratic: sᵀy > 0
    pairs = []
    ring = _Pairs(memory, n)
    for _ in range(n_pairs):
        s = rng.standard_normal(n)
        y = A @ s
        pairs.append((s, y))
        ring.add(s, y, float(s @ y))
    grad = rng.standard_normal(n)
    expected = -_dense_inverse_hessian(pairs[-memory:]) @ grad
    np.testing.assert_allclose(ring.direction(grad), expected, rtol=1e-10, atol=1e-12)


def test_the_first_direction_is_the_unit_steepest_descent():
    grad = np.array([3.0, -4.0])
    np.testing.assert_allclose(_Pairs(3, 2).direction(grad), [-0.6, 0.8])


def test_reaches_scipys_lbfgsb_optimum():
    X, y = _classification(n=300, d=12, n_classes=3)
    problem, x0 = make_problem(X, y, 0.5)
    ours = lbfgs(problem, x0, max_iter=1000, tol=1e-10)
    assert ours.converged, ours.message
    theirs = minimize(
        problem.value_grad,
        x0,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 10_000, "gtol": 1e-12, "ftol": 1e-15},
    )
    assert ours.loss_curve[-1] / problem.normaliser <= theirs.fun + 1e-13
    np.testing.assert_allclose(ours.x, theirs.x, rtol=1e-5, atol=1e-6)


class _Quadratic:
    """``F(x) = ½ xᵀ A x − bᵀ x`` behind the :class:`Problem` methods L-BFGS calls."""

    normaliser = 1.0

    def __init__(self, A, b):
        self.A, self.b, self.n_evals = A, b, 0

    def value_grad(self, x):
        self.n_evals += 1
        Ax = self.A @ x
        return 0.5 * float(x @ Ax) - float(self.b @ x), Ax - self.b

    def model_grad_max(self, grad):
        return float(np.max(np.abs(grad)))

    settled = staticmethod(Problem.settled)
    stalled = staticmethod(Problem.stalled)
    after_step = Problem.after_step


@pytest.mark.parametrize("seed", range(5))
def test_minimises_an_ill_conditioned_quadratic(seed):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((30, 30)))
    A = Q @ np.diag(np.logspace(0, 4, 30)) @ Q.T
    b = rng.standard_normal(30)
    quadratic = _Quadratic(A, b)
    result = lbfgs(quadratic, np.zeros(30), max_iter=2000, tol=1e-9)  # type: ignore[arg-type]
    assert result.converged, result.message
    x_star = np.linalg.solve(A, b)
    f_star = -0.5 * float(b @ x_star)
    # tol 1e-9 is below what F's rounding resolves (condition number 1e4): the run ends on
    # a decrease below 64 eps, as SciPy's L-BFGS-B does (seed 0: 4.5e-13 relative, max
    # |∇F| 9e-6). Where exactly depends on the path's rounding: over seeds 0-39 the gap
    # was at most 9e-12 relative (2.5e-12 for seed 0), hence a bound of 1e-10, not one
    # fitted to one seed on one machine. F − F* = ½ (x − x*)ᵀ A (x − x*), so x is known to
    # sqrt(2 (F − F*) / λ_min) with λ_min = 1
    assert result.converged, result.message
    assert result.loss_curve[-1] - f_star <= 1e-10 * abs(f_star)
    np.testing.assert_allclose(result.x, x_star, rtol=0, atol=np.sqrt(2e-10 * abs(f_star)))
    assert np.all(np.diff(result.loss_curve) <= 0)  # Armijo: every step lowers F
    assert quadratic.n_evals <= 1.2 * result.n_iter + 5  # the full step is nearly always taken


def test_a_tolerance_below_rounding_ends_converged_without_a_runaway_line_search():
    """Raw wine (features up to 1680), tol 1e-14: rounding, not tol, ends the run."""
    X, y = load_wine(return_X_y=True)
    problem, x0 = make_problem(X, y, 1.0)
    evaluations = []
    value_grad = problem.value_grad

    def counted(x):
        evaluations.append(1)
        return value_grad(x)

    problem.value_grad = counted  # type: ignore[method-assign]
    result = lbfgs(problem, x0, max_iter=5000, tol=1e-14)
    assert result.converged, result.message
    assert result.n_iter < 5000
    assert len(evaluations) <= 1.5 * result.n_iter + 40, (len(evaluations), result.n_iter)


def test_the_callback_stops_and_max_iter_ends_unconverged():
    X, y = _classification(n=200, d=12, n_classes=3)
    problem, x0 = make_problem(X, y, 1.0)
    seen = []
    stopped = lbfgs(
        problem,
        x0,
        max_iter=100,
        tol=1e-12,
        callback=lambda *a: seen.append(a[0]) or len(seen) == 3,
    )
    assert stopped.stopped and not stopped.converged and stopped.n_iter == 3 == len(seen)
    short = lbfgs(problem, x0, max_iter=2, tol=1e-12)
    assert short.n_iter == 2 and not short.converged and short.message == "max_iter reached"
