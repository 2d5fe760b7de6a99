"""Names that pass validation are safe in every key, index member, change record and lock."""

from __future__ import annotations

import fakeredis
import pytest

import rxstate
from rxstate.core.keys import Keyspace, validate_collection_name, validate_id, validate_namespace
from rxstate.errors import ValidationError


class Item(rxstate.Model):
    tag: str = ""


@pytest.fixture
def store():
    s = rxstate.connect(fakeredis.FakeRedis(), namespace="names", reap_interval=None)
    yield s
    s.close()


@pytest.mark.parametrize(
    ("bad", "code", "pos"),
    [
        ("a1\n", "U+000A", 2),
        ("a\x00b", "U+0000", 1),
        ("\tx", "U+0009", 0),
        ("a\x7f", "U+007F", 1),
        ("a\x85", "U+0085", 1),
        ("ab\x9f", "U+009F", 2),
        ("a\u2028", "U+2028", 1),
        ("a\u2029b", "U+2029", 1),
        ("x\r", "U+000D", 1),
    ],
)
def test_an_id_with_a_control_character_is_refused_naming_it(bad, code, pos):
    with pytest.raises(ValidationError) as info:
        validate_id(bad)
    assert f"{code} at position {pos}" in str(info.value) and info.value.field == "id"


@pytest.mark.parametrize("bad", ["", "x" * 513, 5, None, b"a1"])
def test_an_id_of_the_wrong_length_or_type_is_refused(bad):
    with pytest.raises(ValidationError):
        validate_id(bad)


@pytest.mark.parametrize("good", ["a b", " lead", "trail ", "ü nicode 🚀", "a:b{c}", "x" * 512, "\u00a0nbsp", "日本"])
def test_printable_ids_with_spaces_and_unicode_are_accepted(good):
    assert validate_id(good) == good


@pytest.mark.parametrize(("bad", "code", "pos"), [("crew\n", "U+000A", 4), ("cr ew", "U+0020", 2), ("ü", "U+00FC", 0)])
def test_a_namespace_is_matched_whole(bad, code, pos):
    with pytest.raises(ValidationError) as info:
        validate_namespace(bad)
    assert f"{code} at position {pos}" in str(info.value)
    with pytest.raises(ValidationError):
        Keyspace(bad, 4)


@pytest.mark.parametrize(
    ("bad", "code", "pos"), [("agents\n", "U+000A", 6), ("1agents", "U+0031", 0), ("ag.ents", "U+002E", 2)]
)
def test_a_collection_name_is_matched_whole(store, bad, code, pos):
    with pytest.raises(ValidationError) as info:
        validate_collection_name(bad)
    assert f"{code} at position {pos}" in str(info.value)
    with pytest.raises(ValidationError):
        store.collection(bad, Item)


def test_an_id_ending_in_a_newline_writes_nothing(store):
    items = store.collection("items", Item, indexes=["tag"])
    with pytest.raises(ValidationError) as info:
        items.put("a1\n", Item(tag="t"))
    assert "U+000A at position 2" in str(info.value)
    assert store.client.keys("*items*") == [] and items.ids() == []
    with pytest.raises(ValidationError):
        store.lock("job\n")


SPACED = "my ü id 🚀"


def check_spaced_id_round_trip(store):
    """put/get/where/incr-free update/delete, the change record and a lock, for an id with spaces."""
    items = store.collection("items", Item, indexes=["tag"])
    other = "two words"
    items.put(SPACED, Item(tag="a b"))
    items.put(other, Item(tag="a b"))
    assert items.get(SPACED, consistent=True) == Item(tag="a b")
    assert sorted(items.ids()) == sorted([SPACED, other])
    assert sorted(v.id for v in items.where_versioned(tag="a b")) == sorted([SPACED, other])
    items.update(SPACED, tag="c")
    assert [v.id for v in items.where_versioned(tag="c")] == [SPACED]
    ks = store.keyspace
    [(_, record)] = store.client.xrevrange(ks.changes(ks.partition_of(SPACED)), count=1)
    assert record[b"i"] == SPACED.encode() and record[b".tag"] == b'"c"'
    with pytest.raises(rxstate.errors.ConflictError) as info:
        items.put(SPACED, Item(tag="d"), expected_version=1)
    assert info.value.key == items.key(SPACED) and (info.value.expected, info.value.actual) == (1, 2)
    with store.lock("a job with spaces"):
        pass
    assert items.delete(SPACED)
    assert not items.exists(SPACED) and items.where(tag="c") == []
    assert items.ids() == [other]


def test_an_id_with_spaces_and_unicode_round_trips_on_fakeredis(store):
    check_spaced_id_round_trip(store)


def test_script_errors_naming_a_key_with_spaces_keep_the_whole_key():
    from redis.exceptions import ResponseError

    from rxstate.core.scripts import translate_error

    k1, k2 = "rx:{n:1}:items:a b 1", "rx:{n:2}:items:c"
    one = translate_error(ResponseError(f"RXCONFLICT {k1} 3 4"))
    assert (one.key, one.expected, one.actual) == (k1, 3, 4)
    many = translate_error(ResponseError(f"RXCONFLICT {k1} 3 4 {k2} 1 2"))
    assert (many.key, many.expected, many.actual) == ([k1, k2], [3, 1], [4, 2])
    assert translate_error(ResponseError(f"RXEXISTS {k1} 7")).key == k1
    assert translate_error(ResponseError(f"RXNOTFOUND {k1}")).key == k1
    assert translate_error(ResponseError(f"RXNOTINT {k1} load")).field == "load"
    bad = translate_error(ResponseError(f"RXINTEGRITY {k1}\x1funique_email email=x already used by a b"))
    assert (bad.key, bad.constraint) == (k1, "unique_email") and "already used by a b" in str(bad)
    fenced = translate_error(ResponseError(f"RXFENCED {k1}\x1fa job with spaces\x1f3 5"))
    assert isinstance(fenced, rxstate.errors.LockError)
    assert k1 in str(fenced) and "'a job with spaces'" in str(fenced) and "lease 3" in str(fenced)
    assert translate_error(ResponseError(f"RXINTENT {k1} t1@3")).owner == "t1@3"


class Member(rxstate.Model):
    email: str


def test_an_integrity_error_on_an_id_with_spaces_names_the_whole_key(store):
    members = store.collection("members", Member, constraints=[rxstate.unique("email")])
    members.put("first member", Member(email="a@x"))
    with pytest.raises(rxstate.IntegrityError) as info:
        members.put("second member", Member(email="a@x"))
    assert info.value.key == members.key("second member")
    assert info.value.constraint == "unique:email" and "already used by first member" in str(info.value)


def test_an_actor_with_a_control_character_is_refused():
    with pytest.raises(rxstate.ValidationError) as info:
        rxstate.connect(fakeredis.FakeRedis(), actor="agent\x00billing", cache=False)
    assert info.value.field == "actor" and "U+0000" in str(info.value)
