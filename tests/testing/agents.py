"""Agent steps for the workloads (registers, bank, set-full, change-feed queue) and deliberately broken stores.

Each broken store is a thin wrapper with one classic bug, so that each checker is shown to catch it:
a read cache that is never invalidated, a write retried blindly (as if its reply had been lost), a
transfer made as two separate writes, an add acknowledged before it is stored, a consumer that delivers
twice and out of order.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

import rxstate
from rxstate.testing.recorder import RecordedStore
from rxstate.testing.workload import Agent
from tests.helpers import wait_for

KEYS = ("a", "b")
ACCOUNTS = ("acc0", "acc1", "acc2", "acc3")
TOTAL = 400


class Cell(rxstate.Model):
    value: int = 0
    n: int = 0


class Account(rxstate.Model):
    balance: int = 0


class Member(rxstate.Model):
    by: str = ""


class Item(rxstate.Model):
    seq: int = 0


# -- registers ---------------------------------------------------------------------------------------------


def seed_cells(store: RecordedStore) -> None:
    cells = store.collection("cells", Cell)
    for key in KEYS:
        cells.put(key, Cell())


def register_step(agent: Agent) -> None:
    """Reads, puts, compare-and-set updates and increments on two cells."""
    cells = agent.store.collection("cells", Cell)
    key, roll = agent.rng.choice(KEYS), agent.rng.random()
    if roll < 0.4:
        cells.get(key)
    elif roll < 0.55:
        cells.put(key, Cell(value=agent.rng.randrange(10_000)))
    elif roll < 0.8:
        seen = cells.get_versioned(key)
        cells.update(key, value=agent.rng.randrange(10_000), expected_version=seen.version)
    else:
        cells.incr(key, "n", 1)


def read_cells(store: RecordedStore) -> None:
    cells = store.collection("cells", Cell)
    for key in KEYS:
        cells.get(key)


# -- bank --------------------------------------------------------------------------------------------------


def seed_bank(store: RecordedStore) -> None:
    accounts = store.store.collection("accounts", Account)
    for name in ACCOUNTS:
        accounts.put(name, Account(balance=TOTAL // len(ACCOUNTS)))


def read_bank(store: RecordedStore) -> None:
    """A snapshot of every balance: a read-only transaction (its commit re-checks every version read)."""
    accounts = store.store.collection("accounts", Account)
    with store.recording("read", "bank") as call:
        tx = store.store.transaction()
        balances = {name: tx.get(accounts, name).balance for name in ACCOUNTS}
        tx.commit()
        call.ok(balances)


def transfer(store: Any, accounts: Any, source: str, target: str, amount: int) -> None:
    with store.transaction() as tx:
        a, b = tx.get(accounts, source), tx.get(accounts, target)
        if a.balance < amount:
            return  # refused: no overdraft
        tx.update(accounts, source, balance=a.balance - amount)
        tx.update(accounts, target, balance=b.balance + amount)


def bank_step(agent: Agent, move: Any = transfer) -> None:
    if agent.rng.random() < 0.5:
        read_bank(agent.store)
        return
    source, target = agent.rng.sample(ACCOUNTS, 2)
    amount = agent.rng.randrange(1, 20)
    accounts = agent.store.store.collection("accounts", Account)
    with agent.store.recording("transfer", "bank", (source, target, amount)) as call:
        move(agent.store.store, accounts, source, target, amount)
        call.ok()


def broken_transfer(store: Any, accounts: Any, source: str, target: str, amount: int) -> None:
    """Debit and credit as two separate writes: a reader between them sees money missing."""
    if accounts.get(source).balance < amount:
        return
    accounts.incr(source, "balance", -amount)
    accounts.get(target)  # the application looks at the target between the two writes
    accounts.incr(target, "balance", amount)


# -- set-full ----------------------------------------------------------------------------------------------

_serial = itertools.count(1)


def set_step(agent: Agent, add: Any = None) -> None:
    members = agent.store.store.collection("members", Member)
    if agent.rng.random() < 0.6:
        element = next(_serial)
        with agent.store.recording("add", "set", element) as call:
            (add or _create)(members, element, agent.process)
            call.ok()
    else:
        read_set(agent.store)


def _create(members: Any, element: int, process: str) -> None:
    members.put(str(element), Member(by=process))


def read_set(store: RecordedStore) -> None:
    members = store.store.collection("members", Member)
    with store.recording("read", "set") as call:
        call.ok(sorted(int(i) for i in members.ids()))


class ForgetfulAdds:
    """Acknowledges every fourth add without storing it (a write-behind buffer that was never flushed)."""

    def __init__(self) -> None:
        self.calls = itertools.count()

    def __call__(self, members: Any, element: int, process: str) -> None:
        if next(self.calls) % 4 != 3:
            _create(members, element, process)


# -- change-feed queue -------------------------------------------------------------------------------------


class FeedConsumer:
    """Records every change of ``items`` as a ``dequeue`` of ``(id, seq)``, from a subscription started before
    the producers."""

    def __init__(self, store: RecordedStore, *, broken: bool = False) -> None:
        self.store = store
        self.seen: set[tuple[str, int]] = set()
        self.broken = broken
        self._held: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        self.subscription = store.store.changes(collection="items").subscribe(self._on_change)

    def _deliver(self, element: tuple[str, int]) -> None:
        with self.store.as_process("consumer"), self.store.recording("dequeue", "feed") as call:
            call.ok(list(element))
        self.seen.add(element)

    def _on_change(self, change: Any) -> None:
        element = (change.id, int(change.fields["seq"]))
        with self._lock:
            if self.broken and element[1] % 5 == 0:
                self._held.append(element)  # held back, delivered after later ones (and twice)
                return
            self._deliver(element)
            if self.broken and self._held:
                for held in self._held:
                    self._deliver(held)
                    self._deliver(held)
                self._held.clear()

    def drain(self, enqueued: Any, timeout: float = 10.0) -> None:
        """Wait until every acknowledged element arrived (or ``timeout``: the checker then reports loss)."""
        wait_for(lambda: enqueued() <= self.seen, timeout=timeout)
        self.subscription.dispose()


def produce_step(agent: Agent) -> None:
    items = agent.store.store.collection("items", Item)
    seq = agent.steps + 1
    key = f"{agent.process}-{agent.rng.randrange(2)}"
    with agent.store.recording("enqueue", "feed", [key, seq]) as call:
        items.put(key, Item(seq=seq))
        call.ok()


def acknowledged(history: Any) -> Any:
    def elements() -> set[tuple[str, int]]:
        return {(op.value[0], op.value[1]) for op in history.ops if op.f == "enqueue" and op.status == "ok"}

    return elements


class _BrokenStore:
    """A store whose collections are wrapped in ``collection_type`` (the bug); everything else is the store's."""

    collection_type: Any = None

    def __init__(self, store: Any) -> None:
        self.store = store

    def collection(self, name: str, model: Any, **kwargs: Any) -> Any:
        return self.collection_type(self.store.collection(name, model, **kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


# -- broken stores for the entity checkers -----------------------------------------------------------------


class StaleCache(_BrokenStore):
    """A store whose collections cache every value they read or write and never invalidate the cache."""


class _StaleCollection:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self._cache: dict[str, Any] = {}

    def get_versioned(self, entity_id: str, **kwargs: Any) -> Any:
        if entity_id not in self._cache:
            self._cache[entity_id] = self.inner.get_versioned(entity_id, **kwargs)
        return self._cache[entity_id]

    def put(self, entity_id: str, value: Any, **kwargs: Any) -> Any:
        self._cache[entity_id] = written = self.inner.put(entity_id, value, **kwargs)
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class BlindRetries(_BrokenStore):
    """A store that resends every increment once, as a client without write ids does after a lost reply."""


class _RetryingCollection:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name

    def incr(self, entity_id: str, field: str, amount: int = 1, **kwargs: Any) -> int:
        self.inner.incr(entity_id, field, amount, **kwargs)  # its reply was "lost"
        result: int = self.inner.incr(entity_id, field, amount, **kwargs)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class LaggingReads(_BrokenStore):
    """A store that answers every other read from a copy taken at the first read (a replica that stopped
    replicating): versions go backwards, and a process misses its own writes."""


class _LaggingCollection:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self._replica: dict[str, Any] = {}
        self._flip = itertools.count()

    def get_versioned(self, entity_id: str, **kwargs: Any) -> Any:
        fresh = self.inner.get_versioned(entity_id, **kwargs)
        old = self._replica.setdefault(entity_id, fresh)
        return old if next(self._flip) % 2 else fresh

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


StaleCache.collection_type = _StaleCollection


BlindRetries.collection_type = _RetryingCollection


LaggingReads.collection_type = _LaggingCollection
