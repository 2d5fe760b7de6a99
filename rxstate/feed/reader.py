"""The change feed: every partition's change stream, read, decoded into ``Change`` objects and fanned out.

Each write appends one record per entity operation to its partition's stream ``rx:{ns:p}:changes``
(see ``lua/mutate.lua``). A ``ChangeFeed`` follows all of them:

- On a standalone server (and fakeredis) one thread blocks in a single ``XREAD`` over every partition
  stream. On a cluster a multi-key ``XREAD`` across slots is refused, so one thread per partition blocks
  on that partition's stream alone (the cluster client routes each to the node owning the slot).
- It remembers the last offset read per partition. A dropped connection or a restarted server is retried
  with backoff from those offsets, so no record is skipped or read twice.
- Records of one transaction that touched several partitions (same ``x``, ``n`` > 1) are held back
  until all its partitions' records have arrived, then delivered together in one batch. Per-partition
  order is kept: later records of a partition wait behind a held transaction.
- Batches are offered to subscribers' bounded mailboxes (``rxstate.delivery``); the feed thread never
  runs subscriber code.

A store has one shared feed, started by its first subscriber and stopped by ``store.close()``. A
subscription that replays from an offset (``since=``) or reads through a consumer group (``group=``)
gets a private feed of its own, which lives as long as that subscription.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
from reactivex import abc

from rxstate.core.errors import ServerError, ValidationError
from rxstate.feed.assembly import Assembler, Decoder, FeedMetrics
from rxstate.feed.change import OFFSET_PATTERN, Change, offset_key
from rxstate.feed.delivery import (
    Dispatcher,
    Fanout,
    Mailbox,
    dispatch,
)

if TYPE_CHECKING:
    from rxstate.store.store import Store


__all__ = ["ChangeFeed", "check_since"]

log = logging.getLogger("rxstate.changes")
_BLOCK_MS = 1000
READ_COUNT = 500
_BACKOFF = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


@dataclass
class _Reader:
    """A thread blocking on some partitions' streams (all on standalone, one on a cluster)."""

    def __init__(self, feed: ChangeFeed, partitions: list[int]) -> None:
        self.feed = feed
        self.partitions = partitions
        ks = feed.store.keyspace
        self.keys = {ks.changes(p): p for p in partitions}
        self.keys_b = {k.encode(): p for k, p in self.keys.items()}
        self.thread = threading.Thread(target=self._run, name=f"rxstate-feed-{partitions[0]}", daemon=True)

    def _read(self) -> Any:
        feed = self.feed
        client = feed.store.client
        if feed.group is None:
            streams = {k: feed.positions[p] for k, p in self.keys.items()}
            return client.xread(streams, count=feed.read_count, block=_BLOCK_MS)
        streams = {k: feed.group_cursor[p] for k, p in self.keys.items()}
        block = None if any(v != ">" for v in streams.values()) else _BLOCK_MS
        if block is not None and feed.claim_after is not None:
            block = max(1, min(block, int(feed.claim_after * 500)))  # wake up to look for abandoned changes
        return client.xreadgroup(feed.group, feed.consumer, streams, count=feed.read_count, block=block)

    def _guarded(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except (redis.RedisError, OSError) as exc:  # a check only: never stop reading over it
            log.debug("change feed: %r", exc)

    def _claim(self) -> Any:
        """Entries another consumer of the group took but left unacknowledged for ``claim_after`` s."""
        feed = self.feed
        assert feed.claim_after is not None
        idle_ms = max(1, int(feed.claim_after * 1000))
        reply = []
        for key in self.keys:
            claimed = feed.store.client.xautoclaim(
                key, feed.group, feed.consumer, min_idle_time=idle_ms, start_id="0-0", count=feed.read_count
            )
            if claimed and claimed[1]:
                reply.append((key.encode(), claimed[1]))
                feed.metrics_data.claimed += len(claimed[1])
        return reply

    def check_gaps(self) -> None:
        """Count partitions whose stream was trimmed past this reader's position (while it was away,
        or before a replay's starting point): changes after that position may be lost."""
        feed = self.feed
        if feed.group is not None:
            return
        for key, p in self.keys.items():
            position = feed.positions.get(p, "0-0")
            if position in ("0-0", "0"):
                continue
            try:
                first = feed.store.client.xinfo_stream(key).get("first-entry")
            except redis.ResponseError:  # no such stream (yet)
                continue
            if not first:
                continue
            oldest = first[0].decode() if isinstance(first[0], bytes) else first[0]
            if offset_key(oldest) > offset_key(position):
                feed.metrics_data.gaps += 1
                log.warning(
                    "change feed: partition %d was trimmed past offset %s (oldest kept: %s); changes in "
                    "between are lost to this reader (raise change_retention?)",
                    p,
                    position,
                    oldest,
                )
                feed._gap(p, position, oldest)

    def _run(self) -> None:
        feed = self.feed
        failures = 0
        if feed._since is not None:
            self._guarded(self.check_gaps)
        next_claim = time.monotonic() + (feed.claim_after or 0) / 2
        while not feed.stopped:
            try:
                if (
                    feed.claim_after is not None
                    and time.monotonic() >= next_claim
                    and all(feed.group_cursor[p] == ">" for p in self.partitions)  # own pending ones first
                ):
                    next_claim = time.monotonic() + feed.claim_after / 2
                    reply = self._claim()
                    if not reply:
                        continue
                else:
                    reply = self._read()
                if failures:
                    self._guarded(self.check_gaps)
                failures = 0
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                if feed.stopped:
                    return
                feed.metrics_data.reconnects += 1
                feed._connection_lost()
                log.debug("change feed: %s; retrying from %s", exc, feed.positions)
                feed._stop.wait(_BACKOFF[min(failures, len(_BACKOFF) - 1)])
                failures += 1
                continue
            except redis.ResponseError as exc:
                if feed.stopped:
                    return
                if "NOGROUP" in str(exc) and feed.group is not None:
                    feed._create_group(self.partitions, "0")
                    continue
                log.warning("change feed: %s", exc)
                feed._stop.wait(_BACKOFF[-1])
                continue
            except Exception as exc:  # e.g. a closed client during shutdown
                if feed.stopped:
                    return
                log.warning("change feed: unexpected %r", exc)
                feed._stop.wait(_BACKOFF[-1])
                continue
            if feed.stopped:
                return
            try:
                self._handle(reply)
            except Exception as exc:  # never let one bad record or subscriber end the feed
                log.error("change feed: dropped a reply it could not handle: %r", exc)

    def _handle(self, reply: Any) -> None:
        feed = self.feed
        if isinstance(reply, dict):  # RESP3
            reply = list(reply.items())
        items: list[tuple[int, list[Change], bool]] = []
        decode = feed.decoder.decode
        for key, records in reply or ():
            p = self.keys_b.get(key) if isinstance(key, bytes) else self.keys.get(key)
            if p is None:
                continue
            changes = []
            last = None
            for entry in records:
                offset, raw = entry[0], entry[1]
                last = offset
                if raw is None:  # a pending entry that was trimmed away
                    continue
                try:
                    change = decode(p, offset, raw)
                except (ValueError, UnicodeDecodeError) as exc:  # not written by rxstate: skip it
                    feed.metrics_data.undecodable += 1
                    log.warning("change feed: skipping record %r of partition %d: %r", offset, p, exc)
                    continue
                if feed.group is not None and (p, change.offset) in feed.inflight:
                    continue
                changes.append(change)
            if feed.group is not None:
                if feed.group_cursor[p] != ">":
                    if last is None:
                        feed.group_cursor[p] = ">"
                    else:
                        feed.group_cursor[p] = last.decode() if isinstance(last, bytes) else last
                for c in changes:
                    feed.inflight.add((p, c.offset))
            if last is not None:
                feed.positions[p] = last.decode() if isinstance(last, bytes) else last
            feed.metrics_data.records += len(changes)
            items.append((p, changes, len(records) < feed.read_count))
        if feed.group is not None and not reply:
            for p in self.partitions:  # nothing pending any more
                feed.group_cursor[p] = ">"
        if items:
            feed.assembler.ingest(items)
        else:
            feed.assembler.tick()


class ChangeFeed:
    """Follows every partition's change stream of a store and fans batches out to mailboxes.

    Use ``store.changes(...)`` rather than this class; ``store.change_feed`` is the shared instance
    (for ``metrics()`` and ``positions``).

    Args:
        store: the store to follow.
        since: where to start: None for "from now", a stream offset for every partition (offsets are
            times, so this replays what happened after that moment), or ``{partition: offset}``.
        group: a consumer group name, for a durable shared subscription (acknowledged after delivery).
        consumer: this consumer's name within the group.
        read_count: the most records read from one stream at once (a consumer in a group takes no
            more than it can buffer, leaving the rest to other consumers).
        claim_after: in a group, take over changes another consumer has left unacknowledged for this
            many seconds (it crashed or hangs); None never takes any over.

    Example:
        >>> store.change_feed.metrics()["delivered"]  # nothing delivered yet
        0
    """

    def __init__(
        self,
        store: Store,
        *,
        since: str | Mapping[int, str] | None = None,
        group: str | None = None,
        consumer: str | None = None,
        read_count: int = READ_COUNT,
        claim_after: float | None = None,
    ) -> None:
        self.store = store
        self.read_count = read_count
        self.claim_after = claim_after if group is not None else None
        self.group = group
        self.consumer = consumer or store.actor
        self.metrics_data = FeedMetrics()
        self.decoder = Decoder(store)
        n = store.keyspace.partitions
        self.positions: dict[int, str] = {}
        self.group_cursor: dict[int, str] = dict.fromkeys(range(n), "0")
        self.inflight: set[tuple[int, str]] = set()
        self._since = check_since(since, n)
        self._boxes: list[Mailbox[Change] | Fanout[Change]] = []
        self._fanouts: dict[Hashable, Fanout[Change]] = {}
        self._boxes_lock = threading.Lock()
        self.dispatcher = Dispatcher(metrics=self.metrics_data)
        self.assembler = Assembler(n, self._emit, self.metrics_data)
        self._stop = threading.Event()
        self._readers: list[_Reader] = []
        self._started = False
        self._start_lock = threading.Lock()
        self._gap_listeners: list[Callable[[int, str, str], None]] = []

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def metrics(self) -> dict[str, int]:
        """Counters: records read, batches, delivered, coalesced/dropped, subscriber errors, reconnects.

        Example:
            >>> store.change_feed.metrics()["subscriber_errors"]
            0
        """
        out = self.metrics_data.as_dict()
        boxes = self._boxes
        out["subscribers"] = sum(len(b) if isinstance(b, Fanout) else 1 for b in boxes)
        return out

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> ChangeFeed:
        """Find the starting offsets and start the reader threads (idempotent).

        Example:
            >>> store.change_feed.start().stopped
            False
        """
        # The lock is not held across the server calls that find the offsets: two starters on one thread
        # (coroutines of the asyncio front) would deadlock on it. Both may read; the first one in starts.
        with self._start_lock:
            if self._started:
                return self
            if self.stopped:
                raise ServerError("this change feed was stopped")
        positions = self._initial_positions()
        with self._start_lock:
            if self._started:
                return self
            if self.stopped:
                raise ServerError("this change feed was stopped")
            self.positions.update(positions)
            parts = list(range(self.store.keyspace.partitions))
            groups = [[p] for p in parts] if self.store.is_cluster else [parts]
            self._readers = [_Reader(self, g) for g in groups]
            for reader in self._readers:
                reader.thread.start()
            self._started = True
        return self

    def _initial_positions(self) -> dict[int, str]:
        ks = self.store.keyspace
        n = ks.partitions
        if self.group is not None:
            start = "$" if self._since is None else None
            self._create_group(range(n), start)
            return dict.fromkeys(range(n), "0-0")
        if isinstance(self._since, Mapping):
            return {p: self._since.get(p, "0-0") for p in range(n)}
        if isinstance(self._since, str):
            return dict.fromkeys(range(n), self._since)
        # "From now": the last id of every stream, read in one MULTI on a single server so that no
        # script (a transaction spanning partitions) runs between two of them.
        pipe = self.store.client.pipeline(transaction=not self.store.is_cluster)
        for p in range(n):
            pipe.xrevrange(ks.changes(p), count=1)
        positions: dict[int, str] = {}
        for p, last in enumerate(pipe.execute()):
            offset = last[0][0] if last else b"0-0"
            positions[p] = offset.decode() if isinstance(offset, bytes) else offset
        return positions

    def _create_group(self, partitions: Iterable[int], start: str | None) -> None:
        ks = self.store.keyspace
        for p in partitions:
            begin = start
            if begin is None:
                since = self._since
                begin = since.get(p, "0-0") if isinstance(since, Mapping) else (since or "$")
            try:
                self.store.client.xgroup_create(ks.changes(p), self.group, id=begin, mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def stop(self) -> None:
        """Stop reading and delivering. Readers blocked on the server notice within a second.

        Example:
            >>> feed = store.change_feed.start()
            >>> feed.stop()  # store.close() does this
            >>> feed.stopped
            True
        """
        self._stop.set()
        self.dispatcher.close()
        with self._boxes_lock:
            boxes, self._boxes = self._boxes, []
        for box in boxes:
            box.close()

    def on_gap(self, listener: Callable[[int, str, str], None]) -> None:
        """Call ``listener(partition, last_offset_read, oldest_offset_kept)`` (on the reader thread) when
        a partition's stream turns out trimmed past this feed's position, so changes were lost to it.

        Example:
            >>> store.change_feed.on_gap(lambda p, last, oldest: store.cache.clear())
        """
        self._gap_listeners.append(listener)

    def _gap(self, partition: int, position: str, oldest: str) -> None:
        _call_each(self._gap_listeners, "gap", partition, position, oldest)

    def _connection_lost(self) -> None:
        if self.group is not None:
            # Entries the server handed out while the reply was lost are in our pending list: read
            # that list again (entries already in flight here are skipped).
            for p in self.group_cursor:
                self.group_cursor[p] = "0"

    # -- fan-out ------------------------------------------------------------------------------------
    def attach(self, box: Mailbox[Change]) -> None:
        """Start offering batches to ``box``."""
        with self._boxes_lock:
            self._boxes = [*self._boxes, box]
        self.start()

    def detach(self, box: Mailbox[Change] | Fanout[Change]) -> None:
        """Stop offering batches to ``box`` and close it."""
        with self._boxes_lock:
            self._boxes = [b for b in self._boxes if b is not box]
        box.close()

    def join(self, key: Hashable, make: Callable[[], Fanout[Change]], observer: abc.ObserverBase[Any]) -> Any:
        """Add a plain subscriber to the fan-out of its kind (``key``), creating that fan-out if needed."""
        with self._boxes_lock:
            fan = self._fanouts.get(key)
            if fan is None or fan.closed:
                fan = self._fanouts[key] = make()
                self._boxes = [*self._boxes, fan]
            on_next = observer.on_next

            def emit(batch: tuple[Change, ...]) -> None:
                for change in batch:
                    on_next(change)

            member = fan.add(emit, observer.on_error, on_next)
        self.start()
        return fan, member

    def leave(self, key: Hashable, fan: Fanout[Change], member: Any) -> None:
        """Remove a subscriber added with ``join``; an emptied fan-out is dropped."""
        with self._boxes_lock:
            if fan.remove(member) and self._fanouts.get(key) is fan:
                del self._fanouts[key]
                self._boxes = [b for b in self._boxes if b is not fan]
                fan.close()

    def _emit(self, batch: tuple[Change, ...]) -> None:
        self.metrics_data.batches += 1
        cache = self.store._cache
        if cache is not None:
            # A subscriber (a derived value, a watcher) may read what changed as soon as it hears of
            # it; the feed can be faster than the cache's invalidation, so drop older cached values
            # first: a reader then never meets a value older than the change it was told about.
            ks = self.store.keyspace
            cache.invalidate_older([(ks.entity(c.collection, c.id, c.partition), c.offset) for c in batch])
        router = self.store.replica_reads
        if router is not None:  # likewise, its replica reads must not be older than what it is told of
            router.seen([(c.partition, c.offset) for c in batch])
        dispatch(self._boxes, batch, self.dispatcher)

    def ack(self, changes: Iterable[Change]) -> None:
        """Acknowledge changes read through a consumer group (done after each delivery)."""
        if self.group is None:
            return
        by_partition: dict[int, list[str]] = {}
        for c in changes:
            by_partition.setdefault(c.partition, []).append(c.offset)
        ks = self.store.keyspace
        for p, offsets in by_partition.items():
            for attempt in range(len(_BACKOFF)):
                try:
                    self.store.client.xack(ks.changes(p), self.group, *offsets)
                    break
                except (redis.ConnectionError, redis.TimeoutError):
                    if self.stopped:
                        return
                    time.sleep(_BACKOFF[attempt])
            self.inflight.difference_update((p, o) for o in offsets)


def _call_each(listeners: Iterable[Callable[..., None]], what: str, *args: Any) -> None:
    """Call every listener with ``args``; one that raises is logged and the others still run."""
    for listener in list(listeners):
        try:
            listener(*args)
        except Exception as exc:
            log.warning("%s listener failed: %r", what, exc)


def check_since(since: Any, partitions: int) -> str | Mapping[int, str] | None:
    if since is None:
        return None
    if isinstance(since, Change):
        return since.offset
    if isinstance(since, str):
        if not OFFSET_PATTERN.match(since):
            raise ValidationError(f"since must be a stream offset like '1700000000000-0', not {since!r}")
        return since if "-" in since else f"{since}-0"
    if isinstance(since, Mapping):
        out = {}
        for p, offset in since.items():
            if not isinstance(p, int) or not 0 <= p < partitions:
                raise ValidationError(f"since: {p!r} is not a partition (0..{partitions - 1})")
            checked = check_since(offset, partitions)
            assert isinstance(checked, str)
            out[p] = checked
        return out
    raise ValidationError(f"since must be an offset, a Change or {{partition: offset}}, not {since!r}")
