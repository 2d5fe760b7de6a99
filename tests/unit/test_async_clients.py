"""An asyncio client handed to connect() is refused with a ValidationError that says what to pass instead."""

from __future__ import annotations

import fakeredis
import pytest
import redis.asyncio

import rxstate
from rxstate.errors import ValidationError
from tests.helpers import dump_all


def test_redis_asyncio_client_is_refused():
    client = redis.asyncio.Redis(host="127.0.0.1", port=1)  # never connected: refused before any command
    with pytest.raises(ValidationError) as info:
        rxstate.connect(client)
    message = str(info.value)
    assert "redis.asyncio.client.Redis is an asyncio client" in message
    assert "no asyncio version yet" in message and "redis.Redis" in message


def test_fakeredis_async_client_is_refused_and_nothing_is_written():
    server = fakeredis.FakeServer()
    sync = fakeredis.FakeRedis(server=server)
    sync.set("existing", b"1")
    before = dump_all(sync)
    with pytest.raises(ValidationError, match=r"fakeredis\..*FakeRedis is an asyncio client"):
        rxstate.connect(fakeredis.FakeAsyncRedis(server=server))
    with pytest.raises(ValidationError, match="asyncio client"):
        rxstate.connect(client=fakeredis.FakeAsyncRedis(server=server), namespace="other")
    assert dump_all(sync) == before


def test_sync_clients_are_still_accepted():
    with rxstate.connect(fakeredis.FakeRedis()) as store:
        assert store.ping()
