"""``Collection``: the kernel collection with the views of the layers above it (watching, pictures)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from reactivex import abc

from rxstate.core.model import Model
from rxstate.feed.change import Change
from rxstate.feed.mailbox import Overflow
from rxstate.feed.subscription import ChangeObservable
from rxstate.notebook._plots import plot_field
from rxstate.reactive.watch import watch, watch_all
from rxstate.store import collection

if TYPE_CHECKING:
    from asyncio import AbstractEventLoop

    from matplotlib.figure import Figure

__all__ = ["Collection"]

M = TypeVar("M", bound=Model)


class Collection(collection.Collection[M]):
    """A collection of ``model`` entities: reads, writes, queries (the kernel), and watching.

    Open one with ``store.collection(name, Model)``.

    Example:
        >>> agents = store.collection("agents", Agent, indexes=["status"])
        >>> agents.put("a1", Agent(name="planner")).version
        1
        >>> agents.get("a1").name
        'planner'
    """

    def plot(self, field: str, **options: Any) -> Figure:
        """The distribution of a field's values as a matplotlib figure (needs matplotlib).

        Example:
            >>> _ = agents.put_many({"a1": Agent(name="planner"), "a2": Agent(name="coder", status="busy")})
            >>> agents.plot("status").axes[0].get_title()
            'agents.status (2 entities)'
        """
        return plot_field(self, field, **options)

    # -- reactive: watching ------------------------------------------------------------------------
    def watch(
        self,
        entity_id: str,
        *,
        partition: str | None = None,
        scheduler: abc.SchedulerBase | None = None,
        loop: AbstractEventLoop | None = None,
        max_buffer: int = 1000,
        overflow: Overflow = "coalesce",
    ) -> ChangeObservable[Change]:
        """An ``Observable`` of one entity's changes: its current value first (op ``snapshot``), then
        every change (``delete``/``expire`` when it goes away), each with the full new ``value``.

        Example:
            >>> _ = agents.put("a1", Agent(name="planner"))
            >>> first = agents.watch("a1").pipe(rx.operators.first()).run()  # run: wait for it
            >>> first.op, first.value.name
            ('snapshot', 'planner')
        """
        return watch(
            self,
            entity_id,
            partition=partition,
            scheduler=scheduler,
            loop=loop,
            max_buffer=max_buffer,
            overflow=overflow,
        )

    def watch_all(
        self,
        *,
        where: Mapping[str, Any] | None = None,
        scheduler: abc.SchedulerBase | None = None,
        loop: AbstractEventLoop | None = None,
        max_buffer: int = 10_000,
        overflow: Overflow = "coalesce",
    ) -> ChangeObservable[Change]:
        """An ``Observable`` of the collection (or the entities matching ``where`` on indexed fields):
        one ``snapshot`` change per current entity, then every change; an entity that stops matching
        ``where`` emits a ``leave`` change.

        Example:
            >>> _ = agents.put_many({"a1": Agent(name="planner", status="busy"), "a2": Agent(name="coder")})
            >>> busy = agents.watch_all(where={"status": "busy"})
            >>> [(c.op, c.id) for c in busy.pipe(rx.operators.take(1), rx.operators.to_list()).run()]
            [('snapshot', 'a1')]
        """
        return watch_all(
            self,
            where=where,
            scheduler=scheduler,
            loop=loop,
            max_buffer=max_buffer,
            overflow=overflow,
        )
