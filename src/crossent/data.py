"""Dataset loaders: scikit-learn's digits, ``.npz``, CSV, IDX (MNIST) files and image folders.

:func:`load_dataset` reads any of these into a :class:`Dataset` whose ``X`` has one row per
sample, ``(n_samples, n_features)``. Images become flattened rows scaled to ``[0, 1]``, with
their shape kept in ``image_shape``. Every fault of the data (a missing or malformed file, a
non-numeric or non-finite feature, a label count that disagrees) raises :class:`DataError`
with a one-line message naming the file and the fault.

Examples
--------
>>> from crossent.data import load_dataset
>>> ds = load_dataset("digits")
>>> ds.X.shape, ds.X.dtype, ds.image_shape
((1797, 64), dtype('float32'), (8, 8))
"""

from __future__ import annotations

import csv
import gzip
import math
import os
import re
import struct
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["IMAGE_SUFFIXES", "DataError", "Dataset", "load_dataset"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
"""File suffixes (case-insensitive) read from the class folders of an image directory."""

_GZIP_MAGIC = b"\x1f\x8b"
_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CSV_CHUNK_ROWS = 4096  # rows parsed into one float block at a time
_INT_LABEL = re.compile(r"[+-]?\d+")
_SUMMARY_MAX_CLASSES = 30


class DataError(ValueError):
    """A data file is missing, unreadable or malformed.

    The message is one line naming the file and the fault, e.g.
    ``"train.csv: line 7: column 'x2' has 'abc', which is not a number"``.
    """


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded data set: features, optional labels and where they came from.

    Attributes
    ----------
    X : numpy.ndarray, shape (n_samples, n_features)
        Finite features: float32 for images (scaled to ``[0, 1]``) and float32 input, float64
        otherwise.
    y : numpy.ndarray of shape (n_samples,), or None
        Labels, int64 or str; ``None`` when the source has no labels.
    name : str
        ``"digits"`` or the path the data came from.
    image_shape : tuple of int, or None
        ``(h, w)`` or ``(h, w, 3)`` when each row of ``X`` is a flattened image (C order).
    feature_names : list of str, or None
        The CSV header names of the feature columns.

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

    X: np.ndarray
    y: np.ndarray | None
    name: str
    image_shape: tuple[int, ...] | None = None
    feature_names: list[str] | None = None

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def n_samples(self) -> int:
        """Number of rows of ``X``."""
        return int(self.X.shape[0])

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


def _validate(ds: Dataset) -> None:
    X, name = ds.X, ds.name
    if not isinstance(X, np.ndarray) or X.ndim != 2 or X.dtype.kind != "f":
        what = f"shape {X.shape}, dtype {X.dtype}" if isinstance(X, np.ndarray) else type(X)
        raise DataError(f"{name}: X must be a 2-D float array, got {what}")
    if X.shape[0] == 0:
        raise DataError(f"{name}: no samples (X has 0 rows)")
    if X.shape[1] == 0:
        raise DataError(f"{name}: no features (X has 0 columns)")
    bad = _first_nonfinite(X)
    if bad is not None:
        i, j = bad
        raise DataError(
            f"{name}: X[{i}, {j}] (row {i}, column {j}, 0-based) is {X[i, j]}; "
            "features must be finite"
        )
    if ds.y is not None:
        if not isinstance(ds.y, np.ndarray) or ds.y.ndim != 1:
            raise DataError(f"{name}: y must be a 1-D array of labels")
        if len(ds.y) != len(X):
            raise DataError(f"{name}: X has {len(X)} rows but y has {len(ds.y)} labels")
    if ds.image_shape is not None and math.prod(ds.image_shape) != X.shape[1]:
        raise DataError(
            f"{name}: image_shape {ds.image_shape} does not match {X.shape[1]} features"
        )
    if ds.feature_names is not None and len(ds.feature_names) != X.shape[1]:
        raise DataError(f"{name}: {len(ds.feature_names)} feature names for {X.shape[1]} features")


def _first_nonfinite(X: np.ndarray) -> tuple[int, int] | None:
    """(row, column) of the first NaN or inf in ``X``, checked in row blocks of ~1 MB."""
    rows = max(1, (1 << 20) // max(1, X.shape[1]))
    for start in range(0, X.shape[0], rows):
        finite = np.isfinite(X[start : start + rows])
        if not finite.all():
            i, j = np.argwhere(~finite)[0]
            return start + int(i), int(j)
    return None


# --------------------------------------------------------------------------- entry point


def load_dataset(
    source: str | os.PathLike[str],
    *,
    label_column: str | int | None = None,
    labels: str | os.PathLike[str] | None = None,
    image_size: tuple[int, int] | None = None,
    require_labels: bool = True,
    on_bad_image: str = "error",
) -> Dataset:
    """Load a data set from a built-in name, a file or a folder of class folders.

    Parameters
    ----------
    source : str or os.PathLike
        One of

        - ``"digits"``: scikit-learn's 8×8 digits (1797 samples), ``X`` float32 = pixel / 16.
          This exact string always means the built-in set; write ``"./digits"`` for a path.
        - a ``.npz`` file with arrays ``X`` and ``y``, read with ``allow_pickle=False``.
          ``X`` is ``(n, d)`` features (float32 kept, other numbers as float64) or images
          ``(n, h, w)`` / ``(n, h, w, c)`` with ``c`` 1 or 3 (channels last), flattened;
          uint8 images are scaled by 1/255. ``y`` is 1-D int, str or integral float.
        - a ``.csv`` (or ``.csv.gz``) file, UTF-8, with a header row. Every feature must
          be a number. Labels stay strings unless all of them are integers (then int64).
          Read row by row into one preallocated array.
        - an IDX file as MNIST ships it (``train-images-idx3-ubyte``, optionally gzipped),
          recognised by its magic number. ubyte pixels are scaled by 1/255 to float32.
        - a directory with one sub-folder per class (the folder name is the label; labels
          are int64 if every class name is an integer) holding ``.png``, ``.jpg``,
          ``.jpeg``, ``.bmp`` or ``.gif`` images (not searched recursively; hidden files
          and other suffixes are ignored).
    label_column : str or int, optional
        CSV only: the label column, by header name or 0-based index (negative counts from
        the end). Default: a column named ``label`` or ``y`` if the header has one, else
        the last column when ``require_labels``, else no labels.
    labels : str or os.PathLike, optional
        IDX only: the labels file. Default: the images file name with ``images-idx3``
        replaced by ``labels-idx1`` (or ``images`` by ``labels``), with or without ``.gz``.
    image_size : (width, height), optional
        Image folders only: the size every image is resized to (bilinear). Default: the
        most common size among the images.
    require_labels : bool, default True
        If False, a source without labels (npz without ``y``, IDX without a labels file,
        CSV without a label column) loads with ``y=None`` instead of raising.
    on_bad_image : {"error", "skip"}, default "error"
        Image folders only: what to do with an image Pillow cannot read. ``"error"``
        raises :class:`DataError` naming the file; ``"skip"`` leaves it out and issues a
        :class:`UserWarning` naming the file.

    Returns
    -------
    Dataset
        ``X`` of shape ``(n_samples, n_features)``, finite; ``y`` of shape
        ``(n_samples,)`` or None.

    Raises
    ------
    DataError
        If the source is missing, unreadable, empty, of an unknown kind or malformed; the
        message names the file (and the CSV line) and the fault.
    ValueError
        If an argument is invalid or does not apply to this kind of source.

    Notes
    -----
    Image folders: if any image is in colour (not ``1``/``L``/``LA``/``I``/``F`` or a
    palette of greys) every image is converted to RGB and ``image_shape`` is
    ``(h, w, 3)``, else to grayscale ``L`` with ``image_shape`` ``(h, w)``. Alpha is
    dropped, an animated GIF gives its first frame, 16-bit grayscale is scaled by
    1/65535.

    Examples
    --------
    >>> ds = load_dataset("digits")
    >>> print(ds.summary())  # doctest: +ELLIPSIS
    digits: 1797 samples × 64 features (8×8 images) (float32)
    10 classes: 0: 178, 1: 182, 2: 177, 3: 183, 4: 181, 5: 182, 6: 181, 7: 179, ...
    """
    if on_bad_image not in ("error", "skip"):
        raise ValueError(f"on_bad_image must be 'error' or 'skip', got {on_bad_image!r}")
    if image_size is not None:
        image_size = _check_image_size(image_size)
    if label_column is not None and (
        isinstance(label_column, bool) or not isinstance(label_column, (str, int))
    ):
        raise TypeError(f"label_column must be a str or an int, got {label_column!r}")
    if isinstance(source, str) and source == "digits":
        _only("digits", label_column=label_column, labels=labels, image_size=image_size)
        return _load_digits()
    name = os.fspath(source)
    path = Path(name)
    kind = _detect(path, name)
    if kind == "folder":
        _only("an image folder", label_column=label_column, labels=labels)
        return _load_folder(path, name, image_size, on_bad_image)
    if kind == "idx":
        _only("an IDX file", label_column=label_column, image_size=image_size)
        return _load_idx(path, name, labels, require_labels)
    if kind == "npz":
        _only("an .npz file", label_column=label_column, labels=labels, image_size=image_size)
        return _load_npz(path, name, require_labels)
    _only("a CSV file", labels=labels, image_size=image_size)
    return _load_csv(path, name, label_column, require_labels)


def _only(kind: str, **given: Any) -> None:
    """Refuse arguments that do not apply to this kind of source."""
    for arg, value in given.items():
        if value is not None:
            raise ValueError(f"{arg}= does not apply to {kind}")


def _check_image_size(size: Any) -> tuple[int, int]:
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(s, (int, np.integer)) and s > 0 for s in size)
    ):
        raise ValueError(f"image_size must be (width, height), two positive ints, got {size!r}")
    return int(size[0]), int(size[1])


