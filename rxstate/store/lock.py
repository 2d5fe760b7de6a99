"""Lease locks with fencing tokens, and the write fence that makes them safe.

A lock is held for a lease (``ttl`` seconds, extendable). A process that pauses past its lease (a GC
pause, a stopped VM) may still believe it holds the lock while another process has acquired it: the
known flaw of plain Redis locks. Every lease therefore carries a **fencing token**, the next value of a
per-lock counter that never resets. Writes made with ``fence=lease`` are checked inside the write
script: a partition that has already accepted a write fenced by a newer lease of the same lock refuses
writes fenced by older ones, and any partition refuses a fenced write whose lease has expired by the
server's clock. Both refusals raise ``LockError`` and change nothing.

Where the fence lives: each partition keeps, per lock name, the highest token that has written to it
(``rx:{ns:p}:_fences``), so the check runs in the same script, on the same cluster slot, as the write.
The locks' own keys sit in the namespace's slot (``rx:{ns}:_lock:<name>``), outside the partitions
whose changes local caches follow.

Example:
    >>> _ = tasks.put("t1", Task(title="print"))
    >>> with store.lock("printer", ttl=10) as old:
    ...     pass
    >>> with store.lock("printer", ttl=10) as lease:  # a newer lease: a higher token
    ...     _ = tasks.update("t1", owner="a1", fence=lease)
    >>> tasks.update("t1", owner="a2", fence=old)
    Traceback (most recent call last):
    ...
    rxstate.core.errors.LockError: ...
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rxstate.core.errors import LockError, ValidationError
from rxstate.core.keys import validate_id
from rxstate.core.waiting import pause as wait

if TYPE_CHECKING:
    from rxstate.store.store import Store

__all__ = ["Lease", "Lock", "ReadWriteLock", "fence_args"]

_MIN_WAIT = 0.001
_MAX_WAIT = 0.05


def _ttl_ms(ttl: float) -> int:
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < 10**7:
        raise ValidationError(f"lock ttl must be a positive number of seconds, not {ttl!r}")
    return max(1, round(ttl * 1000))


@dataclass(eq=False)
class Lease:
    """One granted hold of a lock.

    Attributes:
        name: the lock's name.
        token: the fencing token, larger than every earlier lease's of the same lock.
        mode: ``"x"`` (exclusive or write) or ``"r"`` (read).
        deadline_ms: when the lease ends, in the server's clock (ms since the epoch).
        released: whether ``release`` was called.
    """

    name: str
    token: int
    mode: str
    deadline_ms: int
    lock: Lock = field(repr=False)
    owner: str = field(repr=False)
    released: bool = False

    def extend(self, ttl: float | None = None) -> None:
        """Renew the lease for ``ttl`` seconds from now (default: the lock's ttl).

        Raises:
            LockError: the lease was lost (it expired) or released.

        Example:
            >>> lease = store.lock("printer", ttl=1).acquire()
            >>> before = lease.deadline_ms
            >>> lease.extend(30)
            >>> lease.deadline_ms > before
            True
        """
        ms = self.lock.ttl_ms if ttl is None else _ttl_ms(ttl)
        if self.released:
            raise LockError(
                f"lease {self.token} of lock {self.name!r} was released; acquire again",
                name=self.name,
                token=self.token,
            )
        self.deadline_ms = int(self.lock._call("extend", self.owner, ms, str(self.token)))

    def release(self) -> None:
        """Give the lock up. Only the holder may release it.

        Raises:
            LockError: this lease no longer holds the lock (it expired, maybe taken by another), or was
                released already.

        Example:
            >>> lease = store.lock("printer", ttl=10).acquire()
            >>> lease.release()
            >>> store.lock("printer", ttl=10).acquire(timeout=0).token  # free again at once
            2
        """
        if self.released:
            raise LockError(
                f"lease {self.token} of lock {self.name!r} was released already", name=self.name, token=self.token
            )
        self.released = True
        self.lock._call("release", self.owner, self.lock.ttl_ms, str(self.token))

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.released:
            self.release()


class Lock:
    """A named lease lock; ``store.lock(name, ttl=...)`` makes one.

    Use it as a context manager (acquire on enter, release on exit, the lease as the ``as`` target),
    or call ``acquire`` for a ``Lease`` and release that.

    Example:
        >>> with store.lock("printer", ttl=10) as lease:
        ...     print(lease.token)
        1
        >>> lease = store.lock("printer", ttl=10).acquire(timeout=2)
        >>> lease.token
        2
        >>> lease.release()
    """

    def __init__(
        self,
        store: Store,
        name: str,
        ttl: float = 10.0,
        *,
        blocking: bool = True,
        timeout: float | None = None,
        reentrant: bool = False,
        mode: str = "x",
    ) -> None:
        self.name = validate_id(name)
        self.ttl_ms = _ttl_ms(ttl)
        self.blocking = blocking
        self.timeout = timeout
        self.reentrant = reentrant
        self.mode = mode
        ks = store.keyspace
        self._keys = (ks.lock(name), ks.lock_sequence(name), ks.lock_readers(name))
        self._writer = store.writer
        self._process_owner = store._lock_owner_id
        self._held = threading.local()

    def __repr__(self) -> str:
        kind = {"x": "reentrant lock" if self.reentrant else "lock", "r": "read lock"}[self.mode]
        return f"<{kind} {self.name!r} ttl={self.ttl_ms / 1000:g}s>"

    def _call(self, action: str, owner: str, ttl_ms: int, token: str = "") -> Any:
        try:
            return self._writer.call(
                "lock",
                self._keys,
                (action, self.mode, owner, ttl_ms, "1" if self.reentrant else "0", token),
                settle=False,
            )
        except LockError:
            raise LockError(
                f"lock {self.name!r}: this lease no longer holds it (it expired, or was released)",
                name=self.name,
                token=int(token) if token else None,
            ) from None

    def _owner(self) -> str:
        if self.reentrant:
            return f"{self._process_owner}:{threading.get_ident()}"
        return uuid.uuid4().hex

    def acquire(self, *, blocking: bool | None = None, timeout: float | None = None) -> Lease:
        """Take the lock, waiting while another lease holds it.

        Args:
            blocking: wait for the lock (default: the lock's ``blocking``); False tries once.
            timeout: seconds to wait at most (default: the lock's ``timeout``; None waits forever).

        Returns:
            The lease, with its fencing token.

        Raises:
            LockError: not acquired (non-blocking, or the timeout passed).

        Example:
            >>> lease = store.lock("printer", ttl=5).acquire(timeout=1)
            >>> store.lock("printer", ttl=5).acquire(blocking=False)  # held: do not wait
            Traceback (most recent call last):
            ...
            rxstate.core.errors.LockError: ...
        """
        blocking = self.blocking if blocking is None else blocking
        timeout = self.timeout if timeout is None else timeout
        owner = self._owner()
        deadline = None if timeout is None else time.monotonic() + timeout
        backoff = _MIN_WAIT
        while True:
            token, hint = self._call("acquire", owner, self.ttl_ms)
            if token:
                return Lease(self.name, int(token), self.mode, int(hint), self, owner)
            now = time.monotonic()
            if not blocking or (deadline is not None and now >= deadline):
                waited = "" if not blocking else f" within {timeout} s"
                raise LockError(f"lock {self.name!r} is held by another lease; not acquired{waited}", name=self.name)
            # Back off (with jitter) instead of spinning; never past the holder's lease end or our timeout.
            pause = min(backoff, max(int(hint), 1) / 1000) * random.uniform(0.5, 1.0)
            if deadline is not None:
                pause = min(pause, deadline - now)
            wait(max(pause, 0.0))
            backoff = min(backoff * 2, _MAX_WAIT)

    def __enter__(self) -> Lease:
        lease = self.acquire()
        stack = getattr(self._held, "stack", None)
        if stack is None:
            stack = self._held.stack = []
        stack.append(lease)
        return lease

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        lease = self._held.stack.pop()
        if not lease.released:
            lease.release()


class ReadWriteLock:
    """Many readers or one writer; ``store.rwlock(name, ttl=...)`` makes one.

    A writer waits until every read lease has ended; readers wait while a write lease is held. Write
    leases fence writes like any lock; read leases carry tokens too but cannot fence writes. Waiting
    writers do not hold new readers back, so a steady stream of overlapping readers can starve them.

    Example:
        >>> rw = store.rwlock("catalog", ttl=5)
        >>> with rw.read() as first, rw.read() as second:  # readers share it
        ...     first.mode, second.mode
        ('r', 'r')
        >>> with rw.write() as lease:
        ...     lease.mode  # exclusive
        'x'
    """

    def __init__(self, store: Store, name: str, ttl: float = 10.0, *, timeout: float | None = None) -> None:
        self._store = store
        self.name = name
        self.ttl = ttl
        self.timeout = timeout

    def read(self, *, blocking: bool = True, timeout: float | None = None) -> Lock:
        """A shared (read) hold of this lock, as a ``Lock`` to enter or ``acquire``."""
        return Lock(
            self._store,
            self.name,
            self.ttl,
            blocking=blocking,
            timeout=self.timeout if timeout is None else timeout,
            mode="r",
        )

    def write(self, *, blocking: bool = True, timeout: float | None = None) -> Lock:
        """An exclusive (write) hold of this lock, as a ``Lock`` to enter or ``acquire``."""
        return Lock(
            self._store, self.name, self.ttl, blocking=blocking, timeout=self.timeout if timeout is None else timeout
        )


def fence_args(fence: Lease | None) -> tuple[str, int, int] | None:
    """The ``WriteOp.fence`` of a write made with ``fence=lease``.

    Raises:
        ValidationError: ``fence`` is not a write lease.
        LockError: the lease was released.
    """
    if fence is None:
        return None
    if not isinstance(fence, Lease):
        raise ValidationError(f"fence= takes a Lease from store.lock(...), not {type(fence).__name__}")
    if fence.mode != "x":
        raise ValidationError(f"lock {fence.name!r}: a read lease cannot fence a write; use a write lease")
    if fence.released:
        raise LockError(
            f"lease {fence.token} of lock {fence.name!r} was released; it cannot fence writes",
            name=fence.name,
            token=fence.token,
        )
    return (fence.name, fence.token, fence.deadline_ms)
