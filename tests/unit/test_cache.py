"""The local read cache alone (no server) and wired into a store on fakeredis."""

from __future__ import annotations

import time
import warnings

import fakeredis
import pytest

import rxstate
from rxstate.cache.lru import EntityCache, parse_offset
from rxstate.core.versioned import Versioned
from rxstate.errors import ValidationError
from tests.helpers import wait_for
from tests.models import Agent, Task


def v(entity_id: str, offset: str, value: object = None) -> Versioned[object]:
    return Versioned(entity_id, value, 1, 1, 0, "t", offset)


def active_cache(**kw: int | None) -> EntityCache:
    cache = EntityCache(**kw)  # type: ignore[arg-type]
    cache.activate("test")
    return cache


def test_hit_returns_the_same_instance_and_counts():
    cache = active_cache()
    entry = v("a", "5-0", object())
    assert cache.get("k") is None
    assert cache.fill("k", entry, token=cache.token())
    assert cache.get("k") is entry and cache.get("k") is entry
    s = cache.stats()
    assert (s.hits, s.misses, s.entries, s.active) == (2, 1, 1, True)
    assert s.hit_rate == pytest.approx(2 / 3)


def test_sized_by_entries_evicts_least_recently_used():
    cache = active_cache(max_entries=2)
    for key in "abc":
        cache.fill(key, v(key, "1-0"), token=cache.token())
        if key == "b":
            cache.get("a")  # a is now more recent than b
    assert "a" in cache and "c" in cache and "b" not in cache
    assert cache.stats().evictions == 1


def test_sized_by_bytes():
    cache = active_cache(max_bytes=100)
    cache.fill("a", v("a", "1-0"), token=cache.token(), nbytes=60)
    cache.fill("b", v("b", "1-0"), token=cache.token(), nbytes=30)
    assert cache.stats().size == 90
    cache.fill("c", v("c", "1-0"), token=cache.token(), nbytes=50)
    s = cache.stats()
    assert "a" not in cache and "b" in cache and "c" in cache
    assert (s.size, s.max_size, s.sized_by, s.evictions) == (80, 100, "bytes", 1)
    assert not cache.fill("huge", v("h", "1-0"), token=cache.token(), nbytes=101)
    assert "huge" not in cache


@pytest.mark.parametrize("kw", [{"max_entries": 0}, {"max_bytes": 0}, {"max_entries": True}, {"max_bytes": 1.5}])
def test_bad_sizes_raise(kw):
    with pytest.raises(ValidationError):
        EntityCache(**kw)


def test_only_a_newer_offset_replaces_an_entry():
    cache = active_cache()
    new, old = v("a", "1700000000000-2"), v("a", "1700000000000-1")
    assert cache.fill("k", new, token=cache.token())
    assert not cache.fill("k", old, token=cache.token())
    assert cache.get("k") is new
    newer = v("a", "1700000000001-0")
    assert cache.fill("k", newer, token=cache.token())
    assert cache.get("k") is newer
    assert parse_offset("") == (0, 0) and parse_offset("9-1") < parse_offset("10-0")


def test_a_read_that_raced_with_an_invalidation_is_not_inserted():
    cache = active_cache()
    token = cache.token()  # read sent
    cache.invalidate("k")  # someone wrote k meanwhile
    assert not cache.fill("k", v("a", "1-0"), token=token)
    assert "k" not in cache
    cache.invalidate("other")
    fresh_token = cache.token()
    assert cache.fill("k", v("a", "1-0"), token=fresh_token)  # other keys do not block it
    assert cache.stats().rejected == 1


def test_forgotten_invalidations_refuse_old_tokens():
    cache = active_cache()
    token = cache.token()
    cache.invalidate_many([f"k{i}" for i in range(10_000)])  # more than the cache remembers
    assert not cache.fill("k0", v("a", "1-0"), token=token)
    assert not cache.fill("k9999", v("a", "1-0"), token=token)


