"""Which back end runs :func:`crossent.torch.linear_cross_entropy` for given tensors.

CUDA tensors with Triton importable run ``crossent.torch._triton`` (``triton_forward``,
``triton_backward``: the same contract as :mod:`crossent.torch._chunked`); everything else,
and CUDA without Triton, runs the row-chunked PyTorch back end. The Triton module is
imported on first use, never by ``import crossent.torch``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import torch

from crossent.torch import _chunked

__all__ = ["backend_for", "uses_chunked"]

_TRITON: dict[str, Any] = {}  # "module" -> the imported module, or None when unavailable


def _triton_module() -> Any:
    if "module" not in _TRITON:
        try:
            _TRITON["module"] = importlib.import_module("crossent.torch._triton")
        except ImportError:
            _TRITON["module"] = None
    return _TRITON["module"]


def uses_chunked(x: torch.Tensor) -> bool:
    """Whether ``x`` is served by the chunked back end (CPU, or CUDA without Triton)."""
    return not (x.is_cuda and _triton_module() is not None)


def backend_for(x: torch.Tensor) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """``(forward, backward)`` of the contract for tensors on ``x``'s device."""
    if uses_chunked(x):
        return _chunked.forward, _chunked.backward
    module = _triton_module()
    return module.triton_forward, module.triton_backward
