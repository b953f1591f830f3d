"""Hostile inputs of the command, class "outputs and signals" (issue #7, section 3).

Every case is one refusal checked by :func:`_hostile.expect_refusal`: the exit code, one
``crossent: error:`` line (argparse's ``error:`` for usage errors) naming the option or the
user's own file, no traceback, and the folder unchanged afterwards (no staging folder, no
temporary file, no half-written output). Faults of the disk are injected by replacing
``os.open``, the ``write`` of ``os.fdopen``'s file, ``os.fsync`` or ``os.replace``, for
crossent's own files only.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from _hostile import expect_refusal, run_cli, write_blobs
from crossent.model_io import load_model


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A model trained on blobs: (data file, model file), in a folder of their own."""
    folder = tmp_path_factory.mktemp("trained")
    data = write_blobs(folder / "blobs.npz")
    code, _, err = run_cli(["train", "--data", str(data), "--out", str(folder), "--quiet"])
    assert code == 0, err
    return data, folder / "model.safetensors"


# --------------------------------------------------------------------- empty paths


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["train", "--out", ""], "--out"),
        (["train", "--data", ""], "--data"),
        (["predict", "--model", "m", "--data", "d.csv", "--output", ""], "--output"),
        (["predict", "--model", "", "--data", "d.csv"], "--model"),
        (["evaluate", "--model", "m", "--data", "d.csv", "--out", "  "], "--out"),
        (["train", "--labels", ""], "--labels"),
        (["train", "--label-column", " "], "--label-column"),
    ],
    ids=[
        "train--out",
        "train--data",
        "predict--output",
        "--model",
        "evaluate--out",
        "--labels",
        "--label-column",
    ],
)
def test_an_empty_option_is_a_usage_error(tmp_path: Path, argv: list[str], option: str):
    line = expect_refusal(argv, 2, names=[f"argument {option}: expected "], folder=tmp_path)
    assert "''" in line or "' '" in line or "'  '" in line


# ------------------------------------------------------------ where outputs go


def test_predict_output_into_a_missing_folder(tmp_path: Path, trained: tuple[Path, Path]):
    data, model = trained
    target = tmp_path / "missing" / "p.csv"
    argv = ["predict", "--model", str(model), "--data", str(data), "--output", str(target)]
    expect_refusal(argv, 1, names=[str(target), "does not exist"], folder=tmp_path)


def test_predict_output_that_is_a_folder(tmp_path: Path, trained: tuple[Path, Path]):
    data, model = trained
    (tmp_path / "folder").mkdir()
    argv = ["predict", "--model", str(model), "--data", str(data)]
    expect_refusal([*argv, "--output", str(tmp_path / "folder")], 1, names=["folder", "directory"])


@pytest.mark.parametrize("below", ["", "sub"], ids=["the-file", "below-the-file"])
def test_train_out_that_is_a_file(tmp_path: Path, below: str):
    data = write_blobs(tmp_path / "blobs.npz")
    (tmp_path / "taken").write_text("a file, not a folder")
    out = tmp_path / "taken" / below if below else tmp_path / "taken"
    argv = ["train", "--data", str(data), "--out", str(out)]
    expect_refusal(argv, 1, names=[str(out), "not a directory"], folder=tmp_path)


def test_train_out_in_an_unwritable_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    data = write_blobs(tmp_path / "blobs.npz")
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access  # chmod does not stop root: say what a normal user would see
    monkeypatch.setattr(
        os, "access", lambda p, mode, **kw: Path(p) != locked and real_access(p, mode, **kw)
    )
    out = locked / "run"
    argv = ["train", "--data", str(data), "--out", str(out)]
    expect_refusal(argv, 1, names=[str(out), "Permission denied"], folder=tmp_path)


# ------------------------------------------------------- faults of the disk


