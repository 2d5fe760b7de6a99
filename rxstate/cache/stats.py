"""Metrics of the local cache (``CacheStats``) and the offset arithmetic they and the cache share."""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import NamedTuple

__all__ = ["CacheStats", "DelaySamples", "parse_offset", "percentile"]

_SAMPLES = 4096
_PENDING = 4096


class CacheStats(NamedTuple):
    """A snapshot of cache metrics (``store.cache.stats()``).

    Attributes:
        hits: reads answered from the cache.
        misses: reads that went to the server while the cache was active.
        bypassed: reads that went to the server because the invalidation feed was down.
        evictions: entries dropped to stay within the size limit.
        invalidations: cached entries dropped because their key changed (by anyone).
        expirations: cached entries dropped because their TTL passed.
        rejected: values not inserted because their key was invalidated while they were in flight, or
            because they were older than a write this store made.
        entries: entries held now.
        size: current size, in entries or in bytes (see ``sized_by``).
        max_size: the limit, in the same unit.
        sized_by: ``"entries"`` or ``"bytes"``.
        active: whether the cache serves hits now (the invalidation feed is connected).
        mode: the invalidation mechanism in use (``"tracking"`` or ``"keyspace"``), or None.
        disconnects: how often the invalidation feed was lost.
        refreshes: keys re-read in the background (after an eviction of a key this store wrote, or to
            confirm an entry whose invalidation the server may have merged with another client's).
        echoes: invalidations recognised as the echo of this store's own write and not evicting its value.
        clears: how often the whole cache was dropped because the database was flushed or swapped.
        delay_samples: how many own writes had their invalidation delay measured.
        delay_p50_ms, delay_p99_ms, delay_max_ms: observed delay between a write returning to its
            writer and the arrival of its invalidation here (0 when it arrived first).
    """

    hits: int
    misses: int
    bypassed: int
    evictions: int
    invalidations: int
    expirations: int
    rejected: int
    entries: int
    size: int
    max_size: int
    sized_by: str
    active: bool
    mode: str | None
    disconnects: int
    refreshes: int
    echoes: int
    clears: int
    delay_samples: int
    delay_p50_ms: float | None
    delay_p99_ms: float | None
    delay_max_ms: float | None

    @property
    def hit_rate(self) -> float:
        """Hits over all reads (0.0 before the first read)."""
        total = self.hits + self.misses + self.bypassed
        return self.hits / total if total else 0.0


def parse_offset(offset: str) -> tuple[int, int]:
    """A change-stream id ``"<ms>-<seq>"`` as a comparable tuple; ``(0, 0)`` for none.

    Example:
        >>> parse_offset("1700000000000-3") > parse_offset("1700000000000-2")
        True
    """
    ms, _, seq = offset.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return (0, 0)


def percentile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of an ascending list (nearest rank below).

    Example:
        >>> percentile([1.0, 2.0, 3.0], 0.5)
        2.0
    """
    return ordered[int(q * (len(ordered) - 1))]


class DelaySamples:
    """Invalidation delays of own writes: from a write's return to its key's invalidation arriving.

    Not thread-safe: the cache calls it under its lock. A write and its invalidation may come in either
    order; the sample is 0 when the invalidation came first.

    Example:
        >>> d = DelaySamples()
        >>> d.returned("k", sent=1.0, returned=1.5)
        >>> d.invalidated("k", 1.75)
        >>> d.summary()
        (1, 250.0, 250.0, 250.0)
    """

    def __init__(self) -> None:
        self._returned: OrderedDict[str, float] = OrderedDict()  # own write's return time, per key
        self._invalidated: OrderedDict[str, float] = OrderedDict()  # arrival of an unmatched invalidation
        self._samples: deque[float] = deque(maxlen=_SAMPLES)
        self.count = 0

    def _add(self, seconds: float) -> None:
        self._samples.append(max(0.0, seconds))
        self.count += 1

    @staticmethod
    def _keep(table: OrderedDict[str, float], key: str, at: float) -> None:
        table[key] = at
        table.move_to_end(key)
        while len(table) > _PENDING:
            table.popitem(last=False)

    def invalidated(self, key: str, now: float) -> None:
        """An invalidation of ``key`` arrived at ``now``."""
        returned = self._returned.pop(key, None)
        if returned is not None:
            self._add(now - returned)
        else:
            self._keep(self._invalidated, key, now)

    def returned(self, key: str, sent: float, returned: float) -> None:
        """An own write of ``key``, sent at ``sent``, returned at ``returned``."""
        seen = self._invalidated.pop(key, None)
        if seen is not None and seen >= sent:
            self._add(seen - returned)
        else:
            self._keep(self._returned, key, returned)

    def forget_pending(self) -> None:
        """Drop unmatched writes and invalidations (the feed was lost)."""
        self._returned.clear()
        self._invalidated.clear()

    def summary(self) -> tuple[int, float | None, float | None, float | None]:
        """Samples taken, and p50, p99 and max of the recent ones in milliseconds (None before any)."""
        ordered = sorted(self._samples)
        if not ordered:
            return self.count, None, None, None
        return self.count, percentile(ordered, 0.5) * 1000, percentile(ordered, 0.99) * 1000, ordered[-1] * 1000
