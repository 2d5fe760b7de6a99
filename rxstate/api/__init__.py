"""The public facade: ``Store`` and ``Collection`` with the entry points of every layer, and ``connect``."""

from rxstate.api.collection import Collection
from rxstate.api.store import Store, connect

__all__ = ["Collection", "Store", "connect"]
