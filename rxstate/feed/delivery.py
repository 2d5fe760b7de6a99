"""Delivery to subscribers: one bounded buffer per subscriber, drained off the feed's thread.

The change feed only appends to buffers (``Mailbox.offer``), so a subscriber that is slow, blocks or
raises cannot hold up the feed or any other subscriber. Buffers are drained by a small elastic pool of
worker threads (``Dispatcher``; a watchdog adds a worker when one is stuck in a slow callback), or on a
``reactivex`` scheduler / asyncio loop when the subscriber asks for one. A full buffer applies its
``Overflow`` policy; the default coalesces changes by entity, so a slow subscriber sees fewer, merged
changes but always the latest state.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from reactivex import abc
from reactivex.scheduler import ImmediateScheduler

from rxstate.core.errors import BufferOverflow, ValidationError

__all__ = ["OVERFLOW_POLICIES", "BufferOverflow", "DeliveryMetrics", "Dispatcher", "Fanout", "Mailbox", "Overflow"]

log = logging.getLogger("rxstate.delivery")
T = TypeVar("T")

Overflow = Literal["coalesce", "drop_oldest", "drop_newest", "error", "block"]
OVERFLOW_POLICIES: tuple[str, ...] = ("coalesce", "drop_oldest", "drop_newest", "error", "block")

_STALL_S = 0.01  # a worker inside one callback for longer than this is stuck: others take over
_IDLE_EXIT_S = 2.0  # extra workers exit after being idle this long
_DRAIN_ROUNDS = 64  # batches one subscriber gets per turn before the next subscriber's turn
_CHUNK = 32  # subscribers a worker takes off the ready queue at once


@dataclass
class DeliveryMetrics:
    """Counters of one delivery path (read them with ``metrics()`` on the feed).

    Attributes:
        delivered: items handed to subscribers.
        coalesced: items merged into a later one of the same key by a full buffer.
        dropped: items dropped by a full buffer (``drop_oldest``/``drop_newest``).
        overflows: subscribers ended by ``overflow="error"``.
        subscriber_errors: exceptions raised by subscribers (each ended that subscriber).
        workers_added: workers started because others were stuck in slow callbacks.
    """

    delivered: int = 0
    coalesced: int = 0
    dropped: int = 0
    overflows: int = 0
    subscriber_errors: int = 0
    workers_added: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def check_buffer(max_items: Any, overflow: Any) -> None:
    """Raise ``ValidationError`` unless ``overflow`` is a policy and ``max_items`` a positive int.

    Example:
        >>> check_buffer(100, "drop_oldest")
    """
    if overflow not in OVERFLOW_POLICIES:
        raise ValidationError(f"overflow must be one of {OVERFLOW_POLICIES}, not {overflow!r}")
    if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1:
        raise ValidationError(f"max_buffer must be a positive int, not {max_items!r}")


def _squeeze(
    items: list[T],
    merge: Callable[[list[T]], list[T]] | None,
    max_items: int,
    metrics: DeliveryMetrics,
    *,
    keep_first: bool = False,
) -> list[T]:
    """Fold ``items`` with ``merge`` (if any), then keep at most ``max_items`` (the last ones, or the
    first with ``keep_first``), counting what was coalesced and dropped."""
    merged = items
    if merge is not None:
        merged = merge(items)
        metrics.coalesced += len(items) - len(merged)
    kept = merged[:max_items] if keep_first else merged[-max_items:]
    metrics.dropped += len(merged) - len(kept)
    return kept


def _report(on_error: Callable[[Exception], None], exc: Exception) -> None:
    """Hand a subscriber's error to its ``on_error``; one that raises again is only logged."""
    try:
        on_error(exc)
    except Exception as again:  # the subscriber has no error handler, or it raised too
        log.warning("subscriber failed: %r (its on_error raised %r)", exc, again)


class _Worker:
    __slots__ = ("busy_since", "chunk", "current", "thread")

    def __init__(self) -> None:
        self.chunk: deque[Any] = deque()
        self.busy_since = 0.0
        self.current: Any = None
        self.thread: threading.Thread | None = None


