"""Sparse features: the objective, the preconditioner and the classifier on SciPy CSR input.

References: the same objective on the densified matrix (small problems only), central
finite differences, the preconditioner's statistics by NumPy on the dense form, and
scikit-learn's ``LogisticRegression(C=1/λ, solver="newton-cg", tol=1e-10)`` on the same
sparse matrix (see ``tests/test_classifier.py`` for why newton-cg, and how two classes map).
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse import _sparsetools
from sklearn.linear_model import LogisticRegression

from crossent import SoftmaxClassifier
from crossent import objective as objective_module
from crossent._stats import feature_moments, max_abs
from crossent.objective import LinearSoftmaxObjective, add_scaled_inplace
from crossent.solvers import Preconditioner

pytestmark = pytest.mark.usefixtures("single_blas_thread")

TIGHT = {"tol": 1e-10, "max_iter": 10_000}
MATCH_RTOL = 1e-5  # relative to max |coef|, as in tests/test_classifier.py
FD_RTOL = 1e-7


def sparse_problem(n, d, n_classes, *, density=0.1, seed=0, weighted=False, fmt="csr"):
    """Random sparse ``X`` (scale-varied columns), ``y``, ``W``, ``b`` and weights ``s``."""
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=density, format="csr", random_state=seed)
    X = sp.csr_matrix(X @ sp.diags(np.geomspace(0.1, 10.0, d)))  # (n, d) columns of varied scale
    y = rng.integers(0, n_classes, size=n)
    W = 0.5 * rng.standard_normal((n_classes, d))
    b = rng.standard_normal(n_classes)
    s = rng.uniform(0.1, 3.0, size=n) if weighted else None
    return X.asformat(fmt), y, W, b, s


def rel_err(actual, desired):
    return float(np.max(np.abs(actual - desired)) / max(np.max(np.abs(desired)), 1e-300))


class _SparseProductSpy:
    """Records the float dtypes SciPy's sparse × dense kernels compute in."""

    NAMES = ("csr_matvecs", "csc_matvecs", "csr_matvec", "csc_matvec")

    def __init__(self, monkeypatch):
        self.calls: list[tuple[str, tuple[np.dtype, ...]]] = []
        for name in self.NAMES:
            monkeypatch.setattr(_sparsetools, name, self._wrap(name, getattr(_sparsetools, name)))

    def _wrap(self, name, original):
        def spy(*args):
            floats = tuple(
                a.dtype for a in args if isinstance(a, np.ndarray) and a.dtype.kind == "f"
            )
            self.calls.append((name, floats))
            return original(*args)

        return spy


# ------------------------------------------------------------------ the objective


@pytest.mark.parametrize(
    ("shape", "fit_intercept", "weighted", "chunk_rows", "n_threads"),
    [
        (shape, fit_intercept, weighted, chunk_rows, n_threads)
        for shape, fit_intercept, weighted, (chunk_rows, n_threads) in itertools.product(
            [(47, 31, 13), (1, 5, 3), (120, 7, 2), (200, 123, 5)],
            [True, False],
            [False, True],
            [(None, 1), (10, 1), (10, 2), (7, 3)],
        )
    ],
)
def test_objective_on_csr_equals_the_dense_objective(
    shape, fit_intercept, weighted, chunk_rows, n_threads
):
    X, y, W, b, s = sparse_problem(*shape, seed=sum(shape), weighted=weighted)
    intercept = b if fit_intercept else None
    kwargs = {"l2": 0.7, "sample_weight": s, "fit_intercept": fit_intercept}
    sparse = LinearSoftmaxObjective(
        X, y, shape[2], chunk_rows=chunk_rows, n_threads=n_threads, **kwargs
    )
    dense = LinearSoftmaxObjective(X.toarray(), y, shape[2], **kwargs)
    loss, grad_W, grad_b = sparse.loss_gradient(W, intercept)
    loss_d, grad_W_d, grad_b_d = dense.loss_gradient(W, intercept)
    assert abs(loss - loss_d) <= 1e-12 * abs(loss_d)
    assert rel_err(grad_W, grad_W_d) <= 1e-12, "∂L/∂W on CSR differs from the dense one"
    np.testing.assert_allclose(grad_b, grad_b_d, rtol=1e-12, atol=1e-12)
    assert grad_W.shape == W.shape and grad_W.dtype == np.float64


