"""Opening a store: the options of ``rxstate.connect``, the client it talks through, the server it finds.

``open_store`` turns a URL, a client or nothing (the embedded server) into a connected ``Store`` of the
type given (the public facade passes its own): it builds the client with rxstate's retry policy, attaches
to an embedded server when asked, authenticates a principal, and closes what it opened if the store
cannot be made.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, TypedDict, TypeVar, Unpack

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from rxstate.core.codec import Codec
from rxstate.core.errors import ServerError, ValidationError
from rxstate.store.durability import Durability
from rxstate.store.store import Store

__all__ = ["ConnectOptions", "client_from_url", "open_store"]

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
    """A redis-py client for a ``redis://``, ``rediss://``, ``unix://`` or ``redis+cluster://`` URL.

    Raises:
        ServerError: the URL is malformed or names no reachable cluster.

    Example:
        >>> client_from_url("redis://127.0.0.1:6379/0")  # doctest: +SKIP
    """
    try:
        if url.startswith("redis+cluster://"):
            from redis.cluster import RedisCluster

            return RedisCluster.from_url("redis://" + url[len("redis+cluster://") :], **options)
        return redis.Redis.from_url(url, **options)
    except (ValueError, redis.RedisError) as exc:
        raise ServerError(f"cannot connect to {url!r}: {exc}") from exc
