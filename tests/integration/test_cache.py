"""The local cache on a real server: foreign writes, other stores, TTLs, metrics, both mechanisms."""

from __future__ import annotations

import time

import pytest

from tests.helpers import wait_for
from tests.models import Agent, Task

MODES = ["tracking", "keyspace"]
DELAY_BOUND = 0.2  # seconds: the most a cached read may lag behind a write that has returned


def first_fresh(read, expected, timeout=2.0):
    """Seconds until ``read()`` returns ``expected`` (measured from now), or fail."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if read() == expected:
            return time.monotonic() - start
        time.sleep(0.0002)
    raise AssertionError(f"still not {expected!r} after {timeout} s: {read()!r}")


def settled(condition, hold=0.05, timeout=2.0):
    """Whether ``condition()`` becomes true and stays true for ``hold`` seconds (late echoes are in)."""
    deadline = time.monotonic() + timeout
    since = None
    while time.monotonic() < deadline:
        if condition():
            since = since or time.monotonic()
            if time.monotonic() - since >= hold:
                return True
        else:
            since = None
        time.sleep(0.0005)
    return False


@pytest.mark.parametrize("mode", MODES)
def test_foreign_writes_are_seen_within_the_delay(rx_redis_backend, mode):
    store = rx_redis_backend.store(invalidation=mode)
    assert store.cache is not None and store.cache.stats().mode == mode
    agents = store.collection("agents", Agent)
    agents.put("a1", Agent(name="x", load=1))
    key = agents.key("a1")
    raw = rx_redis_backend.client()
    assert agents.get("a1").load == 1 and agents.get("a1").load == 1
    assert store.cache.stats().hits >= 1

    raw.hset(key, "load", 7)  # a redis-cli style write, not through rxstate
    assert first_fresh(lambda: agents.get("a1").load, 7) < DELAY_BOUND
    raw.hset(key, mapping={"name": '"renamed"', "status": '"busy"'})
    assert first_fresh(lambda: agents.get("a1").name, "renamed") < DELAY_BOUND
    raw.expire(key, 100)
    assert first_fresh(lambda: agents.get("a1").load, 7) < DELAY_BOUND
    raw.delete(key)
    assert first_fresh(lambda: agents.get("a1", None), None) < DELAY_BOUND
    stats = store.cache.stats()
    assert stats.invalidations >= 1 and stats.misses >= 3  # some evictions may land before the entry refills


@pytest.mark.parametrize("mode", MODES)
def test_foreign_expire_is_honoured_without_waiting_for_the_server(rx_redis_backend, mode):
    store = rx_redis_backend.store(invalidation=mode)
    tasks = store.collection("tasks", Task)
    tasks.put("t", Task(title="x"))
    rx_redis_backend.client().pexpire(tasks.key("t"), 150)
    time.sleep(0.01)
    assert tasks.get("t").title == "x"  # re-read with its new TTL
    assert tasks.get("t").title == "x"
    time.sleep(0.16)
    assert tasks.get("t", None) is None


@pytest.mark.parametrize("mode", MODES)
def test_two_stores_see_each_others_writes(rx_redis_backend, mode):
    one, two = rx_redis_backend.store(invalidation=mode), rx_redis_backend.store(invalidation=mode)
    a1, a2 = one.collection("tasks", Task), two.collection("tasks", Task)
    a1.put("t", Task(title="first"))
    assert a2.get("t").title == "first" and a2.get("t").title == "first"
    for n in range(1, 20):
        a2.incr("t", "priority", 1) if n % 2 else a1.update("t", priority=n)
        first_fresh(lambda n=n: a1.get("t").priority, n)
        first_fresh(lambda n=n: a2.get("t").priority, n)
        assert a1.get("t").priority == a2.get("t").priority == n  # hits, once the value is known
    a1.delete("t")
    assert first_fresh(lambda: a2.get("t", None), None) < DELAY_BOUND
    for store in (one, two):
        s = store.cache.stats()
        assert s.hits > 0 and s.misses > 0 and s.invalidations > 0
        assert s.delay_samples > 0 and s.delay_p99_ms is not None and s.delay_p99_ms < DELAY_BOUND * 1000


def test_reads_are_never_older_than_a_returned_write(rx_redis_backend):
    """A reader in one store and a writer in another: after the delay, every read is current."""
    reader, writer = rx_redis_backend.store(), rx_redis_backend.store(cache=False)
    mine, theirs = reader.collection("tasks", Task), writer.collection("tasks", Task)
    theirs.put("t", Task(title="x"))
    worst = 0.0
    for n in range(1, 200):
        theirs.update("t", priority=n)
        returned = time.monotonic()
        while mine.get("t").priority != n:
            pass
        worst = max(worst, time.monotonic() - returned)
    assert worst < DELAY_BOUND
    assert reader.cache.stats().hits > 0


def test_get_many_and_versions(rx_redis_backend):
    store = rx_redis_backend.store()
    tasks = store.collection("tasks", Task)
    tasks.put_many({f"t{i}": Task(title=str(i)) for i in range(20)})
    # the echoes of these writes evict what the writes cached; wait for them, then read
    assert settled(lambda: not any(tasks.key(f"t{i}") in store.cache for i in range(20)))
    first = tasks.get_many_versioned([f"t{i}" for i in range(25)])
    assert [v.id for v in first] == [f"t{i}" for i in range(20)]
    again = tasks.get_many_versioned([f"t{i}" for i in range(20)])
    assert all(a.value is b.value for a, b in zip(first, again, strict=True))  # the same instances
    rx_redis_backend.client().hset(tasks.key("t3"), "title", '"changed"')
    assert first_fresh(lambda: tasks.get_many(["t3"])["t3"].title, "changed") < DELAY_BOUND


def test_sized_by_bytes_on_a_real_server(rx_redis_backend):
    store = rx_redis_backend.store(cache_bytes=2_000)
    tasks = store.collection("tasks", Task)
    assert wait_for(lambda: store.cache.active)  # caching starts once its invalidation feed is up
    for i in range(50):
        tasks.put(f"t{i}", Task(title="x" * 40))
    tasks.put("marker", Task(title="m"))  # a barrier: once its echo is in, so are those of the puts
    assert wait_for(lambda: store.cache.stats().echoes + store.cache.stats().invalidations >= 51)
    for i in range(50):
        tasks.get(f"t{i}")
    s = store.cache.stats()
    assert s.sized_by == "bytes" and 0 < s.size <= 2_000 and s.evictions > 0 and s.entries < 50


def test_close_stops_the_invalidation_threads(rx_redis_backend):
    store = rx_redis_backend.store()
    threads = [node.thread for node in store._invalidation._nodes]
    assert threads and all(t.is_alive() for t in threads)
    store.close()
    assert not any(t.is_alive() for t in threads)
    assert store.cache is not None and not store.cache.active


@pytest.mark.parametrize("mode", MODES)
def test_own_writes_of_cached_keys_are_read_back_in_the_background(rx_redis_backend, mode):
    # A put over an existing entity: keyspace mode gets two notifications (del, hset), only the first of
    # which is recognised as its echo; tracking mode gets one message, which is confirmed by a re-read.
    store = rx_redis_backend.store(invalidation=mode)
    tasks = store.collection("tasks", Task)
    tasks.put("t", Task(title="x"))
    tasks.get("t")
    for n in range(1, 6):
        refreshes = store.cache.stats().refreshes
        tasks.put("t", Task(title="x", priority=n))
        assert settled(lambda r=refreshes: store.cache.stats().refreshes > r and tasks.key("t") in store.cache)
        misses = store.cache.stats().misses
        assert tasks.get("t").priority == n
        assert store.cache.stats().misses == misses  # a hit: the written value came back by itself
    assert store.cache.stats().refreshes >= 1
    before = store.cache.stats()
    tasks.put("cold", Task(title="never read"))
    tasks.put("marker", Task(title="later"))  # a barrier: its echo comes after that of "cold"
    assert settled(lambda: store.cache.stats().echoes >= before.echoes + 2)
    assert store.cache.stats().refreshes == before.refreshes  # keys nobody reads are not fetched back
