"""Sparse features: crossent and scikit-learn's LogisticRegression on a 20-newsgroups-shaped CSR.

The data are synthetic TF-IDF shaped like 20 newsgroups (11314 × 130107, density 0.1 %,
20 classes, Zipf column frequencies, rows L2-normalised; fixed seed, no download). Same
objective (C = 1/λ, λ = 1), same tolerance (1e-4), one process. Printed and saved to
benchmarks/results/bench_sparse.json:

- fit time and iterations of each, and the final L_total of each model by one float64
  formula written here (target: crossent ≤ 1/4 of scikit-learn's time, at an L_total no
  higher);
- the peak memory each fit adds, by tracemalloc in a second fit (target: ≤ 1/2);
- one loss + gradient evaluation of crossent against the two sparse products it cannot
  avoid, ``X Wᵀ`` and ``(Xᵀ G)ᵀ`` by SciPy at the same shapes and dtype (target: ≤ 1.3×),
  with one thread and with ``--n-jobs``;
- the solvers and the preconditioner, from the classifier's start: L-BFGS with the implicit
  centring ``b = b' − Wμ`` against scale only (``μ = 0``), neither of which touches X, with
  the scales' ridge ``4λ/S`` and with the classifier's ``C²/(C − 1) · λ/S``; and Newton-CG
  (``solver="auto"`` picks it here), with its passes over X (two per gradient, one per
  softmax not taken over from the evaluation at the same point, two per Hessian-vector
  product).

    python benchmarks/bench_sparse.py [--quick] [--n-jobs K] [--float32]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.linear_model._linear_loss import LinearModelLoss

import crossent
from _timing import timings
from bench_fit import Counter, l_total
from crossent import SoftmaxClassifier
from crossent._threads import resolve_n_threads, single_threaded_blas
from crossent.hessian import Curvature
from crossent.objective import LinearSoftmaxObjective
from crossent.solvers import Preconditioner, Problem, _problem, penalty_weight
from crossent.solvers._lbfgs import lbfgs
from crossent.solvers._newton import newton_cg

L2 = 1.0
TOL = 1e-4
RESULTS = Path(__file__).parent / "results" / "bench_sparse.json"


def tfidf_like(n, d, n_classes, tokens, seed=0, dtype=np.float64):
    """Synthetic TF-IDF ``(n, d)`` CSR and labels: Zipf(1.1) word frequencies, 30 % of each
    document's tokens drawn from its class's own shuffled vocabulary, counts × idf, rows
    L2-normalised. ``tokens`` per document (Poisson) sets the density."""
    rng = np.random.default_rng(seed)
    zipf = 1.0 / np.arange(1, d + 1) ** 1.1
    y = rng.integers(0, n_classes, n)
    rows = np.repeat(np.arange(n), np.maximum(1, rng.poisson(tokens, n)))  # (tokens,)
    cols = rng.choice(d, size=rows.size, p=zipf / zipf.sum())
    own = rng.random(rows.size) < 0.3
    vocabularies = np.stack([rng.permutation(d) for _ in range(n_classes)])  # (C, d)
    cols[own] = vocabularies[y[rows[own]], cols[own]]
    X = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, d))  # term counts
    X.sum_duplicates()
    df = np.bincount(X.indices, minlength=d)
    X.data *= (np.log((1 + n) / (1 + df)) + 1)[X.indices]
    row_of = np.repeat(np.arange(n), np.diff(X.indptr))  # (nnz,)
    X.data /= np.sqrt(np.bincount(row_of, weights=X.data**2, minlength=n))[row_of]
    return X.astype(dtype), y


def fit_timed(model, counter_owner, X, y):
    with Counter(*counter_owner) as counter, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        model.fit(X, y)
        return time.perf_counter() - start, counter.calls


def fit_peak_bytes(model, X, y):
    """Peak bytes allocated during a fit (tracemalloc: NumPy and SciPy buffers included)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X, y)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak - base


