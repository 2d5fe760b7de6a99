"""Subscriptions to the change feed: filters, per-subscriber delivery, and ``store.changes()`` observables."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

from reactivex import Observable, abc
from reactivex.disposable import Disposable

from rxstate.core.errors import ValidationError
from rxstate.feed.change import REMOVALS, Change, coalesce_changes
from rxstate.feed.fanout import Fanout
from rxstate.feed.mailbox import Mailbox, Overflow, check_buffer, scheduler_runner
from rxstate.feed.reader import READ_COUNT, ChangeFeed, check_since
from rxstate.feed.values import ValueTracker

if TYPE_CHECKING:
    from asyncio import AbstractEventLoop

    from rxstate.store.store import Store


__all__ = ["ChangeObservable", "ChangesOptions", "Subscription", "changes_observable", "shared_feed"]

T = TypeVar("T")
Filter = Callable[[Change], bool]
Since = str | Mapping[int, str] | Change


class ChangesOptions(TypedDict, total=False):
    """The options of ``store.changes`` besides ``batched`` (documented there)."""

    since: Since | None
    collection: str | Iterable[str] | None
    id: str | None
    where: Mapping[str, Any] | Filter | None
    fields: Iterable[str] | None
    group: str | None
    consumer: str | None
    claim_after: float | None
    values: bool
    scheduler: abc.SchedulerBase | None
    loop: AbstractEventLoop | None
    max_buffer: int
    overflow: Overflow | None


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
        single = isinstance(collection, str) or hasattr(collection, "name")  # a name, or one Collection
        names = frozenset(
            [getattr(collection, "name", collection)] if single else (getattr(c, "name", c) for c in collection)
        )
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
    if hasattr(spec, "name") and not isinstance(spec, Mapping):
        return ("set", frozenset([spec.name]))
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
    since: Since | None = None,
    collection: str | Iterable[str] | None = None,
    id: str | None = None,
    where: Mapping[str, Any] | Callable[[Change], bool] | None = None,
    fields: Iterable[str] | None = None,
    group: str | None = None,
    consumer: str | None = None,
    claim_after: float | None = None,
    batched: bool = False,
    values: bool = False,
    scheduler: abc.SchedulerBase | None = None,
    loop: AbstractEventLoop | None = None,
    max_buffer: int = 10_000,
    overflow: Overflow | None = None,
) -> ChangeObservable[Any]:
    """The observable behind ``store.changes`` (see there for the options).

    Example:
        >>> _ = agents.put("a1", Agent(name="planner"))
        >>> changes_observable(store, since="0").pipe(rx.operators.first()).run().id
        'a1'
    """
    test, keep = change_filter(collection=collection, id=id, where=where, fields=fields)
    if not isinstance(values, bool):
        raise ValidationError(f"values must be True or False, not {values!r}", field="values")
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
    start = check_since(since, store.keyspace.partitions)
    if store.guard is not None:  # refused when asked for, not only at its first subscription
        store.guard.require_feed()
    runner = scheduler_runner(scheduler, loop)
    fan_key = (_hashable(collection), id, _hashable(where), _hashable(fields), max_buffer, policy)

    def subscribe(observer: abc.ObserverBase[Any], sched: abc.SchedulerBase | None = None) -> abc.DisposableBase:
        schedule = runner if runner is not None else scheduler_runner(sched) if sched is not None else None
        if not private and schedule is None and not batched and not values and policy in _SHAREABLE:
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
                read_count=min(READ_COUNT, max_buffer),
                claim_after=claim_after,
            )
            if private
            else shared_feed(store)
        )
        sub = Subscription(
            feed,
            observer,
            test=test,
            keep=None if values else keep,  # a value needs every field: trimmed after it is made
            batched=batched,
            max_buffer=max_buffer,
            overflow=policy,
            schedule=schedule,
            transform=with_values(store, feed, keep) if values else None,
        )
        feed.attach(sub.box)

        def dispose() -> None:
            feed.detach(sub.box)
            if private:
                feed.stop()

        return Disposable(dispose)

    return ChangeObservable(subscribe)


def with_values(
    store: Store, feed: ChangeFeed, keep: frozenset[str] | None
) -> Callable[[tuple[Change, ...]], tuple[Change, ...]]:
    """A subscriber's transform filling in ``Change.value`` (see ``rxstate.feed.values``), then trimming
    the fields to ``keep``."""
    tracker = ValueTracker(store, feed.decoder)
    if keep is None:
        return tracker
    return lambda batch: tuple(_trim(c, keep) for c in tracker(batch))


class ChangeObservable(Observable[T]):
    """An ``Observable`` of changes (or of batches of them) that can also be iterated with ``async for``."""

    def aiter(self, *, max_buffer: int = 10_000) -> AsyncIterator[T]:
        """An async iterator over the emitted items, delivered on the running asyncio loop.

        Example:
            >>> import asyncio
            >>> async def first_id():
            ...     async for change in store.changes(since="0", collection="agents").aiter():
            ...         return change.id
            >>> _ = agents.put("a1", Agent(name="planner"))
            >>> asyncio.run(first_id())
            'a1'
        """
        from rxstate.feed.aiter import aiter

        return aiter(self, max_buffer=max_buffer)


def shared_feed(store: Store) -> ChangeFeed:
    """The store's shared feed (created on first use, stopped by ``store.close()``).

    Example:
        >>> shared_feed(store) is store.change_feed
        True
    """
    if store.guard is not None:  # a principal's store: the streams carry every collection's changes
        store.guard.require_feed()
    return store.service(ChangeFeed, lambda: ChangeFeed(store), ChangeFeed.stop)
