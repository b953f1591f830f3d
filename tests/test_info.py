"""Tests of crossent.info: entropy, cross-entropy and KL divergence.

References: SciPy (``scipy.stats.entropy``, ``scipy.special.entr``, ``rel_entr``, ``xlogy``)
in float64; identities of the derivation with hypothesis.
"""

from __future__ import annotations

import math

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from crossent import cross_entropy, entropy, kl_divergence

SETTINGS = settings(max_examples=60, deadline=None)

# ------------------------------------------------------------------ strategies


def _weights(shape):
    """Non-negative float64 arrays with exact zeros and wide dynamic range (no subnormals)."""
    return hnp.arrays(
        np.float64,
        shape,
        elements=st.one_of(
            st.just(0.0),
            st.floats(1e-30, 1.0, allow_subnormal=False),
        ),
    )


@st.composite
def distributions(draw, min_outcomes=1, max_outcomes=12, batch=False, positive=False):
    """A float64 probability array: shape ``(n,)`` or ``(m, n)``, rows summing to 1."""
    n = draw(st.integers(min_outcomes, max_outcomes))
    shape = (draw(st.integers(1, 4)), n) if batch else (n,)
    raw = draw(_weights(shape))
    if positive:
        raw = raw + 1e-3
    totals = raw.sum(axis=-1, keepdims=True)
    assume(bool(np.all(totals > 0)))
    return raw / totals


@st.composite
def distribution_pairs(draw, batch=False):
    p = draw(distributions(batch=batch))
    raw = draw(_weights(p.shape))
    totals = raw.sum(axis=-1, keepdims=True)
    assume(bool(np.all(totals > 0)))
    return p, raw / totals


def _rng_probs(rng, shape, axis=-1):
    """Random probability vectors along ``axis`` with some exact zeros."""
    raw = rng.random(shape)
    raw[raw < 0.15] = 0.0
    raw = raw + (raw.sum(axis=axis, keepdims=True) == 0)  # no all-zero vector
    return raw / raw.sum(axis=axis, keepdims=True)


# ------------------------------------------------------------------ identities


@SETTINGS
@given(pq=distribution_pairs(batch=True))
def test_cross_entropy_is_entropy_plus_kl(pq):
    """The derivation's identity H(P, Q) = H(P) + KL(P‖Q), to rounding (also when +inf)."""
    p, q = pq
    lhs = cross_entropy(p, q)
    rhs = entropy(p) + kl_divergence(p, q)
    finite = np.isfinite(lhs)
    assert np.array_equal(finite, np.isfinite(rhs))
    assert np.all(lhs[~finite] == np.inf)
    scale = 1.0 + lhs[finite] + entropy(p)[finite]  # both terms are non-negative
    assert np.all(np.abs(lhs[finite] - rhs[finite]) <= 1e-12 * scale)


@SETTINGS
@given(pq=distribution_pairs(batch=True))
def test_kl_is_non_negative_and_zero_on_itself(pq):
    p, q = pq
    assert np.all(kl_divergence(p, q) >= -1e-12)
    assert np.all(kl_divergence(p, p) == 0.0)  # exactly: every term is p·log(1)
    assert np.all(kl_divergence(q, q) == 0.0)


