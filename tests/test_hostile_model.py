"""Hostile model files (issue #7, section 1): each is refused with one clean line.

Through the command (``crossent predict/evaluate --model F --data digits``, checked by
:func:`tests._hostile.expect_refusal`: exit 1, one ``crossent: error:`` line naming the file
and the field or array, no traceback, nothing written) or through
:func:`crossent.model_io.load_model` (a :class:`ModelFileError` naming the file and the
field). Each starts from a valid digits model and spoils one thing.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.numpy

from _hostile import expect_refusal
from crossent._cli._checkpoint import (
    CHECKPOINT_FILE,
    Checkpoint,
    objective_options,
    save_checkpoint,
)
from crossent._cli._model import MODEL_KIND, check_checkpoint_file, load_classifier
from crossent._cli._parser import TRAIN_DEFAULTS
from crossent._version import __version__
from crossent.data import load_dataset
from crossent.model_io import ModelFileError, load_model, save_model

N_CLASSES, N_FEATURES = 10, 64  # digits


def _arrays(standardize: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "coef": rng.standard_normal((N_CLASSES, N_FEATURES)),  # (C, d)
        "intercept": rng.standard_normal(N_CLASSES),  # (C,)
    }
    if standardize:
        arrays["mean"] = rng.standard_normal(N_FEATURES)
        arrays["scale"] = rng.uniform(0.5, 2.0, N_FEATURES)
    return arrays


def _metadata(standardize: bool = False) -> dict[str, Any]:
    return {
        "kind": MODEL_KIND,
        "classes": list(range(N_CLASSES)),
        "n_features": N_FEATURES,
        "image_shape": [8, 8],
        "feature_names": None,
        "preprocessing": {"standardize": standardize},
        "l2": 1e-4,
        "solver": "lbfgs",
        "fit_intercept": True,
        "training": {"n_iter": 10},
    }


def write_raw(path: Path, arrays: dict[str, np.ndarray], metadata: dict[str, Any]) -> Path:
    """A model file as :func:`save_model` lays it out, but without its checks on the
    arrays (so that complex, integer or NaN arrays can be written)."""
    meta = {
        **metadata,
        "format": "crossent-model",
        "format_version": 1,
        "crossent_version": __version__,
        "arrays": {k: {"shape": list(a.shape), "dtype": a.dtype.name} for k, a in arrays.items()},
    }
    text = json.dumps(meta, sort_keys=True)
    path.write_bytes(safetensors.numpy.save(arrays, metadata={"crossent": text}))
    return path


def test_the_unspoilt_model_predicts(tmp_path):
    """The base of every case below is valid: a refusal is the spoiling's doing."""
    for standardize in (False, True):
        path = tmp_path / f"model-{standardize}.safetensors"
        save_model(path, _arrays(standardize), _metadata(standardize))
        model = load_classifier(path)
        assert model.image_shape == (8, 8) and model.n_features == N_FEATURES
        assert model.preprocessing.standardize is standardize


# --------------------------------------------------------------------------- metadata fields

