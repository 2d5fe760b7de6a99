"""``AsyncTransaction`` and ``AsyncBatch``: the kernel's transaction and batch, for ``async with``.

Both take the asyncio front's collections (or kernel ones) and commit/flush through the kernel, so an
asynchronous transaction is the same one- or two-phase commit as a synchronous one.

Example:
    >>> import asyncio
    >>> async def main():
    ...     async with rxstate.aio.connect(fakeredis.FakeAsyncRedis()) as store:
    ...         agents = await store.collection("agents", Agent)
    ...         await agents.put("a1", Agent(name="x"))
    ...         async with store.transaction() as tx:
    ...             agent = await tx.get(agents, "a1")
    ...             await tx.update(agents, "a1", load=agent.load + 5)
    ...         return (await agents.get("a1")).load
    >>> asyncio.run(main())
    5
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rxstate.store.batch import Batch, BatchItem
from rxstate.store.transaction import Transaction

if TYPE_CHECKING:
    from rxstate.aio.store import AsyncStore

__all__ = ["AsyncBatch", "AsyncTransaction"]


def _kernel(collection: Any) -> Any:
    """The kernel collection of an asyncio front collection (a kernel one as it is)."""
    return getattr(collection, "sync", collection)


class AsyncTransaction:
    """An all-or-nothing transaction: reads awaited, writes buffered until the commit at the block's end.

    Example:
        >>> import asyncio
        >>> async def main():
        ...     async with rxstate.aio.connect(fakeredis.FakeAsyncRedis()) as store:
        ...         agents = await store.collection("agents", Agent)
        ...         try:
        ...             async with store.transaction() as tx:
        ...                 await tx.put(agents, "a1", Agent(name="x"))
        ...                 raise RuntimeError("changed my mind")
        ...         except RuntimeError:
        ...             pass
        ...         return tx.state, await agents.exists("a1")
        >>> asyncio.run(main())
        ('rolled back', False)
    """

    def __init__(self, store: AsyncStore, sync: Transaction) -> None:
        self.store = store
        self.sync = sync
        """The kernel transaction."""

    def __repr__(self) -> str:
        return f"<AsyncTransaction of {self.sync!r}>"

    @property
    def state(self) -> str:
        """``"open"``, ``"committed"``, ``"rolled back"`` or ``"failed"``."""
        return self.sync.state

    @property
    def versions(self) -> dict[tuple[str, str], int]:
        """After the commit, the new version of each written entity."""
        return self.sync.versions

    async def get(self, collection: Any, entity_id: str, **options: Any) -> Any:
        """Read an entity as this transaction sees it (``Transaction.get``)."""
        return await self.store.run(self.sync.get, _kernel(collection), entity_id, **options)

    async def get_versioned(self, collection: Any, entity_id: str, **options: Any) -> Any:
        """The same, with its version (``Transaction.get_versioned``)."""
        return await self.store.run(self.sync.get_versioned, _kernel(collection), entity_id, **options)

    async def put(self, collection: Any, entity_id: str, value: Any, **options: Any) -> None:
        """Buffer a put (``Transaction.put``)."""
        await self.store.run(self.sync.put, _kernel(collection), entity_id, value, **options)

    async def create(self, collection: Any, entity_id: str, value: Any, **options: Any) -> None:
        """Buffer a create (``Transaction.create``)."""
        await self.store.run(self.sync.create, _kernel(collection), entity_id, value, **options)

    async def update(self, collection: Any, entity_id: str, *args: Any, **changes: Any) -> None:
        """Buffer an update (``Transaction.update``)."""
        await self.store.run(self.sync.update, _kernel(collection), entity_id, *args, **changes)

    async def incr(self, collection: Any, entity_id: str, field: str, amount: int = 1, **options: Any) -> None:
        """Buffer an increment (``Transaction.incr``)."""
        await self.store.run(self.sync.incr, _kernel(collection), entity_id, field, amount, **options)

    async def delete(self, collection: Any, entity_id: str, **options: Any) -> None:
        """Buffer a delete (``Transaction.delete``)."""
        await self.store.run(self.sync.delete, _kernel(collection), entity_id, **options)

    async def commit(self) -> dict[tuple[str, str], int]:
        """Commit now (``Transaction.commit``)."""
        return await self.store.run(self.sync.commit)

    async def rollback(self) -> None:
        """Drop the buffered writes (``Transaction.rollback``)."""
        await self.store.run(self.sync.rollback)

    async def __aenter__(self) -> AsyncTransaction:
        await self.store.run(self.sync.__enter__)
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        await self.store.run(self.sync.__exit__, exc_type, exc, tb)


class AsyncBatch:
    """Writes queued without I/O and sent together when the ``async with`` block ends.

    Example:
        >>> import asyncio
        >>> async def main():
        ...     async with rxstate.aio.connect(fakeredis.FakeAsyncRedis()) as store:
        ...         agents = await store.collection("agents", Agent)
        ...         async with store.batch() as batch:
        ...             batch.put(agents, "a1", Agent(name="x"))
        ...             bumped = batch.incr(agents, "a1", "load", 3)
        ...         return bumped.result()  # the new value
        >>> asyncio.run(main())
        3
    """

    def __init__(self, store: AsyncStore, sync: Batch) -> None:
        self.store = store
        self.sync = sync
        """The kernel batch."""

    def __len__(self) -> int:
        return len(self.sync)

    def put(self, collection: Any, entity_id: str, value: Any, **options: Any) -> BatchItem[Any]:
        """Queue a put (``Batch.put``)."""
        return self.sync.put(_kernel(collection), entity_id, value, **options)

    def create(self, collection: Any, entity_id: str, value: Any, **options: Any) -> BatchItem[Any]:
        """Queue a create (``Batch.create``)."""
        return self.sync.create(_kernel(collection), entity_id, value, **options)

    def update(self, collection: Any, entity_id: str, **kwargs: Any) -> BatchItem[Any]:
        """Queue an update (``Batch.update``)."""
        return self.sync.update(_kernel(collection), entity_id, **kwargs)

    def incr(self, collection: Any, entity_id: str, field: str, amount: int = 1, **kwargs: Any) -> BatchItem[Any]:
        """Queue an increment (``Batch.incr``)."""
        return self.sync.incr(_kernel(collection), entity_id, field, amount, **kwargs)

    def delete(self, collection: Any, entity_id: str, **kwargs: Any) -> BatchItem[bool]:
        """Queue a delete (``Batch.delete``)."""
        return self.sync.delete(_kernel(collection), entity_id, **kwargs)

    async def flush(self) -> list[Any]:
        """Send the queued writes now (``Batch.flush``)."""
        return await self.store.run(self.sync.flush)

    async def __aenter__(self) -> AsyncBatch:
        await self.store.run(self.sync.__enter__)
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        await self.store.run(self.sync.__exit__, exc_type, exc, tb)
