"""Event types, states and reducers shared by the event-sourcing tests."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

import rxstate


class Placed(rxstate.Model):
    sku: str
    qty: int = Field(ge=1)


class Paid(rxstate.Model):
    __version__ = 2
    amount_cents: int = Field(ge=0)
    method: str = "card"

    @rxstate.upcaster(1)
    def _from_v1(data: dict) -> dict:
        # v1 stored a float amount in currency units
        return {"amount_cents": round(data.pop("amount") * 100), **data}


class PaidV1(rxstate.Model):
    """How ``Paid`` looked in schema v1 (stored under the same name)."""

    __rxstate_name__ = "Paid"
    amount: float


class Shipped(rxstate.Model):
    carrier: str


class Cancelled(rxstate.Model):
    reason: str = ""


class Order(rxstate.Model):
    status: Literal["new", "placed", "paid", "shipped", "cancelled"] = "new"
    items: int = 0
    paid_cents: int = 0
    carrier: str | None = None


ORDER_EVENTS = [Placed, Paid, Shipped, Cancelled]


def apply_order(state: Order, event: Any) -> Order:
    """The order reducer."""
    if isinstance(event, Placed):
        return state.model_copy(update={"status": "placed", "items": state.items + event.qty})
    if isinstance(event, Paid):
        if state.status == "cancelled":
            raise ValueError("a cancelled order cannot be paid")
        return state.model_copy(update={"status": "paid", "paid_cents": state.paid_cents + event.amount_cents})
    if isinstance(event, Shipped):
        return state.model_copy(update={"status": "shipped", "carrier": event.carrier})
    if isinstance(event, Cancelled):
        return state.model_copy(update={"status": "cancelled"})
    raise TypeError(f"unexpected event {event!r}")


def apply_order_v1(state: Order, event: Any) -> Order:
    """The reducer of code that still writes ``Paid`` v1."""
    if isinstance(event, PaidV1):
        return state.model_copy(update={"status": "paid", "paid_cents": state.paid_cents + round(event.amount * 100)})
    return apply_order(state, event)


class Counter(rxstate.Model):
    total: int = 0
    count: int = 0
    last: str = ""


class Added(rxstate.Model):
    n: int
    tag: str = ""


class Reset(rxstate.Model):
    pass


def apply_counter(state: Counter, event: Any) -> Counter:
    if isinstance(event, Added):
        return Counter(total=state.total + event.n, count=state.count + 1, last=event.tag or state.last)
    return Counter(count=state.count + 1, last=state.last)
