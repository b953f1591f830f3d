"""``crossent train``: split, standardise, fit with a progress line and checkpoints, then
write the model and the report together, or nothing at all."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from crossent._version import __version__
from crossent.classifier import Progress, SoftmaxClassifier
from crossent.data import DataError, Dataset
from crossent.metrics import classification_metrics, prediction_entropy
from crossent.model_io import save_model
from crossent.objective import loss_gradient
from crossent.report import write_report
from crossent.solvers import MINIBATCH

from ._checkpoint import (
    CHECKPOINT_FILE,
    Checkpoint,
    load_checkpoint,
    objective_options,
    save_checkpoint,
)
from ._common import CommandError, OutputDir, load_data, need_labels, warn
from ._model import MODEL_KIND, Preprocessing
from ._summary import (
    cross_entropy_lines,
    data_line,
    dumps,
    metrics_json,
    per_class_lines,
    report_table,
)

MODEL_FILE = "model.safetensors"
REPORT_FILE = "report.html"
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Split:
    X_train: np.ndarray  # (n_train, d), preprocessed
    X_test: np.ndarray  # (n_test, d), preprocessed
    y_train: np.ndarray  # (n_train,) class indices
    y_test: np.ndarray  # (n_test,) class indices


def split_data(data: Dataset, classes: np.ndarray, test_size: float, seed: int) -> tuple:
    """Stratified, seeded train/test split of the rows and the labels' class indices."""
    assert data.y is not None
    y_index = np.searchsorted(classes, data.y)
    try:
        X_train, X_test, y_train, y_test = train_test_split(
            data.X, y_index, test_size=test_size, stratify=y_index, random_state=seed
        )
    except ValueError as exc:
        raise CommandError(
            f"{data.name}: cannot split {data.n_samples} samples of {len(classes)} classes "
            f"with --test-size {test_size:g} (stratified): {exc}"
        ) from None
    return X_train, X_test, y_train, y_test


class _ProgressLine:
    """``iteration k/max  objective …  max|grad| …`` redrawn in place with ``\\r``."""

    def __init__(self, stream: TextIO, max_iter: int, interval: float = 0.1) -> None:
        self.stream = stream
        self.max_iter = max_iter
        self.interval = interval
        self._last_draw = -np.inf
        self._text = ""

    def update(self, iteration: int, loss: float, grad_max: float) -> None:
        grad = f"{grad_max:9.3e}" if np.isfinite(grad_max) else "        -"
        self._text = (
            f"iteration {iteration:>{len(str(self.max_iter))}}/{self.max_iter}  "
            f"objective {loss:.8e}  max|grad| {grad}"
        )
        now = time.monotonic()
        if now - self._last_draw >= self.interval:
            self._draw()
            self._last_draw = now

    def _draw(self) -> None:
        self.stream.write("\r" + self._text)
        self.stream.flush()

    def close(self) -> None:
        if self._text:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()
            self._text = ""


class _Monitor:
    """The classifier's callback: progress line, loss curve and periodic checkpoints."""

    def __init__(
        self,
        start: Checkpoint | None,
        line: _ProgressLine | None,
        save: Any,
        every: int | None,
    ) -> None:
        self.start = 0 if start is None else start.iteration
        self.iteration = self.start
        self.curve: list[float] = [] if start is None else list(start.loss_curve)
        self.last: Checkpoint | None = start
        self.line = line
        self.save = save
        self.every = every

    def __call__(self, progress: Progress) -> bool:
        self.iteration = self.start + progress.iteration
        self.curve.append(float(progress.loss))
        curve = list(self.curve)  # a copy: the checkpoint of this iteration
        self.last = Checkpoint(self.iteration, progress.coef, progress.intercept, curve)
        if self.line is not None:
            self.line.update(self.iteration, progress.loss, progress.grad_max)
        if self.every and self.iteration % self.every == 0:
            self.save(self.last)
        return False


