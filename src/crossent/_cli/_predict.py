"""``crossent evaluate`` and ``crossent predict``: a saved model applied to data."""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from pathlib import Path

import numpy as np

from crossent._atomic import write_text_atomic
from crossent.data import IMAGE_SUFFIXES
from crossent.metrics import classification_metrics, prediction_entropy
from crossent.report import write_report

from ._common import CommandError, OutputDir, load_data, need_labels
from ._model import label_indices, load_classifier
from ._summary import (
    cross_entropy_lines,
    data_line,
    dumps,
    per_class_lines,
    report_table,
)

EVALUATION_FILE = "evaluation.html"


def run_evaluate(args: argparse.Namespace, argv: list[str]) -> int:
    out = OutputDir(args.out if args.out is not None else Path(args.model).parent)
    out.check()  # before any work: a bad --out fails at once
    model = load_classifier(args.model)
    data = load_data(args, require_labels=True, model=model)
    need_labels(data, "evaluate")
    model.check_data(data)
    y_index = label_indices(data, model.classes, f"the model {model.path}")
    log_proba = model.log_proba(data.X)  # (n, C)
    n_classes = len(model.classes)
    metrics = classification_metrics(y_index, log_proba, n_classes)
    class_names = [str(c) for c in model.classes.tolist()]

    report_path = out.path / EVALUATION_FILE
    try:
        with out.staging() as stage:
            write_report(
                stage / EVALUATION_FILE,
                title=f"crossent evaluate: {model.path} on {data.name}",
                metrics={"model": model.path, "data": data.name, **report_table(metrics)},
                class_names=class_names,
                confusion=metrics["confusion"],
                per_class={k: metrics[k] for k in ("precision", "recall", "support")},
                coef=model.preprocessing.raw_coef(model.classifier.coef_)
                if model.image_shape
                else model.classifier.coef_,
                image_shape=model.image_shape,
                pred_entropy=prediction_entropy(log_proba),
                feature_names=model.metadata.get("feature_names"),
                first_feature_number=model.metadata.get("index_base") or 0,
            )
    except BaseException:
        out.discard()
        raise

    if args.json:
        document = {
            "command": "evaluate",
            "model": model.path,
            "data": data.name,
            "classes": model.classes,
            "metrics": metrics,
            "report": str(report_path),
        }
        print(dumps(document))
    else:
        lines = [
            f"model     {model.path}: {n_classes} classes, {model.n_features} features",
            data_line(
                data.name,
                data.n_samples,
                data.n_features,
                data.image_shape,
                n_classes,
                getattr(data.X, "nnz", None),
            ),
            "",
            f"accuracy  {metrics['accuracy']:.4f}",
            "",
            *cross_entropy_lines(metrics, "mean"),
            "",
            *per_class_lines(metrics, class_names, data.name),
            "",
            f"wrote {report_path}",
        ]
        print("\n".join(lines))
    return 0


def predictions_csv(header: list[str], rows: np.ndarray) -> str:
    """CSV text; floats written with ``repr`` so that they read back bit for bit."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    if rows.dtype.kind == "f":
        writer.writerows([repr(float(v)) for v in row] for row in rows)
    else:
        writer.writerows([v] for v in rows.tolist())
    return buffer.getvalue()


def refuse_output_among_inputs(output: str | None, inputs: dict[str, str | None]) -> None:
    """Refuse an ``--output`` that is one of the input files (also through a symbolic or
    hard link), or an image of an input folder, which writing the output would replace.

    ``inputs`` maps each option (``"--data"``) to the path it was given, or None.
    """
    if output is None or not os.path.isfile(output):
        return
    for option, path in inputs.items():
        if path is None or path == "digits" or not os.path.exists(path):
            continue
        if os.path.isdir(path):
            if _is_image_below(output, path):
                raise CommandError(
                    f"{output}: is an image of the {option} folder {path}; writing predictions "
                    "would replace it, choose another --output"
                )
        elif os.path.samefile(output, path):
            raise CommandError(
                f"{output}: is the {option} file {path}; writing predictions would replace it, "
                "choose another --output"
            )


def _is_image_below(file: str, folder: str) -> bool:
    """Whether ``file`` is an image that loading ``folder`` reads (in it or a sub-folder)."""
    if Path(file).suffix.lower() not in IMAGE_SUFFIXES:
        return False
    parent = Path(os.path.realpath(file)).parent
    root = Path(os.path.realpath(folder))
    return parent == root or parent.parent == root


def run_predict(args: argparse.Namespace, argv: list[str]) -> int:
    refuse_output_among_inputs(
        args.output, {"--data": args.data, "--model": args.model, "--labels": args.labels}
    )
    model = load_classifier(args.model)
    data = load_data(args, require_labels=False, model=model)
    model.check_data(data)
    if args.proba:
        text = predictions_csv([str(c) for c in model.classes.tolist()], model.proba(data.X))
    else:
        labels = model.predict(data.X)
        text = predictions_csv(["label"], labels)
    if args.output is None:
        sys.stdout.write(text)
    else:
        write_text_atomic(args.output, text)
        print(f"wrote {args.output} ({data.n_samples} rows)")
    return 0