class Dispatcher:
    """An elastic pool of worker threads that drains subscribers' buffers.

    One worker suffices while callbacks are quick (the GIL lets only one run anyway). A watchdog
    notices a worker stuck in one callback for over 10 ms and starts another, handing it the rest of
    the stuck worker's queue, so one sleeping subscriber delays nobody else.

    Example:
        >>> dispatcher = Dispatcher(metrics=DeliveryMetrics())
        >>> dispatcher.close()
    """

    def __init__(self, *, metrics: DeliveryMetrics, max_workers: int = 64, name: str = "rxstate-delivery") -> None:
        self.metrics = metrics
        self.max_workers = max_workers
        self._name = name
        self._ready: deque[Mailbox[Any]] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._workers: list[_Worker] = []
        self._idle = 0
        self._closed = False
        self._activity = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._progress: dict[_Worker, tuple[tuple[Any, int], float]] = {}

    def submit(self, boxes: Sequence[Any]) -> None:
        """Queue mailboxes that have something to deliver."""
        with self._cond:
            if self._closed:
                return
            self._ready.extend(boxes)
            if self._idle:
                self._cond.notify(min(self._idle, len(boxes)))
            elif not self._workers:
                self._spawn()
        if not self._activity.is_set():
            self._activity.set()

    def _spawn(self) -> None:
        worker = _Worker()
        worker.thread = threading.Thread(
            target=self._run, args=(worker,), name=f"{self._name}-{len(self._workers)}", daemon=True
        )
        self._workers.append(worker)
        worker.thread.start()
        if self._watchdog is None:
            self._watchdog = threading.Thread(target=self._watch, name=f"{self._name}-watchdog", daemon=True)
            self._watchdog.start()

    def _run(self, me: _Worker) -> None:
        cond, ready = self._cond, self._ready
        while True:
            with cond:
                while not ready:
                    if self._closed:
                        self._workers.remove(me)
                        return
                    self._idle += 1
                    woke = cond.wait(_IDLE_EXIT_S)
                    self._idle -= 1
                    if not woke and not ready and len(self._workers) > 1:
                        self._workers.remove(me)
                        return
                for _ in range(min(_CHUNK, len(ready))):
                    me.chunk.append(ready.popleft())
            chunk = me.chunk
            while True:
                try:
                    box = chunk.popleft()
                except IndexError:
                    break
                me.current = box
                me.busy_since = time.monotonic()
                box.drain(self)
                me.busy_since = 0.0
                me.current = None

    def _watch(self) -> None:
        while not self._closed:
            with self._cond:
                quiet = not self._ready and all(not w.busy_since for w in self._workers)
            if quiet:
                self._activity.clear()
                self._activity.wait(1.0)
                continue
            time.sleep(_STALL_S / 2)
            now = time.monotonic()
            with self._cond:
                stuck = [w for w in self._workers if self._stuck(w, now)]
                if not stuck:
                    continue
                for w in stuck:
                    while True:  # what the stuck worker has not started yet goes to the others
                        try:
                            self._ready.append(w.chunk.popleft())
                        except IndexError:
                            break
                    current = w.current
                    if getattr(current, "helpable", False) and current.needs_help():
                        self._ready.append(current)  # a fan-out others can continue
                if self._ready:
                    if self._idle:
                        self._cond.notify(min(self._idle, len(self._ready)))
                    elif len(self._workers) < self.max_workers:
                        self.metrics.workers_added += 1
                        self._spawn()

    def _stuck(self, w: _Worker, now: float) -> bool:
        """A worker is stuck when its current callback has run for too long. In a fan-out, which calls
        many quick callbacks in one go, that means: no subscriber finished for a while."""
        since = w.busy_since
        if not since:
            return False
        current = w.current
        if getattr(current, "helpable", False):
            seen = self._progress.get(w)
            mark = (current, current.progress)
            if seen is None or seen[0] != mark:
                self._progress[w] = (mark, now)
                return False
            since = seen[1]
        return now - since > _STALL_S

    def close(self) -> None:
        """Stop the workers once they finish their current callback."""
        with self._cond:
            self._closed = True
            self._ready.clear()
            self._cond.notify_all()
        self._activity.set()


