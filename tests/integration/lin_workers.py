"""Worker processes for the linearizability tests: random reads, writes, CAS updates and increments
against a real server, recorded in a History saved to a file."""

from __future__ import annotations

import random
import time
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

import rxstate
from rxstate.errors import ConflictError
from rxstate.testing.linearizability import History

REGISTERS = ("r1", "r2")
COUNTERS = ("c1",)
TRANSIENT = (redis.ConnectionError, redis.TimeoutError, rxstate.errors.ServerError)


class Cell(rxstate.Model):
    value: int = 0
    n: int = 0


def connect(port: int, namespace: str, *, cache: bool = False) -> rxstate.Store:
    """A store whose every operation goes to the server.

    No client-side retries: re-sending a script after a dropped connection could apply it twice. No
    local cache: its invalidations arrive asynchronously (within milliseconds), so a process may read
    a cached value after another process's newer write was acknowledged; the checker rejects such
    histories (it did, on the counter, in runs with the cache on).
    """
    client = redis.Redis(host="127.0.0.1", port=port, retry=Retry(NoBackoff(), 0), socket_timeout=2)
    return rxstate.connect(client, namespace=namespace, reap_interval=None, cache=cache)


def write(cells: Any, key: str, value: int) -> None:
    cells.update(key, value=value)


def cas(cells: Any, key: str, value: int, version: int) -> bool:
    cells.update(key, value=value, expected_version=version)
    return True


def value_of(versioned: Any) -> int:
    return int(versioned.value.value)


def attempt(history: History, f: str, key: str, value: Any, fn: Any, output: Any = None) -> Any:
    """Run ``fn`` as one recorded operation.

    A refused version check is a ``fail`` (it did not happen); so is a connection that could not even
    be opened (the command was never sent). Any other connection error leaves the outcome unknown:
    ``info``.
    """
    call = history.invoke(f, key, value)
    try:
        out = fn()
    except ConflictError:
        call.fail()
        return None
    except TRANSIENT as exc:
        # A call whose connection could not even be opened was never sent: it did not happen. But the
        # Writer resends a call whose reply was lost, and when only the resend meets a refused connection
        # its UnknownOutcome names that refusal too: the first send may have taken effect.
        if "connecting to" in str(exc) and not isinstance(exc, rxstate.errors.UnknownOutcome):
            call.fail()
        else:
            call.info()
        raise
    call.ok(out if output is None else output(out))
    return out


def run(port: int, namespace: str, name: str, seconds: float, seed: int, out: str, ready: Any) -> None:
    """Run random operations for ``seconds``; save the history to ``out``. ``ready.put(name)`` once connected."""
    store = connect(port, namespace)
    cells = store.collection("cells", Cell)
    ready.put(name)
    history = History(process=name)
    rng = random.Random(seed)
    serial = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        key = rng.choice(REGISTERS + COUNTERS)
        roll = rng.random()
        serial += 1
        value = seed * 1_000_000 + serial  # every written value is unique
        try:
            if key in COUNTERS:
                if roll < 0.6:
                    attempt(history, "incr", key, 1, lambda k=key: cells.incr(k, "n", 1))
                else:
                    attempt(history, "read", key, None, lambda k=key: cells.get(k).n)
            elif roll < 0.4:
                attempt(history, "read", key, None, lambda k=key: cells.get(k).value)
            elif roll < 0.6:
                attempt(history, "write", key, value, lambda k=key, v=value: write(cells, k, v))
            else:
                current = attempt(history, "read", key, None, lambda k=key: cells.get_versioned(k), output=value_of)
                expected = (current.value.value, value)
                attempt(history, "cas", key, expected, lambda k=key, v=value, c=current: cas(cells, k, v, c.version))
        except TRANSIENT:
            time.sleep(0.02)  # the server is down; try again soon
    history.save(out)
    store.close()
