"""What every solver sees: the objective in a well-scaled parameter space.

Solvers minimise ``F(x) = L_total(W, b) / S`` (``S = Σ_i s_i``, so that the tolerance means
the same thing for ten samples and for ten million: the same optimum as ``L_total``) over a
flat float64 vector ``x = [V, b']`` related to the model by an affine change of variables,

.. math::

    W = V \\oslash \\sigma, \\qquad b = b' - W \\mu,

with ``μ`` the weighted mean of each feature and ``σ`` about its standard deviation. In ``x`` the
data term sees standardised features (a diagonal preconditioner), so badly scaled features
cost no extra iterations, yet ``X`` is never copied or rescaled: only the ``(C, d)`` weights
are. The penalty stays ``(λ/2)‖W‖²`` on the original ``W``: the optimum is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import scipy.sparse as sp

from crossent._stats import AllReduce, feature_scales
from crossent.hessian import softmax_curvature
from crossent.objective import LinearSoftmaxObjective

STALL = 64 * np.finfo(float).eps  # a relative decrease of F counted as none (rounding)
# callback(iteration, L_total, max |∂F/∂x|, x) after each iteration; return True to stop.
Callback = Callable[[int, float, float, np.ndarray], "bool | None"]


@dataclass(frozen=True)
class Preconditioner:
    """The affine change of variables ``W = V / σ``, ``b = b' − W μ``.

    ``order`` is how ``V`` lies in ``x``: ``"C"`` row by row (class by class), ``"F"`` as
    its ``(d, C)`` transpose, the layout in which sparse products read ``Wᵀ`` and write
    ``Gᵀ X``: the objective then needs no transposed copy of ``W`` or of its gradient.
    """

    center: np.ndarray  # (d,) μ, zeros without intercept
    scale: np.ndarray  # (d,) σ, positive
    order: Literal["C", "F"] = "C"

    @classmethod
    def identity(cls, n_features: int) -> Preconditioner:
        return cls(np.zeros(n_features), np.ones(n_features))

    @classmethod
    def from_data(
        cls,
        X: np.ndarray,
        sample_weight: np.ndarray | None,
        *,
        center: bool,
        l2: float,
        chunk_rows: int = 1024,
        penalty_weight: float = 1.0,
        allreduce: AllReduce | None = None,
    ) -> Preconditioner:
        """Feature means and scales from float64 passes over X (dense or sparse, read only).

        ``σ_j = sqrt(v_j + c λ / S)`` with ``v_j`` the weighted variance of feature ``j``
        (its mean square without centring; stable passes, see
        :func:`crossent._stats.feature_scales`), ``S = Σ s_i`` and ``c`` the
        ``penalty_weight``: the square root of the diagonal of ``F``'s Hessian up to the
        softmax curvature, so that nearly constant features, whose curvature comes from the
        penalty alone, are not over-stretched. The full-batch solvers of the classifier use
        :func:`crossent.solvers.penalty_weight` (``4 C² / (C − 1)``, with its measurements);
        the minibatch solvers ``c = 1``, with which their step sizes were tuned.
        Features of scale 1e200, whose ``v_j`` is beyond float64, get ``σ_j ≈ 1e200``: the
        fit is scale-free. With ``allreduce`` (distributed fitting, see
        :mod:`crossent.distributed`), ``X`` is this process's shard and the statistics are
        reduced over all shards: every process gets the same preconditioner.
        """
        total = float(np.sum(sample_weight)) if sample_weight is not None else X.shape[0]
        if allreduce is not None:
            total = float(allreduce(np.array([total]), "sum")[0])
        ridge = penalty_weight * l2 / total if total > 0 else 0.0
        mean, scale, total = feature_scales(
            X, sample_weight, center=center, ridge=ridge, chunk_rows=chunk_rows, allreduce=allreduce
        )
        order: Literal["C", "F"] = "F" if sp.issparse(X) else "C"
        if not total > 0:
            return cls(np.zeros(X.shape[1]), np.ones(X.shape[1]), order)
        return cls(mean, np.where((scale > 0) & np.isfinite(scale), scale, 1.0), order)

    def to_model(self, x: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
        V, intercept_x = self._split(x, n_classes)
        coef = np.divide(V, self.scale, order=self.order)  # (C, d)
        intercept = intercept_x - coef @ self.center
        return coef, intercept

    def from_model(self, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
        V = coef * self.scale
        return np.concatenate([V.ravel(order=self.order), intercept + coef @ self.center])

    def gradient_to_model(
        self, grad_x: np.ndarray, n_classes: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The inverse chain rule: ``∂/∂W = σ ∂/∂V + ∂/∂b' μᵀ``, ``∂/∂b = ∂/∂b'``."""
        grad_V, grad_intercept = self._split(grad_x, n_classes)
        grad_coef = np.empty(grad_V.shape, order=self.order)
        for cols in self._feature_blocks(n_classes):
            self._model_block(grad_V, grad_intercept, cols, out=self._block(grad_coef, cols))
        return grad_coef, grad_intercept

    def gradient_to_x(
        self, grad_coef: np.ndarray, grad_intercept: np.ndarray, divisor: float = 1.0
    ) -> np.ndarray:
        """Chain rule: ``∂/∂V = (∂/∂W − ∂/∂b μᵀ) / σ``, ``∂/∂b' = ∂/∂b``; then ``/ divisor``.

        Written into one new flat vector, a block of features at a time (temporaries of
        about 64K entries, never a whole ``(C, d)``: for 2.6e6 parameters each would add
        20 MiB to a fit's peak memory), as the blocks lie in memory, times
        ``1 / (σ · divisor)`` (one product for two divisions).
        """
        n_classes, d = grad_coef.shape
        out = np.empty(n_classes * (d + 1))
        grad_V = self._split(out, n_classes)[0]
        centred = bool(self.center.any())
        factor = 1.0 / (self.scale * divisor)
        for cols in self._feature_blocks(n_classes):
            part = self._block(grad_V, cols)  # a view of out
            if centred:  # ∂/∂W − (∂/∂b) μᵀ
                self._outer(grad_intercept, cols, out=part)
                np.subtract(self._block(grad_coef, cols), part, out=part)
            else:
                part[...] = self._block(grad_coef, cols)
            part *= self._per_feature(factor, cols)
        out[n_classes * d :] = grad_intercept
        if divisor != 1.0:
            out[n_classes * d :] /= divisor
        return out

    def model_grad_max(self, grad_x: np.ndarray, n_classes: int) -> float:
        """``max |∂F/∂W|`` of :meth:`gradient_to_model`, a block of features at a time:
        no ``(C, d)`` temporaries (two of 20 MiB on the 20-newsgroups shape)."""
        grad_V, grad_intercept = self._split(grad_x, n_classes)
        blocks = self._feature_blocks(n_classes)
        scratch = np.empty(n_classes * (blocks[0].stop if blocks else 0))
        largest = 0.0
        for cols in blocks:
            part = scratch[: n_classes * (cols.stop - cols.start)]
            part = self._model_block(
                grad_V, grad_intercept, cols, out=part.reshape(self._block(grad_V, cols).shape)
            )
            largest = max(largest, float(np.max(np.abs(part, out=part), initial=0.0)))
        return largest

    def _model_block(
        self, grad_V: np.ndarray, grad_intercept: np.ndarray, cols: slice, out: np.ndarray
    ) -> np.ndarray:
        """``∂/∂W = σ ∂/∂V + ∂/∂b' μᵀ`` on features ``cols``, into ``out`` (laid out as
        :meth:`_block`'s blocks): the one home of the inverse chain rule."""
        np.multiply(self._block(grad_V, cols), self._per_feature(self.scale, cols), out=out)
        if self.center[cols].any():
            out += self._outer(grad_intercept, cols)
        return out

    def _split(self, x: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
        """A flat vector in ``x``'s layout as its ``(C, d)`` part (a view, laid out in
        ``self.order``) and its ``(C,)`` intercept part."""
        d = self.scale.shape[0]
        return x[: n_classes * d].reshape(n_classes, d, order=self.order), x[n_classes * d :]

    def _feature_blocks(self, n_classes: int) -> list[slice]:
        """Blocks of about 64K entries of a ``(C, d)`` array, as slices of its features."""
        d = self.scale.shape[0]
        block = max(1, 65536 // max(n_classes, 1))
        return [slice(start, min(start + block, d)) for start in range(0, d, block)]

    def _block(self, array: np.ndarray, cols: slice) -> np.ndarray:
        """Features ``cols`` of a ``(C, d)`` array as they lie in ``self.order``: its
        ``(C, block)`` part, or for ``"F"`` the ``(block, C)`` part of its transpose."""
        return array.T[cols] if self.order == "F" else array[:, cols]

    def _per_feature(self, values: np.ndarray, cols: slice) -> np.ndarray:
        """``values[cols]`` shaped to broadcast over :meth:`_block`'s blocks."""
        return values[cols, None] if self.order == "F" else values[cols]

    def _outer(
        self, grad_intercept: np.ndarray, cols: slice, out: np.ndarray | None = None
    ) -> np.ndarray:
        """``∂/∂b μᵀ`` on features ``cols``, laid out as :meth:`_block`'s blocks."""
        if self.order == "F":
            return np.multiply.outer(self.center[cols], grad_intercept, out=out)
        return np.multiply.outer(grad_intercept, self.center[cols], out=out)


@dataclass
class Problem:
    """``F(x) = L_total / S`` for one objective (all data, or one minibatch)."""

    objective: LinearSoftmaxObjective
    precond: Preconditioner
    normaliser: float  # S, what L_total is divided by

    def value_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        coef, intercept = self.precond.to_model(x, self.objective.n_classes)
        loss, grad_coef, grad_intercept = self.objective.loss_gradient(coef, intercept)
        grad = self.precond.gradient_to_x(grad_coef, grad_intercept, self.normaliser)
        return loss / self.normaliser, grad

    @contextmanager
    def keeping_rows(self) -> Iterator[None]:
        """Meanwhile each evaluation keeps its gradient rows (when they fit the objective's
        budget), from which :meth:`hessian_at` at the same point recovers the softmax
        without a pass over ``X``. A no-op where there are no Hessian products."""
        objective = self.objective
        if not self.has_hessian:
            yield
            return
        objective.keep_rows = True
        try:
            yield
        finally:
            objective.keep_rows = False
            objective.kept_rows = None

    @property
    def has_hessian(self) -> bool:
        """Whether :meth:`hessian_at` works here: one process's objective on host data."""
        return (
            isinstance(self.objective, LinearSoftmaxObjective)
            and getattr(self.objective, "world_size", 1) <= 1
        )

    def hessian_at(self, x: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """``v ↦ ∇²F(x) v`` in the preconditioned coordinates (see :mod:`crossent.hessian`).

        With ``J`` the linear map ``x ↦ (W, b)`` of the preconditioner, ``∇²F = Jᵀ H J / S``:
        a direction ``v`` is mapped to the model (``Ẇ = V̇ / σ``, ``ḃ = ḃ' − Ẇ μ``), multiplied
        by the Hessian ``H`` of ``L_total`` and mapped back by the chain rule. Computing
        ``p`` at ``x`` costs one product over ``X`` now (when cached), each call two more;
        the count so far is the returned function's ``n_products`` attribute's value.
        """
        if getattr(self.objective, "world_size", 1) > 1:
            raise ValueError(
                "Hessian-vector products are not distributed (each rank holds only its own "
                "rows' curvature): use solver='lbfgs' or 'gd' with distributed=True"
            )
        if not self.has_hessian:
            raise ValueError(
                "Hessian-vector products need NumPy or SciPy data on the host; on a torch "
                "device use solver='lbfgs' or 'gd'"
            )
        n_classes = self.objective.n_classes
        coef, intercept = self.precond.to_model(x, n_classes)
        curvature = softmax_curvature(self.objective, coef, intercept)

        def hessp(v: np.ndarray) -> np.ndarray:
            direction_coef, direction_intercept = self.precond.to_model(v, n_classes)
            hess_coef, hess_intercept = curvature.product(direction_coef, direction_intercept)
            hessp.n_products = curvature.n_products  # type: ignore[attr-defined]
            return self.precond.gradient_to_x(hess_coef, hess_intercept, self.normaliser)

        hessp.n_products = curvature.n_products  # type: ignore[attr-defined]
        return hessp

    @staticmethod
    def settled(before: float, after: float, tol: float) -> bool:
        """Whether one iteration lowered ``F`` by at most ``tol`` relative.

        ``before − after <= tol · max(|before|, |after|, 1)`` (SciPy's ``ftol`` test, with
        ``tol``): the full-batch solvers stop at ``max |∂F/∂(W, b)| <= tol`` only once this
        holds too. On nearly separable data with a weak penalty (1000 classes of 40 rows,
        ``λ = 1``) the gradient test alone stopped L-BFGS at ``L_total`` 954 where the
        optimum is 697 and scikit-learn stopped at 842; with both, it stops near 715.
        """
        return before - after <= tol * max(abs(before), abs(after), 1.0)

    @staticmethod
    def stalled(before: float, after: float) -> bool:
        """Whether an iteration lowered ``F`` by at most 64 machine epsilons relative.

        Rounding, not progress (SciPy's and scikit-learn's L-BFGS ``ftol``): the full-batch
        solvers then stop, converged, whatever ``tol`` asked for.
        """
        return bool(before - after <= STALL * max(abs(before), abs(after), 1.0))

    def after_step(
        self,
        iteration: int,
        x: np.ndarray,
        values: tuple[float, float],
        grad: np.ndarray,
        curve: list[float],
        tol: float,
        callback: Callback | None,
        gradient_test: bool = True,
    ) -> tuple[float, SolverResult | None]:
        """The full-batch solvers' bookkeeping after an accepted step to ``x``.

        Appends ``L_total`` to ``curve``, calls ``callback``, and applies the stopping tests
        (``values`` is ``F`` before and after the step): the gradient test with
        :meth:`settled` (unless ``gradient_test`` is False), then :meth:`stalled`. Returns
        ``max |∂F/∂(W, b)|`` and the run's result, or None to go on.
        """
        before, value = values
        grad_max = self.model_grad_max(grad)
        curve.append(value * self.normaliser)
        if callback is not None and callback(iteration, curve[-1], grad_max, x):
            done = SolverResult(x, iteration, False, curve, "stopped by callback", stopped=True)
            return grad_max, done
        if gradient_test and grad_max <= tol and self.settled(before, value, tol):
            return grad_max, SolverResult(
                x, iteration, True, curve, f"max |gradient| <= tol = {tol:g}"
            )
        if self.stalled(before, value):
            return grad_max, SolverResult(x, iteration, True, curve, "no decrease beyond rounding")
        return grad_max, None

    def model_grad_max(self, grad_x: np.ndarray) -> float:
        """``max |∂F/∂(W, b)|`` in the model's own coordinates, from a gradient in ``x``.

        The full-batch solvers stop when this is at most ``tol``: the same test, on the same
        ``F``, as scikit-learn's L-BFGS applies, so ``tol`` means the same in both.
        """
        n_classes = self.objective.n_classes
        largest = self.precond.model_grad_max(grad_x, n_classes)
        if self.objective.fit_intercept:
            grad_intercept = grad_x[n_classes * self.precond.scale.shape[0] :]
            largest = max(largest, float(np.max(np.abs(grad_intercept), initial=0.0)))
        return largest

    def subset(self, rows: np.ndarray) -> Problem:
        """The minibatch estimate of ``F`` on ``rows``: ``mean_B L + (λ / 2S)‖W‖²``.

        Its expectation over uniformly drawn batches is ``F`` itself, so stochastic solvers
        aim at the full-batch optimum. The batch's weight must be positive.
        """
        obj = self.objective
        weights = obj.sample_weight[rows]
        batch_total = float(weights.sum())
        batch = LinearSoftmaxObjective(
            obj.X[rows],
            obj.y[rows],
            obj.n_classes,
            l2=obj.l2 * batch_total / self.normaliser,
            sample_weight=weights,
            fit_intercept=obj.fit_intercept,
            n_threads=obj.n_threads,  # the knob, resolved per batch by its size
            x_max_abs=obj.x_max_abs,  # a bound for the batch too: no pass over it
        )
        return Problem(batch, self.precond, batch_total)


@dataclass
class SolverResult:
    x: np.ndarray
    n_iter: int
    converged: bool
    loss_curve: list[float] = field(default_factory=list)  # L_total after each iteration
    message: str = ""
    stopped: bool = False  # the callback asked to stop