# case -> (field named in the message, metadata changes); None deletes the key
BAD_METADATA: dict[str, tuple[str, dict[str, Any]]] = {
    "feature_names is a number": ("feature_names", {"feature_names": 5}),
    "feature_names too short": ("feature_names", {"feature_names": ["a", "b"]}),
    "feature_names not strings": ("feature_names", {"feature_names": list(range(64))}),
    "preprocessing is a list": ("preprocessing", {"preprocessing": [1]}),
    "preprocessing missing": ("preprocessing", {"preprocessing": None}),
    "standardize not a bool": ("preprocessing", {"preprocessing": {"standardize": 1}}),
    "image_shape is a number": ("image_shape", {"image_shape": 5}),
    "image_shape is a string": ("image_shape", {"image_shape": "ab"}),
    "image_shape nested": ("image_shape", {"image_shape": [[1], [3]]}),
    "image_shape bools": ("image_shape", {"image_shape": [True, 64]}),
    "image_shape 4 channels": ("image_shape", {"image_shape": [4, 4, 4]}),
    "image_shape wrong size": ("image_shape", {"image_shape": [8, 9]}),
    "classes duplicated": ("classes", {"classes": [0, 0, 1, 2, 3, 4, 5, 6, 7, 8]}),
    "classes unsorted": ("classes", {"classes": [1, 0, 2, 3, 4, 5, 6, 7, 8, 9]}),
    "classes unsorted strings": ("classes", {"classes": list("bacdefghij")}),
    "classes mixed": ("classes", {"classes": [0, "1", 2, 3, 4, 5, 6, 7, 8, 9]}),
    "classes bools": ("classes", {"classes": [False, True] * 5}),
    "classes beyond int64": ("classes", {"classes": [*range(9), 2**70]}),
    "classes too few": ("classes", {"classes": [0, 1]}),
    "classes a string": ("classes", {"classes": "0123456789"}),
    "n_features a bool": ("n_features", {"n_features": True}),
    "n_features a string": ("n_features", {"n_features": "64"}),
    "n_features a float": ("n_features", {"n_features": 64.0}),
    "n_features disagrees with coef": ("n_features", {"n_features": 63}),
    "l2 negative": ("l2", {"l2": -1.0}),
    "l2 NaN": ("l2", {"l2": float("nan")}),
    "l2 a bool": ("l2", {"l2": True}),
    "solver a number": ("solver", {"solver": 5}),
    "fit_intercept a number": ("fit_intercept", {"fit_intercept": 1}),
    "training a string": ("training", {"training": "yes"}),
    "kind missing": ("kind", {"kind": None}),
}


@pytest.mark.parametrize("case", list(BAD_METADATA))
def test_bad_metadata_field(tmp_path, case):
    field, changes = BAD_METADATA[case]
    meta = _metadata()
    for key, value in changes.items():
        if value is None:
            del meta[key]
        else:
            meta[key] = value
    path = tmp_path / "model.safetensors"
    save_model(path, _arrays(), meta)
    line = expect_refusal(
        ["predict", "--model", str(path), "--data", "digits"], names=[str(path)], folder=tmp_path
    )
    assert field in line


# --------------------------------------------------------------------------- arrays

ARRAY_CASES: dict[str, tuple[str, bool, Any]] = {
    # case -> (array named in the message, standardize, how to spoil the arrays)
    "complex coef": ("coef", False, lambda a: {**a, "coef": a["coef"].astype(np.complex64)}),
    "integer coef": ("coef", False, lambda a: {**a, "coef": a["coef"].astype(np.int64)}),
    "bool intercept": ("intercept", False, lambda a: {**a, "intercept": a["intercept"] > 0}),
    "NaN intercept": ("intercept", False, lambda a: {**a, "intercept": _with(a, "intercept")}),
    "inf coef": ("coef", False, lambda a: {**a, "coef": _with(a, "coef", np.inf)}),
    "NaN mean": ("mean", True, lambda a: {**a, "mean": _with(a, "mean")}),
    "zero scale": ("scale", True, lambda a: {**a, "scale": _with(a, "scale", 0.0)}),
    "negative scale": ("scale", True, lambda a: {**a, "scale": -a["scale"]}),
    "scale too small for the data": (
        "scale",
        True,
        lambda a: {**a, "scale": np.full(64, 1e-308)},
    ),
    "integer scale": ("scale", True, lambda a: {**a, "scale": np.ones(64, dtype=np.int32)}),
    "coef 1-D": ("coef", False, lambda a: {**a, "coef": a["coef"].ravel()}),
    "one class": (
        "coef",
        False,
        lambda a: {**a, "coef": a["coef"][:1], "intercept": a["intercept"][:1]},
    ),
    "intercept too short": ("intercept", False, lambda a: {**a, "intercept": a["intercept"][:9]}),
    "coef missing": ("coef", False, lambda a: {"intercept": a["intercept"]}),
    "mean too short": ("mean", True, lambda a: {**a, "mean": a["mean"][:63]}),
    "scale missing": ("scale", True, lambda a: {k: v for k, v in a.items() if k != "scale"}),
    "mean without standardize": ("preprocessing", False, lambda a: {**_arrays(True), **a}),
}


