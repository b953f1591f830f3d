"""Tests of crossent.solvers: the preconditioned problem and every solver's optimum.

References: the objective itself (tested against torch autograd in test_objective.py),
central finite differences of ``F(x)``, plain NumPy formulas for the feature statistics,
and agreement between independent solvers (L-BFGS, Newton-CG, gradient descent, SGD, Adam).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import load_digits, make_classification
from sklearn.preprocessing import StandardScaler

from crossent import SoftmaxClassifier
from crossent._stats import feature_moments, feature_scales
from crossent.objective import LinearSoftmaxObjective
from crossent.solvers import (
    FULL_BATCH,
    MINIBATCH,
    SOLVERS,
    Preconditioner,
    Problem,
    _newton,
    choose_solver,
)
from crossent.solvers._lbfgs import default_memory
from crossent.solvers._newton import _conjugate_gradient

pytestmark = pytest.mark.usefixtures("single_blas_thread")

FD_RTOL = 1e-7


# ------------------------------------------------------------------ problems


def make_problem(
    X: np.ndarray,
    y: np.ndarray,
    l2: float,
    *,
    fit_intercept: bool = True,
    sample_weight: np.ndarray | None = None,
) -> tuple[Problem, np.ndarray]:
    """The problem the classifier would build, and the zero start ``x0``."""
    n_classes = int(y.max()) + 1
    objective = LinearSoftmaxObjective(
        X, y, n_classes, l2=l2, sample_weight=sample_weight, fit_intercept=fit_intercept
    )
    precond = Preconditioner.from_data(X, sample_weight, center=fit_intercept, l2=l2)
    total = float(len(y) if sample_weight is None else np.sum(sample_weight))
    return Problem(objective, precond, total), np.zeros(n_classes * (X.shape[1] + 1))


def _classification(n=600, d=20, n_classes=4, seed=0):
    X, y = make_classification(
        n, d, n_informative=min(d, 10), n_classes=n_classes, random_state=seed
    )
    return StandardScaler().fit_transform(X), y


def _digits():
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


def full_batch_cases():
    X, y = _classification()
    weights = np.random.default_rng(0).uniform(0.1, 3.0, size=len(y))
    scaled = X * np.logspace(-2, 2, X.shape[1]) + 3.0  # four decades and an offset
    Xd, yd = _digits()
    return {
        "standardised": (X, y, 1.0, True, None),
        "no-intercept": (X, y, 1.0, False, None),
        "sample-weights": (X, y, 1.0, True, weights),
        "badly-scaled": (scaled, y, 1.0, True, None),
        "digits": (Xd, yd, 10.0, True, None),
        "digits-no-intercept": (Xd, yd, 10.0, False, None),
    }


SOLVER_OPTIONS = {  # tight tolerances; gd's max_iter bounds its stall near rounding level
    "auto": {"tol": 1e-10, "max_iter": 10_000},
    "lbfgs": {"tol": 1e-10, "max_iter": 10_000},
    "newton-cg": {"tol": 1e-10, "max_iter": 200},
    "gd": {"tol": 1e-9, "max_iter": 500},
}


@pytest.fixture(scope="module")
def full_batch_optima():
    """``{case: {solver: (F(x*), x*, problem)}}`` for every full-batch solver."""
    results = {}
    for name, (X, y, l2, fit_intercept, weights) in full_batch_cases().items():
        problem, x0 = make_problem(X, y, l2, fit_intercept=fit_intercept, sample_weight=weights)
        results[name] = {}
        for solver in FULL_BATCH:
            result = SOLVERS[solver](problem, x0, **SOLVER_OPTIONS[solver])
            results[name][solver] = (problem.value_grad(result.x)[0], result, problem)
    return results


# ------------------------------------------------------------------ full-batch agreement


@pytest.mark.parametrize("case", list(full_batch_cases()))
@pytest.mark.parametrize(("first", "second"), list(itertools.combinations(FULL_BATCH, 2)))
def test_full_batch_solvers_reach_the_same_optimum(full_batch_optima, case, first, second):
    value_a, result_a, problem = full_batch_optima[case][first]
    value_b, result_b, _ = full_batch_optima[case][second]
    rel = abs(value_a - value_b) / abs(value_a)
    assert rel <= 1e-8, (
        f"{case}: {first} reaches F = {value_a!r}, {second} reaches F = {value_b!r} "
        f"(relative difference {rel:.2e} > 1e-8)"
    )
    # F is strongly convex (λ > 0): equal values mean equal coefficients
    n_classes = problem.objective.n_classes
    coef_a, _ = problem.precond.to_model(result_a.x, n_classes)
    coef_b, _ = problem.precond.to_model(result_b.x, n_classes)
    coef_err = np.abs(coef_a - coef_b).max() / np.abs(coef_a).max()
    assert coef_err <= 1e-4, f"{case}: coef_ of {first} and {second} differ by {coef_err:.2e}"


@pytest.mark.parametrize("case", list(full_batch_cases()))
def test_lbfgs_reports_convergence_and_a_decreasing_curve(full_batch_optima, case):
    _, result, problem = full_batch_optima[case]["lbfgs"]
    assert result.converged, result.message
    assert 0 < result.n_iter == len(result.loss_curve)
    curve = np.asarray(result.loss_curve)
    assert np.all(np.diff(curve) <= 1e-12 * np.abs(curve[:-1])), "L-BFGS loss_curve rose"
    value = problem.value_grad(result.x)[0]
    np.testing.assert_allclose(curve[-1], value * problem.normaliser, rtol=1e-12)


@pytest.mark.parametrize("case", list(full_batch_cases()))
def test_gd_curve_decreases_every_step(full_batch_optima, case):
    _, result, problem = full_batch_optima[case]["gd"]
    curve = np.asarray(result.loss_curve)
    assert len(curve) == result.n_iter > 0
    assert np.all(np.diff(curve) <= 0.0), "an accepted Armijo step increased F"
    np.testing.assert_allclose(curve[-1], problem.value_grad(result.x)[0] * problem.normaliser)


def test_full_batch_tol_is_met_in_model_coordinates():
    X, y = _classification()
    problem, x0 = make_problem(X, y, 1.0)
    for solver in FULL_BATCH:
        result = SOLVERS[solver](problem, x0, tol=1e-6, max_iter=1000)
        assert result.converged, f"{solver}: {result.message}"
        grad_max = problem.model_grad_max(problem.value_grad(result.x)[1])
        assert grad_max <= 1e-6, f"{solver} claims convergence at max|grad| {grad_max:.2e}"


# ------------------------------------------------------------------ minibatch solvers


@pytest.fixture(scope="module")
def conditioned_problem():
    """1000 × 10, three classes, standardised features, λ = 10, and its optimum value."""
    X, y = make_classification(1000, 10, n_informative=6, n_classes=3, random_state=0)
    X = StandardScaler().fit_transform(X)
    problem, x0 = make_problem(X, y, 10.0)
    optimum = SOLVERS["lbfgs"](problem, x0, tol=1e-10, max_iter=10_000)
    return problem, x0, problem.value_grad(optimum.x)[0]


@pytest.mark.parametrize("solver", MINIBATCH)
def test_minibatch_solvers_approach_the_full_batch_optimum(conditioned_problem, solver):
    problem, x0, optimum = conditioned_problem
    result = SOLVERS[solver](
        problem,
        x0,
        max_iter=200,
        tol=1e-7,
        batch_size=100,
        n_iter_no_change=10,
        random_state=np.random.default_rng(0),
    )
    value = problem.value_grad(result.x)[0]
    rel = (value - optimum) / optimum
    assert -1e-12 <= rel <= 1e-3, f"{solver} stops at F = {value} vs lbfgs's {optimum} ({rel:.2e})"
    assert result.n_iter == len(result.loss_curve) <= 200


@pytest.mark.parametrize("solver", MINIBATCH)
def test_minibatch_is_reproducible_with_a_seeded_generator(conditioned_problem, solver):
    problem, x0, _ = conditioned_problem
    runs = [
        SOLVERS[solver](problem, x0, max_iter=3, tol=0.0, random_state=np.random.default_rng(5))
        for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0].x, runs[1].x)


@pytest.mark.parametrize("solver", MINIBATCH)
def test_minibatch_state_counts_epochs_across_calls(conditioned_problem, solver):
    problem, x0, _ = conditioned_problem
    state: dict = {}
    rng = np.random.default_rng(1)
    first = SOLVERS[solver](problem, x0, max_iter=2, tol=0.0, random_state=rng, state=state)
    assert state["epochs"] == 2
    SOLVERS[solver](problem, first.x, max_iter=1, tol=0.0, random_state=rng, state=state)
    assert state["epochs"] == 3


# ------------------------------------------------------------------ every solver


@pytest.mark.parametrize("solver", list(SOLVERS))
def test_callback_sees_each_iteration_and_can_stop(conditioned_problem, solver):
    problem, x0, _ = conditioned_problem
    seen = []

    def callback(iteration, loss, grad_max, x):
        seen.append((iteration, loss, x.copy()))
        return iteration >= 2

    result = SOLVERS[solver](problem, x0, max_iter=100, tol=0.0, callback=callback)
    assert [s[0] for s in seen] == [1, 2]
    assert not result.converged
    assert result.n_iter == 2
    assert result.loss_curve == [s[1] for s in seen]
    np.testing.assert_array_equal(result.x, seen[-1][2])


@pytest.mark.parametrize("solver", list(SOLVERS))
def test_max_iter_bounds_the_work(conditioned_problem, solver):
    problem, x0, _ = conditioned_problem
    result = SOLVERS[solver](problem, x0, max_iter=2, tol=0.0)
    assert result.n_iter <= 2
    assert not result.converged


@pytest.mark.parametrize("solver", FULL_BATCH)
def test_full_batch_solver_started_at_the_optimum_stops_at_once(conditioned_problem, solver):
    problem, x0, _ = conditioned_problem
    optimum = SOLVERS["lbfgs"](problem, x0, tol=1e-8, max_iter=1000).x
    result = SOLVERS[solver](problem, optimum, tol=1e-6, max_iter=1000)
    assert result.converged
    assert result.n_iter == 0
    np.testing.assert_array_equal(result.x, optimum)


# ------------------------------------------------------------------ partial_fit


def _passes(clf, X, y, n_passes, batch_rows=200):
    for _ in range(n_passes):
        for start in range(0, len(y), batch_rows):
            clf.partial_fit(X[start : start + batch_rows], y[start : start + batch_rows], [0, 1, 2])
        yield clf


def _partial_fit_gaps(l2, solver, n_passes, **params):
    X, y = make_classification(1000, 10, n_informative=6, n_classes=3, random_state=0)
    X = StandardScaler().fit_transform(X)
    objective = LinearSoftmaxObjective(X, y, 3, l2=l2)
    full = SoftmaxClassifier(l2=l2, tol=1e-10, max_iter=10_000).fit(X, y)
    optimum = objective.loss_gradient(full.coef_, full.intercept_)[0]
    clf = SoftmaxClassifier(l2=l2, solver=solver, random_state=0, **params)
    gaps = []
    for fitted in _passes(clf, X, y, n_passes):
        value = objective.loss_gradient(fitted.coef_, fitted.intercept_)[0]
        gaps.append((value - optimum) / optimum)
    return np.array(gaps)


@pytest.mark.parametrize(
    ("solver", "params"),
    [("sgd", {"batch_size": 50}), ("adam", {"batch_size": 50, "learning_rate": 0.05})],
)
def test_partial_fit_passes_approach_the_full_batch_optimum(solver, params):
    """Five passes over 1000 rows in batches of 200 (λ = 10): L_total falls toward fit's."""
    gaps = _partial_fit_gaps(10.0, solver, 5, **params)
    assert np.all(gaps > -1e-9), gaps  # nothing beats the optimum
    assert gaps[-1] < gaps[0], f"no progress over the passes: {gaps}"
    assert gaps[-1] <= 0.02, f"{solver}: L_total after 5 passes is {gaps[-1]:.2%} above fit's"


