"""``AsyncStream``: an rxstate observable (the change feed, a watch) read with ``async for``.

Subscribing reads the current state (a watch's first value) through the bridged client, so it is awaited
too; items then arrive from the feed's thread and are handed to the loop (``rxstate.feed.aiter``).

Example:
    >>> import asyncio
    >>> async def main():
    ...     async with rxstate.aio.connect(fakeredis.FakeAsyncRedis()) as store:
    ...         agents = await store.collection("agents", Agent)
    ...         await agents.put("a1", Agent(name="x"))
    ...         async for change in agents.watch("a1"):
    ...             return change.version
    >>> asyncio.run(main())
    1
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from reactivex import Observable
from reactivex.abc import DisposableBase

from rxstate.feed.aiter import aiter

if TYPE_CHECKING:
    from rxstate.aio.store import AsyncStore

__all__ = ["AsyncStream"]

T = TypeVar("T")


class AsyncStream(Generic[T]):
    """``async for item in stream``; ``stream.observable()`` is the underlying ``Observable``.

    Example:
        >>> import asyncio
        >>> async def main():
        ...     async with rxstate.aio.connect(fakeredis.FakeAsyncRedis()) as store:
        ...         return type(store.changes().observable()).__name__
        >>> asyncio.run(main())
        'ChangeObservable'
    """

    def __init__(self, store: AsyncStore, observable: Observable[T], *, max_buffer: int = 10_000) -> None:
        self._store = store
        self._observable = observable
        self._max_buffer = max_buffer

    def observable(self) -> Observable[T]:
        """The same items as a reactivex ``Observable`` (delivered on the feed's thread)."""
        return self._observable

    def __aiter__(self) -> AsyncIterator[T]:
        return aiter(self._observable, max_buffer=self._max_buffer, subscribe=self._subscribe)

    async def _subscribe(self, *handlers: Any) -> DisposableBase:
        return await self._store.run(self._observable.subscribe, *handlers)
