"""Shared pieces of the commands: loading data from the options, output folders whose
files appear all at once or not at all, atomic text files, and warnings on stderr."""

from __future__ import annotations

import argparse
import errno
import os
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crossent._atomic import renamed_error
from crossent.data import DataError, Dataset, load_dataset, source_kind

if TYPE_CHECKING:
    from ._model import LoadedModel

_INDEX = re.compile(r"[+-]?\d+")
_MISPLACED = re.compile(r"(\w+)= does not apply to (.+)")


class CommandError(ValueError):
    """A fault the command detects itself (a checkpoint that does not match, labels the
    model does not know, ...): exit code 1 with one line on stderr."""


def warn(message: str) -> None:
    """One ``crossent: warning: ...`` line on stderr."""
    print(f"crossent: warning: {message}", file=sys.stderr)


def load_data(
    args: argparse.Namespace,
    *,
    require_labels: bool,
    model: LoadedModel | None = None,
    loader: Callable[..., Dataset] = load_dataset,
) -> Dataset:
    """Load ``--data`` with ``--label-column``, ``--labels``, ``--skip-bad-images`` and
    ``--zero-based``.

    An integer ``--label-column`` is a 0-based column index (negative counts from the end);
    anything else is a header name. Given the ``model`` the data is for, a CSV's features
    are the columns the model was trained on, by name (other columns, such as the labels
    the model was trained with, are not read; where labels are needed, the model's
    ``label_column`` is the default), and images are converted to the model's size and
    mode; sparse data (svmlight, sparse ``.npz``) gets the model's number of columns (an
    index beyond is refused) and an svmlight file is read with the index base of the
    model's training file unless ``--zero-based`` says otherwise.
    Images skipped by ``--skip-bad-images`` and images converted to one size or mode are
    reported as warnings on stderr. The library's faults are reworded to name the
    command's options (``--label-column NAME``, not ``label_column=NAME``). ``loader``
    (``load_dataset``'s signature) reads the data: ``--distributed`` reads a rank's rows.
    """
    label_column: str | int | None = args.label_column
    if isinstance(label_column, str) and _INDEX.fullmatch(label_column.strip()):
        label_column = int(label_column)
    hints = {} if model is None else _model_hints(args.data, model)
    hinted = hints.pop("zero_based", None)  # the model's, unless --zero-based is given
    zero_based = hinted if args.zero_based is None else args.zero_based
    if label_column is None and require_labels and "feature_columns" in hints:
        trained_on = model.metadata.get("label_column") if model is not None else None
        label_column = trained_on if isinstance(trained_on, str) else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            data = loader(
                args.data,
                label_column=label_column,
                labels=args.labels,
                require_labels=require_labels,
                on_bad_image="skip" if args.skip_bad_images else "error",
                zero_based=zero_based,
                **hints,
            )
        except DataError as exc:
            raise _with_options(exc, args.command) from None
        except ValueError as exc:  # "labels= does not apply to a CSV file": name the option
            misplaced = _MISPLACED.fullmatch(str(exc))
            if misplaced is None:
                raise
            option = "--" + misplaced.group(1).replace("_", "-")
            raise CommandError(
                f"{args.data}: {option} does not apply to {misplaced.group(2)}"
            ) from None
    for warning in caught:
        warn(str(warning.message))
    return data


def _model_hints(source: str, model: LoadedModel) -> dict[str, Any]:
    """The :func:`load_dataset` arguments that make ``source`` look as the model expects."""
    kind = source_kind(source)
    names = model.metadata.get("feature_names")
    if (
        kind == "csv"
        and isinstance(names, list)
        and all(isinstance(n, str) for n in names)
        and len(set(names)) == len(names) > 0
    ):  # by name where names identify the columns, else by position
        return {"feature_columns": names}
    if kind in ("svmlight", "npz"):  # sparse: the model's columns; svmlight: its index base
        base = model.metadata.get("index_base")
        hints: dict[str, Any] = {"n_features": model.n_features}
        if kind == "svmlight" and base in (0, 1):
            hints["zero_based"] = base == 0
        return hints
    shape = model.image_shape
    if kind in ("folder", "image") and shape is not None and len(shape) >= 2:
        mode = "RGB" if len(shape) == 3 and shape[2] == 3 else "L"
        return {"image_size": (shape[1], shape[0]), "image_mode": mode}
    return {}


