"""Hostile data files (issue #7, section 2 and 6): each is refused with one line naming the
file, no traceback, and nothing written: through the command (``expect_refusal``) and, where
the library's own wording is the point, through :func:`crossent.data.load_dataset`.

The bombs are tiny files whose headers claim terabytes; a loader that allocated from the
claim would die with ``MemoryError`` (a traceback), so these tests fail on such a loader.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _hostile import expect_refusal, run_cli
from crossent.data import DataError, load_dataset

# --------------------------------------------------------------------------- file makers


def idx_bytes(code: int, dims: tuple[int, ...], data: bytes) -> bytes:
    """An IDX file: magic ``00 00 code ndim``, big-endian uint32 dims, then ``data``."""
    return struct.pack(">BBBB", 0, 0, code, len(dims)) + struct.pack(f">{len(dims)}I", *dims) + data


def write(path: Path, payload: bytes, *, gz: bool = False) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return str(path)


def npy_bytes(shape: tuple[int, ...], descr: str, data: bytes) -> bytes:
    """An ``.npy`` stream whose header claims ``shape`` whatever ``data`` holds."""
    buffer = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + data


def npz_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for key, payload in members.items():
            archive.writestr(f"{key}.npy", payload)
    return buffer.getvalue()


def png_bytes(width: int, height: int) -> bytes:
    """A valid PNG header (8-bit grey) claiming ``width × height``, with a token of data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def small_png(path: Path, value: int = 0, size: tuple[int, int] = (4, 4)) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size[::-1], value, dtype=np.uint8)).save(path)
    return str(path)


def train(data: str, tmp_path: Path, *extra: str) -> list[str]:
    return ["train", "--data", data, *extra, "--out", str(tmp_path / "out")]


