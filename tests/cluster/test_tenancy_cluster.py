"""Tenants on a Redis Cluster: each partition's share of a quota is enforced in its own slot, two
tenants' counters stay apart, and nothing a tenant store sends spans slots (no CROSSSLOT)."""

from __future__ import annotations

import pytest

from rxstate.core.errors import QuotaExceeded
from rxstate.tenancy import Limits, Tenants
from rxstate.tenancy.reads import read_cost_key
from rxstate.testing import Backend
from tests.event_models import ORDER_EVENTS, Order, Placed, apply_order
from tests.tenancy.workers import Item

pytestmark = pytest.mark.cluster


@pytest.fixture
def cluster_tenants(rx_cluster):
    with Backend("cluster", rx_cluster) as backend:
        admin = backend.store(reap_interval=None)
        tenants = Tenants(admin)
        yield admin, tenants
        for config in tenants.list():
            tenants.delete(config.name)


def test_two_tenants_quotas_hold_per_partition_share_without_crossslot(cluster_tenants):
    admin, tenants = cluster_tenants
    tenants.create("acme", limits=Limits(max_entities=8, max_events=8), partitions=4)  # 2 + 2 each
    tenants.create("beta", limits=Limits(max_entities=3))
    acme = admin.tenant("acme")
    items = acme.collection("items", Item)
    ids = [f"i{i}" for i in range(40)]
    slots = {admin.client.keyslot(items.key(i)) for i in ids}
    assert len(slots) == 4  # one slot per partition, on several nodes
    accepted: dict[int, int] = {}
    for entity_id in ids:
        p = acme.keyspace.partition_of(entity_id)
        try:
            items.put(entity_id, Item(n=1))
            accepted[p] = accepted.get(p, 0) + 1
        except QuotaExceeded as exc:
            assert (exc.quota, exc.limit, exc.use, exc.partition) == ("entities", 2, 2, p)
    assert accepted == {0: 2, 1: 2, 2: 2, 3: 2}
    # A transaction over two partitions is checked in each partition's own script: the full share
    # refuses it whole, with a quota error, not a cross-slot one.
    kept = next(i for i in ids if items.exists(i))
    other = next(i for i in ids if acme.keyspace.partition_of(i) != acme.keyspace.partition_of(kept))
    with pytest.raises(QuotaExceeded), acme.transaction() as tx:
        tx.update(items, kept, n=2)
        tx.put(items, f"{other}-new", Item())
    assert items.get(kept, consistent=True).n == 1
    orders = acme.events("orders", state=Order, events=ORDER_EVENTS, reducer=apply_order, snapshot_every=None)
    appended: dict[int, int] = {}
    for i in range(16):
        aggregate = f"o{i}"
        p = orders.partition(aggregate)
        try:
            orders.append(aggregate, [Placed(sku="s", qty=1)])
            appended[p] = appended.get(p, 0) + 1
        except QuotaExceeded as exc:
            assert (exc.quota, exc.limit, exc.partition) == ("events", 2, p)
    assert appended == {0: 2, 1: 2, 2: 2, 3: 2}
    # The other tenant's quota and counters are its own.
    beta = admin.tenant("beta").collection("items", Item)
    for i in range(3):
        beta.put(f"b{i}", Item(n=i))
    with pytest.raises(QuotaExceeded) as info:
        beta.put("b3", Item())
    assert info.value.tenant == f"{admin.namespace}/beta" and info.value.use == 3
    used, counted = tenants.usage("acme"), tenants.recount("acme")
    assert (used.entities, used.events) == (8, 8) == (counted.entities, counted.events)
    assert used.bytes == counted.bytes
    assert tenants.usage("beta").entities == 3 == tenants.recount("beta").entities
    # Read costs of four partitions, in four slots: flushed without a multi-slot command.
    one_each = {acme.keyspace.partition_of(i): i for i in ids if items.exists(i)}
    for entity_id in one_each.values():
        assert items.get(entity_id, consistent=True).n == 1
    meter = acme.read_meter
    assert meter is not None
    meter.flush()
    shares = [admin.client.hget(read_cost_key(acme.keyspace, p), "rops") for p in range(4)]
    assert all(int(n or 0) >= 1 for n in shares), shares
    assert tenants.usage("acme").reads >= 4 and tenants.usage("beta").reads == 0
