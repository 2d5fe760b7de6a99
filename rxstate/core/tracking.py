"""Read tracking: the hook through which collection reads report what they read.

The core calls ``track`` on every read path. It costs one context-variable lookup when nobody listens.
Whoever wants to know what a piece of code read (derived values do) installs a ``Reads`` recorder with
``recording``; this module knows nothing about who that is, so the core depends on nothing reactive.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

__all__ = ["ALL", "Reads", "begin", "end", "note", "recording", "track", "track_members"]

ALL = "*"
"""The id under which ``track_members`` records a read of a collection's membership."""

_current: ContextVar[Reads | None] = ContextVar("rxstate_reads", default=None)


class Reads:
    """What one piece of code read: entities (with the fields read, None for all) and other sources.

    Attributes:
        entities: ``(collection, id) -> fields read`` (None: every field); id ``ALL`` means the
            collection's membership (which ids exist), with the fields whose values selected them.
        sources: other readable things reported with ``note`` (derived values), in reading order.

    Example:
        >>> with recording() as reads:
        ...     track("agents", "a1")
        >>> reads.entities
        {('agents', 'a1'): None}
    """

    __slots__ = ("entities", "sources")

    def __init__(self) -> None:
        self.entities: dict[tuple[str, str], frozenset[str] | None] = {}
        self.sources: dict[object, None] = {}

    def add(self, collection: str, entity_id: str, fields: Iterable[str] | None) -> None:
        key = (collection, entity_id)
        if fields is None:
            self.entities[key] = None
        elif key not in self.entities:
            self.entities[key] = frozenset(fields)
        else:
            known = self.entities[key]
            if known is not None:
                self.entities[key] = known | frozenset(fields)


def track(collection: str, entity_id: str, fields: Iterable[str] | None = None) -> None:
    """Report a read of one entity (all its fields unless ``fields`` is given).

    Example:
        >>> track("agents", "a1", ["status"])
    """
    reads = _current.get()
    if reads is not None:
        reads.add(collection, entity_id, fields)


def track_members(collection: str, fields: Iterable[str] | None = ()) -> None:
    """Report a read of which entities a collection holds (``ids``, ``count``, ``where``, ``all``).

    ``fields`` say which changes can alter what was read: ``()`` only creations, deletions and expiries
    (``ids``, ``count``); some fields, also changes of those (the fields a ``where`` selected on); None,
    any change in the collection (``all`` read every entity).

    Example:
        >>> track_members("agents", ["status"])
    """
    reads = _current.get()
    if reads is not None:
        reads.add(collection, ALL, fields)


def note(source: object) -> None:
    """Report a read of some other source (a derived value's ``.value``).

    Example:
        >>> note(object())
    """
    reads = _current.get()
    if reads is not None:
        reads.sources[source] = None


def begin() -> tuple[Reads, Token[Reads | None]]:
    """Start recording reads in the current context; pass the token to ``end``. (``recording`` is the
    ``with`` form; this pair avoids its overhead on hot paths.)"""
    reads = Reads()
    return reads, _current.set(reads)


def end(token: Token[Reads | None]) -> None:
    """Stop the recording ``begin`` started."""
    _current.reset(token)


@contextmanager
def recording() -> Iterator[Reads]:
    """Record the reads made inside the ``with`` block (nested blocks record separately).

    Example:
        >>> _ = agents.put("a1", Agent(name="planner"))
        >>> with recording() as reads:
        ...     _ = agents.get("a1")
        >>> list(reads.entities)
        [('agents', 'a1')]
    """
    reads = Reads()
    token = _current.set(reads)
    try:
        yield reads
    finally:
        _current.reset(token)
