"""Event-sourced collections on Redis streams.

Each aggregate has its own stream (``rx:{ns:p}:_es:<collection>:<id>``); every event is also written,
under the same stream id, to its partition's event log (``rx:{ns:p}:events``), which subscriptions
and queries read in order per partition. ``append`` is one call of ``append.lua``: it checks the
stream's version and adds the events; when the collection keeps a projection, the same call writes the
new state (computed here by the reducer) as an ordinary entity through ``mutate.lua``, so the log and
the state never disagree. State is rebuilt from the latest snapshot plus the events after it.

Example:
    >>> orders = store.events("orders", state=Order, events=[Placed, Paid], reducer=apply)
    >>> orders.append("o1", [Placed(sku="apple", qty=2)], expected_version=0).version
    1
    >>> orders.load("o1").value
    Order(status='placed', items=2, paid_cents=0)
"""

from __future__ import annotations

import json
import os
import random
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pydantic
from cachetools import LRUCache

from rxstate.core.errors import ConflictError, RxStateError, SchemaError, ValidationError
from rxstate.core.keys import validate_collection_name, validate_id
from rxstate.core.model import Model
from rxstate.core.waiting import pause
from rxstate.core.writes import WriteOp
from rxstate.events.replay import EventReplay
from rxstate.events.snapshots import Folded, Snapshots
from rxstate.events.types import _REGISTRY, _REGISTRY_LOCK, EventTypes, stream_id_ms
from rxstate.store.collection import Collection
from rxstate.store.writer import durable_option

if TYPE_CHECKING:
    from rxstate.store.store import Store

__all__ = ["AppendResult", "EventCollection", "open_event_collection"]

S = TypeVar("S", bound=Model)
_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class AppendResult(Generic[S]):
    """What an append did.

    Attributes:
        version: the stream's version after the append (its number of events).
        positions: stream id of each appended event.
        event_ids: the id given to each event.
        state: the new projected state (only for a collection that keeps a projection).
    """

    version: int
    positions: list[str]
    event_ids: list[str]
    state: S | None = None

    @property
    def timestamp_ms(self) -> int:
        """Server time of the append."""
        return stream_id_ms(self.positions[-1])


