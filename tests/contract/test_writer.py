"""Every write of a store goes through its Writer: no script runs on the server from anywhere else."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from rxstate.core.scripts import Script, ScriptLibrary
from rxstate.store.writer import Writer
from tests.event_models import ORDER_EVENTS, Order, Paid, Placed, apply_order
from tests.models import Agent


class _Seen:
    def __init__(self) -> None:
        self.inside = threading.local()
        self.through_writer: list[str] = []
        self.outside: list[str] = []


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Seen]:
    """Record every script call, and whether the Writer sent it."""
    record = _Seen()
    send, send_many = Writer._send, Writer._send_many
    run_script, pipeline = Script.__call__, ScriptLibrary._pipeline

    def wrapped_send(self: Writer, script: str, keys: Any, args: Any) -> Any:
        record.inside.on = True
        try:
            return send(self, script, keys, args)
        finally:
            record.inside.on = False

    def wrapped_send_many(self: Writer, calls: Any) -> list[Any]:
        record.inside.on = True
        try:
            return send_many(self, calls)
        finally:
            record.inside.on = False

    def note(names: list[str]) -> None:
        (record.through_writer if getattr(record.inside, "on", False) else record.outside).extend(names)

    def wrapped_call(self: Script, client: Any, keys: Any, args: Any) -> Any:
        note([self.name])
        return run_script(self, client, keys, args)

    def wrapped_pipeline(client: Any, calls: Any) -> list[Any]:
        note([call[0].name for call in calls])
        return pipeline(client, calls)  # type: ignore[call-arg]

    monkeypatch.setattr(Writer, "_send", wrapped_send)
    monkeypatch.setattr(Writer, "_send_many", wrapped_send_many)
    monkeypatch.setattr(Script, "__call__", wrapped_call)
    monkeypatch.setattr(ScriptLibrary, "_pipeline", staticmethod(wrapped_pipeline))
    yield record


def test_every_kind_of_write_goes_through_the_writer(rx_store: Any, seen: _Seen) -> None:
    agents = rx_store.collection("agents", Agent, indexes=["status"])
    agents.put("a1", Agent(name="x"))
    agents.create("a2", Agent(name="y"))
    agents.update("a1", status="busy", expected_version=1)
    agents.update("a1", lambda a: a.model_copy(update={"load": a.load + 1}))
    agents.incr("a1", "load", 2)
    agents.put("eph", Agent(name="short"), ttl=30)
    agents.delete("a2")
    with rx_store.batch() as batch:
        batch.put(agents, "b1", Agent(name="b1"))
        batch.update(agents, "a1", status="idle")
    with rx_store.batch(atomic=True) as batch:
        batch.put(agents, "b2", Agent(name="b2"))
    with rx_store.transaction() as tx:
        tx.update(agents, "a1", status="busy")
        tx.put(agents, "t1", Agent(name="t1"))
    with rx_store.transaction(two_phase=True) as tx:
        tx.put(agents, "p1", Agent(name="p1"))
        tx.put(agents, "p2", Agent(name="p2"))
    orders = rx_store.events(
        "orders", state=Order, events=ORDER_EVENTS, reducer=apply_order, snapshot_every=2, project_to="order_view"
    )
    orders.append("o1", [Placed(sku="a", qty=1)], expected_version=0)
    orders.append("o1", [Paid(amount_cents=5)], expected_version=1)
    projected = orders.project(
        "counts", lambda event, batch: batch.put(agents, event.aggregate_id, Agent(name="s")), atomic=True
    )
    projected.run()
    with rx_store.lock("printer", ttl=5):
        pass
    agents.reap()
    rx_store.resolve_transactions()
    kinds = {name.removesuffix("@once") for name in seen.through_writer}
    assert {"mutate", "txn", "append", "project", "lock", "reap", "tx_record", "snapshot"} <= kinds, kinds
    assert seen.outside == []
    # every write but the (idempotent) reaper carries a write id: it runs inside the exactly-once wrapper
    assert {name for name in seen.through_writer if not name.endswith("@once")} == {"reap"}
