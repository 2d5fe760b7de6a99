"""``Collection``: the kernel collection with the views of the layers above it (watching, pictures)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from reactivex import Observable

from rxstate.core.model import Model
from rxstate.feed.change import Change
from rxstate.feed.delivery import Overflow
from rxstate.notebook._plots import plot_field
from rxstate.reactive.watch import watch, watch_all
from rxstate.store import collection

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Collection"]

M = TypeVar("M", bound=Model)


class Collection(collection.Collection[M]):
    """A collection of ``model`` entities: reads, writes, queries (the kernel), and watching.

    Open one with ``store.collection(name, Model)``.

    Example:
        >>> agents = store.collection("agents", Agent, indexes=["status"])  # doctest: +SKIP
        >>> agents.watch("a1").subscribe(print)  # doctest: +SKIP
    """

    def plot(self, field: str, **options: Any) -> Figure:
        """The distribution of a field's values as a matplotlib figure (needs matplotlib).

        Example:
            >>> agents.plot("status").savefig("status.png")  # doctest: +SKIP
        """
        return plot_field(self, field, **options)

    # -- reactive: watching ------------------------------------------------------------------------
    def watch(
        self,
        entity_id: str,
        *,
        partition: str | None = None,
        scheduler: Any = None,
        loop: Any = None,
        max_buffer: int = 1000,
        overflow: Overflow = "coalesce",
    ) -> Observable[Change]:
        """An ``Observable`` of one entity's changes: its current value first (op ``snapshot``), then
        every change (``delete``/``expire`` when it goes away), each with the full new ``value``.

        Example:
            >>> agents.watch("a1").subscribe(lambda c: print(c.op, c.value))  # doctest: +SKIP
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
        scheduler: Any = None,
        loop: Any = None,
        max_buffer: int = 10_000,
        overflow: Overflow = "coalesce",
    ) -> Observable[Change]:
        """An ``Observable`` of the collection (or the entities matching ``where`` on indexed fields):
        one ``snapshot`` change per current entity, then every change; an entity that stops matching
        ``where`` emits a ``leave`` change.

        Example:
            >>> agents.watch_all(where={"status": "busy"}).subscribe(print)  # doctest: +SKIP
        """
        return watch_all(
            self,
            where=where,
            scheduler=scheduler,
            loop=loop,
            max_buffer=max_buffer,
            overflow=overflow,
        )