class _Gone:
    """Stands in for the mailbox of a subscriber that left a fan-out: nothing reaches it any more."""

    def resume(self, dispatcher: Dispatcher) -> None:
        return None

    def offer(self, batch: tuple[Any, ...]) -> bool:
        return False

    def close(self) -> None:
        return None


_GONE = _Gone()


def _one_of(emit: Callable[[tuple[Any, ...]], None]) -> Callable[[Any], None]:
    def on_item(item: Any) -> None:
        emit((item,))

    return on_item


class _Member:
    """One subscriber of a ``Fanout``."""

    __slots__ = ("emit", "guard", "on_error", "on_item", "seq", "solo")

    def __init__(
        self,
        emit: Callable[[tuple[Any, ...]], None],
        on_error: Callable[[Exception], None],
        on_item: Callable[[Any], None] | None = None,
    ) -> None:
        self.emit = emit
        self.on_item = on_item if on_item is not None else _one_of(emit)
        self.on_error = on_error
        self.guard = threading.Lock()  # held while this subscriber runs: calls to it never overlap
        self.solo: Mailbox[Any] | _Gone | None = None  # its own mailbox once moved aside; _GONE once removed
        self.seq = 0  # the last batch it was given on the fast path

    def detach(self) -> Mailbox[Any] | None:
        """Mark this subscriber gone; returns its own mailbox (if it had one) for the caller to close."""
        solo, self.solo = self.solo, _GONE
        self.seq = -2  # never the one before a batch: only the (no-op) slow path sees it again
        return solo if isinstance(solo, Mailbox) else None


