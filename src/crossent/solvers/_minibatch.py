"""Minibatch solvers: SGD with momentum, and Adam.

Each step follows the gradient of one minibatch's estimate of ``F`` (see
:meth:`Problem.subset`: its mean over batches is ``F``), in the preconditioned coordinates,
with the step size ``η_t = η / sqrt(1 + t / T)`` decaying over the epochs ``t`` (``T`` =
``decay_epochs``). One epoch is one shuffled pass over the rows. The same code serves
``fit`` (many epochs) and ``partial_fit`` (one pass over the batch it is given, the
optimiser's state carried between calls in ``state``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from crossent.solvers._problem import Callback, Problem, SolverResult

_DEFAULT_RATE = {"sgd": 0.05, "adam": 0.01}


def _momentum_step(x, grad, state, rate, momentum=0.9):
    velocity = state.setdefault("velocity", np.zeros_like(x))
    velocity *= momentum
    velocity -= rate * grad
    x += velocity


def _adam_step(x, grad, state, rate, beta1=0.9, beta2=0.999, eps=1e-8):
    m = state.setdefault("m", np.zeros_like(x))
    v = state.setdefault("v", np.zeros_like(x))
    t = state["t"] = state.get("t", 0) + 1
    m *= beta1
    m += (1 - beta1) * grad
    v *= beta2
    v += (1 - beta2) * grad * grad
    x -= rate * (m / (1 - beta1**t)) / (np.sqrt(v / (1 - beta2**t)) + eps)


_STEPS = {"sgd": _momentum_step, "adam": _adam_step}


def minibatch(
    problem: Problem,
    x0: np.ndarray,
    *,
    max_iter: int,
    tol: float,
    callback: Callback | None = None,
    method: str = "adam",
    batch_size: int = 256,
    learning_rate: float | None = None,
    decay_epochs: float = 5.0,
    random_state: np.random.Generator | None = None,
    n_iter_no_change: int = 5,
    validation: Problem | None = None,
    state: dict[str, Any] | None = None,
) -> SolverResult:
    """Run up to ``max_iter`` epochs of minibatch ``method`` ("sgd" or "adam") on ``problem``.

    Stops when the monitored loss (the validation objective when ``validation`` is given,
    else the epoch's mean training batch objective) has not improved by more than
    ``tol · |best|`` for ``n_iter_no_change`` epochs; with validation, the best iterate is
    returned. ``state`` (a dict, updated in place) carries the optimiser's moments and the
    number of epochs done across calls.
    """
    step_fn = _STEPS[method]
    rate0 = _DEFAULT_RATE[method] if learning_rate is None else float(learning_rate)
    average = x0
    rng = random_state if random_state is not None else np.random.default_rng()
    state = {} if state is None else state
    x = np.asarray(x0, dtype=np.float64).copy()
    n = problem.objective.n_samples
    curve: list[float] = []
    best, best_x, stale = np.inf, x.copy(), 0
    converged = stopped = False
    for epoch in range(1, max_iter + 1):
        done = state.get("epochs", 0)
        rate = rate0 / np.sqrt(1.0 + done / decay_epochs)
        order = rng.permutation(n)
        total, weight = 0.0, 0.0
        average, n_steps = x.copy(), 0  # Polyak average of this epoch's iterates
        for start in range(0, n, batch_size):
            batch = problem.subset(np.sort(order[start : start + batch_size]))
            if batch.normaliser <= 0:
                continue
            value, grad = batch.value_grad(x)
            step_fn(x, grad, state, rate)
            n_steps += 1
            average += (x - average) / n_steps
            total += value * batch.normaliser
            weight += batch.normaliser
        state["epochs"] = done + 1
        epoch_loss = total / weight if weight else 0.0
        monitored = validation.value_grad(average)[0] if validation is not None else epoch_loss
        curve.append(epoch_loss * problem.normaliser)
        if best == np.inf or monitored < best - tol * abs(best):
            best, best_x, stale = monitored, average.copy(), 0
        else:
            stale += 1
        if callback is not None and callback(epoch, curve[-1], float("nan"), average):
            stopped = True
            break
        if stale >= n_iter_no_change:
            converged = True
            break
    final = best_x if validation is not None else average
    message = f"{method}: {len(curve)} epoch(s)"
    return SolverResult(final, len(curve), converged, curve, message, stopped=stopped)
