"""Derived-value rows: the diamond a -> (b, c) -> d -> effect, in-process (no server involved).

rxstate's ``DerivedGraph`` beside reaktiv's signals and reactivex ``combine_latest``, each against a
hand-written callback that recomputes the diamond once per update. The workloads are those of
``bench_reactive`` (the detailed script).
"""

from __future__ import annotations

from benchmarks.bench_reactive import (
    bench_diamond_combine_latest,
    bench_diamond_ours,
    bench_diamond_plain,
    bench_diamond_reaktiv,
)
from benchmarks.harness import Context, Result
from benchmarks.timing import median_p99

__all__ = ["diamond"]


def diamond(ctx: Context) -> list[Result]:
    """Per update, µs; the note counts emissions per update and wrong intermediate values."""
    updates = max(ctx.n, ctx.options.scaled(20_000, ctx.n))
    runs = {
        "plain callback (no library)": bench_diamond_plain,
        "rxstate DerivedGraph": bench_diamond_ours,
        "reactivex combine_latest": bench_diamond_combine_latest,
    }
    if ctx.peers:
        runs["reaktiv signals"] = bench_diamond_reaktiv
    group = "derived values: diamond"
    base_name = next(iter(runs))
    rows = []
    base = 0.0
    for name, fn in runs.items():
        times, emitted, wrong = fn(updates)
        median, p99 = median_p99([t * 1e6 for t in times])
        base = base or median
        note = f"{emitted / updates:.3g} emission(s) per update, {wrong:,} with a wrong intermediate value"
        rows.append(Result(group, name, "µs", median, p99, median / base, base_name, None, note))
    return rows
