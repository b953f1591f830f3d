"""The one hot path: the L2-regularised softmax objective and its gradient, in one pass.

.. math::

    L_{total}(W, b) = \\sum_i s_i \\big(\\log \\sum_j e^{f_{j,i}} - f_{k_i,i}\\big)
                      + \\frac{\\lambda}{2} \\|W\\|^2, \\qquad f_{\\cdot,i} = W x_i + b,

    \\frac{\\partial L_{total}}{\\partial W} = \\sum_i s_i (\\hat y_i - \\delta_{k_i}) x_i^T
                                            + \\lambda W, \\qquad
    \\frac{\\partial L_{total}}{\\partial b} = \\sum_i s_i (\\hat y_i - \\delta_{k_i}).

``X`` is read in row chunks: a chunk's scores ``X_c Wᵀ + b`` are turned into the gradient
rows ``s (ŷ − δ)`` in place (by the kernel :func:`crossent.loss._index_loss_grad_inplace`) and
multiplied back into ``Gᵀ X_c`` while the chunk is still in cache, so the ``(n, C)`` score
matrix never exists whole and X is read once per evaluation. With the compiled kernel
(:mod:`crossent._kernel`) a dense chunk is three calls, all without the GIL: one BLAS call
for ``X_c Wᵀ``, one kernel call (adds ``b``, writes the loss and the gradient rows, and adds
their column sums, the intercept gradient, into a float64 total) and one BLAS call for
``Gᵀ X_c``; so row blocks on threads hardly wait on each other. BLAS is held to one thread
throughout (a chunk's products are too small for BLAS threads to pay). Float32 data stay float32 in
the two matrix products; the loss and the gradient totals are accumulated in float64. The
intercept is not penalised. Every solver, the classifier and the benchmarks call this code
(L-BFGS's first step also reads ``X`` through :mod:`crossent.score_line`, with the same chunk
products and kernel). Where ``W = 0`` (a fit's start) no scores are needed: see
:meth:`LinearSoftmaxObjective._at_zero_weights`.
Row blocks run on threads by the one scheduler of :mod:`crossent._threads`.

``X`` may also be a SciPy sparse matrix or array (CSR; other formats are converted to CSR
once). Then only the two products change: ``X_c Wᵀ`` and ``(X_cᵀ G)ᵀ`` are SciPy's
sparse × dense products (which release the GIL, so row blocks run in parallel as for dense
data), on a CSC copy of each chunk made at its first read once the ``(d, C)`` weights
outgrow the cache (see :meth:`LinearSoftmaxObjective.sparse_rows`); the gradient is
accumulated in a ``(d, C)`` layout (the transpose of a Fortran-ordered ``(C, d)`` array)
and ``X`` is never densified. A sparse chunk is sized by its non-zeros, not by ``d``: see
:func:`_sparse_chunk_rows`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from scipy.linalg.blas import daxpy as _axpy

from crossent import _kernel
from crossent._stats import max_abs
from crossent._threads import (
    check_n_threads,
    map_row_blocks,
    resolve_n_threads,
    single_threaded_blas,
)
from crossent.loss import _index_loss_grad_inplace, _raise_undefined_row

__all__ = ["LinearSoftmaxObjective", "add_scaled_inplace", "loss_gradient"]

_CHUNK_BYTES = 2 * 1024 * 1024  # the least X and score bytes of one sparse chunk
# X rows + score rows of one dense chunk. Measured with the compiled kernel (one thread,
# interleaved medians, 2-core EPYC): objective / (X Wᵀ and Gᵀ X as two BLAS calls) at
# 1, 2, 4, 8 MiB: mnist-shape 0.85, 0.82, 0.78, 0.89; probe-1000 1.32, 1.29, 1.08, 1.29.
_DENSE_CHUNK_BYTES = 4 * 1024 * 1024
_SPARSE_SCORES_BYTES = 64 * 1024 * 1024  # the most score rows one sparse chunk may hold
# Weights (d · C entries) above this are read from CSC copies of the chunks (see sparse_rows).
# One evaluation, one thread, 20 classes, interleaved medians, CSC vs CSR: weights of 0.4-3.1
# MiB 0.95-1.05x the time; 3.8 MiB (float32) 0.77x, 7.6 MiB 0.63x, 20.8 MiB (bench_sparse) 0.56x.
_CSC_WEIGHT_BYTES = 2 * 1024 * 1024
# The most bytes of gradient rows (n × C in X's dtype) an evaluation keeps with keep_rows.
KEEP_ROWS_BYTES = 1024 * 2**20
# A sparse multiply-add costs about 8 dense ones (scattered reads): 2.1e7 of them took
# 16-21 ms on one core (11314 × 130107 CSR, 20 classes), a dense product of as many 1.5 ms.
_SPARSE_WORK = 8.0


class LinearSoftmaxObjective:
    """``L_total`` and its gradient on fixed data, evaluated in one chunked pass.

    Parameters
    ----------
    X : ndarray or scipy.sparse matrix/array, shape ``(n_samples, n_features)``
        float32 or float64; used without a copy when C-contiguous (dense) or CSR (sparse;
        other sparse formats are converted to CSR once, never densified).
    y : ndarray of int, shape ``(n_samples,)``
        Class indices in ``[0, n_classes)``.
    n_classes : int
    l2 : float
        λ ≥ 0, the weight of ``(λ/2)‖W‖²``.
    sample_weight : ndarray, shape ``(n_samples,)``, optional
        Non-negative weights ``s_i`` (1 by default).
    fit_intercept : bool, default True
    n_threads : int, optional
        Threads over row blocks (see :mod:`crossent._threads`): None chooses by the work of
        one evaluation, ``n · d · C`` multiply-adds (sparse: ``8 · nnz · C``); -1 uses all
        cores; ``k`` uses ``k``. With more than one, BLAS is held to one thread inside.
    chunk_rows : int, optional
        Rows per chunk (default: about 4 MiB of X and score rows; for sparse ``X`` see
        :func:`_sparse_chunk_rows`).
    x_max_abs : float, optional
        An upper bound of ``max |x|`` when the caller knows one (a minibatch of known data),
        which spares a pass over ``X``; by default it is computed.

    Notes
    -----
    Each evaluation runs BLAS on one thread (its chunks' products are small, and its own
    threads run them). Evaluating in a loop, hold BLAS there around the loop, as the
    classifier does around its solver: ``with threadpoolctl.threadpool_limits(1, "blas"):``.
    A lone call otherwise sets OpenBLAS to one thread and back, and OpenBLAS's idle threads
    then spin for a while and take cores from the next call. Measured on probe-1000 (40000 ×
    256 float32, 1000 classes, 2 threads, ``benchmarks/bench_fit.py``): an evaluation took
    1.05× its two matrix products with BLAS held, 1.19× as lone calls.
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
        n_threads: int | None = None,
        chunk_rows: int | None = None,
        x_max_abs: float | None = None,
    ) -> None:
        self.X = _check_X(X)
        n = self.X.shape[0]
        self.n_classes = int(n_classes)
        if self.n_classes < 1:
            raise ValueError(f"n_classes must be at least 1, got {n_classes!r}")
        self.y = _check_labels(y, n, self.n_classes)
        self._labels64 = np.ascontiguousarray(self.y, dtype=np.int64)  # the kernel's index
        self.l2 = float(l2)
        if not (math.isfinite(self.l2) and self.l2 >= 0):
            raise ValueError(f"l2 must be a finite number >= 0, got {l2!r}")
        self.sample_weight = _check_sample_weight(sample_weight, n)
        self.fit_intercept = bool(fit_intercept)
        self.n_threads = check_n_threads(n_threads)
        if chunk_rows is None and sp.issparse(self.X):
            chunk_rows = _sparse_chunk_rows(self.X, self.n_classes)
        elif chunk_rows is None:
            row_bytes = (self.X.shape[1] + self.n_classes) * self.X.itemsize
            chunk_rows = max(64, _DENSE_CHUNK_BYTES // max(row_bytes, 1))
        self.chunk_rows = int(chunk_rows)
        self.x_max_abs = max_abs(self.X) if x_max_abs is None else float(x_max_abs)
        self._grad_scale = _gradient_scale(self.X.dtype, self.x_max_abs, self.chunk_rows)
        self._column_chunks: dict[tuple[int, int], Any] = {}  # see sparse_rows
        self.n_evals = 0
        # keep_rows: each evaluation also keeps its gradient rows, for the curvature at the
        # same point (see crossent.hessian.softmax_curvature); kept_rows is then
        # (W, b, {first row of a chunk: its rows}) as the products read them, else None
        self.keep_rows = False
        self.kept_rows: tuple[np.ndarray, np.ndarray | None, dict[int, np.ndarray]] | None = None

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
        self.kept_rows = None
        if not np.any(coef):
            return self._at_zero_weights(coef, intercept)
        weights, bias = self.in_data_dtype(coef, intercept)
        n = self.X.shape[0]
        kept: dict[int, np.ndarray] | None = None
        if self.keep_rows and n * self.n_classes * self.X.dtype.itemsize <= KEEP_ROWS_BYTES:
            kept = {}
        # BLAS on one thread even for one block: a chunk's products are small, and BLAS's own
        # threads spend more on hand-offs than they save (and compete with ours)
        with single_threaded_blas():
            parts = map_row_blocks(
                lambda rows: self._pass(weights, bias, rows, kept), n, self.n_row_blocks()
            )
        if kept is not None:
            self.kept_rows = (weights, bias, kept)
        return self.totals(parts, coef)

    def _at_zero_weights(
        self, coef: np.ndarray, intercept: np.ndarray | None
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """:meth:`loss_gradient` where ``W = 0`` (a fit's usual start), without scores.

        Every row then has the scores ``b``, ``ŷ = p = softmax(b)``: with ``n_c`` the weight
        of class ``c`` and ``M_c = Σ_{k_i = c} s_i x_i`` (one ``O(n d)`` pass over ``X``),
        ``L_total = (Σ_c n_c) lse(b) − Σ_c n_c b_c``, ``∂L/∂W = p (Σ_c M_c)ᵀ − M`` and
        ``∂L/∂b = (Σ_c n_c) p − n``: no ``(n, C)`` scores, no product with ``C`` in it.
        """
        n_classes = self.n_classes
        bias = np.zeros(n_classes)
        if self.fit_intercept and intercept is not None:
            bias = np.asarray(intercept, dtype=np.float64)
        counts = np.bincount(self.y, weights=self.sample_weight, minlength=n_classes)
        total = float(counts.sum())
        top = float(np.max(bias))
        log_norm = top + math.log(float(np.sum(np.exp(bias - top))))
        if not math.isfinite(log_norm):
            _raise_undefined_row(0)
        probs = np.exp(bias - log_norm)
        sums = self._class_sums()
        grad_coef = np.multiply.outer(probs, sums.sum(axis=0))
        grad_coef -= sums  # + λW = 0
        grad_intercept = np.zeros(n_classes)
        if self.fit_intercept:
            grad_intercept = total * probs - counts
        loss = total * log_norm - float(counts @ bias)
        if sp.issparse(self.X):  # the layout loss_gradient gives for sparse X
            grad_coef = np.asfortranarray(grad_coef)
        return loss, grad_coef, grad_intercept

    def _class_sums(self) -> np.ndarray:
        """``M_c = Σ_{k_i = c} s_i x_i``, ``(C, d)`` float64, in one ``O(n d)`` pass (sparse:
        ``O(nnz)``, from the stored entries; ``X`` is not densified)."""
        n_classes, d = self.n_classes, self.n_features
        if sp.issparse(self.X):
            X = self.X  # CSR
            rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
            flat = self.y[rows] * d + X.indices
            values = X.data * self.sample_weight[rows]
            return np.bincount(flat, weights=values, minlength=n_classes * d).reshape(n_classes, d)
        sums = np.zeros((n_classes, d))
        for start, stop in self.chunks(slice(0, self.n_samples)):
            onehot = sp.csr_array(  # the weights s_i at (k_i, i): sparse × dense, float64
                (self.sample_weight[start:stop], (self.y[start:stop], np.arange(stop - start))),
                shape=(n_classes, stop - start),
            )
            sums += onehot @ self.X[start:stop]
        return sums

    def totals(
        self, parts: list[tuple[float, np.ndarray, np.ndarray]], coef: np.ndarray
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """``(L_total, ∂L/∂W, ∂L/∂b)`` from the row blocks' ``(loss, Gᵀ X, Σ G)`` sums (as
        :meth:`_pass` returns them: scaled, and ``(d, C)`` for sparse ``X``) and ``W``."""
        data_loss = sum(p[0] for p in parts)
        grad_coef, grad_intercept = parts[0][1], parts[0][2]  # fresh float64 buffers
        for _, block_coef, block_intercept in parts[1:]:
            grad_coef += block_coef
            grad_intercept += block_intercept
        if self._grad_scale != 1.0:
            grad_coef /= self._grad_scale
            grad_intercept /= self._grad_scale
        coef64 = np.asarray(coef, dtype=np.float64)
        loss = data_loss + penalty(coef64, self.l2)
        if sp.issparse(self.X):  # the (d, C) sum read transposed, (C, d) F-ordered, + λW
            grad_coef = grad_coef.T
            add_scaled_inplace(grad_coef, self.l2, coef64)
        else:
            grad_coef += self.l2 * coef64  # grad_intercept stays 0 without an intercept
        return loss, grad_coef, grad_intercept

    def in_data_dtype(
        self, coef: np.ndarray, intercept: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``(W, b)`` in X's dtype as the products read them; ``b`` None without intercept.

        Sparse ``X``: ``W`` is the transpose of a ``(d, C)`` C-contiguous array, the layout
        SciPy's ``X_c @ Wᵀ`` reads without a copy. Also used for the directions of
        :mod:`crossent.hessian`.
        """
        dtype = self.X.dtype
        if sp.issparse(self.X):
            weights = np.ascontiguousarray(np.transpose(coef), dtype=dtype).T
        else:
            weights = np.ascontiguousarray(coef, dtype=dtype)  # (C, d)
        bias = None
        if self.fit_intercept and intercept is not None:
            bias = np.asarray(intercept, dtype=dtype)
        return weights, bias

    def sparse_rows(self, start: int, stop: int) -> Any:
        """Rows ``start:stop`` of a sparse ``X``, stored column by column (CSC) once read.

        Both products of a chunk read the CSC form fastest: ``X_c Wᵀ`` then streams ``W``
        and scatters into the chunk's small ``(rows, C)`` scores, and ``X_cᵀ G`` (a CSR
        product) gathers from them, where from CSR both scatter or gather across the whole
        ``(d, C)`` weights. Measured (11314 × 130107, 1.5e6 non-zeros, 20 classes, one
        thread, float64): ``X Wᵀ`` 33 → 14 ms, ``Xᵀ G`` 31 → 15 ms; the conversion, once
        per chunk and kept for the objective's life (one more copy of ``X``'s non-zeros),
        11 ms. A chunk stays a CSR view when the weights are small enough to stay in cache
        (at most :data:`_CSC_WEIGHT_BYTES`: there CSC gained nothing) or when it has fewer
        non-zeros than ``d`` (its column pointers would outweigh its values).
        """
        key = (start, stop)
        chunk = self._column_chunks.get(key)
        if chunk is None:
            chunk = _csr_rows(self.X, start, stop)
            weight_bytes = self.n_features * self.n_classes * self.X.dtype.itemsize
            if chunk.nnz >= chunk.shape[1] and weight_bytes > _CSC_WEIGHT_BYTES:
                chunk = chunk.tocsc()
            self._column_chunks[key] = chunk  # a block's own keys: no two threads race
        return chunk

    def n_row_blocks(self) -> int:
        """Row blocks of one pass: the threads its work calls for, no more than its chunks."""
        n, d = self.X.shape
        work = _SPARSE_WORK * self.X.nnz if sp.issparse(self.X) else float(n) * d
        n_threads = resolve_n_threads(self.n_threads, work * self.n_classes)
        return min(n_threads, -(-n // self.chunk_rows))

    def reduce(self, values: np.ndarray, op: str = "sum") -> np.ndarray:
        """``values`` (float64) summed (``op="sum"``) or maxed (``"max"``) over the processes
        that share the objective: ``values`` itself on one process (see
        :class:`crossent.distributed.DistributedObjective`)."""
        return np.asarray(values, dtype=np.float64)

    def loss_gradient_from_scores(
        self, coef: np.ndarray, scores_of: Callable[[int, int, np.ndarray], None]
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """:meth:`loss_gradient` at ``(coef, b)`` whose scores the caller writes.

        ``scores_of(start, stop, out)`` fills ``out`` with the scores ``X Wᵀ + b`` of rows
        ``start:stop`` (``b`` included), in place of the product ``X_c Wᵀ``: the pass then
        makes one product, ``Gᵀ X`` (:mod:`crossent.score_line` keeps a line's scores).
        """
        self.n_evals += 1
        self.kept_rows = None
        with single_threaded_blas():
            parts = map_row_blocks(
                lambda rows: self._pass(None, None, rows, scores_of=scores_of),
                self.n_samples,
                self.n_row_blocks(),
            )
        return self.totals(parts, coef)

    def chunks(self, rows: slice) -> Iterator[tuple[int, int]]:
        """``(start, stop)`` of the chunks of the row block ``rows``."""
        for start in range(rows.start, rows.stop, self.chunk_rows):
            yield start, min(start + self.chunk_rows, rows.stop)

    def _pass(
        self,
        weights: np.ndarray | None,
        bias: np.ndarray | None,
        rows: slice,
        kept: dict[int, np.ndarray] | None = None,
        scores_of: Callable[[int, int, np.ndarray], None] | None = None,
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """Loss and gradient sums over the chunks of the row block ``rows`` (one thread).

        The gradient sums come back multiplied by ``self._grad_scale`` (1 unless the
        features are so large that a chunk's product would overflow the data's dtype).
        Dense and sparse ``X`` differ only in the two products; for sparse ``X`` the
        gradient sum comes back as its ``(d, C)`` transpose, the layout of ``X_cᵀ G``.
        With ``scores_of`` (see :meth:`loss_gradient_from_scores`) the chunks' scores come
        from it, ``b`` included, instead of ``X_c Wᵀ`` and ``bias``.
        """
        n_classes, n_features = self.n_classes, self.n_features
        dtype = self.X.dtype
        sparse = sp.issparse(self.X)
        buf_rows = max(0, min(self.chunk_rows, rows.stop - rows.start))
        scores_buf = np.empty((buf_rows, n_classes), dtype=dtype)  # (rows, C) scores
        chunk_grad = np.empty((0, 0) if sparse else (n_classes, n_features), dtype=dtype)
        grad_coef = None if sparse else np.zeros((n_classes, n_features), dtype=np.float64)
        grad_intercept = np.zeros(n_classes, dtype=np.float64)
        loss = 0.0
        col_sums = grad_intercept if self.fit_intercept else None
        kernel = None
        if _kernel.available(dtype) and buf_rows:  # + bias, loss, gradient, column sums
            kernel = _kernel.RowsLossGrad(
                scores_buf,
                self._labels64,
                self.sample_weight,
                self._grad_scale,
                bias=None if bias is None else np.ascontiguousarray(bias),
                col_sums=col_sums,
            )
        for start, stop in self.chunks(rows):
            X_chunk = self.rows(start, stop)
            scores = scores_buf[: stop - start]
            if scores_of is not None:
                scores_of(start, stop, scores)
            else:
                assert weights is not None
                self.scores_product(X_chunk, weights, scores)
            if kernel is not None:  # one pass: the chunk's loss, and gradient rows in place
                chunk_loss, bad_row = kernel(start, stop)
                if bad_row >= 0:
                    _raise_undefined_row(start + bad_row)
                loss += chunk_loss
            else:
                if bias is not None:
                    scores += bias
                loss += _index_loss_grad_inplace(
                    scores,
                    self._labels64[start:stop],
                    self.sample_weight[start:stop],
                    self._grad_scale,
                    first_row=start,
                )
                if col_sums is not None:
                    col_sums += scores.sum(axis=0, dtype=np.float64)
            if kept is not None:  # each chunk its own key: no two threads write one
                kept[start] = scores.copy()
            grad_coef = self.add_gradient_product(X_chunk, scores, grad_coef, chunk_grad)
        if grad_coef is None:  # a sparse block without rows
            grad_coef = np.zeros((n_features, n_classes), dtype=np.float64)  # (d, C)
        return loss, grad_coef, grad_intercept

    def rows(self, start: int, stop: int) -> Any:
        """Rows ``start:stop`` of ``X`` as the products read them (see :meth:`sparse_rows`)."""
        return self.sparse_rows(start, stop) if sp.issparse(self.X) else self.X[start:stop]

    def scores_product(self, X_chunk: Any, weights: np.ndarray, out: np.ndarray) -> None:
        """``out = X_c Wᵀ`` for a chunk of :meth:`rows` and ``W`` of :meth:`in_data_dtype`."""
        if sp.issparse(X_chunk):
            out[...] = X_chunk @ weights.T  # (rows, C), sparse × dense
        else:
            np.matmul(X_chunk, weights.T, out=out)

    def add_gradient_product(
        self,
        X_chunk: Any,
        grad_rows: np.ndarray,
        total: np.ndarray | None,
        scratch: np.ndarray,
    ) -> np.ndarray:
        """``total + G_cᵀ X_c`` (float64, in place when ``total`` is given) for gradient rows
        ``G_c`` of a chunk: ``(C, d)`` for dense ``X`` (``scratch`` a ``(C, d)`` buffer in
        X's dtype), its ``(d, C)`` transpose ``X_cᵀ G_c`` for sparse ``X`` (``total`` None:
        the first product becomes the total)."""
        if sp.issparse(X_chunk):  # sparse × dense
            product = X_chunk.T @ grad_rows
            if total is None:
                return product.astype(np.float64, copy=False)
            total += product
            return total
        np.matmul(grad_rows.T, X_chunk, out=scratch)  # Σ_i s_i (ŷ_i − δ) x_iᵀ
        assert total is not None
        total += scratch
        return total


def loss_gradient(
    coef: np.ndarray,
    intercept: np.ndarray | None,
    X: np.ndarray,
    y: np.ndarray,
    *,
    l2: float,
    sample_weight: np.ndarray | None = None,
    n_threads: int | None = None,
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
    n_threads : int, optional
        As for :class:`LinearSoftmaxObjective`.

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


def add_scaled_inplace(out: np.ndarray, scale: float, values: np.ndarray) -> None:
    """``out += scale · values`` in place; one BLAS ``axpy`` when both lie alike in memory.

    The penalty's gradient ``λW`` (and ``λV`` of a Hessian-vector product) is added so:
    no temporary of the size of ``W``, one pass.
    """
    same = out.flags.f_contiguous == values.flags.f_contiguous
    if same and out.flags.forc and values.flags.forc and values.dtype == out.dtype == np.float64:
        order: Literal["C", "F"] = "F" if out.flags.f_contiguous else "C"
        _axpy(values.ravel(order=order), out.ravel(order=order), a=scale)  # views
    else:
        out += scale * values


def penalty(coef: np.ndarray, l2: float) -> float:
    """The penalty ``(λ/2)‖W‖²`` of ``L_total`` in float64; its gradient is ``λW``.

    Every objective (NumPy here, the torch device objective) adds it on the host.
    """
    coef = np.asarray(coef, dtype=np.float64)
    return 0.5 * l2 * float(np.dot(coef.ravel(order="K"), coef.ravel(order="K")))


def _check_X(X: Any) -> Any:
    """``X`` as a C-contiguous array or a CSR matrix/array, float32 or float64.

    Other sparse formats are converted to CSR once (never densified); ``TypeError`` naming
    ``X`` for other dtypes or shapes.
    """
    if sp.issparse(X):
        if X.dtype not in (np.float32, np.float64) or X.ndim != 2:
            raise TypeError(
                f"X must be a 2-D float32 or float64 sparse matrix, got {X.dtype} {X.shape}"
            )
        return X.tocsr()  # no copy when already CSR
    X = np.asarray(X)
    if X.dtype not in (np.float32, np.float64) or X.ndim != 2:
        raise TypeError(f"X must be a 2-D float32 or float64 array, got {X.dtype} {X.shape}")
    return np.ascontiguousarray(X)


def _csr_rows(X: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of a CSR ``X`` as a CSR view of its arrays (slicing copies them)."""
    low, high = int(X.indptr[start]), int(X.indptr[stop])
    indptr = X.indptr[start : stop + 1] - low  # (rows + 1,)
    parts = (X.data[low:high], X.indices[low:high], indptr)
    return type(X)(parts, shape=(stop - start, X.shape[1]), copy=False)


def _sparse_chunk_rows(X: Any, n_classes: int) -> int:
    """Rows per chunk of a CSR ``X``: chosen by its non-zeros and memory, not by ``d``.

    Each sparse chunk allocates one ``(d, C)`` product ``X_cᵀ G`` and adds it to the float64
    total, ``O(d · C)`` work whatever its rows; so a chunk holds at least ``8 d`` non-zeros
    (its products, ``2 nnz_c · C`` multiply-adds, then outweigh that pass by 16 to 1) and
    at least 2 MiB of rows, but its ``(rows, C)`` scores stay under 64 MiB.
    """
    n, d = X.shape
    nnz_per_row = max(X.nnz / max(n, 1), 1.0)
    score_bytes = n_classes * X.dtype.itemsize
    row_bytes = score_bytes + nnz_per_row * (X.dtype.itemsize + X.indices.itemsize)
    by_nnz = math.ceil(8 * d / nnz_per_row)
    by_memory = _SPARSE_SCORES_BYTES // max(score_bytes, 1)
    return int(max(64, _CHUNK_BYTES // row_bytes, min(by_nnz, by_memory)))


def _check_labels(y: np.ndarray, n_samples: int, n_classes: int) -> np.ndarray:
    """``y`` as C-contiguous ``intp`` class indices, or ``ValueError`` naming ``y``."""
    y = np.asarray(y)
    if y.shape != (n_samples,):
        raise ValueError(f"y must have shape (n_samples,) = ({n_samples},), got {y.shape}")
    if not (np.issubdtype(y.dtype, np.integer) and not np.issubdtype(y.dtype, np.bool_)):
        raise TypeError(f"y must hold integer class indices, got dtype {y.dtype}")
    if n_samples and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
        raise ValueError(f"y holds class index {bad}, outside [0, {n_classes})")
    return np.ascontiguousarray(y, dtype=np.intp)


def _check_sample_weight(sample_weight: np.ndarray | None, n_samples: int) -> np.ndarray:
    """Weights as C-contiguous float64, or ``ValueError`` naming ``sample_weight``."""
    if sample_weight is None:
        return np.ones(n_samples, dtype=np.float64)
    weights = np.ascontiguousarray(sample_weight, dtype=np.float64)
    if weights.shape != (n_samples,):
        raise ValueError(
            f"sample_weight must have shape (n_samples,) = ({n_samples},), got {weights.shape}"
        )
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise ValueError("sample_weight must be finite and non-negative")
    return weights


def _gradient_scale(dtype: np.dtype, x_max_abs: float, chunk_rows: int) -> float:
    """A power of two ``g <= 1`` with ``g · chunk_rows · max|x|`` far below the dtype's max.

    A chunk's gradient product ``Σ_i g s_i (ŷ_i − δ) x_iᵀ`` is then finite in the data's
    dtype (float32 features of scale 1e37 overflow it otherwise); the float64 totals are
    divided by ``g`` again. ``g = 1`` for data of ordinary scale: nothing changes.
    """
    limit = float(np.finfo(dtype).max) / 16
    bound = x_max_abs * chunk_rows
    if not (limit < bound < math.inf):  # ordinary scale; NaN or inf is the kernel's to report
        return 1.0
    return float(2.0 ** math.floor(math.log2(limit / bound)))
