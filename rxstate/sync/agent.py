"""Sync agents: pull a peer replica's deltas into a local replica, and gossip among N replicas.

A ``SyncAgent`` links one local replica to one peer. Each ``pull()`` reads, per partition, the
peer's log from the offset the local replica stored, and applies the entries with
``lua/sync_apply.lua``, which also stores the new offset in the same call: a pull repeated after a crash
or a lost reply applies nothing twice (the version vector skips what it covers). Then it acknowledges
the offset on the peer (``lua/sync_ack.lua``), which trims log entries every member has acknowledged.

A partition falls back to the peer's full state (a join, so nothing is lost) when the peer trimmed
its log past the stored offset, when an entry cannot be applied in causal order (the peer itself
bootstrapped), or when digests show silent divergence. When a peer has seen more of this replica's
own origin than the replica has (its data was restored from an old backup), the agent bumps the
replica's epoch before anything else, so no dot is ever handed out twice, and takes back its lost
changes from the peer.

``Gossip`` runs rounds over N replicas: in each round, every replica pulls from one random peer whose
link is not paused. An idle system sends no writes: a pull that finds nothing new writes nothing.

Example:
    >>> agent = SyncAgent(eu, us)  # doctest: +SKIP
    >>> agent.pull().applied  # doctest: +SKIP
    3
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rxstate.core.errors import SyncError, ValidationError
from rxstate.core.writes import WriteOp
from rxstate.sync.replica import Replica, decode_vector

__all__ = ["Gossip", "PullResult", "SyncAgent"]

_CHUNK = 200


def _id_key(stream_id: bytes | str) -> tuple[int, int]:
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class PullResult:
    """What one pull did."""

    applied: int = 0
    """Entries applied."""
    skipped: int = 0
    """Entries the local replica had already (duplicates)."""
    bootstrapped: list[int] = field(default_factory=list)
    """Partitions merged from the peer's full state."""
    quarantined: list[int] = field(default_factory=list)
    """Partitions held back by an entry whose HLC is too far ahead."""
    trimmed: int = 0
    """Entries the peer trimmed from its log after this pull's acknowledgements."""
    epoch_bumped: bool = False
    """The local replica found itself restored from an old backup and started a new epoch."""


