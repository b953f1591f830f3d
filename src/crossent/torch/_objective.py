"""The classifier's objective on a torch device: the fused kernel plus the penalty.

.. math::

    L_{total}(W, b) = \\sum_i s_i \\, \\mathrm{CE}(W x_i + b, k_i)
                      + \\frac{\\lambda}{2} \\|W\\|^2

The data term is :func:`crossent.torch.linear_cross_entropy` with ``reduction="none"``
(``F.cross_entropy(F.linear(X, W, b), y, reduction="none")`` computed in row chunks: the
``(n, C)`` scores never exist whole) dotted with the sample weights in float64; its
gradients for ``W`` and ``b`` come from the kernel's backward pass. ``X``, ``y`` and the
weights stay on their device; each evaluation sends ``W`` and ``b`` there in ``X``'s dtype
and brings ``∂L/∂W``, ``∂L/∂b`` and the loss back, so only ``(C, d)`` numbers cross the bus.
The penalty and its gradient ``λW`` are added on the host in float64, as
:class:`crossent.objective.LinearSoftmaxObjective` adds them. The solvers therefore run
unchanged, on the host in float64: :class:`TorchObjective` has the interface they use.

Where the time goes (measured on CPU tensors, one thread, float32, 2-core shared machine):
copying ``W`` to the device and ``∂L/∂W`` back took 7 µs for ``C d = 7840`` (MNIST's
shape) and 96 µs for ``C d = 256000``, 0.01-0.07 % of an evaluation (15-130 ms for
``n = 2000-20000``); the first evaluation of a process also pays about 2.7 s of one-time
setup of the torch operator. On CUDA (reasoned, not measured here: no GPU) each evaluation
moves ``4 C d`` bytes each way plus one synchronisation, about 10-20 µs of latency and
``C d / 20 GB/s``, against ``6 n d C`` flops of the kernel's three products: for MNIST
(``n = 60000``) ~30 µs against ~3 GFLOP, a fraction of a millisecond on a modern GPU, so
the bus matters only for small ``n``. For very wide models (``C d`` of many millions) the
host-side solver updates, ``O(m C d)`` float64 work per L-BFGS iteration, outweigh the
transfer; that, not the bus, is the limit of keeping the solvers on the host.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from crossent._array import is_tensor
from crossent._stats import max_abs
from crossent._threads import check_n_threads
from crossent.objective import _check_labels, _check_sample_weight, _gradient_scale, penalty

__all__ = ["TorchObjective", "resolve_device"]

_DEVICE_TYPES = ("cpu", "cuda")


def resolve_device(device: Any, name: str = "device") -> Any:
    """``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a ``torch.device``) as a
    ``torch.device`` that exists on this machine.

    Raises
    ------
    ImportError
        PyTorch is not installed.
    TypeError
        ``device`` is neither a string nor a ``torch.device``.
    ValueError
        ``device`` is not a CPU or CUDA device, or names a CUDA device that is not there.
    """
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a test dependency
        raise ImportError(
            f"{name}={device!r} needs PyTorch, which is not installed (pip install torch)"
        ) from None
    expected = "'cpu', 'cuda', 'cuda:N' or a torch.device"
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"{name} must be {expected}, got {device!r}")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"{name} must be {expected}, got {device!r}") from None
    if resolved.type not in _DEVICE_TYPES:
        raise ValueError(f"{name} must be {expected}, got {device!r}")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"{name}={device!r}: CUDA is not available (torch.cuda.is_available() is False)"
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(
                f"{name}={device!r}: there is no CUDA device {resolved.index} "
                f"(torch.cuda.device_count() is {count})"
            )
    return resolved


class TorchObjective:
    """``L_total`` and its gradient on a torch tensor ``X``, evaluated on its device.

    The interface of :class:`crossent.objective.LinearSoftmaxObjective` (what
    :class:`crossent.solvers.Problem` and the classifier read); the same function, whose
    data term is :func:`crossent.torch.linear_cross_entropy`.

    Parameters
    ----------
    X : torch.Tensor, shape ``(n_samples, n_features)``
        float32 or float64, on any device; used without a copy when contiguous. float32
        stays float32 in the kernel's products (which accumulate in float32).
    y : ndarray or torch.Tensor of int, shape ``(n_samples,)``
        Class indices in ``[0, n_classes)``; copied once to ``X``'s device as int64.
    n_classes : int
    l2 : float
        λ ≥ 0, the weight of ``(λ/2)‖W‖²``.
    sample_weight : ndarray, shape ``(n_samples,)``, optional
        Non-negative weights ``s_i`` (1 by default); copied once to the device as float64.
    fit_intercept : bool, default True
    n_threads : int, optional
        Kept for the interface; torch chooses its own threads (``torch.set_num_threads``).
    x_max_abs : float, optional
        An upper bound of ``max |x|``; by default computed on the device.

    Notes
    -----
    ``sample_weight`` and ``y`` stay available on the host (``.sample_weight``, ``.y``) as
    NumPy arrays. Minibatch solvers, which take row subsets of ``X`` through
    :meth:`crossent.solvers.Problem.subset`, are not supported: the classifier refuses them.

    Examples
    --------
    >>> import numpy as np, torch
    >>> X = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    >>> objective = TorchObjective(X, np.array([0, 1]), 2, l2=1.0)
    >>> loss, grad_coef, grad_intercept = objective.loss_gradient(np.zeros((2, 2)), np.zeros(2))
    >>> round(loss, 6)  # two samples, each -log(1/2), as crossent.objective.loss_gradient
    1.386294
    >>> grad_coef
    array([[-0.5,  0.5],
           [ 0.5, -0.5]])
    """

    def __init__(
        self,
        X: Any,
        y: Any,
        n_classes: int,
        *,
        l2: float,
        sample_weight: Any = None,
        fit_intercept: bool = True,
        n_threads: int | None = None,
        x_max_abs: float | None = None,
    ) -> None:
        import torch

        if not is_tensor(X):
            raise TypeError(f"X must be a torch.Tensor, got {type(X).__name__}")
        if X.ndim != 2 or X.dtype not in (torch.float32, torch.float64):
            raise TypeError(
                f"X must be a 2-D float32 or float64 tensor, got {X.dtype} {tuple(X.shape)}"
            )
        self.X = X.detach().contiguous()  # (n, d)
        self.device = self.X.device
        n = int(self.X.shape[0])
        self.n_classes = int(n_classes)
        if self.n_classes < 1:
            raise ValueError(f"n_classes must be at least 1, got {n_classes!r}")
        if is_tensor(y):
            y = y.detach().cpu().numpy()
        self.y = _check_labels(y, n, self.n_classes)  # (n,) intp, on the host
        self.l2 = float(l2)
        if not (math.isfinite(self.l2) and self.l2 >= 0):
            raise ValueError(f"l2 must be a finite number >= 0, got {l2!r}")
        if is_tensor(sample_weight):
            sample_weight = sample_weight.detach().cpu().numpy()
        self.sample_weight = _check_sample_weight(sample_weight, n)  # (n,) float64, host
        self.fit_intercept = bool(fit_intercept)
        self.n_threads = check_n_threads(n_threads)
        self.x_max_abs = max_abs(self.X) if x_max_abs is None else float(x_max_abs)
        self._np_dtype = np.dtype(np.float32 if self.X.dtype == torch.float32 else np.float64)
        # A power of two that keeps Σ_i g s_i (ŷ_i − δ) x_iᵀ finite in X's dtype: the kernel
        # may accumulate over all n rows in that dtype (1 for data of ordinary scale).
        self._grad_scale = _gradient_scale(self._np_dtype, self.x_max_abs, max(n, 1))
        self._target = torch.as_tensor(self.y, dtype=torch.int64).to(self.device)  # (n,)
        self._weights = torch.as_tensor(self.sample_weight * self._grad_scale).to(self.device)
        self.n_evals = 0

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    def loss_gradient(
        self, coef: np.ndarray, intercept: np.ndarray | None = None
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """Return ``(L_total, ∂L/∂W, ∂L/∂b)``, the gradients float64 of shapes (C, d), (C,).

        ``coef`` is ``W``, shape ``(n_classes, n_features)``; ``intercept`` is ``b``,
        shape ``(n_classes,)`` (ignored, and its gradient 0, without an intercept).
        """
        import torch

        from crossent.torch import linear_cross_entropy

        self.n_evals += 1
        coef64 = np.asarray(coef, dtype=np.float64)
        weight = self._to_device(coef64)  # (C, d) in X's dtype
        leaves = [weight]
        bias = None
        if self.fit_intercept and intercept is not None:
            bias = self._to_device(np.asarray(intercept, dtype=np.float64))  # (C,)
            leaves.append(bias)
        with torch.enable_grad():
            losses = linear_cross_entropy(self.X, weight, self._target, bias, reduction="none")
            assert isinstance(losses, torch.Tensor)  # (n,) L_i; a tuple only with return_lse
            data_loss = torch.dot(losses.to(torch.float64), self._weights)  # Σ g s_i L_i
            grads = torch.autograd.grad(data_loss, leaves)
        # the only transfers back: one number and (C, d) + (C,) gradients in X's dtype
        loss = float(data_loss.detach()) / self._grad_scale
        grad_coef = grads[0].cpu().numpy().astype(np.float64)
        grad_intercept = np.zeros(self.n_classes, dtype=np.float64)
        if bias is not None:
            grad_intercept = grads[1].cpu().numpy().astype(np.float64)
        if self._grad_scale != 1.0:
            grad_coef /= self._grad_scale
            grad_intercept /= self._grad_scale
        loss += penalty(coef64, self.l2)
        grad_coef += self.l2 * coef64  # the penalty's gradient λW
        return loss, grad_coef, grad_intercept

    def _to_device(self, values: np.ndarray) -> Any:
        """A float64 host array as a leaf tensor on the device in ``X``'s dtype (cast on
        the host first: half the bytes cross the bus for float32)."""
        import torch

        host = torch.from_numpy(np.ascontiguousarray(values, dtype=self._np_dtype))
        return host.to(self.device).requires_grad_(True)
