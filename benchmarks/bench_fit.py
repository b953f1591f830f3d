"""Fit crossent's SoftmaxClassifier against scikit-learn's LogisticRegression (issue #8).

Same objective on both sides: ``L_total = Σ_i L_i + (λ/2)‖W‖²`` with λ = 1, i.e.
``LogisticRegression(C=1.0, solver="lbfgs")``; both get ``max_iter=10000`` so that their
tolerance, not an iteration cap, ends the fit. Every final ``L_total`` is computed by one
float64 formula written here (:func:`l_total`), independent of both libraries.

For each data set (digits; mnist-shape 60000 × 784 float32, 10 classes; probe-1000
50000 × 256 float32, 1000 classes, features scaled from 0.1 to 10; large-n 300000 × 100
float64, 5 classes; 80 % train / 20 % test) and for a 1-thread and an all-core column
(crossent ``n_jobs=1`` / ``-1``; scikit-learn under ``threadpool_limits(1)`` / unlimited):

- both fits at ``tol=1e-4``: wall time, iterations, loss+gradient evaluations (for crossent
  also its first steps on kept scores, :meth:`crossent.score_line.ScoreLine.move`: their
  two products are an evaluation's), Hessian-vector
  products (calls of ``crossent.hessian.Curvature.product``), final
  ``L_total``, test accuracy; extra peak memory (tracemalloc, NumPy's allocations
  included) in a separate fit of the same kind capped at 30 iterations, so that tracing
  never slows a timed fit;
- the optimum ``L*``: crossent L-BFGS at ``tol=1e-8`` (or until 20 iterations gain less than
  1e-10 relative) on a float64 copy of the data, cached in ``results/optimum_<name>.json``
  under a key of the data's shape, dtype, λ and a fingerprint of its bytes
  (``--recompute-optimum`` recomputes it);
- time to reach scikit-learn's final ``L_total``, and time to come within 1e-4 (relative)
  of ``L*``: for crossent from ``(elapsed, L_total)`` recorded after every iteration by the
  classifier's ``callback`` (crossent's own float64 accumulation; the callback does no pass
  over ``X``); if the default fit stops short, a second fit at ``tol=1e-10`` is recorded
  until it gets there (at most ``--chase-seconds``). For scikit-learn, its tolerance is
  lowered 1e-5, 1e-6, … after 1e-4 until its final ``L_total`` is within 1e-4 of ``L*``:
  that tolerance and its fit time (at most ``--ladder-budget`` seconds of such fits, in the
  all-core column only unless ``--ladder-both``; without them the 1-thread column's crossent
  fit is recorded only as far as scikit-learn's final ``L_total``). When one side never
  gets there, the ratio is bounded by the time it spent trying (``ratio_bounds``);
- the ratios crossent / scikit-learn and the issue's targets, met or missed.

Then one objective evaluation (``LinearSoftmaxObjective.loss_gradient``) beside its two
matrix products ``X Wᵀ`` and ``Gᵀ X`` as single BLAS calls at the data's dtype (1 and 2
threads; BLAS pinned by threadpoolctl), on mnist-shape and probe-1000, and the objective's
thread scaling on mnist-shape. The evaluation is timed as a fit runs it, BLAS held on one
thread around the calls (the classifier holds it for the whole solver run), and as a lone
call with BLAS on as many threads as the products: such a call sets OpenBLAS to one thread
and back, after which OpenBLAS's idle threads spin and take cores from the next call.
Results: a table per data set, a summary, and ``results/bench_fit.json`` (with the machine:
CPU, cores, versions, BLAS, crossent's kernel).

    python benchmarks/bench_fit.py [--only NAME ...] [--quick] [--solver NAME]
        [--threads {1,all,both}] [--recompute-optimum] [--ladder-budget S] [--ladder-both]
        [--chase-seconds S] [--no-pass | --pass-only] [--out PATH] [--label TEXT]

``--quick`` uses smaller data (mnist-shape 12000 rows, probe-1000 5000, large-n 30000) to
check the script end to end in a few minutes. Data sets are run in turn and the JSON is
rewritten after each. On a busy machine scikit-learn's all-core fits can be many times
slower than its 1-thread ones (OpenMP and OpenBLAS threads spin while waiting for cores):
look at ``meta.load_average`` before trusting a run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import inspect
import json
import math
import os
import platform
import time
import tracemalloc
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import scipy
import scipy.special
import sklearn
from sklearn.datasets import load_digits, make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.linear_model._linear_loss import LinearModelLoss
from threadpoolctl import threadpool_info, threadpool_limits

import crossent
from _timing import best_of
from crossent import SoftmaxClassifier, _kernel
from crossent._threads import available_cores
from crossent.hessian import Curvature
from crossent.objective import LinearSoftmaxObjective
from crossent.score_line import ScoreLine

L2 = 1.0
TOL = 1e-4  # both libraries' default
MAX_ITER = 10000
OPT_TOL = 1e-8  # the optimum's fit
OPT_MAX_ITER = 20000
OPT_FLAT = (20, 1e-10)  # ... or stop once 20 iterations lowered L_total by < 1e-10 relative
NEAR = 1e-4  # "within 1e-4 of the optimum", relative
CHASE_TOL = 1e-10  # crossent's recorded fit when the default one stops short of a target
LADDER = (1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10)  # scikit-learn's tolerances after 1e-4
MEMORY_ITERS = 30  # iterations of the traced (memory) fits
RESULTS_DIR = Path(__file__).parent / "results"
RESULTS = RESULTS_DIR / "bench_fit.json"
NAMES = ("digits", "mnist-shape", "probe-1000", "large-n")
# (target ratio, what): crossent time / scikit-learn time, per data set
TARGETS = {
    "probe-1000": [
        ("reach_sklearn_L", 1 / 3, "reach sklearn's final L_total in <= 1/3 of its fit time"),
        ("reach_optimum", 1 / 3, "within 1e-4 of L* in <= 1/3 of sklearn's time to get there"),
    ],
    "mnist-shape": [("fit", 0.25, "fit (tol 1e-4) in <= 0.25x sklearn's fit time")],
    "large-n": [("fit", 0.25, "fit (tol 1e-4) in <= 0.25x sklearn's fit time")],
}
PASS_TARGET = 1.15  # loss_gradient time / (X Wᵀ + Gᵀ X) time
SCALING_TARGET = 1.7  # 1-thread / 2-thread objective time on mnist-shape


# ---------------------------------------------------------------------------- data
def mnist_shape(n_samples: int = 60000) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic problem of MNIST's shape: 60000 × 784 float32, 10 classes, fixed seed."""
    X, y = make_classification(
        n_samples=n_samples,
        n_features=784,
        n_informative=200,
        n_redundant=100,
        n_classes=10,
        n_clusters_per_class=1,
        random_state=0,
    )
    return X.astype(np.float32), y


