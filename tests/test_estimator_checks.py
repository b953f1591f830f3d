"""scikit-learn's own estimator checks, over SoftmaxClassifier with several solvers.

Two kinds of failure are kept apart:

- ``EXPECTED_FAILED_CHECKS``: checks the estimator cannot pass by design, each with the
  reason (passed to ``parametrize_with_checks``; scikit-learn marks them xfail).
- ``KNOWN_BUGS``: checks that fail because of a defect of the classifier. They are marked
  ``xfail(strict=True)`` with a reason starting "BUG:", so the run stays green while the bug
  lives and turns red (XPASS) the day it is fixed, to have the mark removed.
"""

from __future__ import annotations

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from crossent import SoftmaxClassifier

pytestmark = [
    pytest.mark.usefixtures("single_blas_thread"),
    # minibatch instances stop at 100 epochs on purpose: the checks test the API
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
]

ESTIMATORS = [
    SoftmaxClassifier(),
    SoftmaxClassifier(solver="gd"),
    # the checks fit small data sets many times: 100 epochs keep each share near 3 s
    SoftmaxClassifier(solver="adam", max_iter=100),
    SoftmaxClassifier(solver="sgd", max_iter=100),
]

# Nothing is expected to fail by design: every check below is either passed or a bug.
EXPECTED_FAILED_CHECKS: dict[str, dict[str, str]] = {}

# (solver or "*", check name) -> reason
KNOWN_BUGS: dict[tuple[str, str], str] = {}


def _expected_failed_checks(estimator) -> dict[str, str]:
    return EXPECTED_FAILED_CHECKS.get(estimator.solver, {})


def _check_name(check) -> str:
    return getattr(check, "func", check).__name__


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check, request):
    name = _check_name(check)
    reason = KNOWN_BUGS.get((estimator.solver, name)) or KNOWN_BUGS.get(("*", name))
    if reason is not None:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))
    check(estimator)
