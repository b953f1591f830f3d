"""The full-batch solvers' line search: halving from the full step to Armijo's decrease.

Shared by L-BFGS and Newton-CG, whose directions come with a natural unit step. Halving
beat safeguarded quadratic interpolation (steps in ``[t/10, t/2]``): Newton-CG on
``benchmarks/bench_sparse.py`` took 6 iterations (36 passes over X) against 7 (42); L-BFGS
on probe-1000 reached scikit-learn's final ``L_total`` in 23 evaluations against 22 and the
optimum in 86 against 85.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from crossent.score_line import ScoreLine
from crossent.solvers._problem import STALL, Problem, SolverResult

ARMIJO = 1e-4  # sufficient decrease: F(x + t d) <= F(x) + 1e-4 t ∇Fᵀd
_MAX_TRIALS = 40  # step lengths tried per line search


def backtrack(
    problem: Problem, x: np.ndarray, direction: np.ndarray, value: float, slope: float
) -> tuple[np.ndarray, float, np.ndarray] | str:
    """The first step ``t`` of 1, 1/2, 1/4, … with Armijo's decrease, and ``(F, ∇F)``.

    Returns a reason instead when no step can show a decrease: ``"rounding"`` once the
    predicted decrease ``−t ∇Fᵀd`` is below the rounding of ``F``, else ``"failed"``.
    """
    step = 1.0
    for _ in range(_MAX_TRIALS):
        x_new = direction * step
        x_new += x
        value_new, grad_new = problem.value_grad(x_new)
        if value_new <= value + ARMIJO * step * slope:
            return x_new, value_new, grad_new
        del x_new, grad_new  # not alive during the next evaluation
        step *= 0.5
        if -slope * step <= STALL * max(abs(value), 1.0):
            return "rounding"
    return "failed"


def stopped_in_line_search(reason: str, x: np.ndarray, n_iter: int, curve: list[float]):
    """The run's result when :func:`backtrack` found no step: converged on rounding."""
    if reason == "rounding":
        return SolverResult(x, n_iter, True, curve, "no decrease beyond rounding")
    return SolverResult(x, n_iter, False, curve, "line search failed")


# The search on kept scores ends at a step with Armijo's decrease from which Newton's step
# promises at most this fraction of the decrease achieved: φ'(t)² / 2φ''(t) <= η (φ(0) − φ(t)).
NEAR_MINIMUM = 0.1
_MAX_NEWTON_TRIALS = 20


def newton_on_line(
    phi: Callable[[float], tuple[float, float, float]], value: float, slope: float
) -> float | str:
    """A step length ``t`` with Armijo's decrease near the minimum of ``φ`` on the line.

    Near: Newton's step from ``t`` promises at most :data:`NEAR_MINIMUM` of the decrease
    achieved, ``φ'(t)² / 2φ''(t) <= η (φ(0) − φ(t))`` (a test on ``φ'`` alone accepted
    ``t = 207`` on the first step of probe-1000, ``L_total`` 27762, where ``t = 64`` gave
    7333).

    ``phi(t)`` returns ``(φ(t), φ'(t), φ''(t))`` of the convex ``φ(t) = F(x + t d)``, with
    ``φ(0) = value`` and ``φ'(0) = slope < 0``. Safeguarded Newton on ``φ'`` from ``t = 1``:
    while no upper end of the minimiser's bracket is known, Newton's step forward (or four
    times ``t``); while the bracket spans more than a factor 4, its geometric middle (from
    ``t = 1`` Newton's step went to 207 on probe-1000's first step, then back to 3: far
    from quadratic); then Newton's step when inside the bracket, else its middle. Returns
    the lowest Armijo point after :data:`_MAX_NEWTON_TRIALS` trials, or a reason as
    :func:`backtrack` does.
    """
    lo, hi = 0.0, math.inf
    best: tuple[float, float] | None = None  # (φ, t) of the lowest Armijo point
    t = 1.0
    for _ in range(_MAX_NEWTON_TRIALS):
        f, first, second = phi(t)
        armijo = math.isfinite(f) and f <= value + ARMIJO * t * slope
        if armijo:
            if best is None or f < best[0]:
                best = (f, t)
            if first * first <= NEAR_MINIMUM * 2.0 * second * (value - f):
                return t
        if not armijo or not first < 0:
            hi = t
        else:
            lo = t
        if hi < math.inf and -slope * (hi - lo) <= STALL * max(abs(value), 1.0):
            break  # the bracket's whole decrease is below the rounding of F
        newton = t - first / second if second > 0 and math.isfinite(first) else math.nan
        if hi == math.inf:
            t = newton if newton > t else 4.0 * t
        elif lo > 0 and hi > 4.0 * lo:  # far from quadratic here: shrink by factors
            t = math.sqrt(lo * hi)
        elif lo < newton < hi:
            t = newton
        else:
            t = 0.5 * (lo + hi)
    if best is not None:
        return best[1]
    return "rounding" if -slope * hi <= STALL * max(abs(value), 1.0) else "failed"