class Fanout(Generic[T]):
    """Subscribers with the same selection and delivery sharing one buffer: the cheap path for many.

    The feed offers a batch once for all of them; a worker calls each subscriber in turn. Several
    workers may work on one fan-out at once (a subscriber index is handed out atomically), so when
    one subscriber is stuck in its callback the watchdog lets another worker carry on with the rest.
    A subscriber found still busy with an earlier batch is moved to a mailbox of its own (with the
    same overflow policy), so it gets its batches in order, one call at a time, and holds up nobody.

    Example:
        >>> fan = Fanout(dispatcher=Dispatcher(metrics=DeliveryMetrics()), metrics=DeliveryMetrics(),
        ...              merge=lambda items: items)
    """

    helpable = True

    def __init__(
        self,
        *,
        dispatcher: Dispatcher,
        metrics: DeliveryMetrics,
        max_items: int = 10_000,
        overflow: Overflow = "coalesce",
        merge: Callable[[list[T]], list[T]] | None = None,
        select: Callable[[tuple[T, ...]], tuple[T, ...]] | None = None,
    ) -> None:
        if overflow in ("block", "error"):
            raise ValidationError(f"a shared fan-out cannot use overflow={overflow!r}")
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.max_items = max_items
        self.overflow = overflow
        self._merge = merge
        self._select = select
        self.members: list[_Member] = []
        self._lock = threading.Lock()
        self._tasks: deque[tuple[T, ...]] = deque()
        self._count = 0
        self._active: tuple[tuple[T, ...], list[_Member], Any, int] | None = None
        self._seq = 0  # number of the latest batch started
        self._driving = False
        self.closed = False

    def __len__(self) -> int:
        return len(self.members)

    def add(
        self,
        emit: Callable[[tuple[T, ...]], None],
        on_error: Callable[[Exception], None],
        on_item: Callable[[T], None] | None = None,
    ) -> _Member:
        """A new subscriber: ``emit`` takes a batch, ``on_item`` (optional, faster) one item."""
        member = _Member(emit, on_error, on_item)
        with self._lock:
            member.seq = self._seq  # its first batch is the next one started
            self.members = [*self.members, member]
        return member

    def remove(self, member: _Member) -> bool:
        """Take a subscriber out; True when none is left."""
        with self._lock:
            solo = member.detach()
            self.members = [m for m in self.members if m is not member]
            empty = not self.members
        if solo is not None:
            solo.close()
        return empty

    def offer(self, batch: tuple[T, ...]) -> bool:
        if self._select is not None:
            batch = self._select(batch)
            if not batch:
                return False
        with self._lock:
            if self.closed:
                return False
            if self._count + len(batch) > self.max_items:
                self._make_room(batch)
            else:
                self._tasks.append(batch)
                self._count += len(batch)
            if self._driving:
                return False
            self._driving = True
        return True

    def _make_room(self, batch: tuple[T, ...]) -> None:
        items = [item for b in self._tasks for item in b]
        items.extend(batch)
        merge = self._merge if self.overflow == "coalesce" else None
        kept = _squeeze(items, merge, self.max_items, self.metrics, keep_first=self.overflow == "drop_newest")
        self._tasks.clear()
        self._tasks.append(tuple(kept))
        self._count = len(kept)

    @property
    def progress(self) -> tuple[int, str]:
        """Changes as each subscriber is called (the watchdog tells slow from stuck by it). The repr of
        an ``itertools.count`` shows its next index without consuming it, so counting costs nothing."""
        active = self._active
        return (0, "") if active is None else (id(active), repr(active[2]))

    def needs_help(self) -> bool:
        active = self._active
        return active is not None or bool(self._tasks)

    def drain(self, dispatcher: Dispatcher | None) -> None:
        """Deliver queued batches to every subscriber; safe to run on several workers at once."""
        slow = self._deliver_slow
        while True:
            active = self._active
            if active is not None:
                batch, members, counter, seq = active
                prev = seq - 1
                n = len(members)
                single = len(batch) == 1
                first = batch[0]
                for i in counter:  # several workers may share this counter: each index goes to one
                    if i >= n:
                        break
                    m = members[i]
                    # Only a subscriber that has had the batch before this one and is not running
                    # takes the fast path; any other (busy, lagging, moved aside) the ordered slow one.
                    if m.seq == prev and m.guard.acquire(False):
                        m.seq = seq
                        try:
                            if single:
                                m.on_item(first)
                            else:
                                m.emit(batch)
                        except Exception as exc:
                            self._fail(m, exc)
                        finally:
                            m.guard.release()
                        if m.solo is not None:  # moved aside (or gone) while it ran
                            m.solo.resume(self.dispatcher)
                    else:
                        slow(m, batch)
            with self._lock:
                if self._active is active:
                    if active is not None:
                        self.metrics.delivered += len(active[0]) * len(active[1])
                    if self._tasks:
                        batch = self._tasks.popleft()
                        self._count -= len(batch)
                        self._seq += 1
                        self._active = (batch, self.members, itertools.count(), self._seq)
                    else:
                        self._active = None
                        self._driving = False
                        return

    def _deliver_slow(self, member: _Member, batch: tuple[T, ...]) -> None:
        """``member`` is still busy with an earlier batch (or has its own mailbox already, or is gone)."""
        solo = member.solo
        if solo is _GONE:
            return
        if solo is None:
            with self._lock:
                solo = member.solo
                if solo is None:
                    solo = member.solo = Mailbox(
                        member.emit,
                        on_error=functools.partial(self._fail, member),
                        metrics=self.metrics,
                        max_items=self.max_items,
                        overflow=self.overflow,
                        merge=self._merge,
                    )
                    solo.paused = True
        solo.offer(batch)
        if member.guard.acquire(False):  # its earlier call has ended meanwhile
            member.guard.release()
            solo.resume(self.dispatcher)

    def fail(self, exc: Exception) -> None:
        """End every subscriber with ``exc`` (their shared selection raised)."""
        for member in list(self.members):
            self._fail(member, exc)

    def _fail(self, member: _Member, exc: Exception) -> None:
        self.metrics.subscriber_errors += 1
        self.remove(member)
        _report(member.on_error, exc)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self._tasks.clear()
            members, self.members = self.members, []
        for m in members:
            solo = m.detach()
            if solo is not None:
                solo.close()


