"""rxstate: one place for multi-agent systems to keep, change, watch and audit their state.

Example:
    >>> import rxstate
    >>> class Agent(rxstate.Model):
    ...     name: str
    ...     load: int = 0
    >>> store = rxstate.connect()  # doctest: +SKIP
    >>> store.collection("agents", Agent).put("a1", Agent(name="planner")).version  # doctest: +SKIP
    1
"""

from . import errors, ops
from .batch import Batch, BatchItem
from .cache import CacheStats
from .changes import Change, ChangeFeed
from .codec import Codec
from .collection import Collection
from .constraints import bounds, one_of, references, unique
from .errors import (
    AlreadyExists,
    ClusterError,
    ConflictError,
    CycleError,
    IntegrityError,
    LockError,
    NotFound,
    RxStateError,
    SchemaError,
    TransactionPending,
    ValidationError,
)
from .eventquery import EventLog, Timeline, Why
from .events import AppendResult, EventCollection
from .eventtypes import RecordedEvent
from .lock import Lease, Lock, ReadWriteLock
from .model import Model, Secret, upcaster
from .reactive import Derived, aiter
from .store import Store, connect
from .subscriptions import Projection, ProjectionBatch, Subscription
from .transaction import Transaction
from .versioned import Versioned

__all__ = [
    "AlreadyExists",
    "AppendResult",
    "Batch",
    "BatchItem",
    "CacheStats",
    "Change",
    "ChangeFeed",
    "ClusterError",
    "Codec",
    "Collection",
    "ConflictError",
    "CycleError",
    "Derived",
    "EventCollection",
    "EventLog",
    "IntegrityError",
    "Lease",
    "Lock",
    "LockError",
    "Model",
    "NotFound",
    "Projection",
    "ProjectionBatch",
    "ReadWriteLock",
    "RecordedEvent",
    "RxStateError",
    "SchemaError",
    "Secret",
    "Store",
    "Subscription",
    "Timeline",
    "Transaction",
    "TransactionPending",
    "ValidationError",
    "Versioned",
    "Why",
    "aiter",
    "bounds",
    "connect",
    "errors",
    "one_of",
    "ops",
    "references",
    "unique",
    "upcaster",
]

__version__ = "0.1.0"
