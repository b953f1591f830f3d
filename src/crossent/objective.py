"""The one hot path: the L2-regularised softmax objective and its gradient, in one pass.

.. math::

    L_{total}(W, b) = \\sum_i s_i \\big(\\log \\sum_j e^{f_{j,i}} - f_{k_i,i}\\big)
                      + \\frac{\\lambda}{2} \\|W\\|^2, \\qquad f_{\\cdot,i} = W x_i + b,

    \\frac{\\partial L_{total}}{\\partial W} = \\sum_i s_i (\\hat y_i - \\delta_{k_i}) x_i^T
                                            + \\lambda W, \\qquad
    \\frac{\\partial L_{total}}{\\partial b} = \\sum_i s_i (\\hat y_i - \\delta_{k_i}).

``X`` is read in row chunks: a chunk's scores ``X_c Wᵀ + b`` are turned into the gradient
rows ``s (ŷ − δ)`` in place (by :func:`crossent.loss.index_loss_grad_inplace`) and
multiplied back into ``Gᵀ X_c`` while the chunk is still in cache, so the ``(n, C)`` score
matrix never exists whole and X is read once per evaluation. Float32 data stay float32 in
the two matrix products; the loss and the gradient totals are accumulated in float64. The
intercept is not penalised. Every solver, the classifier and the benchmarks call this code.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from crossent._threads import resolve_n_threads, single_threaded_blas
from crossent.loss import index_loss_grad_inplace

__all__ = ["LinearSoftmaxObjective", "loss_gradient", "resolve_n_threads", "single_threaded_blas"]

_CHUNK_BYTES = 2 * 1024 * 1024  # X rows + score rows of one chunk: about an L2 cache


class LinearSoftmaxObjective:
    """``L_total`` and its gradient on fixed data, evaluated in one chunked pass.

    Parameters
    ----------
    X : ndarray, shape ``(n_samples, n_features)``
        float32 or float64; used without a copy when C-contiguous.
    y : ndarray of int, shape ``(n_samples,)``
        Class indices in ``[0, n_classes)``.
    n_classes : int
    l2 : float
        λ ≥ 0, the weight of ``(λ/2)‖W‖²``.
    sample_weight : ndarray, shape ``(n_samples,)``, optional
        Non-negative weights ``s_i`` (1 by default).
    fit_intercept : bool, default True
    n_threads : int, default 1
        Threads over chunks; with more than one, BLAS is held to one thread inside.
    chunk_rows : int, optional
        Rows per chunk (default: about 2 MiB of X and score rows).
    """

    def __init__(
        self,
        X: np.ndarray,
        y: np.ndarray,
        n_classes: int,
        *,
        l2: float,
        sample_weight: np.ndarray | None = None,
        fit_intercept: bool = True,
        n_threads: int = 1,
        chunk_rows: int | None = None,
    ) -> None:
        if X.dtype not in (np.float32, np.float64):
            raise TypeError(f"X must be float32 or float64, got {X.dtype}")
        self.X = np.ascontiguousarray(X)
        self.y = np.ascontiguousarray(y, dtype=np.intp)
        self.n_classes = int(n_classes)
        self.l2 = float(l2)
        n = self.X.shape[0]
        if sample_weight is None:
            self.sample_weight = np.ones(n, dtype=np.float64)
        else:
            self.sample_weight = np.ascontiguousarray(sample_weight, dtype=np.float64)
        self.fit_intercept = bool(fit_intercept)
        self.n_threads = max(1, int(n_threads))
        if chunk_rows is None:
            row_bytes = (self.X.shape[1] + self.n_classes) * self.X.itemsize
            chunk_rows = max(64, _CHUNK_BYTES // max(row_bytes, 1))
        self.chunk_rows = int(chunk_rows)
        self.n_evals = 0

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    def loss_gradient(
        self, coef: np.ndarray, intercept: np.ndarray | None = None
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """Return ``(L_total, ∂L/∂W, ∂L/∂b)``, the gradients float64 of shapes (C, d), (C,).

        ``coef`` is ``W``, shape ``(n_classes, n_features)``; ``intercept`` is ``b``,
        shape ``(n_classes,)`` (ignored, and its gradient 0, without an intercept).
        """
        self.n_evals += 1
        dtype = self.X.dtype
        weights = np.ascontiguousarray(coef, dtype=dtype)  # (C, d) in the data's dtype
        bias = None
        if self.fit_intercept and intercept is not None:
            bias = np.asarray(intercept, dtype=dtype)
        starts = list(range(0, self.n_samples, self.chunk_rows))
        if self.n_threads == 1 or len(starts) < 2:
            parts = [self._pass(weights, bias, starts)]
        else:
            groups = [starts[t :: self.n_threads] for t in range(self.n_threads)]
            with single_threaded_blas(), ThreadPoolExecutor(self.n_threads) as pool:
                parts = list(pool.map(lambda g: self._pass(weights, bias, g), groups))
        data_loss = sum(p[0] for p in parts)
        grad_coef = np.sum([p[1] for p in parts], axis=0)
        grad_intercept = np.sum([p[2] for p in parts], axis=0)
        coef64 = np.asarray(coef, dtype=np.float64)
        loss = data_loss + 0.5 * self.l2 * float(np.dot(coef64.ravel(), coef64.ravel()))
        grad_coef += self.l2 * coef64  # grad_intercept stays 0 without an intercept
        return loss, grad_coef, grad_intercept

    def _pass(
        self, weights: np.ndarray, bias: np.ndarray | None, starts: list[int]
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """Loss and gradient sums over the chunks beginning at ``starts`` (one thread)."""
        n_classes, n_features = weights.shape
        dtype = self.X.dtype
        scores_buf = np.empty((self.chunk_rows, n_classes), dtype=dtype)  # (rows, C) scores
        chunk_grad = np.empty((n_classes, n_features), dtype=dtype)
        grad_coef = np.zeros((n_classes, n_features), dtype=np.float64)
        grad_intercept = np.zeros(n_classes, dtype=np.float64)
        loss = 0.0
        for start in starts:
            stop = min(start + self.chunk_rows, self.n_samples)
            X_chunk = self.X[start:stop]
            scores = scores_buf[: stop - start]
            np.matmul(X_chunk, weights.T, out=scores)
            if bias is not None:
                scores += bias
            loss += index_loss_grad_inplace(
                scores, self.y[start:stop], self.sample_weight[start:stop], first_row=start
            )
            np.matmul(scores.T, X_chunk, out=chunk_grad)  # Σ_i s_i (ŷ_i − δ) x_iᵀ
            grad_coef += chunk_grad
            if self.fit_intercept:  # within a chunk in the data's dtype, as the product is
                grad_intercept += scores.sum(axis=0)
        return loss, grad_coef, grad_intercept


def loss_gradient(
    coef: np.ndarray,
    intercept: np.ndarray | None,
    X: np.ndarray,
    y: np.ndarray,
    *,
    l2: float,
    sample_weight: np.ndarray | None = None,
    n_threads: int = 1,
) -> tuple[float, np.ndarray, np.ndarray]:
    """``L_total`` of a linear softmax model and its gradient, in one pass over ``X``.

    ``L_total = Σ_i s_i L_i + (λ/2)‖W‖²`` with ``L_i = log Σ_j e^{f_{j,i}} − f_{k_i,i}``
    and ``f = X Wᵀ + b``; see :class:`LinearSoftmaxObjective`.

    Parameters
    ----------
    coef : ndarray, shape ``(n_classes, n_features)``
        ``W``.
    intercept : ndarray, shape ``(n_classes,)``, or None
        ``b``; None for a model without intercept.
    X : ndarray, shape ``(n_samples, n_features)``
    y : ndarray of int, shape ``(n_samples,)``
        Class indices.
    l2 : float
        λ.
    sample_weight : ndarray, shape ``(n_samples,)``, optional
    n_threads : int, default 1

    Returns
    -------
    loss : float
    grad_coef : ndarray, shape ``(n_classes, n_features)``, float64
    grad_intercept : ndarray, shape ``(n_classes,)``, float64 (zeros without intercept)

    Examples
    --------
    >>> import numpy as np
    >>> from crossent.objective import loss_gradient
    >>> X = np.array([[1.0, 0.0], [0.0, 1.0]]); y = np.array([0, 1])
    >>> loss, gW, gb = loss_gradient(np.zeros((2, 2)), np.zeros(2), X, y, l2=1.0)
    >>> round(loss, 6)  # two samples, each -log(1/2)
    1.386294
    >>> gW
    array([[-0.5,  0.5],
           [ 0.5, -0.5]])
    """
    objective = LinearSoftmaxObjective(
        X,
        y,
        np.shape(coef)[0],
        l2=l2,
        sample_weight=sample_weight,
        fit_intercept=intercept is not None,
        n_threads=n_threads,
    )
    return objective.loss_gradient(coef, intercept)
