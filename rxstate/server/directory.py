"""The server of a data directory, shared by every process that opens that directory.

Besides the server's own ``appendonlydir/``, the directory holds:

- ``redis.sock``: the server's unix socket (``/tmp/rxstate.<hash>.sock`` when the directory's path is too
  long for a socket address);
- ``.rxstate.lock``: locked (``flock``) by the *owner*, the one process running the server, which writes
  its pid there;
- ``.rxstate.users``: every process using the server holds a shared ``flock`` on it;
- ``.rxstate.start``: serialises starts;
- ``rxstate-server.log``: what background owners printed.

The owner runs :func:`serve`, either in the foreground (``rxstate server --path state/``) or in the
background, started by the first process that finds nobody serving the directory. A background owner stops
the server as soon as it can lock ``.rxstate.users`` exclusively: when the last process using it has left,
however it left, since the kernel drops the locks of a process that dies. The server process is a child of
its owner and dies with it (see :mod:`rxstate.server.embedded`), so none is ever orphaned; a user whose
connection then fails starts a new owner and reconnects (redis-py retries the command), and the new server
reads the AOF: a write acknowledged with ``fsync="always"`` is never lost.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import signal
import site
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import redis

from rxstate.core.errors import ServerError, ValidationError
from rxstate.server.embedded import EmbeddedServer, data_dir_owner

__all__ = ["FSYNC_MODES", "DirectoryServer", "check_fsync", "serve", "socket_path"]

log = logging.getLogger("rxstate")

FSYNC_MODES = ("always", "everysec", "no")
"""``appendfsync`` settings: fsync after every write, once a second, or when the OS decides."""
ALREADY_SERVED = 3
"""Exit code of ``python -m rxstate.server`` when another process already serves the directory."""
_SOCKET = "redis.sock"
_USERS = ".rxstate.users"
_START = ".rxstate.start"
LOG = "rxstate-server.log"
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux, 104 on macOS
_POLL = 0.05


def check_fsync(fsync: str) -> None:
    """Raise ``ValidationError`` unless ``fsync`` is one of ``FSYNC_MODES``."""
    if fsync not in FSYNC_MODES:
        raise ValidationError(f"fsync must be one of {FSYNC_MODES}, not {fsync!r}")


def socket_path(directory: Path) -> str:
    """Where the server of ``directory`` (an absolute path) listens.

    Example:
        >>> socket_path(Path("/srv/state"))
        '/srv/state/redis.sock'
    """
    inside = directory / _SOCKET
    if len(os.fsencode(inside)) <= _MAX_SOCKET_PATH:
        return str(inside)
    digest = hashlib.sha1(os.fsencode(directory)).hexdigest()[:16]
    return f"/tmp/rxstate.{digest}.sock"


def _open_lock_file(path: Path) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise ServerError(f"cannot use data directory {path.parent}: {exc}") from exc


def _try_flock(fd: int, operation: int) -> bool:
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _flock_within(fd: int, operation: int, timeout: float, what: str) -> None:
    """Take a lock, waiting at most ``timeout`` seconds (a blocking ``flock`` could wait forever)."""
    deadline = time.monotonic() + timeout
    while not _try_flock(fd, operation):
        if time.monotonic() > deadline:
            raise ServerError(f"{what} did not finish within {timeout:.0f} s")
        time.sleep(0.005)


def _answers(path: str) -> bool:
    """Whether a server answers PING on the unix socket ``path``."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(path)
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def _termination_stops(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` while inside (only the main thread may install handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def serve(
    path: str | os.PathLike[str],
    *,
    fsync: str = "everysec",
    until_unused: bool = False,
    binary: str | None = None,
    ready: Callable[[EmbeddedServer], object] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Run the server of data directory ``path`` in this process, until SIGINT/SIGTERM or ``stop`` is set.

    Processes calling ``rxstate.connect(path=...)`` on the directory use this server while it runs. A
    server that exits on its own is started again, on the same socket and data.

    Args:
        path: the data directory (created if missing).
        fsync: ``appendfsync``: ``"everysec"``, ``"always"`` or ``"no"``.
        until_unused: also stop once no process uses the directory (how background owners run).
        binary: the server executable (default: ``find_server_binary()``).
        ready: called with the running server once it answers.
        stop: an event that stops the server when set.

    Raises:
        ValidationError: an unknown ``fsync``.
        ServerError: another process already serves the directory, or the server cannot start.

    Example:
        >>> serve("state/", ready=lambda s: print("serving on", s.url))  # doctest: +SKIP
        serving on unix:///.../state/redis.sock?db=0
    """
    check_fsync(fsync)
    directory = Path(path).resolve()
    stop = stop if stop is not None else threading.Event()
    server = EmbeddedServer(path=directory, unix_socket=socket_path(directory), appendfsync=fsync, binary=binary)
    users = _open_lock_file(directory / _USERS) if until_unused else None
    try:
        with _termination_stops(stop):
            server.start()
            if ready is not None:
                ready(server)
            while not stop.wait(_POLL):
                if users is not None and _try_flock(users, fcntl.LOCK_EX):
                    break  # nobody uses it; arrivals wait on their shared lock until the server is down
                if not server.is_running:
                    log.warning("rxstate server: the server of %s exited; starting it again", directory)
                    server.start()
    finally:
        server.stop()
        if users is not None:
            os.close(users)


def _package_root() -> str | None:
    """The folder to put on the owner's ``PYTHONPATH`` so that it runs this very rxstate (a source tree)."""
    root = str(Path(__file__).resolve().parents[2])
    installed = {*site.getsitepackages(), site.getusersitepackages()}
    return None if root in installed else root


def _start_owner(directory: Path, fsync: str) -> subprocess.Popen[bytes]:
    """Start a background owner: ``python -m rxstate.server --until-unused``, in its own session."""
    env = dict(os.environ)
    root = _package_root()
    if root is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    args = [sys.executable, "-m", "rxstate.server", "--path", str(directory), "--fsync", fsync, "--until-unused"]
    try:
        with open(directory / LOG, "ab") as out:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=directory,
                env=env,
                start_new_session=True,  # a Ctrl-C meant for this process must not reach the shared server
            )
    except OSError as exc:
        raise ServerError(f"cannot start a server for {directory}: {exc}") from exc
    threading.Thread(target=proc.wait, name="rxstate-owner-reaper", daemon=True).start()
    return proc


def _log_tail(directory: Path, lines: int = 20) -> str:
    try:
        text = (directory / LOG).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class _Connection(redis.UnixDomainSocketConnection):
    """A connection to a directory's server that starts the server again when it finds it gone."""

    def __init__(self, *, rx_directory: DirectoryServer, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        self._rx_directory = rx_directory

    def _connect(self) -> socket.socket:
        try:
            return super()._connect()  # type: ignore[no-untyped-call, no-any-return]
        except (FileNotFoundError, ConnectionRefusedError):
            self._rx_directory.ensure_served()
            return super()._connect()  # type: ignore[no-untyped-call, no-any-return]

    def on_connect_check_health(self, check_health: bool = True) -> None:
        super().on_connect_check_health(check_health=check_health)
        if self._rx_directory.fsync == "always":  # also when another process (re)started the server
            self.send_command("CONFIG", "SET", "appendfsync", "always")  # type: ignore[no-untyped-call]
            self.read_response()


class DirectoryServer:
    """This process's use of the server of one data directory.

    ``open()`` takes a shared lock on the directory's users file and makes sure a server runs there
    (starting a background owner if none does); ``close()`` drops the lock. Clients from ``client()``
    start the server again when they find it gone.

    Example:
        >>> use = DirectoryServer(Path("state").resolve()); use.open()  # doctest: +SKIP
        >>> use.client().ping()  # doctest: +SKIP
        True
    """

    def __init__(self, directory: Path, *, fsync: str = "everysec", timeout: float = 30.0) -> None:
        check_fsync(fsync)
        self.path = directory
        self.fsync = fsync
        self.unix_socket_path = socket_path(directory)
        self._timeout = timeout
        self._users: int | None = None
        self._starting = threading.Lock()

    @property
    def url(self) -> str:
        """A ``unix://`` URL of the server (plain clients of it do not restart it)."""
        return f"unix://{self.unix_socket_path}?db=0"

    @property
    def is_running(self) -> bool:
        """Whether a server answers on the directory's socket."""
        return _answers(self.unix_socket_path)

    @property
    def owner_pid(self) -> int | None:
        """The pid of the process running the server, if one does."""
        return data_dir_owner(self.path)

    @property
    def pid(self) -> int | None:
        """The server's own process id, if it answers."""
        if not self.is_running:
            return None
        with redis.Redis(unix_socket_path=self.unix_socket_path, socket_timeout=2) as client:
            return int(client.info("server")["process_id"])

    def open(self) -> None:
        """Count this process as a user of the directory's server, and start the server if none runs.

        Raises:
            ServerError: the directory is unusable, or no server answered within the timeout.
        """
        if self._users is not None:
            return
        fd = _open_lock_file(self.path / _USERS)
        try:  # an owner stopping the server holds the lock exclusively for a moment
            _flock_within(fd, fcntl.LOCK_SH, self._timeout, f"stopping the server of {self.path}")
            self._users = fd
            self.ensure_served()
        except BaseException:
            self._users = None
            os.close(fd)
            raise

    def close(self) -> None:
        """Stop counting this process as a user (the owner stops the server once nobody does)."""
        fd, self._users = self._users, None
        if fd is not None:
            os.close(fd)

    def forget(self) -> None:
        """In a forked child: drop the inherited lock descriptor (the parent's lock stays held)."""
        self.close()

    def require_fsync(self, fsync: str) -> None:
        """Raise the server's ``appendfsync`` to ``"always"`` if asked (never lowers it)."""
        check_fsync(fsync)
        if fsync == "always" and self.fsync != "always":
            self.fsync = "always"
            with self.client() as client:
                client.config_set("appendfsync", "always")

    def ensure_served(self) -> None:
        """Return once a server answers, starting a background owner if nobody serves the directory.

        Raises:
            ServerError: this process no longer uses the directory, the owner failed to start (the message
                has the tail of its log), or no server answered within the timeout.
        """
        with self._starting:
            fd = _open_lock_file(self.path / _START)
            try:
                _flock_within(fd, fcntl.LOCK_EX, self._timeout, f"another process's start of the server of {self.path}")
                self._start_if_needed()
            finally:
                os.close(fd)

    def _start_if_needed(self) -> None:
        deadline = time.monotonic() + self._timeout
        owner: subprocess.Popen[bytes] | None = None
        while not _answers(self.unix_socket_path):
            if self._users is None:  # closed meanwhile: an owner started now would stop at once
                raise ServerError(f"this process no longer uses the server of {self.path} (its stores are closed)")
            if owner is not None and owner.poll() is not None:
                if owner.returncode != ALREADY_SERVED:
                    raise ServerError(
                        f"the server of {self.path} did not start (exit code {owner.returncode}); "
                        f"{self.path / LOG}:\n{_log_tail(self.path)}"
                    )
                owner = None  # someone else became the owner meanwhile: wait for it
            if owner is None and data_dir_owner(self.path) is None:
                owner = _start_owner(self.path, self.fsync)
            if time.monotonic() > deadline:
                who = data_dir_owner(self.path)
                raise ServerError(
                    f"no server answered on {self.unix_socket_path} within {self._timeout:.0f} s"
                    + (f" (the directory is held by pid {who})" if who else "")
                    + f"; {self.path / LOG}:\n{_log_tail(self.path)}"
                )
            time.sleep(0.005)

    def client(self, **kwargs: Any) -> redis.Redis:
        """A new client of the server, with its own connections, that restarts the server when it is gone.

        Example:
            >>> use.client().ping()  # doctest: +SKIP
            True
        """
        kwargs.setdefault("decode_responses", False)
        with redis.Redis(unix_socket_path=self.unix_socket_path, **kwargs) as plain:  # redis-py's defaults
            settings = dict(plain.connection_pool.connection_kwargs)
        pool = redis.ConnectionPool(connection_class=_Connection, rx_directory=self, **settings)
        return redis.Redis(connection_pool=pool)

    def __repr__(self) -> str:
        return f"<DirectoryServer {self.path} socket={self.unix_socket_path} fsync={self.fsync}>"
