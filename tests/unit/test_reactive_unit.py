"""The change feed, delivery, read tracking and derived values on fakeredis or with no server at all."""

from __future__ import annotations

import threading
import time

import pytest

import rxstate
from rxstate.core import tracking
from rxstate.errors import CycleError, ValidationError
from rxstate.feed.assembly import Assembler, FeedMetrics
from rxstate.feed.change import Change, coalesce_changes, offset_key
from rxstate.feed.delivery import BufferOverflow, DeliveryMetrics, Mailbox
from rxstate.reactive.graph import DerivedGraph
from tests.helpers import wait_for
from tests.models import Agent, Task


@pytest.fixture
def store(rx_fake_store):
    return rx_fake_store


@pytest.fixture
def agents(store):
    return store.collection("agents", Agent, indexes=["status"])


# -- the feed on fakeredis ---------------------------------------------------------------------------


def test_feed_decodes_every_op_with_model_values(store, agents):
    got: list[Change] = []
    store.changes().subscribe(got.append)
    agents.put("a1", Agent(name="x", skills=["py"]))
    agents.update("a1", status="busy")
    agents.incr("a1", "load", 3)
    agents.delete("a1")
    assert wait_for(lambda: len(got) == 4)
    assert [c.op for c in got] == ["create", "update", "incr", "delete"]
    assert [c.version for c in got] == [1, 2, 3, 4]
    assert got[0].fields["skills"] == ["py"] and got[0].fields["name"] == "x"
    assert dict(got[1].fields) == {"status": "busy"}
    assert dict(got[2].fields) == {"load": 3} and isinstance(got[2].fields["load"], int)
    assert got[3].is_removal and dict(got[3].fields) == {}
    assert {c.actor for c in got} == {store.actor}
    assert {c.partition for c in got} == {store.keyspace.partition_of("a1")}
    offsets = [offset_key(c.offset) for c in got]
    assert offsets == sorted(offsets) and len(set(offsets)) == 4


def test_feed_filters_collection_id_where_and_fields(store, agents):
    tasks = store.collection("tasks", Task)
    by_coll, by_id, by_where, by_fields = [], [], [], []
    store.changes(collection="tasks").subscribe(by_coll.append)
    store.changes(id="a*").subscribe(by_id.append)
    store.changes(where={"status": "busy"}).subscribe(by_where.append)
    store.changes(collection="agents", fields=["load"]).subscribe(by_fields.append)
    agents.put("a1", Agent(name="x"))
    agents.put("b1", Agent(name="y"))
    tasks.put("t1", Task(title="t"))
    agents.update("a1", status="busy")
    agents.incr("b1", "load", 2)
    agents.delete("a1")
    assert wait_for(lambda: len(by_fields) == 4)
    time.sleep(0.05)
    assert [c.id for c in by_coll] == ["t1"]
    assert [(c.id, c.op) for c in by_id] == [("a1", "create"), ("a1", "update"), ("a1", "delete")]
    assert [(c.id, c.op) for c in by_where] == [("a1", "update")]
    # creations carry every field; trimmed to the asked ones; removals always pass
    per_entity = {e: [(c.op, dict(c.fields)) for c in by_fields if c.id == e] for e in ("a1", "b1")}
    assert per_entity == {
        "a1": [("create", {"load": 0}), ("delete", {})],
        "b1": [("create", {"load": 0}), ("incr", {"load": 2})],
    }


def test_since_replays_retained_changes_then_follows(store, agents):
    agents.put("a1", Agent(name="x"))
    first = agents.update("a1", status="busy")
    got: list[Change] = []
    sub = store.changes(since="0").subscribe(got.append)
    assert wait_for(lambda: len(got) == 2)
    agents.update("a1", status="idle")
    assert wait_for(lambda: len(got) == 3)
    assert [c.version for c in got] == [1, 2, 3]
    sub.dispose()
    after: list[Change] = []
    store.changes(since={store.keyspace.partition_of("a1"): first.offset}).subscribe(after.append)
    assert wait_for(lambda: len(after) == 1)
    assert after[0].version == 3
    with pytest.raises(ValidationError):
        store.changes(since="yesterday")
    with pytest.raises(ValidationError):
        store.changes(since={999: "0-0"})


