"""Linearizability checker throughput: operations checked per second on simulated histories.

Each history is linearizable by construction: clients with overlapping operations drive an atomic
register or counter; each operation takes effect at an instant inside its interval. Some histories
add operations of unknown outcome (``info``) that never took effect, the costly case for the search.
The baseline is a plain replay of the same operations in their linearization order (the least any
checker must do), to show the search's overhead.

    python -m benchmarks.bench_linearizability [--ops 20000]
"""

from __future__ import annotations

import argparse
import random
import time

from rxstate.testing.linearizability import Op, check, counter, register


def simulate(kind: str, n: int, processes: int, lost: int, seed: int) -> list[Op]:
    rng = random.Random(seed)
    value, t, ops = 0, 0, []
    busy = dict.fromkeys(range(processes), 0)
    for _ in range(n):
        p = rng.randrange(processes)
        start = max(t, busy[p]) + rng.randrange(3)
        point = start + rng.randrange(1, 20)
        end = point + rng.randrange(1, 20)
        t = point
        roll = rng.random()
        if kind == "counter":
            if roll < 0.6:
                value += 1
                ops.append(Op(str(p), "k", "incr", 1, value, "ok", start, end))
            else:
                ops.append(Op(str(p), "k", "read", None, value, "ok", start, end))
        elif roll < 0.4:
            ops.append(Op(str(p), "k", "read", None, value, "ok", start, end))
        elif roll < 0.7:
            value = rng.randrange(1_000_000)
            ops.append(Op(str(p), "k", "write", value, None, "ok", start, end))
        else:
            expected = value if rng.random() < 0.5 else -1
            new = rng.randrange(1_000_000)
            success = expected == value
            value = new if success else value
            ops.append(Op(str(p), "k", "cas", (expected, new), success, "ok", start, end))
        busy[p] = end
    for j in range(lost):
        f, v = ("incr", 1) if kind == "counter" else ("write", -100 - j)
        ops.append(Op(f"lost{j}", "k", f, v, None, "info", rng.randrange(t), None))
    return ops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ops", type=int, default=20000)
    args = parser.parse_args()
    print(f"{'history':<34}{'ops':>8}{'seconds':>10}{'ops/s':>12}{'replay ops/s':>14}{'ratio':>8}")
    for kind in ("register", "counter"):
        model = register(0) if kind == "register" else counter(0)
        for processes, lost in ((4, 0), (16, 0), (4, 40)):
            ops = simulate(kind, args.ops, processes, lost, seed=processes + lost)
            result = check(ops, model=model)
            assert result.valid is True, result.counterexample
            t0 = time.perf_counter()
            state = model.init()
            for op in sorted((o for o in ops if o.status == "ok"), key=lambda o: o.invoke_ns):
                state = model.step(state, op) if op.f != "read" else state
            replay = time.perf_counter() - t0
            label = f"{kind}, {processes} clients, {lost} lost"
            rate = result.ops / result.seconds
            print(
                f"{label:<34}{result.ops:>8}{result.seconds:>10.3f}{rate:>12,.0f}"
                f"{len(ops) / replay:>14,.0f}{(len(ops) / replay) / rate:>8.1f}"
            )


if __name__ == "__main__":
    main()