class FirstStep:
    """L-BFGS's first step from ``W = 0``, by :func:`newton_on_line` on kept scores.

    L-BFGS has no curvature pairs before its first step, and the unit step along the
    normalised gradient is far from the minimiser along it (on probe-1000, 1000 classes,
    ``t = 1`` lowered ``L_total`` from 276000 to 267412; the minimiser lies near ``t = 64``,
    7333). From ``W = 0`` every row has the same scores, so the line's scores are the
    direction's alone (:class:`crossent.score_line.ScoreLine`): one product for them, a read
    of them per step length tried, one product for the gradient at the step taken.
    Measured on probe-1000 (``benchmarks/bench_fit.py``, one thread / two): ``L_total`` 842
    (scikit-learn's stop) after 15 iterations and 8.9 / 4.6 s, against 21 iterations and
    12.9 / 7.0 s with :func:`backtrack` (the zero-weight evaluation of
    :class:`~crossent.objective.LinearSoftmaxObjective` included); digits 23 → 21
    iterations, mnist-shape 23 → 24, large-n unchanged (17). Taking the next steps so as
    well did not help: kept scores of the point and of the direction, written and read
    each step, cost more than the iterations they saved (14 iterations to 842, 11.6 s on
    one thread). Nor did the Newton direction at ``W = 0`` (closed form there) instead of
    the gradient: 19 iterations. A distributed fit takes the same step: each rank keeps its
    shard's scores, and :meth:`LinearSoftmaxObjective.reduce` all-reduces the line's sums.
    """

    def __init__(self, problem: Problem, x: np.ndarray, intercept: np.ndarray) -> None:
        self.problem = problem
        self.x = x
        self.intercept = intercept  # b at x, where W = 0

    @classmethod
    def for_problem(cls, problem: Problem, x: np.ndarray) -> FirstStep | None:
        """The first step from ``x``, or None where ``W ≠ 0`` there or the scores cannot be
        kept (a torch objective, or ``(n, C)`` scores beyond the budget on some process).
        A distributed fit takes it on every rank alike: the line's sums are all-reduced."""
        if not ScoreLine.fits(getattr(problem, "objective", None)):  # none: no kept scores
            return None
        coef, intercept = problem.precond.to_model(x, problem.objective.n_classes)
        return cls(problem, x, intercept) if not coef.any() else None

    def search(
        self, direction: np.ndarray, value: float, slope: float
    ) -> tuple[np.ndarray, float, np.ndarray] | str:
        """:func:`backtrack`'s results, for the step from the start along ``direction``."""
        problem = self.problem
        n_classes = problem.objective.n_classes
        coef_dir, intercept_dir = problem.precond.to_model(direction, n_classes)
        line = ScoreLine(problem.objective, self.intercept, coef_dir, intercept_dir)
        scale = 1.0 / problem.normaliser

        def phi(t: float) -> tuple[float, float, float]:
            f, first, second = line.values(t)
            return f * scale, first * scale, second * scale

        step = newton_on_line(phi, value, slope)
        if isinstance(step, str):
            return step
        x_new = direction * step
        x_new += self.x
        coef, _ = problem.precond.to_model(x_new, n_classes)
        loss, grad_coef, grad_intercept = line.move(step, coef)
        grad = problem.precond.gradient_to_x(grad_coef, grad_intercept, problem.normaliser)
        return x_new, loss / problem.normaliser, grad
