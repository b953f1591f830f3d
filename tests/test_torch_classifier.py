"""``SoftmaxClassifier`` on torch tensors and devices, and ``crossent train --device``.

The NumPy path is the reference: on float64 data the torch objective
(:class:`crossent.torch._objective.TorchObjective`, whose data term is
:func:`crossent.torch.linear_cross_entropy`) must give its coefficients to 1e-6 (in practice
1e-10: the same L-BFGS iterates). On float32 data both paths evaluate the products in
float32, with different roundings, so a converged fit is determined only to float32's noise
floor (about 1e-5 of the coefficients here, for the NumPy path against float64 as well): the
two float32 fits are compared by their objective in float64 and against the float64 optimum.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from _hostile import run_cli as run  # noqa: E402
from crossent import SoftmaxClassifier  # noqa: E402
from crossent._stats import feature_scales, max_abs  # noqa: E402
from crossent.model_io import load_model  # noqa: E402
from crossent.objective import LinearSoftmaxObjective, loss_gradient  # noqa: E402
from crossent.torch._objective import TorchObjective, resolve_device  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

CUDA = torch.cuda.is_available()


def _data(n: int = 240, d: int = 9, n_classes: int = 4, seed: int = 0):
    """Separable-ish blobs with badly scaled, off-centre features: (X float64, y int)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    X = rng.normal(size=(n, d)) * rng.uniform(0.1, 10.0, d) + 2.0
    X[np.arange(n), y % d] += 2.0
    return X, y


def _tensor(a: np.ndarray, device: str = "cpu"):
    return torch.from_numpy(np.ascontiguousarray(a)).to(device)


# ------------------------------------------------------------------------- the objective


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_torch_objective_matches_numpy_objective(dtype, fit_intercept):
    X, y = _data(n=301, d=7, n_classes=5)
    rng = np.random.default_rng(1)
    weights = rng.uniform(0.0, 2.0, X.shape[0])
    coef, intercept = 0.1 * rng.normal(size=(5, 7)), rng.normal(size=5)
    options = {"l2": 0.7, "sample_weight": weights, "fit_intercept": fit_intercept}
    reference = LinearSoftmaxObjective(X.astype(dtype), y, 5, **options)
    device = TorchObjective(_tensor(X.astype(dtype)), y, 5, **options)
    loss, grad_coef, grad_intercept = device.loss_gradient(coef, intercept)
    expected = reference.loss_gradient(coef, intercept)
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    assert grad_coef.dtype == np.float64 and grad_coef.shape == (5, 7)
    assert grad_intercept.dtype == np.float64 and grad_intercept.shape == (5,)
    np.testing.assert_allclose(loss, expected[0], rtol=rtol)
    scale = np.abs(expected[1]).max()
    np.testing.assert_allclose(grad_coef, expected[1], rtol=rtol, atol=rtol * scale)
    np.testing.assert_allclose(grad_intercept, expected[2], rtol=rtol, atol=rtol * scale)
    if not fit_intercept:
        assert not grad_intercept.any()
    assert device.n_evals == 1 and device.n_samples == 301 and device.n_features == 7


def test_torch_objective_huge_float32_features_stay_finite():
    """Features of scale 1e36: Σ_i s_i (ŷ − δ) x_i overflows float32 unless scaled."""
    X, y = _data(n=500, d=5)
    X = (X * 1e36).astype(np.float32)
    coef = np.full((4, 5), 1e-37)
    expected = LinearSoftmaxObjective(X, y, 4, l2=1.0).loss_gradient(coef, np.zeros(4))
    loss, grad_coef, _ = TorchObjective(_tensor(X), y, 4, l2=1.0).loss_gradient(coef, np.zeros(4))
    assert np.isfinite(grad_coef).all()
    np.testing.assert_allclose(loss, expected[0], rtol=1e-5)
    scale = np.abs(expected[1]).max()
    np.testing.assert_allclose(grad_coef, expected[1], rtol=1e-5, atol=1e-5 * scale)


