"""Replicas on real servers: convergence, session guarantees, clocks, bootstrap, epochs, digests, GC."""

from __future__ import annotations

import pytest

import rxstate
from rxstate.sync import Gossip, Replica, Session, SyncAgent
from tests.helpers import dump_all
from tests.sync.conftest import Doc, docs


def _changes_since_save(replica: Replica) -> int:
    return int(replica.store.client.info("persistence")["rdb_changes_since_last_save"])


def test_concurrent_writes_of_every_type_converge(replicas: list[Replica]) -> None:
    a, b, c = (docs(r) for r in replicas)
    a.update("d1", title="from a", owner="ann")
    a.incr("d1", "views", 2)
    a.add("d1", "tags", "x", "y")
    b.update("d1", title="from b", owner="bob")
    b.incr("d1", "views", -1)
    b.add("d1", "tags", "z")
    c.incr("d1", "views", 10)
    gossip = Gossip(replicas, seed=1)
    rounds = gossip.run_until_converged(max_rounds=20)
    assert rounds <= 20
    values = [col.get("d1") for col in (a, b, c)]
    assert values[0] == values[1] == values[2]
    assert values[0].views == 11 and values[0].tags == ["x", "y", "z"]
    assert values[0].title == "from b"  # the later HLC (b wrote after a, on clocks within the bound)
    assert c.siblings("d1", "owner") == ["ann", "bob"]
    # a remove observed at one replica, concurrent with a re-add at another: the add wins
    a.remove("d1", "tags", "x")
    b.add("d1", "tags", "x")
    c.remove("d1", "tags", "y")
    gossip.run_until_converged(max_rounds=20)
    assert [col.get("d1").tags for col in (a, b, c)] == [["x", "z"]] * 3
    # a resolver chooses among siblings; a write that saw both replaces them
    picky = replicas[2].collection("docs", Doc, resolver=lambda field, values: values[0])
    assert picky.get("d1").owner == "ann" and c.get("d1").owner == "bob"
    c.update("d1", owner="cy")
    gossip.run_until_converged(max_rounds=20)
    assert a.siblings("d1", "owner") == ["cy"]


def test_the_stored_hash_is_a_plain_collection_with_versions_and_change_records(replicas: list[Replica]) -> None:
    a = docs(replicas[0])
    token = a.update("d1", title="t")
    a.incr("d1", "views", 3)
    plain = replicas[0].store.collection("docs", Doc)
    got = plain.get_versioned("d1")
    assert got.value.title == "t" and got.value.views == 3 and got.version == 2 == token.version + 1
    p = replicas[0].store.keyspace.partition_of("d1")
    records = replicas[0].store.client.xrange(replicas[0].store.keyspace.changes(p))
    assert [r[1][b"o"] for r in records] == [b"create", b"update"]
    assert records[1][1][b".views"] == b"3"


def test_idle_replicas_send_no_sync_traffic(replicas: list[Replica]) -> None:
    for i, r in enumerate(replicas):
        docs(r).incr(f"d{i}", "views", 1)
    gossip = Gossip(replicas, seed=2)
    gossip.run_until_converged()
    sweeps = 1
    while gossip.sweep():  # forwarded copies and acknowledgements settle
        sweeps += 1
    assert sweeps <= 4
    changes = [_changes_since_save(r) for r in replicas]
    calls = gossip.calls()
    for _ in range(10):
        gossip.round()
    assert gossip.calls() == calls
    assert [_changes_since_save(r) for r in replicas] == changes  # the servers saw no write at all


def test_session_guarantees_hold_when_a_client_switches_replicas(replicas: list[Replica]) -> None:
    a, b, c = (docs(r) for r in replicas)
    session = Session()
    a.incr("d1", "views", 5, session=session)
    with pytest.raises(rxstate.SessionLagging) as info:  # b has not seen the client's own write
        b.get("d1", session=session, wait=0.05)
    assert info.value.missing == {replicas[0].origin: (1, 0)} and isinstance(info.value, TimeoutError)
    SyncAgent(replicas[1], replicas[0]).pull()
    assert b.get("d1", session=session).views == 5  # read-your-writes
    b.incr("d1", "views", 1, session=session)
    assert b.get("d1", session=session).views == 6
    with pytest.raises(rxstate.SessionLagging):  # monotonic reads: c would go back in time
        c.get("d1", session=session, wait=0.02)
    carried = Session.loads(session.dumps())  # the token travels with the client
    SyncAgent(replicas[2], replicas[1]).pull()  # b's log carries a's change too (causal order)
    assert c.get("d1", session=carried).views == 6
    assert c.get("d1").views == 6 and c.get("missing", session=carried) is None


def test_skew_within_the_bound_is_absorbed(replicas: list[Replica]) -> None:
    ra, rb = replicas[0], replicas[1]
    ra.set_clock_offset(300)  # a's clock runs 300 ms ahead; max_offset is 500 ms
    ahead = docs(ra).update("d1", title="a, ahead")
    SyncAgent(rb, ra).pull()
    token = docs(rb).update("d1", title="b, after seeing a")  # causally later: must win despite b's clock
    assert token.hlc > ahead.hlc
    SyncAgent(ra, rb).pull()
    assert docs(ra).get("d1").title == docs(rb).get("d1").title == "b, after seeing a"
    assert ra.quarantined() == {} and rb.quarantined() == {}


