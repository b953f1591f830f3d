"""GPU benchmark: the fused linear cross-entropy against its peers, and the classifier's fit.

Fused loss (bf16, forward + backward of the mean cross-entropy of ``x @ wᵀ``), at
8192 × 4096 × 128256 and 8192 × 2304 × 256000 (n × d × C), for

- ``crossent``: ``crossent.torch.linear_cross_entropy`` (the front end, dispatching to Triton);
- ``crossent-triton``: the Triton back end (``crossent.torch._triton``) called directly
  through a minimal autograd Function, to time the kernels apart from the front end;
- ``naive``: ``F.cross_entropy(F.linear(x, w).float(), t)``;
- ``torch-lce``: ``torch.nn.functional.linear_cross_entropy`` when this torch has it;
- ``liger``: ``LigerFusedLinearCrossEntropyLoss`` (liger-kernel 0.8.5);
- ``cce`` and ``cce-exact``: ``cut_cross_entropy.linear_cross_entropy`` (25.1.1) with its
  default gradient filter and with ``filter_eps=None``.

Each is timed by CUDA events (median of ``--repeat`` runs after two warm-ups), its extra peak
memory is ``max_memory_allocated`` minus what was allocated before the call (the inputs)
— reported whole and less the returned gradients — and its loss, dX and dW are compared with
a float32 reference computed in row chunks: relative error ``‖got − ref‖ / ‖ref‖``.

Classifier: L2-regularised softmax regression, ``L_total = Σ_i CE_i + (λ/2)‖W‖²`` (intercept
not penalised, λ = 1), at probe-1000 (50000 × 256: the recipe of ``bench_fit.probe_1000``,
drawn on the GPU with torch's generator, so other numbers than bench_fit's) and
250000 × 1024, both 1000 classes, float32 on the GPU: a plain ``torch.optim.LBFGS`` fit
(full batch, strong-Wolfe), crossent's ``SoftmaxClassifier(device="cuda")`` and scikit-learn's
``LogisticRegression`` with array-API dispatch on CUDA tensors. Each method's final L_total
is evaluated the same way (float64, chunked).

Targets (marked met/missed in the output): fused loss time ≤ naive and ≤ 0.8 × Liger; extra
peak memory less the gradients ≤ 1.2 GiB at both shapes; dX/dW errors ≤ naive bf16's;
the classifier reaches torch-LBFGS's L_total no slower than torch-LBFGS.

Usage::

    python benchmarks/bench_gpu.py                 # on a CUDA machine, < 8 minutes on an H200
    python benchmarks/bench_gpu.py --cpu-smoke     # every code path at tiny shapes on CPU
                                                   # (Triton under TRITON_INTERPRET=1)

Writes ``benchmarks/results/bench_gpu.json`` (and ``$OUT/bench_gpu.json`` when ``OUT`` is set;
a smoke run writes ``$OUT/bench_gpu_smoke.json`` only).
A failure of one method is caught and recorded; the others still run.
"""

from __future__ import annotations

import os
import sys

if "--cpu-smoke" in sys.argv:  # before anything imports triton
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("SCIPY_ARRAY_API", "1")  # before scipy: scikit-learn's array-API mode

import argparse
import importlib.util
import json
import math
import platform
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
if str(SRC) not in sys.path:
    sys.path.append(str(SRC))  # after PYTHONPATH: run_gpu.sh puts this src first

GIB = 2.0**30
LAMBDA = 1.0
LOSS_SHAPES = [(8192, 4096, 128256), (8192, 2304, 256000)]  # (n, d, C)
SMOKE_LOSS_SHAPES = [(40, 32, 300), (24, 48, 130)]
FIT_SHAPES = [("probe-1000", 50000, 256, 1000), ("wide-250k", 250000, 1024, 1000)]
SMOKE_FIT_SHAPES = [("probe-smoke", 600, 16, 10)]


# --------------------------------------------------------------------------- helpers


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, repeat: int) -> list[float]:
    """Seconds per call of ``fn`` (CUDA events on a GPU, wall clock on a CPU), 2 warm-ups."""
    for _ in range(2):
        fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return times


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])


def _rel(got: torch.Tensor, ref: torch.Tensor) -> float:
    """‖got − ref‖ / ‖ref‖ in float64 (Frobenius)."""
    ref64 = ref.double()
    return float((got.double() - ref64).norm() / ref64.norm().clamp_min(1e-300))


