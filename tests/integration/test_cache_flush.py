"""Whole-database events on a real server: FLUSHDB, FLUSHALL (ASYNC), SWAPDB, in both modes.

These tests flush and swap databases, so they run on a server of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

import rxstate
from rxstate.server import EmbeddedServer
from tests.helpers import wait_for
from tests.models import Task

MODES = ["tracking", "keyspace"]
EVENTS: dict[str, Callable[[object], object]] = {
    "flushdb": lambda c: c.flushdb(),
    "flushall": lambda c: c.flushall(),
    "flushall-async": lambda c: c.flushall(asynchronous=True),
    "swapdb": lambda c: c.swapdb(0, 1),
}


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedServer]:
    with EmbeddedServer() as srv:
        yield srv


def cached_store(server: EmbeddedServer, mode: str) -> tuple[rxstate.Store, object]:
    store = rxstate.connect(server.client(), namespace="flush", invalidation=mode, reap_interval=None)
    assert store.cache is not None and store.cache.stats().mode == mode
    tasks = store.collection("tasks", Task)
    tasks.put("t", Task(title="before"))
    assert tasks.get("t").title == "before" and tasks.get("t").title == "before"
    assert tasks.key("t") in store.cache
    return store, tasks


@pytest.mark.parametrize("event", sorted(EVENTS))
@pytest.mark.parametrize("mode", MODES)
def test_a_whole_database_event_clears_the_cache(server, mode, event):
    store, tasks = cached_store(server, mode)
    try:
        EVENTS[event](server.client())
        assert wait_for(lambda: tasks.get("t", None) is None, timeout=5)
        # the entry may go first by the background re-read of its own write's echo (it finds the key gone);
        # the clear of the whole cache still comes, from the event or the epoch check
        assert wait_for(lambda: store.cache.stats().clears >= 1, timeout=5)
        tasks.put("t", Task(title="after"))  # caching goes on
        assert tasks.get("t").title == "after" and tasks.get("t").title == "after"
    finally:
        store.close()
        server.client().flushall()


@pytest.mark.parametrize("event", ["flushdb", "swapdb"])
@pytest.mark.parametrize("mode", MODES)
def test_a_store_connecting_after_the_event_does_not_hide_it(server, mode, event):
    old, tasks = cached_store(server, mode)
    try:
        EVENTS[event](server.client())
        late = rxstate.connect(server.client(), namespace="flush", invalidation=mode, reap_interval=None)
        try:
            assert late.cache is not None
            assert late.collection("tasks", Task).get("t", None) is None
            assert wait_for(lambda: tasks.get("t", None) is None, timeout=5)
        finally:
            late.close()
    finally:
        old.close()
        server.client().flushall()


def test_fakeredis_flush_seen_by_an_older_store_after_a_later_one_connected():
    import fakeredis

    fake = fakeredis.FakeServer()
    old = rxstate.connect(fakeredis.FakeRedis(server=fake), namespace="f", reap_interval=None)
    try:
        tasks = old.collection("tasks", Task)
        tasks.put("t", Task(title="x"))
        assert tasks.get("t").title == "x" and tasks.get("t").title == "x"
        fakeredis.FakeRedis(server=fake).flushdb()
        late = rxstate.connect(fakeredis.FakeRedis(server=fake), namespace="f", reap_interval=None)
        late.close()
        assert wait_for(lambda: tasks.get("t", None) is None, timeout=5)
    finally:
        old.close()
