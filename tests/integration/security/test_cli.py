"""``rxstate principals``: the command group on a real server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from rxstate.cli.main import app
from rxstate.security.acl import username
from tests.helpers import dump_all
from tests.integration.security.conftest import World


def run(world: World, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["principals", *args, "--url", world.server.url, "-n", world.namespace])
    return result.exit_code, result.stdout, result.stderr


def test_create_list_rotate_disable_through_the_command(world: World):
    code, out, _ = run(world, "create", "dan", "--role", "viewer", "--kind", "user", "--attr", "region=eu")
    assert code == 0
    password = out.strip()
    client = world.server.client(username=username(world.namespace, "dan"), password=password)
    assert client.hget(world.key("agents", "a1"), "name") == b'"planner"'
    code, out, _ = run(world, "ls", "--json")
    dan = next(p for p in json.loads(out) if p["name"] == "dan")
    assert dan == {"name": "dan", "kind": "user", "roles": ["viewer"], "enabled": True,
                   "attributes": {"region": "eu"}, "user": username(world.namespace, "dan")}  # fmt: skip
    code, out, _ = run(world, "rotate", "dan")
    assert code == 0 and out.strip() != password
    with pytest.raises(redis.AuthenticationError):
        world.server.client(username=username(world.namespace, "dan"), password=password).ping()
    assert run(world, "disable", "dan")[0] == 0
    assert not world.admin.principals.get("dan").enabled


def test_explain_and_policy(world: World, tmp_path: Path):
    code, out, _ = run(world, "explain", "ann", "write", "tickets", "t2")
    assert code == 0 and out.startswith("denied: no rule allows write on tickets") and "'us' vs 'eu'" in out
    code, out, _ = run(world, "explain", "ann", "write", "tickets", "t1", "--json")
    assert json.loads(out)["rule"] == "support-writes-own-region"
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([{"role": "viewer", "effect": "allow", "actions": ["read"], "collections": ["*"]}]))
    code, out, _ = run(world, "policy", "--set", str(rules))
    assert code == 0 and json.loads(out)[0]["collections"] == ["*"]
    assert world.admin.explain("val", "read", "tickets").allowed


def test_errors_are_one_line_and_change_nothing(world: World):
    before = dump_all(world.raw)
    code, _, err = run(world, "create", "ann", "--role", "support")
    assert code == 1 and err.startswith("rxstate: principal 'ann' exists")
    code, _, err = run(world, "create", "zed", "--role", "x", "--attr", "novalue")
    assert code == 1 and "--attr takes NAME=VALUE" in err
    assert dump_all(world.raw) == before
