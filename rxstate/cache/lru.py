"""The local read cache: an LRU of decoded entities that is never knowingly stale.

An ``EntityCache`` maps an entity key (``rx:{ns:p}:<collection>:<id>``) to the ``Versioned`` value last
seen for it. Models are frozen, so a hit hands out the very instance that was stored: no copy.

Three rules keep it fresh:

- **Newer wins.** An entry is replaced only by one whose change-stream offset (``Versioned.offset``) is
  at least as recent; offsets of one partition are totally ordered, across deletes and re-creations.
- **Invalidation epochs.** Every invalidation (a write by anyone, an own delete, a lost connection)
  advances a global epoch and remembers, per key, the epoch it happened at. A value read from the server
  (or returned by an own write) is inserted only if no invalidation of its key happened since the read
  started, so a read that races with an invalidation cannot put stale data back.
- **Bypass while blind.** The cache serves hits only while an invalidation feed is connected
  (``activate``); when the feed drops, ``deactivate`` clears it and every read goes to the server until
  the feed is back.

Entries may carry a deadline (from the key's TTL): past it, the entry is dropped, so an expiry is never
missed even where the server reports it late (or, like fakeredis, never).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from cachetools import LRUCache

from rxstate.core.errors import ValidationError
from rxstate.core.versioned import Versioned

__all__ = ["CacheStats", "EntityCache"]

_RECENT_INVALIDATIONS = 8192
_DELAY_SAMPLES = 4096
_PENDING_WRITES = 4096


class _Entry(NamedTuple):
    versioned: Versioned[Any]
    nbytes: int
    deadline: float  # time.monotonic() after which the entry is gone; 0.0: no TTL
    offset: tuple[int, int]
    refresh_until: float  # until then, an eviction queues a background re-read (own write of a read key)


class CacheStats(NamedTuple):
    """A snapshot of cache metrics (``store.cache.stats()``).

    Attributes:
        hits: reads answered from the cache.
        misses: reads that went to the server while the cache was active.
        bypassed: reads that went to the server because the invalidation feed was down.
        evictions: entries dropped to stay within the size limit.
        invalidations: cached entries dropped because their key changed (by anyone).
        expirations: cached entries dropped because their TTL passed.
        rejected: values not inserted because their key was invalidated while they were in flight.
        entries: entries held now.
        size: current size, in entries or in bytes (see ``sized_by``).
        max_size: the limit, in the same unit.
        sized_by: ``"entries"`` or ``"bytes"``.
        active: whether the cache serves hits now (the invalidation feed is connected).
        mode: the invalidation mechanism in use (``"tracking"`` or ``"keyspace"``), or None.
        disconnects: how often the invalidation feed was lost.
        refreshes: keys re-read in the background after an own write's invalidation evicted them.
        delay_samples: how many own writes had their invalidation delay measured.
        delay_p50_ms, delay_p99_ms, delay_max_ms: observed delay between a write returning to its
            writer and the eviction of its key here (0 when the eviction came first).
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
    delay_samples: int
    delay_p50_ms: float | None
    delay_p99_ms: float | None
    delay_max_ms: float | None

    @property
    def hit_rate(self) -> float:
        """Hits over all reads (0.0 before the first read)."""
        total = self.hits + self.misses + self.bypassed
        return self.hits / total if total else 0.0


class _LRU(LRUCache):  # type: ignore[type-arg]
    """``LRUCache`` that reports capacity evictions (not explicit removals)."""

    def __init__(self, maxsize: int, getsizeof: Callable[[Any], int] | None, on_evict: Callable[[], None]) -> None:
        super().__init__(maxsize, getsizeof)
        self._on_evict = on_evict

    def popitem(self) -> tuple[Any, Any]:
        item = super().popitem()
        self._on_evict()
        return item


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


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[int(q * (len(ordered) - 1))]


