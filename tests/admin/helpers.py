"""Comparing a namespace's state logically (by type and content), for backup and recovery tests."""

from __future__ import annotations

from typing import Any

# Keys that come and go by themselves: the cache's heartbeat probes.
_TRANSIENT = (b"_probe", b"_probe:ping")


def logical_state(client: Any, namespace: str) -> dict[bytes, tuple[str, Any, int]]:
    """Every key of ``namespace`` (its tag replaced by ``NS``) -> (type, content, absolute expiry ms or -1)."""
    out: dict[bytes, tuple[str, Any, int]] = {}
    keys = [
        *client.scan_iter(match=f"rx:{{{namespace}:*", count=1000),
        *client.scan_iter(match=f"rx:{{{namespace}}}:*"),
    ]
    for key in sorted(keys):
        if key.endswith(_TRANSIENT):
            continue
        kind = client.type(key).decode()
        content: Any
        if kind == "hash":
            content = client.hgetall(key)
        elif kind == "set":
            content = client.smembers(key)
        elif kind == "zset":
            content = client.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            content = client.xrange(key)
        else:
            content = client.get(key)
        name = key.replace(f"{{{namespace}".encode(), b"{NS", 1)
        out[name] = (kind, content, int(client.pexpiretime(key)) if kind != "none" else -2)
    return out