def test_torch_objective_refuses_bad_input():
    X, y = _data(n=10, d=3)
    with pytest.raises(TypeError, match=r"X must be a torch\.Tensor"):
        TorchObjective(X, y, 4, l2=1.0)
    with pytest.raises(TypeError, match="X must be a 2-D float32 or float64 tensor"):
        TorchObjective(_tensor(X).to(torch.float16), y, 4, l2=1.0)
    with pytest.raises(ValueError, match="y holds class index 4"):
        TorchObjective(_tensor(X), y + 1, 4, l2=1.0)
    with pytest.raises(ValueError, match="l2 must be"):
        TorchObjective(_tensor(X), y, 4, l2=-1.0)


@pytest.mark.parametrize("center", [True, False])
def test_feature_scales_of_a_tensor_match_numpy(center):
    """The preconditioner's moments, computed in torch on the tensor's device."""
    X, _ = _data(n=3000, d=6)
    X[:, 1] = 1e9 + X[:, 1]  # a large mean with a spread of order 1
    X[:, 2] *= 1e200  # squares beyond float64
    X[:, 3] = 0.0
    weights = np.random.default_rng(2).uniform(size=X.shape[0])
    expected = feature_scales(X, weights, center=center, ridge=0.1, chunk_rows=1000)
    got = feature_scales(_tensor(X), weights, center=center, ridge=0.1, chunk_rows=1000)
    for a, b in zip(got[:2], expected[:2], strict=True):
        assert isinstance(a, np.ndarray)
        np.testing.assert_allclose(a, b, rtol=1e-13)
    assert got[2] == expected[2]
    assert max_abs(_tensor(X)) == max_abs(X)
    assert max_abs(torch.zeros((0, 3))) == 0.0


# ------------------------------------------------------------------------- the classifier


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("weighting", ["none", "sample_weight", "class_weight"])
def test_tensor_fit_matches_numpy_fit_float64(fit_intercept, weighting):
    X, y = _data()
    options = {"l2": 0.5, "fit_intercept": fit_intercept, "tol": 1e-10}
    sample_weight = None
    if weighting == "sample_weight":
        sample_weight = np.random.default_rng(3).uniform(0.5, 2.0, X.shape[0])
    if weighting == "class_weight":
        options["class_weight"] = {0: 1.0, 1: 3.0, 2: 0.5, 3: 1.0}
    expected = SoftmaxClassifier(**options).fit(X, y, sample_weight=sample_weight)
    tensor_weight = None if sample_weight is None else _tensor(sample_weight)
    clf = SoftmaxClassifier(**options).fit(_tensor(X), _tensor(y), sample_weight=tensor_weight)
    assert type(clf.coef_) is np.ndarray and clf.coef_.dtype == np.float64
    assert type(clf.intercept_) is np.ndarray and clf.intercept_.dtype == np.float64
    np.testing.assert_allclose(clf.coef_, expected.coef_, rtol=0, atol=1e-6)
    np.testing.assert_allclose(clf.intercept_, expected.intercept_, rtol=0, atol=1e-6)
    assert clf.n_features_in_ == X.shape[1]
    np.testing.assert_array_equal(clf.classes_, expected.classes_)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_tensor_fit_float32_reaches_the_numpy_optimum(fit_intercept):
    X, y = _data()
    X32 = X.astype(np.float32)
    options = {"l2": 0.5, "fit_intercept": fit_intercept}
    optimum = SoftmaxClassifier(tol=1e-12, **options).fit(X32.astype(np.float64), y)
    numpy32 = SoftmaxClassifier(tol=1e-6, **options).fit(X32, y)
    torch32 = SoftmaxClassifier(tol=1e-6, **options).fit(_tensor(X32), y)

    def objective(clf):
        intercept = clf.intercept_ if fit_intercept else None
        return loss_gradient(clf.coef_, intercept, X32.astype(np.float64), y, l2=0.5)[0]

    best = objective(optimum)
    assert objective(torch32) - best <= 1e-7 * best
    assert abs(objective(torch32) - objective(numpy32)) <= 1e-7 * best
    scale = np.abs(optimum.coef_).max()
    for clf in (numpy32, torch32):  # the float32 noise floor, the same for both paths
        np.testing.assert_allclose(clf.coef_, optimum.coef_, rtol=0, atol=5e-4 * scale)