def test_partial_fit_passes_count_each_sample_once_per_pass():
    """Documented semantics: P passes minimise Σ over the stream, i.e. Σ L_i + (λ/2P)‖W‖².

    partial_fit cannot know the size of the data set, so the penalty is shared out over
    the samples seen; after P passes it is the optimum of fit(l2=λ/P) that is approached.
    """
    n_passes, l2 = 6, 1000.0
    X, y = make_classification(1000, 10, n_informative=6, n_classes=3, random_state=0)
    X = StandardScaler().fit_transform(X)
    objective = LinearSoftmaxObjective(X, y, 3, l2=l2 / n_passes)
    full = SoftmaxClassifier(l2=l2 / n_passes, tol=1e-10, max_iter=10_000).fit(X, y)
    optimum = objective.loss_gradient(full.coef_, full.intercept_)[0]
    clf = SoftmaxClassifier(l2=l2, solver="sgd", batch_size=50, random_state=0)
    for _ in _passes(clf, X, y, n_passes):
        pass
    value = objective.loss_gradient(clf.coef_, clf.intercept_)[0]
    assert clf.n_samples_seen_ == n_passes * len(y)
    assert (value - optimum) / optimum <= 0.03, (value, optimum)


# ------------------------------------------------------------------ the preconditioner


