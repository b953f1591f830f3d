"""The command on sparse data (issue #11, item 4): train, evaluate and predict on svmlight
files and sparse ``.npz`` archives written here, checked against references computed
independently: scikit-learn's svmlight reader, SciPy's ``load_npz``, the in-process
classifier on the same split, and plain NumPy/SciPy scores from the model file's arrays.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.numpy
import scipy.sparse as sp
from safetensors import safe_open
from sklearn.datasets import dump_svmlight_file, load_svmlight_file
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

from _hostile import run_cli
from crossent import SoftmaxClassifier
from crossent._cli import _train
from crossent._cli._checkpoint import fingerprint
from crossent._cli._model import load_classifier
from crossent.data import Dataset

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


def scores(model: Path, X: sp.csr_matrix) -> np.ndarray:
    """``X W^T + b`` from the model file's arrays, with SciPy: the reference."""
    loaded = load_classifier(model)
    clf = loaded.classifier
    return np.asarray(X @ clf.coef_.T) + clf.intercept_  # (n, C)


def cli(*argv: str) -> str:
    code, out, err = run_cli(list(argv))
    assert code == 0, err
    return out


def read_csv(text: str) -> list[str]:
    return text.splitlines()[1:]


@pytest.fixture(scope="module")
def svm_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, sp.csr_matrix]:
    """``crossent train`` on a one-based svmlight file: (folder, data file, X)."""
    folder = tmp_path_factory.mktemp("svm")
    X, y = sparse_problem()
    data = folder / "train.svm"
    dump_svmlight_file(X, y, str(data), zero_based=False)
    cli("train", "--data", str(data), "--out", str(folder / "out"), "--quiet", "--tol", "1e-8")
    return folder, data, X