_OPTIONS = {"label_column": "--label-column", "labels": "--labels", "zero_based": "--zero-based"}


def _with_options(exc: DataError, command: str) -> DataError:
    """``exc`` with its remedies as the command's options; a remedy without an option
    (``require_labels=False``) means that ``command`` needs labels, which it says."""
    options = [
        _OPTIONS[p] if value == "True" else f"{_OPTIONS[p]} {value}"  # a flag: no value
        for p, value in exc.remedies
        if p in _OPTIONS
    ]
    if any(p == "require_labels" for p, _ in exc.remedies):
        needs = f"{command} needs labels"
        remedy = f"{needs}: pass {' or '.join(options)}" if options else needs
    else:
        remedy = f"pass {' or '.join(options)}" if options else ""
    return DataError(f"{exc.fault}; {remedy}" if remedy else exc.fault)


def need_labels(data: Dataset, command: str = "train") -> None:
    """Refuse unlabelled data (training and evaluation need labels)."""
    if data.y is None:
        raise DataError(f"{data.name}: no labels; {command} needs labels")


class OutputDir:
    """An output folder whose files are committed together or not at all.

    Files are first written into a hidden staging folder inside the output folder, then
    moved into place with :func:`os.replace` once all of them exist. Folders this object
    created are removed again by :meth:`discard` if they are left empty, so a failed
    command leaves no trace. An :class:`OSError` about the staging folder or a file in it
    is raised again about the user's own path (``DIR/report.html``, ``DIR``).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.path = Path(directory)
        self._created: list[Path] = []

    def check(self) -> None:
        """Refuse, before any work, a folder that cannot be one: an existing file, or a
        place whose nearest existing parent is a file or cannot be written."""
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "exists and is not a directory", str(self.path))
        existing = self.path.absolute()
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            reason = f"cannot be created, {existing} is not a directory"
            raise NotADirectoryError(errno.ENOTDIR, reason, str(self.path))
        if not os.access(existing, os.W_OK | os.X_OK):
            reason = f"cannot be written ({existing}: {os.strerror(errno.EACCES)})"
            raise PermissionError(errno.EACCES, reason, str(self.path))

    def ensure(self) -> Path:
        """Create the folder (and missing parents) if needed; return its path."""
        missing = []
        folder = self.path.absolute()
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for folder in reversed(missing):
            folder.mkdir()
            self._created.append(folder)
        if not self.path.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "exists and is not a directory", str(self.path))
        return self.path

    def _user_path(self, exc: OSError, stage: Path | None) -> OSError:
        """``exc`` about the user's path when it names the staging folder or a file in it."""
        for name in (exc.filename, exc.filename2):
            if name is None or ".crossent-staging-" not in os.fspath(name):
                continue
            inside = Path(os.fspath(name))
            if stage is not None and inside.parent == stage:
                return renamed_error(exc, self.path / inside.name)
            return renamed_error(exc, self.path)
        return exc

    @staticmethod
    def _renamed_message(exc: Exception, old: str, new: str) -> Exception:
        """``exc`` with ``old`` replaced by ``new`` in its message (same type if possible)."""
        message = str(exc).replace(old, new)
        try:
            return type(exc)(message)
        except Exception:  # an exception type with another signature
            return CommandError(message)

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """Yield a staging folder; on normal exit move every file in it into the folder."""
        self.ensure()
        stage = None
        try:
            stage = Path(tempfile.mkdtemp(prefix=".crossent-staging-", dir=self.path))
            yield stage
            for file in sorted(stage.iterdir()):
                os.replace(file, self.path / file.name)
        except OSError as exc:
            raise self._user_path(exc, stage) from None
        except Exception as exc:  # e.g. a ModelFileError whose message names the file
            if stage is None or str(stage) not in str(exc):
                raise
            raise self._renamed_message(exc, str(stage), str(self.path)) from None
        finally:
            if stage is not None:
                shutil.rmtree(stage, ignore_errors=True)

    def discard(self) -> None:
        """Remove the folders this object created, where they are empty."""
        for folder in reversed(self._created):
            try:
                folder.rmdir()
            except OSError:
                break
        self._created = []
