"""``.npz`` archives of features ``X`` and labels ``y``, read without unpickling."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ._dataset import DataError, Dataset, as_float, label_array, reading, scale_ubyte


def load_npz(path: Path, name: str, require_labels: bool) -> Dataset:
    with reading(name):
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
    y = None if raw_y is None else label_array(raw_y, name, "array 'y'")
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
