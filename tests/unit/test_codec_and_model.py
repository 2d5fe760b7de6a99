"""Encoding, schema versions, secrets and key layout, without a server."""

from __future__ import annotations

import pydantic
import pytest
from pydantic import Field

import rxstate
from rxstate.core.codec import LZ4_MARKER, Codec, ModelCodec
from rxstate.core.keys import Keyspace, validate_collection_name, validate_id
from rxstate.errors import CorruptDataError, SchemaError, ValidationError
from tests.models import Agent


def stored(codec: ModelCodec, model, version: int = 1, schema: int | None = None) -> dict[bytes, bytes]:
    raw = {k.encode(): v for k, v in codec.encode(model)}
    raw[b"_v"] = str(version).encode()
    raw[b"_sv"] = str(schema or type(model).__version__).encode()
    return raw


def test_integers_are_plain_decimal_and_strings_json():
    codec = ModelCodec(Agent, Codec())
    fields = dict(codec.encode(Agent(name="planner", load=42)))
    assert fields["load"] == b"42"
    assert fields["name"] == b'"planner"'
    assert fields["api_key"] == b"null"


def test_roundtrip_including_secret():
    codec = ModelCodec(Agent, Codec())
    agent = Agent(name="x", skills=["a", "b"], api_key="sk-123")
    value, meta = codec.decode(stored(codec, agent, version=3))
    assert value == agent and value.api_key.get_secret_value() == "sk-123"
    assert meta.version == 3


def test_compression_only_above_threshold_and_only_when_smaller():
    codec = Codec(compress_threshold=100)
    small = b'"' + b"a" * 50 + b'"'
    assert codec.pack(small) == small
    big = b'"' + b"ab" * 500 + b'"'
    packed = codec.pack(big)
    assert packed.startswith(LZ4_MARKER) and len(packed) < len(big)
    assert Codec.unpack(packed) == big
    random_like = __import__("os").urandom(512)
    assert codec.pack(random_like) == random_like  # incompressible: stored as is
    assert codec.pack(big, compressible=False) == big


def test_broken_compressed_value_is_a_typed_error():
    with pytest.raises(CorruptDataError):
        Codec.unpack(LZ4_MARKER + b"garbage", key="k", field="f")


def test_secret_is_redacted_everywhere():
    agent = Agent(name="x", api_key="sk-very-secret")
    for text in (repr(agent), str(agent), f"{agent}", repr(agent.model_dump())):
        assert "sk-very-secret" not in text


def test_partial_fields_are_validated_one_by_one():
    codec = ModelCodec(Agent, Codec())
    assert dict(codec.encode_fields({"load": 5})) == {"load": b"5"}
    with pytest.raises(ValidationError) as info:
        codec.encode_fields({"load": 101})
    assert info.value.field == "load"
    with pytest.raises(ValidationError):
        codec.encode_fields({"status": "asleep"})
    with pytest.raises(ValidationError):
        codec.encode_fields({"nope": 1})
    assert dict(codec.encode_fields({"api_key": "k"}))["api_key"] == b'"k"'


def test_nan_is_rejected():
    class Reading(rxstate.Model):
        value: float

    with pytest.raises(ValidationError):
        ModelCodec(Reading, Codec()).encode(Reading(value=float("nan")))


def test_entity_size_limit():
    codec = ModelCodec(Agent, Codec(max_entity_bytes=200))
    with pytest.raises(ValidationError):
        codec.encode(Agent(name="x", notes="y" * 500))


def test_foreign_plain_string_is_read_leniently():
    codec = ModelCodec(Agent, Codec())
    raw = stored(codec, Agent(name="x"))
    raw[b"status"] = b"busy"  # written by redis-cli, not JSON
    assert codec.decode(raw)[0].status == "busy"


def test_data_that_does_not_fit_raises_corrupt_data():
    codec = ModelCodec(Agent, Codec())
    raw = stored(codec, Agent(name="x"))
    raw[b"load"] = b'"many"'
    with pytest.raises(CorruptDataError):
        codec.decode(raw, key="rx:{ns:0}:agents:a")


def test_upcaster_chain():
    class Doc(rxstate.Model):
        __version__ = 3
        title: str
        words: int = 0

        @rxstate.upcaster(1)
        def _v1(data: dict) -> dict:
            return {"title": data.pop("name")}

        @rxstate.upcaster(2)
        def _v2(data: dict) -> dict:
            return {**data, "words": len(data["title"].split())}

    assert Doc.upcast({"name": "a b c"}, 1) == {"title": "a b c", "words": 3}
    with pytest.raises(SchemaError):
        Doc.upcast({}, 4)


def test_missing_upcaster_is_a_schema_error():
    class Doc(rxstate.Model):
        __version__ = 3
        title: str

        @rxstate.upcaster(2)
        def _v2(data: dict) -> dict:
            return data

    with pytest.raises(SchemaError, match="no upcaster from v1"):
        Doc.upcast({"title": "x"}, 1)


def test_upcaster_beyond_version_is_refused_at_class_creation():
    with pytest.raises(SchemaError):

        class Doc(rxstate.Model):
            __version__ = 1
            title: str

            @rxstate.upcaster(1)
            def _v1(data: dict) -> dict:
                return data


def test_models_are_frozen_and_strict_about_fields():
    agent = Agent(name="x")
    with pytest.raises(pydantic.ValidationError):  # frozen instance
        agent.name = "y"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        Agent(name="x", unknown=1)  # type: ignore[call-arg]


def test_integer_fields_and_bounds():
    class Counter(rxstate.Model):
        n: int = Field(0, ge=0)
        f: float = 0.0
        maybe: int | None = None

    assert ModelCodec(Counter, Codec()).integer_fields == {"n"}


def test_keys_share_one_hash_tag_per_partition():
    ks = Keyspace("crew", 16)
    p = ks.partition_of("a1")
    keys = [ks.entity("agents", "a1", p), ks.ids("agents", p), ks.index("agents", "status", p), ks.changes(p)]
    assert {k.split("}")[0] for k in keys} == {f"rx:{{crew:{p}"}
    assert ks.parse_entity(keys[0]) == (p, "agents", "a1")
    assert ks.parse_entity(ks.ids("agents", p)) is None
    assert ks.parse_entity(ks.entity("agents", "with:colon", p)) == (p, "agents", "with:colon")


def test_partitioning_is_stable_and_spread():
    ks = Keyspace("crew", 16)
    assert ks.partition_of("a1") == Keyspace("other", 16).partition_of("a1")
    assert len({ks.partition_of(f"id{i}") for i in range(200)}) == 16


@pytest.mark.parametrize("name", ["", "1abc", "has space", "a:b", "changes", "_ids", "x" * 200])
def test_bad_collection_names(name):
    with pytest.raises(ValidationError):
        validate_collection_name(name)


def test_ids_allow_colons_and_unicode():
    assert validate_id("team:a/1") == "team:a/1"
    assert validate_id("agent-ü") == "agent-ü"
