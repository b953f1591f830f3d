"""Tests of crossent.metrics against scikit-learn's metrics and the derivation's identities."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    log_loss,
    precision_recall_fscore_support,
)

from crossent import kl_divergence, log_softmax
from crossent.metrics import (
    classification_metrics,
    metric_sums,
    metrics_from_sums,
    prediction_entropy,
)


def random_problem(seed: int, n: int = 47, n_classes: int = 5, spread: float = 3.0):
    rng = np.random.default_rng(seed)
    logits = spread * rng.normal(size=(n, n_classes))  # (n, C)
    y = rng.integers(0, n_classes, n)
    return y, log_softmax(logits)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_scikit_learn(seed, close):
    y, log_proba = random_problem(seed)
    n_classes = log_proba.shape[1]
    labels = np.arange(n_classes)
    m = classification_metrics(y, log_proba, n_classes)
    predicted = np.argmax(log_proba, axis=1)
    proba = np.exp(log_proba)

    assert m["accuracy"] == accuracy_score(y, predicted)
    close(m["cross_entropy"], log_loss(y, proba, labels=labels))
    np.testing.assert_array_equal(m["confusion"], confusion_matrix(y, predicted, labels=labels))
    precision, recall, _, support = precision_recall_fscore_support(
        y, predicted, labels=labels, zero_division=0
    )
    close(m["precision"], precision)
    close(m["recall"], recall)
    np.testing.assert_array_equal(m["support"], support)
    assert m["n_samples"] == len(y) and m["n_classes"] == n_classes


def test_absent_classes_get_zero_support_precision_and_recall(close):
    # class 3 is never true and never predicted; class 2 is predicted but never true
    log_proba = np.log(
        np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.2, 0.6, 0.1], [0.1, 0.8, 0.05, 0.05]])
    )
    y = np.array([0, 1, 1])
    m = classification_metrics(y, log_proba, 4)
    precision, recall, _, support = precision_recall_fscore_support(
        y, np.argmax(log_proba, axis=1), labels=np.arange(4), zero_division=0
    )
    np.testing.assert_array_equal(m["support"], [1, 2, 0, 0])
    np.testing.assert_array_equal(m["support"], support)
    close(m["precision"], precision)
    close(m["recall"], recall)
    close(m["label_entropy"], -(1 / 3) * np.log(1 / 3) - (2 / 3) * np.log(2 / 3))


def test_cross_entropy_split(close):
    y, log_proba = random_problem(3, n=200, n_classes=7)
    m = classification_metrics(y, log_proba, 7)
    proba = np.exp(log_proba)
    onehot = np.eye(7)[y]  # (n, C)
    # one-hot labels carry no entropy: the mean CE is the mean KL(one-hot ‖ q), term by term
    assert m["onehot_entropy"] == 0.0
    assert m["kl_onehot"] == m["cross_entropy"]
    close(m["kl_onehot"], np.mean(kl_divergence(onehot, proba)))
    # mean entropy of the predictions, from the plain formula
    close(m["prediction_entropy"], np.mean(-np.sum(proba * log_proba, axis=1)))
    # the class-marginal decomposition H(p, q̄) = H(p) + KL(p ‖ q̄), numerically
    p = np.bincount(y, minlength=7) / len(y)
    q_bar = proba.mean(axis=0)
    close(m["class_distribution"], p)
    close(m["mean_prediction"], q_bar)
    close(m["label_entropy"], -np.sum(p * np.log(p)))
    close(m["marginal_cross_entropy"], -np.sum(p * np.log(q_bar)))
    close(m["marginal_kl"], np.sum(p * np.log(p / q_bar)))
    close(m["marginal_cross_entropy"], m["label_entropy"] + m["marginal_kl"])


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 40),
    n_classes=st.integers(2, 9),
    spread=st.floats(0.0, 30.0),
)
def test_identities_hold(seed, n, n_classes, spread, close):
    y, log_proba = random_problem(seed, n, n_classes, spread)
    m = classification_metrics(y, log_proba, n_classes)
    close(m["marginal_cross_entropy"], m["label_entropy"] + m["marginal_kl"], atol=1e-12)
    assert m["marginal_kl"] >= -1e-15
    assert m["cross_entropy"] >= 0.0
    assert 0.0 <= m["prediction_entropy"] <= np.log(n_classes) + 1e-12
    assert m["confusion"].sum() == n
    assert m["accuracy"] == np.trace(m["confusion"]) / n


def test_perfect_and_impossible_predictions():
    log_proba = np.array([[0.0, -np.inf], [-np.inf, 0.0]])
    m = classification_metrics(np.array([0, 1]), log_proba, 2)
    assert m["accuracy"] == 1.0 and m["cross_entropy"] == 0.0 and m["prediction_entropy"] == 0.0
    m = classification_metrics(np.array([1, 1]), log_proba, 2)
    assert m["cross_entropy"] == np.inf and m["kl_onehot"] == np.inf
    assert m["accuracy"] == 0.5


def test_confident_predictions_stay_finite(close):
    # q(true) = e^-800 underflows as a probability; its log-probability does not
    log_proba = log_softmax(np.array([[0.0, 800.0], [800.0, 0.0]]))
    m = classification_metrics(np.array([0, 0]), log_proba, 2)
    close(m["cross_entropy"], 400.0)


def test_prediction_entropy(close):
    log_proba = np.array([np.log([0.25, 0.25, 0.25, 0.25]), [0.0, -np.inf, -np.inf, -np.inf]])
    close(prediction_entropy(log_proba), [np.log(4), 0.0])


@pytest.mark.parametrize(
    ("y", "log_proba", "n_classes", "match"),
    [
        (np.array([0, 1]), np.log(np.full((2, 3), 1 / 3)), 2, r"shape \(n_samples, 2\)"),
        (np.array([0]), np.log(np.full((2, 2), 0.5)), 2, r"y_true_index must have shape \(2,\)"),
        (np.array([0, 2]), np.log(np.full((2, 2), 0.5)), 2, r"holds 2, outside \[0, 2\)"),
        (np.array([0, -1]), np.log(np.full((2, 2), 0.5)), 2, r"holds -1"),
        (np.array([0, 1]), np.log(np.full((2, 2), 0.6)), 2, "row 0 is not a log-distribution"),
        (np.array([0, 1]), np.full((2, 2), np.nan), 2, "NaN"),
        (np.zeros(0, int), np.zeros((0, 2)), 2, "no samples"),
    ],
)
def test_bad_input_raises_value_error(y, log_proba, n_classes, match):
    with pytest.raises(ValueError, match=match):
        classification_metrics(y, log_proba, n_classes)


def test_bad_types_raise_type_error():
    log_proba = np.log(np.full((2, 2), 0.5))
    with pytest.raises(TypeError, match="integer class indices"):
        classification_metrics(np.array([0.0, 1.0]), log_proba, 2)
    with pytest.raises(TypeError, match="n_classes must be an int"):
        classification_metrics(np.array([0, 1]), log_proba, 2.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("cuts", [(0, 47), (0, 20, 47), (0, 0, 13, 30, 47)])
def test_sums_of_parts_give_the_metrics_of_the_whole(cuts, close):
    """What a distributed run does: each part's sums, added, then the metrics (a part may
    be empty); the reference is classification_metrics of all the samples at once."""
    y, log_proba = random_problem(3)
    whole = classification_metrics(y, log_proba, 5)
    sums = sum(metric_sums(y[a:b], log_proba[a:b], 5) for a, b in itertools.pairwise(cuts))
    parts = metrics_from_sums(sums, 5)
    assert parts.keys() == whole.keys()
    for key, value in whole.items():
        if isinstance(value, np.ndarray) and value.dtype.kind == "i":
            np.testing.assert_array_equal(parts[key], value, err_msg=key)
        else:
            close(parts[key], value, atol=1e-15, err_msg=key)
    with pytest.raises(ValueError, match="no samples"):
        metrics_from_sums(metric_sums(y[:0], log_proba[:0], 5), 5)
