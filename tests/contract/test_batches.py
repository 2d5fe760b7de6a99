"""Batches: put_many/update_many (atomic per partition or per item) and store.batch()."""

from __future__ import annotations

import pytest

from rxstate import Versioned
from rxstate.errors import AlreadyExists, ConflictError, NotFound, RxStateError, ValidationError
from tests.models import Agent, Task


@pytest.fixture
def agents(rx_store):
    return rx_store.collection("agents", Agent, indexes=["status"])


def same_partition_ids(store, n, prefix="s"):
    """``n`` ids in one partition."""
    target = store.keyspace.partition_of(f"{prefix}0")
    out, i = [], 0
    while len(out) < n:
        if store.keyspace.partition_of(f"{prefix}{i}") == target:
            out.append(f"{prefix}{i}")
        i += 1
    return out


def test_update_many_reports_each_item(agents):
    agents.put_many({"a1": Agent(name="a"), "a2": Agent(name="b")})
    results = agents.update_many({"a1": {"status": "busy"}, "ghost": {"load": 1}, "a2": {"load": 3}, "a3": {}})
    assert isinstance(results[0], Versioned) and results[0].value.status == "busy" and results[0].version == 2
    assert isinstance(results[1], NotFound)
    assert results[2].value == Agent(name="b", load=3)
    assert isinstance(results[3], ValidationError)
    assert [a.name for a in agents.where(status="busy")] == ["a"]


def other_partition_id(store, than):
    return next(
        f"o{i}" for i in range(1000) if store.keyspace.partition_of(f"o{i}") != store.keyspace.partition_of(than)
    )


def test_atomic_put_many_and_update_many_per_partition(rx_store, agents):
    group = same_partition_ids(rx_store, 4)
    other = other_partition_id(rx_store, group[0])
    agents.put(group[1], Agent(name="old"))
    results = agents.put_many(
        [(group[0], Agent(name="x")), (group[1], Agent(name="y")), (other, Agent(name="z"))], atomic=True
    )
    assert all(isinstance(r, Versioned) for r in results) and results[1].version == 2
    # group[3] does not exist: its partition's items all fail; the other partition is written
    results = agents.update_many(
        [(group[0], {"load": 7}), (group[3], {"status": "busy"}), (other, {"load": 7})], atomic=True
    )
    assert isinstance(results[0], NotFound) and results[1] is results[0]
    assert isinstance(results[2], Versioned) and results[2].value.load == 7
    assert agents.get(group[0]).load == 0 and not agents.exists(group[3])
    with pytest.raises(ValidationError):  # invalid input raises before anything is sent
        agents.put_many([(group[0], Agent(name="q")), ("bad\nid", Agent(name="q"))], atomic=True)
    with pytest.raises(ValidationError):  # one entity twice in a partition's call
        agents.update_many([(group[0], {"load": 5}), (group[0], {"load": 6})], atomic=True)
    assert agents.get(group[0]) == Agent(name="x")


def test_atomic_batch_refused_item_fails_its_partition(rx_store, agents):
    group = same_partition_ids(rx_store, 2)
    other = other_partition_id(rx_store, group[0])
    agents.put(group[0], Agent(name="g0"))
    agents.put(other, Agent(name="o"))
    with rx_store.batch(atomic=True) as batch:
        ok = batch.update(agents, group[0], load=5)
        refused = batch.update(agents, group[1], load=5)  # does not exist
        elsewhere = batch.incr(agents, other, "load", 2)
    assert isinstance(refused.error, NotFound) and ok.error is refused.error
    assert elsewhere.result() == 2
    assert agents.get(group[0]).load == 0  # rolled back with its partition


def test_store_batch_groups_writes_with_results(rx_store, agents):
    tasks = rx_store.collection("tasks", Task)
    agents.put("a1", Agent(name="a"))
    with rx_store.batch() as batch:
        put = batch.put(tasks, "t1", Task(title="t"))
        update = batch.update(agents, "a1", status="busy", expected_version=1)
        incr = batch.incr(agents, "a1", "load", 4)
        created = batch.create(agents, "a1", Agent(name="dup"))
        stale = batch.update(agents, "a1", status="idle", expected_version=1)
        deleted = batch.delete(tasks, "nope")
        assert not put.done and len(batch) == 6
        with pytest.raises(RxStateError, match="not run"):
            put.result()
    assert put.result().version == 1 and update.result().version == 2 and incr.result() == 4
    assert isinstance(created.error, AlreadyExists) and isinstance(stale.error, ConflictError)
    with pytest.raises(ConflictError):
        stale.result()
    assert deleted.result() is False
    assert agents.get("a1") == Agent(name="a", status="busy", load=4)
    with pytest.raises(RxStateError, match="already been sent"):
        batch.put(tasks, "t2", Task(title="late"))


def test_batch_bad_input_raises_at_once_and_exception_discards(rx_store, agents):
    with pytest.raises(ValidationError), rx_store.batch() as batch:
        batch.put(agents, "a1", Agent(name="a"))
        batch.update(agents, "a1", load="lots")
    assert not agents.exists("a1")
    with pytest.raises(RuntimeError), rx_store.batch() as batch:
        batch.put(agents, "a1", Agent(name="a"))
        raise RuntimeError("changed my mind")
    assert not agents.exists("a1") and batch.flush() == []


def test_independent_writes_of_one_partition_share_a_call_yet_stay_independent(rx_store, agents):
    """A non-atomic batch sends one call per partition (chunks of EACH_CHUNK ops): each op still runs as
    if alone — a refused one leaves the others, and a later op on the same entity sees the earlier one."""
    from rxstate.store.writer import EACH_CHUNK

    ids = same_partition_ids(rx_store, EACH_CHUNK + 5)
    agents.put(ids[3], Agent(name="exists"))
    with rx_store.batch() as batch:
        created = [batch.create(agents, i, Agent(name=i)) for i in ids]
        bumped = batch.incr(agents, ids[0], "load", 2)
        again = batch.incr(agents, ids[0], "load", 3)
        stale = batch.update(agents, ids[1], status="busy", expected_version=7)
    assert isinstance(created[3].error, AlreadyExists)
    assert all(c.result().version == 1 for n, c in enumerate(created) if n != 3)
    assert (bumped.result(), again.result()) == (2, 5)  # the second saw the first
    assert agents.get_versioned(ids[0]).version == 3 and agents.get(ids[0], consistent=True).load == 5
    assert isinstance(stale.error, ConflictError) and agents.get_versioned(ids[1]).version == 1
    assert agents.get(ids[3], consistent=True).name == "exists"
    assert agents.count() == len(ids)
