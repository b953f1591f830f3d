"""Tests of crossent.loss: softmax cross-entropy, its analytic gradient, and the hot kernel.

References: ``torch.nn.functional.cross_entropy`` and torch autograd in float64 (the full
option grid), central finite differences, plain NumPy/SciPy formulas, and exact hand values.
"""

from __future__ import annotations

import itertools
import math

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import scipy.special
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from crossent import softmax_cross_entropy, softmax_cross_entropy_with_grad
from crossent.loss import _index_loss_grad_inplace

SETTINGS = settings(max_examples=40, deadline=None)
PARITY = {"rtol": 1e-10, "atol": 1e-12}


# ------------------------------------------------------------------ references


def torch_cross_entropy(
    logits, target, *, weight=None, ignore_index=None, label_smoothing=0.0, reduction="mean"
):
    """``F.cross_entropy`` on class-last NumPy inputs: (loss, autograd gradient), float64.

    With ``reduction="none"`` the gradient is that of ``loss.sum()``: row ``i`` holds
    ``∂L_i / ∂z_i``.
    """
    z = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    t = torch.as_tensor(target)
    z_torch = z
    if z.ndim > 2:  # torch wants the classes on axis 1: (N, C, d1, ...)
        z_torch = torch.movedim(z, -1, 1)
        if t.is_floating_point():
            t = torch.movedim(t, -1, 1)
    loss = F.cross_entropy(
        z_torch,
        t,
        weight=None if weight is None else torch.as_tensor(weight, dtype=torch.float64),
        ignore_index=-100 if ignore_index is None else ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
    )
    (loss.sum() if reduction == "none" else loss).backward()
    assert z.grad is not None
    return loss.detach().numpy(), z.grad.numpy()


def numpy_index_loss_grad(logits, index, sample_weight):
    """Plain formula: ``Σ s_i (lse_i − z_ik)`` and ``s_i (softmax_i − onehot_i)``, float64."""
    z = logits.astype(np.float64)
    rows = np.arange(len(index))
    lse = scipy.special.logsumexp(z, axis=-1)
    loss = float(np.sum(sample_weight * (lse - z[rows, index])))
    onehot = np.eye(z.shape[-1])[index]
    grad = sample_weight[:, None] * (scipy.special.softmax(z, axis=-1) - onehot)
    return loss, grad


def central_difference(func, z, step=1e-5):
    """Central finite-difference gradient of the scalar ``func`` at ``z`` (float64)."""
    grad = np.zeros_like(z)
    for idx in np.ndindex(z.shape):
        plus, minus = z.copy(), z.copy()
        plus[idx] += step
        minus[idx] -= step
        grad[idx] = (func(plus) - func(minus)) / (2 * step)
    return grad


