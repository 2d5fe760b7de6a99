"""The local cache under asyncio (foreign writes, a dropped invalidation connection) and the embedded server."""

from __future__ import annotations

import asyncio
import threading

import pytest
import redis.asyncio

import rxstate.aio
import rxstate.server.lease
from tests.models import Task

pytestmark = pytest.mark.asyncio


async def eventually(read, expected, timeout=5.0):
    """Await until ``await read()`` returns ``expected`` (polled), or fail."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        got = await read()
        if got == expected:
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"still {got!r}, not {expected!r}")


@pytest.fixture
def raw(rx_server):
    client = rx_server.client()
    yield client
    client.close()


@pytest.mark.parametrize("mode", ["tracking", "keyspace"])
async def test_foreign_writes_evict_cached_entries(rx_server, raw, mode):
    client = redis.asyncio.Redis(host=rx_server.host, port=rx_server.port)
    async with rxstate.aio.connect(client, namespace=f"c{mode}", invalidation=mode, reap_interval=None) as store:
        assert store.sync.cache is not None and store.sync.cache.stats().mode == mode
        tasks = await store.collection("tasks", Task)
        await tasks.put("t", Task(title="x", priority=1))
        assert (await tasks.get("t")).priority == 1 and (await tasks.get("t")).priority == 1
        assert store.sync.cache.stats().hits >= 1
        raw.hset(tasks.sync.key("t"), "priority", 7)  # a redis-cli style write
        await eventually(lambda: _priority(tasks), 7)
        raw.delete(tasks.sync.key("t"))
        await eventually(lambda: _priority(tasks), None)
        stats = store.sync.cache.stats()
        # seen by an invalidation, or (tracking merges reports) by the re-read that checks a merged echo
        assert stats.invalidations + stats.refreshes >= 1
    await client.aclose()


async def _priority(tasks):
    got = await tasks.get("t", None)
    return None if got is None else got.priority


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["tracking", "keyspace"])
async def test_a_dropped_invalidation_connection_never_serves_stale(rx_server, raw, mode):
    client = redis.asyncio.Redis(host=rx_server.host, port=rx_server.port)
    async with rxstate.aio.connect(client, namespace=f"d{mode}", invalidation=mode, reap_interval=None) as store:
        cache = store.sync.cache
        tasks = await store.collection("tasks", Task)
        await tasks.put("t", Task(title="x", priority=0))
        for n in range(1, 200):
            if n == 100:
                raw.client_kill_filter(_type="pubsub")  # the invalidation listener's connection
            raw.hset(tasks.sync.key("t"), mapping={"priority": n, "_v": n + 1})
            # a write that returned is seen: by invalidation, or (while the feed is down) by bypassing the cache
            await eventually(lambda: _priority(tasks), n, timeout=0.5)
        await eventually(lambda: asyncio.sleep(0, cache.active), True)
        assert cache.stats().disconnects >= 1
        hits = cache.stats().hits
        assert await _priority(tasks) == 199 and await _priority(tasks) == 199
        assert cache.stats().hits > hits  # caching resumed once the feed was back
    await client.aclose()


async def test_the_embedded_server_starts_off_the_loop(monkeypatch):
    threads = []
    attach = rxstate.server.lease.attach

    def recording_attach(*args, **kwargs):
        threads.append(threading.current_thread())
        return attach(*args, **kwargs)

    monkeypatch.setattr(rxstate.server.lease, "attach", recording_attach)
    monkeypatch.delenv("REDIS_URL", raising=False)
    async with rxstate.aio.connect(isolated=True, reap_interval=None) as store:
        tasks = await store.collection("tasks", Task)
        await tasks.put("t", Task(title="on the embedded server"))
        assert (await tasks.get("t", consistent=True)).title == "on the embedded server"
        assert store.sync.server is not None
        assert isinstance(store.client, redis.asyncio.Redis)
    assert threads and threads[0] is not threading.main_thread()
