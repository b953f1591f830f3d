"""Images decoded with Pillow into flattened rows: a folder with one sub-folder per class,
a folder of images alone, or one image file."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ._dataset import DataError, Dataset, labels_from_strings, reading, scale_ubyte
from ._npz import MAX_EXPANSION

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
"""File suffixes (case-insensitive) read from the class folders of an image directory."""


# No image format packs more pixels into a byte than a 1-bit image under deflate's best
# ratio (1032:1): 8 × 1032 pixels. An image whose header claims more is not what it says.
_MAX_PIXELS_PER_BYTE = 8 * MAX_EXPANSION
_SMALL_IMAGE = 1 << 16  # pixels allowed whatever the file size (tiny files, fixed headers)


def _check_claim(size: tuple[int, int], file: Path) -> None:
    """Refuse a header's ``(width, height)`` that the file's bytes cannot hold."""
    from PIL import Image

    pixels = size[0] * size[1]
    if pixels > _SMALL_IMAGE and pixels > _MAX_PIXELS_PER_BYTE * file.stat().st_size:
        raise Image.DecompressionBombError(
            f"its header claims {size[0]}×{size[1]} = {pixels} pixels, more than its "
            f"{file.stat().st_size} bytes can hold; a decompression bomb or a corrupted file"
        )


@contextmanager
def _bomb_checked() -> Iterator[None]:
    """Pillow's decompression-bomb warning (over ``Image.MAX_IMAGE_PIXELS``) as an error."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except Image.DecompressionBombWarning as exc:
            raise Image.DecompressionBombError(str(exc)) from None


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
    from PIL import Image

    if isinstance(exc, Image.DecompressionBombError):  # Pillow's text says what is wrong
        message = f"{file}: cannot read image ({exc})"
    else:
        message = f"{file}: cannot read image ({type(exc).__name__}: {exc})"
    if on_bad_image == "error":
        raise DataError(message) from None
    warnings.warn(f"{message}; skipped", UserWarning, stacklevel=5)


def _image_files(folder: Path) -> list[Path]:
    """The images directly in ``folder``: known suffixes, not hidden, sorted by name."""
    return sorted(
        f
        for f in folder.iterdir()
        if f.suffix.lower() in IMAGE_SUFFIXES and f.name[:1] != "." and f.is_file()
    )


def load_folder(
    path: Path,
    name: str,
    image_size: tuple[int, int] | None,
    on_bad_image: str,
    require_labels: bool,
    image_mode: str | None = None,
) -> Dataset:
    """A folder of class folders (labelled), or of images alone (unlabelled)."""
    with reading(name):
        class_dirs = sorted(p for p in path.iterdir() if p.is_dir() and p.name[:1] != ".")
        loose = _image_files(path)
    if not class_dirs and not loose:
        raise DataError(
            f"{name}: an empty folder: no images ({', '.join(IMAGE_SUFFIXES)}) and no class folders"
        )
    if not class_dirs:
        if require_labels:
            raise DataError(
                f"{name}: {len(loose)} image(s) and no class folders, so no labels (labels "
                "come from one sub-folder per class, named after the class)",
                [("require_labels", "False")],
            )
        return load_images([(f, None) for f in loose], name, image_size, on_bad_image, image_mode)
    if len(class_dirs) < (2 if require_labels else 1):
        found = ", ".join(repr(d.name) for d in class_dirs) or "none"
        raise DataError(
            f"{name}: found {len(class_dirs)} class folder(s) ({found}); an image folder "
            "needs one sub-folder per class and at least two classes"
        )
    files: list[tuple[Path, str | None]] = []
    with reading(name):
        for folder in class_dirs:
            images = _image_files(folder)
            if not images:
                raise DataError(
                    f"{name}: class folder {folder.name!r} has no images "
                    f"({', '.join(IMAGE_SUFFIXES)})"
                )
            files += [(f, folder.name) for f in images]
    return load_images(files, name, image_size, on_bad_image, image_mode)


def load_images(
    files: list[tuple[Path, str | None]],
    name: str,
    image_size: tuple[int, int] | None,
    on_bad_image: str,
    image_mode: str | None = None,
) -> Dataset:
    """Decode ``(file, label or None)`` pairs into one float32 row per image.

    The images are converted to one size (``image_size``, else the most common) and mode
    (``image_mode``, else RGB if any is in colour, else L); if they did not all share
    them, one warning says how many were converted, and to what.
    """
    from PIL import Image

    headers: list[tuple[Path, str | None, tuple[int, int], str, bool]] = []  # pass 1: headers
    for file, label in files:
        try:
            with _bomb_checked(), Image.open(file) as img:
                _check_claim(img.size, file)
                headers.append((file, label, img.size, img.mode, _is_colour(img)))
        except Exception as exc:  # any decoder fault of an untrusted file
            _bad_image(file, exc, on_bad_image)
    colour = image_mode == "RGB" if image_mode else any(h[4] for h in headers)
    sizes = Counter(h[2] for h in headers)
    size = image_size or (sizes.most_common(1)[0][0] if sizes else (1, 1))
    width, height = size
    image_shape = (height, width, 3) if colour else (height, width)
    _warn_converted(headers, name, size, colour, image_shape)

    n_values = len(headers) * math.prod(image_shape)
    try:
        X = np.empty((len(headers), math.prod(image_shape)), dtype=np.float32)  # (n, h·w·c)
    except MemoryError:
        raise DataError(
            f"{name}: {len(headers)} images of shape {image_shape} need {4 * n_values} bytes "
            "as float32, more memory than there is"
        ) from None
    kept: list[str | None] = []
    for file, label, _, _, _ in headers:  # pass 2: decode
        try:
            with _bomb_checked(), Image.open(file) as img:
                X[len(kept)] = _pixels(img, colour, size)
        except Exception as exc:
            _bad_image(file, exc, on_bad_image)
            continue
        kept.append(label)
    missing = sorted({str(label) for _, label in files} - {str(k) for k in kept})
    if not kept:
        raise DataError(f"{name}: no readable images")
    if missing and files[0][1] is not None:
        raise DataError(f"{name}: class folder {missing[0]!r} has no readable images")
    X = X[: len(kept)] if len(kept) == len(X) else X[: len(kept)].copy()
    y = None if kept[0] is None else labels_from_strings([str(k) for k in kept])
    return Dataset(X, y, name, image_shape)


def _warn_converted(
    headers: list[tuple[Path, str | None, tuple[int, int], str, bool]],
    name: str,
    size: tuple[int, int],
    colour: bool,
    image_shape: tuple[int, ...],
) -> None:
    """One warning if the images differ in size or mode, or from a size asked for."""
    modes = {h[3] for h in headers}
    resized = sum(h[2] != size for h in headers)
    if not resized and len(modes) <= 1:
        return
    target = "RGB" if colour else "L"
    converted = sum(h[2] != size or h[3] != target for h in headers)
    warnings.warn(
        f"{name}: {converted} of {len(headers)} images converted to {size[0]}×{size[1]} "
        f"{target} (image shape {image_shape}): the images differ in size or mode",
        UserWarning,
        stacklevel=4,
    )