def inject(monkeypatch: pytest.MonkeyPatch, call: str, code: int, name: str) -> None:
    """Make writing crossent's temporary file of ``name`` fail with ``code`` at ``call``.

    ``os.open`` of such a file is recorded (fd -> path) so that ``write`` (of the file
    object ``os.fdopen`` returns: half the bytes, then the error) and ``fsync`` fail only
    on those descriptors; ``replace`` fails when its target ends with ``name``.
    """
    real = {fn: getattr(os, fn) for fn in ("open", "fdopen", "fsync", "replace")}
    ours: set[int] = set()

    def is_ours(path: Any) -> bool:
        base = os.path.basename(os.fspath(path))
        return base.startswith(f".{name}.") and base.endswith(".tmp")

    def fail(path: Any = None) -> None:
        raise OSError(code, os.strerror(code), path)

    def fake_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if call == "open" and is_ours(path):
            fail(path)
        fd = real["open"](path, flags, *args, **kwargs)
        if is_ours(path):
            ours.add(fd)
        return fd

    def fake_fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        file = real["fdopen"](fd, *args, **kwargs)
        if call == "write" and fd in ours:
            real_write = file.write

            def write(data: bytes) -> int:
                real_write(data[: len(data) // 2])
                file.flush()
                fail()
                return 0  # pragma: no cover

            file.write = write
        return file

    def fake_fsync(fd: int) -> None:
        if call == "fsync" and fd in ours:
            fail()
        real["fsync"](fd)

    def fake_replace(src: Any, dst: Any, **kwargs: Any) -> None:
        if call == "replace" and os.fspath(dst).endswith(name):
            raise OSError(code, os.strerror(code), src, dst)
        real["replace"](src, dst, **kwargs)

    for fn, fake in (
        ("open", fake_open),
        ("fdopen", fake_fdopen),
        ("fsync", fake_fsync),
        ("replace", fake_replace),
    ):
        monkeypatch.setattr(os, fn, fake)


DISK_FAULTS = [
    ("train", "model.safetensors", "write", errno.ENOSPC),
    ("train", "report.html", "write", errno.EFBIG),
    ("train", "model.safetensors", "fsync", errno.EROFS),
    ("train", "report.html", "open", errno.EACCES),
    ("train", "checkpoint.safetensors", "write", errno.ENOSPC),
    ("predict", "p.csv", "write", errno.ENOSPC),
    ("predict", "p.csv", "replace", errno.EROFS),
    ("evaluate", "evaluation.html", "write", errno.EFBIG),
]


@pytest.mark.parametrize(
    ("command", "name", "call", "code"),
    DISK_FAULTS,
    ids=[f"{c}-{n}-{f}-{errno.errorcode[e]}" for c, n, f, e in DISK_FAULTS],
)
def test_a_disk_fault_names_the_users_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    trained: tuple[Path, Path],
    command: str,
    name: str,
    call: str,
    code: int,
):
    data, model = trained
    out = tmp_path / "out"
    argv = {
        "train": ["train", "--data", str(data), "--out", str(out), "--quiet"]
        + (["--checkpoint-every", "1"] if name.startswith("checkpoint") else []),
        "predict": ["predict", "--model", str(model), "--data", str(data)],
        "evaluate": ["evaluate", "--model", str(model), "--data", str(data)],
    }[command]
    if command == "predict":
        argv += ["--output", str(tmp_path / name)]
        target = tmp_path / name
    else:
        argv += [] if command == "train" else ["--out", str(out)]
        target = out / name
    inject(monkeypatch, call, code, name)
    expect_refusal(argv, 1, names=[f"{target}: {os.strerror(code)}"], folder=tmp_path)


# ----------------------------------------------------------------- SIGTERM

_SLOW_TRAIN = textwrap.dedent(
    """
    import sys, time
    from crossent._cli import _train
    from crossent.cli import main

    real = _train._Monitor.__call__

    def slow(self, progress):  # 0.2 s an iteration: time to send a signal on a busy machine
        time.sleep(0.2)
        return real(self, progress)

    _train._Monitor.__call__ = slow
    sys.exit(main(sys.argv[1:]))
    """
)


def test_sigterm_keeps_the_checkpoint_and_says_how_to_resume(tmp_path: Path):
    data = write_blobs(tmp_path / "blobs.npz")
    out = tmp_path / "run"
    checkpoint = out / "checkpoint.safetensors"
    argv = ["train", "--data", str(data), "--out", str(out), "--tol", "0", "--quiet"]
    argv += ["--checkpoint-every", "2", "--max-iter", "1000"]
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path), "OPENBLAS_NUM_THREADS": "1"}
    child = subprocess.Popen(
        [sys.executable, "-c", _SLOW_TRAIN, *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not checkpoint.exists() and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
        assert checkpoint.exists(), child.communicate(timeout=5)
        child.send_signal(signal.SIGTERM)
        stdout, stderr = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 143, stderr
    assert "Traceback" not in stderr and stdout == ""
    assert stderr.startswith("terminated at iteration "), stderr
    assert "resume with: crossent train " in stderr and stderr.rstrip().endswith("--resume")
    assert sorted(os.listdir(out)) == ["checkpoint.safetensors"]  # no model, no staging
    stopped = int(stderr.split()[3].rstrip(";"))
    assert load_model(checkpoint)[1]["iteration"] == stopped >= 2  # the last iteration kept


def test_main_restores_the_sigterm_handler():
    def mine(signum: int, frame: Any) -> None:  # pragma: no cover - never called
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        assert run_cli(["gradcheck", "--samples", "3"])[0] == 0
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


# ------------------------------------------------------------ numeric options


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["train", "--seed", "-1"], "--seed"),
        (["train", "--seed", str(2**40)], "--seed"),
        (["gradcheck", "--seed", "-1"], "--seed"),
        (["gradcheck", "--samples", "100000000000"], "--samples"),
        (["gradcheck", "--classes", "0"], "--classes"),
        (["train", "--max-iter", str(10**12)], "--max-iter"),
        (["train", "--test-size", "1.0"], "--test-size"),
        (["train", "--l2", "inf"], "--l2"),
        (["train", "--l2", "nan"], "--l2"),
        (["train", "--l2", "1e308"], "--l2"),
        (["train", "--tol", "nan"], "--tol"),
        (["train", "--batch-size", "0"], "--batch-size"),
        (["train", "--checkpoint-every", "1.5"], "--checkpoint-every"),
    ],
    ids=lambda v: "_".join(v) if isinstance(v, list) else v,
)
def test_a_number_out_of_range_is_a_usage_error(tmp_path: Path, argv: list[str], option: str):
    expect_refusal([*argv, "--out", str(tmp_path / "o")] if argv[0] == "train" else argv, 2,
                   names=[f"argument {option}"], folder=tmp_path)  # fmt: skip


