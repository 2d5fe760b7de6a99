"""An id with spaces and unicode, on a real server."""

from __future__ import annotations

import uuid

import rxstate
from tests.unit.test_names import check_spaced_id_round_trip


def test_an_id_with_spaces_and_unicode_round_trips_on_a_real_server(rx_server):
    store = rxstate.connect(rx_server.client(), namespace=f"n{uuid.uuid4().hex[:8]}", reap_interval=None)
    try:
        check_spaced_id_round_trip(store)
    finally:
        store.close()
