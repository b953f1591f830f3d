"""The argument parser of ``crossent`` and its subcommands.

It imports nothing heavy: each subcommand names its implementation as
``"module:function"`` of :mod:`crossent._cli` (``args.run``), which
:func:`crossent.cli.main` imports only when the command runs, so ``crossent --help`` does
not import scikit-learn. Every number is checked here, at parse time, against the range the
code behind it accepts (exit 2 naming the option).
"""

from __future__ import annotations

import argparse
import math
import re
import textwrap
from collections.abc import Callable
from typing import Any

from crossent._version import __version__

DESCRIPTION = (
    "Train, evaluate and apply L2-regularised linear softmax classifiers, the model of the "
    "cross-entropy derivation. Exit status: 0 on success, 1 on a data, model or file error "
    "(one line on stderr; --debug shows the traceback), 2 on a usage error, 130 when "
    "interrupted (Ctrl-C), 143 when terminated (SIGTERM, handled as Ctrl-C)."
)

DATA_HELP = (
    "the data: 'digits' (scikit-learn's 8×8 handwritten digits), a .npz file with arrays X "
    "and y, a .csv or .csv.gz file with a header row, an IDX image file as MNIST ships it "
    "(train-images-idx3-ubyte[.gz]), a folder with one sub-folder of images per class "
    "(predict also takes a flat folder of images or one image file), an svmlight/libsvm "
    "file (.svm, .svmlight, .libsvm, optionally .gz or .bz2), or a sparse .npz written by "
    "scipy.sparse.save_npz (labels in an array y of the archive, or --labels FILE.npy)"
)

TRAIN_EPILOG = (
    "Images (digits, IDX, image folders, image .npz) are scaled to [0, 1] and not "
    "standardized by default, so that the class templates in the report are pictures in "
    "pixel space; other features are standardized by default (mean 0, standard deviation 1 "
    "on the training rows; the model file stores the mean and scale and predict applies "
    "them). Sparse data (svmlight, sparse .npz) stays sparse and is not standardized: "
    "centring would make it dense, so --standardize is refused for it.\n\n"
    "Outputs, written together once training is done (nothing is written on failure): "
    "DIR/model.safetensors and DIR/report.html. With --checkpoint-every N, "
    "DIR/checkpoint.safetensors is saved every N iterations and on Ctrl-C or SIGTERM; "
    "'crossent train --resume --out DIR' continues from it with the data and options it "
    "records (an option given again must agree with it, except --solver, --max-iter, "
    "--tol, --batch-size and --checkpoint-every, which may change), and it is removed when "
    "training completes."
)

# The train options a checkpoint records, with their defaults. They are parsed with
# default None, so that `--resume` can tell an option given from one left out.
TRAIN_DEFAULTS: dict[str, Any] = {
    "data": "digits",
    "label_column": None,
    "labels": None,
    "skip_bad_images": False,
    "l2": 1.0,
    "solver": "auto",
    "max_iter": 1000,
    "tol": 1e-4,
    "batch_size": 256,
    "test_size": 0.25,
    "seed": 0,
    "standardize": None,
    "checkpoint_every": None,
    "zero_based": None,
}

# crossent.solvers.SOLVERS's names (a test keeps them equal); importing the solvers here
# would import SciPy for --help.
SOLVER_NAMES = ("adam", "auto", "gd", "lbfgs", "newton-cg", "sgd")
GRADCHECK_THRESHOLD = 1e-6  # the worst error gradcheck accepts

MAX_SEED = 2**32 - 1  # NumPy's RandomState (the split's and shuffling's) takes 0..2**32-1
MAX_COUNT = 10**9  # iterations, checkpoint interval, batch rows: far beyond any real run