def probe_1000(n_samples: int = 50000) -> tuple[np.ndarray, np.ndarray]:
    """1000 Gaussian classes in 256 features scaled from 0.1 to 10 (badly conditioned)."""
    rng = np.random.default_rng(0)
    means = rng.standard_normal((1000, 256)) * 0.5
    scales = np.geomspace(0.1, 10, 256)
    y = rng.integers(0, 1000, n_samples)
    X = ((means[y] + rng.standard_normal((n_samples, 256))) * scales).astype(np.float32)
    return X, y


def large_n(n_samples: int = 300000) -> tuple[np.ndarray, np.ndarray]:
    """Many rows, few features: 300000 × 100 float64, 5 classes (make_classification)."""
    X, y = make_classification(
        n_samples=n_samples,
        n_features=100,
        n_informative=30,
        n_redundant=20,
        n_classes=5,
        n_clusters_per_class=2,
        random_state=0,
    )
    return X, y  # float64 on purpose: the float64 path at scale


def load(name: str, quick: bool = False) -> tuple[np.ndarray, np.ndarray]:
    if name == "digits":
        X, y = load_digits(return_X_y=True)
        return X / 16.0, y
    if name == "mnist-shape":
        return mnist_shape(12000 if quick else 60000)
    if name == "probe-1000":
        return probe_1000(5000 if quick else 50000)
    if name == "large-n":
        return large_n(30000 if quick else 300000)
    raise ValueError(f"unknown data set {name!r}; choose from {NAMES}")


def datasets(quick: bool = False) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    for name in NAMES:
        yield name, *load(name, quick)


