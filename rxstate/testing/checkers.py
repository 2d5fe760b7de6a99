"""Checkers of recorded histories: registers and entities, counters, sets, queues, bank, sessions.

Every checker splits a history into partitions (by default one per key: ``op.key``; pass ``partition=`` a
function of the operation to group otherwise), checks each on its own — in parallel worker processes with
``processes=`` — and returns a ``Verdict``: ``valid`` True, False (with the anomalies found and, for
linearizability, the counterexample) or None when the time limit (``timeout=``) ran out before every
partition was decided ("unknown": nothing was proven either way for the partitions in ``unknown``).

- ``linearizable(model)`` / ``registers()`` / ``counters()`` / ``entities()``: linearizability (Wing & Gong
  with memoisation, ``rxstate.testing.linearizability``).
- ``set_full()``: Jepsen's set-full on ``add``/``remove``/``read`` operations: no acknowledged element lost,
  none removed and seen again (resurrected), no element read that nobody added, no stale read.
- ``queue()``: ``enqueue``/``dequeue`` (a change feed, a stream): no loss, no duplicate, nothing unexpected,
  per-key order (``order_key`` of an element names its key).
- ``bank(total)``: ``transfer``/``read`` of all balances: every read sums to ``total``, none negative.
- ``sessions()``: read-your-writes and monotonic reads, per process and key, by version.

Parallel checking runs ``multiprocessing`` workers: checkers and partition functions must be picklable
(module-level functions, not lambdas).

Example:
    >>> from rxstate.testing.linearizability import History
    >>> h = History(process="p")
    >>> h.invoke("add", "s", 1).ok()
    >>> h.invoke("read", "s").ok([])
    >>> v = set_full().check(h)
    >>> v.valid, [a.kind for a in v.anomalies]
    (False, ['lost'])
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rxstate.core.errors import ValidationError

from . import timeline
from .linearizability import Counterexample, History, Model, Op, check, counter, entity, freeze, register

__all__ = [
    "Anomaly",
    "Checker",
    "Verdict",
    "bank",
    "counters",
    "entities",
    "linearizable",
    "queue",
    "registers",
    "sessions",
    "set_full",
]


@dataclass
class Anomaly:
    """One thing the history shows that the checked property forbids.

    Attributes:
        kind: e.g. ``"lost"``, ``"resurrected"``, ``"duplicated"``, ``"order"``, ``"total"``, ``"stale-read"``.
        key: the partition it was found in.
        message: what happened, in words.
        ops: the operations involved (shown highlighted on the timeline).
    """

    kind: str
    key: str
    message: str
    ops: list[Op] = field(default_factory=list)

    def __str__(self) -> str:
        return f"[{self.kind}] {self.key}: {self.message}"


@dataclass
class Verdict:
    """What a checker concluded about a history.

    Attributes:
        checker: the checker's name.
        valid: True, False, or None ("unknown": the time limit ran out first).
        ops: operations checked; partitions: how many partitions.
        seconds: time taken.
        anomalies: what was found (empty when valid).
        counterexample: for linearizability, the longest linearization and the operations that cannot fit.
        unknown: partitions left undecided at the time limit.
        history: the operations (for rendering).
    """

    checker: str
    valid: bool | None
    ops: int
    partitions: int
    seconds: float
    anomalies: list[Anomaly] = field(default_factory=list)
    counterexample: Counterexample | None = None
    unknown: list[str] = field(default_factory=list)
    history: list[Op] = field(default_factory=list, repr=False)

    def __bool__(self) -> bool:
        return self.valid is True

    def _highlights(self) -> tuple[list[Op], list[Op]]:
        """The linearization to number, and the operations to mark as bad."""
        if self.counterexample is not None:
            return self.counterexample.linearized, self.counterexample.stuck
        return [], [op for a in self.anomalies for op in a.ops]

    def _summary(self) -> list[str]:
        verdict = {True: "valid", False: "INVALID", None: "unknown (time limit reached)"}[self.valid]
        lines = [f"{self.checker}: {verdict} — {self.ops} ops in {self.partitions} partitions, {self.seconds:.3f} s"]
        if self.unknown:
            lines.append(f"undecided partitions: {', '.join(self.unknown[:10])}")
        if self.counterexample is not None:
            lines.append(str(self.counterexample))
        lines += [str(a) for a in self.anomalies[:20]]
        if len(self.anomalies) > 20:
            lines.append(f"... and {len(self.anomalies) - 20} more anomalies")
        return lines

    def text(self, *, width: int = 100) -> str:
        """A plain-text report with an ASCII timeline of the operations involved, for CI logs."""
        order, bad = self._highlights()
        return timeline.text(self._summary(), self._focus(), linearized=order, bad=bad, width=width)

    def html(self) -> str:
        """A standalone HTML page: one lane per process, operations as bars, the linearization and the
        operations that cannot fit highlighted."""
        order, bad = self._highlights()
        return timeline.html(self._summary(), self._focus(), linearized=order, bad=bad)

    def save_html(self, path: str | Path) -> Path:
        """Write ``html()`` to ``path``; returns the path."""
        out = Path(path)
        out.write_text(self.html())
        return out

    def _repr_html_(self) -> str:
        return self.html()

    def __str__(self) -> str:
        return "\n".join(self._summary())

    def _focus(self) -> list[Op]:
        """The operations worth drawing: the failing partition's, else everything (capped by the renderer)."""
        keys: set[str] = set()
        if self.counterexample is not None:
            keys.add(self.counterexample.key)
        keys |= {a.key for a in self.anomalies}
        if not keys:
            return self.history
        involved = {id(op) for a in self.anomalies for op in a.ops}
        return [op for op in self.history if op.key in keys or id(op) in involved]


