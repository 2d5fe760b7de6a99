"""Read-only stores (what the command line reads through): they never write, and say so when asked to."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import rxstate
from rxstate.errors import NotFound, ValidationError
from rxstate.server import EmbeddedServer
from tests.helpers import dump_all
from tests.models import Agent


@pytest.fixture(scope="module")
def own_server() -> Iterator[EmbeddedServer]:
    """This module's own server: no key another test left to expire changes it between two dumps."""
    with EmbeddedServer() as server:
        yield server


def _namespace() -> str:
    return f"ro{uuid.uuid4().hex[:8]}"


def test_a_missing_namespace_is_not_created(own_server: Any) -> None:
    client = own_server.client()
    before = dump_all(client)
    with pytest.raises(NotFound, match="namespace 'ro-missing' does not exist"):
        rxstate.connect(own_server.url, namespace="ro-missing", read_only=True)
    assert dump_all(client) == before


def test_read_only_refuses_writes_and_writes_nothing(own_server: Any) -> None:
    ns = _namespace()
    with rxstate.connect(own_server.url, namespace=ns, cache=False, write_record_ms=3_600_000) as store:
        store.collection("agents", Agent).put("a1", Agent(name="x"))
    client = own_server.client()
    events = client.config_get("notify-keyspace-events")
    before = dump_all(client)
    with rxstate.connect(own_server.url, namespace=ns, read_only=True, invalidation="keyspace") as store:
        assert store.read_only and store.cache is None and store.keyspace.partitions == 16
        for attempt in (
            lambda: store.collection("agents", Agent),
            lambda: store.lock("printer"),
            lambda: store.rwlock("catalog"),
            lambda: store.transaction(),
            lambda: store.batch(),
        ):
            with pytest.raises(ValidationError, match="read-only store"):
                attempt()
    assert dump_all(client) == before  # no probe key, no schema, no namespace metadata
    assert client.config_get("notify-keyspace-events") == events


def test_a_read_only_store_follows_the_change_feed(own_server: Any) -> None:
    ns = _namespace()
    with rxstate.connect(own_server.url, namespace=ns, cache=False) as writer:
        agents = writer.collection("agents", Agent)
        agents.put("a1", Agent(name="x"))
        with rxstate.connect(own_server.url, namespace=ns, read_only=True) as reader:
            seen: list[Any] = []
            arrived = threading.Event()

            def on_change(change: Any) -> None:
                seen.append(change)
                if len(seen) == 2:
                    arrived.set()

            sub = reader.changes(collection="agents").subscribe(on_next=on_change)
            agents.update("a1", status="busy")
            agents.put("a2", Agent(name="y"))
            assert arrived.wait(10)
            sub.dispose()
    assert [(c.id, c.op, c.version) for c in seen] == [("a1", "update", 2), ("a2", "create", 1)]
