"""Training checkpoints: the model of iteration k and what defines the objective.

A checkpoint is a model file (:func:`crossent.model_io.save_model`) with the arrays
``coef``, ``intercept`` and ``loss_curve`` (the objective of iterations 1..k) and the
metadata ``kind = "crossent-checkpoint"``, ``iteration``, ``classes``, ``solver`` and
``objective``: the options that define the minimised function (the data, by name and by
a SHA-256 of its features and labels, the split, the standardisation and λ). Resuming
refuses a checkpoint whose ``objective`` differs from the run's: it would continue a
different minimisation.

It also records ``options``: every train option of :data:`~._parser.TRAIN_DEFAULTS` as
the run resolved it (the data source as an absolute path where it is one), so that
``crossent train --resume --out DIR`` alone continues the run; :func:`read_checkpoint`
checks each recorded option as the parser checks the flag.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crossent.data import Dataset
from crossent.model_io import ModelFileError, load_model, save_model

from ._common import CommandError
from ._model import CHECKPOINT_KIND, check_checkpoint_file
from ._parser import (
    SOLVER_NAMES,
    TRAIN_DEFAULTS,
    non_negative,
    penalty,
    positive_int,
    seed_int,
    test_fraction,
)

CHECKPOINT_FILE = "checkpoint.safetensors"

# objective key -> how the user sets it
_OPTION_NAMES = {
    "l2": "--l2",
    "test_size": "--test-size",
    "seed": "--seed",
    "standardize": "--standardize/--no-standardize",
}


def fingerprint(data: Dataset) -> str:
    """SHA-256 of the features (shape, dtype, values) and the labels.

    A CSR matrix (sorted, unique indices: one representation per matrix) is hashed by its
    three arrays, never densified."""
    digest = hashlib.sha256()
    X: Any = data.X
    if data.sparse:
        digest.update(f"csr {X.shape} {X.dtype.str}".encode())
        for part in (X.indptr.astype(np.int64), X.indices.astype(np.int64), X.data):
            digest.update(np.ascontiguousarray(part).data)
    else:
        X = np.ascontiguousarray(X)
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
    return objective_record(
        data.name,
        fingerprint(data),
        data.n_samples,
        data.n_features,
        l2=l2,
        test_size=test_size,
        seed=seed,
        standardize=standardize,
    )


def objective_record(
    name: str,
    sha256: str,
    n_samples: int,
    n_features: int,
    *,
    l2: float,
    test_size: float,
    seed: int,
    standardize: bool,
) -> dict[str, Any]:
    """:func:`objective_options` from the data's identity (name, hash, shape) directly."""
    return {
        "data": name,
        "data_sha256": sha256,
        "n_samples": int(n_samples),
        "n_features": int(n_features),
        "l2": float(l2),
        "test_size": float(test_size),
        "seed": int(seed),
        "standardize": bool(standardize),
    }


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


# recorded option -> its check (None is allowed where the option's default is None)
_OPTION_CHECKS: dict[str, Callable[[Any], bool]] = {
    "data": _is_text,
    "label_column": lambda v: v is None or _is_text(v),
    "labels": lambda v: v is None or _is_text(v),
    "skip_bad_images": lambda v: isinstance(v, bool),
    "l2": penalty.accepts,
    "solver": lambda v: v in SOLVER_NAMES,
    "max_iter": positive_int.accepts,
    "tol": non_negative.accepts,
    "batch_size": positive_int.accepts,
    "test_size": test_fraction.accepts,
    "seed": seed_int.accepts,
    "standardize": lambda v: v is None or isinstance(v, bool),
    "checkpoint_every": lambda v: v is None or positive_int.accepts(v),
    "zero_based": lambda v: v is None or isinstance(v, bool),
}


def recorded_options(args: Any) -> dict[str, Any]:
    """The train options of ``args`` as a checkpoint records them."""
    options = {key: getattr(args, key) for key in TRAIN_DEFAULTS}
    for key in ("data", "labels"):
        if options[key] is not None and os.path.exists(options[key]):
            options[key] = os.path.abspath(options[key])  # resumable from another folder
    return options


@dataclass(frozen=True)
class Checkpoint:
    iteration: int
    coef: np.ndarray  # (C, d)
    intercept: np.ndarray  # (C,)
    loss_curve: list[float]
    options: dict[str, Any] = field(default_factory=dict)  # the train options it records
    objective: dict[str, Any] = field(default_factory=dict)  # see objective_options
    classes: list[Any] = field(default_factory=list)  # the class labels, as saved


def save_checkpoint(
    path: Path,
    checkpoint: Checkpoint,
    *,
    classes: np.ndarray,
    solver: str,
    objective: dict[str, Any],
    options: dict[str, Any],
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
        "options": options,
    }
    save_model(path, arrays, metadata)


def read_checkpoint(path: Path) -> Checkpoint:
    """Read ``DIR/checkpoint.safetensors``: its arrays, iteration and recorded options,
    each checked (the file and its arrays by :func:`._model.check_checkpoint_file`, the
    options in the ranges of the flags)."""
    if not path.exists():
        raise CommandError(
            f"{path}: no checkpoint to resume from (train with --checkpoint-every N first)"
        )
    arrays, meta = load_model(path)
    iteration, classes, coef, intercept, curve = check_checkpoint_file(str(path), arrays, meta)
    options = meta.get("options")
    if isinstance(options, dict):  # checkpoints from before --zero-based lack it
        options = {"zero_based": None, **options}
    if not isinstance(options, dict) or set(options) != set(TRAIN_DEFAULTS):
        raise ModelFileError(f"{path}: corrupted checkpoint: no record of the train options")
    for key, check in _OPTION_CHECKS.items():
        if not check(options[key]):
            raise ModelFileError(
                f"{path}: corrupted checkpoint: option {key} = {options[key]!r} is invalid"
            )
    return Checkpoint(
        iteration,
        coef,
        intercept,
        curve,
        options=dict(options),
        objective=dict(meta["objective"]),
        classes=classes.tolist(),
    )


def check_checkpoint(
    path: Path,
    checkpoint: Checkpoint,
    *,
    classes: np.ndarray,
    objective: dict[str, Any],
    max_iter: int,
) -> None:
    """Refuse a checkpoint unless it continues the same minimisation, within ``max_iter``."""
    saved = checkpoint.objective
    refuse = f"; rerun with the same options, or delete {path} to start afresh"
    ranks, saved_ranks = objective.get("ranks", 1), saved.get("ranks", 1)
    if saved_ranks != ranks:  # --distributed: the data's hash is of each rank's rows
        raise CommandError(
            f"{path}: made by a run of {saved_ranks} rank(s), this run has {ranks}; resume "
            "with as many ranks (torchrun --nproc-per-node), or delete it to start afresh"
        )
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
    if [str(c) for c in checkpoint.classes] != [str(c) for c in classes]:
        raise CommandError(f"{path}: made for other classes{refuse}")
    if checkpoint.coef.shape != (len(classes), objective["n_features"]):
        raise ModelFileError(
            f"{path}: corrupted checkpoint: coef {checkpoint.coef.shape}, expected "
            f"{(len(classes), objective['n_features'])}"
        )
    if checkpoint.iteration >= max_iter:
        raise CommandError(
            f"{path}: already at iteration {checkpoint.iteration}, the --max-iter "
            f"{max_iter} budget; raise --max-iter to train on"
        )
