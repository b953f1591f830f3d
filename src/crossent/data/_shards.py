"""One process's rows of a data set: a contiguous row range of one file, or its own files.

``crossent train --distributed`` gives each of ``world`` processes (ranks) the rows
``[rank·n // world, (rank + 1)·n // world)`` of a single source, so that the ranks' blocks,
in rank order, are the file. The rows are read as :func:`~crossent.data.load_dataset`
reads the whole file (same dtypes, same scaling), reading no more than needed where the
format allows it:

- an uncompressed ``.npz`` (``np.savez``): its ``X`` and ``y`` members are memory-mapped
  and only the rank's rows are read;
- a plain IDX file: the images are memory-mapped (the labels file, one byte a row, is read
  whole);
- a CSV file: every record is split by the ``csv`` module (to count the rows and find the
  rank's, since a quoted field may hold a line break), only the rank's are parsed as numbers;
- anything else (``digits``, image folders, compressed ``.npz``, gzipped IDX): loaded whole,
  then sliced.

A source with a glob pattern (``'shards/part-*.csv'``, any of ``* ? [``, and not itself an
existing path) names several files, taken in sorted order: with as many files as ranks,
rank ``r`` reads file ``r``; with more, each rank reads a contiguous block of files
(concatenated). Its rows then follow the files' order.
"""

from __future__ import annotations

import csv
import glob
import math
import os
import struct
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._csv import _open_csv, _parse_csv
from ._dataset import DataError, Dataset, label_array, reading
from ._idx import idx_features, idx_header, idx_image_shape, idx_labels_for
from ._load import load_dataset, source_kind
from ._npz import _npz_features, npy_claim

__all__ = ["Shard", "expand_sources", "load_files", "load_shard", "row_block"]

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class Shard:
    """A rank's rows: ``data`` (its rows only), their names, and the files' total rows.

    ``start`` is the global index of the shard's first row when the source is one file
    (``None`` for files of a pattern, whose offsets follow from all ranks' row counts).
    """

    data: Dataset
    start: int | None
    n_total: int | None


def row_block(n: int, rank: int, world: int) -> tuple[int, int]:
    """The rows ``[lo, hi)`` of ``rank`` among ``world``: contiguous, sizes differing by ≤ 1."""
    return rank * n // world, (rank + 1) * n // world


def expand_sources(source: str) -> list[str]:
    """The files a ``--data`` value names: itself, or a glob pattern's matches, sorted.

    Raises
    ------
    DataError
        If a pattern matches no file.
    """
    if source == "digits" or os.path.exists(source) or not (_GLOB_CHARS & set(source)):
        return [source]
    files = sorted(glob.glob(source))
    if not files:
        raise DataError(f"{source}: no file matches this pattern")
    return files


def load_files(source: str, **options: Any) -> Dataset:
    """All the rows of ``source`` in one process: a file, or a glob pattern's files
    concatenated in sorted order (the rows a ``--distributed`` job's ranks share out).

    Parameters
    ----------
    source : str
        As for :func:`load_shard`.
    **options
        As for :func:`~crossent.data.load_dataset`.
    """
    files = expand_sources(source)
    if len(files) == 1:
        return load_dataset(files[0], **options)
    return _concatenate([load_dataset(f, **options) for f in files], source)


def load_shard(source: str, rank: int, world: int, **options: Any) -> Shard:
    """The rows of ``source`` that ``rank`` of ``world`` trains on.

    Parameters
    ----------
    source : str
        A source :func:`~crossent.data.load_dataset` reads, or a glob pattern of files.
    rank, world : int
        This process's rank, ``0 <= rank < world``, and the number of processes.
    **options
        ``label_column``, ``labels``, ``on_bad_image``, ``require_labels`` as
        :func:`~crossent.data.load_dataset` takes them.

    Returns
    -------
    Shard

    Raises
    ------
    DataError
        As :func:`~crossent.data.load_dataset`, and if the rank would get no rows.
    """
    files = expand_sources(source)
    if len(files) > 1:
        if len(files) < world:
            raise DataError(
                f"{source}: {len(files)} files for {world} ranks; give one file (split by "
                "rows) or at least as many files as ranks"
            )
        lo, hi = row_block(len(files), rank, world)
        parts = [load_dataset(f, **options) for f in files[lo:hi]]
        return Shard(_concatenate(parts, ", ".join(files[lo:hi])), None, None)
    return _rows_of_file(source, rank, world, options)


