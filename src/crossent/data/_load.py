"""The dispatcher :func:`load_dataset`: which loader reads a source, and its arguments' checks."""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._builtin import load_digits
from ._csv import load_csv
from ._dataset import GZIP_MAGIC, DataError, Dataset, reading
from ._idx import is_idx_magic, load_idx
from ._images import IMAGE_SUFFIXES, load_folder, load_images
from ._npz import load_npz
from ._svmlight import is_svmlight_name, load_svmlight


def load_dataset(
    source: str | os.PathLike[str],
    *,
    label_column: str | int | None = None,
    labels: str | os.PathLike[str] | None = None,
    image_size: tuple[int, int] | None = None,
    require_labels: bool = True,
    on_bad_image: str = "error",
    feature_columns: Sequence[str] | None = None,
    image_mode: str | None = None,
    zero_based: bool | None = None,
    n_features: int | None = None,
) -> Dataset:
    """Load a data set from a built-in name, a file or a folder of images.

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
          and other suffixes are ignored); or, unlabelled, a directory of such images
          without sub-folders, or one image file.
        - an svmlight/libsvm text file (``.svm``, ``.svmlight``, ``.libsvm``, optionally
          ``.gz`` or ``.bz2``): ``label [qid:N] index:value ...`` per line, read by
          :func:`sklearn.datasets.load_svmlight_file` into a CSR ``X`` (float64); labels
          must be integers; query ids are dropped.
        - a sparse ``.npz`` written by :func:`scipy.sparse.save_npz` (CSR or CSC; arrays
          ``data``, ``indices``, ``indptr``, ``shape``, ``format``), read into a CSR ``X``,
          with the labels in an array ``y`` of the same archive or in a ``.npy`` file given
          as ``labels``, and optional column names in a string array ``feature_names``.
    label_column : str or int, optional
        CSV only: the label column, by header name or 0-based index (negative counts from
        the end). Default: the column named ``label``, ``target``, ``class`` or ``y``
        (case-insensitive) if the header has one; else no labels, which is an error when
        ``require_labels``. The last column is never guessed.
    labels : str or os.PathLike, optional
        Sparse ``.npz`` only: a ``.npy`` file of labels, one per row.
        IDX only: the labels file. Default: the images file name with ``images-idx3``
        replaced by ``labels-idx1`` (or ``images`` by ``labels``), with or without ``.gz``.
    image_size : (width, height), optional
        Images only: the size every image is resized to (bilinear). Default: the
        most common size among the images.
    require_labels : bool, default True
        If False, a source without labels (npz without ``y``, IDX without a labels file,
        CSV without a label column, a folder of images without class folders, an image
        file) loads with ``y=None`` instead of raising; a folder of class folders may
        then hold a single class.
    on_bad_image : {"error", "skip"}, default "error"
        Images only: what to do with an image Pillow cannot read. ``"error"``
        raises :class:`DataError` naming the file; ``"skip"`` leaves it out and issues a
        :class:`UserWarning` naming the file.
    feature_columns : sequence of str, optional
        CSV only: read exactly these columns, by header name and in this order, as the
        features (e.g. a model's ``feature_names``); other columns are not read. The
        labels are then read only if ``label_column`` names them or ``require_labels``
        is True. Default: every column but the label column.
    image_mode : {"L", "RGB"}, optional
        Images only: convert every image to grayscale or to RGB. Default: RGB if any
        image is in colour, else L (see Notes).

    zero_based : bool, optional
        svmlight only: whether index 0 is the first column. Default: zero-based if the
        file holds an index 0, else one-based (kept in ``Dataset.first_index``).
    n_features : int, optional
        Sparse sources only: the number of columns wanted, e.g. a model's. Fewer in the
        file are padded with zero columns; a stored index beyond is refused naming it.

    Returns
    -------
    Dataset
        ``X`` of shape ``(n_samples, n_features)``, finite; ``y`` of shape
        ``(n_samples,)`` or None.

    Raises
    ------
    DataError
        If the source is missing, unreadable, empty, of an unknown kind or malformed, or
        claims more data than it holds; the message names the file (and the CSV line) and
        the fault, and :attr:`DataError.remedies` the arguments that would help.
    ValueError
        If an argument is invalid or does not apply to this kind of source.

    Notes
    -----
    Image folders: if any image is in colour (not ``1``/``L``/``LA``/``I``/``F`` or a
    palette of greys) every image is converted to RGB and ``image_shape`` is
    ``(h, w, 3)``, else to grayscale ``L`` with ``image_shape`` ``(h, w)``. Alpha is
    dropped, an animated GIF gives its first frame, 16-bit grayscale is scaled by
    1/65535. Images of mixed sizes or modes are converted with one :class:`UserWarning`
    (how many, and to what). An image over Pillow's ``Image.MAX_IMAGE_PIXELS`` is refused
    (a decompression bomb) before it is decoded.

    Sizes that a file claims (an IDX or ``.npy`` header's shape, a CSV's line count) are
    checked against the bytes really there before anything is allocated from them.

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
    if image_mode not in (None, "L", "RGB"):
        raise ValueError(f"image_mode must be 'L' or 'RGB', got {image_mode!r}")
    if label_column is not None and (
        isinstance(label_column, bool) or not isinstance(label_column, (str, int))
    ):
        raise TypeError(f"label_column must be a str or an int, got {label_column!r}")
    features = _check_feature_columns(feature_columns)
    if isinstance(source, str) and source == "digits":
        _only(
            "digits",
            label_column=label_column,
            labels=labels,
            image_size=image_size,
            feature_columns=features,
            image_mode=image_mode,
            zero_based=zero_based,
            n_features=n_features,
        )
        return load_digits()
    name = os.fspath(source)
    path = Path(name)
    kind = source_kind(source)
    if kind != "svmlight":
        _only(_KIND_NAMES[kind], zero_based=zero_based)
    if kind == "svmlight":
        _only(
            "an svmlight file",
            label_column=label_column,
            labels=labels,
            image_size=image_size,
            feature_columns=features,
            image_mode=image_mode,
        )
        return load_svmlight(path, name, zero_based, n_features)
    if n_features is not None and kind != "npz":
        raise ValueError("n_features= applies to sparse sources only (svmlight, sparse .npz)")
    if kind in ("folder", "image"):
        what = "an image folder" if kind == "folder" else "an image file"
        _only(what, label_column=label_column, labels=labels, feature_columns=features)
        if kind == "folder":
            return load_folder(path, name, image_size, on_bad_image, require_labels, image_mode)
        if require_labels:
            raise DataError(f"{name}: a single image has no label", [("require_labels", "False")])
        return load_images([(path, None)], name, image_size, on_bad_image, image_mode)
    if kind == "idx":
        _only(
            "an IDX file",
            label_column=label_column,
            image_size=image_size,
            feature_columns=features,
            image_mode=image_mode,
        )
        return load_idx(path, name, labels, require_labels)
    if kind == "npz":
        _only(
            "an .npz file",
            label_column=label_column,
            image_size=image_size,
            feature_columns=features,
            image_mode=image_mode,
        )
        labels_name = None if labels is None else os.fspath(labels)
        return load_npz(path, name, require_labels, labels_name, n_features)
    _only("a CSV file", labels=labels, image_size=image_size, image_mode=image_mode)
    return load_csv(path, name, label_column, require_labels, features)


_KIND_NAMES = {
    "csv": "a CSV file",
    "npz": "an .npz file",
    "idx": "an IDX file",
    "folder": "an image folder",
    "image": "an image file",
}


def _only(kind: str, **given: Any) -> None:
    """Refuse arguments that do not apply to this kind of source."""
    for arg, value in given.items():
        if value is not None:
            raise ValueError(f"{arg}= does not apply to {kind}")


def _check_feature_columns(columns: Any) -> list[str] | None:
    if columns is None:
        return None
    if isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
        raise TypeError(f"feature_columns must be a sequence of str, got {columns!r}")
    columns = [c.strip() for c in columns]
    if not columns or len(set(columns)) != len(columns):
        raise ValueError(f"feature_columns must be distinct names, at least one: {columns!r}")
    return columns


def _check_image_size(size: Any) -> tuple[int, int]:
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(s, (int, np.integer)) and s > 0 for s in size)
    ):
        raise ValueError(f"image_size must be (width, height), two positive ints, got {size!r}")
    return int(size[0]), int(size[1])


def source_kind(source: str | os.PathLike[str]) -> str:
    """Which kind of source :func:`load_dataset` sees in ``source``.

    Returns
    -------
    str
        ``"digits"``, ``"folder"``, ``"image"``, ``"idx"``, ``"npz"``, ``"svmlight"`` or
        ``"csv"``.

    Raises
    ------
    DataError
        If ``source`` is missing, unreadable, empty or of an unknown kind.
    """
    if isinstance(source, str) and source == "digits":
        return "digits"
    name = os.fspath(source)
    return _detect(Path(name), name)


def _detect(path: Path, name: str) -> str:
    """Which loader reads ``path``: 'folder', 'image', 'idx', 'npz' or 'csv'."""
    with reading(name):
        if not path.exists():
            raise FileNotFoundError(name)
        if path.is_dir():
            return "folder"
        if not path.is_file():  # a device or a pipe: no size to check claims against
            raise DataError(f"{name}: not a regular file or folder")
        with open(path, "rb") as f:
            head = f.read(4)
        if not head:
            raise DataError(f"{name}: file is empty")
        gzipped = head[:2] == GZIP_MAGIC
        if gzipped:
            with gzip.open(path, "rb") as f:
                head = f.read(4)
    if is_idx_magic(head):
        return "idx"
    lower = name.lower()
    if gzipped and lower.endswith(".csv.gz"):
        return "csv"
    if is_svmlight_name(name):
        return "svmlight"
    if not gzipped and lower.endswith(".npz"):
        return "npz"
    if not gzipped and lower.endswith(".csv"):
        return "csv"
    if not gzipped and path.suffix.lower() in IMAGE_SUFFIXES:
        return "image"
    what = "gzip file" if gzipped else f"file type {path.suffix or '(no suffix)'}"
    raise DataError(
        f"{name}: unknown {what}; expected .csv, .csv.gz, .npz, .svm/.svmlight/.libsvm "
        "(svmlight), an IDX file "
        "(e.g. train-images-idx3-ubyte[.gz]), an image or a folder of images, or 'digits'"
    )