def _with(arrays: dict[str, np.ndarray], key: str, value: float = np.nan) -> np.ndarray:
    spoilt = arrays[key].copy()
    spoilt.flat[3] = value
    return spoilt


@pytest.mark.parametrize("case", list(ARRAY_CASES))
def test_bad_array(tmp_path, case):
    name, standardize, spoil = ARRAY_CASES[case]
    path = write_raw(
        tmp_path / "model.safetensors", spoil(_arrays(standardize)), _metadata(standardize)
    )
    line = expect_refusal(
        ["evaluate", "--model", str(path), "--data", "digits"], names=[str(path)], folder=tmp_path
    )
    assert repr(name) in line or name in line


@pytest.mark.parametrize("field", ["classes", "feature_names"])
def test_lone_surrogate_in_names(tmp_path, field):
    """JSON can hold a lone surrogate, which no output can print: refused at loading."""
    meta = {**_metadata(), "image_shape": None}
    meta[field] = [*(str(k) for k in range(N_CLASSES - 1)), "9\ud800"]
    if field == "feature_names":
        meta[field] = [f"f{k}" for k in range(N_FEATURES - 1)] + ["\udfff"]
    path = write_raw(tmp_path / "model.safetensors", _arrays(), meta)
    line = expect_refusal(
        ["predict", "--model", str(path), "--data", "digits"], names=[str(path)], folder=tmp_path
    )
    assert repr(field) in line


def test_metadata_nested_too_deep(tmp_path):
    path = tmp_path / "model.safetensors"
    deep = "[" * 100_000 + "]" * 100_000
    path.write_bytes(safetensors.numpy.save(_arrays(), metadata={"crossent": deep}))
    with pytest.raises(ModelFileError, match="corrupted crossent metadata") as info:
        load_model(path)
    assert str(path) in str(info.value)


@pytest.fixture(scope="module")
def digits_objective() -> dict[str, Any]:
    data = load_dataset("digits")
    return objective_options(data, l2=1e-4, test_size=0.25, seed=0, standardize=False)


def _checkpoint(tmp_path: Path, objective: dict[str, Any]) -> tuple[Path, dict, dict]:
    arrays = _arrays()
    path = tmp_path / CHECKPOINT_FILE
    checkpoint = Checkpoint(3, arrays["coef"], arrays["intercept"], [2.0, 1.5, 1.2])
    save_checkpoint(
        path,
        checkpoint,
        classes=np.arange(10),
        solver="lbfgs",
        objective=objective,
        options=dict(TRAIN_DEFAULTS),
    )
    arrays, meta = load_model(path)
    return path, arrays, meta


def test_checkpoint_with_nan_intercept_is_not_resumed(tmp_path, digits_objective):
    """``--resume`` reads checkpoints with load_model: its array checks protect it too."""
    path, raw_arrays, meta = _checkpoint(tmp_path, digits_objective)
    raw_arrays["intercept"][0] = np.nan
    write_raw(path, raw_arrays, {k: v for k, v in meta.items() if k != "arrays"})
    line = expect_refusal(
        ["train", "--out", str(tmp_path), "--resume"], names=[str(path)], folder=tmp_path
    )
    assert "'intercept'" in line


@pytest.mark.parametrize("command", [["evaluate"], ["predict", "--proba"]])
def test_weights_that_overflow_on_the_data(tmp_path, command):
    """Finite weights so large that the scores overflow: one line, not NaN probabilities."""
    arrays = _arrays()
    arrays["coef"][:] = 1e308
    path = tmp_path / "model.safetensors"
    save_model(path, arrays, _metadata())
    expect_refusal(
        [*command, "--model", str(path), "--data", "digits"],
        names=[str(path), "'coef'", "overflow"],
        folder=tmp_path,
    )


