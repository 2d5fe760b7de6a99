"""The harness behind ``python -m benchmarks``: one server, both transports, one list of results.

A *bench* is a function of a :class:`Context` returning :class:`Result` rows. Each contender of a group
is timed call by call in turn with the group's baseline (``timing.interleaved_us``), so a change of
machine load hits them alike, and its ratio is to that baseline's median measured in the same run.

Example:
    >>> from benchmarks.harness import Options, run
    >>> results = run(Options(n=20, quick=True, peers=False, only=("incr",)))  # doctest: +SKIP
    >>> [(r.transport, r.name, round(r.ratio, 2)) for r in results]  # doctest: +SKIP
    [('tcp', 'raw HINCRBY', 1.0), ('tcp', 'rxstate incr', 1.2), ('unix', ...), ...]
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import math
import os
import statistics
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import redis

import rxstate
from benchmarks.timing import interleaved_us, median_p99
from rxstate.server import EmbeddedServer

__all__ = [
    "PEERS",
    "Run",
    "Context",
    "Options",
    "Result",
    "Target",
    "at_least",
    "at_most",
    "latency_group",
    "peers_installed",
    "ratio_at_most",
    "run",
]

TRANSPORTS = ("tcp", "unix")
PEERS = ("redis_om", "pottery", "eventsourcing", "reaktiv")


def peers_installed() -> bool:
    """Whether the comparison libraries of the ``bench`` extra are importable.

    Example:
        >>> isinstance(peers_installed(), bool)
        True
    """
    return all(importlib.util.find_spec(name) is not None for name in PEERS)


@dataclass(frozen=True)
class Target:
    """A goal a row's figures meet or miss; ``text`` is what the table shows.

    Example:
        >>> ratio_at_most(1.3, "HSET").met(Result("g", "x", "µs", 130.0, 200.0, 1.25))
        True
    """

    text: str
    check: Callable[[Result], bool]

    def met(self, result: Result) -> bool:
        """Whether ``result`` meets this target."""
        return self.check(result)


def ratio_at_most(limit: float, baseline: str) -> Target:
    """A target on the ratio of medians to the group's baseline: at most ``limit``."""
    return Target(f"≤{limit:g}x {baseline}", lambda r: r.ratio <= limit)


def at_most(limit: float, text: str, *, p99: float | None = None) -> Target:
    """A target on the median (and, when given, the p99) in the row's unit: at most these."""
    return Target(text, lambda r: r.median <= limit and (p99 is None or r.p99 <= p99))


def at_least(limit: float, text: str) -> Target:
    """A target on the median in the row's unit: at least ``limit`` (rates)."""
    return Target(text, lambda r: r.median >= limit)


@dataclass(frozen=True)
class Result:
    """One contender's figures on one transport.

    ``ratio`` is this median over the baseline's median (for rates, this rate over the baseline's rate:
    above 1 is faster); ``p99`` of a rate is the rate at the p99 call time (the slow tail).
    """

    group: str
    name: str
    unit: str
    median: float
    p99: float
    ratio: float = math.nan
    baseline: str = ""
    target: Target | None = None
    note: str = ""
    transport: str = ""

    @property
    def verdict(self) -> str:
        """``met``, ``missed`` or ``""`` (no target)."""
        if self.target is None:
            return ""
        return "met" if self.target.met(self) else "missed"


@dataclass(frozen=True)
class Contender:
    """A function timed in a group: ``fn(i)`` does call ``i`` of the work."""

    name: str
    fn: Callable[[int], object]
    target: Target | None = None
    note: str = ""


def latency_group(
    group: str, contenders: Sequence[Contender], n: int, *, warmup: int = 200, unit: str = "µs"
) -> list[Result]:
    """Time ``contenders`` in turn (the first is the baseline) and give each its median, p99 and ratio.

    Example:
        >>> rows = latency_group("g", [Contender("base", lambda i: None), Contender("x", lambda i: i)], 50)
        >>> [r.name for r in rows]
        ['base', 'x']
    """
    times = interleaved_us({c.name: c.fn for c in contenders}, n, warmup=warmup)
    base = statistics.median(times[contenders[0].name])
    rows = []
    for c in contenders:
        median, p99 = median_p99(times[c.name])
        rows.append(Result(group, c.name, unit, median, p99, median / base, contenders[0].name, c.target, c.note))
    return rows


def rate_result(
    group: str, name: str, per_call_s: Sequence[float], items: int, base_rate: float | None, **kw: Any
) -> Result:
    """A throughput row from seconds per call of ``items`` items each (median rate, p99-call rate)."""
    median_s, p99_s = median_p99(list(per_call_s))
    rate = items / median_s
    return Result(group, name, kw.pop("unit", "items/s"), rate, items / p99_s, rate / (base_rate or rate), **kw)


@dataclass(frozen=True)
class Options:
    """What one run does: calls per timed operation, which benches, which transports."""

    n: int = 5000
    quick: bool = False
    peers: bool = True
    only: tuple[str, ...] = ()
    transports: tuple[str, ...] = TRANSPORTS

    def scaled(self, full: int, quick: int) -> int:
        """``full`` in a full run, ``quick`` in a quick one (sizes other than ``n``)."""
        return quick if self.quick else full