def test_consumer_group_shares_work_and_acknowledges(store, agents):
    a: list[Change] = []
    b: list[Change] = []

    def worker(into):
        def take(change):
            time.sleep(0.005)  # busy with it: the other consumer gets the next ones
            into.append(change)

        return take

    da = store.changes(group="workers", consumer="a", max_buffer=1).subscribe(worker(a))
    db = store.changes(group="workers", consumer="b", max_buffer=1).subscribe(worker(b))
    for i in range(40):
        agents.put(f"a{i}", Agent(name=str(i)))
        time.sleep(0.002)
    assert wait_for(lambda: len(a) + len(b) == 40)
    time.sleep(0.05)
    assert sorted(c.id for c in a + b) == sorted(f"a{i}" for i in range(40))  # each change once
    assert a and b  # both consumers got work (several partitions, two readers)
    ks = store.keyspace
    assert wait_for(
        lambda: sum(store.client.xpending(ks.changes(p), "workers")["pending"] for p in range(ks.partitions)) == 0
    )
    da.dispose()
    db.dispose()


def test_feed_stops_with_store(rx_fake_store):
    got: list[Change] = []
    rx_fake_store.changes().subscribe(got.append)
    feed = rx_fake_store.change_feed
    rx_fake_store.close()
    assert feed.stopped
    assert all(not r.thread.is_alive() for r in feed._readers) or wait_for(
        lambda: all(not r.thread.is_alive() for r in feed._readers), 3
    )


def test_watch_emits_current_value_then_changes(store, agents):
    agents.put("a1", Agent(name="x"))
    seen: list[Change] = []
    store.collection("agents", Agent, indexes=["status"]).watch("a1").subscribe(seen.append)
    assert wait_for(lambda: len(seen) == 1)
    assert seen[0].op == "snapshot" and seen[0].value == Agent(name="x") and seen[0].version == 1
    agents.update("a1", status="busy")
    agents.delete("a1")
    assert wait_for(lambda: len(seen) == 3)
    assert seen[1].op == "update" and seen[1].value == Agent(name="x", status="busy")
    assert seen[2].op == "delete" and seen[2].value is None


def test_watch_all_where_tracks_membership(store, agents):
    agents.put("a1", Agent(name="x", status="busy"))
    agents.put("a2", Agent(name="y"))
    seen: list[Change] = []
    agents.watch_all(where={"status": "busy"}).subscribe(seen.append)
    assert wait_for(lambda: len(seen) == 1)
    assert (seen[0].op, seen[0].id) == ("snapshot", "a1")
    agents.incr("a2", "load", 1)  # not a member: not seen
    agents.update("a2", status="busy")  # joins
    agents.incr("a2", "load", 1)  # member now: seen
    agents.update("a1", status="idle")  # leaves
    assert wait_for(
        lambda: any(c.op == "leave" for c in seen) and any(c.id == "a2" and c.value.load == 2 for c in seen)
    )
    time.sleep(0.05)
    a1 = [c.op for c in seen[1:] if c.id == "a1"]
    a2 = [c for c in seen[1:] if c.id == "a2"]
    assert a1 == ["leave"]
    # a2 joins with its whole value (read when it joined, so it may already include the next change)
    assert a2[0].value.status == "busy" and a2[-1].value.load == 2 and len(a2) <= 2
    with pytest.raises(ValidationError):
        agents.watch_all(where={"name": "x"})  # not indexed


# -- transactions: assembling the records of several partitions ------------------------------------------


def rec(p, offset, txid="", n=1, cid="e"):
    return Change("c", cid, "update", 1, {}, txid=txid, partitions=n, partition=p, offset=offset)


