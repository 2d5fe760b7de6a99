"""The change feed through dropped connections and a crashed server: nothing lost, nothing twice."""

from __future__ import annotations

import threading
import time

import pytest

import rxstate
from rxstate.server import EmbeddedServer
from tests.helpers import wait_for
from tests.models import Agent

pytestmark = pytest.mark.slow


def stream_contents(store):
    """Every record in every partition's change stream, as (partition, offset), in stream order."""
    ks = store.keyspace
    out = []
    for p in range(ks.partitions):
        out += [(p, offset.decode()) for offset, _ in store.client.xrange(ks.changes(p))]
    return out


def per_partition(pairs):
    out: dict[int, list[str]] = {}
    for p, offset in pairs:
        out.setdefault(p, []).append(offset)
    return out


class Writer(threading.Thread):
    """Puts entities one after another, retrying a put that failed on a lost connection."""

    def __init__(self, store, count):
        super().__init__(daemon=True)
        self.agents = store.collection("agents", Agent)
        self.count = count
        self.done = 0
        self.failures = 0

    def run(self):
        for i in range(self.count):
            while True:
                try:
                    self.agents.put(f"a{i % 37}", Agent(name=f"n{i}", load=i % 100))
                    break
                except Exception:  # connection lost or server down: the write may or may not have happened
                    self.failures += 1
                    time.sleep(0.01)
            self.done += 1


def collect(store):
    got: list[tuple[int, str]] = []
    lock = threading.Lock()

    def on_change(c):
        with lock:
            got.append((c.partition, c.offset))

    store.changes().subscribe(on_change)
    store.change_feed.start()
    return got


def test_client_kill_in_the_middle_of_a_write_stream_loses_and_repeats_nothing():
    with EmbeddedServer() as server:
        writer_store = rxstate.connect(server.client(), namespace="k", reap_interval=None)
        reader_store = rxstate.connect(server.client(), namespace="k", reap_interval=None)
        admin = server.client()
        got = collect(reader_store)
        writer = Writer(writer_store, 600)
        writer.start()
        killed = 0
        while writer.is_alive():
            time.sleep(0.03)
            killed += admin.execute_command("CLIENT", "KILL", "TYPE", "normal")
        writer.join()
        truth = stream_contents(writer_store)
        assert len(truth) >= 600 and killed >= 2
        assert wait_for(lambda: len(got) >= len(truth), interval=0.01)
        time.sleep(0.1)
        assert len(got) == len(set(got)) == len(truth)  # nothing twice, nothing lost
        assert per_partition(got) == per_partition(truth)  # and in stream order per partition
        writer_store.close()
        reader_store.close()


def test_server_crash_and_restart_mid_stream_resumes_from_the_last_offset(tmp_path):
    server = EmbeddedServer(path=tmp_path / "data", appendfsync="always").start()
    try:
        writer_store = rxstate.connect(server.client(), namespace="r", reap_interval=None)
        reader_store = rxstate.connect(server.client(), namespace="r", reap_interval=None)
        got = collect(reader_store)
        writer = Writer(writer_store, 400)
        writer.start()
        assert wait_for(lambda: writer.done >= 150, interval=0.01)
        run_id = server.client().info("server")["run_id"]
        server.kill()
        time.sleep(0.3)  # the reader retries against a dead server meanwhile
        server.restart()
        writer.join(30)
        assert not writer.is_alive()
        truth = stream_contents(writer_store)
        assert len(truth) >= 400
        assert wait_for(lambda: len(got) >= len(truth), interval=0.01)
        time.sleep(0.1)
        assert len(got) == len(set(got)) == len(truth)
        assert per_partition(got) == per_partition(truth)
        assert server.client().info("server")["run_id"] != run_id  # it really was a new server process
        writer_store.close()
        reader_store.close()
    finally:
        server.stop()


def test_a_subscriber_resuming_from_its_last_offsets_gets_the_rest_exactly_once():
    with EmbeddedServer() as server:
        store = rxstate.connect(server.client(), namespace="s", reap_interval=None)
        agents = store.collection("agents", Agent)
        first: list = []
        sub = store.changes().subscribe(first.append)
        store.change_feed.start()
        for i in range(100):
            agents.put(f"a{i % 23}", Agent(name="x", load=i % 100))
        assert wait_for(lambda: len(first) == 100, interval=0.01)
        sub.dispose()
        last = {c.partition: c.offset for c in first[:60]}  # as if it had stopped after 60
        seen_first = {(c.partition, c.offset) for c in first[:60]}
        for i in range(50):
            agents.put(f"b{i}", Agent(name="y"))
        rest: list = []
        since = {p: last.get(p, "0-0") for p in range(store.keyspace.partitions)}
        store.changes(since=since).subscribe(rest.append)
        truth = set(stream_contents(store))
        assert wait_for(lambda: len(rest) >= len(truth) - len(seen_first), interval=0.01)
        time.sleep(0.1)
        resumed = [(c.partition, c.offset) for c in rest]
        assert len(resumed) == len(set(resumed))
        assert set(resumed) | seen_first == truth and not set(resumed) & seen_first
        store.close()
