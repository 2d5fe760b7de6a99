"""Whole values for changes: ``Change.value``, the entity as it was right after the change.

A change record holds only the fields the write set. ``apply_change`` folds a change into the value
before it (what ``watch`` does, one entity at a time); ``ValueTracker`` does it for a whole feed
(``store.changes(values=True)``), remembering the last value it computed of recently changed entities.

A create or replace carries every field, so its value costs one validation. An update or increment
applies to the value before it when the tracker knows it (the previous version); otherwise the entity
is read from the server, once per batch for all such entities. If the entity has changed again in
the meantime (the server has a later version), the value at this change can no longer be known, and
``value`` is None; later changes build on the value read. A delete or expiry has no value (None).
Values are decoded by the collection's model when this store has the collection open, else they are
``dict``s of the JSON-decoded fields (secret fields wrapped in ``rxstate.Secret`` either way).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pydantic

from rxstate.core.codec import RESERVED_FIELDS
from rxstate.core.errors import RxStateError
from rxstate.core.redaction import error_reason
from rxstate.feed.change import REMOVALS, Change

if TYPE_CHECKING:
    from rxstate.feed.assembly import Decoder
    from rxstate.store.collection import Collection
    from rxstate.store.store import Store

__all__ = ["ValueTracker", "apply_change"]

log = logging.getLogger("rxstate.changes")
_FULL = frozenset({"create", "replace", "snapshot"})
_PARTIAL = frozenset({"update", "incr"})
_REMEMBERED = 10_000  # entities whose last value a tracker keeps


def apply_change(coll: Collection[Any], before: Any, change: Change) -> Any:
    """The model value after ``change``, given the value ``before`` it (None if unknown): None after a
    removal, or when the change cannot be applied (logged at DEBUG without field values).

    Example:
        >>> apply_change(agents, None, Change("agents", "a1", "create", 1, {"name": "x"})).name  # doctest: +SKIP
        'x'
    """
    if change.op in REMOVALS:
        return None
    # The feed wraps secret fields in Secret (None included): the model wraps its own again.
    fields = {k: v.get_secret_value() if isinstance(v, pydantic.Secret) else v for k, v in change.fields.items()}
    try:
        if change.op in ("create", "replace"):
            return coll.model.model_validate(fields)
        if before is None:
            return None
        return coll._codec.revalidate(before.model_copy(update=fields))
    except (RxStateError, ValueError) as exc:
        # pydantic's own error quotes the input, secrets included: log only its path and reason.
        reason = error_reason(exc, coll.model.__rxstate_secrets__) if isinstance(exc, pydantic.ValidationError) else exc
        log.debug("cannot apply %s to %r: %s: %s", change.op, before, type(exc).__name__, reason)
        return None


class ValueTracker:
    """Fills in ``value`` on each change of a feed's batches (see the module docstring).

    Example:
        >>> tracker = ValueTracker(store, store.change_feed.decoder)  # doctest: +SKIP
        >>> [c.value for c in tracker(batch)]  # doctest: +SKIP
    """

    def __init__(self, store: Store, decoder: Decoder, *, remembered: int = _REMEMBERED) -> None:
        self._store = store
        self._decoder = decoder
        self._remembered = remembered
        self._last: OrderedDict[tuple[str, str], tuple[int, Any]] = OrderedDict()  # key -> (version, value)

    def __call__(self, batch: tuple[Change, ...]) -> tuple[Change, ...]:
        fetched = self._fetch_unknown(batch)
        return tuple(self._fill(c, fetched) for c in batch)

    def _remember(self, key: tuple[str, str], version: int, value: Any) -> None:
        self._last[key] = (version, value)
        self._last.move_to_end(key)
        if len(self._last) > self._remembered:
            self._last.popitem(last=False)

    def _fetch_unknown(self, batch: tuple[Change, ...]) -> dict[tuple[str, str], tuple[int, Any]]:
        """The stored value of each entity with a partial change in ``batch`` whose value before it will
        not be known (its previous version neither remembered nor earlier in the batch: a change may
        have been filtered out before this feed), read in one round trip."""
        wanted: dict[tuple[str, str], Change] = {}
        running: dict[tuple[str, str], int] = {}
        for c in batch:
            key = c.key
            known = running.get(key)
            if known is None:
                last = self._last.get(key)
                known = last[0] if last is not None else None
            if key not in wanted and c.op in _PARTIAL and known != c.version - 1:
                wanted[key] = c
            running[key] = c.version
        if not wanted:
            return {}
        ks = self._store.keyspace
        pipe = self._store.client.pipeline(transaction=False)
        keys = {k: ks.entity(c.collection, c.id, c.partition) for k, c in wanted.items()}
        for entity_key in keys.values():
            pipe.hgetall(entity_key)
        out: dict[tuple[str, str], tuple[int, Any]] = {}
        for (k, c), raw in zip(wanted.items(), pipe.execute(), strict=True):
            if raw:
                out[k] = self._decode(c, keys[k], raw)
        return out

    def _decode(self, change: Change, key: str, raw: Mapping[bytes, bytes]) -> tuple[int, Any]:
        """``(version, value)`` of a stored entity hash."""
        coll = self._store._collections.get(change.collection)
        if coll is None:
            version = int(raw.get(b"_v", b"0"))
            sv = int(raw.get(b"_sv", b"0") or 0)
            fields = {n: v for n, v in raw.items() if n not in RESERVED_FIELDS}
            return version, dict(self._decoder.decode_fields(change.collection, sv, fields, key=key))
        try:
            versioned = coll._decode(change.id, coll._settled(key, dict(raw)), key)
        except RxStateError as exc:
            log.debug("cannot read %s for its change's value: %s", key, type(exc).__name__)
            return int(raw.get(b"_v", b"0")), None
        return versioned.version, versioned.value

    def _fill(self, c: Change, fetched: dict[tuple[str, str], tuple[int, Any]]) -> Change:
        key = c.key
        coll = self._store._collections.get(c.collection)
        if c.op in REMOVALS:
            self._last.pop(key, None)
            return replace(c, value=None)
        if c.op in _FULL:
            value = apply_change(coll, None, c) if coll is not None else dict(c.fields)
            self._remember(key, c.version, value)
            return replace(c, value=value)
        if c.op not in _PARTIAL:
            return c
        known = self._last.get(key)
        if known is None or known[0] != c.version - 1:
            known = fetched.pop(key, known)
        if known is None:
            return replace(c, value=None)
        version, before = known
        if version == c.version:  # read from the server, and no later change happened yet
            self._remember(key, version, before)
            return replace(c, value=before)
        if version != c.version - 1 or before is None:
            if version > c.version:
                self._remember(key, version, before)  # later changes apply to this
            return replace(c, value=None)
        value = apply_change(coll, before, c) if coll is not None else {**before, **c.fields}
        self._remember(key, c.version, value)
        return replace(c, value=value)
