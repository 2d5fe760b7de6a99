"""Exactly-once writes: a write whose reply is lost (or late) takes effect once, for every kind of write.

A proxy between the store and a real server lets the server run a write script call, then loses its
reply; the client's retry (redis-py's, or the Writer's) resends the call with the same write id, and
the script answers with the recorded reply instead of writing again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
import redis

import rxstate
from rxstate.errors import ConflictError, UnknownOutcome
from rxstate.server.embedded import EmbeddedServer
from rxstate.testing.faults import LossyProxy, lossy_proxy
from tests.event_models import ORDER_EVENTS, Order, Placed, apply_order
from tests.models import Agent


class Account(rxstate.Model):
    owner: str
    balance: int = 0


@pytest.fixture
def proxy(rx_server: EmbeddedServer) -> Iterator[LossyProxy]:
    assert rx_server.port is not None
    with lossy_proxy(rx_server.port) as p:
        yield p


def _store(proxy: LossyProxy, *, client: str = "url", **options: Any) -> rxstate.Store:
    namespace = f"lost-{uuid.uuid4().hex[:8]}"
    options = {"cache": False, "reap_interval": None, **options}
    if client == "url":
        return rxstate.connect(f"redis://127.0.0.1:{proxy.port}/0", namespace=namespace, **options)
    # a client passed in keeps its own (redis-py's default) retry policy: its resends are safe too
    return rxstate.connect(redis.Redis(port=proxy.port, socket_timeout=0.5), namespace=namespace, **options)


def _records(store: rxstate.Store, entity_id: str) -> list[dict[bytes, bytes]]:
    """Every change record of ``entity_id``, over all partitions."""
    ks = store.keyspace
    out = []
    for p in range(ks.partitions):
        out += [fields for _, fields in store.client.xrange(ks.changes(p)) if fields[b"i"] == entity_id.encode()]
    return out


@pytest.mark.parametrize("client", ["url", "passed-in"])
@pytest.mark.parametrize("mode", ["drop", "delay"])
def test_a_lost_reply_to_a_put_or_create_takes_effect_once(proxy: LossyProxy, client: str, mode: str) -> None:
    store = _store(proxy, client=client)
    agents = store.collection("agents", Agent)
    proxy.arm(mode=mode, delay=1.0)
    assert agents.put("a1", Agent(name="x")).version == 1
    proxy.arm(mode=mode, delay=1.0)
    assert agents.create("a2", Agent(name="y")).version == 1  # no AlreadyExists: it did succeed
    assert proxy.lost == 2
    assert [agents.get_versioned(i).version for i in ("a1", "a2")] == [1, 1]
    assert len(_records(store, "a1")) == len(_records(store, "a2")) == 1
    store.close()


def test_a_lost_reply_to_a_compare_and_set_update_takes_effect_once(proxy: LossyProxy) -> None:
    store = _store(proxy)
    agents = store.collection("agents", Agent)
    agents.put("a1", Agent(name="x"))
    proxy.arm()
    updated = agents.update("a1", status="busy", expected_version=1)  # no ConflictError: it did succeed
    assert (updated.version, updated.value.status) == (2, "busy")
    assert agents.get_versioned("a1").version == 2 and len(_records(store, "a1")) == 2
    store.close()


def test_a_lost_reply_to_an_incr_takes_effect_once(proxy: LossyProxy) -> None:
    store = _store(proxy)
    agents = store.collection("agents", Agent)
    agents.put("a1", Agent(name="x"))
    proxy.arm()
    assert agents.incr("a1", "load", 1) == 1
    got = agents.get_versioned("a1")
    assert (got.value.load, got.version, len(_records(store, "a1"))) == (1, 2, 2)
    store.close()


def test_a_lost_reply_to_a_delete_takes_effect_once(proxy: LossyProxy) -> None:
    store = _store(proxy)
    agents = store.collection("agents", Agent)
    agents.put("a1", Agent(name="x"))
    proxy.arm()
    agents.delete("a1")
    assert "a1" not in agents.ids()
    assert [r[b"o"] for r in _records(store, "a1")] == [b"create", b"delete"]
    assert agents.put("a1", Agent(name="again")).version == 3  # the delete counted once
    store.close()


@pytest.mark.parametrize("atomic", [False, True])
def test_a_lost_reply_to_a_batch_takes_effect_once(proxy: LossyProxy, atomic: bool) -> None:
    store = _store(proxy, partitions=4)
    agents = store.collection("agents", Agent)
    agents.put("a1", Agent(name="x"))
    proxy.arm()
    with store.batch(atomic=atomic) as batch:
        batch.put(agents, "b1", Agent(name="b1"))
        batch.put(agents, "b2", Agent(name="b2"))
        batch.incr(agents, "a1", "load", 5)
    assert agents.get("a1").load == 5
    assert [len(_records(store, i)) for i in ("b1", "b2", "a1")] == [1, 1, 2]
    store.close()


def test_a_lost_reply_to_a_retried_transaction_moves_money_once(proxy: LossyProxy) -> None:
    store = _store(proxy)
    accounts = store.collection("accounts", Account)
    accounts.put("alice", Account(owner="alice", balance=100))
    accounts.put("bob", Account(owner="bob"))

    @store.transaction(retries=3)
    def move(tx: Any, amount: int) -> None:
        a, b = tx.get(accounts, "alice"), tx.get(accounts, "bob")
        tx.update(accounts, "alice", balance=a.balance - amount)
        tx.update(accounts, "bob", balance=b.balance + amount)

    proxy.arm()
    move(30)
    assert proxy.lost == 1
    assert (accounts.get("alice").balance, accounts.get("bob").balance) == (70, 30)
    assert [accounts.get_versioned(i).version for i in ("alice", "bob")] == [2, 2]
    store.close()


@pytest.mark.parametrize("nth", [1, 2, 3], ids=["prepare", "commit-record", "resolve"])
def test_a_lost_reply_in_a_two_phase_commit_takes_effect_once(proxy: LossyProxy, nth: int) -> None:
    store = _store(proxy, partitions=8)
    accounts = store.collection("accounts", Account)
    ids = ["a", "b", "c", "d"]  # spread over several partitions
    assert len({store.keyspace.partition_of(i) for i in ids}) > 1
    for i in ids:
        accounts.put(i, Account(owner=i, balance=10))
    proxy.arm(nth=nth)
    with store.transaction(two_phase=True) as tx:
        for i in ids:
            tx.update(accounts, i, balance=tx.get(accounts, i).balance + 1)
    assert proxy.lost == 1
    assert [accounts.get(i).balance for i in ids] == [11] * 4
    assert all(len(_records(store, i)) == 2 for i in ids)
    store.close()


def test_a_lost_reply_to_an_event_append_and_its_projection_takes_effect_once(proxy: LossyProxy) -> None:
    store = _store(proxy)
    orders = store.events("orders", state=Order, events=ORDER_EVENTS, reducer=apply_order, project_to="order_view")
    proxy.arm()
    assert orders.append("o1", [Placed(sku="a", qty=1)], expected_version=0).version == 1
    assert len(orders.history("o1")) == 1
    assert store.collection("order_view", Order).get_versioned("o1").version == 1
    store.close()


def test_a_lost_reply_to_an_atomic_projection_takes_effect_once(proxy: LossyProxy) -> None:
    store = _store(proxy)
    agents = store.collection("agents", Agent)
    orders = store.events("orders", state=Order, events=ORDER_EVENTS, reducer=apply_order)
    orders.append("o1", [Placed(sku="a", qty=1)])
    orders.append("o2", [Placed(sku="b", qty=2)])
    seen = orders.project(
        "seen", lambda event, batch: batch.put(agents, event.aggregate_id, Agent(name="seen")), atomic=True
    )
    proxy.arm()
    seen.run()
    assert proxy.lost == 1
    assert [agents.get_versioned(i).version for i in ("o1", "o2")] == [1, 1]  # each event applied once
    assert [len(_records(store, i)) for i in ("o1", "o2")] == [1, 1]
    store.close()


def test_a_write_whose_outcome_stays_unknown_raises_unknown_outcome_that_resolves(proxy: LossyProxy) -> None:
    store = _store(proxy, write_retries=1)
    agents = store.collection("agents", Agent)
    agents.put("a1", Agent(name="x"))
    proxy.refuse()  # the server is unreachable from now on, but it runs the call in flight
    proxy.arm()
    with pytest.raises(UnknownOutcome) as caught:
        agents.incr("a1", "load", 1)
    err = caught.value
    assert err.script == "mutate" and err.record.endswith(err.write_id) and err.remembered_ms == 60_000
    assert "resolve()" in str(err)
    proxy.refuse(False)
    assert err.resolve() is True  # it took effect, once
    assert agents.get("a1").load == 1
    store.close()


def test_a_write_that_never_arrived_resolves_as_not_applied_and_never_applies(proxy: LossyProxy) -> None:
    store = _store(proxy, write_retries=0)
    agents = store.collection("agents", Agent)
    agents.put("a1", Agent(name="x"))
    proxy.refuse()
    proxy.arm(mode="swallow")  # the request itself is lost
    with pytest.raises(UnknownOutcome) as caught:
        agents.incr("a1", "load", 1)
    proxy.refuse(False)
    err = caught.value
    assert err.resolve() is False
    assert agents.get("a1").load == 0
    # a copy of the call that arrives late is refused: the write id was given up
    wrapped = store.scripts.once("mutate")
    direct = redis.Redis(port=proxy.target_port)
    keys, args = store.writer.pack([store.collection("agents", Agent).incr_op("a1", "load", 1)])
    with pytest.raises(ConflictError, match="given up"):
        wrapped(direct, [err.record, *keys], [60_000, *args])
    assert agents.get("a1").load == 0
    store.close()


def test_write_record_options_are_checked() -> None:
    with pytest.raises(rxstate.ValidationError, match="write_record_ms"):
        rxstate.connect(fakeredis.FakeRedis(), write_record_ms=0, cache=False)


def test_a_refused_write_leaves_no_write_record(rx_server: EmbeddedServer) -> None:
    store = rxstate.connect(rx_server.client(), namespace=f"wr-{uuid.uuid4().hex[:8]}", cache=False)
    agents = store.collection("agents", Agent)
    agents.put("a1", Agent(name="x"))
    pattern = f"rxw:{{{store.namespace}:*}}:*"
    recorded = set(store.client.keys(pattern))
    with pytest.raises(ConflictError):
        agents.update("a1", status="busy", expected_version=7)
    with pytest.raises(rxstate.errors.AlreadyExists):
        agents.create("a1", Agent(name="again"))
    assert set(store.client.keys(pattern)) == recorded
    agents.update("a1", status="busy")
    assert len(set(store.client.keys(pattern)) - recorded) == 1  # an applied write is recorded, once
    store.close()
