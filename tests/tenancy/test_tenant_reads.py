"""A tenant's read costs on a real server: counted by its stores, flushed to the read-cost hashes (in
the background, on flush() and at close), by readers too, and shown by usage()."""

from __future__ import annotations

import pytest
import redis

import rxstate
from rxstate import Policy, Rule
from rxstate.security.acl import username
from tests.event_models import ORDER_EVENTS, Order, Placed, apply_order
from tests.helpers import wait_for
from tests.tenancy.workers import Item

READ_ONLY = Policy([Rule("r", "allow", ["read"], ["*"], name="read")])


def _hash_bytes(client, key):
    return sum(len(k) + len(v) for k, v in client.hgetall(key).items())


def test_reads_are_counted_then_flushed(admin, tenants, rx_server):
    tenants.create("acme", partitions=2)
    ns = f"{admin.namespace}/acme"
    writer = admin.tenant("acme")
    items = writer.collection("items", Item)
    for i in range(3):
        items.put(f"i{i}", Item(n=i))
    orders = writer.events("orders", state=Order, events=ORDER_EVENTS, reducer=apply_order, snapshot_every=None)
    orders.append("o1", [Placed(sku="a", qty=1), Placed(sku="b", qty=2), Placed(sku="c", qty=3)])
    reader = rxstate.connect(rx_server.url, namespace=ns, cache=False, reap_interval=None)
    try:
        meter = reader.read_meter
        assert meter is not None
        meter.interval = None  # flushed by hand below (the background flush is tested on its own)
        mine = reader.collection("items", Item)
        assert mine.get("i0").n == 0
        assert {k: x.n for k, x in mine.get_many(["i1", "i2", "nope"]).items()} == {"i1": 1, "i2": 2}
        assert mine.exists("i1") and mine.get("i2", fields=["n"]) == {"n": 2}
        log = reader.events(
            "orders", state=Order, events=ORDER_EVENTS, reducer=apply_order, snapshot_every=None, cache_size=0
        )
        assert log.load("o1").value.items == 6
        client = admin.client
        size = {i: _hash_bytes(client, mine.key(f"i{i}")) for i in range(3)}
        stream = reader.keyspace.event_stream("orders", "o1", reader.keyspace.partition_of("o1"))
        events_bytes = sum(len(sid) + sum(len(k) + len(v) for k, v in f.items()) for sid, f in client.xrange(stream))
        # i0, i1, i2, nope (empty), i1 (exists: _v), i2 (fields: _v _sv n), then three events
        reads = 1 + 3 + 1 + 1 + 3
        v1 = client.hget(mine.key("i1"), "_v")
        sv2, v2, n2 = (client.hget(mine.key("i2"), f) for f in ("_sv", "_v", "n"))
        nbytes = size[0] + size[1] + size[2] + len(v1) + len(v2) + len(sv2) + len(n2) + events_bytes
        assert tenants.usage("acme").reads == 0  # counted in the process, not flushed yet
        assert sum(n for n, _ in meter.pending().values()) == reads
        assert meter.flush() >= 1 and meter.pending() == {}
        used = tenants.usage("acme")
        assert (used.reads, used.bytes_read) == (reads, nbytes)
        assert meter.flush() == 0  # nothing twice
        mine.get("i0")
    finally:
        reader.close()  # flushes what is left
    assert tenants.usage("acme").reads == reads + 1


def test_cache_hits_cost_nothing_and_the_background_flush_adds_the_misses(admin, tenants, rx_server):
    tenants.create("acme")
    admin.tenant("acme").collection("items", Item).put("a", Item(n=1))
    reader = rxstate.connect(rx_server.url, namespace=f"{admin.namespace}/acme", reap_interval=None)
    try:
        items = reader.collection("items", Item)
        cache = reader.cache
        assert cache is not None and reader.read_meter is not None and reader.read_meter.interval == 1.0
        for _ in range(20):
            assert items.get("a").n == 1
        # until the cache serves hits (its invalidation feed up), gets are misses read from the server
        assert wait_for(lambda: items.get("a").n == 1 and cache.stats().hits >= 5, timeout=10, interval=0.01)
        misses = cache.stats().misses
        assert misses >= 1
        assert wait_for(lambda: tenants.usage("acme").reads == misses, timeout=10, interval=0.05)  # every second
    finally:
        reader.close()


def test_a_read_only_principal_flushes_its_read_costs(admin, tenants, rx_server):
    tenants.create("acme")
    admin.tenant("acme").collection("items", Item).put("a", Item(n=1))
    principals = tenants.principals("acme")
    principals.set_policy(READ_ONLY)
    password = principals.create("rita", kind="user", roles=["r"])
    store = rxstate.connect(
        rx_server.url,
        namespace=f"{admin.namespace}/acme",
        principal="rita",
        password=password,
        cache=False,
        reap_interval=None,
    )
    try:
        assert store.collection("items", Item).get("a").n == 1
        assert store.read_meter is not None
        store.read_meter.flush()  # raises if the principal's ACL refused it
        assert tenants.usage("acme").reads == 1
        # ... and its grant reaches no more than the read-cost hash: not the limits
        raw = rx_server.client(username=username(f"{admin.namespace}/acme", "rita"), password=password)
        try:
            with pytest.raises(redis.exceptions.NoPermissionError):
                raw.hincrby(f"rx:{{{admin.namespace}/acme:0}}:_tenant", "qe", 1000)
        finally:
            raw.close()
    finally:
        store.close()
