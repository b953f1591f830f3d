"""Softmax cross-entropy from logits, and its analytic gradient ``ŷ − δ``.

For one sample with logits ``z`` (the derivation's scores ``f_{j,i}``) and true class ``k``:

.. math::

    L = -\\log \\hat y_k = \\log \\sum_j e^{z_j} - z_k, \\qquad
    \\frac{\\partial L}{\\partial z_j} = \\hat y_j - \\delta_{jk}.

Every option of :func:`torch.nn.functional.cross_entropy` reduces to one form. Each sample
carries a non-negative *target mass* ``u`` over the classes, and

.. math::

    L = \\sum_j u_j (\\mathrm{lse}(z) - z_j), \\qquad
    \\frac{\\partial L}{\\partial z} = \\Big(\\sum_j u_j\\Big) \\hat y - u,

with ``u = w_k e_k`` for a class index ``k`` and class weights ``w`` (``u = e_k`` without
weights: the derivation's ``ŷ − δ``), ``u = (1 − ε) w_k e_k + (ε / C) w`` with label smoothing
``ε``, and ``u = w ⊙ ((1 − ε) p + ε / C)`` for a probability target ``p``; ignored samples have
``u = 0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np

from crossent import _kernel
from crossent._array import (
    Array,
    check_floating,
    check_probabilities,
    dtype_is,
    namespace,
    stop_gradient,
)
from crossent._threads import check_n_threads, map_row_blocks, resolve_n_threads
from crossent.softmax import row_shift, shifted_logits, widened

__all__ = ["softmax_cross_entropy", "softmax_cross_entropy_with_grad"]

_REDUCTIONS = ("mean", "sum", "none")
_WORK_PER_LOGIT = 64  # work units (see crossent._threads) of one logit: exp, sums, writes
_CHUNK_ENTRIES = 2**16  # logits per cache-sized chunk of the forward-only kernel


@dataclass
class _Problem:
    """Validated inputs, flattened to ``(n, C)``."""

    xp: Any
    logits: Array  # (n, C)
    batch_shape: tuple[int, ...]
    index: Array | None  # (n,) class indices, ignored entries replaced by 0
    keep: Array | None  # (n,) bool, False where target == ignore_index
    probs: Array | None  # (n, C) probability targets
    weight: Array | None  # (C,) float64 class weights
    smoothing: float
    reduction: str

    @property
    def n_classes(self) -> int:
        return int(self.logits.shape[-1])


def _parse(logits, target, weight, ignore_index, label_smoothing, reduction, validate) -> _Problem:
    xp, (logits, target, weight) = namespace(logits, target, weight)
    check_floating(xp, logits, "logits")
    if logits.ndim == 0:
        raise ValueError("logits must have at least one dimension (the classes), got a scalar")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    smoothing = float(label_smoothing) if isinstance(label_smoothing, Real) else math.nan
    if isinstance(label_smoothing, bool) or not 0.0 <= smoothing <= 1.0:  # NaN fails too
        raise ValueError(f"label_smoothing must be a number in [0, 1], got {label_smoothing!r}")
    label_smoothing = smoothing
    n_classes = int(logits.shape[-1])
    if n_classes == 0:
        raise ValueError("logits must have at least one class (last axis has size 0)")
    batch_shape = tuple(int(s) for s in logits.shape[:-1])
    n = math.prod(batch_shape)
    flat = xp.reshape(logits, (n, n_classes))

    if weight is not None:
        check_floating(xp, weight, "weight")
        if tuple(weight.shape) != (n_classes,):
            raise ValueError(
                f"weight must have shape (n_classes,) = ({n_classes},), got {tuple(weight.shape)}"
            )
        if not bool(xp.all(xp.isfinite(weight))) or bool(xp.any(weight < 0)):
            raise ValueError("weight must be finite and non-negative")
        weight = xp.astype(stop_gradient(weight), xp.float64)

    if dtype_is(xp, target.dtype, "bool"):
        raise TypeError("target must hold class indices (integers) or probabilities, got bool")
    if dtype_is(xp, target.dtype, "integral"):
        if tuple(target.shape) != batch_shape:
            raise ValueError(
                f"class-index target must have shape logits.shape[:-1] = {batch_shape}, "
                f"got {tuple(target.shape)}"
            )
        # any integer dtype (torch's int32/int16/uint8 too): indices as int64 from here on
        index = xp.astype(xp.reshape(target, (n,)), xp.int64, copy=False)  # read only
        keep = None
        if ignore_index is not None:
            if not isinstance(ignore_index, (int, np.integer)) or isinstance(ignore_index, bool):
                raise TypeError(f"ignore_index must be an int or None, got {ignore_index!r}")
            keep = index != int(ignore_index)
            index = xp.where(keep, index, xp.zeros_like(index))
        lowest, highest = _index_range(xp, index) if n else (0, 0)
        if lowest < 0 or highest >= n_classes:
            bad = index[(index < 0) | (index >= n_classes)][0]
            raise ValueError(
                f"target holds class index {int(bad)}, outside [0, {n_classes}) "
                f"for logits with {n_classes} classes"
            )
        return _Problem(
            xp, flat, batch_shape, index, keep, None, weight, label_smoothing, reduction
        )

    check_floating(xp, target, "target")
    if tuple(target.shape) == batch_shape and batch_shape != tuple(logits.shape):
        raise TypeError(
            f"class-index target must have an integer dtype, got {target.dtype}; "
            "a probability target must have the shape of logits"
        )
    if tuple(target.shape) != tuple(logits.shape):
        raise ValueError(
            f"target must be class indices of shape {batch_shape} or probabilities of shape "
            f"{tuple(logits.shape)}, got shape {tuple(target.shape)}"
        )
    if ignore_index is not None:
        raise ValueError("ignore_index applies to class-index targets, not to probability targets")
    if validate:
        check_probabilities(xp, target, "target")
    probs = xp.reshape(stop_gradient(target), (n, n_classes))
    return _Problem(xp, flat, batch_shape, None, None, probs, weight, label_smoothing, reduction)


def _index_range(xp: Any, index: Array) -> tuple[int, int]:
    """``(min, max)`` of a non-empty index array (NumPy's methods skip a dispatch layer)."""
    if isinstance(index, np.ndarray):
        return int(index.min()), int(index.max())
    return int(xp.min(index)), int(xp.max(index))


def _target_mass(pb: _Problem) -> tuple[Array | None, Array, Array | None]:
    """The target mass of every sample: ``(dense u or None, row total Σ_j u_j, row weight)``.

    ``u`` is built densely, ``(n, C)`` float64, only for probability targets or label
    smoothing; with plain class indices it is ``row_weight · e_k``. ``row total`` has shape
    ``(n,)``. ``row weight`` is, for class-index targets, each sample's class weight ``w_k``
    (1 without weights, 0 where ignored), shape ``(n,)``; None for probability targets.
    """
    xp, n, n_classes, eps = pb.xp, pb.logits.shape[0], pb.n_classes, pb.smoothing
    if pb.probs is not None:
        mass = xp.astype(pb.probs, xp.float64) * (1.0 - eps) + eps / n_classes
        if pb.weight is not None:
            mass = mass * pb.weight
        return mass, xp.sum(mass, axis=-1), None
    assert pb.index is not None
    if pb.weight is not None:
        row_weight = xp.take(pb.weight, pb.index)
    else:
        row_weight = xp.ones((n,), dtype=xp.float64)
    if pb.keep is not None:
        row_weight = xp.where(pb.keep, row_weight, xp.zeros_like(row_weight))
    if eps == 0.0:
        return None, row_weight, row_weight
    weight = pb.weight if pb.weight is not None else xp.ones((n_classes,), dtype=xp.float64)
    onehot = xp.astype(pb.index[:, None] == xp.arange(n_classes)[None, :], xp.float64)
    kept = (
        xp.astype(pb.keep, xp.float64)[:, None]
        if pb.keep is not None
        else xp.ones((n, 1), dtype=xp.float64)
    )
    mass = (1.0 - eps) * row_weight[:, None] * onehot + (eps / n_classes) * weight[None, :] * kept
    return mass, xp.sum(mass, axis=-1), row_weight


def _denominator(pb: _Problem, row_weight: Array | None) -> float:
    """What ``reduction='mean'`` divides by: torch's convention, 1.0 for sum/none.

    Class indices: the summed class weight of the non-ignored samples (their count without
    weights), from :func:`_target_mass`'s row weights. Probabilities: the number of samples.
    """
    if pb.reduction != "mean":
        return 1.0
    if row_weight is None:  # probability targets
        return float(pb.logits.shape[0])
    return float(pb.xp.sum(row_weight))


def _check_normalisers(pb: _Problem, lse_finite: Array, row_total: Array) -> None:
    bad = (~lse_finite) & (row_total > 0)
    if bool(pb.xp.any(bad)):
        _raise_undefined_row(int(pb.xp.argmax(pb.xp.astype(bad, pb.xp.int8))))


def _raise_undefined_row(row: int) -> None:
    raise ValueError(
        f"logits row {row} has no finite log-sum-exp (all -inf, or a +inf or NaN entry); "
        "its cross-entropy is undefined"
    )


def _per_sample_loss(
    pb: _Problem, shifted: Array, log_norm: Array, target: tuple[Array | None, Array, Array | None]
) -> Array:
    """``L_n = Σ_j u_nj (lse_n − z_nj)`` in float64, differentiable through ``pb.logits``.

    ``shifted`` and ``log_norm`` come from :func:`shifted_logits` of ``pb.logits``, ``target``
    from :func:`_target_mass`.
    """
    xp = pb.xp
    mass, row_total, row_weight = target
    _check_normalisers(pb, xp.isfinite(log_norm[:, 0]), row_total)
    # Rows or classes of zero target mass may hold inf − inf or 0 · inf: they are masked
    # out, so the invalid operations they trigger are expected.
    with np.errstate(invalid="ignore"):
        if mass is None:  # plain class indices: (lse − m) − (z_k − m)
            assert pb.index is not None and row_weight is not None
            z_k = xp.take_along_axis(shifted, pb.index[:, None], axis=-1)[:, 0]
            nll = log_norm[:, 0] - xp.astype(z_k, xp.float64)
            return row_weight * xp.where(row_weight > 0, nll, xp.zeros_like(nll))
        nll = log_norm - xp.astype(shifted, xp.float64)  # (n, C), +inf on masked classes
        return xp.sum(mass * xp.where(mass > 0, nll, xp.zeros_like(nll)), axis=-1)


def _reduce(pb: _Problem, per_sample: Array, denom: float) -> Array:
    xp = pb.xp
    if pb.reduction == "none":
        return xp.astype(xp.reshape(per_sample, pb.batch_shape), pb.logits.dtype)
    total = xp.sum(per_sample)
    if denom == 0.0:  # a mean over no (or zero-weight) samples: 0.0, not NaN
        return xp.astype(total * 0.0, pb.logits.dtype)
    return xp.astype(total / denom, pb.logits.dtype)


def softmax_cross_entropy(
    logits: Array,
    target: Array,
    *,
    weight: Array | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    validate: bool = True,
    n_threads: int | None = None,
) -> Array:
    """Softmax cross-entropy of ``logits`` against class indices or probabilities.

    Exactly ``torch.nn.functional.cross_entropy(logits, target, weight, ignore_index,
    reduction, label_smoothing)`` with the class axis last, computed as ``lse(z) − z_k``
    (never ``−log(softmax(z))``), with row normalisers and the loss accumulated in float64.

    .. math::

        L_i = \\log \\sum_j e^{z_{ij}} - z_{i k_i}, \\qquad
        L_{avg} = \\frac{1}{N} \\sum_i L_i .

    Parameters
    ----------
    logits : array, shape ``(..., n_classes)``
        Unnormalised scores, floating dtype. ``-inf`` masks a class.
    target : array
        Class indices, integer dtype, shape ``logits.shape[:-1]``; or probabilities, floating
        dtype, shape ``logits.shape``.
    weight : array, shape ``(n_classes,)``, optional
        Non-negative class weights. With ``reduction='mean'`` and class indices, the sum of
        weighted losses is divided by the summed weight of the non-ignored samples (torch's
        rule); with probability targets, by the number of samples.
    ignore_index : int, optional
        Class-index value whose samples contribute nothing (loss and gradient 0) and are left
        out of the mean. (torch's default is -100; here the default ignores nothing.)
    label_smoothing : float in [0, 1], default 0
        Mixes the target with the uniform distribution: ``(1 − ε) target + ε / C``.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"none"`` returns one loss per sample, shape ``logits.shape[:-1]``.
    validate : bool, default True
        Check that probability targets are finite, non-negative and sum to 1.
    n_threads : int, optional
        Threads over row blocks for NumPy input (see :mod:`crossent._threads`): None
        chooses by the size of ``logits``, -1 uses all cores, ``k`` uses ``k``. PyTorch
        input runs on torch's own threads. The result does not depend on it beyond rounding.

    Returns
    -------
    array
        The loss in ``logits``' dtype and array type. Differentiable by autograd when
        ``logits`` is a tensor that requires grad.

    Notes
    -----
    One deliberate difference from torch: a mean over zero non-ignored samples (or an empty
    batch) is 0.0, with a zero gradient, where torch returns NaN.

    Examples
    --------
    >>> import numpy as np
    >>> from crossent import softmax_cross_entropy
    >>> logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    >>> round(float(softmax_cross_entropy(logits, np.array([0, 2]))), 6)
    0.634229
    >>> softmax_cross_entropy(logits, np.array([0, 2]), reduction="none").round(6)
    array([0.169846, 1.098612])
    """
    n_threads = check_n_threads(n_threads)
    pb = _parse(logits, target, weight, ignore_index, label_smoothing, reduction, validate)
    target_mass = _target_mass(pb)
    mass, _, row_weight = target_mass
    denom = _denominator(pb, row_weight)
    if mass is None and isinstance(pb.logits, np.ndarray):  # NumPy, plain class indices
        assert pb.index is not None and row_weight is not None
        losses = _index_nll_parallel(
            np.ascontiguousarray(pb.logits),
            np.asarray(pb.index),
            np.asarray(row_weight),
            _threads_for(pb.logits, n_threads),
        )
        return _reduce(pb, losses, denom)
    shifted, _, log_norm = shifted_logits(pb.xp, widened(pb.xp, pb.logits))  # (n, C), (n, 1)
    return _reduce(pb, _per_sample_loss(pb, shifted, log_norm, target_mass), denom)


def softmax_cross_entropy_with_grad(
    logits: Array,
    target: Array,
    *,
    weight: Array | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    validate: bool = True,
    n_threads: int | None = None,
) -> tuple[Array, Array]:
    """:func:`softmax_cross_entropy` and its analytic gradient with respect to ``logits``.

    .. math::

        \\frac{\\partial L_i}{\\partial z_{ij}} = \\hat y_{ij} - \\delta_{j k_i}

    for plain class indices; in general ``(Σ_j u_j) ŷ − u`` for the target mass ``u`` of
    the module docstring, scaled by the reduction (divided by the denominator for
    ``"mean"``). With ``reduction="none"`` row ``i`` of the gradient is ``∂L_i / ∂z_i``.
    Loss and gradient come from the same pass over the logits.

    Parameters
    ----------
    logits, target, weight, ignore_index, label_smoothing, reduction, validate, n_threads
        As in :func:`softmax_cross_entropy`.

    Returns
    -------
    loss : array
        As :func:`softmax_cross_entropy` returns it.
    grad : array, shape ``logits.shape``
        In ``logits``' dtype and array type (never attached to an autograd graph).

    Examples
    --------
    >>> import numpy as np
    >>> from crossent import softmax_cross_entropy_with_grad
    >>> loss, grad = softmax_cross_entropy_with_grad(np.log([[0.25, 0.75]]), np.array([1]))
    >>> grad  # ŷ − δ
    array([[ 0.25, -0.25]])
    """
    n_threads = check_n_threads(n_threads)
    pb = _parse(
        stop_gradient(logits), target, weight, ignore_index, label_smoothing, reduction, validate
    )
    xp = pb.xp
    target_mass = _target_mass(pb)
    mass, row_total, row_weight = target_mass
    denom = _denominator(pb, row_weight)
    scale = 0.0 if denom == 0.0 else 1.0 / denom
    if mass is None and pb.reduction != "none" and isinstance(pb.logits, np.ndarray):
        assert pb.index is not None and row_weight is not None
        total, grad = _index_loss_grad_parallel(
            pb.logits,
            np.asarray(pb.index),
            np.asarray(row_weight),
            scale,
            _threads_for(pb.logits, n_threads),
        )
        loss = np.asarray(total * scale, dtype=pb.logits.dtype)[()]
        return loss, grad.reshape((*pb.batch_shape, pb.n_classes))
    shifted, _, log_norm = shifted_logits(xp, widened(xp, pb.logits))  # (n, C), (n, 1)
    per_sample = _per_sample_loss(pb, shifted, log_norm, target_mass)
    with np.errstate(invalid="ignore"):  # all -inf rows of ignored samples: masked below
        probs = xp.exp(xp.astype(shifted, xp.float64) - log_norm)  # (n, C) ŷ
    probs = xp.where(row_total[:, None] > 0, probs, xp.zeros_like(probs))
    if mass is None:
        assert pb.index is not None and row_weight is not None
        onehot = pb.index[:, None] == xp.arange(pb.n_classes)[None, :]
        mass = xp.where(onehot, row_weight[:, None], xp.zeros_like(probs))
    grad = row_total[:, None] * probs - mass
    if pb.reduction != "none":
        grad = grad * scale
    grad = xp.reshape(xp.astype(grad, pb.logits.dtype), (*pb.batch_shape, pb.n_classes))
    return _reduce(pb, per_sample, denom), grad


def _threads_for(logits: np.ndarray, n_threads: int | None) -> int:
    """The thread count for a NumPy kernel over ``logits``, by the one scheduler's rule."""
    return resolve_n_threads(n_threads, logits.size * _WORK_PER_LOGIT)


def _index_loss_grad_parallel(
    logits: np.ndarray, index: np.ndarray, row_weight: np.ndarray, scale: float, n_threads: int
) -> tuple[float, np.ndarray]:
    """:func:`_index_loss_grad_inplace` on a copy of ``logits``, row blocks on threads.

    The compiled kernel reads ``logits`` and writes the gradient in one pass (no copy).
    """
    work_dtype = _work_dtype(logits)
    grad = np.empty(logits.shape, dtype=work_dtype)  # (n, C), C-contiguous
    direct = _kernel.available(work_dtype) and logits.dtype == work_dtype
    if direct:
        logits = np.ascontiguousarray(logits)
        index = np.ascontiguousarray(index, dtype=np.int64)
        row_weight = np.ascontiguousarray(row_weight, dtype=np.float64)

    def work(rows: slice) -> float:
        if direct:
            return _compiled_loss_grad(
                logits[rows], grad[rows], index[rows], row_weight[rows], scale, rows.start
            )
        np.copyto(grad[rows], logits[rows])
        return _index_loss_grad_inplace(
            grad[rows], index[rows], row_weight[rows], scale, first_row=rows.start
        )

    total = float(sum(map_row_blocks(work, logits.shape[0], n_threads)))
    return total, grad.astype(logits.dtype, copy=False)


def _compiled_loss_grad(
    logits: np.ndarray,
    out: np.ndarray,
    index: np.ndarray,
    row_weight: np.ndarray,
    scale: float,
    first_row: int,
    *,
    bias: np.ndarray | None = None,
    col_sums: np.ndarray | None = None,
) -> float:
    """The compiled kernel (:func:`crossent._kernel.loss_grad`), raising on undefined rows."""
    total, bad_row = _kernel.loss_grad(
        logits, out, index, row_weight, scale, bias=bias, col_sums=col_sums
    )
    if bad_row >= 0:
        _raise_undefined_row(first_row + bad_row)
    return total


def _work_dtype(logits: np.ndarray) -> np.dtype:
    """The kernels' dtype: the logits' own, float32 for float16 (see softmax.widened)."""
    return np.promote_types(logits.dtype, np.float32)


def _index_nll_parallel(
    logits: np.ndarray, index: np.ndarray, row_weight: np.ndarray, n_threads: int
) -> np.ndarray:
    """Per-sample ``s_i (lse(z_i) − z_{i k_i})`` (float64, ``(n,)``) without a gradient.

    Works through cache-sized row chunks of a scratch buffer per thread; ``logits`` is
    only read. The compiled kernel reads each row once for its max and once for its
    normaliser, without scratch.
    """
    n, n_classes = logits.shape
    losses = np.zeros(n, dtype=np.float64)
    if _kernel.available(logits.dtype):
        logits = np.ascontiguousarray(logits)
        index = np.ascontiguousarray(index, dtype=np.int64)
        row_weight = np.ascontiguousarray(row_weight, dtype=np.float64)

        def compiled(rows: slice) -> None:
            bad_row = _kernel.nll(logits[rows], index[rows], row_weight[rows], losses[rows])
            if bad_row >= 0:
                _raise_undefined_row(rows.start + bad_row)

        map_row_blocks(compiled, n, n_threads)
        return losses
    chunk = max(1, _CHUNK_ENTRIES // max(n_classes, 1))

    def work(rows: slice) -> None:
        if rows.stop == rows.start:
            return
        rows_here = min(chunk, rows.stop - rows.start)
        scratch = np.empty((rows_here, n_classes), dtype=_work_dtype(logits))
        for start in range(rows.start, rows.stop, chunk):
            part = slice(start, min(start + chunk, rows.stop))
            scores = scratch[: part.stop - part.start]
            np.copyto(scores, logits[part])
            nll, _, positive = _shifted_exp_inplace(
                scores, index[part], row_weight[part], first_row=start
            )
            losses[part] = row_weight[part] * np.where(positive, nll, 0.0)

    map_row_blocks(work, n, n_threads)
    return losses


def _shifted_exp_inplace(
    scores: np.ndarray, index: np.ndarray, row_weight: np.ndarray, first_row: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Overwrite ``scores`` with ``exp(z − max z)``; return ``(lse − z_k, Σ exp, s > 0)``.

    The first two are float64 ``(n,)``; the loss of a row of positive weight must be
    defined (else ``ValueError`` naming the row, counted from ``first_row``).
    """
    rows = np.arange(scores.shape[0])
    m = row_shift(np, scores, axis=1)[:, 0]  # (n,) the max-shift, finite
    z_k = scores[rows, index]  # (n,) true-class scores, read before they are overwritten
    np.subtract(scores, m[:, None], out=scores)
    np.exp(scores, out=scores)
    norm = scores.sum(axis=1, dtype=np.float64)  # (n,) Σ_j exp(z_j − m)
    positive = row_weight > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        log_norm = np.log(norm)
        nll = log_norm - (z_k.astype(np.float64) - m)  # lse − z_k
    defined = np.isfinite(log_norm) | ~positive
    if not defined.all():
        _raise_undefined_row(first_row + int(np.argmin(defined)))
    return nll, norm, positive


def _index_loss_grad_inplace(
    scores: np.ndarray,
    index: np.ndarray,
    row_weight: np.ndarray,
    scale: float = 1.0,
    *,
    first_row: int = 0,
) -> float:
    """The hot-path kernel: class-index loss, with ``scores`` overwritten by its gradient.

    Private because it writes into its argument: ``scores`` is the output buffer.

    For ``scores`` ``(n, C)`` (C-contiguous float32 or float64), class indices ``index``
    ``(n,)`` and per-sample weights ``row_weight`` ``(n,)`` (float64, ≥ 0), returns
    ``Σ_i s_i (lse(z_i) − z_{i k_i})`` as a float64 Python float and leaves
    ``scale · s_i (ŷ_i − e_{k_i})`` in row ``i`` of ``scores``. Exponentials stay in the
    scores' dtype; each row's normaliser and the loss are accumulated in float64. Rows of
    weight ``s_i <= 0`` contribute nothing, to the loss and the gradient alike (callers
    refuse negative weights; this keeps the two consistent), and may hold anything (their
    gradient rows are zeroed). ``first_row`` numbers the rows in error
    messages when ``scores`` is a chunk of a larger batch.

    Runs the compiled kernel of :mod:`crossent._kernel` (one read of each row for its max,
    one for the exponentials and normaliser, one to scale it, while it is in cache) when it
    is built and enabled, else :func:`_numpy_loss_grad_inplace`; the two agree to rounding.
    """
    if scores.shape[0] == 0:
        return 0.0
    if _kernel.available(scores.dtype) and scores.flags.c_contiguous:
        return _compiled_loss_grad(
            scores,
            scores,
            np.ascontiguousarray(index, dtype=np.int64),
            np.ascontiguousarray(row_weight, dtype=np.float64),
            scale,
            first_row,
        )
    return _numpy_loss_grad_inplace(scores, index, row_weight, scale, first_row=first_row)


def _numpy_loss_grad_inplace(
    scores: np.ndarray,
    index: np.ndarray,
    row_weight: np.ndarray,
    scale: float = 1.0,
    *,
    first_row: int = 0,
) -> float:
    """:func:`_index_loss_grad_inplace` in NumPy: the fallback, and the tests' oracle."""
    if scores.shape[0] == 0:
        return 0.0
    nll, norm, positive = _shifted_exp_inplace(scores, index, row_weight, first_row)
    with np.errstate(divide="ignore", invalid="ignore"):
        row_scale = np.where(positive, row_weight * scale / norm, 0.0)
    with np.errstate(invalid="ignore"):  # inf · 0 in rows of weight 0, zeroed below
        scores *= row_scale.astype(scores.dtype)[:, None]
    if not positive.all():
        scores[~positive] = 0.0
    delta = np.where(positive, row_weight * scale, 0.0)  # (n,) s_i · scale, 0 where s_i <= 0
    scores[np.arange(scores.shape[0]), index] -= delta.astype(scores.dtype)
    return float(np.dot(row_weight[positive], nll[positive]))