def test_assembler_holds_a_transaction_until_all_partitions_arrived():
    out: list[tuple[Change, ...]] = []
    asm = Assembler(3, out.append, FeedMetrics())
    asm.ingest([(0, [rec(0, "1-0", "t1", 2, "x")], True)])
    assert out == []  # partition 2's part has not arrived
    asm.ingest([(0, [rec(0, "2-0", cid="after")], True), (1, [rec(1, "2-0", cid="other")], True)])
    # the record after the transaction in partition 0 waits behind it; partition 1 is independent
    assert [[c.id for c in b] for b in out] == [["other"]]
    asm.ingest([(2, [rec(2, "1-0", "t1", 2, "y")], True)])
    assert [[c.id for c in b] for b in out] == [["other"], ["x", "after", "y"]] or [c.id for c in out[1]][:1] == ["x"]
    ids = [c.id for c in out[1]]
    assert set(ids) == {"x", "y", "after"} and ids.index("x") < ids.index("after")


def test_assembler_waits_for_the_rest_of_a_partition_cut_by_count():
    out: list[tuple[Change, ...]] = []
    asm = Assembler(2, out.append, FeedMetrics())
    asm.ingest([(0, [rec(0, "1-0", "t", 2, "a")], False), (1, [rec(1, "1-0", "t", 2, "b")], True)])
    assert out == []  # partition 0's read was cut by COUNT: more of t may follow
    asm.ingest([(0, [rec(0, "1-1", "t", 2, "a2")], True)])
    assert [sorted(c.id for c in b) for b in out] == [["a", "a2", "b"]]


def test_assembler_gives_up_on_a_partial_transaction_after_a_while(monkeypatch):
    import rxstate.feed.assembly as changes_mod

    metrics = FeedMetrics()
    out: list[tuple[Change, ...]] = []
    asm = Assembler(2, out.append, metrics)
    asm.ingest([(0, [rec(0, "1-0", "t", 2, "a")], True)])
    asm.tick()
    assert out == []
    monkeypatch.setattr(changes_mod, "_TX_WAIT_S", 0.0)
    asm.tick()
    assert [[c.id for c in b] for b in out] == [["a"]] and metrics.incomplete_transactions == 1


# -- mailboxes -----------------------------------------------------------------------------------------


def ch(cid, version, **fields):
    return Change("agents", cid, "update", version, fields)


def paused_box(policy, max_items=3):
    out: list = []
    errors: list = []
    box = Mailbox(
        out.append,
        on_error=errors.append,
        metrics=DeliveryMetrics(),
        max_items=max_items,
        overflow=policy,
        merge=coalesce_changes,
    )
    box.paused = True
    return box, out, errors


def test_mailbox_coalesces_by_entity_when_full():
    box, out, _ = paused_box("coalesce")
    for v in range(1, 6):
        box.offer((ch("a1", v, load=v),))
    box.offer((ch("a2", 1, status="busy"),))
    assert len(box) == 3 and box.metrics.coalesced == 3  # v1..v4 folded into one when v4 did not fit
    box.drain(None)
    flat = [c for b in out for c in b]
    assert [(c.id, c.version, dict(c.fields)) for c in flat] == [
        ("a1", 4, {"load": 4}),
        ("a1", 5, {"load": 5}),
        ("a2", 1, {"status": "busy"}),
    ]


def test_mailbox_drop_policies_and_error():
    box, out, _ = paused_box("drop_newest", 2)
    for v in range(1, 5):
        box.offer((ch("a1", v),))
    box.drain(None)
    assert [b[0].version for b in out] == [1, 2] and box.metrics.dropped == 2
    box, out, _ = paused_box("drop_oldest", 2)
    for v in range(1, 5):
        box.offer((ch("a1", v),))
    box.drain(None)
    assert [b[0].version for b in out] == [3, 4] and box.metrics.dropped == 2
    box, out, errors = paused_box("error", 2)
    for v in range(1, 5):
        box.offer((ch("a1", v),))
    assert wait_for(lambda: errors)
    assert isinstance(errors[0], BufferOverflow) and box.closed and box.metrics.overflows == 1


def test_mailbox_routes_a_raising_subscriber_to_its_on_error():
    errors: list = []

    def boom(batch):
        raise RuntimeError("subscriber bug")

    box = Mailbox(boom, on_error=errors.append, metrics=DeliveryMetrics(), merge=coalesce_changes)
    assert box.offer((ch("a1", 1),))
    box.drain(None)
    assert [str(e) for e in errors] == ["subscriber bug"] and box.closed and box.metrics.subscriber_errors == 1
    assert not box.offer((ch("a1", 2),))


