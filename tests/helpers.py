"""A polling helper shared by tests that wait for something another thread or server does."""

from __future__ import annotations

import time
from collections.abc import Callable
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
    """A DUMP of every key of the database: compare two of them to prove that nothing was written."""
    return {key: client.dump(key) for key in sorted(client.keys("*"))}
