"""rxstate: one place for multi-agent systems to keep, change, watch and audit their state.

Example:
    >>> import rxstate
    >>> class Agent(rxstate.Model):
    ...     name: str
    ...     load: int = 0
    >>> store = rxstate.connect(fakeredis.FakeRedis())  # rxstate.connect(): REDIS_URL or an embedded server
    >>> store.collection("agents", Agent).put("a1", Agent(name="planner")).version
    1
"""

from rxstate import admin, errors, ops, security
from rxstate.api import Collection, Store, connect
from rxstate.cache.lru import CacheStats
from rxstate.core.codec import Codec
from rxstate.core.errors import (
    AlreadyExists,
    BackupError,
    BufferOverflow,
    ClusterError,
    ConflictError,
    CorruptDataError,
    CycleError,
    DecryptionError,
    DelegationError,
    FinalValueError,
    IntegrityError,
    LazyFieldStale,
    LockError,
    MigrationError,
    NotFound,
    NotReplicated,
    PermissionDenied,
    QuotaExceeded,
    RateLimited,
    RxStateError,
    SchemaError,
    ServerError,
    SessionLagging,
    SyncError,
    TenantSuspended,
    ThreadForkConflict,
    TransactionPending,
    UnknownOutcome,
    ValidationError,
)
from rxstate.core.model import Model, Secret, classified, lazy, upcaster
from rxstate.core.versioned import Versioned
from rxstate.events.collection import AppendResult, EventCollection
from rxstate.events.projection import Projection, ProjectionBatch
from rxstate.events.query import EventLog, Timeline, Why
from rxstate.events.subscriptions import Subscription
from rxstate.events.types import RecordedEvent
from rxstate.feed.aiter import aiter
from rxstate.feed.change import Change
from rxstate.feed.reader import ChangeFeed
from rxstate.reactive.derived import Derived
from rxstate.scopes import Scope
from rxstate.security.policy import Policy, Rule
from rxstate.store.batch import Batch, BatchItem
from rxstate.store.conditions import AnyOf, Range, any_of, between, ge, gt, le, lt
from rxstate.store.constraints import bounds, one_of, references, unique
from rxstate.store.lock import Lease, Lock, ReadWriteLock
from rxstate.store.query import Query
from rxstate.store.transaction import Transaction
from rxstate.sync import crdt

__all__ = [
    "AlreadyExists",
    "AnyOf",
    "AppendResult",
    "BackupError",
    "Batch",
    "BatchItem",
    "BufferOverflow",
    "CacheStats",
    "Change",
    "ChangeFeed",
    "ClusterError",
    "Codec",
    "Collection",
    "ConflictError",
    "CorruptDataError",
    "CycleError",
    "DecryptionError",
    "DelegationError",
    "Derived",
    "EventCollection",
    "EventLog",
    "FinalValueError",
    "IntegrityError",
    "LazyFieldStale",
    "Lease",
    "Lock",
    "LockError",
    "MigrationError",
    "Model",
    "NotFound",
    "NotReplicated",
    "PermissionDenied",
    "Policy",
    "Projection",
    "ProjectionBatch",
    "Query",
    "QuotaExceeded",
    "Range",
    "RateLimited",
    "ReadWriteLock",
    "RecordedEvent",
    "Rule",
    "RxStateError",
    "SchemaError",
    "Scope",
    "Secret",
    "ServerError",
    "SessionLagging",
    "Store",
    "Subscription",
    "SyncError",
    "TenantSuspended",
    "ThreadForkConflict",
    "Timeline",
    "Transaction",
    "TransactionPending",
    "UnknownOutcome",
    "ValidationError",
    "Versioned",
    "Why",
    "admin",
    "aiter",
    "any_of",
    "between",
    "bounds",
    "classified",
    "connect",
    "crdt",
    "errors",
    "ge",
    "gt",
    "lazy",
    "le",
    "lt",
    "one_of",
    "ops",
    "references",
    "security",
    "unique",
    "upcaster",
]

__version__ = "0.1.0"
