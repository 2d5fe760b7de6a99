"""Helpers shared by tests: waiting for what another thread, process or server does; comparing state."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.002) -> bool:
    """Whether ``predicate()`` turns true within ``timeout`` seconds (polled every ``interval`` s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def dump_all(client: Any) -> dict[bytes, bytes | None]:
    """A DUMP of every key of the database: compare two of them to prove that nothing was written.

    Write records (``rxw:{ns:p}:<id>``, the replies of earlier write calls kept a while for resends)
    are left out: any store's writes leave them and they expire by themselves, so on a shared server
    they come and go between two dumps. That a refused write leaves none is checked on its own
    (tests/faults/test_lost_replies.py).

    Nor are the cache's heartbeat keys (``..._probe:ping``), which stores' invalidation threads write on
    their own.
    """
    keys = sorted(k for k in client.keys("*") if not k.startswith(b"rxw:") and not k.endswith(b"}:_probe:ping"))
    return {key: client.dump(key) for key in keys}


def process_gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie not yet reaped counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def pings(unix_socket_path: str) -> bool:
    """Whether a server answers PING on a unix socket."""
    import redis

    try:
        with redis.Redis(unix_socket_path=unix_socket_path, socket_timeout=1) as client:
            return bool(client.ping())
    except redis.ConnectionError:
        return False
