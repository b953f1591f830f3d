"""The one thread scheduler: row blocks over a persistent pool, with one ``n_threads`` knob.

Every parallel computation in crossent (the loss kernels, the objective's chunked pass) splits
its rows into contiguous blocks and runs them here. ``n_threads`` means the same everywhere:
``None`` chooses by the amount of work (one thread per :data:`PARALLEL_WORK` units, up to all
cores), ``-1`` all cores, ``-k`` all but ``k − 1``, ``k`` exactly ``k``. While more than one
thread runs, BLAS is held to one thread: OpenBLAS spends more on thread hand-offs than on
small matrix products, and its threads would compete with crossent's own.

Results do not depend on the thread count beyond the rounding of the per-block sums.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral
from typing import Any, TypeVar

import numpy as np
from threadpoolctl import ThreadpoolController

__all__ = [
    "PARALLEL_WORK",
    "available_cores",
    "check_n_threads",
    "map_row_blocks",
    "resolve_n_threads",
    "row_blocks",
    "single_threaded_blas",
]

T = TypeVar("T")

PARALLEL_WORK = 2**25  # work units (multiply-adds) per thread below which a thread costs more
_controller: ThreadpoolController | None = None
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_local = threading.local()  # .inside is True in a pool worker: nested calls run serially


def available_cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return int(os.cpu_count() or 1)


def check_n_threads(n_threads: Any, name: str = "n_threads") -> int | None:
    """Return ``n_threads`` as an int (or None), or raise ``ValueError`` naming ``name``."""
    if n_threads is None:
        return None
    if isinstance(n_threads, bool) or not isinstance(n_threads, Integral) or n_threads == 0:
        raise ValueError(f"{name} must be None, -1 or a positive integer, got {n_threads!r}")
    return int(n_threads)


def resolve_n_threads(n_threads: int | None, work: float = np.inf, name: str = "n_threads") -> int:
    """The number of threads to run for ``work`` units (e.g. ``n · d · C`` multiply-adds).

    ``-1`` → all cores, ``-k`` → all but ``k − 1`` (at least 1), ``k`` → ``k``; ``None`` →
    one thread per :data:`PARALLEL_WORK` units of work, at least 1 and at most all cores.
    """
    n_threads = check_n_threads(n_threads, name)
    cores = available_cores()
    if n_threads is None:
        if not work >= 2 * PARALLEL_WORK:  # also for NaN
            return 1
        return int(min(cores, work // PARALLEL_WORK)) if work < np.inf else cores
    return max(1, cores + 1 + n_threads) if n_threads < 0 else n_threads


def single_threaded_blas() -> Any:
    """A context in which BLAS runs on one thread."""
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")


def row_blocks(n_rows: int, n_blocks: int) -> list[slice]:
    """At most ``n_blocks`` contiguous, non-empty row blocks covering ``range(n_rows)``."""
    n_rows = int(n_rows)
    n_blocks = max(1, min(int(n_blocks), n_rows))
    bounds = [n_rows * k // n_blocks for k in range(n_blocks + 1)]  # exact integers
    return [slice(bounds[k], bounds[k + 1]) for k in range(n_blocks)]


def _get_pool(n_threads: int) -> ThreadPoolExecutor:
    """The persistent pool, grown to at least ``n_threads`` workers."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool._max_workers < n_threads:
            old, _pool = _pool, ThreadPoolExecutor(n_threads, thread_name_prefix="crossent")
            if old is not None:
                old.shutdown(wait=False)
        return _pool


def _in_worker(work: Callable[[slice], T], rows: slice) -> T:
    _local.inside = True
    try:
        return work(rows)
    finally:
        _local.inside = False


def map_row_blocks(work: Callable[[slice], T], n_rows: int, n_threads: int) -> list[T]:
    """``[work(block) for block in row_blocks(n_rows, n_threads)]``, the blocks in parallel.

    ``n_threads`` is a resolved count (see :func:`resolve_n_threads`). With more than one
    block the first runs in the calling thread and the others on the persistent pool, BLAS
    held to one thread meanwhile; a call from inside a block runs its own blocks serially
    (no nested parallelism, no deadlock). Results come back in block order.
    """
    blocks = row_blocks(n_rows, n_threads) if n_rows else [slice(0, 0)]
    if len(blocks) == 1 or getattr(_local, "inside", False):
        return [work(block) for block in blocks]
    pool = _get_pool(len(blocks) - 1)
    with single_threaded_blas():
        futures = [pool.submit(_in_worker, work, block) for block in blocks[1:]]
        try:
            first = _in_worker(work, blocks[0])
        finally:
            others = [future.result() for future in futures]  # no worker left running
        return [first, *others]