class EventCollection(EventReplay[S]):
    """An event-sourced collection: aggregates whose state is the fold of their events.

    Open one with ``store.events``. Each aggregate (by id) has an append-only stream of events; its
    state is ``reducer(reducer(initial, e1), e2) ...``.

    Example:
        >>> carts = store.events("carts", state=Order, events=[Placed, Paid], reducer=apply,
        ...                      snapshot_every=100, project_to="order_view")
        >>> _ = carts.append("o1", [Placed(sku="apple")])
        >>> store.collection("order_view", Order).get("o1").status  # written with the event
        'placed'
    """

    def __init__(
        self,
        store: Store,
        name: str,
        *,
        state: type[S],
        events: Sequence[type[Model]],
        reducer: Callable[[S | None, Any], S],
        snapshot_every: int | None = 100,
        project_to: str | None = None,
        initial: S | None = _MISSING,
        cache_size: int = 1024,
    ) -> None:
        self.name = validate_collection_name(name)
        if not (isinstance(state, type) and issubclass(state, Model)):
            raise SchemaError(
                f"event collection {name!r}: state {state!r} is not a subclass of rxstate.Model", name=name
            )
        if not callable(reducer):
            raise SchemaError(f"event collection {name!r}: reducer must be callable", name=name)
        if snapshot_every is not None and (
            isinstance(snapshot_every, bool) or not isinstance(snapshot_every, int) or snapshot_every < 1
        ):
            raise ValidationError(f"snapshot_every must be a positive int or None, not {snapshot_every!r}")
        self.state = state
        self.reducer = reducer
        self.snapshot_every = snapshot_every
        self.types = EventTypes(events, store.codec)
        if initial is _MISSING:
            try:
                initial = state()
            except pydantic.ValidationError:
                initial = None
        self.initial: S | None = initial
        self._store = store
        self._ks = store.keyspace
        self._snapshots: Snapshots[S] = Snapshots(store, self.name, state)
        # The last state this process computed of recently used aggregates: a load then reads only
        # the events after it, and an append extends it without reading (see _load, _after_append).
        self._recent: LRUCache[str, Folded[S]] | None = LRUCache(cache_size) if cache_size > 0 else None
        self._recent_lock = threading.Lock()
        self.projection: Collection[S] | None = None
        if project_to is not None:
            if project_to == name:
                raise SchemaError(f"event collection {name!r} cannot project onto itself", name=name)
            self.projection = store.collection(project_to, state)
            if self.projection.partition_key is not None:
                raise SchemaError(
                    f"projection collection {project_to!r} must not have a partition key", name=project_to
                )

    def __repr__(self) -> str:
        extra = f" -> {self.projection.name!r}" if self.projection else ""
        return f"<EventCollection {self.name!r} of {self.state.__name__}{extra} in namespace {self._ks.namespace!r}>"

    # -- keys ----------------------------------------------------------------------------------------
    def version(self, aggregate_id: str) -> int:
        """The number of events in an aggregate's stream (0 if it has none).

        Example:
            >>> _ = orders.append("o1", [Placed(sku="apple"), Paid(amount_cents=250)])
            >>> orders.version("o1"), orders.version("o2")
            (2, 0)
        """
        p = self.partition(validate_id(aggregate_id))
        return int(self._store.client.hget(self._ks.stream_versions(self.name, p), aggregate_id) or 0)

    def exists(self, aggregate_id: str) -> bool:
        """Whether an aggregate has any event.

        Example:
            >>> _ = orders.append("o1", [Placed(sku="apple")])
            >>> orders.exists("o1"), orders.exists("o2")
            (True, False)
        """
        return self.version(aggregate_id) > 0

    def ids(self) -> list[str]:
        """Every aggregate id of the collection, sorted (from the per-partition version hashes, no SCAN).

        Example:
            >>> _ = orders.append("o2", [Placed(sku="pear")])
            >>> _ = orders.append("o1", [Placed(sku="apple")])
            >>> orders.ids()
            ['o1', 'o2']
        """
        pipe = self._store.client.pipeline(transaction=False)
        for p in range(self._ks.partitions):
            pipe.hkeys(self._ks.stream_versions(self.name, p))
        return sorted(k.decode() for keys in pipe.execute() for k in keys)

    # -- append --------------------------------------------------------------------------------------
    @durable_option
    def append(
        self,
        aggregate_id: str,
        events: Iterable[Model | Mapping[str, Any]],
        *,
        expected_version: int | None = None,
        causation_id: str | None = None,
        correlation_id: str | None = None,
        vector_clock: Mapping[str, int] | None = None,
        retries: int = 16,
        durable: bool | None = None,
    ) -> AppendResult[S]:
        """Append events to an aggregate's stream, in one atomic script call.

        Every event is validated first; an unknown type or an invalid payload raises before anything is
        written. With a projection, the new state is computed by the reducer from the current state and
        written in the same call as the events (a reducer that raises refuses the events). Without one,
        the reducer runs only when state is read: decide events against a loaded state, and append with
        ``expected_version`` set to that state's version.

        Args:
            aggregate_id: the aggregate (stream) id.
            events: event models (or mappings ``{"type": name, **fields}``), appended in order.
            expected_version: only append if the stream holds exactly this many events (0: new stream).
            causation_id: id of the event or command that caused these events.
            correlation_id: id shared by everything one request caused (default: the first event's id).
            vector_clock: a vector clock to store with the events (``{node: counter}``).
            retries: attempts when the projected state changed concurrently (no ``expected_version``).
            durable: True: return only once the append is confirmed as the store's durability asks
                (``Collection.put``'s ``durable``); False: do not wait; None: as the store does.

        Raises:
            ValidationError: bad id, unknown event type, invalid payload, or a reducer that refuses the
                events (nothing is written).
            ConflictError: ``expected_version`` did not match.

        Example:
            >>> orders.append("o1", [Placed(sku="apple", qty=2)], expected_version=0).version
            1
            >>> orders.append("o1", [Paid(amount_cents=250)], expected_version=0)
            Traceback (most recent call last):
            ...
            rxstate.core.errors.ConflictError: ...
        """
        validate_id(aggregate_id)
        if expected_version is not None and (
            isinstance(expected_version, bool) or not isinstance(expected_version, int) or expected_version < 0
        ):
            raise ValidationError(f"expected_version must be a non-negative integer, not {expected_version!r}")
        if isinstance(events, Model | Mapping):
            raise ValidationError("append takes a list of events")
        encoded = [self.types.encode(e) for e in events]
        if not encoded:
            raise ValidationError("append needs at least one event")
        for label, value in (("causation_id", causation_id), ("correlation_id", correlation_id)):
            if value is not None and not isinstance(value, str):
                raise ValidationError(f"{label} must be a string, not {value!r}")
        clock = _check_clock(vector_clock)
        random = os.urandom(16 * len(encoded)).hex()  # one call, not one uuid4() per event
        event_ids = [random[i : i + 32] for i in range(0, len(random), 32)]
        correlation = correlation_id or event_ids[0]
        # metadata [event id, actor, causation, correlation, <version>, clock]: the script fills in the version
        common = json.dumps([self._store.actor, causation_id, correlation], separators=(",", ":"))[1:-1]
        tail = "," + clock + "]"
        audit = self._store.audit.subject(())
        args: list[Any] = [self.name, aggregate_id, "", len(encoded), audit[0] if audit else ""]
        for (type_name, schema_version, payload, _model), eid in zip(encoded, event_ids, strict=True):
            args += (type_name, schema_version, payload, f'["{eid}",{common},', tail)
        p = self.partition(aggregate_id)
        keys = [
            self._ks.event_stream(self.name, aggregate_id, p),
            self._ks.event_log(p),
            self._ks.stream_versions(self.name, p),
            *((self._ks.audit(p), self._ks.audit_chain(p)) if audit else ()),
        ]
        if self.projection is None:
            args[2] = "" if expected_version is None else expected_version
            if (
                self._store.writer.tenant is not None
            ):  # a tenant's: its suspension and quotas refuse the append in the script
                check = WriteOp("check", self.name, aggregate_id, p, events=len(encoded))  # and its events quota
                mkeys, margs = self._store.writer.pack([check])
                keys, args = keys + mkeys, args + margs
            version, positions, _ = self._run_append(keys, args)
            result: AppendResult[S] = AppendResult(version, positions, event_ids)
        else:
            result = self._append_projected(aggregate_id, p, keys, args, [e[3] for e in encoded], expected_version,
                                             event_ids, retries)  # fmt: skip
        last_meta = f"{args[-2]}{result.version}{args[-1]}"  # as the script stored it
        self._after_append(aggregate_id, p, result, [e[3] for e in encoded], last_meta)
        return result

    def _run_append(
        self, keys: list[str], args: list[Any], writes: Sequence[WriteOp] = ()
    ) -> tuple[int, list[str], str]:
        # A projected entity locked by a cross-partition transaction is settled or waited out first.
        reply = self._store.writer.call("append", keys, args, writes=writes)
        version, positions, change_id = reply
        return int(version), [x.decode() for x in positions], change_id.decode() if change_id else ""

    def _append_projected(
        self,
        aggregate_id: str,
        p: int,
        keys: list[str],
        args: list[Any],
        models: list[Model],
        expected: int | None,
        event_ids: list[str],
        retries: int,
    ) -> AppendResult[S]:
        assert self.projection is not None
        for attempt in range(max(1, retries)):
            # This process's last state saves a read; a stale one fails the script's version check.
            cached = self._recall(aggregate_id) if attempt == 0 else None
            if cached is not None and (expected is None or cached.version == expected):
                state, version = cached.state, cached.version
            else:
                state, version = self._current(aggregate_id, p)
            if expected is not None and version != expected:
                stream = keys[0]
                raise ConflictError(
                    f"{stream}: expected version {expected}, found {version}",
                    key=stream,
                    expected=expected,
                    actual=version,
                )
            new = self._fold_models(state, models)
            op = self.projection.put_op(aggregate_id, new)
            op.events = len(models)  # a tenant's events quota is checked with the projection write
            mkeys, margs = self._store.writer.pack([op])
            args[2] = version
            try:
                new_version, positions, _ = self._run_append(keys + mkeys, args + margs, [op])
            except ConflictError:
                if expected is not None:
                    raise
                pause(random.uniform(0, 0.0005 * (attempt + 1)))  # jitter: racing writers spread out
                continue
            return AppendResult(new_version, positions, event_ids, new)
        raise ConflictError(f"{keys[0]}: still changing after {retries} attempts", key=keys[0])

    def _fold_models(self, state: S | None, models: Sequence[Model]) -> S:
        try:
            for model in models:
                state = self.reducer(state, model)
        except RxStateError:
            raise
        except Exception as exc:
            raise ValidationError(f"{self.name}: the reducer refused the events: {exc!r}") from exc
        if type(state) is not self.state:
            raise ValidationError(
                f"{self.name}: the reducer returned {type(state).__name__}, not {self.state.__name__}"
            )
        return state

    def _current(self, aggregate_id: str, p: int) -> tuple[S | None, int]:
        """The current state and version: from the projection when it is there (one atomic read)."""
        assert self.projection is not None
        pipe = self._store.client.pipeline(transaction=True)
        pipe.hget(self._ks.stream_versions(self.name, p), aggregate_id)
        key = self._ks.entity(self.projection.name, aggregate_id, p)
        pipe.hgetall(key)
        raw_version, raw = pipe.execute()
        meter = self._store.read_meter
        if meter is not None and raw:  # a tenant's read costs: the projected entity
            meter.count(key, sum(len(k) + len(v) for k, v in raw.items()))
        version = int(raw_version or 0)
        if version == 0:
            return self.initial, 0
        if raw:
            try:
                return self.projection._decode(aggregate_id, raw, "").value, version
            except RxStateError:
                pass  # an unreadable projection is rebuilt from the events
        folded = self._load(aggregate_id, p)
        return folded.state, folded.version

    def _after_append(
        self, aggregate_id: str, p: int, result: AppendResult[S], models: Sequence[Model], last_meta: str
    ) -> None:
        """Keep the local state of the aggregate current, and take a snapshot every N events."""
        before = result.version - len(models)
        cached = self._recall(aggregate_id)
        folded: Folded[S] | None = None
        if result.state is not None or (cached is not None and cached.version == before):
            state = result.state
            if state is None and cached is not None:
                try:
                    state = self._fold_models(cached.state, models)
                except ValidationError:  # left to the next load to report
                    state = None
            if state is not None:
                known = cached.snapshot_version if cached is not None else 0
                meta = last_meta.encode()
                folded = Folded(state, result.version, result.positions[-1], meta, None, 0, known)
        every = self.snapshot_every
        if every is not None and before // every != result.version // every:
            if folded is None:
                folded = self._load(aggregate_id, p)
            self._save_snapshot(aggregate_id, p, folded)
            folded.snapshot_version = folded.version
        if folded is not None:
            self._remember(aggregate_id, folded)
        else:
            self._forget(aggregate_id)


def _check_clock(clock: Mapping[str, int] | None) -> str:
    if clock is None:
        return "null"
    if not isinstance(clock, Mapping) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0 for k, v in clock.items()
    ):
        raise ValidationError(f"vector_clock must map node names to non-negative ints, not {clock!r}")
    return json.dumps(dict(clock), separators=(",", ":"), sort_keys=True)


def open_event_collection(store: Store, name: str, **options: Any) -> EventCollection[Any]:
    """Open (or return the already open) event collection ``name`` on ``store``; see ``Store.events``."""
    with _REGISTRY_LOCK:
        opened = _REGISTRY.setdefault(store, {})
        existing = opened.get(name)
        if existing is not None:
            same = (
                existing.state is options.get("state")
                and existing.reducer is options.get("reducer")
                and list(existing.types.by_name.values()) == list(options.get("events", ()))
            )
            if not same:
                raise SchemaError(
                    f"event collection {name!r} is already open here with other types or reducer", name=name
                )
            return existing
        collection: EventCollection[Any] = EventCollection(store, name, **options)
        opened[name] = collection
        return collection
