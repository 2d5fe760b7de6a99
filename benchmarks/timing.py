"""Timing helpers shared by the benchmark scripts: per-call samples, percentiles and their summary.

Used by ``python -m benchmarks`` and by the detailed scripts (``python -m benchmarks.bench_x``).

Example:
    >>> samples = per_call_us(lambda i: i * i, 1000, warmup=10)
    >>> median, p99 = median_p99(samples)
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping

__all__ = ["interleaved_us", "median_p99", "per_batch_us", "per_call_us", "percentile", "seconds_each"]


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


def interleaved_us(fns: Mapping[str, Callable[[int], object]], n: int, *, warmup: int = 200) -> dict[str, list[float]]:
    """Microseconds per call of each of ``fns``, timed call by call in turn, so drift hits all alike.

    Call ``i`` of every function gets the same ``i``: warm-up calls get ``n .. n + warmup - 1``, timed
    calls ``0 .. n - 1``, so a function that must not repeat an argument (a unique email) never does.

    Example:
        >>> times = interleaved_us({"a": lambda i: None, "b": lambda i: i * i}, 100, warmup=5)
        >>> sorted(times), len(times["a"])
        (['a', 'b'], 100)
    """
    for i in range(n, n + warmup):
        for fn in fns.values():
            fn(i)
    out: dict[str, list[float]] = {name: [] for name in fns}
    pairs = [(out[name], fn) for name, fn in fns.items()]
    clock = time.perf_counter_ns
    for i in range(n):
        for samples, fn in pairs:
            t0 = clock()
            fn(i)
            samples.append((clock() - t0) / 1000)
    return out


def per_batch_us(fn: Callable[[], object], rounds: int, *, batch: int = 200) -> list[float]:
    """Microseconds per call of ``fn``, one sample per batch of ``batch`` calls (for sub-µs calls,
    where one clock read costs about as much as the call).

    Example:
        >>> len(per_batch_us(lambda: None, 10, batch=50))
        10
    """
    samples = []
    clock = time.perf_counter_ns
    for _ in range(rounds):
        t0 = clock()
        for _ in range(batch):
            fn()
        samples.append((clock() - t0) / 1000 / batch)
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
