"""Operators for change streams, in the style of ``reactivex.operators``: each returns a function
``Observable[T] -> Observable[U]`` to use with ``pipe``.

Example:
    >>> from rxstate import ops
    >>> _ = agents.put("a1", Agent(name="planner"))
    >>> _ = tasks.put("t1", Task(title="review"))
    >>> _ = agents.update("a1", status="busy")
    >>> _ = agents.update("a1", load=3)
    >>> status_changes = store.changes(since="0").pipe(  # replay, then live
    ...     ops.collection("agents"),
    ...     ops.touches("status"),
    ...     ops.batch(max_items=2, max_delay=0.05),
    ... )
    >>> [(c.op, c.version) for c in status_changes.pipe(rx.operators.first()).run()]
    [('create', 1), ('update', 2)]
"""

from __future__ import annotations

import fnmatch
import re
import threading
from collections.abc import Callable, Hashable
from datetime import timedelta
from typing import Any, TypeVar

import reactivex
from reactivex import Observable, abc
from reactivex import operators as rx_ops
from reactivex.disposable import CompositeDisposable, SerialDisposable
from reactivex.scheduler import TimeoutScheduler

from rxstate.core.errors import ValidationError
from rxstate.feed.change import REMOVALS, Change

__all__ = ["batch", "change_key", "coalesce", "collection", "id_match", "touches", "where"]

T = TypeVar("T")


def change_key(change: Change) -> tuple[str, str]:
    """``(collection, id)`` of a change: the default key of ``coalesce``."""
    return (change.collection, change.id)


def _seconds(value: float | timedelta, what: str) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise ValidationError(f"{what} must be a non-negative number of seconds, not {value!r}")
    return float(seconds)


def _subscribe_windowed(
    source: Observable[T],
    observer: abc.ObserverBase[Any],
    sched: abc.SchedulerBase | None,
    lock: threading.RLock,
    timer: SerialDisposable,
    on_next: Callable[[T], None],
    flush: Callable[[], None],
    discard: Callable[[], None],
) -> abc.DisposableBase:
    """Subscribe a windowing operator to ``source``: on completion the open window is flushed first;
    on error it is discarded. Disposing ends the subscription and the window's timer."""

    def on_error(exc: Exception) -> None:
        with lock:
            discard()
            observer.on_error(exc)

    def on_completed() -> None:
        with lock:
            flush()
            observer.on_completed()

    subscription = source.subscribe(on_next, on_error, on_completed, scheduler=sched)
    return CompositeDisposable(subscription, timer)


