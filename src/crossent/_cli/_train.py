"""``crossent train``: split, standardise, fit with a progress line and checkpoints, then
write the model and the report together, or nothing at all.

``crossent train --resume --out DIR`` takes every option it is not given from
``DIR/checkpoint.safetensors`` (see :mod:`._checkpoint`); Ctrl-C and SIGTERM save the
checkpoint (with ``--checkpoint-every``) and print the command that resumes."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from crossent._version import __version__
from crossent.classifier import Progress, SoftmaxClassifier
from crossent.data import DataError, Dataset
from crossent.data._shards import load_files
from crossent.metrics import metric_sums, metrics_from_sums, prediction_entropy
from crossent.model_io import save_model
from crossent.objective import loss_gradient
from crossent.report import write_report
from crossent.solvers import MINIBATCH

from . import Terminated, interrupt_status
from ._checkpoint import (
    CHECKPOINT_FILE,
    Checkpoint,
    check_checkpoint,
    objective_options,
    read_checkpoint,
    recorded_options,
    save_checkpoint,
)
from ._common import CommandError, OutputDir, load_data, need_labels, warn
from ._distributed import Group
from ._model import MODEL_KIND, Preprocessing
from ._parser import TRAIN_DEFAULTS
from ._summary import (
    cross_entropy_lines,
    data_line,
    dumps,
    per_class_lines,
    report_table,
)

MODEL_FILE = "model.safetensors"
REPORT_FILE = "report.html"


class DataInfo(Protocol):
    """What the summaries and the model file say about the data (a :class:`Dataset`, or
    with ``--distributed`` the description of all ranks' rows)."""

    @property
    def name(self) -> str: ...

    @property
    def image_shape(self) -> tuple[int, ...] | None: ...

    @property
    def feature_names(self) -> list[str] | None: ...

    @property
    def label_name(self) -> str | None: ...

    @property
    def first_index(self) -> int | None: ...

    @property
    def n_samples(self) -> int: ...

    @property
    def n_features(self) -> int: ...


def _nnz(data: DataInfo) -> int | None:
    """The stored entries of sparse data (a Dataset's ``X.nnz``, or all ranks'), else None."""
    X = getattr(data, "X", None)
    return getattr(X if X is not None else data, "nnz", None)


@dataclass(frozen=True)
class Split:
    X_train: np.ndarray  # (n_train, d), preprocessed
    X_test: np.ndarray  # (n_test, d), preprocessed
    y_train: np.ndarray  # (n_train,) class indices
    y_test: np.ndarray  # (n_test,) class indices


def split_rows(
    y_index: np.ndarray, test_size: float, seed: int, name: str, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """The stratified, seeded split of the rows: (train rows, test rows), each in the
    order scikit-learn's ``train_test_split`` gives them (``test_size`` 0: every row
    trains, in file order)."""
    rows = np.arange(len(y_index))  # (n,)
    if test_size == 0:
        return rows, rows[:0]
    try:
        train, test = train_test_split(
            rows, test_size=test_size, stratify=y_index, random_state=seed
        )
    except ValueError as exc:
        raise CommandError(
            f"{name}: cannot split {len(y_index)} samples of {n_classes} classes "
            f"with --test-size {test_size:g} (stratified): {exc}"
        ) from None
    return train, test


def split_data(data: Dataset, classes: np.ndarray, test_size: float, seed: int) -> tuple:
    """Stratified, seeded train/test split of the rows and the labels' class indices."""
    assert data.y is not None
    y_index = np.searchsorted(classes, data.y)
    train, test = split_rows(y_index, test_size, seed, data.name, len(classes))
    return data.X[train], data.X[test], y_index[train], y_index[test]


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
        group: Group | None = None,
    ) -> None:
        self.group = group
        self.start = 0 if start is None else start.iteration
        self.iteration = self.start
        self.curve: list[float] = [] if start is None else list(start.loss_curve)
        self.last: Checkpoint | None = start
        self.line = line
        self.save = save
        self.every = every

    def __call__(self, progress: Progress) -> bool:
        self.iteration = self.start + progress.iteration
        if self.group is not None:
            self.group.reached(self.iteration)
        self.curve.append(float(progress.loss))
        curve = list(self.curve)  # a copy: the checkpoint of this iteration
        self.last = Checkpoint(self.iteration, progress.coef, progress.intercept, curve)
        if self.line is not None:
            self.line.update(self.iteration, progress.loss, progress.grad_max)
        if self.every and self.iteration % self.every == 0:
            self.save(self.last)
        return False


def _resume_command(argv: list[str], group: Group | None = None) -> str:
    launcher = ["torchrun", f"--nproc-per-node={group.world}", "-m"] if group else []
    words = [*launcher, "crossent", *argv]
    if "--resume" not in argv:
        words.append("--resume")
    return shlex.join(words)


def resolve_options(args: argparse.Namespace, out: OutputDir) -> Checkpoint | None:
    """Fill the train options left out: from the checkpoint with ``--resume``, else the
    defaults. Return the checkpoint read (its agreement with the data is checked later)."""
    start = read_checkpoint(out.path / CHECKPOINT_FILE) if args.resume else None
    recorded = {} if start is None else start.options
    for key, default in TRAIN_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, recorded.get(key, default))
    return start


