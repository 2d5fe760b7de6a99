"""Timing helpers shared by the benchmark scripts: per-call samples, percentiles and their summary.

The scripts run as ``python benchmarks/bench_x.py``, which puts this folder on ``sys.path``, so they
import this module as ``_timing``.

Example:
    >>> samples = per_call_us(lambda i: i * i, 1000, warmup=10)
    >>> median, p99 = median_p99(samples)
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

__all__ = ["median_p99", "per_call_us", "percentile", "seconds_each"]


def per_call_us(fn: Callable[[int], object], n: int, *, warmup: int = 200) -> list[float]:
    """Microseconds each of ``n`` calls ``fn(0)`` .. ``fn(n - 1)`` took, after ``warmup`` untimed calls.

    Example:
        >>> len(per_call_us(lambda i: None, 100, warmup=0))
        100
    """
    for i in range(warmup):
        fn(i)
    samples = []
    clock = time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        fn(i)
        samples.append((clock() - t0) / 1000)
    return samples


def seconds_each(fn: Callable[[int], object], calls: range) -> list[float]:
    """Seconds each call ``fn(i)`` took, for every ``i`` in ``calls`` (no warm-up).

    Example:
        >>> len(seconds_each(lambda i: None, range(1, 6)))
        5
    """
    samples = []
    clock = time.perf_counter
    for i in calls:
        t0 = clock()
        fn(i)
        samples.append(clock() - t0)
    return samples


def percentile(samples: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of ``samples``.

    Example:
        >>> percentile([float(x) for x in range(1, 101)], 0.99)
        99.0
    """
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def median_p99(samples: list[float]) -> tuple[float, float]:
    """The median and the 99th percentile of ``samples``.

    Example:
        >>> median_p99([1.0, 2.0, 3.0])
        (2.0, 3.0)
    """
    return statistics.median(samples), percentile(samples, 0.99)
