"""The ``rxstate`` command line on a real server: every read command reads without writing anything."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from typer.testing import CliRunner

import rxstate
from rxstate.cli.main import app
from rxstate.server import EmbeddedServer
from rxstate.testing import LocalCluster
from tests.event_models import ORDER_EVENTS, Order, Paid, Placed, apply_order
from tests.helpers import dump_all
from tests.models import Agent

SECRET = "sk-never-print-this-1234"
KEEP: dict[str, Any] = {"write_record_ms": 3_600_000}  # write records outlive the test: no key expires in it
runner = CliRunner()


class Job(rxstate.Model):
    team: str
    title: str
    state: str = "open"


@dataclass
class Populated:
    url: str
    namespace: str
    client: Any
    tx_id: str
    first_event: str


def _populate(url: str, namespace: str) -> tuple[str, str]:
    with rxstate.connect(url, namespace=namespace, cache=False, reap_interval=None, actor="planner", **KEEP) as store:
        agents = store.collection("agents", Agent, indexes=["status", "team"])
        jobs = store.collection("jobs", Job, indexes=["state"], partition_key="team")
        agents.put("a1", Agent(name="planner", api_key=SECRET))
        agents.put("a2", Agent(name="coder", status="busy"))
        agents.put("a3", Agent(name="reviewer", status="busy", team="web"))
        agents.update("a1", load=3, expected_version=1)
        jobs.put("j1", Job(team="core", title="plan [bold]it[/bold]"))
        jobs.put("j2", Job(team="web", title="ship"))
        with store.transaction() as tx:
            tx.update(agents, "a1", status="busy")
            tx.update(jobs, "j1", state="taken", partition="core")
        orders = store.events("orders", state=Order, events=ORDER_EVENTS, reducer=apply_order)
        first = orders.append("o1", [Placed(sku="x", qty=2)], causation_id="cmd-17", correlation_id="req-9")
        orders.append("o1", [Paid(amount_cents=500)], causation_id=first.event_ids[0], correlation_id="req-9")
        store.lock("printer", ttl=300).acquire()
        store.rwlock("catalog", ttl=300).read().acquire()
    with rxstate.connect(url, namespace=namespace, read_only=True) as store:
        entity = store.client.hgetall(store.keyspace.entity("agents", "a1", store.keyspace.partition_of("a1")))
        offset = entity[b"_o"].decode()
        record = store.client.xrange(store.keyspace.changes(store.keyspace.partition_of("a1")), offset, offset)
    return record[0][1][b"x"].decode(), first.event_ids[0]


@pytest.fixture(scope="module")
def cli_server() -> Iterator[EmbeddedServer]:
    """A server of this module's own: keys other tests leave to expire (write records) would change
    the database between the dumps that prove a command wrote nothing."""
    with EmbeddedServer() as server:
        yield server


@pytest.fixture
def populated(cli_server: EmbeddedServer) -> Iterator[Populated]:
    namespace = f"cli{uuid.uuid4().hex[:8]}"
    tx_id, first_event = _populate(cli_server.url, namespace)
    client = cli_server.client()
    yield Populated(cli_server.url, namespace, client, tx_id, first_event)
    client.close()


def _run(*args: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, list(args), env=env)


def _json(result: Any) -> Any:
    assert result.exit_code == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def _read(db: Populated, *args: str) -> Any:
    """Run a read command; the database must be exactly as it was."""
    before = dump_all(db.client)
    result = _run(*args, "--url", db.url, "--namespace", db.namespace)
    assert dump_all(db.client) == before, f"rxstate {' '.join(args)} wrote to the database"
    return result


# -- each read command: correct output, nothing written --------------------------------------------------
def test_ls_lists_namespaces_and_collections(populated: Populated) -> None:
    before = dump_all(populated.client)
    everything = _json(_run("ls", "--url", populated.url, "--json"))
    assert dump_all(populated.client) == before
    mine = next(n for n in everything if n["namespace"] == populated.namespace)
    assert mine["entities"] == 5 + 1  # three agents, two jobs, one aggregate
    assert mine["keys"] > mine["entities"] and mine["memory"] > 0
    listing = _json(_read(populated, "ls", "--json"))
    by_name = {c["name"]: c for c in listing["collections"]}
    assert by_name["agents"]["entities"] == 3 and by_name["agents"]["indexes"] == ["status", "team"]
    assert by_name["jobs"]["partition_key"] == "team" and by_name["jobs"]["entities"] == 2
    assert by_name["orders"]["kind"] == "events" and by_name["orders"]["entities"] == 1
    assert all(c["memory"] > 0 for c in listing["collections"])
    table = _read(populated, "ls")
    assert table.exit_code == 0 and "agents" in table.stdout and "DemoAgent" not in table.stdout


def test_get_shows_value_version_writer_time(populated: Populated) -> None:
    got = _json(_read(populated, "get", "agents", "a1", "--json"))
    assert got["version"] == 3 and got["writer"] == "planner" and got["schema_version"] == 2
    assert got["value"]["status"] == "busy" and got["value"]["load"] == 3
    assert got["value"]["api_key"] == "**********" and got["time"].startswith("20")
    routed = _json(_read(populated, "get", "jobs", "j1", "--json"))  # found in its team's partition
    assert routed["value"] == {"team": "core", "title": "plan [bold]it[/bold]", "state": "taken"}
    text = _read(populated, "get", "jobs", "j1")
    assert "plan [bold]it[/bold]" in text.stdout  # user data is never read as markup


def test_where_reads_the_index(populated: Populated) -> None:
    found = _json(_read(populated, "where", "agents", "status=busy", "--json"))
    assert [v["id"] for v in found] == ["a1", "a2", "a3"]
    both = _json(_read(populated, "where", "agents", "status=busy", "team=web", "--json"))
    assert [v["id"] for v in both] == ["a3"]
    assert _json(_read(populated, "where", "agents", "status=failed", "--json")) == []
    unindexed = _read(populated, "where", "agents", "name=coder")
    assert unindexed.exit_code == 1 and "no index" in unindexed.stderr and "status, team" in unindexed.stderr
    malformed = _read(populated, "where", "agents", "status")
    assert malformed.exit_code == 1 and "field=value" in malformed.stderr


def test_history_lists_the_entity_changes(populated: Populated) -> None:
    changes = _json(_read(populated, "history", "agents", "a1", "--json"))
    assert [(c["op"], c["version"]) for c in changes] == [("create", 1), ("update", 2), ("update", 3)]
    assert changes[1]["fields"] == {"load": 3} and changes[2]["txid"] == populated.tx_id
    assert changes[0]["fields"]["api_key"] == "**********"
    assert len(_json(_read(populated, "history", "agents", "a1", "--limit", "1", "--json"))) == 1
    events = _json(_read(populated, "history", "orders", "o1", "--json"))
    assert [(e["version"], e["type"]) for e in events] == [(1, "Placed"), (2, "Paid")]
    assert events[1]["causation_id"] == populated.first_event and events[0]["correlation_id"] == "req-9"


def test_why_names_the_writer_and_transaction(populated: Populated) -> None:
    why = _json(_read(populated, "why", "agents", "a1", "--json"))
    assert why["last"]["actor"] == "planner" and why["last"]["version"] == 3
    assert why["last"]["txid"] == populated.tx_id
    assert [(c["collection"], c["id"]) for c in why["transaction"]] == [("jobs", "j1")]
    load = _json(_read(populated, "why", "agents", "a1", "load", "--json"))
    assert load["last"]["version"] == 2 and load["last"]["fields"] == {"load": 3}
    bad = _read(populated, "why", "agents", "a1", "nope")
    assert bad.exit_code == 1 and "no field 'nope'" in bad.stderr
    order = _json(_read(populated, "why", "orders", "o1", "--json"))
    assert order["last"]["type"] == "Paid"
    assert [c if isinstance(c, str) else c["type"] for c in order["causes"]] == ["Placed", "cmd-17"]
    text = _read(populated, "why", "agents", "a1")
    assert "planner" in text.stdout and "jobs/j1" in text.stdout
    with rxstate.connect(populated.url, namespace=populated.namespace, cache=False, actor="janitor", **KEEP) as s:
        s.collection("agents", Agent, indexes=["status", "team"]).delete("a3")
    gone = _json(_read(populated, "why", "agents", "a3", "--json"))
    assert gone["current"] is None and (gone["last"]["op"], gone["last"]["actor"]) == ("delete", "janitor")
    assert "does not exist now" in _read(populated, "why", "agents", "a3").stdout


def test_locks_lists_held_locks(populated: Populated) -> None:
    held = {lock["name"]: lock for lock in _json(_read(populated, "locks", "--json"))}
    assert set(held) == {"printer", "catalog"}
    assert held["printer"]["mode"] == "exclusive" and held["printer"]["token"] == 1
    assert 0 < held["printer"]["expires_in_ms"] <= 300_000 and held["printer"]["tokens_issued"] == 1
    assert held["catalog"]["mode"] == "shared" and len(held["catalog"]["readers"]) == 1


def test_stats_counts_streams_and_caches(populated: Populated) -> None:
    data = _json(_read(populated, "stats", "--json"))
    ks = rxstate.connect(populated.client, namespace=populated.namespace, read_only=True).keyspace
    assert data["streams"]["records"] == sum(populated.client.xlen(ks.changes(p)) for p in range(ks.partitions))
    assert data["streams"]["events"] == 2 and data["clients"]["caches"] == 0
    assert data["memory"]["keys"] > 0 and data["server"]["redis_version"]
    with rxstate.connect(populated.url, namespace=populated.namespace, invalidation="tracking") as cached:
        assert cached.cache is not None
        live = _json(_run("stats", "--url", populated.url, "-n", populated.namespace, "--json"))
    assert live["clients"]["caches"] == 1 and live["clients"]["caches_by_mode"]["tracking"] == 1


def test_info_reads_schemas(populated: Populated) -> None:
    info = _json(_read(populated, "info", "--json"))
    assert info["partitions"] == 16 and set(info["collections"]) == {"agents", "jobs"}
    assert info["collections"]["agents"]["secrets"] == ["api_key"]
    table = _read(populated, "info")
    assert table.exit_code == 0 and "16 partitions" in table.stdout and "api_key" in table.stdout


def test_watch_replays_with_since(populated: Populated) -> None:
    lines = _read(populated, "watch", "agents", "a1", "--since", "0", "--count", "3", "--json")
    assert lines.exit_code == 0, lines.stderr
    changes = [json.loads(line) for line in lines.stdout.splitlines()]
    assert [(c["id"], c["version"]) for c in changes] == [("a1", 1), ("a1", 2), ("a1", 3)]


# -- errors: clear, non-zero, and nothing created ----------------------------------------------------------
def test_missing_namespace_is_an_error_that_creates_nothing(populated: Populated) -> None:
    before = dump_all(populated.client)
    for command in (["info"], ["get", "agents", "a1"], ["ls", "--json"], ["stats"], ["locks"], ["watch"]):
        result = _run(*command, "--url", populated.url, "--namespace", "typo-ns")
        assert result.exit_code == 1, command
        assert "namespace 'typo-ns' does not exist" in result.stderr and populated.namespace in result.stderr
    assert dump_all(populated.client) == before
    assert not populated.client.exists("rx:{typo-ns}:meta")


def test_missing_collection_and_id_are_errors(populated: Populated) -> None:
    for command in (["get", "nope", "x"], ["history", "nope", "x"], ["why", "nope", "x"], ["watch", "nope"]):
        result = _read(populated, *command)
        assert result.exit_code == 1 and "has no collection 'nope'" in result.stderr
        assert "agents, jobs, orders" in result.stderr
    for command in (["get", "agents", "zz"], ["history", "agents", "zz"], ["why", "agents", "zz"]):
        result = _read(populated, *command)
        assert result.exit_code == 1 and "agents 'zz' does not exist" in result.stderr
    result = _read(populated, "get", "orders", "o1")
    assert result.exit_code == 1 and "event collection" in result.stderr


def test_no_server_is_a_clear_error_and_rxstate_url_is_used(populated: Populated) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RXSTATE_URL", "REDIS_URL")}
    result = subprocess.run([sys.executable, "-m", "rxstate.cli", "info"], capture_output=True, text=True, env=env)
    assert result.returncode == 1 and "no server given" in result.stderr and result.stdout == ""
    got = _run("get", "agents", "a2", "-n", populated.namespace, "--json", env={"RXSTATE_URL": populated.url})
    assert _json(got)["value"]["name"] == "coder"
    both = _run("info", "--url", populated.url, "--path", "/nonexistent")
    assert both.exit_code == 1 and "not both" in both.stderr


def test_unreachable_server_is_an_error() -> None:
    result = _run("info", "--url", "redis://127.0.0.1:1/0")
    assert result.exit_code == 1 and "cannot reach the server" in result.stderr


def test_a_process_without_the_models_redacts_secrets(populated: Populated) -> None:
    """Secret fields are redacted by the stored schema alone (this subprocess imports no test model)."""
    for command in (
        ["get", "agents", "a1"],
        ["history", "agents", "a1"],
        ["watch", "agents", "--since", "0", "--count", "4"],
        ["where", "agents", "team=core", "--json"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "rxstate.cli", *command, "--url", populated.url, "-n", populated.namespace],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert SECRET not in done.stdout and "**********" in done.stdout, command


def test_watch_follows_live_changes_until_count(populated: Populated) -> None:
    watch = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rxstate.cli",
            "watch",
            "agents",
            "--count",
            "2",
            "--json",
            "--url",
            populated.url,
            "-n",
            populated.namespace,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watch.stderr is not None and "watching agents" in watch.stderr.readline()  # subscribed: a barrier
        with rxstate.connect(populated.url, namespace=populated.namespace, cache=False, actor="w") as store:
            agents = store.collection("agents", Agent, indexes=["status", "team"])
            agents.update("a2", status="idle")
            agents.incr("a3", "load", 5)
        out, _err = watch.communicate(timeout=30)
    finally:
        watch.kill()
    assert watch.returncode == 0
    changes = [json.loads(line) for line in out.splitlines()]
    assert [(c["id"], c["op"], c["actor"]) for c in changes] == [("a2", "update", "w"), ("a3", "incr", "w")]
    assert changes[1]["fields"] == {"load": 5}


def test_path_reads_an_embedded_servers_data(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    data = tmp_path / "state"
    with rxstate.connect(path=data, namespace="crew", cache=False) as store:
        store.collection("agents", Agent, indexes=["status"]).put("a1", Agent(name="durable"))
    got = _json(_run("get", "agents", "a1", "--path", str(data), "-n", "crew", "--json"))
    assert got["value"]["name"] == "durable" and got["version"] == 1
    missing = _run("info", "--path", str(tmp_path / "nowhere"))
    assert missing.exit_code == 1 and "no data directory" in missing.stderr
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.cluster
def test_read_commands_on_a_cluster_write_nothing() -> None:
    with LocalCluster(masters=3) as cluster:  # its own, for the same reason as ``cli_server``
        _cluster_reads(cluster)


def _cluster_reads(rx_cluster: LocalCluster) -> None:
    host, port = rx_cluster.startup_nodes[0]
    url, namespace = f"redis+cluster://{host}:{port}/0", f"cli{uuid.uuid4().hex[:8]}"
    with rxstate.connect(url, namespace=namespace, cache=False, reap_interval=None, actor="planner", **KEEP) as store:
        agents = store.collection("agents", Agent, indexes=["status"])
        for i in range(20):  # ids on partitions of every node
            agents.put(f"a{i}", Agent(name=str(i), status="busy" if i % 2 else "idle"))
        agents.update("a3", load=4)
        store.lock("printer", ttl=300).acquire()
    client = rx_cluster.client()
    before = dump_all(client)
    common = ("--url", url, "-n", namespace, "--json")
    listing = _json(_run("ls", *common))
    assert listing["collections"][0]["entities"] == 20
    assert _json(_run("get", "agents", "a3", *common))["version"] == 2
    assert len(_json(_run("where", "agents", "status=busy", *common))) == 10
    assert [c["version"] for c in _json(_run("history", "agents", "a3", *common))] == [1, 2]
    assert _json(_run("why", "agents", "a3", *common))["last"]["fields"] == {"load": 4}
    assert [lock["name"] for lock in _json(_run("locks", *common))] == ["printer"]
    assert _json(_run("stats", *common))["streams"]["records"] == 21
    assert dump_all(client) == before


def test_an_entity_under_a_pending_transaction_is_shown_not_settled(populated: Populated) -> None:
    """Readers of the library settle an intent they meet (a write); the command line only reports it."""
    ks = rxstate.connect(populated.client, namespace=populated.namespace, read_only=True).keyspace
    populated.client.hset(ks.entity("agents", "a2", ks.partition_of("a2")), "_t", "0123456789abcdef@3")
    got = _json(_read(populated, "get", "agents", "a2", "--json"))
    assert got["pending_transaction"] is True and got["value"]["name"] == "coder"
    assert [v["id"] for v in _json(_read(populated, "where", "agents", "status=busy", "--json"))] == ["a1", "a2", "a3"]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("rx:{crew:3}:agents:a1", ("crew", 3, "agents", "entity")),
        ("rx:{crew:3}:agents:a:b}:meta", ("crew", 3, "agents", "entity")),
        ("rx:{crew:0}:_idx:agents:status", ("crew", 0, "agents", "index")),
        ("rx:{crew:0}:_es:orders:o1", ("crew", 0, "orders", "aggregate")),
        ("rx:{crew:0}:_esv:orders", ("crew", 0, "orders", "events")),
        ("rx:{crew:7}:changes", ("crew", 7, None, "changes")),
        ("rx:{crew:7}:_w:abc", ("crew", 7, None, "internal")),
        ("rx:{org/acme:1}:agents:a1", ("org/acme", 1, "agents", "entity")),
        ("rx:{crew}:_lock:printer", ("crew", None, None, "lock")),
        ("rx:{crew}:meta", ("crew", None, None, "meta")),
        ("rx:{crew:x}:agents:a1", None),
        ("other:key", None),
    ],
)
def test_keys_are_classified_by_the_layout(key: str, expected: tuple[Any, ...] | None) -> None:
    from rxstate.cli.keys import classify_key, namespace_of_meta

    info = classify_key(key)
    assert (None if info is None else (info.namespace, info.partition, info.collection, info.role)) == expected
    assert namespace_of_meta(key) == ("crew" if key == "rx:{crew}:meta" else None)