def load_triton_backend():
    """``crossent.torch._triton``, from the package or, failing that, from its file."""
    try:
        from crossent.torch import _triton

        return _triton
    except ImportError:
        path = SRC / "crossent" / "torch" / "_triton.py"
        spec = importlib.util.spec_from_file_location("crossent_triton_backend", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module


def triton_direct_loss(backend) -> Callable:
    """Mean cross-entropy of ``x @ wᵀ`` with class-index targets on the bare back end.

    dW comes back in the weight's dtype, accumulated in float32 per chunk of classes
    (``dweight_dtype``), so no (C, d) float32 buffer exists.

    loss_i = lse_i − z_{i,k_i} (a = 1, b = 0); mean over rows, so with upstream gradient g
    the back end gets row_coef = go = g/n.
    """

    class _Direct(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight, target):
            n = x.shape[0]
            ones = torch.ones(n, dtype=torch.float32, device=x.device)
            zeros = torch.zeros(n, dtype=torch.float32, device=x.device)
            lse, dot = backend.triton_forward(
                x, weight, None, target, ones, zeros, None, None, None
            )
            ctx.save_for_backward(x, weight, target, lse)
            return (lse - dot).mean()

        @staticmethod
        def backward(ctx, grad_loss):
            x, weight, target, lse = ctx.saved_tensors
            n = x.shape[0]
            ones = torch.ones(n, dtype=torch.float32, device=x.device)
            zeros = torch.zeros(n, dtype=torch.float32, device=x.device)
            coef = (grad_loss.float() / n).expand(n).contiguous()  # (n,)
            dx, dw, _ = backend.triton_backward(
                x, weight, None, target, ones, zeros, None, None, None, lse, coef, coef,
                ctx.needs_input_grad[0], ctx.needs_input_grad[1], False,
                dweight_dtype=weight.dtype,
            )  # fmt: skip
            return dx, dw, None

    return lambda x, w, t: _Direct.apply(x, w, t)


def loss_methods() -> dict[str, Callable | str]:
    """name -> loss(x, w, t), or the reason it is unavailable."""
    methods: dict[str, Callable | str] = {}
    try:
        from crossent.torch import linear_cross_entropy

        methods["crossent"] = lambda x, w, t: linear_cross_entropy(x, w, t)
    except Exception as exc:
        methods["crossent"] = f"unavailable: {_error(exc)}"
    try:
        methods["crossent-triton"] = triton_direct_loss(load_triton_backend())
    except Exception as exc:
        methods["crossent-triton"] = f"unavailable: {_error(exc)}"
    methods["naive"] = lambda x, w, t: F.cross_entropy(F.linear(x, w).float(), t)
    if hasattr(F, "linear_cross_entropy"):
        methods["torch-lce"] = lambda x, w, t: F.linear_cross_entropy(x, w, t)
    else:
        methods["torch-lce"] = (
            f"unavailable: torch {torch.__version__} has no F.linear_cross_entropy"
        )
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        liger = LigerFusedLinearCrossEntropyLoss()
        methods["liger"] = lambda x, w, t: liger(w, x, t)
    except Exception as exc:
        methods["liger"] = f"unavailable: {_error(exc)}"
    try:
        from cut_cross_entropy import linear_cross_entropy as cce

        methods["cce"] = lambda x, w, t: cce(x, w, t)
        methods["cce-exact"] = lambda x, w, t: cce(x, w, t, filter_eps=None)
    except Exception as exc:
        methods["cce"] = methods["cce-exact"] = f"unavailable: {_error(exc)}"
    return methods


# --------------------------------------------------------------------------- fused loss


def reference_loss(x, w, t, chunk: int = 1024):
    """Mean cross-entropy and its gradients in float32 (no TF32), chunked over rows.

    Returns loss (float), dX (n, d) float32, dW (C, d) float32.
    """
    n = x.shape[0]
    w32 = w.float()
    dx = torch.empty(x.shape, dtype=torch.float32, device=x.device)  # (n, d)
    dw = torch.zeros(w.shape, dtype=torch.float32, device=x.device)  # (C, d)
    total = 0.0
    for start in range(0, n, chunk):
        xc = x[start : start + chunk].float()  # (m, d)
        tc = t[start : start + chunk]
        scores = xc @ w32.T  # (m, C)
        lse = torch.logsumexp(scores, dim=1)  # (m,)
        total += float((lse - scores.gather(1, tc[:, None])[:, 0]).double().sum())
        grad = torch.exp(scores - lse[:, None])  # (m, C) softmax
        grad[torch.arange(len(tc), device=x.device), tc] -= 1.0
        grad /= n
        dx[start : start + chunk] = grad @ w32
        dw += grad.T @ xc
        del scores, grad
    return total / n, dx, dw


def bench_loss_shape(methods, n, d, n_classes, dtype, device, repeat, deadline) -> dict:
    """Time, memory and errors of every method at one shape."""
    gen = torch.Generator(device=device).manual_seed(0)
    x = (torch.randn(n, d, generator=gen, device=device) / math.sqrt(d)).to(dtype)
    w = (torch.randn(n_classes, d, generator=gen, device=device)).to(dtype)
    t = torch.randint(0, n_classes, (n,), generator=gen, device=device)
    prev_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        ref_loss, ref_dx, ref_dw = reference_loss(x, w, t)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev_tf32
    x.requires_grad_(True)
    w.requires_grad_(True)
    rows = {}
    for name, fn in methods.items():
        if isinstance(fn, str):
            rows[name] = {"status": fn}
            continue
        if time.perf_counter() > deadline:
            rows[name] = {"status": "skipped: time budget spent"}
            continue
        row: dict = {}
        try:

            def step(fn=fn):
                loss = fn(x, w, t)
                return (loss, *torch.autograd.grad(loss, (x, w)))

            # errors and memory from one call
            _sync(device)
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
            loss, gx, gw = step()
            _sync(device)
            if device.type == "cuda":
                peak = torch.cuda.max_memory_allocated(device) - before
                grads = gx.numel() * gx.element_size() + gw.numel() * gw.element_size()
                row["extra_peak_gib"] = peak / GIB
                row["extra_peak_less_grads_gib"] = (peak - grads) / GIB
            row["loss_rel_err"] = abs(float(loss.detach()) - ref_loss) / abs(ref_loss)
            row["dx_rel_err"] = _rel(gx, ref_dx)
            row["dw_rel_err"] = _rel(gw, ref_dw)
            del loss, gx, gw
            times = time_call(step, device, repeat)
            row["median_s"] = _median(times)
            row["runs"] = len(times)
            row["status"] = "ok"
        except Exception as exc:
            row["status"] = f"error: {_error(exc)}"
            row["traceback"] = traceback.format_exc()[-2000:]
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rows[name] = row
    return {"shape": [n, d, n_classes], "dtype": str(dtype), "methods": rows}


def loss_targets(result: dict, name: str) -> dict:
    """Targets of one crossent variant at one shape: met (True), missed (False) or None."""
    rows = result["methods"]
    ours, naive, liger = rows.get(name, {}), rows.get("naive", {}), rows.get("liger", {})

    def cmp(key, other, factor=1.0):
        if ours.get("status") != "ok" or other.get("status") != "ok":
            return None
        return ours[key] <= factor * other[key]

    mem = ours.get("extra_peak_less_grads_gib")
    return {
        "time<=naive": cmp("median_s", naive),
        "time<=0.8*liger": cmp("median_s", liger, 0.8),
        "extra_mem<=1.2GiB": None if mem is None else mem <= 1.2,
        "dx_err<=naive": cmp("dx_rel_err", naive),
        "dw_err<=naive": cmp("dw_rel_err", naive),
    }


# --------------------------------------------------------------------------- classifier


def make_probe(n, d, n_classes, device, seed=0):
    """bench_fit's probe recipe: class means + noise, features scaled over 0.1 … 10."""
    gen = torch.Generator(device=device).manual_seed(seed)
    means = torch.randn(n_classes, d, generator=gen, device=device) * 0.5  # (C, d)
    scales = torch.logspace(-1, 1, d, device=device)  # geomspace(0.1, 10, d)
    y = torch.randint(0, n_classes, (n,), generator=gen, device=device)
    X = (means[y] + torch.randn(n, d, generator=gen, device=device)) * scales  # (n, d)
    return X.float().contiguous(), y


def l_total(W, b, X, y, chunk=8192) -> float:
    """Σ_i (logsumexp(f_i) − f_{i,y_i}) + (λ/2)‖W‖² in float64, f = X Wᵀ + b."""
    W64 = torch.as_tensor(W, device=X.device).double()
    b64 = torch.as_tensor(b, device=X.device).double()
    total = 0.0
    for start in range(0, X.shape[0], chunk):
        scores = X[start : start + chunk].double() @ W64.T + b64  # (m, C)
        picked = scores.gather(1, y[start : start + chunk, None])[:, 0]
        total += float((torch.logsumexp(scores, dim=1) - picked).sum())
    return total + 0.5 * LAMBDA * float((W64 * W64).sum())


def fit_torch_lbfgs(X, y, n_classes, max_iter):
    """Full-batch torch.optim.LBFGS (strong Wolfe) on L_total; returns (W, b, iterations)."""
    d = X.shape[1]
    W = torch.zeros(n_classes, d, device=X.device, requires_grad=True)
    b = torch.zeros(n_classes, device=X.device, requires_grad=True)
    opt = torch.optim.LBFGS(
        [W, b], lr=1.0, max_iter=max_iter, history_size=10, line_search_fn="strong_wolfe",
        tolerance_grad=1e-5, tolerance_change=1e-9,
    )  # fmt: skip

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(X @ W.T + b, y, reduction="sum") + 0.5 * LAMBDA * (W * W).sum()
        loss.backward()
        return loss

    opt.step(closure)
    n_iter = opt.state[opt._params[0]].get("n_iter", None)
    return W.detach(), b.detach(), n_iter


def fit_crossent(X, y, max_iter):
    from crossent import SoftmaxClassifier

    try:
        model = SoftmaxClassifier(l2=LAMBDA, max_iter=max_iter, device=X.device.type)
    except TypeError:  # no device parameter: fit on the tensors
        model = SoftmaxClassifier(l2=LAMBDA, max_iter=max_iter)
    model.fit(X, y)
    return model.coef_, model.intercept_, getattr(model, "n_iter_", None)


def fit_sklearn(X, y, max_iter):
    import sklearn
    from sklearn.linear_model import LogisticRegression

    with sklearn.config_context(array_api_dispatch=True):
        model = LogisticRegression(C=1.0 / LAMBDA, max_iter=max_iter).fit(X, y)
    return model.coef_, model.intercept_, getattr(model, "n_iter_", None)


def bench_fit_shape(name, n, d, n_classes, device, max_iter, deadline) -> dict:
    X, y = make_probe(n, d, n_classes, device)
    fits = {"torch-lbfgs": fit_torch_lbfgs, "crossent": fit_crossent, "sklearn-array-api": None}
    rows = {}
    for method in fits:
        if time.perf_counter() > deadline:
            rows[method] = {"status": "skipped: time budget spent"}
            continue
        try:
            _sync(device)
            t0 = time.perf_counter()
            if method == "torch-lbfgs":
                W, b, n_iter = fit_torch_lbfgs(X, y, n_classes, max_iter)
            elif method == "crossent":
                W, b, n_iter = fit_crossent(X, y, max_iter)
            else:
                W, b, n_iter = fit_sklearn(X, y, max_iter)
            _sync(device)
            seconds = time.perf_counter() - t0
            n_iter = n_iter.tolist() if hasattr(n_iter, "tolist") else n_iter
            rows[method] = {
                "status": "ok",
                "seconds": seconds,
                "l_total": l_total(W, b, X, y),
                "n_iter": n_iter,
            }
        except Exception as exc:
            rows[method] = {"status": f"unavailable: {_error(exc)}"}
            rows[method]["traceback"] = traceback.format_exc()[-2000:]
    ref, ours = rows["torch-lbfgs"], rows["crossent"]
    target = None
    if ref.get("status") == "ok" and ours.get("status") == "ok":
        reached = ours["l_total"] <= ref["l_total"] * (1 + 1e-6)
        target = bool(reached and ours["seconds"] <= ref["seconds"])
    return {"shape": [name, n, d, n_classes], "methods": rows, "target_met": target}


# --------------------------------------------------------------------------- main


def _fmt(value, spec):
    width = int(spec.split(".")[0] or 0)
    return "-".rjust(width) if value is None else format(value, spec)


def print_tables(results: dict) -> None:
    print(f"\n{results['device']}  torch {results['torch']}  triton {results['triton']}")
    for shape in results["loss"]:
        print(f"\nfused loss {shape['shape']} {shape['dtype']}")
        print(f"{'method':<16}{'ms':>9}{'peak GiB':>10}{'-grads':>8}{'loss err':>10}"
              f"{'dX err':>10}{'dW err':>10}  status")  # fmt: skip
        for name, row in shape["methods"].items():
            ms = None if "median_s" not in row else 1e3 * row["median_s"]
            print(
                f"{name:<16}{_fmt(ms, '9.2f')}{_fmt(row.get('extra_peak_gib'), '10.2f')}"
                f"{_fmt(row.get('extra_peak_less_grads_gib'), '8.2f')}"
                f"{_fmt(row.get('loss_rel_err'), '10.1e')}{_fmt(row.get('dx_rel_err'), '10.1e')}"
                f"{_fmt(row.get('dw_rel_err'), '10.1e')}  {row['status'][:60]}"
            )
        for name, marks in shape["targets"].items():
            print(f"  targets {name}: " + ", ".join(
                f"{k} {'-' if v is None else ('met' if v else 'MISSED')}" for k, v in marks.items()
            ))  # fmt: skip
    for shape in results["classifier"]:
        print(f"\nclassifier {shape['shape']}")
        for name, row in shape["methods"].items():
            print(f"{name:<20}{_fmt(row.get('seconds'), '9.2f')} s  "
                  f"L_total {_fmt(row.get('l_total'), '.8g')}  iters {row.get('n_iter')}  "
                  f"{row['status'][:60]}")  # fmt: skip
        mark = shape["target_met"]
        print(f"  target crossent reaches torch-LBFGS L_total no slower: "
              f"{'-' if mark is None else ('met' if mark else 'MISSED')}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on CPU")
    parser.add_argument("--repeat", type=int, default=10, help="timed runs per method (>= 10)")
    parser.add_argument("--skip-loss", action="store_true")
    parser.add_argument("--skip-classifier", action="store_true")
    parser.add_argument("--max-iter", type=int, default=500, help="classifier iterations cap")
    parser.add_argument(
        "--budget-s", type=float, default=420.0, help="start no new method after this many s"
    )
    args = parser.parse_args()
    if args.cpu_smoke:
        device = torch.device("cpu")
        loss_shapes, fit_shapes, repeat, max_iter = SMOKE_LOSS_SHAPES, SMOKE_FIT_SHAPES, 2, 50
    else:
        if not torch.cuda.is_available():
            sys.exit("bench_gpu: no CUDA device (use --cpu-smoke to check the script on a CPU)")
        device = torch.device("cuda")
        loss_shapes, fit_shapes = LOSS_SHAPES, FIT_SHAPES
        repeat, max_iter = max(10, args.repeat), args.max_iter
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    results: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (smoke)",
        "torch": torch.__version__,
        "triton": triton_version,
        "python": platform.python_version(),
        "cpu_smoke": args.cpu_smoke,
        "loss": [],
        "classifier": [],
    }
    started = time.perf_counter()
    deadline = started + args.budget_s
    if not args.skip_loss:
        methods = loss_methods()
        for n, d, n_classes in loss_shapes:
            shape = bench_loss_shape(
                methods, n, d, n_classes, torch.bfloat16, device, repeat, deadline
            )
            shape["targets"] = {
                name: loss_targets(shape, name) for name in ("crossent", "crossent-triton")
            }
            results["loss"].append(shape)
            print(f"[{time.perf_counter() - started:.0f} s] loss {shape['shape']} done", flush=True)
    if not args.skip_classifier:
        for name, n, d, n_classes in fit_shapes:
            shape = bench_fit_shape(name, n, d, n_classes, device, max_iter, deadline)
            results["classifier"].append(shape)
            print(f"[{time.perf_counter() - started:.0f} s] classifier {name} done", flush=True)
    results["seconds"] = time.perf_counter() - started
    print_tables(results)
    text = json.dumps(results, indent=1)
    name = "bench_gpu_smoke.json" if args.cpu_smoke else "bench_gpu.json"
    # a smoke run leaves the committed results alone
    targets = [] if args.cpu_smoke else [HERE / "results" / name]
    if os.environ.get("OUT"):
        targets.append(Path(os.environ["OUT"]) / name)
    for path in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
