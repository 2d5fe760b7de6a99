"""The ``Dispatcher``: an elastic pool of worker threads that drains subscribers' mailboxes."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rxstate.feed.mailbox import DeliveryMetrics, Mailbox

__all__ = ["Dispatcher"]

_STALL_S = 0.01  # a worker inside one callback for longer than this is stuck: others take over
_IDLE_EXIT_S = 2.0  # extra workers exit after being idle this long
_CHUNK = 32  # subscribers a worker takes off the ready queue at once


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
        >>> from rxstate.feed.mailbox import DeliveryMetrics
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
