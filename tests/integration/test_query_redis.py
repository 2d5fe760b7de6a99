"""Queries read the indexes, and only the entities of the page they return (a real server counts)."""

from __future__ import annotations

import pytest

import rxstate
from tests.models import Agent


def hgetall_calls(client) -> int:
    return int(client.info("commandstats").get("cmdstat_hgetall", {}).get("calls", 0))


@pytest.fixture
def agents(rx_redis_store):
    coll = rx_redis_store.collection("agents", Agent, indexes=["load", "name", "status"])
    coll.put_many(
        {
            f"a{n:03d}": Agent(name=f"n{n % 17:02d}", load=n % 100, status="busy" if n % 3 else "idle")
            for n in range(300)
        }
    )
    return coll


def test_a_page_reads_only_its_entities(agents):
    """Besides the entities, each query reads one hash per partition: its transactions in flight."""
    client = agents._store.client
    partitions = agents._store.keyspace.partitions
    before = hgetall_calls(client)
    page = agents.where(load=rxstate.ge(40), status="busy").order_by("name", desc=True).offset(5).limit(7)
    assert len(page) == 7 and all(a.load >= 40 and a.status == "busy" for a in page)
    assert hgetall_calls(client) - before == 7 + partitions
    before = hgetall_calls(client)
    assert agents.where(load=rxstate.between(10, 19)).count() == 30
    assert agents.where(name=rxstate.lt("n05")).count() == sum(1 for n in range(300) if n % 17 < 5)
    assert agents.order_by("load").ids()[:3] == ["a000", "a100", "a200"]
    assert hgetall_calls(client) - before == 3 * partitions  # counts and ids read no entity
