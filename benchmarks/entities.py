"""Entity writes and reads: rxstate against raw redis-py, the minimal Lua write, Redis OM and pottery.

Every contender works on an entity of the same 10 small fields (:class:`Agent`), stored as one hash:
raw redis-py writes the hash rxstate would write (the same JSON-text fields), Redis OM saves a
``HashModel`` of the same fields, pottery keeps the entity as one JSON value of a ``RedisDict``.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Literal

import rxstate
from benchmarks.harness import Contender, Context, Result, at_least, at_most, latency_group, rate_result, ratio_at_most
from benchmarks.timing import median_p99, per_batch_us, seconds_each

__all__ = ["FLOOR_SCRIPT", "Agent", "get", "get_lazy", "incr", "put", "put_many", "update"]

POOL = 1000  # entities each contender cycles through


class Agent(rxstate.Model):
    name: str = "planner"
    status: Literal["idle", "busy", "failed"] = "idle"
    load: int = 0
    team: str = "core"
    region: str = "eu"
    model_name: str = "small"
    budget: int = 100
    notes: str = "ready"
    priority: int = 0
    role: str = "worker"


# The least a versioned, indexed, change-recorded write of one field must do, in one script call.
FLOOR_SCRIPT = """
local v = redis.call('HINCRBY', KEYS[1], '_v', 1)
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], '_ts', t[1] .. string.format('%06d', t[2]))
redis.call('ZADD', KEYS[2], 0, ARGV[2] .. '\\0' .. ARGV[3])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', 100000, '*', 'c', 'agents', 'i', ARGV[3], 'o', 'update',
    'v', v, 'f', ARGV[1])
