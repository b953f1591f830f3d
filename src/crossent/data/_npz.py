"""``.npz`` archives of features ``X`` and labels ``y``, read without unpickling."""

from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any

import numpy as np

from ._dataset import DataError, Dataset, as_float, label_array, reading, scale_ubyte

_NPY_MAGIC = b"\x93NUMPY"
# The most a member may expand, per compressed byte: deflate's best case is 1032:1; a
# larger claim is a corrupted or hostile archive, refused before anything is allocated.
MAX_EXPANSION = 1032
_ARCHIVE_FAULTS = (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError)


SPARSE_KEYS = ("format", "shape", "indptr", "indices", "data")  # in the order they are read


def load_npz(
    path: Path,
    name: str,
    require_labels: bool,
    labels: str | None = None,
    n_features: int | None = None,
) -> Dataset:
    """A dense ``.npz`` (``X``, ``y``) or a sparse one (``scipy.sparse.save_npz``'s keys)."""
    with reading(name):
        with open(path, "rb") as f:
            if f.read(len(_NPY_MAGIC)) == _NPY_MAGIC:
                raise DataError(f"{name}: a single .npy array, expected an .npz with X and y")
        try:
            archive = zipfile.ZipFile(path)
        except (*_ARCHIVE_FAULTS, ValueError) as exc:
            raise DataError(f"{name}: not a valid .npz archive ({exc})") from None
        with archive:
            members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
            held = ", ".join(members) or "nothing"
            if "X" not in members and all(key in members for key in SPARSE_KEYS):
                from ._sparse_npz import load_sparse_npz

                return load_sparse_npz(
                    archive, members, path, name, require_labels, labels, n_features
                )
            if labels is not None:
                raise ValueError("labels= does not apply to a dense .npz file")
            if "X" not in members:
                raise DataError(
                    f"{name}: no array 'X' (the archive holds: {held}), nor the arrays of a "
                    f"sparse matrix ({', '.join(SPARSE_KEYS)})"
                )
            disk_size = path.stat().st_size
            raw_X = npz_member(archive, members["X"], "X", name, disk_size)
            raw_y = None
            if "y" in members:
                raw_y = npz_member(archive, members["y"], "y", name, disk_size)
    if raw_y is None and require_labels:
        raise DataError(
            f"{name}: no array 'y' with the labels (the archive holds: {held})",
            [("require_labels", "False")],
        )
    X, image_shape = _npz_features(raw_X, name)
    y = None if raw_y is None else label_array(raw_y, name, "array 'y'")
    return Dataset(X, y, name, image_shape)


def npz_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, name: str, disk_size: int
) -> np.ndarray:
    """One ``.npy`` member, read without unpickling once its header's claim (shape and
    dtype) is checked against the member's size, and that size against the bytes on disk."""
    what = f"{name}: array {key!r}"
    if info.compress_size > disk_size or info.file_size > MAX_EXPANSION * max(
        info.compress_size, 1
    ):
        raise DataError(
            f"{what} claims {info.file_size} bytes from {info.compress_size} compressed in a "
            f"{disk_size}-byte file; the archive is corrupted"
        )
    try:
        with archive.open(info) as member:
            npy_claim(
                member,
                what,
                info.file_size,
                "the archive",
                f"{what} is an object array; crossent loads .npz files with "
                "allow_pickle=False and never unpickles",
            )
        with archive.open(info) as member:
            return np.asarray(np.lib.format.read_array(member, allow_pickle=False))
    except ValueError as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{what} cannot be read ({exc})") from None
    except _ARCHIVE_FAULTS as exc:
        raise DataError(f"{what} is corrupted ({exc})") from None


def npy_claim(
    stream: IO[bytes], what: str, total: int, where: str, object_fault: str
) -> tuple[tuple[int, ...], np.dtype[Any], bool]:
    """The shape, dtype and Fortran order an ``.npy`` stream's header claims (versions 1
    and 2), once checked: not an object array (``object_fault`` is the message), and
    exactly the bytes present after the header, the stream ending at position ``total``
    (``where`` names what holds them). Raises DataError, or numpy's ValueError for a
    header it cannot parse."""
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
    else:
        raise DataError(f"{what}: .npy format version {version} is not supported")
    shape, dtype = tuple(int(s) for s in shape), np.dtype(dtype)
    if dtype.hasobject:
        raise DataError(object_fault)
    available = total - stream.tell()
    expected = math.prod(shape) * dtype.itemsize
    if expected != available:
        raise DataError(
            f"{what}: its header says shape {shape} of {dtype} ({expected} bytes), "
            f"{where} holds {available}"
        )
    return shape, dtype, bool(fortran)


def _npz_features(raw: np.ndarray, name: str) -> tuple[np.ndarray, tuple[int, ...] | None]:
    if raw.dtype.kind not in "biuf":
        raise DataError(f"{name}: array 'X' has dtype {raw.dtype}; features must be numeric")
    if raw.ndim == 2:
        return as_float(raw), None
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
    X = scale_ubyte(flat) if raw.dtype == np.uint8 else as_float(flat).astype(np.float32)
    return X, tuple(int(s) for s in image_shape)
