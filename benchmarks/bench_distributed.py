"""Distributed fitting: 1 process against p ranks over gloo, one thread each, on mnist-shape.

The data are bench_fit.py's mnist-shape (make_classification, 48000 training rows × 784
float32 features, 10 classes), λ = 1, tol = 1e-4. The baseline is the ordinary
single-process fit (``n_jobs=1``) run in this process; each rank count ``p`` is then
spawned (``OMP_NUM_THREADS=1``, gloo over a FileStore, each rank its contiguous share of
the rows) and fits with ``distributed=True``. For each it prints and saves
(benchmarks/results/bench_distributed.json): the fit's wall time, its iterations and
objective evaluations, the time per iteration, the time in the objective's all-reduces (and
its share of the fit: waiting for a slower rank included), one all-reduce of the
gradient buffer timed alone (the latency and bandwidth constants of the cost model in
docs/distributed.md) and the share it would take of the fit (evaluations × that time:
"alone"), one evaluation of a rank's shard timed alone, and the speed-up against the
baseline, and each fit's CPU time over its wall time (below 1: the process waited for a
core, on a machine shared with other work, or for the other ranks). Best of ``--repeat``
fits. Goal: all-reduce ≤ 5 % of an iteration,
2 ranks ≥ 1.7× faster than 1.

    python benchmarks/bench_distributed.py [--ranks 1 2] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import tempfile
import time
import warnings
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from threadpoolctl import threadpool_limits

import crossent
from _timing import timings
from bench_fit import mnist_shape
from crossent import SoftmaxClassifier
from crossent.objective import LinearSoftmaxObjective

L2, TOL, N_TRAIN = 1.0, 1e-4, 48000
RESULTS = Path(__file__).parent / "results" / "bench_distributed.json"


def save_mnist_shape(folder: Path) -> None:
    """bench_fit.py's mnist-shape training rows, saved as X.npy (float32) and y.npy."""
    X, y = mnist_shape()
    np.save(folder / "X.npy", X[:N_TRAIN])
    np.save(folder / "y.npy", y[:N_TRAIN])


def fit(
    X: np.ndarray, y: np.ndarray, distributed: bool
) -> tuple[SoftmaxClassifier, float, int, float]:
    """``(model, seconds, evaluations, CPU seconds of this process)`` of one fit, one thread."""
    model = SoftmaxClassifier(l2=L2, tol=TOL, max_iter=10000, n_jobs=1, distributed=distributed)
    original = LinearSoftmaxObjective.loss_gradient
    calls = [0]

    def counted(self, *args, **kwargs):
        calls[0] += 1
        return original(self, *args, **kwargs)

    LinearSoftmaxObjective.loss_gradient = counted  # the base class: once per evaluation
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start, cpu_start = time.perf_counter(), time.process_time()
            model.fit(X, y)
            seconds = time.perf_counter() - start
            cpu = time.process_time() - cpu_start
    finally:
        LinearSoftmaxObjective.loss_gradient = original
    return model, seconds, calls[0], cpu


