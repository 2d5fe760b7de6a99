"""Test support for code built on rxstate, registered as a pytest plugin.

Fixtures (all prefixed ``rx_``):

- ``rx_server`` — a real ``redis-server``/``valkey-server`` on a free loopback port, for the session.
- ``rx_cluster`` — a local Redis Cluster (3 masters) from the same binary, for the session.
- ``rx_backend`` — parametrised over ``fakeredis``, ``redis`` and ``cluster``: gives fresh stores on
  one shared backend, each test in its own namespace. Contract tests take this (or ``rx_store``) and
  run against every backend.
- ``rx_store`` — a store on ``rx_backend``; ``rx_fake_store`` / ``rx_redis_store`` — one backend only.

Select backends with ``RXSTATE_BACKENDS=fakeredis,redis`` (default: all three; the cluster one is
marked ``cluster``).

Example:
    >>> def test_put(rx_store):
    ...     tasks = rx_store.collection("tasks", Task)
    ...     assert tasks.put("t1", Task(title="x")).version == 1
    >>> test_put(store)  # pytest passes each backend's store in turn
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from rxstate.api import Store, connect
from rxstate.server.embedded import EmbeddedServer

from .servers import LocalCluster

__all__ = ["Backend", "LocalCluster"]

BACKENDS = ("fakeredis", "redis", "cluster")


class Backend:
    """One kind of server for a test: makes clients and stores that share its data.

    Attributes:
        kind: ``"fakeredis"``, ``"redis"`` or ``"cluster"``.
        namespace: a namespace unique to this test.
        server: the ``EmbeddedServer`` or ``LocalCluster`` behind it (None for fakeredis).
    """

    def __init__(self, kind: str, server: Any = None) -> None:
        self.kind = kind
        self.server = server
        self.namespace = f"t{uuid.uuid4().hex[:12]}"
        self._stores: list[Store] = []
        self._fake_server: Any = None
        if kind == "fakeredis":
            import fakeredis

            self._fake_server = fakeredis.FakeServer()

    def client(self, **kwargs: Any) -> Any:
        """A new client of this backend (``decode_responses=False``)."""
        if self.kind == "fakeredis":
            import fakeredis

            return fakeredis.FakeRedis(server=self._fake_server, **kwargs)
        return self.server.client(**kwargs)

    def store(self, **kwargs: Any) -> Store:
        """A new store on this backend, in this test's namespace unless ``namespace=`` is given."""
        kwargs.setdefault("namespace", self.namespace)
        store = connect(self.client(), **kwargs)
        self._stores.append(store)
        return store

    @property
    def is_real(self) -> bool:
        return self.kind != "fakeredis"

    def close(self) -> None:
        for store in self._stores:
            store.close()

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@pytest.fixture(scope="session")
def rx_server() -> Iterator[EmbeddedServer]:
    """A real server on a free loopback port, shared by the test session."""
    with EmbeddedServer() as server:
        yield server


@pytest.fixture(scope="session")
def rx_cluster() -> Iterator[LocalCluster]:
    """A local 3-master Redis Cluster, shared by the test session."""
    with LocalCluster(masters=3) as cluster:
        yield cluster


def _backend_params() -> list[Any]:
    wanted = [b.strip() for b in os.environ.get("RXSTATE_BACKENDS", ",".join(BACKENDS)).split(",") if b.strip()]
    unknown = set(wanted) - set(BACKENDS)
    if unknown:
        raise pytest.UsageError(f"RXSTATE_BACKENDS: unknown backend(s) {sorted(unknown)}; choose from {BACKENDS}")
    marks = {"cluster": [pytest.mark.cluster]}
    return [pytest.param(b, marks=marks.get(b, []), id=b) for b in wanted]


@pytest.fixture(params=_backend_params())
def rx_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Each backend in turn (fakeredis, a real server, a cluster), with a fresh namespace."""
    kind = request.param
    server = None
    if kind == "redis":
        server = request.getfixturevalue("rx_server")
    elif kind == "cluster":
        server = request.getfixturevalue("rx_cluster")
    with Backend(kind, server) as backend:
        yield backend


@pytest.fixture
def rx_store(rx_backend: Backend) -> Store:
    """A store on each backend in turn."""
    return rx_backend.store()


@pytest.fixture
def rx_fake_store() -> Iterator[Store]:
    """A store on a private fakeredis server (fast; no real-server properties)."""
    with Backend("fakeredis") as backend:
        yield backend.store()


@pytest.fixture
def rx_redis_backend(rx_server: EmbeddedServer) -> Iterator[Backend]:
    """The real-server backend alone, with a fresh namespace."""
    with Backend("redis", rx_server) as backend:
        yield backend


@pytest.fixture
def rx_redis_store(rx_redis_backend: Backend) -> Store:
    """A store on the session's real server, in a fresh namespace."""
    return rx_redis_backend.store()
