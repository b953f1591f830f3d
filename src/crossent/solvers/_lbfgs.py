"""L-BFGS (SciPy's L-BFGS-B without bounds) on the preconditioned objective: the default."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from crossent.solvers._problem import Callback, Problem, SolverResult


def lbfgs(
    problem: Problem,
    x0: np.ndarray,
    *,
    max_iter: int,
    tol: float,
    callback: Callback | None = None,
    memory: int = 20,
) -> SolverResult:
    """Minimise ``F`` with L-BFGS until ``max |∂F/∂x| <= tol`` or ``max_iter`` iterations.

    Parameters
    ----------
    problem : Problem
    x0 : ndarray, shape ``(n_params,)``
    max_iter : int
    tol : float
        Gradient tolerance (SciPy's ``gtol``); the relative decrease test ``ftol`` is at
        64 machine epsilons, as in scikit-learn, so ``tol`` decides.
    callback : callable, optional
        ``callback(iteration, L_total, max|grad|, x)``; returning True stops the solver.
    memory : int, default 20
        Number of correction pairs kept (``maxcor``).
    """
    last: dict[str, np.ndarray] = {}
    curve: list[float] = []

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = problem.value_grad(x)
        last.update(x=x.copy(), grad=grad)
        return value, grad

    def on_iteration(intermediate_result) -> None:
        value = float(intermediate_result.fun)
        curve.append(value * problem.normaliser)
        same_point = np.array_equal(last["x"], intermediate_result.x)
        gmax = float(np.max(np.abs(last["grad"]))) if same_point else float("nan")
        if callback is not None and callback(len(curve), curve[-1], gmax, intermediate_result.x):
            raise StopIteration

    result = minimize(
        fun,
        np.asarray(x0, dtype=np.float64),
        jac=True,
        method="L-BFGS-B",
        callback=on_iteration,
        options={
            "maxiter": max_iter,
            "gtol": tol,
            "ftol": 64 * np.finfo(float).eps,
            "maxcor": memory,
            "maxls": 50,
        },
    )
    converged = bool(result.success) and result.nit < max_iter
    return SolverResult(
        x=result.x,
        n_iter=int(result.nit),
        converged=converged,
        loss_curve=curve,
        message=str(result.message),
    )
