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

from . import errors
from .codec import Codec
from .collection import Collection
from .constraints import bounds, one_of, references, unique
from .errors import (
    AlreadyExists,
    ClusterError,
    ConflictError,
    IntegrityError,
    LockError,
    NotFound,
    RxStateError,
    SchemaError,
    ValidationError,
)
from .lock import Lease, Lock, ReadWriteLock
from .model import Model, Secret, upcaster
from .store import Store, connect
from .versioned import Versioned

__all__ = [
    "AlreadyExists",
    "ClusterError",
    "Codec",
    "Collection",
    "ConflictError",
    "IntegrityError",
    "Lease",
    "Lock",
    "LockError",
    "Model",
    "NotFound",
    "ReadWriteLock",
    "RxStateError",
    "SchemaError",
    "Secret",
    "Store",
    "ValidationError",
    "Versioned",
    "bounds",
    "connect",
    "errors",
    "one_of",
    "references",
    "unique",
    "upcaster",
]

__version__ = "0.1.0"