def test_bad_subscription_options_are_refused(store):
    with pytest.raises(ValidationError):
        store.changes(overflow="block")  # would stall the shared feed
    with pytest.raises(ValidationError):
        store.changes(overflow="explode")
    with pytest.raises(ValidationError):
        store.changes(group="g", overflow="coalesce")  # a group must not lose changes
    with pytest.raises(ValidationError):
        store.changes(fields="status")


# -- read tracking -------------------------------------------------------------------------------------


def test_collection_reads_report_what_they_read(store, agents):
    agents.put("a1", Agent(name="x", status="busy"))
    with tracking.recording() as reads:
        agents.get("a1")
        agents.get("nope", None)
        agents.where(status="busy")
        agents.count()
    assert reads.entities == {
        ("agents", "a1"): None,
        ("agents", "nope"): None,
        ("agents", tracking.ALL): frozenset({"status"}),
    }
    with tracking.recording() as reads:
        agents.all()
    assert reads.entities == {("agents", tracking.ALL): None}
    tracking.track("x", "y")  # nobody recording: no effect, no error


# -- derived values, engine alone -------------------------------------------------------------------------


class Source:
    """A value the graph can depend on, reported through the same hook collections use."""

    def __init__(self, name, value):
        self.name, self.v = name, value

    def get(self):
        tracking.track("src", self.name)
        return self.v

    def change(self):
        return Change("src", self.name, "update", 0, {})


def test_diamond_is_glitch_free_and_computes_each_value_once_per_batch():
    graph = DerivedGraph()
    a = Source("a", 1)
    b = graph.derived(lambda: a.get() * 2, name="b")
    c = graph.derived(lambda: a.get() + 10, name="c")
    seen = []

    def d_fn():
        bv, cv = b.value, c.value
        seen.append((bv, cv))
        return bv + cv

    d = graph.derived(d_fn, name="d")
    emitted = []
    d.subscribe(emitted.append, scheduler=rxstate_immediate())
    assert d.value == 13 and emitted == [13]
    for i in range(2, 6):
        a.v = i
        graph.apply([a.change(), a.change()])  # two changes, one batch
    assert seen == [(2 * i, i + 10) for i in range(1, 6)]  # never a mix of old and new
    assert emitted == [3 * i + 10 for i in range(1, 6)]
    assert (b.computations, c.computations, d.computations) == (5, 5, 5)
    assert d.parents == {b, c} and b.sources == {("src", "a")} and d.sources == set()
    assert b.children == {d}


def test_unchanged_parent_does_not_recompute_children():
    graph = DerivedGraph()
    a = Source("a", 3)
    parity = graph.derived(lambda: a.get() % 2, name="parity")
    label = graph.derived(lambda: "odd" if parity.value else "even", name="label")
    a.v = 5
    graph.apply([a.change()])
    assert parity.computations == 2 and label.computations == 1 and label.value == "odd"


def test_cycles_raise():
    graph = DerivedGraph()
    a = Source("a", 0)
    holder = {}
    x = graph.derived(lambda: a.get() + (holder["y"].value if "y" in holder else 0), name="x")
    y = graph.derived(lambda: x.value + 1, name="y")
    holder["y"] = y
    errors = []
    x.subscribe(lambda v: None, errors.append, scheduler=rxstate_immediate())
    a.v = 1
    graph.apply([a.change()])
    with pytest.raises(CycleError):
        _ = x.value
    assert errors and isinstance(errors[0], CycleError)
    me = {}
    selfish = graph.derived(lambda: a.get() + (me["s"].value if "s" in me else 0), name="selfish")
    me["s"] = selfish
    graph.apply([a.change()])
    with pytest.raises(CycleError):
        _ = selfish.value


def test_errors_in_fn_are_kept_and_recover():
    graph = DerivedGraph()
    a = Source("a", 1)
    inv = graph.derived(lambda: 1 / a.get(), name="inv")
    a.v = 0
    graph.apply([a.change()])
    with pytest.raises(ZeroDivisionError):
        _ = inv.value
    a.v = 4
    graph.apply([a.change()])
    assert inv.value == 0.25 and inv.error is None