def _by_key(op: Op) -> str:
    return op.key


class Checker:
    """Checks one property of a history, partition by partition (subclasses define ``check_partition``).

    Example:
        >>> registers().check([]).valid
        True
    """

    name = "checker"

    def check_partition(self, key: str, ops: Sequence[Op], deadline: float | None) -> Any:
        """Anomalies found in one partition (a list), a ``Counterexample``, or None at the deadline."""
        raise NotImplementedError

    def check(
        self,
        history: History | Iterable[Op],
        *,
        partition: Callable[[Op], str] | None = None,
        processes: int = 1,
        timeout: float | None = None,
    ) -> Verdict:
        """Check ``history``; see the module docstring.

        Args:
            history: a ``History`` or operations.
            partition: the partition of an operation (default its key).
            processes: worker processes to check partitions in parallel (1: in this process).
            timeout: seconds after which undecided partitions are reported as unknown.

        Raises:
            ValidationError: ``processes`` below 1 or ``timeout`` not positive.
        """
        if processes < 1:
            raise ValidationError(f"processes must be at least 1, got {processes}", field="processes")
        if timeout is not None and timeout <= 0:
            raise ValidationError(f"timeout must be positive, got {timeout}", field="timeout")
        started = time.monotonic()
        deadline = None if timeout is None else started + timeout
        ops = history.ops if isinstance(history, History) else sorted(history, key=lambda o: o.invoke_ns)
        groups: dict[str, list[Op]] = defaultdict(list)
        for op in ops:
            groups[(partition or _by_key)(op)].append(op)
        keys = sorted(groups)
        results: dict[str, Any] = {}
        if processes == 1 or len(keys) < 2:
            for key in keys:
                if deadline is not None and time.monotonic() > deadline:
                    break
                results[key] = self.check_partition(key, groups[key], deadline)
        else:
            results = self._parallel(keys, groups, processes, deadline)
        anomalies: list[Anomaly] = []
        counterexample: Counterexample | None = None
        unknown = [k for k in keys if results.get(k) is None]
        for key in keys:
            found = results.get(key)
            if isinstance(found, Counterexample):
                counterexample = counterexample or found
                anomalies.append(Anomaly("non-linearizable", key, "no linearization exists", found.stuck))
            elif found:
                anomalies += found
        valid = False if anomalies else (None if unknown else True)
        return Verdict(
            self.name, valid, len(ops), len(keys), time.monotonic() - started, anomalies, counterexample, unknown, ops
        )

    def _parallel(
        self, keys: list[str], groups: dict[str, list[Op]], processes: int, deadline: float | None
    ) -> dict[str, Any]:
        results: dict[str, Any] = {}
        context = multiprocessing.get_context("spawn")  # never fork a threaded test process
        pool = concurrent.futures.ProcessPoolExecutor(max_workers=min(processes, len(keys)), mp_context=context)
        try:
            futures = {pool.submit(self.check_partition, key, groups[key], deadline): key for key in keys}
            wait = None if deadline is None else max(0.0, deadline - time.monotonic()) + 5.0
            done, _ = concurrent.futures.wait(futures, timeout=wait)
            for future in done:
                results[futures[future]] = future.result()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        return results