def test_inactive_cache_bypasses_and_refuses():
    cache = EntityCache()
    assert cache.token() == 0
    assert not cache.fill("k", v("a", "1-0"), token=cache.token())
    assert cache.get("k") is None and cache.stats().bypassed == 1
    cache.activate("test")
    token = cache.token()
    cache.fill("k", v("a", "1-0"), token=token)
    cache.deactivate()
    assert cache.get("k") is None and len(cache) == 0
    cache.activate("test")
    assert not cache.fill("k", v("a", "1-0"), token=token)  # read started before the outage
    assert cache.stats().disconnects == 1


def test_entries_expire_at_their_deadline():
    cache = active_cache()
    cache.fill("k", v("a", "1-0"), token=cache.token(), deadline=time.monotonic() + 0.05)
    assert cache.get("k") is not None
    time.sleep(0.06)
    assert cache.get("k") is None
    assert cache.stats().expirations == 1


def test_invalidation_delay_samples():
    cache = active_cache()
    sent = time.monotonic()
    cache.invalidate("a")  # arrived before the write returned
    cache.note_write("a", sent=sent, returned=time.monotonic())
    cache.note_write("b", sent=time.monotonic(), returned=time.monotonic())
    time.sleep(0.01)
    cache.invalidate("b")
    s = cache.stats()
    assert s.delay_samples == 2 and s.delay_p50_ms == 0.0 and s.delay_max_ms >= 10


# -- wired into a store on fakeredis ---------------------------------------------------------------


@pytest.fixture
def fake_pair():
    server = fakeredis.FakeServer()
    stores = [rxstate.connect(fakeredis.FakeRedis(server=server), namespace="c") for _ in range(2)]
    yield stores, fakeredis.FakeRedis(server=server)
    for store in stores:
        store.close()


def test_fakeredis_uses_keyspace_notifications(fake_pair):
    (store, other), raw = fake_pair
    assert store.cache is not None and store.cache.stats().mode == "keyspace"
    agents, theirs = store.collection("agents", Agent), other.collection("agents", Agent)
    agents.put("a1", Agent(name="x"))
    assert agents.get("a1") is agents.get("a1")
    assert store.cache.stats().hits >= 1
    theirs.update("a1", status="busy")
    assert wait_for(lambda: agents.get("a1").status == "busy")
    raw.hset(agents.key("a1"), "name", '"renamed"')
    assert wait_for(lambda: agents.get("a1").name == "renamed")
    raw.delete(agents.key("a1"))
    assert wait_for(lambda: agents.get("a1", None) is None)


def test_cached_entities_with_a_ttl_expire_even_without_expiry_events(fake_pair):
    (store, _), _raw = fake_pair
    tasks = store.collection("tasks", Task)
    tasks.put("t", Task(title="x"), ttl=0.1)
    tasks.get("t")
    assert tasks.get("t").title == "x"
    time.sleep(0.12)
    assert tasks.get("t", None) is None


def test_own_writes_delete_and_get_many(fake_pair):
    (store, _), _raw = fake_pair
    tasks = store.collection("tasks", Task)
    tasks.put_many({"a": Task(title="a"), "b": Task(title="b")})
    assert sorted(tasks.get_many(["a", "b", "nope"])) == ["a", "b"]
    hits = store.cache.stats().hits
    assert tasks.get_many(["a", "b"])["b"].title == "b"
    assert store.cache.stats().hits == hits + 2
    assert tasks.incr("a", "priority", 3) == 3
    assert tasks.get("a").priority == 3
    tasks.delete("a")
    assert tasks.get("a", None) is None


def test_cache_off_and_bad_mode(fake_pair):
    (_, _), raw = fake_pair
    store = rxstate.connect(raw, namespace="c", cache=False)
    assert store.cache is None
    store.collection("tasks", Task).put("x", Task(title="x"))
    assert store.collection("tasks", Task).get("x").title == "x"
    store.close()
    with pytest.raises(ValidationError):
        rxstate.connect(raw, namespace="c", invalidation="psychic")