def _rows_of_file(source: str, rank: int, world: int, options: dict[str, Any]) -> Shard:
    kind = source_kind(source)
    path = Path(source)
    read: Any = {"npz": _npz_rows, "idx": _idx_rows, "csv": _csv_rows}.get(kind)
    applies = _APPLIES.get(kind, ())
    misplaced = [k for k, v in options.items() if v is not None and k not in applies]
    if read is not None and not misplaced:
        found = read(path, source, rank, world, options)
        if found is not None:
            return found
    data = load_dataset(source, **options)  # small or compressed: whole, then sliced
    lo, hi = _block(data.n_samples, rank, world, source)
    return Shard(_slice(data, lo, hi), lo, data.n_samples)


# the options each row reader takes; with any other, load_dataset names the misplaced one
_APPLIES = {
    "npz": ("require_labels", "on_bad_image"),
    "idx": ("require_labels", "on_bad_image", "labels"),
    "csv": ("require_labels", "on_bad_image", "label_column", "feature_columns"),
}


def _block(n: int, rank: int, world: int, name: str) -> tuple[int, int]:
    if n < world:
        raise DataError(f"{name}: {n} rows for {world} ranks; every rank needs rows")
    return row_block(n, rank, world)


def _slice(data: Dataset, lo: int, hi: int) -> Dataset:
    y = None if data.y is None else data.y[lo:hi]
    return Dataset(
        data.X[lo:hi],  # a view of a dense X; CSR rows for sparse
        y,
        data.name,
        data.image_shape,
        data.feature_names,
        data.label_name,
        data.first_index,
    )


def _concatenate(parts: list[Dataset], name: str) -> Dataset:
    first = parts[0]
    for part in parts[1:]:
        if part.n_features != first.n_features or part.X.dtype != first.X.dtype:
            raise DataError(
                f"{part.name} has {part.n_features} features ({part.X.dtype}), "
                f"{first.name} has {first.n_features} ({first.X.dtype})"
            )
        if (part.y is None) != (first.y is None):
            raise DataError(f"{part.name} and {first.name}: only one of them has labels")
        if part.sparse != first.sparse or part.first_index != first.first_index:
            raise DataError(f"{part.name} and {first.name}: one is sparse, the other not")
    if first.sparse:
        import scipy.sparse as sp

        X: Any = sp.vstack([p.X for p in parts], format="csr")  # (Σ n_k, d) CSR
    else:
        X = np.concatenate([p.X for p in parts])  # (Σ n_k, d)
    y = None if first.y is None else np.concatenate([p.y for p in parts if p.y is not None])
    return Dataset(
        X, y, name, first.image_shape, first.feature_names, first.label_name, first.first_index
    )


# ---------------------------------------------------------------- .npz, memory-mapped
def _npz_rows(
    path: Path, name: str, rank: int, world: int, options: dict[str, Any]
) -> Shard | None:
    """Memory-mapped rows of an uncompressed ``.npz``; None where it cannot be mapped."""
    with reading(name):
        try:
            with zipfile.ZipFile(path) as archive:
                members = {i.filename.removesuffix(".npy"): i for i in archive.infolist()}
        except (zipfile.BadZipFile, ValueError, OSError):
            return None
        if "X" not in members or ("y" not in members and options.get("require_labels", True)):
            return None
        X = _map_member(path, members["X"])
        y = None if "y" not in members else _map_member(path, members["y"])
    if X is None or ("y" in members and y is None) or X.ndim < 2:
        return None
    if y is not None and (y.ndim != 1 or len(y) != len(X)):
        return None
    lo, hi = _block(len(X), rank, world, name)
    features, image_shape = _npz_features(np.asarray(X[lo:hi]), name)
    labels = None if y is None else label_array(np.asarray(y[lo:hi]), name, "array 'y'")
    return Shard(Dataset(features, labels, name, image_shape), lo, len(X))