def test_default_tolerance_float32_tensor_fit_matches_numpy():
    """At the default ``tol`` both float32 paths take the same iterates: 1e-6 holds."""
    X, y = _data()
    X32 = X.astype(np.float32)
    expected = SoftmaxClassifier(l2=0.5).fit(X32, y)
    clf = SoftmaxClassifier(l2=0.5).fit(_tensor(X32), y)
    np.testing.assert_allclose(clf.coef_, expected.coef_, rtol=0, atol=1e-6)


def test_predictions_come_back_in_the_callers_array_type():
    X, y = _data()
    clf = SoftmaxClassifier(l2=0.5).fit(_tensor(X), y)
    for dtype in (np.float64, np.float32):
        Xt = _tensor(X.astype(dtype))
        proba, log_proba = clf.predict_proba(Xt), clf.predict_log_proba(Xt)
        scores, labels = clf.decision_function(Xt), clf.predict(Xt)
        for out in (proba, log_proba, scores):
            assert isinstance(out, torch.Tensor) and out.device == Xt.device
            assert out.dtype == Xt.dtype and out.shape == (X.shape[0], 4)
        assert isinstance(labels, torch.Tensor) and labels.shape == (X.shape[0],)
        np.testing.assert_allclose(proba.numpy(), clf.predict_proba(X.astype(dtype)), rtol=1e-6)
        np.testing.assert_allclose(
            log_proba.numpy(), clf.predict_log_proba(X.astype(dtype)), rtol=1e-6, atol=1e-6
        )
        np.testing.assert_array_equal(labels.numpy(), clf.predict(X.astype(dtype)))
        assert clf.score(Xt, _tensor(y)) == clf.score(X.astype(dtype), y)
    numpy_out = clf.predict_proba(X)  # NumPy in, NumPy out, whatever the fit saw
    assert type(numpy_out) is np.ndarray and type(clf.predict(X)) is np.ndarray


def test_two_classes_and_string_labels_on_tensors():
    X, y = _data(n_classes=2)
    names = np.array(["cat", "dog"])[y]
    clf = SoftmaxClassifier().fit(_tensor(X), names)
    scores = clf.decision_function(_tensor(X))
    assert isinstance(scores, torch.Tensor) and scores.shape == (X.shape[0],)
    labels = clf.predict(_tensor(X))  # string labels cannot be a tensor: NumPy
    assert type(labels) is np.ndarray
    np.testing.assert_array_equal(labels, clf.predict(X))


def test_device_cpu_with_numpy_input_runs_the_torch_objective(monkeypatch):
    X, y = _data()
    calls = []
    original = TorchObjective.loss_gradient

    def counted(self, coef, intercept=None):
        calls.append(self.X.device)
        return original(self, coef, intercept)

    monkeypatch.setattr(TorchObjective, "loss_gradient", counted)
    expected = SoftmaxClassifier(l2=0.5, tol=1e-10).fit(X, y)
    assert not calls  # the NumPy path does not touch torch
    clf = SoftmaxClassifier(l2=0.5, tol=1e-10, device="cpu").fit(X, y)
    assert calls and all(device.type == "cpu" for device in calls)
    np.testing.assert_allclose(clf.coef_, expected.coef_, rtol=0, atol=1e-6)
    assert type(clf.predict_proba(X)) is np.ndarray
    gd = {"l2": 0.5, "solver": "gd", "tol": 1e-8}
    clf_gd = SoftmaxClassifier(**gd, device=torch.device("cpu")).fit(X, y)
    expected_gd = SoftmaxClassifier(**gd).fit(X, y)
    np.testing.assert_allclose(clf_gd.coef_, expected_gd.coef_, rtol=0, atol=1e-6)


