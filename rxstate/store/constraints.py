"""Integrity constraints declared on a collection and enforced inside the write script.

Declare them when opening a collection::

    agents = store.collection("agents", Agent, constraints=[
        rxstate.unique("email"),
        rxstate.references("team_id", "teams"),
        rxstate.bounds("load", 0, "max_load"),
        rxstate.one_of("status", {"idle", "busy"}),
    ])

Every write of the collection carries its constraints to ``mutate.lua``, which checks them after the
version checks and before writing anything: a violation raises ``IntegrityError`` (``.constraint`` is
the constraint's name) and leaves everything unchanged.

Where the data lives decides what a single script can check:

- ``unique(f)`` keeps an index on ``f`` and searches it for the new value. On a standalone server the
  script searches every partition: one sorted-set range read per partition, so a unique check grows
  with the partition count (``python -m benchmarks --only scaling`` prints the slope, a few µs per
  partition). Declaring ``f`` the ``partition_key`` makes it one read. On a cluster a script reaches
  one slot only, so a unique field must be the collection's ``partition_key`` (equal values then share
  a partition); otherwise declaring it raises ``ClusterError``.
- ``references(f, target)`` checks that ``target``'s entity named by ``f`` exists. The target
  collection must be routed by id (no partition key). On a cluster, ``f`` must be the collection's
  ``partition_key`` so that the referencing entity sits in its target's partition; otherwise
  ``ClusterError``. Deleting a referenced entity is refused (``IntegrityError``) while a live entity
  still references it: the referencing field is indexed, and each partition keeps the set of declared
  references to each target collection (``rx:{ns:p}:_refby:<target>``), which a delete checks against
  what its process knows, so a reference declared by another process is never missed.
- ``bounds(f, low, high)`` compares the value after the write (also after ``incr``) with constants
  or with other fields of the same entity. ``one_of(f, values)`` checks membership.
"""

from __future__ import annotations

import json
import types
import typing
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

from rxstate.core.codec import ModelCodec, _dumps
from rxstate.core.errors import ClusterError, ConflictError, SchemaError, ValidationError
from rxstate.core.scripts import register_error
from rxstate.core.writes import WriteOp

if TYPE_CHECKING:
    from rxstate.core.keys import Keyspace
    from rxstate.store.store import Store

__all__ = [
    "Bounds",
    "Constraint",
    "Constraints",
    "OneOf",
    "References",
    "Unique",
    "bounds",
    "one_of",
    "references",
    "unique",
]

_SEP = "\x00"
_WRITES = frozenset({"put", "create", "update", "incr"})
_LIVE: weakref.WeakSet[Constraints] = weakref.WeakSet()


class StaleDeclarations(ConflictError):
    """A delete was built from an outdated view of the declared references; rebuild it and retry."""


def forget_declared_references() -> None:
    """Drop every cached view of declared references in this process (a script found one out of date).

    Deletes built afterwards, including the retries of transactions, read the declarations again.
    """
    for constraints in list(_LIVE):
        constraints._referrers.clear()


def _stale_declarations(details: list[str]) -> StaleDeclarations:
    forget_declared_references()  # so that a rebuilt or retried delete reads them again
    return StaleDeclarations(f"{details[0]}: the declared references changed", key=details[0])


register_error("RXREFSTALE", _stale_declarations)


@dataclass(frozen=True)
class Constraint:
    """Base of the declared constraints; build them with ``unique``, ``references``, ``bounds``, ``one_of``."""

    field: str
    name: str


@dataclass(frozen=True)
class Unique(Constraint):
    """No two live entities of the collection hold the same (non-null) value of ``field``."""


@dataclass(frozen=True)
class References(Constraint):
    """A non-null ``field`` names an existing entity of collection ``target``."""

    target: str = ""


@dataclass(frozen=True)
class Bounds(Constraint):
    """``low <= field <= high``; each bound a number, another field's name, or None."""

    low: float | str | None = None
    high: float | str | None = None


@dataclass(frozen=True)
class OneOf(Constraint):
    """``field`` takes one of ``values`` (or null)."""

    values: frozenset[Any] = field(default_factory=frozenset)


def _name(kind: str, field_name: str, name: str | None) -> str:
    out = name if name is not None else f"{kind}:{field_name}"
    if not isinstance(out, str) or not out or any(c.isspace() for c in out):
        raise ValidationError(f"constraint name {out!r} must be a non-empty string without whitespace")
    return out