@pytest.fixture(scope="module")
def csv_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(model file, its training CSV) for the output-is-an-input cases."""
    folder = tmp_path_factory.mktemp("model")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 2)) + np.repeat([[0.0, 0.0], [2.0, 2.0]], 15, axis=0)
    rows = [f"{a!r},{b!r},{k}" for (a, b), k in zip(X.tolist(), [0] * 15 + [1] * 15, strict=True)]
    data = folder / "f.csv"
    data.write_text("x1,x2,label\n" + "\n".join(rows) + "\n")
    code, _, err = run_cli(["train", "--data", str(data), "--out", str(folder), "--quiet"])
    assert code == 0, err
    return str(folder / "model.safetensors"), str(data)


# --------------------------------------------------------------------------- bombs


def test_gzipped_idx_claiming_65536_cubed(tmp_path):
    header_only = idx_bytes(0x08, (65536, 65536, 65536), b"\0" * 10)
    path = write(tmp_path / "bomb-images-idx3-ubyte.gz", header_only, gz=True)
    assert os.path.getsize(path) < 64
    line = expect_refusal(train(path, tmp_path), names=[path], folder=tmp_path)
    assert "IDX header says 281474976710656 bytes" in line and "file has 10" in line


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_idx_dims_of_2_to_the_32_minus_1(tmp_path, gz):
    dims = (2**32 - 1, 2**32 - 1, 2**32 - 1)
    path = write(tmp_path / "huge-images-idx3-ubyte", idx_bytes(0x08, dims, b"\0" * 8), gz=gz)
    line = expect_refusal(train(path, tmp_path), names=[path], folder=tmp_path)
    assert "4294967295×4294967295×4294967295" in line and "file has 8" in line


def test_gzipped_idx_with_more_data_than_its_header_stops_reading(tmp_path):
    # 2 MB of zeros after a header that announces 4 bytes: refused, not read to the end
    path = write(
        tmp_path / "x-images-idx3-ubyte.gz", idx_bytes(0x08, (1, 2, 2), bytes(1 << 22)), gz=True
    )
    line = expect_refusal(train(path, tmp_path), names=[path], folder=tmp_path)
    assert "IDX header says 4 bytes" in line and "file has more than" in line


def test_npz_whose_npy_header_claims_2_to_the_20_squared(tmp_path):
    claim = npy_bytes((2**20, 2**20), "<f8", b"\0" * 16)
    path = write(
        tmp_path / "bomb.npz", npz_bytes({"X": claim, "y": npy_bytes((2,), "<i8", bytes(16))})
    )
    assert os.path.getsize(path) < 400
    line = expect_refusal(train(path, tmp_path), names=[path], folder=tmp_path)
    assert "array 'X'" in line and "(1048576, 1048576)" in line and "holds 16" in line


def test_npz_whose_zip_directory_lies_about_the_member_size(tmp_path):
    payload = npz_bytes({"X": npy_bytes((2, 2), "<f8", bytes(32))}, zipfile.ZIP_STORED)
    central = payload.index(b"PK\x01\x02")  # uncompressed size at offset 24 of the entry
    lie = payload[: central + 24] + struct.pack("<I", 2**31) + payload[central + 28 :]
    path = write(tmp_path / "liar.npz", lie)
    line = expect_refusal(train(path, tmp_path), names=[path], folder=tmp_path)
    assert "array 'X' claims 2147483648 bytes" in line and "corrupted" in line


def test_csv_with_20000_columns_and_a_million_blank_lines(tmp_path):
    header = ",".join(f"c{i}" for i in range(20000)) + ",label\n"
    path = write(tmp_path / "wide.csv", (header + "\n" * 1_000_000).encode())
    assert os.path.getsize(path) > 1_000_000
    line = expect_refusal(train(path, tmp_path), names=[path], folder=tmp_path)
    assert "no data rows after the header" in line


def test_png_claiming_60000_squared_in_an_image_folder(tmp_path):
    small_png(tmp_path / "pets" / "cat" / "a.png")
    bomb = write(tmp_path / "pets" / "dog" / "bomb.png", png_bytes(60000, 60000))
    line = expect_refusal(train(str(tmp_path / "pets"), tmp_path), names=[bomb], folder=tmp_path)
    assert "3600000000 pixels" in line


def test_png_over_pillows_warning_limit_is_refused_before_decoding(tmp_path, csv_model):
    bomb = write(tmp_path / "big.png", png_bytes(10000, 10000))  # 1e8 pixels > 89478485
    model, _ = csv_model
    argv = ["predict", "--model", model, "--data", bomb]
    line = expect_refusal(argv, names=[bomb], folder=tmp_path)
    assert "100000000 pixels" in line


# --------------------------------------------------------------------------- malformed files


def test_truncated_idx(tmp_path):
    path = write(tmp_path / "t-images-idx3-ubyte", idx_bytes(0x08, (2, 4, 4), bytes(20)))
    line = expect_refusal(train(path, tmp_path), names=[path], folder=tmp_path)
    assert "IDX header says 32 bytes of data" in line and "file has 20" in line


def test_truncated_idx_header(tmp_path):
    path = write(tmp_path / "h-images-idx3-ubyte", idx_bytes(0x08, (2, 4, 4), b"")[:9])
    line = expect_refusal(train(path, tmp_path), names=[path], folder=tmp_path)
    assert "truncated IDX header (3 dimensions announced)" in line


def test_truncated_gzip_idx(tmp_path):
    whole = gzip.compress(idx_bytes(0x08, (50, 8, 8), bytes(range(256)) * 12 + bytes(128)))
    path = write(tmp_path / "g-images-idx3-ubyte.gz", whole[:-12])
    line = expect_refusal(train(path, tmp_path), names=[path], folder=tmp_path)
    assert "corrupted or truncated gzip" in line


def test_wrong_idx_dtype_code(tmp_path):
    path = write(tmp_path / "w-images-idx3-ubyte", idx_bytes(0x0A, (1, 2, 2), bytes(4)))
    line = expect_refusal(train(path, tmp_path), names=[path], folder=tmp_path)
    assert "unknown IDX data type code 0x0A" in line


def test_npz_without_x(tmp_path):
    path = write(tmp_path / "nox.npz", npz_bytes({"y": npy_bytes((2,), "<i8", bytes(16))}))
    line = expect_refusal(train(path, tmp_path), names=[path], folder=tmp_path)
    assert "no array 'X' (the archive holds: y)" in line


def test_npz_without_y_for_training(tmp_path):
    path = write(tmp_path / "noy.npz", npz_bytes({"X": npy_bytes((2, 2), "<f8", bytes(32))}))
    line = expect_refusal(train(path, tmp_path), names=[path], folder=tmp_path)
    assert "no array 'y'" in line and line.endswith("train needs labels")
    assert "require_labels" not in line


def test_npy_file_named_npz(tmp_path):
    path = write(tmp_path / "one.npz", npy_bytes((2, 2), "<f8", bytes(32)))
    line = expect_refusal(train(path, tmp_path), names=[path], folder=tmp_path)
    assert "a single .npy array" in line


def test_ragged_csv_rows_name_the_line(tmp_path):
    path = write(tmp_path / "ragged.csv", b"x1,x2,label\n1,2,a\n3,4,b\n5,b\n")
    line = expect_refusal(train(path, tmp_path), names=[path], folder=tmp_path)
    assert "line 4: 2 fields, the header has 3" in line


def test_non_utf8_csv_names_the_line(tmp_path):
    path = write(tmp_path / "latin.csv", b"x1,x2,label\n1,2,cafe\n3,4,caf\xe9\n")
    line = expect_refusal(train(path, tmp_path), names=[path], folder=tmp_path)
    assert "line 3: not UTF-8 text" in line


def test_label_column_that_does_not_exist(tmp_path):
    path = write(tmp_path / "iris.csv", b"x1,x2,label\n1,2,a\n3,4,b\n")
    argv = train(path, tmp_path, "--label-column", "species")
    line = expect_refusal(argv, names=[path, "'species'"], folder=tmp_path)
    assert "no column named 'species'" in line


def test_label_column_index_out_of_range(tmp_path):
    path = write(tmp_path / "idx.csv", b"x1,x2,label\n1,2,a\n3,4,b\n")
    line = expect_refusal(
        train(path, tmp_path, "--label-column", "7"), names=[path], folder=tmp_path
    )
    assert "label column 7 is out of range for the header's 3 columns" in line


def test_csv_without_a_label_column_is_not_guessed(tmp_path):
    path = write(tmp_path / "nolabel.csv", b"x1,x2,x3\n1,2,0.5\n3,4,1.5\n")
    line = expect_refusal(
        train(path, tmp_path), names=[path, "--label-column NAME"], folder=tmp_path
    )
    assert "no label column (none is named label, target, class, y)" in line
    assert "train needs labels" in line and "label_column=" not in line


def test_csv_with_two_candidate_label_columns(tmp_path):
    path = write(tmp_path / "two.csv", b"x1,Target,y\n1,2,0\n3,4,1\n")
    line = expect_refusal(
        train(path, tmp_path), names=[path, "--label-column NAME"], folder=tmp_path
    )
    assert "columns 'Target' and 'y' could each be the labels" in line


@pytest.mark.parametrize("command", ["train", "predict"])
def test_empty_folder(tmp_path, csv_model, command):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    path = str(tmp_path / "empty")
    given = {"train": ["--out", str(tmp_path / "out")], "predict": ["--model", csv_model[0]]}
    argv = [command, "--data", path, *given[command]]
    line = expect_refusal(argv, names=[path], folder=tmp_path)
    assert "an empty folder: no images (.png, .jpg" in line


def test_flat_image_folder_cannot_train(tmp_path):
    small_png(tmp_path / "flat" / "a.png")
    path = str(tmp_path / "flat")
    line = expect_refusal(train(path, tmp_path), names=[path], folder=tmp_path)
    assert "no class folders, so no labels" in line and line.endswith("train needs labels")


def test_idx_without_labels_cannot_be_evaluated(tmp_path, csv_model):
    path = write(tmp_path / "t10k-images-idx3-ubyte", idx_bytes(0x08, (1, 1, 2), bytes(2)))
    model, _ = csv_model
    argv = ["evaluate", "--model", model, "--data", path, "--out", str(tmp_path / "out")]
    line = expect_refusal(argv, names=[path, "--labels FILE"], folder=tmp_path)
    assert "evaluate needs labels: pass --labels FILE" in line and "labels=" not in line


# --------------------------------------------------------------------------- output = input


def test_predict_output_is_the_data(tmp_path, csv_model):
    model, data = csv_model
    copy = tmp_path / "f.csv"
    copy.write_bytes(Path(data).read_bytes())
    argv = ["predict", "--model", model, "--data", str(copy), "--output", str(copy)]
    line = expect_refusal(argv, names=[str(copy), "--data"], folder=tmp_path)
    assert "choose another --output" in line


def test_predict_output_is_a_link_to_the_data(tmp_path, csv_model):
    model, data = csv_model
    copy = tmp_path / "f.csv"
    copy.write_bytes(Path(data).read_bytes())
    (tmp_path / "link.csv").symlink_to(copy)
    argv = [
        "predict",
        "--model",
        model,
        "--data",
        str(copy),
        "--output",
        str(tmp_path / "link.csv"),
    ]
    expect_refusal(argv, names=[str(tmp_path / "link.csv"), "--data"], folder=tmp_path)


def test_predict_output_is_the_model(tmp_path, csv_model):
    model, data = csv_model
    copy = tmp_path / "model.safetensors"
    copy.write_bytes(Path(model).read_bytes())
    argv = ["predict", "--model", str(copy), "--data", data, "--output", str(copy)]
    expect_refusal(argv, names=[str(copy), "--model"], folder=tmp_path)


# --------------------------------------------------------------------------- the library's wording


def test_library_names_its_parameters(tmp_path):
    path = write(tmp_path / "t-images-idx3-ubyte", idx_bytes(0x08, (1, 1, 2), bytes(2)))
    with pytest.raises(DataError, match=r"t-images-idx3-ubyte: no labels file found") as info:
        load_dataset(path)
    assert str(info.value).endswith("; pass labels=FILE or require_labels=False")
    assert info.value.remedies == (("labels", "FILE"), ("require_labels", "False"))
    csv_path = write(tmp_path / "u.csv", b"a,b\n1,2\n")
    with pytest.raises(DataError, match=r"u\.csv: line 1: no label column.*label_column=NAME"):
        load_dataset(csv_path)


def test_library_refuses_a_bomb_by_name(tmp_path):
    claim = npy_bytes((2**20, 2**20), "<f8", b"")
    path = write(tmp_path / "b.npz", npz_bytes({"X": claim}))
    with pytest.raises(DataError, match=r"b\.npz: array 'X': its header says shape"):
        load_dataset(path, require_labels=False)


def test_png_claiming_more_pixels_than_its_bytes_hold_even_without_pillows_limit(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # as many notebooks do
    small_png(tmp_path / "pets" / "cat" / "a.png")
    bomb = write(tmp_path / "pets" / "dog" / "bomb.png", png_bytes(60000, 60000))
    line = expect_refusal(train(str(tmp_path / "pets"), tmp_path), names=[bomb], folder=tmp_path)
    assert "claims 60000×60000 = 3600000000 pixels" in line


def test_predict_output_is_an_image_of_the_data_folder(tmp_path, csv_model):
    model, _ = csv_model
    image = small_png(tmp_path / "imgs" / "a.png")
    argv = ["predict", "--model", model, "--data", str(tmp_path / "imgs"), "--output", image]
    expect_refusal(argv, names=[image, "--data"], folder=tmp_path)


def test_idx_with_too_many_dimensions(tmp_path):
    path = write(tmp_path / "d-images-idx3-ubyte", idx_bytes(0x08, (0,) * 70, b""))
    line = expect_refusal(train(path, tmp_path), names=[path], folder=tmp_path)
    assert "an IDX array of 70 dimensions" in line


def test_a_device_is_not_read_until_memory_runs_out(tmp_path):
    (tmp_path / "zero.csv").symlink_to("/dev/zero")
    path = str(tmp_path / "zero.csv")
    line = expect_refusal(train(path, tmp_path), names=[path], folder=tmp_path)
    assert "not a regular file" in line


def test_images_too_many_for_memory(tmp_path, monkeypatch):
    small_png(tmp_path / "pets" / "cat" / "a.png")
    small_png(tmp_path / "pets" / "dog" / "b.png")
    real_empty = np.empty

    def no_memory(shape, *args, **kwargs):  # as np.empty does for more than there is
        if shape == (2, 16):
            raise MemoryError
        return real_empty(shape, *args, **kwargs)

    monkeypatch.setattr(np, "empty", no_memory)
    path = str(tmp_path / "pets")
    line = expect_refusal(train(path, tmp_path), names=[path], folder=tmp_path)
    assert "2 images of shape (4, 4) need 128 bytes" in line
