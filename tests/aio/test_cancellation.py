"""Cancelled writes on a real server: each either happened or did not, and the store stays usable."""

from __future__ import annotations

import asyncio
import random

import pytest

from tests.models import Task

pytestmark = pytest.mark.asyncio


async def test_writes_cancelled_at_random_points_are_whole_or_absent(real_astore):
    tasks = await real_astore.collection("tasks", Task)
    await tasks.put("c", Task(title="counter"))
    await tasks.put("x", Task(title="left"))
    await tasks.put("y", Task(title="right"))
    rng = random.Random(7)
    done = cancelled = tx_done = 0

    async def bump() -> None:
        await tasks.incr("c", "priority", 1)

    async def both() -> None:
        async with real_astore.transaction() as tx:  # two entities: both or neither
            await tx.incr(tasks, "x", "priority", 1)
            await tx.incr(tasks, "y", "priority", 1)

    # Rounds go on until both outcomes were seen often enough (how many writes finish before the
    # cancellation depends on the machine's speed): the delay before cancelling shrinks when too few
    # were cancelled and grows when too few finished.
    delay = 0.003
    round_ = 0
    while (cancelled <= 20 or done <= 20) and round_ < 600:
        round_ += 1
        work = [asyncio.create_task(bump()) for _ in range(4)] + [asyncio.create_task(both())]
        if delay >= 1e-4 or rng.random() < 0.5:  # on a slow machine, some rounds cancel before any start
            await asyncio.sleep(rng.uniform(0, delay))
        for t in work:
            if rng.random() < 0.6:
                t.cancel()
        for i, outcome in enumerate(await asyncio.gather(*work, return_exceptions=True)):
            if isinstance(outcome, asyncio.CancelledError):
                cancelled += 1
            elif outcome is None:
                done, tx_done = (done + 1, tx_done) if i < 4 else (done, tx_done + 1)
            else:
                raise outcome
        if round_ % 20 == 0:  # the invariants hold at any point, not only at the end
            delay = delay / 2 if cancelled <= done else delay * 2
            x, y = await tasks.get("x", consistent=True), await tasks.get("y", consistent=True)
            assert x.priority == y.priority

    assert cancelled > 20 and done > 20  # both kinds of outcome were exercised
    counter = await tasks.get_versioned("c", consistent=True)
    # every incr that returned took effect; a cancelled one took effect once or not at all
    assert done <= counter.value.priority <= done + cancelled
    assert counter.version == counter.value.priority + 1  # each effect is one whole write: value and version
    changes = await real_astore.run(_changes_of, real_astore.sync, tasks.sync, "c")
    assert changes == counter.version  # ... and its change record
    x, y = await tasks.get_versioned("x", consistent=True), await tasks.get_versioned("y", consistent=True)
    assert x.value.priority == y.value.priority >= tx_done

    # usable afterwards: no connection left holding a stale reply (each read gets its own answer)
    await asyncio.gather(*(tasks.put(f"t{i}", Task(title=f"n{i}", priority=i)) for i in range(50)))
    got = await asyncio.gather(*(tasks.get(f"t{i}", consistent=True) for i in range(50)))
    assert [t.priority for t in got] == list(range(50))
    assert await tasks.incr("c", "priority", 1) == counter.value.priority + 1
    assert (await tasks.get("c")).priority == counter.value.priority + 1  # the cache agrees


def _changes_of(store, collection, entity_id) -> int:
    ks = store.keyspace
    records = store.client.xrange(ks.changes(ks.partition_of(entity_id)))
    return sum(1 for _, f in records if f[b"i"] == entity_id.encode() and f[b"c"] == collection.name.encode())
