"""Distributed fitting (crossent.distributed) on 2 and 3 gloo ranks, against one process.

Each multi-rank test spawns its ranks with ``torch.multiprocessing.spawn`` around a
``FileStore`` in ``tmp_path``, one thread each, and is bounded by a timeout: a hung rank
fails the test (its processes are killed), it does not hang the run. The reference is the
single-process fit on all rows, and ``L_total`` is recomputed here by a plain float64
formula (SciPy's logsumexp), independent of crossent.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
import warnings
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
import scipy.special
import torch.multiprocessing as mp

from crossent import SoftmaxClassifier
from crossent._stats import feature_scales
from crossent.objective import LinearSoftmaxObjective

TIMEOUT_S = 120  # per spawned job, start-up included (importing torch on a busy machine)
N_CLASSES = 4


# ------------------------------------------------------------------ the spawned ranks
def _entry(rank: int, world_size: int, folder: str, target, args) -> None:
    """One rank: join the gloo group through the FileStore, run ``target``, save its result."""
    import torch.distributed as dist

    dist.init_process_group(
        "gloo",
        store=dist.FileStore(os.path.join(folder, "store"), world_size),
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=60),
    )
    try:
        result = target(rank, world_size, *args)
    finally:
        dist.destroy_process_group()
    Path(folder, f"rank{rank}.pkl").write_bytes(pickle.dumps(result))


def _spawn(tmp_path: Path, world_size: int, target, *args) -> list:
    """``[target(rank, world_size, *args) for each rank]``, run on ``world_size`` processes."""
    context = mp.spawn(
        _entry, args=(world_size, str(tmp_path), target, args), nprocs=world_size, join=False
    )
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not context.join(timeout=1.0):
            if time.monotonic() > deadline:
                pytest.fail(f"{world_size} ranks did not finish within {TIMEOUT_S} s (hung)")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    return [pickle.loads(Path(tmp_path, f"rank{r}.pkl").read_bytes()) for r in range(world_size)]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # inherited by the spawned ranks


# ------------------------------------------------------------------ data
def _data():
    """Well-conditioned float64 data: 4 Gaussian classes, 7 independent features."""
    rng = np.random.default_rng(10)
    n, d = 900, 7
    y = rng.integers(0, N_CLASSES, n)
    means = rng.standard_normal((N_CLASSES, d))  # (C, d)
    X = means[y] + rng.standard_normal((n, d))  # (n, d)
    weights = rng.uniform(0.2, 3.0, n)
    return X, y, weights


def _shard_rows(y: np.ndarray, world_size: int) -> list[np.ndarray]:
    """Uneven shards (sizes 1 : 5 : 3 ...); rank 0 holds no sample of the last class."""
    lacking = np.flatnonzero(y != N_CLASSES - 1)
    first = lacking[: len(y) // (3 * world_size)]
    rest = np.setdiff1d(np.arange(len(y)), first)
    cuts = np.cumsum([5, 3, 4][: world_size - 1])
    cuts = (cuts / cuts[-1] * len(rest)).astype(int)[:-1]
    return [first, *np.split(rest, cuts)]


# name -> (estimator parameters, with sample weights, X's dtype, coef rtol, L_total rtol),
# against the single-process float64 fit at tol 1e-10. Gradient descent stops when a step
# lowers F by less than rounding, about 1e-5 (relative) from the optimum in W here: a mere
# permutation of the rows moves its single-process fit by 1e-5 too. Likewise float32 fits
# stop by rounding, 1.8e-4 from the float64 optimum on one process (4e-5 on permuted rows).
# L-BFGS at tol 1e-10 also stops by rounding (SciPy's ftol), up to 1.8e-6 (max |W| is 1.8)
# from Newton-CG's tol-1e-12 optimum on one process: 5e-6 between two fits. Both take the
# same first step on kept scores; measured between them: 6e-15 with weights (43 iterations
# each), 8.8e-7 balanced (the stop one iteration apart: 37 and 38).
CASES = {
    "lbfgs-weights": ({"solver": "lbfgs"}, True, np.float64, 5e-6, 1e-10),
    "gd": ({"solver": "gd"}, False, np.float64, 1e-4, 1e-10),
    "lbfgs-balanced": ({"class_weight": "balanced"}, False, np.float64, 5e-6, 1e-10),
    "lbfgs-float32": ({"solver": "lbfgs"}, True, np.float32, 1e-3, 1e-7),
}


def _estimator(params: dict, distributed: bool) -> SoftmaxClassifier:
    params = {"l2": 1.0, "tol": 1e-10, "n_jobs": 1, "distributed": distributed, **params}
    return SoftmaxClassifier(**params)


def _offset(X: np.ndarray) -> np.ndarray:
    """X with a feature of mean 1e9 and spread 1: one-pass moments would lose all digits."""
    shifted = X.copy()
    shifted[:, 0] += 1e9
    return shifted


def _fit_worker(rank: int, world_size: int) -> dict:
    from crossent._stats import feature_scales
    from crossent.distributed import DistributedObjective, allreduce

    X, y, weights = _data()
    rows = _shard_rows(y, world_size)[rank]
    results = {}
    for name, (params, weighted, dtype, _, _) in CASES.items():
        clf = _estimator(params, True)
        clf.fit(X[rows].astype(dtype), y[rows], sample_weight=weights[rows] if weighted else None)
        results[name] = (clf.coef_, clf.intercept_, clf.n_iter_, clf.classes_)
    # warm start (what a resumed run does): from the λ = 2 model to the λ = 1 optimum
    clf = _estimator({"l2": 2.0}, True).fit(X[rows], y[rows], sample_weight=weights[rows])
    clf.set_params(l2=1.0, warm_start=True).fit(X[rows], y[rows], sample_weight=weights[rows])
    results["warm start"] = (clf.coef_, clf.intercept_, clf.n_iter_)
    # L-BFGS's first iteration: its step from W = 0 on kept scores, the line all-reduced
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not converged after one iteration
        clf = _estimator({"solver": "lbfgs", "max_iter": 1}, True)
        clf.fit(X[rows], y[rows], sample_weight=weights[rows])
    results["first step"] = (clf.coef_, clf.intercept_)
    point = np.random.default_rng(1).standard_normal((N_CLASSES, X.shape[1] + 1))
    objective = DistributedObjective(
        X[rows], y[rows], N_CLASSES, l2=1.5, sample_weight=weights[rows], n_threads=1
    )
    results["objective"] = objective.loss_gradient(point[:, :-1], point[:, -1])
    results["scales"] = feature_scales(
        _offset(X)[rows], weights[rows], ridge=0.01, allreduce=lambda v, op: allreduce(v, op)
    )
    # sparse shards (CSR): the same model and statistics as dense ones
    sparse = scipy.sparse.csr_matrix(X[rows])
    clf = _estimator({}, True).fit(sparse, y[rows], sample_weight=weights[rows])
    results["sparse"] = (clf.coef_, clf.intercept_)
    results["sparse scales"] = feature_scales(
        sparse, weights[rows], ridge=0.01, allreduce=lambda v, op: allreduce(v, op)
    )
    return results


def _l_total(coef, intercept, X, y, weights, l2=1.0) -> float:
    """``Σ s_i (logsumexp(f_i) − f_{i,y_i}) + (λ/2)‖W‖²`` in float64, written here."""
    scores = X @ coef.T + intercept  # (n, C)
    per_row = scipy.special.logsumexp(scores, axis=1) - scores[np.arange(len(y)), y]
    return float(weights @ per_row) + 0.5 * l2 * float(np.sum(coef * coef))


@pytest.mark.parametrize("world_size", [2, 3])
def test_fit_equals_single_process(tmp_path, world_size):
    ranks = _spawn(tmp_path, world_size, _fit_worker)
    X, y, weights = _data()
    for name, (params, weighted, _, rtol, loss_rtol) in CASES.items():
        coef, intercept, n_iter, classes = ranks[0][name]
        for r, other in enumerate(ranks[1:], start=1):  # bitwise equal on every rank
            assert other[name][0].tobytes() == coef.tobytes(), f"{name}: rank {r} coef_ differs"
            assert other[name][1].tobytes() == intercept.tobytes(), f"{name}: rank {r} b differs"
            assert other[name][2] == n_iter
        np.testing.assert_array_equal(classes, np.arange(N_CLASSES))
        sample_weight = weights if weighted else None
        ref = _estimator(params, False).fit(X, y, sample_weight=sample_weight)
        scale = np.max(np.abs(ref.coef_))
        assert np.max(np.abs(coef - ref.coef_)) <= rtol * scale, name
        assert np.max(np.abs(intercept - ref.intercept_)) <= rtol * scale, name
        s = weights if weighted else np.ones(len(y))
        if params.get("class_weight") == "balanced":  # sklearn's formula on all rows
            counts = np.bincount(y)
            s = (len(y) / (N_CLASSES * counts))[y]
        total, ref_total = _l_total(coef, intercept, X, y, s), _l_total(*_model(ref), X, y, s)
        assert abs(total - ref_total) <= loss_rtol * abs(ref_total), (name, total, ref_total)
    # the first step: the one a single process takes, up to the order of the sums
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = _estimator({"solver": "lbfgs", "max_iter": 1}, False)
        first.fit(X, y, sample_weight=weights)
    for rank in ranks:
        coef, intercept = rank["first step"]
        scale = np.max(np.abs(first.coef_))
        assert np.max(np.abs(coef - first.coef_)) <= 1e-10 * scale
        assert np.max(np.abs(intercept - first.intercept_)) <= 1e-10 * scale
    coef, intercept, n_iter = ranks[0]["warm start"]
    assert all(r["warm start"][0].tobytes() == coef.tobytes() for r in ranks)
    ref = _estimator({}, False).fit(X, y, sample_weight=weights)
    assert np.max(np.abs(coef - ref.coef_)) <= 1e-6 * np.max(np.abs(ref.coef_))
    assert 0 < n_iter < ref.n_iter_, (n_iter, ref.n_iter_)
    # the objective of the shards is the objective of all rows, the penalty counted once
    point = np.random.default_rng(1).standard_normal((N_CLASSES, X.shape[1] + 1))
    full = LinearSoftmaxObjective(X, y, N_CLASSES, l2=1.5, sample_weight=weights, n_threads=1)
    expected = full.loss_gradient(point[:, :-1], point[:, -1])
    for r, rank in enumerate(ranks):
        loss, grad_coef, grad_intercept = rank["objective"]
        np.testing.assert_allclose(loss, expected[0], rtol=1e-12, err_msg=f"rank {r}")
        np.testing.assert_allclose(grad_coef, expected[1], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(grad_intercept, expected[2], rtol=1e-10, atol=1e-12)
        assert grad_coef.tobytes() == ranks[0]["objective"][1].tobytes()
    # sparse shards give the dense fit and the statistics of all rows
    for r, rank in enumerate(ranks):
        assert np.max(np.abs(rank["sparse"][0] - ref.coef_)) <= 1e-6 * np.max(np.abs(ref.coef_))
        assert rank["sparse"][0].tobytes() == ranks[0]["sparse"][0].tobytes(), f"rank {r}"
        dense_scales = feature_scales(X, weights, ridge=0.01)
        for got, want in zip(rank["sparse scales"], dense_scales, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=f"rank {r}")
    # the preconditioner's statistics of the shards are those of all rows
    mean, scale, total = feature_scales(_offset(X), weights, ridge=0.01)
    for r, rank in enumerate(ranks):
        np.testing.assert_allclose(rank["scales"][0], mean, rtol=1e-14, err_msg=f"rank {r}")
        np.testing.assert_allclose(rank["scales"][1], scale, rtol=1e-10, err_msg=f"rank {r}")
        np.testing.assert_allclose(rank["scales"][2], total, rtol=1e-14)


def _model(clf):
    return clf.coef_, clf.intercept_


# ------------------------------------------------------------------ faults
def _fault_worker(rank: int, world_size: int) -> dict:
    """Each case breaks one rank's shard (or the lockstep); every rank records what it got."""
    from crossent.distributed import DistributedObjective, check_same_model

    X, y, _ = _data()
    rows = _shard_rows(y, world_size)[rank]
    X, y = X[rows], y[rows]
    on_rank1 = rank == 1
    cases = {
        "columns": lambda: _fit(X[:, :5] if on_rank1 else X, y),
        "dtype": lambda: _fit(X.astype(np.float32) if on_rank1 else X, y),
        "label type": lambda: _fit(X, y.astype(str) if on_rank1 else y),
        "nan": lambda: _fit(
            np.where(np.arange(len(X))[:, None] == 3, np.nan, X) if on_rank1 else X, y
        ),
        "parameters": lambda: _fit(X, y, l2=2.0 if on_rank1 else 1.0),
        "one class": lambda: _fit(X, np.zeros_like(y)),
        "lockstep": lambda: DistributedObjective(X, y, N_CLASSES, l2=1.0).loss_gradient(
            np.full((N_CLASSES, X.shape[1]), float(rank)), np.zeros(N_CLASSES)
        ),
        "final check": lambda: check_same_model(np.full((2, 2), float(rank)), np.zeros(2)),
        "minibatch": lambda: _fit(X, y, solver="adam"),
        "no rows": lambda: _fit(X[:0] if on_rank1 else X, y[:0] if on_rank1 else y),
        "no rows anywhere": lambda: _fit(X[:0], y[:0]),
        # 1.4e304 · 16 · rows: within float64 on each rank (<= 750 rows), beyond on all 900
        "feature scale": lambda: _fit(X / np.max(np.abs(X)) * 1.4e304, y),
    }
    got = {}
    for name, case in cases.items():
        try:
            got[name] = ("ok", case())
        except Exception as exc:
            got[name] = (type(exc).__name__, str(exc))
    return got


