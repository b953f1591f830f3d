"""The trained model as the command stores it: preprocessing, arrays and metadata.

A model file (``model.safetensors``, written with :func:`crossent.model_io.save_model`)
holds the arrays ``coef`` ``(C, d)`` and ``intercept`` ``(C,)``, plus ``mean`` and
``scale`` ``(d,)`` when the features were standardised, and the metadata keys ``kind``,
``classes`` (a list of ints or of strings), ``n_features``, ``image_shape``,
``feature_names``, ``label_column``, ``index_base``, ``preprocessing``, ``l2``,
``solver``, ``fit_intercept`` and ``training``. ``index_base`` is the feature index an
svmlight training file gave column 0 (0 or 1; null for other data): predict and evaluate
read svmlight files the same way.

:func:`load_classifier` checks every one of them, JSON type and value, and the arrays'
dtypes and shapes against each other; a fault is one :class:`ModelFileError` line naming
the file and the field. ``kind``, ``classes``, ``n_features`` and ``preprocessing`` are
required; the others may be absent (``image_shape`` and ``feature_names`` may be null).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from crossent._stats import AllReduce, feature_scales
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
    source: str = field(default="the standardisation", compare=False)  # for messages

    @classmethod
    def fit(
        cls, X: np.ndarray, standardize: bool, allreduce: AllReduce | None = None
    ) -> Preprocessing:
        """Feature means and standard deviations of ``X`` (a constant feature gets scale 1);
        with ``allreduce`` (``--distributed``), of all ranks' rows, ``X`` being this rank's."""
        if not standardize:
            return cls()
        if sp.issparse(X):
            raise ValueError("standardising sparse data would centre it, making it dense")
        mean, scale, _ = feature_scales(X, allreduce=allreduce)
        return cls(mean, np.where(scale > 0, scale, 1.0))

    @property
    def standardize(self) -> bool:
        return self.mean is not None

    def apply(self, X: np.ndarray) -> np.ndarray:
        """The classifier's input: ``X`` itself, or ``(X − mean) / scale`` in X's dtype.

        float32 stays float32 (DESIGN.md); other dtypes, and float32 data whose result
        float32 cannot hold, are computed in float64.

        Raises
        ------
        ValueError
            If finite ``X`` standardises to values beyond the float64 range (a ``scale``
            too small for the data); the message names :attr:`source`.
        """
        if self.mean is None or self.scale is None:
            return X
        if sp.issparse(X):
            raise ValueError(
                f"{self.source} centre the features, which would make sparse data dense; "
                "this model takes dense data (CSV, an .npz with X)"
            )
        dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.dtype(np.float64)
        out = self._standardise(X, dtype)
        if dtype == np.float32 and not np.isfinite(out).all():
            out = self._standardise(X, np.dtype(np.float64))
        if not np.isfinite(out).all() and np.isfinite(X).all():
            raise ValueError(
                f"{self.source}: standardising the data gives values beyond the float range "
                "('scale' too small for these features)"
            )
        return out

    def _standardise(self, X: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
        assert self.mean is not None and self.scale is not None
        with np.errstate(all="ignore"):  # judged by the finiteness of the result
            mean, scale = self.mean.astype(dtype), self.scale.astype(dtype)  # (d,), (d,)
            return (X.astype(dtype, copy=False) - mean) / scale  # (n, d)

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
        """``log_softmax`` of the scores, ``(n, C)``; refuses scores beyond the float range."""
        return self._finite(self.classifier.predict_log_proba, X)

    def proba(self, X: np.ndarray) -> np.ndarray:
        """``softmax`` of the scores, ``(n, C)``; refuses scores beyond the float range."""
        return self._finite(self.classifier.predict_proba, X)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The class of highest score for each row (ties: the first), as
        ``SoftmaxClassifier.predict``; refuses scores beyond the float range."""
        scores = self._finite(self.classifier.decision_function, X)  # (n, C), or (n,) if C = 2
        index = (scores > 0).astype(np.intp) if scores.ndim == 1 else np.argmax(scores, axis=1)
        return self.classes[index]

    def _finite(self, method: Any, X: np.ndarray) -> np.ndarray:
        """``method`` applied to the standardised ``X``; an overflow is one clear error."""
        inputs = self.preprocessing.apply(X)
        overflow = ModelFileError(
            f"{self.path}: the scores X·coefᵀ + intercept overflow on these data (array "
            "'coef' too large for the features' scale)"
        )
        try:
            with np.errstate(over="ignore", invalid="ignore"):  # judged by the result below
                out: np.ndarray = method(inputs)
        except ValueError as exc:  # the classifier refuses scores that overflow
            if "overflow" in str(exc):
                raise overflow from None
            raise ModelFileError(f"{self.path}: {exc}") from None
        if not np.isfinite(out).all():
            raise overflow
        return out

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


