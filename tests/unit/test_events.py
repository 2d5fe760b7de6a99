"""Event sourcing details that need no real server: upcasting, snapshots, why, queries, timeline."""

from __future__ import annotations

import time

import pytest

import rxstate
from rxstate.core.scripts import ScriptLibrary
from rxstate.errors import SchemaError, ValidationError
from tests.event_models import (
    ORDER_EVENTS,
    Added,
    Cancelled,
    Counter,
    Order,
    Paid,
    PaidV1,
    Placed,
    Reset,
    Shipped,
    apply_counter,
    apply_order,
    apply_order_v1,
)


def open_orders(store, **kw):
    kw.setdefault("snapshot_every", 100)
    return store.events("orders", state=Order, events=ORDER_EVENTS, reducer=apply_order, **kw)


def test_append_script_includes_mutate_once():
    source = ScriptLibrary().get("append").source
    assert "local function mutate(KEYS, ARGV)" in source
    assert "-- @include" not in source and "-- @library" not in source
    assert source.count("local function check_all(") == 1  # the write path itself, not a copy
    assert source.index("local function check_all(") < source.index("local function mutate(")  # in its scope


def test_old_events_are_upcast_on_read(rx_fake_store):
    old = rx_fake_store.events(
        "orders", state=Order, events=[Placed, PaidV1, Shipped, Cancelled], reducer=apply_order_v1
    )
    old.append("o1", [Placed(sku="a", qty=1), PaidV1(amount=12.5)])
    stored = old.history("o1")[1]
    assert (stored.type, stored.schema_version) == ("Paid", 1)

    other = rxstate.connect(rx_fake_store.client, namespace=rx_fake_store.namespace)  # newer code
    new = open_orders(other)
    hist = new.history("o1")
    assert hist[1].event == Paid(amount_cents=1250) and hist[1].schema_version == 1
    new.append("o1", [Paid(amount_cents=50)])
    assert new.history("o1")[2].schema_version == 2
    assert new.load("o1").value == Order(status="paid", items=1, paid_cents=1300)
    with pytest.raises(SchemaError):  # the old code cannot read the newer event
        old.history("o1")


def test_stored_type_unknown_to_the_code_is_a_schema_error(rx_fake_store):
    wide = open_orders(rx_fake_store)
    wide.append("o1", [Placed(sku="a", qty=1), Shipped(carrier="dhl")])
    narrow_store = rxstate.connect(rx_fake_store.client, namespace=rx_fake_store.namespace)
    narrow = narrow_store.events("orders", state=Order, events=[Placed, Paid], reducer=apply_order)
    with pytest.raises(SchemaError, match="Shipped"):
        narrow.load("o1")


@pytest.mark.parametrize("every", [1, 2, 3, 5])
def test_snapshot_correct_at_every_boundary(rx_fake_store, every):
    counters = rx_fake_store.events(
        "counters", state=Counter, events=[Added, Reset], reducer=apply_counter, snapshot_every=every
    )
    expected = [Counter()]
    batches = [[Added(n=1)], [Added(n=2), Added(n=3, tag="x")], [Reset()], [Added(n=4)] * 4, [Added(n=5, tag="y")]]
    for batch in batches:
        counters.append("c", batch)
        for e in batch:
            expected.append(apply_counter(expected[-1], e))
        loaded = counters.load("c")
        assert loaded.value == expected[-1] and loaded.version == len(expected) - 1
        snap = counters.last_snapshot("c")
        if loaded.version < every:
            assert snap is None
            continue
        assert snap is not None and snap.version <= loaded.version
        assert snap.state == expected[snap.version]
        assert loaded.version - snap.version < every
    for v in range(1, len(expected)):
        assert counters.replay("c", to_version=v).value == expected[v]
        assert counters.replay("c", to_version=v, use_snapshots=False).value == expected[v]


def test_snapshot_on_demand_and_none_automatic(rx_fake_store):
    counters = rx_fake_store.events(
        "counters", state=Counter, events=[Added], reducer=apply_counter, snapshot_every=None
    )
    counters.append("c", [Added(n=1)] * 7)
    assert counters.load("c").version == 7 and counters.last_snapshot("c") is None
    assert counters.snapshot("c") == 7
    snap = counters.last_snapshot("c")
    assert snap is not None and (snap.version, snap.state.total) == (7, 7)
    counters.append("c", [Added(n=2)])
    assert counters.load("c").value.total == 9  # snapshot + one event after it


class CounterV2(rxstate.Model):
    __version__ = 2
    __rxstate_name__ = "Counter"
    sum: int = 0
    count: int = 0
    last: str = ""

    @rxstate.upcaster(1)
    def _from_v1(data: dict) -> dict:
        data["sum"] = data.pop("total")
        return data


