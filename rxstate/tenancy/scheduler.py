"""A fair scheduler: per-tenant queues served by weighted round robin over a bounded set of workers.

One tenant's burst must not starve another's steady traffic. With a shared thread pool (or a shared
connection pool), a tenant that submits 1,000 writes puts them all ahead of the next tenant's one.
Here each tenant has its own queue; ``workers`` threads (each using one connection of the store's
pool at a time, so at most ``workers`` connections are busy) take the next task by weighted round
robin over the tenants that have work: a tenant of weight 2 is served twice per turn of a tenant of
weight 1, and a tenant with one queued task waits behind at most one task of every other tenant.

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
    """

    def __init__(self, workers: int = 4, *, weights: Mapping[str, int] | None = None, max_queued: int | None = None):
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValidationError(f"workers must be a positive int, not {workers!r}", field="workers")
        self._weights = dict(weights or {})
        for tenant, weight in self._weights.items():
            if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
                raise ValidationError(f"weight of {tenant!r} must be a positive int, not {weight!r}", field="weights")
        self.max_queued = max_queued
        self._queues: dict[str, deque[_Task]] = {}
        self._ring: deque[str] = deque()  # tenants with work, in serving order
        self._credit: dict[str, int] = {}
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

    def _next(self) -> _Task | None:
        with self._cond:
            while not self._ring:
                if self._closed:
                    return None
                self._cond.wait()
            tenant = self._ring[0]
            queue = self._queues[tenant]
            task = queue.popleft()
            self._credit[tenant] -= 1
            if not queue:
                self._ring.popleft()
            elif self._credit[tenant] <= 0:  # its turn is over: to the back, with a fresh credit
                self._ring.rotate(-1)
                self._credit[tenant] = self._weights.get(tenant, 1)
            return task

    def _work(self) -> None:
        while (task := self._next()) is not None:
            future, fn, args, kwargs = task
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # handed to whoever waits on the future
                future.set_exception(exc)

    def close(self, *, wait: bool = True) -> None:
        """Run what is queued, then stop the workers (``wait``: until they have stopped)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if wait:
            for thread in self._threads:
                thread.join()