def test_no_mechanism_disables_the_cache_with_a_warning():
    client = fakeredis.FakeRedis()
    with pytest.warns(RuntimeWarning, match="cache disabled"):
        store = rxstate.connect(client, namespace="c", invalidation="tracking")
    assert store.cache is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.collection("tasks", Task).put("x", Task(title="x")).version == 1
    store.close()


def test_concurrent_readers_writers_and_invalidations():
    import threading

    cache = active_cache(max_entries=50)
    gets_per_thread, errors = 20_000, []

    def reader(seed: int) -> None:
        try:
            for i in range(gets_per_thread):
                key = f"k{(i * seed) % 80}"
                if cache.get(key) is None:
                    cache.fill(key, v(key, f"{i}-{seed}"), token=cache.token())
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def invalidator() -> None:
        for i in range(5_000):
            cache.invalidate_many([f"k{i % 80}", f"k{(i * 7) % 80}"])

    threads = [threading.Thread(target=reader, args=(s,)) for s in (1, 3, 7)]
    threads.append(threading.Thread(target=invalidator))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = cache.stats()
    assert not errors
    assert s.hits + s.misses == 3 * gets_per_thread
    assert s.entries <= 50 and s.evictions > 0 and s.invalidations > 0


# -- own writes: the floor and echoes -----------------------------------------------------------


def test_an_own_write_sets_a_floor_no_older_value_passes():
    cache = active_cache()
    stale_read = cache.token()  # a read of the old value, sent before the write
    write = cache.begin_write("k")
    assert cache.fill("k", v("a", "5-0", "old"), token=stale_read)  # it lands before the reply
    assert cache.end_write(write, "k", "6-0", v("a", "6-0", "new"))
    assert cache.get("k").value == "new"
    assert not cache.fill("k", v("a", "5-0", "old"), token=cache.token())  # below the floor
    write = cache.begin_write("k")
    cache.end_write(write, "k", "7-0")  # no value known (e.g. TTL unknown): the floor still rises
    assert cache.get("k") is None  # the 6-0 entry is older than the write that returned
    assert not cache.fill("k", v("a", "6-0", "new"), token=cache.token())


def test_the_echo_of_an_own_write_keeps_its_value_a_later_invalidation_wins():
    cache = active_cache()
    write = cache.begin_write("k")
    cache.end_write(write, "k", "1-0", v("a", "1-0", "mine"))
    cache.invalidate_many(["k"], echoes=True)  # the echo
    assert cache.get("k").value == "mine"
    cache.invalidate_many(["k"], echoes=True)  # someone else's write
    assert cache.get("k") is None
    s = cache.stats()
    assert (s.echoes, s.invalidations) == (1, 1)


def test_an_echo_before_the_reply_does_not_refuse_the_written_value():
    cache = active_cache()
    cache.fill("k", v("a", "1-0", "before"), token=cache.token())
    write = cache.begin_write("k")
    cache.invalidate_many(["k"], echoes=True)  # the echo outruns the reply
    assert cache.get("k") is None  # the value from before the write is gone at once
    assert cache.end_write(write, "k", "2-0", v("a", "2-0", "mine"))
    assert cache.get("k").value == "mine"


def test_a_foreign_invalidation_after_the_echo_refuses_the_written_value():
    cache = active_cache()
    write = cache.begin_write("k")
    cache.invalidate_many(["k"], echoes=True)  # echo
    cache.invalidate_many(["k"], echoes=True)  # a foreign write right after ours
    assert not cache.end_write(write, "k", "2-0", v("a", "2-0", "mine"))
    assert cache.get("k") is None