def test_a_one_hour_forward_jump_is_quarantined_not_adopted(replicas: list[Replica]) -> None:
    ra, rb = replicas[0], replicas[1]
    docs(rb).update("d1", title="b first")
    ra.set_clock_offset(3_600_000)
    docs(ra).update("d1", title="a, an hour ahead")
    p = ra.store.keyspace.partition_of("d1")
    hlc_before = rb.store.client.hget(rb.key(p, "meta"), "l")
    result = SyncAgent(rb, ra).pull()
    assert result.quarantined == [p] and result.applied == 0
    held = rb.quarantined()[p]["a"]
    assert held["origin"] == ra.origin and held["ahead_ms"] > 3_500_000
    assert rb.store.client.hget(rb.key(p, "meta"), "l") == hlc_before  # the clock did not jump
    assert docs(rb).get("d1").title == "b first"
    token = docs(rb).update("d1", title="b again")
    assert int(token.hlc[:15]) < int(held["hlc"][:15])
    ra.set_clock_offset(0)  # once the clocks agree again (here: a's offset removed) nothing is held
    SyncAgent(rb, ra).pull()
    still = rb.quarantined()[p]["a"]  # a's logged change still carries its future time: held until then
    assert (still["origin"], still["seq"], still["hlc"]) == (held["origin"], held["seq"], held["hlc"])
    assert docs(rb).get("d1").title == "b again"


def test_a_trimmed_log_makes_the_reader_bootstrap_from_full_state(replicas: list[Replica]) -> None:
    ra, rb, rc = replicas
    for i in range(5):
        docs(ra).incr(f"d{i}", "views", i + 1)
        docs(ra).add(f"d{i}", "tags", f"t{i}")
    SyncAgent(rb, ra, members=["b"]).pull()  # only b reads a's log: a trims what b acknowledged
    assert sum(ra.store.client.xlen(ra.key(p, "log")) for p in range(ra.partitions)) == 0
    result = SyncAgent(rc, ra).pull()  # c never read a's log, which is gone: full state instead
    assert result.bootstrapped and result.applied == 0
    assert [docs(rc).get(f"d{i}").views for i in range(5)] == [1, 2, 3, 4, 5]
    assert rc.version_vector() == ra.version_vector() and rc.digest() == ra.digest()


def test_a_replica_restored_from_an_old_backup_bumps_its_epoch(replicas: list[Replica]) -> None:
    ra, rb = replicas[0], replicas[1]
    client = ra.store.client
    docs(ra).incr("d1", "views", 1)
    backup = {k: client.dump(k) for k in client.keys(f"rx:{{{ra.store.keyspace.namespace}:*")}
    docs(ra).incr("d1", "views", 10)  # lost with the restore, but b has it
    SyncAgent(rb, ra).pull()
    for key in client.keys(f"rx:{{{ra.store.keyspace.namespace}:*"):
        client.delete(key)
    for key, value in backup.items():
        client.restore(key, 0, value)
    assert docs(ra).get("d1").views == 1
    result = SyncAgent(ra, rb).pull()
    assert result.epoch_bumped and ra.origin == "a.2"
    assert docs(ra).get("d1").views == 11  # its lost change came back from b
    token = docs(ra).incr("d1", "views", 100)  # a new dot: b must not take it for one it has
    assert list(token.values()) == [{"a.2": 1}]
    SyncAgent(rb, ra).pull()
    assert docs(rb).get("d1").views == docs(ra).get("d1").views == 111


def test_digests_find_and_repair_silent_divergence(replicas: list[Replica]) -> None:
    ra, rb = replicas[0], replicas[1]
    docs(ra).add("d1", "tags", "keep")
    SyncAgent(rb, ra).pull()
    p = rb.store.keyspace.partition_of("d1")
    assert SyncAgent(rb, ra).diverged() == []
    rb.store.client.delete(rb.state_key("docs", "d1", p))  # lost outside the sync scripts
    agent = SyncAgent(rb, ra)
    assert agent.diverged() == [p]
    assert agent.repair() == [p]
    assert agent.diverged() == [] and rb.digest() == ra.digest()
    gossip = Gossip(replicas, seed=3, digest_every=1)
    gossip.run_until_converged()


def test_reordered_and_repeated_deltas_are_harmless(replicas: list[Replica]) -> None:
    ra, rb = replicas[0], replicas[1]
    for i in range(6):
        docs(ra).incr("d1", "views", 1)
        docs(ra).add("d1", "tags", f"t{i % 3}")
        if i % 2:
            docs(ra).remove("d1", "tags", f"t{(i + 1) % 3}")
    p = ra.store.keyspace.partition_of("d1")
    entries = ra.store.client.xrange(ra.key(p, "log"))
    shuffled = list(reversed(entries)) + entries[::2] + entries
    agent = SyncAgent(rb, ra)
    agent.merge_deltas(shuffled)
    assert docs(rb).get("d1") == docs(ra).get("d1")
    assert rb.digest([p]) == ra.digest([p])
    agent.pull()  # the version vector then catches up; the states do not change
    assert rb.version_vector(p) == ra.version_vector(p) and rb.digest([p]) == ra.digest([p])


