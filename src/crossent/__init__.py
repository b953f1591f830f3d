"""crossent: softmax cross-entropy, from the textbook derivation to a fast classifier.

The public face of the package; see ``docs/derivation.md`` for where each equation of the
derivation lives.

:class:`SoftmaxClassifier` is imported on first use (PEP 562), so that ``import crossent``
and the command's ``--help`` do not import scikit-learn; the functions need only NumPy and
are imported at once (``softmax`` must be the function, not the submodule of that name).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from crossent._version import __version__
from crossent.info import cross_entropy, entropy, kl_divergence
from crossent.loss import softmax_cross_entropy, softmax_cross_entropy_with_grad
from crossent.softmax import log_softmax, logsumexp, softmax

if TYPE_CHECKING:  # what the lazy name is, for type checkers and IDEs
    from crossent.classifier import SoftmaxClassifier

__all__ = [
    "SoftmaxClassifier",
    "__version__",
    "cross_entropy",
    "entropy",
    "kl_divergence",
    "log_softmax",
    "logsumexp",
    "softmax",
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_grad",
]

# lazy public name -> the module that defines it
_LAZY = {"SoftmaxClassifier": "crossent.classifier"}


def __getattr__(name: str) -> Any:
    """Import a public name on first use and keep it (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'crossent' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
