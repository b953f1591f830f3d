"""The ``crossent`` command: ``train``, ``evaluate``, ``predict`` and ``gradcheck``.

``crossent train`` with no arguments trains on scikit-learn's digits and writes
``crossent-out/model.safetensors`` and ``crossent-out/report.html``; ``crossent --help`` and
``crossent <command> --help`` describe every option. ``python -m crossent`` is the same command.

Exit status: 0 on success; 1 on a data, model or file error (:class:`~crossent.data.DataError`,
:class:`~crossent.model_io.ModelFileError`, another ``ValueError``, ``OSError``), reported as
one line ``crossent: error: <message>`` on stderr (``--debug`` adds the traceback); 2 on a
usage error (argparse); 130 when interrupted (Ctrl-C), 143 when terminated (SIGTERM, handled
as Ctrl-C: the last checkpoint is kept). Failed commands leave no partial output.

:func:`main` takes the argument list and returns the exit status, so that it can be called
in-process::

    >>> from crossent.cli import main
    >>> main(["--version"])  # doctest: +SKIP
    crossent 0.1.0
    0

The implementation lives in the private package :mod:`crossent._cli`; the modules that need
scikit-learn are imported only when a command runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType

from crossent._cli import (
    EXIT_BROKEN_PIPE,
    EXIT_ERROR,
    EXIT_USAGE,
    Terminated,
    interrupt_status,
)
from crossent._cli._parser import build_parser
from crossent.data import DataError
from crossent.model_io import ModelFileError

__all__ = ["main"]


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line, naming the file for a bare ``OSError``."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        message = f"{exc.filename}: {exc.strerror}"
    else:
        message = str(exc) or type(exc).__name__
    return " ".join(message.split())


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Raise :class:`Terminated` once; later SIGTERMs wait for the cleanup it starts."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Handle SIGTERM like Ctrl-C while the command runs; restore the old handler after.

    Only the main thread can install a handler; elsewhere (``main`` called from a worker
    thread) SIGTERM keeps its old meaning.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:  # None: a handler installed outside Python, which cannot be put back
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _command(run: str) -> Callable[[argparse.Namespace, list[str]], int]:
    """``"module:function"`` of :mod:`crossent._cli` → the function (imported now)."""
    module, function = run.split(":")
    return getattr(importlib.import_module(f"crossent._cli.{module}"), function)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``crossent`` command with ``argv`` (default ``sys.argv[1:]``); return the
    exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # --help, --version (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        with _sigterm_as_interrupt():
            return int(_command(args.run)(args, args_list))
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated)
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"crossent: {what}", file=sys.stderr)
        return interrupt_status(exc)
    except BrokenPipeError:  # the reader of stdout went away: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the final flush cannot fail again
        return EXIT_BROKEN_PIPE
    except MemoryError:
        print(
            "crossent: error: out of memory (the data or the model is too large for this machine)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    except (DataError, ModelFileError, ValueError, OSError) as exc:
        if args.debug:
            traceback.print_exc()
        print(f"crossent: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
