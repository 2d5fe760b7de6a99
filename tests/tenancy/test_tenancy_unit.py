"""Tenancy without a server property: limits and their split, the registry's errors, the fair scheduler,
the tenant stage on fakeredis (quota, rate and suspension refusals), export/import round trip."""

from __future__ import annotations

import gzip
import threading

import pytest

import rxstate
from rxstate.core.errors import BufferOverflow, CorruptDataError, QuotaExceeded, RateLimited, TenantSuspended
from rxstate.tenancy import FairScheduler, Limits, TenantConfig, Tenants, export_tenant, import_tenant
from tests.helpers import dump_all
from tests.tenancy.workers import Item


def test_limits_split_over_partitions_sums_to_the_whole():
    shares = Limits(max_entities=10, max_bytes=7, rate=30.0, burst=5).split(3)
    assert sum(s.max_entities or 0 for s in shares) == 10
    assert sum(s.max_bytes or 0 for s in shares) == 7
    assert [s.rate for s in shares] == [10.0, 10.0, 10.0]
    assert [s.burst for s in shares] == [2, 2, 2]
    assert Limits().split(2) == [Limits(), Limits()]


@pytest.mark.parametrize("bad", [{"max_entities": 0}, {"rate": -1.0}, {"burst": 1.5}, {"max_bytes": True}])
def test_bad_limits_are_refused(bad):
    with pytest.raises(rxstate.ValidationError):
        Limits(**bad)


@pytest.mark.parametrize("name", ["", "Acme", "a/b", "a:b", "x" * 64])
def test_bad_tenant_names_are_refused(name, rx_fake_store):
    with pytest.raises(rxstate.ValidationError):
        Tenants(rx_fake_store).create(name)


def test_defaults_fill_unset_limits(rx_fake_store):
    tenants = Tenants(rx_fake_store)
    tenants.create("acme", limits=Limits(max_entities=1))
    tenants.set_defaults(Limits(max_entities=100, max_bytes=5))
    assert tenants.effective("acme") == Limits(max_entities=1, max_bytes=5)
    items = rx_fake_store.tenant("acme").collection("items", Item)
    items.put("a", Item(n=1))
    with pytest.raises(QuotaExceeded) as info:
        items.put("b", Item())
    assert info.value.quota in ("entities", "bytes")
    tenants.update("acme", max_entities=None)  # back to the default: 100
    assert tenants.effective("acme").max_entities == 100


def test_the_events_quota_has_defaults_and_overrides(rx_fake_store):
    from tests.event_models import ORDER_EVENTS, Order, Placed, apply_order

    tenants = Tenants(rx_fake_store)
    tenants.create("acme")
    tenants.set_defaults(Limits(max_events=2))
    assert tenants.effective("acme").max_events == 2
    orders = rx_fake_store.tenant("acme").events("orders", state=Order, events=ORDER_EVENTS, reducer=apply_order)
    orders.append("o1", [Placed(sku="a", qty=1)] * 2)
    with pytest.raises(QuotaExceeded) as info:
        orders.append("o1", [Placed(sku="b", qty=1)])
    assert (info.value.quota, info.value.limit, info.value.use) == ("events", 2, 2)
    tenants.update("acme", max_events=3)  # its own limit wins over the default
    assert orders.append("o1", [Placed(sku="b", qty=1)]).version == 3
    assert tenants.usage("acme").events == 3 and tenants.get("acme").limits.to_dict() == {"max_events": 3}


def test_registry_errors(rx_fake_store):
    tenants = Tenants(rx_fake_store)
    tenants.create("acme")
    with pytest.raises(rxstate.AlreadyExists):
        tenants.create("acme")
    for call in (tenants.get, tenants.suspend, tenants.usage, tenants.delete):
        with pytest.raises(rxstate.NotFound):
            call("nobody")
    with pytest.raises(rxstate.ValidationError):
        tenants.delete("acme", batch=0)
    with pytest.raises(rxstate.ValidationError):
        TenantConfig("acme", partitions=0)


def test_stage_refusals_on_fakeredis_leave_state_unchanged(rx_fake_store):
    tenants = Tenants(rx_fake_store)
    tenants.create("acme", limits=Limits(max_entities=1, rate=1.0, burst=2))
    items = rx_fake_store.tenant("acme").collection("items", Item)
    items.put("a", Item())
    before = dump_all(rx_fake_store.client)
    with pytest.raises(QuotaExceeded):
        items.put("b", Item())
    assert dump_all(rx_fake_store.client) == before
    items.update("a", n=1)  # the second token
    with pytest.raises(RateLimited) as info:
        items.update("a", n=2)
    assert 0 < info.value.retry_after <= 1.0 and info.value.scope == "tenant"
    tenants.suspend("acme")
    with pytest.raises(TenantSuspended) as suspended:
        items.delete("a")
    assert suspended.value.tenant == f"{rx_fake_store.namespace}/acme"
    assert items.get("a").n == 1  # reads work
    usage = tenants.usage("acme")
    assert (usage.entities, usage.operations) == (1, 2)


def test_principal_rate_limit_names_its_scope(rx_fake_store):
    tenants = Tenants(rx_fake_store)
    tenants.create("acme", limits=Limits(principal_rate=1.0, principal_burst=1))
    items = rx_fake_store.tenant("acme").collection("items", Item)
    items.put("a", Item())
    with pytest.raises(RateLimited) as info:
        items.put("a", Item())
    assert info.value.scope == "principal"