@pytest.mark.parametrize("fmt", ["csc", "coo", "csr_array", "csc_array"])
def test_other_sparse_formats_are_converted_to_csr_once(fmt):
    X, y, W, b, _ = sparse_problem(40, 9, 3, seed=3)
    other = sp.csr_array(X).asformat(fmt[:3]) if fmt.endswith("_array") else X.asformat(fmt)
    objective = LinearSoftmaxObjective(other, y, 3, l2=1.0)
    assert objective.X.format == "csr"
    reference = LinearSoftmaxObjective(X.toarray(), y, 3, l2=1.0).loss_gradient(W, b)
    for got, want in zip(objective.loss_gradient(W, b), reference, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize(("fit_intercept", "weighted"), [(True, True), (False, False)])
def test_gradient_on_csr_matches_central_differences(fit_intercept, weighted):
    X, y, W, b, s = sparse_problem(30, 8, 4, seed=5, weighted=weighted)
    objective = LinearSoftmaxObjective(
        X, y, 4, l2=0.3, sample_weight=s, fit_intercept=fit_intercept, chunk_rows=7
    )
    intercept = b if fit_intercept else None
    _, grad_W, grad_b = objective.loss_gradient(W, intercept)
    step = 1e-5
    numeric_W = np.empty_like(W)
    for index in np.ndindex(W.shape):
        up, down = W.copy(), W.copy()
        up[index] += step
        down[index] -= step
        numeric_W[index] = (
            objective.loss_gradient(up, intercept)[0] - objective.loss_gradient(down, intercept)[0]
        ) / (2 * step)
    assert rel_err(grad_W, numeric_W) <= FD_RTOL
    if fit_intercept:
        numeric_b = np.array(
            [
                (
                    objective.loss_gradient(W, b + step * e)[0]
                    - objective.loss_gradient(W, b - step * e)[0]
                )
                / (2 * step)
                for e in np.eye(4)
            ]
        )
        assert rel_err(grad_b, numeric_b) <= FD_RTOL


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sparse_products_run_in_the_data_dtype(monkeypatch, dtype):
    X, y, W, b, s = sparse_problem(47, 31, 13, seed=6, weighted=True)
    objective = LinearSoftmaxObjective(
        X.astype(dtype), y, 13, l2=0.5, sample_weight=s, chunk_rows=10
    )
    spy = _SparseProductSpy(monkeypatch)
    loss, grad_W, grad_b = objective.loss_gradient(W, b)
    names = [name for name, _ in spy.calls]
    assert len(names) == 2 * 5, f"expected two products per chunk: {names}"
    assert set(names) <= {"csr_matvecs", "csc_matvecs"}, names
    for name, dtypes in spy.calls:
        assert dtypes and all(dt == dtype for dt in dtypes), f"{name} computed in {dtypes}"
    assert isinstance(loss, float) and grad_W.dtype == grad_b.dtype == np.float64


def test_sparse_chunks_are_read_column_by_column_once(monkeypatch):
    """A chunk with at least ``d`` non-zeros, of a problem whose weights outgrow the cache
    (here: any), is converted to CSC at its first read and kept: ``X_c Wᵀ`` is then SciPy's
    CSC product, ``X_cᵀ G`` its CSR one; the result is that of the dense objective."""
    monkeypatch.setattr(objective_module, "_CSC_WEIGHT_BYTES", 0)
    X, y, W, b, s = sparse_problem(200, 31, 7, density=0.3, seed=9, weighted=True)
    objective = LinearSoftmaxObjective(X, y, 7, l2=0.5, sample_weight=s, chunk_rows=50)
    dense = LinearSoftmaxObjective(X.toarray(), y, 7, l2=0.5, sample_weight=s)
    want = dense.loss_gradient(W, b)
    for _ in range(2):  # converted at the first evaluation, reused at the second
        got = objective.loss_gradient(W, b)
        assert abs(got[0] - want[0]) <= 1e-12 * abs(want[0])
        assert rel_err(got[1], want[1]) <= 1e-12 and rel_err(got[2], want[2]) <= 1e-12
        assert sorted(objective._column_chunks) == [(0, 50), (50, 100), (100, 150), (150, 200)]
        assert all(chunk.format == "csc" for chunk in objective._column_chunks.values())
    spy = _SparseProductSpy(monkeypatch)
    objective.loss_gradient(W, b)
    assert [name for name, _ in spy.calls] == ["csc_matvecs", "csr_matvecs"] * 4
    thin = sp.csr_matrix((np.ones(3), ([0, 1, 2], [0, 5, 9])), shape=(3, 10))
    thin_objective = LinearSoftmaxObjective(thin, np.array([0, 1, 0]), 2, l2=1.0)
    thin_objective.loss_gradient(np.full((2, 10), 0.1), np.zeros(2))  # W = 0 reads no chunk
    assert [c.format for c in thin_objective._column_chunks.values()] == ["csr"]
    monkeypatch.undo()  # weights that fit in cache: CSR views, no copy
    small = LinearSoftmaxObjective(X, y, 7, l2=0.5, sample_weight=s, chunk_rows=50)
    small.loss_gradient(W, b)
    assert all(chunk.format == "csr" for chunk in small._column_chunks.values())


@pytest.mark.parametrize(
    ("out_order", "values_order", "view"),
    [("C", "C", False), ("F", "F", False), ("C", "F", False), ("F", "C", False), ("C", "C", True)],
)
def test_add_scaled_inplace_equals_the_numpy_formula(out_order, values_order, view):
    """``out += a · values`` in place, whatever the two layouts (one axpy when they agree)."""
    rng = np.random.default_rng(4)
    out = np.asarray(rng.standard_normal((7, 12)), order=out_order)
    values = np.asarray(rng.standard_normal((7, 12)), order=values_order)
    if view:  # strided: neither C- nor F-contiguous
        out, values = out[:, ::2], values[:, ::2]
    want = out + 0.3 * values
    target = out
    add_scaled_inplace(out, 0.3, values)
    assert out is target
    np.testing.assert_allclose(out, want, rtol=1e-15, atol=1e-15)


def test_float32_csr_agrees_with_float64():
    X, y, W, b, s = sparse_problem(500, 31, 13, seed=7, weighted=True)
    kwargs = {"l2": 0.5, "sample_weight": s, "chunk_rows": 64}
    loss32, grad32, _ = LinearSoftmaxObjective(X.astype(np.float32), y, 13, **kwargs).loss_gradient(
        W, b
    )
    loss64, grad64, _ = LinearSoftmaxObjective(X, y, 13, **kwargs).loss_gradient(W, b)
    assert abs(loss32 - loss64) <= 1e-5 * abs(loss64)
    assert rel_err(grad32, grad64) <= 1e-5


def test_sparse_chunks_are_sized_by_non_zeros_not_by_columns():
    """130107 columns would give the dense rule 64-row chunks; a sparse chunk holds ≥ 8 d
    non-zeros (so its (d, C) gradient product is amortised) but ≤ 64 MiB of scores."""
    n, d = 2000, 130_107
    rng = np.random.default_rng(0)
    nnz_per_row = 100
    indptr = np.arange(n + 1) * nnz_per_row
    indices = rng.integers(0, d, n * nnz_per_row)
    X = sp.csr_matrix((np.ones(n * nnz_per_row), indices, indptr), shape=(n, d))
    objective = LinearSoftmaxObjective(X, rng.integers(0, 20, n), 20, l2=1.0)
    assert objective.chunk_rows * nnz_per_row >= 8 * d
    assert objective.chunk_rows * 20 * 8 <= 64 * 2**20
    wide = sp.csr_matrix((10, 10**9))  # no non-zeros: the memory bound decides
    chunk_rows = LinearSoftmaxObjective(wide, np.zeros(10, int), 1000, l2=1.0).chunk_rows
    assert 32 * 2**20 <= chunk_rows * 1000 * 8 <= 64 * 2**20


def test_sparse_X_of_other_dtypes_is_refused():
    X = sp.random(10, 4, density=0.5, format="csr", random_state=0).astype(np.int64)
    with pytest.raises(TypeError, match="X must be a 2-D float32 or float64 sparse matrix"):
        LinearSoftmaxObjective(X, np.zeros(10, int), 2, l2=1.0)


# ------------------------------------------------------------------ the statistics


@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("weighted", [True, False])  # unweighted: no (nnz,) weights formed
def test_sparse_feature_moments_equal_the_dense_ones(center, weighted):
    X, _, _, _, s = sparse_problem(300, 57, 3, seed=8, weighted=weighted)
    s = np.ones(300) if s is None else s
    X = X.copy()
    X.data += 1e9 * (X.indices % 2)  # columns with a mean far from 0 test the closed form
    mean, spread, total = feature_moments(X, s, center=center)
    mean_d, spread_d, total_d = feature_moments(X.toarray(), s, center=center)
    np.testing.assert_allclose(mean, mean_d, rtol=1e-13, atol=0)
    np.testing.assert_allclose(spread, spread_d, rtol=1e-12, atol=1e-300)
    assert total == total_d
    X_dense = X.toarray()
    mu = (s @ X_dense) / s.sum() if center else 0.0
    np.testing.assert_allclose(spread, s @ (X_dense - mu) ** 2 / s.sum(), rtol=1e-9)


def test_sparse_moments_sum_duplicate_entries_without_changing_X():
    data, indices, indptr = np.array([1.0, 2.0, 5.0]), np.array([0, 0, 1]), np.array([0, 2, 3])
    X = sp.csr_matrix((data, indices, indptr), shape=(2, 2))  # row 0 stores column 0 twice
    mean, spread, _ = feature_moments(X)
    np.testing.assert_allclose(mean, [1.5, 2.5])
    np.testing.assert_allclose(spread, [2.25, 6.25])
    assert X.nnz == 3  # the caller's matrix keeps its duplicates
    assert max_abs(X) == 5.0


def test_sparse_preconditioner_equals_the_dense_one():
    X, _, _, _, s = sparse_problem(200, 40, 3, seed=9, weighted=True)
    for center in (True, False):
        sparse = Preconditioner.from_data(X, s, center=center, l2=0.5)
        dense = Preconditioner.from_data(X.toarray(), s, center=center, l2=0.5)
        np.testing.assert_allclose(sparse.center, dense.center, rtol=1e-13, atol=1e-300)
        np.testing.assert_allclose(sparse.scale, dense.scale, rtol=1e-13)
        assert (sparse.order, dense.order) == ("F", "C")  # Wᵀ for sparse products, no copy


# ------------------------------------------------------------------ the classifier


def _text_like(n=300, d=40, n_classes=4, density=0.2, seed=0):
    """Sparse non-negative features, labels from a noisy linear model on them."""
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=density, format="csr", random_state=seed)
    X = sp.csr_matrix(X @ sp.diags(np.geomspace(0.2, 5.0, d)))  # (n, d)
    scores = X @ rng.standard_normal((d, n_classes)) + rng.gumbel(size=(n, n_classes))
    return X, np.argmax(scores, axis=1)


