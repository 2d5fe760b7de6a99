"""The bridge: coroutines' commands go through redis.asyncio, threads' through the synchronous client, and
no kernel lock is held across a server call (two tasks on one thread would deadlock on it)."""

from __future__ import annotations

import asyncio
import threading

import fakeredis
import pytest
import redis.asyncio

import rxstate.aio
from rxstate.aio.bridge import bridged, in_bridge, wait_for
from rxstate.errors import ValidationError
from tests.models import Agent, Task


class Counting(fakeredis.FakeAsyncRedis):
    """A fake asyncio client counting the commands it sends."""

    sent = 0

    async def execute_command(self, *args, **options):
        type(self).sent += 1
        return await super().execute_command(*args, **options)


@pytest.mark.asyncio
async def test_coroutines_use_the_asyncio_client_and_threads_the_synchronous_one():
    Counting.sent = 0
    async with rxstate.aio.connect(Counting(), cache=False, reap_interval=None) as store:
        agents = await store.collection("agents", Agent)
        before = Counting.sent
        await agents.put("a1", Agent(name="x"))
        await agents.get("a1")
        assert Counting.sent >= before + 2
        before = Counting.sent
        # off the loop (a thread of the application, or of rxstate's background machinery): synchronous
        got = await asyncio.to_thread(lambda: agents.sync.get("a1"))
        assert got.name == "x" and Counting.sent == before


@pytest.mark.asyncio
async def test_pipelines_queue_and_execute_awaited():
    client = fakeredis.FakeAsyncRedis()
    async with rxstate.aio.connect(client) as store:
        bridged_client = store.sync.client

        def pipelined():
            pipe = bridged_client.pipeline(transaction=True)
            pipe.set("k", b"1").incr("k")
            assert len(pipe) == 2
            return pipe.execute()

        assert await bridged(pipelined) == [True, 2]

        def watched():
            with bridged_client.pipeline() as pipe:
                pipe.watch("k")
                current = int(pipe.get("k"))  # immediate after watch(), awaited
                pipe.multi()
                pipe.set("k", current + 1)
                return pipe.execute()

        assert await bridged(watched) == [True]
        assert await client.get("k") == b"3"


@pytest.mark.asyncio
async def test_an_error_reply_is_thrown_into_the_synchronous_code():
    client = fakeredis.FakeAsyncRedis()
    async with rxstate.aio.connect(client) as store:
        await client.set("s", b"text")

        def incr_text():
            try:
                store.sync.client.incr("s")
            except redis.ResponseError as exc:
                return f"caught: {exc}"
            return "no error"

        assert (await bridged(incr_text)).startswith("caught: value is not an integer")


def test_wait_for_outside_a_bridged_greenlet_is_refused():
    assert not in_bridge()
    with pytest.raises(ValidationError, match="bridged"):
        wait_for(asyncio.sleep(0))


@pytest.mark.parametrize("same_name", [True, False])
def test_opening_collections_from_many_tasks_at_once_does_not_deadlock(rx_server, same_name):
    """The store's lock was held across the schema registration: a second task opening a collection
    meanwhile blocked the loop's thread on it, and the first could never finish."""
    results: list[object] = []

    async def main():
        client = redis.asyncio.Redis(host=rx_server.host, port=rx_server.port)
        async with rxstate.aio.connect(client, namespace=f"dl{same_name}", reap_interval=None) as store:
            names = ["tasks"] * 8 if same_name else [f"tasks{i}" for i in range(8)]
            opened = await asyncio.gather(*(store.collection(n, Task) for n in names))
            results.append({c.sync.name for c in opened} == set(names))
            results.append(len({id(c.sync) for c in opened}) == len(set(names)))  # one object per name
        await client.aclose()

    runner = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    runner.start()
    runner.join(20)
    assert not runner.is_alive(), "the event loop deadlocked"
    assert results == [True, True]


def test_change_feeds_started_from_many_tasks_at_once_do_not_deadlock(rx_server):
    """The feed held its start lock while reading the streams' last offsets: a second task starting it
    meanwhile blocked the loop's thread on the lock."""
    results: list[object] = []

    async def main():
        client = redis.asyncio.Redis(host=rx_server.host, port=rx_server.port)
        async with rxstate.aio.connect(client, namespace="feeds", reap_interval=None) as store:
            tasks = await store.collection("tasks", Task)
            started = asyncio.Event()
            subscribed = 0

            async def first_change(collection: str) -> str:
                nonlocal subscribed
                stream = store.changes(collection=collection)
                iterator = aiter(stream)
                pending = asyncio.ensure_future(anext(iterator))
                await asyncio.sleep(0)
                subscribed += 1
                if subscribed == 4:
                    started.set()
                change = await pending
                await iterator.aclose()
                return change.id

            readers = [asyncio.ensure_future(first_change("tasks")) for _ in range(4)]
            await started.wait()
            while store.sync.change_feed.metrics()["subscribers"] < 4:  # all subscribed: none misses the put
                await asyncio.sleep(0.001)
            await tasks.put("t1", Task(title="x"))
            results.append(await asyncio.wait_for(asyncio.gather(*readers), 10))
        await client.aclose()

    runner = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    runner.start()
    runner.join(20)
    assert not runner.is_alive(), "the event loop deadlocked"
    assert results == [["t1"] * 4]
