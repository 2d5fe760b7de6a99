"""The core contract suite (tests/contract) on the asyncio front.

Each test module here re-exports one of tests/contract. Every test of this folder runs whole — fixture
setup, the test body, teardown — inside a bridged greenlet on a fresh event loop, and its stores are made
by ``rxstate.aio.connect`` with an asyncio client of the backend (``FakeAsyncRedis``, ``redis.asyncio``,
``redis.asyncio.cluster``): so every command the tests' code sends goes through ``redis.asyncio``, and
the test bodies run unchanged. Threads the tests start (concurrent writers) and the store's background
machinery use the bridged client's synchronous side, as they do in an asyncio program.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
import redis.asyncio
import redis.asyncio.cluster
from _pytest.runner import runtestprotocol

import rxstate.aio
from rxstate.aio.bridge import bridged, in_bridge, wait_for
from rxstate.testing import Backend


class AsyncBackend(Backend):
    """A backend whose stores are opened by ``rxstate.aio.connect`` (their ``.sync`` goes to the tests)."""

    def __init__(self, kind: str, server: Any = None) -> None:
        super().__init__(kind, server)
        self.async_stores: list[rxstate.aio.AsyncStore] = []
        self._async_clients: list[Any] = []

    def async_client(self) -> Any:
        if self.kind == "fakeredis":
            return fakeredis.FakeAsyncRedis(server=self._fake_server)
        if self.kind == "cluster":
            nodes = [redis.asyncio.cluster.ClusterNode(h, p) for h, p in self.server.startup_nodes]
            return redis.asyncio.cluster.RedisCluster(startup_nodes=nodes)
        return redis.asyncio.Redis(host=self.server.host, port=self.server.port)

    def store(self, **kwargs: Any) -> Any:
        if not in_bridge():  # a thread the test started: its calls are synchronous anyway
            return super().store(**kwargs)
        kwargs.setdefault("namespace", self.namespace)
        client = self.async_client()
        self._async_clients.append(client)
        astore = wait_for(rxstate.aio.connect(client, **kwargs))
        self.async_stores.append(astore)
        self._stores.append(astore.sync)
        return astore.sync

    def close(self) -> None:
        super().close()
        for client in self._async_clients:
            wait_for(client.aclose())


@pytest.fixture
def rx_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    kind = request.param
    server = None
    if kind == "redis":
        server = request.getfixturevalue("rx_server")
    elif kind == "cluster":
        server = request.getfixturevalue("rx_cluster")
    with AsyncBackend(kind, server) as backend:
        yield backend


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "rx_backend" in metafunc.fixturenames:
        from rxstate.testing.plugin import _backend_params

        metafunc.parametrize("rx_backend", _backend_params(), indirect=True)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool:
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(bridged(runtestprotocol, item, nextitem=nextitem, log=True))
    finally:
        loop.close()
        # A loop whose run ended in a greenlet other than the one that started it can stay registered as
        # this thread's running loop; the next test's own asyncio runner must start from none.
        asyncio.events._set_running_loop(None)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True
