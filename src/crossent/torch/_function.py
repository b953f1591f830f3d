"""The front end: :func:`linear_cross_entropy`, its checks, and its autograd.

Two autograd paths share the back-end contract of :mod:`crossent.torch._chunked`:

* the general path: the custom ops ``crossent::linear_ce_forward`` → ``(lse, dot)`` and
  ``crossent::linear_ce_backward`` → ``(dx, dweight, dbias)``, tied by
  :func:`torch.library.register_autograd`; the loss is built from ``(lse, dot)`` by plain
  tensor operations, so every reduction (``"none"`` too), the returned ``lse`` and
  ``torch.compile(fullgraph=True)`` work. The backward recomputes each chunk's scores
  (four matrix products in all).
* the fused path (eager mode, chunked back end, ``"mean"``/``"sum"``, a gradient wanted, no
  ``return_lse``): one sweep makes the loss and the gradient for upstream gradient 1, as
  :mod:`crossent.objective` does on NumPy (three matrix products), and the backward only
  scales them by the scalar upstream gradient, in place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Any

import torch
from torch import Tensor

from crossent._array import check_probabilities, namespace
from crossent.loss import _REDUCTIONS
from crossent.torch import _chunked
from crossent.torch._chunked import accum_dtype
from crossent.torch._dispatch import backend_for, uses_chunked

__all__ = ["linear_cross_entropy"]

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# ---------------------------------------------------------------- the custom ops (general)


@torch.library.custom_op("crossent::linear_ce_forward", mutates_args=())
def _forward_op(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    target: Tensor,
    a: Tensor,
    b: Tensor,
    cw: Tensor | None,
    P: Tensor | None,
    softcap: float | None,
) -> tuple[Tensor, Tensor]:
    """``(lse, dot)`` of the back-end contract, by the back end for ``x``'s device."""
    forward, _ = backend_for(x)
    return forward(x, weight, bias, target, a, b, cw, P, softcap)


@_forward_op.register_fake
def _(x, weight, bias, target, a, b, cw, P, softcap):
    acc = accum_dtype(x.dtype)
    return x.new_empty(x.shape[0], dtype=acc), x.new_empty(x.shape[0], dtype=acc)