def test_warm_start_and_callback_on_tensors():
    X, y = _data()
    seen = []
    clf = SoftmaxClassifier(l2=0.5, max_iter=3, callback=lambda p: seen.append(p.loss))
    clf.fit(_tensor(X), y)
    assert len(seen) == clf.n_iter_ == 3
    clf.set_params(warm_start=True, max_iter=1000, callback=None).fit(_tensor(X), y)
    expected = SoftmaxClassifier(l2=0.5).fit(X, y)
    np.testing.assert_allclose(clf.coef_, expected.coef_, rtol=0, atol=1e-3)


@pytest.mark.parametrize(
    ("device", "error", "match"),
    [
        ("gpu", ValueError, r"device must be 'cpu', 'cuda', 'cuda:N' or a torch.device, got 'gpu'"),
        ("mps", ValueError, r"device must be .* got 'mps'"),
        ("cuda:x", ValueError, r"device must be .* got 'cuda:x'"),
        (3, TypeError, r"device must be .* got 3"),
    ],
)
def test_bad_device_is_refused_clearly(device, error, match):
    X, y = _data(n=20)
    with pytest.raises(error, match=match):
        SoftmaxClassifier(device=device).fit(X, y)


@pytest.mark.skipif(CUDA, reason="CUDA is available here")
def test_cuda_without_cuda_is_refused_clearly():
    X, y = _data(n=20)
    with pytest.raises(ValueError, match=r"device='cuda': CUDA is not available"):
        SoftmaxClassifier(device="cuda").fit(X, y)
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda:1")


def test_minibatch_partial_fit_and_distributed_refuse_tensors():
    X, y = _data(n=40)
    for solver in ("sgd", "adam"):
        with pytest.raises(ValueError, match=rf"solver='{solver}' runs on NumPy data only"):
            SoftmaxClassifier(solver=solver).fit(_tensor(X), y)
        with pytest.raises(ValueError, match="runs on NumPy data only"):
            SoftmaxClassifier(solver=solver, device="cpu").fit(X, y)
    with pytest.raises(ValueError, match="partial_fit runs the minibatch solvers on NumPy"):
        SoftmaxClassifier().partial_fit(_tensor(X), y, classes=np.arange(4))
    with pytest.raises(ValueError, match="partial_fit runs the minibatch solvers on NumPy"):
        SoftmaxClassifier(device="cpu").partial_fit(X, y, classes=np.arange(4))
    with pytest.raises(ValueError, match="distributed=True fits NumPy data only"):
        SoftmaxClassifier(distributed=True).fit(_tensor(X), y)


