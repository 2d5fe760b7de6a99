"""Online migrations: upcasting stored entities and building an index while writers keep writing."""

from __future__ import annotations

import random
import threading

import pytest

import rxstate
from rxstate.admin.migrate import build_index, downcaster, migrate, rollback
from tests.helpers import dump_all, wait_for
from tests.models import Agent


class AgentV1(rxstate.Model):
    """How ``Agent`` was stored in schema v1 (``title`` became ``name``)."""

    __rxstate_name__ = "Agent"
    title: str
    load: int = 0
    team: str = "core"


def _old_data(backend, n: int = 120) -> None:
    old = backend.store().collection("agents", AgentV1)
    for i in range(n):
        old.put(f"a{i}", AgentV1(title=f"agent {i}", load=i % 50, team="ab"[i % 2]), ttl=3_600 if i % 10 == 0 else None)


@pytest.fixture
def old_backend(rx_redis_backend):
    _old_data(rx_redis_backend)
    return rx_redis_backend


def test_a_dry_run_reports_what_would_change_and_writes_nothing(old_backend):
    agents = old_backend.store().collection("agents", Agent)
    client = old_backend.client()
    before = dump_all(client)
    report = migrate(agents, dry_run=True)
    assert report.dry_run and report.scanned == 120 and report.migrated == 120
    assert report.by_version == {1: 120} and not report.failed
    assert dump_all(client) == before


def test_a_migration_resumes_from_its_cursor_and_refuses_a_foreign_one(old_backend):
    agents = old_backend.store().collection("agents", Agent)
    first = migrate(agents, limit=30, batch=10)
    assert first.cursor is not None and 30 <= first.migrated < 120
    rest = migrate(agents, cursor=first.cursor, batch=10)
    assert rest.cursor is None and first.migrated + rest.migrated == 120
    assert migrate(agents).migrated == 0  # nothing left
    client = old_backend.client()
    before = dump_all(client)
    with pytest.raises(rxstate.MigrationError) as caught:
        migrate(agents, cursor="99:0")
    assert caught.value.reason == "cursor" and caught.value.collection == "agents"
    assert dump_all(client) == before


def test_migration_under_load_upcasts_every_entity_and_keeps_concurrent_writes(old_backend):
    store = old_backend.store()
    agents = store.collection("agents", Agent)
    last_put: dict[str, str] = {}
    stop = threading.Event()
    writes = [0]

    def writer() -> None:
        rng = random.Random(7)
        while not stop.is_set():
            entity = f"a{rng.randrange(120)}"
            name = f"rewritten {rng.random()}"
            agents.put(entity, Agent(name=name))
            last_put[entity] = name
            writes[0] += 1

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: writes[0] >= 20)
        report = migrate(agents, batch=16)
        at_end = writes[0]
        assert wait_for(lambda: writes[0] >= at_end + 20)  # writers went on
    finally:
        stop.set()
        thread.join()
    assert report.cursor is None and not report.failed
    client = old_backend.client()
    fresh = old_backend.store().collection("agents", Agent)
    for i in range(120):
        stored = client.hgetall(agents.key(f"a{i}"))
        assert stored[b"_sv"] == b"2" and b"title" not in stored
        want = last_put.get(f"a{i}", f"agent {i}")
        assert fresh.get(f"a{i}").name == want
    kept = [i for i in range(0, 120, 10) if f"a{i}" not in last_put]
    assert all(client.pttl(agents.key(f"a{i}")) > 3_000_000 for i in kept)  # TTLs survive a migration


def _index_of(client, agents, field: str) -> set[bytes]:
    ks = agents._store.keyspace
    return {m for p in range(ks.partitions) for m in client.zrange(ks.index("agents", field, p), 0, -1)}


def test_an_index_built_under_load_is_complete_and_exact(old_backend):
    store = old_backend.store()
    migrate(store.collection("agents", Agent))
    store.close()
    indexed = old_backend.store().collection("agents", Agent, indexes=["team"])
    client = old_backend.client()
    ks = indexed._store.keyspace
    client.zadd(ks.index("agents", "team", 0), {b'"zz"\x00ghost': 0})  # a stale member: a rebuild drops it
    stop = threading.Event()
    writes = [0]

    def writer() -> None:
        rng = random.Random(3)
        while not stop.is_set():
            entity = f"a{rng.randrange(150)}"
            if rng.random() < 0.2:
                indexed.delete(entity)
            else:
                indexed.put(entity, Agent(name=entity, team=rng.choice(["x", "y", "z"])))
            writes[0] += 1

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: writes[0] >= 20)
        report = build_index(indexed, "team", batch=7)
        at_end = writes[0]
        assert wait_for(lambda: writes[0] >= at_end + 20)
    finally:
        stop.set()
        thread.join()
    assert report.added > 0 and report.removed >= 1
    expected = set()
    for p in range(ks.partitions):
        for entity in client.smembers(ks.ids("agents", p)):
            team = client.hget(ks.entity("agents", entity.decode(), p), "team")
            expected.add(team + b"\x00" + entity)
    assert _index_of(client, indexed, "team") == expected
    assert {a.team for a in indexed.where(team="x")} <= {"x"}


def test_building_an_index_the_collection_does_not_declare_is_refused(rx_fake_store):
    agents = rx_fake_store.collection("agents", Agent)
    with pytest.raises(rxstate.MigrationError) as caught:
        build_index(agents, "team")
    assert caught.value.reason == "index" and "team" in str(caught.value)


class AgentV2Invertible(rxstate.Model):
    """``AgentV1``'s successor whose upcaster has an inverse."""

    __rxstate_name__ = "Agent"
    __version__ = 2
    name: str
    load: int = 0
    team: str = "core"

    @rxstate.upcaster(1)
    def _from_v1(data: dict) -> dict:
        return {"name": data.pop("title"), **data}

    @downcaster(2)
    def _to_v1(data: dict) -> dict:
        return {"title": data.pop("name"), **data}


def test_a_rollback_through_the_inverse_lets_old_code_read_again(old_backend):
    current = old_backend.store().collection("agents", AgentV2Invertible)
    assert migrate(current).migrated == 120
    current.put("a0", AgentV2Invertible(name="renamed", load=7))
    report = rollback(current)
    assert report.migrated == 120 and report.by_version == {2: 120} and not report.failed
    client = old_backend.client()
    stored = client.hgetall(current.key("a0"))
    assert stored[b"_sv"] == b"1" and b"name" not in stored
    old_code = old_backend.store().collection("agents", AgentV1)
    assert old_code.get("a0") == AgentV1(title="renamed", load=7)
    assert old_code.get("a5").title == "agent 5"
    assert client.pttl(current.key("a10")) > 3_000_000  # an expiring entity keeps its deadline
    assert current.get("a0").name == "renamed"  # the newer code still reads it, through its upcaster


def test_a_rollback_without_an_inverse_is_refused(old_backend):
    agents = old_backend.store().collection("agents", Agent)
    client = old_backend.client()
    before = dump_all(client)
    with pytest.raises(rxstate.MigrationError) as caught:
        rollback(agents)
    assert caught.value.reason == "no-inverse" and caught.value.version == 2
    with pytest.raises(rxstate.MigrationError) as too_far:
        rollback(agents, to_version=2)
    assert too_far.value.reason == "version"
    assert dump_all(client) == before
