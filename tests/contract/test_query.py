"""Queries on indexed fields, run against fakeredis, a real server and a cluster."""

from __future__ import annotations

from typing import Literal

import pytest

import rxstate
import rxstate.notebook  # registers the HTML tables
from rxstate.core import tracking
from rxstate.errors import ValidationError
from tests.helpers import dump_all


class Item(rxstate.Model):
    name: str
    score: float | None = None
    rank: int = 0
    kind: Literal["a", "b", "c"] = "a"
    tags: list[str] = []
    team: str = "core"
    note: str = ""


TRICKY = ["", "ab", "ab!", "ab ", 'a"b', "a\\b", "a\nb", "a\x00", "b", "B", "Zed", "é", "日本", "~", "ab\x7f"]


@pytest.fixture
def items(rx_store):
    coll = rx_store.collection("items", Item, indexes=["name", "score", "rank", "kind", "tags"])
    for n, name in enumerate(TRICKY):
        score = None if n % 5 == 4 else (n - 6) * 1.5
        coll.put(f"i{n:02d}", Item(name=name, score=score, rank=(n * 7) % 11 - 3, kind="abc"[n % 3]))
    return coll


def brute(coll, test, key=None, desc=False):
    """Ids of every entity passing ``test``, loaded one by one and filtered here."""
    rows = [(i, coll.get(i)) for i in coll.ids()]
    rows = [(i, v) for i, v in rows if test(v)]
    if key is not None:
        valued = [(i, v) for i, v in rows if key(v) is not None]
        valued.sort(key=lambda r: r[0])
        valued.sort(key=lambda r: key(r[1]), reverse=desc)
        rows = valued + [(i, v) for i, v in rows if key(v) is None]
    return [i for i, _v in rows]


@pytest.mark.parametrize(
    ("cond", "test"),
    [
        (rxstate.gt(2), lambda v: v > 2),
        (rxstate.ge(2), lambda v: v >= 2),
        (rxstate.lt(-1), lambda v: v < -1),
        (rxstate.le(0), lambda v: v <= 0),
        (rxstate.between(-2, 4), lambda v: -2 <= v <= 4),
        (rxstate.ge(-1) & rxstate.lt(3), lambda v: -1 <= v < 3),
        (rxstate.gt(0), lambda v: v > 0),
        (rxstate.lt(0), lambda v: v < 0),
    ],
)
def test_number_ranges_equal_a_brute_force_filter(items, cond, test):
    got = items.where(rank=cond)
    assert [i for i in got.ids()] == brute(items, lambda v: test(v.rank))
    assert [v.rank for v in got] == [items.get(i).rank for i in got.ids()]
    assert got.count() == len(got) == len(brute(items, lambda v: test(v.rank)))
    scored = items.where(score=cond)  # a float field with None values: None never matches a range
    assert scored.ids() == brute(items, lambda v: v.score is not None and test(v.score))


@pytest.mark.parametrize(
    ("low", "high"),
    [("a", "b"), ("ab", "ab"), ("ab", None), (None, "ab!"), (None, "a"), ("a\n", "a\\c"), ("A", "Zz"), ("", "~")],
)
def test_string_ranges_are_exact_around_escaped_characters(items, low, high):
    cond = rxstate.Range(low=low, high=high)
    got = items.where(name=cond).ids()
    assert got == brute(items, lambda v: cond.test(v.name))
    exclusive = rxstate.gt(low) if low is not None else rxstate.lt(high)
    assert items.where(name=exclusive).ids() == brute(items, lambda v: exclusive.test(v.name))


def test_any_of_and_equality_combine(items):
    got = items.where(kind=rxstate.any_of("a", "c"), rank=rxstate.ge(0))
    assert got.ids() == brute(items, lambda v: v.kind in ("a", "c") and v.rank >= 0)
    assert items.where(kind=rxstate.any_of()).ids() == []
    assert items.where(score=rxstate.any_of(-9.0, 0, None)).ids() == brute(items, lambda v: v.score in (-9.0, 0, None))
    assert items.where(name="a\nb").ids() == brute(items, lambda v: v.name == "a\nb")


@pytest.mark.parametrize("desc", [False, True])
@pytest.mark.parametrize("field", ["rank", "score", "name"])
def test_order_by_with_pages(items, field, desc):
    ordered = items.order_by(field, desc=desc)
    expected = brute(items, lambda v: True, key=lambda v: getattr(v, field), desc=desc)
    assert ordered.ids() == expected
    assert [getattr(v, field) for v in ordered] == [getattr(items.get(i), field) for i in expected]
    for offset, limit in [(0, 3), (2, 4), (13, 5), (40, 2), (0, 0)]:
        page = ordered.offset(offset).limit(limit)
        assert page.ids() == expected[offset : offset + limit]
        assert [items.get(i) for i in page.ids()] == list(page)
    filtered = items.where(rank=rxstate.ge(0)).order_by(field, desc=desc).limit(4)
    assert filtered.ids() == brute(items, lambda v: v.rank >= 0, key=lambda v: getattr(v, field), desc=desc)[:4]


