"""Merge laws of the CRDT joins in lua/crdt.lua: commutative, associative, idempotent, on generated valid
states of each type (1,000 cases on a real server, where the sync scripts run; a few on fakeredis, whose
Lua 5.1 + cjson runs the same code ~50x slower)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import fakeredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rxstate.core.scripts import ScriptLibrary
from rxstate.errors import SyncError
from rxstate.sync.crdt import canonical, join

ORIGINS = ["a.1", "b.1", "b.2", "c.1"]
DOTS = [f"{o}:{n}" for o in ORIGINS for n in range(1, 5)]
FAKE = fakeredis.FakeRedis()


def _context(dots: set[str]) -> dict[str, Any]:
    """A compacted causal context of a dot set: contiguous prefixes in "c", the rest in "d"."""
    c: dict[str, int] = {}
    for o in ORIGINS:
        n = 0
        while f"{o}:{n + 1}" in dots:
            n += 1
        if n:
            c[o] = n
    d = {x: 1 for x in dots if int(x.rsplit(":", 1)[1]) > c.get(x.rsplit(":", 1)[0], 0)}
    return {"c": c, "d": d}


def _element(dot: str) -> str:
    return f'"e{sum(map(ord, dot)) % 3}"'  # every dot belongs to one element, as in a real history


def _value(dot: str) -> str:
    return f'"v-{dot}"'  # every dot names one value, as in a real history


@st.composite
def kernels(draw: Any, kind: str) -> dict[str, Any]:
    # two bit masks over DOTS (cheap to draw and to shrink): the dots seen, and those still live
    seen_mask = draw(st.integers(0, 2 ** len(DOTS) - 1))
    live_mask = draw(st.integers(0, 2 ** len(DOTS) - 1)) & seen_mask
    seen = {d for i, d in enumerate(DOTS) if seen_mask >> i & 1}
    live = {d for i, d in enumerate(DOTS) if live_mask >> i & 1}
    state = _context(seen)
    if kind == "mvreg":
        state["e"] = {x: _value(x) for x in live}
    else:
        e: dict[str, dict[str, int]] = {}
        for x in live:
            e.setdefault(_element(x), {})[x] = 1
        state["e"] = e
    return state


lww = st.builds(
    lambda t, r: {"t": f"{t:015d}.000000", "r": r, "v": f'"{t}-{r}"'},
    st.integers(0, 4),
    st.sampled_from(ORIGINS),
)
_amounts = st.tuples(*[st.integers(0, 50)] * len(ORIGINS))
counters = st.builds(
    lambda p, n: {
        "p": {o: x for o, x in zip(ORIGINS, p, strict=True) if x},
        "n": {o: x for o, x in zip(ORIGINS, n, strict=True) if x},
    },
    _amounts,
    _amounts,
)
STATES = {"lww": lww, "counter": counters, "orset": kernels("orset"), "mvreg": kernels("mvreg")}


@pytest.fixture(scope="module")
def client(rx_server: Any) -> Any:
    return rx_server.client()


def _laws(client: Any, kind: str, examples: int) -> None:
    script = ScriptLibrary().get("crdt_join")
    join(client, kind, {})  # loads the script

    def joins(*calls: Sequence[Any]) -> list[str]:
        """Each call's join, in one pipelined round trip."""
        pipe = client.pipeline(transaction=False)
        for states in calls:
            pipe.execute_command(
                "EVALSHA", script.sha, 0, kind, *(s if isinstance(s, str) else json.dumps(s) for s in states)
            )
        return [canonical(r) for r in pipe.execute()]

    @settings(max_examples=examples, deadline=None)
    @given(STATES[kind], STATES[kind], STATES[kind])
    def laws(a: Any, b: Any, c: Any) -> None:
        ab, ba, ab_c, bc, aa = joins((a, b), (b, a), (a, b, c), (b, c), (a, a))
        a_bc, ab_a = joins((a, bc), (ab, a))
        assert ab == ba
        assert ab_c == a_bc
        assert aa == canonical(a)
        assert ab_a == ab  # absorbs what it already holds

    laws()


@pytest.mark.parametrize("kind", sorted(STATES))
def test_join_is_commutative_associative_and_idempotent(client: Any, kind: str) -> None:
    _laws(client, kind, 250)


@pytest.mark.parametrize("kind", sorted(STATES))
def test_the_same_joins_hold_on_fakeredis(kind: str) -> None:
    _laws(FAKE, kind, 10)


def test_orset_add_wins_over_a_concurrent_remove() -> None:
    added = {"e": {'"x"': {"a.1:2": 1}}, "c": {}, "d": {"a.1:2": 1, "b.1:1": 1}}  # re-add after seeing b's
    removed = {"e": {}, "c": {}, "d": {"b.1:1": 1}}  # a remove of what it had seen
    merged = join(FAKE, "orset", {"e": {'"x"': {"b.1:1": 1}}, "c": {"b.1": 1}, "d": {}}, removed, added)
    assert list(merged["e"]) == ['"x"']
    assert merged["c"] == {"b.1": 1} and merged["d"] == {"a.1:2": 1}


def test_mvreg_keeps_concurrent_writes_and_drops_overwritten_ones() -> None:
    first = {"e": {"a.1:1": '"ann"'}, "c": {"a.1": 1}, "d": {}}
    concurrent = {"e": {"b.1:1": '"bob"'}, "c": {"b.1": 1}, "d": {}}
    both = join(FAKE, "mvreg", first, concurrent)
    assert sorted(both["e"].values()) == ['"ann"', '"bob"']
    later = {"e": {"a.1:2": '"cy"'}, "c": {"a.1": 2, "b.1": 1}, "d": {}}  # written after seeing both
    assert join(FAKE, "mvreg", both, later)["e"] == {"a.1:2": '"cy"'}


def test_an_unknown_type_is_refused() -> None:
    with pytest.raises(SyncError) as info:
        join(FAKE, "gset", {})
    assert info.value.key == "gset"
    with pytest.raises(SyncError):
        join(FAKE, "lww")
