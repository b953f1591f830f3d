"""PyTorch back end of crossent: the fused linear layer + softmax cross-entropy.

Importing this module imports PyTorch (``import crossent`` alone does not).

* :func:`linear_cross_entropy` — ``cross_entropy(softcap(x Wᵀ + b), target) + z-loss``
  without the ``(n, C)`` scores, with gradients for ``x``, ``W`` and ``b``;
* :class:`LinearCrossEntropyLoss` — the same as an ``nn.Module``.

See ``docs/torch.md``.
"""

from __future__ import annotations

from crossent.torch._function import linear_cross_entropy
from crossent.torch._module import LinearCrossEntropyLoss
from crossent.torch._reference import linear_cross_entropy_reference

__all__ = ["LinearCrossEntropyLoss", "linear_cross_entropy", "linear_cross_entropy_reference"]
