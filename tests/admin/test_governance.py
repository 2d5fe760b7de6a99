"""Retention (archived, then trimmed exactly) and the policy checks of ``rxstate audit check``."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import rxstate
from rxstate import Policy, Rule
from rxstate.admin.archive import read_archive
from rxstate.admin.governance import apply_retention, check_policies, retention, set_retention
from rxstate.cli.main import app
from rxstate.security import StaticKeyProvider, generate_key
from rxstate.security.acl import username
from tests.helpers import dump_all
from tests.models import Agent

runner = CliRunner()


def test_retention_archives_then_trims_to_the_policy(rx_redis_backend, tmp_path: Path):
    store = rx_redis_backend.store(partitions=2)
    agents = store.collection("agents", Agent)
    for i in range(60):
        agents.put(f"a{i}", Agent(name="x"))
    client = rx_redis_backend.client()
    ks = store.keyspace
    before = {p: [sid for sid, _ in client.xrange(ks.changes(p))] for p in range(2)}
    with pytest.raises(rxstate.ValidationError):
        apply_retention(client, store.namespace)  # no policy yet
    with pytest.raises(rxstate.ValidationError):
        set_retention(client, store.namespace, max_len=0)
    assert retention(client, store.namespace) is None
    set_retention(client, store.namespace, max_len=10)
    report = apply_retention(client, store.namespace, archive=tmp_path / "trimmed")
    assert report.trimmed["changes"] == 60 - 20
    for p in range(2):
        kept = [sid for sid, _ in client.xrange(ks.changes(p))]
        assert kept == before[p][-10:]
    archived = {(e.partition, e.id.encode()) for e in read_archive(tmp_path / "trimmed")}
    assert archived == {(p, sid) for p in range(2) for sid in before[p][:-10]}
    assert apply_retention(client, store.namespace).trimmed["changes"] == 0


def test_policy_checks_find_clear_secrets_missing_retention_and_extra_privileges(rx_server):
    admin = rxstate.connect(rx_server.url, namespace="gov-check", partitions=2)
    keyed = rxstate.connect(rx_server.url, namespace="gov-check", keys=StaticKeyProvider(generate_key()))
    keyed.collection("agents", Agent).put("safe", Agent(name="x", api_key="sk-1"))
    client = rx_server.client()
    try:
        admin.set_policy(Policy([Rule("viewer", "allow", ["read"], ["agents"], name="viewer-reads")]))
        admin.principals.create("val", kind="agent", roles=["viewer"])
        report = check_policies(client, "gov-check")
        verdicts = {(f.check, f.subject): f.status for f in report.findings}
        assert verdicts == {
            ("encryption", "agents"): "ok",
            ("retention", "gov-check"): "fail",
            ("privileges", "val"): "ok",
        }
        admin.collection("agents", Agent).put("leak", Agent(name="y", api_key="sk-2"))  # a store without keys
        client.execute_command("ACL", "SETUSER", username("gov-check", "val"), "+flushall", "~*")
        set_retention(client, "gov-check", max_age_ms=86_400_000)
        before = dump_all(client)
        args = ["audit", "check", "--url", rx_server.url, "-n", "gov-check"]
        result = runner.invoke(app, args)
        assert result.exit_code == 1, result.output
        assert "leak.api_key" in result.output and "+flushall" in result.output
        assert dump_all(client) == before  # the check wrote nothing (its scratch ACL user is gone too)
        assert not [u for u in client.acl_users() if "rxcheck" in str(u)]
        failing = {(f.check, f.subject) for f in check_policies(client, "gov-check").failures}
        assert failing == {("encryption", "agents"), ("privileges", "val")}
    finally:
        for info in admin.principals.list():
            admin.principals.delete(info.name)
        admin.close()
        keyed.close()
