"""A linearizability checker for histories of operations on registers and counters.

Record what your processes did with a ``History`` (each operation's invocation, then its outcome:
``ok`` with its output, ``fail`` when it certainly did not happen, ``info`` when nobody knows — a
timeout, a dropped connection), then ``check`` it against a model of the object. A history is
linearizable when every operation can be placed at one instant between its invocation and its
completion so that the sequence obeys the model; ``info`` operations may take effect at any point after
their invocation, or never.

The search is the Wing & Gong algorithm with Lowe's memoisation (as in Knossos and Porcupine): a
depth-first search over which pending operation to linearize next, skipping any (set of linearized
operations, model state) pair seen before. Keys are independent objects, so each key is checked on
its own (linearizability is compositional).

Histories recorded elsewhere (a Jepsen EDN log, JSON lines of invoke/complete events) come in through
``History.from_events`` and ``History.load``/``History.load_edn``.

Times come from ``time.monotonic_ns()``, which on Linux is one clock for every process of the machine:
histories of several processes on one machine merge correctly; histories from several machines do not.

Example:
    >>> h = History(process="p1")
    >>> h.invoke("write", "x", 1).ok()
    >>> h.invoke("read", "x").ok(1)
    >>> check(h, model=register()).valid
    True
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rxstate.core.errors import ValidationError

__all__ = [
    "INVALID",
    "OPERATIONS",
    "Counterexample",
    "History",
    "Model",
    "Op",
    "Pending",
    "Result",
    "check",
    "counter",
    "entity",
    "freeze",
    "register",
]

INVALID: Hashable = object()
_INVALID = INVALID
_INF = float("inf")

OPERATIONS = frozenset(
    {"read", "write", "cas", "incr", "add", "remove", "enqueue", "dequeue", "transfer", "update", "rmw", "delete"}
)
"""Operation names a history may hold: the models and checkers here give each one its meaning."""
_COMPLETIONS = {"ok", "fail", "info"}


def freeze(value: Any) -> Hashable:
    """A hashable, comparable form of a JSON-like value (dicts and lists become sorted pairs and tuples).

    Example:
        >>> freeze({"b": [1, 2], "a": None}) == freeze({"a": None, "b": (1, 2)})
        True
    """
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, set | frozenset):
        return frozenset(freeze(v) for v in value)
    hashable: Hashable = value
    return hashable


@dataclass(frozen=True, slots=True)
class Op:
    """One completed (or abandoned) operation of a history.

    Attributes:
        process: who ran it (operations of one process never overlap).
        key: the object it acted on.
        f: ``"read"``, ``"write"``, ``"cas"`` or ``"incr"``.
        value: the input: the written value, ``(expected, new)`` for a cas, the amount of an incr.
        output: what it returned: the value read, the cas's success, the counter after an incr (or None).
        status: ``"ok"``, ``"fail"`` (certainly not applied) or ``"info"`` (unknown).
        invoke_ns: when it was invoked (``time.monotonic_ns()``).
        complete_ns: when its outcome was known (None for ``info``: it may take effect any time later).
    """

    process: str
    key: str
    f: str
    value: Any
    output: Any
    status: str
    invoke_ns: int
    complete_ns: int | None

    def __str__(self) -> str:
        arg = "" if self.value is None else f" {self.value!r}"
        out = f" -> {self.output!r}" if self.status == "ok" and self.output is not None else ""
        return f"{self.process}: {self.f}({self.key}){arg}{out} [{self.status}]"

    def to_json(self) -> str:
        return json.dumps(
            [self.process, self.key, self.f, self.value, self.output, self.status, self.invoke_ns, self.complete_ns]
        )

    @property
    def duration_ns(self) -> int | None:
        """How long it took (None while its outcome is unknown)."""
        return None if self.complete_ns is None else self.complete_ns - self.invoke_ns

    @classmethod
    def from_json(cls, line: str) -> Op:
        p, k, f, v, out, status, inv, comp = json.loads(line)
        if isinstance(v, list):
            v = tuple(v)
        return cls(p, k, f, v, out, status, inv, comp)


class Pending:
    """An invoked operation waiting for its outcome; finish it with ``ok``, ``fail`` or ``info``.

    As a context manager, an exception that leaves the block unfinished records ``info`` (unknown).
    """

    __slots__ = ("_done", "_history", "f", "invoke_ns", "key", "process", "value")

    def __init__(self, history: History, process: str, f: str, key: str, value: Any) -> None:
        self._history = history
        self.process, self.f, self.key, self.value = process, f, key, value
        self._done = False
        self.invoke_ns = time.monotonic_ns()

    def _finish(self, status: str, output: Any, complete: int | None) -> None:
        if self._done:
            raise RuntimeError(f"{self.f}({self.key}) was already completed")
        self._done = True
        op = Op(self.process, self.key, self.f, self.value, output, status, self.invoke_ns, complete)
        self._history._append(op)

    @property
    def done(self) -> bool:
        """Whether its outcome was recorded."""
        return self._done

    def ok(self, output: Any = None) -> None:
        """It happened, and returned ``output``."""
        self._finish("ok", output, time.monotonic_ns())

    def fail(self) -> None:
        """It certainly did not take effect (e.g. a refused compare-and-set)."""
        self._finish("fail", None, time.monotonic_ns())

    def info(self) -> None:
        """Its outcome is unknown (a timeout, a lost connection): it may take effect at any later time."""
        self._finish("info", None, None)

    def __enter__(self) -> Pending:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if not self._done:
            self.info()


class History:
    """A thread-safe recorder of operations.

    Each process records into its own ``History`` (pass ``process=`` or get ``pid:<pid>``); threads
    sharing one recorder should pass their own ``process=`` to ``invoke``. Merge the histories of
    several processes with ``History.merge`` (or ship ``ops`` through a queue, or ``save``/``load``).

    Example:
        >>> h = History(process="w1")
        >>> with h.invoke("cas", "x", (None, 1)) as call:
        ...     call.ok(True)
        >>> len(h)
        1
    """

    def __init__(self, ops: Iterable[Op] = (), *, process: str | None = None) -> None:
        self.process = process if process is not None else f"pid:{os.getpid()}"
        self._ops: list[Op] = list(ops)
        self._lock = threading.Lock()

    def invoke(self, f: str, key: str, value: Any = None, *, process: str | None = None) -> Pending:
        """Record the invocation of an operation; complete the returned ``Pending`` with its outcome."""
        if f not in OPERATIONS:
            raise ValidationError(f"unknown operation {f!r}: use one of {sorted(OPERATIONS)}", field="f")
        return Pending(self, process or self.process, f, key, value)

    def _append(self, op: Op) -> None:
        with self._lock:
            self._ops.append(op)

    @property
    def ops(self) -> list[Op]:
        """The recorded operations, by invocation time."""
        with self._lock:
            return sorted(self._ops, key=lambda o: o.invoke_ns)

    def __len__(self) -> int:
        return len(self._ops)

    def __iter__(self) -> Any:
        return iter(self.ops)

    @classmethod
    def merge(cls, *histories: History | Iterable[Op]) -> History:
        """One history holding the operations of several."""
        merged = cls(process="merged")
        for h in histories:
            merged._ops.extend(h.ops if isinstance(h, History) else h)
        return merged

    def extend(self, ops: Iterable[Op]) -> None:
        """Add operations recorded elsewhere (another thread's or process's)."""
        with self._lock:
            self._ops.extend(ops)

    @classmethod
    def from_events(
        cls,
        events: Iterable[Mapping[str, Any]],
        *,
        time_unit: str = "ns",
        independent: bool = False,
    ) -> History:
        """A history from invocation and completion events with explicit times (recorded elsewhere).

        Each event is a mapping with ``process``, ``type`` (``invoke``, then ``ok``, ``fail`` or ``info``),
        ``f``, ``value``, ``time`` and optionally ``key`` — the shape of a Jepsen history. A completion
        belongs to the open invocation of the same process; an invocation never completed is ``info``.
        The invocation's value is the operation's input; an ``ok`` completion's value is its output
        (Jepsen puts a read's result there). With ``independent``, values are ``[key, value]`` pairs
        (Jepsen's ``independent`` checker).

        Raises:
            ValidationError: an event lacks a field, names an unknown type or operation, completes
                nothing, or its process invokes twice without completing.

        Example:
            >>> h = History.from_events([
            ...     {"process": 0, "type": "invoke", "f": "write", "value": 1, "time": 10},
            ...     {"process": 0, "type": "ok", "f": "write", "value": 1, "time": 20},
            ...     {"process": 1, "type": "invoke", "f": "read", "value": None, "time": 30},
            ...     {"process": 1, "type": "ok", "f": "read", "value": 1, "time": 40},
            ... ])
            >>> [str(op) for op in h]
            ['0: write() 1 [ok]', '1: read() -> 1 [ok]']
        """
        scale = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}.get(time_unit)
        if scale is None:
            raise ValidationError(f"time_unit must be ns, us, ms or s, not {time_unit!r}", field="time_unit")
        open_calls: dict[str, tuple[str, str, Any, int]] = {}
        ops: list[Op] = []
        for n, event in enumerate(events):
            try:
                process, kind, f, t = str(event["process"]), str(event["type"]), str(event["f"]), event["time"]
            except KeyError as exc:
                missing = str(exc.args[0])
                raise ValidationError(f"event {n} has no {missing!r}: {dict(event)!r}", field=missing) from exc
            value = _plain(event.get("value"))
            key = str(event.get("key", ""))
            if independent and kind in ("invoke", "ok"):
                if not (isinstance(value, tuple) and len(value) == 2):
                    raise ValidationError(f"event {n}: an independent value is a [key, value] pair, got {value!r}")
                key, value = str(value[0]), value[1]
            if f not in OPERATIONS:
                raise ValidationError(f"event {n}: unknown operation {f!r}", field="f")
            if kind == "invoke":
                if process in open_calls:
                    raise ValidationError(f"event {n}: process {process} invokes {f} before completing its last call")
                open_calls[process] = (f, key, value, int(t * scale))
            elif kind in _COMPLETIONS:
                if process not in open_calls:
                    raise ValidationError(f"event {n}: {kind} of process {process} completes no invocation")
                f0, key0, value0, invoked = open_calls.pop(process)
                output = value if kind == "ok" and f0 not in ("write", "cas", "add", "remove", "enqueue") else None
                if f0 == "cas" and kind == "ok":
                    output = True
                complete = None if kind == "info" else int(t * scale)
                ops.append(
                    Op(
                        process,
                        key0,
                        f0,
                        None if f0 in ("read", "dequeue") else value0,
                        output,
                        kind,
                        invoked,
                        complete,
                    )
                )
            else:
                raise ValidationError(f"event {n}: type must be invoke, ok, fail or info, not {kind!r}", field="type")
        for process, (f, key, value, invoked) in open_calls.items():
            ops.append(Op(process, key, f, None if f in ("read", "dequeue") else value, None, "info", invoked, None))
        return cls(ops, process="imported")

    @classmethod
    def load_edn(cls, path: str | os.PathLike[str], *, time_unit: str = "ns", independent: bool = False) -> History:
        """Read a Jepsen ``history.edn`` (one map per line, keywords become strings); needs ``edn_format``.

        Example:
            >>> import tempfile, pathlib
            >>> path = pathlib.Path(tempfile.mkdtemp()) / "history.edn"
            >>> edn = ['{:type :invoke, :f :write, :value 3, :process 0, :time 5}',
            ...        '{:type :info, :f :write, :value 3, :process 0, :time 9}']
            >>> _ = path.write_text(chr(10).join(edn))
            >>> History.load_edn(path).ops[0].status
            'info'
        """
        try:
            import edn_format  # type: ignore[import-untyped]
        except ModuleNotFoundError as exc:  # an optional extra: say which one
            raise ModuleNotFoundError("reading EDN needs edn_format: pip install 'rxstate[testing]'") from exc
        events = [_plain(e) for e in edn_format.loads_all(Path(path).read_text())]
        return cls.from_events(events, time_unit=time_unit, independent=independent)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the operations to a JSON-lines file (values must be JSON-serialisable)."""
        Path(path).write_text("".join(op.to_json() + "\n" for op in self.ops))

    @classmethod
    def load(cls, *paths: str | os.PathLike[str]) -> History:
        """Read (and merge) histories written by ``save``, or JSON lines of events (see ``from_events``)."""
        ops: list[Op] = []
        for p in paths:
            lines = [line for line in Path(p).read_text().splitlines() if line.strip()]
            if lines and lines[0].lstrip().startswith("{"):
                ops += History.from_events(json.loads(line) for line in lines).ops
            else:
                ops += [Op.from_json(line) for line in lines]
        return cls(ops, process="merged")


class Model(Protocol):
    """A sequential specification: an initial state and a transition per operation."""

    def init(self) -> Hashable: ...

    def step(self, state: Hashable, op: Op) -> Hashable:
        """The state after ``op`` if ``op`` (with its output) is legal in ``state``, else ``INVALID``.

        An ``info`` operation (``op.status``) has no output to check: only its effect counts.
        """


@dataclass(frozen=True)
class _Register:
    initial: Hashable = None

    def init(self) -> Hashable:
        return freeze(self.initial)

    def step(self, state: Hashable, op: Op) -> Hashable:
        if op.f == "read":
            return state if op.status != "ok" or freeze(op.output) == state else _INVALID
        if op.f == "write":
            return freeze(op.value)
        if op.f == "cas":
            expected, new = op.value
            new_value = freeze(new)
            applies = state == freeze(expected)
            if op.status == "ok" and bool(op.output) != applies:
                return _INVALID
            return new_value if applies else state
        return _INVALID


@dataclass(frozen=True)
class _Counter:
    initial: int = 0

    def init(self) -> Hashable:
        return self.initial

    def step(self, state: Hashable, op: Op) -> Hashable:
        assert isinstance(state, int)
        if op.f == "read":
            return state if op.status != "ok" or op.output == state else _INVALID
        if op.f == "incr":
            after: int = state + int(op.value)
            if op.status == "ok" and op.output is not None and op.output != after:
                return _INVALID
            return after
        return _INVALID


_UNKNOWN: Hashable = ("<unknown>",)
_ABSENT: Hashable = None


@dataclass(frozen=True)
class _Entity:
    """A stored entity as ``record`` sees it: state ``(version, fields)``; fields None while it is absent.

    Before the first operation nothing is known (version None, fields unknown): the first read or write says.
    """

    def init(self) -> Hashable:
        return (None, _UNKNOWN)

    def step(self, state: Hashable, op: Op) -> Hashable:
        assert isinstance(state, tuple)
        version, fields = state
        ok = op.status == "ok"
        if op.f == "read":
            if not ok:
                return state
            if op.output is None:
                return state if fields in (_ABSENT, _UNKNOWN) else _INVALID
            seen_version, seen = op.output["version"], freeze(op.output["value"])
            if (version is not None and seen_version != version) or fields not in (_UNKNOWN, seen):
                return _INVALID
            return (seen_version, seen)
        after = None if version is None else version + 1
        if ok and op.f in ("write", "update", "rmw") and after is not None and op.output["version"] != after:
            return _INVALID
        if ok and op.f in ("write", "update", "rmw"):
            after = op.output["version"]
        if op.f == "write":
            return (after, freeze(op.value["value"]))
        if op.f == "delete":
            existed = fields is not _ABSENT
            if ok and fields is not _UNKNOWN and bool(op.output) != existed:
                return _INVALID
            return (after if existed else version, _ABSENT)
        if fields is _ABSENT:
            return _INVALID  # updates and increments of an absent entity are refused (NotFound: a fail)
        expected = op.value.get("expected")
        if expected is not None and version is not None and expected != version:
            return _INVALID  # a refused version check is a fail, dropped before the search
        if op.f == "rmw":
            return (after, freeze(op.output["value"]) if ok else _UNKNOWN)
        if fields is _UNKNOWN:
            return (after, _UNKNOWN)
        current = dict(fields)
        if op.f == "update":
            current.update((str(k), freeze(v)) for k, v in op.value["fields"].items())
        elif op.f == "incr":
            total = current.get(op.value["field"], 0) + op.value["amount"]
            if ok and op.output is not None and op.output != total:
                return _INVALID
            current[op.value["field"]] = total
        else:
            return _INVALID
        return (after, tuple(sorted(current.items())))


def entity() -> Model:
    """The model of an entity recorded by ``rxstate.testing.record``: reads, puts, updates (with or without
    ``expected_version``), read-modify-write updates, increments and deletes, versions included.

    Example:
        >>> entity().init()
        (None, ('<unknown>',))
    """
    return _Entity()


def register(initial: Hashable = None) -> Model:
    """A read/write/compare-and-set register (``cas`` takes ``(expected, new)``, outputs success).

    Example:
        >>> register(0).init()
        0
    """
    return _Register(initial)


def counter(initial: int = 0) -> Model:
    """A counter: ``incr`` by an amount (output: the new value, or None if unknown) and ``read``.

    Example:
        >>> counter().init()
        0
    """
    return _Counter(initial)


@dataclass
class Counterexample:
    """Why a key's history is not linearizable.

    Attributes:
        key: the key.
        linearized: the longest sequence of operations the search could linearize, in order.
        state: the model's state after them.
        stuck: operations that had to take effect next (one of them had already completed) but none
            could, from that state.
    """

    key: str
    linearized: list[Op]
    state: Any
    stuck: list[Op]

    def __str__(self) -> str:
        tail = "\n  ".join(str(op) for op in self.linearized[-8:]) or "(nothing)"
        stuck = "\n  ".join(str(op) for op in self.stuck)
        return (
            f"key {self.key!r} is not linearizable.\n"
            f"Longest linearization ({len(self.linearized)} ops), last ones:\n  {tail}\n"
            f"then state {self.state!r}, from which none of these can take effect:\n  {stuck}"
        )


@dataclass
class Result:
    """The outcome of ``check``.

    Attributes:
        valid: True (linearizable), False (a counterexample exists) or None (gave up at the time limit).
        ops: operations checked (``fail`` ones are dropped first).
        keys: keys checked.
        seconds: time the search took.
        counterexample: for an invalid history, the first bad key's explanation.
    """

    valid: bool | None
    ops: int
    keys: int
    seconds: float
    counterexample: Counterexample | None = None
    unknown_keys: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.valid is True


def check(
    history: History | Iterable[Op],
    model: Model | Mapping[str, Model] | Callable[[str], Model] | None = None,
    *,
    timeout: float | None = None,
) -> Result:
    """Check that a history is linearizable, key by key.

    Args:
        history: a ``History`` or the operations themselves.
        model: the model of every key (default ``register()``), a mapping key -> model, or a function of
            the key.
        timeout: seconds after which to give up (``valid`` None).

    Returns:
        A ``Result``; on failure ``result.counterexample`` explains the first bad key.

    Example:
        >>> h = History(process="p")
        >>> h.invoke("incr", "c", 1).ok(1)
        >>> h.invoke("read", "c").ok(2)
        >>> check(h, model=counter()).valid
        False
    """
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    ops = history.ops if isinstance(history, History) else list(history)
    by_key: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        if op.status == "fail" or (op.f == "read" and op.status != "ok"):
            continue  # never happened, or a read that told nobody anything
        by_key[op.key].append(op)
    checked = sum(len(v) for v in by_key.values())
    unknown: list[str] = []
    for key in sorted(by_key):
        m = _model_for(model, key)
        verdict = _check_key(key, by_key[key], m, deadline)
        if verdict is None:
            unknown.append(key)
        elif isinstance(verdict, Counterexample):
            return Result(False, checked, len(by_key), time.monotonic() - started, verdict, unknown)
    return Result(None if unknown else True, checked, len(by_key), time.monotonic() - started, None, unknown)


def _plain(value: Any) -> Any:
    """EDN/JSON values as plain Python: keywords become their names, vectors tuples, maps dicts."""
    name = getattr(value, "name", None)
    if isinstance(name, str) and type(value).__name__ in ("Keyword", "Symbol"):
        return name
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence | frozenset | set) and not isinstance(value, str | bytes):
        return tuple(_plain(v) for v in value)  # EDN vectors, lists and sets come as their own types
    return value


def _model_for(model: Any, key: str) -> Model:
    if model is None:
        return register()
    if isinstance(model, Mapping):
        return model[key]  # type: ignore[no-any-return]
    if hasattr(model, "step"):
        return model  # type: ignore[no-any-return]
    return model(key)  # type: ignore[no-any-return]


def _check_key(key: str, ops: Sequence[Op], model: Model, deadline: float | None) -> Counterexample | bool | None:
    """Search for a linearization of one key's operations; a counterexample if none exists.

    Completed operations sit in a doubly linked list of call and return events (the Wing & Gong
    search). Operations of unknown outcome (``info``) never return, so they stay apart: the search
    tries them only after the completed candidates of a step, and of several identical ones (same
    function and input) only the earliest invoked that is still pending, as they are interchangeable.
    Without that, each lost increment of a counter would double the work.
    """
    done = [i for i, op in enumerate(ops) if op.complete_ns is not None]
    unknown = sorted((i for i, op in enumerate(ops) if op.complete_ns is None), key=lambda i: ops[i].invoke_ns)
    events: list[tuple[float, int, int]] = []
    for i in done:
        events.append((ops[i].invoke_ns, 0, i))  # calls sort before returns at the same instant: concurrent
        events.append((ops[i].complete_ns or 0, 1, i))
    events.sort()
    m = len(events)
    head = m
    is_return = [e[1] for e in events]
    op_of = [e[2] for e in events]
    time_of = [e[0] for e in events]
    call_node: dict[int, int] = {}
    ret_node: dict[int, int] = {}
    for node, (_t, kind, i) in enumerate(events):
        (ret_node if kind else call_node)[i] = node
    nxt = [*range(1, m), -1, 0 if m else -1]
    prv = [head, *range(m - 1), -1]

    def unlink(x: int) -> None:
        nxt[prv[x]] = nxt[x]
        if nxt[x] != -1:
            prv[nxt[x]] = prv[x]

    def relink(x: int) -> None:
        nxt[prv[x]] = x
        if nxt[x] != -1:
            prv[nxt[x]] = x

    # Identical unknown operations: only the earliest pending one of each kind is a candidate.
    previous_same: list[int] = []
    last_of_kind: dict[tuple[str, str], int] = {}
    for j, i in enumerate(unknown):
        kind_key = (ops[i].f, repr(ops[i].value))
        previous_same.append(last_of_kind.get(kind_key, -1))
        last_of_kind[kind_key] = j
    unknown_done = [False] * len(unknown)
    unknown_slot = {i: j for j, i in enumerate(unknown)}

    state = model.init()
    linearized = 0
    seen: set[tuple[int, Hashable]] = set()
    # A frame: (operation, state before it, where to resume trying: (0, node) or (1, unknown index)).
    stack: list[tuple[int, Hashable, tuple[int, int]]] = []
    best: tuple[int, list[int], Hashable, float] = (-1, [], state, 0.0)
    cursor = (0, nxt[head])
    steps = 0

    def attempt(i: int) -> bool:
        nonlocal state, linearized
        new = model.step(state, ops[i])
        if new is _INVALID:
            return False
        mask = linearized | (1 << i)
        if (mask, new) in seen:
            return False
        seen.add((mask, new))
        state, linearized = new, mask
        return True

    while True:
        if nxt[head] == -1:
            return True  # what is left never returned: it may all take effect after the end
        steps += 1
        if deadline is not None and steps % 2048 == 0 and time.monotonic() > deadline:
            return None
        phase, pos = cursor
        moved = False
        if phase == 0:
            entry = pos
            while entry != -1 and not is_return[entry]:
                i = op_of[entry]
                before = state
                if attempt(i):
                    stack.append((i, before, (0, nxt[entry])))
                    unlink(entry)
                    unlink(ret_node[i])
                    moved = True
                    break
                entry = nxt[entry]
            pos = 0
        if not moved:
            # Unknown operations invoked before the first pending return may take effect now.
            first = nxt[head]
            while not is_return[first]:
                first = nxt[first]
            limit = time_of[first]
            for j in range(pos, len(unknown)):
                i = unknown[j]
                if ops[i].invoke_ns > limit:
                    break
                if unknown_done[j] or (previous_same[j] != -1 and not unknown_done[previous_same[j]]):
                    continue
                before = state
                if attempt(i):
                    stack.append((i, before, (1, j + 1)))
                    unknown_done[j] = True
                    moved = True
                    break
            if not moved:
                if len(stack) > best[0]:
                    best = (len(stack), [f[0] for f in stack], state, limit)
                if not stack:
                    return _counterexample(key, ops, best)
                i, state, cursor = stack.pop()
                linearized &= ~(1 << i)
                if ops[i].complete_ns is None:
                    unknown_done[unknown_slot[i]] = False
                else:
                    relink(ret_node[i])
                    relink(call_node[i])
                continue
        cursor = (0, nxt[head])


def _counterexample(key: str, ops: Sequence[Op], best: tuple[int, list[int], Hashable, float]) -> Counterexample:
    _depth, order, state, blocked_time = best
    done = set(order)
    stuck = [ops[i] for i in range(len(ops)) if i not in done and ops[i].invoke_ns <= blocked_time]
    return Counterexample(key, [ops[i] for i in order], state, stuck)
