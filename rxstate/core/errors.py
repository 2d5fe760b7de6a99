"""Every error rxstate raises, in one hierarchy.

```
RxStateError
 ├── ValidationError (ValueError)      bad input: wrong type, unknown field, invalid id, too large
 ├── SchemaError                        model/schema mismatch, stored schema newer than the code
 ├── ConflictError                      an expected version did not match
 │    ├── AlreadyExists                 create() of an id that exists
 │    ├── TransactionPending            an entity is locked by another transaction still in progress
 │    ├── LazyFieldStale                a lazy field was read after its entity changed since the model was read
 │    └── ThreadForkConflict            a LangGraph thread moved on since this writer read it
 ├── NotFound (KeyError)                no entity under that id
 ├── LockError                          a lock could not be acquired, was lost, or a fenced write was refused
 ├── IntegrityError                     a declared constraint would be violated
 │    └── FinalValueError               a scope would override a value an ancestor scope made final
 ├── PermissionDenied (PermissionError) the principal may not do this (policy or server ACL)
 │    └── DelegationError               a delegation link is invalid: too deep, revoked, expired, not held
 ├── ClusterError                       keys of one operation span cluster slots
 ├── ServerError                        no server could be found, started or reached
 │    ├── UnknownOutcome                the server went away after a write was sent: applied or not?
 │    └── NotReplicated                 a durable write was made on the primary, but too few replicas confirmed it
 ├── CorruptDataError                   stored bytes that cannot be decoded
 │    └── DecryptionError               an encrypted value that cannot be decrypted (key, binding)
 ├── CycleError                         derived values that depend on each other in a loop
 ├── BufferOverflow                     a subscriber fell further behind than its buffer allows
 ├── BackupError                        a backup or change archive that fails its checks, or cannot be restored
 ├── MigrationError                     a stored-data migration or rollback that cannot run as asked
 ├── QuotaExceeded                      the write would take a tenant past a quota
 ├── RateLimited                        the tenant or principal is over its write rate
 ├── TenantSuspended                    the tenant is suspended: reads only
 └── SyncError                          a replica of rxstate.sync is missing or misused
      └── SessionLagging (TimeoutError) a replica has not caught up with a session's token in time
```

Every error carries the context a user needs to act on it as attributes (``ConflictError.key``,
``.expected``, ``.actual``), and a message that names them.

Example:
    >>> try:
    ...     agents.update("a9", status="busy")
    ... except rxstate.NotFound as exc:
    ...     print(exc.key)
    rx:{default:1}:agents:a9
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AlreadyExists",
    "BackupError",
    "BufferOverflow",
    "ClusterError",
    "ConflictError",
    "CorruptDataError",
    "CycleError",
    "DecryptionError",
    "DelegationError",
    "FinalValueError",
    "IntegrityError",
    "LazyFieldStale",
    "LockError",
    "MigrationError",
    "NotFound",
    "NotReplicated",
    "PermissionDenied",
    "QuotaExceeded",
    "RateLimited",
    "RxStateError",
    "SchemaError",
    "ServerError",
    "SessionLagging",
    "SyncError",
    "TenantSuspended",
    "ThreadForkConflict",
    "TransactionPending",
    "UnknownOutcome",
    "ValidationError",
]


class RxStateError(Exception):
    """Base class of every rxstate error."""


class ValidationError(RxStateError, ValueError):
    """Input was rejected before anything was written.

    Attributes:
        field: the offending field, when one can be named.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class SchemaError(RxStateError):
    """A model, collection or event type is declared wrongly, or does not match what is stored.

    Attributes:
        name: the collection, model or event type at fault.
        field: the field at fault, when one can be named.
    """

    def __init__(self, message: str, *, name: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.field = field


class ConflictError(RxStateError):
    """An optimistic-concurrency check failed.

    Attributes:
        key: the entity key (or a list of keys for a transaction).
        expected: the version the caller expected.
        actual: the version that was found (0 when the entity does not exist).
    """

    def __init__(self, message: str, *, key: Any = None, expected: Any = None, actual: Any = None) -> None:
        super().__init__(message)
        self.key = key
        self.expected = expected
        self.actual = actual


class TransactionPending(ConflictError):
    """An entity is locked by an intent of another cross-partition transaction not yet decided.

    Writers wait for such a transaction to finish (or expire) before this surfaces.

    Attributes:
        key: the locked entity key.
        owner: ``"<txid>@<primary partition>"`` of the transaction holding the lock.
    """

    def __init__(self, message: str, *, key: str | None = None, owner: str = "") -> None:
        super().__init__(message, key=key)
        self.owner = owner


class LazyFieldStale(ConflictError):
    """A lazy field was accessed after its entity changed (or was deleted) since the model was read.

    The field is read at the version the model was read at, so that one model never mixes two
    versions; read the entity again for its current value.

    Attributes:
        key: the entity key.
        field: the lazy field.
        expected: the version the model was read at.
        actual: the version stored now (0 when the entity no longer exists).
    """

    def __init__(self, message: str, *, key: str, field: str, expected: int, actual: int) -> None:
        super().__init__(message, key=key, expected=expected, actual=actual)
        self.field = field


class NotFound(RxStateError, KeyError):
    """No entity exists under the given id.

    Attributes:
        key: the entity key that was looked up.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class AlreadyExists(ConflictError):
    """``create`` was asked for an id that already exists."""


class LockError(RxStateError):
    """A lock could not be acquired in time, was lost, or refused a write fenced by a stale lease.

    Attributes:
        name: the lock's name.
        token: the fencing token of the lease concerned (None when no lease was granted).
        key: the entity key of a refused fenced write.
        newer_token: the token of the newer lease that already wrote to that partition (None: the
            lease had expired, or no fenced write is concerned).
    """

    def __init__(
        self,
        message: str,
        *,
        name: str | None = None,
        token: int | None = None,
        key: str | None = None,
        newer_token: int | None = None,
    ) -> None:
        super().__init__(message)
        self.name = name
        self.token = token
        self.key = key
        self.newer_token = newer_token


class IntegrityError(RxStateError):
    """A declared integrity constraint would be violated.

    Attributes:
        constraint: the constraint's name.
        key: the entity key the write targeted.
    """

    def __init__(self, message: str, *, constraint: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.constraint = constraint
        self.key = key


class PermissionDenied(RxStateError, PermissionError):
    """The store's principal may not do this: its policy or the server's ACL refused it; nothing changed.

    Attributes:
        principal: the principal's name (None: refused by the server for the connection's user).
        action: ``read``, ``write``, ``delete`` or ``admin``.
        collection: the collection concerned, when known.
        id: the entity id, when one was concerned.
        rule: the rule that denied it (None: no rule allowed it, or the server refused it).
        reason: why, in words.
    """

    def __init__(
        self,
        message: str,
        *,
        principal: str | None = None,
        action: str | None = None,
        collection: str | None = None,
        id: str | None = None,
        rule: str | None = None,
        reason: str = "",
    ) -> None:
        super().__init__(message)
        self.principal = principal
        self.action = action
        self.collection = collection
        self.id = id
        self.rule = rule
        self.reason = reason


class ClusterError(RxStateError):
    """An operation's keys do not share one cluster slot.

    Attributes:
        name: the collection or projection whose operation was refused.
        partitions: the partitions the operation would have spanned, when known.
    """

    def __init__(self, message: str, *, name: str | None = None, partitions: list[int] | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.partitions = partitions or []


class ServerError(RxStateError):
    """No Redis/Valkey server could be found, started or reached."""


class UnknownOutcome(ServerError):
    """A write was sent, but no reply came back, also after retrying it with its write id.

    The write took effect once or not at all: never twice, since every retry of it carries the same
    write id. Call ``resolve()`` once the server can be reached again: it says which, and when the
    write had not taken effect, it makes sure it never will (a copy still on its way is refused), so
    the write can then be made again safely. The server remembers the write id for
    ``remembered_ms`` after the write (``connect(write_record_ms=...)``).

    Attributes:
        write_id: the write's id.
        record: the key of its write record on the server.
        keys: the keys the write would touch.
        script: the write script that was sent.
        remembered_ms: how long after the write ``resolve()`` can tell.
    """

    def __init__(
        self,
        message: str,
        *,
        write_id: str,
        record: str,
        keys: list[str],
        script: str,
        remembered_ms: int,
        resolver: Any = None,
    ) -> None:
        super().__init__(message)
        self.write_id = write_id
        self.record = record
        self.keys = keys
        self.script = script
        self.remembered_ms = remembered_ms
        self._resolver = resolver

    def resolve(self) -> bool:
        """Whether the write took effect (True); False: it did not and never will.

        Raises:
            ServerError: the server still cannot be reached (call again later).
        """
        if self._resolver is None:
            raise ServerError("this UnknownOutcome was not raised by a store; it cannot be resolved")
        return bool(self._resolver(self))


class CorruptDataError(RxStateError):
    """Stored data could not be decoded (e.g. a broken compressed value).

    Attributes:
        key: the Redis key holding the value.
        field: the hash field, when known.
    """

    def __init__(self, message: str, *, key: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.field = field


class CycleError(RxStateError):
    """A derived value would depend on itself, directly or through other derived values.

    Attributes:
        names: the derived values on the loop, in reading order.
    """

    def __init__(self, message: str, *, names: list[str] | None = None) -> None:
        super().__init__(message)
        self.names = names or []


class BufferOverflow(RxStateError):
    """A subscriber with ``overflow="error"`` fell further behind than its buffer allows.

    Attributes:
        limit: the subscriber's buffer size (``max_buffer``), in changes.
    """

    def __init__(self, message: str, *, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class DecryptionError(CorruptDataError):
    """An encrypted field value (or a wrapped data key) could not be decrypted.

    Raised instead of ever returning garbage: the ciphertext was moved to another entity or field (its
    associated data no longer matches), its data key was shredded or is unknown, no key-encryption key
    is configured, or the key-encryption key is not the one the data keys are wrapped under.

    Attributes:
        key: the Redis key holding the value (or the key ring).
        field: the field, when known.
        key_id: the data key the value names, when known.
        reason: ``"binding"``, ``"shredded"``, ``"unknown-key"``, ``"no-keys"`` or ``"wrong-kek"``.
    """

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        field: str | None = None,
        key_id: int | None = None,
        reason: str = "binding",
    ) -> None:
        super().__init__(message, key=key, field=field)
        self.key_id = key_id
        self.reason = reason


class BackupError(RxStateError):
    """A backup file or change archive failed its checks, or cannot be restored where asked.

    Nothing is written when this is raised by a restore: every check runs before the first write.

    Attributes:
        path: the backup or archive file.
        member: the part of the file at fault (a member name, or a key), when known.
        reason: ``"manifest"``, ``"format"``, ``"checksum"``, ``"type"``, ``"not-empty"`` (the target
            namespace holds keys) or ``"gap"`` (change records were trimmed before they were archived).
    """

    def __init__(self, message: str, *, path: str | None = None, member: str | None = None, reason: str) -> None:
        super().__init__(message)
        self.path = path
        self.member = member
        self.reason = reason


class MigrationError(RxStateError):
    """A migration of stored entities cannot run as asked.

    Attributes:
        collection: the collection being migrated.
        version: the schema version at fault (e.g. the one without an inverse upcaster).
        reason: ``"cursor"`` (a resume cursor that is not one of a migration of the collection),
            ``"index"`` (an index to build that the collection is not opened with), ``"no-inverse"``
            (a rollback through an upcaster without a downcaster) or ``"version"`` (a rollback target
            that is not below the model's version).
    """

    def __init__(self, message: str, *, collection: str, version: int | None = None, reason: str) -> None:
        super().__init__(message)
        self.collection = collection
        self.version = version
        self.reason = reason


class QuotaExceeded(RxStateError):
    """The write would take a tenant past one of its quotas (nothing of it was written).

    Attributes:
        tenant: the tenant's namespace (``<ns>/<tenant>``).
        quota: ``"entities"`` or ``"bytes"``.
        limit: the limit that applies (the partition's share of the tenant's quota).
        use: the use before the write.
        requested: what the write would add.
        partition: the partition whose share is exhausted.
    """

    def __init__(
        self,
        message: str,
        *,
        tenant: str | None = None,
        quota: str = "",
        limit: int = 0,
        use: int = 0,
        requested: int = 0,
        partition: int | None = None,
    ) -> None:
        super().__init__(message)
        self.tenant = tenant
        self.quota = quota
        self.limit = limit
        self.use = use
        self.requested = requested
        self.partition = partition


class RateLimited(RxStateError):
    """The tenant (or one of its principals) writes faster than its rate limit allows (nothing written).

    Attributes:
        tenant: the tenant's namespace (``<ns>/<tenant>``).
        scope: ``"tenant"`` or ``"principal"``.
        retry_after: seconds until the write would be admitted.
    """

    def __init__(self, message: str, *, tenant: str | None = None, scope: str = "tenant", retry_after: float = 0.0):
        super().__init__(message)
        self.tenant = tenant
        self.scope = scope
        self.retry_after = retry_after


class TenantSuspended(RxStateError):
    """The tenant is suspended: its data can be read, every write is refused by the server.

    Attributes:
        tenant: the tenant's namespace (``<ns>/<tenant>``).
    """

    def __init__(self, message: str, *, tenant: str | None = None) -> None:
        super().__init__(message)
        self.tenant = tenant


class FinalValueError(IntegrityError):
    """A scope would override a key that an ancestor scope set with ``final=True``; nothing was written.

    Attributes:
        key: the setting's key.
        scope: the scope whose write was refused.
        final_at: the ancestor scope holding the final value.
    """

    def __init__(self, message: str, *, key: str, scope: str, final_at: str) -> None:
        super().__init__(message, constraint="final")
        self.key = key
        self.scope = scope
        self.final_at = final_at


class DelegationError(PermissionDenied):
    """A delegation cannot be made or used: the chain would be too deep, or a link of it is revoked,
    expired or not held by the principal; nothing was written.

    Attributes:
        link: the delegation link concerned (None: a new one was refused before it existed).
        depth: the chain depth the delegation would have.
        limit: the deepest chain allowed.
    """

    def __init__(
        self,
        message: str,
        *,
        principal: str | None = None,
        link: str | None = None,
        depth: int | None = None,
        limit: int | None = None,
        reason: str = "",
    ) -> None:
        super().__init__(message, principal=principal, action="admin", collection="scopes", reason=reason)
        self.link = link
        self.depth = depth
        self.limit = limit


class SyncError(RxStateError):
    """A replica of ``rxstate.sync`` is missing, misconfigured or misused (e.g. a store that was never opened
    as a replica, two replicas with one id, an unknown CRDT type).

    Attributes:
        key: the key or replica concerned, when known.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class SessionLagging(SyncError, TimeoutError):
    """A replica has not yet applied every change a session has seen or written (its session token), and
    waiting for it timed out: answering would break read-your-writes or monotonic reads.

    Attributes:
        partition: the partition of the read.
        missing: origin -> (sequence number the session needs, what the replica has).
        waited: seconds waited.
    """

    def __init__(self, message: str, *, partition: int, missing: dict[str, tuple[int, int]], waited: float) -> None:
        super().__init__(message)
        self.partition = partition
        self.missing = missing
        self.waited = waited


class ThreadForkConflict(ConflictError):
    """A checkpoint would fork a LangGraph thread that another writer advanced since this one read it.

    Two workers resuming the same thread from its latest checkpoint both write a child of it; the
    second one is refused instead of silently forking the thread.

    Attributes:
        thread_id: the thread.
        checkpoint_ns: the checkpoint namespace within the thread ("" for the root graph).
        parent_id: the checkpoint this writer continued from.
        head_id: the latest checkpoint another writer stored ("" if unknown).
    """

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        thread_id: str = "",
        checkpoint_ns: str = "",
        parent_id: str = "",
        head_id: str = "",
        expected: Any = None,
        actual: Any = None,
    ) -> None:
        super().__init__(message, key=key, expected=expected, actual=actual)
        self.thread_id = thread_id
        self.checkpoint_ns = checkpoint_ns
        self.parent_id = parent_id
        self.head_id = head_id


