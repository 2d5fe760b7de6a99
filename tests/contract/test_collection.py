"""The collection contract, run against fakeredis, a real server and a cluster."""

from __future__ import annotations

import threading
import time

import pytest

import rxstate
from rxstate.errors import (
    AlreadyExists,
    ConflictError,
    IntegrityError,
    NotFound,
    SchemaError,
    ValidationError,
)
from tests.helpers import wait_for
from tests.models import Agent, Task


@pytest.fixture
def agents(rx_store):
    return rx_store.collection("agents", Agent, indexes=["status", "team"])


def changes_of(store, entity_id):
    """Change records of one entity, oldest first, decoded to dicts of str."""
    ks = store.keyspace
    records = store.client.xrange(ks.changes(ks.partition_of(entity_id)))
    out = []
    for offset, fields in records:
        rec = {k.decode(): v.decode() for k, v in fields.items()}
        if rec["i"] == entity_id:
            rec["offset"] = offset.decode()
            out.append(rec)
    return out


def test_put_get_roundtrip_and_versions(agents):
    v1 = agents.put("a1", Agent(name="planner", skills=["plan"], api_key="sk-1"))
    assert v1.version == 1 and v1.schema_version == 2 and v1.offset
    got = agents.get_versioned("a1")
    assert got.value == Agent(name="planner", skills=["plan"], api_key="sk-1")
    assert got.value.api_key.get_secret_value() == "sk-1"
    assert got.version == 1 and got.offset == v1.offset and got.actor == v1.actor
    assert agents.put("a1", Agent(name="planner2")).version == 2
    assert agents.get("a1").skills == []  # a put replaces the whole entity


def test_get_missing(agents):
    with pytest.raises(NotFound) as info:
        agents.get("nope")
    assert "nope" in str(info.value) and info.value.key.endswith(":agents:nope")
    assert isinstance(info.value, KeyError)
    assert agents.get("nope", None) is None


def test_create_fails_when_id_exists(agents):
    agents.create("a1", Agent(name="x"))
    with pytest.raises(AlreadyExists):
        agents.create("a1", Agent(name="y"))
    assert agents.get("a1").name == "x"


def test_update_partial_with_cas(agents):
    agents.put("a1", Agent(name="p"))
    v2 = agents.update("a1", status="busy", expected_version=1)
    assert v2.version == 2 and v2.value.status == "busy" and v2.value.name == "p"
    with pytest.raises(ConflictError) as info:
        agents.update("a1", status="idle", expected_version=1)
    assert (info.value.expected, info.value.actual) == (1, 2)
    assert "a1" in info.value.key
    assert agents.get("a1").status == "busy"


def test_update_missing_raises_not_found(agents):
    with pytest.raises(NotFound):
        agents.update("ghost", status="busy")
    assert not agents.exists("ghost")


def test_update_with_function(agents):
    agents.put("a1", Agent(name="p", load=1))
    result = agents.update("a1", lambda a: a.model_copy(update={"load": a.load + 1}))
    assert result.value.load == 2 and result.version == 2
    unchanged = agents.update("a1", lambda a: a)
    assert unchanged.version == 2  # nothing changed, nothing written


def test_update_function_result_is_validated(agents):
    agents.put("a1", Agent(name="p"))
    with pytest.raises(ValidationError):
        agents.update("a1", lambda a: a.model_copy(update={"load": -5}))
    assert agents.get_versioned("a1").version == 1


def test_incr_is_atomic_and_bounded(agents):
    agents.put("a1", Agent(name="p", load=5))
    assert agents.incr("a1", "load", 3) == 8
    assert agents.incr("a1", "load", -8) == 0
    with pytest.raises(IntegrityError) as info:
        agents.incr("a1", "load", -1)
    assert info.value.constraint == "bounds:load"
    assert agents.get_versioned("a1").value.load == 0
    assert agents.get_versioned("a1").version == 3


@pytest.mark.parametrize(
    ("field", "amount"), [("name", 1), ("load", 1.5), ("load", "2"), ("load", True), ("nofield", 1)]
)
def test_incr_rejects_bad_input(agents, field, amount):
    agents.put("a1", Agent(name="p"))
    with pytest.raises(ValidationError):
        agents.incr("a1", field, amount)
    assert agents.get_versioned("a1").version == 1