class Mailbox(Generic[T]):
    """One subscriber's bounded buffer and its way of being drained.

    Items are batches (tuples); ``emit`` gets each batch on the delivery thread. Filtering, overflow
    and error routing happen here, once for every kind of subscriber.

    Args:
        emit: called with each batch on the delivery thread; an exception ends the subscription.
        on_error: where a subscriber's own exception (or ``BufferOverflow``) is routed.
        max_items: the most items buffered before the overflow policy applies.
        overflow: one of ``OVERFLOW_POLICIES``.
        merge: for ``coalesce``: folds a list of buffered items into fewer (e.g. the latest per key).
        schedule: how to run ``drain`` (None: on the dispatcher).
        select: picks (and may trim) the items of an offered batch this subscriber wants.
        metrics: counters to update.
    """

    __slots__ = (
        "_buffer",
        "_cond",
        "_count",
        "_dead",
        "_emit",
        "_filter",
        "_lock",
        "_merge",
        "_on_error",
        "_schedule",
        "_scheduled",
        "max_items",
        "metrics",
        "overflow",
        "paused",
    )

    def __init__(
        self,
        emit: Callable[[tuple[T, ...]], None],
        *,
        on_error: Callable[[Exception], None],
        metrics: DeliveryMetrics,
        max_items: int = 10_000,
        overflow: Overflow = "coalesce",
        merge: Callable[[list[T]], list[T]] | None = None,
        schedule: Callable[[Callable[[], None]], None] | None = None,
        select: Callable[[tuple[T, ...]], tuple[T, ...]] | None = None,
    ) -> None:
        check_buffer(max_items, overflow)
        if overflow == "coalesce" and merge is None:
            raise ValidationError("overflow='coalesce' needs a key to coalesce by")
        self._emit = emit
        self._filter = select
        self._on_error = on_error
        self.metrics = metrics
        self.max_items = max_items
        self.overflow = overflow
        self._merge = merge
        self._schedule = schedule
        self._buffer: deque[tuple[T, ...]] = deque()
        self._count = 0
        self._lock = threading.Lock()
        self._cond: threading.Condition | None = threading.Condition(self._lock) if overflow == "block" else None
        self._scheduled = False
        self._dead = False
        self.paused = False

    @property
    def closed(self) -> bool:
        return self._dead

    def __len__(self) -> int:
        return self._count

    def offer(self, batch: tuple[T, ...]) -> bool:
        """Buffer a batch; True when the caller must get this mailbox drained (see ``Dispatcher.submit``)."""
        if self._filter is not None:
            batch = self._filter(batch)
            if not batch:
                return False
        with self._lock:
            if self._dead:
                return False
            if self._count + len(batch) > self.max_items and not self._make_room(batch):
                return False
            self._buffer.append(batch)
            self._count += len(batch)
            if self._scheduled or self.paused:
                return False
            self._scheduled = True
        if self._schedule is None:
            return True
        self._schedule(self._drain_scheduled)
        return False

    def offer_first(self, batch: tuple[T, ...]) -> None:
        """Put a batch before everything buffered (a snapshot that must come first)."""
        with self._lock:
            self._buffer.appendleft(batch)
            self._count += len(batch)

    def resume(self, dispatcher: Dispatcher) -> None:
        """Start delivering after a paused start."""
        with self._lock:
            self.paused = False
            if self._scheduled or not self._buffer or self._dead:
                return
            self._scheduled = True
        self._kick(dispatcher)

    def _kick(self, dispatcher: Dispatcher | None) -> None:
        """Get ``drain`` run: on the scheduler this mailbox has, else on the dispatcher."""
        if self._schedule is not None:
            self._schedule(self._drain_scheduled)
        elif dispatcher is not None:
            dispatcher.submit([self])

    def _make_room(self, batch: tuple[T, ...]) -> bool:
        """Apply the overflow policy with the lock held; False when ``batch`` is not to be buffered."""
        policy = self.overflow
        if policy == "block":
            assert self._cond is not None
            while self._count and self._count + len(batch) > self.max_items and not self._dead:
                self._cond.wait(0.5)
            return not self._dead
        if policy == "coalesce":
            assert self._merge is not None
            items = [item for b in self._buffer for item in b]
            items.extend(batch)
            merged = _squeeze(items, self._merge, self.max_items, self.metrics)
            self._buffer.clear()
            self._buffer.append(tuple(merged))
            self._count = len(merged)
            return False
        if policy == "drop_newest":
            self.metrics.dropped += len(batch)
            return False
        if policy == "drop_oldest":
            while self._buffer and self._count + len(batch) > self.max_items:
                dropped = len(self._buffer.popleft())
                self._count -= dropped
                self.metrics.dropped += dropped
            return True
        self._dead = True
        self.metrics.overflows += 1
        overflow = BufferOverflow(f"subscriber fell more than {self.max_items} changes behind", limit=self.max_items)
        threading.Thread(target=self._fail, args=(overflow, False), daemon=True).start()
        return False

    def _drain_scheduled(self, *_: Any) -> None:
        self.drain(None)

    def drain(self, dispatcher: Dispatcher | None) -> None:
        """Deliver buffered batches (on the delivery thread)."""
        for _ in range(_DRAIN_ROUNDS):
            with self._lock:
                if self._dead or not self._buffer:
                    self._scheduled = False
                    return
                batch = self._buffer.popleft()
                self._count -= len(batch)
                if self._cond is not None:
                    self._cond.notify_all()
            try:
                self._emit(batch)
            except Exception as exc:
                self._fail(exc, True)
                return
            self.metrics.delivered += len(batch)
        with self._lock:
            self._scheduled = False
            more = bool(self._buffer) and not self._dead
            if more:
                self._scheduled = True
        if more:
            self._kick(dispatcher)

    def fail(self, exc: Exception) -> None:
        """End this subscriber with ``exc`` (routed to its ``on_error``)."""
        self._fail(exc, True)

    def _fail(self, exc: Exception, counted: bool) -> None:
        self.close()
        if counted:
            self.metrics.subscriber_errors += 1
        _report(self._on_error, exc)

    def close(self) -> None:
        """Stop delivering; buffered items are dropped."""
        with self._lock:
            self._dead = True
            self._buffer.clear()
            self._count = 0
            if self._cond is not None:
                self._cond.notify_all()


