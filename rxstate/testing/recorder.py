"""Recording what a store did: every read and write of its collections, with times, process and outcome.

``record(store)`` wraps a store; each collection it hands out records into one shared ``History``. An
operation's outcome follows from how the call ended (``outcome``): a return is ``ok``; an error that proves
nothing was written (a refused version check, a missing entity, bad input, a connection that could not
even be opened) is ``fail``; any other error — a connection lost mid-call, a timeout, ``UnknownOutcome`` —
is ``info``: the write may yet take effect. Reads that end in an error tell nothing and are dropped by the
checkers.

The classification is separate from the calls (``begin`` / ``finish``), so an asyncio front records the
same way: ``call = recorder.begin(...)``, ``await`` the operation, then ``recorder.finish(call, result or
exc)``.

Keys are ``"<collection>/<id>"``; values are the model's JSON form, reads carry the version they saw (the
``entity()`` model of ``rxstate.testing.linearizability`` checks them).

Example:
    >>> import fakeredis, rxstate
    >>> class Cell(rxstate.Model):
    ...     value: int = 0
    >>> store = record(rxstate.connect(fakeredis.FakeRedis(), cache=False), process="p1")
    >>> cells = store.collection("cells", Cell)
    >>> _ = cells.put("c", Cell(value=1))
    >>> cells.incr("c", "value", 2)
    3
    >>> [str(op) for op in store.history]  # doctest: +NORMALIZE_WHITESPACE
    ["p1: write(cells/c) {'value': {'value': 1}, 'expected': None} -> {'version': 1} [ok]",
     "p1: incr(cells/c) {'field': 'value', 'amount': 2, 'expected': None} -> 3 [ok]"]
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

import redis

from rxstate.core.errors import (
    ConflictError,
    IntegrityError,
    NotFound,
    PermissionDenied,
    ValidationError,
)
from rxstate.core.model import Model

from .linearizability import History, Pending

if TYPE_CHECKING:
    from rxstate.aio import AsyncStore

__all__ = ["Call", "RecordedCollection", "RecordedStore", "Recorder", "outcome", "record"]

M = TypeVar("M", bound=Model)
R = TypeVar("R")

# Refused before anything was written: the operation certainly did not take effect.
_REFUSED = (ConflictError, NotFound, IntegrityError, ValidationError, PermissionDenied)


def outcome(f: str, exc: BaseException) -> str:
    """``"fail"`` when ``exc`` proves the operation ``f`` took no effect, else ``"info"`` (unknown).

    A read that found nothing is no error at all: the caller records it as ``ok`` with output None.

    Example:
        >>> from rxstate.errors import ConflictError
        >>> outcome("update", ConflictError("stale")), outcome("write", TimeoutError())
        ('fail', 'info')
    """
    if isinstance(exc, _REFUSED):
        return "fail"
    if isinstance(exc, redis.ConnectionError) and "connecting to" in str(exc):
        return "fail"  # the connection was never opened: nothing was sent
    return "info"


class Call:
    """One recorded call in flight: the ``Pending`` entry plus how to turn its result into an output."""

    __slots__ = ("f", "output", "pending")

    def __init__(self, pending: Pending, f: str, output: Callable[[Any], Any]) -> None:
        self.pending, self.f, self.output = pending, f, output


class Recorder:
    """Records calls into ``history`` as ``process`` (threads may pass their own ``process``).

    Example:
        >>> rec = Recorder(History(), process="w1")
        >>> with rec.recording("add", "s", 1) as call:
        ...     call.ok()
        >>> rec.history.ops[0].status
        'ok'
    """

    def __init__(self, history: History, process: str) -> None:
        self.history = history
        self.process = process
        self._local = threading.local()

    @property
    def current_process(self) -> str:
        """The process name of the calling thread (``as_process`` sets it, else ``process``)."""
        name: str = getattr(self._local, "process", self.process)
        return name

    @contextmanager
    def as_process(self, name: str) -> Iterator[None]:
        """Record this thread's calls under ``name`` (an agent of its own) inside the block."""
        before = getattr(self._local, "process", None)
        self._local.process = name
        try:
            yield
        finally:
            if before is None:
                del self._local.process
            else:
                self._local.process = before

    def begin(self, f: str, key: str, value: Any = None, output: Callable[[Any], Any] = lambda r: r) -> Call:
        """Record an invocation now; pass the returned call to ``finish``."""
        return Call(self.history.invoke(f, key, value, process=self.current_process), f, output)

    def finish(self, call: Call, result: Any = None, error: BaseException | None = None) -> None:
        """Record how ``call`` ended: its result, or the error it raised."""
        if error is None:
            call.pending.ok(call.output(result))
        elif call.f == "read" and isinstance(error, NotFound):
            call.pending.ok(None)  # it read that nothing is there
        elif outcome(call.f, error) == "fail":
            call.pending.fail()
        else:
            call.pending.info()

    def run(self, f: str, key: str, value: Any, fn: Callable[[], R], output: Callable[[R], Any] = lambda r: r) -> R:
        """Run ``fn`` as one recorded operation and return (or raise) what it does."""
        call = self.begin(f, key, value, output)
        try:
            result = fn()
        except BaseException as exc:
            self.finish(call, error=exc)
            raise
        self.finish(call, result)
        return result

    @contextmanager
    def recording(self, f: str, key: str, value: Any = None) -> Iterator[Pending]:
        """Record an operation of your own: complete the yielded ``Pending`` with ``ok(output)``; an error
        leaving the block is classified by ``outcome`` (and raised on)."""
        pending = self.history.invoke(f, key, value, process=self.current_process)
        try:
            yield pending
        except BaseException as exc:
            if not pending.done:
                self.finish(Call(pending, f, lambda r: r), error=exc)
            raise
        if not pending.done:
            pending.info()