def _standardize(args: argparse.Namespace, data: Dataset) -> bool:
    """``--standardize`` as given, else on for features that are neither images nor sparse;
    refused for sparse data (centring would make it dense)."""
    if data.sparse:
        if args.standardize:
            raise CommandError(
                f"{data.name}: --standardize does not apply to sparse data (centring would "
                "make it dense); sparse features are used as they are"
            )
        return False
    return data.image_shape is None if args.standardize is None else bool(args.standardize)


def _physical_memory() -> int | None:
    """This machine's memory in bytes, or None where the OS does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def _check_weights_fit(data: Dataset, n_classes: int) -> None:
    """Refuse, before allocating, a weight matrix over a quarter of this machine's memory
    (the solvers hold several): a sparse file's column count is not bounded by its bytes."""
    need = 8 * n_classes * data.n_features  # one (C, d) float64 matrix
    memory = _physical_memory()
    if memory is not None and need > memory // 4:
        raise CommandError(
            f"{data.name}: {data.n_features} features × {n_classes} classes need "
            f"{need / 2**30:.1f} GiB per weight matrix, over a quarter of this machine's "
            f"{memory / 2**30:.1f} GiB; the solvers hold several"
        )


def run(args: argparse.Namespace, argv: list[str]) -> int:
    if args.device is not None and (args.distributed or args.timeout is not None):
        raise CommandError("--device does not apply with --distributed (NumPy on each rank)")
    if args.distributed or args.timeout is not None:
        from ._train_distributed import run_distributed

        return run_distributed(args, argv)
    out = OutputDir(args.out)
    out.check()  # an --out that cannot be a folder is refused before any work
    start = resolve_options(args, out)
    if args.device is not None and args.solver not in ("auto", "lbfgs", "gd"):
        kind = "minibatch solver" if args.solver in MINIBATCH else "solver"
        raise CommandError(
            f"--device {args.device}: the {kind} {args.solver} runs on NumPy only; "
            "use --solver lbfgs or gd"
        )
    data = load_data(args, require_labels=True, loader=load_files)  # a glob: its files
    need_labels(data)
    assert data.y is not None
    classes = np.unique(data.y)
    if len(classes) < 2:
        raise DataError(
            f"{data.name}: only one class ({classes[0].item()!r}); training needs at least two"
        )
    standardize = _standardize(args, data)
    _check_weights_fit(data, len(classes))
    X_train, X_test, y_train, y_test = split_data(data, classes, args.test_size, args.seed)
    preprocessing = Preprocessing.fit(X_train, standardize)
    split = Split(preprocessing.apply(X_train), preprocessing.apply(X_test), y_train, y_test)
    objective: dict[str, Any] = {}  # what a checkpoint records (hashing the data costs a pass)
    if args.checkpoint_every or start is not None:
        objective = objective_options(
            data, l2=args.l2, test_size=args.test_size, seed=args.seed, standardize=standardize
        )
    checkpoint_path = out.path / CHECKPOINT_FILE
    if start is not None:
        check_checkpoint(
            checkpoint_path, start, classes=classes, objective=objective, max_iter=args.max_iter
        )
    try:
        if args.checkpoint_every:
            out.ensure()
        fitted = _fit(args, argv, split, classes, start, checkpoint_path, objective)
        if isinstance(fitted, int):  # interrupted: the exit status
            out.discard()  # a folder made for checkpoints, if none was saved
            return fitted
        clf, monitor, converged = fitted
        result = _evaluate(args, split, clf, monitor, converged, len(classes))
        training = _training_record(args, data, result)
        _write_outputs(out, args, data, classes, preprocessing, clf, result, training)
    except BaseException:
        out.discard()
        raise
    print_summary(args, data, classes, preprocessing, result, training, out)
    return 0


