"""The audit trail: an audited write against the same write unaudited, and ``verify`` throughput.

Both stores write the same model on the same server in the same run; the audited one appends a
hash-chained entry to its partition's audit stream in the same script call. The target is at most
1.1x the unaudited write. ``verify`` recomputes every chain of a namespace holding ``entries`` entries.
"""

from __future__ import annotations

import time

import rxstate
from benchmarks.harness import Contender, Context, Result, latency_group, rate_result, ratio_at_most

__all__ = ["writes_and_verify"]

POOL = 1000
TARGET = 1.1


class Ledger(rxstate.Model):
    owner: str = "acme"
    status: str = "open"
    total_cents: int = 0
    region: str = "eu"


def writes_and_verify(ctx: Context) -> list[Result]:
    """Audited update against an unaudited one; entries verified per second."""
    plain = ctx.store("audit-off", cache=False).collection("ledgers", Ledger)
    audited_store = ctx.store("audit-on", cache=False, audit=True)
    audited = audited_store.collection("ledgers", Ledger)
    ids = [f"l{i}" for i in range(POOL)]
    plain.put_many({i: Ledger() for i in ids})
    audited.put_many({i: Ledger() for i in ids})
    rows = latency_group(
        "audit: update one field",
        [
            Contender("rxstate update, unaudited", lambda i: plain.update(ids[i % POOL], total_cents=i)),
            Contender(
                "rxstate update, audited (hash-chained entry in the same call)",
                lambda i: audited.update(ids[i % POOL], total_cents=i),
                ratio_at_most(TARGET, "unaudited"),
            ),
        ],
        ctx.n,
    )
    times = []
    for _ in range(ctx.options.scaled(5, 1)):
        start = time.perf_counter()
        report = audited_store.audit.verify()
        times.append(time.perf_counter() - start)
        assert report.ok, report.problems
    rows.append(rate_result("audit: verify", "rxstate audit verify", times, report.entries, None, unit="entries/s"))
    return rows
