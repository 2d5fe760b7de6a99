"""The local read cache: an LRU of decoded entities that is never knowingly stale.

An ``EntityCache`` maps an entity key (``rx:{ns:p}:<collection>:<id>``) to the ``Versioned`` value last
seen for it. Models are frozen, so a hit hands out the very instance that was stored: no copy.

These rules keep it fresh:

- **Newer wins.** An entry is replaced only by one whose change-stream offset (``Versioned.offset``) is
  at least as recent; offsets of one partition are totally ordered, across deletes and re-creations.
- **Invalidation epochs.** Every invalidation (a write by anyone, an own delete, a lost connection)
  advances a global epoch and remembers, per key, the epoch it happened at. A value read from the server
  is inserted only if no invalidation of its key happened since the read started, so a read that races
  with an invalidation cannot put stale data back.
- **Read your writes.** An own write sets a per-key *floor*, its change offset: from then on no value
  older than the floor is inserted or served, whatever raced with the write.
- **Own echoes.** An own write is registered before it is sent (``begin_write``). The server reports
  the writes of a key in the order it ran them, so the first invalidation of the key that arrives after
  the registration was caused by this write or by one that ran before it: it is the write's *echo*,
  and the value the write returned stays cached. Any later invalidation wins. ``CLIENT TRACKING``
  may merge the invalidations of writes run in one server event-loop iteration into one message, so
  an echo received that way (``coalesced=True``) also schedules one background re-read of the key (at
  most one per key per ``VERIFY_INTERVAL``), which replaces the entry if another client's write was
  merged into it; the value of a key that was not cached before the write is then not kept at all.
- **Bypass while blind.** The cache serves hits only while an invalidation feed is connected
  (``activate``); when the feed drops, ``deactivate`` clears it and every read goes to the server until
  the feed is back.

Entries may carry a deadline (from the key's TTL): past it, the entry is dropped, so an expiry is never
missed even where the server reports it late (or, like fakeredis, never).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from rxstate.cache.entries import LRU, Entry, OwnWrite, remember
from rxstate.cache.stats import CacheStats, DelaySamples, parse_offset
from rxstate.core.errors import ValidationError
from rxstate.core.model import unloaded_lazy
from rxstate.core.versioned import Versioned

__all__ = ["VERIFY_INTERVAL", "CacheStats", "EntityCache", "OwnWrite", "parse_offset"]

_RECENT_INVALIDATIONS = 8192
_PENDING_WRITES = 4096
_FLOORS = 16384
ECHO_TIMEOUT = 1.0  # seconds after its reply: a later invalidation is not taken for a write's echo
VERIFY_INTERVAL = 0.05  # seconds: the most often a merged echo re-reads its key


def _equal(held: Any, read: Any) -> bool:
    """Whether a value read equals the one held, decided without I/O: a model with lazy fields not
    loaded (``rxstate.lazy``) would read them to compare, under the cache's lock; it is replaced instead."""
    if held is read:
        return True
    if unloaded_lazy(held)[1] or unloaded_lazy(read)[1]:
        return False
    return bool(held == read)


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
            self._lru = LRU(max_bytes, lambda e: e.nbytes, self._count_eviction)
            self.sized_by = "bytes"
        else:
            if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
                raise ValidationError(f"cache_size must be a positive int, not {max_entries!r}")
            self._lru = LRU(max_entries, None, self._count_eviction)
            self.sized_by = "entries"
        self._lock = threading.Lock()
        self._active = False
        self.mode: str | None = None
        self._epoch = 1
        self._reset_epoch = 1  # fills that started before this epoch are refused (cleared since)
        self._recent: OrderedDict[str, int] = OrderedDict()  # key -> epoch of its last invalidation
        self._horizon = 0  # invalidations at or before this epoch were forgotten
        self._foreign: OrderedDict[str, int] = OrderedDict()  # key -> epoch of its last non-echo invalidation
        self._foreign_horizon = 0
        self._floor: OrderedDict[str, tuple[int, int]] = OrderedDict()  # key -> offset of its last own write
        self._own: dict[str, list[OwnWrite]] = {}
        self._delays = DelaySamples()
        self.hits = self.misses = self.bypassed = 0
        self.evictions = self.invalidations = self.expirations = self.rejected = 0
        self.disconnects = self.refreshes = self.echoes = self.clears = 0
        self._refresh: dict[str, float] = {}
        self._verify: dict[str, float] = {}  # key -> when to re-read it (a merged echo)
        self._next_verify: float | None = None  # the earliest of those
        self._verified: OrderedDict[str, float] = OrderedDict()  # key -> when it was last scheduled
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
            expired = bool(entry.deadline) and entry.deadline <= time.monotonic()
            if expired or entry.offset < self._floor.get(key, entry.offset):
                del self._lru[key]  # expired, or older than a write of this store that has returned
                self.expirations += expired
                self.misses += 1
                return None
            self.hits += 1
            versioned: Versioned[Any] = entry.versioned
            return versioned

    def peek(self, key: str) -> Versioned[Any] | None:
        """The cached value of ``key`` if it may be served, without counting a hit or a miss (a write
        that builds on the value it replaces uses it; its script checks the version it names).

        Example:
            >>> EntityCache().peek("rx:{ns:0}:agents:a1") is None
            True
        """
        if not self._active:
            return None
        with self._lock:
            entry = self._lru.get(key)  # a use, for the LRU order: the entry is about to be rewritten
            if entry is None or (entry.deadline and entry.deadline <= time.monotonic()):
                return None
            if entry.offset < self._floor.get(key, entry.offset):
                return None
            versioned: Versioned[Any] = entry.versioned
            return versioned

    def token(self) -> int:
        """The epoch to pass to ``fill``: take it BEFORE asking the server.

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
        """Insert a value read from the server at ``token``.

        Refused when the cache is inactive, was cleared, or ``key`` was invalidated since ``token``,
        when the value is older than this store's last write of the key, and when the entry already
        held is newer (higher offset). An equal entry is kept as it is (the same instance).

        Args:
            key: the entity key.
            value: the decoded value.
            token: ``token()`` taken before the read was sent.
            nbytes: stored size of the entity (its field names and values).
            deadline: ``time.monotonic()`` at which the entity expires; 0.0 for no TTL.
            refresh_until: for a key this store just wrote: until this ``time.monotonic()``, an
                invalidation that evicts or refuses it queues the key for a background re-read.

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
                or offset < self._floor.get(key, offset)
            ):
                self.rejected += 1
                if refresh_until and self._active:
                    self._want_refresh(key, refresh_until)
                return False
            return self._insert(key, value, offset, nbytes, deadline, refresh_until)

    def _insert(
        self, key: str, value: Versioned[Any], offset: tuple[int, int], nbytes: int, deadline: float, until: float
    ) -> bool:
        held = self._lru.get(key)
        if held is not None:
            if held.offset > offset:
                return False
            old = held.versioned
            if held.offset == offset and old.version == value.version and _equal(old.value, value.value):
                return True  # confirmed as it is
        try:
            self._lru[key] = Entry(value, nbytes, deadline, offset, until)
        except ValueError:  # larger than the whole cache
            self._lru.pop(key, None)
            return False
        return True

    def deadline_of(self, key: str) -> float | None:
        """The deadline held for ``key`` (0.0: no TTL), or None when it is not cached."""
        with self._lock:
            entry = self._lru.get(key)
            return None if entry is None else entry.deadline

    # -- own writes ----------------------------------------------------------------------------
    def begin_write(self, key: str) -> OwnWrite | None:
        """Register a write of ``key`` by this store; call it BEFORE sending the write.

        Returns None while the cache is inactive. Finish it with ``end_write`` or ``abort_write``.

        Example:
            >>> cache = EntityCache()
            >>> cache.activate("test")
            >>> cache.begin_write("rx:{ns:0}:agents:a1").key
            'rx:{ns:0}:agents:a1'
        """
        with self._lock:
            if not self._active:
                return None
            now = time.monotonic()
            if len(self._own) > _PENDING_WRITES:
                self._sweep_writes(now)
            held = self._lru.get(key)
            write = OwnWrite(key, self._epoch, None if held is None else held.deadline, now)
            self._own.setdefault(key, []).append(write)
            return write

    def end_write(
        self,
        write: OwnWrite | None,
        key: str,
        offset: str,
        value: Versioned[Any] | None = None,
        *,
        nbytes: int = 1,
        deadline: float = 0.0,
        refresh_until: float = 0.0,
    ) -> bool:
        """The write of ``key`` returned with change ``offset``: raise the key's floor, cache ``value``.

        ``write`` is what ``begin_write`` returned (None if the cache was inactive then: only the
        floor is raised). ``value`` (what the key holds after the write) is inserted unless another
        client's invalidation of the key arrived since the registration.

        Returns:
            Whether ``value`` is now cached.
        """
        parsed = parse_offset(offset)
        now = time.monotonic()
        with self._lock:
            floor = self._floor.get(key)
            remember(self._floor, key, parsed if floor is None else max(floor, parsed), _FLOORS)
            own = self._own.get(key, [])
            if write is None or write not in own:  # never registered, or the cache was cleared since
                return False
            write.offset, write.done_at = parsed, now
            if write.absorbed:
                self._forget_write(write)
            if value is None:
                return False
            if (
                not self._active
                or write.poisoned
                or write.token < self._reset_epoch
                or write.token <= self._foreign_horizon
                or self._foreign.get(key, 0) > write.token
            ):
                self.rejected += 1
                if refresh_until and self._active:
                    self._want_refresh(key, refresh_until)
                return False
            return self._insert(key, value, parsed, nbytes, deadline, refresh_until)

    def abort_write(self, write: OwnWrite | None, key: str) -> None:
        """The write of ``key`` failed (its outcome may be unknown): forget it and evict the key."""
        with self._lock:
            if write is not None and write in self._own.get(key, []):
                self._forget_write(write)
        self.invalidate(key)

    def _forget_write(self, write: OwnWrite) -> None:
        own = self._own[write.key]
        own.remove(write)
        if not own:
            del self._own[write.key]

    def _sweep_writes(self, now: float) -> None:
        for own in list(self._own.values()):
            for write in list(own):
                if write.done_at and now - write.done_at > ECHO_TIMEOUT:
                    self._forget_write(write)

    def _echo_of(self, key: str, now: float) -> OwnWrite | None:
        """The own write whose echo an invalidation of ``key`` arriving now is, if any."""
        own = self._own.get(key)
        if not own:
            return None
        for write in list(own):
            if write.absorbed:
                continue
            if write.done_at and now - write.done_at > ECHO_TIMEOUT:
                self._forget_write(write)  # its echo is overdue: take nothing for it any more
                continue
            return write
        return None

    # -- invalidation --------------------------------------------------------------------------
    def invalidate(self, key: str) -> None:
        """Drop ``key`` and refuse in-flight values of it (its server value changed or may have).

        Example:
            >>> EntityCache().invalidate("rx:{ns:0}:agents:a1")
        """
        self.invalidate_many((key,))

    def invalidate_many(self, keys: Iterable[str], *, echoes: bool = False, coalesced: bool = False) -> None:
        """Invalidations of several keys, in the order the server reported them, under one lock.

        Args:
            keys: the keys.
            echoes: whether these are the server's reports (which may be echoes of own writes), not
                a local decision to evict.
            coalesced: whether one report may cover several writes (``CLIENT TRACKING`` merges those of
                one server event-loop iteration): an echo then also schedules a re-read of the key.
        """
        now = time.monotonic()
        with self._lock:
            for key in keys:
                self._epoch += 1
                dropped = remember(self._recent, key, self._epoch, _RECENT_INVALIDATIONS)
                if dropped is not None:
                    self._horizon = max(self._horizon, dropped)
                echo = self._echo_of(key, now) if echoes else None
                if echo is not None:
                    self._absorb(echo, now, coalesced)
                else:
                    dropped = remember(self._foreign, key, self._epoch, _RECENT_INVALIDATIONS)
                    if dropped is not None:
                        self._foreign_horizon = max(self._foreign_horizon, dropped)
                    self._drop(key, now)
                self._delays.invalidated(key, now)

    def _absorb(self, write: OwnWrite, now: float, coalesced: bool) -> None:
        key = write.key
        write.absorbed = True
        self.echoes += 1
        for other in self._own[key]:
            if other is not write and not (write.done_at and write.done_at <= other.registered_at):
                other.poisoned = True  # it overlapped this write: whose echo this is cannot be told
        held = self._lru.get(key)
        cold = coalesced and write.deadline is None
        if cold:
            write.poisoned = True  # nobody read the key: keep no value that would need a re-read
        if held is not None and (cold or not (write.done_at and held.offset >= write.offset)):
            self._drop(key, now, own=True)  # from before the write, which brings its own value
        if write.done_at:
            self._forget_write(write)
        if coalesced and not cold:
            self._want_verify(key, now)

    def _drop(self, key: str, now: float, *, own: bool = False) -> None:
        popped = self._lru.pop(key, None)
        if popped is not None and not own:  # own: replaced by the write's value, not counted
            self.invalidations += 1
            if popped.refresh_until > now:
                self._want_refresh(key, popped.refresh_until)

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
            self.invalidate_many(stale, echoes=False)

    # -- background re-reads -------------------------------------------------------------------
    def _want_refresh(self, key: str, until: float) -> None:
        self._refresh[key] = max(until, self._refresh.get(key, 0.0))
        self.refresh_wanted.set()

    def _want_verify(self, key: str, now: float) -> None:
        if key in self._verify:
            return
        due = max(now, self._verified.get(key, now - VERIFY_INTERVAL) + VERIFY_INTERVAL)
        self._verify[key] = due
        remember(self._verified, key, due, _PENDING_WRITES)
        if self._next_verify is None or due < self._next_verify:
            self._next_verify = due
            self.refresh_wanted.set()

    def request_refresh(self, key: str, until: float) -> None:
        """Queue ``key`` for a background re-read (while the cache is active); see ``fill``."""
        with self._lock:
            if self._active:
                self._want_refresh(key, until)

    def take_refresh(self) -> tuple[dict[str, float], float | None]:
        """Keys due for a background re-read (with their refresh windows), and seconds until the next.

        Example:
            >>> EntityCache().take_refresh()
            ({}, None)
        """
        now = time.monotonic()
        with self._lock:
            keys, self._refresh = self._refresh, {}
            for key, due in list(self._verify.items()):
                if due <= now:
                    keys.setdefault(key, 0.0)
                    del self._verify[key]
            self.refresh_wanted.clear()
            self.refreshes += len(keys)
            wake = self._next_verify = min(self._verify.values(), default=None)
            return keys, None if wake is None else max(0.0, wake - now)

    # -- delay samples -------------------------------------------------------------------------
    def note_write(self, key: str, *, sent: float, returned: float) -> None:
        """Record that an own write of ``key`` was sent at ``sent`` and returned at ``returned``.

        Its invalidation (which names the same key) then yields one delay sample: how long after the
        write returned it arrived here (0 when it already had).
        """
        with self._lock:
            self._delays.returned(key, sent, returned)

    # -- feed state ----------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """Whether the cache serves hits (its invalidation feed is connected)."""
        return self._active

    def activate(self, mode: str) -> None:
        """Start serving hits: the invalidation feed (``mode``) is connected and subscribed."""
        with self._lock:
            self._reset()
            self.mode = mode
            self._active = True

    def deactivate(self, *, lost: bool = True) -> None:
        """Stop serving hits and forget everything (the invalidation feed is down or closed)."""
        with self._lock:
            if lost and self._active:
                self.disconnects += 1
            self._active = False
            self._reset()
            self._delays.forget_pending()
            self._refresh.clear()

    def clear(self, *, flushed: bool = False) -> None:
        """Forget every entry (the cache stays active); ``flushed``: the database was flushed or swapped.

        Example:
            >>> store.cache.clear()  # doctest: +SKIP
        """
        with self._lock:
            self.clears += flushed
            self._reset()

    def _reset(self) -> None:
        """Forget entries, floors and own writes; refuse every value read or written before now."""
        self._lru.clear()
        self._epoch += 1
        self._reset_epoch = self._epoch
        self._floor.clear()
        self._own.clear()
        self._verify.clear()
        self._next_verify = None

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
            count, p50, p99, worst = self._delays.summary()
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
                echoes=self.echoes,
                clears=self.clears,
                delay_samples=count,
                delay_p50_ms=p50,
                delay_p99_ms=p99,
                delay_max_ms=worst,
            )
