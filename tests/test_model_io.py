"""Tests of crossent.model_io: round trip, atomic writes, determinism and every bad file."""

from __future__ import annotations

import json
import os
import pickle
import struct

import numpy as np
import pytest
import safetensors.numpy

import crossent
from crossent.model_io import FORMAT_VERSION, ModelFileError, load_model, save_model


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "coef": rng.standard_normal((3, 5)),  # (n_classes, n_features)
        "intercept": rng.standard_normal(3).astype(np.float32),
        "counts": np.array([4, 0, 7], dtype=np.int64),
        "mask": np.array([True, False]),
        "scalar": np.array(2.5),
        "empty": np.zeros((0, 4)),
    }


def _save(tmp_path, name="model.safetensors", **meta):
    path = tmp_path / name
    save_model(path, _arrays(), {"classes": [0, 1, 2], **meta})
    return path


def _raw_header(path) -> tuple[int, dict, bytes]:
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    return n, json.loads(data[8 : 8 + n]), data


def _write_crossent(path, tensors, meta_obj) -> None:
    """Write a safetensors file with an arbitrary 'crossent' metadata object."""
    text = json.dumps(meta_obj, sort_keys=True)
    with open(path, "wb") as f:
        f.write(safetensors.numpy.save(tensors, metadata={"crossent": text}))


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize(
    "classes",
    [np.array([3, 1, 7]), np.array(["cat", "dog", "émeu"]), [0, 1, 2], ("a", "b")],
    ids=["int-array", "str-array", "int-list", "str-tuple"],
)
def test_round_trip_arrays_bit_for_bit_and_metadata(tmp_path, classes):
    arrays = _arrays()
    meta = {
        "classes": classes,
        "lambda": 0.125,
        "n_iter": np.int32(17),
        "converged": np.bool_(True),
        "history": np.array([1.5, 0.25]),
        "nested": {"solver": "lbfgs", "tol": None, "pair": (1, "x")},
        "loss": float("inf"),
    }
    path = tmp_path / "model.safetensors"
    save_model(path, arrays, meta)
    loaded, meta2 = load_model(path)

    assert sorted(loaded) == sorted(arrays)
    for name, arr in arrays.items():
        got = loaded[name]
        assert got.dtype == arr.dtype and got.shape == arr.shape, name
        assert got.tobytes() == arr.tobytes(), name
        assert got.flags.writeable, name
    assert meta2["classes"] == list(np.asarray(classes).tolist())
    assert type(meta2["classes"][0]) is type(np.asarray(classes).tolist()[0])
    assert meta2["lambda"] == 0.125
    assert meta2["n_iter"] == 17 and type(meta2["n_iter"]) is int
    assert meta2["converged"] is True
    assert meta2["history"] == [1.5, 0.25]
    assert meta2["nested"] == {"solver": "lbfgs", "tol": None, "pair": [1, "x"]}
    assert meta2["loss"] == float("inf")
    assert meta2["format"] == "crossent-model"
    assert meta2["format_version"] == FORMAT_VERSION
    assert meta2["crossent_version"] == crossent.__version__
    assert meta2["arrays"]["coef"] == {"shape": [3, 5], "dtype": "float64"}
    assert meta2["arrays"]["intercept"] == {"shape": [3], "dtype": "float32"}