@contextmanager
def _reading(name: str) -> Iterator[None]:
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


def _is_idx_magic(head: bytes) -> bool:
    return len(head) == 4 and head[:2] == b"\0\0" and head[2] in _IDX_DTYPES and head[3] > 0


def _detect(path: Path, name: str) -> str:
    """Which loader reads ``path``: 'folder', 'idx', 'npz' or 'csv'."""
    with _reading(name):
        if not path.exists():
            raise FileNotFoundError(name)
        if path.is_dir():
            return "folder"
        with open(path, "rb") as f:
            head = f.read(4)
        if not head:
            raise DataError(f"{name}: file is empty")
        gzipped = head[:2] == _GZIP_MAGIC
        if gzipped:
            with gzip.open(path, "rb") as f:
                head = f.read(4)
    if _is_idx_magic(head):
        return "idx"
    lower = name.lower()
    if gzipped and lower.endswith(".csv.gz"):
        return "csv"
    if not gzipped and lower.endswith(".npz"):
        return "npz"
    if not gzipped and lower.endswith(".csv"):
        return "csv"
    what = "gzip file" if gzipped else f"file type {path.suffix or '(no suffix)'}"
    raise DataError(
        f"{name}: unknown {what}; expected .csv, .csv.gz, .npz, an IDX file "
        "(e.g. train-images-idx3-ubyte[.gz]), a folder of class folders, or 'digits'"
    )