def scheduler_runner(
    scheduler: abc.SchedulerBase | None, loop: asyncio.AbstractEventLoop | None = None
) -> Callable[[Callable[[], None]], None] | None:
    """How a mailbox runs its drain: on a reactivex scheduler, an asyncio loop, or (None) the dispatcher.

    Example:
        >>> from reactivex.scheduler import ImmediateScheduler
        >>> run = scheduler_runner(ImmediateScheduler())
    """
    if loop is not None and scheduler is not None:
        raise ValidationError("pass either scheduler= or loop=, not both")
    if loop is not None:

        def on_loop(fn: Callable[[], None]) -> None:
            loop.call_soon_threadsafe(fn)

        return on_loop
    if scheduler is None:
        return None
    if isinstance(scheduler, ImmediateScheduler):
        return _run_now  # the same thing, without a scheduled item and a disposable per call

    def on_scheduler(fn: Callable[[], None]) -> None:
        scheduler.schedule(lambda _s, _st: fn())

    return on_scheduler


def _run_now(fn: Callable[[], None]) -> None:
    fn()


def dispatch(boxes: Iterable[Mailbox[T] | Fanout[T]], batch: tuple[T, ...], dispatcher: Dispatcher) -> None:
    """Offer one batch to many mailboxes and wake the dispatcher once for all that became ready.

    A subscriber whose own selection or scheduler raises is ended with that error; the others go on.
    """
    ready = []
    for box in boxes:
        try:
            if box.offer(batch):
                ready.append(box)
        except Exception as exc:
            box.fail(exc)
    if ready:
        dispatcher.submit(ready)
