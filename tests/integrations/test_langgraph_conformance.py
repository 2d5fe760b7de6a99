"""LangGraph's own conformance suite (langgraph-checkpoint-conformance) against RxCheckpointSaver on real
servers: every base capability and every extended one (copy_thread, prune, delete_for_runs)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import redis.asyncio
from langgraph.checkpoint.conformance import checkpointer_test, validate

import rxstate.aio
from rxstate.integrations.langgraph import RxCheckpointSaver
from rxstate.testing import Backend


def test_conformance_passes_all(lg_backend: Backend, capsys) -> None:
    stores = []
    server = "cluster" if lg_backend.kind == "cluster" else os.path.basename(lg_backend.server.binary)

    @checkpointer_test(name=f"RxCheckpointSaver on {server}")
    async def saver() -> AsyncIterator[RxCheckpointSaver]:
        store = lg_backend.store(namespace=f"{lg_backend.namespace}-{len(stores)}")
        stores.append(store)
        yield RxCheckpointSaver(store)

    report = asyncio.run(validate(saver))
    report.print_report()
    printed = capsys.readouterr().out
    with capsys.disabled():
        print(printed)
    assert report.passed_all(), printed
    assert report.conformance_level() == "FULL", printed
    assert len(stores) == 8  # one fresh saver per capability: all eight were run


def test_conformance_passes_all_on_the_asyncio_front(rx_server, capsys) -> None:
    """The same suite with savers of ``rxstate.aio`` stores: every call awaited on redis.asyncio."""
    opened = []

    @checkpointer_test(name="RxCheckpointSaver on rxstate.aio")
    async def saver() -> AsyncIterator[RxCheckpointSaver]:
        astore = await rxstate.aio.connect(
            redis.asyncio.Redis.from_url(rx_server.url), namespace=f"lg-aio-{len(opened)}"
        )
        opened.append(astore)
        try:
            yield await RxCheckpointSaver.on(astore)
        finally:
            await astore.aclose()

    report = asyncio.run(validate(saver))
    report.print_report()
    printed = capsys.readouterr().out
    with capsys.disabled():
        print(printed)
    assert report.passed_all(), printed
    assert report.conformance_level() == "FULL", printed
    assert len(opened) == 8