def pass_vs_products(X, y, n_classes, n_jobs):
    """Fastest of 15 interleaved timings of one loss+gradient evaluation and of its two
    sparse products (interleaved, so that load from other processes hits both alike): by
    SciPy on the CSR as given, and on a CSC copy made beforehand (the layout crossent reads
    its chunks in once the weights outgrow the cache)."""
    rng = np.random.default_rng(1)
    # (C, d) laid out as the solvers hand it over for sparse X (Preconditioner order "F")
    coef = np.asfortranarray(rng.standard_normal((n_classes, X.shape[1])) * 0.01)
    intercept = np.zeros(n_classes)
    objective = LinearSoftmaxObjective(X, y, n_classes, l2=L2, n_threads=n_jobs)
    weights = coef.astype(X.dtype)
    grad_rows = rng.standard_normal((X.shape[0], n_classes)).astype(X.dtype)  # (n, C)
    by_columns = X.tocsc()
    products, csc_products, one_pass = np.inf, np.inf, np.inf
    with single_threaded_blas():
        for _ in range(15):
            products = min(products, *timings(lambda: (X @ weights.T, (X.T @ grad_rows).T), 1))
            csc_products = min(
                csc_products,
                *timings(lambda: (by_columns @ weights.T, (by_columns.T @ grad_rows).T), 1),
            )
            one_pass = min(one_pass, *timings(lambda: objective.loss_gradient(coef, intercept), 1))
    return {
        "products_s": products,
        "csc_products_s": csc_products,
        "loss_grad_s": one_pass,
        "ratio": one_pass / products,
        "ratio_csc": one_pass / csc_products,
    }


class SoftmaxPasses:
    """Counts the passes ``X Wᵀ`` that Newton-CG's curvature makes (none where the softmax
    of the evaluation at the same point is reused)."""

    def __enter__(self):
        self.passes, original = 0, _problem.softmax_curvature

        def counted(*args, **kwargs):
            curvature = original(*args, **kwargs)
            self.passes += curvature.n_products
            return curvature

        _problem.softmax_curvature = counted
        self.original = original
        return self

    def __exit__(self, *exc):
        _problem.softmax_curvature = self.original