def _show(value: Any) -> str:
    """A short repr of a metadata value for an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_text(value: Any) -> bool:
    """A str that can be printed and written: no lone surrogates (JSON allows them)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _field_error(path: str, key: str, expected: str, value: Any) -> ModelFileError:
    return ModelFileError(f"{path}: metadata {key!r} must be {expected}, got {_show(value)}")


def check_classes(path: str, value: Any, n_classes: int) -> np.ndarray:
    """The metadata ``classes`` as the sorted array ``classes_``: ``n_classes`` ≥ 2 distinct
    integers (int64) or strings, in increasing order."""
    expected = f"a list of the {n_classes} classes, integers or strings, sorted and distinct"
    if not isinstance(value, list) or len(value) != n_classes or n_classes < 2:
        raise _field_error(path, "classes", expected, value)
    if all(_is_int(c) for c in value):
        if not all(-(2**63) <= c < 2**63 for c in value):
            raise _field_error(path, "classes", "integers within int64", value)
        classes = np.array(value, dtype=np.int64)
    elif all(_is_text(c) for c in value):
        classes = np.array(value, dtype=str)
    else:
        raise _field_error(path, "classes", "all integers or all (UTF-8) strings", value)
    if not np.all(classes[1:] > classes[:-1]):
        raise _field_error(path, "classes", "sorted and distinct", value)
    return classes