@dataclass
class _Linearizable(Checker):
    model: Model

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"linearizable({type(self.model).__name__.strip('_').lower()})"

    def check_partition(self, key: str, ops: Sequence[Op], deadline: float | None) -> Any:
        remaining = None if deadline is None else max(0.001, deadline - time.monotonic())
        result = check(ops, self.model, timeout=remaining)
        if result.valid is None:
            return None
        return result.counterexample if result.counterexample is not None else []


def linearizable(model: Model | None = None) -> Checker:
    """Linearizability of every partition against ``model`` (default ``entity()``, what ``record`` writes).

    Example:
        >>> from rxstate.testing.linearizability import History, register
        >>> h = History(process="p")
        >>> h.invoke("write", "x", 1).ok(); h.invoke("read", "x").ok(2)
        >>> linearizable(register()).check(h).valid
        False
    """
    return _Linearizable(model if model is not None else entity())


def registers(initial: Any = None) -> Checker:
    """Read/write/cas registers (plain values), linearizable.

    Example:
        >>> registers().name
        'linearizable(register)'
    """
    return _Linearizable(register(initial))


def counters(initial: int = 0) -> Checker:
    """Counters (``incr`` and ``read``), linearizable: no increment lost or applied twice.

    Example:
        >>> counters().name
        'linearizable(counter)'
    """
    return _Linearizable(counter(initial))


def entities() -> Checker:
    """Entities recorded by ``record`` (values and versions), linearizable.

    Example:
        >>> entities().name
        'linearizable(entity)'
    """
    return _Linearizable(entity())


def _end(op: Op) -> float:
    return float("inf") if op.complete_ns is None else op.complete_ns


