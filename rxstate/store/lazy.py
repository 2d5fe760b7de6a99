"""Lazy fields of a read entity: loaded on first access, at the version the entity was read at.

A whole-entity read of a model with lazy fields (``rxstate.lazy``) is one ``HMGET`` of the other fields
and the reserved ones; the model it returns holds an ``EntityFields`` loader, which reads a lazy field
with one ``HMGET`` of it and the entity's version, and refuses (``LazyFieldStale``) when the entity has
changed since, so that one model never mixes two versions.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from rxstate.core.errors import LazyFieldStale
from rxstate.store.twophase import INTENT_FIELD

if TYPE_CHECKING:
    from rxstate.store.collection_ops import CollectionOps

__all__ = ["EntityFields"]


class EntityFields:
    """Reads lazy fields of the entity ``key`` of a collection, as they were at ``version``.

    Example:
        >>> doc = docs.get("d1")  # doctest: +SKIP
        >>> doc.body  # one HMGET of body (and the version) here  # doctest: +SKIP
        'long text'
    """

    __slots__ = ("_coll", "id", "key", "version")

    def __init__(self, coll: CollectionOps[Any], entity_id: str, key: str, version: int) -> None:
        self._coll = coll
        self.id = entity_id
        self.key = key
        self.version = version

    def __repr__(self) -> str:
        return f"<lazy fields of {self.key} at version {self.version}>"

    def at(self, version: int) -> EntityFields:
        """The same entity's fields at a later ``version`` (a write that left them as they were)."""
        return EntityFields(self._coll, self.id, self.key, version)

    def load(self, names: Collection[str]) -> Mapping[str, Any]:
        """The decoded values of ``names``, read with one ``HMGET`` (a pending transaction settled first).

        Raises:
            LazyFieldStale: the entity changed since it was read (or no longer exists).
        """
        coll = self._coll
        wanted = list(names)
        client = coll._store.client
        version, intent, *values = client.hmget(self.key, "_v", INTENT_FIELD, *wanted)
        if intent is not None:
            raw = coll._settled(self.key, client.hgetall(self.key))
            version, values = raw.get(b"_v"), [raw.get(n.encode()) for n in wanted]
        actual = 0 if version is None else int(version)
        if actual != self.version:
            raise LazyFieldStale(
                f"{self.key} field {wanted[0]!r}: the entity is at version {actual} now, the model was read "
                f"at version {self.version}: read it again",
                key=self.key,
                field=wanted[0],
                expected=self.version,
                actual=actual,
            )
        codec, fields = coll._codec, coll.model.model_fields
        return {
            n: fields[n].get_default(call_default_factory=True) if v is None else codec.decode_value(n, v, self.key)
            for n, v in zip(wanted, values, strict=True)
        }
