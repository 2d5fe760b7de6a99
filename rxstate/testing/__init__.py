"""Testing state correctness: record what agents did, inject faults, check the history, and see why it failed.

Importing ``rxstate.testing`` (and its modules) never imports pytest: the fixtures live in the pytest plugin
``rxstate.testing.plugin``, which pytest loads by itself (entry point ``pytest11``).

- ``record(store)`` — a store whose collections record every read and write into a ``History``.
- ``rxstate.testing.faults`` — kill, pause and restart a test server, a lossy TCP proxy, ``CLIENT KILL``,
  and a seeded ``Schedule`` that applies them while a workload runs.
- ``rxstate.testing.checkers`` — registers and entities (linearizability), counters, sets (set-full),
  queues and streams, bank, read-your-writes and monotonic reads; partitions checked in parallel.
- ``rxstate.testing.timeline`` — a verdict as a plain-text report or an HTML timeline.
- ``SentinelGroup`` — a primary, replicas and three Sentinels, for ``redis+sentinel://`` stores and failovers.
- ``workload(...)`` — the pytest surface: run agent code under a fault schedule and fail with the timeline.

Example:
    >>> import fakeredis, rxstate
    >>> class Cell(rxstate.Model):
    ...     value: int = 0
    >>> store = record(rxstate.connect(fakeredis.FakeRedis(), cache=False))
    >>> cells = store.collection("cells", Cell)
    >>> _ = cells.put("c", Cell(value=1)); cells.get("c").value
    1
    >>> checkers.linearizable().check(store.history).valid
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import checkers, faults, timeline
from .linearizability import History, Op
from .recorder import RecordedCollection, RecordedStore, record
from .workload import Workload, WorkloadSpec, workload

if TYPE_CHECKING:
    from rxstate.server.embedded import EmbeddedServer

    from .backend import Backend
    from .sentinel import SentinelGroup
    from .servers import LocalCluster

__all__ = [
    "Backend",
    "EmbeddedServer",
    "History",
    "LocalCluster",
    "Op",
    "RecordedCollection",
    "RecordedStore",
    "SentinelGroup",
    "Workload",
    "WorkloadSpec",
    "checkers",
    "faults",
    "record",
    "timeline",
    "workload",
]


def __getattr__(name: str) -> Any:
    # The server helpers load on first use: importing the checkers alone starts nothing and needs no server.
    if name == "Backend":
        from .backend import Backend

        return Backend
    if name == "LocalCluster":
        from .servers import LocalCluster

        return LocalCluster
    if name == "SentinelGroup":
        from .sentinel import SentinelGroup

        return SentinelGroup
    if name == "EmbeddedServer":
        from rxstate.server.embedded import EmbeddedServer

        return EmbeddedServer
    raise AttributeError(f"module 'rxstate.testing' has no attribute {name!r}")
