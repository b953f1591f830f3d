"""Data-parallel fitting over ``torch.distributed``: every process holds a shard of the rows.

``L_total`` and its gradient are sums over samples, so they split exactly over processes:

.. math::

    L_{total} = \\sum_{r=0}^{p-1} \\sum_{i \\in \\text{shard}_r} s_i L_i
                + \\frac{\\lambda}{2} \\|W\\|^2 .

Each rank evaluates its shard through the one objective
(:class:`crossent.objective.LinearSoftmaxObjective`) and one all-reduce of a flat float64
buffer ``[L, ∂L/∂W, ∂L/∂b]`` adds the parts; the penalty is held by rank 0 alone, so it is
counted once. The preconditioner's statistics, the set of classes and the class counts are
reduced once at the start. L-BFGS's first step from ``W = 0``, on kept scores of its direction
(:mod:`crossent.score_line`), is taken as on one process: each rank keeps its shard's
scores, and the line's three sums per step length tried are all-reduced (as is the choice to
keep them: scores within the budget on every rank). The solvers are deterministic, so every
rank then takes the same step; this is checked, not assumed: each evaluation carries a
fingerprint of the point it was asked for from every rank, and the fitted coefficients are
compared (a hash of their bytes) at the end. Shards that disagree (columns, dtype, label
type, settings) or that one rank refuses give the same clear error on every rank, never a
hang.

PyTorch is imported on first use only; ``import crossent`` never imports it. With the gloo
back end the buffers stay on the CPU; with NCCL they are copied to the current CUDA device.

Public API (for the ``crossent train --distributed`` command and for users)
---------------------------------------------------------------------------
- :func:`rank`, :func:`world_size`: of the process group (the default one when ``None``).
- :func:`allreduce`: a float64 NumPy array summed (or maxed) over the ranks.
- :func:`all_gather`: a picklable object from every rank.
- :func:`agree`: every rank's local result or error; raises the same error on every rank.
- :class:`DistributedObjective`: the objective over all ranks' rows.
- :func:`check_same_model`: raise on every rank unless all hold the same coefficients.
- ``SoftmaxClassifier(distributed=True).fit(X_shard, y_shard)`` (see :func:`fit_shard`).
"""

from __future__ import annotations

import hashlib
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from crossent.objective import LinearSoftmaxObjective

if TYPE_CHECKING:
    from crossent.classifier import SoftmaxClassifier

__all__ = [
    "DistributedObjective",
    "ShardError",
    "agree",
    "all_gather",
    "allreduce",
    "check_same_model",
    "fit_shard",
    "rank",
    "world_size",
]


class ShardError(ValueError):
    """The shards of a distributed fit cannot make one model; raised on every rank alike."""


def _dist() -> Any:
    """``torch.distributed``, imported now, with an initialised default process group."""
    try:
        import torch.distributed as dist
    except ImportError as exc:  # pragma: no cover - torch is a test dependency
        raise ImportError(
            "distributed fitting needs PyTorch (torch.distributed): pip install torch"
        ) from exc
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "distributed=True needs an initialised torch.distributed process group: launch "
            "with torchrun, or call torch.distributed.init_process_group first"
        )
    return dist


def rank(group: Any = None) -> int:
    """This process's rank in ``group`` (the default process group when None)."""
    return int(_dist().get_rank(group))


def world_size(group: Any = None) -> int:
    """The number of processes in ``group`` (the default process group when None)."""
    return int(_dist().get_world_size(group))


