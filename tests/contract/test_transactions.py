"""Transactions: all-or-nothing commits, conflicts naming every stale key, rollback, retries.

Run on every backend; ``two_phase`` runs each test once through the single-call commit and once through
the two-phase protocol (which a cluster uses by itself for keys in several partitions).
"""

from __future__ import annotations

import threading

import pytest

from rxstate.errors import (
    AlreadyExists,
    ConflictError,
    IntegrityError,
    NotFound,
    RxStateError,
    ValidationError,
)
from rxstate.store import twophase
from tests.models import Agent, Task


@pytest.fixture(params=[None, True], ids=["auto", "two_phase"])
def two_phase(request):
    return request.param


@pytest.fixture
def agents(rx_store):
    return rx_store.collection("agents", Agent, indexes=["status"])


@pytest.fixture
def tasks(rx_store):
    return rx_store.collection("tasks", Task)


def spread_ids(store, n, prefix="k"):
    """``n`` ids that fall in ``n`` different partitions."""
    out, seen, i = [], set(), 0
    while len(out) < n:
        candidate = f"{prefix}{i}"
        p = store.keyspace.partition_of(candidate)
        if p not in seen:
            seen.add(p)
            out.append(candidate)
        i += 1
    return out


def tx_changes(store, txid):
    """Change records of one transaction, from every partition, decoded."""
    ks = store.keyspace
    out = []
    for p in range(ks.partitions):
        for _offset, fields in store.client.xrange(ks.changes(p)):
            rec = {k.decode(): v.decode() for k, v in fields.items()}
            if rec["x"] == txid:
                rec["p"] = p
                out.append(rec)
    return out


def leftovers(store):
    """Transaction bookkeeping left in the store: intent markers, payloads, records, index entries.

    Abort tombstones (records that expire by themselves) are not leftovers.
    """
    ks = store.keyspace
    found = []
    for p in range(ks.partitions):
        if store.client.hlen(ks.tx_index(p)):
            found.append(ks.tx_index(p))
    client = store.client
    scan = client.scan_iter(match=f"rx:{{{ks.namespace}:*", count=1000)
    for key in scan:
        key = key.decode()
        tombstone = ":_tx:" in key and client.pttl(key) > 0 and client.hget(key, "s") == b"aborted"
        bookkeeping = (":_tx:" in key and not tombstone) or ":_txw:" in key
        if bookkeeping or (store.keyspace.parse_entity(key) and client.hexists(key, "_t")):
            found.append(key)
    return found


def test_commit_applies_everything_with_one_txid(rx_store, agents, tasks, two_phase):
    a, b, c = spread_ids(rx_store, 3)
    agents.put(a, Agent(name="a", load=1))
    agents.put(c, Agent(name="c"))
    with rx_store.transaction(two_phase=two_phase) as tx:
        got = tx.get(agents, a)
        tx.update(agents, a, status="busy", load=got.load + 1)
        tx.put(tasks, b, Task(title="review", owner=a))
        tx.delete(agents, c)
    assert tx.state == "committed"
    assert tx.versions == {("agents", a): 2, ("tasks", b): 1, ("agents", c): 2}
    assert agents.get(a) == Agent(name="a", load=2, status="busy")
    assert tasks.get(b).owner == a
    assert not agents.exists(c)
    assert [x.name for x in agents.where(status="busy")] == ["a"]
    records = tx_changes(rx_store, tx.txid)
    assert sorted((r["c"], r["i"], r["o"]) for r in records) == sorted(
        [("agents", a, "update"), ("tasks", b, "create"), ("agents", c, "delete")]
    )
    assert {r["n"] for r in records} == {"3"}
    assert leftovers(rx_store) == []


def test_reads_see_own_buffered_writes(rx_store, agents, two_phase):
    agents.put("a1", Agent(name="a", load=5))
    with rx_store.transaction(two_phase=two_phase) as tx:
        tx.incr(agents, "a1", "load", 2)
        assert tx.get(agents, "a1").load == 7
        tx.update(agents, "a1", name="renamed")
        assert tx.get_versioned(agents, "a1").value == Agent(name="renamed", load=7)
        assert tx.get_versioned(agents, "a1").version == 2
        tx.put(agents, "a2", Agent(name="new"))
        tx.incr(agents, "a2", "load", 3)
        assert tx.get(agents, "a2").load == 3
        tx.delete(agents, "a2")
        assert tx.get(agents, "a2", None) is None
        with pytest.raises(NotFound):
            tx.update(agents, "a2", load=1)
        tx.create(agents, "a2", Agent(name="again"))
        assert agents.get("a1").load == 5  # nothing is visible outside before the commit
    assert agents.get("a1") == Agent(name="renamed", load=7)
    assert agents.get("a2") == Agent(name="again")