def _fit(X, y, **params):
    clf = SoftmaxClassifier(**{"n_jobs": 1, "distributed": True, "tol": 1e-10, **params})
    clf.fit(X, y)
    return clf.coef_, clf.intercept_


FAULTS = {  # case -> (exception type, words the message must hold)
    "columns": ("ShardError", ["number of features", "7 on rank(s) 0", "5 on rank(s) 1"]),
    "dtype": ("ShardError", ["dtype", "float32 on rank(s) 1"]),
    "label type": ("ShardError", ["type of the labels", "strings on rank(s) 1"]),
    "nan": ("ShardError", ["rank 1 of 2 refused its shard", "NaN"]),
    "parameters": ("ShardError", ["parameters", "l2=2.0"]),
    "one class": ("ValueError", ["at least 2 classes", "all ranks"]),
    "lockstep": ("RuntimeError", ["lockstep", "rank(s) 0", "rank(s) 1"]),
    "final check": ("RuntimeError", ["different coefficients"]),
    "minibatch": ("ValueError", ["full-batch solver", "'adam'"]),
    "no rows anywhere": ("ValueError", ["at least 2 classes", "no rows"]),
    "feature scale": ("ValueError", ["feature scale is too large", "over all ranks", "900"]),
}


def test_faults_give_one_clear_error_on_every_rank(tmp_path):
    ranks = _spawn(tmp_path, 2, _fault_worker)
    for name, (kind, words) in FAULTS.items():
        errors = [rank[name] for rank in ranks]
        assert errors[0] is not None, f"{name}: no error on rank 0"
        assert errors[0] == errors[1], f"{name}: the ranks report differently: {errors}"
        assert errors[0][0] == kind, (name, errors[0])
        for word in words:
            assert word in errors[0][1], (name, word, errors[0][1])
    # a rank without rows takes part, adding nothing: the model of rank 0's rows
    X, y, _ = _data()
    rows = _shard_rows(y, 2)[0]
    ref = SoftmaxClassifier(n_jobs=1, tol=1e-10).fit(X[rows], y[rows])
    for r, rank in enumerate(ranks):
        status, (coef, intercept) = rank["no rows"]
        assert status == "ok", (r, rank["no rows"])
        assert coef.tobytes() == ranks[0]["no rows"][1][0].tobytes()
        scale = np.max(np.abs(ref.coef_))
        assert np.max(np.abs(coef - ref.coef_)) <= 1e-6 * scale
        assert np.max(np.abs(intercept - ref.intercept_)) <= 1e-6 * scale


# ------------------------------------------------------------------ one process
def test_distributed_needs_a_process_group_and_a_full_batch_solver():
    X, y, _ = _data()
    with pytest.raises(RuntimeError, match=r"initialised torch\.distributed process group"):
        SoftmaxClassifier(distributed=True).fit(X, y)
    with pytest.raises(ValueError, match=r"full-batch solver.*'sgd'"):
        SoftmaxClassifier(distributed=True, solver="sgd").fit(X, y)
    with pytest.raises(ValueError, match="partial_fit is not distributed"):
        SoftmaxClassifier(distributed=True).partial_fit(X, y, classes=np.arange(N_CLASSES))
    with pytest.raises(ValueError, match="distributed"):
        SoftmaxClassifier(distributed="yes").fit(X, y)


def test_import_crossent_does_not_import_torch():
    code = (
        "import sys, crossent, crossent.distributed; crossent.SoftmaxClassifier; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=os.environ.copy())