def test_gradcheck_problem_too_large_to_check(tmp_path: Path):
    argv = ["gradcheck", "--samples", "100000", "--features", "1000", "--classes", "10"]
    expect_refusal(argv, 1, names=["--samples 100000", "--features 1000"], folder=tmp_path)


@pytest.mark.parametrize("l2", ["1e308", "1.7e308"])
def test_gradcheck_fails_on_a_non_finite_error(l2: str):
    code, out, err = run_cli(["gradcheck", "--l2", l2])
    assert code == 1 and err == "", err
    assert "FAILED" in out and "not a finite number" in out and "checks out" not in out


def test_gradcheck_catches_a_nan_gradient(monkeypatch: pytest.MonkeyPatch):
    from crossent import objective

    real: Callable[..., Any] = objective.loss_gradient

    def nan_gradient(*args: Any, **kwargs: Any) -> Any:
        value, grad_coef, grad_intercept = real(*args, **kwargs)
        return value, grad_coef, np.full_like(grad_intercept, np.nan)

    monkeypatch.setattr(objective, "loss_gradient", nan_gradient)
    code, out, _ = run_cli(["gradcheck"])
    assert code == 1 and "FAILED" in out and "checks out" not in out


def test_a_refused_model_names_the_users_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trained: tuple[Path, Path]
):
    """A fault of the model's content found while saving it names DIR/model.safetensors."""
    from crossent._cli import _train
    from crossent.model_io import ModelFileError

    def refuse(path: Any, arrays: Any, metadata: Any) -> None:
        raise ModelFileError(f"{path}: array 'coef' is not finite")

    monkeypatch.setattr(_train, "save_model", refuse)
    data, _ = trained
    out = tmp_path / "out"
    argv = ["train", "--data", str(data), "--out", str(out), "--quiet"]
    expect_refusal(argv, 1, names=[f"{out / 'model.safetensors'}: array 'coef'"], folder=tmp_path)
