"""rxstate for asyncio: ``store = await rxstate.aio.connect(...)``, the same store, awaited.

The asyncio front runs the synchronous kernel (Store, collections, the Writer, transactions, locks, the
events kernel) inside greenlets whose server calls are awaited on ``redis.asyncio`` — the approach of
SQLAlchemy's asyncio extension (``rxstate.aio.bridge``). So there is one implementation of the logic:
the two fronts differ only in how they send bytes and how they wait.

Example:
    >>> import asyncio
    >>> async def main():
    ...     async with rxstate.aio.connect(fakeredis.FakeAsyncRedis()) as store:
    ...         agents = await store.collection("agents", Agent)
    ...         await agents.put("a1", Agent(name="planner"))
    ...         return await agents.get("a1")
    >>> asyncio.run(main())
    Agent(name='planner', status='idle', load=0, skills=[])
"""

from rxstate.aio.bridge import bridged
from rxstate.aio.collection import AsyncCollection, AsyncEventCollection
from rxstate.aio.lock import AsyncLock
from rxstate.aio.store import AsyncStore, connect
from rxstate.aio.stream import AsyncStream
from rxstate.aio.transaction import AsyncBatch, AsyncTransaction

__all__ = [
    "AsyncBatch",
    "AsyncCollection",
    "AsyncEventCollection",
    "AsyncLock",
    "AsyncStore",
    "AsyncStream",
    "AsyncTransaction",
    "bridged",
    "connect",
]