def _random_preconditioner(d, seed=0, center=True, order="C"):
    rng = np.random.default_rng(seed)
    mean = rng.normal(0.0, 10.0, size=d) if center else np.zeros(d)
    return Preconditioner(mean, rng.uniform(0.01, 100.0, size=d), order)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("center", [True, False])
def test_preconditioner_round_trips(center, order):
    n_classes, d = 4, 7
    precond = _random_preconditioner(d, center=center, order=order)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(n_classes * (d + 1))
    coef, intercept = precond.to_model(x, n_classes)
    assert coef.shape == (n_classes, d) and intercept.shape == (n_classes,)
    np.testing.assert_allclose(precond.from_model(coef, intercept), x, rtol=1e-12, atol=1e-12)

    coef = rng.standard_normal((n_classes, d))
    intercept = rng.standard_normal(n_classes)
    back_coef, back_intercept = precond.to_model(precond.from_model(coef, intercept), n_classes)
    np.testing.assert_allclose(back_coef, coef, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(back_intercept, intercept, rtol=1e-12, atol=1e-12)


def test_preconditioner_identity_changes_nothing():
    precond = Preconditioner.identity(5)
    x = np.arange(18.0)
    coef, intercept = precond.to_model(x, 3)
    np.testing.assert_array_equal(coef.ravel(), x[:15])
    np.testing.assert_array_equal(intercept, x[15:])
    np.testing.assert_array_equal(precond.gradient_to_x(coef, intercept), x)


@pytest.mark.parametrize("order", ["C", "F"])
def test_gradient_to_x_is_the_chain_rule_of_to_model(order):
    """For φ(W, b) = ⟨G_W, W⟩ + ⟨G_b, b⟩, ∂φ/∂x is gradient_to_x(G_W, G_b), exactly."""
    n_classes, d = 3, 5
    precond = _random_preconditioner(d, seed=2, order=order)
    rng = np.random.default_rng(3)
    grad_coef, grad_intercept = rng.standard_normal((n_classes, d)), rng.standard_normal(n_classes)

    def phi(x):
        coef, intercept = precond.to_model(x, n_classes)
        return float(np.sum(grad_coef * coef) + grad_intercept @ intercept)

    x = rng.standard_normal(n_classes * (d + 1))
    step = 1e-3
    basis = np.eye(x.size)
    fd = np.array([(phi(x + step * e) - phi(x - step * e)) / (2 * step) for e in basis])
    want = precond.gradient_to_x(grad_coef, grad_intercept)
    np.testing.assert_allclose(fd, want, rtol=1e-8, atol=1e-8 * np.abs(want).max())
    # and gradient_to_model inverts it
    back = precond.gradient_to_model(want, n_classes)
    np.testing.assert_allclose(back[0], grad_coef, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(back[1], grad_intercept, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("centred", [True, False])
def test_blocked_chain_rule_matches_the_whole_array_formulas(order, centred):
    """Three feature blocks (7 classes × 20000 features): gradient_to_x against
    ``(G_W − G_b μᵀ) / σ / S`` and model_grad_max against ``max |σ ∂/∂V + ∂/∂b' μᵀ|``."""
    n_classes, d = 7, 20000
    rng = np.random.default_rng(6)
    center = rng.standard_normal(d) if centred else np.zeros(d)
    precond = Preconditioner(center, rng.uniform(0.1, 10.0, d), order)
    grad_coef = rng.standard_normal((n_classes, d))
    if order == "F":
        grad_coef = np.asfortranarray(grad_coef)
    grad_intercept = rng.standard_normal(n_classes)
    x = precond.gradient_to_x(grad_coef, grad_intercept, 7.5)
    V = (grad_coef - np.outer(grad_intercept, center)) / precond.scale / 7.5
    want = np.concatenate([V.ravel(order=order), grad_intercept / 7.5])
    np.testing.assert_allclose(x, want, rtol=1e-15, atol=0)
    model = x[: n_classes * d].reshape(n_classes, d, order=order) * precond.scale
    model += np.outer(x[n_classes * d :], center)
    assert precond.model_grad_max(x, n_classes) == np.abs(model).max()


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_problem_gradient_matches_central_differences_of_F(fit_intercept, weighted):
    rng = np.random.default_rng(4)
    X = rng.standard_normal((40, 6)) * np.array([0.01, 0.1, 1.0, 10.0, 100.0, 1.0]) + 2.0
    y = rng.integers(0, 3, size=40)
    weights = rng.uniform(0.2, 2.0, size=40) if weighted else None
    problem, _ = make_problem(X, y, 0.5, fit_intercept=fit_intercept, sample_weight=weights)
    x = 0.3 * rng.standard_normal(3 * 7)
    value, grad = problem.value_grad(x)

    def F(z):
        return problem.value_grad(z)[0]

    step = 1e-5
    fd = np.array([(F(x + step * e) - F(x - step * e)) / (2 * step) for e in np.eye(x.size)])
    err = np.abs(fd - grad).max() / np.abs(grad).max()
    assert err <= FD_RTOL, f"∂F/∂x vs central differences: relative error {err:.2e}"
    # F is L_total / S at the model x stands for
    coef, intercept = problem.precond.to_model(x, 3)
    loss = problem.objective.loss_gradient(coef, intercept)[0]
    np.testing.assert_allclose(value, loss / problem.normaliser, rtol=1e-14)
    if not fit_intercept:
        np.testing.assert_array_equal(grad[18:], 0.0)


def test_model_grad_max_is_the_largest_model_gradient():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((50, 4)) * 5.0 + 1.0
    y = rng.integers(0, 3, size=50)
    problem, _ = make_problem(X, y, 0.5)
    x = rng.standard_normal(15)
    _, grad_x = problem.value_grad(x)
    coef, intercept = problem.precond.to_model(x, 3)
    _, grad_coef, grad_intercept = problem.objective.loss_gradient(coef, intercept)
    want = max(np.abs(grad_coef).max(), np.abs(grad_intercept).max()) / problem.normaliser
    assert problem.model_grad_max(grad_x) == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("center", [True, False])
def test_preconditioner_from_data_matches_numpy(center):
    rng = np.random.default_rng(6)
    X = rng.standard_normal((101, 5)) * np.array([1.0, 10.0, 0.1, 0.0, 3.0]) + 7.0
    weights = rng.uniform(0.1, 2.0, size=101)
    l2 = 0.8
    precond = Preconditioner.from_data(X, weights, center=center, l2=l2, chunk_rows=16)
    mean = np.average(X, axis=0, weights=weights) if center else np.zeros(5)
    spread = np.average((X - mean) ** 2, axis=0, weights=weights)
    np.testing.assert_allclose(precond.center, mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        precond.scale, np.sqrt(spread + l2 / weights.sum()), rtol=1e-8, atol=1e-12
    )
    # float32 data give the same statistics (accumulated in float64)
    precond32 = Preconditioner.from_data(X.astype(np.float32), weights, center=center, l2=l2)
    np.testing.assert_allclose(precond32.center, precond.center, rtol=1e-6, atol=1e-6)


def test_penalty_weight_multiplies_the_ridge_of_the_scales():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((60, 4)) * np.array([1.0, 0.01, 5.0, 0.0])
    spread = np.var(X, axis=0)
    precond = Preconditioner.from_data(X, None, center=True, l2=0.3, penalty_weight=4.0)
    np.testing.assert_allclose(precond.scale, np.sqrt(spread + 4 * 0.3 / 60), rtol=1e-10)


def test_constant_feature_without_penalty_keeps_a_unit_scale():
    X = np.column_stack([np.full(20, 3.0), np.arange(20.0)])
    precond = Preconditioner.from_data(X, None, center=True, l2=0.0)
    assert precond.scale[0] == 1.0
    assert np.all(np.isfinite(precond.scale)) and np.all(precond.scale > 0)


@pytest.mark.parametrize("factor", [1e200, 1e-200, 2.0**1000])
def test_preconditioner_is_scale_free(factor):
    """``c·X`` gets ``c·μ`` and ``c·σ`` (without penalty): squares of 1e200 do not overflow."""
    rng = np.random.default_rng(8)
    X = rng.standard_normal((300, 4)) * np.array([1.0, 5.0, 0.2, 2.0]) + np.array([0, 3, 0, -1])
    weights = rng.uniform(0.1, 2.0, size=300)
    plain = Preconditioner.from_data(X, weights, center=True, l2=0.0, chunk_rows=64)
    scaled = Preconditioner.from_data(X * factor, weights, center=True, l2=0.0, chunk_rows=64)
    assert np.isfinite(scaled.scale).all() and np.isfinite(scaled.center).all()
    np.testing.assert_allclose(scaled.scale / factor, plain.scale, rtol=1e-13)
    np.testing.assert_allclose(scaled.center / factor, plain.center, rtol=1e-13, atol=1e-15)
    mean, std, _ = feature_scales(X * factor, weights)
    ref_mean = np.average(X, axis=0, weights=weights)
    ref_std = np.sqrt(np.average((X - ref_mean) ** 2, axis=0, weights=weights))
    np.testing.assert_allclose(std / factor, ref_std, rtol=1e-13)
    np.testing.assert_allclose(mean / factor, ref_mean, rtol=1e-13, atol=1e-15)


def test_feature_moments_agree_bit_for_bit_with_the_unscaled_two_pass_formula():
    """Scaling each column by a power of two changes no bit of the float64 statistics."""
    rng = np.random.default_rng(9)
    X = rng.standard_normal((257, 6)) * rng.uniform(0.01, 1e3, size=6) + 1e6
    weights = rng.uniform(0.0, 3.0, size=257)
    mean, spread, total = feature_moments(X, weights, chunk_rows=300)
    ref_mean = (weights @ X) / weights.sum()
    ref_spread = (weights @ ((X - ref_mean) ** 2)) / weights.sum()
    np.testing.assert_array_equal(mean, ref_mean)
    np.testing.assert_array_equal(spread, ref_spread)
    assert total == weights.sum()


# ------------------------------------------------------------------ minibatch problems


def test_subsets_partitioning_the_rows_average_to_F():
    """Σ_B (S_B / S) F_B(x) = F(x) and the same for the gradient: the batches are unbiased."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((90, 5))
    y = rng.integers(0, 4, size=90)
    weights = rng.uniform(0.1, 2.0, size=90)
    problem, _ = make_problem(X, y, 2.0, sample_weight=weights)
    x = rng.standard_normal(4 * 6)
    value, grad = problem.value_grad(x)
    total_value, total_grad = 0.0, np.zeros_like(grad)
    for rows in np.array_split(rng.permutation(90), 4):
        batch = problem.subset(np.sort(rows))
        batch_value, batch_grad = batch.value_grad(x)
        share = batch.normaliser / problem.normaliser
        total_value += share * batch_value
        total_grad += share * batch_grad
    np.testing.assert_allclose(total_value, value, rtol=1e-12)
    np.testing.assert_allclose(total_grad, grad, rtol=1e-10, atol=1e-13)


def test_lbfgs_keeps_fewer_correction_pairs_only_for_large_models():
    assert default_memory(8_000) == 20  # every dense benchmark and test: unchanged
    assert default_memory(838_000) == 20
    assert 10 <= default_memory(1_500_000) < 20
    assert default_memory(20 * 130_107 + 20) == 10  # the 20-newsgroups shape: 416 MB of pairs


def test_the_transposed_layout_holds_V_as_its_d_by_C_transpose():
    """order="F" (chosen for sparse X) stores V column by column: x[:C d] is Vᵀ's rows."""
    precond = Preconditioner(np.zeros(3), np.ones(3), "F")
    coef, intercept = precond.to_model(np.arange(8.0), 2)
    np.testing.assert_array_equal(coef, [[0.0, 2.0, 4.0], [1.0, 3.0, 5.0]])
    assert coef.T.flags.c_contiguous  # the objective reads Wᵀ without a copy
    np.testing.assert_array_equal(precond.gradient_to_x(coef, intercept), np.arange(8.0))


# ------------------------------------------------------------------ newton-cg and auto


@pytest.mark.parametrize("case", list(full_batch_cases()))
def test_newton_cg_reports_convergence_and_a_decreasing_curve(full_batch_optima, case):
    _, result, _ = full_batch_optima[case]["newton-cg"]
    assert result.converged, result.message
    assert 0 < result.n_iter == len(result.loss_curve)
    curve = np.asarray(result.loss_curve)
    assert np.all(np.diff(curve) <= 1e-12 * np.abs(curve[:-1])), "Newton-CG loss_curve rose"
    assert result.n_iter <= 30, f"{case}: Newton-CG took {result.n_iter} iterations"


def test_full_batch_stop_needs_a_settled_objective_as_well():
    """At ``tol`` the gradient test counts only once an iteration lowered F by <= tol rel."""
    assert Problem.settled(1.0, 1.0 - 1e-5, 1e-4)
    assert not Problem.settled(1.0, 1.0 - 1e-3, 1e-4)
    assert Problem.settled(1e-3, 1e-3 - 5e-5, 1e-4)  # relative to max(|F|, 1)
    X, y = _classification()
    problem, x0 = make_problem(X, y, 1.0)
    for solver in ("lbfgs", "newton-cg"):
        seen: list[float] = []

        def record(iteration, loss, grad_max, x, seen=seen):
            seen.append(loss)

        SOLVERS[solver](problem, x0, max_iter=1000, tol=1e-4, callback=record)
        values = [problem.value_grad(x0)[0] * problem.normaliser, *seen]
        last, before = values[-1], values[-2]
        assert Problem.settled(before / problem.normaliser, last / problem.normaliser, 1e-4)


def test_auto_chooses_newton_cg_for_few_entries_per_feature():
    rng = np.random.default_rng(0)
    y = np.arange(200) % 4
    sparse_X = sp.random(200, 5000, density=0.002, format="csr", random_state=0)
    dense_X = rng.standard_normal((200, 10))
    sparse_problem, _ = make_problem(sparse_X, y, 1.0)
    dense_problem, _ = make_problem(dense_X, y, 1.0)
    assert choose_solver(sparse_problem) == "newton-cg"
    assert choose_solver(dense_problem) == "lbfgs"
    dense_problem.objective.world_size = 2  # as a DistributedObjective of two ranks has
    assert choose_solver(dense_problem) == "lbfgs"
    with pytest.raises(ValueError, match="not distributed"):
        dense_problem.hessian_at(np.zeros(4 * 11))


def test_auto_polishes_an_ftol_stop_of_lbfgs_with_newton_cg():
    """Raw wine at tol 1e-10: L-BFGS may stop on rounding first; auto goes on."""
    from sklearn.datasets import load_wine

    X, y = load_wine(return_X_y=True)
    problem, x0 = make_problem(X, y, 1.0)
    plain = SOLVERS["lbfgs"](problem, x0, max_iter=10_000, tol=1e-10)
    auto = SOLVERS["auto"](problem, x0, max_iter=10_000, tol=1e-10)
    assert auto.converged, auto.message
    grad_plain = problem.model_grad_max(problem.value_grad(plain.x)[1])
    grad_auto = problem.model_grad_max(problem.value_grad(auto.x)[1])
    assert grad_auto <= max(1e-10, grad_plain)
    if grad_plain > 1e-10:
        assert "then newton-cg" in auto.message


def test_conjugate_gradient_solves_the_newton_system_as_numpy_does():
    """Without ``reached``, CG on an SPD system meets its residual bound and agrees with
    ``numpy.linalg.solve``; with it, CG stops at the first step whose residual satisfies
    it (one step fewer does not)."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((40, 40))
    hessian = A @ A.T + 0.5 * np.eye(40)  # SPD, condition number ~ 1e3
    grad = rng.standard_normal(40)
    exact = np.linalg.solve(hessian, -grad)
    direction = _conjugate_gradient(lambda v: hessian @ v, grad, 1e-12, 200)
    np.testing.assert_allclose(direction, exact, rtol=1e-8, atol=1e-10)

    target = 1e-2 * np.abs(grad).max()
    calls = []

    def hessp(v):
        calls.append(1)
        return hessian @ v

    stopped = _conjugate_gradient(hessp, grad, 0.0, 200, lambda r: np.abs(r).max() <= target)
    assert np.abs(hessian @ stopped + grad).max() <= target
    steps = len(calls)
    earlier = _conjugate_gradient(lambda v: hessian @ v, grad, 0.0, steps - 1)
    assert np.abs(hessian @ earlier + grad).max() > target, "CG did not stop at the first step"
    asked = []  # reached is asked only while ‖r‖ <= reach_norm
    _conjugate_gradient(lambda v: hessian @ v, grad, 0.0, 5, lambda r: asked.append(1), 0.0)
    assert not asked
    _conjugate_gradient(lambda v: hessian @ v, grad, 0.0, 5, lambda r: asked.append(1), np.inf)
    assert len(asked) == 5


@pytest.mark.parametrize("case", ["digits", "standardised"])
def test_newton_cg_solves_no_further_than_the_stopping_test_needs(monkeypatch, case):
    """CG stops once the quadratic model predicts ``max |∂F/∂(W, b)| <= tol / 2``: fewer
    Hessian-vector products than solving to the forcing term alone, the same stopping test
    met, and ``F`` within ``tol`` of the tight optimum (relative, as the settled test)."""
    X, y, l2, fit_intercept, weights = full_batch_cases()[case]
    problem, x0 = make_problem(X, y, l2, fit_intercept=fit_intercept, sample_weight=weights)
    optimum = problem.value_grad(SOLVERS["newton-cg"](problem, x0, tol=1e-10, max_iter=200).x)[0]
    counts = {}
    for target in (0.0, _newton._CG_TARGET):  # 0: the forcing term alone decides
        monkeypatch.setattr(_newton, "_CG_TARGET", target)
        products = []
        hessian_at = Problem.hessian_at

        def counting(self, x, products=products, hessian_at=hessian_at):
            hessp = hessian_at(self, x)
            return lambda v: (products.append(1), hessp(v))[1]

        monkeypatch.setattr(Problem, "hessian_at", counting)
        result = SOLVERS["newton-cg"](problem, x0, tol=1e-4, max_iter=200)
        monkeypatch.setattr(Problem, "hessian_at", hessian_at)
        assert result.converged, result.message
        value, grad = problem.value_grad(result.x)
        assert problem.model_grad_max(grad) <= 1e-4
        assert value - optimum <= 1e-4 * max(abs(optimum), 1.0)
        counts[target] = len(products)
    assert counts[_newton._CG_TARGET] < counts[0.0], counts
