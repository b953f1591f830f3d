"""``crossent train --distributed``: one rank of a data-parallel training job.

Every rank runs this with the same arguments (torchrun gives them all the same command
line). The steps, each ending with a collective that every rank enters:

1. rank 0 checks ``--out`` and, with ``--resume``, reads the checkpoint; every rank takes
   the options rank 0 resolved;
2. each rank reads its rows (:func:`crossent.data._shards.load_shard`); the ranks compare
   their shards (columns, dtype, label type; with a glob of files, a class held by one
   rank only) and agree on the classes, the union;
3. the labels' class indices (one small int a row) are all-gathered, so that every rank
   computes the same stratified split of all the rows as a single-process run with the
   same ``--seed``, and keeps its own rows of it;
4. the standardisation, the fit, the objective and the metrics are those of all ranks'
   rows (all-reduced sums); rank 0 alone writes the model, the checkpoints and the report,
   and prints the summary; the others print nothing but errors.

A fault on one rank (its shard cannot be read) is raised on every rank with the same line;
a lost rank is named by :mod:`._distributed`.
"""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crossent.data import DataError
from crossent.data._shards import load_shard
from crossent.solvers import MINIBATCH

from ._checkpoint import (
    CHECKPOINT_FILE,
    Checkpoint,
    check_checkpoint,
    fingerprint,
    objective_record,
)
from ._common import CommandError, OutputDir, load_data, need_labels
from ._distributed import Group, is_communication_fault, process_group
from ._model import Preprocessing
from ._parser import DEFAULT_TIMEOUT, TRAIN_DEFAULTS
from ._train import (
    Split,
    _check_weights_fit,
    _evaluate,
    _fit,
    _standardize,
    _training_record,
    _write_outputs,
    print_summary,
    resolve_options,
    split_rows,
)


@dataclass(frozen=True)
class ShardInfo:
    """What the ranks compare about their rows before training on them."""

    name: str
    n_rows: int
    n_features: int
    dtype: str
    image_shape: tuple[int, ...] | None
    feature_names: list[str] | None
    label_name: str | None
    labels: np.ndarray  # (k,) the distinct labels of the shard, sorted
    start: int | None  # its first row's index in the file (None: files of a pattern)
    sha256: str | None  # of its features and labels, when a checkpoint needs it
    nnz: int | None  # stored entries of sparse features, None for dense
    first_index: int | None  # a sparse file's first feature number


@dataclass(frozen=True)
class AllRows:
    """All ranks' rows as the summaries and the model file describe them."""

    name: str
    n_samples: int
    n_features: int
    image_shape: tuple[int, ...] | None
    feature_names: list[str] | None
    label_name: str | None
    first_index: int | None
    nnz: int | None


def _message(exc: BaseException) -> str:
    from crossent.cli import _one_line

    return _one_line(exc)


_FAULTS = (CommandError, DataError, ValueError, OSError)


def run_distributed(args: argparse.Namespace, argv: list[str]) -> int:
    """``crossent train --distributed``: join the job, train, and (rank 0) write."""
    if not args.distributed:
        raise CommandError("--timeout applies only with --distributed")
    if args.solver in MINIBATCH:
        raise CommandError(
            f"--distributed needs a full-batch solver (--solver lbfgs or gd), got {args.solver}"
        )
    with process_group(DEFAULT_TIMEOUT if args.timeout is None else args.timeout) as group:
        if not group.writer:
            args.quiet, args.json = True, False  # the other ranks print nothing but errors
        return _run(args, argv, group)


def _resolve(args: argparse.Namespace, out: OutputDir, group: Group) -> Checkpoint | None:
    """Rank 0 checks ``--out`` and resolves the options (from the checkpoint with
    ``--resume``); every rank takes them."""
    group.at("reading the options")
    resolved: Any = None
    error = None
    if group.writer:
        try:
            out.check()
            start = resolve_options(args, out)
            resolved = (start, {key: getattr(args, key) for key in TRAIN_DEFAULTS})
        except _FAULTS as exc:
            error = _message(exc)
    start, options = group.agree(resolved, error)[0]
    for key, value in options.items():
        setattr(args, key, value)
    if args.solver in MINIBATCH:  # recorded in the checkpoint
        raise CommandError(f"--distributed needs a full-batch solver, the run has {args.solver}")
    return start


def _read_shard(
    args: argparse.Namespace, group: Group, hashed: bool
) -> tuple[Any, list[ShardInfo]]:
    group.at("reading the data")
    found: dict[str, Any] = {}

    def loader(source: str, **options: Any) -> Any:
        shard = load_shard(source, group.rank, group.world, **options)
        found["start"] = shard.start
        return shard.data

    info, error = None, None
    data = None
    try:
        data = load_data(args, require_labels=True, loader=loader)
        need_labels(data)
        assert data.y is not None
        info = ShardInfo(
            data.name,
            data.n_samples,
            data.n_features,
            str(data.X.dtype),
            data.image_shape,
            data.feature_names,
            data.label_name,
            np.unique(data.y),
            found["start"],
            fingerprint(data) if hashed else None,
            getattr(data.X, "nnz", None),
            data.first_index,
        )
    except _FAULTS as exc:
        error = _message(exc)
    infos = group.agree(info, error)
    _check_agreement(infos, group)
    return data, infos


