"""Hostile sparse inputs of the command (issue #11, item 4): svmlight files and sparse
``.npz`` archives that are malformed, lie about their size, or do not fit the model.

Every case is one refusal checked by :func:`_hostile.expect_refusal`: exit 1, one error
line naming the file (and the line, index or array at fault), no traceback, and the folder
unchanged. The model files are written here by hand with
:func:`crossent.model_io.save_model`, so that these refusals need no training.
"""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from _hostile import expect_refusal
from crossent._cli import _train
from crossent.model_io import save_model

N_FEATURES = 5  # the hand-made model's columns


def write_model(folder: Path, *, index_base: int | None = 1, standardize: bool = False) -> Path:
    """A valid 3-class model of ``N_FEATURES`` features, as ``crossent train`` writes it."""
    rng = np.random.default_rng(0)
    arrays = {"coef": rng.normal(size=(3, N_FEATURES)), "intercept": np.zeros(3)}
    if standardize:
        arrays |= {"mean": np.zeros(N_FEATURES), "scale": np.ones(N_FEATURES)}
    metadata = {
        "kind": "crossent-softmax-classifier",
        "classes": [0, 1, 2],
        "n_features": N_FEATURES,
        "image_shape": None,
        "feature_names": None,
        "label_column": None,
        "index_base": index_base,
        "preprocessing": {"standardize": standardize},
    }
    path = folder / ("std.safetensors" if standardize else "model.safetensors")
    save_model(path, arrays, metadata)
    return path


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def sparse_arrays(n_rows: int = 4, n_cols: int = 6) -> dict[str, np.ndarray]:
    """The arrays :func:`scipy.sparse.save_npz` writes for a small CSR matrix, plus y."""
    X = sp.csr_matrix(np.arange(n_rows * n_cols, dtype=float).reshape(n_rows, n_cols) % 3)
    return {
        "data": X.data,
        "indices": X.indices,
        "indptr": X.indptr,
        "shape": np.array(X.shape),
        "format": np.array(b"csr"),
        "y": np.arange(n_rows) % 2,
    }


def train(tmp_path: Path, data: str, *extra: str) -> list[str]:
    return ["train", "--data", data, "--out", str(tmp_path / "out"), "--quiet", *extra]


# --------------------------------------------------------------------------- svmlight


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("1 1:1\n0 2:1\n1 3 4\n", ["line 3", "'3' is not index:value"]),
        ("1 1:1\n# comment\n\n0 -2:1\n", ["line 4", "feature index -2 is negative"]),
        ("1 1:1\n0 2:abc\n", ["line 2", "value 'abc' of feature 2 is not a number"]),
        ("1 1:1\n0 2:nan\n", ["line 2", "nan", "finite"]),
        ("1 1:1\n0 1:-inf\n", ["line 2", "-inf", "finite"]),
        ("1 1:1\n0.5 2:1\n", ["line 2", "label 0.5", "integers"]),
        ("1 2:1 1:1\n0 2:1\n", ["line 1", "feature index 1 follows 2"]),
        ("1 1:1\n0 99999999999:1\n", ["line 2", "99999999999"]),
        ("# nothing but comments\n\n", ["no samples"]),
    ],
)
def test_svmlight_fault_names_file_and_line(tmp_path: Path, text: str, named: list[str]) -> None:
    data = write(tmp_path / "bad.svm", text)
    expect_refusal(train(tmp_path, data), names=[data, *named], folder=tmp_path)


def test_svmlight_empty_file(tmp_path: Path) -> None:
    data = write(tmp_path / "empty.libsvm", "")
    expect_refusal(train(tmp_path, data), names=[data, "empty"], folder=tmp_path)


def test_index_0_read_as_one_based_names_the_option(tmp_path: Path) -> None:
    data = write(tmp_path / "z.svm", "1 1:1\n0 0:1\n")
    argv = train(tmp_path, data, "--no-zero-based")
    expect_refusal(argv, names=[data, "line 2", "index 0", "--zero-based"], folder=tmp_path)


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_feature_index_beyond_the_models(tmp_path: Path, command: str) -> None:
    model = write_model(tmp_path)
    data = write(tmp_path / "wide.svm", "1 1:1\n2 2:1 5:1\n0 3:1 6:2\n")
    argv = [command, "--model", str(model), "--data", data]
    argv += ["--output", str(tmp_path / "p.csv")] if command == "predict" else []
    named = [data, "line 3", "feature index 6", "model's 5 features", "indices 1 to 5"]
    expect_refusal(argv, names=named, folder=tmp_path)


