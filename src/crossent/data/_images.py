"""Image folders: one sub-folder per class, decoded with Pillow into flattened rows."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ._dataset import DataError, Dataset, labels_from_strings, reading, scale_ubyte

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
"""File suffixes (case-insensitive) read from the class folders of an image directory."""


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
    return scale_ubyte(np.asarray(img, dtype=np.uint8).reshape(-1))


def _bad_image(file: Path, exc: BaseException, on_bad_image: str) -> None:
    message = f"{file}: cannot read image ({type(exc).__name__}: {exc})"
    if on_bad_image == "error":
        raise DataError(message) from None
    warnings.warn(f"{message}; skipped", UserWarning, stacklevel=4)


def load_folder(
    path: Path, name: str, image_size: tuple[int, int] | None, on_bad_image: str
) -> Dataset:
    from PIL import Image

    with reading(name):
        class_dirs = sorted(p for p in path.iterdir() if p.is_dir() and p.name[:1] != ".")
    if len(class_dirs) < 2:
        found = ", ".join(repr(d.name) for d in class_dirs) or "none"
        raise DataError(
            f"{name}: found {len(class_dirs)} class folder(s) ({found}); an image folder "
            "needs one sub-folder per class and at least two classes"
        )
    files: list[tuple[Path, str]] = []
    with reading(name):
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
    return Dataset(X, labels_from_strings(kept), name, image_shape)