class CounterV2NoUpcaster(rxstate.Model):
    __version__ = 2
    sum: int = 0
    count: int = 0
    last: str = ""


def _apply_v2(state, event):
    if isinstance(event, Added):
        return type(state)(sum=state.sum + event.n, count=state.count + 1, last=event.tag or state.last)
    return type(state)(count=state.count + 1, last=state.last)


def test_older_schema_snapshot_is_upcast(rx_fake_store):
    v1 = rx_fake_store.events("counters", state=Counter, events=[Added, Reset], reducer=apply_counter, snapshot_every=4)
    v1.append("c", [Added(n=3)] * 5)
    assert v1.last_snapshot("c").schema_version == 1
    store2 = rxstate.connect(rx_fake_store.client, namespace=rx_fake_store.namespace)
    v2 = store2.events("counters", state=CounterV2, events=[Added, Reset], reducer=_apply_v2, snapshot_every=4)
    snap = v2.last_snapshot("c")
    assert snap is not None and snap.version == 5 and snap.state == CounterV2(sum=15, count=5)
    assert v2.load("c").value == CounterV2(sum=15, count=5)


def test_older_schema_snapshot_without_upcaster_is_ignored_and_rebuilt(rx_fake_store):
    v1 = rx_fake_store.events("counters", state=Counter, events=[Added, Reset], reducer=apply_counter, snapshot_every=4)
    v1.append("c", [Added(n=3)] * 5)
    # Poison the v1 snapshot: were it used, the total would be wrong.
    key = rx_fake_store.keyspace.snapshot("counters", "c", v1.partition("c"))
    rx_fake_store.client.hset(key, "total", "999")
    store2 = rxstate.connect(rx_fake_store.client, namespace=rx_fake_store.namespace)
    v2 = store2.events(
        "counters", state=CounterV2NoUpcaster, events=[Added, Reset], reducer=_apply_v2, snapshot_every=4
    )
    assert v2.last_snapshot("c") is None
    assert v2.load("c").value == CounterV2NoUpcaster(sum=15, count=5)  # replayed from the first event
    rebuilt = v2.last_snapshot("c")
    assert rebuilt is not None and (rebuilt.version, rebuilt.schema_version) == (5, 2)
    assert rx_fake_store.client.hget(key, "_sv") == b"2"


def test_why_follows_causation_across_streams(rx_fake_store):
    orders = open_orders(rx_fake_store)
    payments = rx_fake_store.events("payments", state=Counter, events=[Added], reducer=apply_counter)
    charge = payments.append("p1", [Added(n=500, tag="charge")], causation_id="cmd-pay", correlation_id="req-1")
    orders.append("o1", [Placed(sku="a", qty=1)], correlation_id="req-0")
    orders.append("o1", [Paid(amount_cents=500)], causation_id=charge.event_ids[0], correlation_id="req-1")
    orders.append("o1", [Shipped(carrier="ups")])
    why = orders.why("o1", "paid_cents")
    assert why.value == 500
    assert [(c.event.type, c.before, c.after) for c in why.changes] == [("Paid", 0, 500)]
    causes = why.last.causes
    assert isinstance(causes[0], rxstate.RecordedEvent) and causes[0].collection == "payments"
    assert causes[1] == "cmd-pay"
    status = orders.why("o1", "status")
    assert [c.event.type for c in status.changes] == ["Placed", "Paid", "Shipped"]
    assert "Paid" in repr(status) and "payments/p1#1 Added" in repr(why)
    with pytest.raises(ValidationError):
        orders.why("o1", "nope")


def test_queries_by_actor_type_time_and_timeline(rx_fake_store):
    planner = rxstate.connect(rx_fake_store.client, namespace=rx_fake_store.namespace, actor="agent:planner")
    billing = rxstate.connect(rx_fake_store.client, namespace=rx_fake_store.namespace, actor="agent:billing")
    op, ob = open_orders(planner), open_orders(billing)
    # across partitions, order is by server time (ms): keep the appends in distinct milliseconds
    op.append("o1", [Placed(sku="a", qty=1)])
    time.sleep(0.003)
    op.append("o2", [Placed(sku="b", qty=2)])
    time.sleep(0.005)
    mid = int(time.time() * 1000)
    time.sleep(0.005)
    ob.append("o1", [Paid(amount_cents=100)])
    time.sleep(0.003)
    ob.append("o2", [Cancelled(reason="dup")])
    assert [e.aggregate_id for e in op.query(actor="agent:planner")] == ["o1", "o2"]
    assert [e.type for e in op.query(type=[Paid, "Cancelled"])] == ["Paid", "Cancelled"]
    assert [e.type for e in op.query(since=mid)] == ["Paid", "Cancelled"]
    assert [e.type for e in op.query(until=mid)] == ["Placed", "Placed"]
    assert len(op.query(limit=3)) == 3
    everything = planner.event_log().query(actor="agent:billing")
    assert {e.collection for e in everything} == {"orders"} and len(everything) == 2
    tl = op.timeline("o1")
    text = repr(tl)
    assert text.splitlines()[0] == "<Timeline orders/o1: 2 events>"
    assert "agent:planner" in text and "amount_cents=100" in text and len(tl) == 2
    assert repr(planner.event_log().timeline(type="Cancelled")).count("\n") == 1