def _centred(intercept):
    return intercept - intercept.mean()


# id: (data kwargs, λ, fit_intercept, sample weight seed or None)
SKLEARN_CASES = {
    "tall": ({}, 1.0, True, None),
    "tall-no-intercept": ({}, 1.0, False, None),
    "tall-sample-weight": ({}, 0.5, True, 1),
    "wide": ({"n": 150, "d": 400, "density": 0.05, "n_classes": 3, "seed": 2}, 0.1, True, None),
    "wide-no-intercept-weighted": (
        {"n": 150, "d": 400, "density": 0.05, "n_classes": 3, "seed": 3},
        0.1,
        False,
        4,
    ),
}


@pytest.mark.parametrize("case", list(SKLEARN_CASES))
def test_sparse_fit_matches_sklearn_logistic_regression(case):
    data, l2, fit_intercept, weight_seed = SKLEARN_CASES[case]
    X, y = _text_like(**data)
    weights = None
    if weight_seed is not None:
        weights = np.random.default_rng(weight_seed).uniform(0.1, 3.0, len(y))
    ours = SoftmaxClassifier(l2=l2, fit_intercept=fit_intercept, **TIGHT)
    ours.fit(X, y, sample_weight=weights)
    ref = LogisticRegression(C=1.0 / l2, solver="newton-cg", fit_intercept=fit_intercept, **TIGHT)
    ref.fit(X, y, sample_weight=weights)
    scale = np.abs(ref.coef_).max()
    coef_err = np.abs(ours.coef_ - ref.coef_).max() / scale
    assert coef_err <= MATCH_RTOL, f"{case}: coef_ differs from sklearn's by {coef_err:.2e}"
    intercept_err = np.abs(_centred(ours.intercept_) - _centred(ref.intercept_)).max() / scale
    assert intercept_err <= MATCH_RTOL, f"{case}: intercept_ differs by {intercept_err:.2e}"
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-6)


