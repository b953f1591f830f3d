"""The compiled loss kernels of ``_kernel.c``, loaded with ctypes; None where not built.

The C file is built by ``pip install`` (``setup.py``, optional: no compiler, no kernel) into
the shared object ``crossent/_ckernel<EXTENSION_SUFFIX>``. It is loaded with :mod:`ctypes`
rather than imported: ctypes releases the GIL for the length of each call, which is what
lets the row blocks of :mod:`crossent._threads` run the kernel in parallel.

``CROSSENT_KERNEL=numpy`` in the environment (read at import) forces the NumPy kernel of
:mod:`crossent.loss`; tests switch at run time by setting :data:`ENABLED`. The NumPy kernel
is the reference: the compiled one computes the same quantities (see ``_kernel.c``),

.. math::

    L = \\sum_i s_i (\\log \\sum_j e^{z_{ij} - m_i} + m_i - z_{i k_i}), \\qquad
    G_{ij} = \\mathrm{scale} \\cdot s_i (\\hat y_{ij} - \\delta_{j k_i}),

with each row's normaliser and the loss accumulated in float64.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ENABLED",
    "LIBRARY",
    "RowsLossGrad",
    "available",
    "exp",
    "line",
    "log",
    "loss_grad",
    "nll",
]

_ABI_VERSION = 4


def _load() -> ctypes.CDLL | None:
    """The built shared object next to this module, or None (not built, or stale)."""
    here = Path(__file__).resolve().parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = here / f"_ckernel{suffix}"
        if not path.is_file():
            continue
        try:
            lib = ctypes.CDLL(str(path))
        except OSError:
            continue
        if not hasattr(lib, "ce_abi_version") or lib.ce_abi_version() != _ABI_VERSION:
            continue
        _declare(lib)
        return lib
    return None


def _declare(lib: ctypes.CDLL) -> None:
    ptr, size, f64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
    for suffix in ("f32", "f64"):
        fn = getattr(lib, f"ce_loss_grad_{suffix}")
        # in, out, rows, C, bias, index, weight, scale, col_sums, bad_row
        fn.argtypes = [ptr, ptr, size, size, ptr, ptr, ptr, f64, ptr, ptr]
        fn.restype = f64
        fn = getattr(lib, f"ce_nll_{suffix}")
        # in, rows, C, bias, index, weight, losses, bad_row
        fn.argtypes = [ptr, size, size, ptr, ptr, ptr, ptr, ptr]
        fn.restype = None
        fn = getattr(lib, f"ce_exp_{suffix}")
        fn.argtypes = [ptr, ptr, size]
        fn.restype = None
        fn = getattr(lib, f"ce_line_{suffix}")
        # base, base_stride, step, rows, C, t, index, weight, out, bad_row
        fn.argtypes = [ptr, size, ptr, size, size, f64, ptr, ptr, ptr, ptr]
        fn.restype = None
    lib.ce_log_f64.argtypes = [ptr, ptr, size]
    lib.ce_log_f64.restype = None


LIBRARY: ctypes.CDLL | None = _load()
#: Whether the loss kernels use :data:`LIBRARY` (False: the NumPy kernel). Tests may set it.
ENABLED: bool = LIBRARY is not None and os.environ.get("CROSSENT_KERNEL", "") != "numpy"

_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}


def available(dtype: np.dtype) -> bool:
    """Whether the compiled kernel is on and handles ``dtype`` (float32 or float64)."""
    return ENABLED and np.dtype(dtype) in _SUFFIX


def _address(array: np.ndarray | None) -> int | None:
    return None if array is None else array.ctypes.data


def _check(scores: np.ndarray, index: np.ndarray, row_weight: np.ndarray) -> None:
    if not (scores.ndim == 2 and scores.flags.c_contiguous and scores.dtype in _SUFFIX):
        raise TypeError(
            f"the kernel needs (rows, C) C-contiguous float32/float64 scores, got "
            f"{scores.dtype} {scores.shape}"
        )
    rows = scores.shape[0]
    if index.dtype != np.int64 or index.shape != (rows,) or not index.flags.c_contiguous:
        raise TypeError(f"index must be C-contiguous int64 of shape ({rows},)")
    if row_weight.dtype != np.float64 or row_weight.shape != (rows,):
        raise TypeError(f"row_weight must be float64 of shape ({rows},)")
    if not row_weight.flags.c_contiguous:
        raise TypeError("row_weight must be C-contiguous")


def _call(name: str, dtype: np.dtype, *args: Any) -> tuple[Any, int]:
    """``ce_<name>_<f32|f64>(*args, &bad_row)``: its return value and ``bad_row`` (the first
    undefined row, or -1); ``MemoryError`` where the kernel could not allocate its scratch
    (``bad_row`` -2)."""
    assert LIBRARY is not None
    bad = ctypes.c_int64(-1)
    result = getattr(LIBRARY, f"ce_{name}_{_SUFFIX[np.dtype(dtype)]}")(*args, ctypes.byref(bad))
    if bad.value == -2:
        raise MemoryError(f"the compiled kernel ce_{name} could not allocate its scratch rows")
    return result, int(bad.value)


def loss_grad(
    logits: np.ndarray,
    out: np.ndarray,
    index: np.ndarray,
    row_weight: np.ndarray,
    scale: float,
    *,
    bias: np.ndarray | None = None,
    col_sums: np.ndarray | None = None,
) -> tuple[float, int]:
    """``Σ_i s_i (lse_i − z_{ik_i})`` and ``out = scale · s_i (ŷ_i − e_{k_i})``, one pass.

    ``z = logits + bias``; ``out`` (same shape and dtype) may be ``logits`` itself. Adds the
    columns of the gradient into ``col_sums`` ``(C,)`` float64 when given. Returns
    ``(loss, bad_row)``: ``bad_row`` the first row of positive weight whose log-sum-exp is
    not finite (the loss is then partial and ``out`` undefined), else -1. Indices must lie
    in ``[0, C)`` (not checked here).
    """
    assert LIBRARY is not None
    _check(logits, index, row_weight)
    dtype = logits.dtype
    if out.shape != logits.shape or out.dtype != dtype or not out.flags.c_contiguous:
        raise TypeError("out must match logits: same shape and dtype, C-contiguous")
    if bias is not None and (bias.dtype != dtype or bias.shape != logits.shape[1:]):
        raise TypeError(f"bias must have shape ({logits.shape[1]},) and dtype {dtype}")
    if col_sums is not None and (
        col_sums.dtype != np.float64 or col_sums.shape != (logits.shape[1],)
    ):
        raise TypeError(f"col_sums must be float64 of shape ({logits.shape[1]},)")
    total, bad = _call(
        "loss_grad",
        dtype,
        logits.ctypes.data,
        out.ctypes.data,
        logits.shape[0],
        logits.shape[1],
        _address(bias),
        index.ctypes.data,
        row_weight.ctypes.data,
        float(scale),
        _address(col_sums),
    )
    return float(total), bad


def line(
    base: np.ndarray, step: np.ndarray, t: float, index: np.ndarray, row_weight: np.ndarray
) -> tuple[float, float, float, int]:
    """The loss of the scores ``base + t · step`` and its first two derivatives in ``t``.

    ``Σ_i s_i (lse_i − z_{ik_i})``, ``Σ_i s_i (p_i · d_i − d_{ik_i})`` and
    ``Σ_i s_i (p_i · d_i² − (p_i · d_i)²)`` with ``z = base + t step``, ``p = softmax(z)`` and
    ``d`` the rows of ``step`` ``(rows, C)``; ``base`` is of the same shape and dtype, or one
    ``(C,)`` row shared by all rows. Accumulated in float64; then the first undefined row
    (or -1). Indices must lie in ``[0, C)`` (not checked here).
    """
    assert LIBRARY is not None
    _check(step, index, row_weight)
    if base.dtype != step.dtype or not base.flags.c_contiguous:
        raise TypeError(f"base must be C-contiguous {step.dtype}")
    if base.shape == step.shape[1:]:
        stride = 0
    elif base.shape == step.shape:
        stride = step.shape[1]
    else:
        raise TypeError(f"base must have shape {step.shape} or ({step.shape[1]},)")
    out = np.zeros(3)
    _, bad = _call(
        "line",
        step.dtype,
        base.ctypes.data,
        stride,
        step.ctypes.data,
        step.shape[0],
        step.shape[1],
        float(t),
        index.ctypes.data,
        row_weight.ctypes.data,
        out.ctypes.data,
    )
    return float(out[0]), float(out[1]), float(out[2]), bad


def nll(logits: np.ndarray, index: np.ndarray, row_weight: np.ndarray, losses: np.ndarray) -> int:
    """``losses[i] = s_i (lse_i − z_{ik_i})`` (0 where ``s_i <= 0``), reading ``logits`` only.

    ``losses`` is ``(rows,)`` float64 C-contiguous. Returns the first undefined row, or -1.
    """
    assert LIBRARY is not None
    _check(logits, index, row_weight)
    if losses.dtype != np.float64 or losses.shape != index.shape or not losses.flags.c_contiguous:
        raise TypeError("losses must be C-contiguous float64 of shape (rows,)")
    _, bad = _call(
        "nll",
        logits.dtype,
        logits.ctypes.data,
        logits.shape[0],
        logits.shape[1],
        None,
        index.ctypes.data,
        row_weight.ctypes.data,
        losses.ctypes.data,
    )
    return bad


def log(x: np.ndarray) -> np.ndarray:
    """The kernel's own float64 ``log`` of positive normal ``x`` (the row normalisers)."""
    assert LIBRARY is not None
    x = np.ascontiguousarray(x, dtype=np.float64)
    out = np.empty_like(x)
    LIBRARY.ce_log_f64(x.ctypes.data, out.ctypes.data, x.size)
    return out


