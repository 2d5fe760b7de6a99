"""Background upkeep failures are visible: counted on the store and logged at WARNING."""

from __future__ import annotations

import logging

import fakeredis
import pytest

import rxstate
from rxstate.errors import ServerError
from tests.helpers import wait_for
from tests.models import Agent


def test_a_failing_reaper_is_counted_and_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = rxstate.connect(fakeredis.FakeRedis(), reap_interval=0.01, cache=False)
    try:

        def broken(collection: object) -> int:
            raise ServerError("the server went away")

        monkeypatch.setattr(store, "_reap", broken)
        with caplog.at_level(logging.WARNING, logger="rxstate"):
            store.collection("agents", Agent)
            assert wait_for(lambda: store.upkeep_failures >= 1, timeout=5)
        assert isinstance(store.last_upkeep_error, ServerError)
        assert any("expiring agents failed" in r.getMessage() for r in caplog.records)
    finally:
        store.close()
