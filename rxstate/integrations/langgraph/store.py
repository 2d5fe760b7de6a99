"""``RxStore``: LangGraph's long-term memory (``BaseStore``) as an rxstate collection.

Items are entities of one collection partitioned by the first label of their namespace, so an
application's, a user's or an agent's memories (``("users", "u1", ...)`` under ``"users"``) share a
partition, and a search under a namespace prefix reads one partition's index. The collection indexes
``path``, the namespace as text (each label percent-quoted, ``/`` after each), so a prefix search is one
lexicographic range of the index zset. Filters follow LangGraph's own semantics (equality, nested
objects, ``$eq $ne $gt $gte $lt $lte``): the matching functions of ``langgraph.store.memory`` are used
as they are, so the two stores answer a filter the same way. Item TTLs are rxstate TTLs (minutes, as
LangGraph counts them); reads refresh them when ``refresh_ttl`` (or ``ttl_config["refresh_on_read"]``)
says so. There is no vector index: a ``query`` raises ``ValidationError`` rather than being ignored.

Example:
    >>> memories = RxStore(rxstate.connect(fakeredis.FakeRedis()))
    >>> memories.put(("users", "u1"), "diet", {"food": "vegan", "level": 3})
    >>> memories.get(("users", "u1"), "diet").value["food"]
    'vegan'
    >>> [i.key for i in memories.search(("users",), filter={"level": {"$gte": 2}})]
    ['diet']
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from langgraph.store.base import (
    BaseStore,
    GetOp,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
)
from langgraph.store.memory import _compare_values, _does_match

from rxstate.core.errors import ConflictError, ValidationError
from rxstate.core.model import Model
from rxstate.core.writes import WriteOp
from rxstate.integrations.langgraph.offloop import run_sync

if TYPE_CHECKING:
    from rxstate.aio import AsyncStore
    from rxstate.api import Collection, Store

__all__ = ["ItemRow", "RxStore"]

_TOP = b"\xff"
_RETRIES = 5


class ItemRow(Model):
    """One stored item: its namespace (as labels and as the indexed ``path``), key, value and times."""

    bucket: str
    path: str
    namespace: list[str]
    key: str
    value: dict[str, Any]
    created_ms: int
    updated_ms: int
    ttl_minutes: float | None = None


def _path(labels: Sequence[str]) -> str:
    return "".join(quote(label, safe="") + "/" for label in labels)


def _labels(path: str) -> tuple[str, ...]:
    return tuple(unquote(label) for label in path.split("/")[:-1])


def _matches(value: dict[str, Any], where: dict[str, Any]) -> bool:
    """Whether an item's value passes a filter, as LangGraph's InMemoryStore decides; a range operator
    on a missing or non-numeric value does not match (InMemoryStore raises ``TypeError`` there)."""
    try:
        return all(_compare_values(value.get(k), v) for k, v in where.items())
    except (TypeError, ValueError):
        return False


def _when(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


class RxStore(BaseStore):
    """LangGraph's ``BaseStore`` on an rxstate store (see the module docstring).

    Args:
        store: the rxstate store.
        ttl_config: LangGraph's TTL settings (``default_ttl`` minutes, ``refresh_on_read``).
        collection: the collection's name.

    Example:
        >>> RxStore(rxstate.connect(fakeredis.FakeRedis()), ttl_config={"default_ttl": 60}).supports_ttl
        True
    """

    supports_ttl = True

    def __init__(self, store: Store, *, ttl_config: TTLConfig | None = None, collection: str = "lg_items") -> None:
        self.store = store
        self.ttl_config = ttl_config
        self._bridge: AsyncStore | None = None
        self.items: Collection[ItemRow] = store.collection(
            collection, ItemRow, indexes=["path"], partition_key="bucket"
        )

    # -- reading the path index -----------------------------------------------------------------------
    def _members(self, prefix: Sequence[str]) -> list[tuple[str, str]]:
        """(bucket, entity id) of the items under a namespace prefix (every partition for ``()``)."""
        ks = self.store.keyspace
        start = b'"' + _path(prefix).encode()
        partitions = [ks.partition_of(prefix[0])] if prefix else list(range(ks.partitions))
        pipe = self.store.client.pipeline(transaction=False)
        for p in partitions:
            pipe.zrangebylex(ks.index(self.items.name, "path", p), b"[" + start, b"(" + start + _TOP)
        out = []
        for members in pipe.execute():
            for member in members:
                path_json, _, entity = bytes(member).partition(b"\0")
                labels = _labels(path_json[1:-1].decode())
                if labels:
                    out.append((labels[0], entity.decode()))
        return out

    def _read(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[ItemRow, int]]:
        """The rows (and versions) of (bucket, id) pairs that still exist, in order."""
        by_bucket: dict[str, list[str]] = {}
        for bucket, entity in pairs:
            by_bucket.setdefault(bucket, []).append(entity)
        found: dict[str, tuple[ItemRow, int]] = {}
        for bucket, ids in by_bucket.items():
            for v in self.items.get_many_versioned(ids, partition=bucket):
                found[v.id] = (v.value, v.version)
        return [found[e] for _, e in pairs if e in found]

    @staticmethod
    def _id(namespace: Sequence[str], key: str) -> str:
        return _path(namespace) + quote(key, safe="")

    # -- operations -------------------------------------------------------------------------------------
    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run LangGraph store operations in order; puts and deletes are written together, one atomic call
        per partition.

        Example:
            >>> memories.batch([GetOp(("users", "u1"), "diet")])[0].value  # doctest: +SKIP
            {'food': 'vegan', 'level': 3}
        """
        ops = list(ops)
        results: list[Result] = [None] * len(ops)
        puts: dict[tuple[tuple[str, ...], str], PutOp] = {}
        refresh: list[ItemRow] = []
        for i, op in enumerate(ops):
            if isinstance(op, GetOp):
                results[i] = self._get(op, refresh)
            elif isinstance(op, SearchOp):
                results[i] = self._search(op, refresh)
            elif isinstance(op, ListNamespacesOp):
                results[i] = self._list_namespaces(op)
            elif isinstance(op, PutOp):
                self._check_namespace(op.namespace)
                puts[(tuple(op.namespace), op.key)] = op  # the last put of a key wins, as in LangGraph
            else:
                raise ValidationError(f"unknown store operation {type(op).__name__}")
        if puts:
            self._apply(list(puts.values()))
        if refresh:
            self._refresh(refresh)
        return results

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """Async ``batch``: on the loop through the asyncio store of ``on``, else in a worker thread."""
        return await run_sync(self._bridge, self.batch, list(ops))

    @classmethod
    async def on(cls, astore: AsyncStore, **options: Any) -> RxStore:
        """A store of an asyncio store: ``abatch`` (and so every async method) awaits its ``redis.asyncio``
        client instead of taking a worker thread.

        ``options`` are the constructor's (``ttl_config``, ``collection``).

        Example:
            >>> memories = await RxStore.on(await rxstate.aio.connect())  # doctest: +SKIP
        """
        made = await astore.run(cls, astore.sync, **options)
        made._bridge = astore
        return made

    @staticmethod
    def _check_namespace(namespace: Sequence[str]) -> None:
        if not namespace or any(not isinstance(label, str) or not label for label in namespace):
            raise ValidationError(
                f"a namespace is a non-empty tuple of non-empty strings, not {namespace!r}", field="namespace"
            )

    def _refreshes(self, row: ItemRow, wanted: bool | None) -> bool:
        if row.ttl_minutes is None:
            return False
        if wanted is None:
            return bool((self.ttl_config or {}).get("refresh_on_read", True))
        return wanted

    def _get(self, op: GetOp, refresh: list[ItemRow]) -> Item | None:
        self._check_namespace(op.namespace)
        found = self._read([(op.namespace[0], self._id(op.namespace, op.key))])
        if not found:
            return None
        row = found[0][0]
        if self._refreshes(row, op.refresh_ttl):
            refresh.append(row)
        return Item(
            value=row.value,
            key=row.key,
            namespace=tuple(row.namespace),
            created_at=_when(row.created_ms),
            updated_at=_when(row.updated_ms),
        )

    def _search(self, op: SearchOp, refresh: list[ItemRow]) -> list[SearchItem]:
        if op.query:
            raise ValidationError(
                "RxStore has no semantic index: search with namespace_prefix and filter, without query", field="query"
            )
        rows = [row for row, _ in self._read(self._members(op.namespace_prefix))]
        if op.filter:
            rows = [r for r in rows if _matches(r.value, op.filter)]
        rows.sort(key=lambda r: (-r.updated_ms, r.path, r.key))  # most recently updated first
        page = rows[op.offset : op.offset + op.limit]
        refresh += [r for r in page if self._refreshes(r, op.refresh_ttl)]
        return [
            SearchItem(
                namespace=tuple(r.namespace),
                key=r.key,
                value=r.value,
                created_at=_when(r.created_ms),
                updated_at=_when(r.updated_ms),
            )
            for r in page
        ]

    def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        first = None
        for condition in op.match_conditions or ():
            if condition.match_type == "prefix" and condition.path and condition.path[0] != "*":
                first = condition.path[0]
        members = self._members((first,) if first is not None else ())
        namespaces = {tuple(self._labels_of(entity)) for _, entity in members}
        if op.match_conditions:
            namespaces = {ns for ns in namespaces if all(_does_match(c, ns) for c in op.match_conditions)}
        if op.max_depth is not None:
            namespaces = {ns[: op.max_depth] for ns in namespaces}
        return sorted(namespaces)[op.offset : op.offset + op.limit]

    @staticmethod
    def _labels_of(entity: str) -> tuple[str, ...]:
        return _labels(entity.rsplit("/", 1)[0] + "/")

    @staticmethod
    def _ttl(op: PutOp) -> float | None:
        """The item's TTL in minutes (``BaseStore.put`` has applied ``ttl_config["default_ttl"]``)."""
        ttl = op.ttl
        if ttl is None:
            return None
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0:
            raise ValidationError(f"ttl must be a positive number of minutes or None, not {ttl!r}", field="ttl")
        return float(ttl)

    def _apply(self, puts: Sequence[PutOp]) -> None:
        """Write puts and deletes: one atomic call per partition, compare-and-set on each item's version
        so that ``created_at`` survives concurrent updates (a conflicting batch is read and sent again)."""
        ttls = [self._ttl(op) for op in puts]
        pairs = [(op.namespace[0], self._id(op.namespace, op.key)) for op in puts]
        for _attempt in range(_RETRIES):
            current = {self._id(r.namespace, r.key): (r, v) for r, v in self._read(pairs)}
            now = int(time.time() * 1000)
            ops: list[WriteOp] = []
            for op, ttl, (bucket, entity) in zip(puts, ttls, pairs, strict=True):
                found = current.get(entity)
                if op.value is None:
                    if found is not None:
                        ops.append(self.items.delete_op(entity, partition=bucket, expected_version=found[1]))
                    continue
                row = ItemRow(
                    bucket=bucket,
                    path=_path(op.namespace),
                    namespace=list(op.namespace),
                    key=op.key,
                    value=dict(op.value),
                    created_ms=found[0].created_ms if found else now,
                    updated_ms=now,
                    ttl_minutes=ttl,
                )
                seconds = ttl * 60 if ttl is not None else None
                ops.append(self.items.put_op(entity, row, expected_version=found[1] if found else 0, ttl=seconds))
            if not ops:
                return
            refused = [r for r in self.store.writer.mutate_grouped(ops) if isinstance(r, Exception)]
            if not refused:
                return
            if not all(isinstance(r, ConflictError) for r in refused):
                raise refused[0]
        raise ConflictError(f"store items kept changing under {len(puts)} puts ({_RETRIES} attempts)", key=pairs[0][1])

    def _refresh(self, rows: Sequence[ItemRow]) -> None:
        """Restart the TTL of items just read: each is written again as it is (its version moves on)."""
        ops = []
        for row in rows:
            entity = self._id(row.namespace, row.key)
            assert row.ttl_minutes is not None
            ops.append(self.items.put_op(entity, row, ttl=row.ttl_minutes * 60))
        for result in self.store.writer.mutate_grouped(ops):
            if isinstance(result, Exception) and not isinstance(result, ConflictError):
                raise result  # a conflict: the item was written meanwhile, which restarted its TTL anyway
