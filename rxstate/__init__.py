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
from .errors import (
    AlreadyExists,
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
from .model import Model, Secret, upcaster
from .reactive import Derived, aiter
from .store import Store, connect
from .transaction import Transaction
from .versioned import Versioned

__all__ = [
    "AlreadyExists",
    "Batch",
    "BatchItem",
    "CacheStats",
    "Change",
    "ChangeFeed",
    "Codec",
    "Collection",
    "ConflictError",
    "CycleError",
    "Derived",
    "IntegrityError",
    "LockError",
    "Model",
    "NotFound",
    "RxStateError",
    "SchemaError",
    "Secret",
    "Store",
    "Transaction",
    "TransactionPending",
    "ValidationError",
    "Versioned",
    "aiter",
    "connect",
    "errors",
    "ops",
    "upcaster",
]

__version__ = "0.1.0"
