"""Implementation of the ``crossent`` command; the entry point is :func:`crossent.cli.main`.

Modules: ``_parser`` (argparse), ``_common`` (data loading, output folders, atomic files),
``_model`` (model files and preprocessing), ``_summary`` (text and JSON summaries),
``_train`` (training, checkpoints, Ctrl-C), ``_predict`` (evaluate, predict),
``_gradcheck`` (finite-difference check of the gradient).

This module holds the one home of the exit statuses and of :class:`Terminated`; it imports
nothing heavy, so that ``crossent --help`` stays fast.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1  # a data, model, file or option-value error
EXIT_USAGE = 2  # argparse's usage errors
EXIT_INTERRUPTED = 130  # 128 + SIGINT (Ctrl-C)
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports `crossent predict ... | head`
EXIT_TERMINATED = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread by :func:`crossent.cli.main`'s handler, so that it
    unwinds exactly as Ctrl-C does (checkpoint kept, resume command printed)."""


def interrupt_status(exc: BaseException) -> int:
    """The exit status of an interruption: 143 for SIGTERM, 130 for Ctrl-C."""
    return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
