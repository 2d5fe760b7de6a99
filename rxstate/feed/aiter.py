"""``async for`` over an observable: items handed to the running asyncio loop thread-safely."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from reactivex import Observable
from reactivex.abc import DisposableBase

from rxstate.feed.change import Change, coalesce_changes

__all__ = ["aiter"]

T = TypeVar("T")


async def aiter(
    observable: Observable[T],
    *,
    max_buffer: int = 10_000,
    subscribe: Callable[..., Awaitable[DisposableBase]] | None = None,
) -> AsyncIterator[T]:
    """Iterate an observable with ``async for`` on the running asyncio loop.

    Items are handed to the loop thread-safely. If the loop falls more than ``max_buffer`` items behind,
    changes are coalesced by entity (other items: the oldest are dropped). An error of the observable
    is raised from the iteration; leaving the loop disposes the subscription. ``subscribe``: an async
    ``subscribe(on_next, on_error, on_completed)`` that subscribes without blocking the loop (the asyncio
    front's, whose subscription reads the current value through ``redis.asyncio``).

    Example:
        >>> import asyncio
        >>> async def ops_of_a1():
        ...     async for change in rxstate.aiter(store.changes(since="0", collection="agents")):
        ...         if change.op == "delete":
        ...             return change.version
        >>> _ = agents.put("a1", Agent(name="planner"))
        >>> _ = agents.delete("a1")
        >>> asyncio.run(ops_of_a1())
        2
    """
    loop = asyncio.get_running_loop()
    queue: deque[T] = deque()
    wake = asyncio.Event()
    end: list[BaseException | None] = []

    def push(item: T) -> None:
        queue.append(item)
        if len(queue) > max_buffer:
            items = list(queue)
            queue.clear()
            if all(isinstance(i, Change) for i in items):
                queue.extend(coalesce_changes(items))  # type: ignore[arg-type]
            else:
                queue.extend(items[-max_buffer:])
        wake.set()

    def finish(exc: BaseException | None) -> None:
        end.append(exc)
        wake.set()

    def on_next(item: T) -> None:
        loop.call_soon_threadsafe(push, item)

    def on_error(exc: Exception) -> None:
        loop.call_soon_threadsafe(finish, exc)

    def on_completed() -> None:
        loop.call_soon_threadsafe(finish, None)

    disposable: Any
    if subscribe is None:
        disposable = observable.subscribe(on_next, on_error, on_completed)
    else:
        disposable = await subscribe(on_next, on_error, on_completed)
    try:
        while True:
            while queue:
                yield queue.popleft()
            if end:
                if end[0] is not None:
                    raise end[0]
                return
            wake.clear()
            await wake.wait()
    finally:
        disposable.dispose()
