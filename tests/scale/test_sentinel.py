"""A standalone primary with replicas under Sentinel: ``redis+sentinel://`` stores through a failover.

A store connected by a Sentinel URL with ``durability="replicated"`` keeps every write it acknowledged
when its primary is killed and a replica promoted, writes again on the new master, and its cache (whose
invalidation connection is lost with the old master) serves the values other stores write afterwards.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
import redis

import rxstate
import rxstate.aio
from rxstate.testing.sentinel import SentinelGroup
from tests.helpers import wait_for
from tests.models import Task

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def group() -> Iterator[SentinelGroup]:
    """A primary with two replicas and three Sentinels (tests may fail it over, and restart what they kill)."""
    with SentinelGroup(replicas=2) as servers:
        yield servers


def test_the_sentinels_report_the_primary(rx_sentinel: SentinelGroup) -> None:
    group = rx_sentinel  # the plugin's fixture: a group of its own
    assert len(group.sentinel_addresses) == 3
    master = group.master()
    assert group.master_address() == ("127.0.0.1", master.port)
    with master.client(decode_responses=True) as conn:
        assert conn.info("replication")["role"] == "master"
    with group.sentinels[1].client() as conn:
        assert len(conn.sentinel_slaves("rxstate")) == 2
    with rxstate.connect(group.url(), namespace="hello") as store:  # the URL reaches the master
        assert store.collection("tasks", Task).put("t1", Task(title="x")).version == 1
        assert store.client.connection_pool.get_master_address() == group.master_address()


def test_no_acknowledged_write_is_lost_when_the_primary_dies(group: SentinelGroup) -> None:
    store = rxstate.connect(group.url(), namespace="sfo", durability="replicated", durability_timeout=0.5)
    other = rxstate.connect(group.url(), namespace="sfo", durability="replicated", durability_timeout=0.5)
    tasks, theirs = store.collection("tasks", Task), other.collection("tasks", Task)
    acked: dict[str, int] = {}
    refused: list[BaseException] = []
    stale: list[int] = []
    probes = [0]
    stop = threading.Event()
    lock = threading.Lock()

    def write(worker: int) -> None:
        n = 0
        while not stop.is_set():
            entity_id = f"w{worker}-{n % 40}"  # rewrites: versions climb, a lost one would show
            try:
                version = tasks.put(entity_id, Task(title=f"{worker}:{n}")).version
            except (rxstate.RxStateError, redis.RedisError) as exc:  # not acknowledged: may or may not be there
                refused.append(exc)
            else:
                with lock:
                    acked[entity_id] = max(acked.get(entity_id, 0), version)
            n += 1

    def probe() -> None:
        """The other store writes; the first one's cache must come to serve that value (or a newer one)."""
        n = 0
        while not stop.is_set():
            n += 1
            try:
                theirs.put("probe", Task(title=str(n)))
            except (rxstate.RxStateError, redis.RedisError):
                continue  # not acknowledged: nothing to expect
            if not wait_for(lambda n=n: _reads_at_least(tasks, "probe", n), timeout=5):
                stale.append(n)  # other writers are seen asynchronously, but never this late
            probes[0] += 1

    # the cache serves a value: afterwards it must not serve it once another store changed it
    feed: list[tuple[str, str]] = []
    subscription = store.changes(collection="tasks", id="seen").subscribe(
        lambda c: feed.append((c.op, str(c.fields.get("title"))))
    )
    tasks.put("seen", Task(title="before"))
    assert wait_for(
        lambda: tasks.get("seen").title == "before" and store.cache is not None and store.cache.stats().hits > 0,
        timeout=5,
    )
    writers = [threading.Thread(target=write, args=(w,)) for w in range(2)] + [threading.Thread(target=probe)]
    for t in writers:
        t.start()
    killed = None
    try:
        assert wait_for(lambda: len(acked) >= 60, timeout=20)
        old = group.master_address()
        killed = group.kill_primary()  # returns once the Sentinels name a reachable new master
        assert group.master_address() != old
        before = sum(acked.values())
        assert wait_for(lambda: sum(acked.values()) > before + 50, timeout=20)  # writes resume on the new master
    finally:
        stop.set()
        for t in writers:
            t.join()
    assert refused, "the kill should have refused some writes (else the test did not exercise a failover)"
    assert not stale, f"the cache went on serving values older than another store's acknowledged writes {stale[:5]}"
    assert probes[0] > 20
    assert store.client.connection_pool.get_master_address() == group.master_address()

    # every acknowledged write is on the new master, at its version or later
    reader = rxstate.connect(group.url(), namespace="sfo", cache=False)
    check = reader.collection("tasks", Task)
    for entity_id, version in acked.items():
        assert check.get_versioned(entity_id, consistent=True).version >= version, entity_id

    # the first store's cache lost its invalidation connection with the old master (bypassed meanwhile),
    # is back on the new one, and another store's write after the failover evicts what it holds
    cache = store.cache
    assert cache is not None and cache.disconnects >= 1
    assert wait_for(lambda: cache.active, timeout=10)
    _assert_cached(store, tasks, "seen", "before")
    theirs.update("seen", title="after failover")
    assert wait_for(lambda: tasks.get("seen").title == "after failover", timeout=10)
    assert wait_for(lambda: ("update", "after failover") in feed, timeout=10)  # the change feed followed too
    assert feed[0] == ("create", "before")
    subscription.dispose()
    entity_id = next(iter(acked))
    theirs.update(entity_id, title="changed by the other store")
    assert wait_for(lambda: tasks.get(entity_id).title == "changed by the other store", timeout=10)

    assert killed is not None
    group.restart(killed)  # back as a replica of the new master
    with killed.client(decode_responses=True) as conn:
        assert conn.info("replication")["role"] == "slave"
    for s in (reader, other, store):
        s.close()


