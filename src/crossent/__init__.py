"""crossent: softmax cross-entropy, from the textbook derivation to a fast classifier.

The public face of the package; see ``docs/derivation.md`` for where each equation of the
derivation lives.
"""

from crossent._version import __version__
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