def preconditioner_runs(X, y, n_classes, n_jobs):
    """Full-batch solvers from the classifier's start: L-BFGS with implicit centring, scale
    only, the ridge of the scales weighed by 4, by ``C²/(C − 1)`` and by the classifier's
    ``4 C²/(C − 1)`` (``Preconditioner.from_data(penalty_weight=...)``), and Newton-CG with
    the last two."""
    runs = {}
    objective = LinearSoftmaxObjective(X, y, n_classes, l2=L2, n_threads=n_jobs)
    counts = np.bincount(y, minlength=n_classes)
    intercept = np.log(counts / counts.sum())
    c_classes = n_classes**2 / (n_classes - 1)
    variants = (  # (label, solver, centring, penalty_weight): the classifier's is the last
        ("implicit_centring", lbfgs, True, 1.0),
        ("scale_only", lbfgs, False, 1.0),
        ("implicit_centring_c4", lbfgs, True, 4.0),
        ("implicit_centring_cC", lbfgs, True, c_classes),
        ("newton_cg_cC", newton_cg, True, c_classes),
        ("implicit_centring_4cC", lbfgs, True, penalty_weight("auto", n_classes)),
        ("newton_cg_4cC", newton_cg, True, penalty_weight("auto", n_classes)),
    )
    for label, solver, center, weight in variants:
        precond = Preconditioner.from_data(X, None, center=center, l2=L2, penalty_weight=weight)
        problem = Problem(objective, precond, float(X.shape[0]))
        x0 = precond.from_model(np.zeros((n_classes, X.shape[1])), intercept - intercept.mean())
        objective.n_evals = 0
        start = time.perf_counter()
        with (
            single_threaded_blas(),
            Counter(Curvature, "product") as hvps,
            SoftmaxPasses() as softmax_passes,
        ):
            result = solver(problem, x0, max_iter=10_000, tol=TOL)
        seconds = time.perf_counter() - start
        coef, b = precond.to_model(result.x, n_classes)
        runs[label] = {
            "seconds": seconds,
            "n_iter": result.n_iter,
            "n_evals": objective.n_evals,
            "n_hessian_products": hvps.calls,
            "passes_over_X": 2 * objective.n_evals + softmax_passes.passes + 2 * hvps.calls,
            "L_total": l_total(coef, b, X, y),
        }
        print(f"preconditioner {label:18s} " + json.dumps(runs[label]), flush=True)
    return runs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2000 × 20000, to iterate")
    parser.add_argument("--n-jobs", type=int, default=-1, help="crossent's n_jobs (default -1)")
    parser.add_argument("--float32", action="store_true", help="float32 X for both")
    args = parser.parse_args()
    shape = (2000, 20000) if args.quick else (11314, 130107)
    dtype = np.float32 if args.float32 else np.float64
    X, y = tfidf_like(*shape, n_classes=20, tokens=190 * shape[1] / 130107, dtype=dtype)
    density = X.nnz / (shape[0] * shape[1])
    print(
        f"data {shape[0]} × {shape[1]}, {X.nnz} non-zeros (density {density:.4%}), {dtype.__name__}"
    )
    classes, y_index = np.unique(y, return_inverse=True)
    n_classes = len(classes)
    n_jobs = resolve_n_threads(args.n_jobs)
    row = {"shape": list(shape), "nnz": int(X.nnz), "n_classes": n_classes}
    models = {
        "sklearn": (
            lambda: LogisticRegression(C=1.0 / L2, tol=TOL, max_iter=10_000),
            (LinearModelLoss, "loss_gradient"),
        ),
        "crossent": (
            lambda: SoftmaxClassifier(l2=L2, tol=TOL, max_iter=10_000, n_jobs=args.n_jobs),
            (LinearSoftmaxObjective, "loss_gradient"),
        ),
    }
    for label, (make, owner) in models.items():
        model = make()
        seconds, evals = fit_timed(model, owner, X, y)
        row[label] = {
            "seconds": seconds,
            "n_iter": int(np.max(model.n_iter_)),
            "n_evals": evals,
            "L_total": l_total(model.coef_, model.intercept_, X, y_index),
            "peak_added_MiB": fit_peak_bytes(make(), X, y) / 2**20,
        }
        print(f"{label:8s} " + json.dumps(row[label]), flush=True)
    ours, theirs = row["crossent"], row["sklearn"]
    row["time_ratio"] = ours["seconds"] / theirs["seconds"]
    row["memory_ratio"] = ours["peak_added_MiB"] / theirs["peak_added_MiB"]
    row["L_total_rel_diff"] = (ours["L_total"] - theirs["L_total"]) / theirs["L_total"]
    row["pass_1_thread"] = pass_vs_products(X, y_index, n_classes, 1)
    row[f"pass_{n_jobs}_threads"] = pass_vs_products(X, y_index, n_classes, n_jobs)
    row["preconditioner"] = preconditioner_runs(X, y_index, n_classes, args.n_jobs)

    targets = {
        "fit time ≤ 1/4 of sklearn at an L_total no higher": row["time_ratio"] <= 0.25
        and row["L_total_rel_diff"] <= 0.0,
        "extra peak memory ≤ 1/2 of sklearn": row["memory_ratio"] <= 0.5,
        "one evaluation ≤ 1.3× its two sparse products (1 thread)": row["pass_1_thread"]["ratio"]
        <= 1.3,
    }
    print()
    print(f"{'':10s} {'seconds':>8s} {'iter':>5s} {'evals':>5s} {'L_total':>14s} {'peak MiB':>9s}")
    for label in ("sklearn", "crossent"):
        r = row[label]
        print(
            f"{label:10s} {r['seconds']:8.2f} {r['n_iter']:5d} {r['n_evals']:5d} "
            f"{r['L_total']:14.6f} {r['peak_added_MiB']:9.1f}"
        )
    print(
        f"time ratio {row['time_ratio']:.3f}   memory ratio {row['memory_ratio']:.3f}   "
        f"L_total rel diff {row['L_total_rel_diff']:.2e}"
    )
    for key in ("pass_1_thread", f"pass_{n_jobs}_threads"):
        p = row[key]
        print(
            f"{key:16s} evaluation {p['loss_grad_s'] * 1e3:7.1f} ms   products "
            f"{p['products_s'] * 1e3:7.1f} ms   ratio {p['ratio']:.2f}   on CSC "
            f"{p['csc_products_s'] * 1e3:7.1f} ms   ratio {p['ratio_csc']:.2f}"
        )
    for label, r in row["preconditioner"].items():
        print(
            f"preconditioner {label:20s} {r['n_iter']:4d} iterations {r['passes_over_X']:4d} "
            f"passes  L_total {r['L_total']:.6f}"
        )
    for target, met in targets.items():
        print(f"{'MET   ' if met else 'MISSED'} {target}")
    row["targets"] = targets
    row["meta"] = {
        "crossent": crossent.__version__,
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cores": resolve_n_threads(-1),
        "n_jobs": args.n_jobs,
        "quick": args.quick,
        "dtype": np.dtype(dtype).name,
        "l2": L2,
        "tol": TOL,
    }
    if not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(row, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
