"""crossent.torch.linear_cross_entropy against F.cross_entropy(F.linear(...)), fwd+bwd on CPU.

For each peer (naive PyTorch; crossent "mean", the fused 3-product path; crossent "none"
summed, the recomputing 4-product path) it prints and saves
(benchmarks/results/bench_torch_linear_ce.json): the median wall and CPU seconds of fwd+bwd
over ``--repeat`` runs (peers interleaved; on a shared machine CPU seconds are the steadier
measure), the extra peak RSS of one fwd+bwd in a fresh process (VmHWM after minus VmRSS
before, after a small warm-up), and the largest error of loss, dx and dW against a float64
computation. Issue #9's goal: time <= naive, extra memory <= dW + 64 MiB.

    python benchmarks/bench_torch_linear_ce.py [--shape 2048 1024 32000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from crossent.torch import linear_cross_entropy

PEERS = ("naive", "crossent_mean", "crossent_none")


def loss_of(peer, x, w, b, t):
    if peer == "naive":
        return F.cross_entropy(F.linear(x, w, b), t)
    if peer == "crossent_mean":
        return linear_cross_entropy(x, w, t, b)
    return linear_cross_entropy(x, w, t, b, reduction="none").sum() / t.numel()


def problem(n, d, C, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g).to(dtype).requires_grad_()
    w = (torch.randn(C, d, generator=g) * 0.02).to(dtype).requires_grad_()
    b = torch.zeros(C, dtype=dtype, requires_grad=True)
    return x, w, b, torch.randint(0, C, (n,), generator=g)


def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    return 0


def memory_child(peer, n, d, C):
    """Run in a fresh process: print the extra peak RSS of one fwd+bwd, in bytes.

    At most 4 threads, as in tests/test_torch_memory.py: the BLAS workspace grows about
    5 MiB per thread, and the bound there is for 4.
    """
    torch.set_num_threads(min(4, torch.get_num_threads()))
    small = problem(64, d, 1000)
    loss_of(peer, *small).backward()  # warm-up
    x, w, b, t = problem(n, d, C)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    before = status("VmRSS")
    loss_of(peer, x, w, b, t).backward()
    print(status("VmHWM") - before)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", type=int, nargs=3, default=[2048, 1024, 32000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    n, d, C = args.shape
    if args.memory_child:
        memory_child(args.memory_child, n, d, C)
        return
    x, w, b, t = problem(n, d, C)
    times = {p: [] for p in PEERS}
    for peer in PEERS:  # warm-up: the custom op's first call costs about a second, once
        loss_of(peer, *problem(64, d, 1000)).backward()
    for _ in range(args.repeat):
        for peer in PEERS:
            x.grad = w.grad = b.grad = None
            wall, cpu = time.perf_counter(), time.process_time()
            loss_of(peer, x, w, b, t).backward()
            times[peer].append((time.perf_counter() - wall, time.process_time() - cpu))
    x64, w64, b64 = (p.detach().double().requires_grad_() for p in (x, w, b))
    truth_loss = F.cross_entropy(F.linear(x64, w64, b64), t)
    truth = [truth_loss, *torch.autograd.grad(truth_loss, (x64, w64))]
    rows = []
    for peer in PEERS:
        x.grad = w.grad = b.grad = None
        loss = loss_of(peer, x, w, b, t)
        got = [loss, *torch.autograd.grad(loss, (x, w))]
        errors = [
            float((g.detach().double() - r.detach()).abs().max())
            for g, r in zip(got, truth, strict=True)
        ]
        out = subprocess.run(
            [sys.executable, __file__, "--shape", str(n), str(d), str(C), "--memory-child", peer],
            capture_output=True,
            text=True,
            check=True,
            env=dict(os.environ),
        )
        rows.append(
            dict(
                peer=peer,
                wall_s=statistics.median(a for a, _ in times[peer]),
                cpu_s=statistics.median(c for _, c in times[peer]),
                extra_peak_mib=int(out.stdout.split()[-1]) / 2**20,
                err_loss=errors[0],
                err_dx=errors[1],
                err_dw=errors[2],
            )
        )
    print(
        f"n, d, C = {n}, {d}, {C} float32, {torch.get_num_threads()} threads; "
        f"dW = {C * d * 4 / 2**20:.0f} MiB"
    )
    print(
        f"{'peer':15s} {'wall s':>7s} {'cpu s':>7s} {'extra MiB':>10s} "
        f"{'err loss':>9s} {'err dx':>9s} {'err dW':>9s}"
    )
    for r in rows:
        print(
            f"{r['peer']:15s} {r['wall_s']:7.2f} {r['cpu_s']:7.2f} {r['extra_peak_mib']:10.1f} "
            f"{r['err_loss']:9.2e} {r['err_dx']:9.2e} {r['err_dw']:9.2e}"
        )
    path = os.path.join(os.path.dirname(__file__), "results", "bench_torch_linear_ce.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(dict(shape=[n, d, C], threads=torch.get_num_threads(), rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
