"""The bridge between the synchronous kernel and ``redis.asyncio``: greenlets, the way SQLAlchemy's asyncio
extension runs its synchronous ORM on asyncio drivers.

``await bridged(fn, *args)`` runs ``fn`` — any synchronous rxstate code: the Writer, transactions, locks,
the events kernel — inside a greenlet. The kernel talks to the server through a *bridged client*: the
synchronous client of the same server, with ``execute_command`` and ``pipeline`` routed so that, inside
such a greenlet, each command switches to the parent greenlet, which awaits the matching ``redis.asyncio``
coroutine on the event loop and switches back with the reply (or throws its exception in). So the scripts,
codec, key layout and Writer stages are the kernel's own: the asyncio front differs from the synchronous
one only in how the bytes are sent and how it waits.

Outside a bridged greenlet (the cache's invalidation listener, the change-feed reader and dispatcher, the
expiry reaper: threads of their own) the same object is a plain synchronous client, so the background
machinery keeps its threads and its guarantees. Pipelines queue their commands synchronously; their
``execute()`` is the awaited step (``watch()`` and commands between ``watch()`` and ``multi()`` run at
once, awaited too). The kernel's retry waits (``rxstate.core.waiting.pause``) await ``asyncio.sleep``
inside a bridged greenlet, so a lock waiting for another task's lease lets that task run.

Written by hand because no library bridges a synchronous redis-py code base onto ``redis.asyncio``;
``greenlet`` does the stack switching.

Example:
    >>> import asyncio
    >>> async def main():
    ...     aclient = fakeredis.FakeAsyncRedis()
    ...     client = bridge_client(aclient, await sync_twin(aclient))
    ...     return await bridged(lambda: (client.set("k", b"v"), client.get("k"))[1])
    >>> asyncio.run(main())
    b'v'
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import greenlet
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

from rxstate.core.errors import ValidationError
from rxstate.core.waiting import set_waiter

__all__ = ["async_twin", "bridge_client", "bridged", "in_bridge", "is_async_client", "sync_twin", "wait_for"]

T = TypeVar("T")


class _Bridged(greenlet.greenlet):  # type: ignore[misc]
    """A greenlet running synchronous code for a coroutine; ``driver`` is the coroutine's greenlet."""

    def __init__(self, fn: Callable[..., Any], driver: greenlet.greenlet) -> None:
        super().__init__(fn, driver)
        self.driver = driver


def in_bridge() -> bool:
    """Whether the code running now is synchronous code run for a coroutine (by ``bridged``).

    Example:
        >>> in_bridge()
        False
    """
    return isinstance(greenlet.getcurrent(), _Bridged)


def wait_for(awaitable: Awaitable[T]) -> T:
    """Inside a bridged greenlet: the result of ``awaitable``, awaited on the event loop.

    Raises:
        ValidationError: called outside a bridged greenlet.

    Example:
        >>> import asyncio
        >>> asyncio.run(bridged(lambda: wait_for(asyncio.sleep(0, "slept"))))
        'slept'
    """
    current = greenlet.getcurrent()
    if not isinstance(current, _Bridged):
        if inspect.iscoroutine(awaitable):
            awaitable.close()  # never to be awaited
        raise ValidationError("wait_for() is for synchronous code run by rxstate.aio (inside bridged())")
    result: T = current.driver.switch(awaitable)
    return result


