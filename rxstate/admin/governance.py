"""Governance: retention of change streams and event logs, and policy checks for CI.

**Retention.** A namespace's policy (``set_retention``: a maximum age and/or length, kept in its
metadata) is applied by ``apply_retention``: per partition, the change stream's and the event log's
entries beyond the policy are first appended to an archive file (the ``rxstate.admin.archive`` format,
so a point-in-time recovery can still use them), then trimmed with ``XTRIM MINID`` at exactly the first
entry kept. Stream ids only grow, so no entry older than that appears in between: what is trimmed is
what was archived. Audit streams are never trimmed (their hash chain is the point), nor aggregates'
own event streams (they are the aggregates).

**Policy checks** (``check_policies``, ``rxstate audit check``): every classified field is stored
encrypted (a sample of every collection's entities is read), a retention policy is configured, and no
principal holds more on the server than its roles need (its ACL is compared with the one its roles and
the namespace's policy give, built on a scratch ACL user that is deleted at once). ``exit_code`` is 0
when nothing fails.

Example:
    >>> set_retention(client, "crew", max_len=100_000)  # doctest: +SKIP
    >>> apply_retention(client, "crew", archive="crew.trimmed").trimmed  # doctest: +SKIP
    {'changes': 1200, 'events': 0}
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from typing import Any

import redis

from rxstate.admin.backup import server_ms, text
from rxstate.core.codec import LZ4_MARKER, SEALED_MARKER
from rxstate.core.errors import NotFound, ValidationError
from rxstate.core.keys import Keyspace
from rxstate.feed.change import offset_key
from rxstate.security.acl import acl_rules, username
from rxstate.security.principals import Principals

__all__ = [
    "Finding",
    "PolicyReport",
    "RetentionPolicy",
    "RetentionReport",
    "apply_retention",
    "check_policies",
    "retention",
    "set_retention",
]

_RETENTION = "retention"
_TRIMMED = ("changes", "events")


@dataclass(frozen=True)
class RetentionPolicy:
    """How much of each partition's change stream and event log to keep (None: no limit of that kind)."""

    max_age_ms: int | None = None
    max_len: int | None = None


def _keyspace(client: Any, namespace: str) -> Keyspace:
    meta = Keyspace(namespace, 1).meta()
    stored = client.hget(meta, "partitions")
    if stored is None:
        raise NotFound(f"namespace {namespace!r} does not exist ({meta})", key=meta)
    return Keyspace(namespace, int(stored))


def set_retention(
    client: Any, namespace: str, *, max_age_ms: int | None = None, max_len: int | None = None
) -> RetentionPolicy:
    """Set ``namespace``'s retention policy.

    Raises:
        ValidationError: neither limit, or one that is not a positive integer.
        NotFound: the namespace does not exist.
    """
    for name, value in (("max_age_ms", max_age_ms), ("max_len", max_len)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValidationError(f"{name} must be a positive integer, not {value!r}", field=name)
    if max_age_ms is None and max_len is None:
        raise ValidationError("a retention policy needs max_age_ms, max_len or both", field="max_age_ms")
    ks = _keyspace(client, namespace)
    policy = RetentionPolicy(max_age_ms, max_len)
    client.hset(ks.meta(), _RETENTION, json.dumps({"max_age_ms": max_age_ms, "max_len": max_len}))
    return policy


def retention(client: Any, namespace: str) -> RetentionPolicy | None:
    """``namespace``'s retention policy, or None when none is set."""
    raw = client.hget(_keyspace(client, namespace).meta(), _RETENTION)
    if raw is None:
        return None
    data = json.loads(raw)
    return RetentionPolicy(data.get("max_age_ms"), data.get("max_len"))


@dataclass(frozen=True)
class RetentionReport:
    """Entries trimmed per stream kind, and where they were archived first."""

    trimmed: dict[str, int]
    archive: str | None


def apply_retention(client: Any, namespace: str, *, archive: str | os.PathLike[str] | None = None) -> RetentionReport:
    """Trim every partition's change stream and event log to the namespace's policy, archiving first.

    Raises:
        ValidationError: the namespace has no retention policy.
    """
    policy = retention(client, namespace)
    if policy is None:
        raise ValidationError(
            f"namespace {namespace!r} has no retention policy (set_retention first)", field="retention"
        )
    ks = _keyspace(client, namespace)
    cutoff = server_ms(client) - policy.max_age_ms if policy.max_age_ms is not None else None
    trimmed = dict.fromkeys(_TRIMMED, 0)
    where = os.fspath(archive) if archive is not None else None
    for p in range(ks.partitions):
        for kind in _TRIMMED:
            key = ks.changes(p) if kind == "changes" else ks.event_log(p)
            first_kept = _first_kept(client, key, policy, cutoff)
            if first_kept is None:
                continue
            old = client.xrange(key, "-", f"({first_kept}")
            if not old:
                continue
            if where is not None:
                with open(where, "a", encoding="utf-8") as out:
                    for sid, fields in old:
                        flat = [text(x) for kv in fields.items() for x in kv]
                        out.write(
                            json.dumps({"g": p, "s": kind, "id": sid.decode(), "f": flat}, separators=(",", ":")) + "\n"
                        )
                    out.flush()
                    os.fsync(out.fileno())
            client.xtrim(key, minid=first_kept, approximate=False)
            trimmed[kind] += len(old)
    return RetentionReport(trimmed, where)


def _first_kept(client: Any, key: str, policy: RetentionPolicy, cutoff: int | None) -> str | None:
    """The id of the oldest entry the policy keeps (None: it keeps them all)."""
    candidates: list[str] = []
    if policy.max_len is not None and int(client.xlen(key)) > policy.max_len:
        newest = client.xrevrange(key, "+", "-", count=policy.max_len)
        candidates.append(newest[-1][0].decode())
    if cutoff is not None:
        page = client.xrange(key, f"{cutoff}-0", "+", count=1)
        oldest = client.xrange(key, "-", "+", count=1)
        if oldest and offset_key(oldest[0][0].decode())[0] < cutoff:
            candidates.append(page[0][0].decode() if page else f"{cutoff}-0")
    return max(candidates, key=offset_key) if candidates else None


@dataclass(frozen=True)
class Finding:
    """One policy check's verdict on one subject."""

    check: str
    status: str
    subject: str
    detail: str


@dataclass(frozen=True)
class PolicyReport:
    """The findings of ``check_policies``; ``exit_code`` is 0 when none fails."""

    namespace: str
    findings: tuple[Finding, ...] = field(default=())

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "fail"]

    def exit_code(self) -> int:
        return 1 if self.failures else 0


