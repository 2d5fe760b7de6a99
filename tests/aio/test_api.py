"""Every public method of the asyncio front, awaited, on fakeredis (the contract suite covers semantics)."""

from __future__ import annotations

import asyncio
import time

import fakeredis
import pytest
import reactivex

import rxstate
import rxstate.aio
from rxstate.errors import ConflictError, LockError, NotFound, ValidationError
from tests.event_models import Order, Paid, Placed, apply_order
from tests.models import Agent, Task

pytestmark = pytest.mark.asyncio


async def test_collection_reads_and_writes(astore):
    agents = await astore.collection("agents", Agent, indexes=["status"])
    assert (await agents.put("a1", Agent(name="x"))).version == 1
    assert (await agents.create("a2", Agent(name="y", status="busy"))).version == 1
    assert (await agents.update("a1", status="busy", expected_version=1)).version == 2
    assert (await agents.update("a1", lambda a: a.model_copy(update={"load": a.load + 1}))).value.load == 1
    assert await agents.incr("a1", "load", 2) == 3
    with pytest.raises(ConflictError):
        await agents.update("a1", status="idle", expected_version=1)
    assert (await agents.get("a1")).load == 3
    assert (await agents.get_versioned("a1")).version == 4
    assert await agents.exists("a1") and not await agents.exists("zz")
    assert sorted(await agents.get_many(["a1", "a2", "zz"])) == ["a1", "a2"]
    assert [v.version for v in await agents.get_many_versioned(["a2"])] == [1]
    assert sorted(a.name for a in await agents.where(status="busy")) == ["x", "y"]
    assert sorted(v.version for v in await agents.where_versioned(status="busy")) == [1, 4]
    assert await agents.count() == 2 and sorted(await agents.ids()) == ["a1", "a2"]
    assert len(await agents.all()) == 2
    await agents.put_many({"a3": Agent(name="z"), "a4": Agent(name="w")})
    await agents.update_many({"a3": {"status": "failed"}, "a4": {"status": "failed"}})
    assert [a.status for a in (await agents.get_many(["a3", "a4"])).values()] == ["failed", "failed"]
    assert await agents.delete("a1") and not await agents.delete("a1")
    with pytest.raises(NotFound):
        await agents.get("a1")
    assert agents.name == "agents" and agents.model is Agent and agents.sync is astore.sync.collections["agents"]


async def test_bad_input_raises_and_leaves_state_alone(astore):
    agents = await astore.collection("agents", Agent)
    await agents.put("a1", Agent(name="x"))
    before = await astore.run(dump, astore.sync.client)
    with pytest.raises(ValidationError):
        await agents.update("a1", load=1000)  # le=100
    with pytest.raises(ValidationError):
        await agents.incr("a1", "name", 1)
    assert await astore.run(dump, astore.sync.client) == before


def dump(client):
    from tests.helpers import dump_all

    return dump_all(client)


async def test_transaction_commit_rollback_and_transact(astore):
    agents = await astore.collection("agents", Agent)
    tasks = await astore.collection("tasks", Task)
    await agents.put("a1", Agent(name="x"))
    async with astore.transaction() as tx:
        agent = await tx.get(agents, "a1")
        assert (await tx.get_versioned(agents, "a1")).version == 1
        await tx.update(agents, "a1", load=agent.load + 1)
        await tx.incr(agents, "a1", "load", 1)
        await tx.put(tasks, "t1", Task(title="review", owner="a1"))
        await tx.create(tasks, "t2", Task(title="plan"))
    assert tx.state == "committed" and tx.versions[("tasks", "t1")] == 1
    assert (await agents.get("a1")).load == 2
    tx = astore.transaction()
    async with tx:
        await tx.delete(tasks, "t2")
        await tx.rollback()
    assert tx.state == "rolled back" and await tasks.exists("t2")
    tx = astore.transaction()
    async with tx:
        await tx.delete(tasks, "t2")
        assert await tx.commit() == {("tasks", "t2"): 2}

    async def bump(tx):
        a = await tx.get(agents, "a1")
        await tx.update(agents, "a1", load=a.load + 1)
        return a.load + 1

    assert await asyncio.gather(*(astore.transact(bump, retries=20) for _ in range(5))) is not None
    assert (await agents.get("a1")).load == 7


async def test_batch(astore):
    agents = await astore.collection("agents", Agent)
    async with astore.batch() as batch:
        put = batch.put(agents, "a1", Agent(name="x"))
        batch.create(agents, "a2", Agent(name="y"))
        batch.update(agents, "a1", status="busy")
        batch.incr(agents, "a2", "load", 4)
        gone = batch.delete(agents, "zz")
        assert len(batch) == 5
    assert put.result().version == 1 and gone.result() is False
    assert (await agents.get("a1")).status == "busy" and (await agents.get("a2")).load == 4
    batch = astore.batch(atomic=True)
    async with batch:
        batch.put(agents, "a3", Agent(name="z"))
        assert len(await batch.flush()) == 1
    assert await agents.exists("a3")


