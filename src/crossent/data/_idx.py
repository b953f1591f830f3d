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
    return len(head) == 4 and head[:2] == b"\0\0" and head[2] in IDX_DTYPES and head[3] > 0


def _read_idx(path: Path, name: str) -> np.ndarray:
    """Read an IDX file (plain or gzip) whose data size must match its header exactly."""
    with reading(name), open(path, "rb") as raw:
        gzipped = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        stream: Any = gzip.GzipFile(fileobj=raw) if gzipped else raw
        magic = stream.read(4)
        if not is_idx_magic(magic):
            raise DataError(f"{name}: not an IDX file (magic number {magic.hex() or 'missing'})")
        dtype, ndim = IDX_DTYPES[magic[2]], magic[3]
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


def load_idx(path: Path, name: str, labels: Any, require_labels: bool) -> Dataset:
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
    X = scale_ubyte(flat) if images.dtype == np.uint8 else as_float(flat)

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
    y = label_array(_read_idx(labels_path, labels_name), labels_name, "the IDX labels")
    if len(y) != len(X):
        raise DataError(
            f"{name}: {len(X)} images but the labels file {labels_name} has {len(y)} labels"
        )
    return Dataset(X, y, name, image_shape)
