"""A subscriber's bounded buffer (``Mailbox``), its overflow policies, and the counters of delivery.

The change feed only appends to mailboxes (``Mailbox.offer``), so a subscriber that is slow, blocks or
raises cannot hold up the feed or any other subscriber. A full mailbox applies its ``Overflow`` policy;
the default coalesces changes by entity, so a slow subscriber sees fewer, merged changes but always the
latest state. A mailbox is drained by the ``Dispatcher``'s workers, or on a ``reactivex`` scheduler /
asyncio loop when the subscriber asks for one (``scheduler_runner``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from reactivex import abc
from reactivex.scheduler import ImmediateScheduler

from rxstate.core.errors import BufferOverflow, ValidationError

if TYPE_CHECKING:
    from rxstate.feed.dispatcher import Dispatcher

__all__ = ["OVERFLOW_POLICIES", "DeliveryMetrics", "Mailbox", "Overflow", "check_buffer", "scheduler_runner"]

log = logging.getLogger("rxstate.delivery")
T = TypeVar("T")

Overflow = Literal["coalesce", "drop_oldest", "drop_newest", "error", "block"]
OVERFLOW_POLICIES: tuple[str, ...] = ("coalesce", "drop_oldest", "drop_newest", "error", "block")

_DRAIN_ROUNDS = 64  # batches one subscriber gets per turn before the next subscriber's turn


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