def test_sparse_binary_matches_sklearn_with_twice_the_C():
    """Two classes: W = (w₀, w₁) with w₀ = −w₁, sklearn's single row w₁ − w₀ at C = 2/λ."""
    X, y = _text_like(n=200, d=30, n_classes=2, seed=5)
    ours = SoftmaxClassifier(l2=1.0, **TIGHT).fit(X, y)
    ref = LogisticRegression(C=2.0, solver="newton-cg", **TIGHT).fit(X, y)
    np.testing.assert_allclose(ours.coef_[0], -ours.coef_[1], rtol=1e-8, atol=1e-10)
    scale = np.abs(ref.coef_).max()
    assert np.abs(ours.coef_[1] - ours.coef_[0] - ref.coef_[0]).max() <= MATCH_RTOL * scale
    np.testing.assert_allclose(ours.decision_function(X), ref.decision_function(X), atol=1e-5)


@pytest.mark.parametrize(
    ("fit_intercept", "class_weight"), [(True, None), (False, None), (True, "balanced")]
)
def test_sparse_and_dense_input_give_the_same_model(fit_intercept, class_weight):
    """L-BFGS (whose stop is the gradient test at this tol; gd stops on no decrease beyond
    rounding first, near max|∂F| ~ 1e-6) reaches the same model from both inputs."""
    X, y = _text_like(seed=6)
    weights = np.random.default_rng(6).uniform(0.1, 3.0, len(y))
    params = {"fit_intercept": fit_intercept, "class_weight": class_weight, "tol": 1e-11}
    sparse = SoftmaxClassifier(max_iter=10_000, **params).fit(X, y, sample_weight=weights)
    dense = SoftmaxClassifier(max_iter=10_000, **params).fit(X.toarray(), y, sample_weight=weights)
    np.testing.assert_allclose(sparse.coef_, dense.coef_, rtol=0, atol=1e-8)
    np.testing.assert_allclose(sparse.intercept_, dense.intercept_, rtol=0, atol=1e-8)


