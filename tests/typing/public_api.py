"""How the public entry points type-check in user code: ``tests/unit/test_typing.py`` runs mypy on this.

Nothing here runs; each ``assert_type`` states the precise type a call gives (mypy fails on any other).
"""

from __future__ import annotations

from typing import Any, assert_type

from matplotlib.figure import Figure

import rxstate
from rxstate.feed.subscription import ChangeObservable


class Agent(rxstate.Model):
    name: str
    load: int = 0


class Order(rxstate.Model):
    items: int = 0


class Placed(rxstate.Model):
    qty: int = 1


class Report(rxstate.Model):
    title: str
    body: str = rxstate.lazy(default="")
    token: rxstate.Secret[str] | None = rxstate.classified("secret", lazy=True, default=None)


def apply(state: Order | None, event: Any) -> Order:
    return (state or Order()).model_copy(update={"items": (state or Order()).items + event.qty})


def entry_points(store: rxstate.Store) -> None:
    agents = store.collection("agents", Agent)
    assert_type(agents, rxstate.Collection[Agent])
    assert_type(agents.get("a1"), Agent)
    assert_type(agents.put("a1", Agent(name="x")), rxstate.Versioned[Agent])
    assert_type(agents.watch("a1"), ChangeObservable[rxstate.Change])
    assert_type(agents.watch_all(where={"load": 1}), ChangeObservable[rxstate.Change])
    assert_type(agents.plot("load"), Figure)
    assert_type(store.changes(collection="agents"), ChangeObservable[rxstate.Change])
    assert_type(store.changes(batched=True), ChangeObservable[tuple[rxstate.Change, ...]])
    assert_type(store.derived(lambda: agents.count()), rxstate.Derived[int])
    assert_type(store.derived(lambda: agents.count()).value, int)
    assert_type(store.graph(), Figure)
    assert_type(store.change_feed, rxstate.ChangeFeed)
    orders = store.events("orders", state=Order, events=[Placed], reducer=apply)
    assert_type(orders, rxstate.EventCollection[Order])
    assert_type(orders.get("o1"), Order)
    assert_type(store.event_log(), rxstate.EventLog)
    reports = store.collection("reports", Report)
    reports.put("r1", Report(title="q3"))  # a lazy field has its default
    assert_type(reports.get("r1").body, str)
    assert_type(reports.get("r1").token, rxstate.Secret[str] | None)


async def iteration(store: rxstate.Store) -> None:
    async for change in store.changes().aiter():
        assert_type(change, rxstate.Change)
    async for batch in store.changes(batched=True).aiter():
        assert_type(batch, tuple[rxstate.Change, ...])
