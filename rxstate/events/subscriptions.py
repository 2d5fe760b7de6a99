"""Catch-up subscriptions on event streams.

A ``Subscription`` reads the stored events after a position (``XREAD`` without blocking until it has
caught up), then waits for new ones with ``XREAD BLOCK``: one call over every partition's stream on a
single server; on a cluster, whose partitions sit in different slots, it polls each in turn. Events of
one partition come in stream order. Projections (``rxstate.events.projection``) are fed by them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from rxstate.core.errors import ValidationError
from rxstate.events.types import RecordedEvent, parse_meta, registered

if TYPE_CHECKING:
    from rxstate.store.store import Store

__all__ = ["Subscription", "log_decoder", "subscribe_log"]

log = logging.getLogger("rxstate.events")
Decoder = Callable[[int, bytes, list[bytes]], RecordedEvent | None]
_ORIGIN = "0-0"


class Subscription:
    """Events after a position, then live ones: iterate it, or ``poll`` batches.

    Example:
        >>> _ = orders.append("o1", [Placed(sku="apple")])
        >>> with orders.subscribe(after="start") as sub:
        ...     stored = [e.type for e in sub.poll(timeout=0)]  # catch-up
        ...     _ = orders.append("o1", [Paid(amount_cents=250)])
        ...     live = next(iter(sub)).type  # iterating waits for new events until sub.close()
        >>> stored, live
        (['Placed'], 'Paid')
    """

    def __init__(
        self,
        store: Store,
        keys: Mapping[int, str],
        after: Mapping[int, str],
        decode: Decoder,
        *,
        block: float = 1.0,
        batch: int = 1_000,
    ) -> None:
        if block < 0:
            raise ValidationError(f"block must be >= 0 seconds, not {block!r}")
        self._store = store
        self._keys = dict(keys)
        self._decode = decode
        self._block = block
        self._batch = batch
        self._closed = threading.Event()
        self._pos = self._resolve(after)
        self._by_key = {key.encode(): p for p, key in self._keys.items()}

    def _resolve(self, after: Mapping[int, str]) -> dict[int, str]:
        pos: dict[int, str] = {}
        ends = [p for p, a in after.items() if a == "end"]
        if ends:
            pipe = self._store.client.pipeline(transaction=False)
            for p in ends:
                pipe.xrevrange(self._keys[p], "+", "-", count=1)
            for p, last in zip(ends, pipe.execute(), strict=True):
                pos[p] = last[0][0].decode() if last else _ORIGIN
        for p, a in after.items():
            if a == "end":
                continue
            if a in ("start", "", "0"):
                pos[p] = _ORIGIN
            elif isinstance(a, str) and a.replace("-", "").isdigit():
                pos[p] = a
            else:
                raise ValidationError(f"a subscription starts after 'start', 'end' or a stream id, not {a!r}")
        return pos

    @property
    def position(self) -> dict[int, str]:
        """The stream id of the last event delivered, per partition (pass it as ``after=`` to resume).

        Example:
            >>> _ = orders.append("o1", [Placed(sku="apple")])
            >>> with orders.subscribe(after="start") as sub:
            ...     _ = sub.poll(timeout=0)
            >>> _ = orders.append("o1", [Paid(amount_cents=250)])
            >>> with orders.subscribe(after=sub.position) as resumed:  # where the first one stopped
            ...     [e.type for e in resumed.poll(timeout=0)]
            ['Paid']
        """
        return dict(self._pos)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def close(self) -> None:
        """Stop iterating (a blocked iteration step ends within ``block`` seconds).

        Example:
            >>> sub = orders.subscribe(after="end")
            >>> sub.close()
            >>> list(sub)
            []
        """
        self._closed.set()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[RecordedEvent]:
        while not self._closed.is_set():
            yield from self.poll(timeout=self._block)

    def poll(self, timeout: float | None = 0) -> list[RecordedEvent]:
        """The next batch of events; when caught up, waits up to ``timeout`` seconds for new ones.

        An empty list after ``timeout=0`` means every stored event has been delivered. ``None`` waits
        the subscription's ``block`` time.

        Example:
            >>> _ = orders.append("o1", [Placed(sku="apple")])
            >>> orders.subscribe(after="start").poll(timeout=0.5)
            [<RecordedEvent orders/o1#1 Placed by pid:...: {'sku': 'apple', 'qty': 1}>]
        """
        while rows := self._read(0):
            # entries of other collections are skipped: keep reading until one of ours, or the end
            if out := self._consume(rows):
                return out
        wait = self._block if timeout is None else timeout
        if wait and not self._closed.is_set():
            return self._consume(self._read(max(1, int(wait * 1000))))
        return []

    def _consume(self, rows: list[Any]) -> list[RecordedEvent]:
        out: list[RecordedEvent] = []
        for key, entries in rows:
            p = self._by_key[key if isinstance(key, bytes) else key.encode()]
            for sid, fields in entries:
                rec = self._decode(p, sid, fields)
                self._pos[p] = sid.decode()
                if rec is not None:
                    out.append(rec)
        return out

    def _read(self, block_ms: int) -> list[Any]:
        client = self._store.client
        if not self._store.is_cluster:
            args: list[Any] = [b"XREAD", b"COUNT", self._batch]
            if block_ms:
                args += (b"BLOCK", block_ms)
            parts = list(self._keys)
            args += (b"STREAMS", *(self._keys[p] for p in parts), *(self._pos[p] for p in parts))
            reply = client.execute_command(*args) or []
            return list(reply.items()) if isinstance(reply, dict) else reply  # RESP3 replies a map
        # A cluster refuses cross-slot XREAD: read each partition alone, polling when blocking.
        deadline = time.monotonic() + block_ms / 1000
        while True:
            found = []
            for p, key in self._keys.items():
                reply = client.xread({key: self._pos[p]}, count=self._batch)
                for k, entries in reply or []:
                    flat = [(sid, [x for kv in fields.items() for x in kv]) for sid, fields in entries]
                    found.append((k, flat))
            if found or time.monotonic() >= deadline or self._closed.is_set():
                return found
            time.sleep(0.01)


def log_decoder(store: Store, collection: str | None) -> Callable[[int, bytes, list[bytes]], RecordedEvent | None]:
    """A decoder of event-log records into ``RecordedEvent``s (only ``collection``'s, if given)."""
    opened = registered(store)
    wanted = None if collection is None else collection.encode()

    def decode(p: int, sid: bytes, f: list[bytes]) -> RecordedEvent | None:
        if wanted is not None and f[9] != wanted:
            return None
        name, aggregate_id = f[9].decode(), f[11].decode()
        coll = opened.get(name)
        if coll is not None:
            return coll.record(aggregate_id, p, sid, f)
        eid, actor, causation, correlation, version, clock = parse_meta(f[7])
        return RecordedEvent(
            collection=name, aggregate_id=aggregate_id, version=version, position=sid.decode(),
            partition=p, type=f[1].decode(), schema_version=int(f[3]), event=json.loads(f[5]),
            event_id=eid, actor=actor, causation_id=causation, correlation_id=correlation, vector_clock=clock,
        )  # fmt: skip

    return decode


def subscribe_log(
    store: Store, *, collection: str | None = None, after: str | Mapping[int, str] = "start", block: float = 1.0
) -> Subscription:
    """Catch-up subscription over every partition's event log (see ``EventLog.subscribe``).

    Example:
        >>> sub = subscribe_log(store, after="end")
        >>> _ = orders.append("o1", [Placed(sku="apple")])
        >>> [(e.collection, e.type) for e in sub.poll(timeout=1)]
        [('orders', 'Placed')]
    """
    ks = store.keyspace
    keys = {p: ks.event_log(p) for p in range(ks.partitions)}
    start = dict.fromkeys(keys, after) if isinstance(after, str) else {p: after.get(p, "start") for p in keys}
    return Subscription(store, keys, start, log_decoder(store, collection), block=block)