def _labels_from_strings(values: list[str]) -> np.ndarray:
    """int64 if every label is an integer, else a str array."""
    if all(_INT_LABEL.fullmatch(v) for v in values):
        try:
            return np.array([int(v) for v in values], dtype=np.int64)
        except OverflowError:
            pass
    return np.array(values, dtype=str)


def _label_array(arr: np.ndarray, name: str, what: str) -> np.ndarray:
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


# --------------------------------------------------------------------------- digits, npz


def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    X = (bunch.data / 16).astype(np.float32)  # (1797, 64), k/16 is exact
    return Dataset(X, bunch.target.astype(np.int64), "digits", (8, 8))


def _load_npz(path: Path, name: str, require_labels: bool) -> Dataset:
    with _reading(name):
        try:
            archive = np.load(path, allow_pickle=False)
        except (ValueError, zipfile.BadZipFile) as exc:
            raise DataError(f"{name}: not a valid .npz archive ({exc})") from None
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataError(f"{name}: a single .npy array, expected an .npz with X and y")
        with archive:
            held = ", ".join(archive.files) or "nothing"
            if "X" not in archive.files:
                raise DataError(f"{name}: no array 'X' (the archive holds: {held})")
            raw_X = _npz_member(archive, "X", name)
            raw_y = _npz_member(archive, "y", name) if "y" in archive.files else None
    if raw_y is None and require_labels:
        raise DataError(
            f"{name}: no array 'y' with the labels (the archive holds: {held}); "
            "pass require_labels=False to load the features alone"
        )
    X, image_shape = _npz_features(raw_X, name)
    y = None if raw_y is None else _label_array(raw_y, name, "array 'y'")
    return Dataset(X, y, name, image_shape)


