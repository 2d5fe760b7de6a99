"""Durable writes: a write is acknowledged only once replicas hold it (``WAIT``), or once it is fsynced to
the append-only files of the primary and of replicas (``WAITAOF``), after the write script.

``connect(durability="replicated")`` makes every write of a store wait for ``durability_replicas``
replicas to hold it in memory; ``durability="fsynced"`` makes it wait until the primary has fsynced it to
its append-only file and ``durability_replicas`` replicas (0 allowed: a single server) have fsynced it to
theirs (``WAITAOF``: Redis 7.2+ and Valkey; the servers run with ``appendonly yes``).
``store.writer.durable()`` (a context manager) and ``durable=True`` on a write make the writes of one
block, or one write, durable in the store's mode (``"replicated"`` on a store opened without one). The
Writer then sends each write script call together with ``WAIT``/``WAITAOF`` in one pipelined round trip
on one connection to the primary holding the call's slot, and raises ``NotReplicated`` when the
confirmations do not come in time.

Why this is written here rather than taken from redis-py: ``WAIT`` and ``WAITAOF`` count the writes of
the connection they are sent on, so they must follow the write on the same connection. A redis-py
cluster pipeline sends them to every primary on connections of its choosing, so on a cluster the calls
and their wait go as a plain pipeline to the slot's primary, and the redirections a cluster may answer
meanwhile (``MOVED`` after a failover or a finished slot move, ``ASK`` and ``TRYAGAIN`` during one) are
followed here. Each call carries its write id (``rxstate.store.writer``), so sending it again after a
redirection or a lost reply takes effect once.

Example:
    >>> Durability("replicated", timeout=0.5).timeout_ms
    500
    >>> Durability("fsynced", replicas=0).wait_command
    ('WAITAOF', 1, 0, 1000)
    >>> Durability("sometimes")
    Traceback (most recent call last):
    ...
    rxstate.core.errors.ValidationError: durability must be one of ('none', 'replicated', 'fsynced'), not 'sometimes'
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import redis
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)

from rxstate.core.errors import NotReplicated, ServerError, ValidationError
from rxstate.core.scripts import ScriptCall, translate_error

__all__ = ["MODES", "Durability"]

MODES = ("none", "replicated", "fsynced")
_REDIRECTS = 8
"""How many MOVED/ASK/TRYAGAIN answers one durable send follows before it gives up."""
log = logging.getLogger("rxstate")
_LOST = (redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError)


class Durability:
    """How many replicas must confirm a write, whether it must be fsynced, and how long the primary waits.

    Args:
        mode: ``"none"`` (a write is acknowledged by the primary alone), ``"replicated"`` (``replicas``
            replicas hold it) or ``"fsynced"`` (the primary's and ``replicas`` replicas' append-only files
            hold it).
        replicas: how many replicas must confirm each durable write (``"fsynced"`` accepts 0).
        timeout: seconds the primary waits for them (``WAIT``'s timeout) before ``NotReplicated``.
    """

    def __init__(self, mode: str = "none", *, replicas: int = 1, timeout: float = 1.0) -> None:
        if mode not in MODES:
            raise ValidationError(f"durability must be one of {MODES}, not {mode!r}", field="durability")
        least = 0 if mode == "fsynced" else 1
        if type(replicas) is not int or replicas < least:
            wanted = "a non-negative" if least == 0 else "a positive"
            raise ValidationError(
                f"durability_replicas must be {wanted} int for durability={mode!r}, not {replicas!r}",
                field="durability_replicas",
            )
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ValidationError(f"durability_timeout must be positive seconds, not {timeout!r}", field="timeout")
        self.mode = mode
        self.replicas = replicas
        self.timeout_ms = max(1, round(timeout * 1000))

    @property
    def waits(self) -> bool:
        """Whether writes wait for confirmations (any mode but ``"none"``)."""
        return self.mode != "none"

    @property
    def fsynced(self) -> bool:
        """Whether writes wait for fsyncs (``WAITAOF``) rather than for replicas' memory (``WAIT``)."""
        return self.mode == "fsynced"

    @property
    def wait_command(self) -> tuple[Any, ...]:
        """The command pipelined after the writes: ``WAIT n ms`` or ``WAITAOF 1 n ms``."""
        if self.fsynced:
            return ("WAITAOF", 1, self.replicas, self.timeout_ms)
        return ("WAIT", self.replicas, self.timeout_ms)

    def __repr__(self) -> str:
        return f"<Durability {self.mode} replicas={self.replicas} timeout_ms={self.timeout_ms}>"

    def check(self, client: Any) -> None:
        """Refuse a server that cannot confirm writes this way, up front (``connect`` calls this).

        Raises:
            ServerError: the server refuses ``WAIT`` (fakeredis has none), or, for ``"fsynced"``, has no
                ``WAITAOF`` (Redis before 7.2) or runs without ``appendonly yes``.
        """
        if not self.waits:
            return
        probe = ("WAITAOF", 1, 0, 1) if self.fsynced else ("WAIT", 0, 0)
        try:
            client.execute_command(*probe)
        except redis.ResponseError as exc:
            raise ServerError(self._refused(exc)) from exc

    def _refused(self, exc: BaseException) -> str:
        if self.fsynced:
            return (
                f"durability='fsynced' needs WAITAOF (Redis 7.2+ or Valkey) on a server with appendonly yes, "
                f"which this server refuses: {exc}"
            )
        return f"durability={self.mode!r} needs WAIT, which this server refuses: {exc}"

    def run(self, client: Any, calls: Sequence[ScriptCall], *, cluster: bool) -> list[Any]:
        """Run ``calls`` (each atomic on its own), then wait for replicas; each reply or typed error in place.

        Raises:
            NotReplicated: a call wrote, but fewer than ``replicas`` replicas confirmed it in time.
            ServerError: the server has no ``WAIT`` (fakeredis), or a slot kept moving.
        """
        results: list[Any] = [None] * len(calls)
        pending: list[tuple[int, Any]] = [(i, None) for i in range(len(calls))]  # (call index, ASK target)
        for _attempt in range(_REDIRECTS):
            groups: dict[str, tuple[Any, bool, list[int]]] = {}
            for i, target in pending:
                node = target if target is not None else self._primary(client, calls[i], cluster)
                name = _name(node) if cluster else ""
                groups.setdefault(f"{name}:{target is not None}", (node, target is not None, []))[2].append(i)
            pending = []
            for node, asking, indexes in groups.values():
                conn = client.get_redis_connection(node) if cluster else client
                try:
                    replies = self._on(conn, [calls[i] for i in indexes], asking, node if cluster else None)
                except _LOST:
                    if cluster:  # the node may be gone for good (a failover): learn the topology for the resend
                        _refresh(client)
                    raise
                for i, reply in zip(indexes, replies, strict=True):
                    redirect = _redirect(reply)
                    if redirect is None:
                        results[i] = reply
                    elif redirect[0] == "ASK":
                        pending.append((i, client.get_node(host=redirect[1], port=redirect[2])))
                    else:
                        pending.append((i, None))
                        if redirect[0] == "MOVED":
                            _refresh(client)
            if not pending:
                return results
            time.sleep(0.02)
        raise ServerError(f"a durable write kept being redirected ({_REDIRECTS} times): the slot keeps moving")

    def _primary(self, client: Any, call: ScriptCall, cluster: bool) -> Any:
        if not cluster:
            return None
        return client.nodes_manager.get_node_from_slot(client.keyslot(call[1][0]))

    def _on(self, conn: Any, calls: Sequence[ScriptCall], asking: bool, node: Any) -> list[Any]:
        """The calls and one WAIT as one pipeline on ``conn``; NOSCRIPT calls loaded and sent again."""
        replies, (local, acked) = self._pipeline(conn, calls, asking)
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:
            for script in {calls[i][0].name: calls[i][0] for i in missing}.values():
                conn.script_load(script.source)  # keyless: no ASKING needed on an importing node
            again, (local, acked) = self._pipeline(conn, [calls[i] for i in missing], asking)
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        out = [translate_error(r) if isinstance(r, BaseException) else r for r in replies]
        wrote = [i for i, r in enumerate(out) if not isinstance(r, BaseException)]
        if wrote and (acked < self.replicas or not local):
            keys = [str(k) for k in calls[wrote[0]][1]]
            where = f" on {_name(node)}" if node is not None else ""
            if self.fsynced:
                what = f"fsynced by {acked} of {self.replicas} replicas" + ("" if local else ", not by the primary,")
                outcome = "acknowledged as fsynced"
            else:
                what, outcome = f"confirmed by {acked} of {self.replicas} replicas", "acknowledged as replicated"
            raise NotReplicated(
                f"write to {keys[1:4]}{where} was {what} within {self.timeout_ms} ms: "
                f"it is on the primary but not {outcome}",
                keys=keys,
                acked=acked,
                wanted=self.replicas,
                timeout_ms=self.timeout_ms,
                node=_name(node) if node is not None else None,
                fsynced=local if self.fsynced else None,
            )
        return out

    def _pipeline(self, conn: Any, calls: Sequence[ScriptCall], asking: bool) -> tuple[list[Any], tuple[bool, int]]:
        """The calls' replies, and (fsynced on the primary, replicas that confirmed)."""
        pipe = conn.pipeline(transaction=False)
        for script, keys, args in calls:
            if asking:
                pipe.execute_command("ASKING")
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        pipe.execute_command(*self.wait_command)
        replies = pipe.execute(raise_on_error=False)
        acked = replies[-1]
        if isinstance(acked, ResponseError):
            raise ServerError(self._refused(acked))
        body = replies[:-1][1::2] if asking else replies[:-1]
        if self.fsynced:  # WAITAOF answers [local fsyncs, replicas' fsyncs]
            return list(body), (int(acked[0]) >= 1, int(acked[1]))
        return list(body), (True, int(acked))


def _name(node: Any) -> str:
    return f"{node.host}:{node.port}"


def _redirect(reply: Any) -> tuple[str, str, int] | None:
    """``(kind, host, port)`` of a MOVED/ASK reply, ``(kind, "", 0)`` of TRYAGAIN/CLUSTERDOWN; else None."""
    if isinstance(reply, MovedError):  # before AskError: MovedError subclasses it
        return "MOVED", reply.host, int(reply.port)
    if isinstance(reply, AskError):
        return "ASK", reply.host, int(reply.port)
    if isinstance(reply, TryAgainError | ClusterDownError):
        return "TRYAGAIN", "", 0
    return None


def _refresh(client: Any) -> None:
    """Learn a cluster's topology again (after a lost node: a failover may have moved its slots).

    While a failover is still under way some slots have no primary and the refresh fails: the write's
    resend (``Writer`` retries) then meets the old topology and fails again, or succeeds after the next
    refresh.
    """
    try:
        client.nodes_manager.initialize()
    except (RedisClusterException, redis.RedisError) as exc:
        log.debug("cluster topology refresh failed (a failover under way?): %s", exc)
