"""Session tokens: the version vectors a client carries between replicas for read-your-writes and
monotonic reads (Terry et al., "Session guarantees for weakly consistent replicated data", 1994).

A token maps each partition to the version vector (origin -> highest sequence number) the session has
written or read. A replica answers a read in a partition only once its own version vector there covers
the token's: until then the read waits (bounded) or raises ``SessionLagging``.

Example:
    >>> s = Session()
    >>> s.observe(3, {"a.1": 4})
    >>> s.observe(3, {"a.1": 2, "b.1": 1})
    >>> s.token[3]
    {'a.1': 4, 'b.1': 1}
    >>> s.missing(3, {"a.1": 4})
    {'b.1': (1, 0)}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Session"]


@dataclass
class Session:
    """What one client has written and read, to carry across replicas (see the module docstring)."""

    token: dict[int, dict[str, int]] = field(default_factory=dict)

    def observe(self, partition: int, vector: Mapping[str, int]) -> None:
        """Raise the token of ``partition`` to cover ``vector`` (after a write or a read)."""
        mine = self.token.setdefault(partition, {})
        for origin, seq in vector.items():
            if mine.get(origin, 0) < seq:
                mine[origin] = seq

    def missing(self, partition: int, vector: Mapping[str, int]) -> dict[str, tuple[int, int]]:
        """What ``vector`` lacks of the token in ``partition``: origin -> (needed, present)."""
        return {
            origin: (seq, vector.get(origin, 0))
            for origin, seq in self.token.get(partition, {}).items()
            if vector.get(origin, 0) < seq
        }

    def dumps(self) -> str:
        """The token as JSON text, to hand to another process.

        Example:
            >>> Session.loads(Session({1: {"a.1": 2}}).dumps()).token
            {1: {'a.1': 2}}
        """
        return json.dumps({str(p): v for p, v in self.token.items()}, sort_keys=True)

    @classmethod
    def loads(cls, text: str) -> Session:
        """A session from ``dumps()`` text."""
        return cls({int(p): {str(o): int(n) for o, n in v.items()} for p, v in json.loads(text).items()})