def _versioned(v: Any) -> dict[str, Any]:
    return {"version": v.version, "value": v.value.model_dump(mode="json")}


class RecordedCollection(Generic[M]):
    """A collection whose reads and writes are recorded; everything else passes through unrecorded.

    Example:
        >>> import fakeredis, rxstate
        >>> class Cell(rxstate.Model):
        ...     value: int = 0
        >>> cells = record(rxstate.connect(fakeredis.FakeRedis())).collection("cells", Cell)
        >>> cells.get_versioned("nope")
        Traceback (most recent call last):
        ...
        rxstate.core.errors.NotFound: ...
    """

    def __init__(self, collection: Any, recorder: Recorder) -> None:
        self.inner = collection
        self._rec = recorder
        self.name: str = collection.name

    def _key(self, entity_id: str) -> str:
        return f"{self.name}/{entity_id}"

    def get_versioned(self, entity_id: str, **kwargs: Any) -> Any:
        """``Collection.get_versioned``, recorded as a ``read`` of the value and its version."""
        return self._rec.run(
            "read", self._key(entity_id), None, lambda: self.inner.get_versioned(entity_id, **kwargs), _versioned
        )

    def get(self, entity_id: str, **kwargs: Any) -> M:
        """``Collection.get`` (through ``get_versioned``, so the read records its version)."""
        value: M = self.get_versioned(entity_id, **kwargs).value
        return value

    def put(self, entity_id: str, value: M, *, expected_version: int | None = None, **kwargs: Any) -> Any:
        """``Collection.put``, recorded as a ``write``."""
        written = {"value": value.model_dump(mode="json"), "expected": expected_version}
        return self._rec.run(
            "write",
            self._key(entity_id),
            written,
            lambda: self.inner.put(entity_id, value, expected_version=expected_version, **kwargs),
            lambda v: {"version": v.version},
        )

    def update(
        self,
        entity_id: str,
        fn: Callable[[M], M] | None = None,
        /,
        *,
        expected_version: int | None = None,
        **fields: Any,
    ) -> Any:
        """``Collection.update``: with fields an ``update``, with a function an ``rmw`` (its result recorded)."""
        if fn is not None:
            return self._rec.run(
                "rmw",
                self._key(entity_id),
                {"expected": expected_version},
                lambda: self.inner.update(entity_id, fn, expected_version=expected_version),
                _versioned,
            )
        plain = {k: v.model_dump(mode="json") if isinstance(v, Model) else v for k, v in fields.items()}
        return self._rec.run(
            "update",
            self._key(entity_id),
            {"fields": plain, "expected": expected_version},
            lambda: self.inner.update(entity_id, expected_version=expected_version, **fields),
            lambda v: {"version": v.version},
        )

    def incr(
        self, entity_id: str, field: str, amount: int = 1, *, expected_version: int | None = None, **kwargs: Any
    ) -> int:
        """``Collection.incr``, recorded as an ``incr`` whose output is the field's new value."""
        value = {"field": field, "amount": amount, "expected": expected_version}
        result: int = self._rec.run(
            "incr",
            self._key(entity_id),
            value,
            lambda: self.inner.incr(entity_id, field, amount, expected_version=expected_version, **kwargs),
        )
        return result

    def delete(self, entity_id: str, *, expected_version: int | None = None, **kwargs: Any) -> bool:
        """``Collection.delete``, recorded as a ``delete`` whose output says whether it existed."""
        existed: bool = self._rec.run(
            "delete",
            self._key(entity_id),
            {"expected": expected_version},
            lambda: self.inner.delete(entity_id, expected_version=expected_version, **kwargs),
        )
        return existed

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class RecordedStore:
    """A store whose collections record into ``history``; other attributes are the store's own.

    Example:
        >>> import fakeredis, rxstate
        >>> store = record(rxstate.connect(fakeredis.FakeRedis()), process="p1")
        >>> store.history.process
        'p1'
    """

    def __init__(self, store: Any, history: History, process: str) -> None:
        self.store = store
        self.history = history
        self.recorder = Recorder(history, process)
        self._collections: dict[str, RecordedCollection[Any]] = {}

    def collection(self, name: str, model: type[M], **kwargs: Any) -> RecordedCollection[M]:
        """``store.collection(...)``, recorded."""
        if name not in self._collections:
            self._collections[name] = RecordedCollection(self.store.collection(name, model, **kwargs), self.recorder)
        return self._collections[name]

    def recording(self, f: str, key: str, value: Any = None) -> Any:
        """Record an operation of your own (see ``Recorder.recording``)."""
        return self.recorder.recording(f, key, value)

    def as_process(self, name: str) -> Any:
        """Record this thread's calls as process ``name`` inside the block."""
        return self.recorder.as_process(name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


_RECORDED = frozenset({"get", "get_versioned", "put", "update", "incr", "delete"})


class AsyncRecordedCollection:
    """The asyncio form of ``RecordedCollection``: the same recorded methods, awaited.

    Each call runs the synchronous recorded method in the asyncio store's bridge (``AsyncStore.run``), so
    the times it records span the awaited server round trips; unrecorded attributes are the
    ``RecordedCollection``'s (and through it the kernel collection's).
    """

    def __init__(self, recorded: RecordedCollection[Any], astore: Any) -> None:
        self.recorded = recorded
        self._astore = astore

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.recorded, name)
        if name not in _RECORDED:
            return method

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self._astore.run(method, *args, **kwargs)

        call.__doc__ = method.__doc__
        return call