def test_train_matches_the_in_process_classifier_on_the_same_split(svm_run) -> None:
    folder, data, _ = svm_run
    X, y = load_svmlight_file(str(data), zero_based=False)  # the independent reader
    X_train, _, y_train, _ = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
    assert sp.issparse(X_train)
    reference = SoftmaxClassifier(l2=1.0, tol=1e-8, max_iter=1000).fit(X_train, y_train)
    model = load_classifier(folder / "out" / "model.safetensors")
    np.testing.assert_allclose(model.classifier.coef_, reference.coef_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(model.classifier.intercept_, reference.intercept_, atol=1e-10)
    assert model.metadata["index_base"] == 1
    assert model.metadata["preprocessing"] == {"standardize": False}
    assert model.n_features == N_COLS


def test_predict_and_proba_equal_scipy_scores_from_the_model_arrays(svm_run) -> None:
    folder, data, X = svm_run
    model = folder / "out" / "model.safetensors"
    labels = read_csv(cli("predict", "--model", str(model), "--data", str(data)))
    expected = scores(model, X).argmax(axis=1)  # (n,)
    assert labels == [str(k) for k in expected]
    proba_csv = cli("predict", "--model", str(model), "--data", str(data), "--proba")
    proba = np.array([[float(v) for v in row.split(",")] for row in read_csv(proba_csv)])
    z = scores(model, X)
    reference = np.exp(z - z.max(axis=1, keepdims=True))
    reference /= reference.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(proba, reference, rtol=1e-12, atol=1e-15)


def test_predict_pads_a_file_with_fewer_columns(svm_run, tmp_path: Path) -> None:
    folder, _, X = svm_run
    model = folder / "out" / "model.safetensors"
    narrow = X[:, :25]  # (n, 25): the file's largest index is at most 25
    data = tmp_path / "narrow.svm"
    dump_svmlight_file(narrow, np.zeros(N_ROWS), str(data), zero_based=False)
    labels = read_csv(cli("predict", "--model", str(model), "--data", str(data)))
    padded = sp.hstack([narrow, sp.csr_matrix((N_ROWS, N_COLS - 25))]).tocsr()  # (n, 40)
    assert labels == [str(k) for k in scores(model, padded).argmax(axis=1)]


def test_evaluate_on_svmlight(svm_run) -> None:
    folder, data, X = svm_run
    model = folder / "out" / "model.safetensors"
    out = cli("evaluate", "--model", str(model), "--data", str(data), "--json")
    metrics = json.loads(out)["metrics"]
    _, y = load_svmlight_file(str(data), zero_based=False)
    z = scores(model, X)
    lse = np.log(np.exp(z - z.max(axis=1, keepdims=True)).sum(axis=1)) + z.max(axis=1)
    cross_entropy = float(np.mean(lse - z[np.arange(N_ROWS), y.astype(int)]))
    assert metrics["accuracy"] == pytest.approx(np.mean(z.argmax(axis=1) == y), abs=1e-15)
    assert metrics["cross_entropy"] == pytest.approx(cross_entropy, rel=1e-10)


def test_report_lists_numbered_top_features_and_no_templates(svm_run) -> None:
    folder, _, _ = svm_run
    report = (folder / "out" / "report.html").read_text(encoding="utf-8")
    assert 'id="top-features"' in report and 'id="templates"' not in report
    model = load_classifier(folder / "out" / "model.safetensors")
    best = int(np.argmax(model.classifier.coef_[0]))
    assert f"<td>feature {best + 1} (" in report  # one-based, as the file numbers it


def test_zero_based_model_reads_predict_files_zero_based(tmp_path: Path) -> None:
    """A predict file without index 0 would be read one-based by guessing; the model's
    recorded base keeps column j at index j."""
    X, y = sparse_problem(1)
    dense = X.toarray()
    dense[:, 0] = 1.0  # the training file holds index 0
    X = sp.csr_matrix(dense)
    data = tmp_path / "zero.svm"
    dump_svmlight_file(X, y, str(data), zero_based=True)
    cli("train", "--data", str(data), "--out", str(tmp_path / "out"), "--quiet")
    model = tmp_path / "out" / "model.safetensors"
    assert load_classifier(model).metadata["index_base"] == 0
    first_rows = X[:5].toarray()
    first_rows[:, 0] = 0.0  # no index 0 in this file
    later = sp.csr_matrix(first_rows)
    dump_svmlight_file(later, y[:5], str(tmp_path / "later.svm"), zero_based=True)
    labels = read_csv(cli("predict", "--model", str(model), "--data", str(tmp_path / "later.svm")))
    assert labels == [str(k) for k in scores(model, later).argmax(axis=1)]


def test_sparse_npz_with_feature_names_and_labels_file(tmp_path: Path) -> None:
    X, y = sparse_problem(2)
    sp.save_npz(tmp_path / "x.npz", X.tocsc())  # CSC: converted to CSR once
    np.save(tmp_path / "y.npy", y)
    argv = ["train", "--data", str(tmp_path / "x.npz"), "--labels", str(tmp_path / "y.npy")]
    cli(*argv, "--out", str(tmp_path / "a"), "--quiet")
    with np.load(tmp_path / "x.npz", allow_pickle=False) as npz:
        arrays = dict(npz)
    names = np.array([f"term{j}" for j in range(N_COLS)])
    np.savez(tmp_path / "named.npz", **arrays, y=y, feature_names=names)
    cli("train", "--data", str(tmp_path / "named.npz"), "--out", str(tmp_path / "b"), "--quiet")
    a = load_classifier(tmp_path / "a" / "model.safetensors")
    b = load_classifier(tmp_path / "b" / "model.safetensors")
    np.testing.assert_array_equal(a.classifier.coef_, b.classifier.coef_)  # the same data
    assert b.metadata["feature_names"] == names.tolist() and a.metadata["index_base"] is None
    report = (tmp_path / "b" / "report.html").read_text(encoding="utf-8")
    best = int(np.argmax(b.classifier.coef_[2]))
    assert f"<td>term{best} (" in report
    named_model = tmp_path / "b" / "model.safetensors"
    argv = ["predict", "--model", str(named_model), "--data", str(tmp_path / "x.npz")]
    labels = read_csv(cli(*argv))
    assert labels == [str(k) for k in scores(named_model, X).argmax(axis=1)]


def test_sparse_and_dense_files_train_the_same_model(tmp_path: Path) -> None:
    X, y = sparse_problem(3)
    dump_svmlight_file(X, y, str(tmp_path / "d.svm"), zero_based=True)
    np.savez(tmp_path / "d.npz", X=X.toarray(), y=y)  # (n, d) dense
    for data, out in (("d.svm", "s"), ("d.npz", "d")):
        argv = ["train", "--data", str(tmp_path / data), "--out", str(tmp_path / out)]
        cli(*argv, "--quiet", "--no-standardize", "--tol", "1e-10")
    sparse = load_classifier(tmp_path / "s" / "model.safetensors").classifier
    dense = load_classifier(tmp_path / "d" / "model.safetensors").classifier
    np.testing.assert_allclose(sparse.coef_, dense.coef_, rtol=0, atol=1e-8)
    np.testing.assert_allclose(sparse.intercept_, dense.intercept_, rtol=0, atol=1e-8)


@pytest.mark.parametrize("older", [False, True], ids=["checkpoint", "older-checkpoint"])
def test_json_summary_and_resume_on_svmlight(
    svm_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, older: bool
) -> None:
    """A checkpointed run on sparse data resumes (the fingerprint hashes the CSR arrays),
    also from a checkpoint written before ``--zero-based`` existed (no such option)."""
    _, data, _ = svm_run
    out = tmp_path / "run"
    real = _train._Monitor.__call__

    def stop(self: Any, progress: Any) -> bool:
        result = real(self, progress)
        if self.iteration == 3:
            raise KeyboardInterrupt
        return result

    with monkeypatch.context() as patch:
        patch.setattr(_train._Monitor, "__call__", stop)
        argv = ["train", "--data", str(data), "--out", str(out), "--checkpoint-every", "1"]
        code, _, _ = run_cli([*argv, "--quiet", "--tol", "0"])
    checkpoint = out / "checkpoint.safetensors"
    assert code == 130 and checkpoint.exists()
    if older:
        with safe_open(str(checkpoint), framework="np") as f:
            header = dict(f.metadata())
        document = json.loads(header["crossent"])
        del document["options"]["zero_based"]
        header["crossent"] = json.dumps(document)
        tensors = safetensors.numpy.load_file(str(checkpoint))
        checkpoint.write_bytes(safetensors.numpy.save(tensors, metadata=header))
    summary = json.loads(cli("train", "--resume", "--out", str(out), "--json", "--max-iter", "6"))
    assert summary["n_iter"] == 6 and summary["resumed_from_iteration"] == 3
    assert summary["standardize"] is False and summary["n_features"] == N_COLS


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
