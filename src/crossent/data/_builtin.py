"""The built-in data set: scikit-learn's 8×8 digits."""

from __future__ import annotations

import numpy as np

from ._dataset import Dataset


def load_digits() -> Dataset:
    """scikit-learn's digits: ``X`` (1797, 64) float32 = pixel / 16, ``y`` int64 0 to 9."""
    from sklearn.datasets import load_digits as sklearn_load_digits

    bunch = sklearn_load_digits()
    X = (bunch.data / 16).astype(np.float32)  # (1797, 64), k/16 is exact
    return Dataset(X, bunch.target.astype(np.int64), "digits", (8, 8))
