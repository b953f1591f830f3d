"""Full-batch gradient descent with a line search: the derivation's training process.

``x ← x − η ∇F(x)``, the step ``η`` chosen by the Barzilai-Borwein rule and cut back until
the Armijo condition ``F(x − η g) ≤ F(x) − c η ‖g‖²`` holds, so every step decreases ``F``.
Kept for teaching and comparison; L-BFGS reaches the same optimum in fewer passes.
"""

from __future__ import annotations

import numpy as np

from crossent.solvers._line_search import ARMIJO
from crossent.solvers._problem import Callback, Problem, SolverResult


def gd(
    problem: Problem,
    x0: np.ndarray,
    *,
    max_iter: int,
    tol: float,
    callback: Callback | None = None,
) -> SolverResult:
    """Minimise ``F`` by gradient descent until ``max |∂F/∂(W, b)| <= tol``.

    Also stops, converged, when an iteration lowers ``F`` by less than 64 machine epsilons
    relative (the objective cannot decrease further within rounding).

    Parameters
    ----------
    problem, x0, max_iter, tol, callback
        As for :func:`crossent.solvers.lbfgs`.
    """
    x = np.asarray(x0, dtype=np.float64).copy()
    value, grad = problem.value_grad(x)
    grad_max = problem.model_grad_max(grad)
    step = 1.0
    curve: list[float] = []
    for iteration in range(1, max_iter + 1):
        if grad_max <= tol:
            return SolverResult(x, iteration - 1, True, curve, "gradient below tol")
        sq_norm = float(grad @ grad)
        for _ in range(60):  # backtracking; each halving is one more pass over the data
            x_new = x - step * grad
            value_new, grad_new = problem.value_grad(x_new)
            if value_new <= value - ARMIJO * step * sq_norm:
                break
            step *= 0.5
        else:
            return SolverResult(x, iteration - 1, False, curve, "line search failed")
        s, y = x_new - x, grad_new - grad
        sy = float(s @ y)
        step = float(s @ s) / sy if sy > 0 else 2.0 * step  # Barzilai-Borwein
        values = (value, value_new)
        x, value, grad = x_new, value_new, grad_new
        grad_max, done = problem.after_step(
            iteration, x, values, grad, curve, tol, callback, gradient_test=False
        )
        if done is not None:  # the gradient test is the loop's first step
            return done
    return SolverResult(x, max_iter, grad_max <= tol, curve, "max_iter reached")