def _npz_member(archive: Any, key: str, name: str) -> np.ndarray:
    try:
        return np.asarray(archive[key])
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise DataError(
                f"{name}: array {key!r} is an object array; crossent loads .npz files with "
                "allow_pickle=False and never unpickles"
            ) from None
        raise DataError(f"{name}: array {key!r} cannot be read ({exc})") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise DataError(f"{name}: array {key!r} is corrupted ({exc})") from None


def _npz_features(raw: np.ndarray, name: str) -> tuple[np.ndarray, tuple[int, ...] | None]:
    if raw.dtype.kind not in "biuf":
        raise DataError(f"{name}: array 'X' has dtype {raw.dtype}; features must be numeric")
    if raw.ndim == 2:
        return _as_float(raw), None
    if raw.ndim == 4 and raw.shape[3] in (1, 3):
        image_shape: tuple[int, ...] = raw.shape[1:3] if raw.shape[3] == 1 else raw.shape[1:]
    elif raw.ndim == 3:
        image_shape = raw.shape[1:]
    else:
        raise DataError(
            f"{name}: array 'X' has shape {raw.shape}; expected (n_samples, n_features), "
            "images (n, h, w), or channels-last images (n, h, w, 1 or 3)"
        )
    flat = raw.reshape(raw.shape[0], -1)
    X = _scale_ubyte(flat) if raw.dtype == np.uint8 else _as_float(flat).astype(np.float32)
    return X, tuple(int(s) for s in image_shape)


def _as_float(arr: np.ndarray) -> np.ndarray:
    """float32 stays float32 (native byte order); anything else numeric becomes float64."""
    dtype = np.float32 if arr.dtype.kind == "f" and arr.dtype.itemsize == 4 else np.float64
    return arr.astype(dtype)


