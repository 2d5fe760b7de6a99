"""rxstate.sync: replication between independent servers without a coordinator.

Replicas (``Replica``) merge delta-CRDTs inside Lua, order them by hybrid logical clocks, and exchange
deltas through sync agents (``SyncAgent``, ``Gossip``); sessions (``Session``) carry read-your-writes and
monotonic reads from one replica to another. See the README's "Sync between servers" section for which
consistency each API gives.
"""

from rxstate.sync import crdt
from rxstate.sync.agent import Gossip, PullResult, SyncAgent
from rxstate.sync.replica import Replica, ReplicatedCollection, Resolver, WriteToken
from rxstate.sync.session import Session

__all__ = [
    "Gossip",
    "PullResult",
    "Replica",
    "ReplicatedCollection",
    "Resolver",
    "Session",
    "SyncAgent",
    "WriteToken",
    "crdt",
]