def _fit(
    args: argparse.Namespace,
    argv: list[str],
    split: Split,
    classes: np.ndarray,
    start: Checkpoint | None,
    checkpoint_path: Path,
    objective: dict[str, Any],
    group: Group | None = None,
) -> tuple[SoftmaxClassifier, _Monitor, bool] | int:
    """Fit the classifier; on Ctrl-C or SIGTERM save a checkpoint if asked, explain, and
    return the exit status (130 or 143). With a ``group`` (``--distributed``), fit this
    rank's rows as part of all ranks' (rank 0 alone saves checkpoints and shows progress)."""
    options = recorded_options(args)
    writer = group is None or group.writer

    def save(checkpoint: Checkpoint) -> None:
        if not writer:
            return
        save_checkpoint(
            checkpoint_path,
            checkpoint,
            classes=classes,
            solver=args.solver,
            objective=objective,
            options=options,
        )

    show = writer and not args.quiet and sys.stderr.isatty()
    line = _ProgressLine(sys.stderr, args.max_iter) if show else None
    monitor = _Monitor(start, line, save, args.checkpoint_every, group)
    clf = SoftmaxClassifier(
        l2=args.l2,
        solver=args.solver,
        max_iter=args.max_iter - monitor.start,
        tol=args.tol,
        batch_size=args.batch_size,
        random_state=args.seed,
        warm_start=start is not None,
        callback=monitor,
        distributed=group is not None,
        device=args.device,  # the objective's device (None: NumPy)
    )
    if start is not None:
        clf.coef_, clf.intercept_ = start.coef, start.intercept
    interrupted: KeyboardInterrupt | None = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # class indices as labels: classes_ = 0..C-1, the same for every split and resume
            clf.fit(split.X_train, split.y_train)
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (crossent._cli.Terminated)
            interrupted = exc
        finally:
            if line is not None:
                line.close()  # end the progress line before any message
    if interrupted is not None:
        what = "terminated" if isinstance(interrupted, Terminated) else "interrupted"
        if group is not None:
            what = group.interrupted(what)
        _interrupted(args, argv, monitor, start, checkpoint_path, save, what, group)
        return interrupt_status(interrupted)
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
    what: str = "interrupted",
    group: Group | None = None,
) -> None:
    """Save the last checkpoint if asked, and say how to resume (or that nothing was kept)."""
    where = f"{what} at iteration {monitor.iteration}"
    if args.checkpoint_every and monitor.last is not None:
        if monitor.last is not start:
            save(monitor.last)
        print(f"{where}; resume with: {_resume_command(argv, group)}", file=sys.stderr)
    elif start is not None:
        print(
            f"{where}; {checkpoint_path} (iteration {start.iteration}) is unchanged; "
            f"resume with: {_resume_command(argv, group)}",
            file=sys.stderr,
        )
    else:
        print(
            f"{where}; nothing was saved (train with --checkpoint-every N to be able to resume)",
            file=sys.stderr,
        )


@dataclass(frozen=True)
class _Result:
    """What the fitted classifier achieved, for the model file, the report and the summary."""

    objective: float  # L_total at the final weights
    train: dict[str, Any]  # classification_metrics on the training rows
    test: dict[str, Any] | None  # ... on the test rows (None: --test-size 0)
    test_entropy: np.ndarray  # (n_test,) entropy of each test prediction (all ranks')
    n_train: int  # training rows (of all ranks)
    n_test: int  # test rows (of all ranks)
    n_iter: int  # iterations in all, resumed ones included
    curve: list[float]  # objective per iteration, the checkpoint's included
    converged: bool
    resumed_from: int | None  # the checkpoint's iteration, or None
    solver: str  # what ran: --solver, with auto's choice ("auto → lbfgs")


