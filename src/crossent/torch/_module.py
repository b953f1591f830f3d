"""``LinearCrossEntropyLoss``: :func:`crossent.torch.linear_cross_entropy` as an ``nn.Module``."""

from __future__ import annotations

import torch
from torch import Tensor

from crossent.torch._function import linear_cross_entropy

__all__ = ["LinearCrossEntropyLoss"]


class LinearCrossEntropyLoss(torch.nn.Module):
    """Holds the options of :func:`crossent.torch.linear_cross_entropy`; see it for the math.

    ``forward(x, weight, target, bias=None)`` returns
    ``linear_cross_entropy(x, weight, target, bias, **options)``. ``class_weight`` is a
    buffer (it moves with ``.to()``).

    Examples
    --------
    >>> import torch
    >>> from crossent.torch import LinearCrossEntropyLoss
    >>> loss_fn = LinearCrossEntropyLoss(label_smoothing=0.1)
    >>> x, w = torch.zeros(3, 4), torch.zeros(5, 4)
    >>> round(float(loss_fn(x, w, torch.tensor([0, 1, 2]))), 6)  # log 5
    1.609438
    """

    def __init__(
        self,
        *,
        class_weight: Tensor | None = None,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
        reduction: str = "mean",
        z_loss: float = 0.0,
        softcap: float | None = None,
        return_lse: bool = False,
    ) -> None:
        super().__init__()
        self.register_buffer("class_weight", class_weight)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.reduction = reduction
        self.z_loss = z_loss
        self.softcap = softcap
        self.return_lse = return_lse

    def forward(
        self, x: Tensor, weight: Tensor, target: Tensor, bias: Tensor | None = None
    ) -> Tensor | tuple[Tensor, Tensor]:
        return linear_cross_entropy(
            x,
            weight,
            target,
            bias,
            class_weight=self.class_weight,  # type: ignore[arg-type]  # a buffer
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
            reduction=self.reduction,
            z_loss=self.z_loss,
            softcap=self.softcap,
            return_lse=self.return_lse,
        )

    def extra_repr(self) -> str:
        return (
            f"ignore_index={self.ignore_index}, label_smoothing={self.label_smoothing}, "
            f"reduction={self.reduction!r}, z_loss={self.z_loss}, softcap={self.softcap}"
        )
