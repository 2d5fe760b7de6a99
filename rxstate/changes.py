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

import fnmatch
import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import redis
from reactivex import Observable, abc
from reactivex.disposable import Disposable

from .codec import Codec
from .delivery import (
    DeliveryMetrics,
    Dispatcher,
    Fanout,
    Mailbox,
    Overflow,
    check_buffer,
    dispatch,
    scheduler_runner,
)
from .errors import ServerError, ValidationError

if TYPE_CHECKING:
    from .store import Store

__all__ = ["Change", "ChangeFeed", "changes_observable", "coalesce_changes", "offset_key"]

log = logging.getLogger("rxstate.changes")

ENTITY_OPS = frozenset({"create", "replace", "update", "incr", "delete", "expire"})
REMOVALS = frozenset({"delete", "expire"})
_BLOCK_MS = 1000
_COUNT = 500
_TX_WAIT_S = 2.0  # give up waiting for the rest of a transaction after this long (trimmed or partial)
_BACKOFF = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
_OFFSET = re.compile(r"^\d+(-\d+)?$")


def offset_key(offset: str) -> tuple[int, int]:
    """A stream offset (``"<ms>-<seq>"``) as a tuple that sorts like the stream does.

    Example:
        >>> offset_key("1700000000000-3") < offset_key("1700000000001-0")
        True
    """
    ms, _, seq = offset.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True, slots=True)
class Change:
    """One change of one entity, as read from its partition's change stream.

    Attributes:
        collection: the collection name.
        id: the entity id.
        op: ``create``, ``replace``, ``update``, ``incr``, ``delete`` or ``expire`` (and, from ``watch``
            and ``watch_all``, ``snapshot`` for a current value emitted first and ``leave`` for an
            entity that stopped matching ``where``).
        version: the entity's version after the change (0 after an expiry).
        fields: changed field -> new value, decoded by the collection's model when this store has the
            collection open (else the JSON-decoded value).
        actor: who made the change ("" for an expiry).
        txid: the transaction id ("" if none).
        partitions: how many partitions the transaction touched (1 without a transaction).
        timestamp_ms: server time of the change, in ms since the epoch.
        partition: the partition whose stream holds the record.
        offset: the record's stream id: offsets of one partition are totally ordered.
        schema_version: the schema version the writer used (0 for an expiry).
        value: the entity's full value after the change, where known (``watch`` fills it in).

    Example:
        >>> store.changes(collection="agents").subscribe(lambda c: print(c.op, c.id, c.fields))  # doctest: +SKIP
    """

    collection: str
    id: str
    op: str
    version: int
    fields: Mapping[str, Any]
    actor: str = ""
    txid: str = ""
    partitions: int = 1
    timestamp_ms: int = 0
    partition: int = 0
    offset: str = "0-0"
    schema_version: int = 0
    value: Any = None

    def __repr__(self) -> str:
        from .notebook._text import change_line

        return f"<Change {change_line(self)}>"

    def _repr_html_(self) -> str:
        from .notebook._html import changes_html

        return changes_html([self])

    @property
    def key(self) -> tuple[str, str]:
        """``(collection, id)``: the entity this change is about."""
        return (self.collection, self.id)

    @property
    def is_removal(self) -> bool:
        """Whether the entity is gone after this change (deleted or expired)."""
        return self.op in REMOVALS

    def then(self, later: Change) -> Change:
        """This change followed by ``later`` of the same entity, folded into one.

        Example:
            >>> a = Change("agents", "a1", "create", 1, {"name": "x", "load": 0})
            >>> a.then(Change("agents", "a1", "update", 2, {"load": 3})).fields["load"]
            3
        """
        if later.op in REMOVALS or later.op in ("create", "replace", "snapshot"):
            return later
        if self.op in REMOVALS:
            return later
        op = self.op if self.op in ("create", "replace", "snapshot") else later.op
        merged = {**self.fields, **later.fields}
        return replace(later, op=op, fields=MappingProxyType(merged))


