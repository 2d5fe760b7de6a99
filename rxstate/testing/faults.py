"""Fault injection on loopback (a nemesis): kill, pause and restart a test server, a lossy TCP proxy,
``CLIENT KILL`` of a store's connections, and a seeded schedule that applies them while a workload runs.

Every fault has ``inject()`` and ``heal()``. ``Schedule(faults, seed=...)`` runs in a thread: it waits a
while, injects a fault chosen by its random generator, holds it, heals it, and so on; it logs its seed
(``rxstate.testing.faults`` logger) and keeps a log of what it did, so a failing run is replayed with
the same seed (the same faults in the same order, held for the same times).

``Proxy`` forwards bytes between clients and a real server and misbehaves on demand: it loses the reply to
the n-th ``EVALSHA`` (``drop``: closes that connection; ``delay``: holds it past the client's timeout),
loses the request itself (``swallow``), sends a reply twice (``duplicate``), delays every reply
(``delay_replies``), cuts every open connection (``cut``) and refuses new ones (``refuse``). It is written
here because no maintained library proxies Redis on loopback with per-command faults (toxiproxy is a
separate Go server).

Clock offsets of hybrid logical clocks are not faults of this module: they belong to the clock of the sync
layer.

Example:
    >>> from rxstate.server import EmbeddedServer
    >>> with EmbeddedServer() as server, proxy(server.port) as p:  # doctest: +SKIP
    ...     schedule = Schedule([Pause(server), Cut(p)], seed=7)
    ...     with schedule.running():
    ...         ...  # the workload, talking to p.port
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from rxstate.core.errors import ServerError, ValidationError

__all__ = [
    "ClientKill",
    "Cut",
    "Delay",
    "DropReply",
    "Fault",
    "Kill",
    "LossyProxy",
    "Pause",
    "Proxy",
    "Restart",
    "Schedule",
    "lossy_proxy",
    "proxy",
    "store_addresses",
]

log = logging.getLogger(__name__)

_EVALSHA = b"\r\nEVALSHA\r\n"
_MODES = ("drop", "delay", "swallow", "duplicate")


class Proxy:
    """A TCP proxy on loopback in front of ``target_port`` (see the module docstring).

    Example:
        >>> from rxstate.server import EmbeddedServer
        >>> with EmbeddedServer() as server, proxy(server.port) as p:
        ...     client = redis.Redis(port=p.port)
        ...     client.ping()
        ...     p.cut()
        ...     p.open_connections
        True
        1
        0
    """

    def __init__(self, target_port: int, *, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._mode = ""
        self._countdown = 0
        self._delay = 0.0
        self._reply_delay = 0.0
        self._refusing = False
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self.lost = 0
        """How many replies (or requests) were lost or duplicated so far."""
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name=f"rx-proxy-{self.port}").start()

    @property
    def open_connections(self) -> int:
        """Client connections currently forwarded."""
        with self._lock:
            return len(self._pairs)

    def arm(self, *, nth: int = 1, mode: str = "drop", delay: float = 0.0) -> None:
        """Lose (or, with ``duplicate``, repeat) what answers the ``nth`` next EVALSHA; ``swallow`` loses the
        request instead.

        Raises:
            ValidationError: an unknown mode, or ``nth`` below 1.
        """
        if mode not in _MODES:
            raise ValidationError(f"mode must be one of {_MODES}, not {mode!r}", field="mode")
        if nth < 1:
            raise ValidationError(f"nth must be at least 1, got {nth}", field="nth")
        with self._lock:
            self._mode, self._countdown, self._delay = mode, nth, delay

    def disarm(self) -> None:
        """Forget an armed loss that has not happened yet."""
        with self._lock:
            self._mode = ""

    def refuse(self, on: bool = True) -> None:
        """Close every new connection at once (``on``), or accept them again."""
        self._refusing = on

    def delay_replies(self, seconds: float) -> None:
        """Hold every reply ``seconds`` before passing it on (0: no more delay)."""
        self._reply_delay = seconds

    def cut(self) -> int:
        """Close every open connection (clients see a reset mid-call); returns how many were cut."""
        with self._lock:
            pairs, self._pairs = self._pairs, set()
        for pair in pairs:
            _close(*pair)
        return len(pairs)

    def close(self) -> None:
        """Stop accepting and cut every connection."""
        self._closed = True
        self._listener.close()
        self.cut()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._refusing:
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()  # the server is down: the client sees the connection close
                continue
            pair = (client, server)
            with self._lock:
                self._pairs.add(pair)
            lose = _Loss()
            threading.Thread(target=self._upstream, args=(pair, lose), daemon=True).start()
            threading.Thread(target=self._downstream, args=(pair, lose), daemon=True).start()

    def _take(self, chunk: bytes) -> str:
        """The fault to apply because of this request chunk ("" for none)."""
        with self._lock:
            if not self._mode or _EVALSHA not in chunk:
                return ""
            self._countdown -= chunk.count(_EVALSHA)
            if self._countdown > 0:
                return ""
            mode, self._mode = self._mode, ""
            self.lost += 1
            return mode

    def _forget(self, pair: tuple[socket.socket, socket.socket]) -> None:
        with self._lock:
            self._pairs.discard(pair)
        _close(*pair)

    def _upstream(self, pair: tuple[socket.socket, socket.socket], lose: _Loss) -> None:
        client, server = pair
        with suppress(OSError):  # either side closed: the pair is torn down below
            while chunk := client.recv(65536):
                mode = self._take(chunk)
                if mode == "swallow":
                    break
                if mode:
                    lose.mode = mode
                    lose.armed.set()
                server.sendall(chunk)
        self._forget(pair)

    def _downstream(self, pair: tuple[socket.socket, socket.socket], lose: _Loss) -> None:
        server, client = pair[1], pair[0]
        with suppress(OSError):
            while chunk := server.recv(65536):
                if self._reply_delay:
                    time.sleep(self._reply_delay)
                if lose.armed.is_set():
                    if lose.mode == "duplicate":
                        lose.armed.clear()
                        client.sendall(chunk + chunk)
                        continue
                    if self._delay:
                        time.sleep(self._delay)
                        client.sendall(chunk)  # late: the client has given up on this connection
                    break
                client.sendall(chunk)
        self._forget(pair)


class _Loss:
    """What the request side of one connection tells its reply side: lose (or repeat) the next reply."""

    __slots__ = ("armed", "mode")

    def __init__(self) -> None:
        self.armed = threading.Event()
        self.mode = "drop"


LossyProxy = Proxy
"""The former name of ``Proxy``."""


def _close(*socks: socket.socket) -> None:
    for s in socks:
        with suppress(OSError):  # already closed by the other side
            s.shutdown(socket.SHUT_RDWR)
        s.close()


@contextmanager
def proxy(target_port: int | None) -> Iterator[Proxy]:
    """A ``Proxy`` in front of ``target_port``, closed at the end of the block.

    Raises:
        ValidationError: no port (a server on a unix socket has none).
    """
    if target_port is None:
        raise ValidationError("the proxy needs a TCP server port", field="target_port")
    p = Proxy(target_port)
    try:
        yield p
    finally:
        p.close()


lossy_proxy = proxy


class Fault(Protocol):
    """Something a ``Schedule`` can do to the system and undo."""

    name: str

    def inject(self) -> None: ...

    def heal(self) -> None: ...


@dataclass
class Kill:
    """SIGKILL the server (a crash); healing starts it again on the same port.

    Acknowledged writes survive only on a server that syncs its log before replying
    (``EmbeddedServer(path=..., appendfsync="always")``).
    """

    server: Any
    name: str = "kill"

    def inject(self) -> None:
        self.server.kill()

    def heal(self) -> None:
        self.server.restart()


@dataclass
class Pause:
    """SIGSTOP the server (it hangs: calls time out with their outcome unknown); healing sends SIGCONT."""

    server: Any
    name: str = "pause"

    def _signal(self, sig: signal.Signals) -> None:
        pid = self.server.pid
        if pid is None:
            raise ServerError(f"cannot pause {self.server!r}: it is not running")
        os.kill(pid, sig)

    def inject(self) -> None:
        self._signal(signal.SIGSTOP)

    def heal(self) -> None:
        self._signal(signal.SIGCONT)


@dataclass
class Restart:
    """Stop the server cleanly and start it again (its clients reconnect); nothing to heal."""

    server: Any
    name: str = "restart"

    def inject(self) -> None:
        self.server.restart()

    def heal(self) -> None:
        """Nothing: the restart is over when ``inject`` returns."""


@dataclass
class Cut:
    """Cut every connection through a ``Proxy``."""

    proxy: Proxy
    name: str = "cut"

    def inject(self) -> None:
        self.proxy.cut()

    def heal(self) -> None:
        """Nothing: clients reconnect through the proxy."""


@dataclass
class Delay:
    """Delay every reply through a ``Proxy`` by ``seconds`` while injected."""

    proxy: Proxy
    seconds: float = 0.05
    name: str = "delay"

    def inject(self) -> None:
        self.proxy.delay_replies(self.seconds)

    def heal(self) -> None:
        self.proxy.delay_replies(0.0)


@dataclass
class DropReply:
    """Lose the reply to the next write script call through a ``Proxy`` (``mode``: drop, delay, duplicate)."""

    proxy: Proxy
    mode: str = "drop"
    name: str = "drop-reply"

    def inject(self) -> None:
        self.proxy.arm(mode=self.mode, delay=1.0 if self.mode == "delay" else 0.0)

    def heal(self) -> None:
        self.proxy.disarm()


def store_addresses(store: Any) -> list[str]:
    """``host:port`` of each open connection of a store's (or client's) pool, as the server names them.

    redis-py keeps no public list of a pool's sockets, so this reads the pool's connection lists.

    Example:
        >>> store_addresses(store)  # fakeredis opens no sockets
        []
    """
    client = getattr(store, "client", store)
    pool = getattr(client, "connection_pool", None)
    conns = [*getattr(pool, "_available_connections", ()), *getattr(pool, "_in_use_connections", ())]
    out = []
    for conn in conns:
        sock = getattr(conn, "_sock", None)
        if isinstance(sock, socket.socket):
            with suppress(OSError):  # closed meanwhile
                host, port = sock.getsockname()[:2]
                out.append(f"{host}:{port}")
    return out


@dataclass
class ClientKill:
    """``CLIENT KILL`` the connections of ``store`` (or, without one, every normal client but the killer's).

    ``admin`` is a client of the server that may run ``CLIENT KILL``.
    """

    admin: redis.Redis
    store: Any = None
    name: str = "client-kill"
    killed: int = 0

    def inject(self) -> None:
        if self.store is None:
            killed = self.admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")  # type: ignore[no-untyped-call]
            self.killed += int(killed)
            return
        for addr in store_addresses(self.store):
            with suppress(redis.ResponseError):  # "No such client": it closed meanwhile
                self.admin.execute_command("CLIENT", "KILL", addr)  # type: ignore[no-untyped-call]
                self.killed += 1

    def heal(self) -> None:
        """Nothing: clients reconnect."""


class Schedule:
    """Applies ``faults`` one at a time while a workload runs, chosen and timed by a seeded generator.

    Args:
        faults: what to inject.
        seed: the seed (default: a random one, logged); the same seed gives the same sequence.
        hold: range of seconds a fault stays injected.
        calm: range of seconds between faults.

    Raises:
        ValidationError: no faults, or an empty or negative range.

    Example:
        >>> class Noop:
        ...     name = "noop"
        ...     def inject(self): pass
        ...     def heal(self): pass
        >>> s = Schedule([Noop()], seed=3, hold=(0.0, 0.0), calm=(0.0, 0.0))
        >>> s.plan(2) == Schedule([Noop()], seed=3, hold=(0.0, 0.0), calm=(0.0, 0.0)).plan(2)
        True
    """

    def __init__(
        self,
        faults: Sequence[Fault],
        *,
        seed: int | None = None,
        hold: tuple[float, float] = (0.1, 0.3),
        calm: tuple[float, float] = (0.1, 0.3),
    ) -> None:
        if not faults:
            raise ValidationError("a schedule needs at least one fault", field="faults")
        for name, (low, high) in (("hold", hold), ("calm", calm)):
            if low < 0 or high < low:
                raise ValidationError(f"{name} must be a range (low, high) with 0 <= low <= high", field=name)
        self.faults = list(faults)
        self.seed = seed if seed is not None else random.SystemRandom().randrange(2**32)
        self.hold, self.calm = hold, calm
        self.log: list[tuple[float, str, str]] = []
        """``(seconds since start, fault, "inject" | "heal")`` for every step taken."""
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0

    def plan(self, steps: int) -> list[tuple[float, str, float]]:
        """The first ``steps`` steps this seed gives: ``(calm before, fault name, hold)``."""
        rng = random.Random(self.seed)
        steps_taken = [self._step(rng) for _ in range(steps)]
        return [(calm, self.faults[i].name, hold) for calm, i, hold in steps_taken]

    def _step(self, rng: random.Random) -> tuple[float, int, float]:
        calm = rng.uniform(*self.calm)
        fault = rng.randrange(len(self.faults))
        return calm, fault, rng.uniform(*self.hold)

    def _note(self, fault: Fault, action: str) -> None:
        self.log.append((time.monotonic() - self._started, fault.name, action))
        log.info("fault schedule seed=%d: %s %s", self.seed, action, fault.name)

    def _run(self) -> None:
        rng = random.Random(self.seed)
        while not self._stop.is_set():
            calm, index, hold = self._step(rng)
            if self._stop.wait(calm):
                return
            fault = self.faults[index]
            try:
                fault.inject()
                self._note(fault, "inject")
                self._stop.wait(hold)
            except (OSError, redis.RedisError, ServerError) as exc:  # kept: ``stop`` raises it
                self.errors.append(exc)
                return
            finally:
                try:
                    fault.heal()
                    self._note(fault, "heal")
                except (OSError, redis.RedisError, ServerError) as exc:
                    self.errors.append(exc)

    def start(self) -> Schedule:
        """Start applying faults in a background thread."""
        log.warning("fault schedule started with seed=%d (replay: Schedule(..., seed=%d))", self.seed, self.seed)
        self._started = time.monotonic()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rx-fault-schedule")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop, heal the fault in force, and raise the first error a fault raised (as ``ServerError``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
        if self.errors:
            raise ServerError(f"fault schedule seed={self.seed} failed: {self.errors[0]}") from self.errors[0]

    @contextmanager
    def running(self) -> Iterator[Schedule]:
        """Apply faults for the duration of the block."""
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def __repr__(self) -> str:
        return f"<Schedule seed={self.seed} faults={[f.name for f in self.faults]}>"
