"""Tests of crossent.SoftmaxClassifier against scikit-learn and plain formulas.

Reference: ``sklearn.linear_model.LogisticRegression(C=1/λ)`` minimises the same
``Σ s_i L_i + (λ/2)‖W‖²`` (multinomial, intercept not penalised). Its ``newton-cg`` solver
is used as the oracle: at ``tol=1e-10`` it ends with ``max|∂F/∂(W,b)|`` near 1e-11, while
scikit-learn's default ``lbfgs`` stops on its ``ftol`` test near 2e-5 on digits, which moves
the intercepts by ~1e-5 of ``max|coef|``: an oracle must be more accurate than the bound.

The intercepts of a softmax model are defined up to a common constant (the loss is
unchanged and they are not penalised): they are compared after subtracting their mean.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.special
from sklearn.datasets import load_digits, load_iris, load_wine, make_blobs, make_classification
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from crossent import SoftmaxClassifier
from crossent.classifier import Progress
from crossent.objective import LinearSoftmaxObjective

pytestmark = pytest.mark.usefixtures("single_blas_thread")

TIGHT = {"tol": 1e-10, "max_iter": 10_000}
MATCH_RTOL = 1e-5  # relative to max |coef|


# ------------------------------------------------------------------ data


def _digits():
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


def _iris():
    return load_iris(return_X_y=True)


def _wine():  # raw: features from 0.1 to 1680, a test of the preconditioner
    return load_wine(return_X_y=True)


def _imbalanced():  # four classes of 50/30/15/5 %, full rank
    return make_classification(
        300,
        8,
        n_informative=6,
        n_redundant=0,
        n_classes=4,
        weights=[0.5, 0.3, 0.15, 0.05],
        random_state=0,
    )


def _blobs():
    return make_blobs(200, 5, centers=3, cluster_std=3.0, random_state=0)


def _weights(n, seed=0, low=0.1):
    return np.random.default_rng(seed).uniform(low, 3.0, size=n)


# id: (data, λ, fit_intercept, class_weight, sample_weight seed or None)
SKLEARN_CASES = {
    "digits": (_digits, 1.0, True, None, None),
    "digits-no-intercept": (_digits, 1.0, False, None, None),
    "iris": (_iris, 0.1, True, None, None),
    "iris-sample-weight": (_iris, 0.1, True, None, 1),
    "wine-raw": (_wine, 1.0, True, None, None),
    "wine-raw-no-intercept": (_wine, 1.0, False, None, None),
    "wine-balanced": (_wine, 1.0, True, "balanced", None),
    "imbalanced": (_imbalanced, 0.5, True, None, None),
    "imbalanced-balanced": (_imbalanced, 0.5, True, "balanced", None),
    "imbalanced-dict": (_imbalanced, 0.5, True, {0: 0.5, 3: 4.0}, None),
    "imbalanced-dict-sample-weight": (_imbalanced, 0.5, True, {0: 0.5, 3: 4.0}, 2),
    "blobs": (_blobs, 2.0, True, None, None),
}


def _centred(intercept):
    return intercept - intercept.mean()


# ------------------------------------------------------------------ against scikit-learn


@pytest.mark.parametrize("solver", ["auto", "newton-cg"])
@pytest.mark.parametrize("case", list(SKLEARN_CASES))
def test_matches_sklearn_logistic_regression(case, solver):
    data, l2, fit_intercept, class_weight, weight_seed = SKLEARN_CASES[case]
    X, y = data()
    sample_weight = None if weight_seed is None else _weights(len(y), weight_seed)
    params = {"fit_intercept": fit_intercept, "class_weight": class_weight}
    ours = SoftmaxClassifier(l2=l2, solver=solver, **TIGHT, **params)
    ours.fit(X, y, sample_weight=sample_weight)
    ref = LogisticRegression(C=1.0 / l2, solver="newton-cg", **TIGHT, **params)
    ref.fit(X, y, sample_weight=sample_weight)

    assert ours.coef_.shape == ref.coef_.shape == (len(np.unique(y)), X.shape[1])
    scale = np.abs(ref.coef_).max()
    coef_err = np.abs(ours.coef_ - ref.coef_).max() / scale
    assert coef_err <= MATCH_RTOL, (
        f"{case}: coef_ of solver={solver!r} differs from sklearn's newton-cg by {coef_err:.2e}"
    )
    intercept_err = np.abs(_centred(ours.intercept_) - _centred(ref.intercept_)).max() / scale
    assert intercept_err <= MATCH_RTOL, f"{case}: intercept_ differs by {intercept_err:.2e}"
    if not fit_intercept:
        np.testing.assert_array_equal(ours.intercept_, 0.0)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-6)
    np.testing.assert_array_equal(ours.classes_, ref.classes_)


def test_matches_sklearn_default_lbfgs_within_its_accuracy():
    """The issue's literal reference, LogisticRegression(C=1/λ, tol=1e-10, max_iter=10000)
    with its default lbfgs: on digits it stops on ftol with max|∂F| ≈ 2e-5 and intercepts
    off by up to ~1.3e-5 of max|coef| (measured), so the bound here is 1e-4."""
    X, y = _digits()
    ours = SoftmaxClassifier(l2=1.0, **TIGHT).fit(X, y)
    ref = LogisticRegression(C=1.0, **TIGHT).fit(X, y)
    scale = np.abs(ref.coef_).max()
    assert np.abs(ours.coef_ - ref.coef_).max() <= 1e-4 * scale
    assert np.abs(_centred(ours.intercept_) - _centred(ref.intercept_)).max() <= 1e-4 * scale


def test_binary_matches_sklearn_with_twice_the_C():
    """Two classes keep two rows W = (w₀, w₁), and at the optimum w₀ = −w₁ (the rows of W
    sum to 0). The logit w₁ − w₀ = 2w₁ then pays (λ/2)(‖w₀‖² + ‖w₁‖²) = (λ/4)‖w₁ − w₀‖²:
    scikit-learn's binary LogisticRegression (one row, binomial loss) with C = 2/λ."""
    X, y = make_classification(200, 5, random_state=0)
    l2 = 1.0
    ours = SoftmaxClassifier(l2=l2, **TIGHT).fit(X, y)
    ref = LogisticRegression(C=2.0 / l2, solver="newton-cg", **TIGHT).fit(X, y)
    assert ours.coef_.shape == (2, 5)
    np.testing.assert_allclose(ours.coef_[0], -ours.coef_[1], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours.coef_[1] - ours.coef_[0], ref.coef_[0], rtol=1e-5)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-7)


