"""Self-contained HTML report of a training or evaluation run.

The report is one UTF-8 HTML file: every plot is a PNG embedded as a ``data:`` URI and the
only style is an inline ``<style>`` block, so the file opens offline and can be mailed or
archived as is. Plots are drawn with matplotlib's Agg canvas directly (never ``pyplot``),
imported lazily, so importing crossent never changes a user's matplotlib backend.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crossent._atomic import write_text_atomic

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["figure_png", "write_report"]

MAX_TEMPLATES = 100  # class templates drawn at most
MAX_CELL_TEXT = 30  # counts are written in confusion cells up to this many classes
MAX_TICK_LABELS = 40  # class names on the confusion axes are thinned above this
TOP_FEATURES = 10  # features listed per class in the top-weighted table

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.meta, .note { color: #666; font-size: 0.9em; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f3f3f3; }
img { max-width: 100%; height: auto; display: block; }
"""


def figure_png(fig: Figure, *, dpi: int = 100) -> bytes:
    r"""Render a matplotlib figure to PNG bytes with the Agg canvas (no ``pyplot``).

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure to render.
    dpi : int, default 100
        Resolution; the image is ``figsize * dpi`` pixels.

    Returns
    -------
    bytes
        The PNG file.

    Examples
    --------
    >>> from matplotlib.figure import Figure
    >>> figure_png(Figure(figsize=(2, 1)), dpi=50)[:8]
    b'\x89PNG\r\n\x1a\n'
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_figure(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _short(name: object, length: int) -> str:
    text = str(name)
    return text if len(text) <= length else text[: length - 1] + "…"


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _plot_loss(loss: np.ndarray, resumed_at: int | None = None) -> Figure:
    fig = _new_figure(8, 3.6)
    ax = fig.add_subplot()
    marker = "." if loss.size < 50 else ""
    ax.plot(np.arange(1, loss.size + 1), loss, color="tab:blue", linewidth=2, marker=marker)
    if resumed_at is not None:  # the checkpoint's last iteration: the rest is the new run
        label = f"resumed after iteration {resumed_at}"
        ax.axvline(resumed_at, color="tab:red", linestyle="--", linewidth=1.5, label=label)
        ax.legend(loc="upper right")
    finite = loss[np.isfinite(loss)]
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 100:
        ax.set_yscale("log")
    ax.set(xlabel="iteration", ylabel="objective", title="Objective per iteration")
    ax.grid(True, alpha=0.3)
    return fig


def _plot_confusion(confusion: np.ndarray, class_names: Sequence[str]) -> Figure:
    n_classes = confusion.shape[0]
    support = confusion.sum(axis=1, keepdims=True)
    fraction = confusion / np.maximum(support, 1)  # (C, C) row-normalised: recall on the diagonal
    side = float(np.clip(2.5 + 0.45 * n_classes, 5.0, 9.5))  # at most the page's width
    fig = _new_figure(side + 1.3, side)
    ax = fig.add_subplot()
    image = ax.imshow(fraction, cmap="viridis", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of the true class")
    step = max(1, math.ceil(n_classes / MAX_TICK_LABELS))
    ticks = np.arange(0, n_classes, step)
    labels = [_short(class_names[i], 24) for i in ticks]
    ax.set_xticks(ticks, labels, rotation=90, parse_math=False)
    ax.set_yticks(ticks, labels, parse_math=False)
    ax.set(xlabel="predicted class", ylabel="true class", title="Confusion matrix (counts)")
    if n_classes <= MAX_CELL_TEXT:
        size = float(np.clip(29 * (side - 2.5) / n_classes, 6, 11))  # 0.4 of a cell, in pt
        for (i, j), count in np.ndenumerate(confusion):
            colour = "black" if fraction[i, j] > 0.6 else "white"
            ax.text(j, i, str(count), ha="center", va="center", color=colour, fontsize=size)
    return fig


def _plot_templates(
    coef: np.ndarray, image_shape: tuple[int, ...], class_names: Sequence[str]
) -> Figure:
    from matplotlib.figure import Figure

    n_shown = min(coef.shape[0], MAX_TEMPLATES)
    n_cols = min(n_shown, 10)
    n_rows = math.ceil(n_shown / n_cols)
    scale = 1.0 / max(image_shape[:2])  # inches per pixel: the longer side is 1 inch
    tile_w, tile_h = image_shape[1] * scale, image_shape[0] * scale
    cell_w, cell_h = max(tile_w, 0.95) + 0.15, tile_h + 0.3  # room for gaps and titles
    fig = Figure(figsize=(n_cols * cell_w, n_rows * cell_h))
    # One axes in inch coordinates holds every tile: 100 separate axes would take seconds.
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    for k in range(n_shown):
        left = (k % n_cols) * cell_w + (cell_w - tile_w) / 2
        top = (k // n_cols) * cell_h + 0.25
        extent = (left, left + tile_w, top + tile_h, top)
        row = coef[k].astype(np.float64)
        if len(image_shape) == 3:  # RGB: stretch each row to [0, 1]
            span = row.max() - row.min()
            pixels = ((row - row.min()) / (span if span > 0 else 1.0)).reshape(image_shape)
            ax.imshow(pixels, extent=extent, interpolation="nearest")
        else:  # diverging colormap centred at 0, each template on its own scale
            bound = float(np.abs(row).max()) or 1.0
            ax.imshow(row.reshape(image_shape), cmap="RdBu_r", vmin=-bound, vmax=bound,
                      extent=extent, interpolation="nearest")  # fmt: skip
        ax.text(left + tile_w / 2, top - 0.04, _short(class_names[k], 14), fontsize=8,
                ha="center", va="bottom", parse_math=False)  # fmt: skip
    ax.set(xlim=(0, n_cols * cell_w), ylim=(n_rows * cell_h, 0), aspect="auto")
    ax.set_axis_off()
    return fig


def _plot_entropy(entropy: np.ndarray, n_classes: int) -> Figure:
    max_entropy = math.log(n_classes)
    fig = _new_figure(8, 3.6)
    ax = fig.add_subplot()
    upper = max(max_entropy, float(entropy.max(initial=0.0))) or 1.0
    ax.hist(entropy, bins=40, range=(0.0, upper), color="tab:orange", edgecolor="white")
    label = f"maximum, log C = {max_entropy:.3g} nats"
    ax.axvline(max_entropy, color="tab:red", linestyle="--", linewidth=2, label=label)
    ax.legend(loc="upper center")
    ax.set(xlabel="entropy of the predicted distribution (nats)", ylabel="samples",
           title="Prediction entropy")  # fmt: skip
    return fig


def _format(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    return str(value)


def _table(table_id: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(name))}</th>" for name in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_format(cell))}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _image_section(image_id: str, heading: str, alt: str, fig: Figure, note: str = "") -> str:
    data = base64.b64encode(figure_png(fig)).decode("ascii")
    note_html = f'<p class="note">{html.escape(note)}</p>' if note else ""
    return (
        f"<h2>{html.escape(heading)}</h2>{note_html}\n"
        f'<img id="{image_id}" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
    )


def _top_features(
    coef: np.ndarray,
    class_names: Sequence[str],
    feature_names: Sequence[str] | None,
    first_number: int,
) -> list[list[str]]:
    """One row per class (the first :data:`MAX_TEMPLATES`): the class, then its
    :data:`TOP_FEATURES` largest weights as ``name (+w)``, largest first."""
    k = min(TOP_FEATURES, coef.shape[1])
    rows = []
    for c in range(min(coef.shape[0], MAX_TEMPLATES)):
        weights = coef[c].astype(np.float64)  # (d,)
        top = np.argpartition(-weights, k - 1)[:k]  # (k,) unordered
        top = top[np.lexsort((top, -weights[top]))]  # largest first, ties by index
        names = [
            feature_names[j] if feature_names is not None else f"feature {j + first_number}"
            for j in top.tolist()
        ]
        pairs = zip(names, top.tolist(), strict=True)
        cells = [f"{_short(name, 40)} ({weights[j]:+.4g})" for name, j in pairs]
        rows.append([class_names[c], *cells])
    return rows


def _check_inputs(
    class_names: Sequence[str],
    confusion: np.ndarray,
    per_class: dict[str, np.ndarray] | None,
    coef: np.ndarray | None,
    image_shape: tuple[int, ...] | None,
    loss: np.ndarray | None,
    entropy: np.ndarray | None,
    resumed_at: int | None = None,
) -> None:
    n_classes = len(class_names)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion must be a square (C, C) matrix, got shape {confusion.shape}")
    if confusion.shape[0] != n_classes or n_classes == 0:
        raise ValueError(f"confusion is {confusion.shape} but class_names has {n_classes} names")
    if not (np.all(np.isfinite(confusion)) and np.all(confusion >= 0)):
        raise ValueError("confusion must hold finite, non-negative counts")
    if np.any(confusion != np.round(confusion)):
        raise ValueError("confusion must hold whole counts")
    for name, values in (per_class or {}).items():
        if np.shape(values) != (n_classes,):
            raise ValueError(f"per_class[{name!r}] must have shape ({n_classes},)")
    if image_shape is not None and coef is None:
        raise ValueError("image_shape was given without coef")
    if coef is not None:
        if coef.ndim != 2 or coef.shape[0] != n_classes:
            raise ValueError(f"coef must have shape ({n_classes}, d), got {coef.shape}")
        if image_shape is not None:
            if not (len(image_shape) == 2 or (len(image_shape) == 3 and image_shape[2] == 3)):
                raise ValueError(f"image_shape must be (h, w) or (h, w, 3), got {image_shape}")
            if math.prod(image_shape) != coef.shape[1]:
                raise ValueError(f"image_shape {image_shape} does not fit coef {coef.shape}")
    if loss is not None and (loss.ndim != 1 or loss.size == 0):
        raise ValueError(f"loss_curve must be a non-empty 1-D sequence, got shape {loss.shape}")
    if resumed_at is not None:
        if loss is None:
            raise ValueError("resumed_at was given without loss_curve")
        whole = isinstance(resumed_at, (int, np.integer)) and not isinstance(resumed_at, bool)
        if not (whole and 1 <= resumed_at < loss.size):
            raise ValueError(
                f"resumed_at must be an iteration from 1 to {loss.size - 1}, got {resumed_at!r}"
            )
    if entropy is not None and (
        entropy.ndim != 1 or entropy.size == 0 or not np.all(np.isfinite(entropy))
    ):
        raise ValueError("pred_entropy must be a non-empty 1-D array of finite values")


def write_report(
    path: str | os.PathLike[str],
    *,
    title: str,
    metrics: dict[str, float | int | str],
    class_names: Sequence[str],
    confusion: np.ndarray,
    per_class: dict[str, np.ndarray] | None = None,
    loss_curve: Sequence[float] | None = None,
    resumed_at: int | None = None,
    coef: np.ndarray | None = None,
    image_shape: tuple[int, ...] | None = None,
    pred_entropy: np.ndarray | None = None,
    feature_names: Sequence[str] | None = None,
    first_feature_number: int = 0,
) -> Path:
    """Write a self-contained HTML report of a training or evaluation run.

    The file is written atomically: to a temporary file in the same directory, then moved
    over ``path`` with :func:`os.replace`; on any error nothing is left behind.

    Parameters
    ----------
    path : str or os.PathLike
        Output file; its directory must exist. Overwritten if present.
    title : str
        Heading of the report.
    metrics : dict of str to float, int or str
        Summary numbers (accuracy, loss, ...), shown as ``<table id="metrics">``.
    class_names : sequence of str, length ``C``
        Names of the classes, in the order of the rows of ``confusion`` and ``coef``.
    confusion : ndarray of shape ``(C, C)``
        Counts; rows are the true class, columns the predicted class.
    per_class : dict of str to ndarray of shape ``(C,)``, optional
        Per-class columns such as precision, recall and support (``<table id="per-class">``).
    loss_curve : sequence of float, optional
        Objective per iteration; log-scale y axis when it spans more than two decades.
    resumed_at : int, optional
        The iteration a resumed run continued from (``1 <= resumed_at < len(loss_curve)``);
        the objective plot marks it with a dashed line.
    coef : ndarray of shape ``(C, d)``, optional
        Weight rows of the classifier; drawn as images when ``image_shape`` is given, else
        listed as each class's top-weighted features (``<table id="top-features">``; no
        plot: sparse and other non-image features have no picture).
    image_shape : tuple of int, optional
        ``(h, w)`` or ``(h, w, 3)`` with ``h * w (* 3) == d``.
    pred_entropy : ndarray of shape ``(n_samples,)``, optional
        Entropy in nats of each predicted distribution; histogram against ``log C``.
    feature_names : sequence of str, length ``d``, optional
        Names of the features in the top-features table. Default: ``feature N``, with
        ``N = j + first_feature_number`` for column ``j``.
    first_feature_number : int, default 0
        The number unnamed column 0 goes by (1 for a one-based svmlight file).

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    ValueError
        If an argument is malformed or its shape disagrees with ``class_names``; the message
        names the argument.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = write_report(Path(folder) / "report.html", title="demo",
    ...                         metrics={"accuracy": 0.7}, class_names=["cat", "dog"],
    ...                         confusion=np.array([[3, 1], [2, 4]]))
    ...     path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    True
    """
    from crossent._version import __version__

    path = Path(path)
    confusion = np.asarray(confusion)
    coef = None if coef is None else np.asarray(coef)
    image_shape = None if image_shape is None else tuple(int(s) for s in image_shape)
    loss = None if loss_curve is None else np.asarray(loss_curve, dtype=np.float64)
    entropy = None if pred_entropy is None else np.asarray(pred_entropy, dtype=np.float64)
    _check_inputs(class_names, confusion, per_class, coef, image_shape, loss, entropy, resumed_at)
    if feature_names is not None and (coef is None or len(feature_names) != coef.shape[1]):
        width = "no coef" if coef is None else f"coef has {coef.shape[1]} features"
        raise ValueError(f"feature_names has {len(feature_names)} names, {width}")
    n_classes = len(class_names)

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">Generated {stamp} by crossent {html.escape(__version__)}.</p>',
        "<h2>Metrics</h2>",
        _table("metrics", ["metric", "value"], list(metrics.items())),
    ]
    if per_class:
        columns = {name: np.asarray(values) for name, values in per_class.items()}
        rows = [
            [class_names[k], *(values[k].item() for values in columns.values())]
            for k in range(n_classes)
        ]
        parts += ["<h2>Per class</h2>", _table("per-class", ["class", *columns], rows)]
    if loss is not None:
        alt = f"Objective over {loss.size} iterations, final value {loss[-1]:.6g}"
        if resumed_at is not None:
            alt += f", resumed after iteration {resumed_at}"
        fig = _plot_loss(loss, resumed_at)
        parts.append(_image_section("loss-curve", "Training objective", alt, fig))
    counts = confusion.astype(np.int64)
    alt = f"Confusion matrix of {n_classes} classes, {int(counts.sum())} samples"
    fig = _plot_confusion(counts, class_names)
    note = "Cells show counts; colour is the fraction of the row (true class)."
    parts.append(_image_section("confusion", "Confusion matrix", alt, fig, note))
    if coef is not None and image_shape is not None:
        rgb = len(image_shape) == 3
        note = "Each class's weight row drawn as an image" + (
            " (rescaled to [0, 1])." if rgb else ": red positive, blue negative, own scale each."
        )
        if n_classes > MAX_TEMPLATES:
            note += f" Showing the first {MAX_TEMPLATES} of {n_classes} classes."
        fig = _plot_templates(coef, image_shape, class_names)
        alt = f"Weight templates of {min(n_classes, MAX_TEMPLATES)} classes"
        parts.append(_image_section("templates", "Class templates", alt, fig, note))
    elif coef is not None:
        k = min(TOP_FEATURES, coef.shape[1])
        rows = _top_features(coef, class_names, feature_names, first_feature_number)
        note = f"Each class's {k} largest weights, largest first (weight in parentheses)."
        if n_classes > MAX_TEMPLATES:
            note += f" Showing the first {MAX_TEMPLATES} of {n_classes} classes."
        header = ["class", *(str(r) for r in range(1, k + 1))]
        parts += [
            "<h2>Top-weighted features</h2>",
            f'<p class="note">{html.escape(note)}</p>',
            _table("top-features", header, rows),
        ]
    if entropy is not None:
        alt = f"Histogram of prediction entropy of {entropy.size} samples, maximum log C"
        fig = _plot_entropy(entropy, n_classes)
        parts.append(_image_section("entropy-hist", "Prediction entropy", alt, fig))

    document = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(parts)
        + "\n</body>\n</html>\n"
    )
    write_text_atomic(path, document)
    return path
