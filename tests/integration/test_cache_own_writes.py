"""A store's own writes through its cache, on a real server: read your writes, and no echo.

Server reads are counted with ``INFO commandstats``: every read of an entity (a miss or a background
re-read) pipelines ``HGETALL`` with ``PTTL``, and nothing else sends ``PTTL``.
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.helpers import wait_for
from tests.models import Task

MODES = ["tracking", "keyspace"]


def entity_reads(client) -> int:
    return int(client.info("commandstats").get("cmdstat_pttl", {}).get("calls", 0))


def update_get_pairs(backend, mode: str, pairs: int) -> None:
    """``pairs`` update/get pairs on one store while a second store writes other keys in a thread."""
    store = backend.store(invalidation=mode, reap_interval=None)
    other = backend.store(invalidation=mode, reap_interval=None)
    assert store.cache is not None and store.cache.stats().mode == mode
    tasks, theirs = store.collection("tasks", Task), other.collection("tasks", Task)
    tasks.put("t", Task(title="mine"))
    stop, written = threading.Event(), []

    def noise() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            theirs.update(f"o{n % 7}", priority=n) if n > 7 else theirs.put(f"o{n % 7}", Task(title="theirs"))
            written.append(n)

    thread = threading.Thread(target=noise, daemon=True)
    thread.start()
    stale = []
    try:
        for n in range(1, pairs + 1):
            tasks.update("t", priority=n)
            got = tasks.get("t").priority
            if got != n:
                stale.append((n, got))
    finally:
        stop.set()
        thread.join(10)
    assert not stale, f"{len(stale)} of {pairs} reads missed their own write, e.g. {stale[:5]}"
    assert written  # the other store did write meanwhile
    assert store.cache.stats().hits > pairs // 2


@pytest.mark.parametrize("mode", MODES)
def test_read_your_writes_while_another_store_writes(rx_redis_backend, mode):
    update_get_pairs(rx_redis_backend, mode, 3_000)


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_read_your_writes_100k(rx_redis_backend, mode):
    update_get_pairs(rx_redis_backend, mode, 100_000)


@pytest.mark.parametrize("mode", MODES)
def test_own_updates_neither_evict_nor_reread(rx_redis_backend, mode):
    store = rx_redis_backend.store(invalidation=mode, reap_interval=None)
    admin = rx_redis_backend.client()
    tasks = store.collection("tasks", Task)
    tasks.put("t", Task(title="x"))
    assert wait_for(lambda: store.cache.stats().echoes == 1)  # the put's echo is in: nothing evicts later
    tasks.get("t")
    assert tasks.key("t") in store.cache
    before, reads = store.cache.stats(), entity_reads(admin)
    n = 500
    for i in range(1, n + 1):
        tasks.update("t", priority=i)
        assert tasks.get("t").priority == i
    assert wait_for(lambda: store.cache.stats().echoes - before.echoes >= n)  # every echo came, none evicted
    after = store.cache.stats()
    assert after.misses == before.misses and after.hits - before.hits == n
    assert after.invalidations == before.invalidations
    reread = entity_reads(admin) - reads
    assert reread == after.refreshes - before.refreshes
    if mode == "keyspace":
        assert reread == 0  # one notification per command: every echo is recognised exactly
        assert after.rejected == before.rejected
    else:
        assert reread <= n // 5  # merged messages are confirmed, at most once per key per 50 ms


@pytest.mark.parametrize("mode", MODES)
def test_a_foreign_write_between_an_own_write_and_its_echo_still_evicts(rx_redis_backend, mode, monkeypatch):
    from rxstate.cache import invalidation

    gate = threading.Event()
    gate.set()
    handle = invalidation._Node._handle

    def gated(self, msg):
        gate.wait(10)
        return handle(self, msg)

    monkeypatch.setattr(invalidation._Node, "_handle", gated)
    store = rx_redis_backend.store(invalidation=mode, reap_interval=None)
    tasks = store.collection("tasks", Task)
    tasks.put("t", Task(title="x"))
    tasks.get("t")
    raw = rx_redis_backend.client()
    for round_ in range(5):
        gate.clear()  # hold the invalidations back: own echo and foreign write arrive together
        tasks.update("t", priority=round_)
        raw.hset(tasks.key("t"), "title", f'"foreign {round_}"')
        gate.set()
        assert wait_for(lambda r=round_: tasks.get("t").title == f"foreign {r}", timeout=5)
        assert tasks.get("t").priority == round_


def test_a_foreign_write_merged_into_the_echo_is_caught(rx_redis_backend, monkeypatch):
    """CLIENT TRACKING merges the writes of one event-loop iteration into one message: re-read once."""
    store = rx_redis_backend.store(invalidation="tracking", reap_interval=None)
    tasks = store.collection("tasks", Task)
    tasks.put("t", Task(title="x"))
    assert wait_for(lambda: store.cache.stats().echoes == 1)  # the put's echo is in: nothing evicts later
    tasks.get("t")
    key = tasks.key("t")
    assert key in store.cache
    send = store.writer._send

    def send_with_a_foreign_write(script, keys, args):
        # the write script and a plain HSET pipelined on one connection run in one server iteration
        library = store.scripts
        store.client.script_load(library.get(script).source)  # the Writer loads only its exactly-once form
        pipe = store.client.pipeline(transaction=False)
        library.get(script)(pipe, keys, args)
        pipe.hset(key, "title", '"merged"')
        return pipe.execute()[0]

    monkeypatch.setattr(store.writer, "_send", send_with_a_foreign_write)
    refreshes = store.cache.stats().refreshes
    tasks.update("t", priority=5)
    monkeypatch.setattr(store.writer, "_send", send)
    assert wait_for(lambda: tasks.get("t").title == "merged", timeout=5)
    assert tasks.get("t").priority == 5
    assert store.cache.stats().refreshes > refreshes


@pytest.mark.parametrize("mode", MODES)
def test_an_own_update_keeps_the_ttl_of_the_entry_it_replaces(rx_redis_backend, mode):
    store = rx_redis_backend.store(invalidation=mode, reap_interval=None)
    tasks = store.collection("tasks", Task)
    tasks.put("t", Task(title="x"), ttl=1.5)
    echoes = store.cache.stats().echoes
    tasks.put("marker", Task(title="m"))  # a barrier: once its echo is in, every report of "t" is too
    assert wait_for(lambda: store.cache.stats().echoes > echoes)
    assert tasks.get("t").title == "x"
    key = tasks.key("t")
    deadline = store.cache.deadline_of(key)
    assert deadline
    tasks.update("t", priority=1)  # keeps the key's TTL on the server
    kept = store.cache.deadline_of(key)  # that deadline, or the same read back from the server's PTTL
    assert kept is not None and kept > 0 and abs(kept - deadline) < 0.05
    misses = store.cache.stats().misses
    assert tasks.get("t").priority == 1 and store.cache.stats().misses == misses  # a hit
    assert wait_for(lambda: tasks.get("t", None) is None, timeout=10)
    assert time.monotonic() >= deadline


@pytest.mark.parametrize("mode", MODES)
def test_a_failed_own_write_evicts_its_key(rx_redis_backend, mode):
    from rxstate.errors import ConflictError

    store = rx_redis_backend.store(invalidation=mode, reap_interval=None)
    tasks = store.collection("tasks", Task)
    tasks.put("t", Task(title="x"))
    tasks.get("t")
    rx_redis_backend.client().hset(tasks.key("t"), "_v", 7)  # a foreign version bump
    with pytest.raises(ConflictError):
        tasks.update("t", priority=1, expected_version=1)
    assert tasks.key("t") not in store.cache
    assert tasks.get_versioned("t").version == 7


def test_an_update_of_a_cached_entity_builds_its_value_without_the_stored_hash(rx_redis_backend, monkeypatch):
    """The cached version is the base: the script sends the whole hash back only when the entity was not
    at that version, so the common case needs neither the reply nor its decoding, and a write that came
    between is never missed."""
    store = rx_redis_backend.store(reap_interval=None)
    other = rx_redis_backend.store(reap_interval=None)
    tasks = store.collection("tasks", Task)
    tasks.put("t", Task(title="x"))
    assert wait_for(lambda: store.cache.stats().echoes >= 1)
    cached = tasks.get_versioned("t")
    replies = []
    send = store.writer._send

    def spy(script, keys, args):
        reply = send(script, keys, args)
        replies.append(reply)
        return reply

    monkeypatch.setattr(store.writer, "_send", spy)
    done = tasks.update("t", priority=3)
    assert (done.version, done.value) == (cached.version + 1, Task(title="x", priority=3))
    assert replies[-1][0][3] == []  # no stored hash came back
    assert tasks.get("t", consistent=True) == done.value
    # another writer's change that this store's cache has not seen yet: the hash comes back
    other.collection("tasks", Task).update("t", title="changed elsewhere")
    stale = tasks.get_versioned("t", consistent=True)
    monkeypatch.setattr(store.cache, "peek", lambda key: done if key == tasks.key("t") else None)
    again = tasks.update("t", done=True)
    assert replies[-1][0][3] != []
    assert again.version == stale.version + 1
    assert again.value == Task(title="changed elsewhere", priority=3, done=True)
    other.close()
