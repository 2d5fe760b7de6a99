"""A tenant's events on a real server: the events quota, checked and counted in the append's script call
(the property test of usage against a recount, appends and retention trims included, is in
test_tenants_server.py)."""

from __future__ import annotations

import pytest

import rxstate
from rxstate.core.errors import QuotaExceeded, RateLimited, TenantSuspended
from rxstate.tenancy import Limits
from tests.event_models import ORDER_EVENTS, Order, Placed, apply_order
from tests.helpers import dump_all, wait_for
from tests.tenancy.workers import Item


def _quiet(view):
    """Stop the view's background flush of read costs, so that two DUMPs see only what the writes did
    (its reads are still counted, and flushed when the store closes)."""
    view.read_meter.close()
    return view


def _orders(view, **options):
    return view.events("orders", state=Order, events=ORDER_EVENTS, reducer=apply_order, snapshot_every=None, **options)


@pytest.mark.parametrize("projected", [False, True], ids=["plain", "projected"])
def test_events_quota_refuses_the_append_and_leaves_every_key_byte_identical(admin, tenants, projected):
    tenants.create("acme", limits=Limits(max_events=3))
    view = _quiet(admin.tenant("acme"))
    orders = _orders(view, project_to="order_view") if projected else _orders(view)
    orders.append("o1", [Placed(sku="a", qty=1), Placed(sku="b", qty=1)])
    orders.append("o2", [Placed(sku="c", qty=1)])
    assert tenants.usage("acme").events == 3 == tenants.recount("acme").events
    before = dump_all(admin.client)
    with pytest.raises(QuotaExceeded) as info:
        orders.append("o1", [Placed(sku="d", qty=1)])
    assert (info.value.quota, info.value.limit, info.value.use, info.value.requested) == ("events", 3, 3, 1)
    assert info.value.tenant == f"{admin.namespace}/acme"
    with pytest.raises(QuotaExceeded):  # a new aggregate, and an expected version: refused the same way
        orders.append("o3", [Placed(sku="e", qty=1)], expected_version=0)
    assert dump_all(admin.client) == before
    assert orders.version("o1") == 2 and not orders.exists("o3")
    tenants.update("acme", max_events=5)  # room again: a two-event append fits exactly
    assert orders.append("o3", [Placed(sku="e", qty=1), Placed(sku="f", qty=2)]).version == 2
    with pytest.raises(QuotaExceeded) as info:
        orders.append("o3", [Placed(sku="g", qty=1)])
    assert (info.value.use, info.value.requested) == (5, 1)
    used = tenants.usage("acme")
    assert used.events == 5 == tenants.recount("acme").events
    if projected:
        assert used.entities == 3 == tenants.recount("acme").entities
        assert view.collection("order_view", Order).get("o3").items == 3


def test_a_quota_of_a_multi_event_append_names_what_it_requested(admin, tenants):
    tenants.create("acme", limits=Limits(max_events=4))
    orders = _orders(_quiet(admin.tenant("acme")))
    orders.append("o1", [Placed(sku="a", qty=1)])
    before = dump_all(admin.client)
    with pytest.raises(QuotaExceeded) as info:  # the whole append is refused, not its first events
        orders.append("o1", [Placed(sku=str(i), qty=1) for i in range(4)])
    assert (info.value.limit, info.value.use, info.value.requested) == (4, 1, 4)
    assert dump_all(admin.client) == before


def test_appends_count_as_writes_rate_limits_and_suspension_refuse_them(admin, tenants):
    tenants.create("acme", limits=Limits(rate=0.001, burst=2))  # two tokens, then none for ~1000 s
    orders = _orders(_quiet(admin.tenant("acme")))
    orders.append("o1", [Placed(sku="a", qty=1)])
    orders.append("o2", [Placed(sku="b", qty=1), Placed(sku="c", qty=1)])  # one append, one write
    before = dump_all(admin.client)
    with pytest.raises(RateLimited) as info:
        orders.append("o1", [Placed(sku="d", qty=1)])
    assert info.value.scope == "tenant" and info.value.retry_after > 100
    assert dump_all(admin.client) == before
    assert tenants.usage("acme").operations == 2
    tenants.update("acme", rate=None, burst=None)
    tenants.suspend("acme")
    with pytest.raises(TenantSuspended):
        orders.append("o1", [Placed(sku="d", qty=1)])
    tenants.resume("acme")
    assert orders.append("o1", [Placed(sku="d", qty=1)]).version == 2


