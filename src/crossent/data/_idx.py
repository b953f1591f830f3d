"""IDX files as MNIST ships them (``train-images-idx3-ubyte``, optionally gzipped)."""

from __future__ import annotations

import gzip
import math
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from ._dataset import GZIP_MAGIC, DataError, Dataset, as_float, label_array, reading, scale_ubyte

IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def is_idx_magic(head: bytes) -> bool:
    """Whether the first 4 bytes are an IDX magic number (any data type code, which
    :func:`load_idx` then checks, so that a wrong one is named rather than unrecognised)."""
    return len(head) == 4 and head[:2] == b"\0\0" and head[3] > 0


_READ_CHUNK = 1 << 20  # bytes decompressed at a time


def idx_header(stream: Any, name: str) -> tuple[np.dtype[Any], tuple[int, ...]]:
    """The dtype and dims an IDX header claims, read from the start of ``stream``."""
    magic = stream.read(4)
    if is_idx_magic(magic) and magic[2] not in IDX_DTYPES:
        codes = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DataError(f"{name}: unknown IDX data type code 0x{magic[2]:02X} (known: {codes})")
    if not is_idx_magic(magic):
        raise DataError(f"{name}: not an IDX file (magic number {magic.hex() or 'missing'})")
    dtype, ndim = IDX_DTYPES[magic[2]], magic[3]
    if ndim > 4:
        raise DataError(
            f"{name}: an IDX array of {ndim} dimensions; expected labels (n,), features "
            "(n, d) or images (n, h, w) or (n, h, w, c)"
        )
    dims_bytes = stream.read(4 * ndim)
    if len(dims_bytes) != 4 * ndim:
        raise DataError(f"{name}: truncated IDX header ({ndim} dimensions announced)")
    dims = struct.unpack(f">{ndim}I", dims_bytes)
    return dtype, tuple(int(d) for d in dims)


def _read_idx(path: Path, name: str) -> np.ndarray:
    """Read an IDX file (plain or gzip) whose data size must match its header exactly.

    Nothing is allocated from the header's claim: a plain file's size is compared with it
    first, and a gzip stream is decompressed in chunks, stopping as soon as it has more
    bytes than the header announces.
    """
    with reading(name), open(path, "rb") as raw:
        gzipped = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        stream: Any = gzip.GzipFile(fileobj=raw) if gzipped else raw
        dtype, dims = idx_header(stream, name)
        ndim = len(dims)
        expected = math.prod(dims) * dtype.itemsize
        data: bytes | bytearray = b""
        if gzipped:
            data, actual = _read_at_most(stream, expected)
        else:
            actual = os.fstat(raw.fileno()).st_size - 4 - 4 * ndim
            if actual == expected:
                data = raw.read(expected)
        if actual != expected:
            more = "more than " if actual > expected + _READ_CHUNK else ""
            raise DataError(
                f"{name}: IDX header says {expected} bytes of data "
                f"(dims {'×'.join(map(str, dims))}), file has {more}{actual}"
            )
    return np.frombuffer(data, dtype=dtype).reshape(dims)


def _read_at_most(stream: Any, expected: int) -> tuple[bytearray, int]:
    """Up to ``expected + 1`` bytes of ``stream``, and its length: exact up to ``expected``
    plus one chunk, beyond that only "more". Memory grows with the bytes really there."""
    data = bytearray()
    while len(data) <= expected:
        chunk = stream.read(min(_READ_CHUNK, expected + 1 - len(data)) or 1)
        if not chunk:
            return data, len(data)
        data += chunk
    rest = len(stream.read(_READ_CHUNK))
    exact = rest < _READ_CHUNK  # else it has even more: stop reading
    return data, len(data) + rest + (0 if exact else 1)


def _idx_label_candidates(path: Path) -> list[Path]:
    names: list[str] = []
    replacements = [("images-idx3", "labels-idx1"), ("images.idx3", "labels.idx1")]
    for old, new in [*replacements, ("images", "labels")]:
        if old in path.name:
            guess = path.name.replace(old, new)
            other = guess[:-3] if guess.endswith(".gz") else guess + ".gz"
            names += [n for n in (guess, other) if n not in names]
    return [path.with_name(n) for n in names]


def idx_image_shape(shape: tuple[int, ...], name: str) -> tuple[int, ...] | None:
    """The image shape of IDX images of ``shape`` (None for features (n, d)); a 1-channel
    image is (h, w). Raises for a 1-D array or a channel count other than 1 or 3."""
    if len(shape) == 1:
        raise DataError(
            f"{name}: a 1-D IDX array (a labels file?); expected images (n, h, w) as the source"
        )
    if len(shape) == 4 and shape[3] not in (1, 3):
        raise DataError(f"{name}: IDX images of shape {shape} need 1 or 3 channels")
    image_shape = tuple(int(s) for s in shape[1:]) if len(shape) > 2 else None
    if image_shape is not None and len(image_shape) == 3 and image_shape[2] == 1:
        image_shape = image_shape[:2]
    return image_shape


def idx_features(images: np.ndarray, name: str) -> tuple[np.ndarray, tuple[int, ...] | None]:
    """The features (rows flattened; bytes scaled to [0, 1]) and image shape of IDX images."""
    image_shape = idx_image_shape(images.shape, name)
    flat = images.reshape(images.shape[0], -1)
    X = scale_ubyte(flat) if images.dtype == np.uint8 else as_float(flat)
    return X, image_shape


def idx_labels_for(
    path: Path, name: str, labels: Any, require_labels: bool, n: int
) -> np.ndarray | None:
    """The labels of the ``n`` images of ``path``: the file ``labels``, else one found next
    to it by name; None where there is none and they are not required."""
    if labels is not None:
        labels_path = Path(os.fspath(labels))
    else:
        candidates = _idx_label_candidates(path)
        found = [c for c in candidates if c.is_file()]
        if not found:
            if require_labels:
                looked = ", ".join(c.name for c in candidates) or "no name to derive"
                raise DataError(
                    f"{name}: no labels file found (looked for {looked})",
                    [("labels", "FILE"), ("require_labels", "False")],
                )
            return None
        labels_path = found[0]
    labels_name = os.fspath(labels_path)
    y = label_array(_read_idx(labels_path, labels_name), labels_name, "the IDX labels")
    if len(y) != n:
        raise DataError(f"{name}: {n} images but the labels file {labels_name} has {len(y)} labels")
    return y


def load_idx(path: Path, name: str, labels: Any, require_labels: bool) -> Dataset:
    images = _read_idx(path, name)
    X, image_shape = idx_features(images, name)
    y = idx_labels_for(path, name, labels, require_labels, len(X))
    return Dataset(X, y, name, image_shape)
