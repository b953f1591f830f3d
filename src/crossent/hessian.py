"""The curvature of the L2-regularised softmax objective: Hessian-vector products.

For ``L_total(W, b)`` of :mod:`crossent.objective` and a direction ``(V, c)`` (``V`` of
``W``'s shape ``(C, d)``, ``c`` of ``b``'s ``(C,)``), the directional derivative of the
gradient is

.. math::

    \\dot z_i = V x_i + c, \\qquad
    h_i = s_i \\big(p_i \\odot \\dot z_i - p_i\\,(p_i^T \\dot z_i)\\big), \\qquad
    H \\begin{pmatrix} V \\\\ c \\end{pmatrix} =
    \\begin{pmatrix} \\sum_i h_i x_i^T + \\lambda V \\\\ \\sum_i h_i \\end{pmatrix},

with ``p_i = softmax(W x_i + b)``: the softmax Jacobian ``diag(p) − p pᵀ`` applied to the
change of the scores. Exact reference semantics, for a dense ``X`` in float64::

    Hv = torch.autograd.functional.hvp(lambda W, b: L_total(W, b), (W, b), (V, c))[1]

The products are two per Hessian-vector product (``Ż = X Vᵀ + c`` and ``Hᵀ X``), row chunk
by row chunk as the objective's pass reads ``X`` (dense or CSR, float32 data staying
float32 in the products, the sums float64), row blocks on the threads of
:mod:`crossent._threads`. The probabilities ``p`` are computed once per point by
:func:`softmax_curvature` (one more product, ``X Wᵀ``) and kept per chunk in ``X``'s dtype
when they fit the memory budget; otherwise every product recomputes them (three products).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from crossent._threads import map_row_blocks, single_threaded_blas
from crossent.objective import KEEP_ROWS_BYTES, add_scaled_inplace
from crossent.softmax import row_shift

__all__ = ["Curvature", "hessian_product", "softmax_curvature"]

# The most bytes of cached probabilities ``p`` (n × C in X's dtype) kept between products:
# the objective's budget for the gradient rows they can be recovered from.
CACHE_BYTES = KEEP_ROWS_BYTES
# The most bytes of per-thread ``(C, d)`` float64 sums of one product (at least 2 threads).
ACCUMULATOR_BYTES = 128 * 2**20


def _probabilities_inplace(scores: np.ndarray) -> np.ndarray:
    """Overwrite ``scores`` ``(rows, C)`` with ``softmax`` by row; the row sums in float64."""
    np.subtract(scores, row_shift(np, scores, axis=1), out=scores)
    np.exp(scores, out=scores)
    norm = scores.sum(axis=1, dtype=np.float64)  # (rows,) Σ_j exp(z_j − max)
    scores *= (1.0 / norm).astype(scores.dtype)[:, None]
    return scores


@dataclass
class Curvature:
    """The Hessian of ``L_total`` at one point ``(W, b)``, applied by :meth:`product`.

    Made by :func:`softmax_curvature`; ``probs`` holds ``p`` per row chunk (keyed by the
    chunk's first row) when cached, else is None and each product recomputes it.
    """

    objective: Any
    weights: np.ndarray  # W in X's dtype, (C, d) ((d, C) C-contiguous transposed for CSR)
    bias: np.ndarray | None  # b in X's dtype, or None without intercept
    n_blocks: int
    probs: dict[int, np.ndarray] | None = None
    n_products: int = field(default=0)  # matrix products over X so far (passes × 2 or 3)

    def _chunk_X(self, start: int, stop: int) -> Any:
        X = self.objective.X
        return self.objective.sparse_rows(start, stop) if sp.issparse(X) else X[start:stop]

    def _probs(self, start: int, X_chunk: Any) -> np.ndarray:
        """``p`` of the chunk starting at row ``start``: cached, or from ``X_chunk``."""
        if self.probs is not None:
            return self.probs[start]
        scores = np.asarray(X_chunk @ self.weights.T)  # (rows, C)
        if self.bias is not None:
            scores += self.bias
        return _probabilities_inplace(scores)

    def product(
        self, direction_coef: np.ndarray, direction_intercept: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``H (V, c)``: ``(Σ_i h_i x_iᵀ + λV, Σ_i h_i)``, float64, shapes (C, d), (C,).

        ``direction_intercept`` is ignored (and the second result zero) without intercept.
        """
        obj = self.objective
        sparse = sp.issparse(obj.X)
        dtype = obj.X.dtype
        direction64 = np.asarray(direction_coef, dtype=np.float64)
        direction, shift = obj.in_data_dtype(direction64, direction_intercept)
        scale = float(obj._grad_scale)
        n_classes, n_features = obj.n_classes, obj.n_features

        def block(rows: slice) -> tuple[np.ndarray, np.ndarray]:
            out_coef = None if sparse else np.zeros((n_classes, n_features), np.float64)
            out_intercept = np.zeros(n_classes, dtype=np.float64)
            for start, stop in self.objective.chunks(rows):
                X_chunk = self._chunk_X(start, stop)
                probs = self._probs(start, X_chunk)
                dscores = np.asarray(X_chunk @ direction.T)  # (rows, C) ż
                if shift is not None:
                    dscores += shift
                dscores *= probs  # p ⊙ ż
                mean = dscores.sum(axis=1, dtype=np.float64)  # (rows,) pᵀż
                dscores -= probs * mean.astype(dtype)[:, None]
                dscores *= (obj.sample_weight[start:stop] * scale).astype(dtype)[:, None]
                # sparse: (d, C); the first chunk's product becomes the sum, as in the pass (no
                # zero-filled (d, C) per block: measured 30.6 → 25.8 ms per product, 2 threads)
                if sparse:
                    product = X_chunk.T @ dscores
                    if out_coef is None:
                        out_coef = product.astype(np.float64, copy=False)
                    else:
                        out_coef += product
                else:
                    out_coef += dscores.T @ X_chunk  # (C, d)
                if obj.fit_intercept:
                    out_intercept += dscores.sum(axis=0, dtype=np.float64)
            if out_coef is None:  # a sparse block without rows
                out_coef = np.zeros((n_features, n_classes), np.float64)
            return out_coef, out_intercept

        with single_threaded_blas():  # as in the objective's pass
            parts = map_row_blocks(block, obj.n_samples, self.n_blocks)
        hess_coef, hess_intercept = parts[0]
        for block_coef, block_intercept in parts[1:]:
            hess_coef += block_coef
            hess_intercept += block_intercept
        if scale != 1.0:
            hess_coef /= scale
            hess_intercept /= scale
        self.n_products += 2 if self.probs is not None else 3
        hess_coef = hess_coef.T if sparse else hess_coef  # (C, d), F-ordered for sparse X
        if obj.l2:  # + λV in place
            add_scaled_inplace(hess_coef, obj.l2, direction64)
        return hess_coef, hess_intercept


def softmax_curvature(
    objective: Any,
    coef: np.ndarray,
    intercept: np.ndarray | None = None,
    *,
    cache_bytes: int | None = None,
) -> Curvature:
    """The Hessian of ``objective``'s ``L_total`` at ``(coef, intercept)``, ready to apply.

    One pass over ``X`` (the product ``X Wᵀ``; none where ``W = 0``, whose ``p`` is
    ``softmax(b)`` on every row) computes ``p = softmax(X Wᵀ + b)`` by row chunk and keeps
    it, in ``X``'s dtype, when ``n · C`` entries take at most ``cache_bytes`` (default
    :data:`CACHE_BYTES`); otherwise nothing is computed now and each
    :meth:`Curvature.product` recomputes ``p`` (three products instead of two).

    Parameters
    ----------
    objective : LinearSoftmaxObjective
        Read only: ``X``, ``y``, ``sample_weight``, ``n_classes``, ``fit_intercept``, ``l2``,
        ``n_threads``, ``chunk_rows``.
    coef : ndarray, shape ``(n_classes, n_features)``
    intercept : ndarray, shape ``(n_classes,)``, optional
    cache_bytes : int, optional
    """
    X = objective.X
    n, d = X.shape
    weights, bias = objective.in_data_dtype(coef, intercept)
    # each block holds two (C, d) float64 sums: at most ACCUMULATOR_BYTES of them, 2 blocks
    most = max(2, ACCUMULATOR_BYTES // (16 * d * objective.n_classes))
    n_blocks = max(1, min(objective.n_row_blocks(), most))
    curvature = Curvature(objective, weights, bias, n_blocks)
    budget = CACHE_BYTES if cache_bytes is None else int(cache_bytes)
    if n * objective.n_classes * X.dtype.itemsize > budget:
        return curvature

    shared = None
    if not weights.any():  # W = 0 (a fit's start): every row's p is softmax(b), no product
        scores = np.zeros((1, objective.n_classes), dtype=X.dtype)
        shared = _probabilities_inplace(scores if bias is None else scores + bias)[0]

    def block(rows: slice) -> dict[int, np.ndarray]:  # p is not cached yet: computed here
        chunks = curvature.objective.chunks(rows)
        if shared is not None:
            return {start: np.tile(shared, (stop - start, 1)) for start, stop in chunks}
        return {
            start: curvature._probs(start, curvature._chunk_X(start, stop))
            for start, stop in chunks
        }

    probs = None if shared is not None else _probabilities_from_kept_rows(objective, weights, bias)
    if probs is not None:  # the last evaluation was at this point: no product
        curvature.probs = probs
        return curvature
    probs = {}
    with single_threaded_blas():
        for part in map_row_blocks(block, n, n_blocks):
            probs.update(part)
    curvature.probs = probs
    curvature.n_products = 0 if shared is not None else 1
    return curvature


def hessian_product(
    objective: Any,
    coef: np.ndarray,
    intercept: np.ndarray | None,
    direction_coef: np.ndarray,
    direction_intercept: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``∇²L_total(W, b) · (V, c)`` of ``objective`` at ``(coef, intercept)``, in one call.

    See :func:`softmax_curvature` to apply the Hessian at one point to many directions.

    Returns
    -------
    hess_coef : ndarray, shape ``(n_classes, n_features)``, float64
    hess_intercept : ndarray, shape ``(n_classes,)``, float64 (zeros without intercept)

    Examples
    --------
    >>> import numpy as np
    >>> from crossent.objective import LinearSoftmaxObjective
    >>> from crossent.hessian import hessian_product
    >>> X = np.array([[1.0, 0.0], [0.0, 1.0]]); y = np.array([0, 1])
    >>> objective = LinearSoftmaxObjective(X, y, 2, l2=0.0)
    >>> hW, hb = hessian_product(objective, np.zeros((2, 2)), np.zeros(2), np.eye(2))
    >>> hW  # p = 1/2: each row's softmax Jacobian is [[1/4, -1/4], [-1/4, 1/4]]
    array([[ 0.25, -0.25],
           [-0.25,  0.25]])
    """
    curvature = softmax_curvature(objective, coef, intercept, cache_bytes=0)
    return curvature.product(direction_coef, direction_intercept)


def _probabilities_from_kept_rows(
    objective: Any, weights: np.ndarray, bias: np.ndarray | None
) -> dict[int, np.ndarray] | None:
    """``p`` per chunk from the gradient rows ``g_i = κ s_i (p_i − e_{k_i})`` that the last
    evaluation kept (``objective.keep_rows``), if it was at ``(weights, bias)``; else None.

    ``p_i = g_i / (κ s_i) + e_{k_i}``, with ``κ`` the objective's power-of-two gradient
    scale, computed in place (the objective lets go of the rows: no second ``n × C``);
    rows of weight 0 get ``p_i = 0`` (their curvature is ``s_i (…) = 0`` anyway).
    Saves the pass ``X Wᵀ`` that :func:`softmax_curvature` would make: one of the passes of
    each Newton iteration (the 20-newsgroups shape: 6 of 42).
    """
    kept = getattr(objective, "kept_rows", None)
    if kept is None:
        return None
    kept_weights, kept_bias, rows = kept
    if not np.array_equal(kept_weights, weights):
        return None
    if (kept_bias is None) != (bias is None) or (
        bias is not None and not np.array_equal(kept_bias, bias)
    ):
        return None
    objective.kept_rows = None  # taken over: the rows become p in place
    for start, p in rows.items():
        stop = start + p.shape[0]
        weight = objective.sample_weight[start:stop] * float(objective._grad_scale)
        factor = np.divide(1.0, weight, out=np.zeros_like(weight), where=weight > 0)
        p *= factor.astype(p.dtype)[:, None]
        p[np.arange(stop - start), objective.y[start:stop]] += (weight > 0).astype(p.dtype)
    return rows
