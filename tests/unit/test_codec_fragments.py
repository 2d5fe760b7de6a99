"""The codec's fast paths for field values write exactly what the JSON encoder writes."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

import rxstate
from rxstate.core.codec import ModelCodec, _fragment

_reference = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode

finite = st.floats(allow_nan=False, allow_infinity=False)
scalars = st.one_of(st.text(), st.integers(), st.booleans(), st.none(), finite)
values = st.recursive(scalars, lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=8)


@given(values)
def test_a_fragment_is_the_encoders_text(value: object) -> None:
    if type(value) in (str, int):  # written inline by _pack_all; checked through encode below
        return
    assert _fragment(value) == _reference(value).encode()


class Mixed(rxstate.Model):
    text: str = ""
    count: int = 0
    flag: bool = False
    ratio: float = 0.0
    tags: list[str] = []


@given(st.text(), st.integers(), st.booleans(), finite, st.lists(st.text()))
def test_an_encoded_model_holds_each_fields_json(
    text: str, count: int, flag: bool, ratio: float, tags: list[str]
) -> None:
    model = Mixed(text=text, count=count, flag=flag, ratio=ratio, tags=tags)
    codec = ModelCodec(Mixed, rxstate.Codec(compress_threshold=10**9))
    expected = {name: _reference(value).encode() for name, value in model.model_dump(mode="json").items()}
    assert dict(codec.encode(model)) == expected
