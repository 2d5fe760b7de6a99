"""Encrypted fields: a put and an uncached get of an entity with 3 of its 10 fields encrypted, against the
same entity stored in clear (the same model, on a store without keys), on the same server in the same run.

The encrypted store seals the 3 secret fields with AES-256-GCM (one of them searchable, AES-SIV) on every
write and opens them on every read from the server; the target is at most 1.15x the same call in clear.
"""

from __future__ import annotations

import rxstate
from benchmarks.harness import Contender, Context, Result, latency_group, ratio_at_most
from rxstate.security import StaticKeyProvider, generate_key

__all__ = ["Profile", "put_get"]

POOL = 1000
TARGET = 1.15


class Profile(rxstate.Model):
    name: str = "planner"
    status: str = "idle"
    load: int = 0
    team: str = "core"
    region: str = "eu"
    model_name: str = "small"
    budget: int = 100
    api_key: rxstate.Secret[str] = rxstate.Secret("sk-live-0123456789abcdef")
    ssn: str = rxstate.classified("secret", default="078-05-1120")
    email: str = rxstate.classified("confidential", searchable=True, default="ada@example.com")


def put_get(ctx: Context) -> list[Result]:
    """Put and uncached get, encrypted against in clear."""
    clear = ctx.store("crypto-clear", cache=False).collection("profiles", Profile)  # no keys: stored in clear
    sealed = ctx.store("crypto", cache=False, keys=StaticKeyProvider(generate_key())).collection("profiles", Profile)
    clear_value = sealed_value = Profile()
    ids = [f"p{i}" for i in range(POOL)]
    clear.put_many({i: clear_value for i in ids})
    sealed.put_many({i: sealed_value for i in ids})
    rows = latency_group(
        "encrypted fields: put of 10, 3 encrypted",
        [
            Contender("rxstate put, all in clear", lambda i: clear.put(ids[i % POOL], clear_value)),
            Contender(
                "rxstate put, 3 fields encrypted",
                lambda i: sealed.put(ids[i % POOL], sealed_value),
                ratio_at_most(TARGET, "in clear"),
            ),
        ],
        ctx.n,
    )
    rows += latency_group(
        "encrypted fields: get of 10, 3 decrypted (uncached)",
        [
            Contender("rxstate get, all in clear", lambda i: clear.get(ids[i % POOL])),
            Contender(
                "rxstate get, 3 fields decrypted",
                lambda i: sealed.get(ids[i % POOL]),
                ratio_at_most(TARGET, "in clear"),
            ),
        ],
        ctx.n,
    )
    return rows