def _scale_ubyte(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels → float32 in [0, 1], each the correctly rounded pixel / 255."""
    X = pixels.astype(np.float32)
    X /= np.float32(255)
    return X


# --------------------------------------------------------------------------- IDX


def _read_idx(path: Path, name: str) -> np.ndarray:
    """Read an IDX file (plain or gzip) whose data size must match its header exactly."""
    with _reading(name), open(path, "rb") as raw:
        gzipped = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        stream: Any = gzip.GzipFile(fileobj=raw) if gzipped else raw
        magic = stream.read(4)
        if not _is_idx_magic(magic):
            raise DataError(f"{name}: not an IDX file (magic number {magic.hex() or 'missing'})")
        dtype, ndim = _IDX_DTYPES[magic[2]], magic[3]
        dims_bytes = stream.read(4 * ndim)
        if len(dims_bytes) != 4 * ndim:
            raise DataError(f"{name}: truncated IDX header ({ndim} dimensions announced)")
        dims = struct.unpack(f">{ndim}I", dims_bytes)
        expected = math.prod(dims) * dtype.itemsize
        if gzipped:
            data = stream.read(expected)
            actual = len(data) + sum(len(c) for c in iter(lambda: stream.read(1 << 20), b""))
        else:
            actual = os.fstat(raw.fileno()).st_size - 4 - 4 * ndim
            data = raw.read(expected) if actual == expected else b""
        if actual != expected:
            raise DataError(
                f"{name}: IDX header says {expected} bytes of data "
                f"(dims {'×'.join(map(str, dims))}), file has {actual}"
            )
    return np.frombuffer(data, dtype=dtype).reshape(dims)


def _idx_label_candidates(path: Path) -> list[Path]:
    names: list[str] = []
    replacements = [("images-idx3", "labels-idx1"), ("images.idx3", "labels.idx1")]
    for old, new in [*replacements, ("images", "labels")]:
        if old in path.name:
            guess = path.name.replace(old, new)
            other = guess[:-3] if guess.endswith(".gz") else guess + ".gz"
            names += [n for n in (guess, other) if n not in names]
    return [path.with_name(n) for n in names]


def _load_idx(path: Path, name: str, labels: Any, require_labels: bool) -> Dataset:
    images = _read_idx(path, name)
    if images.ndim == 1:
        raise DataError(
            f"{name}: a 1-D IDX array (a labels file?); expected images (n, h, w) as the source"
        )
    if images.ndim == 4 and images.shape[3] not in (1, 3):
        raise DataError(f"{name}: IDX images of shape {images.shape} need 1 or 3 channels")
    image_shape = tuple(int(s) for s in images.shape[1:]) if images.ndim > 2 else None
    if image_shape is not None and len(image_shape) == 3 and image_shape[2] == 1:
        image_shape = image_shape[:2]
    flat = images.reshape(images.shape[0], -1)
    X = _scale_ubyte(flat) if images.dtype == np.uint8 else _as_float(flat)

    if labels is not None:
        labels_path = Path(os.fspath(labels))
    else:
        candidates = _idx_label_candidates(path)
        found = [c for c in candidates if c.is_file()]
        if found:
            labels_path = found[0]
        else:
            if require_labels:
                looked = ", ".join(c.name for c in candidates) or "no name to derive"
                raise DataError(
                    f"{name}: no labels file found (looked for {looked}); pass labels=..., "
                    "or require_labels=False to load the images alone"
                )
            return Dataset(X, None, name, image_shape)
    labels_name = os.fspath(labels_path)
    y = _label_array(_read_idx(labels_path, labels_name), labels_name, "the IDX labels")
    if len(y) != len(X):
        raise DataError(
            f"{name}: {len(X)} images but the labels file {labels_name} has {len(y)} labels"
        )
    return Dataset(X, y, name, image_shape)


# --------------------------------------------------------------------------- CSV


def _open_csv(path: Path, name: str) -> IO[str]:
    if name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _count_line_breaks(path: Path, name: str) -> int:
    """An upper bound on the number of records: line breaks + 1."""
    opener: Callable[..., Any] = gzip.open if name.lower().endswith(".gz") else open
    n_lf = n_cr = 0
    with opener(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            n_lf += chunk.count(b"\n")
            n_cr += chunk.count(b"\r")
    return max(n_lf, n_cr) + 1


def _first_non_utf8_line(path: Path, name: str) -> int:
    """1-based number of the first line that is not valid UTF-8 (0 if none is found)."""
    opener: Callable[..., Any] = gzip.open if name.lower().endswith(".gz") else open
    with opener(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


def _label_index(
    header: list[str], label_column: str | int | None, require_labels: bool, name: str
) -> int | None:
    n_cols = len(header)
    if isinstance(label_column, str):
        matches = [i for i, h in enumerate(header) if h == label_column.strip()]
        if len(matches) != 1:
            shown = ", ".join(header[:10]) + (", …" if n_cols > 10 else "")
            fault = "no column" if not matches else f"{len(matches)} columns"
            raise DataError(
                f"{name}: line 1: {fault} named {label_column!r} for the labels (columns: {shown})"
            )
        return matches[0]
    if isinstance(label_column, int):
        if not -n_cols <= label_column < n_cols:
            raise DataError(
                f"{name}: line 1: label_column {label_column} is out of range "
                f"for the header's {n_cols} columns"
            )
        return label_column % n_cols
    named = [i for i, h in enumerate(header) if h.lower() in ("label", "y")]
    if len(named) == 1:
        return named[0]
    return n_cols - 1 if require_labels else None


def _load_csv(
    path: Path, name: str, label_column: str | int | None, require_labels: bool
) -> Dataset:
    with _reading(name):
        capacity = _count_line_breaks(path, name)
        with _open_csv(path, name) as f:
            reader = csv.reader(f, strict=True)
            try:
                return _parse_csv(reader, capacity, name, label_column, require_labels)
            except UnicodeDecodeError:
                line = _first_non_utf8_line(path, name)
                raise DataError(f"{name}: line {line}: not UTF-8 text") from None
            except csv.Error as exc:
                raise DataError(f"{name}: line {reader.line_num}: {exc}") from None


def _parse_csv(
    reader: Any, capacity: int, name: str, label_column: str | int | None, require_labels: bool
) -> Dataset:
    header = [h.strip() for h in next(reader, [])]
    if not header:
        raise DataError(f"{name}: line 1: the header row is empty")
    label_index = _label_index(header, label_column, require_labels, name)
    feature_names = [h for i, h in enumerate(header) if i != label_index]
    if not feature_names:
        raise DataError(f"{name}: line 1: no feature columns besides the label column")
    X = np.empty((capacity, len(feature_names)), dtype=np.float64)  # (capacity, d), trimmed
    label_values: list[str] = []
    rows: list[list[str]] = []
    lines: list[int] = []
    n = 0
    for row in reader:
        if not row:  # blank line
            continue
        if len(row) != len(header):
            raise DataError(
                f"{name}: line {reader.line_num}: {len(row)} fields, the header has {len(header)}"
            )
        if label_index is not None:
            label = row.pop(label_index).strip()
            if not label:
                raise DataError(
                    f"{name}: line {reader.line_num}: empty label in column {header[label_index]!r}"
                )
            label_values.append(label)
        rows.append(row)
        lines.append(reader.line_num)
        if len(rows) == _CSV_CHUNK_ROWS:
            X, n = _store_block(X, n, rows, lines, feature_names, name)
            rows, lines = [], []
    X, n = _store_block(X, n, rows, lines, feature_names, name)
    if n == 0:
        raise DataError(f"{name}: no data rows after the header")
    X = X[:n] if len(X) - n <= 2 else X[:n].copy()
    y = _labels_from_strings(label_values) if label_index is not None else None
    return Dataset(X, y, name, None, feature_names)


def _store_block(
    X: np.ndarray,
    n: int,
    rows: list[list[str]],
    lines: list[int],
    feature_names: list[str],
    name: str,
) -> tuple[np.ndarray, int]:
    """Parse ``rows`` as floats into ``X[n:]``; return ``X`` (grown if needed) and the new n."""
    if not rows:
        return X, n
    try:
        block = np.array(rows, dtype=np.float64)  # (len(rows), d)
    except ValueError:
        for row, line in zip(rows, lines, strict=True):
            for text, column in zip(row, feature_names, strict=True):
                try:
                    float(text)
                except ValueError:
                    fault = f"has {text!r}, which is not a number" if text.strip() else "is empty"
                    raise DataError(f"{name}: line {line}: column {column!r} {fault}") from None
        raise
    finite = np.isfinite(block)
    if not finite.all():
        i, j = np.argwhere(~finite)[0]
        raise DataError(
            f"{name}: line {lines[i]}: column {feature_names[j]!r} is {block[i, j]}; "
            "features must be finite"
        )
    if n + len(block) > len(X):  # more records than line breaks: only if the file grew
        grown = np.empty((2 * (n + len(block)), X.shape[1]), dtype=X.dtype)
        grown[:n] = X[:n]
        X = grown
    X[n : n + len(block)] = block
    return X, n + len(block)


# --------------------------------------------------------------------------- image folders


def _is_colour(img: Any) -> bool:
    from PIL import ImageMode

    if img.mode in ("P", "PA"):
        palette = img.getpalette() or []
        return any(
            palette[k] != palette[k + 1] or palette[k] != palette[k + 2]
            for k in range(0, len(palette) - 2, 3)
        )
    try:
        return bool(ImageMode.getmode(img.mode).basemode != "L")
    except KeyError:
        return True


def _pixels(img: Any, colour: bool, size: tuple[int, int]) -> np.ndarray:
    """One image as a flat float32 row in [0, 1], converted to RGB or L and resized."""
    from PIL import Image

    if img.mode.startswith("I;16"):  # 16-bit grey: Pillow's convert("L") would clip
        grey = Image.fromarray(np.asarray(img, dtype=np.float32) / np.float32(65535))
        if grey.size != size:
            grey = grey.resize(size, Image.Resampling.BILINEAR)
        arr = np.clip(np.asarray(grey, dtype=np.float32), 0, 1)
        return (np.repeat(arr[..., None], 3, axis=2) if colour else arr).reshape(-1)
    img = img.convert("RGB" if colour else "L")
    if img.size != size:
        img = img.resize(size, Image.Resampling.BILINEAR)
    return _scale_ubyte(np.asarray(img, dtype=np.uint8).reshape(-1))


def _bad_image(file: Path, exc: BaseException, on_bad_image: str) -> None:
    message = f"{file}: cannot read image ({type(exc).__name__}: {exc})"
    if on_bad_image == "error":
        raise DataError(message) from None
    warnings.warn(f"{message}; skipped", UserWarning, stacklevel=4)


def _load_folder(
    path: Path, name: str, image_size: tuple[int, int] | None, on_bad_image: str
) -> Dataset:
    from PIL import Image

    with _reading(name):
        class_dirs = sorted(p for p in path.iterdir() if p.is_dir() and p.name[:1] != ".")
    if len(class_dirs) < 2:
        found = ", ".join(repr(d.name) for d in class_dirs) or "none"
        raise DataError(
            f"{name}: found {len(class_dirs)} class folder(s) ({found}); an image folder "
            "needs one sub-folder per class and at least two classes"
        )
    files: list[tuple[Path, str]] = []
    with _reading(name):
        for folder in class_dirs:
            images = sorted(
                f
                for f in folder.iterdir()
                if f.suffix.lower() in IMAGE_SUFFIXES and f.name[:1] != "." and f.is_file()
            )
            if not images:
                raise DataError(
                    f"{name}: class folder {folder.name!r} has no images "
                    f"({', '.join(IMAGE_SUFFIXES)})"
                )
            files += [(f, folder.name) for f in images]

    headers: list[tuple[Path, str, tuple[int, int], bool]] = []  # pass 1: headers only
    for file, label in files:
        try:
            with Image.open(file) as img:
                headers.append((file, label, img.size, _is_colour(img)))
        except Exception as exc:  # any decoder fault of an untrusted file
            _bad_image(file, exc, on_bad_image)
    colour = any(h[3] for h in headers)
    sizes = Counter(h[2] for h in headers)
    size = image_size or (sizes.most_common(1)[0][0] if sizes else (1, 1))
    width, height = size
    image_shape = (height, width, 3) if colour else (height, width)

    X = np.empty((len(headers), math.prod(image_shape)), dtype=np.float32)  # (n, h·w·c)
    kept: list[str] = []
    for file, label, _, _ in headers:  # pass 2: decode
        try:
            with Image.open(file) as img:
                X[len(kept)] = _pixels(img, colour, size)
        except Exception as exc:
            _bad_image(file, exc, on_bad_image)
            continue
        kept.append(label)
    missing = sorted({label for _, label in files} - set(kept))
    if missing:
        raise DataError(f"{name}: class folder {missing[0]!r} has no readable images")
    X = X[: len(kept)] if len(kept) == len(X) else X[: len(kept)].copy()
    return Dataset(X, _labels_from_strings(kept), name, image_shape)
