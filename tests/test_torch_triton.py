"""The Triton back end of ``crossent.torch.linear_cross_entropy`` against a float64 reference.

The kernels run under Triton's interpreter (``TRITON_INTERPRET=1``) on CPU tensors, in a
subprocess, so that the interpreter setting never reaches other test modules. The reference
materialises the (n, C) scores in float64 and applies the back-end contract literally:

    raw = X Wᵀ + b,  z = cap·tanh(raw/cap),  lse_i = log Σ_j e^{z_ij},
    dot_i = a_i z_{i,k_i} + b_i Σ_j c_j z_ij + Σ_j P_ij z_ij,
    G = [r ⊙ softmax(z) − g ⊙ (a δ + b c + P)] ⊙ (1 − tanh²(raw/cap)),
    dX = G W,  dW = Gᵀ X,  db = Σ_i G_i.

float32 is held to ~1e-5 relative; bfloat16 and float16 to "no worse than the naive
computation in that dtype (16-bit GEMMs, float32 softmax) against float64 truth, plus a
small tolerance".
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")

SRC = Path(__file__).resolve().parents[1] / "src"

# (n, d, C)
SHAPES = {
    "odd": (47, 31, 123),
    "wide": (5, 64, 1000),
    "one_row": (1, 16, 7),
    "one_class": (9, 20, 1),
}
TARGETS = ("index", "smooth_cw", "none")  # index: a only (+ ignored rows); smooth_cw: a, b, cw
FLOAT32_RTOL = 2e-5
# 16-bit: allowed excess over the naive error in that dtype (relative to max |truth|)
SLACK = {"bfloat16": 2e-3, "float16": 2.5e-4}


def _cases() -> list[str]:
    """Every option combination on the odd shape (bfloat16: half of them, bias tied to P, to
    keep the interpreted run short); a spread of them on the others."""
    cases = []
    for bias, target, dense, cap, dtype in itertools.product(
        (True, False), TARGETS, (False, True), (None, 3.0), ("float32", "bfloat16")
    ):
        if dtype == "bfloat16" and bias != dense:
            continue
        cases.append(f"odd-{dtype}-{target}-bias{int(bias)}-P{int(dense)}-cap{cap}")
    for dtype in ("float32", "bfloat16"):
        cases.append(f"wide-{dtype}-smooth_cw-bias1-P1-cap30.0")
        cases.append(f"wide-{dtype}-index-bias0-P0-capNone")
    cases.append("odd-float16-smooth_cw-bias1-P1-cap3.0")
    cases.append("odd-float16-index-bias0-P0-capNone")
    cases.append("one_row-float32-smooth_cw-bias1-P1-cap3.0")
    cases.append("one_class-float32-index-bias1-P0-capNone")
    cases.append("one_class-bfloat16-smooth_cw-bias0-P1-cap3.0")
    return cases


CASES = _cases()


# --------------------------------------------------------------------------- worker side


def _parse(case: str) -> dict:
    shape, dtype, target, bias, dense, cap = case.split("-")
    return {
        "shape": SHAPES[shape],
        "dtype": dtype,
        "target": target,
        "bias": bias == "bias1",
        "dense": dense == "P1",
        "cap": None if cap == "capNone" else float(cap[3:]),
    }


def _inputs(case: str, seed: int = 0):
    """Random inputs of one case, in the case's dtype (the truth upcasts these exact values)."""
    import torch

    spec = _parse(case)
    n, d, n_classes = spec["shape"]
    dtype = getattr(torch, spec["dtype"])
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, d, generator=gen) * 0.5).to(dtype)  # (n, d)
    weight = (torch.randn(n_classes, d, generator=gen) * 0.5).to(dtype)  # (C, d)
    bias = (torch.randn(n_classes, generator=gen) * 0.5).to(dtype) if spec["bias"] else None
    target = torch.randint(0, n_classes, (n,), generator=gen)
    ignored = torch.rand(n, generator=gen) < 0.2  # rows with a = b = 0
    ignored[0] = False
    a = torch.zeros(n)
    b = torch.zeros(n)
    cw = None
    if spec["target"] in ("index", "smooth_cw"):
        a = torch.rand(n, generator=gen) + 0.5
    if spec["target"] == "smooth_cw":
        cw = torch.rand(n_classes, generator=gen) + 0.5
        b = torch.rand(n, generator=gen) * 0.1 / n_classes
    a[ignored] = 0.0
    b[ignored] = 0.0
    P = None
    if spec["dense"]:
        P = torch.softmax(torch.randn(n, n_classes, generator=gen), dim=1) * 0.7  # (n, C)
        P[ignored] = 0.0
    row_coef = torch.rand(n, generator=gen) + 0.5
    go = torch.randn(n, generator=gen)
    row_coef[ignored] = 0.0
    return x, weight, bias, target, a, b, cw, P, spec["cap"], row_coef, go


