"""Tests of crossent.softmax: logsumexp, softmax, log_softmax and the shared max-shift.

References: ``scipy.special.logsumexp / softmax / log_softmax`` in float64, torch's
``softmax`` / ``log_softmax`` / ``logsumexp`` and autograd, and exact hand values.
"""

from __future__ import annotations

import math

import array_api_compat
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import scipy.special
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from crossent import log_softmax, logsumexp, softmax
from crossent.softmax import shifted_logits

SETTINGS = settings(max_examples=60, deadline=None)

logit_arrays = hnp.arrays(
    np.float64,
    hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=8),
    elements=st.floats(-50.0, 50.0, allow_subnormal=False),
)


# ------------------------------------------------------------------ identities


@SETTINGS
@given(z=logit_arrays)
def test_softmax_is_a_distribution(z):
    probs = softmax(z)
    assert np.all(probs >= 0.0)
    n = z.shape[-1]
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=0, atol=4 * n * 2.3e-16)


@SETTINGS
@given(
    z=hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 6), st.integers(1, 9)),
        elements=st.floats(-50.0, 50.0, allow_subnormal=False),
    ),
    data=st.data(),
)
def test_softmax_is_invariant_to_a_constant_per_row(z, data):
    shift = data.draw(
        hnp.arrays(np.float64, (z.shape[0], 1), elements=st.floats(-100.0, 100.0)),
    )
    # (z + c) rounds each entry by up to eps·150, which moves log-probabilities by as much
    np.testing.assert_allclose(softmax(z + shift), softmax(z), rtol=1e-12, atol=0)
    np.testing.assert_allclose(log_softmax(z + shift), log_softmax(z), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(logsumexp(z + shift), logsumexp(z) + shift[:, 0], rtol=1e-12)


@SETTINGS
@given(z=logit_arrays)
def test_log_softmax_is_z_minus_logsumexp(z):
    expected = z - logsumexp(z, keepdims=True)
    np.testing.assert_allclose(log_softmax(z), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.exp(log_softmax(z)), softmax(z), rtol=1e-12, atol=1e-300)


# ------------------------------------------------------------------ SciPy references


@pytest.mark.parametrize(
    ("shape", "axis"),
    [((9,), -1), ((5, 11), -1), ((5, 11), 0), ((3, 4, 7), -1), ((3, 4, 7), 0), ((3, 4, 7), 1)],
)
def test_match_scipy(shape, axis, close):
    z = np.random.default_rng(10).normal(scale=10.0, size=shape)
    close(logsumexp(z, axis=axis), scipy.special.logsumexp(z, axis=axis))
    close(
        logsumexp(z, axis=axis, keepdims=True),
        scipy.special.logsumexp(z, axis=axis, keepdims=True),
    )
    close(softmax(z, axis=axis), scipy.special.softmax(z, axis=axis), atol=1e-300)
    close(log_softmax(z, axis=axis), scipy.special.log_softmax(z, axis=axis))


def test_rows_with_inf_and_nan_match_scipy_logsumexp_and_log_softmax():
    z = np.array([[np.inf, 0.0], [np.nan, 0.0], [np.inf, np.inf], [-np.inf, 0.0]])
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(logsumexp(z), scipy.special.logsumexp(z, axis=-1))
        np.testing.assert_array_equal(log_softmax(z), scipy.special.log_softmax(z, axis=-1))


def test_softmax_row_with_plus_inf_is_nan_like_scipy():
    z = np.array([[np.inf, 0.0]])
    with np.errstate(all="ignore"):
        expected = scipy.special.softmax(z, axis=-1)
    np.testing.assert_array_equal(softmax(z), expected)


# ------------------------------------------------------------------ extremes


def test_huge_logits_do_not_overflow():
    z = np.array([1e4, -1e4])
    assert logsumexp(z) == 1e4  # 1e4 + log(1 + e^-2e4), the second term below half an ulp
    assert logsumexp(np.array([1e4, 1e4])) == 1e4 + math.log(2.0)
    np.testing.assert_array_equal(softmax(z), [1.0, 0.0])  # e^-2e4 underflows to 0 exactly
    np.testing.assert_array_equal(log_softmax(z), [0.0, -2e4])
    np.testing.assert_array_equal(softmax(np.array([-1e4, -1e4])), [0.5, 0.5])


def test_masked_classes_get_probability_zero():
    z = np.array([[0.0, math.log(3.0), -np.inf], [-np.inf, 1.0, 1.0]])
    np.testing.assert_allclose(softmax(z), [[0.25, 0.75, 0.0], [0.0, 0.5, 0.5]], rtol=1e-15)
    np.testing.assert_allclose(logsumexp(z), [math.log(4.0), 1.0 + math.log(2.0)], rtol=1e-15)
    log_probs = log_softmax(z)
    assert log_probs[0, 2] == -np.inf and log_probs[1, 0] == -np.inf
    np.testing.assert_allclose(log_probs[0, :2], [math.log(0.25), math.log(0.75)], rtol=1e-15)


def test_all_minus_inf_row_is_documented_nan():
    """An all −inf row: logsumexp −inf, softmax and log_softmax NaN; other rows unharmed."""
    z = np.array([[-np.inf, -np.inf, -np.inf], [0.0, 0.0, 0.0]])
    lse = logsumexp(z)
    assert lse[0] == -np.inf
    assert lse[1] == pytest.approx(math.log(3.0), rel=1e-15)
    assert np.all(np.isnan(softmax(z)[0])) and np.all(np.isnan(log_softmax(z)[0]))
    np.testing.assert_allclose(softmax(z)[1], 1 / 3, rtol=1e-15)


# ------------------------------------------------------------------ float32


def test_float32_within_1e5_of_float64(tol):
    z32 = np.random.default_rng(11).normal(scale=10.0, size=(64, 1000)).astype(np.float32)
    z64 = z32.astype(np.float64)  # the same rounded logits
    for func in (softmax, log_softmax, logsumexp):
        result = func(z32)
        assert result.dtype == np.float32, func.__name__
        expected = func(z64)
        np.testing.assert_allclose(result, expected, **tol(np.float32), err_msg=func.__name__)
    np.testing.assert_allclose(softmax(z32).sum(axis=-1), 1.0, rtol=1e-5)


def test_shifted_logits_normaliser_is_float64():
    z = np.random.default_rng(12).normal(size=(4, 6)).astype(np.float32)
    shifted, row_max, log_norm = shifted_logits(np, z)
    assert shifted.dtype == np.float32 and log_norm.dtype == np.float64
    assert shifted.shape == z.shape and row_max.shape == log_norm.shape == (4, 1)
    np.testing.assert_array_equal(row_max[:, 0], z.max(axis=-1))
    np.testing.assert_allclose(
        row_max + log_norm,
        scipy.special.logsumexp(z.astype(np.float64), axis=-1, keepdims=True),
        rtol=1e-7,
    )


# ------------------------------------------------------------------ torch


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_in_torch_out(dtype, tol):
    z = torch.randn(3, 5, 7, dtype=dtype, generator=torch.Generator().manual_seed(0)) * 10
    pairs = [
        (softmax(z, axis=1), torch.softmax(z.double(), dim=1)),
        (log_softmax(z), torch.log_softmax(z.double(), dim=-1)),
        (logsumexp(z, axis=0), torch.logsumexp(z.double(), dim=0)),
    ]
    for result, expected in pairs:
        assert isinstance(result, torch.Tensor) and result.dtype == dtype
        np.testing.assert_allclose(result.numpy(), expected.numpy(), **tol(dtype))


def test_torch_autograd_gradient_of_logsumexp_is_softmax(close):
    """∂ lse(z) / ∂z = ŷ, and the max-shift adds nothing to the gradient."""
    z = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 5
    z.requires_grad_(True)
    logsumexp(z).sum().backward()
    close(z.grad, scipy.special.softmax(z.detach().numpy(), axis=-1))
    _, row_max, _ = shifted_logits(array_api_compat.array_namespace(z), z)
    assert not row_max.requires_grad


def test_torch_autograd_through_log_softmax_matches_torch(close):
    gen = torch.Generator().manual_seed(2)
    z = (torch.randn(5, 8, dtype=torch.float64, generator=gen) * 5).requires_grad_(True)
    upstream = torch.randn(5, 8, dtype=torch.float64, generator=gen)
    (grad,) = torch.autograd.grad((log_softmax(z) * upstream).sum(), z)
    (expected,) = torch.autograd.grad((torch.log_softmax(z, -1) * upstream).sum(), z)
    close(grad, expected)
    (grad,) = torch.autograd.grad((softmax(z) * upstream).sum(), z)
    (expected,) = torch.autograd.grad((torch.softmax(z, -1) * upstream).sum(), z)
    close(grad, expected)


def test_lists_in_numpy_out():
    for func in (softmax, log_softmax, logsumexp):
        result = func([[0.0, 1.0], [2.0, 2.0]])
        assert isinstance(result, np.ndarray), func.__name__
    np.testing.assert_allclose(softmax([0.0, 0.0]), [0.5, 0.5], rtol=1e-15)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("func", [softmax, log_softmax, logsumexp])
def test_bad_logits_raise(func):
    with pytest.raises(TypeError, match="logits must have a real floating dtype"):
        func(np.array([1, 2, 3]))
    with pytest.raises(TypeError, match="logits must have a real floating dtype"):
        func(np.array([True, False]))
    with pytest.raises(ValueError, match="logits must have at least one dimension"):
        func(np.array(1.0))
    with pytest.raises(ValueError, match="axis 2 is out of range for logits"):
        func(np.zeros((2, 3)), axis=2)


# ------------------------------------------------------------------ zero classes


@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_zero_classes_give_empty_distributions_and_minus_inf_lse(library):
    """As SciPy and torch: softmax of (3, 0) is (3, 0), logsumexp is [-inf] * 3."""
    z = np.zeros((3, 0)) if library == "numpy" else torch.zeros((3, 0), dtype=torch.float64)
    assert tuple(softmax(z).shape) == tuple(log_softmax(z).shape) == (3, 0)
    lse = logsumexp(z)
    expected = torch.logsumexp(torch.zeros((3, 0), dtype=torch.float64), dim=-1).numpy()
    np.testing.assert_array_equal(np.asarray(lse), expected)
    np.testing.assert_array_equal(np.asarray(lse), scipy.special.logsumexp(np.zeros((3, 0)), -1))
    assert tuple(logsumexp(z, keepdims=True).shape) == (3, 1)
    assert tuple(softmax(z, axis=0).shape) == (3, 0)  # an empty batch axis is fine too


# ------------------------------------------------------------------ half precision


def _naive(func_name, z, xp):
    """The textbook computation, every step in ``z``'s own dtype."""
    m = xp.max(z, axis=-1, keepdims=True)
    e = xp.exp(z - m)
    total = xp.sum(e, axis=-1, keepdims=True)
    if func_name == "softmax":
        return e / total
    return z - m - xp.log(total)


def _half_cases():
    rng = np.random.default_rng(21)
    z = rng.normal(scale=4.0, size=(48, 37))
    z[0] = np.linspace(-20.0, 20.0, 37)  # a wide row
    z[1] = 0.01 * rng.normal(size=37)  # a near-flat row
    for name in ("softmax", "log_softmax"):
        yield pytest.param(name, "float16", np.float16(z), id=f"{name}-numpy-float16")
        yield pytest.param(
            name, "float16", torch.tensor(z, dtype=torch.float16), id=f"{name}-torch-float16"
        )
        yield pytest.param(
            name, "bfloat16", torch.tensor(z, dtype=torch.bfloat16), id=f"{name}-torch-bfloat16"
        )


@pytest.mark.parametrize(("func_name", "dtype_name", "z"), list(_half_cases()))
def test_half_precision_is_no_worse_than_the_naive_computation(func_name, dtype_name, z):
    """``|crossent − float64 truth| <= |naive same-dtype − truth| + tol`` entrywise."""
    func = {"softmax": softmax, "log_softmax": log_softmax}[func_name]
    xp = array_api_compat.array_namespace(z)
    result = func(z)
    assert result.dtype == z.dtype
    z64 = np.asarray(z.float().numpy() if isinstance(z, torch.Tensor) else z, dtype=np.float64)
    truth = getattr(scipy.special, func_name)(z64, axis=-1)
    ours = np.abs(_to64(result) - truth)
    naive = np.abs(_to64(_naive(func_name, z, xp)) - truth)
    eps = {"float16": 2.0**-10, "bfloat16": 2.0**-7}[dtype_name]
    slack = eps * np.abs(truth) + 2.0**-24  # one unit of the result's own rounding
    worse = ours > naive + slack
    assert not worse.any(), f"{worse.sum()} entries worse than naive, e.g. {ours[worse][:3]}"


def _to64(x):
    return np.asarray(x.float().numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float64)


@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_float16_softmax_over_more_classes_than_float16_max_sums_to_1(library):
    """70,000 near-equal logits: the normaliser 7e4 is beyond float16, exp(z − lse) is not."""
    z = np.zeros((2, 70_000))
    z[:, 0] = 1.0
    z[1, 1:] = np.random.default_rng(3).normal(scale=1e-3, size=69_999)
    half = np.float16(z) if library == "numpy" else torch.tensor(z, dtype=torch.float16)
    probs = _to64(softmax(half))
    truth = scipy.special.softmax(_to64(half), axis=-1)
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-2)
    np.testing.assert_allclose(probs, truth, rtol=1e-2, atol=2.0**-24)  # float16 subnormal step
