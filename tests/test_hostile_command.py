"""Hostile inputs of the command, class "the command as a user reaches for it" (issue #7,
section 6): resuming from checkpoints that do not fit, and commands and options that do not
exist.

Every case is one refusal checked by :func:`_hostile.expect_refusal`: the exit code, one
error line naming the option or file, no traceback, and the folder unchanged (the
checkpoint is kept as it was, nothing is written).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.numpy
from safetensors import safe_open
from threadpoolctl import threadpool_limits

from _hostile import expect_refusal, run_cli, write_blobs
from crossent._cli import _train

CHECKPOINT = "checkpoint.safetensors"
STOP_AT = 3  # the checkpoint's iteration


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with blobs.npz, other.npz and run/checkpoint.safetensors of iteration 3."""
    folder = tmp_path_factory.mktemp("interrupted")
    data = write_blobs(folder / "blobs.npz")
    write_blobs(folder / "other.npz", reverse=True)
    real = _train._Monitor.__call__

    def stop(self: Any, progress: Any) -> bool:
        result = real(self, progress)
        if self.iteration == STOP_AT:
            raise KeyboardInterrupt
        return result

    argv = ["train", "--data", str(data), "--out", str(folder / "run"), "--tol", "0"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_train._Monitor, "__call__", stop)
        code, _, err = run_cli([*argv, "--checkpoint-every", "1"])
    assert code == 130 and (folder / "run" / CHECKPOINT).exists(), err
    return folder


@pytest.fixture
def folder(interrupted: Path, tmp_path: Path) -> Path:
    """A fresh copy of the interrupted run's folder for one test."""
    copy = tmp_path / "work"
    shutil.copytree(interrupted, copy)
    return copy


def rewrite(
    path: Path,
    meta: Callable[[dict[str, Any]], None] | None = None,
    arrays: Callable[[dict[str, np.ndarray]], None] | None = None,
) -> None:
    """Edit a crossent file's metadata and arrays with safetensors itself (no checks)."""
    with safe_open(str(path), framework="np") as f:
        header = dict(f.metadata())
    tensors = safetensors.numpy.load_file(str(path))
    document = json.loads(header["crossent"])
    if meta is not None:
        meta(document)
    if arrays is not None:
        arrays(tensors)
    header["crossent"] = json.dumps(document)
    path.write_bytes(safetensors.numpy.save(tensors, metadata=header))


def resume(folder: Path, *extra: str) -> list[str]:
    return ["train", "--resume", "--out", str(folder / "run"), *extra]


# ---------------------------------------------------------- contradicting options


@pytest.mark.parametrize(
    ("extra", "names"),
    [
        (["--l2", "0.5"], ["--l2 1.0", "0.5"]),
        (["--seed", "7"], ["--seed 0", "7"]),
        (["--test-size", "0.5"], ["--test-size 0.25"]),
        (["--no-standardize"], ["--standardize/--no-standardize"]),
    ],
    ids=["l2", "seed", "test-size", "standardize"],
)
def test_resume_with_a_contradicting_option(folder: Path, extra: list[str], names: list[str]):
    checkpoint = str(folder / "run" / CHECKPOINT)
    expect_refusal(resume(folder, *extra), 1, names=[checkpoint, *names], folder=folder)


def test_resume_with_another_data_set(folder: Path):
    other = str(folder / "other.npz")
    argv = resume(folder, "--data", other)
    expect_refusal(argv, 1, names=[CHECKPOINT, "made on other data", other], folder=folder)


def test_resume_with_data_of_other_features(folder: Path):
    argv = resume(folder, "--data", "digits")
    expect_refusal(argv, 1, names=[CHECKPOINT, "4 features", "digits has 64"], folder=folder)


def test_resume_past_the_iteration_budget(folder: Path):
    argv = resume(folder, "--max-iter", str(STOP_AT))
    expect_refusal(argv, 1, names=[CHECKPOINT, f"--max-iter {STOP_AT}"], folder=folder)


# ---------------------------------------------------------- missing or bad checkpoints


def test_resume_without_a_checkpoint(tmp_path: Path):
    argv = ["train", "--resume", "--out", str(tmp_path / "nothing-here")]
    names = [str(tmp_path / "nothing-here" / CHECKPOINT), "no checkpoint"]
    expect_refusal(argv, 1, names=names, folder=tmp_path)


def test_resume_from_a_truncated_checkpoint(folder: Path):
    path = folder / "run" / CHECKPOINT
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    expect_refusal(resume(folder), 1, names=[str(path)], folder=folder)


def test_resume_from_a_model_file(folder: Path):
    path = folder / "run" / CHECKPOINT
    rewrite(path, meta=lambda document: document.update(kind="crossent-softmax-classifier"))
    names = [str(path), "not a crossent training checkpoint"]
    expect_refusal(resume(folder), 1, names=names, folder=folder)


@pytest.mark.parametrize("name", ["intercept", "coef", "loss_curve"])
def test_resume_from_a_non_finite_checkpoint(folder: Path, name: str):
    path = folder / "run" / CHECKPOINT

    def poison(tensors: dict[str, np.ndarray]) -> None:
        tensors[name] = tensors[name].copy()
        tensors[name].flat[0] = np.nan

    rewrite(path, arrays=poison)
    expect_refusal(resume(folder), 1, names=[str(path), name], folder=folder)


@pytest.mark.parametrize(
    ("key", "value"),
    [("l2", "abc"), ("seed", -1), ("solver", "newton"), ("max_iter", 0), ("data", "")],
)
def test_resume_from_a_checkpoint_with_tampered_options(folder: Path, key: str, value: Any):
    path = folder / "run" / CHECKPOINT
    rewrite(path, meta=lambda document: document["options"].__setitem__(key, value))
    expect_refusal(resume(folder), 1, names=[str(path), f"option {key}"], folder=folder)


def test_resume_from_a_checkpoint_without_options(folder: Path):
    path = folder / "run" / CHECKPOINT
    rewrite(path, meta=lambda document: document.pop("options"))
    expect_refusal(resume(folder), 1, names=[str(path), "train options"], folder=folder)


# ---------------------------------------------------------- commands and options


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["fit"], ["invalid choice", "'fit'"]),
        ([], ["required", "command"]),
        (["train", "--learning-rate", "0.1"], ["--learning-rate"]),
        (["predict", "--data", "digits"], ["--model"]),
        (["train", "--solver", "newton"], ["--solver", "'newton'"]),
    ],
    ids=["unknown-command", "no-command", "unknown-option", "missing-model", "unknown-solver"],
)
def test_a_usage_error(tmp_path: Path, argv: list[str], names: list[str]):
    expect_refusal(argv, 2, names=names, folder=tmp_path)


def test_resume_when_the_recorded_data_is_gone(folder: Path):
    gone = str(folder / "gone.npz")  # the checkpoint records an absolute path
    path = folder / "run" / CHECKPOINT
    rewrite(path, meta=lambda document: document["options"].update(data=gone))
    expect_refusal(resume(folder), 1, names=[gone], folder=folder)
