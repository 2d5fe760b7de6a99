"""Reactive scopes: watch fires on every change of the effective value; derived values track scope reads."""

from __future__ import annotations

import threading

from tests.helpers import wait_for


def _collect(observable):
    seen: list[object] = []
    lock = threading.Lock()

    def on_next(v: object) -> None:
        with lock:
            seen.append(v)

    return seen, observable.subscribe(on_next)


def test_watch_follows_ancestors_overrides_and_their_removal(rx_store):
    org, team, agent = (rx_store.scope(p) for p in ("org", "org/t", "org/t/a"))
    org.set("model", "small")
    seen, sub = _collect(agent.watch("model"))
    assert wait_for(lambda: seen == ["small"])
    org.set("model", "medium")  # an ancestor that supplies it changes
    assert wait_for(lambda: seen == ["small", "medium"])
    agent.set("model", "large")
    assert wait_for(lambda: seen[-1] == "large")
    org.set("model", "huge")  # shadowed by the override: the effective value stays
    team.set("other", 1)
    agent.set("marker", 1)  # a barrier: a later change of the chain, after which nothing more came
    assert wait_for(lambda: agent.get("marker") == 1)
    org.set("barrier", 1)
    agent.unset("model")  # the override removed: the inherited value shows
    assert wait_for(lambda: seen == ["small", "medium", "large", "huge"])
    rx_store.scope("org/elsewhere").set("model", "no")  # outside the chain
    team.set("model", "team")
    assert wait_for(lambda: seen[-1] == "team")
    assert seen == ["small", "medium", "large", "huge", "team"]
    sub.dispose()


def test_a_derived_value_tracks_the_scopes_it_read(rx_store):
    org, agent = rx_store.scope("org"), rx_store.scope("org/t/a")
    org.set("retries", 2)
    total = rx_store.derived(lambda: agent.get("retries", 0) * 10)
    assert total.value == 20
    org.set("retries", 3)
    assert wait_for(lambda: total.value == 30)
    agent.set("retries", 5)
    assert wait_for(lambda: total.value == 50)
    assert ("scopes", "org/t/a") in total.sources and ("scopes", "org") in total.sources