def _reference(x, weight, bias, target, a, b, cw, P, cap, row_coef, go, compute_dtype):
    """The contract written out on materialised scores; GEMMs in ``compute_dtype``.

    float64 gives the truth; bfloat16 gives the naive computation (bf16 scores and
    bf16 gradient GEMMs, float32 softmax).
    """
    import torch

    f64 = torch.float64
    work = torch.float64 if compute_dtype == torch.float64 else torch.float32
    xc, wc = x.to(compute_dtype), weight.to(compute_dtype)
    raw = (xc @ wc.T).to(work)  # (n, C) scores
    if bias is not None:
        raw = raw + bias.to(work)
    if cap is not None:
        th = torch.tanh(raw / cap)
        z = cap * th
        dcap = 1 - th * th
    else:
        z, dcap = raw, torch.ones_like(raw)
    n_classes = z.shape[1]
    lse = torch.logsumexp(z, dim=1)  # (n,)
    cw_ = torch.ones(n_classes, dtype=work) if cw is None else cw.to(work)
    onehot = torch.nn.functional.one_hot(target, n_classes).to(work)  # (n, C)
    mass = a.to(work)[:, None] * onehot + b.to(work)[:, None] * cw_[None, :]
    if P is not None:
        mass = mass + P.to(work)
    dot = (mass * z).sum(dim=1)
    probs = torch.exp(z - lse[:, None])  # (n, C)
    grad = (row_coef.to(work)[:, None] * probs - go.to(work)[:, None] * mass) * dcap
    gc = grad.to(compute_dtype)
    dx = (gc @ wc).to(f64)
    dw = (gc.T @ xc).to(f64)
    db = grad.sum(dim=0).to(f64)
    return {"lse": lse.to(f64), "dot": dot.to(f64), "dx": dx, "dw": dw, "db": db}


def _rel(err_of, truth):
    """max |err − truth| / max(1, max |truth|)."""
    scale = max(1.0, float(truth.abs().max())) if truth.numel() else 1.0
    return float((err_of.to(truth.dtype) - truth).abs().max()) / scale if truth.numel() else 0.0


def run_case(case: str) -> dict:
    """Run one case through the kernels; return the relative errors and the verdict."""
    import torch

    from crossent.torch._triton import triton_backward, triton_forward

    x, weight, bias, target, a, b, cw, P, cap, row_coef, go = _inputs(case)
    lse, dot = triton_forward(x, weight, bias, target, a, b, cw, P, cap)
    dx, dw, db = triton_backward(
        x, weight, bias, target, a, b, cw, P, cap, lse, row_coef, go, True, True, True
    )
    args = (x, weight, bias, target, a, b, cw, P, cap, row_coef, go)
    truth = _reference(*args, compute_dtype=torch.float64)
    ours = {"lse": lse, "dot": dot, "dx": dx, "dw": dw, "db": db}
    assert lse.dtype == dot.dtype == dw.dtype == torch.float32 and dx.dtype == x.dtype
    assert (db is None) == (bias is None)
    errors = {k: _rel(v, truth[k]) for k, v in ours.items() if v is not None}
    failures = []
    if x.dtype == torch.float32:
        failures = [f"{k}: {e:.2e}" for k, e in errors.items() if e > FLOAT32_RTOL]
    else:
        naive = _reference(*args, compute_dtype=x.dtype)
        for k, e in errors.items():
            slack = SLACK[str(x.dtype).removeprefix("torch.")]
            bound = _rel(naive[k], truth[k]) + slack
            if e > bound:
                failures.append(f"{k}: {e:.2e} > naive {x.dtype} {bound - slack:.2e} + slack")
    return {"errors": errors, "failures": failures}


def run_partial_gradients() -> dict:
    """need_dx/need_dw/need_db switched off one by one give None and the same others."""
    from crossent.torch._triton import triton_backward, triton_forward

    x, weight, bias, target, a, b, cw, P, cap, row_coef, go = _inputs(CASES[0], seed=1)
    lse, _ = triton_forward(x, weight, bias, target, a, b, cw, P, cap)
    args = (x, weight, bias, target, a, b, cw, P, cap, lse, row_coef, go)
    full = triton_backward(*args, True, True, True)
    failures = []
    for mask in ((True, False, False), (False, True, False), (False, False, True)):
        part = triton_backward(*args, *mask)
        for want, got, ref in zip(mask, part, full, strict=True):
            if (got is None) == want or (want and not bool((got == ref).all())):
                failures.append(f"mask {mask}")
    return {"errors": {}, "failures": failures}


