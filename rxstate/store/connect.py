"""Opening a store: the options of ``rxstate.connect``, the client it talks through, the server it finds.

``open_store`` turns a URL, a client or nothing (the embedded server) into a connected ``Store`` of the
type given (the public facade passes its own): it builds the client with rxstate's retry policy, attaches
to an embedded server when asked, authenticates a principal, and closes what it opened if the store
cannot be made.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypedDict, TypeVar, Unpack

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from rxstate.core.codec import Codec
from rxstate.core.errors import ServerError, ValidationError
from rxstate.store.durability import Durability
from rxstate.store.store import Store

__all__ = ["ConnectOptions", "SentinelTarget", "client_from_url", "open_store", "parse_sentinel_url"]

ST = TypeVar("ST", bound=Store)


class ConnectOptions(TypedDict, total=False):
    """The options of ``rxstate.connect`` (documented there)."""

    namespace: str
    client: Any
    path: str | os.PathLike[str] | None
    isolated: bool
    fsync: str | None
    partitions: int | None
    actor: str | None
    compress_threshold: int
    max_entity_bytes: int
    change_retention: int
    reap_interval: float | None
    cache: bool
    cache_size: int
    cache_bytes: int | None
    invalidation: str
    read_only: bool
    write_record_ms: int
    write_retries: int
    audit: bool
    principal: str | None
    password: str | None
    durability: str
    durability_replicas: int
    durability_timeout: float
    read_from: str
    replicas: Sequence[Any]
    max_staleness: float | None


def open_store(url: str | Any | None, store_type: type[ST], **options: Unpack[ConnectOptions]) -> ST:
    """Open a ``store_type`` store; ``rxstate.connect`` documents the arguments.

    Example:
        >>> open_store(fakeredis.FakeRedis(), Store).namespace
        'default'
    """
    return _open(url, store_type, **options)


def _open(
    url: str | Any | None,
    store_type: type[ST],
    *,
    namespace: str = "default",
    client: Any = None,
    path: str | os.PathLike[str] | None = None,
    isolated: bool = False,
    fsync: str | None = None,
    partitions: int | None = None,
    actor: str | None = None,
    compress_threshold: int = 1024,
    max_entity_bytes: int = 8 * 1024 * 1024,
    change_retention: int = 10_000,
    reap_interval: float | None = 1.0,
    cache: bool = True,
    cache_size: int = 10_000,
    cache_bytes: int | None = None,
    invalidation: str = "auto",
    read_only: bool = False,
    write_record_ms: int = 60_000,
    write_retries: int = 3,
    audit: bool = False,
    principal: str | None = None,
    password: str | None = None,
    durability: str = "none",
    durability_replicas: int = 1,
    durability_timeout: float = 1.0,
    read_from: str = "primary",
    replicas: Sequence[Any] = (),
    max_staleness: float | None = None,
) -> ST:
    durable = Durability(durability, replicas=durability_replicas, timeout=durability_timeout)
    auth: dict[str, Any] = {}
    if principal is not None or password is not None:
        from rxstate.security.principals import auth_options

        auth = auth_options(namespace, principal, password, client if client is not None else url)
    if url is not None and not isinstance(url, str):
        if client is not None:
            raise ValidationError("pass a client either positionally or as client=, not both")
        client, url = url, None
    server = None
    if client is None:
        given = url
        url = url or os.environ.get("REDIS_URL") or None
        if url is not None and (path is not None or isolated or fsync is not None):
            source = "a URL" if given else "REDIS_URL, which is set in the environment"
            raise ValidationError(f"path=, isolated= and fsync= are for an embedded server; not with {source}")
        if url is not None:
            client = client_from_url(url, **auth)
        else:
            from rxstate.server.lease import attach

            server = attach(path, isolated=isolated, fsync=fsync)
            client = server.client(**auth)
        _own_retry_policy(client)
    codec = Codec(compress_threshold=compress_threshold, max_entity_bytes=max_entity_bytes)
    try:
        durable.check(client)
        guard = None
        if principal is not None:
            from rxstate.security.principals import check_client_user, guard_for

            if not auth:  # a client of the caller's own: it must be the principal's user
                check_client_user(client, namespace, principal)
            guard = guard_for(client, namespace, principal)
            if actor is None:  # what a principal's store writes (change records, audit entries) names it
                actor = principal
        opened = store_type(
            client,
            namespace=namespace,
            partitions=partitions,
            actor=actor,
            codec=codec,
            change_retention=change_retention,
            reap_interval=reap_interval,
            server=server,
            cache=cache,
            cache_size=cache_size,
            cache_bytes=cache_bytes,
            invalidation=invalidation,
            read_only=read_only,
            write_record_ms=write_record_ms,
            write_retries=write_retries,
            audit=audit,
            guard=guard,
            read_from=read_from,
            replicas=replicas,
            max_staleness=max_staleness,
        )
        opened.writer.durability = durable
        return opened
    except BaseException:
        if server is not None:
            server.release()
        raise


def _own_retry_policy(client: Any) -> None:
    """The retry policy of a client rxstate made: a lost connection is retried a few times, quickly.

    Safe for writes, since each write call carries a write id (``rxstate.store.writer``); a client passed
    in keeps its own policy, which is just as safe for the same reason.
    """
    if isinstance(client, redis.Redis):
        client.set_retry(Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.5), 3))


def client_from_url(url: str, **options: Any) -> Any:
    """A redis-py client for a ``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://`` or
    ``redis+sentinel://`` URL.

    ``redis+sentinel://host:port[,host:port...]/<master-name>[?db=<n>]`` names Sentinels (port 26379 when
    left out) and a master they monitor; the client (``Sentinel.master_for``) asks them for the master's
    address whenever it connects, so it follows a failover. Credentials in that URL are the master's.

    Raises:
        ValidationError: a ``redis+sentinel://`` URL is malformed.
        ServerError: any other URL is malformed or names no reachable cluster.

    Example:
        >>> client_from_url("redis://127.0.0.1:6379/0")  # doctest: +SKIP
        >>> client_from_url("redis+sentinel://127.0.0.1:26379/rxstate?db=0")  # doctest: +SKIP
    """
    if url.startswith(_SENTINEL):
        return _sentinel_client(url, **options)
    try:
        if url.startswith("redis+cluster://"):
            from redis.cluster import RedisCluster

            return RedisCluster.from_url("redis://" + url[len("redis+cluster://") :], **options)
        return redis.Redis.from_url(url, **options)
    except (ValueError, redis.RedisError) as exc:
        raise ServerError(f"cannot connect to {url!r}: {exc}") from exc


_SENTINEL = "redis+sentinel://"
_SENTINEL_FORM = "redis+sentinel://host:port[,host:port...]/<master-name>[?db=<n>]"
_SENTINEL_TIMEOUT = 1.0
"""Seconds to connect to, or wait for, one Sentinel before asking the next."""


@dataclass(frozen=True)
class SentinelTarget:
    """What a ``redis+sentinel://`` URL names: its Sentinels, the master's name, db and credentials."""

    sentinels: list[tuple[str, int]]
    name: str
    db: int
    options: dict[str, Any]

    @property
    def sentinel_options(self) -> dict[str, Any]:
        """Options of the connections to the Sentinels themselves (short timeouts: ask the next one)."""
        return {"socket_timeout": _SENTINEL_TIMEOUT, "socket_connect_timeout": _SENTINEL_TIMEOUT}


