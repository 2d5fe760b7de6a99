"""Lock rows: rxstate's fenced lease lock against redis-py's ``Lock`` and pottery's ``Redlock``."""

from __future__ import annotations

from benchmarks.bench_locks import acquire_releases
from benchmarks.harness import Contender, Context, Result, latency_group

__all__ = ["acquire_release"]


def acquire_release(ctx: Context) -> list[Result]:
    """One acquire + release per call (uncontended)."""
    store = ctx.store("locks")
    ours, redis_py = acquire_releases(store, ctx.client())
    contenders = [
        Contender("redis-py Lock", redis_py, note="SET NX PX + a release script"),
        Contender("rxstate lock", ours, note="lease with a fencing token"),
    ]
    if ctx.peers:
        from pottery import Redlock

        redlock = Redlock(key=ctx.namespace("redlock"), masters={ctx.client()}, auto_release_time=10)

        def pottery(_i: int) -> None:
            redlock.acquire()
            redlock.release()

        contenders.append(Contender("pottery Redlock (1 master)", pottery))
    return latency_group("lock acquire + release", contenders, ctx.n)
