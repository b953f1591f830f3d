"""The one check that every hostile-input test of the command makes.

``expect_refusal(argv, exit_code, names=..., folder=...)`` runs ``crossent`` in-process and
asserts what issue #7 asks of every refusal: the given exit code, exactly one line on
stderr that starts ``crossent: error:`` (or argparse's ``error:`` for usage errors), that
names the file, option or argument (each string of ``names``), carries no traceback, and
that ``folder`` holds the same files afterwards as before (nothing written, nothing left
behind, no hidden staging or temporary file).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from crossent.cli import main


def snapshot(folder: str | os.PathLike[str]) -> dict[str, tuple[int, int]]:
    """Every file below ``folder`` (hidden ones too) with its size and modification time."""
    root = Path(folder)
    stats = {p: p.lstat() for p in sorted(root.rglob("*")) if p.is_file() or p.is_symlink()}
    return {str(p.relative_to(root)): (st.st_size, st.st_mtime_ns) for p, st in stats.items()}


def run_cli(argv: Sequence[str]) -> tuple[int, str, str]:
    """``crossent.cli.main(argv)`` with stdout and stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def expect_refusal(
    argv: Sequence[str],
    exit_code: int = 1,
    *,
    names: Iterable[str] = (),
    folder: str | os.PathLike[str] | None = None,
) -> str:
    """Run ``crossent argv`` and check a clean refusal; return the error line."""
    before = snapshot(folder) if folder is not None else None
    code, _out, err = run_cli(argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == exit_code, f"exit {code}, expected {exit_code}; stderr:\n{err}"
    assert "Traceback" not in err, f"traceback on stderr:\n{err}"
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1, f"expected one error line, got:\n{err}"
    line = errors[0]
    if exit_code != 2:
        assert lines[-1] == line and line.startswith("crossent: error: "), err
    for name in names:
        assert str(name) in line, f"{name!r} not named in: {line}"
    for hidden in (".crossent-staging", ".tmp"):
        assert hidden not in line, f"an internal name leaks into: {line}"
    if folder is not None:
        assert snapshot(folder) == before, f"files changed in {folder}: {line}"
    return line


def write_blobs(path: Path, seed: int = 0, reverse: bool = False) -> Path:
    """Three overlapping Gaussian blobs of 4 features, 20 rows each, as ``.npz``; with
    ``reverse``, the same shape and labels but other rows."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), 20)
    X = 1.5 * rng.normal(size=(3, 4))[y] + rng.normal(size=(60, 4))
    if reverse:
        X, y = X[::-1], y[::-1]
    np.savez(path, X=X, y=y)
    return path