def unique(field: str, *, name: str | None = None) -> Unique:
    """Declare ``field`` unique across the collection (nulls are not compared).

    Example:
        >>> unique("email")
        Unique(field='email', name='unique:email')
    """
    return Unique(field, _name("unique", field, name))


def references(field: str, collection: str, *, name: str | None = None) -> References:
    """Declare that ``field`` holds the id of an existing entity of ``collection`` (or null).

    Example:
        >>> references("team_id", "teams")
        References(field='team_id', name='references:team_id', target='teams')
    """
    return References(field, _name("references", field, name), collection)


def bounds(
    field: str, low: float | str | None = None, high: float | str | None = None, *, name: str | None = None
) -> Bounds:
    """Declare ``low <= field <= high``; a bound is a number, the name of another numeric field, or None.

    Example:
        >>> bounds("load", 0, "max_load")
        Bounds(field='load', name='bounds:load', low=0, high='max_load')
    """
    for b in (low, high):
        if b is not None and (isinstance(b, bool) or not isinstance(b, int | float | str)):
            raise ValidationError(f"bounds of {field!r}: {b!r} is neither a number nor a field name")
    return Bounds(field, _name("bounds", field, name), low, high)


def one_of(field: str, values: Iterable[Any], *, name: str | None = None) -> OneOf:
    """Declare that ``field`` takes one of ``values``.

    Example:
        >>> one_of("status", {"idle"}).values
        frozenset({'idle'})
    """
    allowed = frozenset(values)
    if not allowed:
        raise ValidationError(f"one_of({field!r}): give at least one allowed value")
    return OneOf(field, _name("one_of", field, name), allowed)


def _base_types(annotation: Any) -> set[Any]:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return {a for arg in typing.get_args(annotation) for a in _base_types(arg)}
    return {annotation}


def index_fields(constraints: Sequence[Constraint]) -> tuple[str, ...]:
    """Fields a set of constraints needs indexed (unique values and references)."""
    return tuple(c.field for c in constraints if isinstance(c, Unique | References))


