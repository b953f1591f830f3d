"""CSV files (optionally gzipped) with a header row, parsed in blocks into one float array."""

from __future__ import annotations

import csv
import gzip
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from ._dataset import DataError, Dataset, labels_from_strings, reading

_CSV_CHUNK_ROWS = 4096  # rows parsed into one float block at a time


def _open_csv(path: Path, name: str) -> IO[str]:
    if name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _count_records(path: Path, name: str) -> tuple[int, int]:
    """Upper bounds on the records: (line breaks + 1, bytes of text)."""
    opener: Callable[..., Any] = gzip.open if name.lower().endswith(".gz") else open
    n_lf = n_cr = n_bytes = 0
    with opener(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            n_lf += chunk.count(b"\n")
            n_cr += chunk.count(b"\r")
            n_bytes += len(chunk)
    return max(n_lf, n_cr) + 1, n_bytes


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


LABEL_NAMES = ("label", "target", "class", "y")
"""Header names (case-insensitive) taken as the label column when none is named."""


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
                f"{name}: line 1: label column {label_column} is out of range for the header's "
                f"{n_cols} columns (0 to {n_cols - 1}, or -{n_cols} to -1 from the end)"
            )
        return label_column % n_cols
    named = [i for i, h in enumerate(header) if h.lower() in LABEL_NAMES]
    if len(named) > 1:
        both = " and ".join(repr(header[i]) for i in named)
        raise DataError(
            f"{name}: line 1: columns {both} could each be the labels; choose one",
            [("label_column", "NAME")],
        )
    if named:
        return named[0]
    if require_labels:
        raise DataError(
            f"{name}: line 1: no label column (none is named {', '.join(LABEL_NAMES)})",
            [("label_column", "NAME"), ("require_labels", "False")],
        )
    return None


def _feature_indices(
    header: list[str], label_index: int | None, features: list[str] | None, name: str
) -> list[int]:
    """Columns read as features: ``features`` by name (in that order), else all but labels."""
    if features is None:
        return [i for i in range(len(header)) if i != label_index]
    where = {h: i for i, h in reversed(list(enumerate(header)))}
    missing = [f for f in features if f not in where]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise DataError(f"{name}: line 1: no feature column named {missing[0]!r}{more}")
    counts = Counter(header)  # one pass: the header may have tens of thousands of columns
    twice = [f for f in features if counts[f] > 1]
    if twice:
        raise DataError(f"{name}: line 1: {counts[twice[0]]} columns named {twice[0]!r}")
    indices = [where[f] for f in features]
    if label_index in indices:
        raise DataError(f"{name}: line 1: column {header[label_index]!r} is the labels")
    return indices


def load_csv(
    path: Path,
    name: str,
    label_column: str | int | None,
    require_labels: bool,
    features: list[str] | None = None,
) -> Dataset:
    with reading(name):
        n_lines, n_bytes = _count_records(path, name)
        with _open_csv(path, name) as f:
            reader = csv.reader(f, strict=True)
            try:
                return _parse_csv(
                    reader, (n_lines, n_bytes), name, label_column, require_labels, features
                )
            except UnicodeDecodeError:
                line = _first_non_utf8_line(path, name)
                raise DataError(f"{name}: line {line}: not UTF-8 text") from None
            except csv.Error as exc:
                raise DataError(f"{name}: line {reader.line_num}: {exc}") from None


def _parse_csv(
    reader: Any,
    size: tuple[int, int],
    name: str,
    label_column: str | int | None,
    require_labels: bool,
    features: list[str] | None,
) -> Dataset:
    header = [h.strip() for h in next(reader, [])]
    if not header:
        raise DataError(f"{name}: line 1: the header row is empty")
    label_index = None
    if features is None or require_labels or label_column is not None:
        label_index = _label_index(header, label_column, require_labels, name)
    columns = _feature_indices(header, label_index, features, name)
    feature_names = [header[i] for i in columns]
    if not feature_names:
        raise DataError(f"{name}: line 1: no feature columns besides the label column")
    # A record has a separator after each of its len(header) fields, and a feature or a
    # label is at least one character: the bytes bound the records as the line breaks do,
    # and X takes at most 8·d / (len(header) + d) ≤ 4 bytes per byte of text.
    n_lines, n_bytes = size
    min_record = len(header) + len(columns) + (label_index is not None)
    capacity = min(n_lines, n_bytes // min_record + 1)
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
            label = row[label_index].strip()
            if not label:
                raise DataError(
                    f"{name}: line {reader.line_num}: empty label in column {header[label_index]!r}"
                )
            label_values.append(label)
        rows.append([row[i] for i in columns])
        lines.append(reader.line_num)
        if len(rows) == _CSV_CHUNK_ROWS:
            X, n = _store_block(X, n, rows, lines, feature_names, name)
            rows, lines = [], []
    X, n = _store_block(X, n, rows, lines, feature_names, name)
    if n == 0:
        raise DataError(f"{name}: no data rows after the header")
    X = X[:n] if len(X) - n <= 2 else X[:n].copy()
    y = labels_from_strings(label_values) if label_index is not None else None
    label_name = None if label_index is None else header[label_index]
    return Dataset(X, y, name, None, feature_names, label_name)


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