def _disagree(infos: list[ShardInfo], value: Any, what: Any) -> None:
    """Raise naming the first rank whose ``value(info)`` differs from rank 0's."""
    first = value(infos[0])
    for rank, info in enumerate(infos):
        if value(info) != first:
            raise DataError(
                f"the ranks' data disagree: {info.name} (rank {rank}) has {what(info)}, "
                f"{infos[0].name} (rank 0) has {what(infos[0])}"
            )


def _check_agreement(infos: list[ShardInfo], group: Group) -> None:
    """The same checks on every rank, from the same gathered facts: the same error too."""
    _disagree(infos, lambda i: i.n_features, lambda i: f"{i.n_features} features")
    _disagree(infos, lambda i: i.dtype, lambda i: f"{i.dtype} features")
    _disagree(
        infos,
        lambda i: (i.nnz is None, i.first_index),
        lambda i: "dense features" if i.nnz is None else f"sparse features from {i.first_index}",
    )
    _disagree(infos, lambda i: i.image_shape, lambda i: f"images of shape {i.image_shape}")
    _disagree(infos, lambda i: i.feature_names, lambda i: f"columns {i.feature_names}")
    _disagree(
        infos,
        lambda i: i.labels.dtype.kind == "U",
        lambda i: "string labels" if i.labels.dtype.kind == "U" else "integer labels",
    )
    if infos[0].start is None and len(infos) > 1:  # each rank its own files
        for rank, info in enumerate(infos):
            others = np.concatenate([o.labels for r, o in enumerate(infos) if r != rank])
            unknown = np.setdiff1d(info.labels, others)
            if unknown.size:
                raise DataError(
                    f"the ranks' data disagree: {info.name} (rank {rank}) has class "
                    f"{unknown[0].item()!r}, which no other rank's data has"
                )


def _outcome(args: argparse.Namespace, group: Group, checkpoint: Path) -> str:
    """What a lost rank leaves: nothing, or (rank 0) the checkpoint to resume from."""
    if group.writer and args.checkpoint_every and checkpoint.exists():
        return f"no model written; resume from {checkpoint} with --resume"
    return "no model or report written"


def _run(args: argparse.Namespace, argv: list[str], group: Group) -> int:
    out = OutputDir(args.out)
    start = _resolve(args, out, group)
    hashed = bool(args.checkpoint_every) or start is not None
    data, infos = _read_shard(args, group, hashed)
    classes = np.unique(np.concatenate([info.labels for info in infos]))  # union, sorted
    n_total = sum(info.n_rows for info in infos)
    name = args.data
    if len(classes) < 2:
        raise DataError(
            f"{name}: only one class ({classes[0].item()!r}); training needs at least two"
        )
    group.at("splitting")
    y_index = np.searchsorted(classes, data.y)  # (n_rank,)
    y_all = np.concatenate(group.all_gather(y_index.astype(np.int32)))  # (n_total,) rank order
    first = sum(info.n_rows for info in infos[: group.rank])  # this rank's first row
    train, test = split_rows(y_all, args.test_size, args.seed, name, len(classes))
    last = first + data.n_samples
    mine_train = train[(train >= first) & (train < last)] - first
    mine_test = test[(test >= first) & (test < last)] - first
    standardize = _standardize(args, data)  # the same on every rank: the shards agree
    _check_weights_fit(data, len(classes))
    group.at("standardising")
    X_train = data.X[mine_train]
    preprocessing = Preprocessing.fit(X_train, standardize, allreduce=group.allreduce)
    split = Split(
        preprocessing.apply(X_train),
        preprocessing.apply(data.X[mine_test]),
        y_index[mine_train],
        y_index[mine_test],
    )
    objective: dict[str, Any] = {}
    if hashed:
        digest = hashlib.sha256(" ".join(str(i.sha256) for i in infos).encode()).hexdigest()
        record = objective_record(
            name,
            digest,
            n_total,
            data.n_features,
            l2=args.l2,
            test_size=args.test_size,
            seed=args.seed,
            standardize=standardize,
        )
        objective = {**record, "ranks": group.world}
    checkpoint_path = out.path / CHECKPOINT_FILE
    if start is not None:
        check_checkpoint(
            checkpoint_path, start, classes=classes, objective=objective, max_iter=args.max_iter
        )
    nnz = None if infos[0].nnz is None else sum(int(i.nnz or 0) for i in infos)
    all_rows = AllRows(
        name,
        n_total,
        data.n_features,
        data.image_shape,
        data.feature_names,
        data.label_name,
        data.first_index,
        nnz,
    )
    try:
        if args.checkpoint_every and group.writer:
            out.ensure()
        group.at("training")
        try:
            fitted = _fit(args, argv, split, classes, start, checkpoint_path, objective, group)
        except RuntimeError as exc:
            if not is_communication_fault(exc):
                raise
            raise group.lost(exc, _outcome(args, group, checkpoint_path)) from None
        if isinstance(fitted, int):  # interrupted: the exit status
            if group.writer:
                out.discard()
            return fitted
        clf, monitor, converged = fitted
        group.at("evaluating")
        result = _evaluate(args, split, clf, monitor, converged, len(classes), group)
        training = _training_record(args, all_rows, result)
        group.at("writing")
        error = None
        if group.writer:
            try:
                _write_outputs(out, args, all_rows, classes, preprocessing, clf, result, training)
            except _FAULTS as exc:
                error = _message(exc)
        group.agree(None, error)
    except BaseException:
        if group.writer:
            out.discard()
        raise
    print_summary(args, all_rows, classes, preprocessing, result, training, out)
    return 0
