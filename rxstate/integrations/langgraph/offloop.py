"""Running the synchronous saver and store methods from LangGraph's async API, without blocking the loop.

A saver or store made with ``on(astore)`` (an ``rxstate.aio`` store) runs them in that store's bridge:
on the event loop, each server call awaited on ``redis.asyncio``. One made on a kernel store runs them
in a worker thread (``asyncio.to_thread``; the kernel store is thread-safe).

Example:
    >>> import asyncio
    >>> asyncio.run(run_sync(None, sum, [1, 2]))
    3
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from rxstate.aio import AsyncStore

__all__ = ["run_sync"]

T = TypeVar("T")


async def run_sync(bridge: AsyncStore | None, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``: in ``bridge`` (an asyncio store) when given, else in a worker thread."""
    if bridge is not None:
        return await bridge.run(fn, *args, **kwargs)
    return await asyncio.to_thread(fn, *args, **kwargs)