@SETTINGS
@given(q=distributions(positive=True, max_outcomes=20), data=st.data())
def test_one_hot_cross_entropy_equals_kl_equals_minus_log_qk(q, data):
    """For one-hot P: H(P) = 0 and H(P, Q) = KL(P‖Q) = −log q_k (the derivation's claim)."""
    k = data.draw(st.integers(0, q.size - 1))
    p = np.zeros_like(q)
    p[k] = 1.0
    expected = -math.log(q[k])
    assert entropy(p) == 0.0
    np.testing.assert_allclose(cross_entropy(p, q), expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(kl_divergence(p, q), expected, rtol=1e-12, atol=1e-15)


@SETTINGS
@given(p=distributions(batch=True))
def test_entropy_is_between_zero_and_log_n(p):
    h = entropy(p)
    assert np.all(h >= 0.0)
    assert np.all(h <= math.log(p.shape[-1]) * (1 + 1e-12))


# ------------------------------------------------------------------ SciPy references


@pytest.mark.parametrize("base", [None, 2.0, 10.0])
@pytest.mark.parametrize(
    ("shape", "axis"),
    [((7,), -1), ((5, 9), -1), ((9, 5), 0), ((3, 4, 6), 1), ((3, 4, 6), -1), ((3, 4, 6), 0)],
)
def test_entropy_matches_scipy(shape, axis, base, close):
    p = _rng_probs(np.random.default_rng(1), shape, axis)
    log_base = 1.0 if base is None else math.log(base)
    close(entropy(p, axis=axis, base=base), scipy.stats.entropy(p, base=base, axis=axis))
    close(entropy(p, axis=axis, base=base), scipy.special.entr(p).sum(axis=axis) / log_base)


@pytest.mark.parametrize("base", [None, 2.0])
@pytest.mark.parametrize(
    ("shape", "axis"),
    [((7,), -1), ((5, 9), -1), ((9, 5), 0), ((3, 4, 6), 1), ((3, 4, 6), -1), ((3, 4, 6), 0)],
)
def test_kl_and_cross_entropy_match_scipy(shape, axis, base, close):
    rng = np.random.default_rng(2)
    p = _rng_probs(rng, shape, axis)
    q = rng.random(shape) + 0.01
    q /= q.sum(axis=axis, keepdims=True)
    log_base = 1.0 if base is None else math.log(base)
    kl = kl_divergence(p, q, axis=axis, base=base)
    close(kl, scipy.stats.entropy(p, q, base=base, axis=axis))
    close(kl, scipy.special.rel_entr(p, q).sum(axis=axis) / log_base)
    ce = cross_entropy(p, q, axis=axis, base=base)
    close(ce, -scipy.special.xlogy(p, q).sum(axis=axis) / log_base)


def test_base_two_gives_bits():
    assert entropy(np.full(8, 1 / 8), base=2) == pytest.approx(3.0, rel=1e-15)
    assert cross_entropy([1.0, 0.0], [0.25, 0.75], base=2) == pytest.approx(2.0, rel=1e-15)


def test_cross_entropy_broadcasts_p_against_a_batch_of_q(close):
    rng = np.random.default_rng(3)
    p = _rng_probs(rng, (6,))
    q = _rng_probs(rng, (4, 6)) * 0.5 + 0.5 / 6
    close(cross_entropy(p, q), -scipy.special.xlogy(p[None, :], q).sum(axis=-1))
    close(kl_divergence(p, q), scipy.special.rel_entr(p[None, :], q).sum(axis=-1))


# ------------------------------------------------------------------ conventions


def test_q_zero_where_p_positive_gives_inf_not_nan(close):
    p = np.array([[0.5, 0.5, 0.0], [0.2, 0.8, 0.0]])
    q = np.array([[0.0, 0.5, 0.5], [0.5, 0.5, 0.0]])  # row 0: q = 0 under p > 0
    ce = cross_entropy(p, q)
    kl = kl_divergence(p, q)
    assert ce[0] == np.inf and kl[0] == np.inf
    assert np.isfinite(ce[1]) and np.isfinite(kl[1])
    close(ce, -scipy.special.xlogy(p, q).sum(axis=-1))  # inf == inf is "close"
    close(kl, scipy.special.rel_entr(p, q).sum(axis=-1))


def test_zero_log_zero_is_zero():
    assert entropy([1.0, 0.0]) == 0.0
    assert entropy(np.array([0.0, 0.0, 1.0])) == 0.0
    assert cross_entropy([1.0, 0.0], [1.0, 0.0]) == 0.0  # 0 · log 0 = 0
    assert kl_divergence([1.0, 0.0], [1.0, 0.0]) == 0.0
    assert kl_divergence([0.0, 1.0], [0.5, 0.5]) == pytest.approx(math.log(2), rel=1e-15)


def test_kl_with_subnormal_q_is_finite_like_scipy():
    p = np.array([0.5, 0.5 - 1e-320, 1e-320])
    q = np.array([1e-320, 0.5, 0.5 - 1e-320])
    expected = scipy.special.rel_entr(p, q).sum()  # ≈ 368.07, finite
    assert np.isfinite(expected)
    np.testing.assert_allclose(kl_divergence(p, q), expected, rtol=1e-12)
    np.testing.assert_allclose(cross_entropy(p, q), entropy(p) + kl_divergence(p, q), rtol=1e-12)


def test_validate_false_skips_normalisation_check(close):
    p = np.array([0.2, 0.2, 0.2])  # sums to 0.6
    q = np.array([0.5, 0.25, 0.5])
    close(entropy(p, validate=False), scipy.special.entr(p).sum())
    close(cross_entropy(p, q, validate=False), -scipy.special.xlogy(p, q).sum())
    close(kl_divergence(p, q, validate=False), scipy.special.rel_entr(p, q).sum())


def test_tol_widens_the_normalisation_check():
    p = np.array([0.5, 0.5 + 1e-4])
    with pytest.raises(ValueError, match="p must sum to 1"):
        entropy(p)
    assert np.isfinite(entropy(p, tol=1e-3))


# ------------------------------------------------------------------ bad input

_BAD_P = [
    (np.array([1.2, -0.2]), "p must be non-negative"),
    (np.array([np.nan, 1.0]), "p must be finite"),
    (np.array([np.inf, 1.0]), "p must be finite"),
    (np.array([0.3, 0.3]), "p must sum to 1"),
]


@pytest.mark.parametrize(("p", "match"), _BAD_P)
@pytest.mark.parametrize("func", ["entropy", "cross_entropy", "kl_divergence"])
def test_bad_p_raises_value_error_naming_it(func, p, match):
    with pytest.raises(ValueError, match=match):
        if func == "entropy":
            entropy(p)
        elif func == "cross_entropy":
            cross_entropy(p, np.array([0.5, 0.5]))
        else:
            kl_divergence(p, np.array([0.5, 0.5]))


@pytest.mark.parametrize(("q", "match"), [(p, m.replace("p ", "q ")) for p, m in _BAD_P])
@pytest.mark.parametrize("func", [cross_entropy, kl_divergence])
def test_bad_q_raises_value_error_naming_it(func, q, match):
    with pytest.raises(ValueError, match=match):
        func(np.array([0.5, 0.5]), q)


@pytest.mark.parametrize("func", [cross_entropy, kl_divergence])
@pytest.mark.parametrize(
    ("p_shape", "q_shape", "match"),
    [((3,), (4,), "same number of outcomes"), ((2, 3), (4, 3), "do not broadcast")],
)
def test_mismatched_shapes_raise(func, p_shape, q_shape, match):
    p = np.full(p_shape, 1.0 / p_shape[-1])
    q = np.full(q_shape, 1.0 / q_shape[-1])
    with pytest.raises(ValueError, match=f"p and q.*{match}"):
        func(p, q)


@pytest.mark.parametrize("base", [0, 0.0, -2.0, 1, 1.0, math.inf, math.nan])
@pytest.mark.parametrize("func", ["entropy", "cross_entropy", "kl_divergence"])
def test_bad_base_raises(func, base):
    p = np.array([0.25, 0.75])
    with pytest.raises(ValueError, match=r"base must be a positive finite number other than 1"):
        if func == "entropy":
            entropy(p, base=base)
        else:
            {"cross_entropy": cross_entropy, "kl_divergence": kl_divergence}[func](p, p, base=base)


def test_integer_probabilities_raise_type_error():
    with pytest.raises(TypeError, match="p must have a real floating dtype"):
        entropy(np.array([0, 1]))
    with pytest.raises(TypeError, match="q must have a real floating dtype"):
        kl_divergence(np.array([0.0, 1.0]), np.array([0, 1]))


def test_scalar_and_bad_axis_raise():
    with pytest.raises(ValueError, match="p must have at least one dimension"):
        entropy(np.array(1.0))
    with pytest.raises(ValueError, match="axis 2 is out of range for p"):
        entropy(np.array([[0.5, 0.5]]), axis=2)


# ------------------------------------------------------------------ array back ends


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_in_torch_out(dtype, tol):
    rng = np.random.default_rng(4)
    p_np = _rng_probs(rng, (5, 6))
    q_np = rng.random((5, 6)) + 0.05
    q_np /= q_np.sum(axis=-1, keepdims=True)
    p, q = torch.tensor(p_np, dtype=dtype), torch.tensor(q_np, dtype=dtype)
    p64, q64 = p.double().numpy(), q.double().numpy()  # the same rounded inputs
    checks = [
        (entropy(p, base=2), scipy.stats.entropy(p64, base=2, axis=-1)),
        (cross_entropy(p, q), -scipy.special.xlogy(p64, q64).sum(axis=-1)),
        (kl_divergence(p, q), scipy.special.rel_entr(p64, q64).sum(axis=-1)),
    ]
    for result, expected in checks:
        assert isinstance(result, torch.Tensor)
        assert result.dtype == dtype
        np.testing.assert_allclose(result.numpy(), expected, **tol(dtype))


def test_torch_inf_convention():
    p = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)
    q = torch.tensor([0.0, 0.5, 0.5], dtype=torch.float64)
    assert cross_entropy(p, q).item() == math.inf
    assert kl_divergence(p, q).item() == math.inf
    assert entropy(torch.tensor([1.0, 0.0])).item() == 0.0


