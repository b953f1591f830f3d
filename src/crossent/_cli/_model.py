"""The trained model as the command stores it: preprocessing, arrays and metadata.

A model file (``model.safetensors``, written with :func:`crossent.model_io.save_model`)
holds the arrays ``coef`` ``(C, d)`` and ``intercept`` ``(C,)``, plus ``mean`` and
``scale`` ``(d,)`` when the features were standardised, and the metadata keys ``kind``,
``classes`` (a list of ints or of strings), ``n_features``, ``image_shape``,
``feature_names``, ``preprocessing``, ``l2``, ``solver`` and ``training``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from crossent._stats import feature_moments
from crossent.classifier import SoftmaxClassifier
from crossent.data import DataError, Dataset
from crossent.model_io import ModelFileError, load_model

MODEL_KIND = "crossent-softmax-classifier"
CHECKPOINT_KIND = "crossent-checkpoint"


@dataclass(frozen=True)
class Preprocessing:
    """Optional standardisation ``(x − mean) / scale``, fitted on the training rows."""

    mean: np.ndarray | None = None  # (d,) float64
    scale: np.ndarray | None = None  # (d,) float64, positive

    @classmethod
    def fit(cls, X: np.ndarray, standardize: bool) -> Preprocessing:
        """Feature means and standard deviations of ``X`` (a constant feature gets scale 1)."""
        if not standardize:
            return cls()
        mean, spread, _ = feature_moments(X)
        scale = np.sqrt(spread)
        return cls(mean, np.where(scale > 0, scale, 1.0))

    @property
    def standardize(self) -> bool:
        return self.mean is not None

    def apply(self, X: np.ndarray) -> np.ndarray:
        """The classifier's input: ``X`` itself, or standardised in float64."""
        if self.mean is None or self.scale is None:
            return X
        return (X.astype(np.float64) - self.mean) / self.scale

    def arrays(self) -> dict[str, np.ndarray]:
        if self.mean is None or self.scale is None:
            return {}
        return {"mean": self.mean, "scale": self.scale}

    def raw_coef(self, coef: np.ndarray) -> np.ndarray:
        """The weights acting on the unstandardised features, ``W / scale`` (for templates)."""
        return coef if self.scale is None else coef / self.scale


def rebuild_classifier(
    classes: np.ndarray, coef: np.ndarray, intercept: np.ndarray
) -> SoftmaxClassifier:
    """A fitted :class:`SoftmaxClassifier` from stored arrays, predicting exactly as the
    classifier that was trained (same attributes, same code path)."""
    clf = SoftmaxClassifier()
    clf.classes_ = classes
    clf.coef_ = np.ascontiguousarray(coef, dtype=np.float64)
    clf.intercept_ = np.asarray(intercept, dtype=np.float64)
    clf.n_features_in_ = coef.shape[1]
    return clf


@dataclass(frozen=True)
class LoadedModel:
    """A model file, checked and ready to predict."""

    path: str
    classifier: SoftmaxClassifier
    preprocessing: Preprocessing
    metadata: dict[str, Any]

    @property
    def classes(self) -> np.ndarray:
        return np.asarray(self.classifier.classes_)

    @property
    def n_features(self) -> int:
        return int(self.classifier.coef_.shape[1])

    @property
    def image_shape(self) -> tuple[int, ...] | None:
        shape = self.metadata.get("image_shape")
        return None if shape is None else tuple(int(s) for s in shape)

    def log_proba(self, X: np.ndarray) -> np.ndarray:
        return self.classifier.predict_log_proba(self.preprocessing.apply(X))

    def proba(self, X: np.ndarray) -> np.ndarray:
        return self.classifier.predict_proba(self.preprocessing.apply(X))

    def check_data(self, data: Dataset) -> None:
        """Refuse data whose features do not match the model's."""
        if data.n_features != self.n_features:
            hint = ""
            if data.feature_names is not None and data.n_features == self.n_features + 1:
                hint = " (is the label column among them? pass --label-column)"
            raise DataError(
                f"{data.name}: {data.n_features} features, but the model {self.path} "
                f"expects {self.n_features}{hint}"
            )
        expected = self.metadata.get("feature_names")
        if data.feature_names is not None and expected is not None:
            for k, (got, want) in enumerate(zip(data.feature_names, expected, strict=True)):
                if got != want:
                    raise DataError(
                        f"{data.name}: feature column {k + 1} is {got!r}, "
                        f"the model {self.path} expects {want!r} there"
                    )


