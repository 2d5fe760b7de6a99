"""Capacity: memory per collection and partition, growth, hot keys and partitions, when memory runs out.

``measure`` estimates a namespace's memory by **sampling**: it lists the namespace's keys with
``SCAN`` and asks ``MEMORY USAGE`` of a random fraction of them, scaling each sampled key's size by the
inverse of the fraction (every key's group, collection and partition is counted exactly; only bytes
are estimated). The server's ``used_memory`` and ``maxmemory`` come from ``INFO memory``.

Measurements kept with ``record`` (in a capped stream in the namespace's own slot,
``rx:{ns}:_capacity``) give the **growth rate** (a least-squares line through ``used_memory`` over
time) and a **projection** of when ``maxmemory`` is reached at that rate. **Hot keys** and **hot
partitions** are the most written ones in the last change records of each partition (the change
streams say exactly who was written; reads leave no trace a client could count without a
server-wide LFU policy).

Example:
    >>> sample = measure(client, "crew", fraction=0.1)  # doctest: +SKIP
    >>> sample.collections["agents"]  # doctest: +SKIP
    284160
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from rxstate.admin.backup import server_ms
from rxstate.core.errors import NotFound, ValidationError
from rxstate.core.keys import Keyspace

__all__ = ["CapacitySample", "Forecast", "forecast", "history", "hot_keys", "measure", "record"]

_KEEP = 10_000


@dataclass(frozen=True)
class CapacitySample:
    """One measurement of a namespace.

    Attributes:
        at_ms: server time of the measurement.
        used_memory: the server's ``used_memory`` (bytes; None if it does not say).
        maxmemory: the server's ``maxmemory`` (0: no limit; None if it does not say).
        keys: keys of the namespace.
        sampled: keys whose memory was asked.
        collections: estimated bytes per collection (keys of no collection under ``"_namespace"``).
        partitions: estimated bytes per partition (the namespace's own keys under -1).
    """

    at_ms: int
    used_memory: int | None
    maxmemory: int | None
    keys: int
    sampled: int
    collections: dict[str, int] = field(default_factory=dict)
    partitions: dict[int, int] = field(default_factory=dict)

    @property
    def namespace_bytes(self) -> int:
        """The estimated bytes of the whole namespace."""
        return sum(self.partitions.values())


def _collection_of(rest: str) -> str:
    """The collection a key (after its ``rx:{ns:p}:`` tag) belongs to."""
    head, _, tail = rest.partition(":")
    if not head.startswith("_"):
        return head if tail else "_namespace"  # rx:{ns:p}:<collection>:<id>; changes, events, audit
    if head in ("_ids", "_idx", "_exp", "_ttlidx", "_ver", "_refby", "_es", "_esv", "_snap"):
        return tail.partition(":")[0] or "_namespace"
    return "_namespace"


def measure(client: Any, namespace: str, *, fraction: float = 0.1, seed: int | None = None) -> CapacitySample:
    """Estimate ``namespace``'s memory per collection and per partition from a sample of its keys.

    Args:
        fraction: the share of keys whose ``MEMORY USAGE`` is asked (0 < fraction <= 1).
        seed: a seed for the sample (repeatable estimates).

    Raises:
        NotFound: the namespace does not exist.
        ValidationError: a fraction outside (0, 1].
    """
    if not 0 < fraction <= 1:
        raise ValidationError(f"fraction must be in (0, 1], not {fraction!r}", field="fraction")
    ks = Keyspace(namespace, 1)
    if not client.exists(ks.meta()):
        raise NotFound(f"namespace {namespace!r} does not exist ({ks.meta()})", key=ks.meta())
    rng = random.Random(seed)
    head, own = f"rx:{{{namespace}:", f"rx:{{{namespace}}}:"
    picked: list[tuple[bytes, str, int]] = []
    total = 0
    for pattern in (head + "*", own + "*"):
        for key in client.scan_iter(match=pattern, count=1000):
            total += 1
            if rng.random() < fraction:
                text = key.decode()
                if text.startswith(own):
                    picked.append((key, "_namespace", -1))
                else:
                    tag_end = text.index("}:")
                    picked.append((key, _collection_of(text[tag_end + 2 :]), int(text[len(head) : tag_end])))
    collections: Counter[str] = Counter()
    partitions: Counter[int] = Counter()
    for start in range(0, len(picked), 500):
        chunk = picked[start : start + 500]
        pipe = client.pipeline(transaction=False)
        for key, _, _ in chunk:
            pipe.memory_usage(key, samples=5)
        for (_, collection, partition), nbytes in zip(chunk, pipe.execute(), strict=True):
            estimate = round((nbytes or 0) / fraction)
            collections[collection] += estimate
            partitions[partition] += estimate
    used, limit = _memory_info(client)
    return CapacitySample(server_ms(client), used, limit, total, len(picked), dict(collections), dict(partitions))


def _memory_info(client: Any) -> tuple[int | None, int | None]:
    try:
        info = client.info("memory")
    except redis.ResponseError:
        return None, None
    if info and all(isinstance(v, dict) for v in info.values()):  # a cluster: per node, summed
        nodes = list(info.values())
        return sum(int(n.get("used_memory", 0)) for n in nodes), sum(int(n.get("maxmemory", 0)) for n in nodes)
    return int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))


def _history_key(namespace: str) -> str:
    return f"rx:{{{namespace}}}:_capacity"


def record(client: Any, sample: CapacitySample, namespace: str) -> str:
    """Keep ``sample`` in the namespace's capacity history (a stream capped at ~10,000); returns its id."""
    data = json.dumps(asdict(sample), separators=(",", ":"))
    sid = client.xadd(_history_key(namespace), {"m": data}, maxlen=_KEEP, approximate=True)
    return str(sid.decode() if isinstance(sid, bytes) else sid)


def history(client: Any, namespace: str, *, last: int = 1_000) -> list[CapacitySample]:
    """The namespace's recorded measurements, oldest first (at most ``last``)."""
    out: list[CapacitySample] = []
    for _sid, fields in reversed(client.xrevrange(_history_key(namespace), count=last)):
        data = json.loads(fields[b"m"])
        data["partitions"] = {int(k): v for k, v in data["partitions"].items()}
        out.append(CapacitySample(**data))
    return out


@dataclass(frozen=True)
class Forecast:
    """Growth of ``used_memory`` over the measurements, and when ``maxmemory`` is reached at that rate.

    Attributes:
        bytes_per_hour: the least-squares slope (negative: shrinking).
        full_at_ms: when ``maxmemory`` is reached at that rate (None: no limit set, or not growing).
        hours_left: hours from the last measurement to ``full_at_ms`` (None likewise).
    """

    bytes_per_hour: float
    full_at_ms: int | None
    hours_left: float | None


def forecast(samples: Sequence[CapacitySample]) -> Forecast:
    """The growth rate through ``samples`` and the projection of when memory runs out.

    Raises:
        ValidationError: fewer than two measurements with ``used_memory`` at distinct times.

    Example:
        >>> a = CapacitySample(0, 1_000, 101_000, 0, 0)
        >>> b = CapacitySample(3_600_000, 2_000, 101_000, 0, 0)
        >>> f = forecast([a, b])
        >>> f.bytes_per_hour, f.hours_left
        (1000.0, 99.0)
    """
    points = [(s.at_ms, s.used_memory) for s in samples if s.used_memory is not None]
    if len({t for t, _ in points}) < 2:
        raise ValidationError("a forecast needs at least two measurements at different times", field="samples")
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_m = sum(m for _, m in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    slope_ms = sum((t - mean_t) * (m - mean_m) for t, m in points) / var  # bytes per ms
    last_t = points[-1][0]
    limit = samples[-1].maxmemory
    if not limit or slope_ms <= 0:
        return Forecast(slope_ms * 3_600_000, None, None)
    # the line's value at the last measurement, extended to the limit
    at_last = mean_m + slope_ms * (last_t - mean_t)
    left_ms = max(0.0, (limit - at_last) / slope_ms)
    return Forecast(slope_ms * 3_600_000, int(last_t + left_ms), left_ms / 3_600_000)


def hot_keys(
    client: Any, namespace: str, *, per_partition: int = 1_000, top: int = 10
) -> tuple[list[tuple[str, int]], list[tuple[int, int]]]:
    """The most written entities and partitions in the last ``per_partition`` change records of each.

    Returns ``([(collection:id, writes), ...], [(partition, writes), ...])``, most written first.

    Example:
        >>> keys, partitions = hot_keys(client, "crew")  # doctest: +SKIP
        >>> keys[0]  # doctest: +SKIP
        ('agents:a7', 212)
    """
    meta = Keyspace(namespace, 1).meta()
    stored = client.hget(meta, "partitions")
    if stored is None:
        raise NotFound(f"namespace {namespace!r} does not exist ({meta})", key=meta)
    ks = Keyspace(namespace, int(stored))
    pipe = client.pipeline(transaction=False)
    for p in range(ks.partitions):
        pipe.xrevrange(ks.changes(p), count=per_partition)
    keys: Counter[str] = Counter()
    partitions: Counter[int] = Counter()
    for p, entries in enumerate(pipe.execute()):
        partitions[p] += len(entries)
        for _sid, fields in entries:
            keys[f"{fields[b'c'].decode()}:{fields[b'i'].decode()}"] += 1
    return keys.most_common(top), [(p, n) for p, n in partitions.most_common(top) if n]
