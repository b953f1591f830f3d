"""Tests of the ``crossent`` command, run in-process through ``crossent.cli.main`` (and
in a new process where the round trip of a model file is the point)."""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import os
import pickle
import re
import shlex
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from threadpoolctl import threadpool_limits

import crossent
from _hostile import run_cli as run
from crossent import SoftmaxClassifier
from crossent._cli import _train
from crossent.cli import main
from crossent.data import load_dataset
from crossent.model_io import load_model, save_model

ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
REPORT_SECTIONS = ("metrics", "per-class", "loss-curve", "confusion", "templates", "entropy-hist")


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread() -> Iterator[None]:
    """Small problems: one BLAS thread is faster, and immune to a busy machine."""
    with threadpool_limits(limits=1):
        yield


def blobs(n_per_class: int = 20, n_classes: int = 3, d: int = 4, seed: int = 0):
    """Overlapping Gaussian blobs: ``X`` (n, d) float64 and int labels (n,)."""
    rng = np.random.default_rng(seed)
    centres = 1.5 * rng.normal(size=(n_classes, d))
    y = np.repeat(np.arange(n_classes), n_per_class)
    return centres[y] + rng.normal(size=(len(y), d)), y


def section_ids(html_text: str) -> set[str]:
    """The ``id`` attributes of an HTML document."""
    ids: set[str] = set()

    class Ids(HTMLParser):
        def handle_starttag(self, tag, attrs):
            ids.update(v for k, v in attrs if k == "id" and v)

    Ids().feed(html_text)
    return ids


# --------------------------------------------------------------------------- train


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> tuple[Path, int, str, str]:
    """``crossent train`` with no arguments, run once in an empty folder."""
    folder = tmp_path_factory.mktemp("default")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        code, out, err = run(["train"])
    return folder, code, out, err


def test_train_with_no_arguments(digits_run):
    folder, code, out, err = digits_run
    assert code == 0, err
    for text in (
        "data      digits: 1797 samples × 64 features, 8×8 images, 10 classes",
        "split     1347 train / 450 test (stratified, test size 0.25, seed 0)",
        "lbfgs, l2 = 1, images in [0, 1], not standardized",
        "test cross-entropy (nats)",
        "mean KL(one-hot ‖ q)",
        "label entropy H(p)",
        "KL(p ‖ q̄)",
        "per class (test)",
        "wrote crossent-out/model.safetensors",
        "wrote crossent-out/report.html",
    ):
        assert text in out
    accuracy = re.search(r"accuracy  train (\S+)   test (\S+)", out)
    assert accuracy is not None
    assert float(accuracy.group(2)) >= 0.95
    table = out[out.index("per class (test)") :].splitlines()
    assert table[1].split() == ["class", "precision", "recall", "support"]
    assert [row.split()[0] for row in table[2:12]] == [str(k) for k in range(10)]
    assert sum(int(row.split()[3]) for row in table[2:12]) == 450
    assert sorted(os.listdir(folder / "crossent-out")) == ["model.safetensors", "report.html"]

    arrays, meta = load_model(folder / "crossent-out" / "model.safetensors")
    assert sorted(arrays) == ["coef", "intercept"]  # images: no standardisation arrays
    assert arrays["coef"].shape == (10, 64) and arrays["intercept"].shape == (10,)
    assert meta["classes"] == list(range(10))
    assert meta["n_features"] == 64 and meta["image_shape"] == [8, 8]
    assert meta["preprocessing"] == {"standardize": False}
    assert meta["l2"] == 1.0 and meta["solver"] == "auto"
    assert meta["crossent_version"] == crossent.__version__
    assert abs(meta["training"]["test_accuracy"] - float(accuracy.group(2))) <= 5e-5
    assert meta["training"]["converged"] is True


