"""``rxstate.aio.connect`` and ``AsyncStore``: the store for asyncio code, driving the synchronous kernel.

An ``AsyncStore`` wraps one kernel ``rxstate.Store`` (``.sync``) whose client is bridged onto
``redis.asyncio`` (``rxstate.aio.bridge``): each async method runs the kernel's own method in a greenlet,
so both fronts share every script, the codec, the key layout and the Writer's stages.

Example:
    >>> import asyncio
    >>> async def main():
    ...     async with rxstate.aio.connect(fakeredis.FakeAsyncRedis()) as store:
    ...         agents = await store.collection("agents", Agent)
    ...         await agents.put("a1", Agent(name="planner"))
    ...         return (await agents.update("a1", status="busy")).version
    >>> asyncio.run(main())
    2
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Awaitable, Callable, Generator, Sequence
from typing import Any, Self, TypeVar, Unpack

import redis
import redis.asyncio
import redis.asyncio.cluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff

from rxstate.aio.bridge import async_twin, bridge_client, bridged, in_bridge, is_async_client, sync_twin, wait_for
from rxstate.aio.collection import AsyncCollection, AsyncEventCollection
from rxstate.aio.lock import AsyncLock
from rxstate.aio.stream import AsyncStream
from rxstate.aio.transaction import AsyncBatch, AsyncTransaction
from rxstate.api.store import Store
from rxstate.api.store import connect as connect_sync
from rxstate.core.errors import ServerError, ValidationError
from rxstate.core.model import Model
from rxstate.feed.change import Change
from rxstate.feed.subscription import ChangesOptions
from rxstate.reactive.derived import Derived
from rxstate.security.providers import KeyProvider
from rxstate.store.connect import ConnectOptions, client_from_url, parse_sentinel_url
from rxstate.store.constraints import Constraint

__all__ = ["AsyncStore", "connect"]

M = TypeVar("M", bound=Model)
T = TypeVar("T")
POOL_SIZE = 64
"""Connections of an asyncio client ``rxstate.aio.connect`` makes; more concurrent commands wait for one."""


class AsyncStore:
    """State of one namespace, for asyncio code: ``await`` every call that talks to the server.

    Open one with ``rxstate.aio.connect``. ``sync`` is the kernel ``rxstate.Store`` it drives (the same
    object the synchronous API would give); ``run`` runs any synchronous function using it without
    blocking the loop.

    Example:
        >>> import asyncio
        >>> async def main():
        ...     store = await rxstate.aio.connect(fakeredis.FakeAsyncRedis())
        ...     try:
        ...         return store.sync.namespace
        ...     finally:
        ...         await store.aclose()
        >>> asyncio.run(main())
        'default'
    """

    def __init__(self, sync: Store, client: Any, *, owns_client: bool) -> None:
        self.sync = sync
        """The kernel store this one drives."""
        self.client = client
        """The asyncio client every command of a coroutine goes through."""
        self._owns_client = owns_client
        # The derived graph computes a new value under a re-entrant thread lock, which every task of the
        # loop's thread would re-enter: new values are computed one at a time instead.
        self._deriving = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<AsyncStore namespace={self.sync.namespace!r} actor={self.sync.actor!r}>"

    @property
    def namespace(self) -> str:
        """The store's namespace."""
        return self.sync.namespace

    @property
    def actor(self) -> str:
        """Recorded as the writer of every change this store makes."""
        return self.sync.actor

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``: synchronous code using ``sync``, its server calls awaited on this loop.

        This is how integrations reuse synchronous rxstate logic. Called where synchronous calls are
        already possible (inside such a function, or off the loop's thread), ``fn`` simply runs.

        Example:
            >>> import asyncio
            >>> async def main():
            ...     async with rxstate.aio.connect(fakeredis.FakeAsyncRedis()) as store:
            ...         def put_one():  # synchronous code of the kernel's API
            ...             return store.sync.collection("agents", Agent).put("a1", Agent(name="x")).version
            ...         return await store.run(put_one)
            >>> asyncio.run(main())
            1
        """
        if in_bridge() or not _on_loop():
            return fn(*args, **kwargs)
        return await bridged(fn, *args, **kwargs)

    # -- collections -------------------------------------------------------------------------------
    async def collection(
        self,
        name: str,
        model: type[M],
        *,
        indexes: Sequence[str] = (),
        partition_key: str | None = None,
        constraints: Sequence[Constraint] = (),
    ) -> AsyncCollection[M]:
        """Open (or create) a collection (see ``rxstate.Store.collection``).

        Example:
            >>> import asyncio
            >>> async def main():
            ...     async with rxstate.aio.connect(fakeredis.FakeAsyncRedis()) as store:
            ...         return (await store.collection("agents", Agent, indexes=["status"])).name
            >>> asyncio.run(main())
            'agents'
        """
        opened = await self.run(
            self.sync.collection, name, model, indexes=indexes, partition_key=partition_key, constraints=constraints
        )
        return AsyncCollection(self, opened)

    async def events(self, name: str, **options: Any) -> AsyncEventCollection[Any]:
        """Open (or create) an event-sourced collection (arguments of ``rxstate.Store.events``).

        Example:
            >>> import asyncio
            >>> async def main():
            ...     async with rxstate.aio.connect(fakeredis.FakeAsyncRedis()) as store:
            ...         orders = await store.events("orders", state=Order, events=[Placed, Paid], reducer=apply)
            ...         await orders.append("o1", [Placed(sku="apple", qty=2)])
            ...         return await orders.get("o1")
            >>> asyncio.run(main())
            Order(status='placed', items=2, paid_cents=0)
        """
        opened = await self.run(self.sync.events, name, **options)
        return AsyncEventCollection(self, opened)

    # -- writes together -----------------------------------------------------------------------------
    def transaction(self, *, ttl: float = 5.0, two_phase: bool | None = None) -> AsyncTransaction:
        """An all-or-nothing transaction: ``async with store.transaction() as tx`` (see ``rxstate.Transaction``).

        Example:
            >>> import asyncio
            >>> async def main():
            ...     async with rxstate.aio.connect(fakeredis.FakeAsyncRedis()) as store:
            ...         agents = await store.collection("agents", Agent)
            ...         async with store.transaction() as tx:
            ...             await tx.put(agents, "a1", Agent(name="x"))
            ...         return tx.versions
            >>> asyncio.run(main())
            {('agents', 'a1'): 1}
        """
        return AsyncTransaction(self, self.sync.transaction(ttl=ttl, two_phase=two_phase))

    async def transact(self, fn: Callable[[AsyncTransaction], Awaitable[T]], *, retries: int = 3, **options: Any) -> T:
        """``await fn(tx)`` in a fresh transaction, committed; run again (up to ``retries`` times) on conflict.

        Example:
            >>> import asyncio
            >>> async def main():
            ...     async with rxstate.aio.connect(fakeredis.FakeAsyncRedis()) as store:
            ...         agents = await store.collection("agents", Agent)
            ...         await agents.put("a1", Agent(name="x"))
            ...         async def bump(tx):
            ...             a = await tx.get(agents, "a1")
            ...             await tx.update(agents, "a1", load=a.load + 1)
            ...         await store.transact(bump)
            ...         return (await agents.get("a1")).load
            >>> asyncio.run(main())
            1
        """
        from rxstate.core.errors import ConflictError

        for attempt in range(retries + 1):
            try:
                async with self.transaction(**options) as tx:
                    return await fn(tx)
            except ConflictError:
                if attempt >= retries:
                    raise
        raise AssertionError("unreachable")

    def batch(self, *, atomic: bool = False) -> AsyncBatch:
        """Writes sent together when ``async with store.batch() as batch`` ends (see ``rxstate.Batch``).

        Example:
            >>> import asyncio
            >>> async def main():
            ...     async with rxstate.aio.connect(fakeredis.FakeAsyncRedis()) as store:
            ...         agents = await store.collection("agents", Agent)
            ...         async with store.batch() as batch:
            ...             item = batch.put(agents, "a1", Agent(name="x"))
            ...         return item.result().version
            >>> asyncio.run(main())
            1
        """
        return AsyncBatch(self, self.sync.batch(atomic=atomic))

    def lock(self, name: str, ttl: float = 10.0, *, blocking: bool = True, timeout: float | None = None) -> AsyncLock:
        """A distributed lock: ``async with store.lock("printer") as lease`` (see ``rxstate.Store.lock``).

        Waiting for it awaits: other tasks of the loop (the holder among them) keep running.

        Example:
            >>> import asyncio
            >>> async def main():
            ...     async with rxstate.aio.connect(fakeredis.FakeAsyncRedis()) as store:
            ...         async with store.lock("printer", ttl=5) as lease:
            ...             return lease.token
            >>> asyncio.run(main())
            1
        """
        return AsyncLock(self, self.sync.lock(name, ttl, blocking=blocking, timeout=timeout))

    # -- reactive ------------------------------------------------------------------------------------
    def changes(self, **options: Unpack[ChangesOptions]) -> AsyncStream[Change]:
        """Every change of the namespace: ``async for change in store.changes(...)`` (options of
        ``rxstate.Store.changes``); ``.observable()`` is the same feed as an ``Observable``.

        Example:
            >>> import asyncio
            >>> async def main():
            ...     async with rxstate.aio.connect(fakeredis.FakeAsyncRedis()) as store:
            ...         agents = await store.collection("agents", Agent)
            ...         await agents.put("a1", Agent(name="x"))
            ...         async for change in store.changes(since="0", collection="agents"):
            ...             return change.op, change.id
            >>> asyncio.run(main())
            ('create', 'a1')
        """
        return AsyncStream(self, self.sync.changes(**options))

    async def derived(self, fn: Callable[[], Awaitable[T]] | Callable[[], T], *, name: str | None = None) -> Derived[T]:
        """A ``Derived`` value of ``fn`` (see ``rxstate.Store.derived``); ``fn`` may be ``async`` and await reads.

        What ``fn`` awaits through this store's collections is recorded as its dependencies, as in the
        synchronous API. Recomputations run off the loop (on the feed's thread), reading synchronously.

        Raises:
            ValidationError: ``fn`` awaited something other than this store's reads where it could not
                be awaited (a recomputation off the loop).

        Example:
            >>> import asyncio
            >>> async def main():
            ...     async with rxstate.aio.connect(fakeredis.FakeAsyncRedis()) as store:
            ...         agents = await store.collection("agents", Agent)
            ...         await agents.put("a1", Agent(name="x", status="busy"))
            ...         async def busy():
            ...             return sum(a.status == "busy" for a in await agents.all())
            ...         return (await store.derived(busy)).value
            >>> asyncio.run(main())
            1
        """

        def compute() -> T:
            result = fn()
            return _drive(result) if inspect.isawaitable(result) else result

        async with self._deriving:
            return await self.run(self.sync.derived, compute, name=name)

    # -- closing -------------------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Close the store (its background threads stop off the loop) and the asyncio client it opened.

        Example:
            >>> import asyncio
            >>> async def main():
            ...     store = await rxstate.aio.connect(fakeredis.FakeAsyncRedis())
            ...     await store.aclose()
            >>> asyncio.run(main())
        """
        await asyncio.to_thread(self.sync.close)
        if self._owns_client:
            await self.client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _on_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _drive(awaitable: Awaitable[T]) -> T:
    """Run a coroutine to its end from synchronous code: its rxstate reads run right here (so dependency
    tracking sees them); anything else it awaits is awaited on the loop when this code is bridged."""
    gen: Generator[Any, None, T] = awaitable.__await__()
    pending: BaseException | None = None
    while True:
        try:
            yielded = gen.send(None) if pending is None else gen.throw(pending)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        pending = None
        if not in_bridge():
            gen.close()
            raise ValidationError(
                "a derived value's function awaited something other than rxstate reads while recomputing "
                f"off the event loop ({yielded!r}): await only the store's reads in it"
            )
        try:
            wait_for(_settle(yielded))
        except BaseException as exc:  # goes back into the coroutine, which may handle it
            pending = exc


async def _settle(yielded: Any) -> None:
    if yielded is None:  # a bare yield (asyncio.sleep(0)): give the loop one turn
        await asyncio.sleep(0)
    else:  # a future the coroutine yielded: it marked it as awaited; await it here instead
        yielded._asyncio_future_blocking = False
        await yielded


class _Connecting:
    """What ``connect`` returns: await it for the store, or ``async with`` it (the store closes at the end)."""

    def __init__(self, opening: Callable[[], Awaitable[AsyncStore]]) -> None:
        self._opening = opening
        self._store: AsyncStore | None = None

    def __await__(self) -> Generator[Any, None, AsyncStore]:
        return self._opening().__await__()

    async def __aenter__(self) -> AsyncStore:
        self._store = await self._opening()
        return self._store

    async def __aexit__(self, *exc: object) -> None:
        if self._store is not None:
            await self._store.aclose()


def connect(
    url: str | Any | None = None, *, keys: KeyProvider | None = None, **options: Unpack[ConnectOptions]
) -> _Connecting:
    """Open an ``AsyncStore``: ``store = await rxstate.aio.connect(...)`` or ``async with rxstate.aio.connect(...)``.

    The arguments are those of ``rxstate.connect``; a client (first argument or ``client=``) is a
    ``redis.asyncio.Redis``, ``redis.asyncio.RedisCluster`` or ``fakeredis.FakeAsyncRedis``. Without a
    URL or ``REDIS_URL``, the embedded server is started (or joined) off the loop.

    Raises:
        ValidationError: a synchronous client; ``principal=`` with ``password=`` and a client (a client of
            your own, authenticated as the principal's ACL user, goes with ``principal=`` alone).

    Example:
        >>> import asyncio
        >>> async def main():
        ...     async with rxstate.aio.connect(fakeredis.FakeAsyncRedis(), namespace="crew") as store:
        ...         return store
        >>> asyncio.run(main())
        <AsyncStore namespace='crew' actor='pid:...'>
    """
    return _Connecting(lambda: _open(url, keys, dict(options)))


async def _open(url: str | Any | None, keys: KeyProvider | None, options: dict[str, Any]) -> AsyncStore:
    if options.get("read_from", "primary") != "primary" or options.get("replicas"):
        raise ValidationError(
            "read_from='replica' is not supported by the asyncio front yet: its server calls are bridged onto "
            "one asyncio client; use rxstate.connect for replica reads",
            field="read_from",
        )
    client = options.pop("client", None)
    if url is not None and not isinstance(url, str):
        if client is not None:
            raise ValidationError("pass a client either positionally or as client=, not both")
        client, url = url, None
    auth: dict[str, Any] = {}
    if options.get("principal") is not None or options.get("password") is not None:
        from rxstate.security.principals import auth_options

        namespace = options.get("namespace", "default")
        auth = auth_options(namespace, options.get("principal"), options.pop("password", None), client or url)
    path, isolated, fsync = options.pop("path", None), options.pop("isolated", False), options.pop("fsync", None)
    server = None
    owns = client is None
    if client is not None:
        if not is_async_client(client):
            raise ValidationError(
                f"{type(client).__qualname__} is a synchronous client: rxstate.aio.connect takes an asyncio "
                "client (redis.asyncio.Redis, fakeredis.FakeAsyncRedis); use rxstate.connect for this one"
            )
        aclient, sclient = client, await sync_twin(client)
    else:
        url = url or os.environ.get("REDIS_URL") or None
        if url is not None:
            if path is not None or isolated or fsync is not None:
                raise ValidationError("path=, isolated= and fsync= are for an embedded server, not with a URL")
            sclient, aclient = client_from_url(url, **auth), _async_from_url(url, **auth)
        else:
            from rxstate.server.lease import attach

            server = await asyncio.to_thread(attach, path, isolated=isolated, fsync=fsync)
            sclient = server.client(**auth)
            aclient = async_twin(sclient, max_connections=POOL_SIZE)
        _retry_quickly(sclient, aclient)
    try:
        kernel = await bridged(connect_sync, bridge_client(aclient, sclient), keys=keys, **options)
    except BaseException:
        if server is not None:
            server.release()
        if owns:
            await aclient.aclose()
        raise
    kernel.server = server
    return AsyncStore(kernel, aclient, owns_client=owns)


def _async_from_url(url: str, **options: Any) -> Any:
    if url.startswith("redis+sentinel://"):  # the master the Sentinels name, as rxstate.connect's client
        from redis.asyncio.sentinel import Sentinel

        target = parse_sentinel_url(url, **options)
        sentinel = Sentinel(target.sentinels, sentinel_kwargs=target.sentinel_options)  # type: ignore[no-untyped-call]
        return sentinel.master_for(target.name, db=target.db, **target.options)
    try:
        if url.startswith("redis+cluster://"):
            return redis.asyncio.cluster.RedisCluster.from_url("redis://" + url[len("redis+cluster://") :], **options)
        # Many tasks share one loop: past POOL_SIZE connections a command waits for a free one (the
        # default pool would refuse it with MaxConnectionsError).
        pool = redis.asyncio.BlockingConnectionPool.from_url(url, max_connections=POOL_SIZE, **options)
        return redis.asyncio.Redis(connection_pool=pool)
    except (ValueError, redis.RedisError) as exc:
        raise ServerError(f"cannot connect to {url!r}: {exc}") from exc


def _retry_quickly(sync_client: Any, async_client: Any) -> None:
    """The retry policy of clients rxstate made (as ``rxstate.connect``'s): a few quick retries."""
    if isinstance(sync_client, redis.Redis):
        sync_client.set_retry(redis.retry.Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.5), 3))
    if isinstance(async_client, redis.asyncio.Redis):
        async_client.set_retry(AsyncRetry(ExponentialWithJitterBackoff(base=0.01, cap=0.5), 3))
