"""Queries equal a brute-force filter over every entity, on fakeredis and on a real server.

The index members are JSON text, which does not sort like the values it encodes (numbers never,
strings around escaped characters): these properties check that ranges, ``any_of``, ordering,
``limit``/``offset`` and ``count`` are exact anyway.
"""

from __future__ import annotations

import functools
import json
import uuid

import fakeredis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rxstate
from rxstate.store.conditions import string_cover

# Characters that trip JSON's order: escapes, the quote, space and "!", and some non-ASCII.
chars = st.sampled_from(list(' !"#\\\n\x00\x01\x1f\x7fAZaz09é日~'))
tricky_text = st.text(chars, max_size=5) | st.text(max_size=6)


class Item(rxstate.Model):
    name: str
    score: float | None = None
    rank: int = 0


@settings(max_examples=3000, deadline=None)
@given(s=tricky_text, low=st.none() | tricky_text, high=st.none() | tricky_text, entity_id=st.text(min_size=1))
def test_string_cover_holds_every_string_in_range(s, low, high, entity_id):
    if (low is not None and s < low) or (high is not None and s > high):
        return
    member = json.dumps(s, ensure_ascii=False).encode() + b"\x00" + entity_id.encode("utf-8", "surrogatepass")
    assert any(start <= member < stop for start, stop in string_cover(low, high)), (s, low, high)


numbers = st.integers(-20, 20) | st.integers(-(2**53), 2**53)
floats = st.floats(-1e6, 1e6, allow_nan=False) | st.sampled_from([0.0, -0.0, 0.5, -0.5, 1e-300, 2.0])
entities = st.dictionaries(
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=4),
    st.builds(Item, name=tricky_text, score=st.none() | floats, rank=numbers),
    max_size=25,
)


def ranges(values):
    bound = st.none() | values
    return st.builds(
        lambda lo, hi, li, hi_inc: rxstate.Range(lo, hi, li, hi_inc), bound, bound, st.booleans(), st.booleans()
    )


conditions = st.one_of(
    st.tuples(st.just("rank"), ranges(numbers)),
    st.tuples(st.just("score"), ranges(floats | numbers)),
    st.tuples(st.just("name"), ranges(tricky_text)),
    st.tuples(st.just("rank"), st.lists(numbers, max_size=3).map(lambda v: rxstate.any_of(*v))),
    st.tuples(st.just("name"), tricky_text),
)
queries = st.fixed_dictionaries(
    {
        "where": st.lists(conditions, min_size=1, max_size=2, unique_by=lambda c: c[0]),
        "order": st.none() | st.sampled_from(["rank", "score", "name", "id"]),
        "desc": st.booleans(),
        "offset": st.integers(0, 6),
        "limit": st.none() | st.integers(0, 8),
    }
)


def expected_ids(stored: dict[str, Item], query: dict) -> tuple[list[str], int]:
    """What the query must return, computed over all entities by plain Python."""

    def keep(item: Item) -> bool:
        for field, cond in query["where"]:
            value = getattr(item, field)
            if isinstance(cond, rxstate.Range):
                if not cond.test(value):
                    return False
            elif isinstance(cond, rxstate.AnyOf):
                if value not in cond.values:
                    return False
            elif value != cond:
                return False
        return True

    matched = sorted(i for i, item in stored.items() if keep(item))
    order, desc = query["order"], query["desc"]
    if order is None or order == "id":
        ordered = matched[::-1] if desc else matched
    else:

        def compare(a: str, b: str) -> int:
            va, vb = getattr(stored[a], order), getattr(stored[b], order)
            if va is None or vb is None:
                return (va is None) - (vb is None) or (a > b) - (a < b)
            if va != vb:
                return ((va > vb) - (va < vb)) * (-1 if desc else 1)
            return (a > b) - (a < b)

        ordered = sorted(matched, key=functools.cmp_to_key(compare))
    stop = None if query["limit"] is None else query["offset"] + query["limit"]
    return ordered[query["offset"] : stop], len(matched)


def run(coll, query):
    q = coll.where(**dict(query["where"]))
    if query["order"] is not None:
        q = q.order_by(query["order"], desc=query["desc"])
    elif query["desc"]:
        q = q.order_by("id", desc=True)
    return q.offset(query["offset"]).limit(query["limit"])


def check(client, stored, query):
    store = rxstate.connect(client, namespace=f"q{uuid.uuid4().hex[:10]}", partitions=4, reap_interval=None)
    try:
        coll = store.collection("items", Item, indexes=["name", "score", "rank"])
        if stored:
            assert all(not isinstance(r, Exception) for r in coll.put_many(stored))
        want, total = expected_ids(stored, query)
        q = run(coll, query)
        assert q.ids() == want
        assert [v.id for v in q.versioned()] == want
        assert list(q) == [stored[i] for i in want]
        assert q.count() == total
        unpaged = coll.where(**dict(query["where"]))
        assert unpaged.count() == len(unpaged) == total
    finally:
        store.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stored=entities, query=queries)
def test_queries_equal_brute_force_on_fakeredis(stored, query):
    check(fakeredis.FakeRedis(), stored, query)


@pytest.fixture(scope="module")
def real_client(rx_server):
    return rx_server.client()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(stored=entities, query=queries)
def test_queries_equal_brute_force_on_a_real_server(real_client, stored, query):
    check(real_client, stored, query)