def allreduce(values: np.ndarray, op: str = "sum", group: Any = None) -> np.ndarray:
    """``values`` reduced element-wise over the ranks of ``group``: a new float64 array.

    Parameters
    ----------
    values : array-like, shape ``(k,)``
        This rank's part, the same shape on every rank.
    op : {"sum", "max"}
    group : ProcessGroup, optional

    Returns
    -------
    numpy.ndarray, shape ``(k,)``, float64, equal on every rank.
    """
    import torch

    dist = _dist()
    ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}
    if op not in ops:
        raise ValueError(f"op must be 'sum' or 'max', got {op!r}")
    buffer = np.array(values, dtype=np.float64).ravel()  # (k,) a copy: reduced in place
    tensor = torch.from_numpy(buffer)
    if dist.get_backend(group) == "nccl":  # NCCL reduces CUDA tensors only
        tensor = tensor.cuda()
        dist.all_reduce(tensor, op=ops[op], group=group)
        return tensor.cpu().numpy()
    dist.all_reduce(tensor, op=ops[op], group=group)
    return buffer


def all_gather(obj: Any, group: Any = None) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``obj`` must pickle)."""
    dist = _dist()
    gathered: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(gathered, obj, group=group)
    return gathered


def agree(local: Any, group: Any = None, what: str = "its shard") -> list[Any]:
    """Every rank's ``local`` value, or one :class:`ShardError` raised on every rank.

    Call it with the result of a step that may fail on some ranks only (reading or checking
    a shard), or with the exception it raised: if any rank passes an exception, every rank
    raises the same ``ShardError`` naming the first failed rank and its message, so no rank
    is left waiting in a collective for one that gave up.
    """
    failure = f"{type(local).__name__}: {local}" if isinstance(local, BaseException) else None
    gathered = all_gather((failure, None if failure else local), group)
    failed = [r for r, (message, _) in enumerate(gathered) if message is not None]
    if failed:
        others = f" (and rank(s) {', '.join(map(str, failed[1:]))})" if failed[1:] else ""
        raise ShardError(
            f"distributed fit: rank {failed[0]} of {len(gathered)} refused {what}{others}: "
            f"{gathered[failed[0]][0]}"
        )
    return [value for _, value in gathered]


def _by_rank(values: list[Any], ranks: list[int] | None = None) -> str:
    """``"5 on rank(s) 0, 2; 4 on rank(s) 1"``: which ranks hold which value."""
    groups: dict[str, list[int]] = {}
    for r, value in zip(range(len(values)) if ranks is None else ranks, values, strict=True):
        groups.setdefault(str(value), []).append(r)
    return "; ".join(f"{v} on rank(s) {', '.join(map(str, rs))}" for v, rs in groups.items())


def _require_equal(values: list[Any], what: str, skip_none: bool = False) -> None:
    """Raise :class:`ShardError` (identically on every rank) unless all ``values`` agree.

    With ``skip_none``, the ranks whose value is None are left out of the comparison.
    """
    ranks = [r for r, v in enumerate(values) if not (skip_none and v is None)]
    compared = [values[r] for r in ranks]
    if any(str(v) != str(compared[0]) for v in compared):
        raise ShardError(
            f"distributed fit: the ranks disagree on {what}: {_by_rank(compared, ranks)}"
        )


def _fingerprint(coef: np.ndarray, intercept: np.ndarray | None) -> int:
    """A 32-bit checksum of the point ``(W, b)``: exact as a float64, cheap (crc32)."""
    data = np.ascontiguousarray(coef, dtype=np.float64).tobytes()
    if intercept is not None:
        data += np.ascontiguousarray(intercept, dtype=np.float64).tobytes()
    return zlib.crc32(data)


class DistributedObjective(LinearSoftmaxObjective):
    """``L_total`` and its gradient over the rows of all ranks, each holding its shard.

    Reference semantics: ``loss_gradient`` returns, on every rank, what
    ``LinearSoftmaxObjective(concatenate(X_r), concatenate(y_r), ...)`` returns, up to the
    order of the sums. Each rank's shard goes through the one objective (this class's base)
    and one all-reduce of a flat float64 buffer of ``1 + C·d + C + p`` values adds the parts:
    the loss, ``∂L/∂W``, ``∂L/∂b`` and one slot per rank for the fingerprint of the point it
    evaluated, so that ranks that left lockstep are caught at once.

    Parameters
    ----------
    X, y, n_classes
        As for :class:`~crossent.objective.LinearSoftmaxObjective`, with this rank's rows.
        ``n_classes`` is the number of classes over all ranks.
    l2 : float
        λ of the whole objective. Rank 0 holds the penalty (its ``l2`` attribute is λ, the
        other ranks' is 0), so the sum counts it once.
    group : ProcessGroup, optional
        The ranks that share the objective (the default process group when None).
    **options
        ``sample_weight``, ``fit_intercept``, ``n_threads``, ``chunk_rows``, ``x_max_abs``:
        as for :class:`~crossent.objective.LinearSoftmaxObjective`, for this rank's rows.

    Attributes
    ----------
    allreduce_seconds : float
        Time spent in the all-reduces (including waiting for the slowest rank).
    """

    def __init__(
        self,
        X: np.ndarray,
        y: np.ndarray,
        n_classes: int,
        *,
        l2: float,
        group: Any = None,
        **options: Any,
    ) -> None:
        self.group = group
        self.rank, self.world_size = rank(group), world_size(group)
        try:
            super().__init__(
                X,
                y,
                n_classes,
                l2=l2 if self.rank == 0 else 0.0,
                **options,
            )
            shape: Any = (self.n_features, self.n_classes, str(self.X.dtype), self.fit_intercept)
        except (TypeError, ValueError) as exc:
            shape = exc
        shapes = agree(shape, group, "its shard of the objective")
        _require_equal(
            [f"(n_features, n_classes, dtype, fit_intercept) = {s}" for s in shapes], "the shards"
        )
        self.allreduce_seconds = 0.0

    def loss_gradient(
        self, coef: np.ndarray, intercept: np.ndarray | None = None
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """``(L_total, ∂L/∂W, ∂L/∂b)`` over all ranks, equal on every rank.

        Every rank must call it at the same point: ``RuntimeError`` on every rank otherwise.
        """
        local = super().loss_gradient(coef, intercept)
        return self._over_ranks(local, _fingerprint(coef, intercept))

    def loss_gradient_from_scores(
        self, coef: np.ndarray, scores_of: Callable[[int, int, np.ndarray], None]
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """As :meth:`loss_gradient`, with this rank's scores from ``scores_of`` (see
        :meth:`LinearSoftmaxObjective.loss_gradient_from_scores`); all ranks at one ``W``."""
        local = super().loss_gradient_from_scores(coef, scores_of)
        return self._over_ranks(local, _fingerprint(coef, None))

    def reduce(self, values: np.ndarray, op: str = "sum") -> np.ndarray:
        """``values`` summed or maxed over the ranks (every rank must call it)."""
        start = time.perf_counter()
        total = allreduce(np.asarray(values, dtype=np.float64), op, self.group)
        self.allreduce_seconds += time.perf_counter() - start
        return total

    def _over_ranks(
        self, local: tuple[float, np.ndarray, np.ndarray], point: int
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """This rank's ``(loss, ∂L/∂W, ∂L/∂b)`` summed over the ranks, in one all-reduce
        that also checks every rank evaluated the point of checksum ``point``."""
        loss, grad_coef, grad_intercept = local
        n_classes, n_features = grad_coef.shape
        size = n_classes * n_features
        buffer = np.zeros(1 + size + n_classes + self.world_size)  # (1 + C·d + C + p,)
        buffer[0] = loss
        buffer[1 : 1 + size] = grad_coef.ravel()
        buffer[1 + size : 1 + size + n_classes] = grad_intercept
        buffer[1 + size + n_classes + self.rank] = point
        total = self.reduce(buffer, "sum")
        points = total[1 + size + n_classes :]
        if not np.all(points == points[0]):
            raise RuntimeError(
                "distributed fit: the ranks left lockstep: they evaluated the objective at "
                f"different coefficients (checksums {_by_rank([int(v) for v in points])}); "
                "their solvers diverged (different CPUs or numerical libraries?) or were "
                "started from different models"
            )
        grad_coef = total[1 : 1 + size].reshape(n_classes, n_features)  # (C, d)
        return float(total[0]), grad_coef, total[1 + size : 1 + size + n_classes].copy()


def check_same_model(coef: np.ndarray, intercept: np.ndarray, group: Any = None) -> None:
    """Raise ``RuntimeError`` on every rank unless all ranks hold bitwise-equal ``(W, b)``.

    Compares a SHA-256 of the bytes of ``coef`` and ``intercept`` (one all-gather).
    """
    digest = hashlib.sha256(
        np.ascontiguousarray(coef).tobytes() + np.ascontiguousarray(intercept).tobytes()
    ).hexdigest()[:16]
    digests = all_gather(digest, group)
    if len(set(digests)) > 1:
        raise RuntimeError(
            "distributed fit: the ranks ended with different coefficients (SHA-256 "
            f"{_by_rank(digests)}): their solvers did not step in lockstep"
        )


@dataclass(frozen=True)
class _Shard:
    """What the ranks compare before fitting: their shards' shapes, labels and settings."""

    n_rows: int
    max_abs: float  # max |x| of the shard
    n_features: int
    dtype: str
    feature_names: tuple[str, ...] | None
    labels: np.ndarray  # (k,) the distinct labels of this shard, sorted
    counts: np.ndarray  # (k,) rows per label
    label_kind: str | None  # "numbers" or "strings"; None for a shard without rows
    settings: str  # the estimator's parameters that must be equal everywhere


