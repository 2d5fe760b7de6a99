"""Decoding change records and assembling the records of one transaction across partitions into one batch."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import pydantic
import redis

from rxstate.core.codec import SEALED_MARKER, Codec
from rxstate.core.errors import RxStateError
from rxstate.core.model import Secret
from rxstate.feed.change import Change
from rxstate.feed.mailbox import DeliveryMetrics

if TYPE_CHECKING:
    from rxstate.store.store import Store


__all__ = ["Assembler", "Decoder", "FeedMetrics", "stored_secrets"]

log = logging.getLogger("rxstate.changes")

_TX_WAIT_S = 2.0  # give up waiting for the rest of a transaction after this long (trimmed or partial)


def stored_secrets(store: Store) -> dict[str, frozenset[str]]:
    """Secret field names of every collection registered in ``store``'s namespace (from its schemas).

    A collection registered by code older than the classification maps to no names.
    """
    out: dict[str, frozenset[str]] = {}
    for name, raw in store.client.hgetall(store.keyspace.schemas()).items():
        out[name.decode() if isinstance(name, bytes) else name] = _entry_secrets(raw)
    return out


def _entry_secrets(raw: bytes | str | None) -> frozenset[str]:
    if raw is None:
        return frozenset()
    try:
        entry = json.loads(raw)
    except ValueError:
        return frozenset()
    names = entry.get("secrets", ()) if isinstance(entry, dict) else ()
    return frozenset(n for n in names if isinstance(n, str))


class Decoder:
    """Turns raw stream records into ``Change`` objects, with field values decoded by model.

    Fields a collection classifies secret (by its model here, or by the schema its writers stored) are
    wrapped in ``rxstate.Secret``, so a change never shows them, even in a process without the model.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        # collection -> (schema version the names were read for, stored secret names)
        self._stored: dict[str, tuple[int, frozenset[str]]] = {}
        self._undecodable: set[tuple[str, str]] = set()  # (collection, field) already warned about

    def secrets(self, collection: str, schema_version: int = 0) -> frozenset[str] | None:
        """Secret field names of ``collection``; None when they cannot be read now (hide every field).

        The stored names are read once per collection, and again for a record of a newer schema version.
        """
        coll = self._store._collections.get(collection)
        own = frozenset(coll.model.__rxstate_secrets__) if coll is not None else frozenset()
        cached = self._stored.get(collection)
        if cached is None or schema_version > cached[0]:
            try:
                raw = self._store.client.hget(self._store.keyspace.schemas(), collection)
            except redis.RedisError as exc:
                log.debug("change feed: cannot read the schema of %s: %s", collection, exc)
                return None
            cached = self._stored[collection] = (schema_version, _entry_secrets(raw))
        return own | cached[1]

    def _value(self, collection: str, name: str, raw: bytes, key: str = "") -> Any:
        coll = self._store._collections.get(collection)
        if coll is not None and name in coll._codec.fields:
            try:
                return coll._codec.decode_value(name, raw, key)
            except (ValueError, RxStateError) as exc:  # an older schema or a foreign write: plain JSON
                if (collection, name) not in self._undecodable:
                    self._undecodable.add((collection, name))
                    log.warning("change feed: %s field %r does not decode with the model (%s)", collection, name, exc)
        if raw[:2] == SEALED_MARKER:
            return Secret(raw)  # encrypted, and not readable here (no keys, or its data key is gone)
        fragment = Codec.unpack(raw)
        try:
            return json.loads(fragment)
        except ValueError:
            return fragment.decode("utf-8", "replace")

    def decode_fields(
        self, collection: str, schema_version: int, raw: Mapping[bytes, bytes], *, key: str = ""
    ) -> dict[str, Any]:
        """Stored field values (name -> bytes) decoded by model, secret fields wrapped in ``Secret``
        (``key``: the entity's key, which encrypted values are bound to)."""
        fields: dict[str, Any] = {}
        secrets: frozenset[str] | None = frozenset()
        for name, value in raw.items():
            if not fields:
                secrets = self.secrets(collection, schema_version)
            fname = name.decode()
            decoded = self._value(collection, fname, value, key)
            if (secrets is None or fname in secrets) and not isinstance(decoded, pydantic.Secret):
                decoded = Secret(decoded)
            fields[fname] = decoded
        return fields

    def decode(self, partition: int, offset: bytes | str, raw: Mapping[bytes, bytes]) -> Change:
        get = raw.get
        collection = get(b"c", b"").decode()
        schema_version = int(get(b"s", b"0") or 0)
        key = self._store.keyspace.entity(collection, get(b"i", b"").decode(), partition)
        fields = self.decode_fields(
            collection, schema_version, {n[1:]: v for n, v in raw.items() if n[:1] == b"."}, key=key
        )
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
            schema_version=schema_version,
        )


# -- assembling transactions ------------------------------------------------------------------------


@dataclass
class _Tx:
    need: int
    seen: set[int] = field(default_factory=set)
    closed: set[int] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)


class Assembler:
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
