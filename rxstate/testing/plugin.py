"""The pytest plugin of rxstate (registered under the ``pytest11`` entry point): real-server fixtures.

Fixtures (all prefixed ``rx_``):

- ``rx_server`` — a real ``redis-server``/``valkey-server`` on a free loopback port, for the session.
- ``rx_cluster`` — a local Redis Cluster (3 masters) from the same binary, for the session.
- ``rx_sentinel`` — a primary, two replicas and three Sentinels (``SentinelGroup``), fresh for each test
  (a test may kill or fail over its primary); ``rx_sentinel.url()`` is its ``redis+sentinel://`` URL.
- ``rx_backend`` — parametrised over ``fakeredis``, ``redis`` and ``cluster``: gives fresh stores on
  one shared backend, each test in its own namespace. Contract tests take this (or ``rx_store``) and
  run against every backend.
- ``rx_store`` — a store on ``rx_backend``; ``rx_fake_store`` / ``rx_redis_store`` — one backend only.
- ``rx_workload`` — runs agent code recorded, under a fault schedule, and fails the test with the rendered
  counterexample (see ``rxstate.testing.workload``).

Select backends with ``RXSTATE_BACKENDS=fakeredis,redis`` (default: all three; the cluster one is
marked ``cluster``).

Example:
    >>> def test_put(rx_store):
    ...     tasks = rx_store.collection("tasks", Task)
    ...     assert tasks.put("t1", Task(title="x")).version == 1
    >>> test_put(store)  # pytest passes each backend's store in turn
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import pytest

from rxstate.api import Store
from rxstate.server.embedded import EmbeddedServer

from .backend import BACKENDS, Backend
from .sentinel import SentinelGroup
from .servers import LocalCluster
from .workload import SERVER_FAULTS, Workload, WorkloadRun, WorkloadSpec, spec_of

__all__ = [
    "rx_backend",
    "rx_cluster",
    "rx_fake_store",
    "rx_redis_backend",
    "rx_redis_store",
    "rx_sentinel",
    "rx_server",
    "rx_store",
    "rx_workload",
]


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


@pytest.fixture
def rx_sentinel() -> Iterator[SentinelGroup]:
    """A primary with two replicas under three Sentinels, for one test."""
    with SentinelGroup(replicas=2) as group:
        yield group


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


class _WorkloadFixture:
    """What ``rx_workload`` gives: ``run(step, setup=, final=)`` runs the test's workload and fails the test
    with the rendered counterexample; ``last`` is the last ``WorkloadRun``."""

    def __init__(self, request: pytest.FixtureRequest, spec: WorkloadSpec) -> None:
        self._request = request
        self.spec = spec
        self.last: WorkloadRun | None = None

    def _target(self, spec: WorkloadSpec, cluster: bool) -> dict[str, Any]:
        if cluster:
            return {"cluster": self._request.getfixturevalue("rx_cluster")}
        if set(spec.faults) & SERVER_FAULTS:
            # A private server, its log synced on every write: killing it loses nothing acknowledged.
            path = self._request.getfixturevalue("tmp_path") / "server"
            server = EmbeddedServer(path=path, appendfsync="always").start()
            self._request.addfinalizer(server.stop)
            return {"server": server}
        return {"server": self._request.getfixturevalue("rx_server")}

    def run(
        self, step: Any, *, setup: Any = None, final: Any = None, cluster: bool = False, **overrides: Any
    ) -> WorkloadRun:
        """Run the workload (``overrides``: ``WorkloadSpec`` fields to change for this run, e.g. ``faults``;
        ``cluster``: on the session's local cluster instead of a server); fail the test unless valid."""
        spec = dataclasses.replace(self.spec, **overrides) if overrides else self.spec
        run = Workload(spec, **self._target(spec, cluster)).run(step, setup=setup, final=final)
        self.last = run
        if run.verdict.valid is not True:
            out = self._request.getfixturevalue("tmp_path") / "timeline.html"
            run.verdict.save_html(out)
            pytest.fail(f"{run.report()}\nHTML timeline: {out}", pytrace=False)
        return run


@pytest.fixture
def rx_workload(request: pytest.FixtureRequest) -> _WorkloadFixture:
    """Runs the test's ``@rxstate.testing.workload`` (see ``rxstate.testing.workload``)."""
    spec = spec_of(request.function)
    if spec is None:
        raise pytest.UsageError(f"{request.node.nodeid} takes rx_workload but has no @rxstate.testing.workload")
    return _WorkloadFixture(request, spec)
