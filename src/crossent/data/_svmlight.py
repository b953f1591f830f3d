"""svmlight / libsvm text files (``label [qid:N] index:value ...``) as CSR matrices.

The file is parsed by :func:`sklearn.datasets.load_svmlight_file` (float64). Its error
messages carry no line number, so on a fault the file is read again, line by line, by
:func:`_first_fault`, which names the line and what is wrong with it; values that parse
but are unusable (NaN, inf, a label that is not an integer) are traced back to their line
too. Query ids (``qid:N``) are parsed and dropped: classification does not use them.
"""

from __future__ import annotations

import bz2
import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import scipy.sparse as sp

from ._dataset import DataError, Dataset, first_stored, fit_columns, reading, with_columns

SVMLIGHT_SUFFIXES = (".svm", ".svmlight", ".libsvm")
MAX_INDEX = 2**31 - 2  # the parser's indices are C ints; index + 1 must fit too


def is_svmlight_name(name: str) -> bool:
    """Whether ``name`` ends in an svmlight suffix, optionally followed by ``.gz``/``.bz2``."""
    lower = name.lower().removesuffix(".gz").removesuffix(".bz2")
    return lower.endswith(SVMLIGHT_SUFFIXES)


def _open(path: Path, name: str) -> Any:
    lower = name.lower()
    if lower.endswith(".gz"):
        return gzip.open(path, "rb")
    if lower.endswith(".bz2"):
        return bz2.open(path, "rb")
    return open(path, "rb")


def _data_lines(path: Path, name: str) -> Iterator[tuple[int, list[bytes]]]:
    """``(line number, tokens)`` of each line holding data (comments and blanks skipped)."""
    with _open(path, name) as f:
        for number, line in enumerate(f, start=1):
            tokens = line.split(b"#", 1)[0].split()
            if tokens:
                yield number, tokens


def _show(token: bytes) -> str:
    text = token.decode("utf-8", "replace")
    return repr(text if len(text) <= 30 else text[:27] + "...")


def _line_fault(tokens: list[bytes]) -> str | None:
    """What is wrong with one line's tokens, or None."""
    try:
        float(tokens[0])
    except ValueError:
        return f"label {_show(tokens[0])} is not a number"
    features = tokens[1:]
    if features and features[0].startswith(b"qid:"):
        try:
            int(features[0][4:])
        except ValueError:
            return f"query id {_show(features[0])} is not an integer"
        features = features[1:]
    previous = -1
    for token in features:
        index_text, colon, value_text = token.partition(b":")
        if not colon:
            return f"{_show(token)} is not index:value"
        try:
            index = int(index_text)
        except ValueError:
            return f"feature index {_show(index_text)} in {_show(token)} is not an integer"
        if index < 0:
            return f"feature index {index} is negative"
        if index > MAX_INDEX:
            return f"feature index {index} is beyond the largest supported, {MAX_INDEX}"
        if index <= previous:
            return f"feature index {index} follows {previous}; indices must be increasing"
        previous = index
        try:
            float(value_text)
        except ValueError:
            return f"value {_show(value_text)} of feature {index} is not a number"
    return None


def _first_fault(path: Path, name: str) -> tuple[int, str] | None:
    """``(line number, fault)`` of the first malformed line, or None."""
    for number, tokens in _data_lines(path, name):
        fault = _line_fault(tokens)
        if fault is not None:
            return number, fault
    return None


def _line_of_row(path: Path, name: str, row: int) -> int:
    """The line number of data row ``row`` (0-based)."""
    for k, (number, _) in enumerate(_data_lines(path, name)):
        if k == row:
            return number
    return 0


def load_svmlight(
    path: Path,
    name: str,
    zero_based: bool | None = None,
    n_features: int | None = None,
) -> Dataset:
    """Read an svmlight/libsvm file into a :class:`Dataset` whose ``X`` is CSR float64.

    Parameters
    ----------
    zero_based : bool, optional
        Whether index 0 is the first column. Default: zero-based if any index is 0
        (scikit-learn's ``"auto"``). The answer is kept in ``Dataset.first_index``.
    n_features : int, optional
        The columns wanted (a model's): a file with fewer is padded with zero columns, an
        index beyond them is refused naming its line.
    """
    from sklearn.datasets import load_svmlight_file

    with reading(name):
        try:  # raw indices: zero_based=True keeps them as written
            X, y, *_ = load_svmlight_file(str(path), dtype=np.float64, zero_based=True)
        except (ValueError, OverflowError, UnicodeDecodeError) as exc:
            found = _first_fault(path, name)
            if found is None:
                raise DataError(f"{name}: not a valid svmlight/libsvm file ({exc})") from None
            number, fault = found
            raise DataError(f"{name}: line {number}: {fault}") from None
        if X.shape[0] == 0:
            raise DataError(f"{name}: no samples (no data lines, only blanks or comments)")
        has_zero = bool(X.nnz) and int(X.indices.min()) == 0
        zero = first_stored(X, X.indices == 0) if zero_based is False and has_zero else None
        if zero is not None:
            line = _line_of_row(path, name, zero[0])
            raise DataError(
                f"{name}: line {line}: feature index 0 in a file read as one-based",
                [("zero_based", "True")],
            )
        first = 0 if zero_based or (zero_based is None and has_zero) else 1
        if first == 1:  # (n, max index) one-based: index i is column i - 1, shifted in place
            X.indices -= 1
            X = with_columns(X, max(X.shape[1] - 1, 1))
        if n_features is not None:
            X = fit_columns(
                X,
                n_features,
                lambda row, col: (
                    f"{name}: line {_line_of_row(path, name, row)}: feature "
                    f"index {col + first} is beyond the model's {n_features} features "
                    f"(indices {first} to {n_features - 1 + first})"
                ),
            )
        _check_values(X, y, path, name, first)
    return Dataset(X, y.astype(np.int64), name, first_index=first)  # (n,) integral labels


def _check_values(X: sp.csr_matrix, y: np.ndarray, path: Path, name: str, first: int) -> None:
    """Refuse NaN or inf features and labels that are not integers, naming the line."""
    nonfinite = first_stored(X, ~np.isfinite(X.data))
    if nonfinite is not None:
        row, col, k = nonfinite
        raise DataError(
            f"{name}: line {_line_of_row(path, name, row)}: value {X.data[k]} of feature "
            f"{col + first}; features must be finite"
        )
    bad = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)) | (np.abs(y) >= 2**53))
    if bad.size:
        row = int(bad[0])
        raise DataError(
            f"{name}: line {_line_of_row(path, name, row)}: label {y[row]}; "
            "svmlight labels must be integers"
        )