def test_a_store_follows_a_sentinel_failover(group: SentinelGroup) -> None:
    store = rxstate.connect(group.url(), namespace="manual", durability="replicated", durability_timeout=1.0)
    other = rxstate.connect(group.url(), namespace="manual")
    tasks, theirs = store.collection("tasks", Task), other.collection("tasks", Task)
    tasks.put("t", Task(title="one"))
    assert tasks.get("t").title == "one"
    old = group.master_address()
    new = group.failover()
    assert new != old and group.master_address() == new
    group.wait_synced()
    # the store's next write reaches the new master, replicated (a resend after the lost connection is fine)
    assert wait_for(lambda: _put(tasks, "t", "two"), timeout=10)
    assert store.client.connection_pool.get_master_address() == new
    cache = store.cache
    assert cache is not None and cache.disconnects >= 1  # the old master dropped its clients when demoted
    assert wait_for(lambda: cache.active, timeout=10)
    _assert_cached(store, tasks, "t", "two")
    theirs.update("t", title="three")
    assert wait_for(lambda: tasks.get("t").title == "three", timeout=10)
    store.close()
    other.close()


def test_an_asyncio_store_reaches_the_master_through_the_sentinels(group: SentinelGroup) -> None:
    async def main() -> None:
        async with rxstate.aio.connect(group.url(), namespace="aio-sentinel", durability="replicated") as store:
            tasks = await store.collection("tasks", Task)
            assert (await tasks.put("t", Task(title="one"))).version == 1
            assert (await tasks.get("t")).title == "one"
            new = await asyncio.to_thread(group.failover)
            await asyncio.to_thread(group.wait_synced)
            for _ in range(200):  # the first write after the failover may meet the demoted master's cut
                try:
                    await tasks.update("t", title="two")
                    break
                except (rxstate.RxStateError, redis.RedisError):
                    await asyncio.sleep(0.05)
            assert (await tasks.get("t", consistent=True)).title == "two"
            with group.master().client() as conn:
                assert (group.master_address()) == new and conn.hget(tasks.sync.key("t"), "_v") == b"2"

    asyncio.run(main())


def _assert_cached(store: rxstate.Store, tasks: rxstate.Collection[Task], entity_id: str, title: str) -> None:
    """``entity_id`` reads as ``title`` and, read again, comes from the cache."""
    assert store.cache is not None
    assert tasks.get(entity_id).title == title
    hits = store.cache.stats().hits
    assert tasks.get(entity_id).title == title
    assert store.cache.stats().hits == hits + 1


def _reads_at_least(tasks: rxstate.Collection[Task], entity_id: str, n: int) -> bool:
    try:
        return int(tasks.get(entity_id).title) >= n
    except (rxstate.RxStateError, redis.RedisError):
        return False  # the read met the failover


def _put(tasks: rxstate.Collection[Task], entity_id: str, title: str) -> bool:
    try:
        tasks.put(entity_id, Task(title=title))
    except (rxstate.RxStateError, redis.RedisError):
        return False
    return True


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://127.0.0.1:26379",  # no master name
        "redis+sentinel://127.0.0.1:26379/",
        "redis+sentinel://127.0.0.1:port/rxstate",
        "redis+sentinel://127.0.0.1:99999/rxstate",
        "redis+sentinel://127.0.0.1:26379,/rxstate",
        "redis+sentinel://127.0.0.1:26379/rx/state",
        "redis+sentinel://127.0.0.1:26379/rxstate?db=one",
        "redis+sentinel://127.0.0.1:26379/rxstate?timeout=1",
    ],
)
def test_a_bad_sentinel_url_is_refused(url: str) -> None:
    with pytest.raises(rxstate.ValidationError) as info:
        rxstate.connect(url)
    assert url in str(info.value)


def test_a_sentinel_url_hides_its_password() -> None:
    with pytest.raises(rxstate.ValidationError) as info:
        rxstate.connect("redis+sentinel://agent:hunter2@127.0.0.1:x/rxstate")
    assert "hunter2" not in str(info.value) and "agent:***@" in str(info.value)