def test_event_validation_errors(rx_fake_store):
    orders = open_orders(rx_fake_store)
    with pytest.raises(ValidationError):
        orders.append("bad\nid", [Placed(sku="a", qty=1)])
    with pytest.raises(ValidationError):
        orders.append("o1", Placed(sku="a", qty=1))  # not a list
    with pytest.raises(ValidationError):
        orders.append("o1", [Placed(sku="a", qty=1)], expected_version=-1)
    with pytest.raises(ValidationError):
        orders.append("o1", [Placed(sku="a", qty=1)], vector_clock={"n": -1})
    with pytest.raises(ValidationError):
        orders.append("o1", [Placed(sku="a", qty=1)], causation_id=5)
    assert orders.version("o1") == 0
    with pytest.raises(SchemaError):
        rx_fake_store.events("orders", state=Counter, events=[Added], reducer=apply_counter)


def test_reducer_returning_wrong_type_is_refused(rx_fake_store):
    bad = rx_fake_store.events(
        "bad", state=Counter, events=[Added], reducer=lambda s, e: {"total": 1}, project_to="bad_view"
    )
    with pytest.raises(ValidationError, match="reducer returned dict"):
        bad.append("x", [Added(n=1)])
    assert bad.version("x") == 0


def test_a_corrupt_stored_event_is_named(rx_fake_store):
    counters = rx_fake_store.events("counters", state=Counter, events=[Added], reducer=apply_counter)
    counters.append("c", [Added(n=1)])
    meta = b'["x","me",null,"x",2,null]'
    rx_fake_store.client.xadd(counters.key("c"), {"y": "Added", "s": "1", "d": '{"n":"many"}', "m": meta})
    with pytest.raises(rxstate.errors.CorruptDataError, match="Added"):
        counters.replay("c", use_snapshots=False)


def test_state_at_a_point_in_time(rx_fake_store):
    counters = rx_fake_store.events(
        "counters", state=Counter, events=[Added, Reset], reducer=apply_counter, snapshot_every=2
    )
    before = int(time.time() * 1000) - 5
    counters.append("c", [Added(n=1), Added(n=2)])
    time.sleep(0.005)
    mid = int(time.time() * 1000)
    time.sleep(0.005)
    counters.append("c", [Added(n=10), Added(n=20)])  # snapshot at version 4, after `mid`
    assert counters.last_snapshot("c").version == 4
    at_mid = counters.state_at("c", time=mid)
    assert (at_mid.version, at_mid.value.total) == (2, 3)
    assert counters.state_at("c", time=mid / 1000.0).value.total == 3  # seconds as a float
    from datetime import UTC, datetime

    now = datetime.now(tz=UTC)
    assert counters.state_at("c", time=now).value.total == 33
    with pytest.raises(rxstate.NotFound):
        counters.state_at("c", time=before)


class Account(rxstate.Model):
    owner: str
    balance: int = 0


class Opened(rxstate.Model):
    owner: str


class Deposited(rxstate.Model):
    amount: int


def apply_account(state: Account | None, event) -> Account:
    if isinstance(event, Opened):
        if state is not None:
            raise ValueError("already open")
        return Account(owner=event.owner)
    if state is None:
        raise ValueError("not open")
    return state.model_copy(update={"balance": state.balance + event.amount})


def test_state_without_defaults_starts_from_none(rx_fake_store):
    accounts = rx_fake_store.events(
        "accounts", state=Account, events=[Opened, Deposited], reducer=apply_account, project_to="account_view"
    )
    assert accounts.initial is None
    with pytest.raises(ValidationError, match="not open"):
        accounts.append("a1", [Deposited(amount=5)])
    accounts.append("a1", [Opened(owner="ann"), Deposited(amount=5)], expected_version=0)
    assert accounts.load("a1").value == Account(owner="ann", balance=5)
    with pytest.raises(ValidationError, match="already open"):
        accounts.append("a1", [Opened(owner="bob")])
    assert accounts.version("a1") == 2
    seeded = rxstate.connect(rx_fake_store.client, namespace=rx_fake_store.namespace).events(
        "accounts", state=Account, events=[Opened, Deposited], reducer=apply_account, initial=Account(owner="?")
    )
    assert seeded.initial == Account(owner="?")


