"""Event sourcing on every backend: append, replay, snapshots, history, queries, projections."""

from __future__ import annotations

import pytest

import rxstate
from rxstate.errors import ConflictError, NotFound, ValidationError
from tests.event_models import ORDER_EVENTS, Cancelled, Order, Paid, Placed, Shipped, apply_order


@pytest.fixture
def orders(rx_store):
    return rx_store.events(
        "orders", state=Order, events=ORDER_EVENTS, reducer=apply_order, snapshot_every=3, project_to="order_view"
    )


def test_append_load_and_projection_agree(rx_store, orders):
    r1 = orders.append("o1", [Placed(sku="a", qty=2)], expected_version=0)
    r2 = orders.append("o1", [Paid(amount_cents=500), Shipped(carrier="ups")], expected_version=1)
    assert (r1.version, r2.version) == (1, 3)
    assert len(r2.positions) == 2 and r2.positions[0] != r2.positions[1]
    loaded = orders.load("o1")
    assert loaded.version == 3
    assert loaded.value == Order(status="shipped", items=2, paid_cents=500, carrier="ups")
    assert loaded.offset == r2.positions[-1]
    view = rx_store.collection("order_view", Order).get_versioned("o1")
    assert view.value == loaded.value
    assert view.version == 2  # one projection write per append
    changes = rx_store.client.xrevrange(rx_store.keyspace.changes(orders.partition("o1")), count=1)
    record = changes[0][1]
    assert (record[b"c"], record[b"i"], record[b"o"], record[b"v"]) == (b"order_view", b"o1", b"replace", b"2")
    assert view.offset == changes[0][0].decode()  # the entity's _o names its change record
    assert orders.version("o1") == 3 and orders.ids() == ["o1"]


def test_stale_expected_version_is_refused_and_nothing_appended(rx_store, orders):
    orders.append("o1", [Placed(sku="a", qty=1)], expected_version=0)
    with pytest.raises(ConflictError) as info:
        orders.append("o1", [Paid(amount_cents=1)], expected_version=0)
    assert (info.value.expected, info.value.actual) == (0, 1)
    assert orders.version("o1") == 1
    assert [e.type for e in orders.history("o1")] == ["Placed"]


def test_bad_events_are_rejected_with_nothing_appended(rx_store, orders):
    orders.append("o1", [Placed(sku="a", qty=1)])
    before = rx_store.client.xlen(orders.key("o1"))

    class Unknown(rxstate.Model):
        x: int = 0

    bad_batches = [
        [Paid(amount_cents=1), Unknown()],  # unknown type (after a good one)
        [{"type": "Refunded", "amount": 1}],  # unknown type name
        [{"type": "Placed", "sku": "b", "qty": 0}],  # invalid payload (qty >= 1)
        [Placed(sku="a", qty=1).model_copy(update={"qty": -5})],  # invalid payload, built without validation
        [Cancelled(), Paid(amount_cents=3)],  # the reducer refuses it (paid after cancel)
        [],
    ]
    for batch in bad_batches:
        with pytest.raises(ValidationError):
            orders.append("o1", batch)
    assert rx_store.client.xlen(orders.key("o1")) == before
    assert orders.version("o1") == 1
    assert orders.load("o1").value == Order(status="placed", items=1)


def test_replay_to_version_and_history_metadata(rx_store, orders):
    orders.append("o1", [Placed(sku="a", qty=1)], causation_id="cmd-1", correlation_id="req-9")
    orders.append("o1", [Placed(sku="b", qty=2), Paid(amount_cents=300)], vector_clock={"n1": 2, "n2": 1})
    assert orders.replay("o1", to_version=1).value == Order(status="placed", items=1)
    assert orders.replay("o1", to_version=2).value.items == 3
    assert orders.replay("o1", to_version=3, use_snapshots=False).value.paid_cents == 300
    with pytest.raises(NotFound):
        orders.replay("o1", to_version=0)
    hist = orders.history("o1")
    assert [(e.version, e.type) for e in hist] == [(1, "Placed"), (2, "Placed"), (3, "Paid")]
    assert hist[0].causation_id == "cmd-1" and hist[0].correlation_id == "req-9"
    assert hist[1].correlation_id == hist[1].event_id and hist[2].correlation_id == hist[1].event_id
    assert hist[2].vector_clock == {"n1": 2, "n2": 1} and hist[0].vector_clock is None
    assert hist[0].actor == rx_store.actor
    assert len({e.event_id for e in hist}) == 3
    assert orders.history("o1", after_version=1, limit=1)[0].version == 2


def test_load_of_unknown_aggregate_raises(orders):
    with pytest.raises(NotFound):
        orders.load("nope")
    assert orders.version("nope") == 0


def test_category_subscription_and_projection_checkpoint(rx_store, orders):
    for i in range(5):
        orders.append(f"o{i}", [Placed(sku="a", qty=i + 1)])
    seen = []
    proj = orders.project("counts", seen.append)
    assert proj.run() == 5
    assert sorted(e.aggregate_id for e in seen) == [f"o{i}" for i in range(5)]
    orders.append("o0", [Paid(amount_cents=1)])
    again = rx_store.events("orders", state=Order, events=ORDER_EVENTS, reducer=apply_order,
                            snapshot_every=3, project_to="order_view")  # fmt: skip
    proj2 = again.project("counts", seen.append)
    assert proj2.run() == 1
    assert [e.type for e in seen[5:]] == ["Paid"]
    sub = orders.subscribe(after="start")
    assert len(sub.poll()) == 6


class Tally(rxstate.Model):
    n: int = 0


def test_atomic_projection_keyed_by_aggregate(rx_store, orders):
    tallies = rx_store.collection("tallies", Tally)

    def handler(event, batch):
        batch.put(tallies, event.aggregate_id, Tally(n=batch.get(tallies, event.aggregate_id, Tally()).n + 1))

    for i in range(6):
        orders.append(f"o{i % 3}", [Placed(sku="a", qty=1)])
    proj = orders.project("tally", handler, atomic=True)
    assert proj.run() == 6
    assert orders.project("tally", handler, atomic=True).run() == 0
    assert [tallies.get(f"o{i}").n for i in range(3)] == [2, 2, 2]
