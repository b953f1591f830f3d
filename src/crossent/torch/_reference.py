"""The plain reference of :func:`crossent.torch.linear_cross_entropy`: everything materialised.

Two oracles for the tests, kept forever (STYLE.md, "fused operator"):

* :func:`linear_cross_entropy_reference` composes the definition literally: the ``(n, C)``
  logits ``softcap(x Wᵀ + bias)``, then :func:`crossent.softmax_cross_entropy` (the loss
  module's own option math, differentiable by autograd on tensors), plus the z-loss.
* :func:`forward` and :func:`backward` are the back-end contract of
  :mod:`crossent.torch._chunked` computed on the whole ``(n, C)`` matrix at once, in
  float64: what every back end (chunked, Triton) must reproduce.
"""

from __future__ import annotations

import torch
from torch import Tensor

from crossent.loss import softmax_cross_entropy

__all__ = ["backward", "forward", "linear_cross_entropy_reference"]


def _logits(x: Tensor, weight: Tensor, bias: Tensor | None, softcap: float | None) -> Tensor:
    raw = torch.nn.functional.linear(x, weight, bias)  # (..., C) in the input dtype
    return raw if softcap is None else softcap * torch.tanh(raw / softcap)


def linear_cross_entropy_reference(
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
    """``softmax_cross_entropy(softcap(x Wᵀ + b), target, …) + z_loss · reduce(lse²)``, naively.

    Same arguments and result as :func:`crossent.torch.linear_cross_entropy`; the z-loss
    counts each non-ignored row once and is reduced like the loss (per row, summed, or
    divided by the loss's own ``"mean"`` denominator). Materialises the ``(n, C)`` logits.
    """
    logits = _logits(x, weight, bias, softcap)  # (..., C)
    loss = softmax_cross_entropy(
        logits,
        target,
        weight=class_weight,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        reduction=reduction,
    )
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    lse = torch.logsumexp(logits.to(acc), dim=-1)  # (...,)
    if z_loss == 0.0:
        return (loss, lse) if return_lse else loss
    keep = torch.ones_like(lse)
    if ignore_index is not None and not target.is_floating_point():
        keep = (target != ignore_index).to(acc)
    z_rows = z_loss * keep * lse.square()  # (...,)
    if reduction == "none":
        total = loss + z_rows.to(loss.dtype)
    elif reduction == "sum":
        total = loss + z_rows.sum().to(loss.dtype)
    else:
        if target.is_floating_point():
            denom = keep.sum()
        elif class_weight is None:
            denom = keep.sum()
        else:
            safe = torch.where(keep > 0, target, torch.zeros_like(target)).long()
            denom = (class_weight.to(acc)[safe] * keep).sum()
        nonzero = torch.where(denom > 0, denom, torch.ones_like(denom))  # no 0/0 in backward
        z_mean = torch.where(denom > 0, z_rows.sum() / nonzero, torch.zeros_like(denom))
        total = loss + z_mean.to(loss.dtype)
    return (total, lse) if return_lse else total


def forward(
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
    """The contract's ``(lse, dot)`` on the whole ``(n, C)`` matrix, in float64."""
    f64 = torch.float64
    z = _logits(x.to(f64), weight.to(f64), None if bias is None else bias.to(f64), softcap)
    mass = _mass(z, target, a, b, cw, P)  # (n, C) u
    return torch.logsumexp(z, dim=1), (mass * z).sum(1)


def backward(
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
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """The contract's ``(dx, dweight, dbias)`` on the whole ``(n, C)`` matrix, in float64."""
    f64 = torch.float64
    x64, w64 = x.to(f64), weight.to(f64)
    raw = torch.nn.functional.linear(x64, w64, None if bias is None else bias.to(f64))
    z = raw if softcap is None else softcap * torch.tanh(raw / softcap)
    mass = _mass(z, target, a, b, cw, P)  # (n, C) u
    grad = row_coef.to(f64)[:, None] * torch.exp(z - lse.to(f64)[:, None])
    grad = grad - go.to(f64)[:, None] * mass
    if softcap is not None:
        grad = grad * (1.0 - torch.tanh(raw / softcap).square())
    return (
        grad @ w64 if need_dx else None,
        grad.T @ x64 if need_dw else None,
        grad.sum(0) if need_db else None,
    )


def _mass(
    z: Tensor, target: Tensor, a: Tensor, b: Tensor, cw: Tensor | None, P: Tensor | None
) -> Tensor:
    """The dense target mass ``u_ij = a_i δ_{j k_i} + b_i cw_j + P_ij``, ``(n, C)`` float64."""
    f64 = torch.float64
    C = z.shape[1]
    onehot = torch.nn.functional.one_hot(target.long(), C).to(f64)
    cw64 = torch.ones(C, dtype=f64, device=z.device) if cw is None else cw.to(f64)
    mass = a.to(f64)[:, None] * onehot + b.to(f64)[:, None] * cw64[None, :]
    return mass if P is None else mass + P.to(f64)
