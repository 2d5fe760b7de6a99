"""Health of a namespace and its server, for people and for liveness/readiness probes.

``check_health`` runs each check and says ``ok``, ``warn`` or ``fail`` with the numbers behind it:

- ``server``: the server answers ``PING`` (and how fast). The only liveness check.
- ``persistence``: AOF or RDB saving is on and its last write succeeded (``INFO persistence``).
- ``replication``: the role, the replicas connected to a primary, a replica's link to its primary.
- ``feed``: consumer groups on the change streams and how far behind they are (``XINFO GROUPS`` lag).
- ``cache``: the store's local cache is serving (its invalidation feed is connected).
- ``reaper``: no entity is overdue for its expiry record (expired longer ago than ``overdue_ms``).
- ``transactions``: two-phase transactions holding intents, and those abandoned past their deadline.

``HealthReport.exit_code("liveness")`` is 0 while the server answers; ``"readiness"`` is 0 unless a
check fails (warnings do not fail it).

Example:
    >>> report = check_health(store)  # doctest: +SKIP
    >>> report.status, report.exit_code("readiness")  # doctest: +SKIP
    ('ok', 0)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import redis

from rxstate.store.store import Store

__all__ = ["PROBES", "Check", "HealthReport", "check_health", "unreachable"]

PROBES = ("liveness", "readiness")
_RANK = {"ok": 0, "warn": 1, "fail": 2}


@dataclass(frozen=True)
class Check:
    """One check: its name, ``ok``/``warn``/``fail``, a sentence, and the numbers behind it."""

    name: str
    status: str
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HealthReport:
    """The checks of one ``check_health`` run; ``status`` is the worst of them."""

    namespace: str
    checks: tuple[Check, ...]

    @property
    def status(self) -> str:
        return max((c.status for c in self.checks), key=_RANK.__getitem__, default="ok")

    def check(self, name: str) -> Check:
        """The check called ``name``."""
        return next(c for c in self.checks if c.name == name)

    def exit_code(self, probe: str = "readiness") -> int:
        """0 if the probe passes, else 1: ``liveness`` asks whether the server answers, ``readiness``
        whether no check fails.

        Example:
            >>> HealthReport("crew", (Check("server", "ok", ""), Check("reaper", "fail", ""))).exit_code("liveness")
            0
        """
        if probe == "liveness":
            return 0 if self.check("server").status == "ok" else 1
        return 0 if self.status != "fail" else 1

    def as_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "status": self.status,
            "checks": [{"name": c.name, "status": c.status, "detail": c.detail, **c.data} for c in self.checks],
        }


def unreachable(namespace: str, error: BaseException) -> HealthReport:
    """The report for a server that cannot be reached at all."""
    return HealthReport(namespace, (Check("server", "fail", f"unreachable: {error}"),))


def check_health(
    store: Store, *, lag_warn: int = 1_000, overdue_ms: int = 10_000, tx_overdue_ms: int = 30_000
) -> HealthReport:
    """Check ``store``'s server and namespace (see the module docstring for the checks).

    Args:
        lag_warn: a consumer group this many change records behind is a warning.
        overdue_ms: an entity expired this long ago without its expiry record fails ``reaper``.
        tx_overdue_ms: a two-phase transaction this long past its deadline fails ``transactions``.
    """
    try:
        started = time.perf_counter()
        store.client.ping()
        latency = (time.perf_counter() - started) * 1000
    except redis.RedisError as exc:
        return unreachable(store.namespace, exc)
    checks = [
        Check("server", "ok", f"answers PING in {latency:.2f} ms", {"latency_ms": round(latency, 3)}),
        _persistence(store),
        _replication(store),
        _feed(store, lag_warn),
        _cache(store),
        _reaper(store, overdue_ms),
        _transactions(store, tx_overdue_ms),
    ]
    return HealthReport(store.namespace, tuple(checks))


def _info(store: Store, section: str) -> dict[str, Any] | None:
    try:
        info: Any = store.client.info(section)
    except redis.ResponseError:
        return None  # INFO refused (ACL) or unknown (fakeredis)
    if store.is_cluster and info and all(isinstance(v, dict) for v in info.values()):
        return dict(next(iter(info.values())))  # per node: the first primary's
    return dict(info)


def _persistence(store: Store) -> Check:
    info = _info(store, "persistence")
    if info is None:
        return Check("persistence", "warn", "unknown: the server does not report INFO persistence")
    aof = bool(int(info.get("aof_enabled", 0)))
    data = {"aof": aof, "rdb_changes_since_save": int(info.get("rdb_changes_since_last_save", 0))}
    for status in ("aof_last_write_status", "rdb_last_bgsave_status"):
        if info.get(status, "ok") != "ok":
            return Check("persistence", "fail", f"{status} is {info.get(status)}", data)
    if not aof and int(info.get("rdb_last_save_time", 0)) == 0:
        return Check("persistence", "warn", "neither AOF nor a saved RDB snapshot: a restart loses the data", data)
    return Check("persistence", "ok", "AOF on" if aof else "RDB snapshots only (the last seconds may be lost)", data)


def _replication(store: Store) -> Check:
    info = _info(store, "replication")
    if info is None:
        return Check("replication", "warn", "unknown: the server does not report INFO replication")
    role = str(info.get("role", "?"))
    if role == "slave":
        link = str(info.get("master_link_status", "down"))
        data: dict[str, Any] = {"role": "replica", "link": link}
        return Check("replication", "ok" if link == "up" else "fail", f"replica, link to its primary {link}", data)
    replicas = int(info.get("connected_slaves", 0))
    data = {"role": "primary", "replicas": replicas}
    if replicas == 0:
        return Check("replication", "warn", "primary without replicas", data)
    return Check("replication", "ok", f"primary with {replicas} replica(s)", data)


def _feed(store: Store, lag_warn: int) -> Check:
    ks = store.keyspace
    pipe = store.client.pipeline(transaction=False)
    for p in range(ks.partitions):
        pipe.exists(ks.changes(p))
    present = [p for p, n in enumerate(pipe.execute()) if n]
    pipe = store.client.pipeline(transaction=False)
    for p in present:
        pipe.xinfo_groups(ks.changes(p))
    worst: dict[str, int] = {}
    pending = 0
    for groups in pipe.execute():
        for g in groups:
            name = g["name"].decode() if isinstance(g["name"], bytes) else str(g["name"])
            lag = g.get("lag")
            worst[name] = max(worst.get(name, 0), int(lag) if lag is not None else 0)
            pending += int(g.get("pending", 0))
    data = {"groups": worst, "pending": pending}
    if not worst:
        return Check("feed", "ok", "no consumer groups", data)
    behind = {n: lag for n, lag in worst.items() if lag >= lag_warn}
    if behind:
        names = ", ".join(f"{n} ({lag} behind)" for n, lag in sorted(behind.items()))
        return Check("feed", "warn", f"consumer groups behind: {names}", data)
    return Check("feed", "ok", f"{len(worst)} consumer group(s), at most {max(worst.values())} behind", data)


def _cache(store: Store) -> Check:
    cache = store.cache
    if cache is None:
        return Check("cache", "ok", "off")
    stats = cache.stats()
    data: dict[str, Any] = {
        "active": stats.active,
        "mode": stats.mode,
        "entries": stats.entries,
        "disconnects": stats.disconnects,
    }
    if not stats.active:
        return Check("cache", "warn", "bypassed: its invalidation feed is not connected (reads go to the server)", data)
    return Check("cache", "ok", f"serving ({stats.mode}), {stats.entries} entries", data)


def _server_ms(store: Store) -> int:
    seconds, micros = store.client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def _reaper(store: Store, overdue_ms: int) -> Check:
    ks = store.keyspace
    names = sorted(n.decode() for n in store.client.hkeys(ks.schemas()))
    cutoff = _server_ms(store) - overdue_ms
    pipe = store.client.pipeline(transaction=False)
    for name in names:
        for p in range(ks.partitions):
            pipe.zcount(ks.expiry(name, p), "-inf", f"({cutoff}")
    counts = pipe.execute()
    overdue = {
        name: total
        for i, name in enumerate(names)
        if (total := sum(int(n) for n in counts[i * ks.partitions : (i + 1) * ks.partitions]))
    }
    data = {"overdue": overdue, "upkeep_failures": store.upkeep_failures}
    if overdue:
        which = ", ".join(f"{n}: {c}" for n, c in overdue.items())
        return Check("reaper", "fail", f"entities expired over {overdue_ms} ms ago without a record ({which})", data)
    return Check("reaper", "ok", "no entity overdue for expiry", data)


def _transactions(store: Store, tx_overdue_ms: int) -> Check:
    ks = store.keyspace
    pipe = store.client.pipeline(transaction=False)
    for p in range(ks.partitions):
        pipe.hvals(ks.tx_index(p))
    now = _server_ms(store)
    holding = abandoned = 0
    for values in pipe.execute():
        for value in values:
            holding += 1
            deadline = value.decode().partition(" ")[2]
            if deadline and float(deadline) + tx_overdue_ms < now:
                abandoned += 1
    data = {"holding_intents": holding, "abandoned": abandoned}
    if abandoned:
        return Check(
            "transactions", "fail", f"{abandoned} transaction(s) abandoned past their deadline still hold intents", data
        )
    return Check("transactions", "ok", f"{holding} transaction(s) in progress", data)
