"""Text and JSON summaries of metrics, and the flat metrics table of the HTML report."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np


def plain(value: Any) -> Any:
    """numpy values → JSON-ready Python values (arrays become lists)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def dumps(document: dict[str, Any]) -> str:
    return json.dumps(plain(document), indent=2, ensure_ascii=False)


def report_table(metrics: dict[str, Any], prefix: str = "") -> dict[str, float | int | str]:
    """Scalar metrics for the report's table, named as in the text summary."""
    names = {
        "accuracy": "accuracy",
        "cross_entropy": "mean cross-entropy (nats)",
        "kl_onehot": "mean KL(one-hot ‖ q) (nats)",
        "prediction_entropy": "mean prediction entropy (nats)",
        "label_entropy": "label entropy H(p) (nats)",
        "marginal_cross_entropy": "H(p, q̄) (nats)",
        "marginal_kl": "KL(p ‖ q̄) (nats)",
    }
    table: dict[str, float | int | str] = {f"{prefix}samples": int(metrics["n_samples"])}
    for key, name in names.items():
        table[prefix + name] = float(metrics[key])
    return table


def _num(value: float) -> str:
    return f"{value:.4f}"


def cross_entropy_lines(metrics: dict[str, Any], what: str) -> list[str]:
    """The mean cross-entropy of ``what`` with its entropy / KL split, in nats."""
    m = metrics
    return [
        f"{what} cross-entropy (nats)",
        f"  mean cross-entropy        {_num(m['cross_entropy'])}"
        f"  = H(one-hot) {_num(m['onehot_entropy'])} + mean KL(one-hot ‖ q) {_num(m['kl_onehot'])}",
        f"  mean prediction entropy   {_num(m['prediction_entropy'])}"
        "  (uncertainty of the predicted distributions)",
        f"  label entropy H(p)        {_num(m['label_entropy'])}"
        "  (cross-entropy of always predicting the class frequencies)",
        f"  class marginals           H(p, q̄) {_num(m['marginal_cross_entropy'])}"
        f" = H(p) {_num(m['label_entropy'])} + KL(p ‖ q̄) {_num(m['marginal_kl'])}",
    ]


def per_class_lines(metrics: dict[str, Any], class_names: Sequence[str], what: str) -> list[str]:
    """A precision / recall / support table, one row per class."""
    width = max(5, *(len(name) for name in class_names))
    lines = [f"per class ({what})", f"  {'class':<{width}}  precision  recall  support"]
    for k, name in enumerate(class_names):
        lines.append(
            f"  {name:<{width}}  {metrics['precision'][k]:9.4f}  {metrics['recall'][k]:6.4f}"
            f"  {int(metrics['support'][k]):7d}"
        )
    return lines


def data_line(
    name: str,
    n_samples: int,
    n_features: int,
    image_shape: Any,
    n_classes: int,
    nnz: int | None = None,
) -> str:
    """The ``data`` line; ``nnz`` (stored values) marks sparse data with its density."""
    images = f", {'×'.join(map(str, image_shape))} images" if image_shape else ""
    if nnz is not None:
        images += f", sparse ({nnz / max(1, n_samples * n_features):.3%} non-zero)"
    return (
        f"data      {name}: {n_samples} samples × {n_features} features{images}, "
        f"{n_classes} classes"
    )
