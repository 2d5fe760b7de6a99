"""Where scopes live and how they are read and written: the store's ``ScopeTree``.

A scope is an entity of the ``scopes`` collection whose id is its path (``org/acme/team-a``) and
whose partition key is the path's root, so a whole tree sits in one partition (one cluster slot): a
chain (root to scope) is read by one script call (``lua/scope_read.lua``) and a write is one call of
the ordinary write path (``mutate.lua``), so scope writes are versioned, change-recorded (the change
feed, ``watch`` and cache invalidation see them) and audited like every entity write. A write is a
compare-and-set of the scope's record plus ``check`` ops on every ancestor's version: a concurrent
change of the chain (a value made final above) refuses it, and it runs again on a fresh read.

Example:
    >>> tree = scope_tree(store)
    >>> [path for path, _ in tree.read_chain("org/acme/team-a").entries]
    ['org', 'org/acme', 'org/acme/team-a']
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from rxstate.core.errors import ConflictError, ValidationError
from rxstate.core.model import Model
from rxstate.core.writes import WriteOp, WriteResult
from rxstate.scopes.merging import Entry

if TYPE_CHECKING:
    from rxstate.store.collection import Collection
    from rxstate.store.store import Store

__all__ = ["SCOPES", "ChainRead", "LinkRecord", "ScopeRecord", "ScopeTree", "chain_of", "scope_tree", "validate_path"]

SCOPES = "scopes"
"""The collection holding every scope of a namespace."""
LINKS = "scope_links"
"""The collection holding the delegation links of a namespace."""
MAX_DEPTH = 16
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_ATTEMPTS = 50


class ScopeRecord(Model):
    """One scope as stored: its root (the partition key), its entries and its access rules."""

    root: str
    values: dict[str, Any] = {}
    rules: list[dict[str, Any]] = []


class LinkRecord(Model):
    """One delegation link as stored (see ``rxstate.scopes.access``)."""

    root: str
    scope: str
    keys: list[str]
    grantor: str
    grantee: str
    parent: str = ""
    depth: int = 1
    expires_ms: int = 0
    revoked: bool = False


def validate_path(path: object) -> str:
    """``path`` if it names a scope: 1-16 segments joined by ``/``, each a letter or digit, then letters,
    digits, ``_``, ``.`` or ``-``.

    Example:
        >>> validate_path("org/acme/team-a")
        'org/acme/team-a'
    """
    parts = path.split("/") if isinstance(path, str) else []
    bad = [p for p in parts if not _SEGMENT.fullmatch(p)]
    if not parts or bad or len(parts) > MAX_DEPTH:
        why = f"segment {bad[0]!r} is not valid" if bad else f"at most {MAX_DEPTH} segments"
        raise ValidationError(
            f"invalid scope path {path!r}: {why} (segments start with a letter or digit, then letters, digits, "
            "'_', '.' or '-', joined by '/')",
            field="scope",
        )
    return str(path)


def chain_of(path: str) -> list[str]:
    """The paths from the root down to ``path``.

    Example:
        >>> chain_of("org/acme/t")
        ['org', 'org/acme', 'org/acme/t']
    """
    parts = path.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


@dataclass(frozen=True)
class ChainRead:
    """A chain of scopes read at one instant: per scope its version, entries and rules, the root first."""

    path: str
    versions: tuple[int, ...]
    entries: tuple[tuple[str, dict[str, Entry]], ...]
    rules: tuple[tuple[str, tuple[dict[str, Any], ...]], ...]

    @property
    def own(self) -> dict[str, Entry]:
        """The entries of the scope itself."""
        return self.entries[-1][1]


class ScopeTree:
    """The scopes of one store: chain reads, compare-and-set writes, delegation links.

    Attributes:
        max_delegation_depth: the longest chain of delegation links (a link made through a link is one
            deeper); default 3.
    """

    def __init__(self, store: Store, *, max_delegation_depth: int = 3) -> None:
        self.store = store
        self.max_delegation_depth = max_delegation_depth
        self.records: Collection[ScopeRecord] = store.collection(SCOPES, ScopeRecord, partition_key="root")
        self.links: Collection[LinkRecord] = store.collection(
            LINKS, LinkRecord, partition_key="root", indexes=("grantee",)
        )
        self._audit_checked = False

    def stop(self) -> None:
        """Nothing runs in the background; present for ``Store.service``."""

    # -- reading ------------------------------------------------------------------------------------
    def read_chain(self, path: str) -> ChainRead:
        """Every scope from the root to ``path`` (missing ones empty), read by one script call."""
        path = validate_path(path)
        if self.store.guard is not None:  # the namespace's policy first: may the principal use scopes at all
            self.store.guard.require("read", SCOPES, path)
        paths = chain_of(path)
        root = paths[0]
        keys = [self.records.key(p, partition=root) for p in paths]
        store = self.store
        replies = store.scripts.get("scope_read")(store.client, keys, ["_v", "values", "rules"])
        codec = self.records._codec
        versions, entries, rules = [], [], []
        for p, key, (v, raw_values, raw_rules) in zip(paths, keys, replies, strict=True):
            versions.append(int(v) if v else 0)
            values = codec.decode_value("values", raw_values, key) if raw_values else {}
            entries.append((p, {k: Entry.from_json(e) for k, e in values.items()}))
            rules.append((p, tuple(codec.decode_value("rules", raw_rules, key) if raw_rules else ())))
        return ChainRead(path, tuple(versions), tuple(entries), tuple(rules))

    # -- writing ------------------------------------------------------------------------------------
    def write(
        self,
        path: str,
        change: Callable[[ChainRead], ScopeRecord | None],
        *,
        links: Sequence[tuple[str, int]] = (),
    ) -> WriteResult | None:
        """Write the record ``change(chain)`` returns for ``path`` (None: nothing to write), atomically with
        checks that no scope of the chain changed since it was read; on such a change, read and try again.

        ``change`` raises (a typed error) to refuse the write; then nothing is written. ``links``: (id,
        version) of delegation links the write relies on, as ``change`` leaves them: checked with it too.
        """
        delay = 0.0005
        for _attempt in range(_ATTEMPTS):
            chain = self.read_chain(path)
            record = change(chain)
            if record is None:
                return None
            paths = chain_of(chain.path)
            root = paths[0]
            part = self.store.keyspace.partition_of(root)
            checks = [
                WriteOp("check", SCOPES, p, part, expected=v)
                for p, v in zip(paths[:-1], chain.versions[:-1], strict=True)
            ]
            checks += [WriteOp("check", LINKS, i, part, expected=v) for i, v in dict(links).items()]
            put = self.records.put_op(chain.path, record, expected_version=chain.versions[-1])
            try:
                return self.store.writer.mutate([*checks, put])[-1]
            except ConflictError:
                time.sleep(delay * random.random())
                delay = min(delay * 2, 0.05)
        raise ConflictError(
            f"scope {path!r}: the chain kept changing during {_ATTEMPTS} attempts to write it", key=path
        )

    def write_link(self, ops: Sequence[WriteOp], principal: str) -> WriteResult:
        """Write delegation-link ops in one call, each with its audit entry (which needs a real server)."""
        if not self._audit_checked:
            self.store.audit._check_server()
            self._audit_checked = True
        audited = [
            replace(op, audit=(principal, tuple(LinkRecord.model_fields))) if op.kind != "check" else op for op in ops
        ]
        return self.store.writer.mutate(audited)[-1]


def scope_tree(store: Store) -> ScopeTree:
    """The store's ``ScopeTree`` (made on first use).

    Example:
        >>> scope_tree(store) is scope_tree(store)
        True
    """
    return store.service(ScopeTree, lambda: ScopeTree(store), ScopeTree.stop)
