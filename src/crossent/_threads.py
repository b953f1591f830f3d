"""Threads: how many cores, and BLAS held to one thread where crossent parallelises itself.

OpenBLAS spends more on thread hand-offs than on small matrix products, and its threads
would compete with crossent's own threads over row chunks.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

__all__ = ["available_cores", "resolve_n_threads", "single_threaded_blas"]

PARALLEL_WORK = 2**25  # multiply-adds per evaluation above which threads pay off
_controller: ThreadpoolController | None = None


def available_cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return int(os.cpu_count() or 1)


def resolve_n_threads(n_jobs: int | None, work: float = np.inf) -> int:
    """Threads for chunk parallelism.

    ``-1`` → all cores, ``-k`` → all but ``k − 1``, ``k`` → ``k``; ``None`` → all cores when
    the work (multiply-adds, e.g. ``n · d · C`` for one evaluation) is at least 2**25, else
    1: below that, handing work to threads costs more than it saves.
    """
    cores = available_cores()
    if n_jobs is None:
        return cores if work >= PARALLEL_WORK else 1
    if not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0:
        raise ValueError(f"n_jobs must be None, -1 or a positive integer, got {n_jobs!r}")
    return max(1, cores + 1 + int(n_jobs)) if n_jobs < 0 else int(n_jobs)


def single_threaded_blas() -> Any:
    """A context in which BLAS runs on one thread."""
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")
