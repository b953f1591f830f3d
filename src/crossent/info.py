"""Entropy, cross-entropy and Kullback-Leibler divergence of discrete distributions.

The three quantities of the derivation, batched along ``axis``:

.. math::

    H(P) = -\\sum_x p(x) \\log p(x), \\qquad
    H(P, Q) = -\\sum_x p(x) \\log q(x), \\qquad
    KL(P \\| Q) = \\sum_x p(x) \\log \\frac{p(x)}{q(x)},

so that :math:`H(P, Q) = H(P) + KL(P \\| Q)`.

Conventions: natural logarithms unless ``base`` is given (``base=2`` gives bits);
``0 · log 0 = 0``; ``p > 0`` with ``q = 0`` gives ``+inf`` (never NaN). KL is summed term by
term in SciPy's ``rel_entr`` form ``p · log(p / q)``, so ``KL(p ‖ p)`` is exactly 0 and the
identity holds to rounding.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np
from array_api_compat import is_array_api_obj

from crossent._array import Array, check_axis, check_probabilities, namespace

__all__ = ["cross_entropy", "entropy", "kl_divergence"]


def _log_base(base: float | None) -> float:
    """``log(base)`` (1 for None); any real number type, NumPy scalars too."""
    if base is None:
        return 1.0
    value = float(base) if isinstance(base, Real) and not isinstance(base, bool) else math.nan
    if not (math.isfinite(value) and value > 0 and value != 1):
        raise ValueError(f"base must be a positive finite number other than 1, got {base!r}")
    return math.log(value)


def _prepare(
    arrays: tuple[Array, ...],
    names: tuple[str, ...],
    axis: int,
    validate: bool,
    tol: float | None,
    base: float | None,
):
    """``(xp, arrays, log(base))``, every argument checked."""
    scale = _log_base(base)  # checked before any work
    axis = check_axis(axis)
    arrays = tuple(a if is_array_api_obj(a) else np.asarray(a, dtype=np.float64) for a in arrays)
    xp, arrs = namespace(*arrays)
    for a, name in zip(arrs, names, strict=True):
        if a.ndim == 0:
            raise ValueError(
                f"{name} must have at least one dimension (the outcomes), got a scalar"
            )
        if not -a.ndim <= axis < a.ndim:
            raise ValueError(f"axis {axis} is out of range for {name} with {a.ndim} dimension(s)")
        if validate:
            check_probabilities(xp, a, name, axis=axis, tol=tol)
        elif not xp.isdtype(a.dtype, "real floating"):
            raise TypeError(f"{name} must have a real floating dtype, got {a.dtype}")
    if len(arrs) == 2:
        p, q = arrs
        if p.shape[axis] != q.shape[axis]:
            raise ValueError(
                f"p and q must have the same number of outcomes along axis {axis}: "
                f"{p.shape[axis]} != {q.shape[axis]} (shapes {tuple(p.shape)} and {tuple(q.shape)})"
            )
        try:
            np.broadcast_shapes(tuple(p.shape), tuple(q.shape))
        except ValueError:
            raise ValueError(
                f"p and q shapes do not broadcast: {tuple(p.shape)} and {tuple(q.shape)}"
            ) from None
    return xp, arrs, scale


def entropy(
    p: Array, *, axis: int = -1, base: float | None = None, validate: bool = True, tol=None
) -> Array:
    """Shannon entropy :math:`H(P) = -\\sum_x p(x) \\log p(x)` along ``axis``.

    Parameters
    ----------
    p : array_like, shape ``(..., n_outcomes)``
        Probability vectors along ``axis``.
    axis : int, default -1
        The axis of the outcomes; the others are batch axes.
    base : float, optional
        Logarithm base; natural logarithm (nats) by default, 2 gives bits.
    validate : bool, default True
        Check that ``p`` is finite, non-negative and sums to 1 (within ``tol``, see
        :func:`crossent._array.check_probabilities`). Pass False to skip the check.
    tol : float, optional
        Tolerance on ``|Σ p − 1|``.

    Returns
    -------
    array, shape ``p.shape`` without ``axis``
        Entropy, in the caller's array type and ``p``'s dtype.

    Examples
    --------
    >>> from crossent import entropy
    >>> float(entropy([0.5, 0.5], base=2))
    1.0
    >>> float(entropy([1.0, 0.0]))  # 0 · log 0 = 0
    0.0
    """
    xp, (p,), log_base = _prepare((p,), ("p",), axis, validate, tol, base)
    positive = p > 0
    plogp = p * xp.log(xp.where(positive, p, xp.ones_like(p)))  # 0 where p = 0
    return xp.sum(plogp, axis=axis) / -log_base + 0.0  # + 0.0: a certain outcome has +0.0


def cross_entropy(
    p: Array,
    q: Array,
    *,
    axis: int = -1,
    base: float | None = None,
    validate: bool = True,
    tol=None,
) -> Array:
    """Cross-entropy :math:`H(P, Q) = -\\sum_x p(x) \\log q(x)` along ``axis``.

    Parameters
    ----------
    p, q : array_like, shape ``(..., n_outcomes)``
        The true and the predicted distributions; their shapes broadcast.
    axis, base, validate, tol
        As in :func:`entropy`.

    Returns
    -------
    array
        ``+inf`` where some ``q(x) = 0`` has ``p(x) > 0``; terms with ``p(x) = 0`` are 0.

    Examples
    --------
    >>> from crossent import cross_entropy
    >>> round(float(cross_entropy([1.0, 0.0], [0.25, 0.75], base=2)), 12)  # -log2(1/4)
    2.0
    """
    xp, (p, q), log_base = _prepare((p, q), ("p", "q"), axis, validate, tol, base)
    positive = p > 0
    q_safe = xp.where(positive & (q > 0), q, xp.ones_like(q))
    terms = xp.where(q > 0, -p * xp.log(q_safe), xp.full_like(q_safe, math.inf))
    terms = xp.where(positive, terms, xp.zeros_like(terms))
    return xp.sum(terms, axis=axis) / log_base + 0.0


def kl_divergence(
    p: Array,
    q: Array,
    *,
    axis: int = -1,
    base: float | None = None,
    validate: bool = True,
    tol=None,
) -> Array:
    """Kullback-Leibler divergence :math:`KL(P \\| Q) = \\sum_x p(x) \\log(p(x) / q(x))`.

    Summed term by term as ``p · log(p / q)`` (SciPy's ``rel_entr``), never as the
    difference of two entropies, so ``KL(p ‖ p) = 0`` exactly and the result is non-negative
    up to rounding.

    Parameters
    ----------
    p, q : array_like, shape ``(..., n_outcomes)``
        The true and the predicted distributions; their shapes broadcast.
    axis, base, validate, tol
        As in :func:`entropy`.

    Returns
    -------
    array
        ``+inf`` where some ``q(x) = 0`` has ``p(x) > 0``.

    Examples
    --------
    >>> from crossent import kl_divergence
    >>> float(kl_divergence([0.2, 0.8], [0.2, 0.8]))
    0.0
    >>> round(float(kl_divergence([0.5, 0.5], [0.25, 0.75], base=2)), 6)
    0.207519
    """
    xp, (p, q), log_base = _prepare((p, q), ("p", "q"), axis, validate, tol, base)
    both = (p > 0) & (q > 0)
    ones = xp.ones_like(p * q)
    p_safe, q_safe = xp.where(both, p, ones), xp.where(both, q, ones)
    with np.errstate(over="ignore", under="ignore"):
        ratio = p_safe / q_safe
    # log(p / q) is the more accurate form; where the ratio over- or underflows
    # (subnormal q or p), log p − log q is finite and exact enough
    in_range = (ratio > 0) & (ratio < math.inf)
    safe_ratio = xp.where(in_range, ratio, ones)
    log_ratio = xp.where(in_range, xp.log(safe_ratio), xp.log(p_safe) - xp.log(q_safe))
    terms = xp.where(both, p * log_ratio, xp.zeros_like(ratio))
    terms = xp.where((p > 0) & (q <= 0), xp.full_like(terms, math.inf), terms)
    return xp.sum(terms, axis=axis) / log_base + 0.0