def test_a_failed_run_keeps_its_dependencies_and_is_retried_with_the_next_batch():
    graph = DerivedGraph()
    a, b = Source("a", 1), Source("b", 2)
    down = {"flag": False}

    def total():
        x = a.get()
        if down["flag"]:
            raise ConnectionError("server gone")
        return x + b.get()

    t = graph.derived(total, name="total")
    down["flag"] = True
    a.v = 10
    graph.apply([a.change()])
    assert isinstance(t.error, ConnectionError) and t.sources == {("src", "a"), ("src", "b")}
    down["flag"] = False
    graph.apply([Change("src", "unrelated", "update", 1, {})])  # any batch retries it
    assert t.value == 12 and t.error is None


def test_dispose_stops_updates_and_leaves_the_registry():
    graph = DerivedGraph()
    a = Source("a", 1)
    b = graph.derived(lambda: a.get(), name="b")
    completed = []
    b.subscribe(on_completed=lambda: completed.append(True), scheduler=rxstate_immediate())
    assert graph.values() == [b]
    b.dispose()
    a.v = 2
    graph.apply([a.change()])
    assert b.value == 1 and graph.values() == [] and b.computations == 1
    with pytest.raises(ValidationError):
        graph.derived(42)  # type: ignore[arg-type]


def rxstate_immediate():
    from reactivex.scheduler import ImmediateScheduler

    return ImmediateScheduler()


# -- derived values on a store (fakeredis) ------------------------------------------------------------------


def test_store_derived_recomputes_on_changes_it_read_only(store, agents):
    tasks = store.collection("tasks", Task)
    agents.put("a1", Agent(name="x", load=1))
    agents.put("a2", Agent(name="y", load=2))
    load = store.derived(lambda: agents.get("a1").load * 10, name="load")
    total = store.derived(lambda: load.value + len(tasks.ids()), name="total")
    assert (load.value, total.value) == (10, 10)
    assert store.derived_values() == [load, total]
    assert load.sources == {("agents", "a1")} and total.sources == {("tasks", "*")} and total.parents == {load}
    agents.incr("a2", "load", 1)  # not read: no recomputation
    agents.incr("a1", "load", 1)
    tasks.put("t1", Task(title="x"))
    assert wait_for(lambda: total.value == 21)
    time.sleep(0.05)
    assert load.computations == 2
    total.dispose()
    assert store.derived_values() == [load]


def test_aiter_iterates_changes(store, agents):
    import asyncio

    async def main():
        got = []
        it = store.changes(collection="agents").aiter()
        task = asyncio.ensure_future(_collect(it, got, 3))
        await asyncio.sleep(0.05)
        await asyncio.to_thread(lambda: [agents.put(f"a{i}", Agent(name="x")) for i in range(3)])
        await asyncio.wait_for(task, 5)
        return got

    got = asyncio.run(main())
    assert sorted(c.id for c in got) == ["a0", "a1", "a2"]


async def _collect(it, got, n):
    async for change in it:
        got.append(change)
        if len(got) == n:
            break


def test_subscribers_share_nothing_in_their_threads(store, agents):
    """A slow subscriber on the dispatcher doesn't hold back a fast one (fakeredis variant)."""
    fast: list[Change] = []
    slow: list[Change] = []
    started = threading.Event()

    def sleepy(c):
        started.set()
        time.sleep(0.3)
        slow.append(c)

    store.changes().subscribe(sleepy)
    store.changes().subscribe(fast.append)
    for i in range(5):
        agents.put(f"a{i}", Agent(name="x"))
    t0 = time.monotonic()
    assert wait_for(lambda: len(fast) == 5, 2)
    assert time.monotonic() - t0 < 0.25  # the sleeper alone needs 1.5 s for the five
    assert started.is_set() and len(slow) < 5