@dataclass
class _SetFull(Checker):
    name = "set-full"

    def check_partition(self, key: str, ops: Sequence[Op], deadline: float | None) -> Any:
        adds: dict[Any, list[Op]] = defaultdict(list)
        removes: dict[Any, list[Op]] = defaultdict(list)
        reads = [op for op in ops if op.f == "read" and op.status == "ok"]
        for op in ops:
            if op.f in ("add", "remove") and op.status != "fail":
                (adds if op.f == "add" else removes)[freeze(op.value)].append(op)
        contents = [(r, {freeze(e) for e in (r.output or ())}) for r in reads]
        anomalies: list[Anomaly] = []
        for element in set(adds) | {e for _, seen in contents for e in seen}:
            anomalies += self._element(key, element, adds[element], removes[element], contents)
        return anomalies

    @staticmethod
    def _element(
        key: str, element: Any, adds: list[Op], removes: list[Op], contents: list[tuple[Op, set[Any]]]
    ) -> list[Anomaly]:
        present = [r for r, seen in contents if element in seen]
        for r in present:
            if not any(a.invoke_ns < _end(r) for a in adds):
                return [Anomaly("unexpected", key, f"{element!r} was read but never added", [r])]
        done_removes = [d for d in removes if d.status == "ok"]
        for d in done_removes:
            for r in present:
                if r.invoke_ns > _end(d) and not any(a.invoke_ns > d.invoke_ns for a in adds):
                    return [Anomaly("resurrected", key, f"{element!r} was read after its removal completed", [d, r])]
        # Known to be in the set from: an acknowledged add's completion, or a read that saw it.
        known = [_end(a) for a in adds if a.status == "ok"] + [_end(r) for r in present]
        if not known:
            return []
        since = min(known)
        for r, seen in contents:
            if element in seen or r.invoke_ns <= since:
                continue
            if any(d.invoke_ns < _end(r) for d in removes):
                continue  # a removal may have taken effect first
            later = [p for p in present if p.invoke_ns > _end(r)]
            witness = [op for op in adds if op.status == "ok"][:1] or present[:1]
            if later:
                return [Anomaly("stale", key, f"{element!r} was missing from a read, then seen again", [*witness, r])]
            return [Anomaly("lost", key, f"{element!r} was acknowledged, then never read again", [*witness, r])]
        return []


def set_full() -> Checker:
    """Jepsen's set-full: ``add``(element), ``remove``(element), ``read`` (output: the elements).

    Example:
        >>> set_full().name
        'set-full'
    """
    return _SetFull()


def _first(value: Any) -> Any:
    if isinstance(value, list | tuple) and value:
        return value[0]
    return None


@dataclass
class _Queue(Checker):
    drained: bool = True
    order_key: Callable[[Any], Any] | None = _first
    name = "queue"

    def check_partition(self, key: str, ops: Sequence[Op], deadline: float | None) -> Any:
        enqueued: dict[Any, Op] = {}
        for op in ops:
            if op.f == "enqueue" and op.status != "fail":
                enqueued.setdefault(freeze(op.value), op)
        dequeues = [op for op in ops if op.f == "dequeue" and op.status == "ok" and op.output is not None]
        anomalies: list[Anomaly] = []
        taken: dict[Any, list[Op]] = defaultdict(list)
        for d in dequeues:
            element = freeze(d.output)
            taken[element].append(d)
            enq = enqueued.get(element)
            if enq is None or enq.invoke_ns > _end(d):
                anomalies.append(Anomaly("unexpected", key, f"{d.output!r} was delivered but never enqueued", [d]))
        for ds in taken.values():
            if len(ds) > 1:
                anomalies.append(Anomaly("duplicated", key, f"{ds[0].output!r} was delivered {len(ds)} times", ds))
        if self.drained:
            for element, enq in enqueued.items():
                if enq.status == "ok" and element not in taken:
                    anomalies.append(Anomaly("lost", key, f"{enq.value!r} was acknowledged, never delivered", [enq]))
        if self.order_key is not None:
            anomalies += self._order(key, dequeues, enqueued)
        return anomalies

    def _order(self, key: str, dequeues: list[Op], enqueued: dict[Any, Op]) -> list[Anomaly]:
        assert self.order_key is not None
        out: list[Anomaly] = []
        # Per consumer and order key: the latest-invoked enqueue delivered so far; an element whose enqueue
        # completed before that one was invoked came first, so it must not be delivered after it.
        latest: dict[tuple[str, Any], tuple[Op, Op]] = {}
        for d in dequeues:
            enq = enqueued.get(freeze(d.output))
            group = self.order_key(d.output)
            if enq is None or group is None:
                continue
            slot = (d.process, freeze(group))
            before = latest.get(slot)
            if before is not None and _end(enq) < before[0].invoke_ns:
                message = f"{d.output!r} was delivered after {before[1].output!r}, though enqueued before it"
                out.append(Anomaly("order", key, message, [before[1], d]))
            if before is None or enq.invoke_ns > before[0].invoke_ns:
                latest[slot] = (enq, d)
        return out