async def test_locks_wait_without_blocking_the_loop(astore):
    order = []

    async def holder():
        async with astore.lock("printer", ttl=5) as lease:
            order.append(("held", lease.token))
            await asyncio.sleep(0.05)  # the waiter's backoff must not stall this task
            order.append(("released", lease.token))

    async def waiter():
        await asyncio.sleep(0.005)
        async with astore.lock("printer", ttl=5, timeout=5) as lease:
            order.append(("held", lease.token))

    await asyncio.gather(holder(), waiter())
    assert order == [("held", 1), ("released", 1), ("held", 2)]
    shared = astore.lock("shared", ttl=5, timeout=5)  # one lock object, used by several tasks at once
    tokens = []

    async def use(i):
        async with shared as lease:
            tokens.append(lease.token)
            await asyncio.sleep(0.001 * i)

    await asyncio.gather(*(use(i) for i in range(3)))
    assert sorted(tokens) == [1, 2, 3]
    lock = astore.lock("printer", ttl=5)
    lease = await lock.acquire()
    with pytest.raises(LockError):
        await astore.lock("printer").acquire(blocking=False)
    await astore.run(lease.release)


async def test_events(astore):
    orders = await astore.events("orders", state=Order, events=[Placed, Paid], reducer=apply_order)
    assert (await orders.append("o1", [Placed(sku="apple", qty=2)])).version == 1
    await orders.append("o1", [Paid(amount_cents=250)], expected_version=1)
    assert (await orders.get("o1")).status == "paid"
    assert (await orders.load("o1")).version == 2
    assert (await orders.replay("o1", to_version=1)).value.status == "placed"
    now = time.time()
    assert (await orders.state_at("o1", time=now + 60)).version == 2
    assert await orders.version("o1") == 2 and await orders.exists("o1") and await orders.ids() == ["o1"]
    assert [e.type for e in await orders.history("o1")] == ["Placed", "Paid"]
    assert await orders.snapshot("o1") == 2
    assert orders.name == "orders"


async def test_changes_and_watch(astore):
    agents = await astore.collection("agents", Agent)
    await agents.put("a1", Agent(name="x"))
    seen = []
    async for change in agents.watch("a1"):
        seen.append((change.op, change.version))
        if change.op == "snapshot":
            await agents.update("a1", status="busy")
        else:
            break
    assert seen == [("snapshot", 1), ("update", 2)]
    ops = []
    async for change in astore.changes(since="0", collection="agents"):
        ops.append(change.op)
        if len(ops) == 2:
            break
    assert ops == ["create", "update"]
    first = agents.watch("a1").observable().pipe(reactivex.operators.first())
    assert (await asyncio.to_thread(first.run)).version == 2
    listed = []
    async for change in agents.watch_all():
        listed.append(change.id)
        break
    assert listed == ["a1"]


async def test_derived_awaits_reads_and_recomputes(astore):
    agents = await astore.collection("agents", Agent)
    await agents.put("a1", Agent(name="x", status="busy"))

    async def busy():
        return sum(a.status == "busy" for a in await agents.all())

    derived = await astore.derived(busy, name="busy")
    assert derived.value == 1
    await agents.put("a2", Agent(name="y", status="busy"))
    loop = asyncio.get_running_loop()
    got = asyncio.Event()
    sub = derived.subscribe(lambda n: n == 2 and loop.call_soon_threadsafe(got.set))
    await asyncio.wait_for(got.wait(), 10)
    sub.dispose()
    plain = await astore.derived(lambda: 41 + 1)
    assert plain.value == 42

    async def pauses_first():  # computed on the loop, a derived function may await other things too
        await asyncio.sleep(0.001)
        return await agents.count()

    assert (await astore.derived(pauses_first)).value == 2


async def test_run_and_connect_shapes():
    client = fakeredis.FakeAsyncRedis()
    store = await rxstate.aio.connect(client, namespace="crew")
    assert repr(store).startswith("<AsyncStore namespace='crew'") and store.namespace == "crew"
    assert await store.run(lambda x, y=0: x + y, 1, y=2) == 3
    assert isinstance(store.sync, rxstate.Store) and store.actor == store.sync.actor
    await store.aclose()
    with pytest.raises(ValidationError, match="synchronous client"):
        await rxstate.aio.connect(fakeredis.FakeRedis())
    with pytest.raises(ValidationError, match="principal"):
        await rxstate.aio.connect(client, principal="ann", password="x")
    with pytest.raises(ValidationError, match="not both"):
        await rxstate.aio.connect(client, client=client)
    with pytest.raises(ValidationError, match="embedded"):
        await rxstate.aio.connect("redis://127.0.0.1:1/0", path="x")


async def test_derived_off_the_loop_may_only_await_reads():
    from rxstate.aio.store import _drive

    async def sleeps():
        await asyncio.sleep(0)

    with pytest.raises(ValidationError, match="awaited something other"):
        _drive(sleeps())

    async def reads():
        return 5

    assert _drive(reads()) == 5