class AsyncRecordedStore:
    """An asyncio store (``rxstate.aio``) whose collections record into ``history``.

    Example:
        >>> import asyncio, fakeredis, rxstate, rxstate.aio
        >>> class Cell(rxstate.Model):
        ...     value: int = 0
        >>> async def main():
        ...     async with rxstate.aio.connect(fakeredis.FakeAsyncRedis()) as astore:
        ...         store = record(astore, process="task-1")
        ...         cells = await store.collection("cells", Cell)
        ...         await cells.put("c", Cell(value=1))
        ...         return [(op.f, op.status) for op in store.history.ops]
        >>> asyncio.run(main())
        [('write', 'ok')]
    """

    def __init__(self, astore: Any, history: History, process: str) -> None:
        self.astore = astore
        self.synchronous = RecordedStore(astore.sync, history, process)
        self.history = history

    async def collection(self, name: str, model: type[M], **kwargs: Any) -> AsyncRecordedCollection:
        """``await store.collection(...)``, recorded."""
        recorded = await self.astore.run(self.synchronous.collection, name, model, **kwargs)
        return AsyncRecordedCollection(recorded, self.astore)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.astore, name)


@overload
def record(store: AsyncStore, *, history: History | None = None, process: str | None = None) -> AsyncRecordedStore: ...
@overload
def record(store: Any, *, history: History | None = None, process: str | None = None) -> RecordedStore: ...
def record(
    store: Any, *, history: History | None = None, process: str | None = None
) -> RecordedStore | AsyncRecordedStore:
    """Wrap ``store`` so that every read and write of its collections is recorded.

    Args:
        store: an ``rxstate`` store, or an asyncio store of ``rxstate.aio`` (then the wrapper's
            ``collection`` and the recorded methods are awaited; see ``AsyncRecordedStore``).
        history: record into this one (several stores, one history: they merge); default a new one.
        process: the name its operations carry (default the history's).

    Example:
        >>> import fakeredis, rxstate
        >>> shared = History()
        >>> a = record(rxstate.connect(fakeredis.FakeRedis()), history=shared, process="a")
        >>> b = record(rxstate.connect(fakeredis.FakeRedis()), history=shared, process="b")
        >>> a.history is b.history
        True
    """
    from rxstate.aio import AsyncStore

    history = history if history is not None else History(process=process)
    if isinstance(store, AsyncStore):
        return AsyncRecordedStore(store, history, process or history.process)
    return RecordedStore(store, history, process or history.process)