def _resume_command(argv: list[str]) -> str:
    words = ["crossent", *argv]
    if "--resume" not in argv:
        words.append("--resume")
    return shlex.join(words)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    data = load_data(args, require_labels=True)
    need_labels(data)
    assert data.y is not None
    classes = np.unique(data.y)
    if len(classes) < 2:
        raise DataError(
            f"{data.name}: only one class ({classes[0].item()!r}); training needs at least two"
        )
    standardize = data.image_shape is None if args.standardize is None else args.standardize
    X_train, X_test, y_train, y_test = split_data(data, classes, args.test_size, args.seed)
    preprocessing = Preprocessing.fit(X_train, standardize)
    split = Split(preprocessing.apply(X_train), preprocessing.apply(X_test), y_train, y_test)
    objective: dict[str, Any] = {}  # what a checkpoint records (hashing the data costs a pass)
    if args.checkpoint_every or args.resume:
        objective = objective_options(
            data, l2=args.l2, test_size=args.test_size, seed=args.seed, standardize=standardize
        )
    out = OutputDir(args.out)
    checkpoint_path = out.path / CHECKPOINT_FILE
    start = None
    if args.resume:
        start = load_checkpoint(checkpoint_path, classes=classes, objective=objective)
        if start.iteration >= args.max_iter:
            raise CommandError(
                f"{checkpoint_path}: already at iteration {start.iteration}, the --max-iter "
                f"{args.max_iter} budget; raise --max-iter to train on"
            )
    try:
        if args.checkpoint_every:
            out.ensure()
        fitted = _fit(args, argv, split, classes, start, checkpoint_path, objective)
        if fitted is None:
            out.discard()  # a folder made for checkpoints, if none was saved
            return EXIT_INTERRUPTED
        clf, monitor, converged = fitted
        return _finish(args, data, split, classes, preprocessing, clf, monitor, converged, out)
    except BaseException:
        out.discard()
        raise


def _fit(
    args: argparse.Namespace,
    argv: list[str],
    split: Split,
    classes: np.ndarray,
    start: Checkpoint | None,
    checkpoint_path: Path,
    objective: dict[str, Any],
) -> tuple[SoftmaxClassifier, _Monitor, bool] | None:
    """Fit the classifier; on Ctrl-C save a checkpoint if asked, explain, return None."""

    def save(checkpoint: Checkpoint) -> None:
        save_checkpoint(
            checkpoint_path, checkpoint, classes=classes, solver=args.solver, objective=objective
        )

    show = not args.quiet and sys.stderr.isatty()
    line = _ProgressLine(sys.stderr, args.max_iter) if show else None
    monitor = _Monitor(start, line, save, args.checkpoint_every)
    clf = SoftmaxClassifier(
        l2=args.l2,
        solver=args.solver,
        max_iter=args.max_iter - monitor.start,
        tol=args.tol,
        batch_size=args.batch_size,
        random_state=args.seed,
        warm_start=start is not None,
        callback=monitor,
    )
    if start is not None:
        clf.coef_, clf.intercept_ = start.coef, start.intercept
    interrupted = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # class indices as labels: classes_ = 0..C-1, the same for every split and resume
            clf.fit(split.X_train, split.y_train)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            if line is not None:
                line.close()  # end the progress line before any message
    if interrupted:
        _interrupted(args, argv, monitor, start, checkpoint_path, save)
        return None
    converged = True
    for warning in caught:
        if issubclass(warning.category, ConvergenceWarning):
            converged = False
            unit = "epochs" if args.solver in MINIBATCH else "iterations"
            warn(
                f"not converged after --max-iter {args.max_iter} {unit} (--tol {args.tol:g}); "
                "raise --max-iter, loosen --tol, or raise --l2"
            )
        else:
            warn(str(warning.message))
    return clf, monitor, converged


def _interrupted(
    args: argparse.Namespace,
    argv: list[str],
    monitor: _Monitor,
    start: Checkpoint | None,
    checkpoint_path: Path,
    save: Any,
) -> None:
    where = f"interrupted at iteration {monitor.iteration}"
    if args.checkpoint_every and monitor.last is not None:
        if monitor.last is not start:
            save(monitor.last)
        print(f"{where}; resume with: {_resume_command(argv)}", file=sys.stderr)
    elif start is not None:
        print(
            f"{where}; {checkpoint_path} (iteration {start.iteration}) is unchanged; "
            f"resume with: {_resume_command(argv)}",
            file=sys.stderr,
        )
    else:
        print(
            f"{where}; nothing was saved (train with --checkpoint-every N to be able to resume)",
            file=sys.stderr,
        )


