"""The tenant registry of a namespace: create, configure, suspend, resume, measure and delete tenants.

A tenant ``acme`` of namespace ``crew`` is the namespace ``crew/acme`` (keys ``rx:{crew/acme:<p>}:...``),
so a tenant's store has the whole store API and a tenant's principals are that namespace's principals
(``rxstate.security``), whose ACL patterns cover only the tenant's keys and channels. The registry
itself lives in the parent namespace's slot, out of every tenant's reach:

    rx:{crew}:_tenants           name -> configuration (JSON, ``TenantConfig``)
    rx:{crew}:_tenant_defaults   the limits tenants fall back to (JSON, ``Limits``)
    rx:{crew/acme:p}:_tenant     partition p's share of the limits, the suspension flag, usage, costs
    rx:{crew/acme:p}:_tsz        the size of each counted entity (``lua/write_path.lua``, "Tenants")
    rx:{crew/acme:p}:_treads     read costs: reads and bytes read, flushed by the tenant's stores

Changing a tenant's limits (or the defaults) copies the effective limits into every partition's
tenant hash, where the write script reads them in-slot; see ``rxstate.tenancy.config`` for why they
are split over partitions. Suspension is a flag in the same hashes, so it takes effect for every
process at once: the script refuses the next write, whoever sends it.

**The change stream's length is a cap that trims, not a quota that refuses.** A tenant's
``retention`` (``create(retention=...)``, ``update(name, retention=...)``; 10,000 by default) is the
``MAXLEN ~`` of each of its partitions' change streams: every script that appends a change record
there (writes, transactions, event appends with a projection, expiries) trims to it in the same call,
whatever the writing store's own ``change_retention``. Refusing writes because the feed is long would
block a tenant forever (its old records never go away by themselves), so old records are dropped
instead; readers that fall further behind than the cap are told so (``rxstate.feed``). The trim is
Redis's approximate one (whole stream nodes at a time): a stream holds at least ``retention`` records
once it has had them, and at most ``retention`` plus one node (``stream-node-max-entries``, 100 by
default). Unlike the limits, it is per partition, not split, and has no namespace default.

Quotas bind rxstate's write path. A tenant principal may write its own partitions' keys (its
writes need that), so like the audit chain its own counters are not proof against a principal that
sends raw commands to its own keys; the isolation *between* tenants is the server's ACL and holds
regardless.

Example:
    >>> tenants = Tenants(store)
    >>> _ = tenants.create("acme", limits=Limits(max_entities=100))
    >>> acme = tenants.open("acme")
    >>> acme.namespace
    'default/acme'
    >>> tenants.usage("acme").entities
    0
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any

from rxstate.core.errors import AlreadyExists, NotFound, ValidationError
from rxstate.core.keys import Keyspace
from rxstate.core.writes import tenant_keys
from rxstate.security.keyring import KeyRing
from rxstate.security.principals import Principals
from rxstate.tenancy.config import DEFAULT_PARTITIONS, Limits, TenantConfig, validate_tenant_name
from rxstate.tenancy.reads import READ_BYTES, READ_OPS, read_cost_key
from rxstate.tenancy.stage import TENANT_FLAG, enable

__all__ = ["TenantViews", "Tenants", "Usage"]

DELETE_BATCH = 500
_USAGE_FIELDS = ("ue", "ub", "cops", "cwb", "uev")  # write_path.lua's names, in the order of Usage's fields


@dataclass(frozen=True, slots=True)
class Usage:
    """A tenant's use and costs, summed over its partitions.

    Attributes:
        entities: entities held.
        bytes: stored bytes (field names and encoded values).
        operations: write operations applied (event appends included).
        bytes_written: bytes of the values written.
        events: events held in the tenant's event collections (every aggregate's stream).
        reads: entities and events read from the server (cache hits aside), as flushed so far.
        bytes_read: their bytes (field names and values), as flushed so far (``rxstate.tenancy.reads``).
    """

    entities: int = 0
    bytes: int = 0
    operations: int = 0
    bytes_written: int = 0
    events: int = 0
    reads: int = 0
    bytes_read: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


class Tenants:
    """The tenants of ``store``'s namespace (an administrator's store: it writes ACL users and every
    tenant's keys). See the module docstring.
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self.client = store.client
        self.namespace: str = store.namespace
        self.registry_key = f"rx:{{{self.namespace}}}:_tenants"
        self._defaults = f"rx:{{{self.namespace}}}:_tenant_defaults"

    def namespace_of(self, name: str) -> str:
        """The namespace of tenant ``name``.

        Example:
            >>> Tenants(store).namespace_of("acme")
            'default/acme'
        """
        return f"{self.namespace}/{validate_tenant_name(name)}"

    # -- configuration -----------------------------------------------------------------------------
    def create(
        self,
        name: str,
        *,
        limits: Limits | None = None,
        partitions: int = DEFAULT_PARTITIONS,
        retention: int = 10_000,
    ) -> TenantConfig:
        """Register tenant ``name`` and create its namespace.

        Raises:
            AlreadyExists: the tenant exists.
            ValidationError: a bad name, limit, partition count or retention.
        """
        seconds, micros = self.client.time()
        config = TenantConfig(
            name,
            limits if limits is not None else Limits(),
            partitions=partitions,
            retention=retention,
            created_ms=int(seconds) * 1000 + int(micros) // 1000,
        )
        meta = Keyspace(self.namespace_of(name), 1).meta()
        if self.client.exists(meta):
            raise AlreadyExists(f"namespace {self.namespace_of(name)!r} exists already", key=meta)
        if not self.client.hsetnx(self.registry_key, name, config.to_json()):
            raise AlreadyExists(f"tenant {name!r} exists already in {self.namespace!r}", key=self.registry_key)
        self.client.hset(meta, mapping={"partitions": partitions, TENANT_FLAG: "1"})
        self.apply(config)
        return config

    def get(self, name: str) -> TenantConfig:
        """The configuration of tenant ``name``.

        Raises:
            NotFound: no such tenant.
        """
        raw = self.client.hget(self.registry_key, validate_tenant_name(name))
        if raw is None:
            raise NotFound(f"no tenant {name!r} in namespace {self.namespace!r}", key=self.registry_key)
        return TenantConfig.from_json(raw, name)

    def list(self) -> builtins.list[TenantConfig]:
        """Every tenant, by name."""
        raw = self.client.hgetall(self.registry_key)
        return [TenantConfig.from_json(v, k.decode()) for k, v in sorted(raw.items())]

    def defaults(self) -> Limits:
        """The limits tenants fall back to."""
        raw = self.client.get(self._defaults)
        return Limits(**json.loads(raw)) if raw else Limits()

    def set_defaults(self, limits: Limits) -> None:
        """Replace the defaults and re-apply every tenant's effective limits."""
        self.client.set(self._defaults, json.dumps(limits.to_dict()))
        for config in self.list():
            self.apply(config)

    def effective(self, name: str) -> Limits:
        """Tenant ``name``'s limits with the defaults filled in."""
        return self.get(name).limits.over(self.defaults())

    def update(self, name: str, *, retention: int | None = None, **limits: Any) -> TenantConfig:
        """Change some of a tenant's limits (``None`` unsets one: the default applies), and its change
        stream cap per partition (``retention``; ``None`` leaves it as it is).

        Example:
            >>> Tenants(store).update("acme", rate=50.0).limits.rate  # doctest: +SKIP
            50.0
        """
        config = self.get(name).with_limits(**limits)
        if retention is not None:
            config = dataclasses.replace(config, retention=retention)  # validated as at creation
        self.client.hset(self.registry_key, name, config.to_json())
        self.apply(config)
        return config

    def apply(self, config: TenantConfig) -> None:
        """Copy the effective limits and the suspension flag into every partition's tenant hash."""
        ks = Keyspace(self.namespace_of(config.name), config.partitions)
        shares = config.limits.over(self.defaults()).split(config.partitions)
        pipe = self.client.pipeline(transaction=False)
        for p, share in enumerate(shares):
            key = tenant_keys(ks, p)[0]
            present, absent = share.hash_fields()
            present["p"] = str(p)  # the hash exists from the start, limits or not
            present["cl"] = str(config.retention)  # the change stream's length, whoever writes
            if config.status == "suspended":
                present["suspended"] = "1"
            else:
                absent.append("suspended")
            pipe.hset(key, mapping=present)
            pipe.hdel(key, *absent)
        pipe.execute()

    # -- lifecycle ---------------------------------------------------------------------------------
    def suspend(self, name: str) -> TenantConfig:
        """Refuse every write of the tenant, from every process, from the next write on (reads work)."""
        return self._set_status(name, "suspended")

    def resume(self, name: str) -> TenantConfig:
        """Accept the tenant's writes again."""
        return self._set_status(name, "active")

    def _set_status(self, name: str, status: str) -> TenantConfig:
        old = self.get(name)
        config = TenantConfig(old.name, old.limits, old.partitions, old.retention, status, old.created_ms)
        self.client.hset(self.registry_key, name, config.to_json())
        self.apply(config)
        return config

    def open(self, name: str) -> Any:
        """A store of tenant ``name`` (the parent store's class and client; the tenant stage enabled).

        ``store.tenant(name)`` keeps one per name and closes it with the parent store. When the parent
        encrypts secret fields (``connect(keys=...)``), the tenant's are encrypted under data keys of
        its own (its key ring, wrapped by the same key-encryption key), which ``delete`` destroys.
        """
        config = self.get(name)
        parent = self.store
        opened = type(parent)(
            parent.client,
            namespace=self.namespace_of(name),
            actor=parent.actor,
            codec=type(parent.codec)(parent.codec.compress_threshold, parent.codec.max_entity_bytes),
            change_retention=config.retention,
        )
        opened.borrowed_client = True  # closing the tenant's store (delete does) leaves the parent's client open
        provider = getattr(getattr(parent, "keys", None), "provider", None)
        ring = KeyRing.of(opened, provider)
        if ring is not None:  # the tenant's own data keys (rx:{<ns>/<tenant>}:_keys), wrapped by the parent's KEK
            opened.keys = ring
            opened.codec = dataclasses.replace(opened.codec, cipher=ring)
        enable(opened)
        return opened

    def principals(self, name: str) -> Principals:
        """The principals of tenant ``name``: ACL users confined to the tenant's keys and channels."""
        config = self.get(name)
        db = 0 if self.store.is_cluster else int(self.client.connection_pool.connection_kwargs.get("db") or 0)
        return Principals(self.client, self.namespace_of(name), partitions=config.partitions, db=db)

    # -- measures ----------------------------------------------------------------------------------
    def usage(self, name: str) -> Usage:
        """Tenant ``name``'s use and costs, as the write scripts counted them (and its stores flushed
        their read costs: ``rxstate.tenancy.reads``)."""
        config = self.get(name)
        ks = Keyspace(self.namespace_of(name), config.partitions)
        pipe = self.client.pipeline(transaction=False)
        for p in range(config.partitions):
            pipe.hmget(tenant_keys(ks, p)[0], *_USAGE_FIELDS)
            pipe.hmget(read_cost_key(ks, p), READ_OPS, READ_BYTES)
        total = Usage()
        replies = pipe.execute()
        for row, reads in zip(replies[::2], replies[1::2], strict=True):
            total += Usage(*(int(v or 0) for v in (*row, *reads)))
        return total

    def report(self) -> builtins.list[tuple[TenantConfig, Usage]]:
        """Every tenant with its usage."""
        return [(config, self.usage(config.name)) for config in self.list()]

    def recount(self, name: str) -> Usage:
        """Count the tenant's entities, bytes and events from what is stored (slow: reads every entity,
        and scans the tenant's keys for its aggregates' event streams).

        What the write scripts count must equal this (``usage`` and ``recount`` agree on entities,
        bytes and events); it exists to check that, and to audit a tenant.
        """
        config = self.get(name)
        ks = Keyspace(self.namespace_of(name), config.partitions)
        schemas = self.client.hkeys(ks.schemas())
        entities = size = 0
        for coll in sorted(c.decode() for c in schemas):
            for p in range(config.partitions):
                for raw_id in self.client.smembers(ks.ids(coll, p)):
                    stored = self.client.hgetall(ks.entity(coll, raw_id.decode(), p))
                    if not stored:
                        continue  # expired, not reaped yet
                    entities += 1
                    size += sum(len(k) + len(v) for k, v in stored.items() if not k.startswith(b"_"))
        streams = [k for k in self.keys(name) if b"}:_es:" in k]
        pipe = self.client.pipeline(transaction=False)
        for key in streams:
            pipe.xlen(key)
        events = sum(int(n) for n in pipe.execute()) if streams else 0
        return Usage(entities=entities, bytes=size, events=events)

    # -- delete ------------------------------------------------------------------------------------
    def keys(self, name: str) -> Iterator[bytes]:
        """Every key of tenant ``name`` (SCAN of its two key shapes; on a cluster, of every primary)."""
        ns = self.namespace_of(name)
        for pattern in (f"rx:{{{ns}:*", f"rx:{{{ns}}}:*", f"rxw:{{{ns}:*"):
            yield from self.client.scan_iter(match=pattern, count=1000)  # namespaces hold no glob characters

    def delete(self, name: str, *, batch: int = DELETE_BATCH, progress: Callable[[int], None] | None = None) -> int:
        """Remove tenant ``name``: its principals' ACL users, every key (``batch`` at a time) — its key ring
        first, so its encrypted values are unreadable from the start — and its entry.

        ``progress(n)`` is called after each batch with the keys removed by it. Returns the keys removed.

        Raises:
            NotFound: no such tenant.
        """
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValidationError(f"batch must be a positive int, not {batch!r}", field="batch")
        self.get(name)
        views = self.store.running(TenantViews)
        if views is not None:  # its cache would write a probe key again
            views.drop(name)
        principals = self.principals(name)
        for info in principals.list():
            principals.delete(info.name)
        removed = int(self.client.delete(Keyspace(self.namespace_of(name), 1).keyring()))  # the data keys
        chunk: builtins.list[bytes] = []
        for key in self.keys(name):
            chunk.append(key)
            if len(chunk) >= batch:
                removed += self._delete_chunk(chunk, progress)
                chunk = []
        if chunk:
            removed += self._delete_chunk(chunk, progress)
        self.client.hdel(self.registry_key, name)
        return removed

    def _delete_chunk(self, chunk: builtins.list[bytes], progress: Callable[[int], None] | None) -> int:
        pipe = self.client.pipeline(transaction=False)
        for key in chunk:  # one DEL per key: a cluster refuses a multi-key DEL across slots
            pipe.delete(key)
        n = sum(int(r) for r in pipe.execute())
        if progress is not None:
            progress(len(chunk))
        return n


class TenantViews:
    """The tenant stores one store has opened (``Store.tenant``), closed with it (a store service)."""

    def __init__(self) -> None:
        self._views: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, parent: Any, name: str) -> Any:
        """The store of tenant ``name`` of ``parent``, opened on first use."""
        with self._lock:
            view = self._views.get(name)
            if view is None:
                view = self._views[name] = Tenants(parent).open(name)
            return view

    def drop(self, name: str) -> None:
        """Close tenant ``name``'s store, if open."""
        with self._lock:
            view = self._views.pop(name, None)
        if view is not None:
            view.close()

    def close(self) -> None:
        with self._lock:
            views, self._views = list(self._views.values()), {}
        for view in views:
            view.close()
