"""``Fanout``: subscribers with the same selection and delivery sharing one buffer."""

from __future__ import annotations

import functools
import itertools
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from rxstate.core.errors import ValidationError
from rxstate.feed.mailbox import DeliveryMetrics, Mailbox, Overflow, _report, _squeeze

if TYPE_CHECKING:
    from rxstate.feed.dispatcher import Dispatcher

__all__ = ["Fanout"]

T = TypeVar("T")


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
        >>> from rxstate.feed.dispatcher import Dispatcher
        >>> seen = []
        >>> fan = Fanout(dispatcher=Dispatcher(metrics=DeliveryMetrics()), metrics=DeliveryMetrics())
        >>> _ = fan.add(seen.append, on_error=print)
        >>> fan.offer((1, 2)), fan.drain(None), seen  # the first offer asks a worker to drain it
        (True, None, [(1, 2)])
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
