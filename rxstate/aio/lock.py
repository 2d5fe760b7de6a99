"""``AsyncLock``: a kernel ``Lock`` taken and released with ``await`` (``async with store.lock(...)``).

Waiting for a held lock awaits (the kernel's backoff pauses through ``rxstate.core.waiting``), so the
task holding it keeps running on the same loop and can release it.

Example:
    >>> import asyncio
    >>> async def main():
    ...     async with rxstate.aio.connect(fakeredis.FakeAsyncRedis()) as store:
    ...         lease = await store.lock("printer", ttl=5).acquire()
    ...         await store.run(lease.release)
    ...         return lease.token
    >>> asyncio.run(main())
    1
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from rxstate.store.lock import Lease, Lock

if TYPE_CHECKING:
    from rxstate.aio.store import AsyncStore

__all__ = ["AsyncLock"]


class AsyncLock:
    """``async with lock as lease``: acquired on entry, released on exit; ``lease.token`` fences writes.

    Example:
        >>> import asyncio
        >>> async def main():
        ...     async with rxstate.aio.connect(fakeredis.FakeAsyncRedis()) as store:
        ...         async with store.lock("printer") as first:
        ...             pass
        ...         async with store.lock("printer") as second:
        ...             return second.token > first.token
        >>> asyncio.run(main())
        True
    """

    def __init__(self, store: AsyncStore, sync: Lock) -> None:
        self.store = store
        self.sync = sync
        """The kernel lock."""
        self._leases: dict[asyncio.Task[Any] | None, list[Lease]] = {}  # per task: tasks may share the object

    def __repr__(self) -> str:
        return f"<AsyncLock of {self.sync!r}>"

    async def acquire(self, **options: Any) -> Lease:
        """Take the lock, awaiting while another lease holds it (``Lock.acquire``: ``blocking=``, ``timeout=``)."""
        return await self.store.run(self.sync.acquire, **options)

    async def __aenter__(self) -> Lease:
        lease = await self.acquire()
        self._leases.setdefault(asyncio.current_task(), []).append(lease)
        return lease

    async def __aexit__(self, *exc: object) -> None:
        task = asyncio.current_task()
        held = self._leases[task]
        lease = held.pop()
        if not held:
            del self._leases[task]
        await self.store.run(lease.release)
