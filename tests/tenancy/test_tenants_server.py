"""Tenants on a real server: isolation by the ACL, quotas, rate limits across processes, suspension,
delete, export and import."""

from __future__ import annotations

import multiprocessing
import uuid

import pytest
import redis

import rxstate
from rxstate import Policy, Rule
from rxstate.core.errors import QuotaExceeded, TenantSuspended
from rxstate.security.acl import username
from rxstate.tenancy import Limits, export_tenant, import_tenant
from tests.helpers import dump_all
from tests.tenancy.workers import Item, rate_worker, suspend_worker

WRITE_ALL = Policy([Rule("w", "allow", ["read", "write", "delete"], ["*"], name="all")])


def test_tenant_store_namespace_and_keys(admin, tenants):
    tenants.create("acme")
    items = admin.tenant("acme").collection("items", Item)
    items.put("i1", Item(n=1))
    assert admin.tenant("acme") is admin.tenant("acme")
    raw = admin.client
    assert raw.exists(f"rx:{{{admin.namespace}/acme:0}}:items:i1")
    assert items.get("i1").n == 1
    with pytest.raises(rxstate.NotFound):
        admin.tenant("nobody")


def test_principal_of_one_tenant_cannot_reach_another(admin, tenants, rx_server):
    ns = admin.namespace
    for name in ("acme", "beta"):
        tenants.create(name)
        view = admin.tenant(name)
        view.collection("items", Item).put("i1", Item(n=7))
        view.events  # noqa: B018 - the facade method exists on tenant stores too
        tenants.principals(name).set_policy(WRITE_ALL)
    password = tenants.principals("acme").create("ann", kind="user", roles=["w"])
    attacker = rx_server.client(username=username(f"{ns}/acme", "ann"), password=password)
    beta_entity = f"rx:{{{ns}/beta:0}}:items:i1"
    own_entity = f"rx:{{{ns}/acme:0}}:items:i1"
    assert attacker.hgetall(own_entity)  # its own tenant's data: allowed
    for attempt in (
        lambda: attacker.hgetall(beta_entity),  # reads
        lambda: attacker.hset(beta_entity, "n", "666"),  # writes
        lambda: attacker.xrange(f"rx:{{{ns}/beta:0}}:changes"),  # change records / events
        lambda: attacker.hgetall(tenants.registry_key),  # the names of the other tenants
        lambda: attacker.scan(0),
        lambda: attacker.keys("*"),
        lambda: attacker.dbsize(),
        lambda: attacker.hset(f"rx:{{{ns}/beta:0}}:_tenant", "qe", "1000000"),  # another's limits
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            attempt()
    pubsub = attacker.pubsub()
    with pytest.raises(redis.exceptions.NoPermissionError):  # invalidations of the other tenant
        pubsub.psubscribe(f"__keyspace@0__:rx:{{{ns}/beta:*")
        pubsub.get_message(timeout=1)
    # The principal's own store works, and its writes carry the tenant stage.
    store = rxstate.connect(rx_server.url, namespace=f"{ns}/acme", principal="ann", password=password, cache=False)
    assert store.writer.tenant == "ann"
    store.collection("items", Item).put("i2", Item(n=2))
    assert tenants.usage("acme").entities == 2
    assert admin.client.hget(beta_entity, "n") == b"7"
    store.close()
    attacker.close()


def test_quota_refusals_leave_state_byte_identical(admin, tenants):
    tenants.create("acme", limits=Limits(max_entities=2, max_bytes=20))
    items = admin.tenant("acme").collection("items", Item)
    items.put("a", Item(n=1))
    items.put("b", Item(n=2))
    before = dump_all(admin.client)
    with pytest.raises(QuotaExceeded) as info:
        items.put("c", Item(n=3))
    assert (info.value.quota, info.value.limit, info.value.use, info.value.requested) == ("entities", 2, 2, 1)
    with pytest.raises(QuotaExceeded) as info:  # an update that grows past max_bytes
        items.update("a", n=10**30)
    assert info.value.quota == "bytes" and info.value.limit == 20
    with pytest.raises(QuotaExceeded), admin.tenant("acme").transaction() as tx:  # nothing of it is written
        tx.update(items, "a", n=5)
        tx.put(items, "d", Item())
    assert dump_all(admin.client) == before
    items.delete("b")
    items.put("c", Item(n=3))  # room again
    assert tenants.usage("acme").entities == 2 == tenants.recount("acme").entities


def test_usage_matches_a_recount_after_random_writes_expiries_appends_and_trims(admin, tenants):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from rxstate.admin.governance import apply_retention, set_retention
    from tests.event_models import ORDER_EVENTS, Order, Placed, apply_order

    tenants.create("acme", partitions=2)
    view = admin.tenant("acme")
    items = view.collection("items", Item)
    orders = view.events("orders", state=Order, events=ORDER_EVENTS, reducer=apply_order)
    carts = view.events("carts", state=Order, events=ORDER_EVENTS, reducer=apply_order, project_to="cart_view")
    set_retention(admin.client, view.namespace, max_len=3)  # the partition event logs keep 3 events
    logs = [view.keyspace.event_log(p) for p in (0, 1)]
    kinds = ["put", "update", "incr", "delete", "ttl", "ttl_delete", "append", "append_projected", "trim"]
    expiring: list[str] = []
    ops = st.lists(
        st.tuples(st.sampled_from(kinds), st.integers(0, 5), st.integers(-999, 10**9)), min_size=1, max_size=25
    )

    @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
    @given(ops)
    def run(script):
        for kind, i, n in script:
            eid = f"e{i}"
            try:
                if kind == "put":
                    items.put(eid, Item(n=n))
                elif kind == "update":
                    items.update(eid, n=n)
                elif kind == "incr":
                    items.incr(eid, "n", n)
                elif kind == "delete":
                    items.delete(eid)
                elif kind == "ttl":  # entities with a TTL live in their own ids, never re-created
                    expiring.append(f"t{uuid.uuid4().hex[:6]}")
                    items.put(expiring[-1], Item(n=n), ttl=0.001 if n % 2 else 60)
                elif kind == "ttl_delete" and expiring:  # maybe expired already, not reaped yet
                    items.delete(expiring.pop(i % len(expiring)))
                elif kind == "append":
                    orders.append(eid, [Placed(sku="a", qty=1)] * (n % 3 + 1))
                elif kind == "append_projected":  # events and the projected entity in one call
                    carts.append(eid, [Placed(sku="b", qty=q) for q in range(1, n % 3 + 2)])
                else:
                    apply_retention(admin.client, view.namespace)
                    assert all(admin.client.xlen(log) <= 3 for log in logs)  # the trim did trim
            except rxstate.NotFound:
                pass
        assert _settled(view, tenants)

    run()


def _settled(view, tenants):
    from tests.helpers import wait_for

    def reaped():
        view._reap(view.collections["items"])
        used, counted = tenants.usage("acme"), tenants.recount("acme")
        return (used.entities, used.bytes, used.events) == (counted.entities, counted.bytes, counted.events)

    return wait_for(reaped, timeout=5, interval=0.005)


def test_deleting_an_expired_entity_before_it_is_reaped_keeps_usage_exact(admin, tenants):
    from tests.helpers import wait_for

    tenants.create("acme")
    view = admin.tenant("acme")
    items = view.collection("items", Item)
    items.put("t", Item(n=1), ttl=0.001)
    assert wait_for(lambda: not admin.client.exists(items.key("t")), timeout=5, interval=0.002)
    items.delete("t")  # Redis dropped the hash: nothing to delete, and the reaper still counts it out
    assert view._reap(items) == 1
    used, counted = tenants.usage("acme"), tenants.recount("acme")
    assert (used.entities, used.bytes) == (counted.entities, counted.bytes) == (0, 0)


@pytest.mark.slow
def test_rate_limit_holds_across_four_processes(admin, tenants, rx_server):
    rate, burst, seconds = 200.0, 20, 1.5
    tenants.create("acme", limits=Limits(rate=rate, burst=burst))
    admin.tenant("acme").collection("items", Item)  # registers the schema
    ctx = multiprocessing.get_context("spawn")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    args = (rx_server.url, admin.namespace, "acme")
    procs = [ctx.Process(target=rate_worker, args=(*args, f"w{i}", seconds, ready, go, out)) for i in range(4)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=60)
    go.set()
    total = sum(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    expected = burst + rate * seconds
    assert abs(total - expected) <= 0.1 * expected, (total, expected)


@pytest.mark.slow
def test_suspend_blocks_writes_from_every_process(admin, tenants, rx_server):
    tenants.create("acme")
    admin.tenant("acme").collection("items", Item).put("seed", Item(n=5))
    ctx = multiprocessing.get_context("spawn")
    ready, out = ctx.Queue(), ctx.Queue()
    procs = [
        ctx.Process(target=suspend_worker, args=(rx_server.url, admin.namespace, "acme", f"w{i}", ready, out))
        for i in range(2)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=60)
    tenants.suspend("acme")
    ops_at_suspension = tenants.usage("acme").operations
    results = dict(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(30)
    assert results == {"w0": 20, "w1": 20}
    assert tenants.usage("acme").operations == ops_at_suspension  # not one write after suspend returned
    items = admin.tenant("acme").collections["items"]
    assert items.get("seed").n == 5  # reads still work (a worker may have been suspended before its first put)
    with pytest.raises(TenantSuspended):
        items.put("x", Item())
    tenants.resume("acme")
    items.put("x", Item())


def test_delete_leaves_no_key_of_the_tenant(admin, tenants):
    tenants.create("acme", partitions=4)
    tenants.create("beta")
    acme = admin.tenant("acme").collection("items", Item, indexes=["n"])
    for i in range(1200):
        acme.put(f"i{i}", Item(n=i % 7))
    admin.tenant("beta").collection("items", Item).put("keep", Item(n=1))
    tenants.principals("acme").create("ann", kind="user")
    seen: list[int] = []
    removed = tenants.delete("acme", batch=500, progress=seen.append)
    assert removed == sum(seen) and len(seen) >= 3
    ns = admin.namespace
    left = [k for k in admin.client.scan_iter(match="*") if f"{ns}/acme".encode() in k]
    assert left == []
    assert admin.client.acl_getuser(username(f"{ns}/acme", "ann")) is None
    assert [c.name for c in tenants.list()] == ["beta"]
    assert admin.client.exists(f"rx:{{{ns}/beta:0}}:items:keep")


def test_export_then_import_restores_the_tenant(admin, tenants, tmp_path):
    tenants.create("acme", limits=Limits(max_entities=50), partitions=2)
    items = admin.tenant("acme").collection("items", Item, indexes=["n"])
    for i in range(20):
        items.put(f"i{i}", Item(n=i))
    items.put("ttl", Item(n=99), ttl=600)
    path = tmp_path / "acme.jsonl.gz"
    n = export_tenant(tenants, "acme", path)
    assert n > 20
    import_tenant(tenants, path, name="copy")
    copy = admin.tenant("copy").collection("items", Item, indexes=["n"])
    assert copy.get("i7").n == 7 and copy.get_versioned("i7").version == 1
    assert [e.n for e in copy.where(n=3)] == [3]
    assert 0 < admin.client.pttl(copy.key("ttl")) <= 600_000
    assert tenants.usage("copy").entities == tenants.usage("acme").entities == 21
    assert tenants.get("copy").limits.max_entities == 50
    with pytest.raises(rxstate.AlreadyExists):
        import_tenant(tenants, path, name="copy")


def test_a_tenant_has_its_own_data_keys_and_delete_destroys_them(rx_server):
    from rxstate.security import StaticKeyProvider, generate_key

    class Account(rxstate.Model):
        api_key: rxstate.Secret[str] | None = None

    parent = rxstate.connect(
        rx_server.url, namespace=f"ten-{uuid.uuid4().hex[:8]}", keys=StaticKeyProvider(generate_key())
    )
    tenants = rxstate.admin.tenants(parent)
    for name in ("acme", "beta"):
        tenants.create(name)
        accounts = parent.tenant(name).collection("accounts", Account)
        accounts.put("a", Account(api_key=f"secret-{name}"))
        assert accounts.get("a").api_key.get_secret_value() == f"secret-{name}"
        stored = parent.client.hget(accounts.key("a"), "api_key")
        assert stored is not None and b"secret" not in stored
    ring = f"rx:{{{parent.namespace}/acme}}:_keys"
    assert parent.client.exists(ring)
    assert parent.client.hgetall(ring) != parent.client.hgetall(f"rx:{{{parent.namespace}/beta}}:_keys")
    tenants.delete("acme")
    assert not parent.client.exists(ring)
    tenants.delete("beta")
    parent.close()
