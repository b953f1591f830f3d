"""Timing shared by the benchmark scripts."""

from __future__ import annotations

import time
from collections.abc import Callable


def timings(fn: Callable[[], object], repeat: int) -> list[float]:
    """Seconds of ``repeat`` calls of ``fn``, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def best_of(
    fn: Callable[[], object], seconds: float = 2.0, least: int = 3, most: int = 20
) -> float:
    """The fastest of ``least`` to ``most`` calls of ``fn`` (after one warm-up call), as many
    as fit in about ``seconds``."""
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-9)
    repeat = int(min(most, max(least, seconds // once)))
    return min(timings(lambda: fn(), repeat))