@pytest.mark.parametrize("case", ["digits", "wine-balanced", "imbalanced-dict-sample-weight"])
def test_rows_of_coef_sum_to_zero_at_the_optimum(case):
    """∂L/∂W summed over classes is λ Σ_c W_c (the data part sums to 0): so Σ_c W_c = 0."""
    data, l2, _, class_weight, weight_seed = SKLEARN_CASES[case]
    X, y = data()
    sample_weight = None if weight_seed is None else _weights(len(y), weight_seed)
    clf = SoftmaxClassifier(l2=l2, class_weight=class_weight, **TIGHT)
    clf.fit(X, y, sample_weight=sample_weight)
    # raw wine (features up to 1680) stops on L-BFGS's ftol test with Σ_c W_c near 1e-7
    assert np.abs(clf.coef_.sum(axis=0)).max() <= 1e-6 * np.abs(clf.coef_).max()


def test_class_weight_equals_the_matching_sample_weight():
    X, y = _imbalanced()
    class_weight = {0: 0.5, 1: 1.0, 2: 2.0, 3: 4.0}
    a = SoftmaxClassifier(l2=0.5, class_weight=class_weight, **TIGHT).fit(X, y)
    b = SoftmaxClassifier(l2=0.5, **TIGHT).fit(X, y, np.array([class_weight[k] for k in y]))
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-10, atol=1e-12)