def rank_main(rank: int, world_size: int, folder: str, repeat: int) -> None:
    """One rank: join the group, fit ``repeat`` times, time one all-reduce and one shard pass."""
    dist.init_process_group(
        "gloo",
        store=dist.FileStore(os.path.join(folder, f"store{world_size}"), world_size),
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=600),
    )
    X_all = np.load(os.path.join(folder, "X.npy"), mmap_mode="r")
    y_all = np.load(os.path.join(folder, "y.npy"))
    rows = slice(rank * N_TRAIN // world_size, (rank + 1) * N_TRAIN // world_size)
    X, y = np.array(X_all[rows]), y_all[rows]  # (n / p, d) this rank's rows, in memory
    best = None
    for _ in range(repeat):
        dist.barrier()
        model, seconds, evals, cpu = fit(X, y, distributed=True)
        if best is None or seconds < best[1]:
            best = (model, seconds, evals, cpu)
    model, seconds, evals, cpu = best
    n_classes, d = model.coef_.shape
    buffer = torch.zeros(1 + n_classes * d + n_classes + world_size, dtype=torch.float64)
    allreduce_one = float(np.median(timings(lambda: dist.all_reduce(buffer), 50)))
    y_index = np.searchsorted(model.classes_, y)
    shard = LinearSoftmaxObjective(X, y_index, n_classes, l2=L2, n_threads=1)
    pass_s = min(timings(lambda: shard.loss_gradient(model.coef_, model.intercept_), 3))
    result = {
        "rank": rank,
        "seconds": seconds,
        "cpu_share": cpu / seconds,  # below 1: the rank waited (for a core, or for the others)
        "n_iter": int(model.n_iter_),
        "n_evals": evals,
        "allreduce_s": float(model.allreduce_seconds_),
        "allreduce_one_s": allreduce_one,
        "allreduce_bytes": buffer.numel() * 8,
        "shard_rows": int(X.shape[0]),
        "shard_eval_s": pass_s,
    }
    Path(folder, f"rank{world_size}-{rank}.pkl").write_bytes(pickle.dumps(result))
    dist.destroy_process_group()


def run_ranks(folder: Path, world_size: int, repeat: int) -> dict:
    mp.spawn(rank_main, args=(world_size, str(folder), repeat), nprocs=world_size)
    ranks = [
        pickle.loads(Path(folder, f"rank{world_size}-{r}.pkl").read_bytes())
        for r in range(world_size)
    ]
    slowest = max(ranks, key=lambda r: r["seconds"])
    return {
        "ranks": world_size,
        "seconds": slowest["seconds"],
        "n_iter": slowest["n_iter"],
        "n_evals": slowest["n_evals"],
        "s_per_iter": slowest["seconds"] / slowest["n_iter"],
        "allreduce_share": max(r["allreduce_s"] / r["seconds"] for r in ranks),
        "allreduce_alone_share": max(
            r["n_evals"] * r["allreduce_one_s"] / r["seconds"] for r in ranks
        ),
        "allreduce_one_ms": 1e3 * float(np.median([r["allreduce_one_s"] for r in ranks])),
        "allreduce_bytes": ranks[0]["allreduce_bytes"],
        "shard_eval_ms": 1e3 * max(r["shard_eval_s"] for r in ranks),
        "cpu_share_min": min(r["cpu_share"] for r in ranks),
        "per_rank": ranks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=2, help="fits per setting (best kept)")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"  # the spawned ranks inherit it
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save_mnist_shape(folder)
        X, y = np.load(folder / "X.npy"), np.load(folder / "y.npy")
        with threadpool_limits(1):  # BLAS was loaded before OMP_NUM_THREADS was set here
            fits = [fit(X, y, distributed=False) for _ in range(args.repeat)]
        model, seconds, evals, cpu = min(fits, key=lambda f: f[1])
        baseline = {
            "seconds": seconds,
            "cpu_share": cpu / seconds,
            "n_iter": int(model.n_iter_),
            "n_evals": evals,
            "s_per_iter": seconds / model.n_iter_,
        }
        print("1 process   " + json.dumps(baseline), flush=True)
        rows = []
        for world_size in args.ranks:
            row = run_ranks(folder, world_size, args.repeat)
            row["speedup"] = baseline["seconds"] / row["seconds"]
            row["speedup_per_iter"] = baseline["s_per_iter"] / row["s_per_iter"]
            if rows and rows[0]["ranks"] == 1:  # against 1 rank, the same code and threads
                row["speedup_vs_1_rank"] = rows[0]["seconds"] / row["seconds"]
            rows.append(row)
            summary = {k: v for k, v in row.items() if k != "per_rank"}
            print(f"{world_size} rank(s)  " + json.dumps(summary), flush=True)
    print()
    print(
        f"{'ranks':>5s} {'fit s':>7s} {'iters':>5s} {'evals':>5s} {'ms/iter':>8s} "
        f"{'speed-up':>8s} {'/iter':>6s} {'vs 1':>5s} {'allreduce':>9s} {'alone':>6s} "
        f"{'1 allred ms':>11s} {'eval ms':>8s} {'cpu/wall':>8s}"
    )
    print(
        f"{'base':>5s} {baseline['seconds']:7.2f} {baseline['n_iter']:5d} "
        f"{baseline['n_evals']:5d} {1e3 * baseline['s_per_iter']:8.1f} {'':57s} "
        f"{baseline['cpu_share']:8.2f}"
    )
    for r in rows:
        print(
            f"{r['ranks']:5d} {r['seconds']:7.2f} {r['n_iter']:5d} {r['n_evals']:5d} "
            f"{1e3 * r['s_per_iter']:8.1f} {r['speedup']:8.2f} {r['speedup_per_iter']:6.2f} "
            f"{r.get('speedup_vs_1_rank', 1.0):5.2f} "
            f"{100 * r['allreduce_share']:8.2f}% {100 * r['allreduce_alone_share']:5.2f}% "
            f"{r['allreduce_one_ms']:11.3f} "
            f"{r['shard_eval_ms']:8.1f} {r['cpu_share_min']:8.2f}"
        )
    meta = {
        "crossent": crossent.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "dataset": "mnist-shape",
        "shape": list(X.shape),
        "l2": L2,
        "tol": TOL,
        "threads_per_rank": 1,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"meta": meta, "baseline": baseline, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