def test_non_contiguous_and_big_endian_arrays_round_trip(tmp_path):
    base = np.arange(24.0).reshape(4, 6)
    arrays = {"t": base.T, "be": base.astype(">f8")}
    save_model(tmp_path / "m.safetensors", arrays, {})
    loaded, _ = load_model(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(loaded["t"], base.T)
    np.testing.assert_array_equal(loaded["be"], base)
    assert loaded["be"].dtype == np.float64


def test_loaded_metadata_can_be_saved_again_unchanged(tmp_path):
    path = _save(tmp_path)
    arrays, meta = load_model(path)
    save_model(tmp_path / "again.safetensors", arrays, meta)
    assert open(path, "rb").read() == open(tmp_path / "again.safetensors", "rb").read()


def test_resave_is_byte_identical(tmp_path):
    meta_a = {"b": 1, "a": np.array(["x", "y"]), "c": {"z": 1, "y": 2}}
    meta_b = {"c": {"y": 2, "z": 1}, "a": ["x", "y"], "b": 1}  # other key order
    save_model(tmp_path / "a.safetensors", _arrays(), meta_a)
    save_model(tmp_path / "b.safetensors", dict(reversed(_arrays().items())), meta_b)
    save_model(tmp_path / "a.safetensors", _arrays(), meta_a)  # overwrite
    data_a = (tmp_path / "a.safetensors").read_bytes()
    assert data_a == (tmp_path / "b.safetensors").read_bytes()


def test_file_is_plain_safetensors_with_one_crossent_entry(tmp_path):
    path = _save(tmp_path)
    _, header, _ = _raw_header(path)
    assert list(header["__metadata__"]) == ["crossent"]
    meta = json.loads(header["__metadata__"]["crossent"])
    assert meta["format"] == "crossent-model"
    np.testing.assert_array_equal(safetensors.numpy.load_file(path)["coef"], _arrays()["coef"])


@pytest.mark.parametrize(
    ("arrays", "meta", "error", "match"),
    [
        ({"W": [1.0, 2.0]}, {}, TypeError, r"arrays\['W'\] must be a numpy array"),
        ({"W": np.array(["a"])}, {}, ValueError, r"arrays\['W'\] has dtype <U1"),
        ({"W": np.zeros(2, dtype=object)}, {}, ValueError, "has dtype object"),
        ({"__metadata__": np.zeros(2)}, {}, ValueError, "not a valid array name"),
        ({"W": np.zeros(2)}, {"f": open}, TypeError, r"metadata\['f'\] is a builtin"),
        ({"W": np.zeros(2)}, {"d": {1: 2}}, TypeError, "keys must be strings"),
        ({"W": np.zeros(2)}, {"b": b"raw"}, TypeError, r"metadata\['b'\] is bytes"),
        ({"W": np.zeros(2)}, [("a", 1)], TypeError, "metadata must be a dict"),
        ({"W": np.zeros(2)}, {"c": ["a\udc80"]}, ValueError, r"metadata\['c'\]\[0\] holds a lone"),
        ({"W": np.zeros(2, np.complex64)}, {}, ValueError, r"arrays\['W'\] has dtype complex64"),
        ({"W": np.array([0.0, np.inf])}, {}, ValueError, r"arrays\['W'\] holds NaN or inf"),
    ],
)
def test_save_rejects_bad_input_and_writes_nothing(tmp_path, arrays, meta, error, match):
    with pytest.raises(error, match=match):
        save_model(tmp_path / "m.safetensors", arrays, meta)
    assert os.listdir(tmp_path) == []


def test_save_into_missing_directory_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_model(tmp_path / "nope" / "m.safetensors", _arrays(), {})


# --------------------------------------------------------------------------- atomicity


@pytest.mark.parametrize("where", ["replace", "fsync", "write"])
@pytest.mark.parametrize("exc", [OSError("disk full"), KeyboardInterrupt()])
@pytest.mark.parametrize("existing", [False, True])
def test_failed_write_leaves_no_file_and_keeps_existing_target(
    tmp_path, monkeypatch, where, exc, existing
):
    target = tmp_path / "model.safetensors"
    if existing:
        target.write_bytes(b"old model")

    def boom(*args, **kwargs):
        raise exc

    if where == "write":  # write half of the payload, then fail
        real_fdopen = os.fdopen

        def fdopen(fd, *args, **kwargs):
            f = real_fdopen(fd, *args, **kwargs)
            real_write = f.write

            def write(data):
                real_write(data[: len(data) // 2])
                raise exc

            f.write = write
            return f

        monkeypatch.setattr(os, "fdopen", fdopen)
    else:
        monkeypatch.setattr(os, where, boom)

    with pytest.raises(type(exc)):
        save_model(target, _arrays(), {"classes": [0, 1]})
    monkeypatch.undo()
    expected = ["model.safetensors"] if existing else []
    assert sorted(os.listdir(tmp_path)) == expected
    if existing:
        assert target.read_bytes() == b"old model"


# --------------------------------------------------------------------------- bad files


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match=r"nope\.safetensors: no such model file"):
        load_model(tmp_path / "nope.safetensors")


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(ModelFileError, match="is a directory"):
        load_model(tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"")
    with pytest.raises(ModelFileError, match=r"model\.safetensors: file is empty"):
        load_model(path)


def test_truncated_at_every_kind_of_point(tmp_path):
    path = _save(tmp_path)
    n, _, data = _raw_header(path)
    cuts = [1, 4, 7, 8, 9, 8 + n // 2, 8 + n - 1, 8 + n, 8 + n + 1, len(data) - 8, len(data) - 1]
    cut_path = tmp_path / "cut.safetensors"
    for cut in cuts:
        cut_path.write_bytes(data[:cut])
        with pytest.raises(ModelFileError, match=r"cut\.safetensors: truncated") as info:
            load_model(cut_path)
        assert "\n" not in str(info.value), cut


def test_every_truncation_raises_model_file_error(tmp_path):
    path = _save(tmp_path)
    data = open(path, "rb").read()
    cut_path = tmp_path / "cut.safetensors"
    for cut in range(0, len(data), 7):
        cut_path.write_bytes(data[:cut])
        with pytest.raises(ModelFileError, match=r"cut\.safetensors"):
            load_model(cut_path)


def test_trailing_bytes(tmp_path):
    path = _save(tmp_path)
    with open(path, "ab") as f:
        f.write(b"\0\0\0")
    with pytest.raises(ModelFileError, match="trailing bytes"):
        load_model(path)


def test_corrupted_header_bytes(tmp_path):
    path = _save(tmp_path)
    _, _, data = _raw_header(path)
    bad = bytearray(data)
    bad[8 : 8 + 6] = b"\xff\xfe{{]!"
    path_bad = tmp_path / "bad.safetensors"
    path_bad.write_bytes(bytes(bad))
    with pytest.raises(ModelFileError, match=r"bad\.safetensors: corrupted header"):
        load_model(path_bad)


def test_header_length_field_garbage(tmp_path):
    path = _save(tmp_path)
    _, _, data = _raw_header(path)
    path.write_bytes(b"\xff" * 8 + data[8:])
    with pytest.raises(ModelFileError, match="not a safetensors file"):
        load_model(path)


def test_any_single_byte_change_in_header_gives_model_file_error_or_loads(tmp_path):
    """Flipping any header byte never escapes as another exception type."""
    path = _save(tmp_path)
    n, _, data = _raw_header(path)
    bad_path = tmp_path / "flip.safetensors"
    for i in range(0, 8 + n):
        for value in (0x00, 0x22, 0x7D, 0xFF):
            if data[i] == value:
                continue
            bad = bytearray(data)
            bad[i] = value
            bad_path.write_bytes(bytes(bad))
            try:
                load_model(bad_path)
            except ModelFileError as exc:
                assert "flip.safetensors" in str(exc)


def test_pickle_is_refused_without_being_loaded(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    with open(path, "wb") as f:
        pickle.dump({"coef": np.ones((2, 2))}, f)

    def no_unpickling(*args, **kwargs):
        raise AssertionError("load_model must never unpickle")

    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(pickle, "load", no_unpickling)
    with pytest.raises(ModelFileError, match=r"looks like a Python pickle.*never loads pickles"):
        load_model(path)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("damage", [b"@", b"[1]"])
def test_a_damaged_header_whose_length_begins_like_a_pickle_is_called_damaged(
    tmp_path, protocol, damage
):
    """A header of 0x0?80 bytes makes the file start with bytes 0x80 0x0?, a pickle's first two
    bytes: once the JSON is damaged the error must say so, not "pickle" (found in CI on
    the command's digits model, whose header was 0x0580 = 1408 bytes on that machine)."""
    header_len = (protocol << 8) | 0x80
    text = (b'{"a": ' + damage).ljust(header_len, b" ")
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", header_len) + text + b"\0" * 16)
    assert path.read_bytes()[:2] == bytes([0x80, protocol])
    with pytest.raises(ModelFileError, match=r"corrupted header, not valid JSON"):
        load_model(path)
    path.write_bytes(path.read_bytes()[: header_len // 2])  # cut inside the header
    with pytest.raises(ModelFileError, match=r"truncated or not a safetensors file"):
        load_model(path)


def test_npz_is_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    with open(path, "wb") as f:
        np.savez(f, coef=np.ones(2))
    with pytest.raises(ModelFileError, match="zip archive"):
        load_model(path)


def test_text_file_is_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_text("coef,intercept\n1,2\n")
    with pytest.raises(ModelFileError, match=r"model\.safetensors"):
        load_model(path)


def test_safetensors_without_crossent_metadata(tmp_path):
    path = tmp_path / "other.safetensors"
    safetensors.numpy.save_file({"coef": np.ones(2)}, path, metadata={"format": "pt"})
    with pytest.raises(ModelFileError, match="without 'crossent' metadata"):
        load_model(path)
    safetensors.numpy.save_file({"coef": np.ones(2)}, path)
    with pytest.raises(ModelFileError, match="without 'crossent' metadata"):
        load_model(path)


def test_wrong_format_name(tmp_path):
    path = tmp_path / "m.safetensors"
    record = {"coef": {"shape": [2], "dtype": "float64"}}
    _write_crossent(
        path, {"coef": np.ones(2)}, {"format": "other", "format_version": 1, "arrays": record}
    )
    with pytest.raises(ModelFileError, match="format is 'other'"):
        load_model(path)


@pytest.mark.parametrize("version", [2, 0, "1", None])
def test_wrong_format_version(tmp_path, version):
    path = tmp_path / "m.safetensors"
    meta = {
        "format": "crossent-model",
        "format_version": version,
        "arrays": {"coef": {"shape": [2], "dtype": "float64"}},
    }
    _write_crossent(path, {"coef": np.ones(2)}, meta)
    expected = f"format version {version!r} is not supported by this crossent (supports 1)"
    with pytest.raises(ModelFileError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        load_model(path)


def test_crossent_metadata_not_json(tmp_path):
    path = tmp_path / "m.safetensors"
    safetensors.numpy.save_file({"coef": np.ones(2)}, path, metadata={"crossent": "{oops"})
    with pytest.raises(ModelFileError, match="corrupted crossent metadata"):
        load_model(path)


def _meta(arrays_record):
    return {"format": "crossent-model", "format_version": 1, "arrays": arrays_record}


@pytest.mark.parametrize(
    ("record", "match"),
    [
        (
            {"coef": {"shape": [3, 2], "dtype": "float64"}},
            r"'coef' has shape \(2, 3\), metadata says \[3, 2\]",
        ),
        (
            {"coef": {"shape": [2, 3], "dtype": "float32"}},
            "'coef' has dtype float64, metadata says 'float32'",
        ),
        (
            {
                "coef": {"shape": [2, 3], "dtype": "float64"},
                "b": {"shape": [2], "dtype": "float64"},
            },
            r"lists array\(s\) \['b'\] that the file lacks",
        ),
        ({}, r"holds array\(s\) \['coef'\] that the metadata does not list"),
    ],
)
def test_array_disagrees_with_metadata(tmp_path, record, match):
    path = tmp_path / "m.safetensors"
    _write_crossent(path, {"coef": np.ones((2, 3))}, _meta(record))
    with pytest.raises(ModelFileError, match=match):
        load_model(path)


def test_header_offsets_disagreeing_with_shape(tmp_path):
    """A header whose shape does not match its byte range is caught by safetensors."""
    path = _save(tmp_path)
    n, header, data = _raw_header(path)
    header["coef"]["shape"] = [3, 4]  # 96 bytes, but its data range holds 15 * 8
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n :])
    with pytest.raises(ModelFileError, match="corrupted safetensors file"):
        load_model(path)


# --------------------------------------------------------------------------- header lengths


def test_models_load_and_predict_at_every_header_length(tmp_path, monkeypatch):
    """Grow the metadata byte by byte over 300+ consecutive header lengths (safetensors pads
    the header to a multiple of 8), low bytes 0x80 among them, and load and predict with
    every model through the command's loader (issue #7: ~1 valid file in 32 was refused as
    a "pickle")."""
    from scipy.special import softmax

    from crossent._cli._model import MODEL_KIND, load_classifier

    rng = np.random.default_rng(7)
    coef, intercept = rng.standard_normal((3, 4)), rng.standard_normal(3)  # (C, d), (C,)
    mean, scale = rng.standard_normal(4), rng.uniform(0.5, 2.0, 4)  # (d,)
    X = rng.standard_normal((11, 4))
    X32 = X.astype(np.float32)
    want_proba = softmax(((X - mean) / scale) @ coef.T + intercept, axis=1)  # (n, C)
    classes = np.array(["ant", "bee", "cat"])
    arrays = {"coef": coef, "intercept": intercept, "mean": mean, "scale": scale}
    path = tmp_path / "model.safetensors"
    monkeypatch.setattr(os, "fsync", lambda fd: None)  # durability is tested above; speed
    lengths = set()
    for grow in range(305):  # 8 more bytes each time: the next multiple of 8
        meta = {
            "kind": MODEL_KIND,
            "classes": classes,
            "n_features": 4,
            "image_shape": None,
            "feature_names": ["a", "b", "c", "d" + "x" * (8 * grow)],
            "preprocessing": {"standardize": True},
            "l2": 0.5,
            "solver": "lbfgs",
            "fit_intercept": True,
            "training": {"n_iter": 3},
        }
        save_model(path, arrays, meta)
        lengths.add(_raw_header(path)[0])
        model = load_classifier(path)
        np.testing.assert_allclose(model.proba(X), want_proba, rtol=1e-12, atol=1e-15)
        np.testing.assert_array_equal(
            model.classifier.predict(model.preprocessing.apply(X32)),
            classes[want_proba.argmax(axis=1)],
        )
    ordered = sorted(lengths)
    assert len(ordered) >= 300 and ordered == list(range(ordered[0], ordered[-1] + 1, 8))
    assert sum(n % 256 == 0x80 for n in ordered) >= 9


# --------------------------------------------------------------------------- standardisation


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_standardisation_keeps_the_data_dtype(dtype):
    """``Preprocessing.apply`` computes ``(X − mean) / scale`` in X's own dtype (float32 is
    not copied to float64), to that dtype's precision against a float64 reference."""
    from crossent._cli._model import Preprocessing

    rng = np.random.default_rng(3)
    X = (rng.standard_normal((47, 31)) * 5 + 3).astype(dtype)
    pre = Preprocessing.fit(X, standardize=True)
    got = pre.apply(X)
    assert got.dtype == dtype
    want = (X.astype(np.float64) - pre.mean) / pre.scale
    rtol, atol = (1e-6, 1e-6) if dtype == np.float32 else (1e-14, 1e-14)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    np.testing.assert_allclose(got.mean(axis=0, dtype=np.float64), 0.0, atol=10 * atol)


def test_standardisation_of_float32_beyond_its_range_falls_back_to_float64():
    from crossent._cli._model import Preprocessing

    X = np.ones((3, 2), dtype=np.float32)
    pre = Preprocessing(np.array([0.0, 1e300]), np.array([1e-50, 1e300]))  # float32: 0, inf
    got = pre.apply(X)
    assert got.dtype == np.float64 and np.isfinite(got).all()
    np.testing.assert_allclose(got, (X - pre.mean) / pre.scale)


def test_integer_data_is_standardised_in_float64():
    from crossent._cli._model import Preprocessing

    X = np.arange(6, dtype=np.uint8).reshape(3, 2)
    pre = Preprocessing(np.array([1.0, 2.0]), np.array([2.0, 4.0]))
    np.testing.assert_array_equal(pre.apply(X), (X - pre.mean) / pre.scale)
    assert pre.apply(X).dtype == np.float64


@pytest.mark.parametrize("n_classes", [2, 3])
def test_loaded_model_predicts_as_the_classifier(tmp_path, n_classes):
    """``LoadedModel.predict`` (which refuses overflow) gives ``SoftmaxClassifier.predict``'s
    labels, ties included (the first class of highest score)."""
    from crossent._cli._model import MODEL_KIND, load_classifier

    rng = np.random.default_rng(5)
    coef = rng.integers(-2, 3, (n_classes, 3)).astype(np.float64)  # small ints: many ties
    intercept = np.zeros(n_classes)
    X = rng.integers(-2, 3, (200, 3)).astype(np.float64)
    classes = [10 * k for k in range(n_classes)]
    meta = {"kind": MODEL_KIND, "classes": classes, "n_features": 3}
    path = tmp_path / "model.safetensors"
    save_model(
        path,
        {"coef": coef, "intercept": intercept},
        {**meta, "preprocessing": {"standardize": False}},
    )
    model = load_classifier(path)
    scores = X @ coef.T  # (n, C)
    assert (np.sort(scores, axis=1)[:, -1] == np.sort(scores, axis=1)[:, -2]).any()  # ties
    want = np.array(classes)[np.argmax(scores, axis=1)]
    np.testing.assert_array_equal(model.predict(X), want)
    np.testing.assert_array_equal(model.classifier.predict(X), want)
