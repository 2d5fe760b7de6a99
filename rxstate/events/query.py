"""The namespace's event log: subscriptions and temporal/audit queries across streams.

Every event of every event collection is in its partition's log ``rx:{ns:p}:events`` (written by
``append.lua`` with the aggregate's stream, under the same stream id). Stream ids are server times, so a
time range is an ``XRANGE`` bound; other filters (actor, type, collection, correlation) are applied
while reading. Results across partitions are merged by time.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeAlias

from rxstate.core import display
from rxstate.core.errors import ValidationError
from rxstate.core.model import Model
from rxstate.events.projection import Projection
from rxstate.events.subscriptions import Subscription, log_decoder, subscribe_log
from rxstate.events.types import RecordedEvent, event_type_name, raw_xrange

if TYPE_CHECKING:
    from rxstate.store.store import Store

__all__ = [
    "EventLog",
    "FieldChange",
    "TimeBound",
    "Timeline",
    "TypeFilter",
    "Why",
    "causation_chain",
    "explain",
    "filter_events",
    "to_ms",
    "type_names",
]

_CHUNK = 2_000

TypeFilter: TypeAlias = str | type[Model] | Sequence[str | type[Model]] | None
"""An event type filter: a name, a model class, several of them, or None (any type)."""
TimeBound: TypeAlias = datetime | int | float | None
"""A time bound: a datetime (naive = UTC), ms since the epoch (int), seconds (float), or None (open)."""


def to_ms(when: datetime | int | float) -> int:
    """Milliseconds since the epoch of a datetime (naive = UTC), an int of ms, or a float of seconds.

    Example:
        >>> to_ms(datetime(2026, 1, 1, tzinfo=UTC))
        1767225600000
    """
    if isinstance(when, datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return int(when.timestamp() * 1000)
    if isinstance(when, bool) or not isinstance(when, int | float):
        raise ValidationError(f"a time is a datetime, ms (int) or seconds (float), not {when!r}")
    return int(when) if isinstance(when, int) else int(when * 1000)


def type_names(types: Any) -> set[str] | None:
    """Event type names from a name, a model class, or a sequence of them (None: no filter)."""
    if types is None:
        return None
    items = [types] if isinstance(types, str | type) else list(types)
    return {t if isinstance(t, str) else event_type_name(t) for t in items}


class EventLog:
    """All events of a namespace, read from the partitions' event logs.

    Example:
        >>> _ = orders.append("o1", [Placed(sku="apple"), Paid(amount_cents=250)])
        >>> log = store.event_log()
        >>> [(e.aggregate_id, e.type) for e in log.query(actor=store.actor, since=datetime(2026, 1, 1))]
        [('o1', 'Placed'), ('o1', 'Paid')]
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._ks = store.keyspace

    def subscribe(
        self,
        *,
        collection: str | None = None,
        after: str | Mapping[int, str] = "start",
        block: float = 1.0,
    ) -> Subscription:
        """Catch-up subscription over every partition's log (optionally one collection's events).

        Events come in order within each partition; partitions interleave.

        Args:
            collection: only this event collection's events (a category subscription).
            after: ``"start"``, ``"end"``, or a ``{partition: stream id}`` position.
            block: seconds one ``poll``/iteration step waits for new events.

        Example:
            >>> sub = store.event_log().subscribe(after="end")
            >>> _ = orders.append("o1", [Placed(sku="apple")])
            >>> [e.type for e in sub.poll(timeout=1.0)]
            ['Placed']
            >>> sub.close()
        """
        return subscribe_log(self._store, collection=collection, after=after, block=block)

    def project(
        self, name: str, handler: Callable[..., Any], *, collection: str | None = None, **options: Any
    ) -> Projection:
        """A projection over the namespace's events (or one collection's) with a persistent checkpoint.

        Example:
            >>> _ = orders.append("o1", [Placed(sku="apple"), Paid(amount_cents=250)])
            >>> audit = store.event_log().project("printer", lambda e: print(e.aggregate_id, e.type))
            >>> audit.run()
            o1 Placed
            o1 Paid
            2
        """
        return Projection(self._store, name, handler, collection=collection, **options)

    def query(
        self,
        *,
        collection: str | None = None,
        actor: str | None = None,
        type: TypeFilter = None,
        since: TimeBound = None,
        until: TimeBound = None,
        correlation_id: str | None = None,
        limit: int | None = None,
    ) -> list[RecordedEvent]:
        """Events across all streams matching every given filter, ordered by time (oldest first).

        Args:
            collection: only events of this event collection.
            actor: only events appended by this actor.
            type: an event type (name or class) or several.
            since: events at or after this time (datetime, ms int, or seconds float).
            until: events at or before this time.
            correlation_id: only events of this correlation.
            limit: at most this many (the oldest).

        Example:
            >>> _ = orders.append("o1", [Placed(sku="apple"), Paid(amount_cents=250)])
            >>> store.event_log().query(type="Paid", since=datetime(2026, 1, 1))
            [<RecordedEvent orders/o1#2 Paid by pid:...: {'amount_cents': 250}>]
        """
        names = type_names(type)
        lo = "-" if since is None else str(to_ms(since))
        hi = "+" if until is None else str(to_ms(until))
        decode = log_decoder(self._store, collection)
        by_type = None if names is None else {n.encode() for n in names}
        per_partition: list[list[RecordedEvent]] = []
        for p in range(self._ks.partitions):
            found: list[RecordedEvent] = []
            key = self._ks.event_log(p)
            start: str | bytes = lo
            while limit is None or len(found) < limit:
                rows = raw_xrange(self._store, key, start, hi, _CHUNK)
                for sid, flat in rows:
                    if by_type is not None and flat[1] not in by_type:
                        continue
                    rec = decode(p, sid, flat)
                    if rec is None or (actor is not None and rec.actor != actor):
                        continue
                    if correlation_id is not None and rec.correlation_id != correlation_id:
                        continue
                    found.append(rec)
                if len(rows) < _CHUNK:
                    break
                start = b"(" + rows[-1][0]
            per_partition.append(found)
        merged = heapq.merge(*per_partition, key=lambda e: (_id_key(e.position), e.partition))
        out = list(merged)
        return out[:limit] if limit is not None else out

    def timeline(self, **filters: Any) -> Timeline:
        """A compact time-ordered view of the events ``query(**filters)`` finds (default: at most 200).

        Example:
            >>> _ = orders.append("o1", [Placed(sku="apple")])
            >>> store.event_log().timeline(actor=store.actor)
            <Timeline default: 1 event>
            20...  orders/o1  #1  Placed  pid:...  sku='apple', qty=1
        """
        filters.setdefault("limit", 200)
        return Timeline(self.query(**filters), title=self._ks.namespace)


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def _short(data: Mapping[str, Any], width: int = 48) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in data.items())
    return text if len(text) <= width else text[: width - 1] + "…"


