"""Derived values: ``fn()`` recomputed glitch-free whenever what it read changes.

Derived values track what they read (``rxstate.core.tracking``), recompute only when a change touches one of
those reads, at most once per change batch, and notify subscribers only after every derived value of
the batch is up to date, so nobody ever sees old and new inputs mixed (no glitch). The propagation is
push-pull: a batch marks the derived values that read a changed entity *dirty* and their dependents
*check*; each is then brought up to date by first updating its parents, and recomputes only if one of
those really changed. A read of a stale parent during a recomputation updates that parent first.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterable
from threading import get_ident
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from reactivex import Observable, abc
from reactivex.disposable import Disposable
from reactivex.scheduler import ImmediateScheduler

from rxstate.core import display, tracking
from rxstate.core.errors import CycleError, ValidationError
from rxstate.core.redaction import short
from rxstate.feed.change import REMOVALS, Change
from rxstate.feed.delivery import DeliveryMetrics, Mailbox, scheduler_runner
from rxstate.feed.subscription import Subscription, shared_feed

if TYPE_CHECKING:
    from rxstate.store.store import Store

__all__ = ["Derived", "DerivedGraph", "StoreGraph", "store_graph"]

log = logging.getLogger("rxstate.reactive")
T = TypeVar("T")

_CLEAN, _CHECK, _DIRTY, _COMPUTING = 0, 1, 2, 3
_MISSING: Any = object()
_names = itertools.count(1)


# -- derived values ---------------------------------------------------------------------------------


class Derived(Observable[T], Generic[T]):
    """A value computed from state, kept up to date as the state changes.

    Create one with ``store.derived(fn)``. Subscribing emits the current value, then each new value
    (an equal value is not emitted again).

    Attributes:
        name: a name for displays and errors.
        sources: the ``(collection, id)`` pairs the last computation read (id ``"*"``: which entities
            a collection holds, as read by ``all``/``ids``/``count``/``where``).
        parents: the derived values the last computation read.
        error: the exception of the last computation, if it failed (``value`` then raises it).
        computations: how many times ``fn`` ran.

    Example:
        >>> _ = agents.put("a1", Agent(name="planner", status="busy"))
        >>> busy = store.derived(lambda: sum(a.status == "busy" for a in agents.all()), name="busy")
        >>> busy.value, busy.sources
        (1, {('agents', '*')})
    """

    def __init__(self, graph: DerivedGraph, fn: Callable[[], T], name: str) -> None:
        super().__init__(self._subscribe)
        self.name = name
        self._graph = graph
        self._fn = fn
        self._value: Any = _MISSING
        self.error: Exception | None = None
        self._state = _DIRTY
        self._entities: dict[tuple[str, str], frozenset[str] | None] = {}
        self._parents: tuple[Derived[Any], ...] = ()
        self._children: set[Derived[Any]] = set()
        self._boxes: list[Mailbox[Any] | _Direct] = []
        self._changed = False
        self.computations = 0
        self.disposed = False

    def __repr__(self) -> str:
        shown = "<error>" if self.error is not None else short(self._value) if self._value is not _MISSING else "?"
        return f"<Derived {self.name!r} = {shown}>"

    def _repr_html_(self) -> str:
        return display.html(self)

    @property
    def sources(self) -> set[tuple[str, str]]:
        return set(self._entities)

    @property
    def parents(self) -> set[Derived[Any]]:
        return set(self._parents)

    @property
    def children(self) -> set[Derived[Any]]:
        """The derived values that read this one."""
        return set(self._children)

    @property
    def value(self) -> T:
        """The current value (read inside another derived value, it becomes that one's parent).

        Raises:
            Exception: whatever the last computation of ``fn`` raised.
        """
        tracking.note(self)
        busy = self._graph._busy  # the thread propagating, if any: others wait for it to finish
        if self._state != _CLEAN or (busy and busy != get_ident()):
            with self._graph._lock:  # another thread's propagation finishes first
                if self._state == _COMPUTING:  # ... so this one is computing it: a loop
                    raise CycleError(f"derived value {self.name!r} reads itself", names=[self.name])
                self._update()
        if self.error is not None:
            raise self.error
        return self._value  # type: ignore[no-any-return]

    # -- propagation --------------------------------------------------------------------------------
    def _update(self) -> None:
        """Bring this value up to date: update parents first, recompute if one changed."""
        if self._state == _CHECK:
            for parent in self._parents:
                parent._update()
                if self._state == _DIRTY:
                    break
        if self._state == _DIRTY:
            self._compute()
        if self._state != _COMPUTING:
            self._state = _CLEAN

    def _compute(self) -> None:
        self._state = _COMPUTING
        reads, token = tracking.begin()
        try:
            value = self._fn()
            error = None
        except CycleError as exc:
            exc.names.append(self.name)
            self._state = _DIRTY
            raise
        except Exception as exc:
            value, error = self._value, exc
            self._graph.errors += 1
            log.warning("derived value %r failed: %r", self.name, exc)
        finally:
            tracking.end(token)
        self.computations += 1
        # only Derived.value notes a source
        parents: tuple[Derived[Any], ...] = tuple(reads.sources) if reads.sources else ()  # type: ignore[arg-type]
        entities = reads.entities
        if error is not None:
            # A failed run may have stopped before reading everything: keep what it read before too,
            # and try again with the next batch (the failure may be a lost connection).
            entities = {**self._entities, **entities}
            parents = tuple(dict.fromkeys(self._parents + parents))
            self._graph._failed.add(self)
        elif self._graph._failed:
            self._graph._failed.discard(self)
        if parents != self._parents or entities != self._entities:
            self._graph._rewire(self, entities, parents)
        changed = (
            error is not None or self.error is not None or (value is not self._value and not _same(value, self._value))
        )
        self._value, self.error = value, error
        self._state = _CLEAN
        if changed:
            self._changed = True
            for child in self._children:
                child._state = _DIRTY

    def _mark(self, dirty: list[Derived[Any]]) -> None:
        for child in self._children:
            if child._state == _CLEAN:
                child._state = _CHECK
                dirty.append(child)
                child._mark(dirty)

    def _notify(self) -> None:
        if self.error is not None or not self._boxes:
            return
        batch = (self._value,)
        for box in self._boxes:
            if box.offer(batch):
                self._graph.dispatcher().submit([box])

    # -- observable ---------------------------------------------------------------------------------
    def _subscribe(
        self, observer: abc.ObserverBase[T], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        box: Mailbox[Any] | _Direct
        if isinstance(scheduler, ImmediateScheduler):  # asked for delivery inside the propagation
            box = _Direct(observer, self._graph.metrics)
        else:
            box = Mailbox(
                lambda batch: observer.on_next(batch[-1]),
                on_error=observer.on_error,
                metrics=self._graph.metrics,
                max_items=1,
                merge=lambda items: items[-1:],
                schedule=scheduler_runner(scheduler),
            )
        with self._graph._lock:
            if self.disposed:
                observer.on_completed()
                return Disposable()
            self._boxes = [*self._boxes, box]
            if self.error is None and self._value is not _MISSING and box.offer((self._value,)):
                self._graph.dispatcher().submit([box])

        def dispose() -> None:
            with self._graph._lock:
                self._boxes = [b for b in self._boxes if b is not box]
            box.close()

        return Disposable(dispose)

    def dispose(self) -> None:
        """Stop updating this value and complete its subscribers. Values that read it keep its last value.

        Example:
            >>> busy = store.derived(lambda: agents.count())
            >>> busy.dispose()
            >>> busy.disposed, store.derived_values()
            (True, [])
        """
        self._graph._remove(self)


class _Direct:
    """A derived value's subscriber called synchronously (``scheduler=ImmediateScheduler()``)."""

    __slots__ = ("dead", "metrics", "observer")

    def __init__(self, observer: abc.ObserverBase[Any], metrics: DeliveryMetrics) -> None:
        self.observer = observer
        self.metrics = metrics
        self.dead = False

    def offer(self, batch: tuple[Any, ...]) -> bool:
        if not self.dead:
            try:
                self.observer.on_next(batch[-1])
                self.metrics.delivered += 1
            except Exception as exc:
                self._fail(exc, True)
        return False

    def _fail(self, exc: Exception, counted: bool) -> None:
        self.dead = True
        if counted:
            self.metrics.subscriber_errors += 1
        try:
            self.observer.on_error(exc)
        except Exception as again:
            log.warning("subscriber failed: %r (its on_error raised %r)", exc, again)

    def close(self) -> None:
        self.dead = True


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:
        return False


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
            from rxstate.feed.delivery import Dispatcher

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
            node._state = _DIRTY
            stale.append(node)
        for node in hit:
            node._mark(stale)
        for node in stale:
            if node._state != _CLEAN:
                try:
                    node._update()
                except CycleError as exc:
                    node.error = exc
                    node._state = _CLEAN
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