def check_policies(client: Any, namespace: str, *, sample: int = 200) -> PolicyReport:
    """Check that classified fields are stored encrypted, that retention is configured, and that every
    principal's server ACL is exactly what its roles need.

    Args:
        sample: entities read per collection and partition for the encryption check.
    """
    ks = _keyspace(client, namespace)
    findings = [*_encryption(client, ks, sample), _retention(client, namespace), *_privileges(client, ks)]
    return PolicyReport(namespace, tuple(findings))


def _encryption(client: Any, ks: Keyspace, sample: int) -> list[Finding]:
    out: list[Finding] = []
    for name, raw in sorted(client.hgetall(ks.schemas()).items()):
        collection = name.decode()
        classified = list(json.loads(raw).get("secrets", ()))
        if not classified:
            continue
        clear: list[str] = []
        for p in range(ks.partitions):
            _cursor, ids = client.sscan(ks.ids(collection, p), 0, count=sample)
            pipe = client.pipeline(transaction=False)
            for entity_id in ids[:sample]:
                pipe.hmget(ks.entity(collection, entity_id.decode(), p), classified)
            for entity_id, values in zip(ids, pipe.execute(), strict=False):
                for f, v in zip(classified, values, strict=True):
                    if v is not None and v != b"null" and not v.startswith((SEALED_MARKER, LZ4_MARKER + SEALED_MARKER)):
                        clear.append(f"{entity_id.decode()}.{f}")
        if clear:
            shown = ", ".join(clear[:5]) + (" ..." if len(clear) > 5 else "")
            detail = f"{len(clear)} classified value(s) stored in clear: {shown} (open the store with keys=)"
            out.append(Finding("encryption", "fail", collection, detail))
        else:
            out.append(Finding("encryption", "ok", collection, f"classified fields {classified} are encrypted"))
    return out


def _retention(client: Any, namespace: str) -> Finding:
    policy = retention(client, namespace)
    if policy is None:
        return Finding(
            "retention", "fail", namespace, "no retention policy: change streams and event logs grow unchecked"
        )
    return Finding("retention", "ok", namespace, f"max_age_ms={policy.max_age_ms}, max_len={policy.max_len}")


def _privileges(client: Any, ks: Keyspace) -> list[Finding]:
    admin = Principals(client, ks.namespace, partitions=ks.partitions)
    try:
        listed = admin.list()
    except redis.ResponseError as exc:
        return [Finding("privileges", "fail", ks.namespace, f"cannot read the principals: {exc}")]
    out: list[Finding] = []
    policy = admin.policy
    for info in listed:
        actual = admin.acl(info.name)
        scratch = f"rxcheck-{secrets.token_hex(6)}"
        try:
            rules = acl_rules(ks.namespace, ks.partitions, info.principal, policy, admin.db)
            admin._setuser(username(ks.namespace, scratch), ["reset", "off"], rules)  # as the principal's is set
            wanted = admin.acl(scratch)
        finally:
            admin._everywhere("ACL", "DELUSER", username(ks.namespace, scratch))
        extra = {part: actual[part] for part in ("commands", "keys", "channels") if actual[part] != wanted[part]}
        if extra:
            shown = "; ".join(f"{k}: {v!r} (roles need {wanted[k]!r})" for k, v in extra.items())
            out.append(
                Finding(
                    "privileges", "fail", info.name, f"ACL differs from what roles {list(info.roles)} need: {shown}"
                )
            )
        else:
            out.append(Finding("privileges", "ok", info.name, f"ACL is exactly what roles {list(info.roles)} need"))
    return out