@pytest.mark.parametrize("fmt", ["csr", "csc", "csr_array", "csc_array", "coo"])
def test_every_method_accepts_sparse_input(fmt):
    X, y = _text_like(seed=7)
    other = sp.csr_array(X).asformat(fmt[:3]) if fmt.endswith("_array") else X.asformat(fmt)
    dense = SoftmaxClassifier().fit(X.toarray(), y)
    model = SoftmaxClassifier().fit(other, y)
    np.testing.assert_allclose(model.coef_, dense.coef_, atol=1e-6)
    for method in ("predict_proba", "predict_log_proba", "decision_function"):
        got = getattr(dense, method)(other)
        np.testing.assert_allclose(got, getattr(dense, method)(X.toarray()), rtol=1e-12, atol=0)
    np.testing.assert_array_equal(dense.predict(other), dense.predict(X.toarray()))


def test_partial_fit_on_sparse_batches_equals_dense_batches():
    X, y = _text_like(seed=8)
    sparse = SoftmaxClassifier(random_state=0)
    dense = SoftmaxClassifier(random_state=0)
    for rows in np.array_split(np.arange(len(y)), 3):
        sparse.partial_fit(X[rows], y[rows], classes=np.unique(y))
        dense.partial_fit(X[rows].toarray(), y[rows], classes=np.unique(y))
    np.testing.assert_allclose(sparse.coef_, dense.coef_, rtol=1e-9, atol=1e-12)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_minibatch_solvers_with_early_stopping_on_sparse_input(solver):
    X, y = _text_like(seed=9)
    params = {"solver": solver, "max_iter": 20, "early_stopping": True, "random_state": 0}
    sparse = SoftmaxClassifier(**params).fit(X, y)
    dense = SoftmaxClassifier(**params).fit(X.toarray(), y)
    np.testing.assert_allclose(sparse.coef_, dense.coef_, rtol=1e-9, atol=1e-12)


