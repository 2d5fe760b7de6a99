"""Derived values and watchers never read a cached value older than the change that woke them."""

from __future__ import annotations

import threading
import time

from rxstate.cache import invalidation
from tests.models import Agent


def test_derived_value_never_recomputes_from_a_stale_cache(rx_redis_backend, monkeypatch):
    # Make the cache's invalidations lag well behind the change feed, as a busy connection might.
    handle = invalidation._Node._handle

    def slow_handle(self, msg):
        time.sleep(0.02)
        return handle(self, msg)

    monkeypatch.setattr(invalidation._Node, "_handle", slow_handle)
    writer = rx_redis_backend.store(actor="writer", cache=False)
    reader = rx_redis_backend.store(actor="reader")  # cache on: the reads inside the derived value hit it
    agents = writer.collection("agents", Agent)
    r_agents = reader.collection("agents", Agent)
    agents.put("a1", Agent(name="x", load=0))
    for _ in range(3):
        r_agents.get("a1")
    load = reader.derived(lambda: r_agents.get("a1").load, name="load")
    seen: list[int] = []
    done = threading.Event()

    def on_value(v: int) -> None:
        seen.append(v)
        if v == 40:
            done.set()

    load.subscribe(on_value)
    for i in range(1, 41):
        agents.update("a1", load=i)
        time.sleep(0.002)
    assert done.wait(10), seen
    # each recomputation read at least the value of the change that triggered it: increasing, no repeats
    assert seen == sorted(set(seen)) and seen[-1] == 40
    assert reader.cache is not None and reader.cache.stats().hits > 0
