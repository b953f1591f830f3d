"""Atomic file writes: a temporary file in the target's folder, then one rename.

A crash, a full disk or Ctrl-C leaves either the old file or the new one, never half of
one, and no temporary file behind. The one home of this for models, reports and CSVs.

Errors name the user's file, never the temporary one: an :class:`OSError` raised while
writing (disk full, file too large, read-only file system, permission denied) is raised
again with ``filename`` set to the target, see :func:`renamed_error`.
"""

from __future__ import annotations

import os
import secrets

__all__ = ["renamed_error", "write_atomic", "write_text_atomic"]


def renamed_error(exc: OSError, path: str | os.PathLike[str]) -> OSError:
    """``exc`` as the same kind of error about ``path`` (e.g. the target of a temporary file).

    An error without an ``errno`` (a message of crossent's own) is returned unchanged.
    """
    if exc.errno is None:
        return exc
    renamed = OSError(exc.errno, exc.strerror or os.strerror(exc.errno), os.fspath(path))
    return renamed  # OSError(errno, ...) is the matching subclass (PermissionError, ...)


def _open_temporary(path: str, directory: str) -> tuple[int, str]:
    # os.open with O_EXCL (rather than mkstemp) so that the file gets the usual umask mode.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(8)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary file in {directory}")  # pragma: no cover


def write_atomic(path: str | os.PathLike[str], payload: bytes) -> None:
    """Write ``payload`` to ``path`` atomically (the file gets the usual umask mode).

    Raises
    ------
    OSError
        If the folder is missing, or writing fails; ``filename`` is ``path`` and nothing
        is left behind (the old file, if any, is unchanged).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot write {path}: directory {directory} does not exist")
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot write {path}: it is a directory")
    try:
        fd, tmp = _open_temporary(path, directory)
    except OSError as exc:
        raise renamed_error(exc, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise renamed_error(exc, path) from None
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` as UTF-8 to ``path`` atomically."""
    write_atomic(path, text.encode("utf-8"))
