"""Durable writes on a standalone primary with one replica: WAIT after the write, NotReplicated without it."""

from __future__ import annotations

import fakeredis
import pytest

import rxstate
from rxstate.testing.replicated import PrimaryReplicas
from tests.helpers import dump_all
from tests.models import Task


def test_bad_durability_options_are_refused_before_anything_is_written() -> None:
    client = fakeredis.FakeRedis()
    with pytest.raises(rxstate.ValidationError, match="durability must be one of"):
        rxstate.connect(client, durability="sometimes")
    with pytest.raises(rxstate.ValidationError) as info:
        rxstate.connect(client, durability="replicated", durability_replicas=0)
    assert info.value.field == "durability_replicas"
    with pytest.raises(rxstate.ValidationError):
        rxstate.connect(client, durability="replicated", durability_timeout=-1)
    assert dump_all(client) == {}


def test_a_server_without_wait_is_refused_at_connect() -> None:
    client = fakeredis.FakeRedis()
    with pytest.raises(rxstate.ServerError, match="needs WAIT"):
        rxstate.connect(client, durability="replicated")
    assert dump_all(client) == {}


@pytest.mark.slow
def test_durable_writes_wait_for_the_replica(primary_replicas: PrimaryReplicas) -> None:
    store = rxstate.connect(primary_replicas.primary.client(), namespace="dur", durability="replicated")
    tasks = store.collection("tasks", Task)
    replica = primary_replicas.replicas[0].client()
    tasks.put("t1", Task(title="one"))
    # WAIT returned: the replica holds the write already (no polling)
    assert replica.hget(tasks.key("t1"), "_v") == b"1"
    tasks.put_many({"t2": Task(title="two"), "t3": Task(title="three")})  # pipelined calls, one WAIT
    assert replica.hget(tasks.key("t2"), "_v") == b"1" and replica.hget(tasks.key("t3"), "_v") == b"1"
    tasks.update("t1", title="uno")
    assert replica.hget(tasks.key("t1"), "_v") == b"2"
    store.close()


@pytest.mark.slow
def test_without_the_replica_a_durable_write_raises_not_replicated(primary_replicas: PrimaryReplicas) -> None:
    durable = rxstate.connect(
        primary_replicas.primary.client(), namespace="dur2", durability="replicated", durability_timeout=0.2
    )
    plain = rxstate.connect(primary_replicas.primary.client(), namespace="dur2")
    tasks, plain_tasks = durable.collection("tasks", Task), plain.collection("tasks", Task)
    primary_replicas.kill_replica(0)
    try:
        with pytest.raises(rxstate.NotReplicated) as info:
            tasks.put("t1", Task(title="one"))
        err = info.value
        assert (err.acked, err.wanted, err.timeout_ms) == (0, 1, 200)
        assert tasks.key("t1") in err.keys
        assert "0 of 1 replicas" in str(err)
        # the write is on the primary (not undone), and the cache does not claim it
        assert tasks.key("t1") not in durable.cache
        assert plain_tasks.get_versioned("t1", consistent=True).version == 1
        with pytest.raises(rxstate.NotReplicated):
            tasks.put_many({"t2": Task(title="two"), "t3": Task(title="three")})
        # a refused script writes nothing, so there is nothing to wait for: its own error, not NotReplicated
        with pytest.raises(rxstate.ConflictError):
            tasks.update("t1", title="x", expected_version=7)
        # a plain store does not wait; inside durable() it does
        assert plain_tasks.put("p1", Task(title="p")).version == 1
        with plain.writer.durable(), pytest.raises(rxstate.NotReplicated):
            plain_tasks.put("p2", Task(title="p"))
        with durable.writer.durable(False):
            assert tasks.put("t4", Task(title="four")).version == 1
    finally:
        primary_replicas.restart_replica(0)
    # confirmed again once the replica is back (a longer timeout: it resyncs first, on a loaded machine too)
    patient = rxstate.connect(
        primary_replicas.primary.client(), namespace="dur2", durability="replicated", durability_timeout=10
    )
    assert patient.collection("tasks", Task).put("t5", Task(title="five")).version == 1
    patient.close()
    durable.close()
    plain.close()