def coalesce_changes(changes: Iterable[Change]) -> list[Change]:
    """The latest change per entity (earlier ones folded in), in order of each entity's last change.

    Example:
        >>> len(coalesce_changes([Change("a", "1", "update", 1, {}), Change("a", "1", "update", 2, {})]))
        1
    """
    latest: dict[tuple[str, str], Change] = {}
    for change in changes:
        key = (change.collection, change.id)
        before = latest.pop(key, None)
        latest[key] = change if before is None else before.then(change)
    return list(latest.values())


# -- decoding ---------------------------------------------------------------------------------------


class _Decoder:
    """Turns raw stream records into ``Change`` objects, with field values decoded by model."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def _value(self, collection: str, name: str, raw: bytes) -> Any:
        coll = self._store._collections.get(collection)
        if coll is not None and name in coll._codec.fields:
            try:
                return coll._codec.decode_value(name, raw)
            except Exception:  # an older schema or a foreign write: fall back to plain JSON
                pass
        fragment = Codec.unpack(raw)
        try:
            return json.loads(fragment)
        except ValueError:
            return fragment.decode("utf-8", "replace")

    def decode(self, partition: int, offset: bytes | str, raw: Mapping[bytes, bytes]) -> Change:
        get = raw.get
        collection = get(b"c", b"").decode()
        fields = {}
        for name, value in raw.items():
            if name[:1] == b".":
                fname = name[1:].decode()
                fields[fname] = self._value(collection, fname, value)
        return Change(
            collection=collection,
            id=get(b"i", b"").decode(),
            op=get(b"o", b"").decode(),
            version=int(get(b"v", b"0")),
            fields=MappingProxyType(fields),
            actor=get(b"a", b"").decode(),
            txid=get(b"x", b"").decode(),
            partitions=int(get(b"n", b"1") or 1),
            timestamp_ms=int(get(b"t", b"0")),
            partition=partition,
            offset=offset.decode() if isinstance(offset, bytes) else offset,
            schema_version=int(get(b"s", b"0") or 0),
        )


# -- assembling transactions ------------------------------------------------------------------------


@dataclass
class _Tx:
    need: int
    seen: set[int] = field(default_factory=set)
    closed: set[int] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)


class _Assembler:
    """Orders records into batches, holding a multi-partition transaction until it is whole."""

    def __init__(self, partitions: int, emit: Callable[[tuple[Change, ...]], None], metrics: FeedMetrics) -> None:
        self._queues: list[deque[Change]] = [deque() for _ in range(partitions)]
        self._tx: dict[str, _Tx] = {}
        self._held = 0
        self._emit = emit
        self._metrics = metrics
        self._lock = threading.Lock()

    def ingest(self, items: Sequence[tuple[int, list[Change], bool]]) -> None:
        """Take records read from partitions: ``(partition, changes, whole)``, where ``whole`` says the
        read reached the end of the stream (so every script's records in it are complete)."""
        with self._lock:
            if not self._held and not any(c.partitions > 1 and c.txid for _p, cs, _w in items for c in cs):
                batch = tuple(c for _p, cs, _w in items for c in cs)
                if batch:
                    self._emit(batch)
                return
            for p, changes, whole in items:
                queue = self._queues[p]
                for c in changes:
                    if queue:
                        self._close_open(p, queue[-1], c.txid)
                    if c.partitions > 1 and c.txid:
                        tx = self._tx.get(c.txid)
                        if tx is None:
                            tx = self._tx[c.txid] = _Tx(c.partitions)
                        tx.seen.add(p)
                    queue.append(c)
                    self._held += 1
                if whole and queue:
                    self._close_open(p, queue[-1], None)
            self._release(force=True)  # also gives up on transactions that waited too long

    def _close_open(self, p: int, last: Change, next_txid: str | None) -> None:
        if last.partitions > 1 and last.txid and last.txid != next_txid:
            tx = self._tx.get(last.txid)
            if tx is not None:
                tx.closed.add(p)

    def tick(self) -> None:
        """Release transactions that waited too long for their other partitions."""
        with self._lock:
            if self._tx:
                self._release(force=True)

    def _release(self, *, force: bool) -> None:
        now = time.monotonic()
        batch: list[Change] = []
        progress = True
        while progress:
            progress = False
            for queue in self._queues:
                while queue:
                    head = queue[0]
                    if not (head.partitions > 1 and head.txid):
                        batch.append(queue.popleft())
                        self._held -= 1
                        progress = True
                        continue
                    tx = self._tx.get(head.txid)
                    if tx is None:  # the rest of a transaction already given up on
                        batch.append(queue.popleft())
                        self._held -= 1
                        progress = True
                        continue
                    whole = len(tx.closed) >= tx.need
                    late = force and now - tx.started > _TX_WAIT_S
                    if not (whole or late):
                        break
                    # The whole transaction must be at the heads of its partitions' queues.
                    at_heads = all(self._queues[q] and self._queues[q][0].txid == head.txid for q in tx.seen)
                    if not (at_heads or late):
                        break
                    if late and not whole:
                        self._metrics.incomplete_transactions += 1
                    for q in sorted(tx.seen):
                        other = self._queues[q]
                        while other and other[0].txid == head.txid:
                            batch.append(other.popleft())
                            self._held -= 1
                    del self._tx[head.txid]
                    progress = True
        if batch:
            self._emit(tuple(batch))


# -- reading ----------------------------------------------------------------------------------------


@dataclass
class FeedMetrics(DeliveryMetrics):
    """Counters of a change feed (``store.change_feed.metrics()``).

    Attributes:
        records: change records read.
        batches: batches handed to subscribers.
        reconnects: reads retried after a connection error.
        incomplete_transactions: transactions delivered without all their partitions after a wait.
        undecodable: records skipped because they were not change records (a foreign ``XADD``).
        claimed: changes taken over from another consumer of a group that left them unacknowledged.
        gaps: times a stream was found trimmed past this feed's position (changes lost to it).
        subscribers: current subscriber count.
    """

    records: int = 0
    batches: int = 0
    reconnects: int = 0
    incomplete_transactions: int = 0
    undecodable: int = 0
    claimed: int = 0
    gaps: int = 0
    subscribers: int = 0


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
        >>> store.change_feed.metrics()["records"]  # doctest: +SKIP
        0
    """

    def __init__(
        self,
        store: Store,
        *,
        since: str | Mapping[int, str] | None = None,
        group: str | None = None,
        consumer: str | None = None,
        read_count: int = _COUNT,
        claim_after: float | None = None,
    ) -> None:
        self.store = store
        self.read_count = read_count
        self.claim_after = claim_after if group is not None else None
        self.group = group
        self.consumer = consumer or store.actor
        self.metrics_data = FeedMetrics()
        self.decoder = _Decoder(store)
        n = store.keyspace.partitions
        self.positions: dict[int, str] = {}
        self.group_cursor: dict[int, str] = dict.fromkeys(range(n), "0")
        self.inflight: set[tuple[int, str]] = set()
        self._since = _check_since(since, n)
        self._boxes: list[Mailbox[Change] | Fanout[Change]] = []
        self._fanouts: dict[Hashable, Fanout[Change]] = {}
        self._boxes_lock = threading.Lock()
        self.dispatcher = Dispatcher(metrics=self.metrics_data)
        self.assembler = _Assembler(n, self._emit, self.metrics_data)
        self._stop = threading.Event()
        self._readers: list[_Reader] = []
        self._started = False
        self._start_lock = threading.Lock()
        self._lost_listeners: list[Callable[[], None]] = []
        self._gap_listeners: list[Callable[[int, str, str], None]] = []

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def metrics(self) -> dict[str, int]:
        """Counters: records read, batches, delivered, coalesced/dropped, subscriber errors, reconnects.

        Example:
            >>> store.change_feed.metrics()["subscriber_errors"]  # doctest: +SKIP
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
            >>> store.change_feed.start()  # doctest: +SKIP
        """
        with self._start_lock:
            if self._started:
                return self
            if self.stopped:
                raise ServerError("this change feed was stopped")
            self._init_positions()
            parts = list(range(self.store.keyspace.partitions))
            groups = [[p] for p in parts] if self.store.is_cluster else [parts]
            self._readers = [_Reader(self, g) for g in groups]
            for reader in self._readers:
                reader.thread.start()
            self._started = True
        return self

    def _init_positions(self) -> None:
        ks = self.store.keyspace
        n = ks.partitions
        if self.group is not None:
            start = "$" if self._since is None else None
            for p in range(n):
                self.positions[p] = "0-0"
            self._create_group(range(n), start)
            return
        if isinstance(self._since, Mapping):
            for p in range(n):
                self.positions[p] = self._since.get(p, "0-0")
            return
        if isinstance(self._since, str):
            self.positions.update(dict.fromkeys(range(n), self._since))
            return
        # "From now": the last id of every stream, read in one MULTI on a single server so that no
        # script (a transaction spanning partitions) runs between two of them.
        pipe = self.store.client.pipeline(transaction=not self.store.is_cluster)
        for p in range(n):
            pipe.xrevrange(ks.changes(p), count=1)
        for p, last in enumerate(pipe.execute()):
            offset = last[0][0] if last else b"0-0"
            self.positions[p] = offset.decode() if isinstance(offset, bytes) else offset

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
            >>> store.change_feed.stop()  # store.close() does this  # doctest: +SKIP
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
            >>> store.change_feed.on_gap(lambda p, last, oldest: cache.clear())  # doctest: +SKIP
        """
        self._gap_listeners.append(listener)

    def _gap(self, partition: int, position: str, oldest: str) -> None:
        _call_each(self._gap_listeners, "gap", partition, position, oldest)

    def on_connection_lost(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (on the reader thread) whenever a read fails on a lost connection."""
        self._lost_listeners.append(listener)

    def _connection_lost(self) -> None:
        if self.group is not None:
            # Entries the server handed out while the reply was lost are in our pending list: read
            # that list again (entries already in flight here are skipped).
            for p in self.group_cursor:
                self.group_cursor[p] = "0"
        _call_each(self._lost_listeners, "connection-lost")

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


def _check_since(since: Any, partitions: int) -> str | Mapping[int, str] | None:
    if since is None:
        return None
    if isinstance(since, Change):
        return since.offset
    if isinstance(since, str):
        if not _OFFSET.match(since):
            raise ValidationError(f"since must be a stream offset like '1700000000000-0', not {since!r}")
        return since if "-" in since else f"{since}-0"
    if isinstance(since, Mapping):
        out = {}
        for p, offset in since.items():
            if not isinstance(p, int) or not 0 <= p < partitions:
                raise ValidationError(f"since: {p!r} is not a partition (0..{partitions - 1})")
            checked = _check_since(offset, partitions)
            assert isinstance(checked, str)
            out[p] = checked
        return out
    raise ValidationError(f"since must be an offset, a Change or {{partition: offset}}, not {since!r}")


# -- subscriptions ----------------------------------------------------------------------------------

Filter = Callable[[Change], bool]


def change_filter(
    *,
    collection: str | Iterable[str] | None = None,
    id: str | None = None,
    where: Mapping[str, Any] | Callable[[Change], bool] | None = None,
    fields: Iterable[str] | None = None,
) -> tuple[Filter | None, frozenset[str] | None]:
    """A predicate selecting changes, and the field names to keep (None: all).

    ``collection``: a name or names. ``id``: a glob (``"a*"``). ``where``: ``{field: value}`` (the
    change sets each field to that value) or a predicate. ``fields``: only changes that touch one of
    them (and removals), trimmed to them.

    Example:
        >>> test, keep = change_filter(collection="agents", id="a*")
        >>> test(Change("agents", "a1", "update", 2, {}))
        True
    """
    tests: list[Filter] = []
    if collection is not None:
        names = frozenset([collection] if isinstance(collection, str) else (getattr(c, "name", c) for c in collection))
        tests.append(lambda c: c.collection in names)
    if id is not None:
        if not isinstance(id, str):
            raise ValidationError(f"id must be a glob pattern string, not {id!r}")
        if any(ch in id for ch in "*?["):
            match = re.compile(fnmatch.translate(id)).match
            tests.append(lambda c: match(c.id) is not None)
        else:
            tests.append(lambda c: c.id == id)
    if where is not None:
        if callable(where):
            tests.append(where)
        elif isinstance(where, Mapping):
            wanted = dict(where)
            missing = object()
            tests.append(lambda c: all(c.fields.get(f, missing) == v for f, v in wanted.items()))
        else:
            raise ValidationError(f"where must be a mapping of field values or a predicate, not {where!r}")
    keep = None
    if fields is not None:
        if isinstance(fields, str):
            raise ValidationError("fields must be a list of field names, not a string")
        keep = frozenset(fields)
        tests.append(lambda c: c.op in REMOVALS or not keep.isdisjoint(c.fields))
    if not tests:
        return None, keep
    if len(tests) == 1:
        return tests[0], keep
    return (lambda c: all(t(c) for t in tests)), keep


_SHAREABLE = frozenset({"coalesce", "drop_oldest", "drop_newest"})


def _hashable(spec: Any) -> Hashable:
    """A key telling subscription specs apart (equal specs share a fan-out)."""
    if spec is None or isinstance(spec, str):
        return spec
    if isinstance(spec, Mapping):
        try:
            return ("map", frozenset(spec.items()))
        except TypeError:
            return ("obj", id(spec))
    if callable(spec):
        return ("fn", spec)
    try:
        return ("set", frozenset(getattr(x, "name", x) for x in spec))
    except TypeError:
        return ("obj", id(spec))


def _trim(change: Change, keep: frozenset[str]) -> Change:
    if keep.issuperset(change.fields):
        return change
    return replace(change, fields=MappingProxyType({k: v for k, v in change.fields.items() if k in keep}))


def selector(
    feed: ChangeFeed, test: Filter | None, keep: frozenset[str] | None
) -> Callable[[tuple[Change, ...]], tuple[Change, ...]] | None:
    """The part of a batch a subscriber wants (changes passing ``test``, trimmed to ``keep``)."""
    if test is None and keep is None:
        return None
    group = feed.group is not None

    def select(batch: tuple[Change, ...]) -> tuple[Change, ...]:
        picked = tuple(c for c in batch if test(c)) if test is not None else batch
        if group and len(picked) < len(batch):
            chosen = {id(c) for c in picked}
            feed.ack([c for c in batch if id(c) not in chosen])  # not for this subscriber: done with
        if keep is not None:
            picked = tuple(_trim(c, keep) for c in picked)
        return picked

    return select


class Subscription:
    """A subscriber's mailbox on a feed: filtering, per-change or per-batch emission, acknowledgement."""

    def __init__(
        self,
        feed: ChangeFeed,
        observer: abc.ObserverBase[Any],
        *,
        test: Filter | None,
        keep: frozenset[str] | None,
        batched: bool,
        max_buffer: int,
        overflow: Overflow,
        schedule: Callable[[Callable[[], None]], None] | None,
        transform: Callable[[tuple[Change, ...]], tuple[Change, ...]] | None = None,
        paused: bool = False,
    ) -> None:
        self.feed = feed
        self.observer = observer
        self._test = test
        self._keep = keep
        self._batched = batched
        self._transform = transform
        self.box: Mailbox[Change] = Mailbox(
            self._deliver,
            on_error=observer.on_error,
            metrics=feed.metrics_data,
            max_items=max_buffer,
            overflow=overflow,
            merge=coalesce_changes,
            schedule=schedule,
            select=selector(feed, test, keep),
        )
        self.box.paused = paused

    def _deliver(self, batch: tuple[Change, ...]) -> None:
        if self._transform is not None:
            batch = self._transform(batch)
            if not batch:
                return
        on_next = self.observer.on_next
        if self._batched:
            on_next(batch)
        else:
            for change in batch:
                on_next(change)
        if self.feed.group is not None:
            self.feed.ack(batch)


def changes_observable(
    store: Store,
    *,
    since: str | Mapping[int, str] | Change | None = None,
    collection: str | Iterable[str] | None = None,
    id: str | None = None,
    where: Mapping[str, Any] | Callable[[Change], bool] | None = None,
    fields: Iterable[str] | None = None,
    group: str | None = None,
    consumer: str | None = None,
    claim_after: float | None = None,
    batched: bool = False,
    scheduler: abc.SchedulerBase | None = None,
    loop: Any = None,
    max_buffer: int = 10_000,
    overflow: Overflow | None = None,
) -> Observable[Any]:
    """The observable behind ``store.changes`` (see there for the options).

    Example:
        >>> changes_observable(store, collection="agents").subscribe(print)  # doctest: +SKIP
    """
    test, keep = change_filter(collection=collection, id=id, where=where, fields=fields)
    private = since is not None or group is not None
    if group is not None and (not isinstance(group, str) or not group):
        raise ValidationError(f"group must be a non-empty string, not {group!r}")
    policy: Overflow = overflow or ("block" if group is not None else "coalesce")
    check_buffer(max_buffer, policy)
    if policy == "block" and not private:
        raise ValidationError("overflow='block' would stall the shared feed: use it with since= or group=")
    if claim_after is not None and (
        group is None or isinstance(claim_after, bool) or not isinstance(claim_after, int | float) or claim_after <= 0
    ):
        raise ValidationError(f"claim_after needs group= and a positive number of seconds, not {claim_after!r}")
    if group is not None and policy in ("coalesce", "drop_oldest", "drop_newest"):
        raise ValidationError("a consumer group must not lose changes: use overflow='block' or 'error'")
    start = _check_since(since, store.keyspace.partitions)
    runner = scheduler_runner(scheduler, loop)
    fan_key = (_hashable(collection), id, _hashable(where), _hashable(fields), max_buffer, policy)

    def subscribe(observer: abc.ObserverBase[Any], sched: abc.SchedulerBase | None = None) -> abc.DisposableBase:
        schedule = runner if runner is not None else scheduler_runner(sched) if sched is not None else None
        if not private and schedule is None and not batched and policy in _SHAREABLE:
            # The common case: join the fan-out of subscribers that want the same changes.
            shared = shared_feed(store)
            fan, member = shared.join(
                fan_key,
                lambda: Fanout(
                    dispatcher=shared.dispatcher,
                    metrics=shared.metrics_data,
                    max_items=max_buffer,
                    overflow=policy,
                    merge=coalesce_changes,
                    select=selector(shared, test, keep),
                ),
                observer,
            )
            return Disposable(lambda: shared.leave(fan_key, fan, member))
        feed = (
            ChangeFeed(
                store,
                since=start,
                group=group,
                consumer=consumer,
                read_count=min(_COUNT, max_buffer),
                claim_after=claim_after,
            )
            if private
            else shared_feed(store)
        )
        sub = Subscription(
            feed,
            observer,
            test=test,
            keep=keep,
            batched=batched,
            max_buffer=max_buffer,
            overflow=policy,
            schedule=schedule,
        )
        feed.attach(sub.box)

        def dispose() -> None:
            feed.detach(sub.box)
            if private:
                feed.stop()

        return Disposable(dispose)

    return ChangeObservable(subscribe)


class ChangeObservable(Observable[Any]):
    """An ``Observable`` of changes that can also be iterated with ``async for`` (``.aiter()``)."""

    def aiter(self, *, max_buffer: int = 10_000) -> Any:
        """An async iterator over the emitted items, delivered on the running asyncio loop.

        Example:
            >>> async for change in store.changes(collection="agents").aiter():  # doctest: +SKIP
            ...     print(change.id)
        """
        from .reactive import aiter

        return aiter(self, max_buffer=max_buffer)


_SHARED_LOCK = threading.Lock()


def shared_feed(store: Store) -> ChangeFeed:
    """The store's shared feed (created on first use, stopped by ``store.close()``).

    Example:
        >>> shared_feed(store) is store.change_feed  # doctest: +SKIP
        True
    """
    feed: ChangeFeed | None = getattr(store, "_change_feed", None)
    if feed is None:
        with _SHARED_LOCK:
            feed = getattr(store, "_change_feed", None)
            if feed is None:
                if store._closed.is_set():
                    raise ServerError("the store is closed")
                feed = ChangeFeed(store)
                store._change_feed = feed  # type: ignore[attr-defined]
    return feed
