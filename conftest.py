"""Test collection at the repository's root: the docstring examples of ``rxstate`` and the README's blocks.

The README's Python blocks are tests (plain ``pytest`` lists README.md in ``testpaths``); the rules (a
block starts afresh unless its first line says ``# continuing``) are in tests/docs/blocks.py.

The names that the docstring examples of ``rxstate`` use (``pytest`` runs them as doctests):

Each example gets a fresh store on its own fakeredis server, so examples neither share data nor
depend on their order:

- ``store``: ``rxstate.connect(fakeredis.FakeRedis())``; ``agents``, ``tasks``: its collections of
  ``Agent`` (indexed by ``status``) and ``Task``; ``orders``: an event collection of ``Order``
  aggregates, folded from ``Placed`` and ``Paid`` events by ``apply``.
- ``rxstate``, ``rx`` (``reactivex``), ``fakeredis``, ``datetime``, ``UTC``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import fakeredis
import pytest
import reactivex
from _pytest.doctest import DoctestItem

import rxstate
from tests.docs.blocks import markdown_sybil

pytest_collect_file = markdown_sybil(Path(__file__).parent, "README.md").pytest()


class Agent(rxstate.Model):
    name: str
    status: Literal["idle", "busy", "failed"] = "idle"
    load: int = 0
    skills: list[str] = []


class Task(rxstate.Model):
    title: str
    owner: str | None = None
    done: bool = False


class Order(rxstate.Model):
    status: Literal["new", "placed", "paid"] = "new"
    items: int = 0
    paid_cents: int = 0


class Placed(rxstate.Model):
    sku: str
    qty: int = 1


class Paid(rxstate.Model):
    amount_cents: int


def apply(state: Order | None, event: Any) -> Order:
    """The order reducer: ``(state, event) -> new state``."""
    state = state or Order()
    if isinstance(event, Placed):
        return state.model_copy(update={"status": "placed", "items": state.items + event.qty})
    return state.model_copy(update={"status": "paid", "paid_cents": state.paid_cents + event.amount_cents})


@pytest.fixture(autouse=True)
def _doctest_names(request: pytest.FixtureRequest) -> Iterator[None]:
    if not isinstance(request.node, DoctestItem):
        yield
        return
    namespace: dict[str, Any] = request.getfixturevalue("doctest_namespace")
    store = rxstate.connect(fakeredis.FakeRedis())
    namespace.update(
        rxstate=rxstate,
        rx=reactivex,
        fakeredis=fakeredis,
        datetime=datetime,
        UTC=UTC,
        Agent=Agent,
        Task=Task,
        Order=Order,
        Placed=Placed,
        Paid=Paid,
        apply=apply,
        store=store,
        agents=store.collection("agents", Agent, indexes=["status"]),
        tasks=store.collection("tasks", Task),
        orders=store.events("orders", state=Order, events=[Placed, Paid], reducer=apply),
    )
    yield
    store.close()