def run_chunked_dweight() -> dict:
    """dweight_dtype=bfloat16 with a tiny scratch (2 class chunks) matches the float32 dW."""
    import torch

    from crossent.torch._triton import triton_backward, triton_forward

    x, weight, bias, target, a, b, cw, P, cap, row_coef, go = _inputs(
        "odd-bfloat16-smooth_cw-bias1-P1-cap3.0", seed=2
    )
    lse, _ = triton_forward(x, weight, bias, target, a, b, cw, P, cap)
    args = (x, weight, bias, target, a, b, cw, P, cap, lse, row_coef, go, True, True, True)
    dx, dw, db = triton_backward(*args)
    dx_c, dw_c, db_c = triton_backward(
        *args, dweight_dtype=torch.bfloat16, max_scratch_bytes=64 * 31 * 4
    )
    failures = []
    if dw_c.dtype != torch.bfloat16:
        failures.append(f"dweight dtype {dw_c.dtype}")
    ulp = 2.0**-7 * float(dw.abs().max())
    if float((dw_c.float() - dw.to(torch.bfloat16).float()).abs().max()) > ulp:
        failures.append("chunked dW differs from the float32 dW")
    if not (torch.allclose(dx_c.float(), dx.float(), rtol=1e-2, atol=1e-6)):
        failures.append("chunked dX differs")
    if not torch.allclose(db_c, db, rtol=1e-5, atol=1e-7):
        failures.append("chunked db differs")
    return {"errors": {}, "failures": failures}


EXTRA = {"partial": run_partial_gradients, "chunked": run_chunked_dweight}


def compile_for_sm90() -> dict:
    """Compile both kernels (bf16, every option on) for an H100/H200 without a GPU.

    Runs Triton's whole pipeline down to the cubin with the wheel's ptxas, so a kernel
    that the interpreter accepts but the compiler rejects fails here, on a CPU.
    """
    import torch
    import triton
    from triton.backends.compiler import GPUTarget

    from crossent.torch import _triton as kernels

    cfg = kernels._blocks(torch.bfloat16)
    failures = []
    for fn, extra in (
        (kernels._forward_kernel, {}),
        (
            kernels._backward_kernel,
            {"NEED_DX": True, "NEED_DW": True, "NEED_DB": True, "GROUP_M": 8},
        ),
    ):
        signature = {}
        for name in fn.arg_names:
            if name in ("x_ptr", "w_ptr", "bias_ptr"):
                signature[name] = "*bf16"
            elif name.endswith("_ptr"):
                signature[name] = "*i64" if name == "target_ptr" else "*fp32"
            elif name == "softcap":
                signature[name] = "fp32"
            elif name.isupper() or name.startswith(("HAS_", "NEED_", "BLOCK_")):
                signature[name] = "constexpr"
            else:
                signature[name] = "i32"
        flags = {"HAS_BIAS": True, "HAS_CW": True, "HAS_P": True, "HAS_SOFTCAP": True}
        blocks = {k: cfg[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K")}
        constants = {**flags, **extra, **blocks, "DOT_F32": False, "PRECISION": "tf32"}
        source = triton.compiler.ASTSource(fn=fn, signature=signature, constexprs=constants)
        options = {"num_warps": cfg["num_warps"], "num_stages": cfg["num_stages"]}
        try:
            compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)
            if not compiled.asm.get("cubin"):
                failures.append(f"{fn.__name__}: no cubin")
        except Exception as exc:
            failures.append(f"{fn.__name__}: {type(exc).__name__}: {str(exc)[:500]}")
    return {"errors": {}, "failures": failures}


def _worker(names: list[str]) -> None:
    results = {}
    for name in names:
        try:
            if name == "compile_sm90":
                results[name] = compile_for_sm90()
            else:
                results[name] = EXTRA[name]() if name in EXTRA else run_case(name)
        except Exception as exc:  # reported per case to the parent
            results[name] = {"errors": {}, "failures": [f"{type(exc).__name__}: {exc}"]}
    print("RESULTS " + json.dumps(results))


# --------------------------------------------------------------------------- pytest side


@pytest.fixture(scope="module")
def results() -> dict:
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(SRC))
    proc = subprocess.run(
        [sys.executable, __file__, *CASES, *EXTRA],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    return json.loads(lines[-1][len("RESULTS ") :])


@pytest.mark.slow
def test_kernels_compile_for_sm90() -> None:
    ptxas = Path(pytest.importorskip("triton").__file__).parent / "backends/nvidia/bin/ptxas"
    if not ptxas.exists():
        pytest.skip("this Triton wheel has no ptxas")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(SRC)
    proc = subprocess.run(
        [sys.executable, __file__, "compile_sm90"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    outcome = json.loads(lines[-1][len("RESULTS ") :])["compile_sm90"]
    assert not outcome["failures"], outcome["failures"]


@pytest.mark.parametrize("case", [*CASES, *EXTRA])
def test_triton_kernels_match_reference(results: dict, case: str) -> None:
    outcome = results[case]
    assert not outcome["failures"], f"{case}: {outcome['failures']} (errors {outcome['errors']})"


if __name__ == "__main__":
    _worker(sys.argv[1:])