def test_update_with_function_reads_through_the_transaction(rx_store, agents, two_phase):
    agents.put("a1", Agent(name="a", load=1))
    with rx_store.transaction(two_phase=two_phase) as tx:
        tx.update(agents, "a1", lambda a: a.model_copy(update={"load": a.load + 10}))
        tx.update(agents, "a1", lambda a: a.model_copy(update={"load": a.load + 10}))
    assert agents.get("a1").load == 21


@pytest.mark.parametrize(
    "bad",
    [
        lambda tx, agents: tx.update(agents, "a1", load="many"),
        lambda tx, agents: tx.update(agents, "a1", nope=1),
        lambda tx, agents: tx.put(agents, "a1", Task(title="wrong model")),
        lambda tx, agents: tx.put(agents, "bad\nid", Agent(name="x")),
        lambda tx, agents: tx.incr(agents, "a1", "name", 1),
        lambda tx, agents: tx.update(agents, "a1", expected_version=-1, load=1),
    ],
)
def test_bad_input_raises_at_once_and_writes_nothing(rx_store, agents, bad):
    agents.put("a1", Agent(name="a"))
    with pytest.raises(ValidationError), rx_store.transaction() as tx:
        tx.put(agents, "a2", Agent(name="b"))
        bad(tx, agents)
    assert tx.state == "rolled back"
    assert agents.get_versioned("a1").version == 1 and not agents.exists("a2")


def test_bad_call_can_be_caught_and_the_transaction_goes_on(rx_store, agents):
    with rx_store.transaction() as tx:
        tx.put(agents, "a1", Agent(name="a"))
        with pytest.raises(ValidationError):
            tx.update(agents, "a1", load=-5)  # below the declared bound
        with pytest.raises(IntegrityError):
            tx.incr(agents, "a1", "load", -1)  # the value is known here: bounds are checked at once
    assert agents.get("a1").load == 0


def test_exception_in_block_discards_everything(rx_store, agents, tasks, two_phase):
    a, b = spread_ids(rx_store, 2)
    agents.put(a, Agent(name="a"))
    with pytest.raises(RuntimeError), rx_store.transaction(two_phase=two_phase) as tx:
        tx.update(agents, a, status="failed")
        tx.put(tasks, b, Task(title="x"))
        raise RuntimeError("boom")
    assert agents.get(a).status == "idle" and not tasks.exists(b)
    assert tx_changes(rx_store, tx.txid) == []


def test_rollback_discards_and_closes(rx_store, agents):
    agents.put("a1", Agent(name="a"))
    with rx_store.transaction() as tx:
        tx.update(agents, "a1", status="busy")
        tx.rollback()
    assert tx.state == "rolled back"
    assert agents.get_versioned("a1").version == 1
    with pytest.raises(RxStateError, match="rolled back"):
        tx.put(agents, "a2", Agent(name="b"))


def test_conflict_names_every_stale_key_and_writes_nothing(rx_backend, two_phase):
    store, other = rx_backend.store(), rx_backend.store()
    agents = store.collection("agents", Agent, indexes=["status"])
    theirs = other.collection("agents", Agent, indexes=["status"])
    a, b, c = spread_ids(store, 3)
    for i in (a, b, c):
        agents.put(i, Agent(name=i))
    with pytest.raises(ConflictError) as info, store.transaction(two_phase=two_phase) as tx:
        for i in (a, b, c):
            tx.get(agents, i)
        tx.update(agents, a, status="busy")
        tx.put(agents, "fresh", Agent(name="fresh"))
        theirs.update(a, load=1)
        theirs.update(c, load=2)
        theirs.update(c, load=3)
    err = info.value
    keys = [agents.key(a), agents.key(c)]
    assert sorted(err.key) == sorted(keys)
    assert dict(zip(err.key, zip(err.expected, err.actual, strict=True), strict=True)) == {
        keys[0]: (1, 2),
        keys[1]: (1, 3),
    }
    assert agents.get(a).status == "idle" and not agents.exists("fresh")
    assert agents.where(status="busy") == []
    assert tx.state == "failed"
    assert leftovers(store) == []