def test_feature_index_beyond_the_models_zero_based(tmp_path: Path) -> None:
    model = write_model(tmp_path, index_base=0)
    data = write(tmp_path / "wide.svm", "1 1:1\n2 5:1\n")  # zero-based, as the model: 5 > 4
    argv = ["predict", "--model", str(model), "--data", data]
    expect_refusal(argv, names=[data, "line 2", "feature index 5", "indices 0 to 4"])


def test_standardized_model_refuses_sparse_data(tmp_path: Path) -> None:
    model = write_model(tmp_path, standardize=True)
    data = write(tmp_path / "d.svm", "1 1:1\n2 2:1\n")
    argv = ["predict", "--model", str(model), "--data", data, "--output", str(tmp_path / "o.csv")]
    expect_refusal(argv, names=[str(model), "dense"], folder=tmp_path)


def test_standardize_refused_for_sparse_data(tmp_path: Path) -> None:
    data = write(tmp_path / "d.svm", "1 1:1\n2 2:1\n1 1:2\n2 2:2\n")
    argv = train(tmp_path, data, "--standardize")
    expect_refusal(argv, names=[data, "--standardize", "sparse"], folder=tmp_path)


def test_zero_based_does_not_apply_to_csv(tmp_path: Path) -> None:
    data = write(tmp_path / "d.csv", "a,label\n1,0\n2,1\n")
    argv = train(tmp_path, data, "--zero-based")
    expect_refusal(argv, names=[data, "--zero-based", "CSV"], folder=tmp_path)


# --------------------------------------------------------------------------- sparse .npz


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"indptr": np.array([0, 2, 1, 4, 6])}, ["'indptr'", "never decrease"]),
        ({"indptr": np.array([0, 2, 4])}, ["claims 4 rows", "needs 5", "has 3"]),
        ({"indices": np.array([0, 1, 2, 7])}, ["'indptr' ends at", "'indices' has 4"]),
        ({"shape": np.array([4, 2])}, ["'indices' holds", "outside 0 to 1"]),
        ({"shape": np.array([10**12, 6])}, ["claims 1000000000000", "from 1 to"]),
        ({"shape": np.array([4, 2**40])}, ["claims 4 × 1099511627776"]),
        ({"shape": np.array([4, 6, 1])}, ["'shape' must be 2 integers"]),
        ({"format": np.array(b"coo")}, ["format coo is not supported", "CSR or CSC"]),
        ({"format": np.array(b"bsr")}, ["format bsr"]),
        ({"data": np.array(["a"] * 16)}, ["'data' must be 1-D numbers"]),
        ({"y": np.arange(3)}, ["4 rows but 3 labels"]),
    ],
    ids=lambda v: str(v)[:20],
)
def test_inconsistent_sparse_npz(tmp_path: Path, change: dict, named: list[str]) -> None:
    arrays = sparse_arrays() | change
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    expect_refusal(train(tmp_path, str(path)), names=[str(path), *named], folder=tmp_path)


def test_nan_in_sparse_npz_names_row_and_column(tmp_path: Path) -> None:
    arrays = sparse_arrays()
    arrays["data"] = arrays["data"].copy()
    arrays["data"][5] = np.inf
    path = tmp_path / "inf.npz"
    np.savez(path, **arrays)
    expect_refusal(train(tmp_path, str(path)), names=[str(path), "inf", "finite"], folder=tmp_path)


def test_sparse_npz_member_that_lies_about_its_size(tmp_path: Path) -> None:
    """An ``indptr.npy`` header claiming 2**40 entries in a few bytes: refused unread."""
    arrays = sparse_arrays()
    path = tmp_path / "lie.npz"
    np.savez(path, **{k: v for k, v in arrays.items() if k != "indptr"})
    header = np.lib.format.header_data_from_array_1_0(arrays["indptr"])
    header["shape"] = (2**40,)
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("indptr.npy", buffer.getvalue() + arrays["indptr"].tobytes())
    expect_refusal(train(tmp_path, str(path)), names=[str(path), "'indptr'"], folder=tmp_path)


