"""Processes share the server of a data directory: it runs while any of them uses it, survives the death
of whichever process started it, loses no acknowledged write when its owner is killed, and stops when
the last process leaves. ``rxstate server --path`` runs one in the foreground."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from rxstate.server import data_dir_owner
from tests.helpers import pings, process_gone, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals are Linux only"),
]

REPO_ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env


class Worker:
    """A process running ``tests/integration/share_worker.py``; calling it sends one command."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.share_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
            cwd=REPO_ROOT,
        )
        self.pid = self.proc.pid

    def __call__(self, cmd: str, **args: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.kill()
            raise AssertionError(f"worker {self.pid} gave no reply to {cmd}: {self.stderr()}")
        reply = json.loads(line)
        if "error" in reply:
            raise AssertionError(f"worker {self.pid}: {cmd} failed: {reply['error']}")
        return reply["ok"]

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read() if self.proc.poll() is not None else ""

    def exit(self) -> str:
        """End the process without closing its store; returns what it wrote to stderr."""
        _, err = self.proc.communicate('{"cmd": "exit"}\n', timeout=60)
        assert self.proc.returncode == 0, err
        return err

    def kill(self) -> None:
        self.proc.kill()
        self.proc.communicate(timeout=60)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    workers: list[Worker] = []

    def make() -> Worker:
        workers.append(Worker())
        return workers[-1]

    yield make
    for w in workers:
        if w.proc.poll() is None:
            w.kill()
    # Every user is gone: the background owner of each directory stops its server and exits.
    assert wait_for(lambda: all(data_dir_owner(d) is None for d in tmp_path.iterdir() if d.is_dir()), timeout=15)


def _users(spawn: Any, data: Path, count: int = 2) -> list[Worker]:
    """``count`` processes, each connected to the data directory in turn (the first starts its server)."""
    workers = [spawn() for _ in range(count)]
    for w in workers:
        w("connect", path=str(data))
    return workers


def test_two_processes_share_state_through_a_data_directory(tmp_path, spawn):
    data = tmp_path / "state"
    first, second = spawn(), spawn()
    first("connect", path=str(data))
    first("put", id="a1", name="from the first")  # written before the second process arrives
    second("connect", path=str(data))
    assert second("get", id="a1") == ["from the first", 1]
    second("put", id="a2", name="from the second")
    assert first("get", id="a2") == ["from the second", 1]
    info = first("server")
    assert second("server") == info
    assert info["socket"] == str(data / "redis.sock")
    assert info["owner"] not in (first.pid, second.pid, os.getpid())  # a background owner runs it
    # The process that started the server leaves: the other keeps using the same server.
    assert first.exit() == ""
    assert second("server")["pid"] == info["pid"]
    assert second("count") == 2


def test_the_last_process_leaving_stops_the_server(tmp_path, spawn):
    data = tmp_path / "state"
    first, second = _users(spawn, data)
    info = second("server")
    first("close")
    first.exit()
    assert second("server")["pid"] == info["pid"]  # still up: the second process uses it
    second.kill()  # even a crash: the kernel drops the dead process's lock
    stopped = lambda: not pings(info["socket"]) and process_gone(info["pid"]) and process_gone(info["owner"])  # noqa: E731
    assert wait_for(stopped, timeout=15)
    assert data_dir_owner(data) is None


def test_a_killed_starting_process_leaves_the_server_to_the_others(tmp_path, spawn):
    starter, other = _users(spawn, tmp_path / "state")
    starter("put", id="a1", name="x")
    info = other("server")
    starter.kill()
    assert other("server")["pid"] == info["pid"]
    assert other("put", id="a1", name="y") == 2


def _write_then_kill_the_owner(spawn: Any, data: Path, entities: int) -> tuple[Worker, dict[str, Any]]:
    """A writer with fsync="always" writes ``entities`` entities, then the owner is SIGKILLed (its server dies too)."""
    writer = spawn()
    writer("connect", path=str(data), fsync="always")
    for i in range(entities):
        writer("put", id=f"a{i}", name=f"v{i}")
    info = writer("server")
    os.kill(info["owner"], signal.SIGKILL)
    assert wait_for(lambda: process_gone(info["owner"]) and process_gone(info["pid"]), timeout=15)
    return writer, info


def test_a_killed_owner_loses_no_acknowledged_write(tmp_path, spawn):
    writer, old = _write_then_kill_the_owner(spawn, tmp_path / "state", 50)
    # The next process starts the server again (unless the writer's own reconnects did already) and sees them.
    reader = spawn()
    reader("connect", path=str(tmp_path / "state"))
    assert reader("count") == 50
    assert reader("get", id="a49") == ["v49", 1]
    new = reader("server")
    assert new["pid"] != old["pid"] and new["owner"] != old["owner"]
    # The surviving writer carries on: its client reconnects to the new server.
    assert writer("put", id="a50", name="after") == 1
    assert reader("get", id="a50") == ["after", 1]
    assert writer("server")["pid"] == new["pid"]
    with redis.Redis(unix_socket_path=new["socket"]) as client:
        assert client.config_get("appendfsync") == {"appendfsync": "always"}  # the writer asked for it


def test_the_writer_and_the_owner_killed_together_lose_no_acknowledged_write(tmp_path, spawn):
    writer, _ = _write_then_kill_the_owner(spawn, tmp_path / "state", 20)
    writer.kill()
    reader = spawn()
    reader("connect", path=str(tmp_path / "state"))
    assert reader("count") == 20 and reader("get", id="a19") == ["v19", 1]


def _serve_in_foreground(data: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "rxstate.cli", "server", "--path", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline()


def test_a_foreground_server_serves_until_interrupted(tmp_path, spawn):
    data = tmp_path / "state"
    server, banner = _serve_in_foreground(data)
    try:
        assert f"unix://{data / 'redis.sock'}" in banner
        user = spawn()
        user("connect", path=str(data))
        info = user("server")
        assert info["owner"] == server.pid
        user("put", id="a1", name="kept")
        user.exit()
        # A second owner is refused while the foreground one runs.
        refused = subprocess.run(
            [sys.executable, "-m", "rxstate.server", "--path", str(data), "--until-unused"],
            capture_output=True,
            text=True,
            env=_env(),
            timeout=60,
            check=False,
        )
        assert refused.returncode == 3 and f"pid {server.pid}" in refused.stderr
        # Its last user left, yet the same server still runs: a later user finds it.
        later = spawn()
        later("connect", path=str(data))
        assert later("server")["pid"] == info["pid"]
        assert later("get", id="a1") == ["kept", 1]
        later.exit()
    finally:
        server.send_signal(signal.SIGINT)  # Ctrl-C
        _, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert process_gone(info["pid"]) and data_dir_owner(data) is None
    # The data outlives it: the next user starts a background owner that reads the AOF.
    after = spawn()
    after("connect", path=str(data))
    assert after("get", id="a1") == ["kept", 1]
    assert after("server")["owner"] != server.pid