def test_readme_shows_what_train_prints_today(digits_run):
    """The README's output block is this run's stdout: same lines, numbers to 1e-3."""
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    block = re.search(
        r"`crossent train` with no arguments prints.*?```text\n(.*?)```", readme, re.S
    )
    assert block is not None, "README lost its example output of `crossent train`"
    number = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
    documented, printed = block.group(1).strip().splitlines(), digits_run[2].strip().splitlines()
    assert len(documented) == len(printed), "README output has a different number of lines"
    for doc_line, out_line in zip(documented, printed, strict=True):
        assert number.sub("#", doc_line) == number.sub("#", out_line), (doc_line, out_line)
        for doc_value, out_value in zip(
            number.findall(doc_line), number.findall(out_line), strict=True
        ):
            assert float(doc_value) == pytest.approx(float(out_value), rel=1e-3, abs=1e-3), (
                doc_line,
                out_line,
            )


def test_train_report_has_every_section(digits_run):
    folder = digits_run[0]
    text = (folder / "crossent-out" / "report.html").read_text(encoding="utf-8")
    assert set(REPORT_SECTIONS) <= section_ids(text)
    for heading in (
        "Metrics",
        "Per class",
        "Training objective",
        "Confusion matrix",
        "Class templates",
        "Prediction entropy",
        "test accuracy",
        "mean KL(one-hot ‖ q)",
    ):
        assert heading in text


