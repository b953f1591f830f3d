"""crossent: softmax cross-entropy, from the textbook derivation to a fast classifier.

The public face of the package; see ``docs/derivation.md`` for where each equation of the
derivation lives.

The names are imported on first use (PEP 562), so that ``import crossent`` and the
command's ``--help`` stay fast: :class:`SoftmaxClassifier` needs scikit-learn, which is
imported only when the classifier is asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from crossent._version import __version__

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from crossent.classifier import SoftmaxClassifier
    from crossent.info import cross_entropy, entropy, kl_divergence
    from crossent.loss import softmax_cross_entropy, softmax_cross_entropy_with_grad
    from crossent.softmax import log_softmax, logsumexp, softmax

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

# public name -> the module that defines it
_LAZY = {
    "SoftmaxClassifier": "crossent.classifier",
    "cross_entropy": "crossent.info",
    "entropy": "crossent.info",
    "kl_divergence": "crossent.info",
    "softmax_cross_entropy": "crossent.loss",
    "softmax_cross_entropy_with_grad": "crossent.loss",
    "log_softmax": "crossent.softmax",
    "logsumexp": "crossent.softmax",
    "softmax": "crossent.softmax",
}


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