def test_lists_in_numpy_out():
    for result in (
        entropy([0.25, 0.75]),
        cross_entropy([0.25, 0.75], [0.5, 0.5]),
        kl_divergence([[0.25, 0.75]], [[0.5, 0.5]]),
    ):
        assert isinstance(result, (np.ndarray, np.generic))
    assert entropy([0.25, 0.75]) == pytest.approx(scipy.stats.entropy([0.25, 0.75]), rel=1e-14)


def test_float32_stays_float32():
    p = np.array([[0.25, 0.75]], dtype=np.float32)
    for result in (entropy(p), cross_entropy(p, p), kl_divergence(p, p)):
        assert result.dtype == np.float32


# ------------------------------------------------------------------ numbers of any type


@pytest.mark.parametrize(
    "base", [np.int64(2), np.int32(2), np.float32(2.0), np.float64(2.0), 2], ids=repr
)
def test_numpy_scalar_base_is_accepted(base):
    p = np.array([0.5, 0.25, 0.25])
    q = np.array([0.25, 0.5, 0.25])
    assert entropy(p, base=base) == pytest.approx(scipy.stats.entropy(p, base=2), rel=1e-15)
    ce = -scipy.special.xlogy(p, q).sum() / math.log(2.0)
    assert cross_entropy(p, q, base=base) == pytest.approx(ce, rel=1e-15)
    assert kl_divergence(p, q, base=base) == pytest.approx(
        scipy.stats.entropy(p, q, base=2), rel=1e-15
    )