def _finish(
    args: argparse.Namespace,
    data: Dataset,
    split: Split,
    classes: np.ndarray,
    preprocessing: Preprocessing,
    clf: SoftmaxClassifier,
    monitor: _Monitor,
    converged: bool,
    out: OutputDir,
) -> int:
    n_classes = len(classes)
    if len(clf.classes_) != n_classes:
        raise CommandError(f"{data.name}: the training split lacks some classes; lower --test-size")
    coef, intercept = clf.coef_, clf.intercept_  # (C, d), (C,)
    final_objective, _, _ = loss_gradient(coef, intercept, split.X_train, split.y_train, l2=args.l2)
    train = classification_metrics(split.y_train, clf.predict_log_proba(split.X_train), n_classes)
    test_log_proba = clf.predict_log_proba(split.X_test)  # (n_test, C)
    test = classification_metrics(split.y_test, test_log_proba, n_classes)
    n_iter = monitor.start + int(clf.n_iter_)
    curve = monitor.curve  # objective per iteration, the checkpoint's included
    training = {
        "data": data.name,
        "n_train": len(split.y_train),
        "n_test": len(split.y_test),
        "test_size": args.test_size,
        "seed": args.seed,
        "tol": args.tol,
        "max_iter": args.max_iter,
        "n_iter": n_iter,
        "converged": converged,
        "resumed_from_iteration": None if monitor.start == 0 else monitor.start,
        "objective": final_objective,
        "loss_curve": curve,
        "train_accuracy": train["accuracy"],
        "test_accuracy": test["accuracy"],
        "test_cross_entropy": test["cross_entropy"],
    }
    metadata = {
        "kind": MODEL_KIND,
        "classes": classes,
        "n_features": data.n_features,
        "image_shape": data.image_shape,
        "feature_names": data.feature_names,
        "preprocessing": {"standardize": preprocessing.standardize},
        "l2": args.l2,
        "solver": args.solver,
        "fit_intercept": True,
        "training": training,
    }
    arrays = {"coef": coef, "intercept": intercept, **preprocessing.arrays()}
    class_names = [str(c) for c in classes.tolist()]
    model_path, report_path = out.path / MODEL_FILE, out.path / REPORT_FILE
    with out.staging() as stage:
        save_model(stage / MODEL_FILE, arrays, metadata)
        write_report(
            stage / REPORT_FILE,
            title=f"crossent train: {data.name}",
            metrics={
                "data": data.name,
                "solver": args.solver,
                "l2": float(args.l2),
                "standardize": "on" if preprocessing.standardize else "off",
                "iterations": n_iter,
                "converged": "yes" if converged else "no",
                "objective L_total": final_objective,
                "train accuracy": train["accuracy"],
                **report_table(test, "test "),
            },
            class_names=class_names,
            confusion=test["confusion"],
            per_class={k: test[k] for k in ("precision", "recall", "support")},
            loss_curve=curve or None,
            coef=preprocessing.raw_coef(coef) if data.image_shape else None,
            image_shape=data.image_shape,
            pred_entropy=prediction_entropy(test_log_proba),
        )
    if args.checkpoint_every or args.resume:  # training finished: the checkpoint is spent
        (out.path / CHECKPOINT_FILE).unlink(missing_ok=True)

    if args.json:
        print(
            dumps(
                {
                    "command": "train",
                    "crossent_version": __version__,
                    "classes": classes,
                    "n_samples": data.n_samples,
                    "n_features": data.n_features,
                    "image_shape": data.image_shape,
                    "standardize": preprocessing.standardize,
                    "l2": args.l2,
                    "solver": args.solver,
                    **training,
                    "train": metrics_json(train),
                    "test": metrics_json(test),
                    "model": str(model_path),
                    "report": str(report_path),
                }
            )
        )
    elif not args.quiet:
        standardized = (
            "standardized features"
            if preprocessing.standardize
            else ("images in [0, 1], not standardized" if data.image_shape else "not standardized")
        )
        status = f"converged in {n_iter}" if converged else f"stopped after {n_iter}"
        lines = [
            data_line(data.name, data.n_samples, data.n_features, data.image_shape, n_classes),
            f"split     {len(split.y_train)} train / {len(split.y_test)} test "
            f"(stratified, test size {args.test_size:g}, seed {args.seed})",
            f"model     {args.solver}, l2 = {args.l2:g}, {standardized}; {status} iterations, "
            f"objective L_total = {final_objective:.6f}",
            "",
            f"accuracy  train {train['accuracy']:.4f}   test {test['accuracy']:.4f}",
            "",
            *cross_entropy_lines(test, "test"),
            "",
            *per_class_lines(test, class_names, "test"),
            "",
            f"wrote {model_path}",
            f"wrote {report_path}",
        ]
        print("\n".join(lines))
    return 0