def test_sparse_npz_without_labels_asks_for_them(tmp_path: Path) -> None:
    arrays = sparse_arrays()
    del arrays["y"]
    path = tmp_path / "x.npz"
    np.savez(path, **arrays)
    named = [str(path), "train needs labels", "--labels FILE.npy"]
    expect_refusal(train(tmp_path, str(path)), names=named, folder=tmp_path)


@pytest.mark.parametrize(
    ("labels", "named"),
    [
        (np.arange(3), ["4 rows but 3 labels"]),
        (np.zeros((4, 2)), ["must be 1-D"]),
        (np.array([0.5, 1, 0, 1]), ["0.5", "labels must be integers"]),
    ],
)
def test_bad_labels_file(tmp_path: Path, labels: np.ndarray, named: list[str]) -> None:
    arrays = sparse_arrays()
    del arrays["y"]
    np.savez(tmp_path / "x.npz", **arrays)
    np.save(tmp_path / "y.npy", labels)
    argv = train(tmp_path, str(tmp_path / "x.npz"), "--labels", str(tmp_path / "y.npy"))
    expect_refusal(argv, names=named, folder=tmp_path)


def test_labels_file_that_lies_about_its_size(tmp_path: Path) -> None:
    arrays = sparse_arrays()
    del arrays["y"]
    np.savez(tmp_path / "x.npz", **arrays)
    labels = tmp_path / "y.npy"
    np.save(labels, np.arange(4))
    labels.write_bytes(labels.read_bytes()[:-8])  # one label short of the header's 4
    argv = train(tmp_path, str(tmp_path / "x.npz"), "--labels", str(labels))
    expect_refusal(argv, names=[str(labels), "header says shape (4,)"], folder=tmp_path)


def test_labels_option_does_not_apply_to_a_dense_npz(tmp_path: Path) -> None:
    path = tmp_path / "dense.npz"
    np.savez(path, X=np.eye(4), y=np.arange(4) % 2)
    np.save(tmp_path / "y.npy", np.arange(4) % 2)
    argv = train(tmp_path, str(path), "--labels", str(tmp_path / "y.npy"))
    expect_refusal(argv, names=[str(path), "--labels", "dense .npz"], folder=tmp_path)


def test_sparse_npz_beyond_the_models_columns(tmp_path: Path) -> None:
    model = write_model(tmp_path)
    path = tmp_path / "wide.npz"
    np.savez(path, **sparse_arrays(n_cols=7))
    argv = ["evaluate", "--model", str(model), "--data", str(path)]
    expect_refusal(argv, names=[str(path), "column 5", "model's 5 features"], folder=tmp_path)


def test_weights_beyond_memory_refused_before_allocating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sparse file's column count is not bounded by its bytes: 10**8 columns fit in a
    few bytes, their (C, d) weights do not fit in the (pretended) 1 GiB machine."""
    monkeypatch.setattr(_train, "_physical_memory", lambda: 2**30)
    data = write(tmp_path / "wide.svm", "1 1:1\n2 2:1\n1 100000000:1\n2 3:1\n")
    named = [data, "100000000 features × 2 classes", "1.5 GiB per weight matrix"]
    expect_refusal(train(tmp_path, data), names=named, folder=tmp_path)


def test_truncated_gzipped_svmlight(tmp_path: Path) -> None:
    whole = gzip.compress(b"1 1:1\n2 2:1\n" * 50)
    path = tmp_path / "cut.svm.gz"
    path.write_bytes(whole[: len(whole) // 2])
    argv = train(tmp_path, str(path))
    expect_refusal(argv, names=[str(path), "corrupted or truncated gzip"], folder=tmp_path)


@pytest.mark.parametrize("option", ["--labels", "--label-column"])
def test_options_that_do_not_apply_to_svmlight(tmp_path: Path, option: str) -> None:
    data = write(tmp_path / "d.svm", "1 1:1\n2 2:1\n")
    argv = train(tmp_path, data, option, "y")
    expect_refusal(argv, names=[data, option, "does not apply to an svmlight file"])


def test_binary_svmlight_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bin.svm"
    path.write_bytes(b"1 1:1\n\xff\xfe 1:1\n")
    argv = train(tmp_path, str(path))
    expect_refusal(argv, names=[str(path), "line 2", "is not a number"], folder=tmp_path)