def test_delete(agents):
    agents.put("a1", Agent(name="p", status="busy"))
    with pytest.raises(ConflictError):
        agents.delete("a1", expected_version=7)
    assert agents.delete("a1", expected_version=1) is True
    assert not agents.exists("a1")
    assert agents.delete("a1") is False
    assert agents.where(status="busy") == []
    assert agents.ids() == []


def test_recreate_after_delete_has_newer_offset(agents):
    first = agents.put("a1", Agent(name="p"))
    agents.delete("a1")
    again = agents.put("a1", Agent(name="q"))
    assert again.version == 3  # versions of an id never restart: put v1, delete v2, put again v3
    assert tuple(map(int, again.offset.split("-"))) > tuple(map(int, first.offset.split("-")))


def test_compare_and_set_from_a_deleted_incarnation_is_refused(rx_store, agents):
    """ABA: a version read before a delete never matches an entity created again under the same id."""
    seen = agents.get_versioned("a1") if "a1" in agents.ids() else agents.put("a1", Agent(name="old"))
    agents.delete("a1")
    agents.create("a1", Agent(name="new"))
    with pytest.raises(ConflictError):
        agents.update("a1", status="busy", expected_version=seen.version)
    with pytest.raises(ConflictError):
        agents.put("a1", Agent(name="stale"), expected_version=seen.version)
    with pytest.raises(ConflictError), rx_store.transaction() as tx:
        tx.update(agents, "a1", status="busy", expected_version=seen.version)
    assert agents.get("a1", consistent=True).name == "new"
    assert agents.get_versioned("a1").version == seen.version + 2


def test_compare_and_set_from_an_expired_incarnation_is_refused(agents):
    """ABA across expiry: Redis drops an expired hash by itself, yet the versions of its id go on."""
    agents.put("eph", Agent(name="old"), ttl=0.05)
    seen = agents.update("eph", status="busy")  # version 2, still expiring
    assert wait_for(lambda: not agents.exists("eph"), timeout=5)
    agents.create("eph", Agent(name="new"))
    assert agents.get_versioned("eph").version == seen.version + 1
    with pytest.raises(ConflictError):
        agents.update("eph", status="failed", expected_version=seen.version)
    agents.put("eph", Agent(name="kept"))  # no TTL any more: the kept version is forgotten, the count goes on
    assert agents.get_versioned("eph").version == seen.version + 2
    assert rx_store_versions(agents, "eph") is None


def rx_store_versions(agents, entity_id):
    """The kept version of ``entity_id`` in its partition's versions hash (None: none kept)."""
    ks = agents._ks
    raw = agents._store.client.hget(ks.versions(agents.name, agents._partition(entity_id, None)), entity_id)
    return None if raw is None else int(raw)


def test_where_count_all_ids(agents):
    agents.put("a1", Agent(name="x", status="busy", team="red"))
    agents.put("a2", Agent(name="y", status="busy", team="blue"))
    agents.put("a3", Agent(name="z"))
    assert [a.name for a in agents.where(status="busy")] == ["x", "y"]
    assert [a.name for a in agents.where(status="busy", team="blue")] == ["y"]
    assert agents.where(status="failed") == []
    agents.update("a1", status="idle")
    assert [a.name for a in agents.where(status="busy")] == ["y"]
    assert sorted(a.name for a in agents.where(status="idle")) == ["x", "z"]
    assert agents.count() == 3
    assert agents.ids() == ["a1", "a2", "a3"]
    assert [a.name for a in agents.all()] == ["x", "y", "z"]


def test_where_needs_an_index(agents):
    with pytest.raises(ValidationError):
        agents.where(name="x")


def test_get_many_and_put_many(agents):
    results = agents.put_many({"a1": Agent(name="x"), "bad\nid": Agent(name="y"), "a3": Agent(name="z")})
    assert isinstance(results[0], rxstate.Versioned) and results[0].version == 1
    assert isinstance(results[1], ValidationError)
    assert isinstance(results[2], rxstate.Versioned)
    got = agents.get_many(["a1", "a3", "missing"])
    assert sorted(got) == ["a1", "a3"] and got["a3"].name == "z"