def test_read_of_a_missing_entity_conflicts_with_its_creation(rx_backend, two_phase):
    store, other = rx_backend.store(), rx_backend.store()
    agents = store.collection("agents", Agent)
    a, b = spread_ids(store, 2)
    with pytest.raises(ConflictError) as info, store.transaction(two_phase=two_phase) as tx:
        assert tx.get(agents, a, None) is None
        tx.put(agents, b, Agent(name="b"))
        other.collection("agents", Agent).create(a, Agent(name="sneaky"))
    assert info.value.key == [agents.key(a)] and info.value.actual == [1]
    assert not agents.exists(b)


def test_refused_write_aborts_the_whole_transaction(rx_store, agents, tasks, two_phase):
    a, b, c = spread_ids(rx_store, 3)
    agents.put(a, Agent(name="a", load=100))
    tasks.put(c, Task(title="t"))
    with pytest.raises(AlreadyExists), rx_store.transaction(two_phase=two_phase) as tx:
        tx.put(tasks, b, Task(title="new"))
        tx.create(tasks, c, Task(title="dup"))
    with pytest.raises(IntegrityError), rx_store.transaction(two_phase=two_phase) as tx:
        tx.put(tasks, b, Task(title="new"))
        tx.incr(agents, a, "load", 1)  # over the declared bound of 100
    with pytest.raises(NotFound), rx_store.transaction(two_phase=two_phase) as tx:
        tx.put(tasks, b, Task(title="new"))
        tx.update(agents, "ghost", status="busy")
    assert not tasks.exists(b) and tasks.get(c).title == "t" and agents.get(a).load == 100
    assert leftovers(rx_store) == []


def test_explicit_expected_versions(rx_store, agents, two_phase):
    agents.put("a1", Agent(name="a"))
    with pytest.raises(ConflictError), rx_store.transaction(two_phase=two_phase) as tx:
        tx.update(agents, "a1", status="busy", expected_version=7)
    with rx_store.transaction(two_phase=two_phase) as tx:
        tx.update(agents, "a1", status="busy", expected_version=1)
    assert agents.get_versioned("a1").version == 2


def test_retries_rerun_the_body_on_conflict(rx_backend, two_phase):
    store, other = rx_backend.store(), rx_backend.store()
    agents = store.collection("agents", Agent)
    theirs = other.collection("agents", Agent)
    a, b = spread_ids(store, 2)
    agents.put(a, Agent(name="a", load=20))
    agents.put(b, Agent(name="b"))
    runs = []

    @store.transaction(retries=3, two_phase=two_phase)
    def move_load(tx, src, dst, amount):
        source = tx.get(agents, src)
        runs.append(source.load)
        if len(runs) == 1:
            theirs.incr(src, "load", 10)  # someone else changes it under the first attempt
        tx.update(agents, src, load=source.load - amount)
        tx.incr(agents, dst, "load", amount)
        return "moved"

    assert move_load(a, b, 4) == "moved"
    assert runs == [20, 30]
    assert agents.get(a).load == 26 and agents.get(b).load == 4

    def always_conflicts(tx):
        tx.get(agents, a)
        theirs.incr(a, "load", 1)
        tx.incr(agents, b, "load", 1)

    with pytest.raises(ConflictError):
        store.transaction(retries=2, two_phase=two_phase).run(always_conflicts)
    assert agents.get(b).load == 4
    with pytest.raises(ValidationError), store.transaction(retries=2):
        pass


def test_read_only_transaction_verifies_its_reads(rx_backend, two_phase):
    store, other = rx_backend.store(), rx_backend.store()
    agents = store.collection("agents", Agent)
    a, b = spread_ids(store, 2)
    agents.put(a, Agent(name="a"))
    agents.put(b, Agent(name="b"))
    with store.transaction(two_phase=two_phase) as tx:
        tx.get(agents, a), tx.get(agents, b)
    assert tx.state == "committed" and tx.versions == {}
    with pytest.raises(ConflictError), store.transaction(two_phase=two_phase) as tx:
        tx.get(agents, a), tx.get(agents, b)
        other.collection("agents", Agent).update(b, load=1)


