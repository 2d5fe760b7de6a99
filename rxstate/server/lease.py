"""Embedded servers shared by the stores of a process: one per data directory, one without.

``attach()`` hands each store a :class:`ServerLease`. Stores that ask for the same server share it, each
with its own client (its own connections): the server of a data directory (``path=``), which other
processes share too (see :mod:`rxstate.server.directory`), or the process's one server without a data
directory, started by the first lease and stopped when the last one is released. ``isolated=True``
starts a private server instead.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import redis

from rxstate.core.errors import ValidationError
from rxstate.server.directory import DirectoryServer, check_fsync
from rxstate.server.embedded import EmbeddedServer

__all__ = ["ServerLease", "attach"]


class _Use(Protocol):
    """What a lease needs of the server it uses."""

    @property
    def url(self) -> str: ...
    @property
    def unix_socket_path(self) -> str | None: ...
    @property
    def is_running(self) -> bool: ...
    @property
    def pid(self) -> int | None: ...
    def client(self, **kwargs: Any) -> redis.Redis: ...
    def close(self) -> None: ...


class _ProcessServer(EmbeddedServer):
    """An embedded server without a data directory, run by this process (its data ends with it)."""

    def __init__(self) -> None:
        super().__init__(unix_socket=True)
        self.start()

    def close(self) -> None:
        self.stop()


@dataclass
class _Shared:
    use: _Use
    leases: int = 0


_lock = threading.Lock()
_shared: dict[Path | None, _Shared] = {}  # None: the process's server without a data directory


def _forget_in_child() -> None:
    """After a fork: the child shares no server with its parent (it starts or attaches its own)."""
    global _lock
    _lock = threading.Lock()
    for entry in _shared.values():
        if isinstance(entry.use, DirectoryServer):
            entry.use.forget()
    _shared.clear()


os.register_at_fork(after_in_child=_forget_in_child)


class ServerLease:
    """A store's use of an embedded server; the server stops once no lease (and no process) uses it.

    Example:
        >>> lease = attach(); client = lease.client()  # doctest: +SKIP
        >>> lease.url, lease.is_running  # doctest: +SKIP
        ('unix:///tmp/rxstate-.../redis.sock?db=0', True)
        >>> lease.release()  # doctest: +SKIP
    """

    def __init__(self, use: _Use, key: Path | None, *, shared: bool) -> None:
        self._use = use
        self._key = key
        self._shared = shared
        self._released = False

    @property
    def path(self) -> Path | None:
        """The data directory, or None for a server whose data ends with this process."""
        return self._key

    @property
    def isolated(self) -> bool:
        """Whether this server is private to one store (``isolated=True``)."""
        return not self._shared

    @property
    def url(self) -> str:
        """A ``unix://`` URL of the server."""
        return self._use.url

    @property
    def unix_socket_path(self) -> str | None:
        """The server's socket file."""
        return self._use.unix_socket_path

    @property
    def is_running(self) -> bool:
        """Whether the server is up."""
        return self._use.is_running

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._use.pid

    @property
    def owner_pid(self) -> int | None:
        """The process running the server: this one, or for a data directory the directory's owner."""
        if isinstance(self._use, DirectoryServer):
            return self._use.owner_pid
        return os.getpid() if self._use.is_running else None

    def client(self, **kwargs: Any) -> redis.Redis:
        """A new client of the server, with its own connections (``decode_responses=False`` unless given)."""
        return self._use.client(**kwargs)

    def release(self) -> None:
        """Stop using the server (idempotent); the last lease stops it, or lets the directory's owner do so."""
        if self._released:
            return
        self._released = True
        if not self._shared:
            self._use.close()
            return
        with _lock:
            entry = _shared.get(self._key)
            if entry is None or entry.use is not self._use:  # forgotten in a forked child
                return
            entry.leases -= 1
            if entry.leases == 0:
                del _shared[self._key]
                entry.use.close()

    def __repr__(self) -> str:
        where = f"path={str(self._key)!r}" if self._key is not None else "process" if self._shared else "isolated"
        state = "released" if self._released else "running" if self.is_running else "down"
        return f"<ServerLease {where} {self.url} {state}>"


def attach(
    path: str | os.PathLike[str] | None = None, *, isolated: bool = False, fsync: str | None = None
) -> ServerLease:
    """A lease on an embedded server, started if needed.

    Args:
        path: a data directory: the server keeps its data there (AOF) and is shared by every process
            that attaches to the directory. None: the process's server, whose data ends with it.
        isolated: a private server (no data directory) that no other lease shares.
        fsync: ``appendfsync`` of a data directory's server: ``"everysec"`` (default), ``"always"`` or
            ``"no"``; ``"always"`` is applied to a server that already runs, and kept on its restarts.

    Raises:
        ValidationError: ``isolated`` with a ``path``, ``fsync`` without one, or an unknown ``fsync``.
        ServerError: no server could be started.

    Example:
        >>> a, b = attach(), attach()  # doctest: +SKIP
        >>> a.url == b.url  # doctest: +SKIP
        True
    """
    if fsync is not None:
        check_fsync(fsync)
    if path is None and fsync is not None:
        raise ValidationError("fsync= applies to a data directory's server: pass path= too")
    if isolated:
        if path is not None:
            raise ValidationError(
                "isolated=True starts a private server without a data directory; a data directory (path=) "
                "is shared by every process that opens it"
            )
        return ServerLease(_ProcessServer(), None, shared=False)
    key = None if path is None else Path(path).resolve()
    with _lock:  # a second thread attaching meanwhile waits for the start and then shares the server
        entry = _shared.get(key)
        if entry is None:
            use: _Use
            if key is None:
                use = _ProcessServer()
            else:
                directory = DirectoryServer(key, fsync=fsync or "everysec")
                directory.open()
                use = directory
            entry = _shared[key] = _Shared(use)
        elif isinstance(entry.use, DirectoryServer) and fsync is not None:
            entry.use.require_fsync(fsync)
        entry.leases += 1
        return ServerLease(entry.use, key, shared=True)
