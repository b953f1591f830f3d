"""Hostile inputs to ``SoftmaxClassifier`` (issue #7, section 4), one small test each.

Bad parameters get a clear exception naming the parameter; data of extreme but finite scale
is fitted as well as the same data at ordinary scale (the preconditioner makes the problem
scale-free), or, past float64's range, refused with a message about the feature scale.
Run them with ``python -m pytest tests/test_hostile_classifier.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_iris, make_classification
from sklearn.linear_model import LogisticRegression

from crossent import SoftmaxClassifier
from crossent.solvers import Preconditioner

pytestmark = pytest.mark.usefixtures("single_blas_thread")


def _iris():
    return load_iris(return_X_y=True)


def _noisy(n_classes=3):
    """Overlapping classes (20% flipped labels): the unpenalised optimum exists."""
    return make_classification(
        n_samples=300,
        n_features=5,
        n_informative=4,
        n_redundant=0,
        n_classes=n_classes,
        flip_y=0.2,
        random_state=0,
    )


# ------------------------------------------------------------------ bad parameters


@pytest.mark.parametrize(
    "class_weight",
    [{0: -1.0, 1: 1.0, 2: 1.0}, {0: 1.0, 1: np.nan, 2: 1.0}, {0: 1.0, 1: 1.0, 2: np.inf}],
    ids=["negative", "nan", "inf"],
)
def test_bad_class_weight_is_refused_naming_class_weight(class_weight):
    X, y = _iris()
    with pytest.raises(ValueError, match="class_weight") as info:
        SoftmaxClassifier(class_weight=class_weight).fit(X, y)
    assert "finite and non-negative" in str(info.value)


def test_class_weight_of_a_non_number_is_refused_naming_class_weight():
    X, y = _iris()
    with pytest.raises(ValueError, match="class_weight"):
        SoftmaxClassifier(class_weight={0: "heavy", 1: 1.0, 2: 1.0}).fit(X, y)


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"tol": float("nan")}, "tol"),
        ({"l2": float("nan")}, "l2"),
        ({"l2": float("inf")}, "l2"),
        ({"learning_rate": float("inf"), "solver": "sgd"}, "learning_rate"),
    ],
    ids=["tol-nan", "l2-nan", "l2-inf", "learning_rate-inf"],
)
def test_non_finite_number_parameter_is_refused_naming_it(params, name):
    X, y = _iris()
    with pytest.raises(ValueError, match=name):
        SoftmaxClassifier(**params).fit(X, y)
    with pytest.raises(ValueError, match=name):
        SoftmaxClassifier(**params).partial_fit(X, y, classes=[0, 1, 2])


def test_zero_class_weight_for_a_class_still_fits_the_others():
    """The documented way to drop a class from the loss, for contrast with a negative one."""
    X, y = _iris()
    clf = SoftmaxClassifier(class_weight={0: 0.0, 1: 1.0, 2: 1.0}).fit(X, y)
    kept = y > 0
    assert clf.score(X[kept], y[kept]) > 0.9


# ------------------------------------------------------------------ extreme feature scales


@pytest.mark.parametrize(
    ("dtype", "factor"), [(np.float64, 1e200), (np.float32, 1e37)], ids=["f64-1e200", "f32-1e37"]
)
def test_features_of_huge_finite_scale_fit_like_the_unscaled_features(dtype, factor):
    """Without a penalty the model on ``c·X`` is the model on ``X`` with ``W / c``."""
    X, y = _noisy()
    X = X.astype(dtype)
    big = X * dtype(factor)
    assert np.isfinite(big).all()
    plain = SoftmaxClassifier(l2=0.0, tol=1e-8).fit(X, y)
    huge = SoftmaxClassifier(l2=0.0, tol=1e-8).fit(big, y)
    assert np.isfinite(huge.coef_).all() and np.isfinite(huge.intercept_).all()
    np.testing.assert_allclose(huge.predict_proba(big), plain.predict_proba(X), atol=2e-3)
    assert (huge.predict(big) == plain.predict(X)).mean() >= 0.99
    assert huge.score(big, y) == pytest.approx(plain.score(X, y), abs=0.01)


def test_features_beyond_float64_sums_are_refused_naming_the_feature_scale():
    X, y = _iris()
    with pytest.raises(ValueError, match="feature scale") as info:
        SoftmaxClassifier().fit(X * 1e306, y)
    assert "logits row" not in str(info.value)


def test_predicting_on_features_whose_scores_overflow_is_refused_naming_the_feature_scale():
    X, y = _iris()
    clf = SoftmaxClassifier().fit(X, y)
    for method in ("predict", "predict_proba", "predict_log_proba", "decision_function"):
        with pytest.raises(ValueError, match="feature scale"):
            getattr(clf, method)(X * 1e307)  # finite, but X Wᵀ is not
    assert np.isfinite(clf.predict_proba(X * 1e200)).all()  # large but representable scores


def test_feature_with_mean_1e9_and_std_1_gets_scale_about_1():
    rng = np.random.default_rng(0)
    feature = rng.standard_normal(10_000)
    feature = (feature - feature.mean()) / feature.std()  # mean 0, std 1 exactly-ish
    X = np.column_stack([feature + 1e9, feature])
    precond = Preconditioner.from_data(X, None, center=True, l2=0.0)
    np.testing.assert_allclose(precond.scale, [1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(precond.center, [1e9, 0.0], rtol=1e-15, atol=1e-12)


def test_a_feature_offset_by_1e9_fits_like_the_centred_feature():
    X, y = _noisy()
    shifted = X + np.array([1e9, 0.0, 0.0, 0.0, 0.0])
    plain = SoftmaxClassifier(l2=1.0, tol=1e-8).fit(X, y)
    offset = SoftmaxClassifier(l2=1.0, tol=1e-8).fit(shifted, y)
    # Scores x·w + b with |x| = 1e9 carry an absolute rounding error of about 1e9·|w|·eps in
    # float64, so L_total is known only to about 1e-9 relative: L-BFGS, which compares
    # values, stops there (1.5e-6 to 1.7e-5 from the plain fit's probabilities, by the
    # rounding of the exp kernel in use); Newton-CG's steps come from Hessian products and
    # get much closer.
    np.testing.assert_allclose(offset.coef_, plain.coef_, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(offset.predict_proba(shifted), plain.predict_proba(X), atol=1e-4)
    newton = SoftmaxClassifier(l2=1.0, tol=1e-8, solver="newton-cg").fit(shifted, y)
    np.testing.assert_allclose(newton.coef_, plain.coef_, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(newton.predict_proba(shifted), plain.predict_proba(X), atol=1e-6)


# ------------------------------------------------------------------ output dtypes


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_outputs_keep_the_input_float_dtype_as_logistic_regression(dtype, n_classes):
    X, y = _noisy(n_classes)
    X = X.astype(dtype)
    ours = SoftmaxClassifier(l2=1.0).fit(X, y)
    theirs = LogisticRegression().fit(X, y)
    for method in ("predict_proba", "predict_log_proba", "decision_function"):
        got, want = getattr(ours, method)(X), getattr(theirs, method)(X)
        assert got.dtype == want.dtype == dtype, method
        assert got.shape == want.shape, method
    proba = ours.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=4 * np.finfo(dtype).eps * n_classes)
