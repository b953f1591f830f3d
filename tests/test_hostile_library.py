"""Hostile inputs to the library's functions (issue #7, section 5): one clear exception each.

Every case calls one public function (or the objective every solver uses) with one bad
argument and checks the exception's type and that its message names that argument. Run
them with ``python -m pytest tests/test_hostile_library.py``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from crossent import (
    cross_entropy,
    entropy,
    kl_divergence,
    log_softmax,
    logsumexp,
    softmax,
    softmax_cross_entropy,
    softmax_cross_entropy_with_grad,
)
from crossent.objective import LinearSoftmaxObjective, loss_gradient

LOGITS = np.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
TARGET = np.array([0, 2])
X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
Y = np.array([0, 1, 2])


def _loss(**kwargs: Any) -> Callable[[], Any]:
    args = {"logits": LOGITS, "target": TARGET} | kwargs
    return lambda: softmax_cross_entropy(args.pop("logits"), args.pop("target"), **args)


def _objective(**kwargs: Any) -> Callable[[], Any]:
    args = {"X": X, "y": Y, "n_classes": 3, "l2": 1.0} | kwargs
    return lambda: LinearSoftmaxObjective(
        args.pop("X"), args.pop("y"), args.pop("n_classes"), **args
    )


# id: (call, exception type, what the message must name)
CASES: dict[str, tuple[Callable[[], Any], type[Exception], str]] = {
    # targets
    "target index out of range": (_loss(target=np.array([0, 3])), ValueError, "target"),
    "target negative index": (_loss(target=np.array([-1, 0])), ValueError, "target"),
    "target of floats shaped like indices": (
        _loss(target=np.array([0.0, 2.0])),
        TypeError,
        "target",
    ),
    "target of bools": (_loss(target=np.array([True, False])), TypeError, "target"),
    "target probabilities not summing to 1": (
        _loss(target=np.full((2, 3), 0.5)),
        ValueError,
        "target",
    ),
    "target of the wrong shape": (_loss(target=np.array([0, 1, 2])), ValueError, "target"),
    # shapes and dtypes of logits
    "logits of integers": (_loss(logits=np.array([[1, 2], [3, 4]])), TypeError, "logits"),
    "logits a scalar": (lambda: softmax(np.float64(1.0)), ValueError, "logits"),
    "logits of zero classes to the loss": (
        _loss(logits=np.zeros((2, 0)), target=np.array([0, 0])),
        ValueError,
        "logits",
    ),
    "softmax axis out of range": (lambda: log_softmax(LOGITS, axis=2), ValueError, "axis"),
    "softmax axis a float": (lambda: softmax(LOGITS, axis=1.0), TypeError, "axis"),
    "entropy axis a string": (lambda: entropy([0.5, 0.5], axis="0"), TypeError, "axis"),
    "logsumexp of complex logits": (lambda: logsumexp(LOGITS + 1j), TypeError, "logits"),
    # weights
    "class weight negative": (_loss(weight=np.array([1.0, -1.0, 1.0])), ValueError, "weight"),
    "class weight NaN": (_loss(weight=np.array([1.0, np.nan, 1.0])), ValueError, "weight"),
    "class weight of the wrong shape": (_loss(weight=np.ones(2)), ValueError, "weight"),
    "objective sample_weight negative": (
        _objective(sample_weight=np.array([1.0, -1.0, 1.0])),
        ValueError,
        "sample_weight",
    ),
    "objective sample_weight inf": (
        _objective(sample_weight=np.array([1.0, np.inf, 1.0])),
        ValueError,
        "sample_weight",
    ),
    "objective y out of range": (_objective(y=np.array([0, 1, 3])), ValueError, "y"),
    "objective y of the wrong length": (_objective(y=np.array([0, 1])), ValueError, "y"),
    # numbers: tol, base, smoothing, l2, threads
    "entropy tol NaN": (lambda: entropy([0.5, 0.6], tol=float("nan")), ValueError, "tol"),
    "kl_divergence tol negative": (
        lambda: kl_divergence([0.5, 0.5], [0.5, 0.5], tol=-1.0),
        ValueError,
        "tol",
    ),
    "cross_entropy base 1": (lambda: cross_entropy([1.0], [1.0], base=1), ValueError, "base"),
    "entropy base NaN": (lambda: entropy([1.0], base=float("nan")), ValueError, "base"),
    "entropy base a string": (lambda: entropy([1.0], base="2"), ValueError, "base"),
    "label_smoothing NaN": (_loss(label_smoothing=float("nan")), ValueError, "label_smoothing"),
    "reduction unknown": (_loss(reduction="avg"), ValueError, "reduction"),
    "ignore_index a float": (_loss(ignore_index=1.5), TypeError, "ignore_index"),
    "objective l2 NaN": (_objective(l2=float("nan")), ValueError, "l2"),
    "loss n_threads 0": (_loss(n_threads=0), ValueError, "n_threads"),
    "loss n_threads a bool": (
        lambda: softmax_cross_entropy_with_grad(LOGITS, TARGET, n_threads=True),
        ValueError,
        "n_threads",
    ),
    "objective n_threads a float": (_objective(n_threads=2.0), ValueError, "n_threads"),
    "loss_gradient X of integers": (
        lambda: loss_gradient(np.zeros((3, 2)), None, X.astype(np.int64), Y, l2=1.0),
        TypeError,
        "X",
    ),
    # torch input
    "torch target index out of range": (
        lambda: softmax_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 5], dtype=torch.int32)),
        ValueError,
        "target",
    ),
    "probability arguments mixing numpy and torch": (
        lambda: cross_entropy(torch.tensor([0.5, 0.5]), np.array([0.5, 0.5])),
        TypeError,
        "arrays",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_input_is_refused_naming_the_argument(case):
    call, exception, name = CASES[case]
    with pytest.raises(exception) as info:
        call()
    message = str(info.value)
    assert re.search(rf"\b{re.escape(name)}\b", message), f"{case}: {name!r} not named: {message}"
    assert "\n" not in message.strip(), f"{case}: not one line: {message}"
