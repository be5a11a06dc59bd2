"""Timing helper shared by the benchmarks (imported as ``timing``: pytest puts this folder on
the path of its test modules)."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_time(fn: Callable[[], object], repeats: int = 5) -> float:
    """The fastest of ``repeats`` timed calls of ``fn``, after one warm-up call, in seconds."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)
