"""Event sourcing on a real server: concurrent writers, live XREAD BLOCK subscriptions, projection restarts."""

from __future__ import annotations

import threading
import time
from collections import Counter as Tally

import pytest

import rxstate
from rxstate.errors import ConflictError
from tests.event_models import ORDER_EVENTS, Added, Counter, Order, Paid, Placed, apply_counter, apply_order


def open_counters(store, **kw):
    return store.events("counters", state=Counter, events=[Added], reducer=apply_counter, **kw)


@pytest.mark.parametrize("project_to", [None, "counter_view"])
def test_two_writers_same_expected_version_one_wins(rx_redis_backend, project_to):
    stores = [rx_redis_backend.store(actor=f"w{i}") for i in range(2)]
    colls = [open_counters(s, project_to=project_to, snapshot_every=5) for s in stores]
    for round_ in range(20):
        barrier = threading.Barrier(2)
        outcomes: list[object] = [None, None]

        def write(i: int, round_: int = round_, barrier: threading.Barrier = barrier, outcomes=outcomes) -> None:
            barrier.wait()
            try:
                outcomes[i] = colls[i].append("c", [Added(n=1, tag=f"w{i}")], expected_version=round_)
            except ConflictError as exc:
                outcomes[i] = exc

        threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        kinds = sorted(type(o).__name__ for o in outcomes)
        assert kinds == ["AppendResult", "ConflictError"], outcomes
    assert colls[0].version("c") == 20
    loaded = colls[1].load("c")
    assert loaded.value.total == 20 and loaded.value.count == 20
    if project_to:
        assert stores[0].collection(project_to, Counter).get("c") == loaded.value


