"""Backups: ``rxstate backup`` of a namespace against the cheapest copy a user could script by hand.

The baseline reads the same namespace with ``SCAN`` and pipelined ``DUMP`` and writes the payloads to a
gzip file: neither consistent (writes land between the reads) nor portable (a ``DUMP`` restores only
into a server of the same RDB version or newer). ``rxstate backup`` freezes each partition in one script
call, reads the frozen copies by type and writes a zip with checksums; the ratio is its cost for that.
"""

from __future__ import annotations

import gzip
import os

import rxstate
from benchmarks.harness import Contender, Context, Result, latency_group
from rxstate.admin.backup import backup

__all__ = ["backup_namespace"]

ENTITIES = 2_000


class Item(rxstate.Model):
    name: str = "item"
    status: str = "idle"
    load: int = 0
    notes: str = "x" * 64


def backup_namespace(ctx: Context) -> list[Result]:
    """A backup of a 2,000-entity namespace (4 partitions, one index)."""
    store = ctx.store("backup", partitions=4, change_retention=100)
    items = store.collection("items", Item, indexes=["status"])
    items.put_many({f"i{i}": Item() for i in range(ENTITIES)})
    client = ctx.client()
    ns = store.namespace
    raw_path = os.path.join(ctx.tmp, "raw.gz")
    rx_path = os.path.join(ctx.tmp, "rx.rxb")

    def raw_copy(_i: int) -> None:
        keys = [*client.scan_iter(match=f"rx:{{{ns}:*", count=1000), *client.scan_iter(match=f"rx:{{{ns}}}:*")]
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.dump(key)
        with gzip.open(raw_path, "wb", compresslevel=6) as out:
            for key, payload in zip(keys, pipe.execute(), strict=True):
                out.write(key + b"\0" + (payload or b"") + b"\n")

    return latency_group(
        f"backup of {ENTITIES:,} entities (4 partitions, 1 index), to a file",
        [
            Contender("raw SCAN + DUMP to gzip (not consistent)", raw_copy),
            Contender("rxstate backup", lambda i: backup(client, rx_path, namespace=ns)),
        ],
        min(ctx.n, 15),
        warmup=2,
        unit="µs",
    )
