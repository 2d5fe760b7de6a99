"""What the local cache holds: entries, the own writes it waits for, and its bounded tables."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

from cachetools import LRUCache

from rxstate.core.versioned import Versioned

__all__ = ["LRU", "Entry", "OwnWrite", "remember"]


class Entry(NamedTuple):
    """One cached value with its size, deadline and change offset."""

    versioned: Versioned[Any]
    nbytes: int
    deadline: float  # time.monotonic() after which the entry is gone; 0.0: no TTL
    offset: tuple[int, int]
    refresh_until: float  # until then, an eviction queues a background re-read (own write of a read key)


class OwnWrite:
    """A write of one key by this store, from before it is sent until its echo has arrived.

    Attributes:
        key: the entity key.
        token: the cache epoch when it was registered.
        deadline: the deadline of the entry it replaces (None: the key was not cached).
    """

    __slots__ = ("absorbed", "deadline", "done_at", "key", "offset", "poisoned", "registered_at", "token")

    def __init__(self, key: str, token: int, deadline: float | None, now: float) -> None:
        self.key = key
        self.token = token
        self.deadline = deadline
        self.registered_at = now
        self.absorbed = False  # its echo has arrived
        self.poisoned = False  # another own write of the key took an echo meanwhile: do not insert
        self.done_at = 0.0  # time.monotonic() of its reply; 0.0 while in flight
        self.offset = (0, 0)


class LRU(LRUCache):  # type: ignore[type-arg]
    """``LRUCache`` that reports capacity evictions (not explicit removals)."""

    def __init__(self, maxsize: int, getsizeof: Callable[[Any], int] | None, on_evict: Callable[[], None]) -> None:
        super().__init__(maxsize, getsizeof)
        self._on_evict = on_evict

    def popitem(self) -> tuple[Any, Any]:
        item = super().popitem()
        self._on_evict()
        return item


def remember(table: OrderedDict[str, Any], key: str, value: Any, limit: int) -> Any:
    """Set ``table[key]`` as most recent; returns the value of the oldest entry dropped, or None.

    Example:
        >>> from collections import OrderedDict
        >>> remember(OrderedDict(a=1), "b", 2, limit=1)
        1
    """
    table[key] = value
    table.move_to_end(key)
    dropped = None
    while len(table) > limit:
        _, dropped = table.popitem(last=False)
    return dropped
