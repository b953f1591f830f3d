"""Training checkpoints: the model of iteration k and what defines the objective.

A checkpoint is a model file (:func:`crossent.model_io.save_model`) with the arrays
``coef``, ``intercept`` and ``loss_curve`` (the objective of iterations 1..k) and the
metadata ``kind = "crossent-checkpoint"``, ``iteration``, ``classes``, ``solver`` and
``objective``: the options that define the minimised function (the data, by name and by
a SHA-256 of its features and labels, the split, the standardisation and λ). Resuming
refuses a checkpoint whose ``objective`` differs from the run's: it would continue a
different minimisation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crossent.data import Dataset
from crossent.model_io import ModelFileError, load_model, save_model

from ._common import CommandError
from ._model import CHECKPOINT_KIND

CHECKPOINT_FILE = "checkpoint.safetensors"

# objective key -> how the user sets it
_OPTION_NAMES = {
    "l2": "--l2",
    "test_size": "--test-size",
    "seed": "--seed",
    "standardize": "--standardize/--no-standardize",
}


def fingerprint(data: Dataset) -> str:
    """SHA-256 of the features (shape, dtype, values) and the labels."""
    digest = hashlib.sha256()
    X = np.ascontiguousarray(data.X)
    digest.update(f"{X.shape} {X.dtype.str}".encode())
    digest.update(X.data)  # the buffer itself, no copy
    if data.y is not None:
        y = np.ascontiguousarray(data.y)
        digest.update(f"{y.dtype.str}".encode())
        digest.update(y.data)
    return digest.hexdigest()


def objective_options(
    data: Dataset, *, l2: float, test_size: float, seed: int, standardize: bool
) -> dict[str, Any]:
    """What a checkpoint must share with a run that resumes it."""
    return {
        "data": data.name,
        "data_sha256": fingerprint(data),
        "n_samples": data.n_samples,
        "n_features": data.n_features,
        "l2": float(l2),
        "test_size": float(test_size),
        "seed": int(seed),
        "standardize": bool(standardize),
    }


@dataclass(frozen=True)
class Checkpoint:
    iteration: int
    coef: np.ndarray  # (C, d)
    intercept: np.ndarray  # (C,)
    loss_curve: list[float]


def save_checkpoint(
    path: Path,
    checkpoint: Checkpoint,
    *,
    classes: np.ndarray,
    solver: str,
    objective: dict[str, Any],
) -> None:
    arrays = {
        "coef": np.ascontiguousarray(checkpoint.coef, dtype=np.float64),
        "intercept": np.asarray(checkpoint.intercept, dtype=np.float64),
        "loss_curve": np.asarray(checkpoint.loss_curve, dtype=np.float64),
    }
    metadata = {
        "kind": CHECKPOINT_KIND,
        "checkpoint": True,
        "iteration": checkpoint.iteration,
        "classes": classes,
        "solver": solver,
        "objective": objective,
    }
    save_model(path, arrays, metadata)


def load_checkpoint(path: Path, *, classes: np.ndarray, objective: dict[str, Any]) -> Checkpoint:
    """Read a checkpoint and refuse it unless it continues the same minimisation."""
    if not path.exists():
        raise CommandError(
            f"{path}: no checkpoint to resume from (train with --checkpoint-every N first)"
        )
    arrays, meta = load_model(path)
    if meta.get("kind") != CHECKPOINT_KIND or not meta.get("checkpoint"):
        raise ModelFileError(f"{path}: not a crossent training checkpoint")
    saved = meta.get("objective")
    iteration = meta.get("iteration")
    if not isinstance(saved, dict) or not isinstance(iteration, int) or iteration < 1:
        raise ModelFileError(f"{path}: corrupted checkpoint metadata")
    refuse = f"; rerun with the same options, or delete {path} to start afresh"
    if saved.get("n_features") != objective["n_features"]:
        raise CommandError(
            f"{path}: made on data with {saved.get('n_features')} features, "
            f"{objective['data']} has {objective['n_features']}{refuse}"
        )
    if saved.get("data_sha256") != objective["data_sha256"]:
        raise CommandError(
            f"{path}: made on other data ({saved.get('data')}, {saved.get('n_samples')} "
            f"samples) than {objective['data']} ({objective['n_samples']} samples){refuse}"
        )
    for key, option in _OPTION_NAMES.items():
        if saved.get(key) != objective[key]:
            raise CommandError(
                f"{path}: made with {option} {saved.get(key)}, this run has {objective[key]}"
                f"{refuse}"
            )
    if [str(c) for c in meta.get("classes", [])] != [str(c) for c in classes]:
        raise CommandError(f"{path}: made for other classes{refuse}")
    coef, intercept = arrays.get("coef"), arrays.get("intercept")
    curve = arrays.get("loss_curve")
    shape = (len(classes), objective["n_features"])
    if coef is None or intercept is None or curve is None or coef.shape != shape:
        raise ModelFileError(f"{path}: corrupted checkpoint: needs coef {shape} and intercept")
    if intercept.shape != shape[:1] or not np.all(np.isfinite(coef)):
        raise ModelFileError(f"{path}: corrupted checkpoint: bad intercept or weights")
    return Checkpoint(iteration, coef, intercept, [float(v) for v in curve])
