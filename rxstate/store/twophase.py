"""Cross-partition commits: two-phase, with intents and one decision record (in the style of Percolator).

A transaction whose entities sit in several partitions (several cluster slots) cannot commit in one
script call. It commits in steps, each one script call in one partition:

1. **prepare** every partition (pipelined, one round trip): check every version and constraint there,
   lock the entities with an intent marker (hash field ``_t = "<txid>@<primary>"``) and store the
   partition's writes as a payload; the primary partition (the first one the transaction writes to) also
   creates the **transaction record** (status ``pending``, a deadline);
2. **commit**: compare-and-set the record from ``pending`` to ``committed``; this is the commit point;
3. **resolve** every partition: apply its payload (version bumps, indexes, change records that carry the
   transaction id and partition count) and release its intents;
4. **forget** the record.

If a check fails in step 1, the record is set to ``aborted`` and the prepared partitions release their
intents without writing. A client that dies at any step leaves intents behind; whoever meets one settles
it from the record: **rolls forward** if committed, **rolls back** if aborted or pending past its deadline
(that abort is the same compare-and-set as the commit, so only one can win). A missing record reads as
aborted and leaves an ``aborted`` tombstone for a while, so that a primary partition that had not
prepared yet cannot prepare any more. A reader that meets the intent of a pending, unexpired transaction
sees the value from before it (the transaction has not committed yet); a writer waits for it. ``sweep``
settles abandoned transactions in the background.

Fault injection: set ``rxstate.twophase.fault_hook`` to a callable; it is called with the name of each
step just completed (``"prepared:<p>"`` per partition, ``"committed"``, ``"resolved:<p>"`` per
partition, ``"forgotten"``), and while it is set each partition is prepared and resolved in its own round
trip (the primary last, so that a stop can also leave other partitions prepared without a record), so a
test can stop the process between any two steps.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from rxstate.core.errors import ConflictError, RxStateError, TransactionPending
from rxstate.core.waiting import pause
from rxstate.core.writes import HeaderSection, WriteOp, WriteResult

if TYPE_CHECKING:
    from rxstate.store.store import Store
    from rxstate.store.writer import WriteCall

__all__ = ["INTENT_FIELD", "commit", "fault_hook", "run_past_intents", "settle", "settle_listed", "sweep"]

INTENT_FIELD = b"_t"
fault_hook: Callable[[str], None] | None = None
log = logging.getLogger("rxstate.twophase")
T = TypeVar("T")
_TOMBSTONE_MS = 10 * 60 * 1000  # far longer than any prepare can be in flight


def _step(name: str) -> None:
    if fault_hook is not None:
        fault_hook(name)


def _split_owner(owner: str) -> tuple[str, int]:
    txid, _, primary = owner.rpartition("@")
    return txid, int(primary)


def _txn_section(
    store: Store, step: str, txid: str, partition: int, primary: int, fields: Mapping[str, str], ttl: str
) -> HeaderSection:
    """The "txn" header section of a ``txn.lua`` call: the step, its payload fields and its keys."""
    ks = store.keyspace
    payload = ks.tx_payload(partition, txid)
    record = ks.tx_record(partition, txid) if partition == primary else payload
    args: list[Any] = ["txn", step, ttl, len(fields)]
    for name, value in fields.items():
        args += (name, value)
    return (payload, ks.tx_index(partition), record), args


def _for_resolve(op: WriteOp) -> WriteOp:
    """An op as applied at resolution: versions, fences and constraints were checked at prepare (which
    also recorded the fencing tokens), while the entities stayed locked; what is left is to write."""
    return replace(
        op,
        kind="put" if op.kind == "create" else op.kind,
        expected=None,
        want_full=False,
        full_unless=None,
        fence=None,
        constraint_keys=(),
        constraint_args=(),
    )


def _dump(ops: Sequence[WriteOp]) -> str:
    """The payload of prepared ops: every field of each ``WriteOp``, so no section of a write is lost."""
    return json.dumps([{f.name: _to_json(getattr(op, f.name)) for f in dataclasses.fields(WriteOp)} for op in ops])


def _to_json(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"b": value.decode("latin-1")}  # every byte value maps to one code point and back
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        return value["b"].encode("latin-1")
    if isinstance(value, list):
        return tuple(_from_json(v) for v in value)
    return value


def _load(text: bytes | str, partition: int) -> list[WriteOp]:
    decoded = [{name: _from_json(value) for name, value in fields.items()} for fields in json.loads(text)]
    return [replace(WriteOp(**fields), partition=partition) for fields in decoded]


def _record(store: Store, primary: int, txid: str, action: str) -> tuple[str, list[int]]:
    ks = store.keyspace
    keys = [ks.tx_record(primary, txid), ks.tx_index(primary)]
    status, parts = store.writer.call("tx_record", keys, [action, txid, _TOMBSTONE_MS], settle=False)
    parts = parts.decode() if isinstance(parts, bytes) else parts
    return (status.decode() if isinstance(status, bytes) else status), [int(p) for p in parts.split(",") if p]


def resolve_partition(store: Store, partition: int, txid: str, *, commit: bool) -> None:
    """Apply (``commit``) or release the prepared writes of ``txid`` in one partition; idempotent."""
    payload = store.client.hgetall(store.keyspace.tx_payload(partition, txid))
    if not payload:
        return  # already resolved
    owner = payload[b"owner"].decode()
    ops = _load(payload[b"ops"], partition)
    if not commit:
        ops = [replace(op, kind="check", sets=(), incrs=(), indexes=()) for op in ops]
    section = _txn_section(store, "resolve", txid, partition, _split_owner(owner)[1], {"owner": owner}, "-")
    store.writer.mutate(ops, txid=txid, nparts=int(payload[b"n"]), script="txn", header=[section])


def settle(store: Store, key: str, raw: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """The hash of an entity as readers must see it, given a read that found an intent on it.

    Settles the transaction from its record (rolling it forward or back) and reads again; for a pending
    transaction, returns the value from before it (a placeholder of a new entity reads as absent).
    """
    for _ in range(16):
        owner = raw.get(INTENT_FIELD)
        if owner is None:
            return raw
        txid, primary = _split_owner(owner.decode())
        status, _parts = _record(store, primary, txid, "status")
        if status == "pending":
            return {k: v for k, v in raw.items() if k != INTENT_FIELD} if b"_v" in raw else {}
        parsed = store.keyspace.parse_entity(key)
        if parsed is None:
            raise RxStateError(f"{key} is not an entity key")
        resolve_partition(store, parsed[0], txid, commit=status == "committed")
        raw = store.client.hgetall(key)
    raise TransactionPending(f"{key} keeps being locked by new transactions", key=key)


def _clear(store: Store, exc: TransactionPending) -> bool:
    """Settle the transaction behind ``exc``; False if it is still pending."""
    txid, primary = _split_owner(exc.owner)
    status, _parts = _record(store, primary, txid, "status")
    if status == "pending":
        return False
    parsed = store.keyspace.parse_entity(exc.key or "")
    if parsed is not None:
        resolve_partition(store, parsed[0], txid, commit=status == "committed")
    return True


def run_past_intents(store: Store, fn: Callable[[], T], *, patience: float = 30.0) -> T:
    """Run ``fn`` (a script call), settling or waiting out the transactions whose intents refuse it."""
    deadline = time.monotonic() + patience
    delay = 0.0005
    while True:
        try:
            return fn()
        except TransactionPending as exc:
            if _clear(store, exc):
                continue
            if time.monotonic() >= deadline:
                raise
            pause(delay)
            delay = min(delay * 2, 0.05)


def commit(
    store: Store, txid: str, groups: Mapping[int, Sequence[WriteOp]], *, ttl_ms: int
) -> dict[int, list[WriteResult]]:
    """Commit a transaction's ops, grouped by partition, with the two-phase protocol.

    Returns each partition's write results. Raises the error that refused a prepare (a ``ConflictError``
    names the stale keys of every partition), and nothing is written then.
    """
    writers = sorted(p for p, ops in groups.items() if any(op.kind != "check" for op in ops))
    primary = writers[0] if writers else min(groups)
    owner = f"{txid}@{primary}"
    fields = {"owner": owner, "parts": ",".join(map(str, sorted(groups))), "n": str(len(writers))}
    order = [primary, *sorted(p for p in groups if p != primary)]
    patience = min(ttl_ms / 1000, 0.25)
    prepared: list[int] = []
    try:
        for batch in (order,) if fault_hook is None else ([p] for p in [*order[1:], primary]):
            failures = _prepare(store, txid, batch, groups, primary, fields, ttl_ms, patience)
            prepared += [p for p in batch if p not in failures]
            if failures:
                errors = list(failures.values())
                if all(type(e) is ConflictError for e in errors):  # name the stale keys not checked yet
                    rest = [op for q in order if q not in prepared and q not in failures for op in groups[q]]
                    errors += _stale(store, rest)
                raise _merge(errors)
            for p in batch:
                _step(f"prepared:{p}")
    except BaseException as exc:
        # A refused prepare wrote nothing; after any other failure a call may have run unanswered, so
        # release every partition (releasing one that holds nothing of ours is a no-op).
        targets = prepared if isinstance(exc, RxStateError) else order
        if targets:
            _abort(store, txid, primary, targets)
        raise
    status, _parts = _record(store, primary, txid, "commit")
    if status != "committed":  # expired and aborted by someone else before we could commit
        _abort(store, txid, primary, prepared)
        keys = [store.keyspace.entity(op.collection, op.id, op.partition) for ops in groups.values() for op in ops]
        raise ConflictError(f"transaction {txid} expired before it could commit", key=keys)
    _step("committed")
    results: dict[int, list[WriteResult]] = {}
    for batch in (order,) if fault_hook is None else ([p] for p in order):
        calls = []
        for p in batch:
            section = _txn_section(store, "resolve", txid, p, primary, {"owner": owner}, "-")
            calls.append(_call(store, [_for_resolve(op) for op in groups[p]], section, txid, len(writers)))
        for p, reply in zip(batch, store.writer.call_many(calls), strict=True):
            if isinstance(reply, BaseException):  # settled later by a reader or the sweep
                continue
            results[p] = [WriteResult.from_reply(r) for r in reply]
            _step(f"resolved:{p}")
    store.writer.forget([op for ops in groups.values() for op in ops])
    _record(store, primary, txid, "forget")
    _step("forgotten")
    return results


def _call(store: Store, ops: Sequence[WriteOp], section: HeaderSection, txid: str, nparts: int) -> WriteCall:
    return ("txn", *store.writer.pack(ops, txid=txid, nparts=nparts, header=[section]))


def _prepare(
    store: Store,
    txid: str,
    partitions: Sequence[int],
    groups: Mapping[int, Sequence[WriteOp]],
    primary: int,
    fields: Mapping[str, str],
    ttl_ms: int,
    patience: float,
) -> dict[int, BaseException]:
    """Prepare some partitions in one round trip; returns the errors of those that refused."""
    payload_fields = dict(fields)
    calls = []
    for p in partitions:
        payload_fields["ops"] = _dump([_for_resolve(op) for op in groups[p]])
        section = _txn_section(store, "prepare", txid, p, primary, payload_fields, str(ttl_ms))
        calls.append(_call(store, groups[p], section, txid, int(fields["n"])))
    failures: dict[int, BaseException] = {}
    for p, call, reply in zip(partitions, calls, store.writer.call_many(calls), strict=True):
        if isinstance(reply, TransactionPending):
            try:
                store.writer.call(*call, patience=patience)
            except BaseException as exc:
                failures[p] = exc
        elif isinstance(reply, BaseException):
            failures[p] = reply
    return failures


def _stale(store: Store, ops: Sequence[WriteOp]) -> list[BaseException]:
    """A ``ConflictError`` for each check op whose entity has moved on (for the error of a failed prepare)."""
    checks = [op for op in ops if op.kind == "check"]
    if not checks:
        return []
    ks = store.keyspace
    pipe = store.client.pipeline(transaction=False)
    for op in checks:
        pipe.hget(ks.entity(op.collection, op.id, op.partition), "_v")
    out: list[BaseException] = []
    for op, version in zip(checks, pipe.execute(), strict=True):
        actual = int(version or 0)
        if actual != op.expected:
            key = ks.entity(op.collection, op.id, op.partition)
            out.append(
                ConflictError(
                    f"{key}: expected version {op.expected}, found {actual}",
                    key=key,
                    expected=op.expected,
                    actual=actual,
                )
            )
    return out


def _merge(errors: list[BaseException]) -> BaseException:
    """One error for the failed prepares: all stale keys in one ``ConflictError`` when they conflict."""
    conflicts = [e for e in errors if type(e) is ConflictError]
    if len(conflicts) != len(errors) or len(conflicts) == 1:
        return next((e for e in errors if type(e) is not ConflictError), errors[0])
    keys: list[Any] = []
    expected: list[Any] = []
    actual: list[Any] = []
    for e in conflicts:
        for attr, out in (("key", keys), ("expected", expected), ("actual", actual)):
            value = getattr(e, attr)
            out.extend(value if isinstance(value, list) else [value])
    return ConflictError("; ".join(str(e) for e in conflicts), key=keys, expected=expected, actual=actual)


def _abort(store: Store, txid: str, primary: int, prepared: Sequence[int]) -> None:
    """Abort a transaction we prepared (best effort: the deadline covers what fails here)."""
    try:
        status, _parts = _record(store, primary, txid, "abort")
        if status == "committed":  # cannot happen for a transaction we have not committed
            raise RxStateError(f"transaction {txid} is committed; refusing to abort it")
        for p in prepared:
            resolve_partition(store, p, txid, commit=False)
        _record(store, primary, txid, "forget")
    except RxStateError:
        raise
    except Exception as exc:  # the server went away: intents expire at their deadline and are settled then
        log.warning("could not abort transaction %s now (%s); its intents are settled after their deadline", txid, exc)


def _finish(store: Store, txid: str, primary: int, partition: int) -> bool:
    """Complete a decided transaction met in ``partition``'s index; False if it is still pending."""
    status, parts = _record(store, primary, txid, "status")
    if status == "pending":
        return False
    for q in parts or [partition]:
        resolve_partition(store, q, txid, commit=status == "committed")
    _record(store, primary, txid, "forget")
    return True


def settle_listed(store: Store, indexes: Sequence[Mapping[bytes, bytes]]) -> bool:
    """Complete the decided transactions in the partitions' intent indexes (``HGETALL`` replies, by
    partition), so that a listing read (ids, where, count) sees committed transactions whole.

    Returns whether anything was completed (the listing must then be read again).
    """
    finished = False
    for p, entries in enumerate(indexes):
        for value in entries.values():
            txid, primary = _split_owner(value.decode().partition(" ")[0])
            finished |= _finish(store, txid, primary, p)
    return finished


def sweep(store: Store) -> int:
    """Settle transactions abandoned past their deadline (their clients died); returns how many.

    Example:
        >>> sweep(store)  # doctest: +SKIP
        0
    """
    ks = store.keyspace
    pipe = store.client.pipeline(transaction=False)
    for p in range(ks.partitions):
        pipe.hgetall(ks.tx_index(p))
    now_ms = time.time() * 1000
    settled = 0
    for p, entries in enumerate(pipe.execute()):
        for value in entries.values():
            owner, _, deadline = value.decode().partition(" ")
            if float(deadline) > now_ms:
                continue
            txid, primary = _split_owner(owner)
            settled += _finish(store, txid, primary, p)
    return settled
