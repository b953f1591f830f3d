"""Tests of crossent.objective: ``L_total`` and its gradient, the one hot path.

``L_total(W, b) = Σ_i s_i (lse(z_i) − z_{i,k_i}) + (λ/2)‖W‖²`` with ``z = X Wᵀ + b``.

References nobody here wrote: PyTorch autograd of the same objective written with
``torch.nn.functional.cross_entropy`` (float64), central finite differences of the
objective's own value, and plain NumPy formulas (row deletion, row repetition).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import crossent.objective
from crossent import _threads
from crossent.objective import LinearSoftmaxObjective, loss_gradient

pytestmark = pytest.mark.usefixtures("single_blas_thread")

FD_RTOL = 1e-7  # central differences, normwise relative


# ------------------------------------------------------------------ data and references


def make_problem(
    n: int, d: int, n_classes: int, *, seed: int = 0, weighted: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Random ``X (n, d)``, ``y (n,)``, ``W (C, d)``, ``b (C,)`` and weights ``s (n,)``."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = rng.integers(0, n_classes, size=n)
    W = 0.5 * rng.standard_normal((n_classes, d))
    b = rng.standard_normal(n_classes)
    s = rng.uniform(0.1, 3.0, size=n) if weighted else None
    return X, y, W, b, s


def torch_objective(
    X: np.ndarray,
    y: np.ndarray,
    W: np.ndarray,
    b: np.ndarray | None,
    *,
    l2: float,
    sample_weight: np.ndarray | None,
) -> tuple[float, np.ndarray, np.ndarray]:
    """``L_total`` and its autograd gradient in float64 torch (b's gradient 0 without b)."""
    X_t = torch.tensor(X, dtype=torch.float64)
    W_t = torch.tensor(W, dtype=torch.float64, requires_grad=True)
    scores = X_t @ W_t.T  # (n, C)
    b_t = None
    if b is not None:
        b_t = torch.tensor(b, dtype=torch.float64, requires_grad=True)
        scores = scores + b_t
    losses = F.cross_entropy(scores, torch.as_tensor(y, dtype=torch.long), reduction="none")
    if sample_weight is not None:
        losses = losses * torch.tensor(sample_weight, dtype=torch.float64)
    total = losses.sum() + 0.5 * l2 * (W_t * W_t).sum()
    total.backward()
    assert W_t.grad is not None
    grad_b = np.zeros(W.shape[0]) if b_t is None else b_t.grad.numpy()  # type: ignore[union-attr]
    return float(total.detach()), W_t.grad.numpy(), grad_b


def central_differences(f: Any, x: np.ndarray, step: float = 1e-5) -> np.ndarray:
    """``(f(x + h e_j) − f(x − h e_j)) / 2h`` for every entry ``j`` of ``x``."""
    grad = np.empty(x.size)
    flat = x.ravel().copy()
    for j in range(flat.size):
        saved = flat[j]
        flat[j] = saved + step
        up = f(flat.reshape(x.shape))
        flat[j] = saved - step
        down = f(flat.reshape(x.shape))
        flat[j] = saved
        grad[j] = (up - down) / (2 * step)
    return grad.reshape(x.shape)


def normwise_rel_err(actual: np.ndarray, desired: np.ndarray) -> float:
    return float(np.max(np.abs(actual - desired)) / max(np.max(np.abs(desired)), 1e-300))


# odd shapes on purpose: (n, d, C)
SHAPES = [(47, 31, 13), (1, 5, 3), (120, 7, 2), (64, 1, 5)]


# ------------------------------------------------------------------ against torch autograd


@pytest.mark.parametrize(
    ("shape", "fit_intercept", "weighted", "l2"),
    [
        (shape, fit_intercept, weighted, l2)
        for shape, fit_intercept, weighted, l2 in itertools.product(
            SHAPES, [True, False], [False, True], [0.0, 0.7]
        )
    ],
)
def test_matches_torch_autograd(shape, fit_intercept, weighted, l2):
    X, y, W, b, s = make_problem(*shape, seed=sum(shape), weighted=weighted)
    intercept = b if fit_intercept else None
    objective = LinearSoftmaxObjective(
        X, y, shape[2], l2=l2, sample_weight=s, fit_intercept=fit_intercept
    )
    loss, grad_W, grad_b = objective.loss_gradient(W, intercept)
    ref_loss, ref_W, ref_b = torch_objective(X, y, W, intercept, l2=l2, sample_weight=s)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
    np.testing.assert_allclose(grad_W, ref_W, rtol=1e-10, atol=1e-12 * np.abs(ref_W).max())
    np.testing.assert_allclose(grad_b, ref_b, rtol=1e-10, atol=1e-12 * max(np.abs(ref_W).max(), 1))
    assert grad_W.dtype == np.float64 and grad_W.shape == W.shape
    assert grad_b.dtype == np.float64 and grad_b.shape == b.shape
    if not fit_intercept:
        assert np.all(grad_b == 0.0)


def test_function_form_matches_torch():
    X, y, W, b, s = make_problem(47, 31, 13, seed=3, weighted=True)
    for intercept in (b, None):
        got = loss_gradient(W, intercept, X, y, l2=0.3, sample_weight=s)
        ref = torch_objective(X, y, W, intercept, l2=0.3, sample_weight=s)
        np.testing.assert_allclose(got[0], ref[0], rtol=1e-12)
        np.testing.assert_allclose(got[1], ref[1], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got[2], ref[2], rtol=1e-10, atol=1e-12)


def test_large_scores_stay_finite_and_match_torch():
    """Scores of ±1e4: the max shift must keep the loss finite and exact."""
    X, y, W, b, _ = make_problem(30, 4, 6, seed=5)
    W = 2e3 * W
    loss, grad_W, grad_b = loss_gradient(W, b, X, y, l2=0.1)
    ref = torch_objective(X, y, W, b, l2=0.1, sample_weight=None)
    assert np.isfinite(loss) and np.all(np.isfinite(grad_W)) and np.all(np.isfinite(grad_b))
    np.testing.assert_allclose(loss, ref[0], rtol=1e-12)
    np.testing.assert_allclose(grad_W, ref[1], rtol=1e-9, atol=1e-9 * np.abs(ref[1]).max())
    np.testing.assert_allclose(grad_b, ref[2], rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------ finite differences


@pytest.mark.parametrize(
    ("fit_intercept", "weighted"), list(itertools.product([True, False], [False, True]))
)
@pytest.mark.parametrize("shape", [(47, 31, 13), (1, 5, 3)])
def test_gradient_matches_central_differences(shape, fit_intercept, weighted):
    X, y, W, b, s = make_problem(*shape, seed=11, weighted=weighted)
    l2 = 0.7
    objective = LinearSoftmaxObjective(
        X, y, shape[2], l2=l2, sample_weight=s, fit_intercept=fit_intercept
    )
    intercept = b if fit_intercept else None
    _, grad_W, grad_b = objective.loss_gradient(W, intercept)

    fd_W = central_differences(lambda V: objective.loss_gradient(V, intercept)[0], W)
    err = normwise_rel_err(grad_W, fd_W)
    assert err <= FD_RTOL, f"∂L/∂W vs central differences: rel err {err:.2e}"
    if fit_intercept:
        fd_b = central_differences(lambda c: objective.loss_gradient(W, c)[0], b)
        err = normwise_rel_err(grad_b, fd_b)
        assert err <= FD_RTOL, f"∂L/∂b vs central differences: rel err {err:.2e}"


# ------------------------------------------------------------------ chunks and threads


@pytest.mark.parametrize("chunk_rows", [1, 10, 46, 47, 1000])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_chunking_does_not_change_the_result(chunk_rows, fit_intercept):
    """47 rows in chunks of 10: four full chunks and a last partial one of 7."""
    X, y, W, b, s = make_problem(47, 31, 13, seed=2, weighted=True)
    kwargs = {"l2": 0.4, "sample_weight": s, "fit_intercept": fit_intercept}
    whole = LinearSoftmaxObjective(X, y, 13, chunk_rows=47, **kwargs).loss_gradient(W, b)
    chunked_objective = LinearSoftmaxObjective(X, y, 13, chunk_rows=chunk_rows, **kwargs)
    assert chunked_objective.chunk_rows == chunk_rows
    chunked = chunked_objective.loss_gradient(W, b)
    for got, want in zip(chunked, whole, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(whole[1]).max())
    ref = torch_objective(X, y, W, b if fit_intercept else None, l2=0.4, sample_weight=s)
    np.testing.assert_allclose(chunked[0], ref[0], rtol=1e-12)
    np.testing.assert_allclose(chunked[1], ref[1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("n", "chunk_rows"), [(47, 10), (1000, 64), (5, 10)])
def test_two_threads_equal_one_thread(n, chunk_rows):
    X, y, W, b, s = make_problem(n, 31, 13, seed=4, weighted=True)
    kwargs = {"l2": 0.4, "sample_weight": s, "chunk_rows": chunk_rows}
    one = LinearSoftmaxObjective(X, y, 13, n_threads=1, **kwargs).loss_gradient(W, b)
    two = LinearSoftmaxObjective(X, y, 13, n_threads=2, **kwargs).loss_gradient(W, b)
    np.testing.assert_allclose(two[0], one[0], rtol=1e-12)
    scale = np.abs(one[1]).max()
    np.testing.assert_allclose(two[1], one[1], rtol=1e-12, atol=1e-12 * scale)
    np.testing.assert_allclose(two[2], one[2], rtol=1e-12, atol=1e-12 * scale)
    ref = torch_objective(X, y, W, b, l2=0.4, sample_weight=s)
    np.testing.assert_allclose(two[0], ref[0], rtol=1e-12)


@pytest.mark.parametrize("n_threads", [None, -1, 3])
def test_every_thread_setting_gives_the_single_thread_result(n_threads, monkeypatch):
    """The one knob: None (auto by work size), -1 (all cores), k (even more than cores)."""
    monkeypatch.setattr(_threads, "PARALLEL_WORK", 1)  # so that None picks several threads
    X, y, W, b, s = make_problem(700, 23, 11, seed=6, weighted=True)
    kwargs = {"l2": 0.4, "sample_weight": s, "chunk_rows": 50}
    one = LinearSoftmaxObjective(X, y, 11, n_threads=1, **kwargs).loss_gradient(W, b)
    other = LinearSoftmaxObjective(X, y, 11, n_threads=n_threads, **kwargs).loss_gradient(W, b)
    np.testing.assert_allclose(other[0], one[0], rtol=1e-12)
    np.testing.assert_allclose(other[1], one[1], rtol=1e-12, atol=1e-12 * np.abs(one[1]).max())


@pytest.mark.parametrize(("dtype", "factor"), [(np.float32, 1e37), (np.float64, 1e300)])
def test_features_near_the_dtype_max_give_a_finite_exact_gradient(dtype, factor):
    """A chunk's ``Σ_i (ŷ_i − δ) x_iᵀ`` would overflow the dtype; the gradient is still right."""
    X, y, W, b, s = make_problem(400, 7, 5, seed=7, weighted=True)
    X_big = (X * factor).astype(dtype)
    W_small = W / factor  # the same scores as (X, W)
    objective = LinearSoftmaxObjective(X_big, y, 5, l2=0.0, sample_weight=s, chunk_rows=400)
    loss, grad_W, grad_b = objective.loss_gradient(W_small, b)
    assert np.isfinite(grad_W).all() and np.isfinite(grad_b).all()
    ref = torch_objective(X_big.astype(np.float64), y, W_small, b, l2=0.0, sample_weight=s)
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(loss, ref[0], rtol=rtol)
    np.testing.assert_allclose(grad_W, ref[1], rtol=rtol, atol=rtol * np.abs(ref[1]).max())
    np.testing.assert_allclose(grad_b, ref[2], rtol=rtol, atol=rtol * np.abs(ref[2]).max())


def test_the_one_n_threads_knob_resolves_the_same_everywhere():
    cores = _threads.available_cores()
    assert _threads.resolve_n_threads(-1, 1.0) == cores
    assert _threads.resolve_n_threads(-cores - 5, 1.0) == 1  # "all but k - 1", at least one
    assert _threads.resolve_n_threads(3, 1.0) == 3  # explicit counts are kept
    assert _threads.resolve_n_threads(np.int64(2), 1.0) == 2
    assert _threads.resolve_n_threads(None, 1e3) == 1  # small work: one thread
    big = 64 * _threads.PARALLEL_WORK
    assert _threads.resolve_n_threads(None, big) == min(cores, 64)
    assert _threads.resolve_n_threads(None, float("nan")) == 1
    for bad in (0, True, 1.5, "2"):
        with pytest.raises(ValueError, match="n_threads must be None, -1 or a positive integer"):
            _threads.resolve_n_threads(bad)


def test_row_blocks_cover_the_rows_once_in_order():
    for n_rows, n_blocks in [(10, 3), (2, 5), (0, 4), (1000, 1)]:
        blocks = _threads.row_blocks(n_rows, n_blocks)
        covered = [i for block in blocks for i in range(block.start, block.stop)]
        assert covered == list(range(n_rows))
        assert len(blocks) <= max(1, n_blocks) and all(b.stop > b.start for b in blocks if n_rows)


def test_a_parallel_call_inside_a_worker_runs_serially_and_gives_the_same_result():
    """Nested use of the one pool neither deadlocks nor changes the result."""
    X, y, W, b, _ = make_problem(300, 9, 4, seed=9)
    objective = LinearSoftmaxObjective(X, y, 4, l2=0.5, n_threads=2, chunk_rows=40)
    alone = objective.loss_gradient(W, b)
    nested = _threads.map_row_blocks(lambda rows: objective.loss_gradient(W, b), 4, 2)
    assert len(nested) == 2
    for result in nested:
        np.testing.assert_allclose(result[0], alone[0], rtol=1e-12)
        np.testing.assert_allclose(result[1], alone[1], rtol=1e-12, atol=1e-14)


def test_default_chunk_size_splits_large_inputs():
    """The default chunk holds about 4 MiB; a larger X is split and still exact."""
    X, y, W, b, _ = make_problem(9000, 80, 5, seed=8)
    objective = LinearSoftmaxObjective(X, y, 5, l2=1.0)
    assert 1 <= objective.chunk_rows < 9000
    loss, grad_W, grad_b = objective.loss_gradient(W, b)
    ref = torch_objective(X, y, W, b, l2=1.0, sample_weight=None)
    np.testing.assert_allclose(loss, ref[0], rtol=1e-12)
    np.testing.assert_allclose(grad_W, ref[1], rtol=1e-9, atol=1e-10 * np.abs(ref[1]).max())
    np.testing.assert_allclose(grad_b, ref[2], rtol=1e-9, atol=1e-10 * np.abs(ref[1]).max())


# ------------------------------------------------------------------ dtypes and copies


class _MatmulSpy:
    """Stands in for the ``np`` that crossent.objective sees; records matmul dtypes."""

    def __init__(self) -> None:
        self.calls: list[tuple[np.dtype, ...]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)

    def matmul(self, *args: Any, **kwargs: Any) -> Any:
        arrays = [a for a in args if isinstance(a, np.ndarray)]
        if isinstance(kwargs.get("out"), np.ndarray):
            arrays.append(kwargs["out"])
        self.calls.append(tuple(a.dtype for a in arrays))
        return np.matmul(*args, **kwargs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matrix_products_run_in_the_data_dtype(monkeypatch, dtype):
    X, y, W, b, s = make_problem(47, 31, 13, seed=6, weighted=True)
    spy = _MatmulSpy()
    monkeypatch.setattr(crossent.objective, "np", spy)
    objective = LinearSoftmaxObjective(
        X.astype(dtype), y, 13, l2=0.5, sample_weight=s, chunk_rows=10
    )
    loss, grad_W, grad_b = objective.loss_gradient(W, b)
    assert len(spy.calls) == 2 * 5, f"expected two products per chunk, saw {spy.calls}"
    for dtypes in spy.calls:
        assert all(dt == dtype for dt in dtypes), f"a matmul saw {dtypes}, not all {dtype}"
    # totals are float64 whatever the data dtype
    assert isinstance(loss, float)
    assert grad_W.dtype == np.float64 and grad_b.dtype == np.float64


def test_float32_agrees_with_float64():
    X, y, W, b, s = make_problem(500, 31, 13, seed=7, weighted=True)
    kwargs = {"l2": 0.5, "sample_weight": s, "chunk_rows": 64}
    loss64, gW64, gb64 = LinearSoftmaxObjective(X, y, 13, **kwargs).loss_gradient(W, b)
    X32 = X.astype(np.float32)
    loss32, gW32, gb32 = LinearSoftmaxObjective(X32, y, 13, **kwargs).loss_gradient(W, b)
    # the float64 objective of the float32-rounded data: isolates the arithmetic error
    ref = LinearSoftmaxObjective(X32.astype(np.float64), y, 13, **kwargs).loss_gradient(W, b)
    assert abs(loss32 - ref[0]) <= 1e-5 * abs(ref[0])
    assert normwise_rel_err(gW32, ref[1]) <= 1e-5
    assert normwise_rel_err(gb32, ref[2]) <= 1e-5
    # and the float32 answer is close to the float64 one on the original data
    assert abs(loss32 - loss64) <= 1e-5 * abs(loss64)
    assert normwise_rel_err(gW32, gW64) <= 1e-5
    assert normwise_rel_err(gb32, gb64) <= 1e-5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_contiguous_X_is_not_copied(dtype):
    X, y, *_ = make_problem(40, 6, 3)
    X = np.ascontiguousarray(X, dtype=dtype)
    objective = LinearSoftmaxObjective(X, y, 3, l2=1.0)
    assert objective.X is X
    assert objective.X.dtype == dtype


def test_fortran_or_strided_X_is_made_contiguous_with_same_result():
    X, y, W, b, _ = make_problem(40, 6, 3)
    want = loss_gradient(W, b, X, y, l2=1.0)
    for view in (np.asfortranarray(X), np.repeat(X, 2, axis=1)[:, ::2]):
        objective = LinearSoftmaxObjective(view, y, 3, l2=1.0)
        assert objective.X.flags.c_contiguous
        got = objective.loss_gradient(W, b)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.int64, np.float16])
def test_other_X_dtypes_are_refused(dtype):
    X, y, *_ = make_problem(10, 3, 2)
    with pytest.raises(TypeError, match="float32 or float64"):
        LinearSoftmaxObjective(X.astype(dtype), y, 2, l2=1.0)


# ------------------------------------------------------------------ the penalty


def test_intercept_is_not_penalised():
    X, y, W, b, s = make_problem(47, 31, 13, seed=9, weighted=True)
    no_penalty = LinearSoftmaxObjective(X, y, 13, l2=0.0, sample_weight=s).loss_gradient(W, b)
    for l2 in (0.5, 3.0, 100.0):
        penalised = LinearSoftmaxObjective(X, y, 13, l2=l2, sample_weight=s).loss_gradient(W, b)
        np.testing.assert_array_equal(penalised[2], no_penalty[2])  # λ does not touch ∂/∂b
        np.testing.assert_allclose(penalised[1] - no_penalty[1], l2 * W, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(
            penalised[0] - no_penalty[0], 0.5 * l2 * np.sum(W * W), rtol=1e-10
        )
    # the penalty is independent of b
    shifted = LinearSoftmaxObjective(X, y, 13, l2=3.0, sample_weight=s)
    data_only = LinearSoftmaxObjective(X, y, 13, l2=0.0, sample_weight=s)
    b2 = b + 5.0
    assert np.isclose(
        shifted.loss_gradient(W, b2)[0] - data_only.loss_gradient(W, b2)[0],
        1.5 * np.sum(W * W),
        rtol=1e-10,
    )


def test_without_intercept_the_given_intercept_is_ignored():
    X, y, W, b, _ = make_problem(30, 5, 4)
    objective = LinearSoftmaxObjective(X, y, 4, l2=0.2, fit_intercept=False)
    with_b = objective.loss_gradient(W, b)
    without = objective.loss_gradient(W, None)
    assert with_b[0] == without[0]
    np.testing.assert_array_equal(with_b[1], without[1])
    np.testing.assert_array_equal(with_b[2], np.zeros(4))


# ------------------------------------------------------------------ sample weights


def test_zero_weight_rows_equal_dropping_them():
    X, y, W, b, s = make_problem(60, 7, 4, seed=12, weighted=True)
    s[::3] = 0.0
    keep = s > 0
    got = loss_gradient(W, b, X, y, l2=0.3, sample_weight=s)
    want = loss_gradient(W, b, X[keep], y[keep], l2=0.3, sample_weight=s[keep])
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-13)


def test_integer_weights_equal_repeating_rows():
    X, y, W, b, _ = make_problem(25, 6, 3, seed=13)
    counts = np.random.default_rng(0).integers(1, 4, size=25)
    got = loss_gradient(W, b, X, y, l2=0.3, sample_weight=counts.astype(float))
    want = loss_gradient(W, b, np.repeat(X, counts, axis=0), np.repeat(y, counts), l2=0.3)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


def test_zero_weights_count_nothing():
    X, y, W, b, _ = make_problem(10, 3, 3)
    loss, grad_W, grad_b = loss_gradient(W, b, X, y, l2=2.0, sample_weight=np.zeros(10))
    assert loss == pytest.approx(np.sum(W * W))  # only (λ/2)‖W‖² with λ = 2
    np.testing.assert_allclose(grad_W, 2.0 * W, rtol=1e-15)
    np.testing.assert_array_equal(grad_b, np.zeros(3))


# ------------------------------------------------------------------ hand values


def test_zero_model_gives_n_log_c():
    """W = 0, b = 0: every row has loss log C and gradient (1/C − δ) x."""
    X, y, *_ = make_problem(20, 4, 5)
    loss, grad_W, grad_b = loss_gradient(np.zeros((5, 4)), np.zeros(5), X, y, l2=1.0)
    assert loss == pytest.approx(20 * np.log(5), rel=1e-14)
    onehot = np.eye(5)[y]
    np.testing.assert_allclose(grad_W, (0.2 - onehot).T @ X, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grad_b, (0.2 - onehot).sum(axis=0), rtol=1e-12, atol=1e-14)


def test_counts_evaluations():
    X, y, W, b, _ = make_problem(10, 3, 3)
    objective = LinearSoftmaxObjective(X, y, 3, l2=1.0)
    assert objective.n_evals == 0
    objective.loss_gradient(W, b)
    objective.loss_gradient(W, b)
    assert objective.n_evals == 2
    assert (objective.n_samples, objective.n_features) == (10, 3)
