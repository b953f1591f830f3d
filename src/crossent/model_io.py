"""Safe model files: named arrays plus JSON metadata in one safetensors file.

A crossent model file is a `safetensors <https://github.com/huggingface/safetensors>`_ file
whose header carries one metadata entry, ``"crossent"``: a JSON object holding the caller's
metadata and four bookkeeping keys,

- ``"format"``: always ``"crossent-model"``,
- ``"format_version"``: :data:`FORMAT_VERSION`,
- ``"crossent_version"``: the ``__version__`` that wrote the file,
- ``"arrays"``: ``{name: {"shape": [...], "dtype": "float64"}}`` for every array stored.

Loading parses the header with :mod:`json` and the tensors with safetensors; nothing in a
model file is ever executed (no pickle). Reading is bounded by what the header implies,
checked against the file's size first, and arrays hold finite real numbers only. Writes
are atomic: a file either holds a complete model or is not replaced at all.

Examples
--------
>>> import os, tempfile
>>> import numpy as np
>>> from crossent.model_io import load_model, save_model
>>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
>>> save_model(path, {"W": np.eye(2)}, {"classes": np.array(["cat", "dog"])})
>>> arrays, meta = load_model(path)
>>> arrays["W"]
array([[1., 0.],
       [0., 1.]])
>>> meta["classes"], meta["format_version"]
(['cat', 'dog'], 1)
"""

from __future__ import annotations

import json
import os
import stat
import struct
from collections.abc import Mapping
from typing import Any, BinaryIO, NoReturn

import numpy as np
import safetensors.numpy

from crossent._atomic import write_atomic
from crossent._version import __version__

__all__ = ["FORMAT_VERSION", "ModelFileError", "load_model", "save_model"]

FORMAT_VERSION = 1
"""Version of the crossent model file layout written by :func:`save_model`."""

_FORMAT_NAME = "crossent-model"
_METADATA_KEY = "crossent"
_BOOKKEEPING_KEYS = ("format", "format_version", "crossent_version", "arrays")
# Numpy dtypes that safetensors.numpy can both write and read back.
# Real numbers only: a complex array would lose its imaginary part wherever a model is used.
_SUPPORTED_DTYPES = frozenset(
    "float64 float32 float16 int64 uint64 int32 uint32 int16 uint16 int8 uint8 bool".split()
)
_MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit


class ModelFileError(ValueError):
    """A model file is missing, truncated, corrupted, of another format version, or not a
    crossent model."""


# --------------------------------------------------------------------------- saving


