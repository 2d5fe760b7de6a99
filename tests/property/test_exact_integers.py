"""Integers stay exact through the write scripts across the whole range up to +-(2^53 - 1).

Lua prints a number with 14 significant digits, so any integer the scripts turn into text must be
formatted exactly: incr results, the change record's field value, index members (``where``), unique
checks, bounds messages, and event payloads with their snapshots.
"""

from __future__ import annotations

import uuid

import fakeredis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rxstate
from rxstate.errors import IntegrityError

MAXINT = 2**53 - 1

integers = st.one_of(
    st.integers(-MAXINT, MAXINT),
    st.integers(10**14, MAXINT),
    st.integers(-MAXINT, -(10**14)),
    st.sampled_from([MAXINT, -MAXINT, MAXINT - 1, 10**14, 10**14 + 1, 10**15 + 7, -(10**14) - 3, 2**52 + 1]),
)


class Meter(rxstate.Model):
    load: int = 0
    cap: int = MAXINT


class Bumped(rxstate.Model):
    by: int


class Total(rxstate.Model):
    total: int = 0
    last: int = 0


def apply_total(state: Total, event: Bumped) -> Total:
    """Keep the last payload and a running total."""
    return Total(total=state.total + event.by, last=event.by)


def check_exact(client, n: int) -> None:
    store = rxstate.connect(client, namespace=f"x{uuid.uuid4().hex[:8]}", reap_interval=None)
    try:
        meters = store.collection(
            "meters",
            Meter,
            indexes=["load"],
            constraints=[rxstate.unique("load"), rxstate.bounds("load", -MAXINT, "cap")],
        )
        meters.put("m1", Meter())
        assert meters.incr("m1", "load", n) == n
        assert meters.get("m1", consistent=True).load == n
        ks = store.keyspace
        [(_, record)] = client.xrevrange(ks.changes(ks.partition_of("m1")), count=1)
        assert record[b".load"] == str(n).encode()
        assert [m.load for m in meters.where(load=n)] == [n]
        with pytest.raises(IntegrityError) as info:
            meters.put("m2", Meter(load=n))
        assert info.value.constraint == "unique:load" and "already used by m1" in str(info.value)
        if n < MAXINT:
            meters.update("m1", cap=n)
            with pytest.raises(IntegrityError) as info:
                meters.incr("m1", "load", 1)
            assert f"load={n + 1} outside [{-MAXINT}, {n}]" in str(info.value)
        assert meters.get("m1", consistent=True).load == n

        totals = store.events("totals", state=Total, events=[Bumped], reducer=apply_total, snapshot_every=1)
        totals.append("t", [Bumped(by=n)])
        assert totals.load("t").value == Total(total=n, last=n)
        snap = totals.last_snapshot("t")
        assert snap is not None and snap.state == Total(total=n, last=n)
        assert totals.replay("t").value == totals.replay("t", use_snapshots=False).value == Total(total=n, last=n)
        assert [e.event for e in totals.history("t")] == [Bumped(by=n)]
    finally:
        store.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=integers)
def test_integers_stay_exact_on_fakeredis(n):
    check_exact(fakeredis.FakeRedis(), n)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(n=integers)
def test_integers_stay_exact_on_a_real_server(rx_server, n):
    check_exact(rx_server.client(), n)
