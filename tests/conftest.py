"""Shared test helpers: the one tolerance table by dtype, and a comparison that uses it.

Tolerances are relative (``rtol``) with a small absolute floor (``atol``) for values that
are mathematically 0 (a gradient entry, the loss of a confident correct prediction).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import settings


# CI (CI=true) replays the same examples every run, so a green main stays green; locally
# hypothesis draws new examples each run and keeps hunting. No deadline in CI: an example
# slowed by a busy machine is not a failure (no test is timed).
def in_ci() -> bool:
    """Whether the tests run in CI (``CI`` set to anything but empty, 0, false or no)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


settings.register_profile("ci", derandomize=True, print_blob=True, deadline=None)
if in_ci():
    settings.load_profile("ci")

# dtype name -> (rtol, atol)
TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-12, 1e-14),
    "float32": (1e-5, 1e-6),
    "float16": (1e-2, 1e-3),
    "bfloat16": (1e-2, 1e-2),
}


def _dtype_name(dtype: Any) -> str:
    if isinstance(dtype, str) or "torch" in str(dtype):
        return str(dtype).removeprefix("torch.")
    return np.dtype(dtype).name


def tolerance(dtype: Any) -> dict[str, float]:
    """``{"rtol": ..., "atol": ...}`` for ``dtype`` (a NumPy or torch dtype, or its name)."""
    rtol, atol = TOLERANCES[_dtype_name(dtype)]
    return {"rtol": rtol, "atol": atol}


def to_numpy(x: Any) -> np.ndarray:
    """A NumPy copy of an array, tensor (detached) or scalar."""
    detach = getattr(x, "detach", None)
    if callable(detach):
        return detach().cpu().numpy()
    return np.asarray(x)


def assert_close(actual: Any, desired: Any, dtype: Any = "float64", **override: float) -> None:
    """``np.testing.assert_allclose`` with the table's tolerance for ``dtype``."""
    tol = tolerance(dtype) | override
    np.testing.assert_allclose(to_numpy(actual), to_numpy(desired), equal_nan=False, **tol)


@pytest.fixture(scope="session")
def tol() -> Callable[[Any], dict[str, float]]:
    """The tolerance table as a fixture: ``tol(np.float32) -> {"rtol": 1e-5, "atol": 1e-6}``."""
    return tolerance


@pytest.fixture(scope="session")
def close() -> Callable[..., None]:
    """:func:`assert_close` as a fixture (usable from hypothesis tests: session scope)."""
    return assert_close


@pytest.fixture(scope="module")
def single_blas_thread():
    """Hold BLAS to one thread for a module: on a shared machine with few cores, OpenBLAS
    threads that spin against other processes make small products 10-100× slower.
    Use with ``pytestmark = pytest.mark.usefixtures("single_blas_thread")``."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture
def make_unreadable(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any], None]:
    """``make_unreadable(path)``: reading ``path`` then fails with permission denied.

    ``chmod 0`` where that works; as root, who reads anything, ``open`` refuses that path.
    """

    def make(path: Any) -> None:
        os.chmod(path, 0)
        if not os.access(path, os.R_OK):
            return
        real_open = open
        target = os.fspath(path)

        def refusing_open(file: Any, *args: Any, **kwargs: Any) -> Any:
            if os.fspath(file) == target:
                raise PermissionError(13, "Permission denied", target)
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr("builtins.open", refusing_open)

    return make


@pytest.fixture(params=["compiled", "numpy"])
def kernel(request, monkeypatch):
    """Run a test with the compiled loss kernel (skipped when not built) and with NumPy's."""
    from crossent import _kernel

    if request.param == "compiled" and _kernel.LIBRARY is None:
        pytest.skip("the compiled kernel is not built")
    monkeypatch.setattr(_kernel, "ENABLED", request.param == "compiled")
    return request.param
