"""The softmax, its log, and the log-sum-exp normaliser, all shifted by the row maximum.

.. math::

    \\hat y_i = \\frac{e^{z_i}}{\\sum_j e^{z_j}}
              = \\frac{e^{z_i - m}}{\\sum_j e^{z_j - m}}, \\qquad m = \\max_j z_j .

The shift changes nothing mathematically and keeps every ``exp`` in ``[0, 1]``, so logits of
``±1e4`` neither overflow nor underflow. The normaliser ``Σ_j e^{z_j − m}`` is accumulated in
float64 whatever the input dtype; results come back in the input dtype.

Masked classes (logits of ``-inf``) get probability 0. A row whose logits are all ``-inf``
has ``logsumexp = -inf`` and no distribution: its ``softmax`` and ``log_softmax`` are NaN, as
in SciPy and PyTorch. A row with a ``+inf`` or NaN logit has a NaN ``softmax``; its
``log_softmax`` is NaN there too except ``-inf`` for the finite logits beside a ``+inf``
(both as SciPy computes them).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from crossent._array import Array, check_axis, check_floating, namespace, stop_gradient

__all__ = ["log_softmax", "logsumexp", "softmax"]


def _check_axis(z: Array, axis: int) -> None:
    check_axis(axis)
    if z.ndim == 0:
        raise ValueError("logits must have at least one dimension (the classes), got a scalar")
    if not -z.ndim <= axis < z.ndim:
        raise ValueError(f"axis {axis} is out of range for logits with {z.ndim} dimension(s)")


def row_shift(xp: Any, z: Array, axis: int = -1) -> Array:
    """The shift ``m`` of the max-shift: the maximum along ``axis``, keeping dims.

    Replaced by 0 where it is not finite (an all ``-inf`` row, a ``+inf`` or NaN entry) and
    for an empty ``axis`` (no classes), and cut from any autograd graph (the shift is a
    constant). This is the one home of the shift: :func:`shifted_logits` and the in-place
    loss kernel of :mod:`crossent.loss` both take ``m`` from here.
    """
    if z.shape[axis] == 0:  # no classes: max() of nothing is undefined, the shift is 0
        return stop_gradient(xp.sum(z, axis=axis, keepdims=True))
    m = stop_gradient(xp.max(z, axis=axis, keepdims=True))
    return xp.where(xp.isfinite(m), m, xp.zeros_like(m))


def shifted_logits(xp: Any, z: Array, axis: int = -1) -> tuple[Array, Array, Array]:
    """Return ``(z − m, m, log Σ_j e^{z_j − m})`` along ``axis``, keeping dims.

    ``m`` comes from :func:`row_shift`; ``z − m`` is in ``z``'s dtype; the log of the
    normaliser is float64 (``-inf`` for an empty ``axis``). Everything in crossent that needs
    a normaliser calls this.
    """
    m = row_shift(xp, z, axis)
    shifted = z - m  # (..., C) in z's dtype
    with np.errstate(divide="ignore"):  # an all -inf row has Σ = 0 and log Σ = -inf
        log_norm = xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True, dtype=xp.float64))
    return shifted, m, log_norm


def widened(xp: Any, z: Array) -> Array:
    """``z`` itself in float32 or float64; half precision (float16, bfloat16) as float32.

    Half-precision logits are computed on in float32 and the results rounded back once: a
    float16 ``z − m`` or normaliser ``Σ_j e^{z_j − m}`` (which overflows past 65,504 classes)
    would be worse than the naive computation.
    """
    if z.dtype in (xp.float32, xp.float64):
        return z
    return xp.astype(z, xp.float32)


def _nan_where_undefined(xp: Any, values: Array, log_norm: Array) -> Array:
    """NaN rows where the normaliser is +inf or NaN (a +inf or NaN logit), as SciPy does."""
    undefined = ~(log_norm < np.inf)
    return xp.where(undefined, xp.full_like(values, np.nan), values)


def logsumexp(z: Array, *, axis: int = -1, keepdims: bool = False) -> Array:
    """Log-sum-exp :math:`\\log \\sum_j e^{z_j}` along ``axis``, without overflow.

    Parameters
    ----------
    z : array_like, shape ``(..., n_classes)``
        Logits (floating dtype).
    axis : int, default -1
        The class axis.
    keepdims : bool, default False
        Keep ``axis`` as a dimension of size 1.

    Returns
    -------
    array
        In ``z``'s dtype; ``-inf`` for a row of all ``-inf``.

    Examples
    --------
    >>> import numpy as np
    >>> from crossent import logsumexp
    >>> round(float(logsumexp(np.array([1e4, 1e4]))), 6)  # 1e4 + log 2, no overflow
    10000.693147
    """
    xp, (z,) = namespace(z)
    check_floating(xp, z, "logits")
    _check_axis(z, axis)
    _, m, log_norm = shifted_logits(xp, widened(xp, z), axis)
    lse = xp.astype(m, xp.float64) + log_norm
    if not keepdims:
        lse = xp.squeeze(lse, axis=axis)
    return xp.astype(lse, z.dtype)


def softmax(z: Array, *, axis: int = -1) -> Array:
    """Softmax :math:`\\hat y_i = e^{z_i} / \\sum_j e^{z_j}` along ``axis``.

    Parameters
    ----------
    z : array_like, shape ``(..., n_classes)``
        Logits (floating dtype); ``-inf`` marks a masked class.
    axis : int, default -1
        The class axis.

    Returns
    -------
    array, shape ``z.shape``
        Probabilities in ``z``'s dtype, summing to 1 along ``axis``.

    Examples
    --------
    >>> import numpy as np
    >>> from crossent import softmax
    >>> softmax(np.array([0.0, np.log(3.0), -np.inf]))
    array([0.25, 0.75, 0.  ])
    """
    xp, (z,) = namespace(z)
    check_floating(xp, z, "logits")
    _check_axis(z, axis)
    shifted, _, log_norm = shifted_logits(xp, widened(xp, z), axis)
    # exp(z − lse), never e / Σ e: the normaliser may be beyond the dtype's range
    with np.errstate(invalid="ignore"):  # an all -inf row is NaN, as documented
        probs = xp.exp(shifted - xp.astype(log_norm, shifted.dtype))
    return _nan_where_undefined(xp, xp.astype(probs, z.dtype), log_norm)


def log_softmax(z: Array, *, axis: int = -1) -> Array:
    """Log-softmax :math:`\\log \\hat y_i = z_i - \\log \\sum_j e^{z_j}` along ``axis``.

    Computed as ``(z − m) − log Σ_j e^{z_j − m}``, never as ``log(softmax(z))``, so it stays
    finite for probabilities far below the smallest float.

    Parameters
    ----------
    z : array_like, shape ``(..., n_classes)``
        Logits (floating dtype).
    axis : int, default -1
        The class axis.

    Returns
    -------
    array, shape ``z.shape``
        Log-probabilities in ``z``'s dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from crossent import log_softmax
    >>> log_softmax(np.array([0.0, -1000.0]))  # softmax would underflow to 0 here
    array([    0., -1000.])
    """
    xp, (z,) = namespace(z)
    check_floating(xp, z, "logits")
    _check_axis(z, axis)
    shifted, _, log_norm = shifted_logits(xp, widened(xp, z), axis)
    with np.errstate(invalid="ignore"):
        return xp.astype(shifted - xp.astype(log_norm, shifted.dtype), z.dtype)