@torch.library.custom_op("crossent::linear_ce_backward", mutates_args=())
def _backward_op(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    target: Tensor,
    a: Tensor,
    b: Tensor,
    cw: Tensor | None,
    P: Tensor | None,
    softcap: float | None,
    lse: Tensor,
    row_coef: Tensor,
    go: Tensor,
    need_dx: bool,
    need_dw: bool,
    need_db: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(dx, dweight, dbias)`` of the contract; an empty tensor for a gradient not needed."""
    _, backward = backend_for(x)
    grads = backward(
        x,
        weight,
        bias,
        target,
        a,
        b,
        cw,
        P,
        softcap,
        lse,
        row_coef,
        go,
        need_dx,
        need_dw,
        need_db,
    )
    dx, dw, db = (x.new_empty(0) if g is None else g for g in grads)  # outputs never alias
    return dx, dw, db


@_backward_op.register_fake
def _(x, weight, bias, target, a, b, cw, P, softcap, lse, row_coef, go, need_dx, need_dw, need_db):
    acc = accum_dtype(x.dtype)
    return (
        torch.empty_like(x) if need_dx else x.new_empty(0),
        weight.new_empty(weight.shape, dtype=acc) if need_dw else x.new_empty(0),
        weight.new_empty(weight.shape[0], dtype=acc) if need_db else x.new_empty(0),
    )


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    x, weight, bias, target, a, b, cw, P, softcap = inputs
    ctx.save_for_backward(x, weight, bias, target, a, b, cw, P, output[0])
    ctx.softcap = softcap


def _backward_formula(ctx: Any, grad_lse: Tensor, grad_dot: Tensor):
    x, weight, bias, target, a, b, cw, P, lse = ctx.saved_tensors
    need_dx, need_dw, need_db = ctx.needs_input_grad[:3]
    need_db = need_db and bias is not None
    dx, dw, db = _backward_op(
        x,
        weight,
        bias,
        target,
        a,
        b,
        cw,
        P,
        ctx.softcap,
        lse,
        grad_lse,
        -grad_dot,
        need_dx,
        need_dw,
        need_db,
    )
    return (
        dx if need_dx else None,
        dw.to(weight.dtype) if need_dw else None,
        db.to(bias.dtype) if need_db else None,
        None,
        None,
        None,
        None,
        None,
        None,
    )


torch.library.register_autograd(
    "crossent::linear_ce_forward", _backward_formula, setup_context=_setup_context
)


# ---------------------------------------------------------------- the fused path (eager)


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """``Σ_i s_i L_i`` with its gradient made in the forward sweep (see the module docstring).

    The gradients are held on ``ctx`` and handed over once, scaled in place by the upstream
    gradient; a second backward through a retained graph recomputes them by the contract.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, target, a, b, cw, P, softcap, row_total, z_loss, scale):
        need_dx, need_dw, need_db = ctx.needs_input_grad[:3]
        lse, dot, dx, dw, db = _chunked.forward_backward(
            x,
            weight,
            bias,
            target,
            a,
            b,
            cw,
            P,
            softcap,
            row_total,
            z_loss,
            scale,
            need_dx,
            need_dw,
            need_db,
        )
        ctx.save_for_backward(x, weight, bias, target, a, b, cw, P, row_total, scale, lse)
        ctx.softcap, ctx.z_loss, ctx.grads = softcap, z_loss, (dx, dw, db)
        rows = scale * (row_total * lse - dot + z_loss * lse.square())  # (n,) s_i L_i
        return rows.sum(dtype=torch.float64)

    @staticmethod
    def backward(ctx, grad_loss):
        x, weight, bias, target, a, b, cw, P, row_total, scale, lse = ctx.saved_tensors
        need_dx, need_dw, need_db = ctx.needs_input_grad[:3]
        fresh, ctx.grads = ctx.grads, None
        g = grad_loss.to(lse.dtype)
        if fresh is not None:
            dx, dw, db = fresh
        else:  # a second backward, through a retained graph
            go = g * scale
            dx, dw, db = _chunked.backward(
                x,
                weight,
                bias,
                target,
                a,
                b,
                cw,
                P,
                ctx.softcap,
                lse,
                go * (row_total + 2.0 * ctx.z_loss * lse),
                go,
                need_dx,
                need_dw,
                need_db,
            )
        if fresh is not None and bool(g != 1.0):
            for grad in (dx, dw, db):
                if grad is not None:
                    grad.mul_(g.to(grad.dtype))
        return (
            dx,
            None if dw is None else dw.to(weight.dtype),
            None if db is None else db.to(bias.dtype),
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
        )


# ---------------------------------------------------------------- the front end


@dataclass
class _Terms:
    """The target mass of :mod:`crossent.loss`, factored per row for the contract."""

    target: Tensor  # (n,) int64 class index k_i (0 where ignored or for probabilities)
    a: Tensor  # (n,) mass on class k_i
    b: Tensor  # (n,) smoothing mass on the class weights
    cw: Tensor | None  # (C,) class weights, None for ones
    P: Tensor | None  # (n, C) probability-target mass
    row_total: Tensor  # (n,) U_i = Σ_j u_ij
    keep: Tensor  # (n,) 1.0 for rows that count (not ignored), else 0.0
    denom: Tensor  # () what "mean" divides by


