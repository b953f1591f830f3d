"""The objective along the first step of a fit, from kept scores of its direction.

From a point where every row has the same scores, ``W = 0`` (the classifier's start), along
a direction ``(Ẇ, ḃ)`` the scores are ``z(t) = b + t Δ`` with ``Δ = X Ẇᵀ + ḃ``. With ``Δ``
kept (one ``(n, C)`` array in X's dtype),

.. math::

    φ(t) = L_{total}(tẆ, b + tḃ), \\qquad φ'(t), \\qquad φ''(t)

cost one read of ``Δ`` per step length tried (:func:`crossent._kernel.line`, or NumPy), and
no product with ``X``:

.. math::

    φ'(t) = \\sum_i s_i (\\hat y_i \\cdot Δ_i - Δ_{i k_i}) + λ t \\|Ẇ\\|^2, \\qquad
    φ''(t) = \\sum_i s_i \\big(\\hat y_i \\cdot Δ_i^2 - (\\hat y_i \\cdot Δ_i)^2\\big)
             + λ \\|Ẇ\\|^2,

with ``ŷ = softmax(z(t))``. The step taken then costs one product, ``Gᵀ X`` for the gradient
at the new point: with ``Δ``'s, the two products of one evaluation, however many step
lengths are tried. L-BFGS takes its first step so (see
:class:`crossent.solvers._line_search.FirstStep`): it has no curvature pairs yet, and its
unit step along the gradient is far from the minimiser (on probe-1000, 1000 classes, the
minimiser lies near ``t = 64``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from crossent import _kernel
from crossent._threads import map_row_blocks, single_threaded_blas
from crossent.objective import KEEP_ROWS_BYTES, LinearSoftmaxObjective

__all__ = ["ScoreLine"]

_OVERFLOW = np.array([np.inf, np.nan, np.nan])  # φ, φ', φ'' where a score overflowed


class ScoreLine:
    """``L_total`` along a line from ``(W, b) = (0, b)``, from its kept scores.

    Parameters
    ----------
    objective : LinearSoftmaxObjective
        The objective (data, labels, weights, ``λ``, threads and chunks).
    intercept : ndarray, shape ``(C,)``
        ``b`` at the line's start (ignored without an intercept).
    coef_dir, intercept_dir : ndarray, shapes ``(C, d)`` and ``(C,)``
        The direction ``(Ẇ, ḃ)``. Its scores ``Δ`` are computed here (one product).
    """

    def __init__(
        self,
        objective: LinearSoftmaxObjective,
        intercept: np.ndarray,
        coef_dir: np.ndarray,
        intercept_dir: np.ndarray,
    ) -> None:
        if not self.fits(objective):
            raise ValueError(
                "kept scores need a LinearSoftmaxObjective on host data whose (n, C) scores "
                f"fit in {KEEP_ROWS_BYTES} bytes"
            )
        obj = self.objective = objective
        dtype = obj.X.dtype
        self.base = np.zeros(obj.n_classes, dtype=dtype)  # the scores every row has at t = 0
        if obj.fit_intercept:
            self.base[...] = intercept
        self.step = np.empty((obj.n_samples, obj.n_classes), dtype=dtype)  # Δ
        direction = np.asarray(coef_dir, dtype=np.float64)
        self._curvature = obj.l2 * float(np.vdot(direction, direction))  # λ‖Ẇ‖²
        weights, bias = obj.in_data_dtype(coef_dir, intercept_dir)

        def work(rows: slice) -> None:
            for start, stop in obj.chunks(rows):
                out = self.step[start:stop]
                obj.scores_product(obj.rows(start, stop), weights, out)
                if bias is not None:
                    out += bias

        with single_threaded_blas():
            map_row_blocks(work, obj.n_samples, obj.n_row_blocks())

    @staticmethod
    def fits(objective: Any) -> bool:
        """Whether ``objective`` can keep a line's scores: host data whose ``(n, C)``
        scores fit in :data:`crossent.objective.KEEP_ROWS_BYTES` (on every process of a
        distributed objective: all of them must call this, and all get the same answer)."""
        if not isinstance(objective, LinearSoftmaxObjective):
            return False
        size = objective.n_samples * objective.n_classes * objective.X.dtype.itemsize
        return bool(objective.reduce(np.array([size]), "max")[0] <= KEEP_ROWS_BYTES)

    def values(self, t: float) -> tuple[float, float, float]:
        """``(φ(t), φ'(t), φ''(t))``; a read of the kept scores, no product.

        Where a score of ``b + tΔ`` overflows the data's dtype (a step far too long), ``φ`` is
        returned as ``inf`` (its derivatives NaN): the line search then shortens the step.
        """
        obj = self.objective
        t = float(t)

        def work(rows: slice) -> np.ndarray:
            totals = np.zeros(3)
            for start, stop in obj.chunks(rows):
                totals += self._chunk_values(start, stop, t)
            return totals

        with single_threaded_blas():
            parts = map_row_blocks(work, obj.n_samples, obj.n_row_blocks())
        loss, first, second = np.sum(parts, axis=0)
        curvature = self._curvature  # (λ/2)‖tẆ‖² and its derivatives (λ on one process)
        local = [loss + 0.5 * curvature * t * t, first + curvature * t, second + curvature]
        total = obj.reduce(np.array(local), "sum")  # over the processes, where distributed
        return float(total[0]), float(total[1]), float(total[2])

    def move(self, t: float, coef: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """``(L_total, ∂L/∂W, ∂L/∂b)`` at step ``t`` (whose weights ``coef`` are ``tẆ``), as
        :meth:`LinearSoftmaxObjective.loss_gradient` returns them: one product (and, for a
        distributed objective, its all-reduce)."""
        step_t = np.asarray(t, dtype=self.step.dtype)

        def scores_at_t(start: int, stop: int, out: np.ndarray) -> None:  # b + tΔ
            np.multiply(self.step[start:stop], step_t, out=out)
            out += self.base

        return self.objective.loss_gradient_from_scores(coef, scores_at_t)

    def _chunk_values(self, start: int, stop: int, t: float) -> np.ndarray:
        """``(loss, φ'_data, φ''_data)`` of rows ``start:stop`` at ``t``."""
        obj = self.objective
        step = self.step[start:stop]
        labels, weight = obj._labels64[start:stop], obj.sample_weight[start:stop]
        if _kernel.available(step.dtype):
            loss, first, second, bad = _kernel.line(self.base, step, t, labels, weight)
            return np.array([loss, first, second]) if bad < 0 else _OVERFLOW.copy()
        return _numpy_line(self.base, step, t, labels, weight)


def _numpy_line(
    base: np.ndarray, step: np.ndarray, t: float, labels: np.ndarray, weight: np.ndarray
) -> np.ndarray:
    """The NumPy reference of :func:`crossent._kernel.line` (``base`` one shared row);
    :data:`_OVERFLOW` where a score is not finite."""
    used = np.flatnonzero(weight > 0)  # rows of weight 0 count nothing, whatever they hold
    step, labels, weight = step[used], labels[used], weight[used]
    with np.errstate(over="ignore", invalid="ignore"):
        scores = base + np.asarray(t, dtype=step.dtype) * step
    top = scores.max(axis=1, keepdims=True)
    if not np.isfinite(top).all():
        return _OVERFLOW.copy()
    exps = np.exp(scores - top)
    norm = exps.sum(axis=1, dtype=np.float64)
    rows = np.arange(scores.shape[0])
    direction = step.astype(np.float64, copy=False)
    mean = (exps * direction).sum(axis=1) / norm
    spread = (exps * direction * direction).sum(axis=1) / norm - mean * mean
    losses = np.log(norm) + top[:, 0] - scores[rows, labels]
    return np.array(
        [
            float(weight @ losses),
            float(weight @ (mean - direction[rows, labels])),
            float(weight @ spread),
        ]
    )