def exp(x: np.ndarray) -> np.ndarray:
    """The kernel's own ``exp`` of ``x <= 0`` (float32 or float64), for accuracy tests."""
    assert LIBRARY is not None
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    getattr(LIBRARY, f"ce_exp_{_SUFFIX[x.dtype]}")(x.ctypes.data, out.ctypes.data, x.size)
    return out


class RowsLossGrad:
    """:func:`loss_grad` over row ranges of fixed arrays, for a loop of many small chunks.

    The arrays are checked and their addresses taken once; each :meth:`__call__` is then one
    ctypes call on integer addresses (no per-chunk array checks or ``.ctypes`` objects),
    which keeps the GIL-holding part of a chunk short when row blocks run on threads.
    ``scores`` is the in-place buffer: rows ``0:stop − start`` of it hold the chunk whose
    labels and weights are rows ``start:stop`` of ``index`` and ``row_weight``.
    """

    def __init__(
        self,
        scores: np.ndarray,
        index: np.ndarray,
        row_weight: np.ndarray,
        scale: float,
        *,
        bias: np.ndarray | None = None,
        col_sums: np.ndarray | None = None,
    ) -> None:
        assert LIBRARY is not None
        dtype = scores.dtype
        if not (scores.ndim == 2 and scores.flags.c_contiguous and dtype in _SUFFIX):
            raise TypeError("scores must be a C-contiguous (rows, C) float32/float64 buffer")
        n_classes = scores.shape[1]
        if index.dtype != np.int64 or not index.flags.c_contiguous or index.ndim != 1:
            raise TypeError("index must be C-contiguous int64 (n,)")
        if row_weight.dtype != np.float64 or row_weight.shape != index.shape:
            raise TypeError("row_weight must be float64 of the shape of index")
        if not row_weight.flags.c_contiguous:
            raise TypeError("row_weight must be C-contiguous")
        if bias is not None and (
            bias.dtype != dtype or bias.shape != (n_classes,) or not bias.flags.c_contiguous
        ):
            raise TypeError(f"bias must be C-contiguous {dtype} of shape ({n_classes},)")
        if col_sums is not None and (
            col_sums.dtype != np.float64
            or col_sums.shape != (n_classes,)
            or not col_sums.flags.c_contiguous
        ):
            raise TypeError(f"col_sums must be C-contiguous float64 of shape ({n_classes},)")
        self._keep = (scores, index, row_weight, bias, col_sums)  # alive while we hold them
        self._fn = getattr(LIBRARY, f"ce_loss_grad_{_SUFFIX[dtype]}")
        self._scores = scores.ctypes.data
        self._rows = scores.shape[0]
        self._n_classes = n_classes
        self._bias = _address(bias)
        self._index = index.ctypes.data
        self._weight = row_weight.ctypes.data
        self._col_sums = _address(col_sums)
        self._scale = float(scale)
        self._bad = ctypes.c_int64(-1)
        self._bad_ref = ctypes.byref(self._bad)

    def __call__(self, start: int, stop: int) -> tuple[float, int]:
        """Loss sum of rows ``start:stop`` (gradient left in ``scores[:stop − start]``), and
        the first undefined row counted from ``start`` (or -1)."""
        if not (0 <= stop - start <= self._rows and 0 <= start and stop <= len(self._keep[1])):
            raise ValueError(f"rows {start}:{stop} do not fit the buffers")
        total = self._fn(
            self._scores,
            self._scores,
            stop - start,
            self._n_classes,
            self._bias,
            self._index + 8 * start,
            self._weight + 8 * start,
            self._scale,
            self._col_sums,
            self._bad_ref,
        )
        return float(total), int(self._bad.value)