class EntityCache:
    """A thread-safe LRU of decoded entities with invalidation epochs.

    Args:
        max_entries: the most entries to keep (when ``max_bytes`` is None).
        max_bytes: if given, size the cache by the stored bytes of its entries instead.

    Example:
        >>> cache = EntityCache(max_entries=1000)
        >>> cache.stats().max_size
        1000
    """

    def __init__(self, *, max_entries: int = 10_000, max_bytes: int | None = None) -> None:
        if max_bytes is not None:
            if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
                raise ValidationError(f"cache_bytes must be a positive int, not {max_bytes!r}")
            self._lru = _LRU(max_bytes, lambda e: e.nbytes, self._count_eviction)
            self.sized_by = "bytes"
        else:
            if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
                raise ValidationError(f"cache_size must be a positive int, not {max_entries!r}")
            self._lru = _LRU(max_entries, None, self._count_eviction)
            self.sized_by = "entries"
        self._lock = threading.Lock()
        self._active = False
        self.mode: str | None = None
        self._epoch = 1
        self._reset_epoch = 1  # fills that started before this epoch are refused (cleared since)
        self._recent: OrderedDict[str, int] = OrderedDict()  # key -> epoch of its last invalidation
        self._horizon = 0  # invalidations at or before this epoch were forgotten
        self._write_returned: OrderedDict[str, float] = OrderedDict()  # own write's return time, per key
        self._invalidated_at: OrderedDict[str, float] = OrderedDict()
        self._delays: deque[float] = deque(maxlen=_DELAY_SAMPLES)
        self._delay_count = 0
        self.hits = self.misses = self.bypassed = 0
        self.evictions = self.invalidations = self.expirations = self.rejected = 0
        self.disconnects = 0
        self.refreshes = 0
        self._refresh: dict[str, float] = {}
        self.refresh_wanted = threading.Event()

    def _count_eviction(self) -> None:
        self.evictions += 1

    # -- reads ---------------------------------------------------------------------------------
    def get(self, key: str) -> Versioned[Any] | None:
        """The cached value of ``key``, or None on a miss (then read the server and ``fill``).

        Example:
            >>> EntityCache().get("rx:{ns:0}:agents:a1") is None
            True
        """
        if not self._active:
            self.bypassed += 1
            return None
        with self._lock:
            try:
                entry = self._lru[key]
            except KeyError:
                self.misses += 1
                return None
            if entry.deadline and entry.deadline <= time.monotonic():
                del self._lru[key]
                self.expirations += 1
                self.misses += 1
                return None
            self.hits += 1
            versioned: Versioned[Any] = entry.versioned
            return versioned

    def token(self) -> int:
        """The epoch to pass to ``fill``/``put``: take it BEFORE asking the server.

        Returns 0 while the cache is inactive (such a token is always refused).
        """
        return self._epoch if self._active else 0

    def fill(
        self,
        key: str,
        value: Versioned[Any],
        *,
        token: int,
        nbytes: int = 1,
        deadline: float = 0.0,
        refresh_until: float = 0.0,
    ) -> bool:
        """Insert a value read from the server (or returned by an own write) at ``token``.

        Refused when the cache is inactive, was cleared, or ``key`` was invalidated since ``token``,
        and when the entry already held is newer (higher offset).

        Args:
            key: the entity key.
            value: the decoded value.
            token: ``token()`` taken before the read or write was sent.
            nbytes: stored size of the entity (its field names and values).
            deadline: ``time.monotonic()`` at which the entity expires; 0.0 for no TTL.
            refresh_until: for a value written by this store to a key that was cached: until this
                ``time.monotonic()``, an invalidation that evicts or refuses it queues the key for a
                background re-read (the invalidation is most likely the echo of the write itself, and
                which echo belongs to which write cannot be told).

        Returns:
            Whether the value is now cached.

        Example:
            >>> cache = EntityCache()
            >>> cache.fill("k", v, token=cache.token())  # doctest: +SKIP
            False
        """
        offset = parse_offset(value.offset)
        with self._lock:
            if (
                not self._active
                or token < self._reset_epoch
                or token <= self._horizon
                or self._recent.get(key, 0) > token
            ):
                self.rejected += 1
                if refresh_until and self._active:
                    self._want_refresh(key, refresh_until)
                return False
            held = self._lru.get(key)
            if held is not None and held.offset > offset:
                return False
            try:
                self._lru[key] = _Entry(value, nbytes, deadline, offset, refresh_until)
            except ValueError:  # larger than the whole cache
                self._lru.pop(key, None)
                return False
            return True

    def deadline_of(self, key: str) -> float | None:
        """The deadline held for ``key`` (0.0: no TTL), or None when it is not cached."""
        with self._lock:
            entry = self._lru.get(key)
            return None if entry is None else entry.deadline

    # -- invalidation --------------------------------------------------------------------------
    def invalidate(self, key: str) -> None:
        """Drop ``key`` and refuse in-flight values of it (its server value changed or may have).

        Example:
            >>> EntityCache().invalidate("rx:{ns:0}:agents:a1")
        """
        self.invalidate_many((key,))

    def invalidate_many(self, keys: Any) -> None:
        """``invalidate`` for several keys under one lock acquisition."""
        now = time.monotonic()
        with self._lock:
            recent = self._recent
            for key in keys:
                self._epoch += 1
                recent[key] = self._epoch
                recent.move_to_end(key)
                popped = self._lru.pop(key, None)
                if popped is not None:
                    self.invalidations += 1
                    if popped.refresh_until > now:
                        self._want_refresh(key, popped.refresh_until)
                returned = self._write_returned.pop(key, None)
                if returned is not None:
                    self._record_delay(now - returned)
                else:
                    self._invalidated_at[key] = now
                    self._invalidated_at.move_to_end(key)
            while len(recent) > _RECENT_INVALIDATIONS:
                _, forgotten = recent.popitem(last=False)
                self._horizon = max(self._horizon, forgotten)
            while len(self._invalidated_at) > _PENDING_WRITES:
                self._invalidated_at.popitem(last=False)

    def invalidate_older(self, changes: Iterable[tuple[str, str]]) -> None:
        """Drop cached values older than a change seen on the change feed: ``(key, offset)`` pairs.

        An entry at or past the change's offset (e.g. filled by the write itself) stays.

        Example:
            >>> EntityCache().invalidate_older([("rx:{ns:0}:agents:a1", "1700000000000-0")])
        """
        stale = []
        with self._lock:
            for key, offset in changes:
                held = self._lru.get(key)
                if held is not None and held.offset < parse_offset(offset):
                    stale.append(key)
        if stale:
            self.invalidate_many(stale)

    def _want_refresh(self, key: str, until: float) -> None:
        self._refresh[key] = max(until, self._refresh.get(key, 0.0))
        self.refresh_wanted.set()

    def request_refresh(self, key: str, until: float) -> None:
        """Queue ``key`` for a background re-read (while the cache is active); see ``fill``."""
        with self._lock:
            if self._active:
                self._want_refresh(key, until)

    def take_refresh(self) -> dict[str, float]:
        """The keys queued for a background re-read since the last call, with their refresh windows."""
        with self._lock:
            keys, self._refresh = self._refresh, {}
            self.refresh_wanted.clear()
            self.refreshes += len(keys)
            return keys

    def note_write(self, key: str, *, sent: float, returned: float) -> None:
        """Record that an own write of ``key`` was sent at ``sent`` and returned at ``returned``.

        Its invalidation (which names the same key) then yields one delay sample: how long after the
        write returned this cache dropped the key (0 when it already had).
        """
        with self._lock:
            seen = self._invalidated_at.pop(key, None)
            if seen is not None and seen >= sent:
                self._record_delay(max(0.0, seen - returned))
                return
            self._write_returned[key] = returned
            self._write_returned.move_to_end(key)
            while len(self._write_returned) > _PENDING_WRITES:
                self._write_returned.popitem(last=False)

    def _record_delay(self, seconds: float) -> None:
        self._delays.append(max(0.0, seconds))
        self._delay_count += 1

    # -- feed state ----------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """Whether the cache serves hits (its invalidation feed is connected)."""
        return self._active

    def activate(self, mode: str) -> None:
        """Start serving hits: the invalidation feed (``mode``) is connected and subscribed."""
        with self._lock:
            self._lru.clear()
            self._epoch += 1
            self._reset_epoch = self._epoch
            self.mode = mode
            self._active = True

    def deactivate(self, *, lost: bool = True) -> None:
        """Stop serving hits and forget everything (the invalidation feed is down or closed)."""
        with self._lock:
            if lost and self._active:
                self.disconnects += 1
            self._active = False
            self._lru.clear()
            self._epoch += 1
            self._reset_epoch = self._epoch
            self._write_returned.clear()
            self._invalidated_at.clear()
            self._refresh.clear()

    def clear(self) -> None:
        """Forget every entry (the cache stays active).

        Example:
            >>> store.cache.clear()  # doctest: +SKIP
        """
        with self._lock:
            self._lru.clear()
            self._epoch += 1
            self._reset_epoch = self._epoch

    def __len__(self) -> int:
        return len(self._lru)

    def __contains__(self, key: object) -> bool:
        return key in self._lru

    def stats(self) -> CacheStats:
        """A snapshot of the cache's metrics.

        Example:
            >>> s = store.cache.stats()  # doctest: +SKIP
            >>> s.hits, s.misses, s.hit_rate, s.delay_p99_ms  # doctest: +SKIP
        """
        with self._lock:
            delays = sorted(self._delays)
            return CacheStats(
                hits=self.hits,
                misses=self.misses,
                bypassed=self.bypassed,
                evictions=self.evictions,
                invalidations=self.invalidations,
                expirations=self.expirations,
                rejected=self.rejected,
                entries=len(self._lru),
                size=int(self._lru.currsize),
                max_size=int(self._lru.maxsize),
                sized_by=self.sized_by,
                active=self._active,
                mode=self.mode,
                disconnects=self.disconnects,
                refreshes=self.refreshes,
                delay_samples=self._delay_count,
                delay_p50_ms=_percentile(delays, 0.5) * 1000 if delays else None,
                delay_p99_ms=_percentile(delays, 0.99) * 1000 if delays else None,
                delay_max_ms=delays[-1] * 1000 if delays else None,
            )