@dataclass
class Timeline:
    """A list of events for reading at a glance (one line each), e.g. in a notebook.

    Attributes:
        events: the events, oldest first.
        title: what the events are of.

    Example:
        >>> _ = orders.append("o1", [Placed(sku="apple", qty=2), Paid(amount_cents=250)])
        >>> orders.timeline("o1")
        <Timeline orders/o1: 2 events>
        20...  orders/o1  #1  Placed  pid:...  sku='apple', qty=2
        20...  orders/o1  #2  Paid    pid:...  amount_cents=250
    """

    events: list[RecordedEvent]
    title: str = ""

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Any:
        return iter(self.events)

    def rows(self) -> list[tuple[str, str, int, str, str, str]]:
        """(time, aggregate, version, type, actor, summary of the data) per event."""
        return [
            (
                e.time.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
                f"{e.collection}/{e.aggregate_id}",
                e.version,
                e.type,
                e.actor,
                _short(e.data()),
            )
            for e in self.events
        ]

    def __repr__(self) -> str:
        rows = self.rows()
        head = f"<Timeline {self.title}: {len(rows)} event{'s' if len(rows) != 1 else ''}>"
        if not rows:
            return head
        widths = [max(len(str(r[i])) for r in rows) for i in range(5)]
        lines = [head]
        for r in rows:
            cells = [str(r[0]), str(r[1]).ljust(widths[1]), f"#{r[2]}".ljust(widths[2] + 1),
                     r[3].ljust(widths[3]), r[4].ljust(widths[4]), r[5]]  # fmt: skip
            lines.append("  ".join(cells).rstrip())
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return display.html(self)


@dataclass
class FieldChange:
    """One event that changed a field, with the chain of its causes (nearest first).

    ``causes`` holds stored events, and ends with a plain id when a cause is no stored event.
    """

    event: RecordedEvent
    before: Any
    after: Any
    causes: list[RecordedEvent | str] = field(default_factory=list)


