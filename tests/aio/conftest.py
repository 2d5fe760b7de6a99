"""Fixtures of the asyncio front's tests: asyncio stores on fakeredis and on the session's real server."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import fakeredis
import pytest
import pytest_asyncio
import redis.asyncio

import rxstate.aio
from rxstate.server.embedded import EmbeddedServer

# The contract suite on the asyncio front runs each test inside an event loop of its own; it leaves the
# session unfit for pytest-asyncio's runners, so test_contract_suite.py runs it in a pytest process of its own.
collect_ignore = [] if os.environ.get("RXSTATE_AIO_CONTRACT") == "1" else ["contract"]


@pytest_asyncio.fixture
async def astore() -> AsyncIterator[rxstate.aio.AsyncStore]:
    """An asyncio store on a private fakeredis server."""
    async with rxstate.aio.connect(fakeredis.FakeAsyncRedis(), reap_interval=None) as store:
        yield store


@pytest_asyncio.fixture
async def real_astore(
    rx_server: EmbeddedServer, request: pytest.FixtureRequest
) -> AsyncIterator[rxstate.aio.AsyncStore]:
    """An asyncio store on the session's real server, in a fresh namespace."""
    client = redis.asyncio.Redis(host=rx_server.host, port=rx_server.port)
    namespace = "aio" + request.node.name.encode().hex()[:24]
    try:
        async with rxstate.aio.connect(client, namespace=namespace, reap_interval=None) as store:
            yield store
    finally:
        await client.aclose()