def _map_member(path: Path, info: zipfile.ZipInfo) -> np.ndarray | None:
    """A stored (uncompressed) C-order ``.npy`` member as a read-only memory map, after
    checking that its header's claim is exactly the member's size; None where it cannot
    be mapped (the whole-file loader then reads it, or names its fault)."""
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            return None
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        f.seek(start)
        try:
            what = info.filename
            shape, dtype, fortran = npy_claim(f, what, start + info.file_size, "the member", what)
        except ValueError:  # DataError too: an unsupported, object or mis-sized array
            return None
        offset = f.tell()
    if fortran or len(shape) < 1 or math.prod(shape) == 0:
        return None
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(shape))


# ---------------------------------------------------------------- IDX, memory-mapped
def _idx_rows(
    path: Path, name: str, rank: int, world: int, options: dict[str, Any]
) -> Shard | None:
    """Memory-mapped rows of a plain (not gzipped) IDX images file; None otherwise."""
    with reading(name), open(path, "rb") as f:
        try:
            dtype, dims = idx_header(f, name)
        except DataError:
            return None  # gzipped or malformed: load_dataset reads or names it
        offset = f.tell()
        if os.fstat(f.fileno()).st_size - offset != int(np.prod(dims)) * dtype.itemsize:
            return None
    idx_image_shape(dims, name)  # the whole file's shape in its messages
    images = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=dims)
    lo, hi = _block(dims[0], rank, world, name)
    X, image_shape = idx_features(np.asarray(images[lo:hi]), name)
    labels = idx_labels_for(
        path, name, options.get("labels"), options.get("require_labels", True), dims[0]
    )
    y = None if labels is None else labels[lo:hi]
    return Shard(Dataset(X, y, name, image_shape), lo, dims[0])


# ---------------------------------------------------------------- CSV, by records
class _RecordRange:
    """A ``csv.reader`` that yields the header, then only the records ``[lo, hi)`` (blank
    lines are not records); ``line_num`` is the reader's, for the loader's messages."""

    def __init__(self, reader: Any, lo: int, hi: int) -> None:
        self._reader = reader
        self._records = self._select(lo, hi)

    @property
    def line_num(self) -> int:
        return int(self._reader.line_num)

    def _select(self, lo: int, hi: int) -> Iterator[list[str]]:
        header = next(self._reader, None)
        if header is None:
            return
        yield header
        index = 0
        for row in self._reader:
            if not row:
                continue
            if index >= hi:
                return
            if index >= lo:
                yield row
            index += 1

    def __iter__(self) -> _RecordRange:
        return self

    def __next__(self) -> list[str]:
        return next(self._records)


def _count_csv_records(path: Path, name: str) -> int | None:
    """Records after the header (blank lines not counted); None if the file cannot be split."""
    try:
        with _open_csv(path, name) as f:
            reader = csv.reader(f, strict=True)
            if next(reader, None) is None:
                return None
            return sum(1 for row in reader if row)
    except (csv.Error, UnicodeDecodeError):
        return None


def _csv_rows(
    path: Path, name: str, rank: int, world: int, options: dict[str, Any]
) -> Shard | None:
    """The rank's records of a CSV file, parsed as the whole file's would be."""
    with reading(name):
        n = _count_csv_records(path, name)
        if n is None or n == 0:
            return None  # malformed or empty: load_dataset names the fault
        lo, hi = _block(n, rank, world, name)
        with _open_csv(path, name) as f:
            reader = _RecordRange(csv.reader(f, strict=True), lo, hi)
            try:
                data = _parse_csv(
                    reader,
                    (hi - lo + 1, sys.maxsize),  # the records are counted: no bound needed
                    name,
                    options.get("label_column"),
                    options.get("require_labels", True),
                    options.get("feature_columns"),
                )
            except csv.Error as exc:
                raise DataError(f"{name}: line {reader.line_num}: {exc}") from None
    return Shard(data, lo, n)