def test_local_evictions_and_overlapping_own_writes_are_never_taken_for_echoes():
    cache = active_cache()
    write = cache.begin_write("k")
    cache.invalidate_many(["k"])  # a local decision (e.g. a batch of this store wrote the key)
    assert not cache.end_write(write, "k", "2-0", v("a", "2-0", "mine"))
    one, two = cache.begin_write("j"), cache.begin_write("j")  # two threads write a key at once
    cache.invalidate_many(["j"], echoes=True)  # whose echo is this?
    assert cache.end_write(one, "j", "3-0", v("a", "3-0", "one"))
    assert not cache.end_write(two, "j", "4-0", v("a", "4-0", "two"))
    assert cache.get("j") is None  # below the floor (4-0) of the second write


def test_a_sequential_own_write_is_not_poisoned_by_the_late_echo_of_the_previous_one():
    cache = active_cache()
    first = cache.begin_write("k")
    cache.end_write(first, "k", "1-0", v("a", "1-0", "first"))
    second = cache.begin_write("k")  # sent after the first returned, before its echo came
    cache.invalidate_many(["k"], echoes=True)  # first's echo
    cache.invalidate_many(["k"], echoes=True)  # second's echo
    assert cache.end_write(second, "k", "2-0", v("a", "2-0", "second"))
    assert cache.get("k").value == "second" and cache.stats().echoes == 2


def test_a_failed_own_write_evicts_and_takes_no_echo():
    cache = active_cache()
    cache.fill("k", v("a", "1-0"), token=cache.token())
    write = cache.begin_write("k")
    cache.abort_write(write, "k")
    assert "k" not in cache
    cache.fill("k", v("a", "1-0"), token=cache.token())
    cache.invalidate_many(["k"], echoes=True)  # not an echo of anything
    assert "k" not in cache and cache.stats().echoes == 0


def test_an_overdue_echo_is_not_taken(monkeypatch):
    from rxstate.cache import lru

    cache = active_cache()
    write = cache.begin_write("k")
    cache.end_write(write, "k", "1-0", v("a", "1-0", "mine"))
    monkeypatch.setattr(lru, "ECHO_TIMEOUT", 0.0)
    time.sleep(0.001)
    cache.invalidate_many(["k"], echoes=True)
    assert "k" not in cache and cache.stats().echoes == 0


def test_a_merged_echo_schedules_one_re_read_and_a_cold_key_is_not_kept():
    cache = active_cache()
    cache.fill("hot", v("h", "1-0"), token=cache.token())
    hot, cold = cache.begin_write("hot"), cache.begin_write("cold")
    cache.end_write(hot, "hot", "2-0", v("h", "2-0", "mine"))
    cache.end_write(cold, "cold", "3-0", v("c", "3-0", "mine"))
    cache.invalidate_many(["hot", "cold"], echoes=True, coalesced=True)
    assert cache.get("hot").value == "mine" and "cold" not in cache
    due, wake = cache.take_refresh()
    assert due == {"hot": 0.0} and wake is None
    again = cache.begin_write("hot")
    cache.end_write(again, "hot", "4-0", v("h", "4-0", "mine"))
    cache.invalidate_many(["hot"], echoes=True, coalesced=True)
    due, wake = cache.take_refresh()
    assert due == {} and wake is not None and wake > 0  # at most one re-read per key per interval
    assert cache.fill("hot", v("h", "4-0", "mine"), token=cache.token())  # an equal value: confirmed
    assert cache.get("hot").value == "mine"


def test_a_clear_after_a_flush_is_counted_and_forgets_floors():
    cache = active_cache()
    write = cache.begin_write("k")
    cache.end_write(write, "k", "9-0", v("a", "9-0"))
    cache.clear(flushed=True)
    assert cache.stats().clears == 1 and len(cache) == 0
    assert cache.fill("k", v("a", "1-0"), token=cache.token())  # another database's older value is fine now


def test_fakeredis_flushdb_is_seen(fake_pair):
    (store, _), raw = fake_pair
    tasks = store.collection("tasks", Task)
    tasks.put("t", Task(title="x"))
    assert tasks.get("t").title == "x"
    raw.flushdb()
    assert wait_for(lambda: tasks.get("t", None) is None)
    assert store.cache.stats().clears >= 1
