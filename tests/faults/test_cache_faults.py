"""The cache under faults: killed invalidation connections and a server restart during a write stream.

A foreign writer thread bumps a counter as fast as it can; the test thread reads it through the cache
and measures, for every read, how long ago the first write newer than the value it got had returned.
That age must stay below the invalidation delay bound, and once the store has noticed a lost
connection, reads must bypass the cache.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

import rxstate
from rxstate.server import EmbeddedServer
from tests.models import Task

pytestmark = pytest.mark.slow

DELAY_BOUND = 0.2  # seconds


@pytest.fixture
def server() -> Iterator[EmbeddedServer]:
    with EmbeddedServer() as srv:
        yield srv


class ForeignWriter(threading.Thread):
    """Writes priority = 1, 2, 3, ... to one task with plain HSETs (recreating it after a restart)."""

    def __init__(self, server: EmbeddedServer, key: str) -> None:
        super().__init__(daemon=True)
        self.server, self.key = server, key
        self.returned: dict[int, float] = {}
        self.last = 0
        self.stop = threading.Event()

    def run(self) -> None:
        client = self.server.client(socket_timeout=0.5, socket_connect_timeout=0.5)
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                client.hset(self.key, mapping={"_v": n, "_sv": 1, "title": '"x"', "priority": n})
            except Exception:
                n -= 1
                time.sleep(0.005)
                continue
            self.returned[n] = time.monotonic()
            self.last = n
            time.sleep(0.0005)


def read_stream(store: rxstate.Store, writer: ForeignWriter, seconds: float, fault: Callable[[], None]) -> dict:
    """Read for ``seconds``, injecting ``fault`` halfway; returns what was observed."""
    tasks = store.collection("tasks", Task)
    cache = store.cache
    assert cache is not None
    worst_age, reads, stale_after_notice, noticed = 0.0, 0, 0, False
    start = time.monotonic()
    faulted = False
    while time.monotonic() - start < seconds:
        if not faulted and time.monotonic() - start > seconds / 2:
            fault()
            faulted = True
        newest = writer.last
        began = time.monotonic()
        inactive = faulted and not cache.active
        try:
            got = tasks.get("t").priority
        except Exception:
            continue  # the server is down, or the task is not re-created yet
        finally:
            time.sleep(0.0001)  # let the writer and the invalidation thread run (GIL)
        reads += 1
        noticed = noticed or inactive
        if got < newest:
            age = began - writer.returned[got + 1]
            worst_age = max(worst_age, age)
            if inactive:
                stale_after_notice += 1
    return {"worst_age": worst_age, "reads": reads, "stale_after_notice": stale_after_notice, "noticed": noticed}


def run_with_fault(server: EmbeddedServer, mode: str, fault: Callable[[rxstate.Store], None]) -> tuple[dict, object]:
    store = rxstate.connect(server.client(), namespace="f", invalidation=mode, partitions=1, reap_interval=None)
    try:
        assert store.cache is not None and store.cache.stats().mode == mode
        writer = ForeignWriter(server, store.collection("tasks", Task).key("t"))
        writer.start()
        while writer.last < 1:
            time.sleep(0.001)
        try:
            seen = read_stream(store, writer, 1.6, lambda: fault(store))
        finally:
            writer.stop.set()
            writer.join(5)
        deadline = time.monotonic() + 5
        while not store.cache.active and time.monotonic() < deadline:
            time.sleep(0.01)
        tasks = store.collection("tasks", Task)
        stats_before = store.cache.stats()
        assert tasks.get("t").priority == writer.last and tasks.get("t").priority == writer.last
        return seen, (stats_before, store.cache.stats())
    finally:
        store.close()


def writer_count(stats) -> int:
    return stats.invalidations  # one per foreign write that evicted a cached value


def connection_ids(server: EmbeddedServer, name_prefix: str) -> list[int]:
    listing = server.client().client_list()
    return [int(c["id"]) for c in listing if c.get("name", "").startswith(name_prefix)]


def kill_pubsub(store: rxstate.Store) -> None:
    store.client.client_kill_filter(_type="pubsub")


@pytest.mark.parametrize("mode", ["tracking", "keyspace"])
def test_client_kill_pubsub_mid_stream(server, mode):
    seen, (before, after) = run_with_fault(server, mode, kill_pubsub)
    assert seen["reads"] > 1000 and writer_count(after) > 200
    assert seen["worst_age"] < DELAY_BOUND, seen
    assert seen["stale_after_notice"] == 0
    assert after.disconnects >= 1 and after.active
    assert after.hits > before.hits  # caching resumed once the feed was back


def test_killing_the_tracking_redirect_connection(server):
    def kill_redirect(store: rxstate.Store) -> None:
        ids = connection_ids(server, "rxstate-invalidation-")
        assert len(ids) == 1
        store.client.client_kill_filter(_id=ids[0])

    seen, (_, after) = run_with_fault(server, "tracking", kill_redirect)
    assert seen["worst_age"] < DELAY_BOUND, seen
    assert seen["stale_after_notice"] == 0
    assert after.disconnects >= 1 and after.active


@pytest.mark.parametrize("mode", ["tracking", "keyspace"])
def test_server_restart_mid_stream(server, mode):
    seen, (_, after) = run_with_fault(server, mode, lambda store: server.restart())
    assert seen["worst_age"] < DELAY_BOUND, seen
    assert seen["stale_after_notice"] == 0
    assert after.disconnects >= 1 and after.active


@pytest.mark.parametrize("mode", ["tracking", "keyspace"])
def test_flushall_is_not_served_from_the_cache(server, mode):
    store = rxstate.connect(server.client(), namespace="f", invalidation=mode, reap_interval=None)
    try:
        tasks = store.collection("tasks", Task)
        tasks.put("t", Task(title="x"))
        assert tasks.get("t").title == "x" and tasks.get("t").title == "x"
        server.client().flushall()
        flushed = time.monotonic()
        while tasks.get("t", None) is not None:
            assert time.monotonic() - flushed < 1.0
            time.sleep(0.001)
        # keyspace notifications say nothing on FLUSHALL: the probe check finds it (every 0.25 s)
        assert time.monotonic() - flushed < (0.05 if mode == "tracking" else 0.5)
    finally:
        store.close()


def test_keyspace_mode_warns_when_config_set_is_refused(server):
    admin = server.client()
    admin.config_set("notify-keyspace-events", "")
    admin.acl_setuser("app", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"], commands=["+@all", "-config"])
    client = server.client(username="app", password="pw")
    with pytest.warns(RuntimeWarning, match="CONFIG SET was refused"):
        store = rxstate.connect(client, namespace="f", invalidation="keyspace")
    try:
        assert store.cache is None
    finally:
        store.close()
    store = rxstate.connect(server.client(username="app", password="pw"), namespace="f")  # auto: tracking works
    try:
        assert store.cache is not None and store.cache.stats().mode == "tracking"
    finally:
        store.close()


def test_a_user_without_tracking_or_config_gets_no_cache_and_a_warning(server):
    admin = server.client()
    admin.config_set("notify-keyspace-events", "")
    admin.acl_setuser(
        "locked", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"], commands=["+@all", "-config", "-client"]
    )
    started = time.monotonic()
    with pytest.warns(RuntimeWarning, match="cache disabled"):
        store = rxstate.connect(server.client(username="locked", password="pw"), namespace="f")
    try:
        assert store.cache is None
        assert time.monotonic() - started < 2.0  # refusals are recognised at once, not by timeouts
        tasks = store.collection("tasks", Task)
        tasks.put("t", Task(title="x"))
        server.client().hset(tasks.key("t"), "title", '"foreign"')
        assert tasks.get("t").title == "foreign"
    finally:
        store.close()
