"""Running agents' code against a real server under a fault schedule, recorded, then checked.

``Workload(spec, server=...)`` runs ``processes`` agents (threads, each with its own store, recorded as its
own process) that call a step function of yours again and again for ``seconds``, while a ``Schedule`` of the
spec's faults runs; then it checks the merged history with the spec's checker and returns the ``Verdict``.
A step is one client operation or a few (Jepsen's client model): errors the store raises (refusals,
timeouts, lost connections) are recorded by the recorder and end only that step.

With pytest, decorate a test with ``@workload(...)`` and take the ``rx_workload`` fixture: its ``run``
fails the test with the rendered counterexample (text in the report, the HTML timeline saved beside it).

Fault names: ``kill``, ``pause``, ``restart`` (the server: a private one, started with its log synced on
every write, so a kill loses nothing acknowledged), ``cut``, ``delay``, ``drop-reply`` (the proxy every
agent talks through), ``client-kill`` (``CLIENT KILL`` of every client). On a cluster: ``pause``
(a node) and ``client-kill`` (on every node).

Stores are opened with ``cache=False`` unless ``connect={...}`` says otherwise: the local cache learns of
other processes' writes asynchronously (within milliseconds), so a cached store is not linearizable
across processes; check cached stores with ``checkers.sessions()``.

Example:
    >>> @workload(checker=checkers.entities(), seconds=1, faults=("cut",))
    ... def test_cells(rx_workload):
    ...     def step(agent):
    ...         cells = agent.store.collection("cells", Cell)
    ...         cells.put(agent.rng.choice("ab"), Cell(value=agent.rng.randrange(100)))
    ...     rx_workload.run(step)
    >>> test_cells.__rxstate_workload__.seconds
    1
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from rxstate.core.errors import RxStateError, ValidationError

from . import checkers, faults
from .linearizability import History, Op
from .recorder import RecordedStore, record

__all__ = ["FAULTS", "Agent", "Workload", "WorkloadRun", "WorkloadSpec", "spec_of", "workload"]

FAULTS = ("kill", "pause", "restart", "cut", "delay", "drop-reply", "client-kill")
SERVER_FAULTS = frozenset({"kill", "pause", "restart"})
CLUSTER_FAULTS = frozenset({"pause", "client-kill"})
F = TypeVar("F", bound=Callable[..., Any])
# What a step may raise under faults: recorded already, it ends that step only.
_TRANSIENT = (redis.RedisError, RxStateError, OSError)


@dataclass(frozen=True)
class WorkloadSpec:
    """What to run (the fields are the arguments of ``workload``), for ``Workload`` without pytest.

    Example:
        >>> WorkloadSpec(checkers.bank(100), seconds=1, faults=("pause",)).processes
        3
    """

    checker: checkers.Checker
    seconds: float = 2.0
    processes: int = 3
    faults: tuple[str, ...] = ()
    seed: int | None = None
    hold: tuple[float, float] = (0.05, 0.2)
    calm: tuple[float, float] = (0.05, 0.2)
    partition: Callable[[Op], str] | None = None
    check_timeout: float | None = 20.0
    connect: Mapping[str, Any] = field(default_factory=dict)
    socket_timeout: float = 0.5
    wrap: Callable[[Any], Any] | None = None

    def __post_init__(self) -> None:
        unknown = set(self.faults) - set(FAULTS)
        if unknown:
            raise ValidationError(f"unknown faults {sorted(unknown)}: choose from {FAULTS}", field="faults")
        if self.seconds <= 0 or self.processes < 1:
            raise ValidationError(f"seconds must be > 0 and processes >= 1, got {self.seconds}/{self.processes}")


def workload(
    *,
    checker: checkers.Checker,
    seconds: float = 2.0,
    processes: int = 3,
    faults: Sequence[str] = (),
    seed: int | None = None,
    partition: Callable[[Op], str] | None = None,
    connect: Mapping[str, Any] | None = None,
    **options: Any,
) -> Callable[[F], F]:
    """Mark a test as a workload: the ``rx_workload`` fixture runs it with these settings.

    Args:
        checker: checks the recorded history (``rxstate.testing.checkers``).
        seconds: how long agents run.
        processes: agents (each its own store and process in the history).
        faults: fault names (``FAULTS``) the schedule picks from; none: no faults.
        seed: the schedule's seed (default random, printed on failure for a replay).
        partition: how the checker partitions operations (default by key).
        connect: options for each agent's ``rxstate.connect``.
        options: more ``WorkloadSpec`` fields (``hold``, ``calm``, ``check_timeout``, ``socket_timeout``,
            ``wrap``: a function applied to each agent's store before it is recorded).

    Raises:
        ValidationError: an unknown fault, or a non-positive duration.

    Example:
        >>> workload(checker=checkers.counters(), faults=("nope",))
        Traceback (most recent call last):
        ...
        rxstate.core.errors.ValidationError: unknown faults ['nope']: ...
    """
    spec = WorkloadSpec(
        checker, seconds, processes, tuple(faults), seed, partition=partition, connect=dict(connect or {}), **options
    )

    def mark(fn: F) -> F:
        fn.__rxstate_workload__ = spec  # type: ignore[attr-defined]
        return fn

    return mark


def spec_of(fn: Any) -> WorkloadSpec | None:
    """The spec ``@workload`` attached to a test function, if any."""
    spec = getattr(fn, "__rxstate_workload__", None)
    return spec if isinstance(spec, WorkloadSpec) else None


@dataclass
class Agent:
    """What a step function gets: its recorded ``store``, a seeded ``rng``, its ``process`` name, ``steps``
    done so far."""

    store: RecordedStore
    rng: random.Random
    process: str
    steps: int = 0


@dataclass
class WorkloadRun:
    """The result of ``Workload.run``: the verdict, the history and the schedule (seed and log)."""

    verdict: checkers.Verdict
    history: History
    schedule: faults.Schedule | None
    steps: int

    @property
    def seed(self) -> int | None:
        """The fault schedule's seed (None without faults): pass it as ``seed=`` to replay the run."""
        return None if self.schedule is None else self.schedule.seed

    def report(self) -> str:
        """The verdict's text, with the seed and the faults applied."""
        lines = [self.verdict.text()]
        if self.schedule is not None:
            applied = ", ".join(f"{t:.2f}s {name} {action}" for t, name, action in self.schedule.log[:30])
            lines.append(f"fault schedule seed={self.schedule.seed}: {applied or 'no fault applied'}")
        return "\n".join(lines)


class Workload:
    """Runs a ``WorkloadSpec`` against a real ``server`` (an ``EmbeddedServer``) or a ``cluster``.

    Example:
        >>> from rxstate.server import EmbeddedServer
        >>> with EmbeddedServer() as server:  # doctest: +SKIP
        ...     run = Workload(spec, server=server).run(step)
        ...     assert run.verdict.valid, run.report()
    """

    def __init__(
        self, spec: WorkloadSpec, *, server: Any = None, cluster: Any = None, namespace: str | None = None
    ) -> None:
        if (server is None) == (cluster is None):
            raise ValidationError("a workload runs against a server or a cluster: pass exactly one")
        if cluster is not None and set(spec.faults) - CLUSTER_FAULTS:
            raise ValidationError(f"on a cluster the faults are {sorted(CLUSTER_FAULTS)}", field="faults")
        self.spec, self.server, self.cluster = spec, server, cluster
        self.namespace = namespace or f"wl{uuid.uuid4().hex[:10]}"
        self._proxy: faults.Proxy | None = None

    def _client(self) -> Any:
        timeout = self.spec.socket_timeout
        if self.cluster is not None:
            return self.cluster.client(socket_timeout=timeout)
        assert self._proxy is not None
        return redis.Redis(
            port=self._proxy.port, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 1)
        )

    def store(self, history: History, process: str) -> RecordedStore:
        """A new recorded store of this workload's namespace, talking through the proxy (or to the cluster)."""
        import rxstate

        options = {"cache": False, "reap_interval": None, **self.spec.connect}
        store = rxstate.connect(self._client(), namespace=self.namespace, **options)
        return record(store if self.spec.wrap is None else self.spec.wrap(store), history=history, process=process)

    def _faults(self) -> list[faults.Fault]:
        built: list[faults.Fault] = []
        for name in self.spec.faults:
            if self.cluster is not None:
                nodes = self.cluster.nodes
                if name == "pause":
                    built += [faults.Pause(node, name=f"pause-{i}") for i, node in enumerate(nodes)]
                else:
                    built += [faults.ClientKill(n.client(), name=f"client-kill-{i}") for i, n in enumerate(nodes)]
                continue
            assert self._proxy is not None
            made: dict[str, Callable[[], faults.Fault]] = {
                "kill": lambda: faults.Kill(self.server),
                "pause": lambda: faults.Pause(self.server),
                "restart": lambda: faults.Restart(self.server),
                "cut": lambda: faults.Cut(self._proxy),  # type: ignore[arg-type]
                "delay": lambda: faults.Delay(self._proxy, seconds=self.spec.socket_timeout * 1.5),  # type: ignore[arg-type]
                "drop-reply": lambda: faults.DropReply(self._proxy),  # type: ignore[arg-type]
                "client-kill": lambda: faults.ClientKill(self.server.client()),
            }
            built.append(made[name]())
        return built

    def run(
        self,
        step: Callable[[Agent], Any],
        *,
        setup: Callable[[RecordedStore], Any] | None = None,
        final: Callable[[RecordedStore], Any] | None = None,
    ) -> WorkloadRun:
        """Run ``setup`` (recorded, no faults), the agents under the fault schedule, then ``final`` (recorded,
        faults healed: e.g. last reads, or draining a queue), and check the history.

        Raises:
            ServerError: a fault could not be applied or healed.
            Exception: whatever a step raised that is not a store error (a bug in the step) is raised here.
        """
        history = History(process="setup")
        spec = self.spec
        stores: list[RecordedStore] = []
        if self.server is not None:
            self._proxy = faults.Proxy(self.server.port)
        try:
            if setup is not None:
                setup_store = self.store(history, "setup")
                stores.append(setup_store)
                setup(setup_store)
            schedule = (
                faults.Schedule(self._faults(), seed=spec.seed, hold=spec.hold, calm=spec.calm) if spec.faults else None
            )
            base_seed = schedule.seed if schedule is not None else (spec.seed or random.randrange(2**32))
            agents = []
            for i in range(spec.processes):
                agent_store = self.store(history, f"p{i}")
                stores.append(agent_store)
                agents.append(Agent(agent_store, random.Random(base_seed * 1000 + i), f"p{i}"))
            bugs: list[BaseException] = []
            stop = threading.Event()
            threads = [threading.Thread(target=_loop, args=(a, step, stop, bugs), daemon=True) for a in agents]
            if schedule is not None:
                schedule.start()
            try:
                for t in threads:
                    t.start()
                stop.wait(spec.seconds)
            finally:
                stop.set()
                for t in threads:
                    t.join(30)
                if schedule is not None:
                    schedule.stop()
            if bugs:
                raise bugs[0]
            if final is not None:
                final_store = self.store(history, "final")
                stores.append(final_store)
                _settle(final, final_store)
            verdict = spec.checker.check(history, partition=spec.partition, timeout=spec.check_timeout)
            return WorkloadRun(verdict, history, schedule, sum(a.steps for a in agents))
        finally:
            for s in stores:
                s.store.close()
            if self._proxy is not None:
                self._proxy.close()
                self._proxy = None


def _loop(agent: Agent, step: Callable[[Agent], Any], stop: threading.Event, bugs: list[BaseException]) -> None:
    while not stop.is_set():
        try:
            step(agent)
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            stop.wait(0.01)  # the server or the link is down: try again soon
        except _TRANSIENT:
            pass  # a refusal (a stale version, a missing entity): recorded, and normal under concurrency
        except BaseException as exc:  # a bug in the step: stop everyone and raise it from run()
            bugs.append(exc)
            stop.set()
            return
        agent.steps += 1


def _settle(final: Callable[[RecordedStore], Any], store: RecordedStore, attempts: int = 50) -> None:
    """Run ``final`` once the server answers again (it may still be restarting after the last fault)."""
    for attempt in range(attempts):
        try:
            final(store)
            return
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if attempt == attempts - 1:
                raise RxStateError(f"the server did not come back for the final reads: {exc}") from exc
            time.sleep(0.05)
