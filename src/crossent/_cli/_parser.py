"""The argument parser of ``crossent`` and its subcommands."""

from __future__ import annotations

import argparse
import math
import textwrap
from collections.abc import Callable

from crossent._version import __version__
from crossent.solvers import SOLVERS

DESCRIPTION = (
    "Train, evaluate and apply L2-regularised linear softmax classifiers, the model of the "
    "cross-entropy derivation. Exit status: 0 on success, 1 on a data, model or file error "
    "(one line on stderr; --debug shows the traceback), 2 on a usage error, 130 when "
    "interrupted (Ctrl-C)."
)

DATA_HELP = (
    "the data: 'digits' (scikit-learn's 8×8 handwritten digits), a .npz file with arrays X "
    "and y, a .csv or .csv.gz file with a header row, an IDX image file as MNIST ships it "
    "(train-images-idx3-ubyte[.gz]), or a folder with one sub-folder of images per class"
)

TRAIN_EPILOG = (
    "Images (digits, IDX, image folders, image .npz) are scaled to [0, 1] and not "
    "standardized by default, so that the class templates in the report are pictures in "
    "pixel space; other features are standardized by default (mean 0, standard deviation 1 "
    "on the training rows; the model file stores the mean and scale and predict applies "
    "them).\n\n"
    "Outputs, written together once training is done (nothing is written on failure): "
    "DIR/model.safetensors and DIR/report.html. With --checkpoint-every N, "
    "DIR/checkpoint.safetensors is saved every N iterations and on Ctrl-C; --resume "
    "continues from it (same data and --l2, --test-size, --seed, standardization) and it "
    "is removed when training completes."
)


def _number(kind: type, check: Callable[[float], bool], rule: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {rule}, got {text!r}") from None
        if not (math.isfinite(value) and check(value)):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value

    parse.__name__ = rule  # argparse names the type in some messages
    return parse


positive_int = _number(int, lambda v: v >= 1, "a positive integer")
non_negative = _number(float, lambda v: v >= 0, "a number >= 0")
fraction = _number(float, lambda v: 0 < v < 1, "a fraction strictly between 0 and 1")
any_int = _number(int, lambda v: True, "an integer")


def _paragraph(text: str) -> str:
    """Each paragraph of ``text`` wrapped to 79 columns (help is kept within 80)."""
    return "\n\n".join(textwrap.fill(part, width=79) for part in text.split("\n\n"))


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _add_data_options(
    parser: argparse.ArgumentParser, *, default: str | None, labels_required: bool = True
) -> None:
    if default is None:
        parser.add_argument("--data", required=True, metavar="SOURCE", help=DATA_HELP)
    else:
        parser.add_argument(
            "--data", default=default, metavar="SOURCE", help=f"{DATA_HELP} (default: {default})"
        )
    parser.add_argument(
        "--label-column",
        metavar="NAME|INDEX",
        help="CSV only: the label column, by header name or 0-based index (default: a column "
        f"named 'label' or 'y', else {'the last column' if labels_required else 'none'})",
    )
    parser.add_argument(
        "--labels",
        metavar="FILE",
        help="IDX only: the labels file (default: the images file name with 'images-idx3' "
        "replaced by 'labels-idx1')",
    )
    parser.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="image folders: skip an image that cannot be read, with a warning (default: stop "
        "with an error naming the file)",
    )


def _add_debug(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--debug", action="store_true", help="on an error, show the full traceback too"
    )