def test_integer_sample_weight_equals_repeated_rows():
    X, y = _iris()
    counts = np.random.default_rng(3).integers(0, 4, size=len(y))
    a = SoftmaxClassifier(l2=0.1, **TIGHT).fit(X, y, sample_weight=counts)
    b = SoftmaxClassifier(l2=0.1, **TIGHT).fit(np.repeat(X, counts, 0), np.repeat(y, counts))
    scale = np.abs(b.coef_).max()
    assert np.abs(a.coef_ - b.coef_).max() <= 1e-6 * scale
    assert np.abs(_centred(a.intercept_) - _centred(b.intercept_)).max() <= 1e-6 * scale


# ------------------------------------------------------------------ labels, dtypes, shapes


def test_string_labels():
    X, y = _iris()
    names = np.array(["virginica", "setosa", "versicolor"])[y]
    clf = SoftmaxClassifier(l2=0.1, **TIGHT).fit(X, names)
    np.testing.assert_array_equal(clf.classes_, ["setosa", "versicolor", "virginica"])
    codes = np.searchsorted(clf.classes_, names)
    by_code = SoftmaxClassifier(l2=0.1, **TIGHT).fit(X, codes)
    np.testing.assert_array_equal(clf.coef_, by_code.coef_)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[by_code.predict(X)])
    assert clf.score(X, names) == pytest.approx(by_code.score(X, codes))


def test_non_contiguous_integer_labels():
    X, y = _iris()
    labels = np.array([7, -2, 40])[y]
    clf = SoftmaxClassifier(l2=0.1).fit(X, labels)
    np.testing.assert_array_equal(clf.classes_, [-2, 7, 40])
    assert set(clf.predict(X)) <= {-2, 7, 40}


@pytest.mark.parametrize("data", [_wine, _digits])
def test_float32_and_float64_fits_agree_to_float32_accuracy(data):
    X, y = data()
    X = np.asarray(X, dtype=np.float32)  # both fits see the same numbers
    X64 = X.astype(np.float64)
    fit64 = SoftmaxClassifier(l2=1.0, tol=1e-8, max_iter=10_000).fit(X64, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        fit32 = SoftmaxClassifier(l2=1.0, tol=1e-8, max_iter=10_000).fit(X, y)
    assert fit32.coef_.shape == fit64.coef_.shape == (len(np.unique(y)), X.shape[1])
    objective = LinearSoftmaxObjective(X64, y, len(fit64.classes_), l2=1.0)
    best = objective.loss_gradient(fit64.coef_, fit64.intercept_)[0]
    reached = objective.loss_gradient(fit32.coef_, fit32.intercept_)[0]
    # a few float32 epsilons of L_total above the float64 fit, which at tol 1e-8 is itself
    # only near the optimum: the float32 fit may land below it (measured: -2.6e-13)
    assert -1e-10 <= (reached - best) / best <= 1e-6
    np.testing.assert_array_equal(fit32.predict(X), fit64.predict(X64))
    np.testing.assert_allclose(fit32.predict_proba(X), fit64.predict_proba(X64), atol=1e-3)
    # the weights themselves, to the accuracy the conditioning allows
    assert np.abs(fit32.coef_ - fit64.coef_).max() <= 1e-2 * np.abs(fit64.coef_).max()


def test_attributes_after_fit():
    X, y = _iris()
    clf = SoftmaxClassifier(l2=0.1).fit(X, y)
    assert clf.coef_.shape == (3, 4) and clf.intercept_.shape == (3,)
    assert clf.n_features_in_ == 4
    assert isinstance(clf.n_iter_, int) and 0 < clf.n_iter_ <= clf.max_iter
    assert len(clf.loss_curve_) == clf.n_iter_
    assert not hasattr(clf, "feature_names_in_")  # a plain array has no names


def test_feature_names_in_with_pandas():
    import pandas as pd

    X, y = _iris()
    frame = pd.DataFrame(X, columns=["sepal_l", "sepal_w", "petal_l", "petal_w"])
    clf = SoftmaxClassifier(l2=0.1).fit(frame, y)
    np.testing.assert_array_equal(
        clf.feature_names_in_, ["sepal_l", "sepal_w", "petal_l", "petal_w"]
    )
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        np.testing.assert_array_equal(clf.predict(frame), clf.predict(X))


# ------------------------------------------------------------------ predictions


@pytest.fixture(scope="module")
def digits_model():
    X, y = _digits()
    return SoftmaxClassifier(l2=1.0).fit(X, y), X, y


def test_predict_log_proba_is_log_softmax_of_scores(digits_model):
    clf, X, _ = digits_model
    scores = clf.decision_function(X)
    np.testing.assert_allclose(scores, X @ clf.coef_.T + clf.intercept_, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        clf.predict_log_proba(X), scipy.special.log_softmax(scores, axis=1), atol=1e-12
    )
    np.testing.assert_allclose(
        clf.predict_proba(X), scipy.special.softmax(scores, axis=1), atol=1e-15
    )
    np.testing.assert_allclose(clf.predict_proba(X).sum(axis=1), 1.0, rtol=1e-14)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[scores.argmax(axis=1)])


