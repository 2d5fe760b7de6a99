"""``rxstate tenants`` against a real server."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from rxstate.cli.main import app
from tests.tenancy.workers import Item


def test_cli_lifecycle(admin, tenants, rx_server, tmp_path):
    runner = CliRunner()
    base = ["--url", rx_server.url, "-n", admin.namespace]

    def run(*args):
        result = runner.invoke(app, ["tenants", *args, *base])
        assert result.exit_code == 0, result.output
        return result.output

    created = json.loads(run("create", "acme", "--max-entities", "5", "--rate", "50", "--json"))
    assert created["limits"] == {"max_entities": 5, "rate": 50.0}
    admin.tenant("acme").collection("items", Item).put("a", Item(n=1))
    assert json.loads(run("list", "--json")) == [{"name": "acme", "status": "active", "partitions": "1"}]
    assert json.loads(run("show", "acme", "--json"))["usage"]["entities"] == 1
    run("suspend", "acme")
    assert tenants.get("acme").status == "suspended"
    run("resume", "acme")
    report = run("report")
    assert "acme" in report and "1 / 5" in report
    out = tmp_path / "acme.jsonl.gz"
    run("export", "acme", str(out))
    run("import", str(out), "--as", "copy")
    assert tenants.usage("copy").entities == 1
    assert "deleted copy" in run("delete", "copy", "--yes")
    assert [c.name for c in tenants.list()] == ["acme"]
    created = json.loads(run("create", "evt", "--max-events", "4", "--retention", "500", "--json"))
    assert created["limits"] == {"max_events": 4} and created["retention"] == 500
    admin.tenant("evt").events("log", state=Item, events=[Item], reducer=lambda s, e: e).append("a", [Item(n=1)] * 3)
    shown = json.loads(run("show", "evt", "--json"))
    assert shown["usage"]["events"] == 3 and shown["costs"]["operations"] == 1
    assert shown["costs"]["reads"] == shown["costs"]["bytes_read"] == 0  # this process has read nothing yet
    assert "3 / 4" in run("report")
    run("delete", "evt", "--yes")
    missing = runner.invoke(app, ["tenants", "show", "nobody", *base])
    assert missing.exit_code == 1 and "no tenant 'nobody'" in missing.output
