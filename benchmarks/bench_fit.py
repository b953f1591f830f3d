"""Fit crossent's SoftmaxClassifier and scikit-learn's LogisticRegression on the same data.

Same objective (C = 1/λ, λ = 1), same tolerance (1e-4), one run, one process. For each data
set it prints and saves (benchmarks/results/bench_fit.json): wall time, iterations, loss +
gradient evaluations, the final L_total of each model by one float64 formula written here
(independent of both libraries), the peak memory added during the fit, test accuracy, and
the ratios. For the large sets it also times one loss+gradient evaluation of crossent beside
the two matrix products it cannot avoid (X Wᵀ and Gᵀ X at the same shapes and dtype).

    python benchmarks/bench_fit.py [--only NAME ...] [--n-jobs K]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.special
import sklearn
from sklearn.datasets import load_digits, make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.linear_model._linear_loss import LinearModelLoss

import crossent
from _timing import timings
from crossent import SoftmaxClassifier
from crossent.objective import LinearSoftmaxObjective

L2 = 1.0
TOL = 1e-4
RESULTS = Path(__file__).parent / "results" / "bench_fit.json"


def mnist_shape() -> tuple[np.ndarray, np.ndarray]:
    """A synthetic problem of MNIST's shape: 60000 × 784 float32, 10 classes, fixed seed."""
    X, y = make_classification(
        n_samples=60000,
        n_features=784,
        n_informative=200,
        n_redundant=100,
        n_classes=10,
        n_clusters_per_class=1,
        random_state=0,
    )
    return X.astype(np.float32), y


def datasets():
    X, y = load_digits(return_X_y=True)
    yield "digits", X / 16.0, y
    yield "mnist-shape", *mnist_shape()
    rng = np.random.default_rng(0)
    means = rng.standard_normal((1000, 256)) * 0.5
    scales = np.geomspace(0.1, 10, 256)
    y = rng.integers(0, 1000, 50000)
    X = ((means[y] + rng.standard_normal((50000, 256))) * scales).astype(np.float32)
    yield "probe-1000", X, y


def l_total(coef, intercept, X, y_index):
    """L_total = Σ_i (logsumexp(f_i) − f_{i,k_i}) + (λ/2)‖W‖², in float64, chunked
    (dense or sparse ``X``)."""
    coef = np.asarray(coef, np.float64)
    total = 0.0
    for start in range(0, X.shape[0], 4096):
        block = X[start : start + 4096].astype(np.float64, copy=False)  # dense or CSR
        scores = block @ coef.T + intercept  # (rows, C)
        rows = np.arange(scores.shape[0])
        total += float(
            np.sum(
                scipy.special.logsumexp(scores, axis=1)
                - scores[rows, y_index[start : start + 4096]]
            )
        )
    return total + 0.5 * L2 * float(np.sum(coef * coef))


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    return 0


class Counter:
    """Counts calls of a method while installed."""

    def __init__(self, owner, name):
        self.owner, self.name, self.calls = owner, name, 0
        self.original = getattr(owner, name)

    def __enter__(self):
        original = self.original

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        setattr(self.owner, self.name, counted)
        return self

    def __exit__(self, *exc):
        setattr(self.owner, self.name, self.original)


def fit_one(model, counter_owner, X, y):
    """Fit, returning (seconds, evaluations, peak bytes added)."""
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak RSS mark
        f.write("5")
    base = _status("VmRSS")
    with Counter(*counter_owner) as counter, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        model.fit(X, y)
        seconds = time.perf_counter() - start
    return seconds, counter.calls, _status("VmHWM") - base


def best_time(fn, repeat=5):
    return min(timings(fn, repeat))


