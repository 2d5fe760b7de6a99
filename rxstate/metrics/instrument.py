"""Instrumenting a store: every write (at the Writer) and every read (at the collections' observation point)
is timed into ``rxstate_operation_seconds``, refused write calls are counted, and each operation can
become an OpenTelemetry span.

Example:
    >>> metrics = instrument(store)
    >>> _ = agents.put("a1", Agent(name="planner"))
    >>> _ = agents.get("a1")
    >>> sorted(op for kind, op, coll in metrics.operations())
    ['get', 'mutate']
    >>> metrics.close()
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from rxstate.core.errors import RxStateError
from rxstate.metrics.registry import ERRORS, LATENCY, StoreCollector
from rxstate.metrics.tracing import Spans
from rxstate.store.observe import Observers

if TYPE_CHECKING:
    from rxstate.store.store import Store

__all__ = ["Metrics", "instrument"]

COLLECTOR = StoreCollector()
"""The scrape-time figures of every instrumented store (registered in ``REGISTRY`` by the package)."""


class Metrics:
    """The instrumentation of one store; ``instrument(store)`` makes it, ``close()`` removes it."""

    def __init__(self, store: Store, *, spans: bool | None = None) -> None:
        self.store = store
        self.spans = Spans.make(spans)
        """The OpenTelemetry span emitter (None: no spans)."""
        self._seen: set[tuple[str, str, str]] = set()
        writer = store.writer
        self._send, self._send_many = writer._send, writer._send_many
        self._shadowing = "_send" in vars(writer)  # another observer's (replica reads) is restored on close
        # the Writer's two ways out are its documented observation point: shadow them on this instance
        writer._send = self._timed_send  # type: ignore[method-assign]
        writer._send_many = self._timed_send_many  # type: ignore[method-assign]
        Observers.of(store).add(self._read)
        COLLECTOR.add(store)

    def operations(self) -> list[tuple[str, str, str]]:
        """``(kind, op, collection)`` of every operation timed so far (a write's collection is ``""``)."""
        return sorted(self._seen)

    def close(self) -> None:
        """Stop observing the store (its recorded figures stay in the registry)."""
        writer = self.store.writer
        if writer._send == self._timed_send:
            if self._shadowing:
                writer._send, writer._send_many = self._send, self._send_many  # type: ignore[method-assign]
            else:
                del writer._send, writer._send_many  # the class's methods again
        running = self.store.running(Observers)
        if running is not None:
            running.remove(self._read)
        COLLECTOR.discard(self.store)

    # -- the observation points ---------------------------------------------------------------------
    def _observe(self, kind: str, op: str, collection: str, start_ns: int, seconds: float, error: Any) -> None:
        self._seen.add((kind, op, collection))
        LATENCY.labels(self.store.namespace, kind, op, collection).observe(seconds)
        if kind == "write" and isinstance(error, BaseException):
            ERRORS.labels(self.store.namespace, op, type(error).__name__).inc()
        if self.spans is not None:
            self.spans.emit(f"rxstate.{kind} {op}", start_ns, seconds, error, self.store.namespace, collection)

    def _read(self, op: str, collection: str, start_ns: int, seconds: float, error: BaseException | None) -> None:
        self._observe("read", op, collection, start_ns, seconds, error)

    def _timed(self, op: str, run: Callable[[], Any]) -> Any:
        start_ns, start = time.time_ns(), time.perf_counter()
        try:
            result = run()
        except BaseException as exc:
            self._observe("write", op, "", start_ns, time.perf_counter() - start, exc)
            raise
        self._observe("write", op, "", start_ns, time.perf_counter() - start, None)
        return result

    def _timed_send(self, script: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        return self._timed(script, lambda: self._send(script, keys, args))

    def _timed_send_many(self, calls: Sequence[tuple[str, Sequence[Any], Sequence[Any]]]) -> list[Any]:
        replies: list[Any] = self._timed(calls[0][0] if calls else "batch", lambda: self._send_many(calls))
        for (script, _keys, _args), reply in zip(calls, replies, strict=True):
            if isinstance(reply, RxStateError):  # refused in place: the round trip itself succeeded
                ERRORS.labels(self.store.namespace, script, type(reply).__name__).inc()
        return replies


def instrument(store: Store, *, spans: bool | None = None) -> Metrics:
    """Time every read and write of ``store`` into ``rxstate.metrics.REGISTRY`` (and as spans).

    Args:
        store: the store to observe.
        spans: also emit an OpenTelemetry span per operation (None: when ``opentelemetry-api`` is
            installed; True: require it).

    Raises:
        ImportError: ``spans=True`` without ``opentelemetry-api``.

    Example:
        >>> instrument(store).close()
    """
    return store.service(Metrics, lambda: Metrics(store, spans=spans), Metrics.close)