def test_predict_log_proba_is_finite_where_proba_underflows(digits_model):
    clf, X, _ = digits_model
    far = X[:3] * 1e4  # scores ~ ±1e4: exp underflows to 0 for all but the top class
    proba = clf.predict_proba(far)
    log_proba = clf.predict_log_proba(far)
    assert np.any(proba == 0.0), "the sample is not far enough out to underflow"
    assert np.all(np.isfinite(log_proba))
    scores = clf.decision_function(far)
    want = scores - scipy.special.logsumexp(scores, axis=1, keepdims=True)
    np.testing.assert_allclose(log_proba, want, rtol=1e-12)


def test_predict_in_chunks_equals_row_by_row(digits_model):
    """> 8192 rows are scored in blocks; rows at every block edge match their own call."""
    clf, X, _ = digits_model
    rng = np.random.default_rng(0)
    big = np.tile(X, (10, 1))[:17_000] + 0.01 * rng.standard_normal((17_000, X.shape[1]))
    scores = clf.decision_function(big)
    np.testing.assert_allclose(scores, big @ clf.coef_.T + clf.intercept_, rtol=1e-12)
    labels = clf.predict(big)
    proba = clf.predict_proba(big)
    for row in [0, 8191, 8192, 8193, 16383, 16384, 16385, 16999]:
        single = big[row : row + 1]
        np.testing.assert_array_equal(clf.predict(single), labels[row : row + 1])
        np.testing.assert_allclose(clf.decision_function(single), scores[row : row + 1])
        np.testing.assert_allclose(clf.predict_proba(single), proba[row : row + 1])


def test_float32_input_to_predict(digits_model):
    clf, X, _ = digits_model
    X32 = X.astype(np.float32)
    np.testing.assert_array_equal(clf.predict(X32), clf.predict(X))
    np.testing.assert_allclose(clf.predict_proba(X32), clf.predict_proba(X), atol=1e-5)


# ------------------------------------------------------------------ training behaviour


def test_warm_start_starts_from_the_previous_solution():
    X, y = _digits()
    cold = SoftmaxClassifier(l2=1.2, tol=1e-8, max_iter=10_000).fit(X, y)
    warm = SoftmaxClassifier(l2=1.0, tol=1e-8, max_iter=10_000, warm_start=True).fit(X, y)
    first = warm.coef_.copy()
    warm.fit(X, y)  # same problem: already at the optimum
    assert warm.n_iter_ <= 1
    np.testing.assert_allclose(warm.coef_, first, rtol=1e-6, atol=1e-8)
    warm.set_params(l2=1.2)
    warm.fit(X, y)  # a nearby problem: fewer iterations than from zero
    assert warm.n_iter_ < cold.n_iter_, (warm.n_iter_, cold.n_iter_)
    assert warm.loss_curve_[0] < cold.loss_curve_[0]
    scale = np.abs(cold.coef_).max()
    assert np.abs(warm.coef_ - cold.coef_).max() <= 1e-5 * scale