return v
"""


class _Setup:
    """A collection of :data:`POOL` agents and the same hashes written raw, on one transport."""

    def __init__(self, ctx: Context, *, cache: bool = False) -> None:
        self.raw = ctx.client()
        self.store = ctx.store("entities", cache=cache)
        self.agents = self.store.collection("agents", Agent, indexes=["status"])
        self.sample = Agent()
        self.fields = dict(self.agents._codec.encode(self.sample))
        self.ids = [f"a{i}" for i in range(POOL)]
        self.raw_keys = [f"raw:{ctx.namespace('k')}:{i}" for i in self.ids]
        self.agents.put_many({i: self.sample for i in self.ids})
        pipe = self.raw.pipeline(transaction=False)
        for k in self.raw_keys:
            pipe.hset(k, mapping=self.fields)
        pipe.execute()

    def key(self, i: int) -> str:
        return self.raw_keys[i % POOL]

    def id(self, i: int) -> str:
        return self.ids[i % POOL]


def _redis_om(ctx: Context, prefix: str) -> Any:
    """A Redis OM ``HashModel`` of :class:`Agent`'s fields, bound to this transport.

    ``index=True`` is required for ``save``/``get`` to build keys; it needs no RediSearch (only
    ``find()`` and ``Migrator`` do), so these operations run on plain Redis 7.0.
    """
    from redis_om import HashModel

    client = ctx.client(decode_responses=True)
    defaults = {name: info.default for name, info in Agent.model_fields.items()}

    class Meta:
        database = client
        model_key_prefix = prefix

    body = {"__annotations__": {k: type(v) for k, v in defaults.items()}, **defaults, "Meta": Meta}
    OmAgent = type(HashModel)("OmAgent", (HashModel,), {"__module__": __name__, **body}, index=True)
    return OmAgent


def _peers(ctx: Context) -> dict[str, Any]:
    """Redis OM instances and a pottery ``RedisDict`` of :data:`POOL` agents (empty without peers)."""
    if not ctx.peers:
        return {}
    from pottery import RedisDict

    om_model = _redis_om(ctx, ctx.namespace("om"))
    om = [om_model() for _ in range(POOL)]
    for a in om:
        a.save()
    pottery = RedisDict(redis=ctx.client(), key=ctx.namespace("pottery"))
    value = Agent().model_dump()
    for i in range(POOL):
        pottery[f"a{i}"] = value
    return {"om_model": om_model, "om": om, "pottery": pottery, "value": value}


def update(ctx: Context) -> list[Result]:
    """One indexed field with compare-and-set, against ``HSET`` of that field and the Lua floor."""
    s = _Setup(ctx)
    floor = s.raw.register_script(FLOOR_SCRIPT)
    index_key, stream_key = f"raw:{ctx.namespace('idx')}", f"raw:{ctx.namespace('changes')}"
    versions = {v.id: v.version for v in s.agents.get_many_versioned(s.ids)}

    def rx_update(i: int) -> None:
        entity_id = s.id(i)
        status = "busy" if versions[entity_id] % 2 else "idle"
        versions[entity_id] = s.agents.update(entity_id, status=status, expected_version=versions[entity_id]).version

    contenders = [
        Contender("raw HSET 1 field", lambda i: s.raw.hset(s.key(i), "status", '"busy"' if i % 2 else '"idle"')),
        Contender(
            "Lua floor: EVALSHA HINCRBY _v, HSET field+_ts, ZADD, XADD",
            lambda i: floor(keys=[s.key(i), index_key, stream_key], args=["status", '"busy"', s.id(i)]),
            note="the least such a write costs",
        ),
        Contender("rxstate update 1 indexed field, CAS", rx_update, ratio_at_most(1.3, "HSET")),
    ]
    peers = _peers(ctx)
    if peers:
        om = peers["om"]
        contenders.append(
            Contender(
                "Redis OM HashModel.update(status=)",
                lambda i: om[i % POOL].update(status="busy" if i % 2 else "idle"),
                note="re-saves every field",
            )
        )
    rows = latency_group("update one field", contenders, ctx.n)
    floor_median = rows[1].median
    return [
        r if r.name != contenders[2].name else _with_note(r, f"{r.median / floor_median:.2f}x the Lua floor")
        for r in rows
    ]


def _with_note(r: Result, note: str) -> Result:
    return replace(r, note=f"{r.note}; {note}" if r.note else note)


def put(ctx: Context) -> list[Result]:
    """A whole entity of 10 fields, against ``HSET`` of the 10 fields."""
    s = _Setup(ctx)
    contenders = [
        Contender("raw HSET 10 fields", lambda i: s.raw.hset(s.key(i), mapping=s.fields)),
        Contender("rxstate put 10 fields", lambda i: s.agents.put(s.id(i), s.sample), ratio_at_most(1.3, "HSET")),
    ]
    peers = _peers(ctx)
    if peers:
        om, pottery, value = peers["om"], peers["pottery"], peers["value"]
        contenders += [
            Contender(
                "Redis OM HashModel.save()",
                lambda i: om[i % POOL].save(),
                note="runs on Redis 7.0 without RediSearch (index=True; only find() needs it)",
            ),
            Contender(
                "pottery RedisDict[id] = dict", lambda i: pottery.__setitem__(s.id(i), value), note="one JSON field"
            ),
        ]
    return latency_group("put 10 fields", contenders, ctx.n)


def get(ctx: Context) -> list[Result]:
    """Reading one entity: uncached against ``HGETALL``; cached (a hit of the local cache) in µs."""
    s = _Setup(ctx)
    cached = ctx.store("entities-cached").collection("agents", Agent)
    cached.put("c1", Agent())
    cached.get("c1")
    contenders = [
        Contender("raw HGETALL", lambda i: s.raw.hgetall(s.key(i))),
        Contender("rxstate get, uncached", lambda i: s.agents.get(s.id(i)), ratio_at_most(1.2, "HGETALL")),
    ]
    peers = _peers(ctx)
    if peers:
        om, om_model, pottery = peers["om"], peers["om_model"], peers["pottery"]
        contenders += [
            Contender("Redis OM HashModel.get(pk)", lambda i: om_model.get(om[i % POOL].pk)),
            Contender("pottery RedisDict[id]", lambda i: pottery[s.id(i)]),
        ]
    rows = latency_group("get one entity", contenders, ctx.n)
    hits = per_batch_us(lambda: cached.get("c1"), max(20, ctx.n // 2), batch=200)
    median, p99 = median_p99(hits)
    base = rows[0].median
    rows.append(
        Result(
            rows[0].group,
            "rxstate get, cached (hit)",
            "µs",
            median,
            p99,
            median / base,
            rows[0].name,
            at_most(1.0, "≤1 µs"),
            "timed in batches of 200 calls",
        )
    )
    return rows


class Report(rxstate.Model):
    """An entity of 9 small fields and one large one (``body``), stored whole."""

    name: str = "planner"
    status: Literal["idle", "busy", "failed"] = "idle"
    load: int = 0
    team: str = "core"
    region: str = "eu"
    model_name: str = "small"
    budget: int = 100
    priority: int = 0
    body: str = ""


class LazyReport(rxstate.Model):
    """``Report`` with its large field lazy: reads leave it on the server until it is accessed."""

    name: str = "planner"
    status: Literal["idle", "busy", "failed"] = "idle"
    load: int = 0
    team: str = "core"
    region: str = "eu"
    model_name: str = "small"
    budget: int = 100
    priority: int = 0
    body: str = rxstate.lazy(default="")


def get_lazy(ctx: Context) -> list[Result]:
    """Reading an entity with one 100 KB field, uncached: that field lazy against the same model without."""
    body = "".join(random.Random(7).choices(string.ascii_letters + " ", k=100_000))  # compresses little
    store = ctx.store("entities-lazy", cache=False)
    eager = store.collection("reports", Report)
    lazy = store.collection("lazy_reports", LazyReport)
    pool = ctx.options.scaled(100, 20)
    eager.put_many({f"r{i}": Report(body=body) for i in range(pool)})
    lazy.put_many({f"r{i}": LazyReport(body=body) for i in range(pool)})
    contenders = [
        Contender("rxstate get, 100 KB field not lazy", lambda i: eager.get(f"r{i % pool}")),
        Contender("rxstate get, 100 KB field lazy", lambda i: lazy.get(f"r{i % pool}")),
        Contender(
            "rxstate get, lazy field then read",
            lambda i: lazy.get(f"r{i % pool}").body,
            note="the field loaded on access: one more HMGET",
        ),
    ]
    return latency_group("get with a 100 KB field", contenders, ctx.options.scaled(min(ctx.n, 2000), ctx.n))


def incr(ctx: Context) -> list[Result]:
    """A server-side increment, against ``HINCRBY``."""
    s = _Setup(ctx)
    contenders = [
        Contender("raw HINCRBY", lambda i: s.raw.hincrby(s.key(i), "load", 1)),
        Contender("rxstate incr", lambda i: s.agents.incr(s.id(i), "load", 1), ratio_at_most(1.3, "HINCRBY")),
    ]
    return latency_group("incr one field", contenders, ctx.n)


def put_many(ctx: Context) -> list[Result]:
    """1,000 new entities per call, against a pipeline of 1,000 ``HSET`` (entities/s)."""
    s = _Setup(ctx)
    batch = 1000
    rounds = ctx.options.scaled(30, 3)
    prefix = ctx.namespace("pm")

    def raw_batch(r: int) -> None:
        pipe = s.raw.pipeline(transaction=False)
        for j in range(batch):
            pipe.hset(f"raw:{prefix}:{r}:{j}", mapping=s.fields)
        pipe.execute()

    def rx_batch(r: int) -> None:
        results = s.agents.put_many((f"m{r}-{j}", s.sample) for j in range(batch))
        failed = [x for x in results if isinstance(x, Exception)]
        if failed:
            raise failed[0]

    calls: dict[str, Callable[[int], None]] = {"raw pipeline of 1,000 HSET": raw_batch, "rxstate put_many": rx_batch}
    times: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(-1, rounds):  # round -1 warms up
        for name, fn in calls.items():
            t = seconds_each(lambda _i, fn=fn, r=r: fn(r), range(1))
            if r >= 0:
                times[name] += t
    group = "put_many of 1,000"
    base = batch / median_p99(times["raw pipeline of 1,000 HSET"])[0]
    return [
        rate_result(
            group,
            "raw pipeline of 1,000 HSET",
            times["raw pipeline of 1,000 HSET"],
            batch,
            base,
            unit="entities/s",
            baseline="raw pipeline of 1,000 HSET",
        ),
        rate_result(
            group,
            "rxstate put_many",
            times["rxstate put_many"],
            batch,
            base,
            unit="entities/s",
            baseline="raw pipeline of 1,000 HSET",
            target=at_least(60_000, "≥60k/s"),
            note="new ids, each item atomic",
        ),
    ]
