"""The tenant stage of the write path, seen from Python: turning it on for a store, and its errors.

The checks and counters themselves run in ``lua/write_path.lua`` (``check_tenant`` and
``account_tenant``: suspension, quotas, token buckets, usage and cost counters, all in the same script
call as the write) and in ``lua/reap.lua`` (expiries leave the usage counters). A store takes part
when its Writer names the principal it writes as (``Writer.tenant``): then every write-path call it
sends — single writes, batches, transactions, projected event appends — carries the "tenant" section
(``rxstate.core.writes``); its reads are counted by a ``ReadCosts`` meter (``rxstate.tenancy.reads``:
flushed, not atomic with the reads). ``enable`` sets it for a tenant's store; ``attach`` does so for any store
whose namespace the registry marked as a tenant's (a principal's store connecting to ``crew/acme``).

Example:
    >>> store = rxstate.connect(fakeredis.FakeRedis(), namespace="crew/acme")
    >>> attach(store), store.writer.tenant  # the namespace is not registered as a tenant's
    (False, None)
"""

from __future__ import annotations

from typing import Any

from rxstate.core.errors import QuotaExceeded, RateLimited, RxStateError, TenantSuspended
from rxstate.core.keys import Keyspace
from rxstate.core.scripts import register_error
from rxstate.tenancy.reads import ReadCosts

__all__ = ["TENANT_FLAG", "attach", "enable", "tenant_of_key"]

TENANT_FLAG = "tenant"
"""The field of a namespace's meta hash that marks it as a tenant's ("1")."""


def tenant_of_key(key: str) -> tuple[str, int | None]:
    """The namespace and partition in a key's hash tag.

    Example:
        >>> tenant_of_key("rx:{crew/acme:3}:_tenant")
        ('crew/acme', 3)
    """
    tag = key[key.index("{") + 1 : key.index("}")]
    namespace, _, partition = tag.rpartition(":")
    if not namespace or not partition.isdigit():
        return tag, None
    return namespace, int(partition)


def principal_of(store: Any) -> str:
    """Who the store's writes count against: its principal, else its actor."""
    guard = store.guard
    return str(guard.principal.name) if guard is not None else str(store.actor)


def enable(store: Any) -> None:
    """Make every write of ``store`` carry the tenant stage, and count its reads (a tenant's store)."""
    store.writer.tenant = principal_of(store)
    store.read_meter = store.service(
        ReadCosts, lambda: ReadCosts(store.client, store.keyspace), lambda costs: costs.close()
    )


def attach(store: Any) -> bool:
    """Enable the tenant stage if ``store``'s namespace is a registered tenant's; whether it is."""
    if "/" not in store.namespace:  # tenant namespaces are "<ns>/<tenant>": others cost no round trip
        return False
    flag = store.client.hget(Keyspace(store.namespace, 1).meta(), TENANT_FLAG)
    if flag != b"1":
        return False
    enable(store)
    return True


def _quota(d: list[str]) -> RxStateError:
    key, quota, limit, use, requested = d[0], d[1], int(d[2]), int(d[3]), int(d[4])
    tenant, partition = tenant_of_key(key)
    return QuotaExceeded(
        f"tenant {tenant!r}: quota {quota} exceeded: limit {limit} (partition {partition}'s share), use {use}, "
        f"the write adds {requested}",
        tenant=tenant,
        quota=quota,
        limit=limit,
        use=use,
        requested=requested,
        partition=partition,
    )


def _rate(d: list[str]) -> RxStateError:
    key, scope, wait_ms = d[0], d[1], int(d[2])
    tenant, _ = tenant_of_key(key)
    return RateLimited(
        f"tenant {tenant!r}: {scope} rate limit reached, retry after {wait_ms / 1000:.3f} s",
        tenant=tenant,
        scope=scope,
        retry_after=wait_ms / 1000,
    )


def _suspended(d: list[str]) -> RxStateError:
    tenant, _ = tenant_of_key(d[0])
    return TenantSuspended(f"tenant {tenant!r} is suspended: writes are refused (reads work)", tenant=tenant)


register_error("RXQUOTA", _quota)
register_error("RXRATE", _rate)
register_error("RXSUSPENDED", _suspended)
