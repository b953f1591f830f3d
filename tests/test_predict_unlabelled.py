"""``crossent predict`` on unlabelled data (issue #7, section 6): a CSV without the label
column, a flat folder of images, single image files, IDX images without a labels file and
an ``.npz`` without ``y`` give the same predictions as the labelled version of the data,
and those are the predictions of the classifier rebuilt from the model file. ``evaluate``
still needs labels, and says so in one line."""

from __future__ import annotations

import gzip
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _hostile import expect_refusal, run_cli
from crossent.data import load_dataset
from crossent.model_io import load_model, save_model


def blobs(n_per_class: int = 12, d: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = 2.0 * rng.normal(size=(3, d))
    y = np.repeat(np.arange(3), n_per_class)
    return centres[y] + rng.normal(size=(len(y), d)), y


def train(data: Path, out: Path, *extra: str) -> Path:
    code, _, err = run_cli(["train", "--data", str(data), "--out", str(out), "--quiet", *extra])
    assert code == 0, err
    return out / "model.safetensors"


def predict(model: Path, data: Path | str, *extra: str) -> tuple[list[str], str]:
    """(the CSV lines that predict prints, its stderr)."""
    code, out, err = run_cli(["predict", "--model", str(model), "--data", str(data), *extra])
    assert code == 0, err
    return out.splitlines(), err


def reference_labels(model: Path, X: np.ndarray) -> list[str]:
    """Labels from the stored arrays by plain NumPy: argmax of standardised X Wᵀ + b."""
    arrays, meta = load_model(model)
    Z = X.astype(np.float64)
    if meta["preprocessing"]["standardize"]:
        Z = (Z - arrays["mean"]) / arrays["scale"]
    scores = Z @ arrays["coef"].T + arrays["intercept"]  # (n, C)
    return [str(meta["classes"][k]) for k in scores.argmax(axis=1)]


# --------------------------------------------------------------------------- CSV


@pytest.fixture(scope="module")
def species(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A model trained with ``--label-column species`` (a name crossent does not guess)."""
    folder = tmp_path_factory.mktemp("species")
    X, y = blobs()
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    rows = [
        f"{a!r},{s},{b!r},{c!r}" for (a, b, c), s in zip(X.tolist(), names.tolist(), strict=True)
    ]
    (folder / "train.csv").write_text("x1,species,x2,x3\n" + "\n".join(rows) + "\n")
    return train(folder / "train.csv", folder / "out", "--label-column", "species"), X


def test_csv_without_the_label_column(tmp_path, species):
    model, X = species
    labelled, _ = predict(model, model.parent.parent / "train.csv")
    rows = [f"{a!r},{b!r},{c!r}" for a, b, c in X.tolist()]
    (tmp_path / "test.csv").write_text("x1,x2,x3\n" + "\n".join(rows) + "\n")
    unlabelled, err = predict(model, tmp_path / "test.csv")
    assert err == ""
    assert unlabelled == labelled
    assert labelled[0] == "label" and labelled[1:] == reference_labels(model, X)


def test_csv_columns_in_another_order_with_an_extra_column(tmp_path, species):
    model, X = species
    rows = [f"{c!r},row{i},{a!r},{b!r}" for i, (a, b, c) in enumerate(X.tolist())]
    (tmp_path / "shuffled.csv").write_text("x3,id,x1,x2\n" + "\n".join(rows) + "\n")
    shuffled, _ = predict(model, tmp_path / "shuffled.csv", "--proba")
    labelled, _ = predict(model, model.parent.parent / "train.csv", "--proba")
    assert shuffled == labelled


def test_csv_missing_a_feature_column_names_it(tmp_path, species):
    model, X = species
    rows = [f"{a!r},{b!r}" for a, b, _ in X.tolist()]
    (tmp_path / "short.csv").write_text("x1,x2\n" + "\n".join(rows) + "\n")
    argv = ["predict", "--model", str(model), "--data", str(tmp_path / "short.csv")]
    expect_refusal(argv, names=[str(tmp_path / "short.csv"), "'x3'"], folder=tmp_path)


def test_evaluate_on_a_csv_without_labels_says_it_needs_them(tmp_path, species):
    model, X = species
    rows = [f"{a!r},{b!r},{c!r}" for a, b, c in X.tolist()]
    (tmp_path / "test.csv").write_text("x1,x2,x3\n" + "\n".join(rows) + "\n")
    argv = ["evaluate", "--model", str(model), "--data", str(tmp_path / "test.csv")]
    line = expect_refusal(argv, names=[str(tmp_path / "test.csv")], folder=tmp_path)
    # the model records its label column, so evaluate looks for it and says it is missing
    assert "no column named 'species' for the labels" in line


def test_evaluate_defaults_to_the_label_column_the_model_names(tmp_path, species):
    model, _ = species
    arrays, meta = load_model(model)
    save_model(tmp_path / "named.safetensors", arrays, {**meta, "label_column": "species"})
    data = model.parent.parent / "train.csv"
    argv = ["--data", str(data), "--out", str(tmp_path / "o"), "--json"]
    code, out, err = run_cli(["evaluate", "--model", str(tmp_path / "named.safetensors"), *argv])
    assert code == 0, err
    explicit = run_cli(["evaluate", "--model", str(model), *argv, "--label-column", "species"])
    assert explicit[0] == 0
    assert json.loads(out)["metrics"] == json.loads(explicit[1])["metrics"]


# --------------------------------------------------------------------------- images


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(model, class folder) of 6×5 grey images, two noisy classes, unique file names."""
    root = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(1)
    for k, name in enumerate(["dark", "light"]):
        for i in range(8):
            pixels = np.clip(rng.normal(80 + 90 * k, 40, (5, 6)), 0, 255).astype(np.uint8)
            path = root / "classes" / name / f"{name}_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)
    return train(root / "classes", root / "out"), root / "classes"


def test_flat_folder_and_single_images(tmp_path, shapes):
    model, classes = shapes
    labelled, _ = predict(model, classes)
    flat = tmp_path / "flat"
    flat.mkdir()
    files = sorted(classes.glob("*/*.png"))
    for file in files:
        shutil.copy(file, flat / file.name)
    unlabelled, err = predict(model, flat)
    assert unlabelled == labelled and err == ""
    singles = [predict(model, flat / f.name)[0] for f in files]
    assert [s[1] for s in singles] == labelled[1:]
    X = load_dataset(classes).X
    assert labelled[1:] == reference_labels(model, X)


def test_image_of_another_size_and_mode_is_converted_with_a_warning(tmp_path, shapes):
    model, classes = shapes
    file = sorted(classes.glob("light/*.png"))[0]
    grey = Image.open(file)
    grey.resize((12, 10), Image.Resampling.NEAREST).convert("RGB").save(tmp_path / "big.png")
    lines, err = predict(model, tmp_path / "big.png", "--proba")
    assert err.count("\n") == 1 and err.startswith("crossent: warning: ")
    assert "1 of 1 images converted to 6×5 L (image shape (5, 6))" in err
    expected = np.asarray(
        Image.open(tmp_path / "big.png").convert("L").resize((6, 5), Image.Resampling.BILINEAR),
        dtype=np.float32,
    ).reshape(1, -1) / np.float32(255)
    assert [lines[1]] == predict_rows(model, expected)


def predict_rows(model: Path, X: np.ndarray) -> list[str]:
    """The ``--proba`` rows predict writes for ``X``, through an ``.npz`` without ``y``."""
    path = model.parent / "rows.npz"
    np.savez(path, X=X)
    try:
        return predict(model, path, "--proba")[0][1:]
    finally:
        path.unlink()


def test_flat_folder_cannot_be_evaluated(tmp_path, shapes):
    model, classes = shapes
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(next(classes.glob("dark/*.png")), flat / "a.png")
    argv = ["evaluate", "--model", str(model), "--data", str(flat), "--out", str(tmp_path / "o")]
    line = expect_refusal(argv, names=[str(flat)], folder=tmp_path)
    assert line.endswith("evaluate needs labels")


# --------------------------------------------------------------------------- IDX, npz


def write_idx(path: Path, arr: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    path.write_bytes(gzip.compress(header + arr.astype(np.uint8).tobytes()))


def test_idx_images_without_a_labels_file(tmp_path):
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(2), 10)
    images = np.clip(rng.normal(60 + 120 * y[:, None, None], 50, (20, 3, 4)), 0, 255)
    (tmp_path / "train").mkdir()
    write_idx(tmp_path / "train" / "train-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "train" / "train-labels-idx1-ubyte.gz", y)
    model = train(tmp_path / "train" / "train-images-idx3-ubyte.gz", tmp_path / "out")
    labelled, _ = predict(model, tmp_path / "train" / "train-images-idx3-ubyte.gz")
    (tmp_path / "test").mkdir()
    shutil.copy(tmp_path / "train" / "train-images-idx3-ubyte.gz", tmp_path / "test")
    unlabelled, err = predict(model, tmp_path / "test" / "train-images-idx3-ubyte.gz")
    assert unlabelled == labelled and err == ""
    X = images.reshape(20, -1).astype(np.uint8).astype(np.float32) / np.float32(255)
    assert labelled[1:] == reference_labels(model, X)


def test_npz_without_y(tmp_path, species):
    model, X = species
    np.savez(tmp_path / "x.npz", X=X)
    unlabelled, _ = predict(model, tmp_path / "x.npz")
    labelled, _ = predict(model, model.parent.parent / "train.csv")
    assert unlabelled == labelled


def test_csv_with_duplicate_feature_names_is_read_by_position(tmp_path):
    X, y = blobs(d=2)
    rows = [f"{a!r},{b!r},{k}" for (a, b), k in zip(X.tolist(), y.tolist(), strict=True)]
    (tmp_path / "dup.csv").write_text("a,a,label\n" + "\n".join(rows) + "\n")
    model = train(tmp_path / "dup.csv", tmp_path / "out")
    lines, _ = predict(model, tmp_path / "dup.csv")
    assert lines[1:] == reference_labels(model, X)
