"""The read side of an event collection: history, causation, audit queries, subscriptions, projections.

``EventReads`` is the base of ``EventCollection``; it reads what ``append`` wrote (the aggregate streams
and the partitions' event logs) and never writes events.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from rxstate.core.errors import NotFound, ValidationError
from rxstate.core.keys import Keyspace, validate_id
from rxstate.core.model import Model
from rxstate.events.projection import Projection
from rxstate.events.query import EventLog, TimeBound, Timeline, TypeFilter, Why, explain, filter_events
from rxstate.events.snapshots import CHUNK
from rxstate.events.subscriptions import Subscription
from rxstate.events.types import EventTypes, RecordedEvent, parse_meta, raw_xrange

if TYPE_CHECKING:
    from rxstate.store.store import Store

__all__ = ["EventReads"]

S = TypeVar("S", bound=Model)


class EventReads(Generic[S]):
    """History, ``why``, queries, timelines, subscriptions and projections of one event collection.

    Example:
        >>> _ = orders.append("o1", [Placed(sku="apple"), Paid(amount_cents=250)])
        >>> [e.type for e in orders.history("o1")], orders.why("o1", "status").value
        (['Placed', 'Paid'], 'paid')
    """

    name: str
    state: type[S]
    types: EventTypes
    reducer: Callable[[Any, Any], Any]
    initial: S | None
    _store: Store
    _ks: Keyspace

    def partition(self, aggregate_id: str) -> int:
        """The partition of an aggregate.

        Example:
            >>> orders.partition("o1")  # a stable hash of the id
            13
        """
        return self._ks.partition_of(aggregate_id)

    def key(self, aggregate_id: str) -> str:
        """The Redis key of an aggregate's event stream (for inspection and tooling).

        Example:
            >>> orders.key("o1")
            'rx:{default:13}:_es:orders:o1'
        """
        validate_id(aggregate_id)
        return self._ks.event_stream(self.name, aggregate_id, self.partition(aggregate_id))

    # -- history and audit ---------------------------------------------------------------------------
    def history(self, aggregate_id: str, *, after_version: int = 0, limit: int | None = None) -> list[RecordedEvent]:
        """The events of one aggregate with their metadata, oldest first.

        Example:
            >>> _ = orders.append("o1", [Placed(sku="apple"), Paid(amount_cents=250)])
            >>> [(e.version, e.type, e.actor == store.actor) for e in orders.history("o1")]
            [(1, 'Placed', True), (2, 'Paid', True)]
        """
        validate_id(aggregate_id)
        p = self.partition(aggregate_id)
        key = self._ks.event_stream(self.name, aggregate_id, p)
        out: list[RecordedEvent] = []
        lo: str | bytes = "-"
        version = 0
        while limit is None or len(out) < limit:
            rows = raw_xrange(self._store, key, lo, "+", CHUNK)
            for sid, f in rows:
                version += 1
                if version > after_version:
                    out.append(self.record(aggregate_id, p, sid, f))
            if len(rows) < CHUNK:
                break
            lo = b"(" + rows[-1][0]
        return out[:limit] if limit is not None else out

    def record(self, aggregate_id: str, partition: int, stream_id: bytes, fields: list[bytes]) -> RecordedEvent:
        """A ``RecordedEvent`` from a raw stream entry of this collection.

        Example:
            >>> _ = orders.append("o1", [Placed(sku="apple")])
            >>> [(stream_id, fields)] = raw_xrange(store, orders.key("o1"), "-", "+", 10)
            >>> orders.record("o1", orders.partition("o1"), stream_id, fields).event
            Placed(sku='apple', qty=1)
        """
        eid, actor, causation, correlation, version, clock = parse_meta(fields[7])
        type_name, schema_version = fields[1].decode(), int(fields[3])
        return RecordedEvent(
            collection=self.name,
            aggregate_id=aggregate_id,
            version=version,
            position=stream_id.decode(),
            partition=partition,
            type=type_name,
            schema_version=schema_version,
            event=self.types.decode(type_name, schema_version, fields[5]),
            event_id=eid,
            actor=actor,
            causation_id=causation,
            correlation_id=correlation,
            vector_clock=clock,
        )

    def why(self, aggregate_id: str, field: str) -> Why:
        """The events that produced a field's current value, each with its chain of causes.

        Replays the aggregate's history, keeps every event that changed ``field``, and follows each
        one's causation id back through the events of the namespace's same correlation (ids that name
        no stored event, such as a command id, end the chain as plain strings).

        Raises:
            ValidationError: the state has no such field.
            NotFound: the aggregate has no events.

        Example:
            >>> _ = orders.append("o1", [Placed(sku="apple"), Paid(amount_cents=250)])
            >>> print(orders.why("o1", "status"))
            status = 'paid' (orders/o1)
              #1 Placed by pid:...: 'new' -> 'placed'
              #2 Paid by pid:...: 'placed' -> 'paid'
        """
        if field not in self.state.model_fields:
            raise ValidationError(f"{self.state.__name__} has no field {field!r}", field=field)
        events = self.history(aggregate_id)
        if not events:
            raise NotFound(f"{self.name} {aggregate_id!r} has no events", key=self.key(aggregate_id))
        return explain(self._store, self.name, aggregate_id, field, events, self.reducer, self.initial)

    def query(
        self,
        *,
        actor: str | None = None,
        type: TypeFilter = None,
        since: TimeBound = None,
        until: TimeBound = None,
        correlation_id: str | None = None,
        limit: int | None = None,
    ) -> list[RecordedEvent]:
        """Events of this collection across all its streams, filtered, ordered by time.

        Example:
            >>> _ = orders.append("o1", [Placed(sku="apple"), Paid(amount_cents=250)])
            >>> [e.version for e in orders.query(actor=store.actor, type=Paid, since=datetime(2026, 1, 1))]
            [2]
        """
        return EventLog(self._store).query(
            collection=self.name, actor=actor, type=type, since=since, until=until,
            correlation_id=correlation_id, limit=limit,
        )  # fmt: skip

    def timeline(
        self,
        aggregate_id: str | None = None,
        *,
        actor: str | None = None,
        type: TypeFilter = None,
        since: TimeBound = None,
        until: TimeBound = None,
        limit: int | None = 200,
    ) -> Timeline:
        """A compact time-ordered view of events (one aggregate, or the whole collection), for notebooks.

        Example:
            >>> _ = orders.append("o1", [Placed(sku="apple"), Paid(amount_cents=250)])
            >>> orders.timeline("o1")
            <Timeline orders/o1: 2 events>
            20...  orders/o1  #1  Placed  pid:...  sku='apple', qty=1
            20...  orders/o1  #2  Paid    pid:...  amount_cents=250
        """
        if aggregate_id is not None:
            events = self.history(aggregate_id)
            events = filter_events(events, actor=actor, type=type, since=since, until=until)
            if limit is not None:
                events = events[-limit:]
            return Timeline(events, title=f"{self.name}/{aggregate_id}")
        return Timeline(self.query(actor=actor, type=type, since=since, until=until, limit=limit), title=self.name)

    # -- subscriptions -------------------------------------------------------------------------------
    def subscribe(
        self, aggregate_id: str | None = None, *, after: str | Mapping[int, str] = "start", block: float = 1.0
    ) -> Subscription:
        """Catch-up subscription: the stored events after ``after``, then new ones as they come.

        Over one aggregate's stream (``aggregate_id``) or the whole collection (all partitions'
        event logs, in order per partition).

        Args:
            aggregate_id: one aggregate, or None for the whole collection.
            after: ``"start"`` (every event), ``"end"`` (only new ones), a stream id (one aggregate),
                or a ``{partition: stream id}`` position from ``Subscription.position``.
            block: seconds one ``poll``/iteration step waits for new events.

        Example:
            >>> _ = orders.append("o1", [Placed(sku="apple"), Paid(amount_cents=250)])
            >>> sub = orders.subscribe("o1", after="start")
            >>> [e.type for e in sub.poll(timeout=0)]  # then ``for event in sub`` waits for new ones
            ['Placed', 'Paid']
            >>> sub.close()
        """
        if aggregate_id is None:
            return EventLog(self._store).subscribe(collection=self.name, after=after, block=block)
        validate_id(aggregate_id)
        p = self.partition(aggregate_id)
        key = self._ks.event_stream(self.name, aggregate_id, p)

        def decode(_p: int, sid: bytes, fields: list[bytes]) -> RecordedEvent:
            return self.record(aggregate_id, p, sid, fields)

        start = after if isinstance(after, str) else after.get(p, "start")
        return Subscription(self._store, {p: key}, {p: start}, decode, block=block)

    def project(self, name: str, handler: Callable[..., Any], **options: Any) -> Projection:
        """A projection of this collection's events with a persistent checkpoint (see ``Projection``).

        Options: ``block`` (seconds a live step waits), ``atomic`` (the handler takes ``(event, batch)``
        and its entity writes are applied with the checkpoint in one script call: exactly once).

        Example:
            >>> _ = orders.append("o1", [Placed(sku="apple"), Paid(amount_cents=250)])
            >>> seen = []
            >>> orders.project("types", lambda e: seen.append(e.type)).run()  # catch up, then return
            2
            >>> seen
            ['Placed', 'Paid']
            >>> paid = store.collection("paid", Task)
            >>> put_view = lambda e, b: b.put(paid, e.aggregate_id, Task(title=e.type))
            >>> orders.project("views", put_view, atomic=True).run(), paid.get("o1").title
            (2, 'Paid')
        """
        return Projection(self._store, name, handler, collection=self.name, **options)