def check_weights(
    path: str, arrays: dict[str, np.ndarray], n_features: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The arrays ``coef`` ``(C, d)`` (C ≥ 2, d ≥ 1) and ``intercept`` ``(C,)``, both
    float16/32/64 (finiteness is :func:`crossent.model_io.load_model`'s check); ``d`` must
    be ``n_features`` when given."""
    coef, intercept = arrays.get("coef"), arrays.get("intercept")
    for key, arr in (("coef", coef), ("intercept", intercept)):
        if arr is None:
            raise ModelFileError(f"{path}: lacks the array {key!r}")
        if arr.dtype.kind != "f":
            raise ModelFileError(
                f"{path}: array {key!r} has dtype {arr.dtype.name}, expected float16, "
                "float32 or float64"
            )
    assert coef is not None and intercept is not None
    if coef.ndim != 2 or coef.shape[0] < 2 or coef.shape[1] < 1:
        raise ModelFileError(
            f"{path}: array 'coef' has shape {coef.shape}, expected (n_classes ≥ 2, n_features ≥ 1)"
        )
    if intercept.shape != coef.shape[:1]:
        raise ModelFileError(
            f"{path}: array 'intercept' has shape {intercept.shape}, 'coef' {coef.shape} "
            f"needs ({coef.shape[0]},)"
        )
    if n_features is not None and coef.shape[1] != n_features:
        raise ModelFileError(
            f"{path}: metadata 'n_features' is {n_features}, array 'coef' has "
            f"{coef.shape[1]} features"
        )
    return coef, intercept


def _check_n_features(path: str, meta: dict[str, Any]) -> int:
    value: Any = meta.get("n_features")
    if not _is_int(value) or value < 1:
        raise _field_error(path, "n_features", "a positive integer", value)
    return int(value)


def _check_image_shape(path: str, meta: dict[str, Any], n_features: int) -> None:
    value = meta.get("image_shape")
    if value is None:
        return
    expected = "null, [height, width] or [height, width, 3] (positive integers)"
    if (
        not isinstance(value, list)
        or len(value) not in (2, 3)
        or not all(_is_int(s) and s > 0 for s in value)
        or (len(value) == 3 and value[2] != 3)
    ):
        raise _field_error(path, "image_shape", expected, value)
    if math.prod(value) != n_features:
        raise _field_error(path, "image_shape", f"{n_features} pixel values in all", value)


def _check_feature_names(path: str, meta: dict[str, Any], n_features: int) -> None:
    value = meta.get("feature_names")
    if value is None:
        return
    if (
        not isinstance(value, list)
        or len(value) != n_features
        or not all(_is_text(v) for v in value)
    ):
        raise _field_error(
            path, "feature_names", f"null or a list of {n_features} (UTF-8) strings", value
        )


def _check_index_base(path: str, meta: dict[str, Any]) -> None:
    value = meta.get("index_base")
    if value is not None and (not _is_int(value) or value not in (0, 1)):
        raise _field_error(path, "index_base", "null, 0 or 1", value)


def _check_label_column(path: str, meta: dict[str, Any]) -> None:
    value = meta.get("label_column")
    if value is not None and not _is_text(value):
        raise _field_error(path, "label_column", "null or a column name", value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_training_record(path: str, meta: dict[str, Any]) -> None:
    """The informational fields: checked when present."""
    if "l2" in meta and not (_is_number(meta["l2"]) and meta["l2"] >= 0):
        raise _field_error(path, "l2", "a finite number ≥ 0", meta["l2"])
    if "solver" in meta and not (_is_text(meta["solver"]) and meta["solver"]):
        raise _field_error(path, "solver", "a solver's name", meta["solver"])
    if "fit_intercept" in meta and not isinstance(meta["fit_intercept"], bool):
        raise _field_error(path, "fit_intercept", "true or false", meta["fit_intercept"])
    if "training" in meta and not isinstance(meta["training"], dict):
        raise _field_error(path, "training", "a JSON object", meta["training"])


# objective key -> (what it must be, test); see crossent._cli._checkpoint.objective_options
_OBJECTIVE_FIELDS: dict[str, tuple[str, Any]] = {
    "data": ("a string", _is_text),
    "data_sha256": ("64 hexadecimal digits", lambda v: _is_text(v) and _is_sha256(v)),
    "n_samples": ("a positive integer", lambda v: _is_int(v) and v > 0),
    "n_features": ("a positive integer", lambda v: _is_int(v) and v > 0),
    "l2": ("a finite number ≥ 0", lambda v: _is_number(v) and v >= 0),
    "test_size": ("a number from 0 to below 1", lambda v: _is_number(v) and 0 <= v < 1),
    "seed": ("an integer", _is_int),
    "standardize": ("true or false", lambda v: isinstance(v, bool)),
}


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def check_checkpoint_file(
    path: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]
) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, list[float]]:
    """Check a training checkpoint's metadata and arrays (as :func:`load_classifier` checks
    a model); return ``iteration``, ``classes``, ``coef``, ``intercept``, ``loss_curve``.

    The metadata written by ``crossent._cli._checkpoint.save_checkpoint``: ``kind``,
    ``checkpoint`` (true), ``iteration`` (an integer ≥ 1), ``classes``, ``solver`` and
    ``objective`` (``data``, ``data_sha256``, ``n_samples``, ``n_features``, ``l2``,
    ``test_size``, ``seed``, ``standardize``); the arrays ``coef`` ``(C, d)``,
    ``intercept`` ``(C,)`` and ``loss_curve`` ``(iteration,)``, floating point.

    Raises
    ------
    ModelFileError
        Naming the file and the field or array at fault.
    """
    if meta.get("kind") != CHECKPOINT_KIND or meta.get("checkpoint") is not True:
        raise ModelFileError(f"{path}: not a crossent training checkpoint")
    iteration: Any = meta.get("iteration")
    if not _is_int(iteration) or iteration < 1:
        raise _field_error(path, "iteration", "an integer ≥ 1", iteration)
    if not (_is_text(meta.get("solver")) and meta.get("solver")):
        raise _field_error(path, "solver", "a solver's name", meta.get("solver"))
    objective = meta.get("objective")
    if not isinstance(objective, dict):
        raise _field_error(path, "objective", "a JSON object", objective)
    for key, (expected, test) in _OBJECTIVE_FIELDS.items():
        if not test(objective.get(key)):
            raise _field_error(path, f"objective.{key}", expected, objective.get(key))
    coef, intercept = check_weights(path, arrays, objective["n_features"])
    classes = check_classes(path, meta.get("classes"), coef.shape[0])
    curve = arrays.get("loss_curve")
    if curve is None or curve.dtype.kind != "f" or curve.shape != (iteration,):
        got = "none" if curve is None else f"{curve.dtype.name} {curve.shape}"
        raise ModelFileError(
            f"{path}: needs a float array 'loss_curve' ({iteration},), one value per "
            f"iteration, has {got}"
        )
    return iteration, classes, coef, intercept, curve.astype(np.float64).tolist()


def _check_preprocessing(
    path: str, meta: dict[str, Any], arrays: dict[str, np.ndarray], n_features: int
) -> Preprocessing:
    value = meta.get("preprocessing")
    if not isinstance(value, dict) or not isinstance(value.get("standardize"), bool):
        raise _field_error(path, "preprocessing", '{"standardize": true or false}', value)
    mean, scale = arrays.get("mean"), arrays.get("scale")
    if not value["standardize"]:
        if mean is not None or scale is not None:
            raise ModelFileError(
                f"{path}: holds 'mean' and 'scale', but metadata 'preprocessing' says the "
                "features are not standardized"
            )
        return Preprocessing()
    for key, arr in (("mean", mean), ("scale", scale)):
        if arr is None or arr.dtype.kind != "f" or arr.shape != (n_features,):
            got = "none" if arr is None else f"{arr.dtype.name} {arr.shape}"
            raise ModelFileError(
                f"{path}: standardized, so needs a float array {key!r} ({n_features},), has {got}"
            )
    assert mean is not None and scale is not None
    if not np.all(scale > 0):
        raise ModelFileError(f"{path}: corrupted: array 'scale' must be positive")
    source = f"{path}: arrays 'mean' and 'scale'"
    return Preprocessing(mean.astype(np.float64), scale.astype(np.float64), source)


def load_classifier(path: str | os.PathLike[str]) -> LoadedModel:
    """Read and check a model file written by ``crossent train``.

    Raises
    ------
    ModelFileError
        If the file is not a crossent model (see :func:`crossent.model_io.load_model`), is a
        training checkpoint, a metadata field has the wrong JSON type or value, or its
        arrays and metadata disagree. The message names the file and the field or array.
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
        raise ModelFileError(
            f"{name}: not a crossent classifier (metadata 'kind' is {_show(kind)}, "
            f"expected {MODEL_KIND!r})"
        )
    n_features = _check_n_features(name, meta)
    coef, intercept = check_weights(name, arrays, n_features)
    classes = check_classes(name, meta.get("classes"), coef.shape[0])
    _check_image_shape(name, meta, n_features)
    _check_feature_names(name, meta, n_features)
    _check_label_column(name, meta)
    _check_index_base(name, meta)
    _check_training_record(name, meta)
    preprocessing = _check_preprocessing(name, meta, arrays, n_features)
    clf = rebuild_classifier(classes, coef, intercept)
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
