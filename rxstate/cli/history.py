"""An entity's past, read-only: its change records (or an aggregate's events), and who last changed it.

For an entity collection the history is what its partition's change stream still holds about the
entity (streams are capped at ``change_retention`` records per partition); ``why`` follows the
entity's ``_o`` field (the offset of its last change record) to the record that made its current
version, and gathers the other records of the same transaction. For an event collection the history
is the aggregate's event stream, and ``why`` is its last event with the chain of its causes
(causation ids, looked up among the namespace's events of the same correlation).

Example:
    >>> History(inspector).why("tasks", "t1").last.actor  # doctest: +SKIP
    'agent-2'
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pydantic

from rxstate.cli.inspector import EntityView, Inspector
from rxstate.core.errors import NotFound, ValidationError
from rxstate.core.redaction import REDACTED
from rxstate.events.query import EventLog, causation_chain
from rxstate.events.types import RecordedEvent, parse_meta
from rxstate.feed.assembly import Decoder
from rxstate.feed.change import Change, offset_key

__all__ = ["History", "Why", "plain_fields"]

_CHUNK = 1000
_TX_WINDOW_MS = 10_000  # the records of one transaction lie this close in time (commit ttl and then some)


@dataclass
class Why:
    """Who or what last changed an entity (or an aggregate), and with what.

    Attributes:
        collection, id: the entity.
        kind: ``"entities"`` or ``"events"``.
        current: the entity as stored now (None for an aggregate or a deleted entity).
        last: the change record (``Change``) or event (``RecordedEvent``) that made it what it is,
            None when the stream no longer holds it.
        field_name: the field asked about, if any.
        transaction: the other change records of the transaction ``last`` belongs to.
        causes: for an event, the chain of its causes (stored events, then a plain id).
    """

    collection: str
    id: str
    kind: str
    current: EntityView | None
    last: Change | RecordedEvent | None
    field_name: str | None = None
    transaction: list[Change] = field(default_factory=list)
    causes: list[RecordedEvent | str] = field(default_factory=list)


class History:
    """The change records and events of entities of one namespace, and ``why``."""

    def __init__(self, inspector: Inspector) -> None:
        self.inspector = inspector
        self.client = inspector.client
        self.keyspace = inspector.keyspace
        self._decoder = Decoder(inspector.store)

    # -- entity change records --------------------------------------------------------------------
    def _partitions(self, collection: str, entity_id: str) -> list[int]:
        p = self.inspector.locate(collection, entity_id)
        return list(range(self.keyspace.partitions)) if p is None else [p]

    def changes(self, collection: str, entity_id: str, *, limit: int | None = None) -> list[Change]:
        """The change records the streams hold about an entity, oldest first (the last ``limit``)."""
        cb, ib = collection.encode(), entity_id.encode()
        found: list[Change] = []
        parts = self._partitions(collection, entity_id)
        pipe = self.client.pipeline(transaction=False)
        for p in parts:
            pipe.xlen(self.keyspace.changes(p))
        total = sum(pipe.execute())
        with self.inspector.steps(f"reading the change feed of {collection}/{entity_id}", total) as tick:
            for p in parts:
                key = self.keyspace.changes(p)
                high: str | bytes = "+"
                while limit is None or len(found) < limit:
                    rows = self.client.xrevrange(key, high, "-", count=_CHUNK)
                    tick(len(rows))
                    for offset, raw in rows:
                        if raw.get(b"c") == cb and raw.get(b"i") == ib:
                            found.append(self._decoder.decode(p, offset, raw))
                    if len(rows) < _CHUNK:
                        break
                    high = b"(" + rows[-1][0]
        found.sort(key=lambda c: offset_key(c.offset))
        return found[-limit:] if limit is not None else found

    # -- aggregate events -------------------------------------------------------------------------
    def _event(self, entity_id: str, collection: str, p: int, sid: bytes, raw: dict[bytes, bytes]) -> RecordedEvent:
        eid, actor, causation, correlation, version, clock = parse_meta(raw[b"m"])
        return RecordedEvent(
            collection=collection,
            aggregate_id=entity_id,
            version=version,
            position=sid.decode(),
            partition=p,
            type=raw[b"y"].decode(),
            schema_version=int(raw[b"s"]),
            event=json.loads(raw[b"d"]),
            event_id=eid,
            actor=actor,
            causation_id=causation,
            correlation_id=correlation,
            vector_clock=clock,
        )

    def events(self, collection: str, entity_id: str, *, limit: int | None = None) -> list[RecordedEvent]:
        """The last ``limit`` events of an aggregate (all by default), oldest first."""
        p = self.keyspace.partition_of(entity_id)
        key = self.keyspace.event_stream(collection, entity_id, p)
        rows = self.client.xrevrange(key, "+", "-", count=limit)
        return [self._event(entity_id, collection, p, sid, raw) for sid, raw in reversed(rows)]

    # -- either -----------------------------------------------------------------------------------
    def history(
        self, collection: str, entity_id: str, *, limit: int | None = None
    ) -> list[Change] | list[RecordedEvent]:
        """The entity's change records, or the aggregate's events, oldest first.

        Raises:
            NotFound: no such collection, or neither the entity nor any record of it exists.
        """
        if self.inspector.kind(collection) == "events":
            events = self.events(collection, entity_id, limit=limit)
            if not events:
                raise NotFound(f"{collection} {entity_id!r} has no events in namespace {self.inspector.namespace!r}")
            return events
        changes = self.changes(collection, entity_id, limit=limit)
        if not changes:
            self.inspector.get(collection, entity_id)  # NotFound when it does not exist either
        return changes

    def why(self, collection: str, entity_id: str, field_name: str | None = None) -> Why:
        """Who or what last changed an entity (or ``field_name`` of it), and in which transaction.

        Raises:
            NotFound: no such collection or entity.
            ValidationError: the collection's schema has no such field.
        """
        if self.inspector.kind(collection) == "events":
            return self._why_event(collection, entity_id)
        schema = self.inspector.schemas()[collection]
        if field_name is not None and field_name not in schema.get("fields", [field_name]):
            raise ValidationError(
                f"{collection} has no field {field_name!r} (fields: {', '.join(schema.get('fields', []))})",
                field=field_name,
            )
        try:
            current: EntityView | None = self.inspector.get(collection, entity_id)
        except NotFound:
            current = None  # deleted or expired: the feed may still say by whom
        last: Change | None = None
        if current is not None and field_name is None and current.offset:
            rows = self.client.xrange(self.keyspace.changes(current.partition), current.offset, current.offset)
            if rows:
                last = self._decoder.decode(current.partition, rows[0][0], rows[0][1])
        if last is None:
            touching = [
                c
                for c in self.changes(collection, entity_id)
                if field_name is None or field_name in c.fields or c.is_removal
            ]
            if current is None and not touching:
                raise NotFound(
                    f"{collection} {entity_id!r} does not exist in namespace {self.inspector.namespace!r}, "
                    "and the change feed holds no record of it"
                )
            last = touching[-1] if touching else None
        why = Why(collection, entity_id, "entities", current, last, field_name)
        if last is not None and last.txid:
            why.transaction = self._transaction(last)
        return why

    def _transaction(self, change: Change) -> list[Change]:
        """The other change records of ``change``'s transaction (searched around its time)."""
        lo, hi = change.timestamp_ms - _TX_WINDOW_MS, change.timestamp_ms + _TX_WINDOW_MS
        parts = range(self.keyspace.partitions) if change.partitions > 1 else [change.partition]
        pipe = self.client.pipeline(transaction=False)
        for p in parts:
            pipe.xrange(self.keyspace.changes(p), str(lo), str(hi))
        txid = change.txid.encode()
        out = [
            self._decoder.decode(p, offset, raw)
            for p, rows in zip(parts, pipe.execute(), strict=True)
            for offset, raw in rows
            if raw.get(b"x") == txid
        ]
        return sorted(
            (c for c in out if (c.partition, c.offset) != (change.partition, change.offset)),
            key=lambda c: (offset_key(c.offset), c.partition),
        )

    def _why_event(self, collection: str, entity_id: str) -> Why:
        events = self.events(collection, entity_id, limit=1)
        if not events:
            raise NotFound(f"{collection} {entity_id!r} has no events in namespace {self.inspector.namespace!r}")
        last = events[0]
        why = Why(collection, entity_id, "events", None, last)
        if last.causation_id:
            log = EventLog(self.inspector.store).query(correlation_id=last.correlation_id)
            why.causes = causation_chain(last.causation_id, {e.event_id: e for e in log})
        return why


def plain_fields(fields: Any) -> dict[str, Any]:
    """Change or event fields as JSON-ready data (secret values redacted)."""
    return {k: REDACTED if isinstance(v, pydantic.Secret) else v for k, v in dict(fields).items()}
