"""Integrity constraints checked inside the write script, on every backend.

On a cluster, unique fields and references must be the collection's partition key (one script reaches
one slot); elsewhere any field works. Each test opens its collections accordingly.
"""

from __future__ import annotations

import time

import pytest

import rxstate
from rxstate.errors import ClusterError, IntegrityError, SchemaError, ValidationError
from rxstate.testing import Backend


class Team(rxstate.Model):
    name: str = "team"


class Member(rxstate.Model):
    email: str | None = None
    team_id: str | None = None
    load: int = 0
    max_load: int = 5
    status: str = "idle"
    score: float = 0.0
    token: rxstate.Secret[str] | None = None


def stream_lengths(store):
    ks = store.keyspace
    return sum(store.client.xlen(ks.changes(p)) for p in range(ks.partitions))


def test_unique(rx_backend):
    store = rx_backend.store()
    cluster = rx_backend.kind == "cluster"
    members = store.collection(
        "members", Member, constraints=[rxstate.unique("email")], partition_key="email" if cluster else None
    )
    pk = (lambda e: {"partition": e}) if cluster else (lambda e: {})
    members.put("m1", Member(email="a@x"))
    before = stream_lengths(store)
    with pytest.raises(IntegrityError) as info:
        members.put("m2", Member(email="a@x"))
    assert info.value.constraint == "unique:email" and "already used by m1" in str(info.value)
    assert not members.exists("m2", **pk("a@x")) and stream_lengths(store) == before
    members.put("m1", Member(email="a@x", load=1))  # the holder itself may write it again
    members.put("m2", Member(email="b@x"))
    members.put("n1", Member())  # nulls never collide
    members.put("n2", Member())
    assert members.delete("m1", **pk("a@x"))
    members.put("m3", Member(email="a@x"))  # freed by the delete
    # An expired holder frees the value at once, before the reaper has run.
    members.put("t1", Member(email="tmp@x"), ttl=0.05)
    time.sleep(0.12)
    members.put("t2", Member(email="tmp@x"))
    if not cluster:  # the unique field can change (it is no partition key here)
        with pytest.raises(IntegrityError):
            members.update("m2", email="a@x")
        members.update("m2", email="c@x")
        members.put("m4", Member(email="b@x"))


def test_unique_within_one_atomic_call(rx_backend):
    store = rx_backend.store()
    cluster = rx_backend.kind == "cluster"
    members = store.collection(
        "members", Member, constraints=[rxstate.unique("email")], partition_key="email" if cluster else None
    )
    ops = [members.put_op("m1", Member(email="same@x")), members.put_op("m2", Member(email="same@x"))]
    with pytest.raises(IntegrityError):
        store.writer.mutate(ops)
    assert members.ids() == []


def test_references_and_protected_deletes(rx_backend):
    store = rx_backend.store()
    cluster = rx_backend.kind == "cluster"
    teams = store.collection("teams", Team)
    members = store.collection(
        "members",
        Member,
        constraints=[rxstate.references("team_id", "teams")],
        partition_key="team_id" if cluster else None,
    )
    pk = (lambda t: {"partition": t}) if cluster else (lambda t: {})
    with pytest.raises(IntegrityError) as info:
        members.put("m1", Member(team_id="t1"))
    assert info.value.constraint == "references:team_id" and "names no existing entity" in str(info.value)
    assert not members.exists("m1", **pk("t1"))
    teams.put("t1", Team())
    members.put("m1", Member(team_id="t1"))
    members.put("m0", Member())  # no reference
    before = stream_lengths(store)
    with pytest.raises(IntegrityError) as info:
        teams.delete("t1")
    assert "still referenced by members:m1" in str(info.value) and teams.exists("t1")
    assert stream_lengths(store) == before
    members.delete("m1", **pk("t1"))
    assert teams.delete("t1")
    # An expired referrer does not protect its target any more.
    teams.put("t2", Team())
    members.put("m2", Member(team_id="t2"), ttl=0.05)
    time.sleep(0.12)
    assert teams.delete("t2")


def test_a_reference_declared_by_another_store_protects_deletes(rx_backend):
    cluster = rx_backend.kind == "cluster"
    first, second = rx_backend.store(), rx_backend.store()
    teams = first.collection("teams", Team)
    teams.put("t1", Team())
    teams.put("t0", Team())
    assert teams.delete("t0")  # `first` has now looked at the (empty) declarations of t0's partition
    teams.put("t0", Team())
    members = second.collection(
        "members",
        Member,
        constraints=[rxstate.references("team_id", "teams")],
        partition_key="team_id" if cluster else None,
    )
    members.put("m1", Member(team_id="t1"))
    members.put("m0", Member(team_id="t0"))
    with pytest.raises(IntegrityError):
        teams.delete("t1")
    with pytest.raises(IntegrityError):
        teams.delete("t0")
    assert teams.exists("t0") and teams.exists("t1")