def test_round_trip_in_a_new_process(tmp_path):
    code, out, err = run(["train", "--json", "--out", str(tmp_path / "m")])
    assert code == 0, err
    summary = json.loads(out)  # nothing but the JSON document on stdout
    assert summary["test"]["accuracy"] >= 0.95
    assert summary["train"]["accuracy"] >= summary["test"]["accuracy"] - 0.05
    assert summary["model"] == str(tmp_path / "m" / "model.safetensors")
    model = Path(summary["model"])

    arrays, meta = load_model(model)  # rebuild the classifier from the file by hand
    clf = SoftmaxClassifier()
    clf.classes_ = np.array(meta["classes"])
    clf.coef_, clf.intercept_ = arrays["coef"], arrays["intercept"]
    clf.n_features_in_ = meta["n_features"]
    X = load_dataset("digits").X

    env = {**os.environ, **ONE_THREAD}
    command = [sys.executable, "-m", "crossent.cli", "predict", "--model", str(model)]
    output = tmp_path / "proba.csv"
    done = subprocess.run(
        [*command, "--data", "digits", "--proba", "--output", str(output)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    with open(output, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == [str(c) for c in range(10)]
    proba = np.array([[float(v) for v in row] for row in rows[1:]])
    assert np.array_equal(proba, clf.predict_proba(X))  # bit for bit

    done = subprocess.run(
        [*command, "--data", "digits"], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "label"
    np.testing.assert_array_equal(np.array(lines[1:], dtype=int), clf.predict(X))


# --------------------------------------------------------------------------- data sources


def make_npz(folder: Path) -> tuple[list[str], dict]:
    X, y = blobs()
    np.savez(folder / "blobs.npz", X=X, y=y)
    return ["--data", str(folder / "blobs.npz")], {"classes": [0, 1, 2], "standardize": True}


def make_csv(folder: Path) -> tuple[list[str], dict]:
    X, y = blobs(seed=1, d=3)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    lines = ["x1,x2,species,x3"]
    lines += [
        f"{a!r},{b!r},{name},{c!r}" for (a, b, c), name in zip(X.tolist(), names, strict=True)
    ]
    (folder / "iris.csv").write_text("\n".join(lines) + "\n")
    argv = ["--data", str(folder / "iris.csv"), "--label-column", "species"]
    expected = {
        "classes": ["setosa", "versicolor", "virginica"],
        "standardize": True,
        "feature_names": ["x1", "x2", "x3"],
    }
    return argv, expected


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def make_idx(folder: Path) -> tuple[list[str], dict]:
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(3), 16)
    images = rng.integers(0, 60, (len(y), 5, 4)).astype(np.uint8)
    for k in range(3):  # each class lights up its own rows
        images[y == k, k, :] = 250
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
    (folder / "my-labels.gz").write_bytes(gzip.compress(idx_bytes(y)))
    argv = [
        "--data",
        str(folder / "train-images-idx3-ubyte.gz"),
        "--labels",
        str(folder / "my-labels.gz"),
    ]
    return argv, {"classes": [0, 1, 2], "standardize": False, "image_shape": [5, 4]}


def make_pngs(folder: Path, bad_image: bool = True) -> Path:
    rng = np.random.default_rng(3)
    root = folder / "pets"
    for k, name in enumerate(["cat", "dog"]):
        (root / name).mkdir(parents=True)
        for i in range(10):
            pixels = rng.integers(0, 80, (6, 7))
            pixels[:, 3 * k : 3 * k + 3] = 230  # cats left, dogs right
            Image.fromarray(pixels.astype(np.uint8), "L").save(root / name / f"{i}.png")
    if bad_image:
        (root / "cat" / "broken.png").write_bytes(b"this is not a PNG")
    return root


def make_folder(folder: Path) -> tuple[list[str], dict]:
    root = make_pngs(folder)
    argv = ["--data", str(root), "--skip-bad-images"]
    expected = {
        "classes": ["cat", "dog"],
        "standardize": False,
        "image_shape": [6, 7],
        "warning": "broken.png: cannot read image",
    }
    return argv, expected


@pytest.mark.parametrize("make", [make_npz, make_csv, make_idx, make_folder])
def test_train_on_each_data_source(tmp_path, make):
    argv, expected = make(tmp_path)
    out = tmp_path / "out"
    code, stdout, err = run(["train", *argv, "--out", str(out), "--json"])
    assert code == 0, err
    summary = json.loads(stdout)
    arrays, meta = load_model(out / "model.safetensors")
    assert meta["classes"] == expected["classes"] == summary["classes"]
    assert meta["preprocessing"]["standardize"] is expected["standardize"]
    assert ("mean" in arrays) is expected["standardize"]
    assert meta["image_shape"] == expected.get("image_shape")
    assert meta["feature_names"] == expected.get("feature_names")
    assert summary["test"]["accuracy"] >= 0.8
    assert (out / "report.html").is_file()
    if "warning" in expected:
        assert expected["warning"] in err and "skipped" in err
    else:
        assert err == ""


# --------------------------------------------------------------------------- evaluate, predict


@pytest.fixture(scope="module")
def model(digits_run) -> Path:
    return digits_run[0] / "crossent-out" / "model.safetensors"


def test_evaluate(model, tmp_path):
    (tmp_path / "m").mkdir()
    copy = tmp_path / "m" / "model.safetensors"
    copy.write_bytes(model.read_bytes())
    code, out, err = run(["evaluate", "--model", str(copy), "--data", "digits"])
    assert code == 0, err
    assert out.startswith(f"model     {copy}: 10 classes, 64 features\n")
    for text in ("accuracy  0.9", "mean cross-entropy", "per class (digits)", "KL(p ‖ q̄)"):
        assert text in out
    assert out.endswith(f"wrote {tmp_path / 'm' / 'evaluation.html'}\n")  # beside the model
    assert sorted(os.listdir(tmp_path / "m")) == ["evaluation.html", "model.safetensors"]

    argv = ["evaluate", "--model", str(model), "--data", "digits", "--json"]
    code, out, err = run([*argv, "--out", str(tmp_path / "ev")])
    assert code == 0, err
    summary = json.loads(out)
    metrics = summary["metrics"]
    assert metrics["n_samples"] == 1797 and metrics["accuracy"] >= 0.95
    assert metrics["kl_onehot"] == metrics["cross_entropy"]
    assert np.array(metrics["confusion"]).sum() == 1797
    assert os.listdir(tmp_path / "ev") == ["evaluation.html"]
    text = (tmp_path / "ev" / "evaluation.html").read_text(encoding="utf-8")
    assert {"metrics", "per-class", "confusion", "templates", "entropy-hist"} <= section_ids(text)


def test_predict_labels_to_a_file(model, tmp_path):
    X = load_dataset("digits").X[:5]
    np.savez(tmp_path / "five.npz", X=X.reshape(5, 8, 8))  # unlabelled images
    output = tmp_path / "labels.csv"
    code, out, err = run(
        [
            "predict",
            "--model",
            str(model),
            "--data",
            str(tmp_path / "five.npz"),
            "--output",
            str(output),
        ]
    )
    assert code == 0, err
    assert out == f"wrote {output} (5 rows)\n"
    assert output.read_text().splitlines() == ["label", "0", "1", "2", "3", "4"]


# --------------------------------------------------------------------------- bad input


def csv_file(name: str, text: str) -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        (folder / name).write_text(text)
        return ["train", "--data", str(folder / name)]

    return make


def idx_mismatch(folder: Path) -> list[str]:
    images = idx_bytes(np.zeros((10, 4, 4), np.uint8))[:-60]  # header says 160 bytes, has 100
    (folder / "t10k-images-idx3-ubyte").write_bytes(images)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(10, np.uint8)))
    return ["train", "--data", str(folder / "t10k-images-idx3-ubyte")]


def one_class_folder(folder: Path) -> list[str]:
    root = make_pngs(folder, bad_image=False)
    for file in (root / "dog").iterdir():
        file.unlink()
    (root / "dog").rmdir()
    return ["train", "--data", str(root)]


def bad_image_folder(folder: Path) -> list[str]:
    return ["train", "--data", str(make_pngs(folder))]


def nan_npz(folder: Path) -> list[str]:
    X, y = blobs()
    X[7, 2] = np.nan
    np.savez(folder / "nan.npz", X=X, y=y)
    return ["train", "--data", str(folder / "nan.npz")]


def unreadable(folder: Path) -> list[str]:
    (folder / "secret.csv").write_text("a,label\n1,0\n")
    (folder / "secret.csv").chmod(0)
    return ["train", "--data", str(folder / "secret.csv")]


BAD_DATA = {
    "missing file": (
        lambda folder: ["train", "--data", str(folder / "nope.csv")],
        r"nope\.csv: no such file",
    ),
    "empty file": (csv_file("empty.csv", ""), r"empty\.csv: file is empty"),
    "non-numeric feature": (
        csv_file("words.csv", "x1,x2,label\n1,2,a\n3,abc,b\n"),
        r"words\.csv: line 3: column 'x2' has 'abc', which is not a number",
    ),
    "missing label column": (
        lambda folder: [
            *csv_file("nolabel.csv", "x1,x2,y\n1,2,0\n")(folder),
            "--label-column",
            "species",
        ],
        r"nolabel\.csv: line 1: no column named 'species'",
    ),
    "ragged rows": (
        csv_file("ragged.csv", "x1,x2,label\n1,2,a\n3,b\n"),
        r"ragged\.csv: line 3: 2 fields, the header has 3",
    ),
    "NaN in a CSV": (
        csv_file("nan.csv", "x1,x2,label\n1,2,a\nnan,1,b\n"),
        r"nan\.csv: line 3: column 'x1' is nan; features must be finite",
    ),
    "NaN in an npz": (nan_npz, r"nan\.npz: X\[7, 2\].* is nan; features must be finite"),
    "IDX size mismatch": (
        idx_mismatch,
        r"t10k-images-idx3-ubyte: IDX header says 160 bytes of data .*file has 100",
    ),
    "one class folder": (one_class_folder, r"pets: found 1 class folder\(s\) \('cat'\)"),
    "unreadable image": (bad_image_folder, r"broken\.png: cannot read image"),
    "option for another kind of data": (
        lambda folder: ["train", "--labels", str(folder / "labels.gz")],
        r"digits: --labels does not apply to digits",
    ),
    "l2 < 0": (lambda folder: ["train", "--l2", "-1"], r"argument --l2: must be a number >= 0"),
    "test size > 1": (
        lambda folder: ["train", "--test-size", "1.5"],
        r"argument --test-size: must be a fraction >= 0 and < 1, got 1\.5",
    ),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_fails_cleanly(tmp_path, case):
    make, message = BAD_DATA[case]
    argv = make(tmp_path)
    out = tmp_path / "out"
    code, stdout, err = run([*argv, "--out", str(out)])
    usage = case in ("l2 < 0", "test size > 1")
    assert code == (2 if usage else 1)
    assert re.search(message, err), err
    if not usage:
        assert err.startswith("crossent: error: ") and err.count("\n") == 1
        assert "Traceback" not in err
    assert stdout == ""
    assert not out.exists()


def test_unreadable_file(tmp_path, make_unreadable):
    argv = unreadable(tmp_path)
    make_unreadable(tmp_path / "secret.csv")
    code, _, err = run([*argv, "--out", str(tmp_path / "out")])
    assert code == 1
    assert re.fullmatch(r"crossent: error: .*secret\.csv: permission denied\n", err), err
    assert not (tmp_path / "out").exists()


def corrupt(model: Path, folder: Path, how: str) -> Path:
    data = model.read_bytes()
    target = folder / "model.safetensors"
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "corrupted":
        data = data[:20] + b"@" * 12 + data[32:]
    elif how == "other version":
        data = data.replace(b'\\"format_version\\":1', b'\\"format_version\\":7')
    elif how == "pickle":
        data = pickle.dumps({"coef": np.zeros((10, 64))})
    target.write_bytes(data)
    return target


BAD_MODELS = {
    "truncated": r"truncated",
    "corrupted": r"corrupted header, not valid JSON",
    "other version": r"format version 7 is not supported",
    "pickle": r"not a crossent model file \(it looks like a Python pickle",
}


@pytest.mark.parametrize("how", list(BAD_MODELS))
@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_bad_model_file_fails_cleanly(model, tmp_path, how, command):
    bad = corrupt(model, tmp_path, how)
    out = tmp_path / "out"
    extra = ["--out", str(out)] if command == "evaluate" else ["--output", str(tmp_path / "p.csv")]
    code, stdout, err = run([command, "--model", str(bad), "--data", "digits", *extra])
    assert code == 1
    assert re.fullmatch(rf"crossent: error: {re.escape(str(bad))}: .*{BAD_MODELS[how]}.*\n", err)
    assert stdout == ""
    assert not out.exists() and not (tmp_path / "p.csv").exists()


def test_feature_count_must_match_the_model(model, tmp_path):
    X, y = blobs()
    np.savez(tmp_path / "four.npz", X=X, y=y)
    for command in ("evaluate", "predict"):
        code, _, err = run([command, "--model", str(model), "--data", str(tmp_path / "four.npz")])
        assert code == 1
        assert f"four.npz: 4 features, but the model {model} expects 64" in err
    assert sorted(os.listdir(model.parent)) == ["model.safetensors", "report.html"]


def test_labels_must_be_the_models_classes(model, tmp_path):
    X = load_dataset("digits").X[:4]
    np.savez(tmp_path / "pets.npz", X=X, y=np.array(["cat", "dog", "cat", "emu"]))
    code, _, err = run(
        [
            "evaluate",
            "--model",
            str(model),
            "--data",
            str(tmp_path / "pets.npz"),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 1
    assert "pets.npz: label(s) 'cat', 'dog', 'emu' are not among the classes of the model" in err
    assert not (tmp_path / "out").exists()


def test_debug_shows_the_traceback(tmp_path):
    code, _, err = run(["train", "--data", str(tmp_path / "nope.csv"), "--debug"])
    assert code == 1
    assert "Traceback (most recent call last)" in err and "DataError" in err
    assert (
        err.splitlines()[-1]
        == f"crossent: error: {tmp_path / 'nope.csv'}: no such file or directory"
    )


# --------------------------------------------------------------------------- checkpoints


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def interrupt_at(monkeypatch, iteration: int, checkpoints: dict[Path, int] | None = None) -> None:
    """Make the training callback raise KeyboardInterrupt (Ctrl-C) after ``iteration``.

    For each path in ``checkpoints``, record the iteration of the checkpoint found there
    just before the interrupt (0 if none).
    """
    original = _train._Monitor.__call__

    def call(self, progress):
        result = original(self, progress)
        if self.iteration == iteration:
            for path in checkpoints or {}:
                checkpoints[path] = load_model(path)[1]["iteration"] if path.exists() else 0
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(_train._Monitor, "__call__", call)


def test_interrupted_run_resumes_to_the_same_optimum(tmp_path, monkeypatch):
    X, y = blobs(n_per_class=60, n_classes=4, d=8, seed=5)
    np.savez(tmp_path / "blobs.npz", X=X, y=y)
    np.savez(tmp_path / "other.npz", X=X[::-1], y=y[::-1])  # same shape, other rows
    base = ["train", "--data", str(tmp_path / "blobs.npz"), "--tol", "1e-8", "--json"]

    terminal = FakeTerminal()  # the uninterrupted run, with its progress line on a "terminal"
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(terminal):
        assert main([*base, "--out", str(tmp_path / "whole")]) == 0
    whole = json.loads(out.getvalue())
    progress = terminal.getvalue()
    assert re.search(r"\riteration +\d+/1000  objective \S+  max\|grad\| \S+", progress)
    assert progress.endswith("\n") and whole["n_iter"] > 10

    resumable = [*base, "--out", str(tmp_path / "part"), "--checkpoint-every", "3"]
    checkpoint = tmp_path / "part" / "checkpoint.safetensors"
    periodic = {checkpoint: -1}
    with monkeypatch.context() as mp:
        interrupt_at(mp, 7, periodic)
        code, stdout, err = run(resumable)
    assert code == 130 and stdout == ""
    assert periodic[checkpoint] == 6  # saved every 3 iterations, then at the interrupt
    assert err.startswith("interrupted at iteration 7; resume with: crossent train ")
    assert os.listdir(tmp_path / "part") == ["checkpoint.safetensors"]
    _, meta = load_model(tmp_path / "part" / "checkpoint.safetensors")
    assert meta["checkpoint"] is True and meta["iteration"] == 7
    assert meta["objective"]["l2"] == 1.0 and meta["objective"]["data"].endswith("blobs.npz")

    # a checkpoint is refused by a run with another objective
    last_err = err
    for change, fault in [
        (["--l2", "0.5"], "made with --l2 1.0, this run has 0.5"),
        (["--seed", "1"], "made with --seed 0, this run has 1"),
        (["--data", "digits"], "made on data with 8 features, digits has 64"),
        (["--data", str(tmp_path / "other.npz")], "made on other data ("),
    ]:
        code, _, err = run([*resumable, "--resume", *change])
        assert code == 1 and fault in err, err
    assert os.listdir(tmp_path / "part") == ["checkpoint.safetensors"]
    assert last_err.rstrip().endswith("--checkpoint-every 3 --resume")

    # resume, and be interrupted again: the checkpoint moves on to iteration 9
    with monkeypatch.context() as mp:
        interrupt_at(mp, 9)
        code, _, err = run([*resumable, "--resume"])
    assert code == 130 and err.startswith("interrupted at iteration 9; resume with: "), err
    _, meta = load_model(tmp_path / "part" / "checkpoint.safetensors")
    assert meta["iteration"] == 9
    checkpoint_curve = load_model(tmp_path / "part" / "checkpoint.safetensors")[0]["loss_curve"]
    assert len(checkpoint_curve) == 9

    # the command printed on Ctrl-C finishes the job
    command = shlex.split(err.split("resume with: ", 1)[1])
    assert command[:2] == ["crossent", "train"] and command[-1] == "--resume"
    code, stdout, err = run(command[1:])
    assert code == 0, err
    resumed = json.loads(stdout)
    assert resumed["resumed_from_iteration"] == 9 and resumed["n_iter"] > 9
    curve = resumed["loss_curve"]  # continues from the checkpoint, not from scratch
    assert len(curve) == resumed["n_iter"] and curve[:9] == checkpoint_curve.tolist()
    assert curve[9] <= curve[8] < curve[0]
    assert abs(resumed["objective"] - whole["objective"]) <= 1e-6 * abs(whole["objective"])
    assert sorted(os.listdir(tmp_path / "part")) == ["model.safetensors", "report.html"]


def test_interrupt_without_checkpoints_leaves_nothing(tmp_path, monkeypatch):
    interrupt_at(monkeypatch, 2)
    code, stdout, err = run(["train", "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 130 and stdout == ""
    assert err == (
        "interrupted at iteration 2; nothing was saved "
        "(train with --checkpoint-every N to be able to resume)\n"
    )
    assert not (tmp_path / "out").exists()


def test_a_failure_while_writing_leaves_no_partial_output(tmp_path, monkeypatch):
    X, y = blobs()
    np.savez(tmp_path / "blobs.npz", X=X, y=y)

    def disk_full(path, **kwargs):
        Path(path).write_text("half a report")
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(_train, "write_report", disk_full)
    fresh, kept = tmp_path / "fresh" / "deeper", tmp_path / "kept"
    kept.mkdir()
    (kept / "model.safetensors").write_bytes(b"the previous model")
    for out in (fresh, kept):
        code, stdout, err = run(["train", "--data", str(tmp_path / "blobs.npz"), "--out", str(out)])
        assert code == 1 and stdout == ""
        assert re.fullmatch(r"crossent: error: .*report\.html: No space left on device\n", err)
    assert not (tmp_path / "fresh").exists()
    assert os.listdir(kept) == ["model.safetensors"]
    assert (kept / "model.safetensors").read_bytes() == b"the previous model"


def test_resume_needs_a_checkpoint(tmp_path):
    code, _, err = run(["train", "--out", str(tmp_path), "--resume"])
    assert code == 1
    assert f"{tmp_path / 'checkpoint.safetensors'}: no checkpoint to resume from" in err


def test_a_checkpoint_is_not_a_model(tmp_path):
    save_model(
        tmp_path / "c.safetensors",
        {"coef": np.zeros((2, 2))},
        {"kind": "crossent-checkpoint", "checkpoint": True},
    )
    code, _, err = run(["predict", "--model", str(tmp_path / "c.safetensors"), "--data", "digits"])
    assert code == 1 and "is a training checkpoint, not a model" in err


# --------------------------------------------------------------------------- gradcheck


def test_gradcheck_passes():
    code, out, err = run(
        ["gradcheck", "--seed", "3", "--classes", "5", "--features", "4", "--samples", "17"]
    )
    assert code == 0, err
    assert "5 classes, 4 features, 17 samples" in out
    worst = float(re.search(r"worst relative error (\S+) <= 1e-06", out).group(1))
    assert worst < 1e-7
    assert re.search(r"∂L/∂W \(5×4\) +20 ", out) and re.search(r"∂L/∂b \(5\) +5 ", out)


def test_gradcheck_catches_a_wrong_gradient(monkeypatch):
    from crossent import objective

    real = objective.loss_gradient

    def off_by_a_bit(*args, **kwargs):
        loss, grad_coef, grad_intercept = real(*args, **kwargs)
        return loss, grad_coef * (1 + 1e-4), grad_intercept

    monkeypatch.setattr(objective, "loss_gradient", off_by_a_bit)
    code, out, _ = run(["gradcheck"])
    assert code == 1 and "FAILED: worst relative error" in out


# --------------------------------------------------------------------------- help, version

OPTIONS = {
    "train": [
        "--data",
        "--label-column",
        "--labels",
        "--skip-bad-images",
        "--l2",
        "--solver",
        "--max-iter",
        "--tol",
        "--batch-size",
        "--test-size",
        "--seed",
        "--standardize",
        "--no-standardize",
        "--out",
        "--json",
        "--quiet",
        "--checkpoint-every",
        "--resume",
        "--debug",
    ],
    "evaluate": [
        "--model",
        "--data",
        "--label-column",
        "--labels",
        "--skip-bad-images",
        "--out",
        "--json",
        "--debug",
    ],
    "predict": [
        "--model",
        "--data",
        "--label-column",
        "--labels",
        "--skip-bad-images",
        "--proba",
        "--output",
        "--debug",
    ],
    "gradcheck": ["--seed", "--classes", "--features", "--samples", "--l2", "--debug"],
}


@pytest.mark.parametrize("command", list(OPTIONS))
def test_help_describes_every_option(command):
    code, out, _ = run([command, "--help"])
    assert code == 0
    for option in OPTIONS[command]:  # listed, with a description, not only in the usage
        assert re.search(rf"^  (\S+, )?{re.escape(option)}\b", out, re.MULTILINE), option


def test_top_level_help_and_version():
    code, out, _ = run(["--help"])
    assert code == 0
    for command in OPTIONS:
        assert command in out
    code, out, _ = run(["--version"])
    assert code == 0 and out == f"crossent {crossent.__version__}\n"
    code, _, err = run([])
    assert code == 2 and "required: command" in err


# --------------------------------------------------------------------------- startup


def test_python_dash_m_crossent(tmp_path):
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        [sys.executable, "-m", "crossent", "--version"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"crossent {crossent.__version__}\n"
    result = subprocess.run(
        [sys.executable, "-m", "crossent", "fit"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and "invalid choice: 'fit'" in result.stderr


HEAVY = ("sklearn", "scipy", "torch", "matplotlib")

_HELP_IMPORTS = """
import contextlib, io, json, sys
from crossent.cli import main
codes = []
with contextlib.redirect_stdout(io.StringIO()):
    for argv in (["--help"], ["train", "--help"], ["gradcheck", "--help"], ["--version"]):
        try:
            codes.append(main(argv))
        except SystemExit as exc:
            codes.append(exc.code)
print(json.dumps({"codes": codes, "heavy": [m for m in %r if m in sys.modules]}))
"""


def test_help_imports_nothing_heavy(tmp_path):
    """``crossent --help`` and ``crossent train --help`` do not import scikit-learn (1.5 s)."""
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        [sys.executable, "-c", _HELP_IMPORTS % (HEAVY,)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"codes": [0, 0, 0, 0], "heavy": []}


def test_import_crossent_is_lazy(tmp_path):
    script = (
        "import sys, crossent\n"
        f"assert not [m for m in {HEAVY!r} if m in sys.modules], sys.modules.keys()\n"
        "assert crossent.__version__ and 'SoftmaxClassifier' in crossent.__all__\n"
        "import crossent.softmax as module\nassert callable(crossent.softmax), crossent.softmax\n"
        "assert set(crossent.__all__) <= set(dir(crossent))\n"
        "from crossent import SoftmaxClassifier, softmax\n"
        "assert SoftmaxClassifier.__module__ == 'crossent.classifier'\n"
        "assert 'sklearn' in sys.modules\n"
        "try:\n    crossent.no_such_name\nexcept AttributeError as exc:\n"
        "    assert 'no_such_name' in str(exc)\nelse:\n    raise SystemExit('no error')\n"
    )
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_the_parser_knows_every_solver():
    from crossent._cli._parser import SOLVER_NAMES
    from crossent.solvers import SOLVERS

    assert sorted(SOLVER_NAMES) == sorted(SOLVERS)


def test_one_home_for_the_exit_statuses():
    from crossent import _cli

    assert not hasattr(_train, "EXIT_INTERRUPTED")
    assert (_cli.EXIT_INTERRUPTED, _cli.EXIT_TERMINATED) == (130, 143)


# --------------------------------------------------------------------------- resume


def test_resume_with_out_alone(tmp_path, monkeypatch):
    """``train --resume --out DIR`` takes the data and options from the checkpoint, from
    another working folder; the summary and the report say that the run was resumed."""
    X, y = blobs(n_per_class=40, n_classes=3, d=5, seed=2)
    np.savez(tmp_path / "blobs.npz", X=X, y=y)
    options = ["--data", "blobs.npz", "--l2", "0.3", "--seed", "4", "--test-size", "0.3"]
    options += ["--tol", "1e-8", "--json"]
    monkeypatch.chdir(tmp_path)  # a relative --data: the checkpoint records it absolute
    code, stdout, err = run(["train", *options, "--out", "whole"])
    assert code == 0, err
    whole = json.loads(stdout)
    with monkeypatch.context() as mp:
        interrupt_at(mp, 4)
        code, _, err = run(["train", *options, "--out", "part", "--checkpoint-every", "2"])
    assert code == 130, err

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    part = tmp_path / "part"
    code, stdout, err = run(["train", "--resume", "--out", str(part)])
    assert code == 0, err
    text = stdout.splitlines()
    assert text[0].startswith(f"data      {tmp_path / 'blobs.npz'}: 120 samples × 5 features")
    assert "(stratified, test size 0.3, seed 4)" in text[1] and "l2 = 0.3" in text[2]
    assert text[3] == f"resumed   from {part / 'checkpoint.safetensors'} at iteration 4"
    _, meta = load_model(part / "model.safetensors")
    training = meta["training"]
    assert training["resumed_from_iteration"] == 4 and meta["l2"] == 0.3
    assert abs(training["objective"] - whole["objective"]) <= 1e-6 * abs(whole["objective"])
    report = (part / "report.html").read_text(encoding="utf-8")
    assert re.search(r'id="loss-curve" alt="[^"]*, resumed after iteration 4"', report)
    assert "<td>resumed from iteration</td><td>4</td>" in report
    assert sorted(os.listdir(part)) == ["model.safetensors", "report.html"]
