"""Sparse ``.npz`` archives written by :func:`scipy.sparse.save_npz` (CSR or CSC).

The arrays ``data``, ``indices``, ``indptr``, ``shape`` and ``format`` are read without
unpickling and with the size checks of :func:`._npz.npz_member`; then every claim is
checked against the arrays really there (``indptr`` against ``shape`` and ``indices``, the
indices against the shape) before the matrix is built. Labels come from an array ``y`` in
the same archive or from a ``.npy`` file (``labels=``); feature names from an optional
string array ``feature_names``.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ._dataset import DataError, Dataset, as_float, fit_columns, label_array, reading
from ._npz import SPARSE_KEYS, npy_claim, npz_member

# A CSC matrix's rows, and any matrix's columns, are not bounded by the arrays stored:
# refuse a claim beyond this (a hostile shape would make the CSR conversion or the
# model's weights allocate from it).
MAX_DIMENSION = 2**31 - 1


def load_sparse_npz(
    archive: zipfile.ZipFile,
    members: dict[str, zipfile.ZipInfo],
    path: Path,
    name: str,
    require_labels: bool,
    labels: str | None,
    n_features: int | None,
) -> Dataset:
    """The CSR matrix, labels and feature names of a sparse ``.npz``."""
    size = path.stat().st_size
    raw = {key: npz_member(archive, members[key], key, name, size) for key in SPARSE_KEYS}
    y = names = None
    if "y" in members:
        if labels is not None:
            raise DataError(f"{name}: holds labels 'y' and labels= gives others; pass one")
        y = npz_member(archive, members["y"], "y", name, size)
    if "feature_names" in members:
        names = npz_member(archive, members["feature_names"], "feature_names", name, size)
    X = _matrix(raw, name)
    if labels is not None:
        y = load_npy_labels(labels)
    if y is None and require_labels:
        raise DataError(
            f"{name}: a sparse matrix without labels (no array 'y')",
            [("labels", "FILE.npy"), ("require_labels", "False")],
        )
    source, what = (name, "array 'y'") if labels is None else (os.fspath(labels), "the labels")
    labels_array = None if y is None else label_array(y, source, what)
    if labels_array is not None and len(labels_array) != X.shape[0]:
        raise DataError(f"{name}: {X.shape[0]} rows but {len(labels_array)} labels (in {source})")
    feature_names = None if names is None else _feature_names(names, name, X.shape[1])
    if n_features is not None and n_features != X.shape[1]:
        X = fit_columns(
            X,
            n_features,
            lambda row, col: (
                f"{name}: row {row} has a value in column {col} (0-based), "
                f"beyond the model's {n_features} features"
            ),
        )
        feature_names = None  # padded columns have no names
    return Dataset(X, labels_array, name, feature_names=feature_names)


def _matrix(raw: dict[str, np.ndarray], name: str) -> sp.csr_matrix:
    """The CSR matrix the arrays describe, each claim checked first."""
    fmt = raw["format"]
    text = fmt.item() if fmt.shape == () and fmt.dtype.kind in "SU" else None
    text = text.decode("ascii", "replace") if isinstance(text, bytes) else text
    if text not in ("csr", "csc"):
        shown = text if text is not None else f"array {fmt!r}"
        raise DataError(
            f"{name}: sparse format {shown} is not supported; "
            "save a CSR or CSC matrix (scipy.sparse.save_npz(file, X.tocsr()))"
        )
    shape = raw["shape"]
    if shape.shape != (2,) or shape.dtype.kind not in "iu":
        raise DataError(f"{name}: array 'shape' must be 2 integers, got {shape!r}")
    n_rows, n_cols = (int(s) for s in shape)
    if not (0 < n_rows <= MAX_DIMENSION and 0 < n_cols <= MAX_DIMENSION):
        raise DataError(
            f"{name}: array 'shape' claims {n_rows} × {n_cols}; each must be from 1 to "
            f"{MAX_DIMENSION}"
        )
    major, minor = (n_rows, n_cols) if text == "csr" else (n_cols, n_rows)
    indptr, indices, data = raw["indptr"], raw["indices"], raw["data"]
    for key, arr, kinds in (("indptr", indptr, "iu"), ("indices", indices, "iu"),
                            ("data", data, "biuf")):  # fmt: skip
        if arr.ndim != 1 or arr.dtype.kind not in kinds:
            what = "integers" if kinds == "iu" else "numbers"
            raise DataError(
                f"{name}: array {key!r} must be 1-D {what}, got {arr.dtype} {arr.shape}"
            )
    what = "rows" if text == "csr" else "columns"
    if len(indptr) != major + 1:
        raise DataError(
            f"{name}: array 'shape' claims {major} {what}, so 'indptr' needs {major + 1} "
            f"entries; it has {len(indptr)}"
        )
    if indptr[0] != 0 or np.any(np.diff(indptr) < 0):
        raise DataError(f"{name}: array 'indptr' must start at 0 and never decrease")
    if int(indptr[-1]) != len(indices) or len(indices) != len(data):
        raise DataError(
            f"{name}: 'indptr' ends at {int(indptr[-1])}, but 'indices' has {len(indices)} "
            f"and 'data' {len(data)} entries; they must agree"
        )
    if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= minor):
        bad = int(indices[(indices < 0) | (indices >= minor)][0])
        raise DataError(
            f"{name}: array 'indices' holds {bad}, outside 0 to {minor - 1} "
            f"(the {'columns' if text == 'csr' else 'rows'} that 'shape' claims)"
        )
    values = data if data.dtype in (np.float32, np.float64) else as_float(data)
    parts = (values, _index_array(indices), _index_array(indptr))
    matrix = sp.csr_matrix(parts, shape=(n_rows, n_cols), copy=False) if text == "csr" else None
    if matrix is None:
        matrix = sp.csc_matrix(parts, shape=(n_rows, n_cols)).tocsr()
    matrix.sum_duplicates()  # sorted, unique indices (duplicates add, as scipy does)
    return matrix


def _index_array(arr: np.ndarray) -> np.ndarray:
    """int32 or int64 indices as they are (no copy); other integer types as int64."""
    if arr.dtype in (np.int32, np.int64) and arr.dtype.isnative:
        return arr
    return arr.astype(np.int64)


def _feature_names(names: np.ndarray, name: str, n_cols: int) -> list[str]:
    if names.ndim != 1 or names.dtype.kind not in "SU" or len(names) != n_cols:
        raise DataError(
            f"{name}: array 'feature_names' must be {n_cols} strings, one per column, got "
            f"{names.dtype} {names.shape}"
        )
    if names.dtype.kind == "S":
        try:
            names = np.char.decode(names, "utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{name}: array 'feature_names' is not UTF-8") from None
    return [str(n) for n in names.tolist()]


def load_npy_labels(labels: str | os.PathLike[str]) -> np.ndarray:
    """A 1-D labels array from a ``.npy`` file, its header checked against its size and
    read without unpickling."""
    label_name = os.fspath(labels)
    with reading(label_name):
        size = os.stat(label_name).st_size
        with open(label_name, "rb") as f:
            try:
                npy_claim(
                    f,
                    label_name,
                    size,
                    "the file",
                    f"{label_name}: an object array; crossent never unpickles",
                )
            except DataError:
                raise
            except ValueError as exc:
                raise DataError(f"{label_name}: not a .npy file ({exc})") from None
            f.seek(0)
            arr: Any = np.load(f, allow_pickle=False)
    return np.asarray(arr)