def test_bounds_and_one_of(rx_backend):
    store = rx_backend.store()
    members = store.collection(
        "members",
        Member,
        constraints=[
            rxstate.bounds("load", 0, "max_load"),
            rxstate.bounds("score", -1.5, 1.5, name="score-range"),
            rxstate.one_of("status", {"idle", "busy"}),
        ],
    )
    members.put("m1", Member(load=5, max_load=5))
    with pytest.raises(IntegrityError) as info:
        members.incr("m1", "load", 1)
    assert info.value.constraint == "bounds:load" and "load=6 outside [0, 5]" in str(info.value)
    with pytest.raises(IntegrityError):
        members.update("m1", max_load=4)  # field-to-field: the other side moves
    with pytest.raises(IntegrityError):
        members.put("m2", Member(load=-1))
    with pytest.raises(IntegrityError) as info:
        members.update("m1", score=2.0)
    assert info.value.constraint == "score-range"
    with pytest.raises(IntegrityError) as info:
        members.update("m1", status="sleeping")
    assert info.value.constraint == "one_of:status"
    with pytest.raises(IntegrityError):
        members.update("m1", lambda m: m.model_copy(update={"status": "gone"}))
    got = members.get_versioned("m1")
    assert got.version == 1 and got.value == Member(load=5, max_load=5)
    assert members.incr("m1", "load", -5) == 0
    members.update("m1", max_load=10, status="busy", score=-1.5)
    assert members.incr("m1", "load", 10) == 10


def test_declaration_errors(rx_backend):
    store = rx_backend.store()
    bad = [
        [rxstate.unique("nope")],
        [rxstate.references("load", "teams")],  # not a str field
        [rxstate.bounds("status", 0, 1)],  # not numeric
        [rxstate.bounds("load", 0, "status")],
        [rxstate.one_of("token", {"x"})],  # secret
        [rxstate.bounds("load", 0), rxstate.bounds("load", 1)],  # same name twice
    ]
    for constraints in bad:
        with pytest.raises(SchemaError):
            store.collection("members", Member, constraints=constraints)
    with pytest.raises(ValidationError):
        rxstate.bounds("load", True)
    with pytest.raises(ValidationError):
        rxstate.one_of("status", [])
    with pytest.raises(ValidationError):
        rxstate.unique("email", name="has space")
    with pytest.raises(ValidationError):
        store.collection("members", Member, constraints=["unique"])
    members = store.collection("members", Member, constraints=[rxstate.bounds("load", 0)])
    with pytest.raises(SchemaError):
        store.collection("members", Member, constraints=[rxstate.bounds("load", 1)])
    assert store.collection("members", Member, constraints=[rxstate.bounds("load", 0)]) is members


@pytest.mark.cluster
def test_cluster_refuses_constraints_that_span_slots(rx_cluster):
    with Backend("cluster", rx_cluster) as backend:
        store = backend.store()
        with pytest.raises(ClusterError, match="partition_key='email'"):
            store.collection("members", Member, constraints=[rxstate.unique("email")])
        with pytest.raises(ClusterError, match="partition_key='team_id'"):
            store.collection("members", Member, constraints=[rxstate.references("team_id", "teams")])


def test_constraints_hold_inside_transactions(rx_backend):
    store = rx_backend.store()
    cluster = rx_backend.kind == "cluster"
    members = store.collection(
        "members",
        Member,
        constraints=[rxstate.unique("email"), rxstate.bounds("load", 0, "max_load")],
        partition_key="email" if cluster else None,
    )
    members.put("m0", Member(email="taken@x"))
    for clash in ("taken@x", "new@x"):
        with pytest.raises(IntegrityError), store.transaction() as tx:
            tx.put(members, "m1", Member(email="new@x"))
            tx.put(members, "m2", Member(email=clash))
        assert members.ids() == ["m0"]
    with pytest.raises(IntegrityError), store.transaction() as tx:
        tx.put(members, "m3", Member(email="ok@x"))
        tx.put(members, "m4", Member(email="ok2@x", load=9))
    assert members.ids() == ["m0"]


def test_a_transaction_retry_sees_references_declared_meanwhile(rx_backend):
    cluster = rx_backend.kind == "cluster"
    first, second = rx_backend.store(), rx_backend.store()
    teams = first.collection("teams", Team)
    teams.put("t1", Team())
    teams.put("t0", Team())
    assert teams.delete("t0")  # `first` caches the (empty) declarations of t0's partition
    teams.put("t0", Team())
    members = second.collection(
        "members",
        Member,
        constraints=[rxstate.references("team_id", "teams")],
        partition_key="team_id" if cluster else None,
    )
    members.put("m0", Member(team_id="t0"))

    @first.transaction(retries=2)
    def drop(tx, team_id):
        tx.delete(teams, team_id)

    with pytest.raises(IntegrityError):
        drop("t0")
    assert teams.exists("t0")