def test_put_many_reports_conflicts_per_item(agents, rx_store):
    tasks = rx_store.collection("tasks", Task)
    tasks.create("t1", Task(title="old"))
    results = tasks.put_many([("t2", Task(title="a")), ("t1", Agent(name="wrong type"))])
    assert isinstance(results[0], rxstate.Versioned)
    assert isinstance(results[1], ValidationError)
    assert tasks.get("t1").title == "old"


@pytest.mark.parametrize(
    "kwargs",
    [{"status": "sleeping"}, {"load": "lots"}, {"load": 1000}, {"unknown": 1}, {"skills": "notalist"}],
)
def test_bad_partial_update_writes_nothing(agents, rx_store, kwargs):
    agents.put("a1", Agent(name="p"))
    before = changes_of(rx_store, "a1")
    with pytest.raises(ValidationError):
        agents.update("a1", **kwargs)
    assert agents.get_versioned("a1").version == 1
    assert changes_of(rx_store, "a1") == before


@pytest.mark.parametrize("bad_id", ["", "newline at the end\n", "tab\t", "x" * 513, 42, None, "nul\x00"])
def test_invalid_ids_rejected(agents, bad_id):
    with pytest.raises(ValidationError):
        agents.put(bad_id, Agent(name="p"))


def test_wrong_model_instance_rejected(agents):
    with pytest.raises(ValidationError):
        agents.put("a1", Task(title="x"))


def test_value_over_size_limit_rejected(rx_backend):
    store = rx_backend.store(max_entity_bytes=1000)
    agents = store.collection("agents", Agent)
    with pytest.raises(ValidationError):
        agents.put("a1", Agent(name="p", notes="n" * 2000))
    assert not agents.exists("a1")


def test_collection_with_other_model_refused(rx_backend):
    rx_backend.store().collection("agents", Agent)
    with pytest.raises(SchemaError):
        rx_backend.store().collection("agents", Task)


def test_partition_count_is_fixed(rx_backend):
    rx_backend.store(partitions=4)
    with pytest.raises(SchemaError):
        rx_backend.store(partitions=8)
    assert rx_backend.store().keyspace.partitions == 4


def test_large_values_are_compressed_and_round_trip(rx_store):
    agents = rx_store.collection("agents", Agent)
    notes = "agent state " * 5000
    agents.put("a1", Agent(name="p", notes=notes))
    raw = rx_store.client.hget(agents.key("a1"), "notes")
    assert raw.startswith(b"\x00z") and len(raw) < len(notes) / 4
    assert agents.get("a1").notes == notes
    assert agents.update("a1", notes=notes + "!").value.notes == notes + "!"


def test_each_write_appends_exactly_one_change(agents, rx_store):
    agents.put("a1", Agent(name="p"))
    agents.update("a1", status="busy")
    agents.incr("a1", "load", 2)
    agents.delete("a1")
    records = changes_of(rx_store, "a1")
    assert [(r["o"], r["v"]) for r in records] == [("create", "1"), ("update", "2"), ("incr", "3"), ("delete", "4")]
    assert records[1][".status"] == '"busy"'
    assert records[2][".load"] == "2"
    assert all(r["c"] == "agents" and r["a"] == rx_store.actor for r in records)


def test_stored_layout(agents, rx_store):
    v = agents.put("a1", Agent(name="p", load=3))
    raw = rx_store.client.hgetall(agents.key("a1"))
    assert raw[b"_v"] == b"1" and raw[b"_sv"] == b"2" and raw[b"load"] == b"3"
    assert raw[b"_by"] == rx_store.actor.encode() and raw[b"_o"].decode() == v.offset
    assert agents.key("a1").startswith(f"rx:{{{rx_store.namespace}:")


