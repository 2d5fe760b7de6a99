"""The operations commands on a real server: backup, restore, archive, recover and migrate."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from typer.testing import CliRunner

from rxstate.cli.main import app
from tests.admin.helpers import logical_state
from tests.admin.test_migrate import AgentV1
from tests.helpers import dump_all
from tests.models import Agent

runner = CliRunner()


def test_backup_archive_and_recover_through_the_command_line(rx_redis_backend, tmp_path: Path):
    url, ns = rx_redis_backend.server.url, rx_redis_backend.namespace
    agents = rx_redis_backend.store().collection("agents", Agent, indexes=["status"])
    agents.put("a1", Agent(name="x"))
    common = ["--url", url, "-n", ns]
    assert runner.invoke(app, ["archive", str(tmp_path / "log"), *common]).exit_code == 0
    made = runner.invoke(app, ["backup", str(tmp_path / "b.rxb"), *common, "--json"])
    assert made.exit_code == 0, made.output
    assert json.loads(made.output)["namespace"] == ns
    agents.update("a1", status="busy")
    assert "archived 1 entries" in runner.invoke(app, ["archive", str(tmp_path / "log"), *common]).output
    into = f"r{uuid.uuid4().hex[:8]}"
    result = runner.invoke(
        app, ["recover", str(tmp_path / "b.rxb"), str(tmp_path / "log"), "--url", url, "--into", into]
    )
    assert result.exit_code == 0, result.output
    assert "replayed 1 changes" in result.output
    client = rx_redis_backend.client()
    assert logical_state(client, into) == logical_state(client, ns)
    before = dump_all(client)
    again = runner.invoke(app, ["restore", str(tmp_path / "b.rxb"), "--url", url, "--into", into])
    assert again.exit_code == 1 and "not empty" in again.output
    bad = runner.invoke(
        app, ["recover", str(tmp_path / "b.rxb"), str(tmp_path / "log"), "--url", url, "--until", "soon"]
    )
    assert bad.exit_code == 1 and "--until" in bad.output
    assert dump_all(client) == before


def test_migrate_dry_run_then_for_real(rx_redis_backend):
    url, ns = rx_redis_backend.server.url, rx_redis_backend.namespace
    old = rx_redis_backend.store().collection("agents", AgentV1)
    for i in range(5):
        old.put(f"a{i}", AgentV1(title=f"t{i}"))
    args = ["migrate", "agents", "--model", "tests.models:Agent", "--url", url, "-n", ns]
    dry = runner.invoke(app, [*args, "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.output)["by_version"] == {"1": 5}
    done = runner.invoke(app, [*args, "--index", "team"])
    assert done.exit_code == 0, done.output
    assert "rewrote 5 to v2" in done.output and "index team: 5 added" in done.output
    fresh = rx_redis_backend.store().collection("agents", Agent, indexes=["team"])
    assert {a.name for a in fresh.where(team="core")} == {f"t{i}" for i in range(5)}
    wrong = runner.invoke(app, ["migrate", "agents", "--model", "tests.models", "--url", url, "-n", ns])
    assert wrong.exit_code == 1 and "package.module:Class" in wrong.output
