"""``python -m benchmarks``: every benchmark against one embedded server, on TCP loopback and on a unix
socket, printed as one table and written to ``benchmarks/RESULTS.md``.

    python -m benchmarks                 # the full run (a few minutes); writes benchmarks/RESULTS.md
    python -m benchmarks --quick         # a short run with rough figures; writes nothing unless --output
    python -m benchmarks --only update --only get --transport unix

The comparison libraries come with the ``bench`` extra (``pip install -e '.[bench]'``); without them,
or with ``--no-peers``, only rxstate and raw redis-py run.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from benchmarks.harness import TRANSPORTS, Options, bench_names, peers_installed, run
from benchmarks.report import argv_command, machine, markdown, merge, print_table

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="few calls per operation (rough figures)")
    parser.add_argument("--n", type=int, default=None, help="calls per timed operation (default 5000, quick 200)")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help=f"run only these benches: {', '.join(bench_names())}",
    )
    parser.add_argument("--transport", choices=[*TRANSPORTS, "both"], default="both")
    parser.add_argument("--no-peers", action="store_true", help="leave out the comparison libraries")
    parser.add_argument("--output", type=Path, default=None, help=f"where to write the table (default {RESULTS})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    only = tuple(name for item in args.only for name in item.split(",") if name)
    peers = not args.no_peers and peers_installed()
    if not args.no_peers and not peers:
        print("(the bench extra is not installed: pip install -e '.[bench]' to compare with peers)", file=sys.stderr)
    options = Options(
        n=args.n or (200 if args.quick else 5000),
        quick=args.quick,
        peers=peers,
        only=only,
        transports=TRANSPORTS if args.transport == "both" else (args.transport,),
    )
    load_before = os.getloadavg()
    try:
        result = run(options, on_bench=lambda name, t: print(f"  {name} on {t} ...", file=sys.stderr, flush=True))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    lines = merge(result.results)
    box = machine(load_before)
    print_table(lines, title=f"rxstate benchmarks: {result.server}, {box.cores} cores")
    if box.loaded:
        print(
            f"note: the machine was loaded (load average {box.load_before[0]:.2f} before, "
            f"{box.load_after[0]:.2f} after, {box.cores} cores): figures are noisy"
        )
    output = args.output if args.output is not None else (None if args.quick else RESULTS)
    if output is not None:
        output.write_text(markdown(lines, result, box, command=argv_command(), quick=args.quick))
        print(f"written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
