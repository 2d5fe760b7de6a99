"""Delivery to subscribers: one bounded buffer per subscriber, drained off the feed's thread.

The parts: ``Mailbox`` (one subscriber's buffer and overflow policy, ``rxstate.feed.mailbox``),
``Fanout`` (many subscribers sharing one buffer, ``rxstate.feed.fanout``) and the ``Dispatcher``
(the worker threads that drain them, ``rxstate.feed.dispatcher``). ``dispatch`` offers one batch to
many of them at once; the names of all the parts are importable from here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from rxstate.core.errors import BufferOverflow
from rxstate.feed.dispatcher import Dispatcher
from rxstate.feed.fanout import Fanout
from rxstate.feed.mailbox import (
    OVERFLOW_POLICIES,
    DeliveryMetrics,
    Mailbox,
    Overflow,
    check_buffer,
    scheduler_runner,
)

__all__ = [
    "OVERFLOW_POLICIES",
    "BufferOverflow",
    "DeliveryMetrics",
    "Dispatcher",
    "Fanout",
    "Mailbox",
    "Overflow",
    "check_buffer",
    "dispatch",
    "scheduler_runner",
]

T = TypeVar("T")


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
