"""Durable writes through a failover: a master is killed while writers run on a replicated cluster.

Every write acknowledged as replicated (``durability="replicated"``) must survive the promotion of the
killed master's replica, with its change record; the cache of a store that stays open through the
failover serves the values written after it, never the ones before.
"""

from __future__ import annotations

import threading

import pytest
import redis

import rxstate
from rxstate.testing.servers import LocalCluster
from tests.helpers import wait_for
from tests.models import Task

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def _role(cluster: LocalCluster, i: int) -> str:
    with cluster.nodes[i].client(decode_responses=True) as conn:
        return str(conn.info("replication")["role"])


def _link_up(cluster: LocalCluster, i: int) -> bool:
    with cluster.nodes[i].client(decode_responses=True) as conn:
        return conn.info("replication").get("master_link_status") == "up"


def _online_replicas(cluster: LocalCluster, i: int) -> int:
    """How many replicas master ``i`` counts online (the ones its ``WAIT`` hears from)."""
    with cluster.nodes[i].client(decode_responses=True) as conn:
        info = conn.info("replication")
    slaves = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
    return sum(1 for v in slaves if v.get("state") == "online")


def test_no_acknowledged_write_is_lost_when_a_master_dies(replicated: LocalCluster) -> None:
    store = rxstate.connect(replicated.client(), namespace="fo", durability="replicated", durability_timeout=0.5)
    tasks = store.collection("tasks", Task)
    acked: dict[str, int] = {}
    refused: list[BaseException] = []
    stop = threading.Event()
    lock = threading.Lock()

    def write(worker: int) -> None:
        n = 0
        while not stop.is_set():
            entity_id = f"w{worker}-{n % 40}"  # rewrites: versions climb, a lost one would show
            try:
                version = tasks.put(entity_id, Task(title=f"{worker}:{n}")).version
            except (rxstate.RxStateError, redis.RedisError) as exc:  # not acknowledged: may or may not be there
                refused.append(exc)
            else:
                with lock:
                    acked[entity_id] = max(acked.get(entity_id, 0), version)
            n += 1

    writers = [threading.Thread(target=write, args=(w,)) for w in range(2)]
    for t in writers:
        t.start()
    try:
        assert wait_for(lambda: len(acked) >= 60, timeout=20)
        replica = 3  # the replica of master 0
        replicated.kill_node(0)
        assert wait_for(lambda: _role(replicated, replica) == "master", timeout=30)
        before = sum(acked.values())
        assert wait_for(lambda: sum(acked.values()) > before + 50, timeout=30)  # writes go on after the promotion
    finally:
        stop.set()
        for t in writers:
            t.join()
    assert refused, "the kill should have refused some writes (else the test did not exercise a failover)"
    assert any(isinstance(e, rxstate.UnknownOutcome | rxstate.NotReplicated | rxstate.ServerError) for e in refused)

    # every acknowledged write is there, at its version or later, with its change record
    reader = rxstate.connect(replicated.client(), namespace="fo", cache=False)
    check = reader.collection("tasks", Task)
    for entity_id, version in acked.items():
        assert check.get_versioned(entity_id, consistent=True).version >= version, entity_id
    raw = replicated.client()
    for entity_id, version in acked.items():
        stream = reader.keyspace.changes(reader.keyspace.partition_of(entity_id))
        records = raw.xrange(stream)
        versions = {int(fields[b"v"]) for _id, fields in records if fields.get(b"i") == entity_id.encode()}
        assert version in versions, (entity_id, version, sorted(versions)[-3:])

    # the promoted replica has no replica of its own: a durable write to its slots is refused until the
    # old master is back, as its replica
    promoted = replicated.nodes[replica].port
    victim_id = next(i for i in (f"v{k}" for k in range(500)) if raw.get_node_from_key(tasks.key(i)).port == promoted)
    with pytest.raises(rxstate.NotReplicated) as info:
        tasks.put(victim_id, Task(title="alone"))
    assert info.value.acked == 0 and info.value.node == f"127.0.0.1:{replicated.nodes[replica].port}"
    replicated.restart_node(0)
    assert _role(replicated, 0) == "slave"
    assert wait_for(lambda: _link_up(replicated, 0), timeout=30)  # synced with its new master
    assert wait_for(lambda: _online_replicas(replicated, replica) >= 1, timeout=30)  # which counts it for WAIT
    # a longer wait for the confirmation than the writers had: a loaded machine may take more than 500 ms
    patient = rxstate.connect(replicated.client(), namespace="fo", durability="replicated", durability_timeout=10)
    again = patient.collection("tasks", Task).put(victim_id, Task(title="replicated again"))
    assert again.version == 2  # the refused one is on the primary
    patient.close()

    # the writer's cache follows the new topology: a write by another store after the failover is seen
    entity_id = next(iter(acked))
    assert tasks.get(entity_id) is not None
    check.update(entity_id, title="after failover")
    assert wait_for(lambda: tasks.get(entity_id).title == "after failover", timeout=10)
    reader.close()
    store.close()