@dataclass
class Context:
    """One transport's view of the run's server: clients, stores (closed at the end), options."""

    transport: str
    url: str
    options: Options
    tmp: str
    _client: Callable[..., redis.Redis]
    _closers: list[Callable[[], object]] = field(default_factory=list)

    @property
    def n(self) -> int:
        return self.options.n

    @property
    def peers(self) -> bool:
        return self.options.peers

    def client(self, **kwargs: Any) -> redis.Redis:
        """A new redis-py client on this transport (bytes replies unless ``decode_responses=True``)."""
        client = self._client(**kwargs)
        self._closers.append(client.close)
        return client

    def namespace(self, name: str) -> str:
        """A namespace of this run and transport, used by nobody else."""
        return f"{name}-{self.transport}-{uuid.uuid4().hex[:6]}"

    def store(self, name: str, **options: Any) -> rxstate.Store:
        """A store in a fresh namespace on this transport, closed when the run ends."""
        options.setdefault("reap_interval", None)
        store = rxstate.connect(self.client(), namespace=self.namespace(name), **options)
        self._closers.append(store.close)
        return store

    def close(self) -> None:
        for close in reversed(self._closers):
            close()
        self._closers.clear()


Bench = Callable[[Context], list[Result]]


@dataclass(frozen=True)
class Spec:
    """A bench in the registry: its name (for ``--only``), whether it needs the peers, whether the
    transport matters (in-process benches run once)."""

    name: str
    fn: Bench
    transport_free: bool = False


def registry() -> list[Spec]:
    """Every bench, in table order."""
    from benchmarks import (
        audit,
        bench_aio,
        bench_tenancy,
        crypto,
        entities,
        events,
        locks,
        memory,
        operations,
        reactive,
        scaling,
        scopes,
        transactions,
        watch,
    )
    from benchmarks.bench_scale import rows as scale_out
    from benchmarks.bench_sync import rows as sync_rows

    return [
        Spec("update", entities.update),
        Spec("put", entities.put),
        Spec("get", entities.get),
        Spec("get_lazy", entities.get_lazy),
        Spec("incr", entities.incr),
        Spec("put_many", entities.put_many),
        Spec("crypto", crypto.put_get),
        Spec("audit", audit.writes_and_verify),
        Spec("append", events.append),
        Spec("replay", events.replay),
        Spec("transaction", transactions.read_write),
        Spec("lock", locks.acquire_release),
        Spec("watch", watch.latency),
        Spec("diamond", reactive.diamond, transport_free=True),
        Spec("memory", memory.per_entity, transport_free=True),
        Spec("scaling", scaling.slopes),
        Spec("aio", bench_aio.throughput),
        Spec("backup", operations.backup_namespace),
        Spec("tenancy", bench_tenancy.tenancy),
        Spec("scope", scopes.get_set),
        Spec("sync", sync_rows),
        *_langgraph(),
        Spec("scale", scale_out, transport_free=True),  # builds its own clusters
    ]


def _langgraph() -> list[Spec]:
    """The LangGraph checkpointer bench, when LangGraph (and its SQLite saver) is installed."""
    if importlib.util.find_spec("langgraph") is None or importlib.util.find_spec("langgraph.checkpoint.sqlite") is None:
        return []
    from benchmarks import bench_langgraph

    return [Spec("langgraph", bench_langgraph.checkpointers)]


def bench_names() -> list[str]:
    """The names ``--only`` accepts."""
    return [s.name for s in registry()]


@contextlib.contextmanager
def server() -> Iterator[tuple[EmbeddedServer, Mapping[str, tuple[str, Callable[..., redis.Redis]]]]]:
    """One embedded server listening on TCP loopback and on a unix socket; per transport a URL and a
    client factory."""
    with tempfile.TemporaryDirectory(prefix="rxbench-", dir="/tmp") as sockdir:
        sock = os.path.join(sockdir, "redis.sock")
        with EmbeddedServer(config={"unixsocket": sock, "unixsocketperm": "700"}) as srv:

            def tcp(**kw: Any) -> redis.Redis:
                return srv.client(**kw)

            def unix(**kw: Any) -> redis.Redis:
                kw.setdefault("decode_responses", False)
                return redis.Redis(unix_socket_path=sock, **kw)

            yield srv, {"tcp": (srv.url, tcp), "unix": (f"unix://{sock}?db=0", unix)}


def selected(options: Options) -> list[Spec]:
    """The benches ``options.only`` picks (all when empty); unknown names raise ``ValueError``."""
    specs = registry()
    if not options.only:
        return specs
    unknown = set(options.only) - {s.name for s in specs}
    if unknown:
        raise ValueError(f"unknown bench {sorted(unknown)}; pick from {', '.join(s.name for s in specs)}")
    return [s for s in specs if s.name in options.only]


@dataclass(frozen=True)
class Run:
    """What a run measured, and on which server."""

    results: list[Result]
    server: str
    binary: str


def run(options: Options, *, on_bench: Callable[[str, str], None] | None = None) -> Run:
    """Run the selected benches on every transport of ``options`` against one fresh server.

    ``on_bench(name, transport)`` is called before each bench (progress display).
    """
    specs = selected(options)
    results: list[Result] = []
    with server() as (srv, transports), tempfile.TemporaryDirectory(prefix="rxbench-") as tmp:
        info = srv.client().info("server")
        version = f"{'valkey' if 'valkey_version' in info else 'redis'} "
        version += str(info.get("valkey_version") or info.get("redis_version"))
        for spec in specs:
            for t in options.transports if not spec.transport_free else options.transports[:1]:
                url, factory = transports[t]
                ctx = Context(t, url, options, tmp, factory)
                if on_bench:
                    on_bench(spec.name, t)
                gc.collect()
                try:
                    rows = spec.fn(ctx)
                finally:
                    ctx.close()
                label = "any" if spec.transport_free else t
                results.extend(replace(r, transport=label) for r in rows)
    return Run(results, version, srv.binary)