def save_model(
    path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray], metadata: Mapping[str, Any]
) -> None:
    """Write named arrays and JSON metadata to a crossent model file, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Target file, conventionally ``*.safetensors``. Its directory must exist. An existing
        file is replaced only once the new one is completely written and synced to disk.
    arrays : mapping of str to numpy.ndarray
        The model's arrays, e.g. ``{"coef": (n_classes, n_features), "intercept":
        (n_classes,)}``. Dtypes: float16/32/64, (u)int8/16/32/64, bool; floating arrays
        must be finite (:func:`load_model` refuses NaN and inf).
    metadata : mapping of str to JSON-like values
        Anything JSON can hold. numpy scalars become Python scalars and numpy arrays
        become (nested) lists, so class labels given as ``np.array([0, 1])`` or
        ``np.array(["cat", "dog"])`` come back from :func:`load_model` as lists. Tuples
        come back as lists. Dictionary keys must be strings. Float NaN and ±inf are kept
        (as JSON's ``NaN``/``Infinity`` extension, which :mod:`json` reads back). The keys
        ``format``, ``format_version``, ``crossent_version`` and ``arrays`` are written
        by this function; values given for them are replaced, so the metadata returned by
        :func:`load_model` can be saved again unchanged.

    Raises
    ------
    TypeError
        If an array is not a numpy array or a metadata value is not JSON-serialisable
        (the message names the key).
    ValueError
        If an array name is invalid, an array's dtype is not supported, or a floating
        array holds NaN or inf.
    OSError
        If the file cannot be written; no partial or temporary file is left behind.

    Notes
    -----
    Saving the same arrays and metadata twice gives byte-identical files: JSON keys are
    sorted and safetensors orders tensors deterministically. The write goes to a hidden
    temporary file in the target's directory, which is flushed, fsync-ed and then moved
    over the target with :func:`os.replace`; on any exception (``KeyboardInterrupt``
    included) the temporary file is removed and the target is untouched.
    """
    path = os.fspath(path)
    tensors = _check_arrays(arrays)
    header: dict[str, Any] = {
        key: _to_json(value, f"metadata[{key!r}]")
        for key, value in _check_mapping(metadata, "metadata").items()
        if key not in _BOOKKEEPING_KEYS
    }
    header.update(
        format=_FORMAT_NAME,
        format_version=FORMAT_VERSION,
        crossent_version=__version__,
        arrays={
            name: {"shape": list(arr.shape), "dtype": arr.dtype.name}
            for name, arr in sorted(tensors.items())
        },
    )
    text = json.dumps(header, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    payload = safetensors.numpy.save(tensors, metadata={_METADATA_KEY: text})
    write_atomic(path, payload)


def _check_mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{where} must be a dict, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise TypeError(f"{where} keys must be strings, got {key!r} ({type(key).__name__})")
    return value


def _check_arrays(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    tensors = {}
    for name, arr in _check_mapping(arrays, "arrays").items():
        if not name or name == "__metadata__":
            raise ValueError(f"arrays: {name!r} is not a valid array name")
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"arrays[{name!r}] must be a numpy array, got {type(arr).__name__}")
        if arr.dtype.name not in _SUPPORTED_DTYPES:
            raise ValueError(
                f"arrays[{name!r}] has dtype {arr.dtype}, which a model file cannot store "
                f"(supported: {', '.join(sorted(_SUPPORTED_DTYPES))})"
            )
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise ValueError(
                f"arrays[{name!r}] holds NaN or inf, which a model file does not store"
            )
        # not np.ascontiguousarray, which turns a 0-d array into shape (1,)
        tensors[name] = arr if arr.flags.c_contiguous else arr.copy(order="C")
    return tensors


def _to_json(value: Any, where: str) -> Any:
    """Convert ``value`` to plain JSON types (dict, list, str, int, float, bool, None)."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biufUS":
            raise TypeError(
                f"{where} is a numpy array of dtype {value.dtype}, not JSON-serialisable"
            )
        return _to_json(value.tolist(), where)
    if isinstance(value, np.generic):
        return _to_json(value.item(), where)
    if isinstance(value, bytes):
        raise TypeError(f"{where} is bytes, not JSON-serialisable; decode it to str first")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"{where} holds a lone surrogate at position {exc.start}, which UTF-8 cannot encode"
            ) from None
        return value
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, Mapping):
        return {k: _to_json(v, f"{where}[{k!r}]") for k, v in _check_mapping(value, where).items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"{where} is a {type(value).__name__}, not JSON-serialisable")


# --------------------------------------------------------------------------- loading


def load_model(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a crossent model file written by :func:`save_model`.

    Parameters
    ----------
    path : str or os.PathLike
        The model file: a regular file (not a directory, device, pipe or socket).

    Returns
    -------
    arrays : dict of str to numpy.ndarray
        Writeable copies of the stored arrays, with their stored shapes and dtypes.
    metadata : dict
        The saved metadata, including the bookkeeping keys ``format``, ``format_version``,
        ``crossent_version`` and ``arrays``. numpy arrays saved in the metadata come back
        as lists.

    Raises
    ------
    ModelFileError
        If the file is missing or unreadable, not a regular file, empty, truncated, longer
        than its header says, corrupted, not a safetensors file (a pickle or a zip archive
        is recognised and refused), a safetensors file without crossent metadata, of
        another format version, if its arrays disagree with the metadata's ``arrays``
        record, or if an array is complex or holds NaN or inf. The message names the file
        and the fault.

    Notes
    -----
    Nothing is executed while loading: the header is parsed as JSON and the tensor bytes
    are copied into numpy arrays of the dtype the header names. Reading is bounded: the
    8-byte header length is checked against the file's size before the header is read,
    and the array data is read only once its size, implied by the header, matches the
    bytes that follow. Signatures of other formats (pickle, zip) are looked for only to
    explain a file whose safetensors header does not parse.
    """
    name = os.fspath(path)
    data, header = _read_safetensors(name)
    meta = _crossent_metadata(name, header)
    try:
        loaded = safetensors.numpy.load(data)
    except Exception as exc:  # SafetensorError, or KeyError for a dtype numpy lacks
        raise ModelFileError(f"{name}: corrupted safetensors file ({exc})") from None
    arrays = {key: np.array(value, copy=True) for key, value in loaded.items()}
    _check_against_record(name, arrays, meta["arrays"])
    _check_values(name, arrays)
    return arrays, meta


def _read_safetensors(name: str) -> tuple[bytes, dict[str, Any]]:
    """The file's bytes and its parsed safetensors header, reading no more than it implies."""
    try:
        mode = os.stat(name).st_mode
        if not stat.S_ISREG(mode):  # before open: a FIFO would block
            kind = (
                "a directory"
                if stat.S_ISDIR(mode)
                else "not a regular file (a device, pipe or socket)"
            )
            raise ModelFileError(f"{name}: is {kind}, not a model file")
        with open(name, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            return _read_parts(name, f, size)
    except FileNotFoundError:
        raise ModelFileError(f"{name}: no such model file") from None
    except IsADirectoryError:
        raise ModelFileError(f"{name}: is a directory, not a model file") from None
    except PermissionError:
        raise ModelFileError(f"{name}: permission denied") from None
    except OSError as exc:
        raise ModelFileError(f"{name}: cannot read model file ({exc.strerror or exc})") from None


def _read_parts(name: str, f: BinaryIO, size: int) -> tuple[bytes, dict[str, Any]]:
    head = f.read(8)
    if not head:
        raise ModelFileError(f"{name}: file is empty, not a crossent model file")
    if len(head) < 8:
        _refuse_unparsed(
            name, head, f"truncated: {len(head)} bytes, less than the 8-byte header length"
        )
    (header_len,) = struct.unpack("<Q", head)
    if header_len > _MAX_HEADER_BYTES:
        _refuse_unparsed(
            name, head, f"not a safetensors file (header length field says {header_len} bytes)"
        )
    if 8 + header_len > size:
        _refuse_unparsed(
            name,
            head,
            f"truncated or not a safetensors file: header says {header_len} bytes of JSON, "
            f"file has {max(size - 8, 0)} after the length field",
            f.read(min(header_len, 64)),
        )
    text = f.read(header_len)
    if len(text) < header_len:
        raise ModelFileError(f"{name}: truncated while reading: the file shrank")
    try:
        header = json.loads(text.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        _refuse_unparsed(name, head, f"corrupted header, not valid JSON ({exc})", text)
    if not isinstance(header, dict):
        _refuse_unparsed(name, head, "corrupted header, not a JSON object", text)
    expected = _data_length(name, header)
    data_len = size - 8 - header_len
    if expected != data_len:
        fault = "truncated" if data_len < expected else "corrupted (trailing bytes)"
        raise ModelFileError(
            f"{name}: {fault}: header says {expected} bytes of array data, file has {data_len}"
        )
    f.seek(0)  # the checked size, read once into one buffer (no concatenated copy)
    data = f.read(size + 1)
    if len(data) != size:
        raise ModelFileError(f"{name}: changed while being read")
    return data, header


def _refuse_unparsed(name: str, head: bytes, fault: str, text: bytes = b"") -> NoReturn:
    """Refuse a file whose safetensors header does not parse, saying what it is if known.

    ``text`` is what follows the length field. When it opens like JSON the file is a
    damaged or cut safetensors file, even if the length field begins 0x80 0x02-0x05 as a
    pickle does (a header of 0x0580 bytes does): only the zip signature, four fixed bytes,
    is trusted then.
    """
    pickle_like = head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
    if pickle_like and not text.lstrip().startswith(b"{"):
        raise ModelFileError(
            f"{name}: not a crossent model file (it looks like a Python pickle; "
            "crossent never loads pickles)"
        )
    if head[:4] == b"PK\x03\x04":
        raise ModelFileError(
            f"{name}: not a crossent model file (it is a zip archive, e.g. a .npz or "
            "torch.save file)"
        )
    raise ModelFileError(f"{name}: {fault}")


def _data_length(name: str, header: dict[str, Any]) -> int:
    """The number of array-data bytes the header's ``data_offsets`` imply."""
    end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise ModelFileError(f"{name}: corrupted header, bad entry for array {key!r}")
        end = max(end, offsets[1])
    return end


def _crossent_metadata(name: str, header: dict[str, Any]) -> dict[str, Any]:
    raw = header.get("__metadata__")
    text = raw.get(_METADATA_KEY) if isinstance(raw, dict) else None
    if not isinstance(text, str):
        raise ModelFileError(
            f"{name}: not a crossent model file (a safetensors file without "
            f"{_METADATA_KEY!r} metadata)"
        )
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        raise ModelFileError(
            f"{name}: corrupted crossent metadata, not valid JSON ({exc})"
        ) from None
    if not isinstance(meta, dict):
        raise ModelFileError(f"{name}: corrupted crossent metadata, not a JSON object")
    if meta.get("format") != _FORMAT_NAME:
        raise ModelFileError(
            f"{name}: not a crossent model file (format is {meta.get('format')!r}, "
            f"expected {_FORMAT_NAME!r})"
        )
    version = meta.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:  # not True, not 1.0
        raise ModelFileError(
            f"{name}: format version {version!r} is not supported by this crossent "
            f"(supports {FORMAT_VERSION})"
        )
    if not isinstance(meta.get("arrays"), dict):
        raise ModelFileError(f"{name}: corrupted crossent metadata, no 'arrays' record")
    if not isinstance(meta.get("crossent_version", ""), str):
        raise ModelFileError(
            f"{name}: corrupted crossent metadata, 'crossent_version' must be a string, "
            f"got {meta.get('crossent_version')!r}"
        )
    return meta


def _check_against_record(name: str, arrays: dict[str, np.ndarray], record: dict[str, Any]) -> None:
    """Every array in the file must match the metadata's record, and vice versa."""
    missing = sorted(set(record) - set(arrays))
    extra = sorted(set(arrays) - set(record))
    if missing:
        raise ModelFileError(f"{name}: metadata lists array(s) {missing} that the file lacks")
    if extra:
        raise ModelFileError(f"{name}: file holds array(s) {extra} that the metadata does not list")
    for key, arr in sorted(arrays.items()):
        entry = record[key]
        shape = entry.get("shape") if isinstance(entry, dict) else None
        dtype = entry.get("dtype") if isinstance(entry, dict) else None
        if not isinstance(shape, list) or tuple(shape) != arr.shape:
            raise ModelFileError(
                f"{name}: array {key!r} has shape {arr.shape}, metadata says {shape!r}"
            )
        if dtype != arr.dtype.name:
            raise ModelFileError(
                f"{name}: array {key!r} has dtype {arr.dtype.name}, metadata says {dtype!r}"
            )


def _check_values(name: str, arrays: dict[str, np.ndarray]) -> None:
    """Only real numbers, and floating arrays finite: what :func:`save_model` writes."""
    for key, arr in sorted(arrays.items()):
        if arr.dtype.name not in _SUPPORTED_DTYPES:
            raise ModelFileError(
                f"{name}: array {key!r} has dtype {arr.dtype.name}; a model file holds real "
                "numbers only"
            )
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise ModelFileError(f"{name}: corrupted: array {key!r} holds NaN or inf")