@dataclass
class Why:
    """Why a field of an aggregate has its value: the events that changed it, with their causes.

    Example:
        >>> _ = orders.append("o1", [Placed(sku="apple")])
        >>> _ = orders.append("o1", [Paid(amount_cents=250)], causation_id="cmd-17")
        >>> print(orders.why("o1", "status"))
        status = 'paid' (orders/o1)
          #1 Placed by pid:...: 'new' -> 'placed'
          #2 Paid by pid:...: 'placed' -> 'paid'  <- cmd-17
    """

    collection: str
    aggregate_id: str
    field: str
    value: Any
    changes: list[FieldChange]

    @property
    def last(self) -> FieldChange | None:
        """The event that set the current value."""
        return self.changes[-1] if self.changes else None

    def __repr__(self) -> str:
        lines = [f"{self.field} = {self.value!r} ({self.collection}/{self.aggregate_id})"]
        for c in self.changes:
            causes = " <- ".join(
                x if isinstance(x, str) else f"{x.collection}/{x.aggregate_id}#{x.version} {x.type}" for x in c.causes
            )
            line = f"  #{c.event.version} {c.event.type} by {c.event.actor}: {c.before!r} -> {c.after!r}"
            lines.append(line + (f"  <- {causes}" if causes else ""))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return display.html(self)


def filter_events(
    events: Sequence[RecordedEvent],
    *,
    actor: str | None = None,
    type: TypeFilter = None,
    since: TimeBound = None,
    until: TimeBound = None,
) -> list[RecordedEvent]:
    """The events matching every given filter, in their order (the filters of ``EventLog.query``).

    Example:
        >>> _ = orders.append("o1", [Placed(sku="apple"), Paid(amount_cents=250)])
        >>> [e.version for e in filter_events(orders.history("o1"), type="Paid")]
        [2]
    """
    names = type_names(type)
    lo = None if since is None else to_ms(since)
    hi = None if until is None else to_ms(until)
    return [
        e
        for e in events
        if (actor is None or e.actor == actor)
        and (names is None or e.type in names)
        and (lo is None or e.timestamp_ms >= lo)
        and (hi is None or e.timestamp_ms <= hi)
    ]


def causation_chain(cause: str | None, known: Mapping[str, RecordedEvent]) -> list[RecordedEvent | str]:
    """The causes of an event, nearest first: ``known`` events by id, ending with an id none of them has.

    Example:
        >>> causation_chain("cmd-17", {})
        ['cmd-17']
    """
    chain: list[RecordedEvent | str] = []
    seen: set[str] = set()
    while cause and cause not in seen:
        seen.add(cause)
        found = known.get(cause)
        if found is None:
            chain.append(cause)
            break
        chain.append(found)
        cause = found.causation_id
    return chain


def explain(
    store: Store,
    collection: str,
    aggregate_id: str,
    field: str,
    events: Sequence[RecordedEvent],
    reducer: Callable[[Any, Any], Any],
    initial: Any,
) -> Why:
    """Replay ``events``, keep those that changed ``field``, and follow each one's causation chain.

    Causes are looked up among the aggregate's own events, then among the namespace's events of the
    same correlation; an id that names no stored event (a command id) ends its chain as a string.

    Example:
        >>> _ = orders.append("o1", [Placed(sku="apple"), Paid(amount_cents=250)])
        >>> why = explain(store, "orders", "o1", "status", orders.history("o1"), apply, Order())
        >>> why.value, [c.event.type for c in why.changes]
        ('paid', ['Placed', 'Paid'])
    """
    state: Any = initial
    changes: list[FieldChange] = []
    for rec in events:
        before = getattr(state, field, None) if state is not None else None
        state = reducer(state, rec.event)
        after = getattr(state, field)
        if after != before:
            changes.append(FieldChange(rec, before, after, []))
    known = {e.event_id: e for e in events}
    if any(c.event.causation_id and c.event.causation_id not in known for c in changes):
        for corr in {c.event.correlation_id for c in changes if c.event.causation_id}:
            for rec in EventLog(store).query(correlation_id=corr):
                known.setdefault(rec.event_id, rec)
    for change in changes:
        change.causes = causation_chain(change.event.causation_id, known)
    return Why(collection, aggregate_id, field, getattr(state, field), changes)
