"""A tenant's read costs: entities and events its stores read, and their bytes, per partition.

Writes are counted by the write script, atomically with the write. Reads are plain ``HGETALL``,
``HMGET`` and ``XRANGE`` calls, and they stay so: making every read a script call would cost every
read more than the counting is worth (a script call per read instead of a command, and no
pipelining of reads with other commands). So a tenant's store counts its reads here, in memory
(``Store.read_meter``: each entity hash and each event entry read from the server, cache hits aside),
and adds them to each partition's read-cost hash with ``HINCRBY`` — one pipelined round trip per
``interval`` seconds at most, from a background thread, and once more when the store closes.

What that means for the figures: read costs are **flushed, not atomic with the reads**. They lag the
reads by up to ``interval`` seconds; a process that dies loses the counts it had not flushed yet (at
most ``interval`` seconds of its reads); a flush that fails (the server unreachable) keeps its counts
and adds them with the next one (so a flush whose reply alone was lost counts twice). Index lookups
and id listings (``where``, ``ids``, ``count``) and the change feed are not counted; the entities a
query then fetches are.

The hash, ``rx:{<ns>/<tenant>:<p>}:_treads`` (fields ``rops``: reads, ``rb``: bytes read), is its own
key rather than fields of the tenant hash: every principal of the tenant adds to it, readers too, and
a reader's ACL grants it this key, not the tenant hash with its limits.

Example:
    >>> costs = ReadCosts(fakeredis.FakeRedis(), Keyspace("crew/acme", 2), interval=None)
    >>> costs.count("rx:{crew/acme:1}:docs:d1", 120)
    >>> costs.pending()
    {1: (1, 120)}
    >>> costs.flush(), costs.pending()
    (1, {})
    >>> costs.client.hgetall(read_cost_key(costs.keyspace, 1))
    {b'rops': b'1', b'rb': b'120'}
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis

from rxstate.core.keys import Keyspace
from rxstate.core.scripts import is_cluster

__all__ = ["FLUSH_INTERVAL", "READ_BYTES", "READ_OPS", "ReadCosts", "read_cost_key"]

log = logging.getLogger("rxstate.tenancy")

FLUSH_INTERVAL = 1.0
"""Seconds between two flushes of a store's read costs, at most."""
READ_OPS, READ_BYTES = "rops", "rb"


def read_cost_key(ks: Keyspace, partition: int) -> str:
    """The read-cost hash of a tenant's partition.

    Example:
        >>> read_cost_key(Keyspace("crew/acme", 1), 0)
        'rx:{crew/acme:0}:_treads'
    """
    return f"{ks.prefix(partition)}_treads"


def _partition(key: str) -> int:
    """The partition in a key's hash tag (``rx:{ns:p}:...``)."""
    close = key.index("}")
    return int(key[key.rindex(":", 0, close) + 1 : close])


class ReadCosts:
    """The read meter of one tenant's store (see the module docstring).

    Args:
        client: the store's client.
        keyspace: the tenant's keyspace.
        interval: seconds between background flushes (None: only ``flush()`` and ``close()`` flush).
    """

    def __init__(self, client: Any, keyspace: Keyspace, *, interval: float | None = FLUSH_INTERVAL) -> None:
        self.client = client
        self.keyspace = keyspace
        self.interval = interval
        self._pending: dict[int, list[int]] = {}
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def count(self, key: str, nbytes: int, reads: int = 1) -> None:
        """Count ``reads`` reads of ``key`` that returned ``nbytes`` bytes."""
        p = _partition(key)
        with self._lock:
            entry = self._pending.get(p)
            if entry is None:
                self._pending[p] = [reads, nbytes]
            else:
                entry[0] += reads
                entry[1] += nbytes
            if self._thread is None and self.interval is not None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._loop, name="rxstate-read-costs", daemon=True)
                self._thread.start()

    def pending(self) -> dict[int, tuple[int, int]]:
        """The counts not flushed yet: partition -> (reads, bytes)."""
        with self._lock:
            return {p: (n, b) for p, (n, b) in sorted(self._pending.items())}

    def flush(self) -> int:
        """Add the pending counts to the read-cost hashes in one round trip; the partitions flushed.

        Raises:
            redis.RedisError: the server refused or could not be reached (the counts stay pending).
        """
        with self._flushing:
            with self._lock:
                taken, self._pending = self._pending, {}
            if not taken:
                return 0
            # MULTI/EXEC: all of a flush or none (a cluster cannot: its partitions are in other slots)
            pipe = self.client.pipeline(transaction=not is_cluster(self.client))
            for p, (n, nbytes) in taken.items():
                key = read_cost_key(self.keyspace, p)
                pipe.hincrby(key, READ_OPS, n)
                pipe.hincrby(key, READ_BYTES, nbytes)
            try:
                pipe.execute()
            except redis.RedisError:
                # Refused or unreachable: keep the counts for the next flush rather than lose them (a
                # reply lost after the server applied the flush would count it twice: rarer than a
                # flush that never arrived, and a cost counter errs better high than low).
                with self._lock:
                    for p, (n, nbytes) in taken.items():
                        entry = self._pending.setdefault(p, [0, 0])
                        entry[0] += n
                        entry[1] += nbytes
                raise
            return len(taken)

    def _loop(self) -> None:
        assert self.interval is not None
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except redis.RedisError as exc:  # kept pending: the next round adds them
                log.warning("tenant read costs of %s not flushed yet: %s", self.keyspace.namespace, exc)

    def close(self) -> None:
        """Stop the background flushes and flush what is pending (a store service's stop)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)
        try:
            self.flush()
        except redis.RedisError as exc:
            log.warning("tenant read costs of %s lost at close: %s (%s)", self.keyspace.namespace, self.pending(), exc)