class SyncAgent:
    """Pulls the changes of ``peer`` into ``local`` (one direction; run one agent per direction).

    Args:
        local: the replica that applies.
        peer: the replica whose log is read (opened on the peer's server).
        members: ids of every replica that reads ``peer``'s log; when given, the peer trims entries all
            of them have acknowledged. None: never trim.
        batch: log entries read per partition per pull.

    Raises:
        SyncError: the two replicas share an id, or differ in namespace or partition count.
    """

    def __init__(
        self, local: Replica, peer: Replica, *, members: Sequence[str] | None = None, batch: int = 500
    ) -> None:
        if local.replica_id == peer.replica_id:
            raise SyncError(f"both replicas have the id {local.replica_id!r}", key=local.replica_id)
        lk, pk = local.store.keyspace, peer.store.keyspace
        if (lk.namespace, lk.partitions) != (pk.namespace, pk.partitions):
            raise SyncError(
                f"replicas {local.replica_id!r} and {peer.replica_id!r} differ in namespace or partitions "
                f"({lk.namespace}/{lk.partitions} vs {pk.namespace}/{pk.partitions})",
                key=peer.replica_id,
            )
        if type(batch) is not int or batch < 1:
            raise ValidationError(f"batch must be a positive int, not {batch!r}", field="batch")
        self.local, self.peer = local, peer
        self.members = list(members) if members is not None else None
        self.batch = batch
        self.calls = 0
        """Write calls this agent has sent (apply and ack scripts)."""

    # -- one pull -----------------------------------------------------------------------------------
    def pull(self) -> PullResult:
        """Apply what the peer has that the local replica lacks; see the module docstring."""
        local, peer, result = self.local, self.peer, PullResult()
        parts = range(local.partitions)
        lpipe = local.store.client.pipeline(transaction=False)
        for p in parts:
            lpipe.hget(local.key(p, "from"), peer.replica_id)
            lpipe.hget(local.key(p, "meta"), "seq")
        lraw = lpipe.execute()
        offsets = [(lraw[2 * p] or b"0-0").decode() for p in parts]
        seqs = [int(lraw[2 * p + 1] or 0) for p in parts]
        origin = local.origin
        ppipe = peer.store.client.pipeline(transaction=False)
        for p in parts:
            ppipe.hget(peer.key(p, "meta"), "trimmed")
            ppipe.hget(peer.key(p, "vv"), origin)
            ppipe.xrange(peer.key(p, "log"), min=f"({offsets[p]}", count=self.batch)
        praw = ppipe.execute()
        if any(int(praw[3 * p + 1] or 0) > seqs[p] for p in parts):
            local.bump_epoch()
            result.epoch_bumped = True
            for p in parts:
                self._bootstrap(p, result)
            return result
        for p in parts:
            trimmed, entries = praw[3 * p], praw[3 * p + 2]
            if trimmed and _id_key(trimmed) > _id_key(offsets[p]):
                self._bootstrap(p, result)
                continue
            if entries:
                self._apply(p, entries, offsets[p], result)
        return result

    def _apply(self, p: int, entries: list[Any], old: str, result: PullResult) -> None:
        local = self.local
        section: list[Any] = [
            "apply",
            self.peer.replica_id,
            "log",
            local.max_offset_ms,
            "{}",
            entries[-1][0],
            len(entries),
        ]
        keys = [local.key(p, n) for n in ("meta", "log", "vv", "from", "quarantine")]
        ops = []
        for stream_id, f in entries:
            coll, eid = f[b"c"].decode(), f[b"i"].decode()
            section += [stream_id, f[b"o"], f[b"s"], f[b"t"], f[b"k"], f[b"f"]]
            keys.append(local.state_key(coll, eid, p))
            ops.append(WriteOp("update", coll, eid, p))
        applied, skipped, status, offset = self._call(keys, section, ops)
        result.applied += applied
        result.skipped += skipped
        if status == b"clock":
            result.quarantined.append(p)
        elif status in (b"gap", b"causal"):
            self._bootstrap(p, result)
            return
        if _id_key(offset) > _id_key(old):
            self._ack(p, offset.decode(), result)

    def _call(self, keys: list[str], section: list[Any], ops: list[WriteOp]) -> list[Any]:
        store = self.local.store
        all_keys, args = store.writer.pack(ops, header=[(keys, section)])
        self.calls += 1
        reply: list[Any] = store.writer.call("sync_apply", all_keys, args, writes=ops)
        return reply

    def _ack(self, p: int, offset: str, result: PullResult) -> None:
        peer = self.peer
        members = [m for m in self.members or () if m != peer.replica_id]
        script = peer.store.scripts.get("sync_ack")
        keys = [peer.key(p, "acks"), peer.key(p, "log"), peer.key(p, "meta")]
        self.calls += 1
        trimmed, _ = script(peer.store.client, keys, [self.local.replica_id, offset, len(members), *members])
        if self.members is not None:
            result.trimmed += int(trimmed)

    # -- full state ---------------------------------------------------------------------------------
    def bootstrap(self, partition: int) -> PullResult:
        """Join the peer's full state of ``partition`` into the local replica (always safe: a join).

        Example:
            >>> SyncAgent(eu, us).bootstrap(3).bootstrapped  # doctest: +SKIP
            [3]
        """
        result = PullResult()
        self._bootstrap(partition, result)
        return result

    def _bootstrap(self, p: int, result: PullResult) -> None:
        local, peer = self.local, self.peer
        pipe = peer.store.client.pipeline(transaction=True)
        pipe.hgetall(peer.key(p, "vv"))
        pipe.xrevrange(peer.key(p, "log"), count=1)
        vector, last = pipe.execute()
        # read after the vector: the states hold at least what it claims (states only grow)
        states = peer.states(p)
        last_id = last[0][0].decode() if last else ""
        items = sorted(states.items())
        chunks = [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)] or [[]]
        for n, chunk in enumerate(chunks):
            final = n == len(chunks) - 1
            section: list[Any] = [
                "apply",
                peer.replica_id,
                "state",
                local.max_offset_ms,
                json.dumps(decode_vector(vector)) if final else "{}",
                last_id if final else "",
                len(chunk),
            ]
            keys = [local.key(p, k) for k in ("meta", "log", "vv", "from", "quarantine")]
            ops = []
            for (coll, eid), fields in chunk:
                body = "{" + ",".join(f"{json.dumps(k)}:{v.decode()}" for k, v in fields.items()) + "}"
                section += ["", "", 0, "", "{}", body]
                keys.append(local.state_key(coll, eid, p))
                ops.append(WriteOp("update", coll, eid, p))
            self._call(keys, section, ops)
        result.bootstrapped.append(p)
        if last_id:
            self._ack(p, last_id, result)

    def merge_deltas(self, entries: Sequence[tuple[bytes, dict[bytes, bytes]]]) -> int:
        """Join log entries (as ``XRANGE`` returns them, in any order, repeated or not) into the local
        replica's states without touching its version vector or offsets; returns how many were joined.

        The CRDT joins make order and repetition harmless; this is how anti-entropy tests deliver
        reordered and duplicated deltas.
        """
        by_partition: dict[int, list[tuple[bytes, dict[bytes, bytes]]]] = {}
        ks = self.local.store.keyspace
        for entry in entries:
            by_partition.setdefault(ks.partition_of(entry[1][b"i"].decode()), []).append(entry)
        for p, group in by_partition.items():
            section: list[Any] = [
                "apply",
                self.peer.replica_id,
                "state",
                self.local.max_offset_ms,
                "{}",
                "",
                len(group),
            ]
            keys = [self.local.key(p, k) for k in ("meta", "log", "vv", "from", "quarantine")]
            ops = []
            for _, f in group:
                coll, eid = f[b"c"].decode(), f[b"i"].decode()
                section += ["", "", 0, "", "{}", f[b"f"]]
                keys.append(self.local.state_key(coll, eid, p))
                ops.append(WriteOp("update", coll, eid, p))
            self._call(keys, section, ops)
        return len(entries)

    def diverged(self) -> list[int]:
        """Partitions whose digests differ although both replicas have the same version vector there
        (silent divergence: something changed data outside the sync scripts)."""
        lv, pv = self.local.version_vector(), self.peer.version_vector()
        same = [p for p in range(self.local.partitions) if lv[p] == pv[p]]
        if not same:
            return []
        ld, pd = self.local.digest(same), self.peer.digest(same)
        return [p for p in same if ld[p] != pd[p]]

    def repair(self) -> list[int]:
        """Join the peer's full state into every partition ``diverged()`` names; returns them."""
        parts = self.diverged()
        result = PullResult()
        for p in parts:
            self._bootstrap(p, result)
        return parts