def test_without_warm_start_fit_starts_afresh():
    X, y = _iris()
    clf = SoftmaxClassifier(l2=0.1)
    first = clf.fit(X, y).coef_.copy()
    np.testing.assert_array_equal(clf.fit(X, y).coef_, first)


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg", "gd"])
def test_loss_curve_decreases_and_ends_at_L_total(solver):
    X, y = _wine()
    clf = SoftmaxClassifier(l2=1.0, solver=solver, max_iter=2000).fit(X, y)
    curve = np.asarray(clf.loss_curve_)
    assert len(curve) == clf.n_iter_ > 1
    assert np.all(np.diff(curve) <= 1e-12 * curve[:-1]), f"{solver}: loss_curve_ rose"
    objective = LinearSoftmaxObjective(X, y, 3, l2=1.0)
    final = objective.loss_gradient(clf.coef_, clf.intercept_)[0]
    np.testing.assert_allclose(curve[-1], final, rtol=1e-10)


@pytest.mark.parametrize("solver", ["lbfgs", "gd", "sgd", "adam"])
def test_callback_receives_progress_and_can_stop(solver):
    X, y = _iris()
    seen: list[Progress] = []

    def callback(progress):
        seen.append(progress)
        return progress.iteration >= 3

    clf = SoftmaxClassifier(l2=0.1, solver=solver, callback=callback, random_state=0)
    with pytest.warns(ConvergenceWarning, match="stopped by the callback"):
        clf.fit(X, y)
    assert [p.iteration for p in seen] == [1, 2, 3]
    last = seen[-1]
    assert isinstance(last, Progress)
    assert last.coef.shape == (3, 4) and last.intercept.shape == (3,)
    assert np.isfinite(last.loss)
    np.testing.assert_allclose(last.coef, clf.coef_, rtol=1e-12)
    np.testing.assert_allclose(last.intercept, clf.intercept_, rtol=1e-12, atol=1e-14)
    assert clf.n_iter_ == 3
    if solver in ("lbfgs", "gd"):
        objective = LinearSoftmaxObjective(X, y, 3, l2=0.1)
        np.testing.assert_allclose(
            last.loss, objective.loss_gradient(last.coef, last.intercept)[0], rtol=1e-10
        )


def test_threads_give_the_same_model():
    X, y = _digits()
    one = SoftmaxClassifier(l2=1.0, tol=1e-8).fit(X, y)
    two = SoftmaxClassifier(l2=1.0, tol=1e-8, n_jobs=2).fit(X, y)
    assert np.abs(one.coef_ - two.coef_).max() <= 1e-6 * np.abs(one.coef_).max()


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_minibatch_fit_gets_close_to_lbfgs(solver):
    X, y = make_classification(1000, 10, n_informative=6, n_classes=3, random_state=0)
    X = StandardScaler().fit_transform(X)
    objective = LinearSoftmaxObjective(X, y, 3, l2=10.0)
    best = SoftmaxClassifier(l2=10.0, **TIGHT).fit(X, y)
    clf = SoftmaxClassifier(
        l2=10.0, solver=solver, batch_size=100, tol=1e-7, n_iter_no_change=10, random_state=0
    ).fit(X, y)
    optimum = objective.loss_gradient(best.coef_, best.intercept_)[0]
    reached = objective.loss_gradient(clf.coef_, clf.intercept_)[0]
    assert (reached - optimum) / optimum <= 1e-3