def _classes(path: str, meta: dict[str, Any], n_classes: int) -> np.ndarray:
    classes = meta.get("classes")
    if not isinstance(classes, list) or len(classes) != n_classes or n_classes < 2:
        raise ModelFileError(f"{path}: metadata 'classes' does not list the {n_classes} classes")
    if all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        return np.array(classes, dtype=np.int64)
    if all(isinstance(c, str) for c in classes):
        return np.array(classes, dtype=str)
    raise ModelFileError(f"{path}: metadata 'classes' must be all integers or all strings")


def load_classifier(path: str | os.PathLike[str]) -> LoadedModel:
    """Read and check a model file written by ``crossent train``.

    Raises
    ------
    ModelFileError
        If the file is not a crossent model (see :func:`crossent.model_io.load_model`), is a
        training checkpoint, or its arrays and metadata disagree.
    """
    name = os.fspath(path)
    arrays, meta = load_model(name)
    kind = meta.get("kind")
    if kind == CHECKPOINT_KIND:
        raise ModelFileError(
            f"{name}: is a training checkpoint, not a model; finish training with "
            "crossent train ... --resume"
        )
    if kind != MODEL_KIND:
        raise ModelFileError(f"{name}: not a crossent classifier (kind {kind!r})")
    coef, intercept = arrays.get("coef"), arrays.get("intercept")
    if coef is None or intercept is None or coef.ndim != 2 or intercept.shape != coef.shape[:1]:
        raise ModelFileError(f"{name}: needs arrays 'coef' (C, d) and 'intercept' (C,)")
    n_classes, n_features = coef.shape
    if meta.get("n_features") != n_features:
        raise ModelFileError(
            f"{name}: metadata says {meta.get('n_features')!r} features, 'coef' has {n_features}"
        )
    if not (np.all(np.isfinite(coef)) and np.all(np.isfinite(intercept))):
        raise ModelFileError(f"{name}: corrupted: the weights hold NaN or inf")
    preprocessing = Preprocessing()
    if (meta.get("preprocessing") or {}).get("standardize"):
        mean, scale = arrays.get("mean"), arrays.get("scale")
        if (
            mean is None
            or scale is None
            or mean.shape != (n_features,)
            or scale.shape != mean.shape
        ):
            raise ModelFileError(
                f"{name}: standardised, but lacks 'mean' and 'scale' ({n_features},)"
            )
        if not (np.all(np.isfinite(mean)) and np.all(scale > 0) and np.all(np.isfinite(scale))):
            raise ModelFileError(f"{name}: corrupted: bad standardisation 'mean' or 'scale'")
        preprocessing = Preprocessing(mean.astype(np.float64), scale.astype(np.float64))
    clf = rebuild_classifier(_classes(name, meta, n_classes), coef, intercept)
    return LoadedModel(name, clf, preprocessing, meta)


def label_indices(data: Dataset, classes: np.ndarray, where: str) -> np.ndarray:
    """Positions of ``data.y`` in the sorted ``classes``; refuse labels not among them."""
    assert data.y is not None
    known = np.isin(data.y, classes) if data.y.dtype.kind == classes.dtype.kind else None
    if known is None or not known.all():
        unknown = np.unique(data.y if known is None else data.y[~known])
        shown = ", ".join(repr(u.item()) for u in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        names = ", ".join(repr(c.item()) for c in classes[:10])
        names += ", …" if len(classes) > 10 else ""
        raise DataError(
            f"{data.name}: label(s) {shown}{more} are not among the classes of {where} ({names})"
        )
    return np.searchsorted(classes, data.y)
