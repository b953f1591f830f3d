"""Tests of crossent.data: every source from small files made here, and every bad input."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import scipy.sparse as sp
from PIL import Image
from sklearn.datasets import dump_svmlight_file, load_svmlight_file

from crossent.data import DataError, Dataset, load_dataset

# --------------------------------------------------------------------------- helpers

_IDX_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D}


def write_idx(path, arr, *, gz=False, dims=None, extra=b"", cut=0):
    """Write ``arr`` as an IDX file (big-endian), optionally lying about ``dims``."""
    arr = np.asarray(arr)
    dims = arr.shape if dims is None else dims
    code = _IDX_CODES[arr.dtype.type]
    header = struct.pack(">BBBB", 0, 0, code, len(dims)) + struct.pack(f">{len(dims)}I", *dims)
    data = header + arr.astype(arr.dtype.newbyteorder(">")).tobytes() + extra
    data = data[: len(data) - cut]
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(data)
    return path


def write_png(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


def scaled(pixels):
    """The exact float32 values a loader must give for uint8 pixels."""
    return np.asarray(pixels).astype(np.float32).reshape(-1) / np.float32(255)


@pytest.fixture
def rng():
    return np.random.default_rng(42)


# --------------------------------------------------------------------------- digits


def test_digits():
    from sklearn.datasets import load_digits

    ds = load_dataset("digits")
    reference = load_digits()
    assert ds.X.shape == (1797, 64) and ds.X.dtype == np.float32
    np.testing.assert_array_equal(ds.X, (reference.data / 16).astype(np.float32))
    assert ds.X.min() == 0 and ds.X.max() == 1
    np.testing.assert_array_equal(ds.y, reference.target)
    assert ds.y.dtype == np.int64
    assert ds.name == "digits" and ds.image_shape == (8, 8) and ds.feature_names is None
    summary = ds.summary()
    assert summary.count("\n") == 1
    assert "1797 samples × 64 features" in summary and "10 classes" in summary
    assert "0: 178" in summary and "9: 180" in summary


# --------------------------------------------------------------------------- npz


def test_npz_features_float64_and_int_labels(tmp_path, rng):
    X = rng.standard_normal((6, 4))
    y = np.array([0, 1, 2, 0, 1, 2], dtype=np.int32)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    ds = load_dataset(tmp_path / "d.npz")
    assert ds.X.dtype == np.float64 and np.array_equal(ds.X, X)
    assert ds.y.dtype == np.int64 and np.array_equal(ds.y, y)
    assert ds.image_shape is None and ds.name == str(tmp_path / "d.npz")


def test_npz_float32_kept_and_string_and_float_labels(tmp_path, rng):
    X = rng.standard_normal((3, 2)).astype(np.float32)
    np.savez(tmp_path / "s.npz", X=X, y=np.array(["cat", "dog", "cat"]))
    ds = load_dataset(tmp_path / "s.npz")
    assert ds.X.dtype == np.float32 and np.array_equal(ds.X, X)
    assert ds.y.tolist() == ["cat", "dog", "cat"]
    np.savez(tmp_path / "f.npz", X=X, y=np.array([1.0, 0.0, 1.0]))
    y = load_dataset(tmp_path / "f.npz").y
    assert y.dtype == np.int64 and y.tolist() == [1, 0, 1]


@pytest.mark.parametrize(
    ("shape", "image_shape"),
    [((5, 4, 3), (4, 3)), ((5, 4, 3, 3), (4, 3, 3)), ((5, 4, 3, 1), (4, 3))],
)
def test_npz_images_are_flattened_and_scaled(tmp_path, rng, shape, image_shape):
    images = rng.integers(0, 256, size=shape, dtype=np.uint8)
    np.savez(tmp_path / "img.npz", X=images, y=np.arange(5))
    ds = load_dataset(tmp_path / "img.npz")
    assert ds.image_shape == image_shape and ds.X.dtype == np.float32
    assert ds.X.shape == (5, int(np.prod(shape[1:])))
    for i in range(5):
        np.testing.assert_array_equal(ds.X[i], scaled(images[i]))


def test_npz_without_y(tmp_path):
    np.savez(tmp_path / "x.npz", X=np.ones((2, 2)))
    assert load_dataset(tmp_path / "x.npz", require_labels=False).y is None
    with pytest.raises(DataError, match=r"x\.npz: no array 'y'.*require_labels=False"):
        load_dataset(tmp_path / "x.npz")


def test_npz_compressed(tmp_path, rng):
    X, y = rng.standard_normal((7, 3)).astype(np.float32), np.arange(7)
    np.savez_compressed(tmp_path / "c.npz", X=X, y=y)
    ds = load_dataset(tmp_path / "c.npz")
    np.testing.assert_array_equal(ds.X, X)
    np.testing.assert_array_equal(ds.y, y)


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"y": np.arange(2)}, r"no array 'X' \(the archive holds: y\)"),
        ({"X": np.array([[1.0, np.nan]]), "y": [0]}, r"X\[0, 1\] .* is nan; features must"),
        ({"X": np.array([[0.0, 1], [2, -np.inf]]), "y": [0, 1]}, r"X\[1, 1\] .* is -inf"),
        ({"X": np.array([["a"]]), "y": [0]}, "array 'X' has dtype <U1; features must be numeric"),
        ({"X": np.ones((2, 3, 4, 4)), "y": [0, 1]}, r"shape \(2, 3, 4, 4\); expected"),
        ({"X": np.ones(3), "y": [0, 1, 2]}, r"shape \(3,\); expected"),
        ({"X": np.ones((3, 2)), "y": [0, 1]}, "X has 3 rows but y has 2 labels"),
        ({"X": np.ones((2, 2)), "y": [[0], [1]]}, r"array 'y' must be 1-D, got shape \(2, 1\)"),
        ({"X": np.ones((2, 2)), "y": [0.5, 1]}, r"array 'y'\[0\] is 0.5; labels must be"),
        ({"X": np.ones((0, 2)), "y": np.zeros(0)}, "no samples"),
    ],
)
def test_npz_bad_content(tmp_path, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=r"bad\.npz: .*" + match):
        load_dataset(tmp_path / "bad.npz")


@pytest.mark.parametrize("key", ["X", "y"])
def test_npz_object_array_is_refused_without_unpickling(tmp_path, monkeypatch, key):
    arrays = {"X": np.ones((2, 2)), "y": np.arange(2)}
    arrays[key] = np.array([{"evil": 1}, None], dtype=object)
    np.savez(tmp_path / "obj.npz", **arrays)

    import pickle

    def no_unpickling(*args, **kwargs):
        raise AssertionError("load_dataset must never unpickle")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    with pytest.raises(DataError, match=rf"obj\.npz: array '{key}' is an object array"):
        load_dataset(tmp_path / "obj.npz")


def test_npz_that_is_not_a_zip(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"this is not a zip archive")
    with pytest.raises(DataError, match=r"junk\.npz: not a valid \.npz archive"):
        load_dataset(tmp_path / "junk.npz")


# --------------------------------------------------------------------------- CSV


def write_csv(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_string_labels_by_name(tmp_path):
    path = write_csv(tmp_path / "s.csv", "a,b,kind\n1,2.5,cat\n-3,1e2,dog\n0,0,cat\n")
    ds = load_dataset(path, label_column="kind")
    np.testing.assert_array_equal(ds.X, [[1, 2.5], [-3, 100], [0, 0]])
    assert ds.X.dtype == np.float64
    assert ds.y.tolist() == ["cat", "dog", "cat"] and ds.y.dtype.kind == "U"
    assert ds.feature_names == ["a", "b"] and ds.image_shape is None
    assert ds.name == str(path) and ds.label_name == "kind"


def test_csv_int_labels_by_name_and_by_index(tmp_path):
    path = write_csv(tmp_path / "i.csv", "target,x1,x2\n3,0.5,1\n-1,2,3\n3,4,5\n")
    for column in ("target", 0, -3):
        ds = load_dataset(path, label_column=column)
        assert ds.y.dtype == np.int64 and ds.y.tolist() == [3, -1, 3], column
        np.testing.assert_array_equal(ds.X, [[0.5, 1], [2, 3], [4, 5]])
        assert ds.feature_names == ["x1", "x2"]
    ds = load_dataset(path, label_column=1)
    assert ds.y.dtype.kind == "U" and ds.y.tolist() == ["0.5", "2", "4"]
    assert ds.feature_names == ["target", "x2"]


def test_csv_label_column_named_label_is_found_anywhere(tmp_path):
    path = write_csv(tmp_path / "m.csv", "label,p0,p1\n7,0,255\n2,1,2\n")
    ds = load_dataset(path)
    assert ds.y.tolist() == [7, 2] and ds.feature_names == ["p0", "p1"]


def test_csv_without_labels(tmp_path):
    path = write_csv(tmp_path / "u.csv", "a,b\n1,2\n3,4\n")
    ds = load_dataset(path, require_labels=False)
    assert ds.y is None and ds.feature_names == ["a", "b"] and ds.label_name is None
    np.testing.assert_array_equal(ds.X, [[1, 2], [3, 4]])
    assert ds.summary().endswith("unlabelled")
    path = write_csv(tmp_path / "v.csv", "a,y,b\n1,x,2\n3,z,4\n")
    ds = load_dataset(path, require_labels=False)
    assert ds.y.tolist() == ["x", "z"] and ds.feature_names == ["a", "b"]


@pytest.mark.parametrize("label", ["label", "Target", "CLASS", "y"])
def test_csv_label_column_found_by_its_usual_names(tmp_path, label):
    path = write_csv(tmp_path / "n.csv", f"a,{label},b\n1,x,2\n3,z,4\n")
    ds = load_dataset(path)
    assert ds.y.tolist() == ["x", "z"] and ds.feature_names == ["a", "b"]
    assert ds.label_name == label


def test_csv_feature_columns_by_name(tmp_path):
    path = write_csv(tmp_path / "f.csv", "id,b,kind,a\nr1,2,,1\nr2,4,,3\n")
    ds = load_dataset(path, feature_columns=["a", "b"], require_labels=False)
    np.testing.assert_array_equal(ds.X, [[1, 2], [3, 4]])
    assert ds.feature_names == ["a", "b"] and ds.y is None  # 'id', 'kind' not read
    path = write_csv(tmp_path / "g.csv", "id,b,kind,a\nr1,2,cat,1\nr2,4,dog,3\n")
    ds = load_dataset(path, feature_columns=["b"], label_column="kind")
    assert ds.y.tolist() == ["cat", "dog"] and ds.X.tolist() == [[2], [4]]
    with pytest.raises(DataError, match=r"g\.csv: line 1: no feature column named 'c'"):
        load_dataset(path, feature_columns=["a", "c"], require_labels=False)
    with pytest.raises(DataError, match=r"g\.csv: line 1: column 'kind' is the labels"):
        load_dataset(path, feature_columns=["kind"], label_column="kind")
    with pytest.raises(TypeError, match="feature_columns must be a sequence of str"):
        load_dataset(path, feature_columns="a")
    with pytest.raises(ValueError, match="feature_columns must be distinct"):
        load_dataset(path, feature_columns=["a", "a"])


def test_csv_quotes_blank_lines_crlf_bom_and_gzip(tmp_path):
    text = '\ufeff"a","b c",label\r\n"1","2",dog\r\n\r\n3,4,"cat, black"\r\n'
    (tmp_path / "q.csv").write_bytes(text.encode("utf-8"))
    with gzip.open(tmp_path / "q.csv.gz", "wb") as f:
        f.write(text.encode("utf-8"))
    for name in ("q.csv", "q.csv.gz"):
        ds = load_dataset(tmp_path / name)
        np.testing.assert_array_equal(ds.X, [[1, 2], [3, 4]])
        assert ds.y.tolist() == ["dog", "cat, black"]
        assert ds.feature_names == ["a", "b c"]


def test_csv_many_rows_cross_chunk_boundaries(tmp_path, rng):
    X = rng.standard_normal((9000, 3))
    y = rng.integers(0, 5, 9000)
    rows = zip(X.tolist(), y.tolist(), strict=True)
    lines = ["f0,f1,f2,Class"] + [f"{a!r},{b!r},{c!r},{k}" for (a, b, c), k in rows]
    ds = load_dataset(write_csv(tmp_path / "big.csv", "\n".join(lines)))
    np.testing.assert_array_equal(ds.X, X)
    np.testing.assert_array_equal(ds.y, y)


@pytest.mark.parametrize(
    ("text", "kwargs", "match"),
    [
        ("", {}, "file is empty"),
        ("\n\n", {}, "line 1: the header row is empty"),
        ("a,b,label\n", {}, "no data rows after the header"),
        ("a,b,label\n1,2,x\n3,oops,y\n", {}, "line 3: column 'b' has 'oops', which is not a num"),
        ("a,b,label\n1,2,x\n\n3,,y\n", {}, "line 4: column 'b' is empty"),
        ("a,b,c\n1,2,3\n", {"label_column": "kind"}, "line 1: no column named 'kind'"),
        ("a,b,c\n1,2,3\n", {"label_column": 3}, "line 1: label column 3 is out of range"),
        ("a,b,label\n1,2,3\n4,5\n", {}, "line 3: 2 fields, the header has 3"),
        ("a,b,label\n1,2,3\n4,5,6,7\n", {}, "line 3: 4 fields, the header has 3"),
        ("a,b,label\n1,2,3\n4,nan,6\n", {}, "line 3: column 'b' is nan; features must be finite"),
        ("a,b,label\n1,inf,3\n", {}, "line 2: column 'b' is inf; features must be finite"),
        ("a,b,label\n1,2,3\n4,5, \n", {}, "line 3: empty label in column 'label'"),
        ('a,b,label\n1,"2"x,3\n', {}, "line 2: ',' expected after '\"'"),
        ("Class\n1\n", {}, "line 1: no feature columns"),
        ('a,b,label\n1,2,"3\n', {}, "line 2: unexpected end of data"),
    ],
)
def test_csv_bad_content(tmp_path, text, kwargs, match):
    path = write_csv(tmp_path / "bad.csv", text)
    with pytest.raises(DataError, match=r"bad\.csv: " + match) as info:
        load_dataset(path, **kwargs)
    assert "\n" not in str(info.value)


def test_csv_not_utf8(tmp_path):
    (tmp_path / "latin.csv").write_bytes(b"a,b\n1,cafe\n2,caf\xe9\n")
    with pytest.raises(DataError, match=r"latin\.csv: line 3: not UTF-8 text"):
        load_dataset(tmp_path / "latin.csv")


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [False, True])
def test_idx_images_and_labels(tmp_path, rng, gz):
    images = rng.integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    suffix = ".gz" if gz else ""
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images, gz=gz)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", labels, gz=gz)
    ds = load_dataset(tmp_path / f"train-images-idx3-ubyte{suffix}")
    assert ds.X.shape == (5, 12) and ds.X.dtype == np.float32 and ds.image_shape == (4, 3)
    for i in range(5):
        np.testing.assert_array_equal(ds.X[i], scaled(images[i]))
    assert ds.y.dtype == np.int64 and ds.y.tolist() == [3, 1, 4, 1, 5]


def test_idx_detected_by_magic_with_explicit_labels(tmp_path, rng):
    images = rng.integers(0, 256, size=(3, 2, 2), dtype=np.uint8)
    write_idx(tmp_path / "pixels.bin", images, gz=True)
    write_idx(tmp_path / "answers.bin", np.array([0, 1, 0], dtype=np.uint8))
    ds = load_dataset(tmp_path / "pixels.bin", labels=tmp_path / "answers.bin")
    assert ds.y.tolist() == [0, 1, 0] and ds.image_shape == (2, 2)
    with pytest.raises(DataError, match=r"pixels\.bin: no labels file found"):
        load_dataset(tmp_path / "pixels.bin")
    assert load_dataset(tmp_path / "pixels.bin", require_labels=False).y is None


def test_idx_label_name_fallbacks(tmp_path):
    images = np.zeros((2, 2, 2), dtype=np.uint8)
    write_idx(tmp_path / "t10k-images.idx3-ubyte", images)
    write_idx(tmp_path / "t10k-labels.idx1-ubyte.gz", np.array([1, 2], np.uint8), gz=True)
    assert load_dataset(tmp_path / "t10k-images.idx3-ubyte").y.tolist() == [1, 2]
    write_idx(tmp_path / "my_images.idx", images)
    write_idx(tmp_path / "my_labels.idx", np.array([5, 6], np.uint8))
    assert load_dataset(tmp_path / "my_images.idx").y.tolist() == [5, 6]


def test_idx_float_images_keep_their_values(tmp_path, rng):
    images = rng.standard_normal((2, 3, 3)).astype(np.float32)
    write_idx(tmp_path / "f-images-idx3", images)
    ds = load_dataset(tmp_path / "f-images-idx3", require_labels=False)
    assert ds.X.dtype == np.float32
    np.testing.assert_array_equal(ds.X, images.reshape(2, -1))


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(("cut", "extra", "actual"), [(5, b"", 19), (0, b"\0\0", 26)])
def test_idx_size_must_match_header(tmp_path, gz, cut, extra, actual):
    images = np.zeros((2, 3, 4), dtype=np.uint8)  # 24 bytes of data
    path = write_idx(tmp_path / "train-images-idx3-ubyte", images, gz=gz, cut=cut, extra=extra)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([0, 1], np.uint8))
    expected = f"train-images-idx3-ubyte: IDX header says 24 bytes of data .*file has {actual}$"
    with pytest.raises(DataError, match=expected):
        load_dataset(path)


def test_idx_truncated_gzip_stream(tmp_path):
    path = write_idx(tmp_path / "a-images-idx3.gz", np.zeros((50, 8, 8), np.uint8), gz=True)
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(DataError, match=r"a-images-idx3\.gz: corrupted or truncated gzip"):
        load_dataset(path, require_labels=False)


def test_idx_count_mismatch(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 2, 2), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([0, 1], np.uint8))
    with pytest.raises(DataError, match=r"3 images but the labels file .*ubyte has 2 labels"):
        load_dataset(tmp_path / "train-images-idx3-ubyte")


def test_idx_labels_file_given_as_source(tmp_path):
    path = write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([0, 1], np.uint8))
    with pytest.raises(DataError, match=r"idx1-ubyte: a 1-D IDX array \(a labels file\?\)"):
        load_dataset(path)


def test_idx_missing_explicit_labels_file(tmp_path):
    path = write_idx(tmp_path / "x-images-idx3", np.zeros((1, 2, 2), np.uint8))
    with pytest.raises(DataError, match=r"nolabels: no such file or directory"):
        load_dataset(path, labels=tmp_path / "nolabels")


# --------------------------------------------------------------------------- image folders


def test_image_folder_grayscale_with_resizing(tmp_path, rng):
    root = tmp_path / "shapes"
    a0 = write_png(root / "b_circle" / "0.png", rng.integers(0, 256, (4, 6), dtype=np.uint8))
    a1 = write_png(root / "b_circle" / "1.PNG", rng.integers(0, 256, (4, 6), dtype=np.uint8))
    odd = rng.integers(0, 256, (9, 5), dtype=np.uint8)
    write_png(root / "a_square" / "z.png", odd)
    (root / "a_square" / "notes.txt").write_text("ignored")
    (root / "a_square" / ".hidden.png").write_bytes(b"ignored")
    with pytest.warns(
        UserWarning, match=r"shapes: 1 of 3 images converted to 6×4 L \(image shape \(4, 6\)\)"
    ):
        ds = load_dataset(root)
    assert ds.image_shape == (4, 6) and ds.X.shape == (3, 24) and ds.X.dtype == np.float32
    assert ds.y.tolist() == ["a_square", "b_circle", "b_circle"]
    resized = Image.fromarray(odd).resize((6, 4), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(ds.X[0], scaled(np.asarray(resized)))
    np.testing.assert_array_equal(ds.X[1], scaled(a0))
    np.testing.assert_array_equal(ds.X[2], scaled(a1))


def test_image_folder_any_colour_makes_all_rgb(tmp_path, rng):
    root = tmp_path / "mixed"
    grey = write_png(root / "0" / "g.png", rng.integers(0, 256, (3, 3), dtype=np.uint8))
    rgb = write_png(root / "1" / "c.png", rng.integers(0, 256, (3, 3, 3), dtype=np.uint8))
    rgba = rng.integers(0, 256, (3, 3, 4), dtype=np.uint8)
    (root / "2").mkdir()
    Image.fromarray(rgba).save(root / "2" / "t.png")
    with pytest.warns(UserWarning, match=r"mixed: 2 of 3 images converted to 3×3 RGB"):
        ds = load_dataset(root)
    assert ds.image_shape == (3, 3, 3) and ds.X.shape == (3, 27)
    assert ds.y.dtype == np.int64 and ds.y.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(ds.X[0], scaled(np.repeat(grey[..., None], 3, axis=2)))
    np.testing.assert_array_equal(ds.X[1], scaled(rgb))
    np.testing.assert_array_equal(ds.X[2], scaled(rgba[..., :3]))


def test_image_folder_explicit_size_and_formats(tmp_path, rng):
    root = tmp_path / "fmt"
    pixels = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    (root / "x").mkdir(parents=True)
    (root / "y").mkdir()
    Image.fromarray(pixels).save(root / "x" / "a.bmp")
    Image.fromarray(pixels).save(root / "y" / "b.gif")  # palette of greys → still grayscale
    with pytest.warns(UserWarning, match=r"fmt: 2 of 2 images converted to 2×3 L"):
        ds = load_dataset(root, image_size=(2, 3))
    assert ds.image_shape == (3, 2)
    expected = Image.fromarray(pixels).resize((2, 3), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(ds.X[0], scaled(np.asarray(expected)))


def test_image_folder_16_bit_grayscale(tmp_path):
    root = tmp_path / "deep"
    write_png(root / "a" / "a.png", np.array([[0, 1000, 65535]], dtype=np.uint16))
    write_png(root / "b" / "b.png", np.array([[0, 255, 128]], dtype=np.uint8))
    with pytest.warns(UserWarning, match=r"deep: 1 of 2 images converted to 3×1 L"):
        ds = load_dataset(root)
    expected = np.array([0, 1000, 65535], dtype=np.float32) / np.float32(65535)
    np.testing.assert_array_equal(ds.X[0], expected)
    np.testing.assert_array_equal(ds.X[1], scaled([0, 255, 128]))


def test_image_folder_needs_two_classes(tmp_path, rng):
    write_png(tmp_path / "one" / "only" / "a.png", rng.integers(0, 256, (2, 2), dtype=np.uint8))
    with pytest.raises(DataError, match=r"one: found 1 class folder\(s\) \('only'\).*two"):
        load_dataset(tmp_path / "one")


def test_images_without_class_folders_are_unlabelled(tmp_path, rng):
    a = write_png(tmp_path / "flat" / "a.png", rng.integers(0, 256, (2, 3), dtype=np.uint8))
    b = write_png(tmp_path / "flat" / "b.png", rng.integers(0, 256, (2, 3), dtype=np.uint8))
    ds = load_dataset(tmp_path / "flat", require_labels=False)
    assert ds.y is None and ds.image_shape == (2, 3)
    np.testing.assert_array_equal(ds.X, [scaled(a), scaled(b)])
    one = load_dataset(tmp_path / "flat" / "b.png", require_labels=False)
    np.testing.assert_array_equal(one.X, [scaled(b)])
    with pytest.raises(DataError, match=r"flat: 2 image\(s\) and no class folders.*require_l"):
        load_dataset(tmp_path / "flat")
    with pytest.raises(DataError, match=r"b\.png: a single image has no label"):
        load_dataset(tmp_path / "flat" / "b.png")


def test_one_class_folder_without_labels_required(tmp_path, rng):
    write_png(tmp_path / "one" / "only" / "a.png", rng.integers(0, 256, (2, 2), dtype=np.uint8))
    assert load_dataset(tmp_path / "one", require_labels=False).y.tolist() == ["only"]


def test_image_mode_and_size_asked_for(tmp_path, rng):
    grey = write_png(tmp_path / "g.png", rng.integers(0, 256, (2, 2), dtype=np.uint8))
    ds = load_dataset(tmp_path / "g.png", require_labels=False, image_mode="RGB")
    assert ds.image_shape == (2, 2, 3)
    np.testing.assert_array_equal(ds.X[0], scaled(np.repeat(grey[..., None], 3, axis=2)))
    with pytest.warns(UserWarning, match=r"g\.png: 1 of 1 images converted to 4×2 L"):
        ds = load_dataset(tmp_path / "g.png", require_labels=False, image_size=(4, 2))
    assert ds.image_shape == (2, 4)
    with pytest.raises(ValueError, match="image_mode must be 'L' or 'RGB'"):
        load_dataset(tmp_path / "g.png", require_labels=False, image_mode="CMYK")


def test_image_folder_empty_class(tmp_path, rng):
    write_png(tmp_path / "r" / "a" / "a.png", rng.integers(0, 256, (2, 2), dtype=np.uint8))
    (tmp_path / "r" / "b").mkdir()
    (tmp_path / "r" / "b" / "readme.txt").write_text("no images")
    with pytest.raises(DataError, match=r"r: class folder 'b' has no images"):
        load_dataset(tmp_path / "r")


def _folder_with_bad_image(tmp_path, rng):
    root = tmp_path / "imgs"
    good = [
        write_png(root / c / f"{i}.png", rng.integers(0, 256, (2, 2), dtype=np.uint8))
        for c in ("a", "b")
        for i in range(2)
    ]
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return root, good


def test_unreadable_image_is_an_error_by_default(tmp_path, rng):
    root, _ = _folder_with_bad_image(tmp_path, rng)
    with pytest.raises(DataError, match=r"imgs/a/broken\.png: cannot read image"):
        load_dataset(root)


def test_unreadable_image_skipped_with_warning(tmp_path, rng):
    root, good = _folder_with_bad_image(tmp_path, rng)
    with pytest.warns(UserWarning, match=r"broken\.png: cannot read image.*skipped"):
        ds = load_dataset(root, on_bad_image="skip")
    assert ds.X.shape == (4, 4) and ds.y.tolist() == ["a", "a", "b", "b"]
    for row, pixels in zip(ds.X, good, strict=True):
        np.testing.assert_array_equal(row, scaled(pixels))


def test_truncated_image_fails_when_decoded(tmp_path, rng):
    root, _ = _folder_with_bad_image(tmp_path, rng)
    (root / "a" / "broken.png").unlink()
    data = (root / "b" / "0.png").read_bytes()
    (root / "b" / "0.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"b/0\.png: cannot read image"):
        load_dataset(root)
    with pytest.warns(UserWarning, match=r"0\.png"):
        assert load_dataset(root, on_bad_image="skip").y.tolist() == ["a", "a", "b"]


def test_class_with_only_unreadable_images_skipped(tmp_path, rng):
    root, _ = _folder_with_bad_image(tmp_path, rng)
    for f in (root / "b").iterdir():
        f.write_bytes(b"garbage")
    with pytest.warns(UserWarning), pytest.raises(DataError, match="'b' has no readable"):
        load_dataset(root, on_bad_image="skip")


# --------------------------------------------------------------------------- any source


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match=r"nothing\.csv: no such file or directory"):
        load_dataset(tmp_path / "nothing.csv")


@pytest.mark.parametrize("name", ["empty.csv", "empty.npz", "empty"])
def test_empty_file(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(DataError, match=rf"{name}: file is empty"):
        load_dataset(tmp_path / name)


def test_unknown_file_type(tmp_path):
    (tmp_path / "data.xlsx").write_bytes(b"PK\x03\x04 spreadsheet")
    with pytest.raises(DataError, match=r"data\.xlsx: unknown file type \.xlsx; expected"):
        load_dataset(tmp_path / "data.xlsx")
    with gzip.open(tmp_path / "data.gz", "wb") as f:
        f.write(b"hello")
    with pytest.raises(DataError, match=r"data\.gz: unknown gzip file"):
        load_dataset(tmp_path / "data.gz")


def test_unreadable_file(tmp_path, make_unreadable):
    path = write_csv(tmp_path / "secret.csv", "a,b\n1,2\n")
    make_unreadable(path)
    try:
        with pytest.raises(DataError, match=r"secret\.csv: permission denied"):
            load_dataset(path)
    finally:
        path.chmod(0o600)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"on_bad_image": "ignore"}, "on_bad_image must be 'error' or 'skip'"),
        ({"image_size": (0, 3)}, r"image_size must be \(width, height\)"),
        ({"image_size": 8}, r"image_size must be \(width, height\)"),
        ({"labels": "x"}, "labels= does not apply to digits"),
        ({"label_column": 1}, "label_column= does not apply to digits"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_dataset("digits", **kwargs)


def test_arguments_that_do_not_apply(tmp_path):
    path = write_csv(tmp_path / "a.csv", "a,label\n1,2\n")
    with pytest.raises(ValueError, match="labels= does not apply to a CSV file"):
        load_dataset(path, labels=path)
    with pytest.raises(TypeError, match="label_column must be a str or an int"):
        load_dataset(path, label_column=True)
    np.savez(tmp_path / "a.npz", X=np.ones((2, 2)), y=[0, 1])
    with pytest.raises(ValueError, match=r"feature_columns= does not apply to an \.npz file"):
        load_dataset(tmp_path / "a.npz", feature_columns=["a"])
    with pytest.raises(ValueError, match=r"image_mode= does not apply to a CSV file"):
        load_dataset(path, image_mode="L")


def test_dataset_checks_its_fields():
    with pytest.raises(DataError, match="toy: X has 2 rows but y has 3 labels"):
        Dataset(np.zeros((2, 2)), np.arange(3), "toy")
    with pytest.raises(DataError, match="toy: X must be a 2-D float array"):
        Dataset(np.zeros((2, 2), dtype=int), None, "toy")
    with pytest.raises(DataError, match=r"image_shape \(3, 3\) does not match 4 features"):
        Dataset(np.zeros((2, 4)), None, "toy", image_shape=(3, 3))


def test_summary_lists_at_most_30_classes():
    ds = Dataset(np.zeros((40, 1)), np.arange(40), "many")
    line = ds.summary().splitlines()[1]
    assert line.startswith("40 classes: 0: 1, 1: 1") and line.endswith("… (10 more)")


# --------------------------------------------------------------------------- sparse sources


def random_csr(rng, shape=(47, 31), density=0.1):
    """A CSR float64 matrix with exact binary fractions (written and read back exactly)."""
    X = sp.random(*shape, density=density, format="csr", random_state=rng)
    X.data = np.round(X.data * 64) / 64 + 1 / 64  # (nnz,) non-zero
    return X


@pytest.mark.parametrize("zero_based", [True, False])
@pytest.mark.parametrize("suffix", [".svm", ".svmlight", ".libsvm", ".svm.gz"])
def test_svmlight_equals_scikit_learns_reader(tmp_path, rng, zero_based, suffix):
    dense = random_csr(rng).toarray()  # (47, 31)
    dense[:, -1] = 1.0  # the last column is present, so the column count is known
    X = sp.csr_matrix(dense)
    y = rng.integers(-2, 3, size=X.shape[0])
    path = tmp_path / f"data{suffix}"
    plain = tmp_path / "plain.svm"
    dump_svmlight_file(X, y, str(plain), zero_based=zero_based)
    with (gzip.open if suffix.endswith(".gz") else open)(path, "wb") as f:
        f.write(plain.read_bytes())
    ds = load_dataset(path, zero_based=zero_based)
    ref_X, ref_y = load_svmlight_file(str(plain), zero_based=zero_based, n_features=X.shape[1])
    assert ds.sparse and ds.X.format == "csr" and ds.X.dtype == np.float64
    assert ds.X.shape == ref_X.shape == X.shape
    assert (ds.X != ref_X).nnz == 0 and (ds.X != X).nnz == 0
    np.testing.assert_array_equal(ds.y, ref_y.astype(np.int64))
    assert ds.y.dtype == np.int64 and ds.first_index == (0 if zero_based else 1)


def test_svmlight_auto_base_query_ids_comments_and_blank_lines(tmp_path):
    one = tmp_path / "one.svm"
    one.write_text("# header\n3 qid:7 1:0.5 4:2\n\n-1 qid:8 2:1.5 # comment\n")
    ds = load_dataset(one)
    assert ds.first_index == 1
    np.testing.assert_array_equal(ds.X.toarray(), [[0.5, 0, 0, 2], [0, 1.5, 0, 0]])
    np.testing.assert_array_equal(ds.y, [3, -1])
    zero = tmp_path / "zero.svm"
    zero.write_text("1 0:1 3:2\n2 2:5\n")
    ds = load_dataset(zero)
    assert ds.first_index == 0
    np.testing.assert_array_equal(ds.X.toarray(), [[1, 0, 0, 2], [0, 0, 5, 0]])


def test_svmlight_padded_to_the_wanted_columns_or_refused_naming_the_index(tmp_path):
    path = tmp_path / "d.svm"
    path.write_text("1 1:1\n2 2:2 3:3\n")
    ds = load_dataset(path, n_features=6)
    assert ds.X.shape == (2, 6)
    np.testing.assert_array_equal(ds.X.toarray()[:, :3], [[1, 0, 0], [0, 2, 3]])
    with pytest.raises(DataError, match=r"d\.svm: line 2: feature index 3 is beyond the model's 2"):
        load_dataset(path, n_features=2)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("1 1:1\n2 2 3\n", r"line 2: '2' is not index:value"),
        ("1 1:1\n\n# c\n1 -3:2\n", r"line 4: feature index -3 is negative"),
        ("1 1:abc\n", r"line 1: value 'abc' of feature 1 is not a number"),
        ("1 1:1\n2 2:nan\n", r"line 2: value nan of feature 2; features must be finite"),
        ("1 1:inf\n", r"line 1: value inf of feature 1"),
        ("1 x:1\n", r"line 1: feature index 'x'"),
        ("oops 1:1\n", r"line 1: label 'oops' is not a number"),
        ("1.5 1:1\n", r"line 1: label 1.5; svmlight labels must be integers"),
        ("1 3:1 2:1\n", r"line 1: feature index 2 follows 3"),
        ("1 99999999999:1\n", r"line 1: feature index 99999999999 is beyond the largest"),
        ("# only a comment\n\n", r"no samples"),
    ],
)
def test_svmlight_bad_content_names_the_line(tmp_path, text, match):
    path = tmp_path / "bad.svm"
    path.write_text(text)
    with pytest.raises(DataError, match=match) as info:
        load_dataset(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_svmlight_index_0_read_as_one_based(tmp_path):
    path = tmp_path / "z.svm"
    path.write_text("1 1:1\n2 0:1\n")
    with pytest.raises(DataError, match=r"line 2: feature index 0 .* one-based; pass zero_based"):
        load_dataset(path, zero_based=False)


@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_sparse_npz_equals_scipys_with_labels_inside_or_beside(tmp_path, rng, fmt):
    X = random_csr(rng)
    y = rng.integers(0, 3, size=X.shape[0])
    path = tmp_path / "x.npz"
    sp.save_npz(path, X.asformat(fmt))
    ds = load_dataset(path, require_labels=False)
    assert ds.y is None and ds.X.format == "csr" and ds.X.has_canonical_format
    assert (ds.X != sp.load_npz(path)).nnz == 0 and ds.X.shape == X.shape
    np.save(tmp_path / "y.npy", y)
    ds = load_dataset(path, labels=tmp_path / "y.npy")
    np.testing.assert_array_equal(ds.y, y)
    inside = tmp_path / "inside.npz"
    with np.load(path, allow_pickle=False) as npz:
        arrays = dict(npz)
    names = np.array([f"w{j}" for j in range(X.shape[1])])
    np.savez(inside, **arrays, y=y.astype(str), feature_names=names)
    ds = load_dataset(inside)
    assert ds.feature_names == names.tolist() and ds.y.tolist() == y.astype(str).tolist()
    assert (ds.X != X).nnz == 0
    padded = load_dataset(inside, n_features=X.shape[1] + 4)
    assert padded.X.shape == (X.shape[0], X.shape[1] + 4)
    assert (padded.X[:, : X.shape[1]] != X).nnz == 0


def test_sparse_npz_float32_kept(tmp_path, rng):
    X = random_csr(rng).astype(np.float32)
    sp.save_npz(tmp_path / "f.npz", X)
    assert load_dataset(tmp_path / "f.npz", require_labels=False).X.dtype == np.float32


def test_zero_based_does_not_apply_to_csv(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,label\n1,0\n2,1\n")
    with pytest.raises(ValueError, match="zero_based= does not apply to a CSV file"):
        load_dataset(path, zero_based=True)


def test_dataset_accepts_only_canonical_finite_csr():
    X = sp.csr_matrix(np.eye(3))
    assert Dataset(X, None, "eye").sparse
    with pytest.raises(DataError, match="2-D float CSR"):
        Dataset(X.tocsc(), None, "eye")
    bad = X.copy()
    bad.data[1] = np.nan
    with pytest.raises(DataError, match=r"X\[1, 1\] .* is nan"):
        Dataset(bad, None, "eye")