def test_bad_tensor_input_is_refused_clearly():
    X, y = _data(n=40)
    clf = SoftmaxClassifier()
    with pytest.raises(ValueError, match="Expected a 2-D tensor X"):
        clf.fit(_tensor(X[:, 0]), y)
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN or infinity"):
        clf.fit(_tensor(bad), y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        clf.fit(_tensor(X), y[:-1])
    with pytest.raises(ValueError, match="0 sample"):
        clf.fit(_tensor(X[:0]), y[:0])
    clf.fit(_tensor(X), y)
    with pytest.raises(ValueError, match="X has 8 features, but SoftmaxClassifier is expecting 9"):
        clf.predict(_tensor(X[:, :8]))
    ints = clf.predict_proba(_tensor(X).round().to(torch.int64))  # integers: as float64
    assert ints.dtype == torch.float64
    import scipy.sparse as sp

    with pytest.raises(TypeError, match="device='cpu' needs dense X"):
        SoftmaxClassifier(device="cpu").fit(sp.csr_matrix(X), y)


# ------------------------------------------------------------------------- the command


def test_cli_train_device_cpu_end_to_end(tmp_path):
    """``crossent train --device cpu`` on the default data set (digits, float32 pixels):
    a model file of the same format as NumPy's, at the same optimum. Digits has flat
    directions (blank pixels), so float32 fits agree in the objective (1e-6) more closely
    than in the weights (both paths are ~1e-3 from the float64 optimum's weights)."""
    outs = {}
    for name, extra in (("numpy", []), ("torch", ["--device", "cpu"])):
        out = tmp_path / name
        code, stdout, err = run(["train", "--out", str(out), "--json", "--tol", "1e-6", *extra])
        assert code == 0, err
        outs[name] = (json.loads(stdout), load_model(out / "model.safetensors"))
    (summary_np, (arrays_np, meta_np)), (summary_t, (arrays_t, meta_t)) = outs.values()
    assert sorted(arrays_t) == sorted(arrays_np)
    for key in arrays_np:
        assert arrays_t[key].dtype == arrays_np[key].dtype
        assert arrays_t[key].shape == arrays_np[key].shape
    np.testing.assert_allclose(arrays_t["coef"], arrays_np["coef"], rtol=0, atol=5e-3)
    assert meta_t.keys() == meta_np.keys()
    assert meta_t["training"].keys() == meta_np["training"].keys()
    assert summary_t["objective"] == pytest.approx(summary_np["objective"], rel=1e-6)
    assert summary_t["test_accuracy"] == pytest.approx(summary_np["test_accuracy"], abs=0.01)


@pytest.mark.skipif(CUDA, reason="CUDA is available here")
def test_cli_device_cuda_without_cuda_is_a_usage_error(tmp_path):
    code, _, err = run(["train", "--device", "cuda", "--out", str(tmp_path / "o")])
    assert code == 2
    assert err.splitlines()[-1] == (
        "crossent train: error: --device cuda: CUDA is not available "
        "(torch.cuda.is_available() is False)"
    )
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("text", ["gpu", "cpu:0", "cuda:", "cuda:a"])
def test_cli_bad_device_is_a_usage_error(tmp_path, text):
    code, _, err = run(["train", "--device", text, "--out", str(tmp_path / "o")])
    assert code == 2
    assert err.splitlines()[-1] == (
        f"crossent train: error: --device {text}: expected cpu, cuda or cuda:N"
    )


def test_cli_device_with_a_minibatch_solver_is_refused(tmp_path):
    code, _, err = run(["train", "--device", "cpu", "--solver", "adam", "--out", str(tmp_path)])
    assert code == 1
    assert "minibatch solver adam runs on NumPy only" in err


def test_import_and_help_do_not_import_torch(tmp_path):
    script = (
        "import contextlib, io, sys\n"
        "import crossent\n"
        "from crossent import SoftmaxClassifier\n"
        "from crossent.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    codes = [main(['--help']), main(['train', '--help'])]\n"
        "assert codes == [0, 0], codes\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_cuda_tensor_fit_matches_numpy():
    X, y = _data()
    expected = SoftmaxClassifier(l2=0.5, tol=1e-10).fit(X, y)
    clf = SoftmaxClassifier(l2=0.5, tol=1e-10).fit(_tensor(X, "cuda"), y)
    np.testing.assert_allclose(clf.coef_, expected.coef_, rtol=0, atol=1e-6)
    proba = clf.predict_proba(_tensor(X, "cuda"))
    assert proba.device.type == "cuda"
    np.testing.assert_allclose(proba.cpu().numpy(), expected.predict_proba(X), rtol=1e-6)


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_cli_train_device_cuda_end_to_end(tmp_path):
    summaries = []
    for name, extra in (("numpy", []), ("cuda", ["--device", "cuda"])):
        argv = ["train", "--out", str(tmp_path / name), "--json", "--tol", "1e-6", *extra]
        code, stdout, err = run(argv)
        assert code == 0, err
        summaries.append(json.loads(stdout))
    assert summaries[1]["objective"] == pytest.approx(summaries[0]["objective"], rel=1e-6)
    arrays, _ = load_model(tmp_path / "cuda" / "model.safetensors")
    assert arrays["coef"].dtype == np.float64
