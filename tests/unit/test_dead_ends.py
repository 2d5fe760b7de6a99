"""Failures the library used to swallow: each is now logged or delivered."""

from __future__ import annotations

import logging
import pathlib
import re

import pytest

import rxstate
from rxstate.feed.assembly import Decoder
from tests.models import Agent


def test_no_bare_except_pass_in_the_library():
    root = pathlib.Path(rxstate.__file__).parent
    swallowing = re.compile(
        r"except(?: Exception| BaseException)?(?: as \w+)?:\s*(?:#[^\n]*)?\n\s*pass\b"
        r"|suppress\((?:Exception|BaseException)\)"
    )
    found = [f"{p.relative_to(root)}" for p in root.rglob("*.py") if swallowing.search(p.read_text())]
    assert found == [], found


def test_a_change_field_the_model_cannot_decode_is_shown_as_json_and_warned_once(
    rx_fake_store: rxstate.Store, caplog: pytest.LogCaptureFixture
):
    rx_fake_store.collection("agents", Agent)
    decoder = Decoder(rx_fake_store)
    with caplog.at_level(logging.WARNING, logger="rxstate.changes"):
        assert decoder._value("agents", "load", b'"high"') == "high"  # a foreign writer's value
        assert decoder._value("agents", "load", b'"low"') == "low"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "agents field 'load'" in warnings[0].getMessage()
