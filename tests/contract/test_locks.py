"""Lease locks and fenced writes, on every backend."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from rxstate.errors import LockError, ValidationError
from tests.models import Agent


@pytest.fixture
def agents(rx_store):
    return rx_store.collection("agents", Agent)


def test_acquire_release_and_tokens_grow(rx_store):
    lock = rx_store.lock("printer", ttl=5)
    tokens = []
    for _ in range(3):
        with lock as lease:
            assert lease.name == "printer" and lease.mode == "x" and not lease.released
            tokens.append(lease.token)
        assert lease.released
    assert tokens == sorted(tokens) and len(set(tokens)) == 3
    explicit = lock.acquire()
    assert explicit.token > tokens[-1]
    explicit.release()
    with pytest.raises(LockError, match="released already"):
        explicit.release()


def test_tokens_keep_growing_after_the_lock_key_expires(rx_store):
    first = rx_store.lock("p", ttl=0.05).acquire()
    time.sleep(0.12)  # the lease (and its key) expired; the counter did not
    second = rx_store.lock("p", ttl=5).acquire()
    assert second.token > first.token
    second.release()


def test_held_lock_refuses_non_blocking_and_times_out(rx_store):
    held = rx_store.lock("door", ttl=5).acquire()
    with pytest.raises(LockError, match="held by another lease"):
        rx_store.lock("door").acquire(blocking=False)
    started = time.monotonic()
    with pytest.raises(LockError, match=r"within 0\.15 s"):
        rx_store.lock("door", timeout=0.15).acquire()
    assert 0.14 <= time.monotonic() - started < 1.0
    held.release()
    rx_store.lock("door").acquire(blocking=False).release()


def test_blocking_acquire_gets_the_lock_when_the_holder_releases(rx_backend):
    store_a, store_b = rx_backend.store(), rx_backend.store()
    held = store_a.lock("q", ttl=5).acquire()
    got = []

    def waiter():
        with store_b.lock("q", ttl=5, timeout=5) as lease:
            got.append((time.monotonic(), lease.token))

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.1)
    assert not got
    released_at = time.monotonic()
    held.release()
    t.join(5)
    assert got and got[0][1] > held.token
    assert got[0][0] - released_at < 0.2  # woke up promptly, without a hot spin before


def test_waiting_backs_off_instead_of_spinning(rx_store, monkeypatch):
    held = rx_store.lock("busy", ttl=5).acquire()
    waiter = rx_store.lock("busy", timeout=0.4)
    calls = []
    original = waiter._call
    monkeypatch.setattr(waiter, "_call", lambda *a: calls.append(a) or original(*a))
    with pytest.raises(LockError):
        waiter.acquire()
    assert 5 <= len(calls) <= 40  # backoff grows to 50 ms: about a dozen tries in 0.4 s, not thousands
    held.release()


def test_only_the_owner_releases_or_extends(rx_store):
    lost = rx_store.lock("m", ttl=0.05).acquire()
    time.sleep(0.12)
    other = rx_store.lock("m", ttl=5).acquire()  # the first lease expired; another took the lock
    with pytest.raises(LockError, match="no longer holds"):
        lost.extend()
    with pytest.raises(LockError, match="no longer holds"):
        lost.release()
    with pytest.raises(LockError):
        rx_store.lock("m").acquire(blocking=False)  # still held by `other`
    other.release()


def test_extend_keeps_the_lease_alive(rx_store):
    lease = rx_store.lock("x", ttl=0.2).acquire()
    before = lease.deadline_ms
    for _ in range(3):
        time.sleep(0.1)
        lease.extend()
    assert lease.deadline_ms > before + 200
    with pytest.raises(LockError):
        rx_store.lock("x").acquire(blocking=False)
    lease.extend(5)
    lease.release()
    with pytest.raises(LockError, match="released"):
        lease.extend()


def test_fenced_writes_from_a_paused_holder_are_refused(rx_store, agents):
    agents.put("a1", Agent(name="start"))
    paused = rx_store.lock("a1-owner", ttl=0.05).acquire()
    agents.update("a1", notes="by paused", fence=paused)  # still valid: accepted
    time.sleep(0.12)  # the holder pauses past its lease...
    fresh = rx_store.lock("a1-owner", ttl=5).acquire()  # ...and another process takes the lock
    agents.update("a1", notes="by fresh", fence=fresh)
    version = agents.get_versioned("a1").version
    writes = [
        lambda f: agents.update("a1", notes="by paused again", fence=f),
        lambda f: agents.put("a1", Agent(name="overwritten"), fence=f),
        lambda f: agents.incr("a1", "load", 1, fence=f),
        lambda f: agents.delete("a1", fence=f),
    ]
    # Its lease has expired, and a newer token already wrote here: refused either way.
    unexpired = dataclasses.replace(paused, deadline_ms=paused.deadline_ms + 3_600_000)  # a skewed clock
    for write in writes:
        for lease in (paused, unexpired):
            with pytest.raises(LockError, match="refused"):
                write(lease)
    assert agents.get_versioned("a1").version == version and agents.get("a1").notes == "by fresh"
    # The token check is per partition: one that no newer lease has written to yet relies on the expiry
    # check alone (by the server's clock).
    other = next(f"b{i}" for i in range(100) if agents.key(f"b{i}").split("}")[0] != agents.key("a1").split("}")[0])
    with pytest.raises(LockError, match="expired"):
        agents.create(other, Agent(name="new"), fence=paused)
    assert not agents.exists(other)
    agents.create(other, Agent(name="new"), fence=fresh)
    with pytest.raises(LockError, match="older than lease"):
        agents.update(other, notes="x", fence=unexpired)
    with pytest.raises(LockError, match="older than lease"):
        agents.update("a1", notes="x", fence=unexpired)
    with pytest.raises(LockError, match="expired"):
        agents.update("a1", notes="x", fence=dataclasses.replace(fresh, deadline_ms=0))
    assert agents.incr("a1", "load", 2, fence=fresh) == 2
    fresh.release()
    with pytest.raises(LockError, match="released"):
        agents.update("a1", notes="x", fence=fresh)


def test_fence_takes_only_write_leases(rx_store, agents):
    agents.put("a1", Agent(name="x"))
    with pytest.raises(ValidationError, match="Lease"):
        agents.update("a1", notes="y", fence="token-5")
    with rx_store.rwlock("cat", ttl=5).read() as lease, pytest.raises(ValidationError, match="read lease"):
        agents.update("a1", notes="y", fence=lease)
    assert agents.get("a1").notes == ""


def test_reentrant_lock(rx_store):
    lock = rx_store.lock("r", ttl=5, reentrant=True)
    with lock as outer:
        with lock as inner:
            assert inner.token == outer.token
        with pytest.raises(LockError):
            rx_store.lock("r").acquire(blocking=False)  # still held once

        def other_thread():
            with pytest.raises(LockError):
                lock.acquire(blocking=False)

        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
    rx_store.lock("r").acquire(blocking=False).release()  # free after the last release


def test_read_write_lock(rx_store):
    rw = rx_store.rwlock("catalog", ttl=5)
    r1, r2 = rw.read().acquire(), rw.read().acquire()
    assert r2.token > r1.token
    with pytest.raises(LockError):
        rw.write().acquire(blocking=False)
    r1.release()
    with pytest.raises(LockError):
        rw.write(timeout=0.05).acquire()
    r2.release()
    with rw.write().acquire(blocking=False) as w:
        with pytest.raises(LockError):
            rw.read().acquire(blocking=False)
        assert w.token > r2.token
    with rw.read().acquire(blocking=False):
        pass


def test_expired_readers_do_not_block_a_writer(rx_store):
    rw = rx_store.rwlock("shelf", ttl=0.05)
    rw.read().acquire()
    time.sleep(0.12)
    rw.write().acquire(blocking=False).release()


def test_bad_lock_arguments(rx_store):
    with pytest.raises(ValidationError):
        rx_store.lock("bad\nname")
    with pytest.raises(ValidationError):
        rx_store.lock("ok", ttl=0)


def test_lock_keys_stay_out_of_the_partitions(rx_store):
    """Lock churn must stay out of the caches' invalidation feeds, which follow the prefix ``rx:{ns:``."""
    ks = rx_store.keyspace
    lease = rx_store.lock("feeds", ttl=5).acquire()
    names = (ks.lock("feeds"), ks.lock_sequence("feeds"), ks.lock_readers("feeds"))
    assert rx_store.client.exists(ks.lock("feeds")) and rx_store.client.exists(ks.lock_sequence("feeds"))
    assert not any(n.startswith(f"rx:{{{ks.namespace}:") for n in names)
    lease.release()
    assert not rx_store.client.exists(ks.lock("feeds"))