def queue(*, drained: bool = True, order_key: Callable[[Any], Any] | None = _first) -> Checker:
    """A queue or stream: ``enqueue``(element), ``dequeue`` (output: the element, None when empty).

    Args:
        drained: the consumers read everything before the history ended, so an acknowledged element never
            delivered is lost.
        order_key: the ordering key of an element (default: its first item, e.g. the entity id of an
            ``(id, version)`` pair); elements of one key enqueued one after the other must reach each
            consumer in that order. None: no order check.

    Example:
        >>> queue().name
        'queue'
    """
    return _Queue(drained, order_key)


@dataclass
class _Bank(Checker):
    total: int
    allow_negative: bool = False
    name = "bank"

    def check_partition(self, key: str, ops: Sequence[Op], deadline: float | None) -> Any:
        out: list[Anomaly] = []
        for op in ops:
            if op.f != "read" or op.status != "ok" or op.output is None:
                continue
            balances = dict(op.output)
            if sum(balances.values()) != self.total:
                out.append(Anomaly("total", key, f"balances sum to {sum(balances.values())}, not {self.total}", [op]))
            elif not self.allow_negative and any(v < 0 for v in balances.values()):
                out.append(Anomaly("negative", key, f"a negative balance: {balances}", [op]))
        return out


def bank(total: int, *, allow_negative: bool = False) -> Checker:
    """A bank: ``transfer`` operations, and ``read`` operations whose output maps account -> balance (a
    snapshot): every read must sum to ``total`` (and hold no negative balance).

    Example:
        >>> from rxstate.testing.linearizability import History
        >>> h = History(process="p")
        >>> h.invoke("read", "bank").ok({"a": 60, "b": 30})
        >>> bank(100).check(h).anomalies[0].kind
        'total'
    """
    return _Bank(total, allow_negative)


def _version(op: Op) -> int | None:
    out = op.output
    if isinstance(out, dict) and isinstance(out.get("version"), int):
        version: int = out["version"]
        return version
    return None


@dataclass
class _Sessions(Checker):
    read_your_writes: bool = True
    monotonic_reads: bool = True
    version_of: Callable[[Op], int | None] = _version
    name = "sessions"

    def check_partition(self, key: str, ops: Sequence[Op], deadline: float | None) -> Any:
        out: list[Anomaly] = []
        by_process: dict[str, list[Op]] = defaultdict(list)
        for op in ops:
            if op.status == "ok":
                by_process[op.process].append(op)
        for process, mine in by_process.items():
            wrote: Op | None = None
            read: Op | None = None
            for op in mine:
                version = self.version_of(op)
                if op.f == "read":
                    if self.read_your_writes and wrote is not None and (version or 0) < (self.version_of(wrote) or 0):
                        out.append(
                            Anomaly(
                                "read-your-writes",
                                key,
                                f"{process} read version {version} after writing version {self.version_of(wrote)}",
                                [wrote, op],
                            )
                        )
                    if self.monotonic_reads and read is not None and (version or 0) < (self.version_of(read) or 0):
                        out.append(
                            Anomaly(
                                "monotonic-reads",
                                key,
                                f"{process} read version {version} after reading version {self.version_of(read)}",
                                [read, op],
                            )
                        )
                    if version is not None:
                        read = op
                elif version is not None:
                    wrote = op
        return out


def sessions(
    *, read_your_writes: bool = True, monotonic_reads: bool = True, version_of: Callable[[Op], int | None] = _version
) -> Checker:
    """Session guarantees per process and key: a read sees at least the version the process last wrote
    (read-your-writes) and never an older version than it read before (monotonic reads).

    Args:
        version_of: the version an operation saw or wrote (default: ``output["version"]``, as ``record``
            stores it).

    Example:
        >>> sessions().name
        'sessions'
    """
    return _Sessions(read_your_writes, monotonic_reads, version_of)
