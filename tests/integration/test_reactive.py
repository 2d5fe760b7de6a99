"""Change feed, watching and derived values against a real server, across stores."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import rxstate
from rxstate.feed.change import Change
from tests.helpers import wait_for
from tests.models import Agent, Task


@pytest.fixture
def writer(rx_redis_backend):
    return rx_redis_backend.store(actor="writer")


@pytest.fixture
def reader(rx_redis_backend):
    return rx_redis_backend.store(actor="reader")


def test_changes_reach_a_subscriber_in_another_store(writer, reader):
    agents = writer.collection("agents", Agent)
    reader.collection("agents", Agent)
    got: list[Change] = []
    reader.changes(collection="agents").subscribe(got.append)
    for i in range(50):
        agents.put(f"a{i}", Agent(name=f"n{i}", load=i))
    assert wait_for(lambda: len(got) == 50)
    assert {c.id: c.fields["load"] for c in got} == {f"a{i}": i for i in range(50)}
    assert {c.actor for c in got} == {"writer"}
    assert reader.change_feed.metrics()["records"] == 50


def test_diamond_over_several_collections_is_glitch_free_once_per_batch(writer, reader):
    """b reads an agent, c reads a task and the agent, d reads b and c; one atomic write of both."""
    agents, tasks = writer.collection("agents", Agent), writer.collection("tasks", Task)
    r_agents, r_tasks = reader.collection("agents", Agent), reader.collection("tasks", Task)
    agents.put("a1", Agent(name="x", load=1))
    tasks.put("t1", Task(title="t", priority=1))
    b = reader.derived(lambda: r_agents.get("a1").load, name="b")
    c = reader.derived(lambda: r_tasks.get("t1").priority * 100 + r_agents.get("a1").load, name="c")
    seen: list[tuple[int, int]] = []

    def d_fn():
        pair = (b.value, c.value)
        seen.append(pair)
        return pair

    d = reader.derived(d_fn, name="d")
    emitted: list[tuple[int, int]] = []
    d.subscribe(emitted.append)
    assert wait_for(lambda: emitted == [(1, 101)])
    for i in range(2, 7):
        ops = [
            agents._op(
                "update", "a1", writer.keyspace.partition_of("a1"), sets=agents._codec.encode_fields({"load": i})
            ),
            tasks._op(
                "update", "t1", writer.keyspace.partition_of("t1"), sets=tasks._codec.encode_fields({"priority": i})
            ),
        ]
        writer.writer.mutate(ops, txid=f"tx{i}")
        assert wait_for(lambda i=i: d.value == (i, i * 100 + i))
    time.sleep(0.05)
    # every computation saw a consistent pair: the load in b always equals the load inside c
    assert all(cv % 100 == bv and cv // 100 == bv for bv, cv in seen)
    assert emitted == [(i, i * 101) for i in range(1, 7)]
    assert (b.computations, c.computations, d.computations) == (6, 6, 6)
    assert {x.name for x in reader.derived_values()} == {"b", "c", "d"}
    assert d.parents == {b, c} and c.sources == {("tasks", "t1"), ("agents", "a1")}


def test_a_raising_and_a_sleeping_subscriber_do_not_delay_others(writer, reader):
    agents = writer.collection("agents", Agent)
    fast: list[tuple[float, Change]] = []
    slow: list[Change] = []
    errors: list[Exception] = []

    def sleeper(c):
        time.sleep(0.2)
        slow.append(c)

    def raiser(c):
        raise ValueError("subscriber bug")

    reader.changes().subscribe(sleeper)
    reader.changes().subscribe(raiser, errors.append)
    reader.changes().subscribe(lambda c: fast.append((time.monotonic(), c)))
    reader.change_feed.start()
    sent = []
    for i in range(20):
        agents.put(f"a{i}", Agent(name="x"))
        sent.append(time.monotonic())
        time.sleep(0.002)
    assert wait_for(lambda: len(fast) == 20, 2)
    delays = [got - put for (got, _c), put in zip(fast, sent, strict=True)]
    assert max(delays) < 0.15, delays  # the sleeper needs 0.2 s per change
    assert len(slow) < 5
    assert [str(e) for e in errors] == ["subscriber bug"]
    assert reader.change_feed.metrics()["subscriber_errors"] == 1


def test_a_transaction_spanning_partitions_arrives_as_one_batch(writer, reader):
    agents = writer.collection("agents", Agent)
    ids = ["a1", "a2"]
    assert writer.keyspace.partition_of("a1") != writer.keyspace.partition_of("a2")
    batches: list[tuple[Change, ...]] = []
    reader.changes(batched=True).subscribe(batches.append)
    reader.change_feed.start()
    ops = [agents.put_op(i, Agent(name=i)) for i in ids]
    writer.writer.mutate(ops, txid="t1")
    agents.put("a3", Agent(name="after"))
    assert wait_for(lambda: sum(len(b) for b in batches) == 3)
    tx = [b for b in batches if any(c.txid == "t1" for c in b)]
    assert len(tx) == 1 and sorted(c.id for c in tx[0] if c.txid == "t1") == ids
    assert {c.partitions for c in tx[0] if c.txid == "t1"} == {2}


def test_asyncio_delivery_on_the_loop_and_async_for(writer, reader):
    agents = writer.collection("agents", Agent)

    async def main():
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()
        on_loop: list[bool] = []
        reader.changes(loop=loop).subscribe(lambda c: on_loop.append(threading.get_ident() == loop_thread))
        got = []
        ready = asyncio.Event()

        async def consume():
            it = reader.changes(collection="agents").aiter()
            ready.set()
            async for change in it:
                got.append(change.id)
                if len(got) == 5:
                    return

        task = asyncio.create_task(consume())
        await ready.wait()
        await asyncio.sleep(0.05)
        await asyncio.to_thread(lambda: [agents.put(f"a{i}", Agent(name="x")) for i in range(5)])
        await asyncio.wait_for(task, 5)
        for _ in range(100):
            if len(on_loop) == 5:
                break
            await asyncio.sleep(0.01)
        return got, on_loop

    got, on_loop = asyncio.run(main())
    assert sorted(got) == [f"a{i}" for i in range(5)]
    assert on_loop == [True] * 5


def test_consumer_group_restart_continues_and_redelivers_unacknowledged(writer, reader, rx_redis_backend):
    agents = writer.collection("agents", Agent)
    first: list[str] = []
    errors: list[Exception] = []

    def take(c):
        if c.id == "a3":
            raise RuntimeError("crash while handling a3")
        first.append(c.id)

    sub = reader.changes(group="planner", consumer="p1").subscribe(take, errors.append)
    time.sleep(0.05)
    for i in range(5):
        agents.put(f"a{i}", Agent(name="x"))
        time.sleep(0.005)
    assert wait_for(lambda: errors)
    sub.dispose()
    for i in range(5, 8):
        agents.put(f"a{i}", Agent(name="x"))
    restarted = rx_redis_backend.store(actor="reader-again")
    second: list[str] = []
    restarted.changes(group="planner", consumer="p1").subscribe(lambda c: second.append(c.id))
    # a3 (never acknowledged) comes again, then what was written while it was away; nothing acked twice
    assert wait_for(lambda: {"a3", "a5", "a6", "a7"} <= set(second)), (first, second)
    time.sleep(0.1)
    assert not set(second) & set(first)
    assert set(first) | set(second) == {f"a{i}" for i in range(8)}


def test_watch_sees_expiry(writer, reader):
    agents = writer.collection("agents", Agent)
    watched = reader.collection("agents", Agent)
    agents.put("a1", Agent(name="x"), ttl=0.05)
    seen: list[Change] = []
    watched.watch("a1").subscribe(seen.append)
    assert wait_for(lambda: seen)
    time.sleep(0.08)
    agents.reap()
    assert wait_for(lambda: len(seen) == 2)
    assert [c.op for c in seen] == ["snapshot", "expire"] and seen[1].value is None


def test_store_close_stops_the_feed_threads(rx_redis_backend):
    store = rx_redis_backend.store()
    store.changes().subscribe(lambda c: None)
    feed = store.change_feed
    threads = [r.thread for r in feed._readers]
    store.close()
    assert wait_for(lambda: not any(t.is_alive() for t in threads), 3)


def test_public_names():
    for name in ("Change", "ChangeFeed", "Derived", "CycleError", "aiter", "ops"):
        assert name in rxstate.__all__ and hasattr(rxstate, name)
