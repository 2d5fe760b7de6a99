"""The graph of a store's derived values: which value read what, and the propagation of change batches.

Derived values recompute only when a change touches one of their reads, at most once per change batch,
and subscribers hear of new values only after every derived value of the batch is up to date, so nobody
ever sees old and new inputs mixed (no glitch).
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterable
from threading import get_ident
from typing import TYPE_CHECKING, Any, TypeVar

from reactivex import abc

from rxstate.core import tracking
from rxstate.core.errors import CycleError, ValidationError
from rxstate.feed.change import REMOVALS, Change
from rxstate.feed.mailbox import DeliveryMetrics
from rxstate.feed.subscription import Subscription, shared_feed
from rxstate.reactive.derived import CLEAN, DIRTY, Derived

if TYPE_CHECKING:
    from rxstate.store.store import Store

__all__ = ["DerivedGraph", "StoreGraph", "store_graph"]

log = logging.getLogger("rxstate.reactive")
T = TypeVar("T")

_names = itertools.count(1)


class DerivedGraph:
    """The derived values of a store and the propagation of changes through them.

    ``apply(changes)`` runs one propagation: every affected derived value recomputes at most once, in
    dependency order, and subscribers are notified after all of them are up to date. A store owns one
    (``store.derived``); a graph also works alone, fed by hand, which is how its speed is measured.

    Example:
        >>> graph = DerivedGraph()
        >>> data = {"a": 1}
        >>> def read_a():
        ...     tracking.track("t", "a")
        ...     return data["a"]
        >>> double = graph.derived(lambda: read_a() * 2)
        >>> data["a"] = 5
        >>> graph.apply([Change("t", "a", "update", 2, {})])
        >>> double.value
        10
    """

    def __init__(self, *, dispatcher: Callable[[], Any] | None = None) -> None:
        self._lock = threading.RLock()
        self._by_entity: dict[tuple[str, str], dict[Derived[Any], frozenset[str] | None]] = {}
        self._by_collection: dict[str, dict[Derived[Any], frozenset[str] | None]] = {}
        self._nodes: dict[Derived[Any], None] = {}
        self._dispatcher_factory = dispatcher
        self._own_dispatcher: Any = None
        self.metrics = DeliveryMetrics()
        self.errors = 0
        self.propagations = 0
        self._busy = 0
        self._failed: set[Derived[Any]] = set()  # values whose last run raised: retried each batch

    def dispatcher(self) -> Any:
        if self._dispatcher_factory is not None:
            return self._dispatcher_factory()
        if self._own_dispatcher is None:
            from rxstate.feed.dispatcher import Dispatcher

            self._own_dispatcher = Dispatcher(metrics=self.metrics, name="rxstate-derived")
        return self._own_dispatcher

    def values(self) -> list[Derived[Any]]:
        """The live (not disposed) derived values, in creation order.

        Example:
            >>> graph = DerivedGraph()
            >>> one = graph.derived(lambda: 1, name="one")
            >>> [d.name for d in graph.values()]
            ['one']
        """
        with self._lock:
            return list(self._nodes)

    def derived(self, fn: Callable[[], T], *, name: str | None = None) -> Derived[T]:
        """A new derived value computing ``fn()`` now and whenever what it read changes.

        Raises:
            CycleError: ``fn`` reads a derived value that (indirectly) reads this one.
            ValidationError: ``fn`` is not callable.

        Example:
            >>> graph = DerivedGraph()
            >>> double = graph.derived(lambda: 2 * 21, name="double")
            >>> total = graph.derived(lambda: double.value + 1, name="total")
            >>> total.value, total.parents == {double}
            (43, True)
        """
        if not callable(fn):
            raise ValidationError(f"derived needs a function of no arguments, not {fn!r}")
        if name is None:
            fname = getattr(fn, "__name__", "")
            name = fname if fname and fname != "<lambda>" else f"derived-{next(_names)}"
        node: Derived[T] = Derived(self, fn, name)
        with self._lock:
            node._compute()
            node._changed = False
            self._nodes[node] = None
        return node

    def _rewire(
        self,
        node: Derived[Any],
        entities: dict[tuple[str, str], frozenset[str] | None],
        parents: tuple[Derived[Any], ...],
    ) -> None:
        if parents != node._parents:
            for parent in parents:
                if parent is node or node in _ancestors(parent):
                    raise CycleError(
                        f"derived value {node.name!r} reads {parent.name!r}, which depends on it",
                        names=[node.name, parent.name],
                    )
            for parent in node._parents:
                parent._children.discard(node)
            for parent in parents:
                parent._children.add(node)
            node._parents = parents
        if entities != node._entities:
            for key in node._entities:
                self._unindex(node, key)
            for key, fields in entities.items():
                if key[1] == tracking.ALL:
                    self._by_collection.setdefault(key[0], {})[node] = fields
                else:
                    self._by_entity.setdefault(key, {})[node] = fields
            node._entities = entities

    def _unindex(self, node: Derived[Any], key: tuple[str, str]) -> None:
        index: dict[Any, dict[Derived[Any], Any]] = self._by_collection if key[1] == tracking.ALL else self._by_entity
        ikey = key[0] if key[1] == tracking.ALL else key
        readers = index.get(ikey)
        if readers is not None:
            readers.pop(node, None)
            if not readers:
                del index[ikey]

    def _remove(self, node: Derived[Any]) -> None:
        with self._lock:
            if node.disposed:
                return
            node.disposed = True
            self._nodes.pop(node, None)
            self._failed.discard(node)
            for key in node._entities:
                self._unindex(node, key)
            for parent in node._parents:
                parent._children.discard(node)
            boxes, node._boxes = node._boxes, []
        for box in boxes:
            box.close()

    def affected(self, changes: Iterable[Change]) -> set[Derived[Any]]:
        """The derived values that read something one of ``changes`` touched."""
        hit: set[Derived[Any]] = set()
        by_entity, by_collection = self._by_entity, self._by_collection
        for c in changes:
            readers = by_entity.get((c.collection, c.id))
            if readers:
                for node, fields in readers.items():
                    if (
                        fields is None
                        or c.op in REMOVALS
                        or c.op in ("create", "replace")
                        or not fields.isdisjoint(c.fields)
                    ):
                        hit.add(node)
            readers = by_collection.get(c.collection)
            if readers:
                membership = c.op in ("create", "delete", "expire")
                for node, fields in readers.items():
                    if fields is None or membership or not fields.isdisjoint(c.fields):
                        hit.add(node)
        return hit

    def apply(self, changes: Iterable[Change]) -> None:
        """Propagate one batch of changes through the derived values (see the class docstring).

        Example:
            >>> graph, data = DerivedGraph(), {"n": 1}
            >>> def read_n():
            ...     tracking.track("t", "a", ["n"])
            ...     return data["n"]
            >>> n = graph.derived(read_n)
            >>> data["n"] = 2
            >>> graph.apply([Change("t", "a", "update", 3, {"other": 1})])  # touches no field n read
            >>> n.value, n.computations
            (1, 1)
            >>> graph.apply([Change("t", "a", "update", 4, {"n": 2})])
            >>> n.value, n.computations
            (2, 2)
        """
        with self._lock:
            hit = self.affected(changes)
            if self._failed:
                hit |= self._failed
            if hit:
                self._propagate(hit)

    def _propagate(self, hit: set[Derived[Any]]) -> None:
        self.propagations += 1
        self._busy = get_ident()
        try:
            self._run(hit)
        finally:
            self._busy = 0

    def _run(self, hit: set[Derived[Any]]) -> None:
        stale: list[Derived[Any]] = []
        for node in hit:
            node._state = DIRTY
            stale.append(node)
        for node in hit:
            node._mark(stale)
        for node in stale:
            if node._state != CLEAN:
                try:
                    node._update()
                except CycleError as exc:
                    node.error = exc
                    node._state = CLEAN
                    log.warning("%s", exc)
                    for box in node._boxes:
                        box._fail(exc, False)
        for node in stale:
            if node._changed:
                node._changed = False
                node._notify()

    def close(self) -> None:
        """Dispose every derived value."""
        for node in self.values():
            node.dispose()
        if self._own_dispatcher is not None:
            self._own_dispatcher.close()


def _ancestors(node: Derived[Any]) -> set[Derived[Any]]:
    seen: set[Derived[Any]] = set()
    todo = list(node._parents)
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.add(p)
            todo.extend(p._parents)
    return seen


class StoreGraph(DerivedGraph):
    """A store's derived values, fed by its change feed (one propagation per change batch)."""

    def __init__(self, store: Store) -> None:
        feed = shared_feed(store)
        super().__init__(dispatcher=lambda: feed.dispatcher)
        self.metrics = feed.metrics_data
        self._store = store
        self._sub: Subscription | None = None
        self._feed = feed

    def derived(self, fn: Callable[[], T], *, name: str | None = None) -> Derived[T]:
        with self._lock:
            if self._sub is None:
                # Follow the feed before the first computation, so no change after it is missed.
                observer = _CallbackObserver(self.apply, lambda exc: log.error("derived values: %r", exc))
                self._sub = Subscription(
                    self._feed,
                    observer,
                    test=None,
                    keep=None,
                    batched=True,
                    max_buffer=100_000,
                    overflow="coalesce",
                    schedule=None,
                )
                self._feed.attach(self._sub.box)
        return super().derived(fn, name=name)

    def close(self) -> None:
        super().close()
        if self._sub is not None:
            self._feed.detach(self._sub.box)


class _CallbackObserver(abc.ObserverBase[Any]):
    def __init__(self, on_next: Callable[[Any], None], on_error: Callable[[Exception], None]) -> None:
        self._next = on_next
        self._error = on_error

    def on_next(self, value: Any) -> None:
        self._next(value)

    def on_error(self, error: Exception) -> None:
        self._error(error)

    def on_completed(self) -> None:
        return None


def store_graph(store: Store) -> StoreGraph:
    """The store's derived-value graph (created on first use, closed by ``store.close()``)."""
    return store.service(StoreGraph, lambda: StoreGraph(store), StoreGraph.close)
