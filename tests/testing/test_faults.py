"""The nemesis on real servers: each fault does what it says, heals, and the schedule replays by seed."""

from __future__ import annotations

import logging

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

import rxstate
from rxstate.errors import ServerError, ValidationError
from rxstate.server import EmbeddedServer
from rxstate.testing import faults
from tests.helpers import wait_for
from tests.testing.agents import Cell

pytestmark = pytest.mark.slow  # servers paused, killed and restarted


def _client(port, timeout=0.3):
    return redis.Redis(port=port, socket_timeout=timeout, retry=Retry(NoBackoff(), 0))


@pytest.fixture
def server(tmp_path):
    with EmbeddedServer(path=tmp_path / "data", appendfsync="always") as s:
        yield s


def test_pause_hangs_the_server_until_healed(server):
    client = _client(server.port)
    pause = faults.Pause(server)
    pause.inject()
    with pytest.raises(redis.TimeoutError):
        client.ping()
    pause.heal()
    assert _client(server.port).ping()


def test_kill_loses_nothing_acknowledged_on_a_synced_server(server):
    store = rxstate.connect(_client(server.port), namespace="kill", cache=False)
    store.collection("cells", Cell).put("c", Cell(value=7))
    kill = faults.Kill(server)
    kill.inject()
    assert not server.is_running
    with pytest.raises(redis.ConnectionError):
        _client(server.port).ping()
    kill.heal()
    again = rxstate.connect(_client(server.port), namespace="kill", cache=False)
    assert again.collection("cells", Cell).get("c").value == 7
    store.close()
    again.close()


def test_restart_keeps_the_port(server):
    port, pid = server.port, server.pid
    faults.Restart(server).inject()
    assert server.port == port and server.pid != pid
    assert _client(port).ping()


def test_the_proxy_cuts_delays_and_duplicates(rx_server):
    with faults.proxy(rx_server.port) as p:
        client = _client(p.port)
        before = client.client_id()
        assert p.open_connections == 1
        faults.Cut(p).inject()
        assert p.open_connections == 0
        assert client.client_id() != before  # the connection was cut under it: a new one goes through
        delay = faults.Delay(p, seconds=0.5)
        delay.inject()
        with pytest.raises(redis.TimeoutError):
            _client(p.port, timeout=0.2).ping()
        delay.heal()
        assert _client(p.port).ping()
        direct = rx_server.client()
        sha = direct.script_load("return ARGV[1]")
        dup = _client(p.port)
        p.arm(mode="duplicate")
        assert dup.evalsha(sha, 0, "first") == b"first"
        assert dup.evalsha(sha, 0, "second") == b"first"  # the duplicated reply answers the next call
        assert p.lost == 1


def test_the_proxy_refuses_bad_arguments(rx_server):
    with faults.proxy(rx_server.port) as p:
        with pytest.raises(ValidationError, match="mode"):
            p.arm(mode="explode")
        with pytest.raises(ValidationError, match="nth"):
            p.arm(nth=0)
    with pytest.raises(ValidationError, match="TCP"), faults.proxy(None):
        pass


def test_client_kill_closes_the_connections_of_one_store(rx_server):
    victim = rxstate.connect(rx_server.client(), namespace="ck", cache=False)
    bystander = _client(rx_server.port)
    bystander_id = bystander.client_id()
    cells = victim.collection("cells", Cell)
    cells.put("c", Cell())
    addresses = faults.store_addresses(victim)
    assert addresses
    fault = faults.ClientKill(rx_server.client(), victim)
    fault.inject()
    assert fault.killed == len(addresses)
    assert bystander.client_id() == bystander_id  # untouched
    assert cells.get("c").value == 0  # the store reconnects
    victim.close()


def test_client_kill_of_every_client(rx_server):
    other = _client(rx_server.port)
    before = other.client_id()
    fault = faults.ClientKill(rx_server.client())
    fault.inject()
    assert fault.killed >= 1
    assert other.client_id() != before


class _Counting:
    def __init__(self, name, fail=False):
        self.name, self.fail, self.injected, self.healed = name, fail, 0, 0

    def inject(self):
        if self.fail:
            raise ServerError("cannot inject")
        self.injected += 1

    def heal(self):
        self.healed += 1


def test_a_schedule_replays_by_seed_and_logs_it(caplog):
    a, b = _Counting("a"), _Counting("b")
    plan = faults.Schedule([a, b], seed=42).plan(6)
    assert plan == faults.Schedule([_Counting("a"), _Counting("b")], seed=42).plan(6)
    assert plan != faults.Schedule([a, b], seed=43).plan(6)
    schedule = faults.Schedule([a, b], seed=42, hold=(0.0, 0.01), calm=(0.0, 0.01))
    with caplog.at_level(logging.INFO, logger="rxstate.testing.faults"), schedule.running():
        assert wait_for(lambda: len(schedule.log) >= 6)
    assert "seed=42" in caplog.text
    names = [name for _t, name, action in schedule.log if action == "inject"]
    assert names[:3] == [name for _calm, name, _hold in plan[:3]]
    assert a.injected == a.healed and b.injected == b.healed  # every fault healed, also the last


def test_a_failing_fault_stops_the_schedule_with_its_seed():
    schedule = faults.Schedule([_Counting("bad", fail=True)], seed=5, hold=(0.0, 0.0), calm=(0.0, 0.0))
    schedule.start()
    assert wait_for(lambda: schedule.errors)
    with pytest.raises(ServerError, match="seed=5"):
        schedule.stop()


def test_schedule_arguments_are_checked():
    with pytest.raises(ValidationError, match="at least one"):
        faults.Schedule([])
    with pytest.raises(ValidationError, match="hold"):
        faults.Schedule([_Counting("a")], hold=(0.5, 0.1))
