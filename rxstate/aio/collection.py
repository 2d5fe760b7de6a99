"""``AsyncCollection`` and ``AsyncEventCollection``: a kernel collection's methods, awaited.

Each method runs the synchronous collection's method of the same name in a bridged greenlet (its
arguments and results are the kernel's: ``Versioned``, models, typed errors); ``sync`` is that collection.

Example:
    >>> import asyncio
    >>> async def main():
    ...     async with rxstate.aio.connect(fakeredis.FakeAsyncRedis()) as store:
    ...         agents = await store.collection("agents", Agent, indexes=["status"])
    ...         await agents.put_many({"a1": Agent(name="x", status="busy"), "a2": Agent(name="y")})
    ...         return [a.name for a in await agents.where(status="busy")]
    >>> asyncio.run(main())
    ['x']
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

from rxstate.aio.stream import AsyncStream
from rxstate.api.collection import Collection
from rxstate.core.errors import RxStateError
from rxstate.core.model import Model
from rxstate.core.versioned import Versioned
from rxstate.events.collection import AppendResult, EventCollection
from rxstate.feed.change import Change

if TYPE_CHECKING:
    from rxstate.aio.store import AsyncStore

__all__ = ["AsyncCollection", "AsyncEventCollection"]

M = TypeVar("M", bound=Model)


class AsyncCollection(Generic[M]):
    """A collection for asyncio code (see ``rxstate.Collection`` for every method's arguments).

    Example:
        >>> import asyncio
        >>> async def main():
        ...     async with rxstate.aio.connect(fakeredis.FakeAsyncRedis()) as store:
        ...         agents = await store.collection("agents", Agent)
        ...         await agents.put("a1", Agent(name="x"))
        ...         await agents.incr("a1", "load", 2)
        ...         return (await agents.get("a1")).load
        >>> asyncio.run(main())
        2
    """

    def __init__(self, store: AsyncStore, sync: Collection[M]) -> None:
        self.store = store
        self.sync = sync
        """The kernel collection."""

    def __repr__(self) -> str:
        return f"<AsyncCollection {self.sync.name!r} of {self.sync.model.__name__}>"

    @property
    def name(self) -> str:
        """The collection's name."""
        return self.sync.name

    @property
    def model(self) -> type[M]:
        """The collection's model."""
        return self.sync.model

    # -- reads -----------------------------------------------------------------------------------------
    async def get(self, entity_id: str, *default: Any, **options: Any) -> M:
        """The entity (``NotFound`` if absent; ``get(id, default)``: ``default``) (``Collection.get``)."""
        result: M = await self.store.run(self.sync.get, entity_id, *default, **options)
        return result

    async def get_versioned(self, entity_id: str, **options: Any) -> Versioned[M]:
        """The entity with its version (``Collection.get_versioned``)."""
        return await self.store.run(self.sync.get_versioned, entity_id, **options)

    async def exists(self, entity_id: str, **options: Any) -> bool:
        """Whether the entity exists (``Collection.exists``)."""
        return await self.store.run(self.sync.exists, entity_id, **options)

    async def get_many(self, ids: Any, **options: Any) -> dict[str, M]:
        """The entities of ``ids`` that exist, by id (``Collection.get_many``)."""
        return await self.store.run(self.sync.get_many, ids, **options)

    async def get_many_versioned(self, ids: Any, **options: Any) -> list[Versioned[M]]:
        """The same with versions, in the order of ``ids`` (``Collection.get_many_versioned``)."""
        return await self.store.run(self.sync.get_many_versioned, ids, **options)

    async def ids(self) -> list[str]:
        """Every id of the collection (``Collection.ids``)."""
        return await self.store.run(self.sync.ids)

    async def all(self, **options: Any) -> list[M]:
        """Every entity (``Collection.all``; ``limit=``, ``offset=``)."""
        return await self.store.run(self.sync.all, **options)

    async def count(self, **conditions: Any) -> int:
        """How many entities (match ``conditions``) (``Collection.count``)."""
        return await self.store.run(self.sync.count, **conditions)

    async def where(self, **conditions: Any) -> list[M]:
        """The entities matching ``conditions`` on indexed fields (``Collection.where``), as a list."""
        return await self.store.run(lambda: list(self.sync.where(**conditions)))

    async def where_versioned(self, **conditions: Any) -> list[Versioned[M]]:
        """The same, with versions (``Collection.where_versioned``)."""
        return await self.store.run(self.sync.where_versioned, **conditions)

    # -- writes ----------------------------------------------------------------------------------------
    async def put(self, entity_id: str, value: M, **options: Any) -> Versioned[M]:
        """Store ``value`` (``Collection.put``: ``expected_version=``, ``ttl=``, ``fence=``)."""
        return await self.store.run(self.sync.put, entity_id, value, **options)

    async def create(self, entity_id: str, value: M, **options: Any) -> Versioned[M]:
        """Store ``value`` only if absent (``Collection.create``)."""
        return await self.store.run(self.sync.create, entity_id, value, **options)

    async def put_many(self, items: Any, **options: Any) -> list[Versioned[M] | RxStateError]:
        """Store many entities (``Collection.put_many``)."""
        return await self.store.run(self.sync.put_many, items, **options)

    async def update(self, entity_id: str, *args: Any, **changes: Any) -> Versioned[M]:
        """Change fields, or apply a function to the current value (``Collection.update``)."""
        return await self.store.run(self.sync.update, entity_id, *args, **changes)

    async def update_many(self, *args: Any, **options: Any) -> list[Versioned[M] | RxStateError]:
        """Update many entities (``Collection.update_many``)."""
        return await self.store.run(self.sync.update_many, *args, **options)

    async def incr(self, entity_id: str, field: str, amount: int = 1, **options: Any) -> int:
        """Add ``amount`` to an integer field on the server; the new value (``Collection.incr``)."""
        return await self.store.run(self.sync.incr, entity_id, field, amount, **options)

    async def delete(self, entity_id: str, **options: Any) -> bool:
        """Remove the entity; whether it existed (``Collection.delete``)."""
        return await self.store.run(self.sync.delete, entity_id, **options)

    # -- reactive --------------------------------------------------------------------------------------
    def watch(self, entity_id: str, **options: Any) -> AsyncStream[Change]:
        """One entity's changes, current value first: ``async for`` it, or ``.observable()`` (``Collection.watch``)."""
        return AsyncStream(self.store, self.sync.watch(entity_id, **options))

    def watch_all(self, **options: Any) -> AsyncStream[Change]:
        """The collection's entities, then their changes (``Collection.watch_all``)."""
        return AsyncStream(self.store, self.sync.watch_all(**options))


class AsyncEventCollection(Generic[M]):
    """An event-sourced collection for asyncio code (see ``rxstate.EventCollection``).

    Example:
        >>> import asyncio
        >>> async def main():
        ...     async with rxstate.aio.connect(fakeredis.FakeAsyncRedis()) as store:
        ...         orders = await store.events("orders", state=Order, events=[Placed, Paid], reducer=apply)
        ...         await orders.append("o1", [Placed(sku="apple"), Paid(amount_cents=250)])
        ...         return (await orders.replay("o1", to_version=1)).value.status
        >>> asyncio.run(main())
        'placed'
    """

    def __init__(self, store: AsyncStore, sync: EventCollection[M]) -> None:
        self.store = store
        self.sync = sync
        """The kernel event collection."""

    def __repr__(self) -> str:
        return f"<AsyncEventCollection {self.sync.name!r}>"

    @property
    def name(self) -> str:
        """The collection's name."""
        return self.sync.name

    async def append(self, aggregate_id: str, events: Any, **options: Any) -> AppendResult[M]:
        """Append events atomically (``EventCollection.append``: ``expected_version=``, ...)."""
        return await self.store.run(self.sync.append, aggregate_id, events, **options)

    async def load(self, aggregate_id: str) -> Versioned[M]:
        """The aggregate's current state and version (``EventCollection.load``)."""
        return await self.store.run(self.sync.load, aggregate_id)

    async def get(self, aggregate_id: str) -> M:
        """The aggregate's current state (``EventCollection.get``)."""
        return await self.store.run(self.sync.get, aggregate_id)

    async def replay(self, aggregate_id: str, **options: Any) -> Versioned[M]:
        """The state folded from the events (``EventCollection.replay``: ``to_version=``, ``use_snapshots=``)."""
        return await self.store.run(self.sync.replay, aggregate_id, **options)

    async def state_at(self, aggregate_id: str, *, time: Any) -> Versioned[M]:
        """The state as of a time (``EventCollection.state_at``)."""
        return await self.store.run(self.sync.state_at, aggregate_id, time=time)

    async def version(self, aggregate_id: str) -> int:
        """How many events the aggregate has (``EventCollection.version``)."""
        return await self.store.run(self.sync.version, aggregate_id)

    async def exists(self, aggregate_id: str) -> bool:
        """Whether the aggregate has events (``EventCollection.exists``)."""
        return await self.store.run(self.sync.exists, aggregate_id)

    async def ids(self) -> list[str]:
        """Every aggregate id (``EventCollection.ids``)."""
        return await self.store.run(self.sync.ids)

    async def history(self, aggregate_id: str, **options: Any) -> list[Any]:
        """The aggregate's recorded events (``EventCollection.history``)."""
        return await self.store.run(self.sync.history, aggregate_id, **options)

    async def snapshot(self, aggregate_id: str) -> int:
        """Take a snapshot now; its version (``EventCollection.snapshot``)."""
        return await self.store.run(self.sync.snapshot, aggregate_id)