@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_a_certain_outcome_has_entropy_plus_zero(library):
    """``-Σ 0`` is ``-0.0`` in IEEE arithmetic; the entropy of a certain outcome is ``+0.0``."""
    p = [[1.0, 0.0], [0.0, 1.0]]
    p = np.array(p) if library == "numpy" else torch.tensor(p, dtype=torch.float64)
    for value in (entropy(p), kl_divergence(p, p), cross_entropy(p, p)):
        values = np.asarray(value)
        assert np.all(values == 0.0) and not np.any(np.signbit(values)), values
    assert not np.signbit(entropy([1.0, 0.0], base=0.5))  # a base below 1 flips the sign


@pytest.mark.parametrize("tol", [math.nan, -1e-3, math.inf, "0.1"], ids=repr)
@pytest.mark.parametrize("func", ["entropy", "cross_entropy", "kl_divergence"])
def test_tol_must_be_a_finite_number_at_least_zero(func, tol):
    """A NaN tolerance once let every non-normalised input through."""
    p = np.array([0.5, 0.6])
    call = {
        "entropy": lambda: entropy(p, tol=tol),
        "cross_entropy": lambda: cross_entropy(p, p, tol=tol),
        "kl_divergence": lambda: kl_divergence(p, p, tol=tol),
    }[func]
    with pytest.raises(ValueError, match="tol must be a finite number"):
        call()
    # a finite tolerance still widens the check: Σ p = 1.1 passes with tol=0.2
    assert entropy(p, tol=0.2) == pytest.approx(-scipy.special.xlogy(p, p).sum(), rel=1e-15)