def test_event_usage_is_split_over_partitions_and_survives_export_and_import(admin, tenants, tmp_path):
    from rxstate.tenancy import export_tenant, import_tenant

    tenants.create("acme", limits=Limits(max_events=20), partitions=2)
    orders = _orders(admin.tenant("acme"))
    for i in range(6):
        orders.append(f"o{i}", [Placed(sku="a", qty=1)] * (i % 3 + 1))
    shares = [int(admin.client.hget(f"rx:{{{admin.namespace}/acme:{p}}}:_tenant", "qev")) for p in (0, 1)]
    assert shares == [10, 10]
    assert tenants.usage("acme").events == 12 == tenants.recount("acme").events
    path = tmp_path / "acme.jsonl.gz"
    export_tenant(tenants, "acme", path)
    import_tenant(tenants, path, name="copy")
    assert tenants.usage("copy").events == 12 == tenants.recount("copy").events
    assert tenants.get("copy").limits.max_events == 20


def test_the_change_stream_stays_within_the_tenant_cap_whoever_writes(admin, tenants, rx_server):
    cap = 40
    tenants.create("acme", retention=cap)
    node = int(admin.client.config_get("stream-node-max-entries")["stream-node-max-entries"])
    changes = f"rx:{{{admin.namespace}/acme:0}}:changes"
    # A store of the tenant's namespace that asks for a long feed: the tenant's cap wins, in writes,
    # projected appends and expiries alike.
    ns = f"{admin.namespace}/acme"
    greedy = rxstate.connect(rx_server.url, namespace=ns, change_retention=10**6, cache=False, reap_interval=None)
    try:
        assert greedy.writer.tenant is not None
        items = greedy.collection("items", Item)
        carts = _orders(greedy, project_to="cart_view")
        lengths = []
        for i in range(4 * (cap + node)):
            if i % 3 == 0:
                carts.append(f"c{i % 7}", [Placed(sku="a", qty=1)])
            else:
                items.put(f"i{i % 11}", Item(n=i))
            lengths.append(admin.client.xlen(changes))
        assert max(lengths) <= cap + node and lengths[-1] >= cap
        for i in range(cap + node):  # expiry records, appended by the reaper
            items.put(f"t{i}", Item(n=i), ttl=0.001)
        assert admin.client.xlen(changes) <= cap + node
        expiring = greedy.keyspace.expiry("items", 0)

        def all_reaped() -> bool:
            greedy._reap(items)
            return admin.client.zcard(expiring) == 0

        assert wait_for(all_reaped, timeout=5, interval=0.005)
        assert admin.client.xlen(changes) <= cap + node
        last = admin.client.xrevrange(changes, count=1)[0][1]
        assert last[b"o"] == b"expire"
        tenants.update("acme", retention=cap + 2 * node)  # a longer cap takes effect with the next write
        assert admin.client.hget(f"rx:{{{admin.namespace}/acme:0}}:_tenant", "cl") == str(cap + 2 * node).encode()
        for i in range(2 * node):
            items.put(f"i{i % 11}", Item(n=i))
        assert cap + node < admin.client.xlen(changes) <= cap + 3 * node
        assert tenants.get("acme").retention == cap + 2 * node
    finally:
        greedy.close()


class Ledger(rxstate.Model):
    __subject__ = "id"
    total: int = 0


def _add(state: Ledger | None, event: Item) -> Ledger:
    return Ledger(total=(state.total if state is not None else 0) + event.n)


def test_erasing_a_subject_gives_back_its_events_quota(admin, tenants):
    from rxstate.admin import erase

    tenants.create("acme", limits=Limits(max_events=5))
    view = _quiet(admin.tenant("acme"))
    ledgers = view.events("ledgers", state=Ledger, events=[Item], reducer=_add, snapshot_every=None)
    ledgers.append("ada", [Item(n=1), Item(n=2), Item(n=3)])
    ledgers.append("bob", [Item(n=4)])
    with pytest.raises(QuotaExceeded):
        ledgers.append("bob", [Item(n=5), Item(n=6)])
    report = erase(view, "ada", [ledgers])
    assert report.events == 3
    assert tenants.usage("acme").events == 1 == tenants.recount("acme").events
    ledgers.append("bob", [Item(n=5), Item(n=6)])  # the quota has room again
    assert tenants.usage("acme").events == 3 == tenants.recount("acme").events