@pytest.mark.parametrize("spread", [False, True], ids=["one_partition", "partitions"])
def test_conflicting_transactions_from_threads_exactly_one_wins(rx_backend, spread, two_phase):
    store = rx_backend.store()
    agents = store.collection("agents", Agent)
    counter, *others = spread_ids(store, 4) if spread else ["c", "c1", "c2", "c3"]
    agents.put(counter, Agent(name="counter"))
    n = 6
    barrier = threading.Barrier(n)
    outcomes = []

    def worker(i):
        s = rx_backend.store()
        coll = s.collection("agents", Agent)
        try:
            with s.transaction(two_phase=two_phase) as tx:
                load = tx.get(coll, counter).load
                for o in others:
                    tx.put(coll, f"{o}-{i}", Agent(name=str(i)))
                barrier.wait(timeout=60)
                tx.update(coll, counter, load=load + 1, notes=str(i))
            outcomes.append(("won", i))
        except ConflictError:
            outcomes.append(("lost", i))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    winners = [i for what, i in outcomes if what == "won"]
    assert len(outcomes) == n and len(winners) == 1
    final = agents.get(counter, consistent=True)  # another store wrote it: the cache may not know yet
    assert final.load == 1 and final.notes == str(winners[0])
    for o in others:  # the losers wrote nothing
        assert agents.get_many([f"{o}-{i}" for i in range(n)]).keys() == {f"{o}-{winners[0]}"}
    assert leftovers(store) == []


def test_commit_stopped_at_each_step_shows_all_or_nothing(rx_backend):
    """Stop a two-phase commit inside this process after each step: readers see all of it or none."""
    store = rx_backend.store()
    agents = store.collection("agents", Agent)
    a, b = spread_ids(store, 2)
    agents.put(a, Agent(name="a"))

    class Stop(BaseException):
        pass

    # steps: prepared:<primary>, prepared:<other>, committed, resolved:<primary>, resolved:<other>, forgotten
    for stop_after in range(6):
        calls = []

        def hook(step, stop_after=stop_after, calls=calls):
            calls.append(step)
            if len(calls) == stop_after + 1:
                raise Stop

        before = agents.get(a).load
        tx = store.transaction(two_phase=True, ttl=0.2)
        twophase.fault_hook = hook
        try:
            with pytest.raises(Stop), tx:
                tx.update(agents, a, load=before + 1)
                tx.put(agents, b, Agent(name="b", load=before + 1))
        finally:
            twophase.fault_hook = None
        committed = stop_after >= 2
        assert calls[-1].startswith(("prepared", "committed", "resolved", "forgotten"))
        if committed:  # readers roll the rest forward
            assert agents.get(a).load == before + 1 and agents.get(b).load == before + 1
            records = tx_changes(store, tx.txid)
            assert len(records) == 2 and {r["n"] for r in records} == {"2"}
        else:  # the prepared partitions were released on the way out
            assert agents.get(a).load == before and agents.get(b, None) is None
            assert tx_changes(store, tx.txid) == []
        agents.delete(b)
    import time

    time.sleep(0.25)
    store.resolve_transactions()
    assert leftovers(store) == []


def test_binary_values_and_ttls_survive_the_two_phase_payload(rx_store, agents, two_phase):
    a, b = spread_ids(rx_store, 2)
    big = "é✓ " * 2000  # compressed with lz4: binary bytes in the payload
    with rx_store.transaction(two_phase=two_phase) as tx:
        tx.put(agents, a, Agent(name="a", notes=big), ttl=60)
        tx.put(agents, b, Agent(name="b"))
    assert agents.get(a).notes == big
    assert 0 < rx_store.client.pttl(agents.key(a)) <= 60_000
    assert rx_store.client.pttl(agents.key(b)) == -1


def test_transaction_takes_collection_names_and_refuses_strangers(rx_backend):
    store, other = rx_backend.store(), rx_backend.store()
    agents = store.collection("agents", Agent)
    foreign = other.collection("agents", Agent)
    with store.transaction() as tx:
        tx.put("agents", "a1", Agent(name="by name"))
        with pytest.raises(ValidationError):
            tx.put(foreign, "a2", Agent(name="x"))
        with pytest.raises(ValidationError):
            tx.put("nope", "a2", Agent(name="x"))
    assert agents.get("a1").name == "by name" and not agents.exists("a2")


