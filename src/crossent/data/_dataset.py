"""The :class:`Dataset` every loader returns, :class:`DataError`, and helpers the loaders share."""

from __future__ import annotations

import gzip
import math
import re
import sys
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import scipy.sparse as sp

GZIP_MAGIC = b"\x1f\x8b"
_INT_LABEL = re.compile(r"[+-]?\d+")
_SUMMARY_MAX_CLASSES = 30


class DataError(ValueError):
    """A data file is missing, unreadable or malformed.

    The message is one line naming the file and the fault, e.g.
    ``"train.csv: line 7: column 'x2' has 'abc', which is not a number"``.

    Parameters
    ----------
    fault : str
        The message without a remedy.
    remedies : sequence of (parameter, value) pairs, optional
        :func:`~crossent.data.load_dataset` arguments that would get past the fault, e.g.
        ``[("label_column", "NAME")]``. They are appended to the message as
        ``"; pass label_column=NAME"``; the command names its own options instead
        (``--label-column NAME``), from :attr:`fault` and :attr:`remedies`.
    """

    def __init__(self, fault: str, remedies: Sequence[tuple[str, str]] = ()) -> None:
        self.fault = fault
        self.remedies = tuple(remedies)
        tried = " or ".join(f"{parameter}={value}" for parameter, value in self.remedies)
        super().__init__(f"{fault}; pass {tried}" if tried else fault)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.fault, self.remedies))


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded data set: features, optional labels and where they came from.

    Attributes
    ----------
    X : numpy.ndarray or scipy.sparse.csr_matrix, shape (n_samples, n_features)
        Finite features: float32 for images (scaled to ``[0, 1]``) and float32 input, float64
        otherwise. Sparse sources (svmlight files, sparse ``.npz``) give a CSR matrix with
        sorted, unique indices, never densified.
    y : numpy.ndarray of shape (n_samples,), or None
        Labels, int64 or str; ``None`` when the source has no labels.
    name : str
        ``"digits"`` or the path the data came from.
    image_shape : tuple of int, or None
        ``(h, w)`` or ``(h, w, 3)`` when each row of ``X`` is a flattened image (C order).
    feature_names : list of str, or None
        The CSV header names of the feature columns.
    label_name : str, or None
        The CSV header name of the label column the labels were read from.
    first_index : int, or None
        svmlight files: the index the file gives column 0 (0 or 1); None for other sources.

    Raises
    ------
    DataError
        On construction, if ``X`` is not a non-empty 2-D float array of finite values, or
        ``y``, ``image_shape`` or ``feature_names`` disagree with it.

    Examples
    --------
    >>> import numpy as np
    >>> ds = Dataset(np.zeros((3, 2)), np.array(["a", "b", "a"]), "toy")
    >>> print(ds.summary())
    toy: 3 samples × 2 features (float64)
    2 classes: a: 2, b: 1
    """

    X: np.ndarray | sp.csr_matrix
    y: np.ndarray | None
    name: str
    image_shape: tuple[int, ...] | None = None
    feature_names: list[str] | None = None
    label_name: str | None = None
    first_index: int | None = None

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def n_samples(self) -> int:
        """Number of rows of ``X``."""
        return int(self.X.shape[0])

    @property
    def sparse(self) -> bool:
        """Whether ``X`` is a CSR matrix."""
        return is_sparse(self.X)

    @property
    def n_features(self) -> int:
        """Number of columns of ``X``."""
        return int(self.X.shape[1])

    def summary(self) -> str:
        """Two lines: the shape of ``X``, then the number of classes and each one's count.

        At most 30 classes are listed; more are summarised as ``… (N more)``.
        """
        what = f"{self.n_samples} samples × {self.n_features} features"
        if self.image_shape is not None:
            what += f" ({'×'.join(map(str, self.image_shape))} images)"
        if self.sparse:
            nnz = int(getattr(self.X, "nnz"))  # noqa: B009 (mypy: ndarray has no nnz)
            density = nnz / max(1, self.n_samples * self.n_features)
            what += f", sparse, {nnz} non-zeros ({density:.3%})"
        first = f"{self.name}: {what} ({self.X.dtype})"
        if self.y is None:
            return f"{first}\nunlabelled"
        classes, counts = np.unique(self.y, return_counts=True)
        shown = ", ".join(
            f"{c}: {n}" for c, n in zip(classes[:_SUMMARY_MAX_CLASSES], counts, strict=False)
        )
        if len(classes) > _SUMMARY_MAX_CLASSES:
            shown += f", … ({len(classes) - _SUMMARY_MAX_CLASSES} more)"
        return f"{first}\n{len(classes)} classes: {shown}"


def is_sparse(X: Any) -> bool:
    """Whether ``X`` is a SciPy sparse matrix or array, without importing SciPy (if SciPy
    is not imported yet, nothing is one; ``crossent --help`` stays light)."""
    sparse = sys.modules.get("scipy.sparse")
    return sparse is not None and bool(sparse.issparse(X))


def _validate(ds: Dataset) -> None:
    X, name = ds.X, ds.name
    if is_sparse(X):
        _validate_sparse(X, name)
    elif not isinstance(X, np.ndarray) or X.ndim != 2 or X.dtype.kind != "f":
        what = f"shape {X.shape}, dtype {X.dtype}" if isinstance(X, np.ndarray) else type(X)
        raise DataError(f"{name}: X must be a 2-D float array, got {what}")
    if X.shape[0] == 0:
        raise DataError(f"{name}: no samples (X has 0 rows)")
    if X.shape[1] == 0:
        raise DataError(f"{name}: no features (X has 0 columns)")
    bad = _first_nonfinite(X) if isinstance(X, np.ndarray) else None
    if bad is not None:
        i, j = bad
        raise DataError(
            f"{name}: X[{i}, {j}] (row {i}, column {j}, 0-based) is {X[i, j]}; "
            "features must be finite"
        )
    if ds.y is not None:
        if not isinstance(ds.y, np.ndarray) or ds.y.ndim != 1:
            raise DataError(f"{name}: y must be a 1-D array of labels")
        if len(ds.y) != X.shape[0]:
            raise DataError(f"{name}: X has {X.shape[0]} rows but y has {len(ds.y)} labels")
    if ds.image_shape is not None and math.prod(ds.image_shape) != X.shape[1]:
        raise DataError(
            f"{name}: image_shape {ds.image_shape} does not match {X.shape[1]} features"
        )
    if ds.first_index not in (None, 0, 1):
        raise DataError(f"{name}: first_index must be None, 0 or 1, got {ds.first_index!r}")
    if ds.label_name is not None and not isinstance(ds.label_name, str):
        raise DataError(f"{name}: label_name must be a str, got {ds.label_name!r}")
    if ds.feature_names is not None and len(ds.feature_names) != X.shape[1]:
        raise DataError(f"{name}: {len(ds.feature_names)} feature names for {X.shape[1]} features")


def _validate_sparse(X: Any, name: str) -> None:
    """A CSR matrix of finite floats with sorted, unique indices (its size: :func:`_validate`)."""
    if X.format != "csr" or X.ndim != 2 or X.dtype.kind != "f":
        raise DataError(
            f"{name}: sparse X must be a 2-D float CSR matrix, got {X.format} of {X.dtype}"
        )
    if not X.has_canonical_format:
        raise DataError(f"{name}: sparse X must have sorted, unique indices in each row")
    bad = first_stored(X, ~np.isfinite(X.data))
    if bad is not None:
        i, j, k = bad
        raise DataError(
            f"{name}: X[{i}, {j}] (row {i}, column {j}, 0-based) is {X.data[k]}; "
            "features must be finite"
        )


def first_stored(X: sp.csr_matrix, mask: np.ndarray) -> tuple[int, int, int] | None:
    """(row, column, position in ``X.data``) of the first stored entry of CSR ``X`` where
    ``mask`` (one bool per stored entry) holds; None if it holds nowhere."""
    hits = np.flatnonzero(mask)
    if not hits.size:
        return None
    k = int(hits[0])
    return int(np.searchsorted(X.indptr, k, side="right")) - 1, int(X.indices[k]), k


def with_columns(X: sp.csr_matrix, n_columns: int) -> sp.csr_matrix:
    """CSR ``X`` with ``n_columns`` columns, sharing its arrays (no copy, no check)."""
    import scipy.sparse as sp

    shape = (X.shape[0], n_columns)
    return sp.csr_matrix((X.data, X.indices, X.indptr), shape=shape, copy=False)


def fit_columns(
    X: sp.csr_matrix, n_features: int, beyond: Callable[[int, int], str]
) -> sp.csr_matrix:
    """CSR ``X`` with ``n_features`` columns: padded with zeros, or, if a stored entry lies
    at or beyond them, :class:`DataError` with the message ``beyond(row, column)`` for the
    first one."""
    if X.shape[1] > n_features:
        found = first_stored(X, X.indices >= n_features)
        if found is not None:
            raise DataError(beyond(found[0], found[1]))
    return with_columns(X, n_features)


def _first_nonfinite(X: np.ndarray) -> tuple[int, int] | None:
    """(row, column) of the first NaN or inf in ``X``, checked in row blocks of ~1 MB."""
    rows = max(1, (1 << 20) // max(1, X.shape[1]))
    for start in range(0, X.shape[0], rows):
        finite = np.isfinite(X[start : start + rows])
        if not finite.all():
            i, j = np.argwhere(~finite)[0]
            return start + int(i), int(j)
    return None


@contextmanager
def reading(name: str) -> Iterator[None]:
    """Turn the OS errors of reading ``name`` into one-line :class:`DataError`."""
    try:
        yield
    except FileNotFoundError:
        raise DataError(f"{name}: no such file or directory") from None
    except IsADirectoryError:
        raise DataError(f"{name}: is a directory, expected a file") from None
    except PermissionError:
        raise DataError(f"{name}: permission denied") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(f"{name}: corrupted or truncated gzip data ({exc})") from None
    except OSError as exc:
        raise DataError(f"{name}: cannot read ({exc.strerror or exc})") from None


def labels_from_strings(values: list[str]) -> np.ndarray:
    """int64 if every label is an integer, else a str array."""
    if all(_INT_LABEL.fullmatch(v) for v in values):
        try:
            return np.array([int(v) for v in values], dtype=np.int64)
        except OverflowError:
            pass
    return np.array(values, dtype=str)


def label_array(arr: np.ndarray, name: str, what: str) -> np.ndarray:
    """Check a labels array from a binary file: 1-D, int, str or integral float."""
    if arr.ndim != 1:
        raise DataError(f"{name}: {what} must be 1-D, got shape {arr.shape}")
    kind = arr.dtype.kind
    if kind in "iub":
        return arr.astype(np.int64)
    if kind == "U":
        return arr
    if kind == "S":
        try:
            return np.char.decode(arr, "utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{name}: {what} holds bytes that are not UTF-8") from None
    if kind == "f":
        bad = np.flatnonzero(~np.isfinite(arr) | (arr != np.round(arr)))
        if bad.size:
            i = int(bad[0])
            raise DataError(f"{name}: {what}[{i}] is {arr[i]}; labels must be integers or strings")
        return arr.astype(np.int64)
    raise DataError(f"{name}: {what} has dtype {arr.dtype}; labels must be integers or strings")


def as_float(arr: np.ndarray) -> np.ndarray:
    """float32 stays float32 (native byte order); anything else numeric becomes float64."""
    dtype = np.float32 if arr.dtype.kind == "f" and arr.dtype.itemsize == 4 else np.float64
    return arr.astype(dtype)


def scale_ubyte(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels → float32 in [0, 1], each the correctly rounded pixel / 255."""
    X = pixels.astype(np.float32)
    X /= np.float32(255)
    return X
