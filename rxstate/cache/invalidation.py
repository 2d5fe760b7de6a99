"""The invalidation feed of the local cache: tells the cache which keys anyone changed.

Two mechanisms, each on one dedicated connection per server (per primary on a cluster), read by one
thread each:

- ``"tracking"``: ``CLIENT TRACKING ON REDIRECT <own id> BCAST PREFIX rx:{<ns>:`` and ``SUBSCRIBE
  __redis__:invalidate`` on the same RESP2 connection. Needs no server configuration, names every key a
  command or script touched (also on ``FLUSHALL``), and the message is sent before the writer's reply.
- ``"keyspace"``: ``PSUBSCRIBE __keyspace@<db>__:rx:{<ns>:*`` with ``notify-keyspace-events`` enabled
  (the feed adds the flags it needs with ``CONFIG SET`` when it may, and warns when it may not).

Whole-database events: ``CLIENT TRACKING`` reports ``FLUSHALL``/``FLUSHDB`` at once; keyspace
notifications report none of them, and neither reports ``SWAPDB``. So each server also holds an *epoch
key* (``rx:{<ns>:<p>}:_probe``) with a random token, created by the first store that finds it missing
(``SET NX``, never overwritten), and each feed checks every ``EPOCH_CHECK`` seconds that it still holds
the token it remembered: a flush or swap changes or removes it, and the cache is cleared. A store that
connects after a flush creates a new token, so it cannot hide the flush from older ones.

A feed is "up" once every connection is subscribed and a probe write has come back through it; only
then does the cache serve hits. When any connection drops (killed, server restart, missed heartbeat),
the cache is cleared and bypassed until that connection is back and re-subscribed.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import redis

from rxstate.cache.lru import EntityCache
from rxstate.core.errors import ValidationError
from rxstate.core.keys import Keyspace

__all__ = ["EPOCH_CHECK", "MODES", "InvalidationFeed", "InvalidationUnavailable"]

log = logging.getLogger("rxstate.cache")

MODES = ("auto", "tracking", "keyspace")
AUTO_ORDER = ("tracking", "keyspace")  # tracking measured faster (benchmarks/bench_cache.py); see README
_REQUIRED_EVENTS = "Kg$lshzxe"  # every event that can change or remove a hash key, keyspace-channel form
_POLL = 0.2
_HEARTBEAT = 1.0
_HEARTBEAT_TIMEOUT = 3.0
_PROBE_TIMEOUT = 2.0
_PING_TTL_MS = 10_000
EPOCH_CHECK = 0.05  # seconds between checks of the epoch key (flushes and swaps of the database)
_CHANNEL = b"__redis__:invalidate"


class InvalidationUnavailable(Exception):
    """The server cannot provide this kind of invalidation (not a lost connection)."""


def _merge_events(current: str) -> str | None:
    """Flags to CONFIG SET so that ``current`` also has every required event; None if it already has."""
    have = set(current.replace("A", "g$lshzxetd"))
    missing = [f for f in _REQUIRED_EVENTS if f not in have]
    return None if not missing else current + "".join(missing)


class _Node:
    """One server (a cluster primary) watched by one thread on one dedicated connection."""

    def __init__(self, feed: InvalidationFeed, name: str, connect: Callable[[], Any], probe_key: str | None) -> None:
        self.feed = feed
        self.name = name
        self._connect = connect
        self.probe_key = probe_key  # the epoch key; its notifications are checked on "<probe>:ping"
        self.epoch: bytes | None = None  # the token the epoch key held when this feed last looked
        self.conn: Any = None
        self.up = False
        self.thread = threading.Thread(target=self._run, name=f"rxstate-invalidation-{name}", daemon=True)

    # -- setup ---------------------------------------------------------------------------------
    def _command(self, *args: Any) -> Any:
        self.conn.send_command(*args)
        return self.conn.read_response()

    def _subscribe(self, mode: str) -> None:
        feed = self.feed
        with contextlib.suppress(redis.RedisError, OSError):  # a name only helps `CLIENT LIST` readers
            self._command("CLIENT", "SETNAME", f"rxstate-invalidation-{feed.keyspace.namespace}")
        if mode == "tracking":
            try:
                own_id = self._command("CLIENT", "ID")
                self._command("CLIENT", "TRACKING", "ON", "REDIRECT", own_id, "BCAST", "PREFIX", feed.prefix)
            except Exception as exc:
                if _is_connection_error(exc):
                    raise
                raise InvalidationUnavailable(f"CLIENT TRACKING is not available: {exc}") from exc
            self.conn.send_command("SUBSCRIBE", _CHANNEL)
        else:
            self._enable_keyspace_events()
            self.conn.send_command("PSUBSCRIBE", *feed.patterns)
        for _pattern in feed.patterns if mode != "tracking" else [_CHANNEL]:
            reply = self.conn.read_response()
            if not (isinstance(reply, list) and reply and reply[0] in (b"subscribe", b"psubscribe")):
                raise InvalidationUnavailable(f"unexpected reply to the subscription: {reply!r}")

    def _enable_keyspace_events(self) -> None:
        current: str | None
        try:
            reply = self._command("CONFIG", "GET", "notify-keyspace-events")
            values = dict(zip(reply[::2], reply[1::2], strict=False)) if isinstance(reply, list) else reply
            raw = values.get(b"notify-keyspace-events", b"")
            current = raw.decode() if isinstance(raw, bytes) else str(raw)
        except Exception as exc:
            if _is_connection_error(exc):
                raise
            if self.feed.restricted and "NOPERM" in str(exc).upper() + type(exc).__name__.upper():
                return  # a principal may not read the config: the probe tells whether notifications arrive
            current = None  # unknown (CONFIG GET refused or unsupported): try to set what we need
        wanted = _merge_events(current) if current is not None else _REQUIRED_EVENTS
        if wanted is None:
            return
        try:
            self._command("CONFIG", "SET", "notify-keyspace-events", wanted)
        except Exception as exc:
            if _is_connection_error(exc):
                raise
            raise InvalidationUnavailable(
                f"keyspace notifications are off on {self.name} (notify-keyspace-events={current!r}) and "
                f"CONFIG SET was refused ({exc}); enable them with "
                f"`CONFIG SET notify-keyspace-events {_REQUIRED_EVENTS}` or in the server config"
            ) from exc

    def _probe(self, mode: str) -> None:
        """Learn the epoch token; write a ping key and wait until its invalidation comes back here."""
        if self.probe_key is None:
            return
        ping = self.probe_key + ":ping"
        try:
            self.epoch = self._read_epoch()
            self.feed.client.set(ping, b"1", px=_PING_TTL_MS)
        except Exception as exc:
            if _is_connection_error(exc):
                raise
            raise InvalidationUnavailable(f"cannot write the probe keys {self.probe_key}: {exc}") from exc
        deadline = time.monotonic() + _PROBE_TIMEOUT
        while time.monotonic() < deadline:
            if self.conn.can_read(timeout=_POLL) and ping in self._handle(self.conn.read_response()):
                return
        hint = ""
        if self.feed.restricted:
            hint = (
                f" (a principal cannot turn keyspace notifications on: set notify-keyspace-events {_REQUIRED_EVENTS})"
            )
        raise InvalidationUnavailable(
            f"{mode}: a probe write on {self.name} was not reported within {_PROBE_TIMEOUT} s{hint}"
        )

    # -- messages ------------------------------------------------------------------------------
    def _handle(self, msg: Any) -> list[str]:
        """Apply one message to the cache; returns the keys it named."""
        if not isinstance(msg, list) or not msg:
            return []
        self.feed.messages += 1
        kind = msg[0]
        cache = self.feed.cache
        if kind == b"message" and len(msg) == 3 and msg[1] == _CHANNEL:
            if msg[2] is None:  # FLUSHALL / FLUSHDB: everything may be gone
                cache.clear(flushed=True)
                return []
            keys = [k.decode("utf-8", "surrogateescape") for k in msg[2]]
            # one message covers the writes of one server event-loop iteration: possibly several
            cache.invalidate_many([k for k in keys if _is_entity(k)], echoes=True, coalesced=True)
            return keys
        if kind == b"pmessage" and len(msg) == 4:
            key = msg[2][self.feed.channel_prefix_len :].decode("utf-8", "surrogateescape")
            if _is_entity(key):
                cache.invalidate_many((key,), echoes=True)  # one notification per command
            return [key]
        return []

    def _listen(self) -> None:
        conn = self.conn
        last_data = time.monotonic()
        ping_sent: float | None = None
        closed = self.feed.closed
        watch_epoch = self.probe_key is not None
        next_check = last_data + EPOCH_CHECK
        poll = EPOCH_CHECK if watch_epoch else _POLL
        while not closed.is_set():
            if watch_epoch and time.monotonic() >= next_check:
                self._check_epoch()
                next_check = time.monotonic() + EPOCH_CHECK
            if conn.can_read(timeout=poll):
                self._handle(conn.read_response())
                last_data = time.monotonic()
                ping_sent = None
                continue
            now = time.monotonic()
            if ping_sent is not None and now - ping_sent > _HEARTBEAT_TIMEOUT:
                raise ConnectionError(f"{self.name}: no heartbeat reply within {_HEARTBEAT_TIMEOUT} s")
            if ping_sent is None and now - last_data > _HEARTBEAT:
                conn.send_command("PING")
                ping_sent = now

    def _read_epoch(self) -> bytes:
        """The epoch key's token, creating one if the key is missing (never replacing one)."""
        client = self.feed.client
        while True:
            client.set(self.probe_key, secrets.token_hex(8).encode(), nx=True)
            token = client.get(self.probe_key)
            if token is not None:  # else flushed between the two commands
                return bytes(token)

    def _check_epoch(self) -> None:
        """Clear the cache when the epoch key lost its token: the database was flushed or swapped."""
        if self.feed.client.get(self.probe_key) != self.epoch:
            self.feed.cache.clear(flushed=True)
            log.info("cache cleared: the database of %s was flushed or swapped", self.name)
            self.epoch = self._read_epoch()

    def _run(self) -> None:
        feed = self.feed
        backoff = 0.02
        while not feed.closed.is_set():
            mode = feed.mode
            try:
                self.conn = self._connect()
                self.conn.connect()
                self._subscribe(mode)
                self._probe(mode)
                backoff = 0.02
                feed.node_up(self)
                self._listen()
            except InvalidationUnavailable as exc:
                feed.node_failed(self, exc)
            except Exception as exc:  # a lost connection: clear, bypass, reconnect
                feed.node_down(self, exc)
            finally:
                self.up = False
                conn, self.conn = self.conn, None
                if conn is not None:
                    with contextlib.suppress(redis.RedisError, OSError):  # already broken: nothing to close
                        conn.disconnect()
            feed.closed.wait(backoff)
            backoff = min(1.0, backoff * 2)

    def stop(self) -> None:
        conn = self.conn
        if conn is not None:
            # RedisError/OSError: already broken, nothing to close. ValueError: fakeredis's socket cannot be
            # shut down while its listener thread is inside a read ("generator already executing"); that
            # thread sees ``closed`` at its next poll and disconnects the connection itself.
            with contextlib.suppress(redis.RedisError, OSError, ValueError):
                conn.disconnect()  # unblocks a read in progress


