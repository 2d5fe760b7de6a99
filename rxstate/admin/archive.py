"""The change archive: every partition's change records, audit entries and events, copied to a file.

A backup is a point; recovering to a later instant needs what was written after it, kept somewhere
that survives the server. ``ChangeArchive`` follows each partition's change stream, audit stream and
event log (as a write-ahead-log archiver does) and appends their entries to a JSON-lines file, one line
per entry: ``{"g": partition, "s": stream, "id": stream id, "f": [name, value, ...]}`` (values as
``rxstate.admin.backup.text``). It resumes where the file ends, and it refuses to go on over a gap: the
streams are capped (``change_retention``), so an archiver that falls further behind than the cap
raises ``BackupError(reason="gap")`` instead of archiving a history with a hole in it. The check is
that the last entry archived of each stream is still in the stream: while it is, nothing after it can
have been trimmed (trimming takes the oldest entries first).

Reading is by ``XRANGE`` from the last archived id, per partition, pipelined: it works the same on a
standalone server, a cluster and fakeredis.

Example:
    >>> archive = ChangeArchive(client, "crew", "crew.changes")  # doctest: +SKIP
    >>> archive.poll()  # doctest: +SKIP
    42
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rxstate.admin.backup import text
from rxstate.core.errors import BackupError, NotFound
from rxstate.core.keys import Keyspace
from rxstate.feed.change import offset_key

__all__ = ["STREAMS", "ArchivedEntry", "ChangeArchive", "read_archive"]

STREAMS = ("changes", "audit", "events")
"""The per-partition streams an archive follows."""


@dataclass(frozen=True, slots=True)
class ArchivedEntry:
    """One archived stream entry: its partition, stream (``changes``, ``audit``, ``events``), id and fields."""

    partition: int
    stream: str
    id: str
    fields: tuple[str, ...]

    @property
    def ms(self) -> int:
        """The server time of the entry (the first part of its stream id), in ms."""
        return offset_key(self.id)[0]


def read_archive(path: str | os.PathLike[str]) -> Iterator[ArchivedEntry]:
    """The entries of an archive file, in the order they were archived (per stream: stream order).

    A last line cut short (the archiver died while writing it) is ignored; any other malformed line
    raises ``BackupError``.
    """
    where = os.fspath(path)
    if not os.path.exists(where):
        return
    with open(where, encoding="utf-8") as lines:
        pending: str | None = None
        for number, line in enumerate(lines, 1):
            if pending is not None:
                raise BackupError(
                    f"{where}: line {number - 1} is malformed", path=where, member=str(number - 1), reason="format"
                )
            if not line.endswith("\n"):
                return  # cut short by a crash: the archiver writes it again on resume
            try:
                data = json.loads(line)
                yield ArchivedEntry(int(data["g"]), str(data["s"]), str(data["id"]), tuple(data["f"]))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                pending = line


class ChangeArchive:
    """Follows a namespace's partition streams and appends their entries to ``path``.

    Args:
        client: a redis-py client of the server.
        namespace: the namespace to follow.
        path: the archive file (created, or resumed where it ends).
        batch: the most entries read per stream per round trip.
        fsync: fsync the file after every ``poll`` that wrote something.

    Example:
        >>> with ChangeArchive(client, "crew", "crew.changes").running(interval=0.2):  # doctest: +SKIP
        ...     run_the_workload()
    """

    def __init__(
        self, client: Any, namespace: str, path: str | os.PathLike[str], *, batch: int = 1000, fsync: bool = True
    ) -> None:
        meta = Keyspace(namespace, 1).meta()
        stored = client.hget(meta, "partitions")
        if stored is None:
            raise NotFound(f"namespace {namespace!r} does not exist ({meta})", key=meta)
        self.client = client
        self.namespace = namespace
        self.keyspace = Keyspace(namespace, int(stored))
        self.path = Path(path)
        self.batch = batch
        self.fsync = fsync
        self.archived = 0
        """Entries appended by this archiver."""
        self.last: dict[tuple[int, str], str] = {}
        for entry in read_archive(self.path):
            self.last[(entry.partition, entry.stream)] = entry.id
        self._truncate_cut_line()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        """What stopped a background archiver (``running``), if anything did."""

    def _key(self, partition: int, stream: str) -> str:
        ks = self.keyspace
        return {"changes": ks.changes, "audit": ks.audit, "events": ks.event_log}[stream](partition)

    def _truncate_cut_line(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.path, "r+b") as out:
                out.truncate(data.rfind(b"\n") + 1)

    def poll(self) -> int:
        """Append what the streams hold beyond the archive's end; return how many entries that was.

        Raises:
            BackupError: a stream's oldest entry is newer than the archive's last one of it: entries
                were trimmed before they could be archived (``reason="gap"``).
        """
        targets = [(p, s) for p in range(self.keyspace.partitions) for s in STREAMS]
        written = 0
        while True:
            pipe = self.client.pipeline(transaction=False)
            for p, s in targets:
                last = self.last.get((p, s))
                pipe.xrange(self._key(p, s), "-" if last is None else f"({last}", "+", count=self.batch)
                if last is not None:
                    pipe.xrange(self._key(p, s), last, last, count=1)
            replies = iter(pipe.execute())
            lines: list[str] = []
            more: list[tuple[int, str]] = []
            for p, s in targets:
                page = next(replies)
                last = self.last.get((p, s))
                if last is not None and not next(replies):
                    raise BackupError(
                        f"{self._key(p, s)}: the last entry archived, {last}, was trimmed: entries after it "
                        "may be lost; take a new backup and archive from it",
                        path=str(self.path),
                        member=self._key(p, s),
                        reason="gap",
                    )
                for sid, fields in page:
                    flat = [text(x) for kv in fields.items() for x in kv]
                    lines.append(json.dumps({"g": p, "s": s, "id": sid.decode(), "f": flat}, separators=(",", ":")))
                if page:
                    self.last[(p, s)] = page[-1][0].decode()
                if len(page) >= self.batch:
                    more.append((p, s))
            if lines:
                with open(self.path, "a", encoding="utf-8") as out:
                    out.write("\n".join(lines) + "\n")
                    out.flush()
                    if self.fsync:
                        os.fsync(out.fileno())
                written += len(lines)
            if not more:
                break
            targets = more
        self.archived += written
        return written

    def running(self, *, interval: float = 0.5) -> _Running:
        """A context that archives in a background thread every ``interval`` s, and once more at exit."""
        return _Running(self, interval)

    def _loop(self, interval: float) -> None:
        try:
            while not self._stop.wait(interval):
                self.poll()
        except BaseException as exc:  # kept for the owner: re-raised when the context exits
            self.error = exc


class _Running:
    def __init__(self, archive: ChangeArchive, interval: float) -> None:
        self.archive = archive
        self.interval = interval

    def __enter__(self) -> ChangeArchive:
        archive = self.archive
        archive._stop.clear()
        archive._thread = threading.Thread(
            target=archive._loop, args=(self.interval,), name="rxstate-archive", daemon=True
        )
        archive._thread.start()
        return archive

    def __exit__(self, *exc: object) -> None:
        archive = self.archive
        archive._stop.set()
        if archive._thread is not None:
            archive._thread.join()
        if archive.error is not None:
            raise archive.error
        archive.poll()