def test_bad_input_raises_typed_errors_and_writes_nothing(replicas: list[Replica]) -> None:
    ra = replicas[0]
    a = docs(ra)
    a.update("d1", title="x")
    client = ra.store.client
    before = dump_all(client)
    with pytest.raises(rxstate.ValidationError) as info:
        a.incr("d1", "title", 1)
    assert info.value.field == "title"
    with pytest.raises(rxstate.ValidationError):
        a.update("d1", views=3)  # a counter changes by incr only
    with pytest.raises(rxstate.ValidationError):
        a.update("d1", nope=1)
    with pytest.raises(rxstate.ValidationError):
        a.add("d1", "tags")
    with pytest.raises(rxstate.ValidationError):
        a.incr("d1", "views", 1.5)  # type: ignore[arg-type]
    with pytest.raises(rxstate.ValidationError):
        Replica(ra.store, "bad id")
    with pytest.raises(rxstate.SyncError) as sync_info:
        Replica(ra.store, "other")  # this namespace is replica "a"
    assert sync_info.value.key == ra.key(0, "meta")
    with pytest.raises(rxstate.SyncError):
        SyncAgent(ra, ra)
    assert dump_all(client) == before


def test_a_store_never_opened_as_a_replica_refuses_sync_writes(replicas: list[Replica]) -> None:
    ra = replicas[0]
    p = ra.store.keyspace.partition_of("d1")
    ra.store.client.delete(ra.key(p, "meta"))
    before = dump_all(ra.store.client)
    with pytest.raises(rxstate.SyncError) as info:
        docs(ra).update("d1", title="x")
    assert info.value.key == ra.key(p, "meta")
    assert dump_all(ra.store.client) == before


def test_unique_decisions_take_the_primary_lock_with_fencing(replicas: list[Replica]) -> None:
    """Decisions that must be unique (who owns a task) are made on one primary's fenced lock, not by sync."""
    primary = replicas[0].store
    decisions = primary.collection("decisions", Doc)
    decisions.put("task", Doc(title="open"))
    first = primary.lock("task-owner", ttl=0.05).acquire()
    second_store = rxstate.connect(primary.client, namespace=primary.keyspace.namespace, cache=False)
    try:
        second = second_store.lock("task-owner", ttl=5).acquire()  # waits out the first lease
        assert second.token > first.token
        second_store.collection("decisions", Doc).update("task", title="owned by b", fence=second)
        with pytest.raises(rxstate.LockError) as info:  # the first holder's late write is refused
            decisions.update("task", title="owned by a", fence=first)
        assert info.value.token == first.token
        assert decisions.get("task").title == "owned by b"
    finally:
        second_store.close()


def test_an_entry_whose_dependencies_are_missing_waits_for_them(replicas: list[Replica]) -> None:
    ra, rb, rc = replicas
    docs(ra).add("d1", "tags", "from a")
    SyncAgent(rb, ra).bootstrap(ra.store.keyspace.partition_of("d1"))  # b has a's change, its log does not
    docs(rb).add("d1", "tags", "from b")  # depends on a's change
    result = SyncAgent(rc, rb).pull()
    # c cannot apply b's entry before a's: it takes b's full state (a join) rather than break causality
    assert result.bootstrapped and result.applied == 0
    assert docs(rc).get("d1").tags == ["from a", "from b"]
    assert rc.version_vector() == rb.version_vector()


def test_gossip_says_when_a_paused_link_keeps_replicas_apart(replicas: list[Replica]) -> None:
    ra, rb, _ = replicas
    gossip = Gossip([ra, rb], seed=5)
    gossip.pause("a", "b")
    docs(ra).incr("d1", "views", 1)
    with pytest.raises(rxstate.SyncError) as info:
        gossip.run_until_converged(max_rounds=3)
    assert info.value.key == "gossip"
    gossip.resume("a", "b")
    assert gossip.run_until_converged(max_rounds=5) >= 1


def test_replicas_run_on_fakeredis_too() -> None:
    import fakeredis

    stores = [rxstate.connect(fakeredis.FakeRedis(server=fakeredis.FakeServer()), namespace="fk") for _ in range(2)]
    ra, rb = Replica(stores[0], "a"), Replica(stores[1], "b")
    docs(ra).incr("d1", "views", 2)
    docs(rb).incr("d1", "views", 3)
    docs(rb).add("d1", "tags", "t")
    gossip = Gossip([ra, rb], seed=1)
    gossip.run_until_converged(max_rounds=10)
    assert docs(ra).get("d1") == docs(rb).get("d1") == Doc(views=5, tags=["t"])