def _is_connection_error(exc: BaseException) -> bool:
    import redis

    return isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError | ConnectionError)


def _connection_factory(pool: Any) -> Callable[[], Any]:
    """A maker of new RESP2 connections with the pool's settings (address, auth, TLS, db)."""
    kwargs = {**pool.connection_kwargs, "protocol": 2, "socket_timeout": None}
    for unwanted in ("maint_notifications_pool_handler", "maint_notifications_config"):
        kwargs.pop(unwanted, None)
    return lambda: pool.connection_class(**kwargs)


class InvalidationFeed:
    """Keeps an ``EntityCache`` honest: evicts every key of the namespace that anyone writes.

    Args:
        client: the store's client (redis-py, ``RedisCluster`` or fakeredis).
        keyspace: the store's ``Keyspace``.
        cache: the cache to invalidate.
        mode: ``"auto"`` (tracking, else keyspace notifications), ``"tracking"`` or ``"keyspace"``.
        is_cluster: whether ``client`` is a cluster client (one connection per primary).
        channels: keyspace mode on exactly these channel patterns (a principal's, as its ACL holds them)
            instead of the namespace's one pattern; a refused ``CONFIG`` is then left to the probe.
        probe: the probe key to write instead of partition 0's (a principal's own).

    Example:
        >>> feed = InvalidationFeed(client, keyspace, cache, mode="auto")  # doctest: +SKIP
        >>> feed.start()  # doctest: +SKIP
        'tracking'
    """

    def __init__(
        self,
        client: Any,
        keyspace: Keyspace,
        cache: EntityCache,
        *,
        mode: str = "auto",
        is_cluster: bool = False,
        channels: list[str] | None = None,
        probe: str | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValidationError(f"invalidation must be one of {MODES}, not {mode!r}")
        self.client = client
        self.keyspace = keyspace
        self.cache = cache
        self.requested = mode
        self.mode = AUTO_ORDER[0] if mode == "auto" else mode
        self.is_cluster = is_cluster
        self.prefix = f"rx:{{{keyspace.namespace}:"
        db = 0 if is_cluster else int(client.connection_pool.connection_kwargs.get("db") or 0)
        self.pattern = f"__keyspace@{db}__:{_glob_escape(self.prefix)}*"
        self.channel_prefix_len = len(f"__keyspace@{db}__:")
        # A principal's feed: exactly the keyspace channel patterns its ACL grants, and its own probe key.
        self.restricted = channels is not None
        self.patterns = list(channels) if channels is not None else [self.pattern]
        self._probe_key = probe
        self.closed = threading.Event()
        self._lock = threading.Lock()
        self._nodes: list[_Node] = []
        self._changed = threading.Condition(self._lock)
        self._failures: dict[str, InvalidationUnavailable] = {}
        self.messages = 0  # messages received (approximate under concurrency; for benchmarks)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, timeout: float = 5.0) -> str | None:
        """Connect, trying the mechanisms in order; returns the one in use, or None if none works.

        When none works, a ``RuntimeWarning`` says why and the cache stays off (every read goes to the
        server).
        """
        order = AUTO_ORDER if self.requested == "auto" else (self.requested,)
        reasons: list[str] = []
        for mode in order:
            ok = self._try(mode, timeout)
            if ok:
                if reasons:
                    log.info("cache invalidation uses %s (%s)", mode, "; ".join(reasons))
                return mode
            reasons.append(f"{mode}: {'; '.join(str(e) for e in self._failures.values()) or 'no reply in time'}")
            self._stop_nodes()
        self.closed.set()
        warnings.warn(
            "rxstate: local cache disabled, no invalidation mechanism works on this server ("
            + " / ".join(reasons)
            + "); every read goes to the server",
            RuntimeWarning,
            stacklevel=3,
        )
        return None

    def _try(self, mode: str, timeout: float) -> bool:
        self.mode = mode
        self._failures = {}
        self._nodes = [_Node(self, name, make, probe) for name, make, probe in self._targets()]
        for node in self._nodes:
            node.thread.start()
        deadline = time.monotonic() + timeout
        with self._changed:
            while not self.cache.active and not self._failures:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return self.cache.active

    def _targets(self) -> list[tuple[str, Callable[[], Any], str | None]]:
        ks = self.keyspace
        if not self.is_cluster:
            return [("server", _connection_factory(self.client.connection_pool), self._probe_key or ks.cache_probe(0))]
        probes: dict[str, str] = {}
        for p in range(ks.partitions):
            key = ks.cache_probe(p)
            probes.setdefault(self.client.get_node_from_key(key).name, key)
        return [
            (node.name, _connection_factory(node.redis_connection.connection_pool), probes.get(node.name))
            for node in self.client.get_primaries()
        ]

    def _stop_nodes(self) -> None:
        self.closed.set()
        for node in self._nodes:
            node.stop()
        for node in self._nodes:
            node.thread.join(timeout=5)
        self._nodes = []
        self.closed = threading.Event()

    def close(self) -> None:
        """Stop every watcher thread and turn the cache off.

        Example:
            >>> feed.close()  # doctest: +SKIP
        """
        self.closed.set()
        self.cache.deactivate(lost=False)
        for node in self._nodes:
            node.stop()
        for node in self._nodes:
            node.thread.join(timeout=5)

    # -- node state ----------------------------------------------------------------------------
    def node_up(self, node: _Node) -> None:
        with self._changed:
            node.up = True
            if all(n.up for n in self._nodes) and not self.closed.is_set():
                self.cache.activate(self.mode)
            self._changed.notify_all()

    def node_down(self, node: _Node, exc: BaseException) -> None:
        with self._changed:
            was_up = node.up
            node.up = False
            self.cache.deactivate(lost=was_up or self.cache.active)
            self._changed.notify_all()
        if not self.closed.is_set():
            log.warning("cache invalidation lost %s (%s): cache bypassed until it is back", node.name, exc)

    def node_failed(self, node: _Node, exc: InvalidationUnavailable) -> None:
        with self._changed:
            node.up = False
            self.cache.deactivate(lost=False)
            self._failures[node.name] = exc
            self._changed.notify_all()
        log.debug("cache invalidation %s unavailable on %s: %s", self.mode, node.name, exc)


def _is_entity(key: str) -> bool:
    """Whether a key of the namespace is an entity hash (not a change stream, index, id set or probe)."""
    tag_end = key.find("}:")
    return tag_end > 0 and key[tag_end + 2 : tag_end + 3] != "_" and key.find(":", tag_end + 2) > 0


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
