"""``solver="auto"``: L-BFGS or Newton-CG, chosen by the shape of the problem.

Measured (``benchmarks/bench_sparse.py``, the 20-newsgroups shape, 11314 × 130107 CSR with
11 stored entries per feature, 20 classes, 2.6e6 parameters): L-BFGS (then SciPy's L-BFGS-B)
spent more time in its own bookkeeping (``O(m · n_params)`` per iteration with ``m`` = 20
pairs) than in the objective, and held ``2m`` vectors of ``n_params``; Newton-CG keeps a
handful of vectors and spends its time in passes over ``X``. On dense data with many rows
per feature (digits, mnist-shape, probe-1000 with 1000 classes) a pass costs far more than
that bookkeeping and L-BFGS took fewer passes: 22 to reach ``L_total`` 3021 on probe-1000
where Newton-CG took 106 to reach 3313 (its conjugate-gradient steps grow as the Hessian's
condition number, ``λ = 1`` on nearly separable classes). Hence:

- Newton-CG when ``X`` has fewer than :data:`ENTRIES_PER_FEATURE` stored entries per
  feature (sparse text data; dense data with fewer rows than that), unless distributed or
  on a torch device (the Hessian products run on host data);
- L-BFGS otherwise. When L-BFGS ends short of ``tol`` (its ``ftol`` test: an iteration
  that lowers ``F`` by less than rounding, which at tight tolerances comes before the
  gradient test), Newton-CG continues from its point, where its steps converge
  quadratically (not when distributed, where the Hessian products are per rank, nor on a
  torch device). On raw wine
  (features up to 1680, ``tol`` 1e-10) L-BFGS stopped with ``Σ_c W_c`` at 1.6e-6 of
  ``max |W|`` (0 at the optimum); Newton-CG from there, 1e-14.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from crossent.solvers._lbfgs import lbfgs
from crossent.solvers._newton import newton_cg
from crossent.solvers._problem import Callback, Problem, SolverResult

ENTRIES_PER_FEATURE = 32


def choose_solver(problem: Problem) -> str:
    """``"newton-cg"`` or ``"lbfgs"`` for ``problem`` (see the module's notes)."""
    objective = problem.objective
    if not problem.has_hessian:  # distributed (one Hessian per shard) or on a torch device
        return "lbfgs"
    X = objective.X
    entries = X.nnz if sp.issparse(X) else X.shape[0] * X.shape[1]
    if entries < ENTRIES_PER_FEATURE * max(X.shape[1], 1):
        return "newton-cg"
    return "lbfgs"


def auto(
    problem: Problem,
    x0: np.ndarray,
    *,
    max_iter: int,
    tol: float,
    callback: Callback | None = None,
) -> SolverResult:
    """Run the solver :func:`choose_solver` picks; its message names it."""
    name = choose_solver(problem)
    solver = newton_cg if name == "newton-cg" else lbfgs
    result = solver(problem, x0, max_iter=max_iter, tol=tol, callback=callback)
    result.message = f"{name}: {result.message}"
    left = max_iter - result.n_iter
    if name == "newton-cg" or result.stopped or left <= 0 or not problem.has_hessian:
        return result

    def shifted(iteration: int, loss: float, grad_max: float, x: np.ndarray) -> bool | None:
        return callback(result.n_iter + iteration, loss, grad_max, x) if callback else None

    polish = newton_cg(problem, result.x, max_iter=left, tol=tol, callback=shifted)
    if polish.n_iter == 0 and polish.converged:  # L-BFGS had met tol: nothing to polish
        return result
    return SolverResult(
        polish.x,
        result.n_iter + polish.n_iter,
        polish.converged,
        result.loss_curve + polish.loss_curve,
        f"{result.message}; then newton-cg: {polish.message}",
        stopped=polish.stopped,
    )
