"""LangGraph on rxstate: a checkpointer (``RxCheckpointSaver``) and a long-term memory store (``RxStore``).

Needs the ``langgraph`` extra (``pip install 'rxstate[langgraph]'``). Both run on plain Redis 7.0, Valkey 8
and Redis Cluster through rxstate's write path; see ``saver`` and ``store`` for how threads and items are
laid out.

Example:
    >>> from rxstate.integrations.langgraph import RxCheckpointSaver  # doctest: +SKIP
    >>> graph = builder.compile(checkpointer=RxCheckpointSaver(rxstate.connect()))  # doctest: +SKIP
"""

from rxstate.integrations.langgraph.history import ThreadCheckpoint, thread_history
from rxstate.integrations.langgraph.saver import RxCheckpointSaver
from rxstate.integrations.langgraph.store import RxStore

__all__ = ["RxCheckpointSaver", "RxStore", "ThreadCheckpoint", "thread_history"]
