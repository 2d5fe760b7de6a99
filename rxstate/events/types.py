"""Event types of an event-sourced collection: validation, encoding, decoding with upcasting.

An event is an ``rxstate.Model`` instance (or a mapping ``{"type": name, **fields}``). In a stream
entry it is stored as ``y`` (type name), ``s`` (its schema version), ``d`` (JSON payload) and ``m``
(metadata: a JSON array ``[event id, actor, causation id, correlation id, version, vector clock]``);
entries of a partition's event log carry ``g`` (collection) and ``i`` (aggregate id) as well.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pydantic

from rxstate.core import display
from rxstate.core.codec import Codec, ModelCodec
from rxstate.core.errors import CorruptDataError, SchemaError, ValidationError
from rxstate.core.model import Model
from rxstate.core.redaction import error_reason, event_data, redact_mapping, short

if TYPE_CHECKING:
    from rxstate.events.collection import EventCollection
    from rxstate.store.store import Store

__all__ = [
    "EventTypes",
    "RecordedEvent",
    "event_type_name",
    "parse_meta",
    "raw_xrange",
    "registered",
    "stream_id_ms",
]

_NO_COMPRESSION = 1 << 62


def event_type_name(cls: type[Model]) -> str:
    """The stored name of an event type: ``__rxstate_name__`` if set, else the class name."""
    return str(getattr(cls, "__rxstate_name__", cls.__name__))


def stream_id_ms(stream_id: str) -> int:
    """The server time (ms since the epoch) a stream id was assigned at."""
    return int(stream_id.partition("-")[0])


def raw_xrange(store: Any, key: str, start: str | bytes, end: str | bytes, count: int) -> list[Any]:
    """XRANGE as the server's flat reply: ``[[id, [field, value, ...]], ...]``.

    The command name is passed as bytes so that redis-py applies no reply callback: building a dict
    per entry costs more than the rest of a replay. Cluster clients route by command name, so they get
    the parsed reply, flattened.
    """
    flat: list[Any]
    if store.is_cluster:
        rows = store.client.xrange(key, start, end, count=count)
        flat = [[sid, [x for kv in fields.items() for x in kv]] for sid, fields in rows]
    else:
        flat = store.client.execute_command(b"XRANGE", key, start, end, b"COUNT", count)
    meter = store.read_meter
    if meter is not None and flat:  # a tenant's read costs: one read per event
        meter.count(key, sum(len(sid) + sum(len(x) for x in fields) for sid, fields in flat), len(flat))
    return flat


def parse_meta(raw: bytes) -> tuple[str, str, str | None, str, int, dict[str, int] | None]:
    """Decode the ``m`` field: (event id, actor, causation id, correlation id, version, vector clock)."""
    try:
        eid, actor, causation, correlation, version, clock = json.loads(raw)
    except (ValueError, TypeError) as exc:
        raise CorruptDataError(f"broken event metadata {raw[:80]!r}: {exc}") from exc
    return eid, actor, causation, correlation, int(version), clock


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as stored, with its metadata.

    Attributes:
        collection: the event collection (category) it belongs to.
        aggregate_id: id of the aggregate whose stream holds it.
        version: its position in that stream (1 for the first event).
        position: its stream id (the same in the aggregate's stream and the partition's event log).
        partition: the aggregate's partition.
        type: the event type name.
        schema_version: the schema version it was stored with (``event`` is upcast to the current one).
        event: the decoded event model (a plain dict if its collection is not open in this process).
        event_id: unique id given at append.
        actor: who appended it.
        causation_id: id of the event or command that caused it, if given.
        correlation_id: id shared by everything one request caused.
        vector_clock: the clock given at append, if any.

    Example:
        >>> _ = orders.append("o1", [Placed(sku="apple"), Paid(amount_cents=250)])
        >>> [(e.type, e.version, e.event) for e in orders.history("o1")]
        [('Placed', 1, Placed(sku='apple', qty=1)), ('Paid', 2, Paid(amount_cents=250))]
    """

    collection: str
    aggregate_id: str
    version: int
    position: str
    partition: int
    type: str
    schema_version: int
    event: Any
    event_id: str
    actor: str
    causation_id: str | None
    correlation_id: str
    vector_clock: dict[str, int] | None

    @property
    def timestamp_ms(self) -> int:
        """Server time of the append, in ms since the epoch (from the stream id)."""
        return stream_id_ms(self.position)

    @property
    def time(self) -> datetime:
        """Server time of the append."""
        return datetime.fromtimestamp(self.timestamp_ms / 1000, tz=UTC)

    def data(self) -> dict[str, Any]:
        """The event's fields as a plain JSON-ready dict."""
        if isinstance(self.event, Model):
            return self.event.model_dump(mode="json")
        return dict(self.event)

    def __repr__(self) -> str:
        data, secrets = event_data(self)
        return (
            f"<RecordedEvent {self.collection}/{self.aggregate_id}#{self.version} {self.type} by {self.actor}: "
            f"{short(redact_mapping(data, secrets), 100)}>"
        )

    def _repr_html_(self) -> str:
        return display.html(self)


def _validated(name: str, build: Callable[[], Model]) -> Model:
    try:
        return build()
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()))
        message = f"{name}: {where}: {err.get('msg')}"
    # Raised outside the handler so that pydantic's error, which quotes the input, is not its context.
    raise ValidationError(message, field=where or None)


