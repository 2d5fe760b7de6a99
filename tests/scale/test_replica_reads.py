"""Reads from replicas (``connect(read_from="replica")``): served by the replica, a store reads its own
writes while the replica lags (the primary answers, counted), other stores' writes arrive late within the
staleness bound, consistent reads stay on the primary, bad options are refused.

A replica is made to lag deterministically with ``CLIENT PAUSE <ms> WRITE`` on it: it keeps answering
reads, but stops applying the replication stream until ``CLIENT UNPAUSE``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
import redis

import rxstate
import rxstate.aio
from rxstate.metrics import instrument
from rxstate.testing.replicated import PrimaryReplicas, replicated_cluster
from tests.helpers import dump_all, wait_for
from tests.models import Agent

READS = ("hgetall", "hmget", "smembers", "zrangebylex", "xrevrange")


def _calls(client: Any) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name: int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in READS}


def _caught_up(primary: Any, replica: Any) -> bool:
    offset = primary.info("replication")["master_repl_offset"]
    return bool(replica.info("replication").get("slave_repl_offset", -1) >= offset)


@contextlib.contextmanager
def _lagging(replica: Any) -> Iterator[None]:
    """The replica answers reads but applies no replicated write inside the block."""
    replica.execute_command("CLIENT", "PAUSE", 20_000, "WRITE")
    try:
        yield
    finally:
        replica.execute_command("CLIENT", "UNPAUSE")


@pytest.fixture
def servers(primary_replicas: PrimaryReplicas) -> Iterator[tuple[Any, Any]]:
    primary, replica = primary_replicas.primary.client(), primary_replicas.replicas[0].client()
    yield primary, replica
    replica.execute_command("CLIENT", "UNPAUSE")
    primary.close()
    replica.close()


def _reader(servers: tuple[Any, Any], namespace: str, **options: Any) -> rxstate.Store:
    primary, replica = servers
    return rxstate.connect(
        primary, namespace=namespace, cache=False, read_from="replica", replicas=[replica], **options
    )


async def _open_async(**options: Any) -> None:
    await rxstate.aio.connect(fakeredis.FakeAsyncRedis(), **options)


def test_bad_read_options_are_refused_and_change_nothing() -> None:
    client = fakeredis.FakeRedis()
    bad: list[tuple[dict[str, Any], str]] = [
        ({"read_from": "secondary"}, "read_from"),
        ({"read_from": "replica", "replicas": "redis://x"}, "replicas"),
        ({"read_from": "replica", "replicas": [42]}, "replicas"),
        ({"read_from": "replica", "replicas": ["http://x"]}, "replicas"),
        ({"read_from": "replica", "replicas": [redis.Redis(decode_responses=True)]}, "replicas"),
        ({"read_from": "replica", "replicas": ["redis://x"], "max_staleness": 0}, "max_staleness"),
        ({"read_from": "replica", "replicas": ["redis://x"], "max_staleness": True}, "max_staleness"),
        ({"replicas": ["redis://x"]}, "replicas"),
        ({"max_staleness": 1.0}, "max_staleness"),
        ({"read_from": "replica", "replicas": ["redis://x"]}, "read_from"),  # fakeredis has no replicas
    ]
    for options, field in bad:
        with pytest.raises(rxstate.ValidationError) as info:
            rxstate.connect(client, **options)
        assert info.value.field == field, options
    with pytest.raises(rxstate.ValidationError, match="fakeredis"):
        rxstate.connect(client, read_from="replica", replicas=["redis://x"])
    assert dump_all(client) == {}
    with pytest.raises(rxstate.ValidationError, match="asyncio front"):
        asyncio.run(_open_async(read_from="replica"))


@pytest.mark.slow
def test_a_standalone_primary_needs_its_replicas_named(servers: tuple[Any, Any]) -> None:
    primary, _replica = servers
    before = dump_all(primary)
    with pytest.raises(rxstate.ValidationError) as info:
        rxstate.connect(primary, namespace="rr-none", read_from="replica")
    assert info.value.field == "replicas"
    assert dump_all(primary) == before


@pytest.mark.slow
def test_reads_are_served_by_the_replica(servers: tuple[Any, Any]) -> None:
    primary, replica = servers
    writer = rxstate.connect(primary, namespace="rr-served", cache=False, reap_interval=None)
    agents_w = writer.collection("agents", Agent, indexes=["status"])
    agents_w.put_many({f"a{i}": Agent(name=f"n{i}", status="busy" if i % 2 else "idle") for i in range(6)})
    reader = _reader(servers, "rr-served", reap_interval=None)  # no upkeep reads on the primary meanwhile
    agents = reader.collection("agents", Agent, indexes=["status"])
    assert wait_for(lambda: _caught_up(primary, replica))
    on_primary, on_replica = _calls(primary), _calls(replica)
    assert agents.get("a1").name == "n1"
    assert agents.get_versioned("a2").version == 1
    assert agents.get("a3", fields=["name"]) == {"name": "n3"}
    assert sorted(agents.get_many(["a0", "a5", "nope"])) == ["a0", "a5"]
    assert agents.ids() == [f"a{i}" for i in range(6)]
    assert [a.name for a in agents.all()] == [f"n{i}" for i in range(6)]
    assert agents.where(status="busy").ids() == ["a1", "a3", "a5"]
    assert [a.name for a in agents.where(status="idle")] == ["n0", "n2", "n4"]
    assert agents.count() == 6
    after_primary, after_replica = _calls(primary), _calls(replica)
    assert after_primary == on_primary  # not one entity, id or index read reached the primary
    assert after_replica["hgetall"] - on_replica["hgetall"] >= 2 + 2 + 6 + 3
    assert after_replica["hmget"] > on_replica["hmget"]
    assert after_replica["smembers"] > on_replica["smembers"]
    assert after_replica["zrangebylex"] > on_replica["zrangebylex"]
    stats = reader.replica_reads.stats  # type: ignore[union-attr]
    assert stats.fallbacks == 0 and stats.replica >= 9
    reader.close()
    writer.close()


@pytest.mark.slow
def test_a_store_reads_its_own_writes_while_the_replica_lags(servers: tuple[Any, Any]) -> None:
    primary, replica = servers
    reader = _reader(servers, "rr-own")
    metrics = instrument(reader)  # another observer of the Writer, removed again: the router still sees writes
    agents = reader.collection("agents", Agent, indexes=["status"])
    agents.put("a1", Agent(name="planner"))
    other = next(
        i for i in (f"b{n}" for n in range(100)) if agents.key(i).split("}")[0] != agents.key("a1").split("}")[0]
    )
    agents.put(other, Agent(name="elsewhere"))
    metrics.close()
    assert wait_for(lambda: _caught_up(primary, replica))
    stats = reader.replica_reads.stats  # type: ignore[union-attr]
    assert agents.get("a1").name == "planner" and stats.replica == 1  # the replica holds it: checked once
    with _lagging(replica):
        agents.update("a1", status="busy")
        behind = stats.behind
        assert agents.get("a1").status == "busy"  # the replica has the old value; the primary answers
        assert agents.get("a1", fields=["status"]) == {"status": "busy"}
        assert agents.where(status="busy").ids() == ["a1"]
        assert agents.get_many(["a1"])["a1"].status == "busy"
        assert stats.behind == behind + 4
        served = stats.replica
        assert agents.get(other).name == "elsewhere"  # a partition the store did not write since: the replica
        assert stats.replica == served + 1
        assert replica.hget(agents.key("a1"), "status") == b'"idle"'  # the replica still lags
    assert wait_for(lambda: _caught_up(primary, replica))
    served, behind = stats.replica, stats.behind
    assert agents.get("a1").status == "busy"
    assert (stats.replica, stats.behind) == (served + 1, behind)
    reader.close()


@pytest.mark.slow
def test_another_stores_writes_arrive_late_within_the_staleness_bound(servers: tuple[Any, Any]) -> None:
    primary, replica = servers
    writer = rxstate.connect(primary, namespace="rr-late", cache=False)
    agents_w = writer.collection("agents", Agent)
    agents_w.put("a1", Agent(name="planner"))
    unbounded = _reader(servers, "rr-late")
    bounded = _reader(servers, "rr-late", max_staleness=1.0)
    agents_u, agents_b = unbounded.collection("agents", Agent), bounded.collection("agents", Agent)
    assert wait_for(lambda: _caught_up(primary, replica))
    assert agents_b.get("a1").status == "idle"  # a fresh sample of the replica's offset
    with _lagging(replica):
        agents_w.update("a1", status="busy")
        paused = time.monotonic()
        assert agents_u.get("a1").status == "idle"  # seen late: no bound, no own write
        # the bounded reader answers from the replica until it trails by more than max_staleness
        assert wait_for(lambda: agents_b.get("a1").status == "busy", timeout=5.0)
        assert time.monotonic() - paused <= 1.0 + 1.0  # the bound plus one sampling interval
        stats = bounded.replica_reads.stats  # type: ignore[union-attr]
        assert stats.stale >= 1 and stats.behind == 0
        assert agents_u.get("a1").status == "idle"
        served = stats.replica
    assert wait_for(lambda: agents_u.get("a1").status == "busy")  # and then it arrives
    assert wait_for(lambda: agents_b.get("a1").status == "busy" and stats.replica > served)  # the replica again
    for store in (unbounded, bounded, writer):
        store.close()


@pytest.mark.slow
def test_consistent_reads_go_to_the_primary(servers: tuple[Any, Any]) -> None:
    primary, replica = servers
    writer = rxstate.connect(primary, namespace="rr-cons", cache=False)
    agents_w = writer.collection("agents", Agent, indexes=["status"])
    agents_w.put("a1", Agent(name="planner"))
    reader = _reader(servers, "rr-cons")
    agents = reader.collection("agents", Agent, indexes=["status"])
    assert wait_for(lambda: _caught_up(primary, replica))
    stats = reader.replica_reads.stats  # type: ignore[union-attr]
    with _lagging(replica):
        agents_w.update("a1", status="busy")
        before = (stats.replica, stats.fallbacks)
        assert agents.get("a1", consistent=True).status == "busy"
        assert agents.get_versioned("a1", consistent=True).version == 2
        assert agents.get_many(["a1"], consistent=True)["a1"].status == "busy"
        assert agents.get("a1", fields=["status"], consistent=True) == {"status": "busy"}
        with reader.replica_reads.primary():  # type: ignore[union-attr]
            assert agents.where(status="busy").ids() == ["a1"]
            assert agents.all()[0].status == "busy"
        assert (stats.replica, stats.fallbacks) == before  # none of them was routed
        assert agents.get("a1").status == "idle"  # the routed read: the lagging replica
    reader.close()
    writer.close()


@pytest.mark.slow
def test_a_change_the_feed_delivered_is_never_read_older(servers: tuple[Any, Any]) -> None:
    primary, replica = servers
    writer = rxstate.connect(primary, namespace="rr-feed", cache=False)
    agents_w = writer.collection("agents", Agent)
    agents_w.put("a1", Agent(name="planner"))
    reader = _reader(servers, "rr-feed")
    agents = reader.collection("agents", Agent)
    assert wait_for(lambda: _caught_up(primary, replica))
    told = threading.Event()
    seen: list[str] = []

    def on_change(change: Any) -> None:
        seen.append(change.offset)
        told.set()

    subscription = reader.changes(collection="agents").subscribe(on_change)
    try:
        with _lagging(replica):
            agents_w.update("a1", status="busy")
            assert told.wait(5.0)
            assert agents.get("a1").status == "busy"  # told of it: the primary answers
            assert reader.replica_reads.stats.behind == 1  # type: ignore[union-attr]
    finally:
        subscription.dispose()
    reader.close()
    writer.close()


@pytest.mark.slow
@pytest.mark.cluster
def test_on_a_cluster_reads_go_to_the_slots_replicas() -> None:
    with replicated_cluster() as cluster:
        nodes = [redis.Redis(port=n.port) for n in cluster.nodes]

        def topology_known() -> bool:  # every node's CLUSTER SLOTS names a replica of every shard
            return all(len(r) >= 4 for n in nodes for r in n.execute_command("CLUSTER", "SLOTS"))

        assert wait_for(topology_known, timeout=15.0)
        client = cluster.client()
        with pytest.raises(rxstate.ValidationError) as info:
            rxstate.connect(client, namespace="rr-c", read_from="replica", replicas=["redis://127.0.0.1:1"])
        assert info.value.field == "replicas"
        store = rxstate.connect(client, namespace="rr-c", cache=False, read_from="replica", reap_interval=None)
        agents = store.collection("agents", Agent, indexes=["status"])
        agents.put_many({f"a{i}": Agent(name=f"n{i}") for i in range(12)})
        primaries, replicas = nodes[:3], nodes[3:]

        def caught_up() -> bool:
            return all(_caught_up(p, r) for p, r in zip(primaries, replicas, strict=True))

        assert wait_for(caught_up, timeout=10.0)
        on_primaries = [_calls(n)["hgetall"] for n in primaries]
        on_replicas = sum(_calls(n)["hgetall"] for n in replicas)
        assert [a.name for a in agents.all()] == [f"n{i}" for i in sorted(range(12), key=str)]
        assert agents.get("a3").name == "n3"
        assert [_calls(n)["hgetall"] for n in primaries] == on_primaries
        assert sum(_calls(n)["hgetall"] for n in replicas) >= on_replicas + 13
        stats = store.replica_reads.stats  # type: ignore[union-attr]
        assert stats.fallbacks == 0
        # its own write, while the replica of that slot lags: read from the primary
        owner = client.get_node_from_key(agents.key("a3")).port
        slot_replica = replicas[next(i for i, n in enumerate(cluster.nodes[:3]) if n.port == owner)]
        with _lagging(slot_replica):
            agents.update("a3", status="busy")
            assert agents.get("a3").status == "busy"
            assert stats.behind == 1
        assert wait_for(caught_up, timeout=10.0)
        served = stats.replica
        assert agents.get("a3").status == "busy" and stats.replica == served + 1
        store.close()
        for n in nodes:
            n.close()
