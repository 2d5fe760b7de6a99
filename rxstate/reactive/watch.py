"""Watching entities: ``watch`` (one entity) and ``watch_all`` (a collection, or what matches a filter).

Each observable starts with the current value (``snapshot`` changes) and then delivers every change with
the full new value; subscribing attaches to the change feed before reading the snapshot, and holds the
changes that arrive meanwhile, so nothing falls between the snapshot and the first change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

import pydantic
from reactivex import abc
from reactivex.disposable import Disposable

from rxstate.core.errors import RxStateError, ValidationError
from rxstate.core.redaction import error_reason
from rxstate.feed.change import REMOVALS, Change, offset_key
from rxstate.feed.delivery import Overflow, scheduler_runner
from rxstate.feed.subscription import ChangeObservable, Subscription, shared_feed

if TYPE_CHECKING:
    from rxstate.feed.reader import ChangeFeed
    from rxstate.store.collection import Collection

__all__ = ["watch", "watch_all"]


log = logging.getLogger("rxstate.reactive")
T = TypeVar("T")


def _apply(coll: Collection[Any], before: Any, change: Change) -> Any:
    if change.op in REMOVALS:
        return None
    try:
        fields = coll._codec.model_input(change.fields)
        if change.op in ("create", "replace"):
            return coll.model.model_validate(fields)
        if before is None:
            return None
        return coll._codec.revalidate(before.model_copy(update=fields))
    except (RxStateError, ValueError) as exc:
        # pydantic's own error quotes the input, secrets included: log only its path and reason.
        reason = error_reason(exc, coll.model.__rxstate_secrets__) if isinstance(exc, pydantic.ValidationError) else exc
        log.debug("watch: cannot apply %s to %r: %s: %s", change.op, before, type(exc).__name__, reason)
        return None


def _snapshot(coll: Collection[Any], entity_id: str, versioned: Any, partition: int) -> Change:
    if versioned is None:
        return Change(coll.name, entity_id, "snapshot", 0, MappingProxyType({}), partition=partition)
    value = versioned.value
    return Change(
        collection=coll.name,
        id=entity_id,
        op="snapshot",
        version=versioned.version,
        fields=MappingProxyType(dict(value)),
        actor=versioned.actor,
        timestamp_ms=versioned.timestamp_ms,
        partition=partition,
        offset=versioned.offset or "0-0",
        schema_version=versioned.schema_version,
        value=value,
    )


def _held_subscription(
    feed: ChangeFeed,
    observer: abc.ObserverBase[Change],
    *,
    test: Callable[[Change], bool],
    transform: Callable[[tuple[Change, ...]], tuple[Change, ...]],
    max_buffer: int,
    overflow: Overflow,
    schedule: Callable[[Callable[[], None]], None] | None,
) -> Subscription:
    """A per-change subscription attached to ``feed`` that holds its changes until ``_release``, so
    a snapshot read after attaching can still be delivered before them."""
    sub = Subscription(
        feed,
        observer,
        test=test,
        keep=None,
        batched=False,
        max_buffer=max_buffer,
        overflow=overflow,
        schedule=schedule,
        transform=transform,
        paused=True,
    )
    feed.attach(sub.box)
    return sub


def _release(feed: ChangeFeed, sub: Subscription, snapshot: tuple[Change, ...]) -> abc.DisposableBase:
    """Deliver ``snapshot`` (if any) first, then the changes held since attaching; the disposable detaches."""
    if snapshot:
        sub.box.offer_first(snapshot)
    sub.box.resume(feed.dispatcher)
    return Disposable(lambda: feed.detach(sub.box))


def watch(
    coll: Collection[Any],
    entity_id: str,
    *,
    partition: str | None = None,
    scheduler: abc.SchedulerBase | None = None,
    loop: Any = None,
    max_buffer: int = 1000,
    overflow: Overflow = "coalesce",
) -> ChangeObservable:
    """The observable behind ``Collection.watch`` (see there).

    Example:
        >>> watch(agents, "a1").subscribe(lambda c: print(c.op, c.value))  # doctest: +SKIP
    """
    key = coll.key(entity_id, partition=partition)
    p = coll._partition(entity_id, partition)
    store = coll._store
    runner = scheduler_runner(scheduler, loop)
    name = coll.name

    def subscribe(observer: abc.ObserverBase[Change], sched: abc.SchedulerBase | None = None) -> abc.DisposableBase:
        feed = shared_feed(store)
        state: dict[str, Any] = {"gate": (0, 0), "value": None}

        def transform(batch: tuple[Change, ...]) -> tuple[Change, ...]:
            out = []
            for c in batch:
                if c.op != "snapshot":
                    if offset_key(c.offset) <= state["gate"]:
                        continue
                    c = replace(c, value=_apply(coll, state["value"], c))
                state["value"] = c.value
                out.append(c)
            return tuple(out)

        sub = _held_subscription(
            feed,
            observer,
            test=lambda c: c.id == entity_id and c.collection == name,
            transform=transform,
            max_buffer=max_buffer,
            overflow=overflow,
            schedule=runner if runner is not None else scheduler_runner(sched),
        )
        # The value and the stream's tail in one MULTI: changes up to that tail are in the value.
        pipe = store.client.pipeline(transaction=True)
        pipe.hgetall(key)
        pipe.xrevrange(store.keyspace.changes(p), count=1)
        raw, last = pipe.execute()
        if last:
            tail = last[0][0]
            state["gate"] = offset_key(tail.decode() if isinstance(tail, bytes) else tail)
        versioned = coll._decode(entity_id, raw, key) if raw else None
        return _release(feed, sub, (_snapshot(coll, entity_id, versioned, p),))

    return ChangeObservable(subscribe)


def watch_all(
    coll: Collection[Any],
    *,
    where: Mapping[str, Any] | None = None,
    scheduler: abc.SchedulerBase | None = None,
    loop: Any = None,
    max_buffer: int = 10_000,
    overflow: Overflow = "coalesce",
) -> ChangeObservable:
    """The observable behind ``Collection.watch_all`` (see there).

    Example:
        >>> watch_all(agents, where={"status": "busy"}).subscribe(print)  # doctest: +SKIP
    """
    store = coll._store
    runner = scheduler_runner(scheduler, loop)
    name = coll.name
    conditions = dict(where or {})
    if conditions:
        wanted = {f: coll._codec.decode_value(f, v) for f, v in coll._codec.encode_fields(conditions)}
        for f in wanted:
            if f not in coll.indexes:
                raise ValidationError(
                    f"{name}.{f} has no index (declared: {', '.join(coll.indexes) or 'none'})", field=f
                )
    else:
        wanted = {}

    def matches(value: Any) -> bool:
        return value is not None and all(getattr(value, f) == v for f, v in wanted.items())

    def subscribe(observer: abc.ObserverBase[Change], sched: abc.SchedulerBase | None = None) -> abc.DisposableBase:
        feed = shared_feed(store)
        gates: dict[str, tuple[int, int]] = {}
        values: dict[str, Any] = {}

        def transform(batch: tuple[Change, ...]) -> tuple[Change, ...]:
            out = []
            for c in batch:
                if c.op == "snapshot":
                    out.append(c)
                    continue
                gate = gates.get(c.id)
                if gate is not None and offset_key(c.offset) <= gate:
                    continue
                was = c.id in values
                value = _apply(coll, values.get(c.id), c)
                if wanted and value is None and c.op in ("update", "incr"):
                    # Not a member so far: a partial change may have made it one; read it whole.
                    found = coll.get_many_versioned([c.id]) if coll.partition_key is None else []
                    if found:
                        value = found[0].value
                        gates[c.id] = offset_key(found[0].offset)
                if value is None or (wanted and not matches(value)):
                    values.pop(c.id, None)
                    if wanted and not was:
                        continue
                    if wanted and c.op not in REMOVALS:  # left the selection: say so as a removal
                        c = replace(c, op="leave")
                else:
                    values[c.id] = value
                out.append(replace(c, value=value))
            return tuple(out)

        sub = _held_subscription(
            feed,
            observer,
            test=lambda c: c.collection == name,
            transform=transform,
            max_buffer=max_buffer,
            overflow=overflow,
            schedule=runner if runner is not None else scheduler_runner(sched),
        )
        found = coll.where_versioned(**conditions) if conditions else coll.all_versioned()
        snapshot = []
        for v in found:
            gates[v.id] = offset_key(v.offset or "0-0")
            values[v.id] = v.value
            snapshot.append(_snapshot(coll, v.id, v, coll._partition_of_value(v.id, v.value)))
        return _release(feed, sub, tuple(snapshot))

    return ChangeObservable(subscribe)