def test_category_reads_past_long_runs_of_other_collections(rx_fake_store):
    store = rxstate.connect(rx_fake_store.client, namespace=rx_fake_store.namespace + "one", partitions=1)
    noise = store.events("noise", state=Counter, events=[Added], reducer=apply_counter, snapshot_every=None)
    orders = open_orders(store)
    orders.append("o1", [Placed(sku="a", qty=1)])
    for _ in range(5):
        noise.append("n", [Added(n=1)] * 500)  # more than one read batch of other events
    orders.append("o2", [Placed(sku="b", qty=1)])
    seen = []
    proj = orders.project("only-orders", seen.append)
    assert proj.run() == 2
    assert [e.aggregate_id for e in seen] == ["o1", "o2"]
    sub = orders.subscribe(after="start")
    got = []
    while batch := sub.poll():
        got += batch
    assert [e.aggregate_id for e in got] == ["o1", "o2"]


class Login(rxstate.Model):
    user: str
    token: rxstate.Secret[str]


class Session(rxstate.Model):
    user: str = ""
    token: rxstate.Secret[str] | None = None


def test_secret_fields_survive_log_snapshot_and_projection(rx_fake_store):
    logins = rx_fake_store.events(
        "logins", state=Session, events=[Login], reducer=lambda s, e: Session(user=e.user, token=e.token),
        snapshot_every=1, project_to="session_view",
    )  # fmt: skip
    logins.append("u1", [Login(user="ann", token="sk-123")])
    assert logins.history("u1")[0].event.token.get_secret_value() == "sk-123"
    assert "sk-123" not in repr(logins.history("u1")[0])
    assert logins.load("u1").value.token.get_secret_value() == "sk-123"
    assert logins.last_snapshot("u1").state.token.get_secret_value() == "sk-123"
    assert rx_fake_store.collection("session_view", Session).get("u1").token.get_secret_value() == "sk-123"


@pytest.mark.parametrize("project_to", [None, "counter_view"])
@pytest.mark.parametrize("cache_size", [0, 1024])
def test_processes_appending_in_turn_see_each_others_events(rx_fake_store, cache_size, project_to):
    def open_in_new_process():
        store = rxstate.connect(rx_fake_store.client, namespace=rx_fake_store.namespace)
        return store.events(
            "counters", state=Counter, events=[Added], reducer=apply_counter, snapshot_every=3,
            cache_size=cache_size, project_to=project_to,
        )  # fmt: skip

    a, b = open_in_new_process(), open_in_new_process()
    total = 0
    for i in range(1, 12):
        writer, reader = (a, b) if i % 2 else (b, a)
        v = writer.load("c").version if i > 1 else 0
        writer.append("c", [Added(n=i)] * (i % 3 + 1), expected_version=v)
        total += i * (i % 3 + 1)
        assert reader.load("c").value.total == total
        assert writer.load("c").value.total == total
        writer.append("c", [Added(n=0)])  # unchecked, on a state the other process may have moved
        assert reader.append("c", [Added(n=0)]).version == writer.version("c")
    assert a.replay("c", use_snapshots=False).value == b.load("c").value
    if project_to:
        assert rx_fake_store.collection(project_to, Counter).get("c") == a.load("c").value


def test_a_rebuilt_stream_is_not_served_from_local_state(rx_fake_store):
    counters = rx_fake_store.events("counters", state=Counter, events=[Added], reducer=apply_counter, snapshot_every=2)
    counters.append("c", [Added(n=1)] * 3)
    assert counters.load("c").value.total == 3
    p, ks = counters.partition("c"), rx_fake_store.keyspace
    rx_fake_store.client.delete(ks.event_stream("counters", "c", p), ks.snapshot("counters", "c", p))
    rx_fake_store.client.hdel(ks.stream_versions("counters", p), "c")
    other = rxstate.connect(rx_fake_store.client, namespace=rx_fake_store.namespace).events(
        "counters", state=Counter, events=[Added], reducer=apply_counter, snapshot_every=2
    )
    time.sleep(0.002)
    other.append("c", [Added(n=100)] * 4)
    assert counters.load("c").value.total == 400
