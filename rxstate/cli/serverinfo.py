"""Read-only views of a namespace's running parts: change streams, clients and caches, memory, locks.

A process can only see other processes' local caches from the server side: each store with a cache
keeps one invalidation connection per server, named ``rxstate-invalidation-<namespace>``, in
``CLIENT TRACKING`` broadcast mode (flag ``t``) or subscribed to keyspace notifications. Locks are the
hashes ``rx:{ns}:_lock:<name>`` (owner ``o``, fencing token ``t``, re-entries ``n``; they expire with
the lease), the readers' zsets ``rx:{ns}:_lockr:<name>`` (owner -> deadline), and the token counters
``rx:{ns}:_lockseq:<name>`` (see ``rxstate.store.lock``).

Example:
    >>> stats(inspector)["streams"]["records"]  # doctest: +SKIP
    1204
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from rxstate.cli.inspector import Inspector, NamespaceUsage, scan_keys, scan_usage

__all__ = ["LockView", "locks", "stats"]

_INFO_KEYS = (
    "redis_version",
    "valkey_version",
    "uptime_in_seconds",
    "connected_clients",
    "used_memory",
    "used_memory_human",
    "maxmemory",
    "keyspace_hits",
    "keyspace_misses",
    "tracking_clients",
    "tracking_total_prefixes",
    "notify_keyspace_events",
)


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _server(client: Any) -> dict[str, Any]:
    try:
        info = client.info()
    except redis.ResponseError as exc:  # fakeredis and restricted users have no INFO
        return {"unavailable": str(exc)}
    if isinstance(info, dict) and info and all(isinstance(v, dict) for v in info.values()):
        info = next(iter(info.values()))  # a cluster client answers per node: show the first
    return {k: info[k] for k in _INFO_KEYS if k in info}


def _clients(client: Any, namespace: str) -> dict[str, Any]:
    try:
        listed = client.client_list()
    except redis.ResponseError as exc:
        return {"unavailable": str(exc)}
    name = f"rxstate-invalidation-{namespace}"
    caches = [c for c in listed if c.get("name") == name]
    return {
        "connected": len(listed),
        "caches": len(caches),
        "caches_by_mode": {
            "tracking": sum("t" in c.get("flags", "") for c in caches),
            "keyspace": sum("t" not in c.get("flags", "") for c in caches),
        },
    }


def _streams(inspector: Inspector) -> dict[str, Any]:
    ks, client = inspector.keyspace, inspector.client
    n = ks.partitions
    pipe = client.pipeline(transaction=False)
    for p in range(n):
        pipe.xlen(ks.changes(p))
        pipe.xlen(ks.event_log(p))
        pipe.xinfo_groups(ks.changes(p))
    replies = pipe.execute(raise_on_error=False)
    lengths = [r if isinstance(r, int) else 0 for r in replies[0::3]]
    events = [r if isinstance(r, int) else 0 for r in replies[1::3]]
    groups: dict[str, dict[str, int]] = {}
    for reply in replies[2::3]:
        for g in reply if isinstance(reply, list) else ():
            entry = groups.setdefault(_text(g["name"]), {"consumers": 0, "pending": 0, "lag": 0})
            entry["consumers"] = max(entry["consumers"], int(g.get("consumers", 0)))
            entry["pending"] += int(g.get("pending", 0))
            entry["lag"] += int(g.get("lag") or 0)
    return {
        "partitions": n,
        "records": sum(lengths),
        "longest": max(lengths, default=0),
        "events": sum(events),
        "groups": groups,
    }


def stats(inspector: Inspector, usage: NamespaceUsage | None = None) -> dict[str, Any]:
    """Server, clients and local caches, change streams and memory of the inspector's namespace.

    Example:
        >>> stats(inspector)["clients"]["caches"]  # doctest: +SKIP
        2
    """
    ns = inspector.namespace
    if usage is None:
        usage = scan_usage(inspector.client, ns, inspector.steps).get(ns, NamespaceUsage())
    return {
        "namespace": ns,
        "server": _server(inspector.client),
        "clients": _clients(inspector.client, ns),
        "streams": _streams(inspector),
        "memory": {
            "keys": usage.total.keys,
            "bytes": usage.total.memory,
            "by_kind": {k: asdict(u) for k, u in sorted(usage.kinds.items())},
            "by_collection": {k: asdict(u) for k, u in sorted(usage.collections.items())},
        },
    }


@dataclass
class LockView:
    """A held lock: exclusive (one owner) or shared (readers), with its lease and fencing token."""

    name: str
    mode: str
    token: int | None
    owner: str | None
    expires_in_ms: int
    reentries: int = 1
    readers: list[dict[str, Any]] = field(default_factory=list)
    tokens_issued: int = 0

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _server_ms(client: Any) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def locks(inspector: Inspector) -> list[LockView]:
    """The locks of the namespace held now, by name.

    Example:
        >>> [(lock.name, lock.token) for lock in locks(inspector)]  # doctest: +SKIP
        [('printer', 7)]
    """
    ks, client, ns = inspector.keyspace, inspector.client, inspector.namespace
    head = f"rx:{{{ns}}}:"
    names: dict[str, str] = {}
    with inspector.steps("looking for locks", None) as tick:
        for pattern, mode in ((f"{head}_lock:*", "x"), (f"{head}_lockr:*", "r")):
            for key in scan_keys(client, pattern):
                tick(1)
                names.setdefault(key.split(":", 3)[3], mode)
    now = _server_ms(client)
    out = []
    for name in sorted(names):
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(ks.lock(name))
        pipe.pttl(ks.lock(name))
        pipe.zrangebyscore(ks.lock_readers(name), now + 1, "+inf", withscores=True)
        pipe.get(ks.lock_sequence(name))
        held, pttl, readers, issued = pipe.execute()
        if held:
            out.append(
                LockView(
                    name,
                    "exclusive",
                    int(held.get(b"t", 0)),
                    _text(held.get(b"o", b"")),
                    max(int(pttl), 0),
                    int(held.get(b"n", 1)),
                    tokens_issued=int(issued or 0),
                )
            )
        elif readers:
            left = [int(d) - now for _o, d in readers]
            leases: list[dict[str, Any]] = [
                {"owner": _text(o), "expires_in_ms": ms} for (o, _d), ms in zip(readers, left, strict=True)
            ]
            out.append(LockView(name, "shared", None, None, max(left), len(leases), leases, int(issued or 0)))
    return out