def _case(shape, n_classes, kind, seed=0):
    """Logits of scale ~3, class-index targets, and probability targets (with zeros)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=3.0, size=(*shape, n_classes))
    index = rng.integers(0, n_classes, size=shape)
    if kind == "indices":
        return logits, index
    probs = rng.random((*shape, n_classes))
    probs[probs < 0.2] = 0.0
    probs[..., 0] += 0.01  # never an all-zero row
    return logits, probs / probs.sum(axis=-1, keepdims=True)


def _as_float(x):
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)


# ------------------------------------------------------------------ parity with torch: full grid

GRID = [
    (kind, weighted, ignore, smoothing, reduction)
    for kind, weighted, ignore, smoothing, reduction in itertools.product(
        ["indices", "probabilities"],
        [False, True],
        [False, True],
        [0.0, 0.2],
        ["mean", "sum", "none"],
    )
    if not (kind == "probabilities" and ignore)
]


def _grid_id(case):
    kind, weighted, ignore, smoothing, reduction = case
    return f"{kind}-w{int(weighted)}-ign{int(ignore)}-ls{smoothing}-{reduction}"


@pytest.mark.parametrize("shape", [(13,), (2, 3)], ids=["batch13", "batch2x3"])
@pytest.mark.parametrize("case", GRID, ids=[_grid_id(c) for c in GRID])
def test_matches_torch_cross_entropy(case, shape):
    """softmax_cross_entropy, _with_grad, and autograd through it, against F.cross_entropy."""
    kind, weighted, ignore, smoothing, reduction = case
    n_classes = 5
    logits, target = _case(shape, n_classes, kind, seed=len(shape))
    rng = np.random.default_rng(7)
    weight = rng.uniform(0.2, 2.0, size=n_classes) if weighted else None
    ignore_index = None
    if ignore:
        ignore_index = int(target.flat[0])  # a class that occurs ...
        assert np.any(target != ignore_index)  # ... without ignoring everything
    options = {
        "weight": weight,
        "ignore_index": ignore_index,
        "label_smoothing": smoothing,
        "reduction": reduction,
    }
    expected_loss, expected_grad = torch_cross_entropy(logits, target, **options)

    # NumPy in
    loss = softmax_cross_entropy(logits, target, **options)
    np.testing.assert_allclose(loss, expected_loss, **PARITY)
    loss, grad = softmax_cross_entropy_with_grad(logits, target, **options)
    np.testing.assert_allclose(loss, expected_loss, **PARITY)
    np.testing.assert_allclose(grad, expected_grad, **PARITY)
    assert np.shape(loss) == expected_loss.shape and grad.shape == logits.shape

    # torch in: analytic gradient, and autograd through softmax_cross_entropy
    z = torch.tensor(logits, requires_grad=True)
    t_options = dict(options, weight=None if weight is None else torch.tensor(weight))
    loss_t, grad_t = softmax_cross_entropy_with_grad(z, torch.as_tensor(target), **t_options)
    np.testing.assert_allclose(loss_t.numpy(), expected_loss, **PARITY)
    np.testing.assert_allclose(grad_t.numpy(), expected_grad, **PARITY)
    assert not grad_t.requires_grad
    loss_t = softmax_cross_entropy(z, torch.as_tensor(target), **t_options)
    (loss_t.sum() if reduction == "none" else loss_t).backward()
    np.testing.assert_allclose(loss_t.detach().numpy(), expected_loss, **PARITY)
    assert z.grad is not None
    np.testing.assert_allclose(z.grad.numpy(), expected_grad, **PARITY)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_ignore_index_with_probability_targets_raises(weighted, reduction):
    logits, probs = _case((4,), 3, "probabilities")
    weight = np.ones(3) if weighted else None
    for func in (softmax_cross_entropy, softmax_cross_entropy_with_grad):
        with pytest.raises(ValueError, match="ignore_index applies to class-index targets"):
            func(logits, probs, weight=weight, ignore_index=0, reduction=reduction)


@pytest.mark.parametrize("kind", ["indices", "probabilities"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_odd_shape_47x123_matches_torch(kind, reduction):
    logits, target = _case((47,), 123, kind, seed=3)
    weight = np.random.default_rng(8).uniform(0.0, 3.0, size=123)
    options = {"weight": weight, "label_smoothing": 0.1, "reduction": reduction}
    expected_loss, expected_grad = torch_cross_entropy(logits, target, **options)
    loss, grad = softmax_cross_entropy_with_grad(logits, target, **options)
    np.testing.assert_allclose(
        softmax_cross_entropy(logits, target, **options), expected_loss, **PARITY
    )
    np.testing.assert_allclose(loss, expected_loss, **PARITY)
    np.testing.assert_allclose(grad, expected_grad, **PARITY)


def test_single_unbatched_sample_matches_torch():
    logits = np.array([0.3, -1.2, 2.5, 0.0])
    expected_loss, expected_grad = torch_cross_entropy(logits, np.array(2))
    loss, grad = softmax_cross_entropy_with_grad(logits, np.array(2))
    np.testing.assert_allclose(loss, expected_loss, **PARITY)
    np.testing.assert_allclose(grad, expected_grad, **PARITY)
    np.testing.assert_allclose(loss, scipy.special.logsumexp(logits) - 2.5, rtol=1e-14)


# ------------------------------------------------------------------ identities (hypothesis)


@st.composite
def index_problems(draw, max_classes=7):
    n = draw(st.integers(1, 8))
    n_classes = draw(st.integers(1, max_classes))
    logits = draw(
        hnp.arrays(np.float64, (n, n_classes), elements=st.floats(-30, 30, allow_subnormal=False))
    )
    index = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, n_classes - 1)))
    return logits, index


@SETTINGS
@given(problem=index_problems(), data=st.data())
def test_class_indices_equal_one_hot_probabilities(problem, data):
    """Integer labels = one-hot targets, loss and gradient, with and without class weights."""
    logits, index = problem
    n_classes = logits.shape[-1]
    onehot = np.eye(n_classes)[index]
    weighted = data.draw(st.booleans())
    weight = (
        data.draw(hnp.arrays(np.float64, (n_classes,), elements=st.floats(0.0, 5.0)))
        if weighted
        else None
    )
    # torch's mean divides by Σ w_k for indices but by n for probabilities: compare sums
    reductions = ["sum", "none"] if weighted else ["mean", "sum", "none"]
    for reduction in reductions:
        by_index = softmax_cross_entropy_with_grad(
            logits, index, weight=weight, reduction=reduction
        )
        by_probs = softmax_cross_entropy_with_grad(
            logits, onehot, weight=weight, reduction=reduction
        )
        np.testing.assert_allclose(by_index[0], by_probs[0], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(by_index[1], by_probs[1], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(
            softmax_cross_entropy(logits, index, weight=weight, reduction=reduction),
            softmax_cross_entropy(logits, onehot, weight=weight, reduction=reduction),
            rtol=1e-12,
            atol=1e-12,
        )


@SETTINGS
@given(problem=index_problems(), smoothing=st.floats(0.0, 1.0))
def test_label_smoothing_equals_smoothed_probability_targets(problem, smoothing):
    logits, index = problem
    n_classes = logits.shape[-1]
    smoothed = (1 - smoothing) * np.eye(n_classes)[index] + smoothing / n_classes
    by_index = softmax_cross_entropy_with_grad(
        logits, index, label_smoothing=smoothing, reduction="sum"
    )
    by_probs = softmax_cross_entropy_with_grad(logits, smoothed, reduction="sum")
    np.testing.assert_allclose(by_index[0], by_probs[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(by_index[1], by_probs[1], rtol=1e-12, atol=1e-14)


@SETTINGS
@given(problem=index_problems(max_classes=12))
def test_one_hot_loss_is_kl_to_the_softmax(problem):
    """L = −Σ y log ŷ = KL(P‖ŷ) for one-hot P (derivation), per sample."""
    from crossent import kl_divergence, softmax

    logits, index = problem
    onehot = np.eye(logits.shape[-1])[index]
    per_sample = softmax_cross_entropy(logits, index, reduction="none")
    np.testing.assert_allclose(
        per_sample, kl_divergence(onehot, softmax(logits)), rtol=1e-12, atol=1e-12
    )
    expected = -scipy.special.log_softmax(logits, axis=-1)[np.arange(len(index)), index]
    np.testing.assert_allclose(per_sample, expected, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(problem=index_problems())
def test_gradient_is_softmax_minus_delta_and_mean_is_average(problem):
    """∂L_i/∂f = ŷ − δ (derivation), and L_avg = (1/N) Σ L_i."""
    logits, index = problem
    n = len(index)
    loss, grad = softmax_cross_entropy_with_grad(logits, index)  # mean
    expected_grad = scipy.special.softmax(logits, axis=-1) - np.eye(logits.shape[-1])[index]
    np.testing.assert_allclose(grad, expected_grad / n, rtol=1e-12, atol=1e-15)
    per_sample = scipy.special.logsumexp(logits, axis=-1) - logits[np.arange(n), index]
    np.testing.assert_allclose(loss, per_sample.mean(), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ finite differences

FD_CASES = [
    ("indices", {}),
    ("indices", {"reduction": "sum"}),
    ("indices", {"reduction": "none"}),
    ("indices", {"weight": [0.5, 2.0, 1.0, 0.1], "ignore_index": 1}),
    ("indices", {"label_smoothing": 0.3, "weight": [0.5, 2.0, 1.0, 0.1]}),
    ("probabilities", {}),
    ("probabilities", {"weight": [0.5, 2.0, 1.0, 0.1], "label_smoothing": 0.2, "reduction": "sum"}),
]


@pytest.mark.parametrize(("kind", "options"), FD_CASES)
def test_gradient_matches_central_differences(kind, options):
    logits, target = _case((6,), 4, kind, seed=5)
    if "ignore_index" in options:
        target[:2] = options["ignore_index"]

    def total_loss(z):
        return float(np.sum(softmax_cross_entropy(z, target, **options)))

    _, grad = softmax_cross_entropy_with_grad(logits, target, **options)
    numeric = central_difference(total_loss, logits)
    error = np.max(np.abs(grad - numeric)) / np.max(np.abs(numeric))
    assert error <= 1e-7, f"relative error {error:.2e} for {kind} {options}"


def test_gradient_3d_matches_torch_autograd_and_central_differences():
    logits, index = _case((2, 3), 5, "indices", seed=6)
    _, grad = softmax_cross_entropy_with_grad(logits, index, label_smoothing=0.1)
    _, expected = torch_cross_entropy(logits, index, label_smoothing=0.1)
    np.testing.assert_allclose(grad, expected, **PARITY)
    numeric = central_difference(
        lambda z: float(softmax_cross_entropy(z, index, label_smoothing=0.1)), logits
    )
    assert np.max(np.abs(grad - numeric)) <= 1e-7 * np.max(np.abs(numeric))


# ------------------------------------------------------------------ the hot kernel


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_index_loss_grad_inplace_matches_plain_formula(dtype, tol):
    rng = np.random.default_rng(9)
    logits = rng.normal(scale=4.0, size=(31, 17)).astype(dtype)
    index = rng.integers(0, 17, size=31)
    sample_weight = rng.uniform(0.0, 2.0, size=31)
    sample_weight[[3, 10]] = 0.0  # zero-weight rows are zeroed
    expected_loss, expected_grad = numpy_index_loss_grad(logits, index, sample_weight)

    scores = logits.copy()
    loss = _index_loss_grad_inplace(scores, index, sample_weight, 0.25)
    assert isinstance(loss, float)
    assert scores.dtype == dtype  # float32 stays float32
    np.testing.assert_allclose(loss, expected_loss, **tol(dtype))
    np.testing.assert_allclose(scores, 0.25 * expected_grad, **tol(dtype))
    assert np.all(scores[[3, 10]] == 0.0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_index_loss_grad_inplace_matches_with_grad_sum(dtype, tol):
    """Per-sample weights s_i = w[k_i] reproduce class-weighted reduction="sum"."""
    rng = np.random.default_rng(10)
    logits = rng.normal(scale=4.0, size=(23, 9)).astype(dtype)
    index = rng.integers(0, 9, size=23)
    weight = rng.uniform(0.0, 2.0, size=9)
    loss, grad = softmax_cross_entropy_with_grad(logits, index, weight=weight, reduction="sum")
    assert grad.dtype == dtype and np.asarray(loss).dtype == dtype
    scores = logits.copy()
    kernel_loss = _index_loss_grad_inplace(scores, index, weight[index], 1.0)
    np.testing.assert_allclose(kernel_loss, loss, **tol(dtype))
    np.testing.assert_allclose(scores, grad, **tol(dtype))
    np.testing.assert_allclose(
        scores, numpy_index_loss_grad(logits, index, weight[index])[1], **tol(dtype)
    )


def test_index_loss_grad_inplace_empty():
    scores = np.zeros((0, 4))
    assert _index_loss_grad_inplace(scores, np.zeros(0, dtype=np.int64), np.zeros(0)) == 0.0


def test_index_loss_grad_inplace_negative_weight_rows_drop_from_loss_and_gradient_alike():
    """Rows of weight <= 0 add nothing to either (once, the loss dropped them, not δ)."""
    rng = np.random.default_rng(12)
    logits = rng.normal(size=(6, 4))
    index = rng.integers(0, 4, size=6)
    weights = np.array([1.0, -2.0, 0.5, 0.0, 1.5, -1e-9])
    scores = logits.copy()
    loss = _index_loss_grad_inplace(scores, index, weights)
    kept = np.maximum(weights, 0.0)
    expected_loss, expected_grad = numpy_index_loss_grad(logits, index, kept)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-12)
    np.testing.assert_allclose(scores, expected_grad, rtol=1e-12, atol=1e-15)
    assert np.all(scores[[1, 3, 5]] == 0.0)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_results_do_not_depend_on_the_thread_count(reduction):
    """One thread and two give the same loss and gradient, up to rounding of the sums."""
    rng = np.random.default_rng(13)
    logits = rng.normal(scale=3.0, size=(2001, 37))
    target = rng.integers(0, 37, size=2001)
    one = softmax_cross_entropy_with_grad(logits, target, reduction=reduction, n_threads=1)
    two = softmax_cross_entropy_with_grad(logits, target, reduction=reduction, n_threads=2)
    np.testing.assert_allclose(two[0], one[0], rtol=1e-13)
    np.testing.assert_allclose(two[1], one[1], rtol=1e-13, atol=1e-16)
    four = softmax_cross_entropy(logits, target, reduction=reduction, n_threads=-1)
    np.testing.assert_allclose(four, one[0], rtol=1e-13)
    reference, _ = torch_cross_entropy(logits, target, reduction=reduction)
    np.testing.assert_allclose(two[0], reference, **PARITY)


# ------------------------------------------------------------------ extremes


@pytest.mark.parametrize("as_torch", [False, True])
def test_huge_logits_give_exact_finite_loss(as_torch):
    logits = np.array([[1e4, -1e4], [1e4, -1e4], [1e4, 1e4]])
    target = np.array([1, 0, 0])
    # by hand: lse = 1e4 + log(1 + e^-2e4) = 1e4 (to the last bit), or 1e4 + log 2
    expected = np.array([2e4, 0.0, math.log(2.0)])
    expected_grad = np.array([[1.0, -1.0], [0.0, 0.0], [-0.5, 0.5]])
    if as_torch:
        logits, target = torch.tensor(logits), torch.tensor(target)
    per_sample, grad = softmax_cross_entropy_with_grad(logits, target, reduction="none")
    np.testing.assert_allclose(np.asarray(per_sample), expected, rtol=1e-15, atol=0)
    np.testing.assert_allclose(np.asarray(grad), expected_grad, rtol=1e-15, atol=0)
    total, grad = softmax_cross_entropy_with_grad(logits, target, reduction="sum")
    assert _as_float(total) == 2e4 + math.log(2.0)
    np.testing.assert_allclose(np.asarray(grad), expected_grad, rtol=1e-15, atol=0)


def _masked_case():
    rng = np.random.default_rng(12)
    logits = rng.normal(size=(5, 6))
    logits[:, 2] = -np.inf  # class 2 masked everywhere
    logits[1, 4] = -np.inf
    index = np.array([0, 1, 3, 5, 1])  # no target is masked
    return logits, index


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("as_torch", [False, True])
def test_masked_classes_give_finite_loss_and_gradient(reduction, as_torch):
    """−inf logits (not the target) are classes that do not exist: compare with dropping them."""
    logits, index = _masked_case()
    weight = np.linspace(0.5, 1.5, 6)
    # reference: torch on the 5 remaining classes, row 1's extra masked class kept at -inf
    kept = [0, 1, 3, 4, 5]
    remap = {c: i for i, c in enumerate(kept)}
    expected_loss, expected_kept = torch_cross_entropy(
        logits[:, kept],
        np.array([remap[k] for k in index]),
        weight=weight[kept],
        reduction=reduction,
    )
    args = (logits, index)
    ours_weight = weight
    if as_torch:
        args = (torch.tensor(logits, requires_grad=True), torch.tensor(index))
        ours_weight = torch.tensor(weight)
    loss, grad = softmax_cross_entropy_with_grad(*args, weight=ours_weight, reduction=reduction)
    grad = np.asarray(grad)
    assert np.all(np.isfinite(np.asarray(loss))) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(np.asarray(loss), expected_loss, **PARITY)
    np.testing.assert_allclose(grad[:, kept], expected_kept, **PARITY)
    assert np.all(grad[:, 2] == 0.0) and grad[1, 4] == 0.0
    if as_torch:  # autograd through softmax_cross_entropy stays finite too
        z = args[0]
        out = softmax_cross_entropy(z, args[1], weight=torch.tensor(weight), reduction=reduction)
        out.sum().backward()
        np.testing.assert_allclose(z.grad.numpy(), grad, **PARITY)


def test_masked_class_with_probability_target_is_finite():
    logits, index = _masked_case()
    probs = np.eye(6)[index] * 0.5
    probs[:, [0, 1, 3, 5]] += 0.1  # zero on the masked classes 2 and (row 1) 4
    probs /= probs.sum(axis=-1, keepdims=True)
    # reference: SciPy, with xlogy(0, 0) = 0 (torch gives NaN here: 0 · −inf)
    with np.errstate(divide="ignore"):
        expected_loss = -scipy.special.xlogy(probs, scipy.special.softmax(logits, axis=-1))
    expected_loss = expected_loss.sum(axis=-1).mean()
    expected_grad = (scipy.special.softmax(logits, axis=-1) - probs) / len(probs)
    loss, grad = softmax_cross_entropy_with_grad(logits, probs)
    np.testing.assert_allclose(loss, expected_loss, **PARITY)
    np.testing.assert_allclose(grad, expected_grad, **PARITY)
    np.testing.assert_allclose(softmax_cross_entropy(logits, probs), expected_loss, **PARITY)


def test_masked_class_with_probability_target_is_finite_torch():
    """As above through torch, where no warning is raised: value, gradient and autograd."""
    logits, index = _masked_case()
    probs = np.eye(6)[index] * 0.5
    probs[:, [0, 1, 3, 5]] += 0.1
    probs /= probs.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore"):
        expected_loss = -scipy.special.xlogy(probs, scipy.special.softmax(logits, axis=-1))
    expected_loss = expected_loss.sum(axis=-1).mean()
    expected_grad = (scipy.special.softmax(logits, axis=-1) - probs) / len(probs)
    z = torch.tensor(logits, requires_grad=True)
    loss, grad = softmax_cross_entropy_with_grad(z, torch.tensor(probs))
    np.testing.assert_allclose(loss.numpy(), expected_loss, **PARITY)
    np.testing.assert_allclose(grad.numpy(), expected_grad, **PARITY)
    softmax_cross_entropy(z, torch.tensor(probs)).backward()
    np.testing.assert_allclose(z.grad.numpy(), expected_grad, **PARITY)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("as_torch", [False, True])
def test_masked_target_gives_inf_loss_and_finite_gradient(reduction, as_torch):
    logits = np.array([[-np.inf, 0.0, 1.0], [0.5, 0.0, -0.5]])
    index = np.array([0, 1])  # sample 0's target class is masked
    expected_grad = scipy.special.softmax(logits, axis=-1) - np.eye(3)[index]
    if reduction == "mean":
        expected_grad /= 2
    args = (torch.tensor(logits), torch.tensor(index)) if as_torch else (logits, index)
    loss, grad = softmax_cross_entropy_with_grad(*args, reduction=reduction)
    loss = np.asarray(loss)
    assert (loss[0] if reduction == "none" else loss) == np.inf
    if reduction == "none":
        np.testing.assert_allclose(loss[1], scipy.special.logsumexp(logits[1]) - 0.0, rtol=1e-14)
    np.testing.assert_allclose(np.asarray(grad), expected_grad, rtol=1e-14, atol=1e-16)
    assert np.asarray(softmax_cross_entropy(*args, reduction=reduction)).flat[0] == np.inf


@pytest.mark.parametrize("kind", ["indices", "probabilities"])
@pytest.mark.parametrize("as_torch", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_all_minus_inf_row_raises(kind, as_torch, reduction):
    logits = np.array([[0.0, 1.0, 2.0], [-np.inf, -np.inf, -np.inf]])
    target = np.array([0, 1]) if kind == "indices" else np.full((2, 3), 1 / 3)
    args = (torch.tensor(logits), torch.tensor(target)) if as_torch else (logits, target)
    for func in (softmax_cross_entropy, softmax_cross_entropy_with_grad):
        with pytest.raises(ValueError, match="logits row 1 has no finite log-sum-exp"):
            func(*args, reduction=reduction)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_ignored_all_minus_inf_row_is_harmless(reduction):
    logits = np.array([[-np.inf, -np.inf], [0.0, 0.0]])
    target = np.array([-100, 1])
    loss = softmax_cross_entropy(logits, target, ignore_index=-100, reduction=reduction)
    expected = math.log(2.0) if reduction == "mean" else [0.0, math.log(2.0)]
    np.testing.assert_allclose(loss, expected, rtol=1e-15)


def test_ignored_row_with_masked_class_zero_reduction_none():
    logits = np.array([[-np.inf, 0.0, 1.0], [0.0, 0.0, 0.0]])
    target = np.array([-100, 1])
    loss = softmax_cross_entropy(logits, target, ignore_index=-100, reduction="none")
    np.testing.assert_allclose(loss, [0.0, math.log(3.0)], rtol=1e-15)


def test_float32_within_1e5_of_float64(tol):
    rng = np.random.default_rng(13)
    logits32 = rng.normal(scale=10.0, size=(64, 1000)).astype(np.float32)
    logits64 = logits32.astype(np.float64)
    index = rng.integers(0, 1000, size=64)
    for options in ({}, {"reduction": "none"}, {"label_smoothing": 0.1, "reduction": "sum"}):
        loss32, grad32 = softmax_cross_entropy_with_grad(logits32, index, **options)
        loss64, grad64 = softmax_cross_entropy_with_grad(logits64, index, **options)
        assert grad32.dtype == np.float32 and np.asarray(loss32).dtype == np.float32
        np.testing.assert_allclose(loss32, loss64, **tol(np.float32))
        np.testing.assert_allclose(
            softmax_cross_entropy(logits32, index, **options), loss64, **tol(np.float32)
        )
        np.testing.assert_allclose(grad32, grad64, rtol=1e-5, atol=1e-5 * np.abs(grad64).max())
    z32 = torch.tensor(logits32)
    loss32, grad32 = softmax_cross_entropy_with_grad(z32, torch.tensor(index))
    loss64, grad64 = softmax_cross_entropy_with_grad(logits64, index)
    assert loss32.dtype == grad32.dtype == torch.float32
    np.testing.assert_allclose(loss32.numpy(), loss64, **tol(np.float32))
    np.testing.assert_allclose(grad32.numpy(), grad64, rtol=1e-5, atol=1e-5 * np.abs(grad64).max())


# ------------------------------------------------------------------ empty batches


@pytest.mark.parametrize("as_torch", [False, True])
@pytest.mark.parametrize("kind", ["indices", "probabilities"])
def test_empty_batch(kind, as_torch):
    logits = np.zeros((0, 4))
    target = np.zeros(0, dtype=np.int64) if kind == "indices" else np.zeros((0, 4))
    if as_torch:
        logits, target = torch.tensor(logits), torch.tensor(target)
    for reduction in ("sum", "mean"):
        loss, grad = softmax_cross_entropy_with_grad(logits, target, reduction=reduction)
        assert _as_float(loss) == 0.0 and tuple(grad.shape) == (0, 4)
        assert _as_float(softmax_cross_entropy(logits, target, reduction=reduction)) == 0.0
    loss, grad = softmax_cross_entropy_with_grad(logits, target, reduction="none")
    assert tuple(loss.shape) == (0,) and tuple(grad.shape) == (0, 4)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_mean_over_all_ignored_is_zero_with_zero_grad_where_torch_gives_nan(weighted, smoothing):
    """Deliberate difference from torch: a mean over no samples is 0.0 (torch: NaN)."""
    logits = np.random.default_rng(14).normal(size=(3, 4))
    target = np.array([2, 2, 2])
    options = {
        "weight": np.array([1.0, 2.0, 3.0, 4.0]) if weighted else None,
        "ignore_index": 2,
        "label_smoothing": smoothing,
    }
    torch_loss, _ = torch_cross_entropy(logits, target, **options)
    assert np.isnan(torch_loss)  # the difference documented above
    loss, grad = softmax_cross_entropy_with_grad(logits, target, **options)
    assert loss == 0.0 and np.all(grad == 0.0)
    z = torch.tensor(logits, requires_grad=True)
    t_options = dict(options, weight=None if not weighted else torch.tensor(options["weight"]))
    out = softmax_cross_entropy(z, torch.tensor(target), **t_options)
    out.backward()
    assert out.item() == 0.0 and torch.all(z.grad == 0.0)


# ------------------------------------------------------------------ array back ends


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_torch_in_torch_out(dtype, reduction):
    logits, index = _case((4,), 3, "indices")
    z = torch.tensor(logits, dtype=dtype)
    loss = softmax_cross_entropy(z, torch.tensor(index), reduction=reduction)
    loss_g, grad = softmax_cross_entropy_with_grad(z, torch.tensor(index), reduction=reduction)
    for result in (loss, loss_g, grad):
        assert isinstance(result, torch.Tensor) and result.dtype == dtype


def test_lists_in_numpy_out_loss():
    loss = softmax_cross_entropy([[1.0, 2.0], [0.5, 0.0]], [0, 1], reduction="none")
    assert isinstance(loss, np.ndarray)
    expected = scipy.special.logsumexp([[1.0, 2.0], [0.5, 0.0]], axis=-1) - [1.0, 0.0]
    np.testing.assert_allclose(loss, expected, rtol=1e-14)


def test_lists_in_numpy_out_with_grad():
    _, grad = softmax_cross_entropy_with_grad([[1.0, 2.0]], [0])
    assert isinstance(grad, np.ndarray)
    np.testing.assert_allclose(grad, scipy.special.softmax([[1.0, 2.0]], axis=-1) - [[1.0, 0.0]])


# ------------------------------------------------------------------ bad input

_LOGITS = np.zeros((3, 4))
_INDEX = np.array([0, 1, 3])

BAD_INPUTS = [
    (
        "index -1",
        {"target": np.array([0, -1, 3])},
        ValueError,
        "class index -1, outside \\[0, 4\\)",
    ),
    ("index C", {"target": np.array([0, 4, 3])}, ValueError, "class index 4, outside \\[0, 4\\)"),
    (
        "float indices",
        {"target": np.array([0.0, 1.0, 3.0])},
        TypeError,
        "class-index target must have an integer dtype",
    ),
    (
        "bool target",
        {"target": np.array([True, False, True])},
        TypeError,
        "target must hold class indices.*got bool",
    ),
    ("index shape", {"target": np.array([0, 1])}, ValueError, "class-index target must have shape"),
    (
        "probs shape",
        {"target": np.full((3, 5), 0.2)},
        ValueError,
        "target must be class indices of shape",
    ),
    ("probs sum", {"target": np.full((3, 4), 0.3)}, ValueError, "target must sum to 1"),
    (
        "probs negative",
        {"target": np.array([[1.5, -0.5, 0, 0]] * 3)},
        ValueError,
        "target must be non-negative",
    ),
    (
        "probs nan",
        {"target": np.array([[np.nan, 1.0, 0, 0]] * 3)},
        ValueError,
        "target must be finite",
    ),
    (
        "weight length",
        {"weight": np.ones(3)},
        ValueError,
        "weight must have shape \\(n_classes,\\) = \\(4,\\)",
    ),
    (
        "weight negative",
        {"weight": np.array([1.0, -1.0, 1.0, 1.0])},
        ValueError,
        "weight must be finite and non-negative",
    ),
    (
        "weight nan",
        {"weight": np.array([1.0, np.nan, 1.0, 1.0])},
        ValueError,
        "weight must be finite and non-negative",
    ),
    (
        "weight int",
        {"weight": np.ones(4, dtype=np.int64)},
        TypeError,
        "weight must have a real floating dtype",
    ),
    (
        "smoothing -0.1",
        {"label_smoothing": -0.1},
        ValueError,
        "label_smoothing must be a number in \\[0, 1\\], got -0.1",
    ),
    (
        "smoothing 1.5",
        {"label_smoothing": 1.5},
        ValueError,
        "label_smoothing must be a number in \\[0, 1\\], got 1.5",
    ),
    ("reduction", {"reduction": "average"}, ValueError, "reduction must be one of .*got 'average'"),
    (
        "int logits",
        {"logits": np.zeros((3, 4), dtype=np.int64)},
        TypeError,
        "logits must have a real floating dtype",
    ),
    (
        "bool logits",
        {"logits": np.zeros((3, 4), dtype=bool)},
        TypeError,
        "logits must have a real floating dtype",
    ),
    (
        "scalar logits",
        {"logits": np.array(1.0), "target": np.array(0)},
        ValueError,
        "logits must have at least one dimension",
    ),
    ("no classes", {"logits": np.zeros((3, 0))}, ValueError, "logits must have at least one class"),
    ("ignore_index type", {"ignore_index": 1.0}, TypeError, "ignore_index must be an int or None"),
]


@pytest.mark.parametrize("func", [softmax_cross_entropy, softmax_cross_entropy_with_grad])
@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input_raises_naming_argument_and_fault(func, overrides, error, match):
    args = {"logits": _LOGITS, "target": _INDEX} | overrides
    logits, target = args.pop("logits"), args.pop("target")
    with pytest.raises(error, match=match):
        func(logits, target, **args)


def test_validate_false_skips_probability_check():
    probs = np.full((3, 4), 0.3)  # rows sum to 1.2
    loss = softmax_cross_entropy(_LOGITS, probs, validate=False, reduction="sum")
    np.testing.assert_allclose(loss, 3 * 1.2 * math.log(4.0), rtol=1e-14)
    _, grad = softmax_cross_entropy_with_grad(_LOGITS, probs, validate=False, reduction="sum")
    np.testing.assert_allclose(grad, 1.2 * 0.25 - probs, rtol=1e-14)  # (Σu) ŷ − u


def test_torch_bad_input_raises_too():
    with pytest.raises(TypeError, match="logits must have a real floating dtype"):
        softmax_cross_entropy(torch.zeros(3, 4, dtype=torch.int64), torch.tensor(_INDEX))
    with pytest.raises(ValueError, match="class index 4"):
        softmax_cross_entropy(torch.zeros(3, 4), torch.tensor([0, 4, 1]))


# ------------------------------------------------------------------ targets and numbers


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int16, torch.uint8])
def test_torch_targets_of_any_integer_dtype(dtype):
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(6, 5, dtype=torch.float64, generator=gen)
    target = torch.tensor([0, 4, 2, 1, 3, 4])
    weight = torch.rand(5, dtype=torch.float64, generator=gen)
    for kwargs in ({}, {"weight": weight}, {"ignore_index": 4}, {"label_smoothing": 0.1}):
        expected = F.cross_entropy(logits, target, **kwargs)
        got = softmax_cross_entropy(logits, target.to(dtype), **kwargs)
        np.testing.assert_allclose(got.numpy(), expected.numpy(), **PARITY, err_msg=str(kwargs))
        _, grad = softmax_cross_entropy_with_grad(logits, target.to(dtype), **kwargs)
        assert grad.shape == logits.shape


def test_numpy_scalar_label_smoothing_is_a_number():
    logits = np.random.default_rng(6).normal(size=(4, 3))
    target = np.array([0, 1, 2, 0])
    expected = softmax_cross_entropy(logits, target, label_smoothing=0.25)
    for value in (np.float32(0.25), np.float64(0.25)):
        got = softmax_cross_entropy(logits, target, label_smoothing=value)
        np.testing.assert_allclose(got, expected, rtol=1e-7)


def _half_logits():
    rng = np.random.default_rng(22)
    z = rng.normal(scale=4.0, size=(64, 29))
    z[0] = np.linspace(-30.0, 30.0, 29)
    target = rng.integers(0, 29, size=64)
    return z, target


@pytest.mark.parametrize(
    ("library", "dtype_name"),
    [("numpy", "float16"), ("torch", "float16"), ("torch", "bfloat16")],
)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_half_precision_loss_is_no_worse_than_the_naive_computation(library, dtype_name, reduction):
    """``|crossent − float64 truth| <= |naive same-dtype − truth| + tol``."""
    z, target = _half_logits()
    if library == "numpy":
        logits, t = z.astype(dtype_name), target
    else:
        logits, t = torch.tensor(z, dtype=getattr(torch, dtype_name)), torch.tensor(target)
    z64 = np.asarray(logits.float() if library == "torch" else logits, dtype=np.float64)
    truth, _ = torch_cross_entropy(z64, target, reduction=reduction)
    got = softmax_cross_entropy(logits, t, reduction=reduction)
    assert got.dtype == logits.dtype
    # the naive computation, every step in the half dtype
    xp_max = logits.max(axis=-1, keepdims=True) if library == "numpy" else None
    if library == "numpy":
        lse = xp_max + np.log(np.exp(logits - xp_max).sum(axis=-1, keepdims=True))
        per_sample = (lse - np.take_along_axis(logits, target[:, None], axis=-1))[:, 0]
        naive = per_sample.mean() if reduction == "mean" else per_sample
    else:
        m = logits.max(dim=-1, keepdim=True).values
        lse = m + torch.log(torch.exp(logits - m).sum(dim=-1, keepdim=True))
        per_sample = (lse - logits.gather(-1, t[:, None]))[:, 0]
        naive = per_sample.mean() if reduction == "mean" else per_sample
    ours_error = np.abs(_as64(got) - truth)
    naive_error = np.abs(_as64(naive) - truth)
    eps = {"float16": 2.0**-10, "bfloat16": 2.0**-7}[dtype_name]
    assert np.all(ours_error <= naive_error + eps * np.abs(truth) + 1e-6), (
        f"worst excess {np.max(ours_error - naive_error):.3g}"
    )
    # float64 accumulation: within one rounding of the result's own dtype
    np.testing.assert_allclose(_as64(got), truth, rtol=eps, atol=1e-6)


def _as64(x):
    return np.asarray(x.float() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