class Gossip:
    """Sync rounds among N replicas: each round, every replica pulls from one random reachable peer.

    Args:
        replicas: the replicas (each on its own server).
        seed: seeds the choice of peers (logged by tests, so a failing run can be replayed).
        digest_every: every this many rounds, each agent also checks digests and repairs divergence.

    Example:
        >>> gossip = Gossip([eu, us, ap], seed=7)  # doctest: +SKIP
        >>> gossip.pause("eu", "us"); gossip.round(); gossip.resume("eu", "us")  # doctest: +SKIP
        >>> gossip.run_until_converged()  # doctest: +SKIP
        3
    """

    def __init__(self, replicas: Sequence[Replica], *, seed: int | None = None, digest_every: int = 0) -> None:
        ids = [r.replica_id for r in replicas]
        if len(set(ids)) != len(ids):
            raise SyncError(f"replica ids repeat: {ids}", key=",".join(ids))
        self.replicas = {r.replica_id: r for r in replicas}
        self.random = random.Random(seed)
        self.digest_every = digest_every
        self.rounds = 0
        self.paused: set[frozenset[str]] = set()
        self.agents = {
            (a.replica_id, b.replica_id): SyncAgent(a, b, members=[i for i in ids if i != b.replica_id])
            for a in replicas
            for b in replicas
            if a is not b
        }

    def pause(self, a: str, b: str) -> None:
        """Cut the link between replicas ``a`` and ``b`` (both directions) until ``resume``."""
        self.paused.add(frozenset((a, b)))

    def resume(self, a: str, b: str) -> None:
        """Heal the link between ``a`` and ``b``."""
        self.paused.discard(frozenset((a, b)))

    def heal(self) -> None:
        """Heal every link."""
        self.paused.clear()

    def round(self) -> int:
        """One round; returns the entries applied."""
        self.rounds += 1
        applied = 0
        for rid in self.replicas:
            peers = [p for p in self.replicas if p != rid and frozenset((rid, p)) not in self.paused]
            if not peers:
                continue
            agent = self.agents[(rid, self.random.choice(peers))]
            applied += agent.pull().applied
            if self.digest_every and self.rounds % self.digest_every == 0:
                agent.repair()
        return applied

    def sweep(self) -> int:
        """Every replica pulls from every reachable peer once; returns the write calls that took.

        Sweeping until it returns 0 settles the forwarded copies and acknowledgements after convergence;
        from then on, until something changes, rounds send nothing.
        """
        before = self.calls()
        for (a, b), agent in self.agents.items():
            if frozenset((a, b)) not in self.paused:
                agent.pull()
        return self.calls() - before

    def converged(self) -> bool:
        """Whether every replica has the same version vectors and digests."""
        replicas = list(self.replicas.values())
        vectors = [r.version_vector() for r in replicas]
        if any(v != vectors[0] for v in vectors[1:]):
            return False
        digests = [r.digest() for r in replicas]
        return all(d == digests[0] for d in digests[1:])

    def run_until_converged(self, max_rounds: int = 50) -> int:
        """Run rounds until ``converged()``; returns the rounds it took.

        Raises:
            SyncError: not converged after ``max_rounds`` rounds (e.g. a link is still paused).
        """
        for n in range(max_rounds + 1):
            if self.converged():
                return n
            self.round()
        raise SyncError(f"replicas {sorted(self.replicas)} did not converge in {max_rounds} rounds", key="gossip")

    def calls(self) -> int:
        """Write calls sent by all agents so far."""
        return sum(a.calls for a in self.agents.values())