async def bridged(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` run in a bridged greenlet: its server calls are awaited on this loop.

    Called from code that is itself bridged, ``fn`` simply runs there (no second greenlet). A
    cancellation of the awaiting task is thrown into ``fn`` at the server call it is waiting on: that
    call's connection is closed (its reply is never read by anyone) and ``fn`` sees ``CancelledError``
    where it would see a lost reply.

    Example:
        >>> import asyncio
        >>> asyncio.run(bridged(sum, [1, 2, 3]))
        6
    """
    if in_bridge():
        return fn(*args, **kwargs)
    context = _Bridged(fn, greenlet.getcurrent())
    result = context.switch(*args, **kwargs)
    while not context.dead:
        try:
            value = await result
        except BaseException:  # the awaited call's error (or a cancellation) goes to the code waiting on it
            result = context.throw(*sys.exc_info())
        else:
            result = context.switch(value)
    return result  # type: ignore[no-any-return]


def _await_sleep(seconds: float) -> bool:
    if not in_bridge():
        return False
    wait_for(asyncio.sleep(seconds))
    return True


set_waiter(_await_sleep)


# -- the bridged client ------------------------------------------------------------------------------
def is_async_client(client: Any) -> bool:
    """Whether ``client`` is an asyncio client (``redis.asyncio``, ``FakeAsyncRedis``, async cluster).

    Example:
        >>> is_async_client(fakeredis.FakeAsyncRedis()), is_async_client(fakeredis.FakeRedis())
        (True, False)
    """
    return inspect.iscoroutinefunction(getattr(client, "execute_command", None))


class _BridgeMixin:
    """``execute_command`` and ``pipeline`` of a synchronous client, routed to ``_rx_async`` when bridged."""

    _rx_async: Any

    def execute_command(self, *args: Any, **options: Any) -> Any:
        if in_bridge():
            return wait_for(self._rx_async.execute_command(*args, **_async_options(self._rx_async, options)))
        return super().execute_command(*args, **options)  # type: ignore[misc]

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        if in_bridge():
            if isinstance(self._rx_async, redis.asyncio.cluster.RedisCluster):
                return _Pipeline(self._rx_async.pipeline(transaction=transaction))
            return _Pipeline(self._rx_async.pipeline(transaction=transaction, shard_hint=shard_hint))
        return super().pipeline(transaction, shard_hint)  # type: ignore[misc]


def _async_options(client: Any, options: dict[str, Any]) -> dict[str, Any]:
    """Options of a synchronous command call, for the asyncio client: cluster nodes named by the async client's."""
    nodes = options.get("target_nodes")
    if nodes is None or isinstance(nodes, str) or not isinstance(client, redis.asyncio.cluster.RedisCluster):
        return options
    many = nodes if isinstance(nodes, list | tuple) else [nodes]
    mapped = [client.get_node(node_name=n.name) if isinstance(n, redis.cluster.ClusterNode) else n for n in many]
    return {**options, "target_nodes": mapped if isinstance(nodes, list | tuple) else mapped[0]}


class _Pipeline:
    """A pipeline of the asyncio client seen synchronously: commands queue, ``execute()`` is awaited."""

    def __init__(self, pipe: Any) -> None:
        self._pipe = pipe

    def __getattr__(self, name: str) -> Any:
        command = getattr(self._pipe, name)
        if not callable(command):
            return command

        def call(*args: Any, **kwargs: Any) -> Any:
            result = command(*args, **kwargs)
            if result is self._pipe:  # queued (a cluster pipeline is awaitable itself: not that)
                return self
            if inspect.isawaitable(result):  # watch(), reset(), and immediate commands after watch()
                return wait_for(result)
            return result

        return call

    def __len__(self) -> int:
        return len(self._pipe)

    def __enter__(self) -> _Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        wait_for(self._pipe.reset())

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        result: list[Any] = wait_for(self._pipe.execute(raise_on_error=raise_on_error))
        return result


_classes: dict[type, type] = {}


def bridge_client(async_client: Any, sync_client: Any) -> Any:
    """The bridged client of ``async_client``: ``sync_client`` (a client of the same server, see ``sync_twin``)
    whose commands, inside a bridged greenlet, go through ``async_client``.

    The result is still an instance of the synchronous client's class (``redis.Redis``, ``RedisCluster``,
    ``FakeRedis``), so every kernel check on the client holds.

    Raises:
        ValidationError: ``async_client`` is not an asyncio client.

    Example:
        >>> server = fakeredis.FakeServer()
        >>> bridged_client = bridge_client(fakeredis.FakeAsyncRedis(server=server), fakeredis.FakeRedis(server=server))
        >>> bridged_client.ping()  # outside a bridged greenlet: synchronous
        True
    """
    if not is_async_client(async_client):
        raise ValidationError(f"{async_client!r} is not an asyncio client (redis.asyncio or FakeAsyncRedis)")
    client = sync_client
    base = type(client)
    cls = _classes.get(base)
    if cls is None:
        cls = _classes[base] = type(f"Bridged{base.__name__}", (_BridgeMixin, base), {})
    client.__class__ = cls
    client._rx_async = async_client
    return client


async def sync_twin(async_client: Any) -> Any:
    """A synchronous client to the server (or fake server) ``async_client`` talks to.

    Example:
        >>> import asyncio
        >>> asyncio.run(sync_twin(fakeredis.FakeAsyncRedis())).ping()
        True
    """
    if isinstance(async_client, redis.asyncio.cluster.RedisCluster):
        await async_client.initialize()  # learns the nodes (idempotent)
        node_type: Any = redis.cluster.ClusterNode
        nodes = [node_type(n.host, n.port) for n in async_client.get_nodes()]
        kwargs: dict[str, Any] = {k: v for k, v in async_client.get_connection_kwargs().items() if k in _SHARED}
        cluster_type: Any = redis.cluster.RedisCluster
        return cluster_type(startup_nodes=nodes, **kwargs)
    kwargs = dict(async_client.connection_pool.connection_kwargs)
    fake = sys.modules.get("fakeredis")  # a fake client implies fakeredis was imported
    if fake is not None and isinstance(async_client, fake.FakeAsyncRedis):
        server = kwargs.get("server")
        if server is None:  # the fake server is chosen when the first connection is made: ask one
            connection = await async_client.connection_pool.get_connection()
            server = connection._server
            await async_client.connection_pool.release(connection)
        return fake.FakeRedis(server=server)
    shared = {k: v for k, v in kwargs.items() if k in _SHARED}
    if "path" in kwargs:
        return redis.Redis(unix_socket_path=kwargs["path"], **shared)
    return redis.Redis(host=kwargs.get("host", "localhost"), port=kwargs.get("port", 6379), **shared)


_SHARED = frozenset(
    {
        "db",
        "username",
        "password",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "client_name",
        "protocol",
        "health_check_interval",
        "ssl_keyfile",
        "ssl_certfile",
        "ssl_cert_reqs",
        "ssl_ca_certs",
    }
)


def async_twin(sync_client: Any, *, max_connections: int = 64) -> Any:
    """An asyncio client to the server a synchronous redis-py client talks to (the embedded server's).

    Past ``max_connections`` connections, a command waits for a free one.

    Example:
        >>> async_twin(redis.Redis(port=1)).connection_pool.connection_kwargs["port"]
        1
    """
    if isinstance(sync_client, redis.cluster.RedisCluster):
        known: Any = sync_client
        nodes = [redis.asyncio.cluster.ClusterNode(n.host, n.port) for n in known.get_nodes()]
        return redis.asyncio.cluster.RedisCluster(startup_nodes=nodes)
    kwargs = dict(sync_client.connection_pool.connection_kwargs)
    shared: dict[str, Any] = {k: v for k, v in kwargs.items() if k in _SHARED}
    if "path" in kwargs:
        shared.update(connection_class=redis.asyncio.UnixDomainSocketConnection, path=kwargs["path"])
    else:
        shared.update(host=kwargs.get("host", "localhost"), port=kwargs.get("port", 6379))
    pool = redis.asyncio.BlockingConnectionPool(max_connections=max_connections, **shared)
    return redis.asyncio.Redis(connection_pool=pool)