def test_predicted_labels_refuse_overflowing_weights(tmp_path):
    arrays = _arrays()
    arrays["coef"][:] = 1e308
    path = tmp_path / "model.safetensors"
    save_model(path, arrays, _metadata())
    with pytest.raises(ModelFileError, match="overflow") as info:
        load_classifier(path).predict(load_dataset("digits").X)
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------- checkpoints


def test_a_valid_checkpoint_passes(tmp_path, digits_objective):
    path, arrays, meta = _checkpoint(tmp_path, digits_objective)
    iteration, classes, coef, intercept, curve = check_checkpoint_file(str(path), arrays, meta)
    assert iteration == 3 and curve == [2.0, 1.5, 1.2]
    np.testing.assert_array_equal(classes, np.arange(10))
    np.testing.assert_array_equal(coef, _arrays()["coef"])
    np.testing.assert_array_equal(intercept, _arrays()["intercept"])


# case -> (field named, how to spoil (arrays, meta) in place)
BAD_CHECKPOINTS: dict[str, tuple[str, Any]] = {
    "iteration 0": ("iteration", lambda a, m: m.update(iteration=0)),
    "iteration a bool": ("iteration", lambda a, m: m.update(iteration=True)),
    "iteration a string": ("iteration", lambda a, m: m.update(iteration="3")),
    "not flagged a checkpoint": ("checkpoint", lambda a, m: m.update(checkpoint=1)),
    "solver missing": ("solver", lambda a, m: m.pop("solver")),
    "objective a list": ("objective", lambda a, m: m.update(objective=[1])),
    "objective seed a string": ("objective.seed", lambda a, m: m["objective"].update(seed="0")),
    "objective seed a float": ("objective.seed", lambda a, m: m["objective"].update(seed=0.0)),
    "objective sha not hex": (
        "objective.data_sha256",
        lambda a, m: m["objective"].update(data_sha256="x" * 64),
    ),
    "objective test_size 1.5": (
        "objective.test_size",
        lambda a, m: m["objective"].update(test_size=1.5),
    ),
    "objective standardize a string": (
        "objective.standardize",
        lambda a, m: m["objective"].update(standardize="no"),
    ),
    "objective n_features missing": (
        "objective.n_features",
        lambda a, m: m["objective"].pop("n_features"),
    ),
    "classes duplicated": ("classes", lambda a, m: m.update(classes=[0, *range(9)])),
    "coef integer": ("coef", lambda a, m: a.update(coef=a["coef"].astype(np.int32))),
    "coef other features": ("coef", lambda a, m: a.update(coef=a["coef"][:, :63])),
    "loss_curve 2-D": ("loss_curve", lambda a, m: a.update(loss_curve=np.ones((3, 2)))),
    "loss_curve too short": ("loss_curve", lambda a, m: a.update(loss_curve=np.ones(2))),
}


@pytest.mark.parametrize("case", list(BAD_CHECKPOINTS))
def test_bad_checkpoint(tmp_path, digits_objective, case):
    field, spoil = BAD_CHECKPOINTS[case]
    path, arrays, meta = _checkpoint(tmp_path, digits_objective)
    meta = json.loads(json.dumps(meta))  # a deep copy
    spoil(arrays, meta)
    write_raw(path, arrays, {k: v for k, v in meta.items() if k != "arrays"})
    arrays, meta = load_model(path)
    with pytest.raises(ModelFileError) as info:
        check_checkpoint_file(str(path), arrays, meta)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and field in message and "\n" not in message


# --------------------------------------------------------------------------- the file itself


def _valid_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "valid.safetensors"
    save_model(path, _arrays(), _metadata())
    data = path.read_bytes()
    path.unlink()
    return data


