"""Weighted feature moments: the one home of the standardisation statistics.

Both the solvers' preconditioner and the command's optional standardisation need each
feature's weighted mean and spread. They are computed in two float64 passes over row
chunks, first the mean and then the squared deviations from it, so that a feature with mean
1e9 and standard deviation 1 keeps its digits (the one-pass ``E[x²] − E[x]²`` loses all of
them) and ``X`` is never copied whole.
"""

from __future__ import annotations

import numpy as np

__all__ = ["feature_moments"]

_CHUNK_ROWS = 1024


def feature_moments(
    X: np.ndarray,
    sample_weight: np.ndarray | None = None,
    *,
    center: bool = True,
    chunk_rows: int = _CHUNK_ROWS,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Weighted means and mean squared deviations of the columns of ``X``.

    .. math::

        \\mu_j = \\frac{1}{S} \\sum_i s_i x_{ij}, \\qquad
        v_j = \\frac{1}{S} \\sum_i s_i (x_{ij} - \\mu_j)^2, \\qquad S = \\sum_i s_i

    Parameters
    ----------
    X : numpy.ndarray of shape ``(n_samples, n_features)``
        Any real dtype; read in float64 chunks of ``chunk_rows`` rows.
    sample_weight : numpy.ndarray of shape ``(n_samples,)``, optional
        Non-negative weights ``s``; ones when omitted.
    center : bool
        With ``False``, ``μ = 0`` and ``v`` is the weighted mean square (no centring).

    Returns
    -------
    mean : numpy.ndarray of shape ``(n_features,)``
        ``μ`` (zeros when ``center`` is false, or when ``S = 0``).
    spread : numpy.ndarray of shape ``(n_features,)``
        ``v ≥ 0`` (zeros when ``S = 0``).
    total : float
        ``S``.

    Examples
    --------
    >>> X = np.array([[1e9 + 1.0], [1e9 - 1.0]])
    >>> mean, spread, total = feature_moments(X)
    >>> float(mean[0]), float(spread[0]), total
    (1000000000.0, 1.0, 2.0)
    """
    n, d = X.shape
    s = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    total = float(s.sum())
    mean = np.zeros(d)
    spread = np.zeros(d)
    if not total > 0:
        return mean, spread, total
    if center:
        for start in range(0, n, chunk_rows):
            chunk = np.asarray(X[start : start + chunk_rows], dtype=np.float64)
            mean += s[start : start + chunk_rows] @ chunk
        mean /= total
    for start in range(0, n, chunk_rows):
        deviations = np.asarray(X[start : start + chunk_rows], dtype=np.float64) - mean
        spread += s[start : start + chunk_rows] @ (deviations * deviations)
    spread /= total
    return mean, spread, total
