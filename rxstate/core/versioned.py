"""``Versioned``: a stored value with its version and write metadata."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

from rxstate.core import display
from rxstate.core.redaction import short

__all__ = ["Versioned"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Versioned(Generic[T]):
    """A value as stored: its version, schema version, last writer, time, and change-feed offset.

    Attributes:
        id: the entity id.
        value: the (immutable) model.
        version: bumped by one on every write of the id; 1 after the first. It never restarts: a delete
            bumps it too, and an entity created again under the id continues from there, so a version
            read before a delete never matches a later entity (compare-and-set is ABA-safe).
        schema_version: the model schema version the value was stored with.
        timestamp_ms: server time of the last write, in milliseconds since the epoch.
        actor: who wrote it last.
        offset: id of the change record of the last write in its partition's change stream; offsets of
            one partition are totally ordered, across deletes and re-creations.

    Example:
        >>> v = agents.put("a1", Agent(name="planner"))
        >>> v.version, v.value.name, v.actor == store.actor
        (1, 'planner', True)
    """

    id: str
    value: T
    version: int
    schema_version: int
    timestamp_ms: int
    actor: str
    offset: str

    def __repr__(self) -> str:
        return (
            f"Versioned(id={self.id!r}, value={short(self.value)}, version={self.version}, "
            f"schema_version={self.schema_version}, timestamp_ms={self.timestamp_ms}, actor={self.actor!r}, "
            f"offset={self.offset!r})"
        )

    def _repr_html_(self) -> str:
        return display.html(self)

    @property
    def updated_at(self) -> datetime:
        """The server time of the last write."""
        return datetime.fromtimestamp(self.timestamp_ms / 1000, tz=UTC)
