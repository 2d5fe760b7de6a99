"""The change feed on a Redis Cluster: one blocking reader per partition, routed to its slot's node."""

from __future__ import annotations

import time

import pytest

import rxstate
from tests.helpers import wait_for
from tests.models import Agent

pytestmark = pytest.mark.cluster


def test_feed_follows_every_partition_on_a_cluster(rx_cluster):
    namespace = f"c{time.monotonic_ns()}"
    writer = rxstate.connect(rx_cluster.client(), namespace=namespace, reap_interval=None)
    reader = rxstate.connect(rx_cluster.client(), namespace=namespace, reap_interval=None)
    try:
        agents = writer.collection("agents", Agent)
        watched = reader.collection("agents", Agent)
        got = []
        reader.changes(collection="agents").subscribe(got.append)
        seen = []
        watched.watch("a7").subscribe(seen.append)
        ids = [f"a{i}" for i in range(40)]
        assert len({writer.keyspace.partition_of(i) for i in ids}) == writer.keyspace.partitions
        for i in ids:
            agents.put(i, Agent(name=i))
        assert wait_for(lambda: len(got) == 40)
        assert sorted(c.id for c in got) == sorted(ids)
        assert len(reader.change_feed._readers) == reader.keyspace.partitions  # no cross-slot XREAD
        total = reader.derived(lambda: len(watched.ids()), name="total")
        agents.delete("a1")
        assert wait_for(lambda: total.value == 39)
        assert wait_for(lambda: [c.op for c in seen] == ["snapshot", "create"])
    finally:
        writer.close()
        reader.close()
