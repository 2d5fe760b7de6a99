"""Errors and log lines about invalid or corrupt data never show the value of a secret field."""

from __future__ import annotations

import json
import logging
import traceback

import pydantic
import pytest

import rxstate
from rxstate.core.codec import Codec, ModelCodec
from rxstate.errors import CorruptDataError
from rxstate.reactive.watch import _apply
from rxstate.testing import Backend

SECRET = "sk-live-0123456789abcdef"


class Vault(rxstate.Model):
    name: str
    pin: rxstate.Secret[int] | None = None
    token: rxstate.Secret[str] | None = None
    size: int = 0


def _text(exc: BaseException) -> str:
    """Everything a traceback print shows of ``exc``, plus its causes and context as reprs."""
    text = "".join(traceback.format_exception(exc))
    return text + repr(exc.__cause__) + repr(exc.__context__)


def test_update_of_a_secret_field_with_a_bad_value_does_not_echo_it(rx_fake_store):
    vaults = rx_fake_store.collection("vaults", Vault)
    vaults.put("v1", Vault(name="a"))
    with pytest.raises(rxstate.ValidationError) as info:
        vaults.update("v1", pin=SECRET)
    assert SECRET not in _text(info.value)
    assert "pin" in str(info.value) and "valid integer" in str(info.value)
    assert info.value.field == "pin"
    assert info.value.__cause__ is None and info.value.__context__ is None
    assert vaults.get("v1").pin is None  # nothing written


def test_update_of_a_plain_field_still_shows_its_input(rx_fake_store):
    vaults = rx_fake_store.collection("vaults", Vault)
    vaults.put("v1", Vault(name="a"))
    with pytest.raises(rxstate.ValidationError, match=r"valid integer.*input 'abc'"):
        vaults.update("v1", size="abc")


def test_revalidate_does_not_echo_a_secret():
    codec = ModelCodec(Vault, Codec())
    bad = Vault(name="a").model_copy(update={"pin": SECRET})
    with pytest.raises(rxstate.ValidationError) as info:
        codec.revalidate(bad)
    assert SECRET not in _text(info.value)
    assert "pin" in str(info.value)


def test_corrupt_data_error_does_not_print_the_stored_secrets():
    codec = ModelCodec(Vault, Codec())
    # "name" missing: pydantic's error quotes the whole stored dict as the input.
    raw = {b"token": f'"{SECRET}"'.encode(), b"size": b"3", b"_v": b"1", b"_sv": b"1"}
    with pytest.raises(CorruptDataError) as info:
        codec.decode(raw, key="rx:{t:0}:vaults:v1")
    assert SECRET not in _text(info.value)
    assert "name" in str(info.value) and "Field required" in str(info.value)
    assert info.value.key == "rx:{t:0}:vaults:v1"


def test_corrupt_secret_value_is_not_printed():
    codec = ModelCodec(Vault, Codec())
    raw = {b"name": b'"a"', b"pin": f'"{SECRET}"'.encode(), b"_v": b"1", b"_sv": b"1"}
    with pytest.raises(CorruptDataError) as info:
        codec.decode(raw, key="k")
    assert SECRET not in _text(info.value)
    assert "pin" in str(info.value)


def test_error_reason_redacts_secret_keys_of_a_mapping_input():
    from rxstate.core.redaction import error_reason

    class Holder(rxstate.Model):
        vault: Vault

    with pytest.raises(pydantic.ValidationError) as info:
        Holder.model_validate({"vault": {"token": SECRET, "size": 1}})
    reason = error_reason(info.value)
    assert SECRET not in reason and "vault.name" in reason


def test_error_reason_of_an_unnamed_secret_path():
    from rxstate.core.redaction import error_reason

    # A plain adapter of the field's type does not know the field is secret: ``within`` tells it.
    with pytest.raises(pydantic.ValidationError) as info:
        pydantic.TypeAdapter(int).validate_python(SECRET)
    assert SECRET in error_reason(info.value)
    assert SECRET not in error_reason(info.value, ["pin"], within="pin")


def test_invalid_event_payload_does_not_echo_a_secret(rx_fake_store):
    class Opened(rxstate.Model):
        pin: rxstate.Secret[int]

    class Account(rxstate.Model):
        opened: bool = False

    accounts = rx_fake_store.events("accounts", state=Account, events=[Opened], reducer=lambda s, e: s)
    with pytest.raises(rxstate.ValidationError) as info:
        accounts.append("a1", [{"type": "Opened", "pin": SECRET}])
    assert SECRET not in _text(info.value)


def test_watch_log_line_of_an_invalid_change_does_not_show_a_secret(rx_fake_store, caplog):
    vaults = rx_fake_store.collection("vaults", Vault)
    change = rxstate.Change("vaults", "v1", "create", 1, {"pin": SECRET})
    with caplog.at_level(logging.DEBUG, logger="rxstate"):
        assert _apply(vaults, None, change) is None
    assert caplog.records, "the failed change is logged"
    assert SECRET not in caplog.text


def test_schema_stores_the_secret_field_names_and_keeps_them():
    from rxstate.feed.assembly import stored_secrets

    with Backend("fakeredis") as backend:
        first = backend.store()
        first.collection("vaults", Vault)
        assert stored_secrets(first)["vaults"] == {"pin", "token"}
        key = first.keyspace.schemas()
        entry = json.loads(first.client.hget(key, "vaults"))
        first.client.hset(key, "vaults", json.dumps({**entry, "secrets": ["old_key"]}))
        backend.store().collection("vaults", Vault)  # another process opening it: the names are merged
        assert stored_secrets(first)["vaults"] == {"old_key", "pin", "token"}


def test_decoder_wraps_a_secret_the_model_cannot_decode(rx_fake_store):
    from rxstate.feed.assembly import Decoder

    rx_fake_store.collection("vaults", Vault)
    # A foreign write: a number where the model expects a string token, so decoding falls back to JSON.
    raw = {b"c": b"vaults", b"i": b"v1", b"o": b"update", b"v": b"2", b"s": b"1", b".token": b"12345678"}
    change = Decoder(rx_fake_store).decode(0, b"1-0", raw)
    assert isinstance(change.fields["token"], pydantic.Secret)
    assert change.fields["token"].get_secret_value() == 12345678
    assert "12345678" not in repr(change)