def test_order_by_the_range_field_and_ties_by_id(items):
    got = items.where(rank=rxstate.between(-3, 3)).order_by("rank", desc=True)
    expected = brute(items, lambda v: -3 <= v.rank <= 3, key=lambda v: v.rank, desc=True)
    assert got.ids() == expected
    ranks = [v.rank for v in got]
    assert ranks == sorted(ranks, reverse=True)
    for a, b in zip(got.versioned(), got.versioned()[1:], strict=False):
        if a.value.rank == b.value.rank:
            assert a.id < b.id
    assert items.order_by("id", desc=True).ids() == sorted(items.ids(), reverse=True)
    assert items.order_by("rank").first() == items.get(brute(items, lambda v: True, key=lambda v: v.rank)[0])
    assert items.where(rank=rxstate.gt(100)).first() is None


def test_collection_len_contains_iteration_and_pages(items):
    ids = items.ids()
    assert len(items) == len(TRICKY) == items.count()
    assert "i03" in items and "nope" not in items and 3 not in items
    assert list(items) == ids
    assert [i for i, _v in items.items()] == ids
    assert dict(items.items()) == items.get_many(ids)
    assert items.all(limit=4) == [items.get(i) for i in ids[:4]]
    assert [v.id for v in items.all_versioned(limit=3, offset=5)] == ids[5:8]
    assert bool(items) and items.count(rank=rxstate.gt(100)) == 0


def test_query_reads_like_a_list_and_runs_once(items):
    q = items.where(kind="b")
    assert q == [items.get(i) for i in brute(items, lambda v: v.kind == "b")]
    assert q[0] == items.get(q.ids()[0]) and q[-1] == list(q)[-1] and q[1:3] == list(q)[1:3]
    assert q[0] in q and bool(q) and not items.where(kind="c", rank=rxstate.gt(100))
    first = list(q)
    items.put("new", Item(name="new", kind="b"))
    assert list(q) == first  # kept
    assert "new" in items.where(kind="b").ids()  # built again: runs again
    assert "kind='b'" in repr(q)
    assert f"{len(q)} entities" in q._repr_html_()


def test_a_stale_index_entry_is_checked_against_the_entity(items):
    q = items.where(rank=rxstate.ge(5))
    ids = q.ids()
    assert ids
    items.update(ids[0], rank=-3)  # after the index read, before the fetch
    assert ids[0] not in [v.id for v in q.versioned()]


def test_partitioned_collections_merge_across_partitions(rx_store):
    crew = rx_store.collection("crew", Item, indexes=["rank", "name"], partition_key="team")
    for n in range(30):
        crew.put(f"c{n:02d}", Item(name=f"n{n % 7}", rank=n % 9, team=f"t{n % 5}"))
    got = crew.where(rank=rxstate.ge(4)).order_by("name").limit(12)
    rows = [(crew.get(f"c{n:02d}", partition=f"t{n % 5}"), f"c{n:02d}") for n in range(30)]
    expected = sorted([(v.name, i) for v, i in rows if v.rank >= 4])[:12]
    assert got.ids() == [i for _n, i in expected]
    assert [v.name for v in got] == [n for n, _i in expected]
    assert crew.count(rank=rxstate.ge(4)) == sum(v.rank >= 4 for v, _i in rows)
    assert len(crew) == 30 and "c07" in crew and "c99" not in crew
    assert [i for i, _v in crew.items()] == sorted(i for _v, i in rows)


def test_bad_queries_raise_with_the_field_and_change_nothing(items, rx_backend):
    client = items._store.client
    before = dump_all(client) if rx_backend.kind != "cluster" else None
    cases = [
        (lambda: items.where(note=rxstate.gt("a")), "note"),  # not indexed
        (lambda: items.where(rank=rxstate.gt("a")), "rank"),  # a string bound on numbers
        (lambda: items.where(name=rxstate.between(1, 2)), "name"),  # number bounds on strings
        (lambda: items.where(rank=rxstate.gt(True)), "rank"),
        (lambda: items.where(rank=rxstate.lt(float("nan"))), "rank"),
        (lambda: items.where(tags=rxstate.gt("a")), "tags"),  # a list field has no order
        (lambda: items.where(rank=rxstate.any_of(1, "x")), "rank"),
        (lambda: items.where(kind=rxstate.any_of("a", "z")), "kind"),
        (lambda: items.order_by("note"), "note"),
        (lambda: items.order_by("tags"), "tags"),
        (lambda: items.where(kind="a").order_by("rank", desc="yes"), "desc"),
        (lambda: items.where(kind="a").limit(-1), "limit"),
        (lambda: items.where(kind="a").offset(1.5), "offset"),
        (lambda: items.all(limit="3"), "limit"),
        (lambda: items.count(note="x"), "note"),
    ]
    for make, field in cases:
        with pytest.raises(ValidationError) as info:
            make()
        assert info.value.field == field, (field, info.value)
    if before is not None:
        after = dump_all(client)
        changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
        assert after == before, sorted(changed)[:10]


def test_queries_report_what_they_read(items):
    with tracking.recording() as reads:
        items.where(rank=rxstate.gt(2)).order_by("name").limit(1).ids()
    assert reads.entities == {("items", tracking.ALL): frozenset({"rank", "name"})}
    with tracking.recording() as reads:
        page = items.where(rank=rxstate.gt(2)).limit(2).versioned()
    assert set(reads.entities) == {("items", tracking.ALL), *(("items", v.id) for v in page)}
