"""Replay equals live state: for random event sequences, appended in random batches."""

from __future__ import annotations

import uuid

import fakeredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rxstate
from tests.event_models import Added, Counter, Reset, apply_counter

events = st.one_of(
    st.builds(Added, n=st.integers(-1000, 1000), tag=st.sampled_from(["", "a", "b", "ü"])),
    st.just(Reset()),
)
batches = st.lists(st.lists(events, min_size=1, max_size=6), min_size=1, max_size=12)


def _fold(seq):
    state = Counter()
    for e in seq:
        state = apply_counter(state, e)
    return state


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=batches, every=st.one_of(st.none(), st.integers(1, 7)), data=st.data())
def test_replay_equals_live_state(batches, every, data):
    check_replay(fakeredis.FakeRedis(), batches, every, data)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(batches=batches, every=st.one_of(st.none(), st.integers(1, 7)), data=st.data())
def test_replay_equals_live_state_on_a_real_server(rx_server, batches, every, data):
    check_replay(rx_server.client(), batches, every, data)


def check_replay(client, batches, every, data):
    store = rxstate.connect(client, namespace=f"p{uuid.uuid4().hex[:8]}", reap_interval=None)
    counters = store.events(
        "counters", state=Counter, events=[Added, Reset], reducer=apply_counter,
        snapshot_every=every, project_to="counter_view",
    )  # fmt: skip
    view = store.collection("counter_view", Counter)
    applied = []
    for batch in batches:
        result = counters.append("c", batch, expected_version=len(applied))
        applied += batch
        live = view.get("c")
        assert result.state == live == _fold(applied)
        assert counters.load("c").value == live
    total = len(applied)
    assert counters.replay("c", use_snapshots=False).value == _fold(applied)
    v = data.draw(st.integers(1, total))
    assert counters.replay("c", to_version=v).value == _fold(applied[:v])
    assert counters.replay("c", to_version=v, use_snapshots=False).value == _fold(applied[:v])
    assert [e.event for e in counters.history("c")] == applied
    store.close()
