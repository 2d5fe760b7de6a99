"""Sealed values open only under the binding (entity key and field) and data key they were sealed with."""

from __future__ import annotations

import os

import pytest
from cryptography.exceptions import InvalidTag
from hypothesis import given
from hypothesis import strategies as st

from rxstate.core.codec import SEALED_MARKER
from rxstate.security.cipher import DataKey, entity_binding, key_id_of, search_binding

KEYS = {1: DataKey(1, os.urandom(32)), 2: DataKey(2, os.urandom(32))}
names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20)
fragments = st.binary(max_size=300)


@given(fragments, names, names, names, names, st.sampled_from([1, 2]), st.sampled_from([1, 2]))
def test_randomised_values_open_only_where_sealed(fragment, key_a, key_b, field_a, field_b, sealer, opener):
    sealed = KEYS[sealer].seal(fragment, entity_binding(key_a, field_a))
    assert sealed[:2] == SEALED_MARKER and key_id_of(sealed) == sealer
    assert len(fragment) < 8 or fragment not in sealed  # no plaintext inside
    same = (key_a, field_a, sealer) == (key_b, field_b, opener)
    if same:
        assert KEYS[opener].open(sealed, entity_binding(key_b, field_b)) == fragment
    else:
        with pytest.raises(InvalidTag):
            KEYS[opener].open(sealed, entity_binding(key_b, field_b))


@given(fragments, names, names)
def test_searchable_values_are_deterministic_and_bound_to_their_field(fragment, field_a, field_b):
    one = KEYS[1].seal_searchable(fragment, search_binding("ns", "c", field_a))
    assert one == KEYS[1].seal_searchable(fragment, search_binding("ns", "c", field_a))
    assert one != KEYS[2].seal_searchable(fragment, search_binding("ns", "c", field_a))
    assert KEYS[1].open(one, search_binding("ns", "c", field_a)) == fragment
    if field_a != field_b:
        with pytest.raises(InvalidTag):
            KEYS[1].open(one, search_binding("ns", "c", field_b))


@given(fragments, st.integers(min_value=7, max_value=80))
def test_any_altered_byte_is_refused(fragment, position):
    binding = entity_binding("rx:{ns:0}:c:1", "f")
    sealed = bytearray(KEYS[1].seal(fragment, binding))
    position %= len(sealed)
    if position < 3:
        position = 3  # the marker and mode bytes say how to read the value; the key id is bound too
    sealed[position] ^= 0x01
    with pytest.raises((InvalidTag, KeyError)):
        key = KEYS.get(int.from_bytes(sealed[3:7], "big"))
        if key is None:
            raise KeyError("no such key")
        key.open(bytes(sealed), binding)