def test_a_foreign_record_and_a_raising_selection_do_not_stop_the_feed(store, agents):
    good: list[Change] = []
    errors: list[Exception] = []

    def picky(c):
        if c.id == "boom":
            raise KeyError("bad predicate")
        return True

    store.changes(where=picky).subscribe(lambda c: None, errors.append)
    store.changes().subscribe(good.append)
    store.change_feed.start()
    ks = store.keyspace
    store.client.xadd(ks.changes(0), {"v": "not-a-number"})  # not a change record
    agents.put("boom", Agent(name="x"))
    agents.put("a1", Agent(name="y"))
    assert wait_for(lambda: len(good) == 2)
    assert [type(e) for e in errors] == [KeyError]
    assert store.change_feed.metrics()["undecodable"] == 1


def test_a_stuck_subscriber_in_a_fanout_moves_aside_and_keeps_its_order():
    from rxstate.feed.delivery import Dispatcher, Fanout

    metrics = DeliveryMetrics()
    dispatcher = Dispatcher(metrics=metrics)
    fan = Fanout(dispatcher=dispatcher, metrics=metrics, merge=coalesce_changes)
    release = threading.Event()
    stuck_got: list[int] = []
    other_got: list[int] = []
    overlap = []
    inside = threading.Lock()

    def stuck(batch):
        if not inside.acquire(blocking=False):
            overlap.append(True)  # two calls at once: must never happen
            return
        try:
            if batch[0].version == 1:
                release.wait(5)
            stuck_got.extend(c.version for c in batch)
        finally:
            inside.release()

    fan.add(stuck, lambda e: None)
    fan.add(lambda batch: other_got.extend(c.version for c in batch), lambda e: None)
    for v in range(1, 6):
        if fan.offer((ch("a1", v),)):
            dispatcher.submit([fan])
        time.sleep(0.02)
    assert wait_for(lambda: other_got == [1, 2, 3, 4, 5], 2)  # not held up by the stuck one
    assert stuck_got == []
    release.set()
    assert wait_for(lambda: stuck_got and stuck_got[-1] == 5, 2)
    assert stuck_got == sorted(stuck_got) and stuck_got[0] == 1 and not overlap
    assert metrics.workers_added >= 1
    dispatcher.close()


def test_a_consumer_takes_over_changes_another_left_unacknowledged(store, agents):
    crashed: list[Exception] = []

    def crash(c):
        raise RuntimeError("consumer died while handling it")

    store.changes(group="crew", consumer="dead").subscribe(crash, crashed.append)
    store.change_feed.start()
    time.sleep(0.05)
    agents.put("a1", Agent(name="x"))
    assert wait_for(lambda: crashed)
    ks = store.keyspace
    p = ks.partition_of("a1")
    assert wait_for(lambda: store.client.xpending(ks.changes(p), "crew")["pending"] == 1)
    taken: list[Change] = []
    store.changes(group="crew", consumer="alive", claim_after=0.1).subscribe(taken.append)
    assert wait_for(lambda: [c.id for c in taken] == ["a1"], 5)
    assert wait_for(lambda: store.client.xpending(ks.changes(p), "crew")["pending"] == 0)
    with pytest.raises(ValidationError):
        store.changes(claim_after=1.0)  # only with a group


def test_a_replay_from_before_the_retained_changes_reports_the_gap(rx_fake_store):
    store = rx_fake_store
    agents = store.collection("agents", Agent)
    first = agents.put("a1", Agent(name="x"))
    ks = store.keyspace
    p = ks.partition_of("a1")
    for i in range(30):
        agents.update("a1", load=i % 100)
    store.client.xtrim(ks.changes(p), maxlen=5, approximate=False)  # as a small change_retention would
    feed = rxstate.ChangeFeed(store, since={p: first.offset})
    gaps = []
    feed.on_gap(lambda part, last, oldest: gaps.append((part, last)))
    got: list[Change] = []
    feed.attach(
        Mailbox(lambda batch: got.extend(batch), on_error=print, metrics=DeliveryMetrics(), merge=coalesce_changes)
    )
    assert wait_for(lambda: len(got) == 5)  # what is left, and a report of what is not
    assert gaps == [(p, first.offset)] and feed.metrics()["gaps"] == 1
    assert [c.version for c in got] == list(range(27, 32))
    feed.stop()
