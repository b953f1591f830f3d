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

__all__ = [
    "FULL_BATCH",
    "MINIBATCH",
    "SOLVERS",
    "Preconditioner",
    "Problem",
    "SolverResult",
    "choose_solver",
]