def test_export_import_round_trip_and_corrupt_files(rx_fake_store, tmp_path):
    tenants = Tenants(rx_fake_store)
    tenants.create("acme")
    rx_fake_store.tenant("acme").collection("items", Item).put("a", Item(n=5))
    path = tmp_path / "acme.jsonl.gz"
    export_tenant(tenants, "acme", path)
    tenants.delete("acme")
    import_tenant(tenants, path)
    assert rx_fake_store.tenant("acme").collection("items", Item).get("a").n == 5
    truncated = tmp_path / "cut.jsonl.gz"
    with gzip.open(path, "rt") as source:
        lines = source.read().splitlines()
    with gzip.open(truncated, "wt") as out:
        out.write("\n".join(lines[:-1]) + "\n")
    with pytest.raises(CorruptDataError):
        import_tenant(tenants, truncated, name="other")
    assert not rx_fake_store.client.exists(f"rx:{{{rx_fake_store.namespace}/other}}:meta")


def test_fair_scheduler_serves_tenants_by_weight():
    gate, started = threading.Event(), threading.Event()
    order: list[str] = []

    def block() -> None:
        started.set()
        gate.wait(5)

    with FairScheduler(1, weights={"a": 2}) as scheduler:
        blocker = scheduler.submit("z", block)
        assert started.wait(5)
        futures = [scheduler.submit("a", order.append, "a") for _ in range(6)]
        futures += [scheduler.submit("b", order.append, "b") for _ in range(3)]
        gate.set()
        blocker.result(timeout=5)
        for f in futures:
            f.result(timeout=5)
    assert order == ["a", "a", "b", "a", "a", "b", "a", "a", "b"]


def test_fair_scheduler_bounds_and_errors():
    gate, started = threading.Event(), threading.Event()

    def block() -> None:
        started.set()
        gate.wait(5)

    with FairScheduler(1, max_queued=1) as scheduler:
        scheduler.submit("a", block)
        assert started.wait(5)
        scheduler.submit("a", lambda: None)
        with pytest.raises(BufferOverflow):
            scheduler.submit("a", lambda: None)
        failing = scheduler.submit("b", lambda: 1 / 0)
        assert scheduler.queued() == {"a": 1, "b": 1}
        gate.set()
        with pytest.raises(ZeroDivisionError):
            failing.result(timeout=5)
    with pytest.raises(rxstate.ValidationError):
        scheduler.submit("a", lambda: None)
    with pytest.raises(rxstate.ValidationError):
        FairScheduler(0)


@pytest.mark.parametrize("projected", [False, True])
def test_suspension_refuses_event_appends(rx_fake_store, projected):
    from tests.event_models import Order, Placed, apply_order

    tenants = Tenants(rx_fake_store)
    tenants.create("acme")
    orders = rx_fake_store.tenant("acme").events(
        "orders", state=Order, events=[Placed], reducer=apply_order, project_to="order_state" if projected else None
    )
    orders.append("o1", [Placed(sku="apple", qty=1)])
    tenants.suspend("acme")
    before = dump_all(rx_fake_store.client)
    with pytest.raises(TenantSuspended):
        orders.append("o1", [Placed(sku="pear", qty=1)])
    assert dump_all(rx_fake_store.client) == before
    tenants.resume("acme")
    assert orders.append("o1", [Placed(sku="pear", qty=1)]).version == 2


def test_one_tenant_never_takes_every_worker():
    gate = threading.Event()
    with FairScheduler(2) as scheduler:  # max_share 1: one worker stays free for others
        held = [scheduler.submit("noisy", gate.wait, 5) for _ in range(3)]
        assert scheduler.submit("quiet", lambda: "served").result(timeout=5) == "served"
        assert not any(f.done() for f in held)
        gate.set()
        assert all(f.result(timeout=5) for f in held)
    with pytest.raises(rxstate.ValidationError):
        FairScheduler(2, max_share=3)


def test_the_tenant_retention_caps_the_change_stream_whoever_writes(rx_fake_store):
    tenants = Tenants(rx_fake_store)
    tenants.create("acme", retention=5)
    view = rx_fake_store.tenant("acme")
    view.change_retention = 10_000  # a writer asking for more: the tenant's cap applies
    items = view.collection("items", Item)
    for i in range(300):
        items.put(f"i{i}", Item(n=i))
    length = rx_fake_store.client.xlen(f"rx:{{{view.namespace}:0}}:changes")
    assert 5 <= length < 300


def test_read_costs_survive_a_failed_flush_and_are_added_once():
    import fakeredis
    import redis

    from rxstate.core.keys import Keyspace
    from rxstate.tenancy.reads import ReadCosts, read_cost_key

    server = fakeredis.FakeServer()
    costs = ReadCosts(fakeredis.FakeRedis(server=server), Keyspace("crew/acme", 2), interval=None)
    costs.count("rx:{crew/acme:0}:items:a", 10)
    costs.count("rx:{crew/acme:1}:_es:orders:o1", 300, 3)
    server.connected = False
    with pytest.raises(redis.exceptions.ConnectionError):
        costs.flush()
    costs.count("rx:{crew/acme:0}:items:b", 5)  # counted meanwhile
    assert costs.pending() == {0: (2, 15), 1: (3, 300)}
    server.connected = True
    assert costs.flush() == 2
    costs.close()  # nothing left: adds nothing
    client = costs.client
    ks = costs.keyspace
    assert client.hgetall(read_cost_key(ks, 0)) == {b"rops": b"2", b"rb": b"15"}
    assert client.hgetall(read_cost_key(ks, 1)) == {b"rops": b"3", b"rb": b"300"}
