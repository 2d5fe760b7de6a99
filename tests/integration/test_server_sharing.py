"""connect() without a URL: stores share embedded servers (one per process, one per data directory),
isolated=True is private, and a script that never closes its store exits quietly."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import rxstate
from rxstate.errors import ServerError, ValidationError
from rxstate.server import data_dir_owner, serve
from rxstate.server.directory import socket_path
from tests.helpers import pings, process_gone, wait_for
from tests.models import Agent

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)


def test_connects_without_a_url_share_the_process_server():
    a, b = rxstate.connect(namespace="shared"), rxstate.connect(namespace="shared")
    try:
        assert a.server.url == b.server.url
        assert a.client is not b.client  # each store has its own connections
        a.collection("agents", Agent).put("a1", Agent(name="written by a"))
        assert b.collection("agents", Agent).get("a1", consistent=True).name == "written by a"
        a.close()
        assert b.server.is_running  # still used by b
        assert b.collection("agents", Agent).get("a1").name == "written by a"
    finally:
        a.close()
        b.close()
    assert not b.server.is_running  # the last store stopped it


def test_stores_connecting_from_threads_at_once_share_one_server():
    stores: list[rxstate.Store] = []
    lock = threading.Lock()

    def open_one() -> None:
        store = rxstate.connect(namespace="threads")
        with lock:
            stores.append(store)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert len(stores) == 4 and len({s.server.url for s in stores}) == 1
        assert len({s.server.pid for s in stores}) == 1
    finally:
        for s in stores:
            s.close()


def test_isolated_server_is_private():
    shared = rxstate.connect(namespace="iso")
    private = rxstate.connect(namespace="iso", isolated=True)
    try:
        assert private.server.isolated and not shared.server.isolated
        assert private.server.url != shared.server.url
        shared.collection("agents", Agent).put("a1", Agent(name="shared"))
        assert not private.collection("agents", Agent).exists("a1")
        again = rxstate.connect(namespace="iso", isolated=True)
        assert again.server.url not in (private.server.url, shared.server.url)
        again.close()
        private.close()
        assert not private.server.is_running and shared.server.is_running
    finally:
        shared.close()
        private.close()


def test_connects_to_one_data_directory_share_its_server(tmp_path):
    data = tmp_path / "state"
    a, b = rxstate.connect(path=data), rxstate.connect(path=str(data) + "/")
    try:
        assert a.server.path == b.server.path == data.resolve()
        assert a.server.unix_socket_path == str(data.resolve() / "redis.sock")
        assert a.server.pid == b.server.pid and a.client is not b.client
        owner = a.server.owner_pid
        assert owner is not None and owner != os.getpid()  # a background owner runs it
        a.collection("agents", Agent).put("a1", Agent(name="x"))
        assert b.collection("agents", Agent).get("a1", consistent=True).name == "x"
    finally:
        a.close()
        b.close()
    # Nobody uses the directory any more: its owner stops the server and exits.
    socket_path = str(data.resolve() / "redis.sock")
    assert wait_for(lambda: not pings(socket_path) and data_dir_owner(data) is None, timeout=15)


def test_fsync_always_is_applied_to_the_running_server(tmp_path):
    with rxstate.connect(path=tmp_path) as first:
        config = first.server.client().config_get("appendfsync")
        assert config == {"appendfsync": "everysec"}  # the default (redis-py decodes CONFIG replies)
        with rxstate.connect(path=tmp_path, fsync="always") as second:
            assert second.server.pid == first.server.pid
            assert first.client.config_get("appendfsync") == {"appendfsync": "always"}


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"isolated": True, "path": "state"}, "shared by every process"),
        ({"fsync": "always"}, "pass path="),
        ({"path": "state", "fsync": "sometimes"}, "fsync must be one of"),
        ({"url": "redis://127.0.0.1:1/0", "isolated": True}, "not with a URL"),
        ({"url": "redis://127.0.0.1:1/0", "fsync": "always"}, "not with a URL"),
    ],
)
def test_embedded_options_are_checked(tmp_path, monkeypatch, options, match):
    monkeypatch.chdir(tmp_path)
    url = options.pop("url", None)
    with pytest.raises(ValidationError, match=match):
        rxstate.connect(url, **options)
    assert not (tmp_path / "state").exists()  # nothing was started


def test_a_data_directory_with_redis_url_set_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    with pytest.raises(ValidationError, match="not with REDIS_URL, which is set in the environment"):
        rxstate.connect(path=tmp_path / "state")
    assert not (tmp_path / "state").exists()


QUIET = textwrap.dedent(
    """
    import sys
    import rxstate

    class Agent(rxstate.Model):
        name: str

    store = rxstate.connect(**eval(sys.argv[1]))
    agents = store.collection("agents", Agent)
    store.changes().subscribe(lambda change: None)  # a change feed is still following at exit
    agents.put("a1", Agent(name="x"))
    assert agents.get("a1").name == "x"
    print(store.server.pid, flush=True)
    # ends without store.close()
    """
)


def _run_quiet(options: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-c", QUIET, options], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_a_script_that_never_closes_its_store_exits_quietly():
    result = _run_quiet("{}")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert wait_for(lambda: process_gone(int(result.stdout.split()[0])))  # and its server is stopped


@pytest.mark.slow
def test_a_script_on_a_data_directory_that_never_closes_its_store_exits_quietly(tmp_path):
    result = _run_quiet(repr({"path": str(tmp_path)}))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    server_pid = int(result.stdout.split()[0])
    assert wait_for(lambda: process_gone(server_pid) and data_dir_owner(tmp_path) is None, timeout=15)


def test_serve_runs_a_directory_server_until_stopped(tmp_path):
    stop, ready = threading.Event(), []
    thread = threading.Thread(target=serve, args=(tmp_path,), kwargs={"stop": stop, "ready": ready.append})
    thread.start()
    try:
        assert wait_for(lambda: ready)
        [server] = ready
        with pytest.raises(ServerError, match=f"already used by another server \\(pid {os.getpid()}\\)"):
            serve(tmp_path)  # one owner per directory
        with rxstate.connect(path=tmp_path) as store:
            assert store.server.owner_pid == os.getpid()  # served here: no background owner was started
            assert store.server.pid == server.pid
            store.collection("agents", Agent).put("a1", Agent(name="x"))
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive() and not server.is_running and data_dir_owner(tmp_path) is None
    with rxstate.connect(path=tmp_path) as store:  # the data stayed in the directory
        assert store.collection("agents", Agent).get("a1").name == "x"


def test_a_directory_too_long_for_a_socket_address_gets_one_in_tmp(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    assert socket_path(deep) == socket_path(deep) and socket_path(deep).startswith("/tmp/rxstate.")
    with rxstate.connect(path=deep) as store:
        assert store.server.unix_socket_path == socket_path(deep)
        store.collection("agents", Agent).put("a1", Agent(name="x"))
        assert (deep / "appendonlydir").is_dir()
