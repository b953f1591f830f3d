"""Time crossent's loss kernels against torch's cross_entropy on the CPU, and against the
NumPy fallback kernel.

For each shape (rows, classes) and dtype, on one thread (crossent ``n_threads=1``, torch
``set_num_threads(1)``) and on all cores (crossent's default ``n_threads=None``, which takes
one thread per 2**25 units of work up to all cores, so one for the small shapes; torch on all
cores), in one process:

- ``loss+grad``: :func:`crossent.softmax_cross_entropy_with_grad` vs torch forward+backward,
- ``forward``: :func:`crossent.softmax_cross_entropy` vs torch forward (no grad),

each with the compiled kernel (``_kernel.ENABLED = True``) and the NumPy fallback (False: the
``CROSSENT_KERNEL=numpy`` path). The cases run in interleaved rounds (so drifting machine
load hits them alike) and the medians are compared. Prints a table of ratios and writes
``benchmarks/results/bench_loss.json``.

    python benchmarks/bench_loss.py            # all shapes, float32 and float64
    python benchmarks/bench_loss.py --quick    # fewer rounds
    python benchmarks/bench_loss.py --cpu-time # 1 thread, CPU time (a busy machine)

Thread scaling (1 thread → all cores) is timed twice: in the table's process, beside torch,
and in a child process that never imports torch (``--scaling-only``). Beside torch the
second core is not free: torch's OpenMP workers keep it busy after torch's own calls
(measured at 4096×1000 float32: crossent on 2 threads took 4.3 ms right after a torch call
and 2.2 ms without one, 20 ms of sleep in between or not), so the child's figure is
crossent's own scaling.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import crossent
from _timing import timings
from crossent import _kernel, softmax_cross_entropy, softmax_cross_entropy_with_grad
from crossent._threads import available_cores

RESULTS = Path(__file__).parent / "results" / "bench_loss.json"
SHAPES = [(4096, 10), (4096, 1000), (1024, 32000), (256, 128000), (65536, 10)]
DTYPES = ["float32", "float64"]


def interleaved_medians(
    cases: dict, rounds: int, per_round: int, clock=time.perf_counter
) -> dict[str, float]:
    """Median seconds of each case over ``rounds`` interleaved rounds of ``per_round`` calls."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():  # warm-up
        fn()
    for _ in range(rounds):
        for name, fn in cases.items():
            for _ in range(per_round):
                start = clock()
                fn()
                times[name].append(clock() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def with_kernel(enabled: bool, fn):
    def run():
        saved = _kernel.ENABLED
        _kernel.ENABLED = enabled
        try:
            return fn()
        finally:
            _kernel.ENABLED = saved

    return run


def crossent_scaling(shapes, dtypes, threads: int, rounds: int) -> dict[str, dict[str, float]]:
    """crossent's own 1 → ``threads`` speed-up of loss+grad and forward (no torch here)."""
    speedups = {}
    for shape in shapes:
        for dtype in dtypes:
            rng = np.random.default_rng(0)
            logits = (rng.standard_normal(shape) * 3).astype(dtype)
            target = rng.integers(0, shape[1], shape[0])
            cases = {
                f"{kind} {k}": (lambda f=f, k=k, z=logits, t=target: f(z, t, n_threads=k))
                for kind, f in (
                    ("loss+grad", softmax_cross_entropy_with_grad),
                    ("forward", softmax_cross_entropy),
                )
                for k in (1, threads)
            }
            # each setting in its own block: alternating 1 and 2 threads call by call leaves
            # the whole array in the first core's cache before each 2-thread call (4096×1000
            # float32: 2.15 ms in a block of 2-thread calls, 3.5 ms alternating, 3.75 ms on
            # one thread)
            calls = max(5, min(50, int(2e8 // (shape[0] * shape[1]))))
            ms = {name: float(np.median(timings(fn, calls))) for name, fn in cases.items()}
            key = f"{'x'.join(map(str, shape))} {dtype}"
            speedups[key] = {
                kind: ms[f"{kind} 1"] / ms[f"{kind} {threads}"] for kind in ("loss+grad", "forward")
            }
    return speedups


def bench_one(shape, dtype, threads, rounds, clock=time.perf_counter) -> dict[str, float]:
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    logits = (rng.standard_normal(shape) * 3).astype(dtype)
    target = rng.integers(0, shape[1], shape[0])
    logits_t, target_t = torch.from_numpy(logits), torch.from_numpy(target)
    n_threads = 1 if threads == 1 else None  # all cores: the library's default choice

    def torch_fwd_bwd():
        z = logits_t.detach().requires_grad_(True)
        F.cross_entropy(z, target_t).backward()
        return z.grad

    def torch_fwd():
        with torch.no_grad():
            return F.cross_entropy(logits_t, target_t)

    def ce_grad():
        return softmax_cross_entropy_with_grad(logits, target, n_threads=n_threads)

    def ce_loss():
        return softmax_cross_entropy(logits, target, n_threads=n_threads)

    # everyone agrees before anything is timed
    _, grad = with_kernel(True, ce_grad)()
    grad_t = torch_fwd_bwd().numpy()
    tol = 1e-4 if dtype == "float32" else 1e-10
    assert np.allclose(grad, grad_t, rtol=tol, atol=tol / shape[1]), "gradients disagree"
    for enabled in (True, False):
        value = float(with_kernel(enabled, ce_loss)())
        assert abs(value - float(torch_fwd())) < tol * abs(value), "losses disagree"

    cases = {
        "loss+grad kernel": with_kernel(True, ce_grad),
        "loss+grad numpy": with_kernel(False, ce_grad),
        "torch fwd+bwd": torch_fwd_bwd,
        "forward kernel": with_kernel(True, ce_loss),
        "forward numpy": with_kernel(False, ce_loss),
        "torch forward": torch_fwd,
    }
    size = shape[0] * shape[1]
    per_round = max(1, min(10, int(2e6 // size)))
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        medians = interleaved_medians(cases, rounds, per_round, clock)
    finally:
        torch.set_num_threads(torch_threads)
    return {name: seconds * 1e3 for name, seconds in medians.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 7")
    parser.add_argument("--shapes", help="e.g. 4096x1000,1024x32000 (default: all five)")
    parser.add_argument("--dtypes", default=",".join(DTYPES))
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="one thread only, timed by process CPU time: steadier on a busy shared machine",
    )
    parser.add_argument(
        "--scaling-only",
        action="store_true",
        help="print crossent's thread scaling as JSON, without importing torch",
    )
    args = parser.parse_args()
    if _kernel.LIBRARY is None:
        raise SystemExit("the compiled kernel is not built: pip install . (or build_ext)")
    shapes = SHAPES
    if args.shapes:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    rounds = 3 if args.quick else 7
    cores = available_cores()
    if args.scaling_only:
        print(json.dumps(crossent_scaling(shapes, args.dtypes.split(","), cores, rounds)))
        return
    thread_counts = [1] if cores == 1 or args.cpu_time else [1, cores]
    clock = time.process_time if args.cpu_time else time.perf_counter

    rows = []
    header = (
        f"{'shape':>13s} {'dtype':>7s} {'thr':>3s} | {'grad ms':>8s} {'/torch':>6s} "
        f"{'/numpy':>6s} | {'fwd ms':>7s} {'/torch':>6s} {'/numpy':>6s}"
    )
    print(header)
    print("-" * len(header))
    for shape in shapes:
        for dtype in args.dtypes.split(","):
            for threads in thread_counts:
                ms = bench_one(shape, dtype, threads, rounds, clock)
                row = {"shape": list(shape), "dtype": dtype, "threads": threads, "ms": ms}
                row["grad_vs_torch"] = ms["loss+grad kernel"] / ms["torch fwd+bwd"]
                row["grad_vs_numpy"] = ms["loss+grad kernel"] / ms["loss+grad numpy"]
                row["fwd_vs_torch"] = ms["forward kernel"] / ms["torch forward"]
                row["fwd_vs_numpy"] = ms["forward kernel"] / ms["forward numpy"]
                rows.append(row)
                print(
                    f"{'x'.join(map(str, shape)):>13s} {dtype:>7s} {threads:3d} | "
                    f"{ms['loss+grad kernel']:8.2f} {row['grad_vs_torch']:6.2f} "
                    f"{row['grad_vs_numpy']:6.2f} | {ms['forward kernel']:7.2f} "
                    f"{row['fwd_vs_torch']:6.2f} {row['fwd_vs_numpy']:6.2f}",
                    flush=True,
                )
    scaling = {}
    for r1 in rows:
        for r2 in rows:
            same = r1["shape"] == r2["shape"] and r1["dtype"] == r2["dtype"]
            if same and r1["threads"] == 1 and r2["threads"] > 1:
                key = f"{'x'.join(map(str, r1['shape']))} {r1['dtype']}"
                scaling[key] = {
                    "loss+grad": r1["ms"]["loss+grad kernel"] / r2["ms"]["loss+grad kernel"],
                    "torch fwd+bwd": r1["ms"]["torch fwd+bwd"] / r2["ms"]["torch fwd+bwd"],
                }
    if scaling:
        print(f"\n1 → {thread_counts[-1]} threads speed-up, loss+grad (crossent / torch):")
        for key, value in scaling.items():
            print(f"  {key:>20s}: {value['loss+grad']:.2f} / {value['torch fwd+bwd']:.2f}")
    alone = {}
    if len(thread_counts) > 1:
        command = [sys.executable, __file__, "--scaling-only", "--dtypes", args.dtypes]
        if args.shapes:
            command += ["--shapes", args.shapes]
        if args.quick:
            command.append("--quick")
        alone = json.loads(subprocess.run(command, check=True, capture_output=True).stdout)
        print(f"\n1 → {cores} threads speed-up, crossent alone (a process without torch):")
        for key, value in alone.items():
            print(
                f"  {key:>20s}: loss+grad {value['loss+grad']:.2f}, forward {value['forward']:.2f}"
            )
    import torch

    meta = {
        "crossent": crossent.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cores": cores,
        "rounds": rounds,
        "clock": "process CPU time" if args.cpu_time else "wall (perf_counter)",
        "note": "ms are medians over interleaved rounds; ratios < 1 mean crossent is faster",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    results = RESULTS.with_name("bench_loss_cpu.json") if args.cpu_time else RESULTS
    results.write_text(
        json.dumps(
            {
                "meta": meta,
                "rows": rows,
                "thread_scaling": scaling,
                "thread_scaling_without_torch": alone,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {results}")


if __name__ == "__main__":
    main()