def test_float32_csr_fit_keeps_float32_products(monkeypatch):
    X, y = _text_like(seed=10)
    spy = _SparseProductSpy(monkeypatch)
    model32 = SoftmaxClassifier(tol=1e-8).fit(X.astype(np.float32), y)
    products = [dtypes for name, dtypes in spy.calls if name.endswith("matvecs")]
    assert products and all(dt == np.float32 for dtypes in products for dt in dtypes)
    model64 = SoftmaxClassifier(tol=1e-8).fit(X, y)
    # as tests/test_classifier.py compares float32 and float64 fits
    assert np.abs(model32.coef_ - model64.coef_).max() <= 1e-2 * np.abs(model64.coef_).max()
    objective = LinearSoftmaxObjective(X, y, 4, l2=1.0)
    best = objective.loss_gradient(model64.coef_, model64.intercept_)[0]
    reached = objective.loss_gradient(model32.coef_, model32.intercept_)[0]
    # the float64 fit is the optimum to within its rounding, which the float32 one may undercut
    assert -1e-10 <= (reached - best) / best <= 1e-6
    assert model32.predict_proba(X.astype(np.float32)).dtype == np.float32


# ------------------------------------------------------------------ no dense copy of X


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_fit_and_predict_never_densify_X(monkeypatch):
    """A spy on every way SciPy densifies: none is called while fitting or predicting."""
    densified = []

    def refuse(name):
        def spy(self, *args, **kwargs):
            densified.append(name)
            raise AssertionError(f"X was densified by {name}")

        return spy

    for owner in (sp._base._spbase, sp._compressed._cs_matrix, sp._coo._coo_base):
        for name in ("toarray", "todense", "__array__"):
            if name in vars(owner):
                monkeypatch.setattr(owner, name, refuse(f"{owner.__name__}.{name}"))
    X, y = _text_like(seed=11)
    for solver in ("lbfgs", "gd", "adam"):
        model = SoftmaxClassifier(solver=solver, max_iter=30).fit(X, y)
        model.partial_fit(X, y)
        model.predict_proba(X.tocsc())
    assert densified == []


