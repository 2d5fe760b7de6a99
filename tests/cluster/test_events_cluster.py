"""Event sourcing on a Redis Cluster: live subscriptions across slots, cross-slot projection writes refused."""

from __future__ import annotations

import threading
import time

import pytest

import rxstate
from rxstate.errors import ClusterError
from rxstate.testing import Backend
from tests.event_models import ORDER_EVENTS, Order, Placed, apply_order

pytestmark = pytest.mark.cluster


@pytest.fixture
def cluster_backend(rx_cluster):
    with Backend("cluster", rx_cluster) as backend:
        yield backend


def test_category_subscription_follows_every_partition_on_a_cluster(cluster_backend):
    writer, reader = cluster_backend.store(), cluster_backend.store()
    w = writer.events("orders", state=Order, events=ORDER_EVENTS, reducer=apply_order)
    sub = reader.events("orders", state=Order, events=ORDER_EVENTS, reducer=apply_order).subscribe(
        after="end", block=2.0
    )
    ids = [f"o{i}" for i in range(8)]  # spread over several partitions, hence slots and nodes
    assert len({w.partition(i) for i in ids}) > 2
    got: list[str] = []

    def follow() -> None:
        deadline = time.monotonic() + 5
        while len(got) < len(ids) and time.monotonic() < deadline:
            got.extend(e.aggregate_id for e in sub.poll(timeout=0.5))

    t = threading.Thread(target=follow)
    t.start()
    for i in ids:
        w.append(i, [Placed(sku="s", qty=1)])
    t.join(10)
    assert sorted(got) == ids


class Total(rxstate.Model):
    n: int = 0


def test_atomic_projection_refuses_writes_outside_the_event_partition(cluster_backend):
    store = cluster_backend.store()
    orders = store.events("orders", state=Order, events=ORDER_EVENTS, reducer=apply_order)
    totals = store.collection("totals", Total)
    orders.append("o1", [Placed(sku="s", qty=1)])
    other = next(f"k{i}" for i in range(100) if store.keyspace.partition_of(f"k{i}") != orders.partition("o1"))
    proj = orders.project("totals", lambda e, b: b.put(totals, other, Total(n=1)), atomic=True)
    with pytest.raises(ClusterError):
        proj.run()
    assert totals.get(other, None) is None
