"""``EmbeddedServer``: a real Redis/Valkey server started for development, tests and single-machine use.

The server is a child process of this one, on a free loopback port or a unix socket; it is stopped at
exit and dies with its owner (``rxstate.server.owner``). ``find_server_binary`` (``rxstate.server.binary``)
picks the executable.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis

from rxstate.core.errors import ServerError
from rxstate.server.binary import find_server_binary
from rxstate.server.owner import OWNER_LOCK, OWNER_PID, SPAWNER, pdeathsig_preexec, pid_alive, remove_stale_dirs

__all__ = ["EmbeddedServer", "data_dir_owner", "find_server_binary", "free_port"]

_DATA_LOCK = ".rxstate.lock"
"""The file in a data directory that the process running its server holds locked and writes its pid into."""


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(low: int = 20000, high: int = 50000) -> int:
    """Pick a loopback TCP port in ``[low, high]`` that is free, as is ``port + 10000`` (cluster bus).

    Raises:
        ServerError: no free port was found after many random tries.

    Example:
        >>> 20000 <= free_port() <= 50000
        True
    """
    high = min(high, 65535 - 10000)
    if low > high:
        raise ServerError(f"empty port range [{low}, {high}] (port + 10000 must stay below 65536)")
    for _ in range(200):
        port = random.randint(low, high)
        if _port_is_free(port) and _port_is_free(port + 10000):
            return port
    raise ServerError(f"no free TCP port pair (port, port+10000) found in [{low}, {high}]")


def data_dir_owner(path: str | os.PathLike[str]) -> int | None:
    """The pid of the process running the server of data directory ``path``, or None when none does.

    The owner writes its pid into the directory's lock file and clears it when it stops; the pid of an
    owner that was killed is ignored once that process is gone.

    Example:
        >>> data_dir_owner("/nonexistent") is None
        True
    """
    try:
        pid = int(Path(path, _DATA_LOCK).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


class EmbeddedServer:
    """A ``redis-server``/``valkey-server`` child process owned by this Python process.

    The kernel SIGKILLs the server when this process dies (Linux), whichever thread started it, and it is
    stopped at interpreter exit.

    Example:
        >>> import tempfile
        >>> data = tempfile.mkdtemp()
        >>> with EmbeddedServer(path=data) as server:
        ...     server.client().set("k", b"v")
        ...     server.url.startswith("redis://127.0.0.1:"), server.is_running
        True
        (True, True)
        >>> with EmbeddedServer(path=data) as again:  # the data was kept (AOF)
        ...     again.client().get("k")
        b'v'
        >>> import shutil; shutil.rmtree(data)
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        unix_socket: bool | str | os.PathLike[str] = False,
        path: str | os.PathLike[str] | None = None,
        binary: str | None = None,
        config: Mapping[str, str] | None = None,
        appendfsync: str = "everysec",
    ) -> None:
        if appendfsync not in ("always", "everysec", "no"):
            raise ServerError(f"appendfsync must be 'always', 'everysec' or 'no', not {appendfsync!r}")
        if binary is None:
            self._binary = find_server_binary()
        else:
            found = shutil.which(binary)
            if not found:
                raise ServerError(f"server binary {binary!r} is not an executable file")
            self._binary = os.path.abspath(found)
        self._unix = bool(unix_socket)
        self._socket = None if isinstance(unix_socket, bool) else os.path.abspath(unix_socket)
        self._port = None if unix_socket else port
        self._auto_port = port is None and not unix_socket
        self._path = Path(path).resolve() if path is not None else None
        self._config = dict(config or {})
        self._appendfsync = appendfsync
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmpdir: str | None = None
        self._lock_fd: int | None = None
        self._owner_fd: int | None = None

    # -- properties ------------------------------------------------------------------------------------

    @property
    def host(self) -> str | None:
        """``127.0.0.1`` for a TCP server, ``None`` for a unix-socket one."""
        return None if self._unix else "127.0.0.1"

    @property
    def port(self) -> int | None:
        """The TCP port (chosen at the first start when not given), ``None`` on a unix socket."""
        return self._port

    @property
    def unix_socket_path(self) -> str | None:
        """The socket file's path when listening on a unix socket (the one given, else known once started)."""
        if self._socket is not None:
            return self._socket
        return os.path.join(self._tmpdir, "redis.sock") if self._unix and self._tmpdir else None

    @property
    def url(self) -> str:
        """A ``redis://`` or ``unix://`` URL for ``redis.from_url`` (``ServerError`` before any start)."""
        if self._unix:
            return f"unix://{self._address()}?db=0"
        return f"redis://127.0.0.1:{self._address()}/0"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._proc.pid if self.is_running and self._proc else None

    @property
    def binary(self) -> str:
        """The server executable in use."""
        return self._binary

    @property
    def is_running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle -------------------------------------------------------------------------------------

    def _args(self) -> list[str]:
        assert self._tmpdir is not None
        conf: dict[str, str] = {"save": ""}
        if self._unix:
            conf |= {"port": "0", "unixsocket": self.unix_socket_path or "", "unixsocketperm": "700"}
        else:
            conf |= {"port": str(self._port), "bind": "127.0.0.1"}
        if self._path is None:
            conf |= {"dir": self._tmpdir, "appendonly": "no"}
        else:
            conf |= {"dir": str(self._path), "appendonly": "yes", "appendfsync": self._appendfsync}
        conf |= self._config
        args = [self._binary]
        for key, value in conf.items():
            args += [f"--{key}", str(value)]
        return args

    def _lock(self) -> None:
        if self._path is None or self._lock_fd is not None:
            return
        try:
            self._path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._path / _DATA_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ServerError(f"cannot use data directory {self._path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = data_dir_owner(self._path)
            os.close(fd)
            by = f" (pid {owner})" if owner is not None else ""
            raise ServerError(f"data directory {self._path} is already used by another server{by}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _address(self) -> str:
        address = self.unix_socket_path if self._unix else self._port
        if address is None:
            raise ServerError("the server has not been started yet: call start() first")
        return str(address)

    def _connect(self, timeout: float) -> socket.socket:
        if not self._unix:
            return socket.create_connection(("127.0.0.1", int(self._address())), timeout=timeout)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(self._address())
        except OSError:
            sock.close()
            raise
        return sock

    def _log_tail(self, lines: int = 15) -> str:
        try:
            text = Path(self._tmpdir or "", "server.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def start(self) -> Self:
        """Start the server and wait until it answers PING (at most ~10 s).

        Raises:
            ServerError: the process exited or did not answer in time; the message has the log's tail.

        Example:
            >>> server = EmbeddedServer().start()
            >>> server.is_running
            True
            >>> server.stop()
        """
        if self.is_running:
            return self
        self._lock()
        tmpdir = self._tmpdir if self._tmpdir is not None else self._make_tmpdir()
        attempt = 0
        while True:
            if self._port is None and not self._unix:
                self._port = free_port()
            try:
                with open(os.path.join(tmpdir, "server.log"), "ab") as log:
                    args = self._args()

                    def spawn(args: list[str] = args, log: Any = log) -> subprocess.Popen[bytes]:
                        return subprocess.Popen(
                            args,
                            stdin=subprocess.DEVNULL,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            preexec_fn=pdeathsig_preexec(),
                        )

                    self._proc = SPAWNER.run(spawn)
            except OSError as exc:
                self.stop()
                raise ServerError(f"cannot run {self._binary}: {exc}") from exc
            atexit.unregister(self.stop)
            atexit.register(self.stop)
            try:
                self._wait_ready(10.0)
            except ServerError:
                in_use = "Address already in use" in self._log_tail(5)
                self._terminate(1.0)
                attempt += 1
                if not (self._auto_port and in_use and attempt < 5):
                    self.stop()
                    raise
                self._port = None  # lost a race for the port: pick another
                continue
            self._auto_port = False  # from now on, restarts keep this port
            return self

    def _make_tmpdir(self) -> str:
        """Create the temp dir, owned by this process (locked, pid recorded), after removing stale ones."""
        short = self._unix and len(tempfile.gettempdir()) > 80  # unix socket paths are limited to ~107 bytes
        remove_stale_dirs({tempfile.gettempdir(), "/tmp"})
        tmpdir = tempfile.mkdtemp(prefix="rxstate-", dir="/tmp" if short else None)
        fd = os.open(os.path.join(tmpdir, OWNER_LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh file: nobody else holds it
        Path(tmpdir, OWNER_PID).write_text(f"{os.getpid()}\n")  # written last: the lock is held by then
        self._tmpdir, self._owner_fd = tmpdir, fd
        return tmpdir

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise ServerError(f"{self._binary} exited with code {self._proc.returncode}; log:\n{self._log_tail()}")
            with contextlib.suppress(OSError):
                with self._connect(0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    reply = sock.recv(64)
                if reply.startswith((b"+PONG", b"-NOAUTH")):
                    return
            time.sleep(0.003)
        raise ServerError(f"{self._binary} did not answer PING within {timeout:.0f} s; log:\n{self._log_tail()}")

    def client(self, **kwargs: Any) -> redis.Redis:
        """A new ``redis.Redis`` connected to this server (``decode_responses=False`` unless given).

        Example:
            >>> with EmbeddedServer() as server:
            ...     server.client().ping()
            True
        """
        kwargs.setdefault("decode_responses", False)
        if self._unix:
            return redis.Redis(unix_socket_path=self._address(), **kwargs)
        return redis.Redis(host="127.0.0.1", port=int(self._address()), **kwargs)

    def _terminate(self, timeout: float) -> None:
        """End the process: SHUTDOWN (flushes the AOF), else SIGTERM, then SIGKILL; always reaps it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            accepted = False
            with contextlib.suppress(OSError), self._connect(timeout) as sock:
                sock.sendall(b"SHUTDOWN\r\n" if self._path is not None else b"SHUTDOWN NOSAVE\r\n")
                accepted = True  # a reset or an empty read means the server went away
                accepted = sock.recv(256) == b""  # an error reply (e.g. NOAUTH) means it refused
            if not accepted:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        proc.wait()

    def stop(self, timeout: float = 5.0) -> None:
        """Shut the server down, remove its temp dir and release the data-dir lock. Safe to call twice.

        Example:
            >>> server = EmbeddedServer().start()
            >>> server.stop()
            >>> server.is_running
            False
        """
        self._terminate(timeout)
        atexit.unregister(self.stop)  # registered by start()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
        if self._owner_fd is not None:
            os.close(self._owner_fd)
            self._owner_fd = None
        if self._lock_fd is not None:
            os.ftruncate(self._lock_fd, 0)  # no owner any more
            os.close(self._lock_fd)
            self._lock_fd = None

    def kill(self) -> None:
        """SIGKILL the server (a crash: no AOF flush), reap it and wait until its socket is closed.

        Example:
            >>> with EmbeddedServer() as server:
            ...     server.kill()  # as if it crashed
            ...     server.is_running
            False
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            try:
                self._connect(0.2).close()
            except OSError:
                return
            time.sleep(0.005)
        raise ServerError(f"server {self.url} still accepts connections after SIGKILL")

    def restart(self) -> Self:
        """Stop the server if it runs, then start it on the same port/socket, data dir and config.

        Example:
            >>> with EmbeddedServer() as server:
            ...     server.kill()
            ...     server.restart().client().ping()
            True
        """
        self._terminate(5.0)
        return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<EmbeddedServer {self.url} {state} binary={self._binary}>"