def build_parser() -> argparse.ArgumentParser:
    from . import _gradcheck, _predict, _train

    parser = argparse.ArgumentParser(
        prog="crossent", description=_paragraph(DESCRIPTION), formatter_class=_formatter
    )
    parser.add_argument("--version", action="version", version=f"crossent {__version__}")
    commands = parser.add_subparsers(title="commands", dest="command", required=True)

    train = commands.add_parser(
        "train",
        help="train a classifier, write model.safetensors and report.html",
        description=_paragraph(
            "Train an L2-regularised softmax classifier on a stratified train/test split and "
            "write the model and an HTML report."
        ),
        epilog=_paragraph(TRAIN_EPILOG),
        formatter_class=_formatter,
    )
    _add_data_options(train, default="digits")
    train.add_argument(
        "--l2",
        type=non_negative,
        default=1.0,
        metavar="λ",
        help="weight λ >= 0 of the penalty (λ/2)‖W‖² (default: 1.0)",
    )
    train.add_argument(
        "--solver",
        choices=sorted(SOLVERS),
        default="lbfgs",
        help="optimiser: lbfgs, gd (full batch) or sgd, adam (minibatch) (default: lbfgs)",
    )
    train.add_argument(
        "--max-iter",
        type=positive_int,
        default=1000,
        metavar="N",
        help="iterations (epochs for sgd, adam) at most, resumed ones included (default: 1000)",
    )
    train.add_argument(
        "--tol",
        type=non_negative,
        default=1e-4,
        metavar="T",
        help="tolerance: lbfgs and gd stop when the largest gradient entry is below T; sgd "
        "and adam when epochs stop improving the objective by T (relative) (default: 1e-4)",
    )
    train.add_argument(
        "--batch-size",
        type=positive_int,
        default=256,
        metavar="N",
        help="rows per minibatch for sgd and adam (default: 256)",
    )
    train.add_argument(
        "--test-size",
        type=fraction,
        default=0.25,
        metavar="F",
        help="fraction of the samples held out for testing, 0 < F < 1 (default: 0.25)",
    )
    train.add_argument(
        "--seed",
        type=any_int,
        default=0,
        metavar="S",
        help="random seed of the split and of minibatch shuffling (default: 0)",
    )
    train.add_argument(
        "--standardize",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="standardize the features (default: off for images, on for other data)",
    )
    train.add_argument(
        "--out",
        default="crossent-out",
        metavar="DIR",
        help="output folder, created if needed (default: crossent-out)",
    )
    train.add_argument(
        "--json",
        action="store_true",
        help="print a machine-readable JSON summary on stdout instead of the text summary",
    )
    train.add_argument(
        "--quiet",
        action="store_true",
        help="no progress line and no text summary (warnings and errors still go to stderr)",
    )
    train.add_argument(
        "--checkpoint-every",
        type=positive_int,
        metavar="N",
        help="save DIR/checkpoint.safetensors every N iterations and on Ctrl-C",
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue from DIR/checkpoint.safetensors (refused if made with other data or "
        "options)",
    )
    _add_debug(train)
    train.set_defaults(run=_train.run)

    evaluate = commands.add_parser(
        "evaluate",
        help="metrics and an HTML report of a model on labelled data",
        description=_paragraph(
            "Evaluate a model on labelled data: accuracy, cross-entropy with its entropy/KL "
            "split, per-class precision and recall; writes evaluation.html."
        ),
        formatter_class=_formatter,
    )
    evaluate.add_argument(
        "--model",
        required=True,
        metavar="FILE",
        help="a model.safetensors written by crossent train",
    )
    _add_data_options(evaluate, default=None)
    evaluate.add_argument(
        "--out",
        metavar="DIR",
        help="folder for evaluation.html (default: the model's folder)",
    )
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON on stdout")
    _add_debug(evaluate)
    evaluate.set_defaults(run=_predict.run_evaluate)

    predict = commands.add_parser(
        "predict",
        help="predicted labels or class probabilities as CSV",
        description=_paragraph(
            "Predict with a model: one label per sample (CSV column 'label'), or with --proba "
            "one probability per class (a column per class name, written with full float "
            "precision so that they read back exactly). Labels in the data are ignored."
        ),
        formatter_class=_formatter,
    )
    predict.add_argument(
        "--model",
        required=True,
        metavar="FILE",
        help="a model.safetensors written by crossent train",
    )
    _add_data_options(predict, default=None, labels_required=False)
    predict.add_argument(
        "--proba", action="store_true", help="write class probabilities instead of labels"
    )
    predict.add_argument(
        "--output",
        metavar="FILE.csv",
        help="write the CSV to this file, atomically (default: stdout)",
    )
    _add_debug(predict)
    predict.set_defaults(run=_predict.run_predict)

    gradcheck = commands.add_parser(
        "gradcheck",
        help="check the analytic gradient against finite differences",
        description=_paragraph(
            "Build a random float64 problem and compare crossent.objective.loss_gradient "
            "(L_total, ∂L/∂W, ∂L/∂b) with the literal formula and with central finite "
            f"differences; exit 1 if the worst relative error exceeds {_gradcheck.THRESHOLD:g}."
        ),
        formatter_class=_formatter,
    )
    gradcheck.add_argument(
        "--seed",
        type=any_int,
        default=0,
        metavar="S",
        help="random seed of the problem (default: 0)",
    )
    gradcheck.add_argument(
        "--classes",
        type=positive_int,
        default=4,
        metavar="C",
        help="number of classes (default: 4)",
    )
    gradcheck.add_argument(
        "--features",
        type=positive_int,
        default=6,
        metavar="d",
        help="number of features (default: 6)",
    )
    gradcheck.add_argument(
        "--samples",
        type=positive_int,
        default=30,
        metavar="n",
        help="number of samples (default: 30)",
    )
    gradcheck.add_argument(
        "--l2", type=non_negative, default=0.5, metavar="λ", help="penalty weight λ (default: 0.5)"
    )
    _add_debug(gradcheck)
    gradcheck.set_defaults(run=_gradcheck.run)
    return parser
