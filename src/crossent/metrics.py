"""Classification metrics of a probabilistic classifier, with the cross-entropy split.

:func:`classification_metrics` takes class indices and predicted log-probabilities and
returns accuracy, the confusion matrix, per-class precision, recall and support, and the
mean cross-entropy with its information-theoretic split (all in nats):

.. math::

    \\overline{H} = \\frac1n \\sum_i -\\log q_i(k_i)
                  = \\frac1n \\sum_i \\big[ H(\\delta_{k_i}) + KL(\\delta_{k_i} \\| q_i) \\big],
    \\qquad H(\\delta_k) = 0,

so for one-hot labels the mean cross-entropy *is* the mean KL divergence from the label to
the prediction. Two further numbers give the split some content:

- the *label entropy* :math:`H(p)` of the empirical class distribution
  :math:`p_k = n_k / n`: the mean cross-entropy of the best constant predictor (one that
  always predicts ``p``), the baseline a model must beat;
- the class-marginal decomposition :math:`H(p, \\bar q) = H(p) + KL(p \\| \\bar q)` with
  :math:`\\bar q = \\frac1n \\sum_i q_i` the mean predicted distribution: ``KL(p ‖ q̄)`` is 0
  when the model predicts the class frequencies right on average (a calibration check
  that accuracy cannot see). ``H(p, q̄)`` is not the mean cross-entropy: it is the
  cross-entropy of the *averaged* prediction.

Every logarithm and sum is computed by crossent's own functions
(:func:`~crossent.softmax_cross_entropy`, :func:`~crossent.entropy`,
:func:`~crossent.cross_entropy`, :func:`~crossent.kl_divergence`): this module holds no
second copy of the math.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from crossent.info import cross_entropy, entropy, kl_divergence
from crossent.loss import softmax_cross_entropy
from crossent.softmax import logsumexp

__all__ = [
    "classification_metrics",
    "metric_sums",
    "metrics_from_sums",
    "prediction_entropy",
]

_NORMALISATION_TOL = 1e-6  # |log Σ_j q_ij| allowed for a row of log-probabilities


def _check_inputs(y_true_index: Any, log_proba: Any, n_classes: Any) -> tuple[np.ndarray, ...]:
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)):
        raise TypeError(f"n_classes must be an int, got {n_classes!r}")
    if n_classes < 1:
        raise ValueError(f"n_classes must be at least 1, got {n_classes}")
    log_proba = np.asarray(log_proba)
    if log_proba.ndim != 2 or log_proba.shape[1] != n_classes:
        raise ValueError(
            f"log_proba must have shape (n_samples, {n_classes}), got {log_proba.shape}"
        )
    if log_proba.dtype.kind != "f":
        raise TypeError(f"log_proba must be a float array, got dtype {log_proba.dtype}")
    log_proba = log_proba.astype(np.float64, copy=False)
    y = np.asarray(y_true_index)
    if y.ndim != 1 or len(y) != len(log_proba):
        raise ValueError(
            f"y_true_index must have shape ({len(log_proba)},) to match log_proba, got {y.shape}"
        )
    if len(y) == 0:
        raise ValueError("no samples: y_true_index and log_proba are empty")
    if y.dtype.kind not in "iu":
        raise TypeError(f"y_true_index must hold integer class indices, got dtype {y.dtype}")
    if y.min() < 0 or y.max() >= n_classes:
        bad = y[(y < 0) | (y >= n_classes)][0]
        raise ValueError(f"y_true_index holds {bad}, outside [0, {n_classes})")
    if np.isnan(log_proba).any() or (log_proba == np.inf).any():
        raise ValueError("log_proba must not hold NaN or +inf")
    log_norm = logsumexp(log_proba, axis=1)  # (n,) log Σ_j q_ij, 0 for a distribution
    if np.abs(log_norm).max() > _NORMALISATION_TOL:
        row = int(np.argmax(np.abs(log_norm)))
        raise ValueError(
            f"log_proba row {row} is not a log-distribution: log Σ exp = {log_norm[row]:.3g} "
            f"(tolerance {_NORMALISATION_TOL:g})"
        )
    return y.astype(np.intp), log_proba


def prediction_entropy(log_proba: Any) -> np.ndarray:
    """Entropy in nats of each predicted distribution, ``H(q_i) = −Σ_j q_ij log q_ij``.

    Parameters
    ----------
    log_proba : array_like, shape ``(n_samples, n_classes)``
        Log-probabilities, each row a distribution.

    Returns
    -------
    ndarray, shape ``(n_samples,)``, float64
        Between 0 (a certain prediction) and ``log n_classes`` (a uniform one).

    Examples
    --------
    >>> import numpy as np
    >>> prediction_entropy(np.log([[0.5, 0.5], [1.0, 1e-300]])).round(6)
    array([0.693147, 0.      ])
    """
    log_proba = np.asarray(log_proba, dtype=np.float64)
    return np.asarray(entropy(np.exp(log_proba), axis=1, validate=False))


def classification_metrics(y_true_index: Any, log_proba: Any, n_classes: int) -> dict[str, Any]:
    """Accuracy, confusion, precision/recall and the mean cross-entropy with its split.

    Reference semantics: ``accuracy = accuracy_score(y, argmax(log_proba))``,
    ``cross_entropy = log_loss(y, exp(log_proba), labels=range(n_classes))`` (without
    scikit-learn's clipping), ``confusion, precision, recall, support`` as
    ``confusion_matrix`` and ``precision_recall_fscore_support(zero_division=0)`` with
    ``labels=range(n_classes)``.

    Parameters
    ----------
    y_true_index : array_like of int, shape ``(n_samples,)``
        True class indices in ``[0, n_classes)``.
    log_proba : array_like of float, shape ``(n_samples, n_classes)``
        Predicted log-probabilities, e.g. ``predict_log_proba``; each row must be a
        log-distribution (``|log Σ_j exp| <= 1e-6``). ``-inf`` (probability 0) is allowed.
    n_classes : int
        Number of classes ``C``; classes absent from ``y_true_index`` get support 0.

    Returns
    -------
    dict
        Scalars (Python floats and ints, nats):

        - ``n_samples``, ``n_classes``, ``accuracy``;
        - ``cross_entropy``: mean of ``−log q_i(k_i)``, computed from the log-probabilities
          (``+inf`` if a true class has probability 0);
        - ``onehot_entropy``: mean ``H(δ_{k_i})``, always 0;
        - ``kl_onehot``: mean ``KL(δ_{k_i} ‖ q_i) = cross_entropy − onehot_entropy``,
          which equals ``cross_entropy`` (one-hot labels carry no entropy);
        - ``prediction_entropy``: mean ``H(q_i)``;
        - ``label_entropy``: ``H(p)`` of the empirical class distribution ``p``, the mean
          cross-entropy of the best constant predictor;
        - ``marginal_cross_entropy``, ``marginal_kl``: ``H(p, q̄)`` and ``KL(p ‖ q̄)``
          for the mean prediction ``q̄``, so that
          ``marginal_cross_entropy = label_entropy + marginal_kl`` (to rounding).

        Arrays: ``confusion`` ``(C, C)`` int64 (rows true, columns predicted);
        ``precision``, ``recall`` ``(C,)`` float64 (0 where undefined); ``support``
        ``(C,)`` int64; ``class_distribution`` ``p``, ``mean_prediction`` ``q̄``,
        ``(C,)`` float64.

    Raises
    ------
    ValueError, TypeError
        If the shapes disagree, an index is out of range, or a row of ``log_proba`` is not
        a log-distribution.

    Examples
    --------
    >>> import numpy as np
    >>> proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    >>> m = classification_metrics(np.array([0, 1, 1]), np.log(proba), 2)
    >>> m["accuracy"], round(m["cross_entropy"], 6), m["kl_onehot"] == m["cross_entropy"]
    (0.6666666666666666, 0.414932, True)
    >>> m["confusion"]
    array([[1, 0],
           [1, 1]])
    >>> gap = m["marginal_cross_entropy"] - (m["label_entropy"] + m["marginal_kl"])
    >>> abs(gap) < 1e-15
    True
    """
    y, log_proba = _check_inputs(y_true_index, log_proba, n_classes)
    return metrics_from_sums(_sums(y, log_proba, n_classes), n_classes)


def metric_sums(y_true_index: Any, log_proba: Any, n_classes: int) -> np.ndarray:
    """The sums over samples that :func:`classification_metrics` is made of, flat.

    Adding the sums of several parts of the samples (an all-reduce over the processes of
    a distributed run) and passing the total to :func:`metrics_from_sums` gives the metrics
    of all the samples. Unlike :func:`classification_metrics`, zero samples are allowed.

    Returns
    -------
    ndarray, shape ``(C² + C + 3,)``, float64
        The confusion matrix (row-major, exact counts), then ``Σ −log q_i(k_i)``,
        ``Σ H(δ_{k_i})``, ``Σ H(q_i)``, then ``Σ_i q_i`` ``(C,)``.
    """
    if len(np.asarray(y_true_index)) == 0:
        return np.zeros(n_classes * n_classes + n_classes + 3)
    y, log_proba = _check_inputs(y_true_index, log_proba, n_classes)
    return _sums(y, log_proba, n_classes)


def _sums(y: np.ndarray, log_proba: np.ndarray, n_classes: int) -> np.ndarray:
    predicted = np.argmax(log_proba, axis=1)  # (n,)
    confusion = np.bincount(y * n_classes + predicted, minlength=n_classes * n_classes)
    # −log q_i(k_i) = lse(log q_i) − log q_i(k_i): log-probabilities are their own logits
    with np.errstate(invalid="ignore"):  # a true class of probability 0: +inf, not NaN
        per_sample = np.asarray(softmax_cross_entropy(log_proba, y, reduction="none"))
    onehot_entropy = np.asarray(entropy(np.eye(n_classes), axis=1))[y]  # (n,)
    proba = np.exp(np.asarray(log_proba, dtype=np.float64))  # (n, C) q, computed once
    predicted_entropy = np.asarray(entropy(proba, axis=1, validate=False))  # (n,) H(q_i)
    scalars = [per_sample.sum(), onehot_entropy.sum(), predicted_entropy.sum()]
    return np.concatenate([confusion.astype(np.float64), scalars, proba.sum(axis=0)])


def metrics_from_sums(sums: np.ndarray, n_classes: int) -> dict[str, Any]:
    """:func:`classification_metrics` from the (summed) :func:`metric_sums`.

    Raises
    ------
    ValueError
        If the sums count no samples.
    """
    C = n_classes
    confusion = np.rint(sums[: C * C]).astype(np.int64).reshape(C, C)  # (C, C)
    n = int(confusion.sum())
    if n == 0:
        raise ValueError("no samples: y_true_index and log_proba are empty")
    ce_sum, onehot_sum, entropy_sum = (float(v) for v in sums[C * C : C * C + 3])
    support = confusion.sum(axis=1)
    predicted_count = confusion.sum(axis=0)
    hits = np.diag(confusion).astype(np.float64)
    precision = np.divide(hits, predicted_count, out=np.zeros(C), where=predicted_count > 0)
    recall = np.divide(hits, support, out=np.zeros(C), where=support > 0)
    mean_ce = ce_sum / n
    onehot_entropy = onehot_sum / n

    class_distribution = support / n  # (C,) p
    mean_prediction = sums[C * C + 3 :] / n  # (C,) q̄
    mean_prediction = mean_prediction / mean_prediction.sum()  # exact normalisation
    label_entropy = float(entropy(class_distribution))
    marginal_ce = float(cross_entropy(class_distribution, mean_prediction))
    marginal_kl = float(kl_divergence(class_distribution, mean_prediction))
    return {
        "n_samples": n,
        "n_classes": int(C),
        "accuracy": float(hits.sum() / n),
        "cross_entropy": mean_ce,
        "onehot_entropy": onehot_entropy,
        "kl_onehot": mean_ce - onehot_entropy,
        "prediction_entropy": entropy_sum / n,
        "label_entropy": label_entropy,
        "marginal_cross_entropy": marginal_ce,
        "marginal_kl": marginal_kl,
        "confusion": confusion,
        "precision": precision,
        "recall": recall,
        "support": support.astype(np.int64),
        "class_distribution": class_distribution,
        "mean_prediction": mean_prediction,
    }
