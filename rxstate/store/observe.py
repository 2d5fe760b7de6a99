"""The observation point of reads: the one place a collection's reads are timed, when someone listens.

Writes are observed where the Writer sends them (``Writer._send``/``_send_many``, see
``rxstate.store.writer``); reads through ``@observed(op)`` on the collection's read primitives. Listeners
(``rxstate.metrics``) register with ``Observers.of(store).add(listener)``; a store nobody listens to pays
one dictionary lookup per read.

Example:
    >>> seen = []
    >>> Observers.of(store).add(lambda op, collection, start_ns, seconds, error: seen.append((op, collection)))
    >>> _ = agents.get("a1", None)
    >>> seen
    [('get', 'agents')]
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from rxstate.store.store import Store

__all__ = ["Observers", "ReadListener", "observed"]

F = TypeVar("F", bound=Callable[..., Any])


class ReadListener(Protocol):
    """Called after each observed read: its op, collection, start (epoch ns), duration (s), and error."""

    def __call__(
        self, op: str, collection: str, start_ns: int, seconds: float, error: BaseException | None
    ) -> None: ...


class Observers:
    """The read listeners of one store (a store service)."""

    def __init__(self) -> None:
        self.listeners: tuple[ReadListener, ...] = ()

    @classmethod
    def of(cls, store: Store) -> Observers:
        """The store's listeners (made on first use)."""
        return store.service(cls, cls, lambda _o: None)

    def add(self, listener: ReadListener) -> None:
        """Call ``listener`` after every observed read of the store."""
        self.listeners = (*self.listeners, listener)

    def remove(self, listener: ReadListener) -> None:
        """Stop calling ``listener``."""
        self.listeners = tuple(x for x in self.listeners if x != listener)  # == : bound methods are made anew


def observed(op: str) -> Callable[[F], F]:
    """Decorate a read method of a collection (``self._store``, ``self.name``) as the read ``op``."""

    def decorate(method: F) -> F:
        @functools.wraps(method)
        def run(self: Any, *args: Any, **kwargs: Any) -> Any:
            watchers = self._store.running(Observers)
            if watchers is None or not watchers.listeners:
                return method(self, *args, **kwargs)
            start_ns, start = time.time_ns(), time.perf_counter()
            error: BaseException | None = None
            try:
                return method(self, *args, **kwargs)
            except BaseException as exc:
                error = exc
                raise
            finally:
                seconds = time.perf_counter() - start
                for listener in watchers.listeners:
                    listener(op, self.name, start_ns, seconds, error)

        return run  # type: ignore[return-value]

    return decorate