def test_early_stopping_keeps_a_model_and_stops():
    X, y = make_classification(1000, 10, n_informative=6, n_classes=3, random_state=0)
    best = SoftmaxClassifier().fit(X, y).score(X, y)  # 0.663
    for solver in ("sgd", "adam"):
        clf = SoftmaxClassifier(solver=solver, early_stopping=True, random_state=0).fit(X, y)
        assert clf.n_iter_ < clf.max_iter
        assert clf.score(X, y) > best - 0.03


# ------------------------------------------------------------------ partial_fit


def test_partial_fit_needs_classes_on_the_first_call():
    X, y = _iris()
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        SoftmaxClassifier().partial_fit(X, y)


def test_partial_fit_checks_later_calls():
    X, y = _iris()
    clf = SoftmaxClassifier(random_state=0).partial_fit(X[:50], y[:50], classes=[0, 1, 2])
    np.testing.assert_array_equal(clf.classes_, [0, 1, 2])
    clf.partial_fit(X[50:], y[50:])  # classes optional after the first call
    with pytest.raises(ValueError, match="differs from the classes of the first call"):
        clf.partial_fit(X, y, classes=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="not in classes"):
        clf.partial_fit(X[:5], np.array([0, 1, 2, 5, 1]))
    with pytest.raises(ValueError, match="X has 3 features, but SoftmaxClassifier is expecting 4"):
        clf.partial_fit(X[:, :3], y)


def test_partial_fit_after_fit_continues():
    X, y = _iris()
    clf = SoftmaxClassifier(l2=0.1).fit(X, y)
    clf.partial_fit(X, y)
    assert clf.score(X, y) > 0.9


# ------------------------------------------------------------------ bad input


@pytest.fixture(scope="module")
def iris_model():
    X, y = _iris()
    return SoftmaxClassifier(l2=0.1).fit(X, y), X, y


@pytest.mark.parametrize(("value", "match"), [(np.nan, "Input X contains NaN"), (np.inf, "inf")])
def test_non_finite_X_is_refused(iris_model, value, match):
    clf, X, y = iris_model
    bad = X.copy()
    bad[3, 2] = value
    with pytest.raises(ValueError, match=match):
        SoftmaxClassifier().fit(bad, y)
    for method in (clf.predict, clf.predict_proba, clf.predict_log_proba, clf.decision_function):
        with pytest.raises(ValueError, match=match):
            method(bad)


def test_y_of_wrong_length(iris_model):
    _, X, y = iris_model
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        SoftmaxClassifier().fit(X, y[:-1])


def test_single_class():
    X, _ = _iris()
    with pytest.raises(ValueError, match="at least 2 classes"):
        SoftmaxClassifier().fit(X, np.zeros(len(X)))


def test_continuous_y():
    X, _ = _iris()
    with pytest.raises(ValueError, match="Unknown label type"):
        SoftmaxClassifier().fit(X, X[:, 0])