def _canonical(value: Any) -> str:
    """``repr(value)``, a dict's items sorted: equal settings give equal strings."""
    if isinstance(value, dict):
        return repr(sorted(value.items(), key=repr))
    return repr(value)


_SHARED_PARAMS = ("l2", "fit_intercept", "solver", "max_iter", "tol", "class_weight", "warm_start")


def fit_shard(
    estimator: SoftmaxClassifier, X: Any, y: Any, sample_weight: Any = None, group: Any = None
) -> SoftmaxClassifier:
    """Fit ``estimator`` on the rows of every rank, each passing its own ``(X, y)`` shard.

    What ``SoftmaxClassifier(distributed=True).fit`` runs: the same steps as a fit on one
    process, with the shards checked against each other first, the statistics, the classes
    and the class counts reduced over the ranks, the objective all-reduced at every
    evaluation, and the final model compared across the ranks. Every rank ends with the
    same ``coef_`` and ``intercept_``, bit for bit.

    Examples
    --------
    One rank here; under ``torchrun`` each of the ranks runs the same lines on its rows.

    >>> import os, tempfile
    >>> import numpy as np
    >>> import torch.distributed as dist
    >>> from crossent import SoftmaxClassifier
    >>> store = dist.FileStore(os.path.join(tempfile.mkdtemp(), "store"), 1)
    >>> dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    >>> X, y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1])
    >>> clf = SoftmaxClassifier(distributed=True).fit(X, y)  # this rank's rows
    >>> clf.predict(X)
    array([0, 0, 1, 1])
    >>> dist.destroy_process_group()
    """
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import validate_data

    from crossent._stats import max_abs
    from crossent.classifier import _check_feature_scale
    from crossent.objective import _check_sample_weight as _check_weights
    from crossent.solvers import FULL_BATCH, Preconditioner, Problem, penalty_weight

    if estimator.solver not in FULL_BATCH:
        raise ValueError(
            f"distributed=True needs a full-batch solver ('lbfgs' or 'gd'), got "
            f"solver={estimator.solver!r}: minibatch solvers are not distributed"
        )
    _dist()
    local: Any
    try:
        X, y = validate_data(
            estimator,
            X,
            y,
            accept_sparse="csr",
            dtype=[np.float64, np.float32],
            order="C",
            ensure_min_samples=0,
        )  # a rank may have no rows
        largest_local = _check_feature_scale(max_abs(X), X.shape[0])  # one pass over X
        check_classification_targets(y)
        sample_weight = _check_weights(sample_weight, X.shape[0])  # (n,) float64
        labels, counts = np.unique(y, return_counts=True)
        names = getattr(estimator, "feature_names_in_", None)
        params = estimator.get_params()
        local = _Shard(
            n_rows=X.shape[0],
            max_abs=largest_local,
            n_features=X.shape[1],
            dtype=str(X.dtype),
            feature_names=None if names is None else tuple(map(str, names)),
            labels=labels,
            counts=counts,
            label_kind=None
            if labels.size == 0
            else ("numbers" if labels.dtype.kind in "biuf" else "strings"),
            settings=", ".join(f"{k}={_canonical(params[k])}" for k in _SHARED_PARAMS),
        )
    except Exception as exc:  # any failure here is reported to every rank, not left to hang
        local = exc
    shards: list[_Shard] = agree(local, group, "its shard (X, y, sample_weight)")
    _require_equal([s.settings for s in shards], "the estimator's parameters")
    _require_equal([s.n_features for s in shards], "the number of features (columns of X)")
    _require_equal([s.dtype for s in shards], "the dtype of X")
    _require_equal([s.feature_names for s in shards], "the feature names")
    _require_equal([s.label_kind for s in shards], "the type of the labels y", skip_none=True)
    largest, n_rows = max(s.max_abs for s in shards), sum(s.n_rows for s in shards)
    _check_feature_scale(largest, n_rows, " over all ranks")
    labelled = [s.labels for s in shards if s.labels.size] or [shards[0].labels]
    classes = np.unique(np.concatenate(labelled))  # the union, sorted
    if classes.shape[0] < 2:
        found = f"only one class: {classes[0].item()!r}" if classes.size else "no rows"
        raise ValueError(
            "SoftmaxClassifier needs samples of at least 2 classes in the data, but the "
            f"shards of all ranks together contain {found}"
        )
    rows_per_class = np.zeros(classes.shape[0])  # (C,) rows per class over all ranks
    for shard in shards:
        rows_per_class[np.searchsorted(classes, shard.labels)] += shard.counts
    y_index = np.searchsorted(classes, y)
    weights = estimator._sample_weights(X, y, classes, sample_weight, class_counts=rows_per_class)
    n_classes = classes.shape[0]
    class_totals = allreduce(
        np.bincount(y_index, weights=weights, minlength=n_classes), "sum", group
    )  # (C,) weighted counts over all ranks, their sum the weight total S
    total = float(class_totals.sum())
    if not total > 0:
        raise ValueError("the sample weights of all ranks sum to zero: there is nothing to fit")
    estimator.classes_ = classes
    estimator._forget_state()

    def reduce(values: np.ndarray, op: str) -> np.ndarray:
        return allreduce(values, op, group)

    precond = Preconditioner.from_data(
        X,
        weights,
        center=estimator.fit_intercept,
        l2=float(estimator.l2),
        penalty_weight=penalty_weight(estimator.solver, n_classes),
        allreduce=reduce,
    )
    objective = DistributedObjective(
        X,
        y_index,
        n_classes,
        l2=float(estimator.l2),
        sample_weight=weights,
        fit_intercept=estimator.fit_intercept,
        n_threads=estimator.n_jobs,
        x_max_abs=largest_local,
        group=group,
    )
    problem = Problem(objective, precond, total)
    x0 = estimator._start(precond, y_index, weights, class_totals=class_totals)
    result = estimator._run_solver(problem, precond, x0)
    coef, intercept = precond.to_model(result.x, n_classes)
    check_same_model(coef, intercept, group)
    estimator.allreduce_seconds_ = objective.allreduce_seconds
    estimator._adopt((coef, intercept), result)
    return estimator