def batch(
    max_items: int, max_delay: float | timedelta, *, scheduler: abc.SchedulerBase | None = None
) -> Callable[[Observable[T]], Observable[list[T]]]:
    """Group items into lists of at most ``max_items``, emitted at the latest ``max_delay`` seconds
    after the first item of the list arrived. The last partial list is emitted on completion.

    Unlike ``reactivex.operators.buffer_with_time_or_count`` no empty lists are emitted, and the delay
    runs from a list's first item, so a quiet stream costs nothing.

    Example:
        >>> rx.of(1, 2, 3, 4, 5).pipe(batch(max_items=2, max_delay=0.05), rx.operators.to_list()).run()
        [[1, 2], [3, 4], [5]]
    """
    if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1:
        raise ValidationError(f"max_items must be a positive int, not {max_items!r}")
    delay = _seconds(max_delay, "max_delay")

    def operator(source: Observable[T]) -> Observable[list[T]]:
        def subscribe(
            observer: abc.ObserverBase[list[T]], sched: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            timer_scheduler = scheduler or sched or TimeoutScheduler.singleton()
            lock = threading.RLock()
            pending: list[T] = []
            timer = SerialDisposable()
            generation = [0]

            def flush() -> None:
                if pending:
                    items = pending[:]
                    pending.clear()
                    generation[0] += 1
                    timer.disposable = None
                    observer.on_next(items)

            def on_timer(gen: int) -> None:
                with lock:
                    if gen == generation[0]:
                        flush()

            def on_next(item: T) -> None:
                with lock:
                    pending.append(item)
                    if len(pending) >= max_items:
                        flush()
                    elif len(pending) == 1:
                        gen = generation[0]
                        timer.disposable = timer_scheduler.schedule_relative(delay, lambda _s, _st: on_timer(gen))

            return _subscribe_windowed(source, observer, sched, lock, timer, on_next, flush, pending.clear)

        return reactivex.create(subscribe)

    return operator


def coalesce(
    by_key: Callable[[T], Hashable] = change_key,  # type: ignore[assignment]
    *,
    window: float | timedelta = 0.05,
    merge: Callable[[T, T], T] | None = None,
    scheduler: abc.SchedulerBase | None = None,
) -> Callable[[Observable[T]], Observable[T]]:
    """Keep only the latest item per key within a window, emitted when the window closes.

    A window opens with the first item after a quiet period and closes ``window`` seconds later; then
    one item per key is emitted, in the order each key was first seen. For changes, ``merge`` defaults
    to folding earlier changed fields into the latest change (``Change.then``), so nothing set in the
    window is lost; other items keep the latest.

    Example:
        >>> burst = rx.of(Change("agents", "a1", "update", 2, {"status": "busy"}),
        ...               Change("agents", "a1", "update", 3, {"load": 3}))
        >>> [(c.version, dict(c.fields)) for c in burst.pipe(coalesce(window=0.01), rx.operators.to_list()).run()]
        [(3, {'status': 'busy', 'load': 3})]
    """
    delay = _seconds(window, "window")

    def fold(before: T, after: T) -> T:
        if merge is not None:
            return merge(before, after)
        if isinstance(before, Change) and isinstance(after, Change):
            return before.then(after)  # type: ignore[return-value]
        return after

    def operator(source: Observable[T]) -> Observable[T]:
        def subscribe(observer: abc.ObserverBase[T], sched: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            timer_scheduler = scheduler or sched or TimeoutScheduler.singleton()
            lock = threading.RLock()
            latest: dict[Hashable, T] = {}
            timer = SerialDisposable()

            def flush() -> None:
                items = list(latest.values())
                latest.clear()
                for item in items:
                    observer.on_next(item)

            def on_timer(_s: Any, _st: Any) -> None:
                with lock:
                    flush()

            def on_next(item: T) -> None:
                with lock:
                    key = by_key(item)
                    before = latest.get(key)
                    latest[key] = item if before is None else fold(before, item)
                    if len(latest) == 1 and before is None:
                        timer.disposable = timer_scheduler.schedule_relative(delay, on_timer)

            return _subscribe_windowed(source, observer, sched, lock, timer, on_next, flush, latest.clear)

        return reactivex.create(subscribe)

    return operator


def collection(*names: str) -> Callable[[Observable[Change]], Observable[Change]]:
    """Only changes of these collections.

    Example:
        >>> mixed = rx.of(Change("agents", "a1", "create", 1, {}), Change("teams", "t1", "create", 1, {}))
        >>> [c.id for c in mixed.pipe(collection("agents", "tasks"), rx.operators.to_list()).run()]
        ['a1']
    """
    if not names or not all(isinstance(n, str) for n in names):
        raise ValidationError("collection() needs one or more collection names")
    wanted = frozenset(names)
    return rx_ops.filter(lambda c: c.collection in wanted)


def id_match(pattern: str) -> Callable[[Observable[Change]], Observable[Change]]:
    """Only changes of entities whose id matches a glob pattern (``*``, ``?``, ``[...]``).

    Example:
        >>> mixed = rx.of(Change("agents", "agent-1", "create", 1, {}), Change("agents", "bot-1", "create", 1, {}))
        >>> [c.id for c in mixed.pipe(id_match("agent-*"), rx.operators.to_list()).run()]
        ['agent-1']
    """
    if not isinstance(pattern, str) or not pattern:
        raise ValidationError(f"id_match needs a glob pattern, not {pattern!r}")
    match = re.compile(fnmatch.translate(pattern)).match
    return rx_ops.filter(lambda c: match(c.id) is not None)


def touches(*fields: str) -> Callable[[Observable[Change]], Observable[Change]]:
    """Only changes that set one of these fields (deletions and expiries touch every field).

    Example:
        >>> mixed = rx.of(Change("agents", "a1", "update", 2, {"load": 1}), Change("agents", "a1", "delete", 3, {}))
        >>> [c.op for c in mixed.pipe(touches("status"), rx.operators.to_list()).run()]
        ['delete']
    """
    if not fields or not all(isinstance(f, str) for f in fields):
        raise ValidationError("touches() needs one or more field names")
    wanted = frozenset(fields)
    return rx_ops.filter(lambda c: c.op in REMOVALS or not wanted.isdisjoint(c.fields))


def where(
    predicate: Callable[[Change], bool] | None = None, /, **values: Any
) -> Callable[[Observable[Change]], Observable[Change]]:
    """Only changes for which ``predicate(change)`` is true and that set each given field to its value.

    Example:
        >>> mixed = rx.of(Change("agents", "a1", "update", 2, {"status": "busy"}),
        ...               Change("agents", "a2", "update", 12, {"status": "idle"}))
        >>> [c.id for c in mixed.pipe(where(status="busy"), rx.operators.to_list()).run()]
        ['a1']
        >>> [c.id for c in mixed.pipe(where(lambda c: c.version > 10), rx.operators.to_list()).run()]
        ['a2']
    """
    if predicate is None and not values:
        raise ValidationError("where() needs a predicate or field values")
    if predicate is not None and not callable(predicate):
        raise ValidationError(f"where() predicate must be callable, not {predicate!r}")
    missing = object()

    def test(c: Change) -> bool:
        if predicate is not None and not predicate(c):
            return False
        return all(c.fields.get(f, missing) == v for f, v in values.items())

    return rx_ops.filter(test)