def linear_cross_entropy(
    x: Tensor,
    weight: Tensor,
    target: Tensor,
    bias: Tensor | None = None,
    *,
    class_weight: Tensor | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_lse: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Softmax cross-entropy of a linear layer's scores, without the ``(n, C)`` scores.

    Exactly ``crossent.softmax_cross_entropy(softcap(x @ weight.T + bias), target,
    weight=class_weight, ignore_index=ignore_index, label_smoothing=label_smoothing,
    reduction=reduction) + z_loss · reduce(lse²)``, without the intermediate; with
    ``z_loss=0`` and no ``softcap`` that is ``F.cross_entropy(F.linear(x, weight, bias),
    target, weight=class_weight, ignore_index=…, label_smoothing=…, reduction=…)`` but for
    crossent's conventions (``ignore_index=None`` ignores nothing; a mean over no samples is 0).

    .. math::

        z_{ij} = \\mathrm{cap} \\tanh\\big((x_i \\cdot w_j + b_j) / \\mathrm{cap}\\big), \\quad
        L_i = \\sum_j u_{ij} (\\mathrm{lse}_i - z_{ij}) + \\zeta\\, m_i\\, \\mathrm{lse}_i^2

    with ``u`` the target mass of :mod:`crossent.loss` (class index, class weights, label
    smoothing, probabilities), ``ζ`` = ``z_loss`` and ``m_i`` = 0 for ignored rows, else 1.

    Parameters
    ----------
    x : Tensor, shape ``(..., d)``
        Hidden states, float16, bfloat16, float32 or float64.
    weight : Tensor, shape ``(n_classes, d)``
        The classifier (``F.linear``'s layout), ``x``'s dtype and device.
    target : Tensor
        Class indices (any integer dtype), shape ``x.shape[:-1]``; or probabilities,
        floating, shape ``(*x.shape[:-1], n_classes)`` (a constant: no gradient flows to it).
    bias : Tensor, shape ``(n_classes,)``, optional
    class_weight : Tensor, shape ``(n_classes,)``, optional
        Non-negative class weights (``F.cross_entropy``'s ``weight``).
    ignore_index : int, optional
        Class index whose rows count for nothing (loss, z-loss, gradient, mean's denominator).
    label_smoothing : float in [0, 1], default 0
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` divides by the summed class weight of the non-ignored rows (their number
        without weights; the number of rows for probability targets); ``"none"`` returns one
        loss per row, shape ``x.shape[:-1]``.
    z_loss : float >= 0, default 0
        Adds ``z_loss · lse_i²`` for every non-ignored row, reduced with the loss: per row,
        summed, or divided by the same ``"mean"`` denominator (without class weights: the
        mean of ``lse²`` over the non-ignored rows).
    softcap : float > 0, optional
        Caps the scores smoothly: ``z = softcap · tanh(raw / softcap)``.
    return_lse : bool, default False
        Also return each row's log-sum-exp (of the capped scores), shape ``x.shape[:-1]``,
        float32 (float64 for float64 input); gradients flow through it too.

    Returns
    -------
    loss : Tensor
        In ``x``'s dtype: a scalar, or shape ``x.shape[:-1]`` for ``"none"``.
    lse : Tensor
        Only with ``return_lse=True``.

    Notes
    -----
    Memory: the scores are made a chunk of rows at a time (about 32 MiB of them,
    :data:`crossent.torch._chunked.SCORES_BYTES`); beyond the inputs and the gradients
    themselves, fwd+bwd holds one float32 ``dweight`` (cast to ``weight``'s dtype at the end)
    and one chunk. The log-sum-exp, ``G`` and the ``dweight``/``dbias`` sums are float32
    whatever the input dtype (float64 input: float64). On CPU the same chunked algorithm as
    :mod:`crossent.objective` runs, and for ``"mean"``/``"sum"`` in eager mode the gradient is
    made in the forward sweep (three matrix products, not four). CUDA tensors use the Triton
    kernels when Triton is installed. See ``docs/torch.md``.

    The fused path does the gradient's work in the forward call: evaluate a loss you will not
    differentiate (validation) under :func:`torch.no_grad`, which runs the forward sweep only.

    Examples
    --------
    >>> import torch
    >>> from crossent.torch import linear_cross_entropy
    >>> x, w = torch.eye(2, dtype=torch.float64), torch.tensor([[2.0, 0.0], [0.0, 0.0]]).double()
    >>> round(float(linear_cross_entropy(x, w, torch.tensor([0, 1]))), 6)
    0.410038
    """
    C, d = _check_tensors(x, weight, bias, class_weight)
    _check_options(ignore_index, label_smoothing, reduction, z_loss, softcap)
    batch_shape = tuple(x.shape[:-1])
    n = math.prod(batch_shape)
    acc = accum_dtype(x.dtype)
    if isinstance(target, Tensor) and target.device != x.device:
        raise ValueError(f"target is on {target.device} but x is on {x.device}")
    terms = _target_terms(
        target, batch_shape, C, class_weight, ignore_index, float(label_smoothing), acc
    )
    z_loss, softcap = float(z_loss), None if softcap is None else float(softcap)
    x2 = x.reshape(n, d)  # (n, d)
    denom = terms.denom
    scale = torch.where(denom > 0, 1.0 / torch.where(denom > 0, denom, 1.0), 0.0)

    wants_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, weight, bias)
    )
    if (
        reduction != "none"
        and not return_lse
        and wants_grad
        and not torch.compiler.is_compiling()
        and uses_chunked(x)
    ):
        row_scale = terms.keep * (scale if reduction == "mean" else 1.0)  # (n,) s_i
        total = _FusedLinearCrossEntropy.apply(
            x2,
            weight,
            bias,
            terms.target,
            terms.a,
            terms.b,
            terms.cw,
            terms.P,
            softcap,
            terms.row_total,
            z_loss,
            row_scale,
        )
        return total.to(x.dtype)

    lse, dot = _forward_op(
        x2, weight, bias, terms.target, terms.a, terms.b, terms.cw, terms.P, softcap
    )
    rows = terms.row_total * lse - dot  # (n,) Σ_j u_ij (lse_i − z_ij)
    if z_loss != 0.0:
        rows = rows + z_loss * terms.keep * lse.square()
    if reduction == "none":
        loss = rows.reshape(batch_shape).to(x.dtype)
    elif reduction == "sum":
        loss = rows.sum(dtype=torch.float64).to(x.dtype)
    else:
        loss = (rows.sum(dtype=torch.float64) * scale).to(x.dtype)
    return (loss, lse.reshape(batch_shape)) if return_lse else loss


def _check_tensors(x: Any, weight: Any, bias: Any, class_weight: Any) -> tuple[int, int]:
    """Types, dtypes, shapes and devices of the tensors; returns ``(n_classes, d)``."""
    for name, t in (("x", x), ("weight", weight)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if x.dtype not in _FLOATS:
        raise TypeError(
            f"x must have a floating dtype (float16, bfloat16, float32, float64), got {x.dtype}"
        )
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension (the features), got a scalar")
    if weight.ndim != 2 or weight.shape[1] != x.shape[-1]:
        raise ValueError(
            f"weight must have shape (n_classes, d) with d = x.shape[-1] = {x.shape[-1]}, "
            f"got {tuple(weight.shape)}"
        )
    C, d = int(weight.shape[0]), int(weight.shape[1])
    if C == 0:
        raise ValueError("weight must have at least one class (n_classes = 0)")
    if weight.dtype != x.dtype:
        raise TypeError(f"weight must have x's dtype {x.dtype}, got {weight.dtype}")
    for name, t in (("bias", bias), ("class_weight", class_weight)):
        if t is None:
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor or None, got {type(t).__name__}")
        if tuple(t.shape) != (C,):
            raise ValueError(f"{name} must have shape (n_classes,) = ({C},), got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must have a floating dtype, got {t.dtype}")
    if bias is not None and bias.dtype != x.dtype:
        raise TypeError(f"bias must have x's dtype {x.dtype}, got {bias.dtype}")
    for name, t in (("weight", weight), ("bias", bias), ("class_weight", class_weight)):
        if t is not None and t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}")
    return C, d


def _check_options(
    ignore_index: Any, label_smoothing: Any, reduction: Any, z_loss: Any, softcap: Any
) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if ignore_index is not None and (
        not isinstance(ignore_index, int) or isinstance(ignore_index, bool)
    ):
        raise TypeError(f"ignore_index must be an int or None, got {ignore_index!r}")
    if not _is_number(label_smoothing) or not 0.0 <= float(label_smoothing) <= 1.0:
        raise ValueError(f"label_smoothing must be a number in [0, 1], got {label_smoothing!r}")
    if not _is_number(z_loss) or not (math.isfinite(float(z_loss)) and float(z_loss) >= 0.0):
        raise ValueError(f"z_loss must be a finite number >= 0, got {z_loss!r}")
    if softcap is not None and (
        not _is_number(softcap) or not (math.isfinite(float(softcap)) and float(softcap) > 0.0)
    ):
        raise ValueError(f"softcap must be None or a finite number > 0, got {softcap!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _target_terms(
    target: Any,
    batch_shape: tuple[int, ...],
    C: int,
    class_weight: Tensor | None,
    ignore_index: int | None,
    eps: float,
    acc: torch.dtype,
) -> _Terms:
    """:mod:`crossent.loss`'s target mass ``u`` as ``a e_k + b cw + P`` per row.

    Class index ``k`` with weight ``w``: ``a = (1 − ε) w_k``, ``b = ε / C`` (both 0 where
    ignored), ``P`` none. Probabilities ``p``: ``a = 0``, ``b = ε / C``,
    ``P = (1 − ε) w ⊙ p``. ``"mean"`` divides by ``Σ_i w_{k_i}`` over the kept rows, or by
    the number of rows for probabilities.
    """
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    n = math.prod(batch_shape)
    device = target.device
    checking = not torch.compiler.is_compiling()  # value checks need the data on the host
    cw = None
    if class_weight is not None:
        if checking and not bool(torch.all(torch.isfinite(class_weight) & (class_weight >= 0))):
            raise ValueError("class_weight must be finite and non-negative")
        cw = class_weight.detach().to(acc)
    cw_total = float(C) if cw is None else cw.sum()
    if target.dtype == torch.bool:
        raise TypeError("target must hold class indices (integers) or probabilities, got bool")
    if target.is_floating_point() or target.is_complex():
        if tuple(target.shape) != (*batch_shape, C):
            if tuple(target.shape) == batch_shape:
                raise TypeError(
                    f"class-index target must have an integer dtype, got {target.dtype}; "
                    "a probability target must have shape (*x.shape[:-1], n_classes)"
                )
            raise ValueError(
                f"target must be class indices of shape {batch_shape} or probabilities of "
                f"shape {(*batch_shape, C)}, got shape {tuple(target.shape)}"
            )
        if target.is_complex():
            raise TypeError(f"target must be real, got {target.dtype}")
        if ignore_index is not None:
            raise ValueError(
                "ignore_index applies to class-index targets, not to probability targets"
            )
        if checking and n:
            xp, _ = namespace(target)
            tol = max(1e-6, 4.0 * C * torch.finfo(target.dtype).eps)
            check_probabilities(xp, target.detach(), "target", tol=tol)
        probs = target.detach().reshape(n, C).to(acc)  # (n, C)
        P = probs * (1.0 - eps) if cw is None else probs * ((1.0 - eps) * cw)
        b = torch.full((n,), eps / C, dtype=acc, device=device)
        ones = torch.ones(n, dtype=acc, device=device)
        return _Terms(
            target=torch.zeros(n, dtype=torch.int64, device=device),
            a=torch.zeros(n, dtype=acc, device=device),
            b=b,
            cw=cw,
            P=P,
            row_total=b * cw_total + P.sum(1),
            keep=ones,
            denom=torch.tensor(float(n), dtype=acc, device=device),
        )
    if tuple(target.shape) != batch_shape:
        raise ValueError(
            f"class-index target must have shape x.shape[:-1] = {batch_shape}, "
            f"got {tuple(target.shape)}"
        )
    index = target.reshape(n).to(torch.int64)  # (n,)
    if ignore_index is None:
        keep = torch.ones(n, dtype=acc, device=device)
    else:
        kept = index != ignore_index
        keep = kept.to(acc)
        index = torch.where(kept, index, 0)
    if checking and n and bool(torch.any((index < 0) | (index >= C))):
        bad = index[(index < 0) | (index >= C)][0]
        raise ValueError(
            f"target holds class index {int(bad)}, outside [0, {C}) for weight with {C} classes"
        )
    row_weight = keep if cw is None else cw[index] * keep  # (n,) w_{k_i}, 0 where ignored
    a = (1.0 - eps) * row_weight
    b = (eps / C) * keep
    return _Terms(
        target=index,
        a=a,
        b=b,
        cw=cw,
        P=None,
        row_total=a + b * cw_total,
        keep=keep,
        denom=row_weight.sum(),
    )
