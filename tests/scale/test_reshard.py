"""Moving slots with ``redis-cli --cluster reshard`` while writers run: no lost or duplicated change
record, no failed atomic script."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time

import pytest
from redis.crc import key_slot

import rxstate
from rxstate.core.keys import Keyspace
from rxstate.testing.servers import LocalCluster
from tests.helpers import wait_for


class Counter(rxstate.Model):
    name: str
    n: int = 0


pytestmark = [pytest.mark.slow, pytest.mark.cluster]


_MOVED = 120
"""Slots moved: the lowest of the first master's (``redis-cli`` takes them in order)."""


def _low_partitions(namespace: str) -> int:
    """How many of a 32-partition namespace's partitions sit in the slots the reshard moves."""
    ks = Keyspace(namespace, 32)
    return sum(key_slot(ks.changes(p).encode()) < _MOVED for p in range(32))


def _owner(cluster: LocalCluster, slot: int) -> str:
    client = cluster.client()
    return str(client.nodes_manager.get_node_from_slot(slot).name)


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="needs redis-cli for --cluster reshard")
def test_writes_during_a_reshard_lose_nothing_and_repeat_nothing() -> None:
    with LocalCluster(masters=3) as cluster:
        namespace = next(ns for ns in (f"rs{i}" for i in range(10_000)) if _low_partitions(ns) >= 2)
        store = rxstate.connect(cluster.client(), namespace=namespace, partitions=32, cache=False)
        agents = store.collection("counters", Counter)
        ks = store.keyspace
        slots = {p: key_slot(ks.changes(p).encode()) for p in range(ks.partitions)}
        before = {p: _owner(cluster, s) for p, s in slots.items()}
        first = cluster.nodes[0]
        ids = {}
        with first.client(decode_responses=True) as conn:
            for line in conn.execute_command("CLUSTER", "NODES").splitlines():
                node_id, addr = line.split()[:2]
                ids[addr.split("@")[0]] = node_id
        source, target = ids[f"127.0.0.1:{cluster.nodes[0].port}"], ids[f"127.0.0.1:{cluster.nodes[1].port}"]

        done: dict[str, int] = {}
        failures: list[BaseException] = []
        stop = threading.Event()

        def write(worker: int) -> None:
            n = 0
            while not stop.is_set():
                entity_id = f"a{worker}-{n % 24}"
                try:
                    if entity_id in done:
                        agents.incr(entity_id, "n", 1)
                    else:
                        agents.put(entity_id, Counter(name=entity_id))
                except BaseException as exc:  # any failure fails the test below, with the error shown
                    failures.append(exc)
                    return
                done[entity_id] = done.get(entity_id, 0) + 1
                n += 1

        writers = [threading.Thread(target=write, args=(w,)) for w in range(2)]
        for t in writers:
            t.start()
        try:
            assert wait_for(lambda: sum(done.values()) > 50, timeout=20)
            started = time.monotonic()
            reshard = subprocess.run(
                [
                    "redis-cli",
                    "--cluster",
                    "reshard",
                    f"127.0.0.1:{cluster.nodes[0].port}",
                    "--cluster-from",
                    source,
                    "--cluster-to",
                    target,
                    "--cluster-slots",
                    "2000",
                    "--cluster-yes",
                    "--cluster-pipeline",
                    "10",
                ],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert reshard.returncode == 0, reshard.stdout[-2000:] + reshard.stderr[-2000:]
            print(f"reshard of {_MOVED} slots took {time.monotonic() - started:.1f} s")
            total = sum(done.values())
            assert wait_for(lambda: sum(done.values()) > total + 50 or failures, timeout=20)
            assert not failures, failures[:3]  # writes go on afterwards
        finally:
            stop.set()
            for t in writers:
                t.join()
        assert not failures, failures[:3]
        moved = [p for p, s in slots.items() if _owner(cluster, s) != before[p]]
        assert moved, "no partition of the namespace moved: the test did not exercise a reshard"

        # every write is there exactly once: versions count the writes, change records are 1..n, once each
        raw = cluster.client()
        for entity_id, writes in done.items():
            got = agents.get_versioned(entity_id, consistent=True)
            assert got.version == writes, entity_id
            assert got.value.n == writes - 1
            stream = ks.changes(ks.partition_of(entity_id))
            versions = [int(f[b"v"]) for _i, f in raw.xrange(stream) if f[b"i"] == entity_id.encode()]
            assert versions == list(range(1, writes + 1)), (entity_id, versions[-5:])
        store.close()
