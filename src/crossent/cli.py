"""The ``crossent`` command: ``train``, ``evaluate``, ``predict`` and ``gradcheck``.

``crossent train`` with no arguments trains on scikit-learn's digits and writes
``crossent-out/model.safetensors`` and ``crossent-out/report.html``; ``crossent --help`` and
``crossent <command> --help`` describe every option.

Exit status: 0 on success; 1 on a data, model or file error (:class:`~crossent.data.DataError`,
:class:`~crossent.model_io.ModelFileError`, another ``ValueError``, ``OSError``), reported as
one line ``crossent: error: <message>`` on stderr (``--debug`` adds the traceback); 2 on a
usage error (argparse); 130 when interrupted. Failed commands leave no partial output.

:func:`main` takes the argument list and returns the exit status, so that it can be called
in-process::

    >>> from crossent.cli import main
    >>> main(["--version"])  # doctest: +SKIP
    crossent 0.1.0
    0

The implementation lives in the private package :mod:`crossent._cli`.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence

from crossent._cli._parser import build_parser
from crossent.data import DataError
from crossent.model_io import ModelFileError

__all__ = ["main"]

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports `crossent predict ... | head`


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line, naming the file for a bare ``OSError``."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        message = f"{exc.filename}: {exc.strerror}"
    else:
        message = str(exc) or type(exc).__name__
    return " ".join(message.split())


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
        return int(args.run(args, args_list))
    except KeyboardInterrupt:
        print("crossent: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of stdout went away: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the final flush cannot fail again
        return EXIT_BROKEN_PIPE
    except (DataError, ModelFileError, ValueError, OSError) as exc:
        if args.debug:
            traceback.print_exc()
        print(f"crossent: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
