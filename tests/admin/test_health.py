"""Health checks on a real server: each check's failure is provoked, and the probes' exit codes follow."""

from __future__ import annotations

import socket

from typer.testing import CliRunner

from rxstate.admin.health import check_health
from rxstate.cli.main import app
from tests.helpers import dump_all, wait_for
from tests.models import Agent

runner = CliRunner()


def test_a_healthy_namespace_passes_both_probes(rx_redis_backend):
    store = rx_redis_backend.store()
    store.collection("agents", Agent).put("a1", Agent(name="x"))
    assert wait_for(lambda: check_health(store).check("cache").status == "ok")
    report = check_health(store)
    assert report.check("server").status == "ok" and report.check("server").data["latency_ms"] > 0
    assert report.check("replication").data == {"role": "primary", "replicas": 0}  # a warning only
    assert report.check("persistence").status in ("ok", "warn")
    assert {c.name: c.status for c in report.checks}["reaper"] == "ok"
    assert report.exit_code("liveness") == 0 and report.exit_code("readiness") == 0
    url = rx_redis_backend.server.url
    client = rx_redis_backend.client()
    before = dump_all(client)
    result = runner.invoke(app, ["health", "--url", url, "-n", rx_redis_backend.namespace, "--json"])
    assert result.exit_code == 0, result.output
    assert '"name": "transactions"' in result.output
    assert dump_all(client) == before  # a health check writes nothing


def test_an_overdue_expiry_and_an_abandoned_transaction_fail_readiness_not_liveness(rx_redis_backend):
    store = rx_redis_backend.store(reap_interval=None)
    agents = store.collection("agents", Agent)
    agents.put("gone", Agent(name="x"), ttl=0.001)
    client = rx_redis_backend.client()
    ks = store.keyspace
    p = ks.partition_of("gone")
    client.zadd(ks.expiry("agents", p), {"gone": 1_000})  # expired long ago, never reaped
    client.hset(ks.tx_index(0), "tx1", "tx1@0 1000")  # a dead client's transaction, deadline long past
    client.xgroup_create(ks.changes(p), "slow-consumer", id="0")
    report = check_health(store, lag_warn=1)
    assert report.check("reaper").status == "fail" and report.check("reaper").data["overdue"] == {"agents": 1}
    assert report.check("transactions").status == "fail" and report.check("transactions").data["abandoned"] == 1
    assert report.check("feed").status == "warn" and report.check("feed").data["groups"]["slow-consumer"] >= 1
    assert report.exit_code("liveness") == 0 and report.exit_code("readiness") == 1
    args = ["health", "--url", rx_redis_backend.server.url, "-n", rx_redis_backend.namespace]
    assert runner.invoke(app, [*args, "--probe", "readiness"]).exit_code == 1
    assert runner.invoke(app, [*args, "--probe", "liveness"]).exit_code == 0
    assert runner.invoke(app, [*args, "--probe", "startup"]).exit_code == 1


def test_an_unreachable_server_fails_liveness():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens on it once closed
    result = runner.invoke(app, ["health", "--url", f"redis://127.0.0.1:{port}/0", "--probe", "liveness", "--json"])
    assert result.exit_code == 1 and '"status": "fail"' in result.output and "unreachable" in result.output