class _Number:
    """An argparse ``type`` for a number of ``kind`` (int or float) that passes ``check``;
    :meth:`accepts` applies the same rule to a value read back (a checkpoint's options)."""

    def __init__(self, kind: type, check: Callable[[float], bool], rule: str) -> None:
        self.kind, self.check, self.rule = kind, check, rule
        self.__name__ = rule  # argparse names the type in some messages

    def __call__(self, text: str) -> float:
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {self.rule}, got {text!r}") from None
        if not (math.isfinite(value) and self.check(value)):
            raise argparse.ArgumentTypeError(f"must be {self.rule}, got {text}")
        return value

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` (of JSON's types) is a number this option takes."""
        kinds = (int,) if self.kind is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            return False
        return math.isfinite(value) and self.check(value)


def _count(upper: int) -> _Number:
    rule = f"an integer from 1 to {upper}"
    return _Number(int, lambda v: 1 <= v <= upper, rule)


positive_int = _count(MAX_COUNT)
non_negative = _Number(float, lambda v: v >= 0, "a number >= 0")
# Training's λ: beyond 1e100 every weight is 0 to the last digit, and the minibatch solvers'
# steps overflow float64 (--l2 1e308 with adam) instead of saying so.
MAX_L2 = 1e100
penalty = _Number(float, lambda v: 0 <= v <= MAX_L2, f"a number >= 0 and <= {MAX_L2:g}")
test_fraction = _Number(float, lambda v: 0 <= v < 1, "a fraction >= 0 and < 1")
seconds = _Number(float, lambda v: 0 < v <= 86400, "a number of seconds > 0 and <= 86400")
DEFAULT_TIMEOUT = 60.0  # --timeout: seconds a rank waits for the others
seed_int = _Number(int, lambda v: 0 <= v <= MAX_SEED, f"an integer from 0 to {MAX_SEED}")


def _non_empty(what: str) -> Callable[[str], str]:
    """A parser of ``what`` (a path, a column): anything but an empty or all-blank string."""

    def parse(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return text

    parse.__name__ = what
    return parse


path_text = _non_empty("a path")
column_text = _non_empty("a column name or index")


def _paragraph(text: str) -> str:
    """Each paragraph of ``text`` wrapped to 79 columns (help is kept within 80)."""
    return "\n\n".join(textwrap.fill(part, width=79) for part in text.split("\n\n"))


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _add_data_options(
    parser: argparse.ArgumentParser, *, required: bool, labels_required: bool = True
) -> None:
    if required:
        parser.add_argument(
            "--data", required=True, type=path_text, metavar="SOURCE", help=DATA_HELP
        )
    else:
        default = TRAIN_DEFAULTS["data"]
        parser.add_argument(
            "--data", type=path_text, metavar="SOURCE", help=f"{DATA_HELP} (default: {default})"
        )
    parser.add_argument(
        "--label-column",
        type=column_text,
        metavar="NAME|INDEX",
        help="CSV only: the label column, by header name or 0-based index (default: a column "
        "named 'label', 'target', 'class' or 'y', "
        f"{'else this option is needed' if labels_required else 'else none'})",
    )
    parser.add_argument(
        "--labels",
        type=path_text,
        metavar="FILE",
        help="IDX: the labels file (default: the images file name with 'images-idx3' "
        "replaced by 'labels-idx1'); sparse .npz: a .npy file of labels, one per row "
        "(default: the array y of the archive)",
    )
    parser.add_argument(
        "--zero-based",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="svmlight only: feature index 0 is the first column (--no-zero-based: index 1 "
        "is) (default: zero-based if the file holds an index 0; evaluate and predict: as "
        "the model's training file was read)",
    )
    parser.add_argument(
        "--skip-bad-images",
        action="store_true",
        default=None,
        help="image folders: skip an image that cannot be read, with a warning (default: stop "
        "with an error naming the file)",
    )


def _add_debug(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--debug", action="store_true", help="on an error, show the full traceback too"
    )


def _subparser(
    commands: Any, name: str, summary: str, description: str, epilog: str | None = None
) -> argparse.ArgumentParser:
    return commands.add_parser(
        name,
        help=summary,
        description=_paragraph(description),
        epilog=None if epilog is None else _paragraph(epilog),
        formatter_class=_formatter,
    )


def _default(name: str) -> str:
    return f"(default: {TRAIN_DEFAULTS[name]})"


def _add_objective_options(train: argparse.ArgumentParser) -> None:
    """The options that define the minimised function: λ, the split, standardisation."""
    train.add_argument(
        "--l2",
        type=penalty,
        metavar="λ",
        help=f"weight 0 <= λ <= {MAX_L2:g} of the penalty (λ/2)‖W‖² {_default('l2')}",
    )
    train.add_argument(
        "--test-size",
        type=test_fraction,
        metavar="F",
        help="fraction of the samples held out for testing, 0 <= F < 1; 0 trains on every "
        f"sample and skips the test metrics {_default('test_size')}",
    )
    train.add_argument(
        "--seed",
        type=seed_int,
        metavar="S",
        help=f"random seed of the split and of minibatch shuffling, 0 <= S <= {MAX_SEED} "
        f"{_default('seed')}",
    )
    train.add_argument(
        "--standardize",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="standardize the features (default: off for images, on for other data)",
    )


def _add_solver_options(train: argparse.ArgumentParser) -> None:
    """How the function is minimised: solver, budget, tolerance, batch size."""
    train.add_argument(
        "--solver",
        choices=SOLVER_NAMES,
        help="optimiser: auto, lbfgs, newton-cg, gd (full batch) or sgd, adam (minibatch) "
        f"{_default('solver')}",
    )
    train.add_argument(
        "--max-iter",
        type=positive_int,
        metavar="N",
        help="iterations (epochs for sgd, adam) at most, resumed ones included "
        f"{_default('max_iter')}",
    )
    train.add_argument(
        "--tol",
        type=non_negative,
        metavar="T",
        help="tolerance: lbfgs and gd stop when the largest gradient entry is below T; sgd "
        f"and adam when epochs stop improving the objective by T (relative) {_default('tol')}",
    )
    train.add_argument(
        "--batch-size",
        type=positive_int,
        metavar="N",
        help=f"rows per minibatch for sgd and adam {_default('batch_size')}",
    )


class _DeviceAction(argparse.Action):
    """``--device cpu|cuda|cuda:N``: checked when given (a usage error, exit 2): the name,
    then that PyTorch is there and, for CUDA, that the device is. PyTorch is imported only
    when the option is given, so ``crossent --help`` does not import it."""

    def __call__(self, parser: Any, namespace: Any, value: Any, option: Any = None) -> None:
        text = str(value).strip()
        if not re.fullmatch(r"cpu|cuda(:[0-9]+)?", text):
            parser.error(f"--device {value}: expected cpu, cuda or cuda:N")
        kind, _, index = text.partition(":")
        try:
            import torch
        except ImportError:
            parser.error(f"--device {text}: PyTorch is not installed (pip install torch)")
        if kind == "cuda" and not torch.cuda.is_available():
            parser.error(
                f"--device {text}: CUDA is not available (torch.cuda.is_available() is False)"
            )
        if index and kind == "cuda" and int(index) >= torch.cuda.device_count():
            parser.error(
                f"--device {text}: there is no CUDA device {index} "
                f"(torch.cuda.device_count() is {torch.cuda.device_count()})"
            )
        setattr(namespace, self.dest, text)


def _add_device_option(train: argparse.ArgumentParser) -> None:
    train.add_argument(
        "--device",
        action=_DeviceAction,
        metavar="DEVICE",
        help="evaluate the objective with PyTorch on this device: cpu, cuda or cuda:N "
        "(full-batch solvers lbfgs and gd; the model file is the same whatever the device) "
        "(default: NumPy on the CPU, without PyTorch)",
    )


def _add_output_options(train: argparse.ArgumentParser) -> None:
    """Where and how the results go: the folder, the summary, checkpoints."""
    train.add_argument(
        "--out",
        type=path_text,
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
        help="save DIR/checkpoint.safetensors every N iterations and on Ctrl-C or SIGTERM",
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue from DIR/checkpoint.safetensors with the data and options it records "
        "(refused if given other data or objective options)",
    )


def _add_distributed_options(train: argparse.ArgumentParser) -> None:
    """Data-parallel training over torch.distributed, launched by torchrun."""
    train.add_argument(
        "--distributed",
        action="store_true",
        help="train as one rank of a torchrun job (torchrun --nproc-per-node N -m crossent "
        "train --distributed ...): each rank reads its own rows of --data (a contiguous "
        "block of one file, or its own files of a glob pattern such as 'part-*.csv'), the "
        "split and the model are those of a single-process run, rank 0 writes the outputs",
    )
    train.add_argument(
        "--timeout",
        type=seconds,
        metavar="SECONDS",
        help="with --distributed: how long a rank waits for the others before it stops "
        f"with an error naming the lost rank (default: {DEFAULT_TIMEOUT:g}; joining the "
        "job waits at least 30)",
    )


def _add_train(commands: Any) -> None:
    train = _subparser(
        commands,
        "train",
        "train a classifier, write model.safetensors and report.html",
        "Train an L2-regularised softmax classifier on a stratified train/test split and "
        "write the model and an HTML report.",
        TRAIN_EPILOG,
    )
    _add_data_options(train, required=False)
    _add_objective_options(train)
    _add_solver_options(train)
    _add_device_option(train)
    _add_output_options(train)
    _add_distributed_options(train)
    _add_debug(train)
    train.set_defaults(run="_train:run")


def _add_model_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        type=path_text,
        metavar="FILE",
        help="a model.safetensors written by crossent train",
    )


def _add_evaluate(commands: Any) -> None:
    evaluate = _subparser(
        commands,
        "evaluate",
        "metrics and an HTML report of a model on labelled data",
        "Evaluate a model on labelled data: accuracy, cross-entropy with its entropy/KL "
        "split, per-class precision and recall; writes evaluation.html.",
    )
    _add_model_option(evaluate)
    _add_data_options(evaluate, required=True)
    evaluate.add_argument(
        "--out",
        type=path_text,
        metavar="DIR",
        help="folder for evaluation.html (default: the model's folder)",
    )
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON on stdout")
    _add_debug(evaluate)
    evaluate.set_defaults(run="_predict:run_evaluate")


def _add_predict(commands: Any) -> None:
    predict = _subparser(
        commands,
        "predict",
        "predicted labels or class probabilities as CSV",
        "Predict with a model: one label per sample (CSV column 'label'), or with --proba "
        "one probability per class (a column per class name, written with full float "
        "precision so that they read back exactly). Labels in the data are ignored.",
    )
    _add_model_option(predict)
    _add_data_options(predict, required=True, labels_required=False)
    predict.add_argument(
        "--proba", action="store_true", help="write class probabilities instead of labels"
    )
    predict.add_argument(
        "--output",
        type=path_text,
        metavar="FILE.csv",
        help="write the CSV to this file, atomically (default: stdout)",
    )
    _add_debug(predict)
    predict.set_defaults(run="_predict:run_predict")


def _add_gradcheck(commands: Any) -> None:
    gradcheck = _subparser(
        commands,
        "gradcheck",
        "check the analytic gradient against finite differences",
        "Build a random float64 problem and compare crossent.objective.loss_gradient "
        "(L_total, ∂L/∂W, ∂L/∂b) with the literal formula and with central finite "
        f"differences; exit 1 if the worst relative error exceeds {GRADCHECK_THRESHOLD:g} "
        "or is not a finite number.",
    )
    gradcheck.add_argument(
        "--seed",
        type=seed_int,
        default=0,
        metavar="S",
        help=f"random seed of the problem, 0 <= S <= {MAX_SEED} (default: 0)",
    )
    for flag, default, upper, metavar, what in (
        ("--classes", 4, 1000, "C", "number of classes"),
        ("--features", 6, 1000, "d", "number of features"),
        ("--samples", 30, 100_000, "n", "number of samples"),
    ):
        gradcheck.add_argument(
            flag,
            type=_count(upper),
            default=default,
            metavar=metavar,
            help=f"{what}, 1 to {upper} (default: {default})",
        )
    gradcheck.add_argument(
        "--l2", type=non_negative, default=0.5, metavar="λ", help="penalty weight λ (default: 0.5)"
    )
    _add_debug(gradcheck)
    gradcheck.set_defaults(run="_gradcheck:run")


def build_parser() -> argparse.ArgumentParser:
    """The ``crossent`` parser with its four subcommands."""
    parser = argparse.ArgumentParser(
        prog="crossent", description=_paragraph(DESCRIPTION), formatter_class=_formatter
    )
    parser.add_argument("--version", action="version", version=f"crossent {__version__}")
    commands = parser.add_subparsers(title="commands", dest="command", required=True)
    _add_train(commands)
    _add_evaluate(commands)
    _add_predict(commands)
    _add_gradcheck(commands)
    return parser