def test_upcasting_old_schema(agents, rx_store):
    rx_store.client.hset(agents.key("old"), mapping={"_v": 3, "_sv": 1, "title": '"veteran"', "load": 7})
    got = agents.get_versioned("old")
    assert got.value.name == "veteran" and got.value.load == 7 and got.schema_version == 1


def test_newer_schema_raises(agents, rx_store):
    rx_store.client.hset(agents.key("future"), mapping={"_v": 1, "_sv": 9, "name": '"x"'})
    with pytest.raises(SchemaError):
        agents.get("future")


def test_ttl_expiry_cleans_indexes_and_records_change(rx_backend):
    store = rx_backend.store(reap_interval=None)
    agents = store.collection("agents", Agent, indexes=["status"])
    agents.put("eph", Agent(name="beat", status="busy"), ttl=0.2)
    agents.put("keep", Agent(name="stay", status="busy"))
    assert agents.count() == 2
    deadline = time.monotonic() + 5
    while agents.exists("eph") and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.05)
    assert agents.reap() == 1
    assert agents.count() == 1
    assert [a.name for a in agents.where(status="busy")] == ["stay"]
    assert changes_of(store, "eph")[-1]["o"] == "expire"
    assert agents.reap() == 0


def test_recreating_an_expired_entity_before_the_reaper_records_its_expiry_first(rx_backend):
    store = rx_backend.store(reap_interval=None)
    agents = store.collection("agents", Agent, indexes=["status"])
    agents.put("eph", Agent(name="beat", status="busy"), ttl=0.1)
    assert wait_for(lambda: not store.client.exists(agents.key("eph")), timeout=5)  # Redis expired it
    agents.put("eph", Agent(name="again", status="idle"))  # no reaper ran in between
    assert [c["o"] for c in changes_of(store, "eph")][-2:] == ["expire", "create"]
    assert agents.where(status="busy").ids() == [] and agents.where(status="idle").ids() == ["eph"]
    assert agents.reap() == 0  # nothing left to reap: the live entity stays
    assert agents.ids() == ["eph"] and agents.get("eph", consistent=True).name == "again"


def test_update_keeps_ttl_unless_given(rx_backend):
    store = rx_backend.store(reap_interval=None)
    agents = store.collection("agents", Agent)
    agents.put("eph", Agent(name="beat"), ttl=30)
    agents.update("eph", status="busy")
    assert 0 < store.client.pttl(agents.key("eph")) <= 30_000
    agents.put("eph", Agent(name="beat"))
    assert store.client.pttl(agents.key("eph")) == -1


def test_partition_key_routes_related_entities(rx_store):
    agents = rx_store.collection("agents", Agent, partition_key="team")
    agents.put("a1", Agent(name="x", team="red"))
    agents.put("a2", Agent(name="y", team="red"))
    assert agents.key("a1", partition="red").split("}")[0] == agents.key("a2", partition="red").split("}")[0]
    assert agents.get("a1", partition="red").name == "x"
    with pytest.raises(ValidationError):
        agents.get("a1")
    with pytest.raises(ValidationError):
        agents.update("a1", team="blue", partition="red")
    assert agents.update("a1", status="busy", partition="red").value.status == "busy"


def test_cas_race_exactly_one_winner(rx_backend):
    store = rx_backend.store()
    agents = store.collection("agents", Agent)
    agents.put("a1", Agent(name="p"))
    n = 8
    barrier = threading.Barrier(n)
    wins, conflicts = [], []

    def contender(i: int) -> None:
        barrier.wait()
        try:
            agents.update("a1", notes=f"writer {i}", expected_version=1)
            wins.append(i)
        except ConflictError:
            conflicts.append(i)

    threads = [threading.Thread(target=contender, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(conflicts) == n - 1
    final = agents.get_versioned("a1")
    assert final.version == 2 and final.value.notes == f"writer {wins[0]}"


def test_concurrent_read_modify_write_loses_no_increment(rx_backend):
    store = rx_backend.store()
    agents = store.collection("agents", Agent)
    agents.put("a1", Agent(name="p"))

    def bump() -> None:
        for _ in range(10):
            agents.update("a1", lambda a: a.model_copy(update={"load": a.load + 1}), retries=100)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert agents.get("a1").load == 40