def parse_sentinel_url(url: str, **options: Any) -> SentinelTarget:
    """The parts of a ``redis+sentinel://`` URL (``options`` added to the master's client options).

    Raises:
        ValidationError: the URL is malformed (its password is not shown in the message).

    Example:
        >>> parse_sentinel_url("redis+sentinel://10.0.0.1,10.0.0.2:26380/crew?db=2").sentinels
        [('10.0.0.1', 26379), ('10.0.0.2', 26380)]
    """
    from urllib.parse import parse_qsl, unquote

    netloc, slash, rest = url[len(_SENTINEL) :].partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    hidden = userinfo.partition(":")[0] + ":***" if ":" in userinfo else userinfo  # no password in messages
    shown = f"{_SENTINEL}{hidden}{at}{hosts}{slash}{rest}"

    def bad(why: str) -> ValidationError:
        return ValidationError(f"bad Sentinel URL {shown!r}: {why} (expected {_SENTINEL_FORM})", field="url")

    path, _, query = rest.partition("?")
    if "#" in rest:
        raise bad("a fragment (#...) has no meaning here")
    sentinels: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, colon, port = item.rpartition(":") if not item.endswith("]") else (item, "", "")
        if not colon:
            host, port = item, "26379"
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
            raise bad(f"{item!r} is not a host:port")
        sentinels.append((host, int(port)))
    name = unquote(path)
    if not slash or not name or "/" in name:
        raise bad("the master's name is missing" if not name else f"{name!r} is not a master name")
    db = 0
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key != "db":
            raise bad(f"unknown option {key!r} (only db is understood)")
        if not (value.isascii() and value.isdigit()):
            raise bad(f"db must be a non-negative integer, not {value!r}")
        db = int(value)
    if userinfo:
        username, _, password = userinfo.partition(":")
        options = {"username": unquote(username) or None, "password": unquote(password) or None, **options}
    return SentinelTarget(sentinels, name, db, options)


def _sentinel_client(url: str, **options: Any) -> redis.Redis:
    """The client of a ``redis+sentinel://`` URL's master; a malformed URL raises ``ValidationError``."""
    from redis.sentinel import Sentinel

    target = parse_sentinel_url(url, **options)
    sentinel = Sentinel(target.sentinels, sentinel_kwargs=target.sentinel_options)  # type: ignore[no-untyped-call]
    client: redis.Redis = sentinel.master_for(target.name, db=target.db, **target.options)  # type: ignore[no-untyped-call]
    return client
