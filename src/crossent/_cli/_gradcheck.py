"""``crossent gradcheck``: the analytic gradient ``ŷ − δ`` against finite differences.

On a random float64 problem it checks :func:`crossent.objective.loss_gradient`:

- ``L_total`` against the derivation's formula written out literally,
  ``Σ_i −log(e^{f_{k_i,i}} / Σ_j e^{f_{j,i}}) + (λ/2)‖W‖²``;
- every entry of ``∂L/∂W`` and ``∂L/∂b`` against the central difference
  ``(L(θ + h) − L(θ − h)) / 2h`` with ``h = ε^{1/3} max(1, |θ|)``, whose error (truncation
  ``~h²``, rounding ``~ε L / h``) is about 1e-9 here.

The error of an entry is ``|numeric − analytic| / max(|numeric|, |analytic|, 1)``: relative
for entries of magnitude 1 or more, absolute below (where a relative error would measure
only the finite differences' own noise). A NaN or infinite error fails the check.

The problem's size is bounded by the work the finite differences take,
``2 C (d + 1)`` evaluations of ``L_total`` at ``n d C`` multiply-adds each.
"""

from __future__ import annotations

import argparse

import numpy as np

from crossent import objective

from ._common import CommandError
from ._parser import GRADCHECK_THRESHOLD as THRESHOLD

MAX_WORK = 2e10  # multiply-adds of the finite differences: about a minute at most
_STEP = float(np.finfo(np.float64).eps) ** (1 / 3)


def _error(numeric: np.ndarray, analytic: np.ndarray) -> np.ndarray:
    scale = np.maximum(np.maximum(np.abs(numeric), np.abs(analytic)), 1.0)
    return np.abs(numeric - analytic) / scale


def _central_differences(loss, theta: np.ndarray) -> np.ndarray:
    """∂loss/∂θ entry by entry, ``(L(θ + h e_j) − L(θ − h e_j)) / 2h``."""
    grad = np.empty_like(theta)
    for j in np.ndindex(theta.shape):
        h = _STEP * max(1.0, abs(theta[j]))
        saved = theta[j]
        theta[j] = saved + h
        up = loss()
        theta[j] = saved - h
        down = loss()
        theta[j] = saved
        grad[j] = (up - down) / (2 * h)
    return grad


def check_size(n: int, d: int, n_classes: int) -> None:
    """Refuse a problem whose finite differences would take more than ``MAX_WORK``."""
    work = 2 * n_classes * (d + 1) * n * d * n_classes
    if work > MAX_WORK:
        raise CommandError(
            f"--samples {n}, --features {d}, --classes {n_classes}: the finite differences "
            f"would take {work:.1e} multiply-adds, more than {MAX_WORK:.0e}; use a smaller "
            "problem (the check does not need a large one)"
        )


@np.errstate(all="ignore")  # an overflow is reported as a non-finite error, not a warning
def run(args: argparse.Namespace, argv: list[str]) -> int:
    n, d, n_classes, l2 = args.samples, args.features, args.classes, args.l2
    check_size(n, d, n_classes)
    rng = np.random.default_rng(args.seed)
    X = rng.normal(size=(n, d))  # (n, d)
    y = rng.integers(0, n_classes, n)  # (n,)
    coef = rng.normal(scale=0.5, size=(n_classes, d))  # (C, d) W
    intercept = rng.normal(scale=0.5, size=n_classes)  # (C,) b

    def loss() -> float:
        return objective.loss_gradient(coef, intercept, X, y, l2=l2)[0]

    value, grad_coef, grad_intercept = objective.loss_gradient(coef, intercept, X, y, l2=l2)
    scores = X @ coef.T + intercept  # (n, C) f
    softmax = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    literal = float(-np.log(softmax[np.arange(n), y]).sum() + l2 / 2 * np.sum(coef**2))

    rows = [
        ("L_total", 1, float(_error(np.array(literal), np.array(value)))),
        (
            f"∂L/∂W ({n_classes}×{d})",
            coef.size,
            float(_error(_central_differences(loss, coef), grad_coef).max()),
        ),
        (
            f"∂L/∂b ({n_classes})",
            intercept.size,
            float(_error(_central_differences(loss, intercept), grad_intercept).max()),
        ),
    ]
    errors = np.array([error for _, _, error in rows])
    worst = float(errors.max())  # NaN if any error is NaN
    print(
        f"gradient check of crossent.objective.loss_gradient, float64: {n_classes} classes, "
        f"{d} features, {n} samples, l2 = {l2:g}, seed {args.seed}"
    )
    print(
        "L_total against Σ_i −log softmax(f_i)[k_i] + (l2/2)‖W‖²; gradients against central "
        f"differences, h = {_STEP:.2g}·max(1, |θ|)"
    )
    print()
    print(f"  {'quantity':<16} {'entries':>7}  worst error")
    for name, size, error in rows:
        print(f"  {name:<16} {size:>7}  {error:.2e}")
    print()
    if not np.all(np.isfinite(errors)):
        print(
            f"FAILED: an error is {worst:.2e}, not a finite number (the objective or its "
            f"gradient overflows at l2 = {l2:g}?)"
        )
        return 1
    if worst > THRESHOLD:
        print(f"FAILED: worst relative error {worst:.2e} > {THRESHOLD:g}")
        return 1
    print(f"worst relative error {worst:.2e} <= {THRESHOLD:g}: the gradient ŷ − δ checks out")
    return 0