def _evaluate(
    args: argparse.Namespace,
    split: Split,
    clf: SoftmaxClassifier,
    monitor: _Monitor,
    converged: bool,
    n_classes: int,
    group: Group | None = None,
) -> _Result:
    """The objective and the train and test metrics of the fitted classifier (with a
    ``group``: of all ranks' rows, from all-reduced sums)."""
    if len(clf.classes_) != n_classes:
        raise CommandError("the training split lacks some classes; lower --test-size")
    if group is None:
        final_objective, _, _ = loss_gradient(
            clf.coef_, clf.intercept_, split.X_train, split.y_train, l2=args.l2
        )
    else:
        final_objective = group.objective(clf, split.X_train, split.y_train, args.l2)

    def metrics(y: np.ndarray, log_proba: np.ndarray) -> dict[str, Any] | None:
        sums = metric_sums(y, log_proba, n_classes)
        sums = sums if group is None else group.allreduce(sums)
        return metrics_from_sums(sums, n_classes) if sums[: n_classes**2].sum() else None

    train = metrics(split.y_train, clf.predict_log_proba(split.X_train))
    assert train is not None  # every class has training rows
    test_log_proba = np.zeros((0, n_classes))  # (n_test, C): none with --test-size 0
    if split.X_test.shape[0]:
        test_log_proba = clf.predict_log_proba(split.X_test)
    test_entropy = prediction_entropy(test_log_proba)  # (n_test,)
    if group is not None:
        test_entropy = np.concatenate(group.all_gather(test_entropy))  # (all ranks' n_test,)
    test = metrics(split.y_test, test_log_proba)
    return _Result(
        objective=final_objective,
        train=train,
        test=test,
        test_entropy=test_entropy,
        n_train=int(train["n_samples"]),
        n_test=0 if test is None else int(test["n_samples"]),
        n_iter=monitor.start + int(clf.n_iter_),
        curve=monitor.curve,
        converged=converged,
        resumed_from=None if monitor.start == 0 else monitor.start,
        solver=_solver_ran(args.solver, clf),
    )


def _solver_ran(solver: str, clf: SoftmaxClassifier) -> str:
    """``solver`` as given, with what ``auto`` chose (the classifier's ``solver_``)."""
    chosen = getattr(clf, "solver_", solver)
    return solver if chosen == solver else f"{solver} → {chosen}"


def _training_record(args: argparse.Namespace, data: DataInfo, result: _Result) -> dict[str, Any]:
    """The model file's ``training`` metadata (also the JSON summary's core)."""
    return {
        "data": data.name,
        "n_train": result.n_train,
        "n_test": result.n_test,
        "test_size": args.test_size,
        "seed": args.seed,
        "tol": args.tol,
        "max_iter": args.max_iter,
        "n_iter": result.n_iter,
        "converged": result.converged,
        "resumed_from_iteration": result.resumed_from,
        "objective": result.objective,
        "loss_curve": result.curve,
        "train_accuracy": result.train["accuracy"],
        "test_accuracy": None if result.test is None else result.test["accuracy"],
        "test_cross_entropy": None if result.test is None else result.test["cross_entropy"],
    }