def fingerprint(X: np.ndarray, y: np.ndarray) -> str:
    """A short hash of the data's shape, dtype and bytes (every row's first, middle and last
    feature, and the labels): the optimum cache's key."""
    digest = hashlib.sha256(f"{X.shape}{X.dtype}".encode())
    columns = sorted({0, X.shape[1] // 2, X.shape[1] - 1})
    digest.update(np.ascontiguousarray(X[:, columns]).tobytes())
    digest.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------- the objective
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


def relative_gap(value: float, optimum: float) -> float:
    return (value - optimum) / abs(optimum)


# ---------------------------------------------------------------------------- counting
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


# ---------------------------------------------------------------------------- fitting
def blas_threads(column: str):
    """BLAS and OpenMP on one thread for the "1" column; as they are for "all"."""
    return threadpool_limits(1) if column == "1" else contextlib.nullcontext()


class Recorder:
    """The classifier's callback: ``(iteration, seconds since start, L_total)`` per iteration.

    Cheap on purpose (no pass over X). Stops the fit (returns True) once ``L_total`` is at
    or below ``stop_below``, or after ``max_seconds``.
    """

    def __init__(self, stop_below: float = -math.inf, max_seconds: float = math.inf):
        self.stop_below, self.max_seconds = stop_below, max_seconds
        self.points: list[tuple[int, float, float]] = []
        self.start = time.perf_counter()

    def __call__(self, progress) -> bool:
        seconds = time.perf_counter() - self.start
        loss = float(progress.loss)
        self.points.append((int(progress.iteration), seconds, loss))
        return loss <= self.stop_below or seconds > self.max_seconds

    def first_below(self, level: float) -> dict[str, Any] | None:
        for iteration, seconds, loss in self.points:
            if loss <= level:
                return {"seconds": seconds, "iteration": iteration, "L_total": loss}
        return None


def crossent_model(solver: str | None, column: str, **params) -> SoftmaxClassifier:
    if solver is not None:
        params["solver"] = solver
    return SoftmaxClassifier(l2=L2, n_jobs=1 if column == "1" else -1, **params)


def sklearn_model(tol: float, max_iter: int = MAX_ITER) -> LogisticRegression:
    return LogisticRegression(C=1.0 / L2, solver="lbfgs", tol=tol, max_iter=max_iter)


def timed_fit(library: str, model, column: str, data: dict, recorder: Recorder | None = None):
    """Fit ``model`` on the training rows; its record (time, counts, L_total, accuracy)."""
    X, y, y_index = data["X_train"], data["y_train"], data["y_index"]
    owner = (LinearModelLoss if library == "sklearn" else LinearSoftmaxObjective, "loss_gradient")
    with contextlib.ExitStack() as stack:
        caught = stack.enter_context(warnings.catch_warnings(record=True))
        warnings.simplefilter("always")
        stack.enter_context(blas_threads(column))
        evals = stack.enter_context(Counter(*owner))
        hvps = line_steps = None
        if library == "crossent":
            hvps = stack.enter_context(Counter(Curvature, "product"))
            # L-BFGS's first step on kept scores: its two products are one evaluation's
            line_steps = stack.enter_context(Counter(ScoreLine, "move"))
        if recorder is not None:
            recorder.start = time.perf_counter()
        start = time.perf_counter()
        model.fit(X, y)
        seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "n_iter": int(np.max(model.n_iter_)),
        "n_evals": evals.calls + (line_steps.calls if line_steps is not None else 0),
        "n_hessian_products": hvps.calls if hvps is not None else None,
        "L_total": l_total(model.coef_, model.intercept_, X, y_index),
        "test_accuracy": float(model.score(data["X_test"], data["y_test"])),
        "warnings": sorted({f"{w.category.__name__}: {str(w.message)[:160]}" for w in caught}),
    }


def traced_peak(model, data: dict) -> float:
    """MiB allocated at the peak of ``model.fit`` beyond what existed before (tracemalloc)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            model.fit(data["X_train"], data["y_train"])
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    return (peak - base) / 2**20


def optimum(
    name: str, data: dict, recompute: bool, solver: str = "lbfgs", float64: bool = False
) -> dict[str, Any]:
    """``L*`` of the training rows, from the cache when there.

    ``float64``: fit a float64 copy of float32 ``X`` (the same values). On float32 data the
    objective's own rounding ends L-BFGS above the exact optimum: on mnist-shape 1.2e-6
    relative (30 iterations; the float64 copy took 1570), on its --quick size 1.7e-5.
    """
    X, y, y_index = data["X_train"], data["y_train"], data["y_index"]
    path = RESULTS_DIR / f"optimum_{name}.json"
    key = (
        f"{X.shape[0]}x{X.shape[1]}-{X.dtype}-classes{data['n_classes']}-l2={L2:g}"
        f"-{fingerprint(X, y_index)}"
    )
    cache = json.loads(path.read_text()) if path.exists() else {}
    if key in cache and not recompute:
        return {**cache[key], "key": key, "cached": True}
    X_fit = X.astype(np.float64, copy=False) if float64 else X
    print(
        f"  computing the optimum of {name} (crossent {solver}, tol {OPT_TOL:g}, "
        f"{X_fit.dtype}) ...",
        flush=True,
    )
    recorder = Recorder()
    span, flat = OPT_FLAT

    def flat_enough(progress) -> bool:  # the last `span` iterations gained < `flat` relative
        recorder(progress)
        return flat_enough_at_end(recorder.points, span, flat)

    model = SoftmaxClassifier(
        l2=L2,
        solver=solver,
        tol=OPT_TOL,
        max_iter=OPT_MAX_ITER,
        n_jobs=-1,
        callback=flat_enough,
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X_fit, y)
    del X_fit
    n_iter = int(model.n_iter_)
    if n_iter >= OPT_MAX_ITER:
        ended = f"max_iter {OPT_MAX_ITER}"
    elif len(recorder.points) > span and flat_enough_at_end(recorder.points, span, flat):
        ended = f"{span} iterations gained < {flat:g} relative"
    else:
        ended = f"the solver's own stop (max |gradient| <= {OPT_TOL:g}, or its ftol)"
    entry = {
        "L_total": l_total(model.coef_, model.intercept_, X, y_index),
        "method": f"crossent SoftmaxClassifier(solver={solver!r}, tol={OPT_TOL:g})"
        + (" on a float64 copy of X" if float64 and X.dtype != np.float64 else ""),
        "ended": ended,
        "n_iter": n_iter,
        "seconds": time.perf_counter() - start,
        "crossent": crossent.__version__,
        "computed": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    cache = json.loads(path.read_text()) if path.exists() else {}  # as it is now
    cache[key] = entry
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cache, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return {**entry, "key": key, "cached": False}


def flat_enough_at_end(points: list, span: int, flat: float) -> bool:
    losses = [point[2] for point in points[-span - 1 :]]
    return len(losses) > span and losses[0] - losses[-1] < flat * abs(losses[-1])


def sklearn_ladder(first: dict, column: str, data: dict, target: float, budget: float | None):
    """scikit-learn's tolerance lowered until its final L_total is at or below ``target``.

    ``budget``: seconds of further fits before giving up; None runs none (the answer is
    known only when the tol 1e-4 fit is already there).
    """
    rungs = [{"tol": TOL, **first}]
    spent = 0.0
    note = None
    ran = True
    for tol in LADDER:
        if rungs[-1]["L_total"] <= target:
            break
        if budget is None:
            note = "lower tolerances not run in this column (--ladder-both runs them)"
            ran = False
            break
        if spent >= budget:
            note = f"stopped: ladder budget of {budget:g} s spent"
            break
        # No rung may overrun the budget: its iterations are capped at what the time left
        # allows at the last rung's pace (then it is marked truncated).
        pace = rungs[-1]["seconds"] / max(rungs[-1]["n_iter"], 1)
        cap = max(1, int((budget - spent) / pace))
        record = timed_fit("sklearn", sklearn_model(tol, max_iter=min(cap, MAX_ITER)), column, data)
        record["truncated"] = record["n_iter"] >= min(cap, MAX_ITER)
        spent += record["seconds"]
        rungs.append({"tol": tol, **record})
        print(
            f"    sklearn tol {tol:g}: {record['seconds']:.2f} s, {record['n_iter']} iterations, "
            f"L_total {record['L_total']:.10g}"
            + (" (truncated: budget)" if record["truncated"] else ""),
            flush=True,
        )
        if record["truncated"] and record["L_total"] > target:
            note = f"stopped: ladder budget of {budget:g} s spent (the last fit cut short)"
            break
        if record["n_iter"] == rungs[-2]["n_iter"] and record["L_total"] == rungs[-2]["L_total"]:
            note = "stopped: a lower tol changed nothing (scikit-learn's ftol ends the fit)"
            break
    reached = rungs[-1]["L_total"] <= target
    if not reached and note is None:
        note = f"not reached down to tol {rungs[-1]['tol']:g}"
    return {
        "reached": reached,
        "ran": ran,
        "tol": rungs[-1]["tol"] if reached else None,
        "seconds": rungs[-1]["seconds"] if reached else None,
        "note": note,
        "rungs": [
            {k: r[k] for k in ("tol", "seconds", "n_iter", "L_total", "truncated") if k in r}
            for r in rungs
        ],
    }


def run_column(name: str, column: str, data: dict, opt: dict, args) -> dict[str, Any]:
    """Both libraries on one data set with the threads of ``column`` ("1" or "all")."""
    print(f"  [{column} thread{'s' if column == 'all' else ''}]", flush=True)
    sk = timed_fit("sklearn", sklearn_model(TOL), column, data)
    print(f"    sklearn  tol 1e-4: {_brief(sk)}", flush=True)
    default = Recorder()
    ce = timed_fit(
        "crossent",
        crossent_model(args.solver, column, tol=TOL, max_iter=MAX_ITER, callback=default),
        column,
        data,
        recorder=default,
    )
    print(f"    crossent tol 1e-4: {_brief(ce)}", flush=True)
    near_optimum = opt["L_total"] * (1 + NEAR)
    levels = {"reach_sklearn_L": sk["L_total"], "reach_optimum": near_optimum}
    reached = {what: default.first_below(level) for what, level in levels.items()}
    ladder_budget = args.ladder_budget if column == "all" or args.ladder_both else None
    # Without scikit-learn's lower tolerances in this column, its time to L* is unknown: the
    # tighter fit then goes only as far as scikit-learn's final L_total.
    wanted = levels if ladder_budget is not None else {"reach_sklearn_L": sk["L_total"]}
    chase_record = None
    if any(reached[what] is None for what in wanted):  # a tighter fit, stopped when there
        chase = Recorder(stop_below=min(wanted.values()), max_seconds=args.chase_seconds)
        chase_record = timed_fit(
            "crossent",
            crossent_model(args.solver, column, tol=CHASE_TOL, max_iter=MAX_ITER, callback=chase),
            column,
            data,
            recorder=chase,
        )
        print(f"    crossent tol {CHASE_TOL:g} (recorded): {_brief(chase_record)}", flush=True)
        for what, level in levels.items():
            if reached[what] is None:
                reached[what] = chase.first_below(level)
                if reached[what] is not None:
                    reached[what]["from"] = f"fit at tol {CHASE_TOL:g}"
    for point in reached.values():
        if point is not None:
            point.setdefault("from", "the tol 1e-4 fit")
    ladder = sklearn_ladder(sk, column, data, near_optimum, ladder_budget)
    sk_times = {
        "fit": sk["seconds"],
        "reach_sklearn_L": sk["seconds"],
        "reach_optimum": ladder["seconds"],
    }
    ce_times = {
        "fit": ce["seconds"],
        "reach_sklearn_L": _seconds(reached["reach_sklearn_L"]),
        "reach_optimum": _seconds(reached["reach_optimum"]),
    }
    ratios = {
        what: (ce_times[what] / sk_times[what] if ce_times[what] and sk_times[what] else None)
        for what in sk_times
    }
    # When one side never got there, its time is only known to exceed what it spent trying.
    bounds: dict[str, dict[str, Any]] = {}
    # a lower tol only adds iterations: scikit-learn needs longer than its longest rung
    longest = max((rung["seconds"] for rung in ladder["rungs"]), default=None)
    sk_tried = longest if ladder["ran"] and not ladder["reached"] else None
    if ce_times["reach_optimum"] and sk_tried:
        bounds["reach_optimum"] = {"at_most": ce_times["reach_optimum"] / sk_tried}
    if chase_record is not None and chase.points:
        ce_tried = chase.points[-1][1]
        for what in ("reach_sklearn_L", "reach_optimum"):
            if ce_times[what] is None and sk_times[what]:
                bounds[what] = {"at_least": ce_tried / sk_times[what]}
    targets = [
        _verdict(text, bound, ratios[what], bounds.get(what))
        for what, bound, text in TARGETS.get(name, [])
    ]
    targets.append(
        {
            "what": "tol 1e-4 stops at an L_total no higher than sklearn's tol 1e-4 stop",
            "crossent_L": ce["L_total"],
            "sklearn_L": sk["L_total"],
            "met": bool(ce["L_total"] <= sk["L_total"] + 1e-12 * abs(sk["L_total"])),
        }
    )
    return {
        "sklearn": sk,
        "crossent": ce,
        "crossent_recorded_fit": chase_record,
        # (iteration, seconds since the fit began, L_total by crossent's own accumulation)
        "crossent_curve": [list(p) for p in default.points],
        "crossent_recorded_curve": None
        if chase_record is None
        else [list(p) for p in chase.points],
        "crossent_reached": reached,
        "sklearn_ladder": ladder,
        "times": {"sklearn": sk_times, "crossent": ce_times},
        "ratios": ratios,
        "ratio_bounds": bounds,
        "targets": targets,
    }


def _verdict(text: str, target: float, ratio: float | None, bound: dict | None) -> dict:
    """A target met or missed by ``ratio``, or by a bound on it when one side never got there."""
    entry: dict[str, Any] = {"what": text, "target": target, "ratio": ratio, "met": None}
    if ratio is not None:
        entry["met"] = bool(ratio <= target)
    elif bound is not None:
        entry["ratio_bound"] = bound
        if bound.get("at_most", math.inf) <= target:
            entry["met"] = True
        elif bound.get("at_least", -math.inf) > target:
            entry["met"] = False
    return entry


def _seconds(point: dict | None) -> float | None:
    return None if point is None else point["seconds"]


def _brief(r: dict) -> str:
    return (
        f"{r['seconds']:.2f} s, {r['n_iter']} iterations, {r['n_evals']} evaluations, "
        f"L_total {r['L_total']:.10g}, test accuracy {r['test_accuracy']:.4f}"
    )


def memory(data: dict, columns: dict, column: str, args) -> dict[str, Any]:
    """Extra peak MiB of each library's fit with the threads of ``column``, traced."""
    ce_iters = min(columns["crossent"]["n_iter"], MEMORY_ITERS)
    sk_iters = min(columns["sklearn"]["n_iter"], MEMORY_ITERS)
    ce = crossent_model(args.solver, column, tol=TOL, max_iter=max(ce_iters, 1))
    sk = LogisticRegression(C=1.0 / L2, solver="lbfgs", tol=TOL, max_iter=max(sk_iters, 1))
    with blas_threads(column):
        return {
            "sklearn_peak_MiB": traced_peak(sk, data),
            "crossent_peak_MiB": traced_peak(ce, data),
            "iterations_traced": {"sklearn": sk_iters, "crossent": ce_iters},
            "threads": column,
        }


# ---------------------------------------------------------------------------- one pass
def pass_vs_floor(X, y, n_classes, n_threads):
    """One loss+gradient evaluation beside its two matrix products, on ``n_threads``.

    The floor is ``X Wᵀ`` and ``Gᵀ X`` as two single BLAS calls into preallocated outputs,
    in X's dtype, with BLAS on ``n_threads``. The objective runs its own ``n_threads``; it is
    timed with BLAS held on one thread around the calls, as in the classifier's fit (the
    target's figure), and as lone calls with BLAS on ``n_threads`` (each call then sets BLAS
    to one thread and back).
    """
    rng = np.random.default_rng(1)
    coef = rng.standard_normal((n_classes, X.shape[1])) * 0.01
    intercept = np.zeros(n_classes)
    objective = LinearSoftmaxObjective(X, y, n_classes, l2=L2, n_threads=n_threads)
    weights = coef.astype(X.dtype)  # (C, d)
    grad_rows = rng.standard_normal((X.shape[0], n_classes)).astype(X.dtype)  # (n, C)
    scores = np.empty((X.shape[0], n_classes), dtype=X.dtype)  # (n, C)
    grad = np.empty((n_classes, X.shape[1]), dtype=X.dtype)  # (C, d)

    def products():
        np.matmul(X, weights.T, out=scores)
        np.matmul(grad_rows.T, X, out=grad)

    def evaluation():
        objective.loss_gradient(coef, intercept)

    floors, in_fit, lone = [], [], []
    for _ in range(3):  # interleaved rounds: the three see the same machine
        with threadpool_limits(n_threads, user_api="blas"):
            floors.append(best_of(products))
            lone.append(best_of(evaluation))  # BLAS set to one thread and back, each call
        with threadpool_limits(1, user_api="blas"):  # as the classifier's fit runs it
            in_fit.append(best_of(evaluation))
    floor = min(floors)
    return {
        "products_s": floor,
        "loss_grad_s": min(in_fit),
        "ratio": min(in_fit) / floor,
        "lone_call_s": min(lone),
        "lone_call_ratio": min(lone) / floor,
    }


# ---------------------------------------------------------------------------- machine
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def kernel_in_use() -> dict[str, Any]:
    """Whether crossent's compiled kernel runs, per dtype (``crossent._kernel.available``)."""
    by_dtype = {t: _kernel.available(np.dtype(t)) for t in ("float32", "float64")}
    kinds = [dtype for dtype, found in by_dtype.items() if found]
    return {
        "kernel": f"compiled ({', '.join(kinds)})" if kinds else "numpy",
        "flag": f"available(dtype): {by_dtype}",
    }


def machine(args) -> dict[str, Any]:
    blas = [
        {k: info.get(k) for k in ("user_api", "internal_api", "version", "num_threads")}
        for info in threadpool_info()
    ]
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "available_cores": available_cores(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "sklearn": sklearn.__version__,
        "crossent": crossent.__version__,
        "crossent_kernel": kernel_in_use(),
        "crossent_solver": args.solver or f"default ({_default_solver()})",
        "threadpools": blas,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "label": args.label,
        "quick": args.quick,
        "l2": L2,
        "tol": TOL,
        "max_iter": MAX_ITER,
        "optimum_tol": OPT_TOL,
        "near_optimum": NEAR,
        "memory": f"tracemalloc peak of a separate fit capped at {MEMORY_ITERS} iterations "
        "(the last thread column's settings); NumPy's allocations are traced",
    }


def _default_solver() -> str:
    return inspect.signature(SoftmaxClassifier).parameters["solver"].default


# ---------------------------------------------------------------------------- printing
def _f(value, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return format(value, spec)


def print_dataset(name: str, row: dict) -> None:
    opt = row["optimum"]
    print(
        f"\n== {name}: {row['shape'][0]} x {row['shape'][1]} {row['dtype']}, "
        f"{row['n_classes']} classes; L* = {opt['L_total']:.10g} "
        f"({'cached' if opt['cached'] else 'computed'}, {opt['method']})"
    )
    columns = [c for c in ("1", "all") if c in row["columns"]]
    head = f"{'':26s}"
    sub = f"{'':26s}"
    for c in columns:
        head += f"{('1 thread' if c == '1' else 'all cores'):^36s}"
        sub += f"{'sklearn':>12s}{'crossent':>12s}{'ratio':>12s}"
    print(head)
    print(sub)

    def line(label: str, get: Callable[[dict, str], tuple[Any, Any, Any]], spec: str) -> None:
        text = f"{label:26s}"
        for c in columns:
            sk, ce, ratio = get(row["columns"][c], c)
            text += f"{_f(sk, spec):>12s}{_f(ce, spec):>12s}{_f(ratio, '.3f'):>12s}"
        print(text)

    def both(key: str):
        return lambda col, c: (col["sklearn"][key], col["crossent"][key], None)

    line("fit s (tol 1e-4)", lambda col, c: (*_pair(col, "seconds"), col["ratios"]["fit"]), ".3f")
    line("iterations", both("n_iter"), "d")
    line("loss+grad evaluations", both("n_evals"), "d")
    line("Hessian-vector products", both("n_hessian_products"), "d")
    line("L_total", both("L_total"), ".10g")
    line(
        "  (L - L*) / L*",
        lambda col, c: (
            relative_gap(col["sklearn"]["L_total"], opt["L_total"]),
            relative_gap(col["crossent"]["L_total"], opt["L_total"]),
            None,
        ),
        ".2e",
    )
    line("test accuracy", both("test_accuracy"), ".4f")
    line(
        "s to reach sklearn's L",
        lambda col, c: (
            col["times"]["sklearn"]["reach_sklearn_L"],
            col["times"]["crossent"]["reach_sklearn_L"],
            _ratio(col, "reach_sklearn_L"),
        ),
        ".3f",
    )
    line(
        "s to within 1e-4 of L*",
        lambda col, c: (
            col["times"]["sklearn"]["reach_optimum"],
            col["times"]["crossent"]["reach_optimum"],
            _ratio(col, "reach_optimum"),
        ),
        ".3f",
    )
    for c in columns:
        ladder = row["columns"][c]["sklearn_ladder"]
        if ladder["reached"]:
            verdict = f"tol {ladder['tol']:g}"
        else:
            verdict = "not measured" if ladder["ran"] is False else "not reached"
        print(f"  sklearn to within 1e-4 of L* [{c}]: {verdict}" + _note(ladder["note"]))
    mem = row["memory"]
    print(
        f"  extra peak memory, MiB (traced, [{mem['threads']}], first "
        f"{max(mem['iterations_traced'].values())} iterations at most): "
        f"sklearn {mem['sklearn_peak_MiB']:.1f}, "
        f"crossent {mem['crossent_peak_MiB']:.1f}"
    )
    for c in columns:
        for target in row["columns"][c]["targets"]:
            print(f"  target [{c}] {target['what']}: {_met(target)}")


def _ratio(col: dict, what: str) -> float | str | None:
    """The ratio, or its bound as text ("<=0.123") when one side never got there."""
    if col["ratios"][what] is not None:
        return col["ratios"][what]
    bound = col.get("ratio_bounds", {}).get(what)
    if not bound:
        return None
    ((kind, value),) = bound.items()
    return f"{'<=' if kind == 'at_most' else '>='}{value:.3f}"


def _pair(col: dict, key: str) -> tuple[Any, Any]:
    return col["sklearn"][key], col["crossent"][key]


def _note(note: str | None) -> str:
    return f" ({note})" if note else ""


def _met(target: dict) -> str:
    verdict = {True: "MET", False: "MISSED", None: "n/a"}[target["met"]]
    if target.get("ratio") is not None:
        return f"{verdict} ({target['ratio']:.3f} vs <= {target['target']:.3f})"
    bound = target.get("ratio_bound")
    if bound:
        ((kind, value),) = bound.items()
        sign = "<=" if kind == "at_most" else ">="
        return (
            f"{verdict} (ratio {sign} {value:.3f}: one side never got there; vs <= "
            f"{target['target']:.3f})"
        )
    return verdict


def print_summary(rows: dict, passes: dict) -> None:
    if rows:
        print_fit_summary(rows)
    if passes:
        print_passes(passes)


def print_fit_summary(rows: dict) -> None:
    print("\n== summary (col: threads; ratios crossent / sklearn; L rel: (L - L*) / L*)")
    print(
        f"{'dataset':12s} {'col':>4s} {'sk fit s':>9s} {'ce fit s':>9s} {'fit':>7s} "
        f"{'reach skL':>9s} {'reach L*':>9s} {'sk L rel':>9s} {'ce L rel':>9s} "
        f"{'sk acc':>7s} {'ce acc':>7s}  targets"
    )
    for name, row in rows.items():
        for c, col in row["columns"].items():
            opt = row["optimum"]["L_total"]
            verdicts = " ".join(
                {True: "met", False: "MISSED", None: "n/a"}[t["met"]] for t in col["targets"]
            )
            print(
                f"{name:12s} {c:>4s} {col['sklearn']['seconds']:9.3f} "
                f"{col['crossent']['seconds']:9.3f} {_f(col['ratios']['fit'], '.3f'):>7s} "
                f"{_f(_ratio(col, 'reach_sklearn_L'), '.3f'):>9s} "
                f"{_f(_ratio(col, 'reach_optimum'), '.3f'):>9s} "
                f"{relative_gap(col['sklearn']['L_total'], opt):9.1e} "
                f"{relative_gap(col['crossent']['L_total'], opt):9.1e} "
                f"{col['sklearn']['test_accuracy']:7.4f} {col['crossent']['test_accuracy']:7.4f}"
                f"  {verdicts}"
            )


def print_passes(passes: dict) -> None:
    if passes:
        print(f"\n== one objective evaluation vs X Wᵀ + Gᵀ X (target <= {PASS_TARGET})")
        print("(in a fit: BLAS held on one thread, as the classifier runs it; a lone call sets")
        print(" BLAS to one thread and back)")
        print(
            f"{'dataset':12s} {'threads':>7s} {'products s':>11s} {'in a fit s':>11s} ratio"
            f"{'':7s} {'lone call s':>11s} ratio"
        )
        for name, entry in passes.items():
            for threads, p in entry["by_threads"].items():
                verdict = "met" if p["ratio"] <= PASS_TARGET else "MISSED"
                print(
                    f"{name:12s} {threads:>7s} {p['products_s']:11.4f} {p['loss_grad_s']:11.4f} "
                    f"{p['ratio']:5.2f} {verdict:6s} {p['lone_call_s']:11.4f} "
                    f"{p['lone_call_ratio']:5.2f}"
                )
            scaling = entry.get("thread_scaling")
            if scaling is not None:
                print(
                    f"{name:12s} thread scaling 1 -> 2 threads: objective "
                    f"{scaling['objective_speedup']:.2f}x (target >= {SCALING_TARGET}: "
                    f"{'met' if scaling['met'] else 'MISSED'}), BLAS products "
                    f"{scaling['products_speedup']:.2f}x"
                )


# ---------------------------------------------------------------------------- main
def split(name: str, X: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    n_train = int(0.8 * X.shape[0])
    X_train, y_train = X[:n_train], y[:n_train]
    classes, y_index = np.unique(y_train, return_inverse=True)
    return {
        "X_train": X_train,
        "y_train": y_train,
        "X_test": X[n_train:],
        "y_test": y[n_train:],
        "y_index": y_index,
        "n_classes": len(classes),
    }


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=NAMES, metavar="NAME", help="data sets")
    parser.add_argument("--quick", action="store_true", help="smaller data (a quick check)")
    parser.add_argument("--solver", help="crossent's solver (default: the classifier's)")
    parser.add_argument("--threads", choices=("1", "all", "both"), default="both")
    parser.add_argument("--recompute-optimum", action="store_true")
    parser.add_argument(
        "--optimum-solver", default="lbfgs", help="crossent's solver for L* (default lbfgs)"
    )
    parser.add_argument(
        "--optimum-in-data-dtype",
        action="store_true",
        help="compute L* on float32 data as it is (faster; about 1e-6 to 2e-5 relative high) "
        "instead of on a float64 copy",
    )
    parser.add_argument(
        "--ladder-budget",
        type=float,
        default=240.0,
        help="seconds of scikit-learn fits at lower tolerances before giving up (default 240)",
    )
    parser.add_argument(
        "--ladder-both",
        action="store_true",
        help="lower scikit-learn's tolerance in the 1-thread column too (default: all cores)",
    )
    parser.add_argument(
        "--chase-seconds",
        type=float,
        default=240.0,
        help="the most seconds of crossent's tighter recorded fit (default 240)",
    )
    parser.add_argument("--no-pass", action="store_true", help="skip the one-pass timings")
    parser.add_argument("--pass-only", action="store_true", help="only the one-pass timings")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"default {RESULTS}")
    parser.add_argument("--label", default="", help="a note stored with the results")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.solver is not None:  # refused now rather than after the data and the optimum
        SoftmaxClassifier(solver=args.solver)._validate_params()
    names = args.only or NAMES
    columns = ("1", "all") if args.threads == "both" else (args.threads,)
    info = machine(args)
    print(
        f"{info['cpu']}, {info['available_cores']} cores; numpy {info['numpy']}, scipy "
        f"{info['scipy']}, sklearn {info['sklearn']}, crossent {info['crossent']} "
        f"(kernel: {info['crossent_kernel']['kernel']}, solver: {info['crossent_solver']})",
        flush=True,
    )
    rows: dict[str, Any] = {}
    passes: dict[str, Any] = {}
    started = time.perf_counter()
    for name in names:
        X, y = load(name, args.quick)
        data = split(name, X, y)
        print(f"\n{name}: {data['X_train'].shape} {X.dtype}", flush=True)
        if not args.pass_only:
            rows[name] = fit_dataset(name, data, columns, args)
            print_dataset(name, rows[name])
        if name in ("mnist-shape", "probe-1000") and not args.no_pass:
            passes[name] = one_pass(name, data)
        _write(args, info, rows, passes, time.perf_counter() - started)
    print_summary(rows, passes)
    print(f"\ntotal {time.perf_counter() - started:.0f} s; wrote {args.out}")


def fit_dataset(name: str, data: dict, columns: tuple[str, ...], args) -> dict[str, Any]:
    """Everything of part 1 for one data set: the optimum, each thread column, the memory."""
    float64 = not args.optimum_in_data_dtype
    opt = optimum(name, data, args.recompute_optimum, args.optimum_solver, float64)
    row: dict[str, Any] = {
        "shape": list(data["X_train"].shape),
        "n_test": int(data["X_test"].shape[0]),
        "dtype": str(data["X_train"].dtype),
        "n_classes": data["n_classes"],
        "optimum": opt,
        "columns": {},
    }
    for column in columns:
        row["columns"][column] = run_column(name, column, data, opt, args)
    row["memory"] = memory(data, row["columns"][columns[-1]], columns[-1], args)
    finals = [
        rung["L_total"]
        for col in row["columns"].values()
        for rung in col["sklearn_ladder"]["rungs"]
    ]
    finals += [col["crossent"]["L_total"] for col in row["columns"].values()]
    if min(finals) < opt["L_total"] * (1 - 1e-9):
        row["optimum_warning"] = (
            f"a fit ended at L_total {min(finals):.12g}, below L* {opt['L_total']:.12g}: "
            "recompute the optimum (--recompute-optimum)"
        )
        print(f"  WARNING: {row['optimum_warning']}")
    return row


def one_pass(name: str, data: dict) -> dict[str, Any]:
    print(f"  one evaluation vs its products ({name}) ...", flush=True)
    threads = [1, 2] + ([available_cores()] if available_cores() > 2 else [])
    X, y_index, n_classes = data["X_train"], data["y_index"], data["n_classes"]
    by_threads = {str(t): pass_vs_floor(X, y_index, n_classes, t) for t in threads}
    entry: dict[str, Any] = {"by_threads": by_threads}
    if name == "mnist-shape":
        one, two = by_threads["1"], by_threads["2"]
        speedup = one["loss_grad_s"] / two["loss_grad_s"]
        entry["thread_scaling"] = {
            "objective_speedup": speedup,
            "products_speedup": one["products_s"] / two["products_s"],
            "target": SCALING_TARGET,
            "met": bool(speedup >= SCALING_TARGET),
        }
    return entry


def _write(args, info, rows, passes, seconds) -> None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "meta": {**info, "seconds": seconds},
        "datasets": rows,
        "pass_vs_floor": passes,
    }
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    tmp.replace(args.out)


if __name__ == "__main__":
    main()
