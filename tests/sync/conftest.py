"""Real servers for the sync tests: three replicas, each an embedded server of its own (AOF on, so a
SIGKILLed server restarts with its data), shared by the module; each test uses a fresh namespace."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import rxstate
from rxstate.server.embedded import EmbeddedServer
from rxstate.sync import Replica, crdt


class Doc(rxstate.Model):
    title: str = crdt.lww(default="")
    views: int = crdt.counter()
    tags: list[str] = crdt.orset()
    owner: str | None = crdt.mvreg()


@pytest.fixture(scope="session")
def sync_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[EmbeddedServer]]:
    servers = [
        EmbeddedServer(path=tmp_path_factory.mktemp(f"replica{i}"), appendfsync="always").start() for i in range(3)
    ]
    try:
        yield servers
    finally:
        for s in servers:
            s.stop()


@pytest.fixture
def replicas(sync_servers: list[EmbeddedServer]) -> Iterator[list[Replica]]:
    namespace = f"sync{uuid.uuid4().hex[:8]}"
    stores = [rxstate.connect(s.url, namespace=namespace, cache=False) for s in sync_servers]
    try:
        yield [Replica(store, rid) for store, rid in zip(stores, ("a", "b", "c"), strict=True)]
    finally:
        for store in stores:
            store.close()


def docs(replica: Replica) -> Any:
    return replica.collection("docs", Doc)