class NotReplicated(ServerError):
    """A durable write (``connect(durability="replicated"|"fsynced")`` or ``durable=True``) took effect on the
    primary, but fewer replicas than asked confirmed it within the timeout (``WAIT``), or, for
    ``"fsynced"``, the primary or fewer replicas than asked fsynced it to their append-only files (``WAITAOF``).

    The write is not undone: it is on the primary and may reach the replicas later, or be lost if the
    primary fails before it does. Treat it as not acknowledged: read it back (``consistent=True``) or write
    it again (writes carry expected versions or are idempotent puts) once the replicas are back.

    Attributes:
        keys: the keys of the write (the first call's, when several were sent together).
        acked: how many replicas confirmed it.
        wanted: how many were asked for.
        timeout_ms: how long the primary waited for them.
        node: ``host:port`` of the primary that took the write, when known.
        fsynced: for ``"fsynced"``, whether the primary fsynced it; None for ``"replicated"``.
    """

    def __init__(
        self,
        message: str,
        *,
        keys: list[str],
        acked: int,
        wanted: int,
        timeout_ms: int,
        node: str | None = None,
        fsynced: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.keys = keys
        self.acked = acked
        self.wanted = wanted
        self.timeout_ms = timeout_ms
        self.node = node
        self.fsynced = fsynced
