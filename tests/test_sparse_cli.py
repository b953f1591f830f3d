"""The command on sparse data (issue #11, item 4): train, evaluate and predict on svmlight
files and sparse ``.npz`` archives written here, checked against references computed
independently: scikit-learn's svmlight reader, SciPy's ``load_npz``, the in-process
classifier on the same split, and plain NumPy/SciPy scores from the model file's arrays.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import dump_svmlight_file, load_svmlight_file
from threadpoolctl import threadpool_limits

from crossent._cli._checkpoint import fingerprint
from crossent.data import Dataset, load_dataset

N_ROWS, N_COLS, N_CLASSES = 90, 40, 3


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):
        yield


def sparse_problem(seed: int = 0) -> tuple[sp.csr_matrix, np.ndarray]:
    """A learnable sparse 3-class problem: each class prefers its own band of columns."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(N_CLASSES), N_ROWS // N_CLASSES)  # (n,)
    dense = sp.random(N_ROWS, N_COLS, density=0.15, random_state=seed).toarray()  # (n, d)
    for i, label in enumerate(y):
        dense[i, 10 * label + rng.integers(0, 10)] = 1.0 + rng.random()
    dense[:, N_COLS - 1] = 0.5  # the last column is present, so every reader counts 40
    return sp.csr_matrix(dense), y


def test_fingerprint_of_sparse_data_sees_values_and_structure() -> None:
    X, y = sparse_problem()
    same = Dataset(X.copy(), y, "a")
    assert fingerprint(same) == fingerprint(Dataset(X.copy(), y, "b"))
    moved = X.copy()
    moved.data[0] += 1.0
    assert fingerprint(Dataset(moved, y, "a")) != fingerprint(same)
    wider = sp.csr_matrix((X.data, X.indices, X.indptr), shape=(N_ROWS, N_COLS + 1))
    assert fingerprint(Dataset(wider, y, "a")) != fingerprint(same)
    assert fingerprint(Dataset(sp.csr_matrix(X.toarray()), y, "a")) == fingerprint(same)


def test_loaded_svmlight_and_npz_are_scikit_learns_and_scipys(tmp_path: Path) -> None:
    X, y = sparse_problem()
    dump_svmlight_file(X, y, str(tmp_path / "d.svm"), zero_based=False)
    sp.save_npz(tmp_path / "d.npz", X)
    from_svm = load_dataset(tmp_path / "d.svm")
    from_npz = load_dataset(tmp_path / "d.npz", require_labels=False)
    reference, _ = load_svmlight_file(str(tmp_path / "d.svm"), zero_based=False)
    assert (from_svm.X != reference).nnz == 0 and from_svm.X.shape == reference.shape
    assert (from_npz.X != sp.load_npz(tmp_path / "d.npz")).nnz == 0