def _header_len(data: bytes) -> int:
    return struct.unpack("<Q", data[:8])[0]


FILES: dict[str, tuple[str, Any]] = {
    # case -> (fault named in the message, bytes of the file from a valid model's bytes)
    "empty": ("empty", lambda d: b""),
    "7 bytes": ("truncated", lambda d: d[:7]),
    "huge header length": ("header length", lambda d: struct.pack("<Q", 2**62) + d[8:]),
    "header beyond the file": ("truncated", lambda d: struct.pack("<Q", len(d)) + d[8:]),
    "header not JSON": (
        "not valid JSON",
        lambda d: d[:8] + b"\xff" * _header_len(d) + d[8 + _header_len(d) :],
    ),
    "header a JSON list": ("not a JSON object", lambda d: struct.pack("<Q", 8) + b"[1,2,3] "),
    "truncated data": ("truncated", lambda d: d[:-1]),
    "trailing bytes": ("trailing bytes", lambda d: d + b"\0" * 8),
    "header nested too deep": (
        "not valid JSON",
        lambda d: struct.pack("<Q", 200_000) + b"[" * 100_000 + b"]" * 100_000,
    ),
    "pickle": ("pickle", lambda d: pickle.dumps({"coef": np.zeros((10, 64))})),
    "pickle protocol 2": ("pickle", lambda d: pickle.dumps([1.0] * 10, protocol=2)),
    "zip": ("zip archive", lambda d: b"PK\x03\x04" + d[4:]),
    "format_version 2": (
        "format version 2",
        lambda d: d.replace(b'\\"format_version\\":1', b'\\"format_version\\":2'),
    ),
}


@pytest.mark.parametrize("case", list(FILES))
def test_bad_file(tmp_path, case):
    fault, make = FILES[case]
    data = make(_valid_bytes(tmp_path))
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    expect_refusal(
        ["predict", "--model", str(path), "--data", "digits"],
        names=[str(path), fault],
        folder=tmp_path,
    )


@pytest.mark.parametrize("version", [2, 0, "1", 1.0, True, None])
def test_format_version_must_be_the_integer_1(tmp_path, version):
    path = tmp_path / "model.safetensors"
    save_model(path, _arrays(), _metadata())
    arrays, meta = load_model(path)
    meta["format_version"] = version
    text = json.dumps(meta, sort_keys=True)
    path.write_bytes(safetensors.numpy.save(arrays, metadata={"crossent": text}))
    with pytest.raises(ModelFileError, match="format version") as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_dev_zero(tmp_path):
    """A character device has no size: refused before anything is read from it."""
    expect_refusal(
        ["predict", "--model", "/dev/zero", "--data", "digits"],
        names=["/dev/zero", "not a regular file"],
        folder=tmp_path,
    )


def test_fifo(tmp_path):
    """Opening a FIFO would block until a writer comes: refused without opening it."""
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    expect_refusal(
        ["predict", "--model", str(fifo), "--data", "digits"],
        names=[str(fifo), "not a regular file"],
        folder=tmp_path,
    )


def test_directory(tmp_path):
    expect_refusal(
        ["evaluate", "--model", str(tmp_path), "--data", "digits"],
        names=[str(tmp_path), "is a directory"],
        folder=tmp_path,
    )


def test_missing_file(tmp_path):
    path = tmp_path / "nope.safetensors"
    expect_refusal(
        ["predict", "--model", str(path), "--data", "digits"],
        names=[str(path), "no such model file"],
        folder=tmp_path,
    )


def test_safetensors_of_another_library(tmp_path):
    path = tmp_path / "model.safetensors"
    safetensors.numpy.save_file(_arrays(), path, metadata={"format": "pt"})
    expect_refusal(
        ["predict", "--model", str(path), "--data", "digits"],
        names=[str(path), "'crossent' metadata"],
        folder=tmp_path,
    )
