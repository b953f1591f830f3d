"""Dataset loaders: scikit-learn's digits, ``.npz``, CSV, IDX (MNIST) files and image folders.

:func:`load_dataset` reads any of these into a :class:`Dataset` whose ``X`` has one row per
sample, ``(n_samples, n_features)``. Images become flattened rows scaled to ``[0, 1]``, with
their shape kept in ``image_shape``. Every fault of the data (a missing or malformed file, a
non-numeric or non-finite feature, a label count that disagrees) raises :class:`DataError`
with a one-line message naming the file and the fault.

Examples
--------
>>> from crossent.data import load_dataset
>>> ds = load_dataset("digits")
>>> ds.X.shape, ds.X.dtype, ds.image_shape
((1797, 64), dtype('float32'), (8, 8))
"""

from ._dataset import DataError, Dataset
from ._images import IMAGE_SUFFIXES
from ._load import load_dataset, source_kind

__all__ = ["IMAGE_SUFFIXES", "DataError", "Dataset", "load_dataset", "source_kind"]

# Report the public names as ``crossent.data.X`` (reprs, tracebacks, pickles), as before the split.
for _public in (DataError, Dataset, load_dataset):
    _public.__module__ = __name__
del _public
