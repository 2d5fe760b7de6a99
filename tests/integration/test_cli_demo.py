"""The demo: races lost by construction, a live watcher and derived value, and a claim it checks itself."""

from __future__ import annotations

import json
import uuid
from types import MappingProxyType
from typing import Any

import fakeredis
import pytest
from typer.testing import CliRunner

import rxstate
from rxstate.cli.demo import DemoAgent, DemoResult, DemoTask, LostRace, _check, _Watch, run_demo
from rxstate.feed.change import Change


def _assert_claim_holds(result: DemoResult, agents: int, tasks: int) -> None:
    assert result.failures == []
    assert result.done == tasks and sorted(result.claims) == [f"task-{i:02d}" for i in range(tasks)]
    # Each wave of `agents` races loses agents-1, agents-2, ... races: staged, so the count is exact.
    waves, lost = divmod(tasks, agents)
    expected = waves * agents * (agents - 1) // 2 + sum(agents - 1 - k for k in range(lost))
    assert len(result.lost_races) == expected >= 1
    assert all(r.actual > r.expected for r in result.lost_races)
    assert sum(result.per_agent.values()) == tasks
    assert result.changes_seen == result.changes_made > 0
    assert max(result.busy_seen) == min(agents, tasks) and result.busy_seen[-1] == 0


@pytest.mark.parametrize(("agents", "tasks"), [(3, 8), (2, 1), (4, 4)])
def test_demo_on_fakeredis(agents: int, tasks: int) -> None:
    server = fakeredis.FakeServer()
    lines: list[str] = []
    with rxstate.connect(fakeredis.FakeRedis(server=server), namespace="demo") as store:

        def open_agent(name: str) -> rxstate.Store:
            return rxstate.connect(fakeredis.FakeRedis(server=server), namespace="demo", actor=name, cache=False)

        result = run_demo(store, agents=agents, tasks=tasks, out=lines.append, open_agent=open_agent)
        assert store.derived_values() == []  # the demo's live parts end with it
    _assert_claim_holds(result, agents, tasks)
    assert sum(" lost the race for " in line for line in lines) == len(result.lost_races)
    assert any(line.startswith("  feed ") and " by agent-" in line for line in lines)
    assert any(line.startswith("  busy agents: ") for line in lines)
    assert lines[-1].endswith(": checked")


def test_demo_command_on_a_real_server(rx_server: Any) -> None:
    from rxstate.cli.main import app

    namespace = f"demo{uuid.uuid4().hex[:8]}"
    result = CliRunner().invoke(app, ["demo", "--url", rx_server.url, "-n", namespace, "--tasks", "7", "--json"])
    assert result.exit_code == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    _assert_claim_holds(DemoResult(**{**data, "lost_races": [_lost(r) for r in data["lost_races"]]}), 3, 7)
    with rxstate.connect(rx_server.url, namespace=namespace, read_only=True) as store:  # the writers' names
        writers = {
            store.client.hget(store.keyspace.entity("tasks", t, store.keyspace.partition_of(t)), "_by")
            for t in data["claims"]
        }
    assert writers == {b"agent-0", b"agent-1", b"agent-2"}
    text = CliRunner().invoke(app, ["demo", "--url", rx_server.url, "--agents", "2", "--tasks", "3"])
    assert text.exit_code == 0 and text.stdout.splitlines()[-1].endswith(": checked")


def _lost(raw: dict[str, Any]) -> LostRace:
    return LostRace(**raw)


def test_the_check_catches_a_double_claim() -> None:
    seen = _Watch(lambda _line: None)
    for version in (2, 3):
        seen.change(Change("tasks", "task-00", "update", version, MappingProxyType({"state": "claimed"})))
    result = DemoResult(tasks=1)
    task = DemoTask(title="t", state="done", owner="agent-0")
    board = [
        rxstate.Versioned(id="task-00", value=task, version=4, schema_version=1, timestamp_ms=0, actor="", offset="")
    ]
    _check(result, board, [DemoAgent(name="agent-0", done=1)], seen)
    assert any("2 winning claims" in f for f in result.failures)
    assert "no race was lost" not in " ".join(result.failures)  # one agent: no race to lose