def test_unchecked_concurrent_appends_with_projection_lose_nothing(rx_redis_backend):
    stores = [rx_redis_backend.store() for _ in range(4)]
    colls = [open_counters(s, project_to="counter_view", snapshot_every=7) for s in stores]

    def work(c) -> None:
        for _ in range(25):
            c.append("c", [Added(n=1)])

    threads = [threading.Thread(target=work, args=(c,)) for c in colls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert colls[0].load("c").value.total == 100
    assert stores[0].collection("counter_view", Counter).get("c").total == 100
    assert colls[0].replay("c", use_snapshots=False).value.total == 100


def test_a_refused_projection_write_appends_nothing(rx_redis_store):
    counters = open_counters(rx_redis_store, project_to="counter_view")
    counters.append("c", [Added(n=1)])
    view_key = rx_redis_store.keyspace.entity("counter_view", "c", counters.partition("c"))
    rx_redis_store.client.delete(view_key)
    rx_redis_store.client.set(view_key, "not a hash")  # the mutate part of the script now fails
    with pytest.raises(Exception, match="WRONGTYPE"):
        counters.append("c", [Added(n=5)])
    assert counters.version("c") == 1
    assert rx_redis_store.client.xlen(counters.key("c")) == 1
    assert rx_redis_store.client.xlen(rx_redis_store.keyspace.event_log(counters.partition("c"))) == 1


def test_live_subscription_catches_up_then_blocks_for_new_events(rx_redis_backend):
    writer, reader = rx_redis_backend.store(), rx_redis_backend.store()
    w = writer.events("orders", state=Order, events=ORDER_EVENTS, reducer=apply_order)
    r = reader.events("orders", state=Order, events=ORDER_EVENTS, reducer=apply_order)
    w.append("o1", [Placed(sku="a", qty=1)])
    one = r.subscribe("o1", after="start", block=0.2)
    category = r.subscribe(after="start", block=5.0)
    namespace = reader.event_log().subscribe(after="end", block=0.2)
    assert [e.type for e in one.poll()] == ["Placed"]
    assert [e.aggregate_id for e in category.poll()] == ["o1"]
    assert namespace.poll() == []

    got: list[tuple[str, float]] = []

    def follow() -> None:
        for event in category:
            got.append((event.aggregate_id, time.monotonic()))
            if len(got) == 2:
                category.close()

    t = threading.Thread(target=follow)
    t.start()
    time.sleep(0.3)  # the follower is now blocked in XREAD BLOCK
    sent = time.monotonic()
    w.append("o2", [Placed(sku="b", qty=2)])
    w.append("o1", [Paid(amount_cents=10)])
    t.join(5)
    assert not t.is_alive()
    assert [a for a, _ in got] == ["o2", "o1"]
    assert got[0][1] - sent < 1.0  # woken by the append, well before the 5 s block ends
    assert [e.type for e in one.poll(timeout=1)] == ["Paid"]
    # partitions interleave: compare as a set
    assert sorted((e.aggregate_id, e.type) for e in namespace.poll(timeout=1)) == [("o1", "Paid"), ("o2", "Placed")]
    # a position resumes exactly where a subscription stopped
    resumed = r.subscribe(after=category.position)
    assert resumed.poll() == []
    w.append("o3", [Placed(sku="c", qty=3)])
    assert [e.aggregate_id for e in resumed.poll(timeout=1)] == ["o3"]


def test_projection_restart_without_loss_or_duplication(rx_redis_backend):
    writer = rx_redis_backend.store()
    orders = writer.events("orders", state=Order, events=ORDER_EVENTS, reducer=apply_order)
    other = writer.events("counters", state=Counter, events=[Added], reducer=apply_counter)
    handled: Tally[str] = Tally()
    appended: list[str] = []

    def append_some(n: int, start: int) -> None:
        for i in range(start, start + n):
            appended.extend(orders.append(f"o{i % 7}", [Placed(sku="s", qty=1)]).event_ids)
            other.append(f"c{i % 3}", [Added(n=1)])  # another category: must not reach the projection

    append_some(30, 0)
    first = rx_redis_backend.store().events("orders", state=Order, events=ORDER_EVENTS, reducer=apply_order)
    proj = first.project("seen", lambda e: handled.update([e.event_id]), block=0.05).start()
    append_some(30, 30)  # while it runs
    deadline = time.monotonic() + 5
    while not handled and time.monotonic() < deadline:
        time.sleep(0.005)
    proj.stop()  # the "process" stops part-way
    assert 0 < sum(handled.values()) <= 60

    append_some(30, 60)  # while nothing runs
    restarted = rx_redis_backend.store().events("orders", state=Order, events=ORDER_EVENTS, reducer=apply_order)
    proj2 = restarted.project("seen", lambda e: handled.update([e.event_id]), block=0.05).start()
    append_some(10, 90)
    assert proj2.wait_idle(10)
    proj2.stop()
    assert set(handled) == set(appended)
    assert max(handled.values()) == 1 and sum(handled.values()) == 100


def test_failing_handler_is_retried_from_its_event(rx_redis_store):
    orders = rx_redis_store.events("orders", state=Order, events=ORDER_EVENTS, reducer=apply_order)
    ids = [orders.append("o1", [Placed(sku="s", qty=1)]).event_ids[0] for _ in range(10)]
    seen: list[str] = []

    def flaky(event) -> None:
        if event.version == 6 and ids[5] not in failed:
            failed.add(ids[5])
            raise RuntimeError("boom")
        seen.append(event.event_id)

    failed: set[str] = set()
    proj = orders.project("flaky", flaky)
    with pytest.raises(RuntimeError):
        proj.run()
    assert seen == ids[:5]
    assert orders.project("flaky", flaky).run() == 5
    assert seen == ids
    p = orders.partition("o1")
    assert proj.checkpoint()[p] == orders.history("o1")[-1].position


class Stat(rxstate.Model):
    count: int = 0
    last: str = ""


def counting(stats):
    def handler(event, batch) -> None:
        old = batch.get(stats, event.aggregate_id, Stat())
        batch.put(stats, event.aggregate_id, Stat(count=old.count + 1, last=event.type))

    return handler


def test_atomic_projection_applies_each_event_exactly_once_across_racing_runners(rx_redis_backend):
    writer = rx_redis_backend.store()
    orders = writer.events("orders", state=Order, events=ORDER_EVENTS, reducer=apply_order)
    for i in range(120):
        orders.append(f"o{i % 5}", [Placed(sku="s", qty=1)])
    runners = []
    for _ in range(3):
        store = rx_redis_backend.store()
        coll = store.events("orders", state=Order, events=ORDER_EVENTS, reducer=apply_order)
        runners.append(coll.project("stats", counting(store.collection("order_stats", Stat)), atomic=True))
    errors: list[BaseException] = []

    def run(proj) -> None:
        try:
            proj.run()
        except ConflictError as exc:  # another runner moved the checkpoint first
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(r,)) for r in runners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = orders.project("stats", counting(writer.collection("order_stats", Stat)), atomic=True)
    final.run()  # finishes whatever the racing runners left
    stats = writer.collection("order_stats", Stat)
    assert {i: stats.get(f"o{i}").count for i in range(5)} == dict.fromkeys(range(5), 24)


def test_atomic_projection_failure_leaves_entities_and_checkpoint_unchanged(rx_redis_store):
    orders = rx_redis_store.events("orders", state=Order, events=ORDER_EVENTS, reducer=apply_order)
    stats = rx_redis_store.collection("order_stats", Stat)
    for _ in range(4):
        orders.append("o1", [Placed(sku="s", qty=1)])
    p = orders.partition("o1")
    proj = orders.project("stats", counting(stats), atomic=True)
    stat_key = rx_redis_store.keyspace.entity("order_stats", "o1", p)
    proj.run()
    assert stats.get("o1").count == 4
    before = proj.checkpoint()[p]
    orders.append("o1", [Placed(sku="s", qty=1)])
    rx_redis_store.client.delete(stat_key)
    rx_redis_store.client.set(stat_key, "not a hash")  # the mutate part of project.lua fails
    with pytest.raises(Exception, match="WRONGTYPE"):
        orders.project("stats", lambda e, b: b.put(stats, "o1", Stat(count=99)), atomic=True).run()
    assert proj.checkpoint()[p] == before
    assert rx_redis_store.client.get(stat_key) == b"not a hash"
    rx_redis_store.client.delete(stat_key)
    assert orders.project("stats", lambda e, b: b.put(stats, "o1", Stat(count=5)), atomic=True).run() == 1
    assert stats.get("o1").count == 5 and proj.checkpoint()[p] == orders.history("o1")[-1].position
