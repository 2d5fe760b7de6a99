"""Derived values: ``fn()`` recomputed glitch-free whenever what it read changes.

A ``Derived`` value records what ``fn`` read (``rxstate.core.tracking``) on every run; its graph
(``rxstate.reactive.graph``) decides when it runs again. The propagation is push-pull: a batch marks
the derived values that read a changed entity *dirty* and their dependents *check*; each is then
brought up to date by first updating its parents, and recomputes only if one of those really changed.
A read of a stale parent during a recomputation updates that parent first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from threading import get_ident
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from reactivex import Observable, abc
from reactivex.disposable import Disposable
from reactivex.scheduler import ImmediateScheduler

from rxstate.core import display, tracking
from rxstate.core.errors import CycleError
from rxstate.core.redaction import short
from rxstate.feed.mailbox import DeliveryMetrics, Mailbox, scheduler_runner

if TYPE_CHECKING:
    from rxstate.reactive.graph import DerivedGraph

__all__ = ["Derived"]

log = logging.getLogger("rxstate.reactive")
T = TypeVar("T")

# The states of a derived value during a propagation (its graph sets them too).
CLEAN, CHECK, DIRTY, COMPUTING = 0, 1, 2, 3
_MISSING: Any = object()


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
        self._state = DIRTY
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
        if self._state != CLEAN or (busy and busy != get_ident()):
            with self._graph._lock:  # another thread's propagation finishes first
                if self._state == COMPUTING:  # ... so this one is computing it: a loop
                    raise CycleError(f"derived value {self.name!r} reads itself", names=[self.name])
                self._update()
        if self.error is not None:
            raise self.error
        return self._value  # type: ignore[no-any-return]

    # -- propagation --------------------------------------------------------------------------------
    def _update(self) -> None:
        """Bring this value up to date: update parents first, recompute if one changed."""
        if self._state == CHECK:
            for parent in self._parents:
                parent._update()
                if self._state == DIRTY:
                    break
        if self._state == DIRTY:
            self._compute()
        if self._state != COMPUTING:
            self._state = CLEAN

    def _compute(self) -> None:
        self._state = COMPUTING
        reads, token = tracking.begin()
        try:
            value = self._fn()
            error = None
        except CycleError as exc:
            exc.names.append(self.name)
            self._state = DIRTY
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
        self._state = CLEAN
        if changed:
            self._changed = True
            for child in self._children:
                child._state = DIRTY

    def _mark(self, dirty: list[Derived[Any]]) -> None:
        for child in self._children:
            if child._state == CLEAN:
                child._state = CHECK
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
