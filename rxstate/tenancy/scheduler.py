"""A fair scheduler: per-tenant queues served by weighted round robin over a bounded set of workers.

One tenant's burst must not starve another's steady traffic. With a shared thread pool (or a shared
connection pool), a tenant that submits 1,000 writes puts them all ahead of the next tenant's one.
Here each tenant has its own queue; ``workers`` threads (each using one connection of the store's
pool at a time, so at most ``workers`` connections are busy) take the next task by weighted round
robin over the tenants that have work: a tenant of weight 2 is served twice per turn of a tenant of
weight 1, and a tenant with one queued task waits behind at most one task of every other tenant. No
tenant runs on more than ``max_share`` workers at once (default: all but one), so a worker is free
for another tenant's next task even while one tenant keeps every other worker busy.

``concurrent.futures`` has no per-key fairness and ``asyncio`` queues no weights, so this small
dispatcher is written here; tasks return ``concurrent.futures.Future`` objects.

Example:
    >>> with FairScheduler(workers=2, weights={"acme": 2}) as scheduler:
    ...     future = scheduler.submit("acme", sum, [1, 2, 3])
    ...     future.result(timeout=5)
    6
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any, Self, TypeVar

from rxstate.core.errors import BufferOverflow, ValidationError

__all__ = ["FairScheduler"]

T = TypeVar("T")
_Task = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class FairScheduler:
    """Per-tenant queues, weighted round robin, ``workers`` threads (see the module docstring).

    Args:
        workers: threads running tasks (and so the most connections busy at once).
        weights: tasks served per turn, per tenant (default 1).
        max_queued: the most tasks one tenant may have waiting (``BufferOverflow`` beyond; None: no bound).
        max_share: the most workers one tenant's tasks may occupy at once (default ``workers - 1``, at least 1).
    """

    def __init__(
        self,
        workers: int = 4,
        *,
        weights: Mapping[str, int] | None = None,
        max_queued: int | None = None,
        max_share: int | None = None,
    ) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValidationError(f"workers must be a positive int, not {workers!r}", field="workers")
        share = max(1, workers - 1) if max_share is None else max_share
        if isinstance(share, bool) or not isinstance(share, int) or not 1 <= share <= workers:
            raise ValidationError(f"max_share must be an int in 1..{workers}, not {max_share!r}", field="max_share")
        self.max_share = share
        self._weights = dict(weights or {})
        for tenant, weight in self._weights.items():
            if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
                raise ValidationError(f"weight of {tenant!r} must be a positive int, not {weight!r}", field="weights")
        self.max_queued = max_queued
        self._queues: dict[str, deque[_Task]] = {}
        self._ring: deque[str] = deque()  # tenants with work, in serving order
        self._credit: dict[str, int] = {}
        self._running: dict[str, int] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"rxstate-fair-{i}", daemon=True) for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, tenant: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        """Queue ``fn(*args, **kwargs)`` for ``tenant``; its future.

        Raises:
            BufferOverflow: ``tenant`` has ``max_queued`` tasks waiting.
            ValidationError: the scheduler is closed.
        """
        future: Future[T] = Future()
        with self._cond:
            if self._closed:
                raise ValidationError("the scheduler is closed")
            queue = self._queues.setdefault(tenant, deque())
            if self.max_queued is not None and len(queue) >= self.max_queued:
                raise BufferOverflow(f"tenant {tenant!r} has {len(queue)} tasks queued", limit=self.max_queued)
            if not queue:
                self._ring.append(tenant)
                self._credit[tenant] = self._weights.get(tenant, 1)
            queue.append((future, fn, args, kwargs))
            self._cond.notify()
        return future

    def queued(self) -> dict[str, int]:
        """Tasks waiting, per tenant."""
        with self._cond:
            return {t: len(q) for t, q in self._queues.items() if q}

    def _eligible(self) -> str | None:
        """The first tenant in serving order with work and a worker to spare (its share not used up)."""
        for tenant in self._ring:
            if self._running.get(tenant, 0) < self.max_share:
                return tenant
        return None

    def _next(self) -> tuple[str, _Task] | None:
        with self._cond:
            while (tenant := self._eligible()) is None:
                if self._closed and not self._ring:
                    return None
                self._cond.wait()
            queue = self._queues[tenant]
            task = queue.popleft()
            self._running[tenant] = self._running.get(tenant, 0) + 1
            self._credit[tenant] -= 1
            if not queue:
                self._ring.remove(tenant)
            elif self._credit[tenant] <= 0:  # its turn is over: to the back, with a fresh credit
                self._ring.remove(tenant)
                self._ring.append(tenant)
                self._credit[tenant] = self._weights.get(tenant, 1)
            return tenant, task

    def _done(self, tenant: str) -> None:
        with self._cond:
            self._running[tenant] -= 1
            self._cond.notify_all()

    def _work(self) -> None:
        while (picked := self._next()) is not None:
            tenant, (future, fn, args, kwargs) = picked
            try:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn(*args, **kwargs))
                    except BaseException as exc:  # handed to whoever waits on the future
                        future.set_exception(exc)
            finally:
                self._done(tenant)

    def close(self, *, wait: bool = True) -> None:
        """Run what is queued, then stop the workers (``wait``: until they have stopped)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if wait:
            for thread in self._threads:
                thread.join()