class Constraints:
    """The constraints of one collection, turned into the script arguments of each write."""

    def __init__(
        self,
        store: Store,
        collection: str,
        codec: ModelCodec[Any],
        constraints: Sequence[Constraint],
        *,
        partition_key: str | None,
    ) -> None:
        self._store = store
        self._ks: Keyspace = store.keyspace
        self.collection = collection
        self.items = tuple(constraints)
        self._cluster = store.is_cluster
        self._referrers: dict[int, tuple[str, ...]] = {}
        self._scans: dict[tuple[str, str, int], tuple[list[str], int]] = {}
        _LIVE.add(self)
        fields = codec.model.model_fields
        names: set[str] = set()
        self._static: dict[str, list[Any]] = {}
        for c in self.items:
            if not isinstance(c, Constraint) or type(c) is Constraint:
                raise ValidationError(f"{c!r} is not a constraint; use rxstate.unique/references/bounds/one_of")
            if c.name in names:
                raise SchemaError(f"collection {collection!r}: two constraints are named {c.name!r}", name=collection)
            names.add(c.name)
            self._check_field(codec, c.field, c)
            kinds = _base_types(fields[c.field].annotation) - {type(None)}
            if isinstance(c, References):
                if kinds != {str}:
                    raise SchemaError(
                        f"{c.name}: {c.field!r} must be a str field (it holds an id)", name=collection, field=c.field
                    )
                self._check_target(c)
            elif isinstance(c, Bounds):
                for f in (c.field, *(b for b in (c.low, c.high) if isinstance(b, str))):
                    self._check_field(codec, f, c)
                    if not _base_types(fields[f].annotation) - {type(None)} <= {int, float}:
                        raise SchemaError(f"{c.name}: {f!r} is not a numeric field", name=collection, field=f)
                self._static[c.name] = [_bound(c.low), _bound(c.high)]
            elif isinstance(c, OneOf):
                encoded = [dict(codec.encode_fields({c.field: v}))[c.field] for v in c.values]
                self._static[c.name] = [len(encoded), *encoded]
            if isinstance(c, Unique | References) and self._cluster and partition_key != c.field:
                raise ClusterError(
                    f"collection {collection!r}: {c.name} needs {c.field!r} as the partition key on a cluster "
                    f"(one script reaches one slot); open it with partition_key={c.field!r}",
                    name=collection,
                )

    def _check_field(self, codec: ModelCodec[Any], f: str, c: Constraint) -> None:
        if f not in codec.model.model_fields:
            raise SchemaError(
                f"collection {self.collection!r}: {c.name}: {codec.model.__name__} has no field {f!r}",
                name=self.collection,
                field=f,
            )
        if f in codec.model.__rxstate_secrets__:
            raise SchemaError(
                f"{c.name}: {f!r} is a secret field; its stored value cannot be compared", name=self.collection, field=f
            )

    def _check_target(self, c: References) -> None:
        if self._store.guard is not None:
            return  # a principal cannot read the schema registry; its administrator's opening checked this
        raw = self._store.client.hget(self._ks.schemas(), c.target)
        if raw is not None and json.loads(raw).get("partition_key"):
            raise SchemaError(
                f"{c.name}: collection {c.target!r} is routed by a partition key; a reference can only "
                "name entities of a collection routed by id",
                name=self.collection,
            )

    def declare_references(self) -> None:
        """Record this collection's references in every partition, for deletes of their targets."""
        refs = [c for c in self.items if isinstance(c, References)]
        if not refs:
            return
        pipe = self._store.client.pipeline(transaction=False)
        for p in range(self._ks.partitions):
            for c in refs:
                pipe.sadd(self._ks.refby(c.target, p), _SEP.join((self.collection, c.field, c.name)))
        pipe.execute()

    # -- per write ---------------------------------------------------------------------------------
    def _scan(self, collection: str, f: str, partition: int) -> tuple[list[str], int]:
        """The (index zset, expiry zset) keys to search for a value: every partition, or on a cluster its own."""
        memo = (collection, f, partition if self._cluster else -1)
        found = self._scans.get(memo)
        if found is None:
            ks = self._ks
            parts = (partition,) if self._cluster else range(ks.partitions)
            keys: list[str] = []
            for q in parts:
                keys += (ks.index(collection, f, q), ks.expiry(collection, q))
            found = self._scans[memo] = (keys, len(parts))
        return found

    def attach(self, op: WriteOp) -> None:
        """Fill in ``op.constraint_keys`` and ``op.constraint_args`` for the write it describes."""
        if op.kind == "delete":
            self._attach_delete(op)
            return
        if not self.items or op.kind not in _WRITES:
            return
        sets = dict(op.sets)
        touched = sets.keys() | {i[0] for i in op.incrs}
        keys: list[str] = []
        args: list[Any] = []
        n = 0
        for c in self.items:
            if isinstance(c, Bounds):
                args += ("b", c.name, c.field, *self._static[c.name])
            elif c.field not in touched:
                continue
            elif isinstance(c, Unique):
                scan, count = self._scan(self.collection, c.field, op.partition)
                keys += scan
                args += ("u", c.name, c.field, count)
            elif isinstance(c, References):
                target_id = _decode_json(sets[c.field])
                if target_id is None:
                    continue
                if not isinstance(target_id, str):  # pragma: no cover - the field is typed str
                    raise ValidationError(f"{c.name}: {c.field} must hold an id", field=c.field)
                keys.append(self._ks.entity(c.target, target_id, self._ks.partition_of(target_id)))
                args += ("r", c.name, c.field)
            else:
                args += ("e", c.name, c.field, *self._static[c.name])
            n += 1
        if n:
            op.constraint_keys = keys
            op.constraint_args = [n, *args]

    def referrers(self, partition: int, *, refresh: bool = False) -> tuple[str, ...]:
        """Declared references to this collection, as recorded in a partition."""
        found = None if refresh else self._referrers.get(partition)
        if found is None:
            members = self._store.client.smembers(self._ks.refby(self.collection, partition))
            found = self._referrers[partition] = tuple(sorted(m.decode() for m in members))
        return found

    def _attach_delete(self, op: WriteOp, *, refresh: bool = False) -> None:
        declared = self.referrers(op.partition, refresh=refresh)
        keys = [self._ks.refby(self.collection, op.partition)]
        args: list[Any] = ["d", "refby", "", len(declared), *declared]
        value = _dumps(op.id)
        for entry in declared:
            referrer, f, name = entry.split(_SEP)
            scan, count = self._scan(referrer, f, op.partition)
            keys += scan
            args += ("x", name, f, referrer, value, count)
        op.constraint_keys = keys
        op.constraint_args = [1 + len(declared), *args]

    def refresh_delete(self, op: WriteOp) -> None:
        """Rebuild a delete's arguments after the script said the declared references changed."""
        self._attach_delete(op, refresh=True)


def _bound(b: float | str | None) -> str:
    if b is None:
        return ""
    return f"f:{b}" if isinstance(b, str) else f"n:{b!r}"


def _decode_json(raw: bytes) -> Any:
    return json.loads(raw)
