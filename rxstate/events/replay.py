"""Rebuilding an event-sourced aggregate's state: load, replay to a version or a time, snapshots.

State is rebuilt from the latest snapshot (or from this process's last state of the aggregate) plus
the events after it; ``EventCollection`` gets these reads (and those of ``EventReads``) from here.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from cachetools import LRUCache

from rxstate.core.errors import NotFound, ValidationError
from rxstate.core.keys import validate_id
from rxstate.core.model import Model
from rxstate.core.versioned import Versioned
from rxstate.events.query import to_ms
from rxstate.events.reads import EventReads
from rxstate.events.snapshots import Folded, Snapshot, Snapshots, fold_stream
from rxstate.events.types import parse_meta, stream_id_ms

if TYPE_CHECKING:
    pass

__all__ = ["EventReplay"]

S = TypeVar("S", bound=Model)


class EventReplay(EventReads[S]):
    """Loading and replaying the aggregates of one event collection (a part of ``EventCollection``).

    Example:
        >>> _ = orders.append("o1", [Placed(sku="apple"), Paid(amount_cents=250)])
        >>> orders.load("o1").value.status, orders.replay("o1", to_version=1).value.status
        ('paid', 'placed')
    """

    snapshot_every: int | None
    _snapshots: Snapshots[S]
    _recent: LRUCache[str, Folded[S]] | None
    _recent_lock: threading.Lock

    # -- local state of recently used aggregates -------------------------------------------------------
    def _recall(self, aggregate_id: str) -> Folded[S] | None:
        with self._recent_lock:
            return self._recent.get(aggregate_id) if self._recent is not None else None

    def _remember(self, aggregate_id: str, folded: Folded[S]) -> None:
        if self._recent is not None and folded.version > 0:
            with self._recent_lock:
                self._recent[aggregate_id] = folded

    def _forget(self, aggregate_id: str) -> None:
        if self._recent is not None:
            with self._recent_lock:
                self._recent.pop(aggregate_id, None)

    def forget(self, aggregate_id: str) -> None:
        """Drop the state of ``aggregate_id`` this process remembers (its next load reads the store).

        Erasure (``rxstate.admin.erase``) calls it in the erasing process; other processes that loaded
        the aggregate keep their folded state in memory until they call it or restart.
        """
        self._forget(aggregate_id)

    # -- replay --------------------------------------------------------------------------------------
    def _fold(self, key: str, start: Folded[S], **bounds: Any) -> Folded[S]:
        return fold_stream(self._store, key, self.types, self.reducer, start, **bounds)

    def _load(self, aggregate_id: str, p: int) -> Folded[S]:
        """The current state: from this process's last state of the aggregate (or else its snapshot),
        plus the events after it; writes a snapshot once ``snapshot_every`` events are not covered."""
        key = self._ks.event_stream(self.name, aggregate_id, p)
        cached = self._recall(aggregate_id)
        if cached is not None:
            folded = self._fold(key, cached)
            # Streams are append-only; should one be rebuilt under this process, the version inside
            # the last event tells: start over from the stored snapshot.
            if folded.applied == 0 or (folded.meta is not None and parse_meta(folded.meta)[4] == folded.version):
                return self._keep(aggregate_id, p, folded)
            self._forget(aggregate_id)
        snap = self._snapshots.read(aggregate_id, p)
        start: Folded[S] = Folded(self.initial, 0, "")
        if snap is not None:
            start = Folded(snap.state, snap.version, snap.position, None, snap, 0, snap.version)
        return self._keep(aggregate_id, p, self._fold(key, start))

    def _keep(self, aggregate_id: str, p: int, folded: Folded[S]) -> Folded[S]:
        every = self.snapshot_every
        if every is not None and folded.version - folded.snapshot_version >= every:
            self._save_snapshot(aggregate_id, p, folded)
            folded.snapshot_version = folded.version
        self._remember(aggregate_id, folded)
        return folded

    def _save_snapshot(self, aggregate_id: str, p: int, folded: Folded[S]) -> bool:
        if folded.version == 0 or folded.state is None or folded.meta is None:
            return False
        _eid, actor, *_ = parse_meta(folded.meta)
        return self._snapshots.write(
            aggregate_id, p, folded.state, version=folded.version, position=folded.position,
            timestamp_ms=stream_id_ms(folded.position), actor=actor,
        )  # fmt: skip

    def _versioned(self, aggregate_id: str, folded: Folded[S]) -> Versioned[S]:
        if folded.version == 0 or folded.state is None:
            raise NotFound(f"{self.name} {aggregate_id!r} has no events", key=self.key(aggregate_id))
        if folded.meta is not None:
            actor = parse_meta(folded.meta)[1]
        elif folded.snapshot is not None:
            actor = folded.snapshot.actor
        else:
            actor = ""
        return Versioned(
            id=aggregate_id,
            value=folded.state,
            version=folded.version,
            schema_version=self.state.__version__,
            timestamp_ms=stream_id_ms(folded.position),
            actor=actor,
            offset=folded.position,
        )

    def load(self, aggregate_id: str) -> Versioned[S]:
        """The current state: the latest snapshot plus the events after it.

        When this process computed the aggregate's state recently (see ``cache_size``), only the events
        after that state are read. A snapshot is written once ``snapshot_every`` events are not covered
        by one.

        Raises:
            NotFound: the aggregate has no events.

        Example:
            >>> _ = orders.append("o1", [Placed(sku="apple"), Paid(amount_cents=250)])
            >>> v = orders.load("o1")
            >>> v.version, v.value.status
            (2, 'paid')
        """
        validate_id(aggregate_id)
        return self._versioned(aggregate_id, self._load(aggregate_id, self.partition(aggregate_id)))

    def get(self, aggregate_id: str) -> S:
        """The current state (``load(id).value``).

        Example:
            >>> _ = orders.append("o1", [Placed(sku="apple"), Paid(amount_cents=250)])
            >>> orders.get("o1").status
            'paid'
        """
        return self.load(aggregate_id).value

    def replay(self, aggregate_id: str, *, to_version: int | None = None, use_snapshots: bool = True) -> Versioned[S]:
        """The state after the first ``to_version`` events (all of them by default).

        Args:
            aggregate_id: the aggregate id.
            to_version: stop after this many events.
            use_snapshots: start from the snapshot when it does not go past ``to_version``; False
                replays every event from the first.

        Raises:
            NotFound: the aggregate has no events (or ``to_version`` is 0).

        Example:
            >>> _ = orders.append("o1", [Placed(sku="apple"), Paid(amount_cents=250)])
            >>> orders.replay("o1", to_version=1).value.status
            'placed'
        """
        validate_id(aggregate_id)
        if to_version is not None and (
            isinstance(to_version, bool) or not isinstance(to_version, int) or to_version < 0
        ):
            raise ValidationError(f"to_version must be a non-negative int, not {to_version!r}")
        p = self.partition(aggregate_id)
        snap = self._snapshots.read(aggregate_id, p) if use_snapshots else None
        start: Folded[S] = Folded(self.initial, 0, "")
        if snap is not None and (to_version is None or snap.version <= to_version):
            start = Folded(snap.state, snap.version, snap.position, None, snap)
        key = self._ks.event_stream(self.name, aggregate_id, p)
        return self._versioned(
            aggregate_id,
            self._fold(key, start, to_version=to_version),
        )

    def state_at(self, aggregate_id: str, *, time: datetime | int | float) -> Versioned[S]:
        """The state as it was at a point in time (events appended at or before it).

        Args:
            aggregate_id: the aggregate id.
            time: a datetime (naive means UTC), or ms since the epoch as an int, or seconds as a float.

        Raises:
            NotFound: the aggregate had no events then.

        Example:
            >>> _ = orders.append("o1", [Placed(sku="apple"), Paid(amount_cents=250)])
            >>> orders.state_at("o1", time=datetime.now(UTC)).version
            2
            >>> orders.state_at("o1", time=datetime(2020, 1, 1, tzinfo=UTC))
            Traceback (most recent call last):
            ...
            rxstate.core.errors.NotFound: ...
        """
        validate_id(aggregate_id)
        until = to_ms(time)
        p = self.partition(aggregate_id)
        snap = self._snapshots.read(aggregate_id, p)
        start: Folded[S] = Folded(self.initial, 0, "")
        if snap is not None and stream_id_ms(snap.position) <= until:
            start = Folded(snap.state, snap.version, snap.position, None, snap)
        key = self._ks.event_stream(self.name, aggregate_id, p)
        return self._versioned(aggregate_id, self._fold(key, start, until_ms=until))

    def snapshot(self, aggregate_id: str) -> int:
        """Take a snapshot of the current state now; returns the version it covers.

        Example:
            >>> _ = orders.append("o1", [Placed(sku="apple"), Paid(amount_cents=250)])
            >>> orders.snapshot("o1")
            2
        """
        validate_id(aggregate_id)
        p = self.partition(aggregate_id)
        folded = self._load(aggregate_id, p)
        if folded.version > folded.snapshot_version:
            self._save_snapshot(aggregate_id, p, folded)
            folded.snapshot_version = folded.version
        return folded.version

    def last_snapshot(self, aggregate_id: str) -> Snapshot[S] | None:
        """The aggregate's usable snapshot, if any (for inspection).

        Example:
            >>> _ = orders.append("o1", [Placed(sku="apple"), Paid(amount_cents=250)])
            >>> orders.last_snapshot("o1") is None
            True
            >>> _ = orders.snapshot("o1")
            >>> orders.last_snapshot("o1").state.status
            'paid'
        """
        validate_id(aggregate_id)
        return self._snapshots.read(aggregate_id, self.partition(aggregate_id))
