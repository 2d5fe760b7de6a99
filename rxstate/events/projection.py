"""Projections: a subscription fed to a handler, with a persistent checkpoint per partition.

A ``Projection`` stores, per partition, the stream id of the last event the handler finished
(``rx:{ns:p}:_ckpt:<name>``). A restart resumes after it: an event is never skipped. A handler that
raises leaves its event unrecorded, to be handled again on the next run.

- A plain handler (``handler(event)``, any side effects) is followed by the checkpoint write: an event
  is handled twice only if the process dies between the handler's return and that one write.
- An atomic handler (``atomic=True``: ``handler(event, batch)``) reads and writes entities through a
  ``ProjectionBatch``; ``project.lua`` applies the writes through ``mutate.lua`` and moves the
  checkpoint in the same call, only from the position the runner last saw (and only if the entities
  read are unchanged; else the event is handled again). Each event's writes then happen exactly
  once, across crashes and across runners racing on one projection. (On a cluster, the written
  entities must share the event's partition: a read model keyed by the aggregate id does.)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rxstate.core.errors import ClusterError, ConflictError, NotFound, ValidationError
from rxstate.core.keys import validate_collection_name
from rxstate.core.writes import WriteOp
from rxstate.events.subscriptions import Subscription, subscribe_log
from rxstate.events.types import RecordedEvent

if TYPE_CHECKING:
    from rxstate.store.collection import Collection
    from rxstate.store.store import Store

__all__ = ["Projection", "ProjectionBatch"]

log = logging.getLogger("rxstate.events")


class ProjectionBatch:
    """The entity reads and writes an atomic projection handler makes for one event.

    An entity read with ``get`` is written back only if it is still at the version read (an older
    cached value, or a change by someone else, makes the runner handle the event again), so a
    read-modify-write of a read model is exact.

    Example:
        >>> counts = store.collection("counts", Order)
        >>> def count_items(event, batch):
        ...     old = batch.get(counts, event.aggregate_id, Order())
        ...     batch.put(counts, event.aggregate_id, Order(items=old.items + 1))
        >>> _ = orders.append("o1", [Placed(sku="apple"), Paid(amount_cents=250)])
        >>> orders.project("counter", count_items, atomic=True).run(), counts.get("o1").items
        (2, 2)
    """

    def __init__(self) -> None:
        self.ops: list[WriteOp] = []
        self._read: dict[tuple[str, str], int] = {}

    def get(self, collection: Collection[Any], entity_id: str, default: Any = None) -> Any:
        """An entity's value (``default`` if absent), remembering its version for the writes.

        Example:
            >>> batch = ProjectionBatch()
            >>> batch.get(tasks, "t1", Task(title="none yet"))
            Task(title='none yet', owner=None, done=False)
        """
        try:
            current = collection.get_versioned(entity_id)
        except NotFound:
            self._read[(collection.name, entity_id)] = 0
            return default
        self._read[(collection.name, entity_id)] = current.version
        return current.value

    def put(self, collection: Collection[Any], entity_id: str, value: Any) -> None:
        """Store ``value`` under ``entity_id`` in ``collection`` (validated now, written with the checkpoint).

        Example:
            >>> batch = ProjectionBatch()
            >>> batch.put(tasks, "t1", Task(title="review"))
            >>> len(batch.ops)  # written with the checkpoint
            1
        """
        expected = self._read.get((collection.name, entity_id))
        self.ops.append(collection.put_op(entity_id, value, expected_version=expected))

    def delete(self, collection: Collection[Any], entity_id: str) -> None:
        """Delete an entity.

        Example:
            >>> batch = ProjectionBatch()
            >>> batch.delete(tasks, "t1")
            >>> len(batch.ops)  # written with the checkpoint
            1
        """
        expected = self._read.get((collection.name, entity_id))
        self.ops.append(collection.delete_op(entity_id, expected_version=expected))


class Projection:
    """A handler fed with events in order, resuming after its stored checkpoint.

    Args:
        store: the store.
        name: the projection's name (its checkpoints are ``rx:{ns:p}:_ckpt:<name>``).
        handler: called with each ``RecordedEvent`` (and a ``ProjectionBatch`` when ``atomic``).
        collection: only this event collection's events (None: every event of the namespace).
        block: seconds a live step waits for new events.
        atomic: the handler's entity writes and the checkpoint are applied in one script call.

    Example:
        >>> _ = orders.append("o1", [Placed(sku="apple")])
        >>> seen = []
        >>> proj = orders.project("seen", lambda e: seen.append(e.type))
        >>> proj.run()  # handles every stored event, then returns how many
        1
        >>> _ = proj.start()  # live, in a thread
        >>> _ = orders.append("o1", [Paid(amount_cents=250)])
        >>> proj.wait_idle(timeout=5), seen
        (True, ['Placed', 'Paid'])
        >>> proj.stop()
    """

    def __init__(
        self,
        store: Store,
        name: str,
        handler: Callable[..., Any],
        *,
        collection: str | None = None,
        block: float = 0.5,
        atomic: bool = False,
    ) -> None:
        self.name = validate_collection_name(name)
        if not callable(handler):
            raise ValidationError("a projection handler must be callable")
        self.handler = handler
        self.collection = collection
        self.handled = 0
        self._store = store
        self._ks = store.keyspace
        self._block = block
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self.atomic = atomic
        self._seen: dict[int, str] = {}

    def checkpoint(self) -> dict[int, str]:
        """The stored position: the last handled event's stream id, per partition.

        Example:
            >>> result = orders.append("o1", [Placed(sku="apple")])
            >>> proj = orders.project("seen", lambda e: None)
            >>> proj.run()
            1
            >>> proj.checkpoint()[orders.partition("o1")] == result.positions[-1]
            True
        """
        pipe = self._store.client.pipeline(transaction=False)
        for p in range(self._ks.partitions):
            pipe.get(self._ks.checkpoint(self.name, p))
        return {p: (v.decode() if v else "start") for p, v in enumerate(pipe.execute())}

    def reset(self) -> None:
        """Forget the checkpoint: the next run handles every event again.

        Example:
            >>> _ = orders.append("o1", [Placed(sku="apple")])
            >>> proj = orders.project("seen", lambda e: None)
            >>> proj.run(), proj.run()
            (1, 0)
            >>> proj.reset()
            >>> proj.run()  # rebuilt from the first event
            1
        """
        pipe = self._store.client.pipeline(transaction=False)
        for p in range(self._ks.partitions):
            pipe.delete(self._ks.checkpoint(self.name, p))
        pipe.execute()

    def _subscription(self) -> Subscription:
        stored = self.checkpoint()
        self._seen = {p: ("" if v == "start" else v) for p, v in stored.items()}
        return subscribe_log(self._store, collection=self.collection, after=stored, block=self._block)

    def _handle(self, events: list[RecordedEvent]) -> None:
        client = self._store.client
        for event in events:
            key = self._ks.checkpoint(self.name, event.partition)
            if self.atomic:
                self._apply_atomically(event, key)
            else:
                self.handler(event)
                client.set(key, event.position)
            self._seen[event.partition] = event.position
            self.handled += 1

    def _apply_atomically(self, event: RecordedEvent, checkpoint_key: str, attempts: int = 16) -> None:
        store = self._store
        expected = self._seen.get(event.partition, "")  # another runner moving it raises ConflictError
        for attempt in range(attempts):
            batch = ProjectionBatch()
            self.handler(event, batch)
            partitions = sorted({event.partition, *(op.partition for op in batch.ops)})
            if store.is_cluster and len(partitions) > 1:
                raise ClusterError(
                    f"projection {self.name!r}: on a cluster, write only entities of the event's partition "
                    f"({event.partition}), not of partitions {partitions}",
                    name=self.name,
                    partitions=partitions,
                )
            keys, args = store.writer.pack(batch.ops)
            run_keys, run_args = [*keys, checkpoint_key], [expected, event.position, *args]
            try:
                store.writer.call("project", run_keys, run_args, writes=batch.ops)
                return
            except ConflictError as exc:
                if exc.key == checkpoint_key or attempt == attempts - 1:
                    raise

    def run(self) -> int:
        """Handle every event after the checkpoint, then return how many were handled.

        Raises:
            Exception: whatever the handler raised (the failed event stays unhandled).

        Example:
            >>> _ = orders.append("o1", [Placed(sku="apple"), Paid(amount_cents=250)])
            >>> orders.project("seen", lambda e: None).run()
            2
        """
        before = self.handled
        sub = self._subscription()
        while batch := sub.poll(timeout=0):
            self._handle(batch)
        return self.handled - before

    def start(self) -> Projection:
        """Run in a background thread: catch up, then follow new events until ``stop``.

        Example:
            >>> proj = orders.project("printer", lambda e: print(e.type)).start()
            >>> _ = orders.append("o1", [Placed(sku="apple")])
            >>> proj.wait_idle(timeout=5)
            Placed
            True
            >>> proj.stop()
        """
        if self._thread is not None:
            raise ValidationError(f"projection {self.name!r} is already running")
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"rxstate-projection-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        sub = self._subscription()
        try:
            while not self._stop.is_set():
                self._handle(sub.poll(timeout=self._block))
        except BaseException as exc:  # surfaced through .error and stop()
            self.error = exc
            log.error("projection %s stopped: %r", self.name, exc)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the background thread (after the event it is handling); re-raise its error if it died.

        Example:
            >>> proj = orders.project("seen", lambda e: None).start()
            >>> proj.stop()
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Block until the projection has handled every event stored so far (True), or time is up.

        Example:
            >>> proj = orders.project("seen", lambda e: None).start()
            >>> _ = orders.append("o1", [Placed(sku="apple")])
            >>> proj.wait_idle(timeout=5), proj.handled
            (True, 1)
            >>> proj.stop()
        """
        deadline = time.monotonic() + timeout
        target = _log_tails(self._store)
        while time.monotonic() < deadline:
            if self.error is not None:
                return False
            done = self.checkpoint()
            if all(_reached(done.get(p, "start"), sid, self._store, self._ks.event_log(p), self.collection)
                   for p, sid in target.items()):  # fmt: skip
                return True
            time.sleep(0.01)
        return False


def _log_tails(store: Store) -> dict[int, str]:
    """The last stream id of every non-empty partition log."""
    ks = store.keyspace
    pipe = store.client.pipeline(transaction=False)
    for p in range(ks.partitions):
        pipe.xrevrange(ks.event_log(p), "+", "-", count=1)
    return {p: last[0][0].decode() for p, last in enumerate(pipe.execute()) if last}


def _reached(done: str, target: str, store: Store, key: str, collection: str | None) -> bool:
    if done != "start" and _cmp(done) >= _cmp(target):
        return True
    # Events of other collections after the checkpoint do not count.
    lo = "-" if done == "start" else "(" + done
    for _sid, fields in store.client.xrange(key, lo, target):
        if collection is None or fields.get(b"g") == collection.encode():
            return False
    return True


def _cmp(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)
