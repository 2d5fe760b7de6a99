"""``store.changes(values=True)``: each change carries the entity's whole value after it (fakeredis)."""

from __future__ import annotations

import pytest

import rxstate
from rxstate.errors import ValidationError
from rxstate.feed.change import Change
from tests.helpers import wait_for
from tests.models import Agent, Task


@pytest.fixture
def store(rx_fake_store):
    return rx_fake_store


@pytest.fixture
def agents(store):
    return store.collection("agents", Agent, indexes=["status"])


def test_every_op_carries_the_value_after_it(store, agents):
    got: list[Change] = []
    plain: list[Change] = []
    store.changes(values=True).subscribe(got.append)
    store.changes().subscribe(plain.append)
    expected = []
    agents.put("a1", Agent(name="x", skills=["py"], api_key="sk-1"))
    expected.append(agents.get("a1", consistent=True))
    agents.update("a1", status="busy")
    expected.append(agents.get("a1", consistent=True))
    agents.incr("a1", "load", 3)
    expected.append(agents.get("a1", consistent=True))
    agents.update("a1", lambda a: a.model_copy(update={"skills": [*a.skills, "go"], "load": a.load + 1}))
    expected.append(agents.get("a1", consistent=True))
    agents.put("a1", Agent(name="y"))
    expected.append(agents.get("a1", consistent=True))
    agents.delete("a1")
    expected.append(None)
    assert wait_for(lambda: len(got) == 6 and len(plain) == 6)
    assert [c.op for c in got] == ["create", "update", "incr", "update", "replace", "delete"]
    assert [c.value for c in got] == expected
    assert all(isinstance(c.value, Agent) for c in got[:5])
    assert got[0].value.api_key.get_secret_value() == "sk-1"
    assert [c.value for c in plain] == [None] * 6  # without values=, changes carry only their fields
    assert [dict(c.fields) for c in got] == [dict(c.fields) for c in plain]


def test_a_partial_change_of_an_unseen_entity_reads_it(store, agents):
    agents.put("a1", Agent(name="x"))
    agents.update("a1", load=1)
    agents.update("a1", load=2)  # the replay starts after this record's predecessor
    offsets = [o.decode() for o, _r in store.client.xrange(store.keyspace.changes(store.keyspace.partition_of("a1")))]
    agents.update("a1", load=3)
    got: list[Change] = []
    store.changes(since=offsets[1], values=True).subscribe(got.append)
    assert wait_for(lambda: len(got) == 2)
    # version 3's value is gone (the entity is at version 4): None, never a wrong value
    assert [(c.version, c.value) for c in got] == [(3, None), (4, agents.get("a1", consistent=True))]
    agents.update("a1", status="busy")
    assert wait_for(lambda: len(got) == 3)
    assert got[2].value == agents.get("a1", consistent=True) and got[2].value.load == 3


def test_values_are_whole_when_fields_are_trimmed(store, agents):
    got: list[Change] = []
    store.changes(fields=["load"], values=True).subscribe(got.append)
    agents.put("a1", Agent(name="x"))
    agents.update("a1", status="busy")  # does not touch load: filtered out
    agents.incr("a1", "load", 2)
    assert wait_for(lambda: len(got) == 2)
    assert [dict(c.fields) for c in got] == [{"load": 0}, {"load": 2}]
    assert got[1].value == Agent(name="x", status="busy", load=2)


def test_batches_of_a_transaction_carry_values(store, agents):
    tasks = store.collection("tasks", Task)
    agents.put("a1", Agent(name="x"))
    got: list[tuple[Change, ...]] = []
    store.changes(batched=True, values=True).subscribe(got.append)
    with store.transaction() as tx:
        tx.update(agents, "a1", load=4)
        tx.put(tasks, "t1", Task(title="t", owner="a1"))
        tx.incr(agents, "a1", "load", 1)
    assert wait_for(lambda: got)
    values = {(c.id, c.version): c.value for c in got[0]}
    assert values[("t1", 1)] == Task(title="t", owner="a1")
    assert values[("a1", max(v for i, v in values if i == "a1"))] == Agent(name="x", load=5)
    assert all(v is not None for v in values.values())


def test_a_collection_not_open_here_gives_dicts_with_secrets_wrapped(rx_backend):
    writer = rx_backend.store()
    reader = rx_backend.store()
    agents = writer.collection("agents", Agent)
    got: list[Change] = []
    reader.changes(values=True).subscribe(got.append)
    agents.put("a1", Agent(name="x", api_key="sk-9"))
    agents.update("a1", load=5)
    assert wait_for(lambda: len(got) == 2)
    first, second = (c.value for c in got)
    assert isinstance(first, dict) and first["name"] == "x" and second["load"] == 5 and second["name"] == "x"
    assert isinstance(second["api_key"], rxstate.Secret) and second["api_key"].get_secret_value() == "sk-9"
    assert "sk-9" not in repr(got)


def test_values_must_be_a_bool(store):
    with pytest.raises(ValidationError) as info:
        store.changes(values="yes")
    assert info.value.field == "values"


def test_watch_applies_a_secret_field_set_to_none(store, agents):
    agents.put("a1", Agent(name="x", api_key="sk-1"))
    got: list[Change] = []
    agents.watch("a1").subscribe(got.append)
    agents.put("a1", Agent(name="y"))  # api_key None: the feed hands it over as Secret(None)
    agents.update("a1", api_key="sk-2")
    assert wait_for(lambda: len(got) == 3)
    assert [c.value for c in got[1:]] == [Agent(name="y"), Agent(name="y", api_key="sk-2")]


def test_a_collection_object_names_its_collection(store, agents):
    """A collection is iterable (its ids): passed as ``collection=``, it still means its name."""
    tasks = store.collection("tasks", Task)
    got: list[Change] = []
    store.changes(collection=agents).subscribe(got.append)
    tasks.put("t1", Task(title="t"))
    agents.put("a1", Agent(name="x"))
    assert wait_for(lambda: got)
    tasks.put("t2", Task(title="u"))
    agents.put("a2", Agent(name="y"))  # a barrier: t2 came before it
    assert wait_for(lambda: len(got) == 2)
    assert [c.id for c in got] == ["a1", "a2"]


def test_a_gap_inside_one_batch_is_read_from_the_server(store, agents):
    """A change filtered out before the feed leaves a gap; the tracker reads the entity, even when the
    change before the gap is in the same batch."""
    from rxstate.feed.values import ValueTracker

    got: list[Change] = []
    store.changes().subscribe(got.append)
    agents.put("a1", Agent(name="x"))
    agents.update("a1", status="busy")
    agents.incr("a1", "load", 2)
    assert wait_for(lambda: len(got) == 3)
    create, _update, incr = got
    tracker = ValueTracker(store, store.change_feed.decoder)
    filled = tracker((create, incr))  # the update never reached this feed
    assert filled[1].value == Agent(name="x", status="busy", load=2)
