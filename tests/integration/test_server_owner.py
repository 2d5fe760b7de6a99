"""An embedded server lives exactly as long as the process that owns it, and leaves no temp dir behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import pytest
import redis

from rxstate.server import owner
from rxstate.server.embedded import EmbeddedServer
from tests.helpers import wait_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals are Linux only")


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


def test_a_server_started_by_a_thread_that_exits_keeps_running():
    started: list[EmbeddedServer] = []
    native: list[int] = []

    def starter() -> None:
        native.append(threading.get_native_id())
        started.append(EmbeddedServer().start())

    t = threading.Thread(target=starter)
    t.start()
    t.join()
    [server] = started
    try:
        # The kernel acts on the thread's exit once the OS thread is gone, not when join() returns.
        assert wait_for(lambda: not os.path.exists(f"/proc/self/task/{native[0]}"))
        assert server.client().ping() and server.is_running
    finally:
        server.stop()


OWNER = textwrap.dedent(
    """
    import json, sys, threading
    from rxstate.server.embedded import EmbeddedServer
    box = []
    t = threading.Thread(target=lambda: box.append(EmbeddedServer().start()))
    t.start(); t.join()
    s = box[0]
    print(json.dumps({"port": s.port, "pid": s.pid, "dir": s._tmpdir}), flush=True)
    sys.stdin.read()  # until killed
    """
)


def _start_owner(tmp: Path) -> tuple[subprocess.Popen[str], dict[str, object]]:
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(
        [sys.executable, "-c", OWNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())


def test_a_killed_owner_leaves_no_server_running(tmp_path):
    proc, info = _start_owner(tmp_path)
    port, pid = int(info["port"]), int(info["pid"])
    assert redis.Redis(port=port).ping()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert wait_for(lambda: not _accepts(port) and not _pid_alive(pid), timeout=10.0)


def test_a_start_removes_temp_dirs_of_killed_owners_only(tmp_path, monkeypatch):
    proc, info = _start_owner(tmp_path)
    stale = Path(str(info["dir"]))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert wait_for(lambda: not _pid_alive(int(info["pid"])))
    assert stale.is_dir() and stale.parent == tmp_path
    # Kept: a live owner's dir, a dir without an owner pid, and a dead owner's dir whose lock is held.
    live = tmp_path / "rxstate-live"
    live.mkdir()
    (live / "owner.pid").write_text(f"{os.getpid()}\n")
    (live / "owner.lock").touch()
    bare = tmp_path / "rxstate-bare"
    bare.mkdir()
    locked = tmp_path / "rxstate-locked"
    locked.mkdir()
    (locked / "owner.pid").write_text(f"{proc.pid}\n")  # dead (reaped above)
    holder = subprocess.Popen(
        ["flock", str(locked / "owner.lock"), sys.executable, "-c", "import sys; sys.stdin.read()"],
        stdin=subprocess.PIPE,
    )
    try:
        assert wait_for(lambda: _flock_held(locked / "owner.lock"))
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
        with EmbeddedServer() as server:
            assert Path(str(server._tmpdir)).parent == tmp_path
            assert not stale.exists()
            assert live.is_dir() and bare.is_dir() and locked.is_dir()
    finally:
        holder.kill()
        holder.wait()


def _flock_held(path: Path) -> bool:
    return subprocess.run(["flock", "-n", str(path), "true"], check=False).returncode != 0


def test_stale_dir_removal_skips_unreadable_pids(tmp_path):
    junk = tmp_path / "rxstate-junk"
    junk.mkdir()
    (junk / "owner.pid").write_text("not a pid")
    assert owner.remove_stale_dirs({str(tmp_path)}) == []
    assert junk.is_dir()
