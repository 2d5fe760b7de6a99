"""connect(): embedded servers, persistence, URLs and clients; the demo command."""

from __future__ import annotations

import subprocess
import sys

import fakeredis
import pytest
import redis

import rxstate
from rxstate.cli import main
from rxstate.errors import ServerError, ValidationError
from tests.models import Agent


def test_embedded_server_by_default(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    with rxstate.connect(namespace="emb") as store:
        assert store.server is not None and store.server.is_running
        agents = store.collection("agents", Agent)
        agents.put("a1", Agent(name="x"))
        assert agents.get("a1").name == "x"
        server = store.server
    assert not server.is_running  # stopped with the store


def test_path_keeps_data_across_runs(tmp_path, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    with rxstate.connect(path=tmp_path / "state") as store:
        store.collection("agents", Agent).put("a1", Agent(name="durable"))
    with rxstate.connect(path=tmp_path / "state") as store:
        got = store.collection("agents", Agent).get_versioned("a1")
        assert got.value.name == "durable" and got.version == 1


def test_url_and_redis_url_env(rx_server, monkeypatch):
    with rxstate.connect(rx_server.url, namespace="u1") as store:
        store.collection("agents", Agent).put("a1", Agent(name="x"))
    monkeypatch.setenv("REDIS_URL", rx_server.url)
    with rxstate.connect(namespace="u1") as store:
        assert store.server is None
        assert store.collection("agents", Agent).get("a1").name == "x"


def test_unreachable_url_is_a_server_error():
    with pytest.raises(ServerError):
        rxstate.connect("redis://127.0.0.1:1/0")


def test_client_with_decoded_responses_is_refused():
    with pytest.raises(ValidationError, match="decode_responses"):
        rxstate.connect(fakeredis.FakeRedis(decode_responses=True))
    with pytest.raises(ValidationError):
        rxstate.connect(object())


def test_cluster_url(rx_cluster):
    host, port = rx_cluster.startup_nodes[0]
    with rxstate.connect(f"redis+cluster://{host}:{port}/0", namespace="cl") as store:
        assert store.is_cluster
        agents = store.collection("agents", Agent)
        for i in range(20):  # ids land on partitions of every node
            agents.put(f"a{i}", Agent(name=str(i)))
        assert agents.count() == 20


def test_scripts_reload_after_script_flush(rx_redis_store, rx_server):
    agents = rx_redis_store.collection("agents", Agent)
    agents.put("a1", Agent(name="x"))
    redis.Redis.from_url(rx_server.url).script_flush()
    assert agents.put("a1", Agent(name="y")).version == 2
    redis.Redis.from_url(rx_server.url).script_flush()
    assert [r.version for r in agents.put_many({"a1": Agent(name="z"), "a2": Agent(name="w")})] == [3, 1]
    redis.Redis.from_url(rx_server.url).script_flush()
    assert agents.count() == 2


def test_demo_claims_every_task_once(rx_server, capsys):
    assert main(["demo", "--url", rx_server.url, "--agents", "4", "--tasks", "12"]) == 0
    out = capsys.readouterr().out
    assert "12/12 tasks done" in out
    claimed = [line.split()[-1] for line in out.splitlines() if " claimed " in line]
    assert sorted(claimed) == sorted(f"task-{i:02d}" for i in range(12))


@pytest.mark.slow
def test_demo_command_on_embedded_server(monkeypatch):
    env = {k: v for k, v in __import__("os").environ.items() if k != "REDIS_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "rxstate.cli", "demo", "--tasks", "5"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "embedded server" in result.stdout and "5/5 tasks done" in result.stdout
