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
    Keys of other tests that expire between two dumps do not count as a difference (``Dump``).
    """
    keys = sorted(k for k in client.keys("*") if not k.startswith(b"rxw:") and not k.endswith(b"}:_probe:ping"))
    taken = time.time()
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.dump(key)
        pipe.pttl(key)
    replies = pipe.execute()
    data = {key: replies[2 * i] for i, key in enumerate(keys)}
    deadlines = {key: taken + replies[2 * i + 1] / 1000 for i, key in enumerate(keys) if replies[2 * i + 1] > 0}
    return Dump(data, deadlines, taken)


class Dump(dict[bytes, bytes | None]):
    """DUMPs by key, with when each key that had a TTL was due to expire.

    Two dumps are equal when every key in both has the same DUMP, no key appeared, and each key that
    vanished had a deadline no later than the second dump (it expired: on a shared server, another
    test's keys do).
    """

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, data: dict[bytes, bytes | None], deadlines: dict[bytes, float], taken: float) -> None:
        super().__init__(data)
        self.deadlines = deadlines
        self.taken = taken

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Dump):
            return dict.__eq__(self, other)
        first, second = (self, other) if self.taken <= other.taken else (other, self)
        if any(key not in first for key in second):
            return False
        for key, value in first.items():
            if key in second:
                if second[key] != value:
                    return False
            elif first.deadlines.get(key, float("inf")) > second.taken + 0.05:
                return False
        return True

    def __ne__(self, other: object) -> bool:
        return not self == other


def process_gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie not yet reaped counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):  # reaped between the two looks
        return True


def pings(unix_socket_path: str) -> bool:
    """Whether a server answers PING on a unix socket."""
    import redis

    try:
        with redis.Redis(unix_socket_path=unix_socket_path, socket_timeout=1) as client:
            return bool(client.ping())
    except redis.ConnectionError:
        return False