def test_nan_in_y():
    X, y = _iris()
    labels = y.astype(float)
    labels[4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        SoftmaxClassifier().fit(X, labels)


def test_three_dimensional_X(iris_model):
    clf, X, y = iris_model
    with pytest.raises(ValueError, match="Found array with dim 3"):
        SoftmaxClassifier().fit(X.reshape(150, 2, 2), y)
    with pytest.raises(ValueError, match="Found array with dim 3"):
        clf.predict(X.reshape(150, 2, 2))


def test_empty_X():
    with pytest.raises(ValueError, match="0 sample"):
        SoftmaxClassifier().fit(np.empty((0, 3)), np.empty(0))


def test_feature_count_at_predict(iris_model):
    clf, X, _ = iris_model
    message = "X has 3 features, but SoftmaxClassifier is expecting 4 features as input."
    for method in (clf.predict, clf.predict_proba, clf.decision_function):
        with pytest.raises(ValueError, match=message):
            method(X[:, :3])


@pytest.mark.parametrize(
    ("sample_weight", "match"),
    [
        (np.r_[-1.0, np.ones(149)], "Negative values in data passed to `sample_weight`"),
        (np.ones(3), r"sample_weight.shape == \(3,\), expected \(150,\)"),
        (np.r_[np.nan, np.ones(149)], "sample_weight contains NaN"),
        (np.zeros(150), "at least one non-zero"),
    ],
)
def test_bad_sample_weight(iris_model, sample_weight, match):
    _, X, y = iris_model
    with pytest.raises(ValueError, match=match):
        SoftmaxClassifier().fit(X, y, sample_weight=sample_weight)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"l2": -1.0}, "The 'l2' parameter of SoftmaxClassifier must be a float in the range"),
        ({"solver": "newton"}, "The 'solver' parameter of SoftmaxClassifier must be a str among"),
        ({"max_iter": 0}, "The 'max_iter' parameter"),
        ({"tol": -1e-3}, "The 'tol' parameter"),
        ({"class_weight": "unbalanced"}, "The 'class_weight' parameter"),
        ({"class_weight": {7: 2.0}}, "class_weight names classes not in the data"),
        ({"n_jobs": 0}, "n_jobs must be None, -1 or a positive integer"),
    ],
)
def test_bad_parameters(iris_model, params, match):
    _, X, y = iris_model
    with pytest.raises(ValueError, match=match):
        SoftmaxClassifier(**params).fit(X, y)


@pytest.mark.parametrize("solver", ["lbfgs", "gd", "sgd", "adam"])
def test_max_iter_reached_warns_with_advice(iris_model, solver):
    _, X, y = iris_model
    clf = SoftmaxClassifier(max_iter=2, solver=solver, tol=1e-12, random_state=0)
    with pytest.warns(ConvergenceWarning, match="did not converge") as record:
        clf.fit(X, y)
    message = str(record[0].message)
    assert "max_iter=2" in message and "Increase max_iter" in message
    assert clf.n_iter_ == 2


def test_converged_fit_does_not_warn(iris_model):
    _, X, y = iris_model
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        SoftmaxClassifier(l2=0.1, tol=1e-6).fit(X, y)


def test_predict_before_fit_raises_not_fitted():
    with pytest.raises(NotFittedError):
        SoftmaxClassifier().predict(np.ones((2, 3)))


def test_other_methods_before_fit_raise_not_fitted():
    for method in ("decision_function", "predict_proba", "predict_log_proba"):
        with pytest.raises(NotFittedError):
            getattr(SoftmaxClassifier(), method)(np.ones((2, 3)))


def test_binary_decision_function_is_one_column():
    X, y = make_classification(200, 5, random_state=0)
    clf = SoftmaxClassifier(l2=1.0).fit(X, y)
    scores = clf.decision_function(X)
    assert scores.shape == (200,)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[(scores > 0).astype(int)])


def test_auto_is_the_default_and_solver_names_the_choice():
    """``solver="auto"``: Newton-CG on data with few entries per feature, else L-BFGS."""
    import scipy.sparse as sp

    assert SoftmaxClassifier().solver == "auto"
    X, y = _iris()
    assert SoftmaxClassifier().fit(X, y).solver_ == "lbfgs"
    assert SoftmaxClassifier(solver="newton-cg").fit(X, y).solver_ == "newton-cg"
    rng = np.random.default_rng(0)
    X_text = sp.random(120, 3000, density=0.003, format="csr", random_state=0)
    y_text = rng.integers(0, 3, 120)
    clf = SoftmaxClassifier(tol=1e-8).fit(X_text, y_text)
    assert clf.solver_ == "newton-cg"
    ref = SoftmaxClassifier(solver="lbfgs", tol=1e-10).fit(X_text, y_text)
    scale = np.abs(ref.coef_).max()
    assert np.abs(clf.coef_ - ref.coef_).max() <= 1e-5 * scale