def pass_vs_floor(X, y, n_classes, n_jobs):
    """Time one loss+gradient evaluation and the two matrix products it needs."""
    rng = np.random.default_rng(1)
    coef = rng.standard_normal((n_classes, X.shape[1])) * 0.01
    intercept = np.zeros(n_classes)
    objective = LinearSoftmaxObjective(
        X, y, n_classes, l2=L2, n_threads=crossent._threads.resolve_n_threads(n_jobs)
    )
    weights = coef.astype(X.dtype)
    grad_rows = np.empty((X.shape[0], n_classes), dtype=X.dtype)  # (n, C)
    floor = best_time(lambda: (X @ weights.T, grad_rows.T @ X))
    one_pass = best_time(lambda: objective.loss_gradient(coef, intercept))
    return {"products_s": floor, "loss_grad_s": one_pass, "ratio": one_pass / floor}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="data set names to run")
    parser.add_argument("--n-jobs", type=int, default=-1, help="crossent's n_jobs (default -1)")
    args = parser.parse_args()
    rows = []
    for name, X, y in datasets():
        if args.only and name not in args.only:
            continue
        n_train = int(0.8 * X.shape[0])
        X_train, X_test, y_train, y_test = X[:n_train], X[n_train:], y[:n_train], y[n_train:]
        classes, y_index = np.unique(y_train, return_inverse=True)
        ours = SoftmaxClassifier(l2=L2, tol=TOL, max_iter=10000, n_jobs=args.n_jobs)
        theirs = LogisticRegression(C=1.0 / L2, tol=TOL, max_iter=10000)
        row = {"dataset": name, "shape": list(X_train.shape), "n_classes": len(classes)}
        for label, model, owner in (
            ("sklearn", theirs, (LinearModelLoss, "loss_gradient")),
            ("crossent", ours, (LinearSoftmaxObjective, "loss_gradient")),
        ):
            seconds, evals, peak = fit_one(model, owner, X_train, y_train)
            row[label] = {
                "seconds": seconds,
                "n_iter": int(np.max(model.n_iter_)),
                "n_evals": evals,
                "L_total": l_total(model.coef_, model.intercept_, X_train, y_index),
                "peak_added_MiB": peak / 2**20,
                "test_accuracy": float(model.score(X_test, y_test)),
            }
            print(f"{name:12s} {label:8s} " + json.dumps(row[label]), flush=True)
        ours_r, theirs_r = row["crossent"], row["sklearn"]
        row["time_ratio"] = ours_r["seconds"] / theirs_r["seconds"]
        row["memory_ratio"] = ours_r["peak_added_MiB"] / max(theirs_r["peak_added_MiB"], 1e-9)
        row["L_total_rel_diff"] = (ours_r["L_total"] - theirs_r["L_total"]) / theirs_r["L_total"]
        if name != "digits":
            row["pass"] = pass_vs_floor(X_train, y_index, len(classes), args.n_jobs)
        rows.append(row)

    print()
    header = (
        f"{'dataset':12s} {'sk s':>8s} {'ce s':>8s} {'time':>6s} {'sk it':>6s} {'ce it':>6s} "
        f"{'sk ev':>6s} {'ce ev':>6s} {'ΔL_total rel':>13s} {'sk MiB':>8s} {'ce MiB':>8s} "
        f"{'mem':>6s} {'sk acc':>7s} {'ce acc':>7s} {'pass/floor':>10s}"
    )
    print(header)
    for r in rows:
        sk, ce = r["sklearn"], r["crossent"]
        floor = f"{r['pass']['ratio']:.2f}" if "pass" in r else "-"
        print(
            f"{r['dataset']:12s} {sk['seconds']:8.2f} {ce['seconds']:8.2f} {r['time_ratio']:6.3f} "
            f"{sk['n_iter']:6d} {ce['n_iter']:6d} {sk['n_evals']:6d} {ce['n_evals']:6d} "
            f"{r['L_total_rel_diff']:13.2e} {sk['peak_added_MiB']:8.1f} "
            f"{ce['peak_added_MiB']:8.1f} {r['memory_ratio']:6.3f} "
            f"{sk['test_accuracy']:7.4f} {ce['test_accuracy']:7.4f} {floor:>10s}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "crossent": crossent.__version__,
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "l2": L2,
        "tol": TOL,
        "n_jobs": args.n_jobs,
    }
    RESULTS.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