class EventTypes:
    """The event types one collection accepts, by stored name.

    Example:
        >>> types = EventTypes([Placed, Paid], Codec())
        >>> name, version, payload, event = types.encode({"type": "Placed", "sku": "apple"})
        >>> name, version, payload, event
        ('Placed', 1, b'{"sku":"apple","qty":1}', Placed(sku='apple', qty=1))
    """

    def __init__(self, types: Sequence[type[Model]], settings: Codec) -> None:
        if not types:
            raise SchemaError("an event collection needs at least one event type")
        raw = Codec(compress_threshold=_NO_COMPRESSION, max_entity_bytes=settings.max_entity_bytes)
        self.by_name: dict[str, type[Model]] = {}
        self._names: dict[type[Model], str] = {}
        self._codecs: dict[type[Model], ModelCodec[Any]] = {}
        for cls in types:
            if not (isinstance(cls, type) and issubclass(cls, Model)):
                raise SchemaError(
                    f"event type {cls!r} is not a subclass of rxstate.Model", name=getattr(cls, "__name__", None)
                )
            name = event_type_name(cls)
            if name in self.by_name and self.by_name[name] is not cls:
                raise SchemaError(f"two event types are named {name!r}", name=name)
            self.by_name[name] = cls
            self._names[cls] = name
            self._codecs[cls] = ModelCodec(cls, raw)
        # Hot path of replay: (type name, schema version) as stored -> the payload's validator. The
        # core validator skips model_validate_json's Python wrapper (a third of the cost of a small event).
        self.fast: dict[tuple[bytes, bytes], Callable[[bytes], Model]] = {
            (name.encode(), str(cls.__version__).encode()): cls.__pydantic_validator__.validate_json
            for name, cls in self.by_name.items()
        }

    def encode(self, event: Model | Mapping[str, Any]) -> tuple[str, int, bytes, Model]:
        """Validate an event; return (type name, schema version, JSON payload, validated model).

        Raises:
            ValidationError: an unknown type or an invalid payload.
        """
        if isinstance(event, Model):
            cls = type(event)
            if cls not in self._names:
                raise ValidationError(f"unknown event type {cls.__name__!r} (accepted: {', '.join(self.by_name)})")
            name = self._names[cls]
        elif isinstance(event, Mapping):
            data = dict(event)
            name = data.pop("type", None)
            if name not in self.by_name:
                raise ValidationError(f"unknown event type {name!r} (accepted: {', '.join(self.by_name)})")
            cls = self.by_name[name]
            event = _validated(name, lambda: cls.model_validate(data))
        else:
            raise ValidationError(f"an event is an rxstate.Model or a mapping with 'type', not {event!r}")
        codec = self._codecs[cls]
        if codec._secrets:  # pydantic's own JSON masks secrets: encode field by field, in clear
            fields = codec.encode(codec.revalidate(event))
            payload = b"{" + b",".join(json.dumps(k).encode() + b":" + v for k, v in fields) + b"}"
        else:
            payload = cls.__pydantic_serializer__.to_json(event)
        # Validating the stored form (a model_copy(update=...) skips validation) proves it reads back.
        model = _validated(name, lambda: cls.model_validate_json(payload))
        return self._names[cls], cls.__version__, payload, model

    def decoder(self) -> Callable[[bytes, bytes, bytes], Model]:
        """A fast ``(type, schema version, payload) -> event`` function for replay loops."""
        fast = self.fast
        slow = self.decode

        def decode(type_name: bytes, version: bytes, payload: bytes) -> Model:
            fn = fast.get((type_name, version))
            if fn is not None:
                try:
                    return fn(payload)
                except pydantic.ValidationError:
                    pass  # let the slow path name the problem
            return slow(type_name.decode(), int(version), payload)

        return decode

    def decode(self, type_name: str, schema_version: int, payload: bytes) -> Model:
        """Decode a stored event, upcasting an older schema version.

        Raises:
            SchemaError: the type is not known here, or its stored schema is newer than the code.
            CorruptDataError: the payload does not fit the type.
        """
        cls = self.by_name.get(type_name)
        if cls is None:
            raise SchemaError(
                f"stored event type {type_name!r} is not declared (known: {', '.join(self.by_name)})", name=type_name
            )
        try:
            data = json.loads(payload)
        except ValueError as exc:
            raise CorruptDataError(f"{type_name}: broken payload: {exc}") from exc
        if schema_version != cls.__version__:
            data = cls.upcast(data, schema_version)
        try:
            return cls.model_validate(data)
        except pydantic.ValidationError as exc:
            reason = error_reason(exc, cls.__rxstate_secrets__)
        raise CorruptDataError(f"stored {type_name} v{schema_version} does not fit: {reason}")


# The event collections opened on each store, by name: the namespace's event log decodes through them.
_REGISTRY: weakref.WeakKeyDictionary[Store, dict[str, EventCollection[Any]]] = weakref.WeakKeyDictionary()
_REGISTRY_LOCK = threading.Lock()


def registered(store: Store) -> Mapping[str, EventCollection[Any]]:
    """The event collections opened on a store, by name (used to decode the namespace's event log).

    The mapping is live: collections opened later show up in it (read it, never change it).

    Example:
        >>> registered(store)["orders"]
        <EventCollection 'orders' of Order in namespace 'default'>
    """
    with _REGISTRY_LOCK:
        return _REGISTRY.setdefault(store, {})
