"""The cache on a Redis Cluster: one invalidation connection per primary, keys of every node evicted."""

from __future__ import annotations

import time

import pytest

from rxstate.testing import Backend
from tests.models import Task

pytestmark = pytest.mark.cluster


def first_fresh(read, expected, timeout=2.0):
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if read() == expected:
            return time.monotonic() - start
        time.sleep(0.0002)
    raise AssertionError(f"still not {expected!r} after {timeout} s")


@pytest.mark.parametrize("mode", ["tracking", "keyspace"])
def test_foreign_writes_on_every_node_are_seen(rx_cluster, mode):
    with Backend("cluster", rx_cluster) as backend:
        store = backend.store(invalidation=mode)
        assert store.cache is not None and store.cache.stats().mode == mode
        assert len(store._invalidation._nodes) == len(store.client.get_primaries()) == 3
        tasks = store.collection("tasks", Task)
        raw = backend.client()
        by_node: dict[str, str] = {}
        for i in range(200):
            node = raw.get_node_from_key(tasks.key(f"t{i}")).name
            by_node.setdefault(node, f"t{i}")
        assert len(by_node) == 3
        for entity_id in by_node.values():
            tasks.put(entity_id, Task(title="before"))
        time.sleep(0.05)  # let the echoes of these writes arrive
        for entity_id in by_node.values():
            assert tasks.get(entity_id).title == "before" and tasks.get(entity_id).title == "before"
            assert tasks.key(entity_id) in store.cache
        assert store.cache.stats().hits >= 3
        for entity_id in by_node.values():
            raw.hset(tasks.key(entity_id), "title", '"after"')
        for entity_id in by_node.values():
            assert first_fresh(lambda e=entity_id: tasks.get(e).title, "after") < 0.2
        for entity_id in by_node.values():
            raw.delete(tasks.key(entity_id))
            assert first_fresh(lambda e=entity_id: tasks.get(e, None), None) < 0.2
        assert store.cache.stats().invalidations >= 3