_MEMORY_SCRIPT = """
import tracemalloc, warnings
import numpy as np, scipy.sparse as sp
from crossent import SoftmaxClassifier
n, d, nnz = 40_000, 20_000, 80_000  # density 1e-4; dense float64: 6.4 GB
rng = np.random.default_rng(0)
X = sp.csr_matrix((rng.random(nnz), (rng.integers(0, n, nnz), rng.integers(0, d, nnz))), (n, d))
y = np.argmax(X @ rng.standard_normal((d, 3)) * 30 + rng.gumbel(size=(n, 3)), axis=1)
tracemalloc.start()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    model = SoftmaxClassifier(max_iter=20, tol=1e-10).fit(X, y)
    model.predict_proba(X)
print(model.n_iter_, tracemalloc.get_traced_memory()[1])
"""


def test_fitting_a_matrix_of_6_gb_dense_allocates_little():
    """40000 × 20000 float64 at density 1e-4 would take 6.4 GB dense (over 4 GiB); the fit
    and a prediction, in a fresh process, allocate under 64 MiB at their peak."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_MEMORY_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    n_iter, peak = map(int, done.stdout.split()[-2:])
    assert n_iter >= 5, f"the fit stopped after {n_iter} iterations: nothing was tested"
    assert peak < 64 * 2**20, f"the fit allocated {peak / 2**20:.0f} MiB at its peak"


# ------------------------------------------------------------------ hostile sparse input


@pytest.mark.parametrize(
    ("value", "match"), [(np.nan, "Input X contains NaN"), (np.inf, "infinity")]
)
def test_non_finite_stored_values_are_refused_in_one_line(value, match):
    X, y = _text_like(seed=12)
    X = X.copy()
    X.data[3] = value
    with pytest.raises(ValueError, match=match):
        SoftmaxClassifier().fit(X, y)
    model = SoftmaxClassifier().fit(_text_like(seed=12)[0], y)
    with pytest.raises(ValueError, match=match):
        model.predict(X)


def test_integer_sparse_X_is_fitted_as_float64():
    X, y = _text_like(seed=13)
    counts = sp.csr_matrix(np.rint(X.toarray() * 3).astype(np.int64))
    model = SoftmaxClassifier(**TIGHT).fit(counts, y)
    dense = SoftmaxClassifier(**TIGHT).fit(counts.toarray().astype(np.float64), y)
    np.testing.assert_allclose(model.coef_, dense.coef_, rtol=0, atol=1e-8)


def test_sparse_X_with_the_wrong_number_of_features_is_refused():
    X, y = _text_like(seed=14)
    model = SoftmaxClassifier().fit(X, y)
    with pytest.raises(
        ValueError, match="X has 39 features, but SoftmaxClassifier is expecting 40"
    ):
        model.predict_proba(X[:, :39])


def test_sparse_features_too_large_for_float64_sums_are_refused():
    X, y = _text_like(seed=15)
    X = X.copy()
    X.data *= 1e306
    with pytest.raises(
        ValueError, match=r"the feature scale is too large: max \|X\| = [0-9.]+e\+306, and sums"
    ):
        SoftmaxClassifier().fit(X, y)


def test_partial_fit_may_mix_sparse_and_dense_batches():
    """The first batch fixes the preconditioner's layout ("F" for sparse); later dense
    batches are read through it and give the model of an all-dense run."""
    X, y = _text_like(seed=16)
    mixed = SoftmaxClassifier(random_state=0)
    dense = SoftmaxClassifier(random_state=0)
    for k, rows in enumerate(np.array_split(np.arange(len(y)), 4)):
        batch = X[rows] if k % 2 == 0 else X[rows].toarray()
        mixed.partial_fit(batch, y[rows], classes=np.unique(y))
        dense.partial_fit(X[rows].toarray(), y[rows], classes=np.unique(y))
    np.testing.assert_allclose(mixed.coef_, dense.coef_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(mixed.intercept_, dense.intercept_, rtol=1e-9, atol=1e-12)