def test_protocol_choice(rx_backend):
    """One script where one script can reach every key; the two-phase protocol across cluster slots."""
    store = rx_backend.store()
    agents = store.collection("agents", Agent)
    a, b = spread_ids(store, 2)
    same = [
        i for i in (f"s{n}" for n in range(500)) if store.keyspace.partition_of(i) == store.keyspace.partition_of(a)
    ]
    steps = []
    twophase.fault_hook = steps.append
    try:
        with store.transaction() as tx:  # one partition: one script everywhere
            tx.put(agents, a, Agent(name="a"))
            tx.put(agents, same[0], Agent(name="s"))
        assert steps == []
        with store.transaction() as tx:
            tx.put(agents, a, Agent(name="a2"))
            tx.put(agents, b, Agent(name="b"))
        if rx_backend.kind == "cluster":
            assert "committed" in steps and steps[-1] == "forgotten"
        else:
            assert steps == []
    finally:
        twophase.fault_hook = None
    assert agents.get(a).name == "a2" and agents.get(b).name == "b"


def test_retried_transactions_from_threads_lose_no_update(rx_backend, two_phase):
    """Read two counters in two partitions, write both: with retries, every transfer lands exactly once."""
    store = rx_backend.store()
    agents = store.collection("agents", Agent)
    a, b = spread_ids(store, 2)
    agents.put(a, Agent(name="a", load=100))
    agents.put(b, Agent(name="b", load=0))
    threads, rounds = 4, 8

    def worker():
        s = rx_backend.store()
        coll = s.collection("agents", Agent)

        @s.transaction(retries=200, two_phase=two_phase)
        def transfer(tx):
            src, dst = tx.get(coll, a), tx.get(coll, b)
            tx.update(coll, a, load=src.load - 1)
            tx.update(coll, b, load=dst.load + 1)

        for _ in range(rounds):
            transfer()

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=60)
    moved = threads * rounds
    assert agents.get(a).load == 100 - moved and agents.get(b).load == moved
    assert agents.get_versioned(a).version == moved + 1
    assert leftovers(store) == []


def test_read_only_transactions_never_see_half_a_transfer(rx_backend, two_phase):
    """Writers move load between entities of two partitions; committed read-only views keep the total."""
    store = rx_backend.store()
    agents = store.collection("agents", Agent)
    a, b = spread_ids(store, 2)
    agents.put(a, Agent(name="a", load=50))
    agents.put(b, Agent(name="b", load=50))
    stop = threading.Event()
    seen, errors = [], []

    def writer(step):
        s = rx_backend.store()
        coll = s.collection("agents", Agent)

        @s.transaction(retries=500, two_phase=two_phase)
        def transfer(tx):
            x, y = tx.get(coll, a), tx.get(coll, b)
            if 0 <= x.load - step <= 100 and 0 <= y.load + step <= 100:
                tx.update(coll, a, load=x.load - step)
                tx.update(coll, b, load=y.load + step)

        try:
            for _ in range(15):
                transfer()
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    def reader():
        s = rx_backend.store()
        coll = s.collection("agents", Agent)

        @s.transaction(retries=1000, two_phase=two_phase)
        def total(tx):
            return tx.get(coll, a).load + tx.get(coll, b).load

        while not stop.is_set():
            seen.append(total())

    writers = [threading.Thread(target=writer, args=(step,)) for step in (3, -5)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in writers:
        t.start()
    for t in writers:
        t.join(timeout=60)
    stop.set()
    watcher.join(timeout=60)
    assert errors == [] and seen and set(seen) == {100}
    assert agents.get(a).load + agents.get(b).load == 100


def test_partition_count_counts_partitions_with_change_records(rx_store, agents, two_phase):
    a, b, c = spread_ids(rx_store, 3)
    agents.put(a, Agent(name="a"))
    with rx_store.transaction(two_phase=two_phase) as tx:
        tx.update(agents, a, load=1)
        tx.delete(agents, b)  # does not exist: nothing to write
        tx.put(agents, c, Agent(name="c"))
        tx.delete(agents, c)  # created and deleted in the transaction: nothing to write
    records = tx_changes(rx_store, tx.txid)
    assert [(r["i"], r["n"]) for r in records] == [(a, "1")]
    assert not agents.exists(b) and not agents.exists(c)


def test_unchanged_function_update_writes_nothing(rx_store, agents):
    agents.put("a1", Agent(name="a"))
    with rx_store.transaction() as tx:
        tx.update(agents, "a1", lambda a: a)
    assert tx.versions == {} and agents.get_versioned("a1").version == 1
