"""Waiting between retries: ``pause(seconds)``, which an upper layer may route elsewhere than ``time.sleep``.

The kernel waits in a few places (the Writer's backoff after a lost reply, a lock's backoff while another
lease holds it, a transaction's retry jitter, settling a pending intent). On a thread that is a plain
``time.sleep``; the asyncio front (``rxstate.aio``) runs the kernel on the event loop's thread, where a
sleep would stall every other task — including the one holding the lock being waited for — so it
installs a waiter that awaits ``asyncio.sleep`` instead while the kernel runs for a coroutine.

Example:
    >>> pause(0)
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["pause", "set_waiter"]

_waiter: Callable[[float], bool] | None = None


def pause(seconds: float) -> None:
    """Wait ``seconds``: through the installed waiter when it takes the wait, else ``time.sleep``.

    Example:
        >>> pause(0.0)
    """
    waiter = _waiter
    if waiter is not None and waiter(seconds):
        return
    time.sleep(seconds)


def set_waiter(waiter: Callable[[float], bool] | None) -> None:
    """Install ``waiter(seconds) -> bool`` (True: it waited; False: ``pause`` sleeps as usual), or None.

    Example:
        >>> set_waiter(lambda seconds: False); pause(0); set_waiter(None)
    """
    global _waiter
    _waiter = waiter
