"""Encrypted fields on every backend (fakeredis, a real server, a cluster): the key ring's WATCH/MULTI
changes and the re-encryption scan work wherever the store does."""

from __future__ import annotations

import pytest

import rxstate
from rxstate import DecryptionError
from rxstate.core.codec import SEALED_MARKER
from rxstate.security import StaticKeyProvider, generate_key
from rxstate.security.cipher import key_id_of
from tests.helpers import wait_for


class Card(rxstate.Model):
    holder: str
    number: str = rxstate.classified("secret")
    bank: str = rxstate.classified("confidential", searchable=True, default="")


def test_seal_rotate_reencrypt_shred(rx_backend):
    kek = StaticKeyProvider(generate_key())
    store = rx_backend.store(keys=kek)
    store.keys.refresh = 0.05
    cards = store.collection("cards", Card, indexes=["bank"])
    for i in range(30):
        cards.put(f"c{i}", Card(holder=f"h{i}", number=f"4111-{i:04}", bank="b1" if i % 2 else "b2"))
    assert store.client.hget(cards.key("c1"), "number")[:2] == SEALED_MARKER
    new = StaticKeyProvider(generate_key())
    assert store.keys.rotate(new) == 1
    reading = rx_backend.store(keys=new)
    reading.keys.refresh = 0.05
    reader = reading.collection("cards", Card, indexes=["bank"])
    assert reader.get("c7", consistent=True).number == "4111-0007"
    assert len(reader.where(bank="b1")) == 15
    progress = store.keys.reencrypt()
    assert progress.done and progress.rewritten == 30 and progress.retired == (1,)
    assert {key_id_of(store.client.hget(cards.key(f"c{i}"), "number")) for i in range(30)} == {2}
    assert [reader.get(f"c{i}", consistent=True).number for i in range(30)] == [f"4111-{i:04}" for i in range(30)]
    assert len(cards.where(bank="b2")) == 15
    assert store.keys.shred() == [2]
    with pytest.raises(DecryptionError) as info:
        cards.get("c3")  # at once here (the cache was cleared too)
    assert info.value.reason == "shredded"
    assert wait_for(lambda: shredded(reader, "c3"))  # within the other store's refresh interval


def shredded(coll, entity_id):
    try:
        coll.get(entity_id, consistent=True)
    except DecryptionError as exc:
        return exc.reason == "shredded"
    return False