def _write_outputs(
    out: OutputDir,
    args: argparse.Namespace,
    data: DataInfo,
    classes: np.ndarray,
    preprocessing: Preprocessing,
    clf: SoftmaxClassifier,
    result: _Result,
    training: dict[str, Any],
) -> None:
    """Write the model and the report together, then remove the spent checkpoint."""
    metadata = {
        "kind": MODEL_KIND,
        "classes": classes,
        "n_features": data.n_features,
        "image_shape": data.image_shape,
        "feature_names": data.feature_names,
        "label_column": data.label_name,
        "index_base": data.first_index,
        "preprocessing": {"standardize": preprocessing.standardize},
        "l2": args.l2,
        "solver": args.solver,
        "fit_intercept": True,
        "training": training,
    }
    arrays = {"coef": clf.coef_, "intercept": clf.intercept_, **preprocessing.arrays()}
    resumed = {} if result.resumed_from is None else {"resumed from iteration": result.resumed_from}
    shown, what = (result.train, "train ") if result.test is None else (result.test, "test ")
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
                "iterations": result.n_iter,
                **resumed,
                "converged": "yes" if result.converged else "no",
                "objective L_total": result.objective,
                "train accuracy": result.train["accuracy"],
                **report_table(shown, what),
            },
            class_names=[str(c) for c in classes.tolist()],
            confusion=shown["confusion"],
            per_class={k: shown[k] for k in ("precision", "recall", "support")},
            loss_curve=result.curve or None,
            resumed_at=result.resumed_from,
            coef=preprocessing.raw_coef(clf.coef_) if data.image_shape else clf.coef_,
            image_shape=data.image_shape,
            pred_entropy=result.test_entropy if result.test is not None else None,
            feature_names=data.feature_names,
            first_feature_number=data.first_index or 0,
        )
    if args.checkpoint_every or result.resumed_from is not None:  # the checkpoint is spent
        (out.path / CHECKPOINT_FILE).unlink(missing_ok=True)


def _print_json(
    args: argparse.Namespace,
    data: DataInfo,
    classes: np.ndarray,
    preprocessing: Preprocessing,
    result: _Result,
    training: dict[str, Any],
    out: OutputDir,
) -> None:
    document = {
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
        "train": result.train,
        "test": result.test,
        "model": str(out.path / MODEL_FILE),
        "report": str(out.path / REPORT_FILE),
    }
    print(dumps(document))


def print_summary(
    args: argparse.Namespace,
    data: DataInfo,
    classes: np.ndarray,
    preprocessing: Preprocessing,
    result: _Result,
    training: dict[str, Any],
    out: OutputDir,
) -> None:
    """The run's summary on stdout: JSON with ``--json``, else text unless ``--quiet``."""
    if args.json:
        _print_json(args, data, classes, preprocessing, result, training, out)
    elif not args.quiet:
        _print_text(args, data, classes, preprocessing, result, out)


def _print_text(
    args: argparse.Namespace,
    data: DataInfo,
    classes: np.ndarray,
    preprocessing: Preprocessing,
    result: _Result,
    out: OutputDir,
) -> None:
    if preprocessing.standardize:
        standardized = "standardized features"
    else:
        standardized = (
            "images in [0, 1], not standardized"
            if data.image_shape
            else "sparse, not standardized"
            if _nnz(data) is not None
            else "not standardized"
        )
    n_iter = result.n_iter
    status = f"converged in {n_iter}" if result.converged else f"stopped after {n_iter}"
    resumed = []
    if result.resumed_from is not None:
        resumed = [
            f"resumed   from {out.path / CHECKPOINT_FILE} at iteration {result.resumed_from}"
        ]
    test = result.test
    shown, what = (result.train, "train") if test is None else (test, "test")
    accuracy = f"   test {test['accuracy']:.4f}" if test is not None else "   (no test rows)"
    lines = [
        data_line(
            data.name,
            data.n_samples,
            data.n_features,
            data.image_shape,
            len(classes),
            _nnz(data),
        ),
        f"split     {result.n_train} train / {result.n_test} test "
        + (
            f"(stratified, test size {args.test_size:g}, seed {args.seed})"
            if args.test_size
            else "(--test-size 0: every sample trains)"
        ),
        f"model     {result.solver}, l2 = {args.l2:g}, {standardized}; {status} iterations, "
        f"objective L_total = {result.objective:.6f}",
        *resumed,
        "",
        f"accuracy  train {result.train['accuracy']:.4f}{accuracy}",
        "",
        *cross_entropy_lines(shown, what),
        "",
        *per_class_lines(shown, [str(c) for c in classes.tolist()], what),
        "",
        f"wrote {out.path / MODEL_FILE}",
        f"wrote {out.path / REPORT_FILE}",
    ]
    print("\n".join(lines))
