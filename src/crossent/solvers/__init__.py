"""Solvers for the L2-regularised softmax objective, all with one signature.

``solver(problem, x0, *, max_iter, tol, callback=None, **options) -> SolverResult`` where
``problem`` is a :class:`Problem` (the preconditioned objective ``F = L_total / S``).

- ``auto`` (the classifier's default): ``lbfgs`` or ``newton-cg`` by the problem's shape.
- ``lbfgs``: L-BFGS (full batch).
- ``newton-cg``: truncated Newton with Hessian-vector products (:mod:`crossent.hessian`).
- ``gd``: gradient descent with a Barzilai-Borwein step and Armijo line search (full batch).
- ``sgd``, ``adam``: minibatch, also behind ``partial_fit``.
"""

from functools import partial

from crossent.solvers._auto import auto, choose_solver
from crossent.solvers._gd import gd
from crossent.solvers._lbfgs import lbfgs
from crossent.solvers._minibatch import minibatch
from crossent.solvers._newton import newton_cg
from crossent.solvers._problem import Preconditioner, Problem, SolverResult

SOLVERS = {
    "auto": auto,
    "lbfgs": lbfgs,
    "newton-cg": newton_cg,
    "gd": gd,
    "sgd": partial(minibatch, method="sgd"),
    "adam": partial(minibatch, method="adam"),
}
FULL_BATCH = ("auto", "lbfgs", "newton-cg", "gd")
MINIBATCH = ("sgd", "adam")


def penalty_weight(solver: str, n_classes: int) -> float:
    """The preconditioner's ``penalty_weight`` ``c`` (see :meth:`Preconditioner.from_data`).

    Full-batch solvers: ``c = 4 C² / (C − 1)``. ``C² / (C − 1)`` is ``1 / (p (1 − p))`` at
    the start's ``p = 1/C``: the data's curvature weighed by the softmax's curvature at a
    uniform prediction, as the penalty's is by 1. Away from the start the predictions
    sharpen and the data's curvature falls, which the factor 4 anticipates. Measured with
    L-BFGS, evaluations from the start (c = 1 · C²/(C−1) → 4 · C²/(C−1)): probe-1000
    (1000 classes) to within 1e-4 of the optimum 108 → 86; eleven small problems (the
    solver tests' cases, iris, raw wine and breast cancer) to tol 1e-4 389 → 279 and to
    tol 1e-8 668 → 446, none more than 3 worse (iris, the four-decade badly scaled set)
    and raw breast cancer 329 → 125; mnist-shape and large-n unchanged (25, 18); the
    20-newsgroups shape with Newton-CG 40 → 36 passes over X. A factor 16 gained on
    probe-1000 (76) but cost the badly scaled set 55 evaluations instead of 34. The
    minibatch solvers' step sizes were tuned with ``c = 1``, which sets their scale: they
    keep it.
    """
    if solver in MINIBATCH:
        return 1.0
    return 4.0 * n_classes * n_classes / max(n_classes - 1, 1)


__all__ = [
    "FULL_BATCH",
    "MINIBATCH",
    "SOLVERS",
    "Preconditioner",
    "Problem",
    "SolverResult",
    "choose_solver",
    "penalty_weight",
]
