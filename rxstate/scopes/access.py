"""Who may read and write which keys of which scope: rules that flow down, and delegation links.

**Rules.** A scope holds ``rxstate.Rule`` s whose "collections" are the keys they cover (``"*"``: every
key). A principal acting on a scope is judged by the rules of the scope and all its ancestors, the
root's first, by the security layer's policy engine (``rxstate.security.policy.Policy``): nothing is
allowed unless a rule allows it, and an explicit deny anywhere on the chain wins. A rule's ``when``
conditions may name the scope acted on as ``entity.scope`` (its path), ``entity.name`` (its last
segment), ``entity.root`` and ``entity.depth``; so one rule at the root, ``entity.name ==
principal.name``, lets every agent write its own scope and none other.

**Delegation.** A principal may hand its authority over some keys of a scope (and the scopes below
it) to another principal for a while: a link. A link made by a principal who holds that authority
only through a link is one deeper; chains are at most ``ScopeTree.max_delegation_depth`` deep. A link
counts only while it and every link it was made through exist (Redis expires a link with its time
limit) and are not revoked, so revoking one link revokes everything delegated through it at once. A
write allowed by links checks their versions in the same script call, so a revocation that lands
between the check and the write refuses the write.
Each link, and its revocation, is one audited write (the audit stage of the write path: a real server).

Where it is enforced: rules and links are checked by the client of a store acting as a principal
(``connect(principal=...)``), before the write is sent; the server's ACL enforces what key patterns
can, that is, whether the principal may touch the namespace's ``scopes`` collection at all.

Example:
    >>> from rxstate.security.policy import Principal
    >>> rules = [("org", ({"role": "agent", "effect": "allow", "actions": ["write"], "collections": ["*"],
    ...            "when": ["entity.name == principal.name"]},))]
    >>> decide(Principal("a7", roles=("agent",)), "write", "model", "org/t/a7", rules).allowed
    True
    >>> decide(Principal("a7", roles=("agent",)), "write", "model", "org/t/a8", rules).allowed
    False
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rxstate.core.errors import NotFound
from rxstate.core.versioned import Versioned
from rxstate.scopes.tree import LinkRecord
from rxstate.security.policy import Decision, Policy, Principal, Rule

__all__ = ["Delegation", "ScopeDecision", "covers", "decide", "scope_policy"]


@dataclass(frozen=True)
class ScopeDecision(Decision):
    """A ``Decision`` about a scope, with the path of scopes that took part.

    Attributes:
        scope: the scope acted on.
        key: the key acted on (``"*"``: every key).
        path: the scopes whose rules spoke of this principal, action and key, root first.
        decided_at: the scope whose rule decided (None: no rule did, or a delegation link did).
        links: the delegation links that allowed it, the one held first (empty: none).
        link_versions: the version of each of ``links`` when they were read (a write checks them).
    """

    scope: str = ""
    key: str = "*"
    path: tuple[str, ...] = ()
    decided_at: str | None = None
    links: tuple[str, ...] = ()
    link_versions: tuple[int, ...] = ()


@dataclass(frozen=True)
class Delegation:
    """One delegation link: ``grantor`` handed ``grantee`` its authority over ``keys`` of ``scope``.

    Attributes:
        id: the link's id.
        scope: the scope (and those below it) the link covers.
        keys: the keys it covers (``("*",)``: every key).
        grantor: who made it.
        grantee: who holds it.
        parent: the link the grantor held it through ("" when the grantor's own rules allowed it).
        depth: its place in the chain (1: made on the grantor's own authority).
        expires_ms: when it ends (server ms since the epoch).
        revoked: whether it was revoked (a link under a revoked or expired one counts for nothing too).
        version: the stored version of the link.
    """

    id: str
    scope: str
    keys: tuple[str, ...]
    grantor: str
    grantee: str
    parent: str
    depth: int
    expires_ms: int
    revoked: bool
    version: int

    @classmethod
    def of(cls, stored: Versioned[LinkRecord]) -> Delegation:
        r = stored.value
        return cls(
            stored.id,
            r.scope,
            tuple(r.keys),
            r.grantor,
            r.grantee,
            r.parent,
            r.depth,
            r.expires_ms,
            r.revoked,
            stored.version,
        )


def covers(link: Delegation | LinkRecord, scope: str, key: str) -> bool:
    """Whether a link's authority reaches ``key`` of ``scope``.

    Example:
        >>> covers(LinkRecord(root="o", scope="o/t", keys=["x"], grantor="m", grantee="c"), "o/t/a", "x")
        True
    """
    inside = scope == link.scope or scope.startswith(link.scope + "/")
    return inside and ("*" in link.keys or key in link.keys)


def scope_policy(rules: Sequence[tuple[str, Sequence[dict[str, Any]]]]) -> tuple[Policy, dict[str, str]]:
    """The rules of a chain as one policy (each rule renamed ``<scope>:<name>``) and rule name -> scope."""
    where: dict[str, str] = {}
    merged: list[Rule] = []
    for path, stored in rules:
        for raw in stored:
            rule = Rule(**{**raw, "name": f"{path}:{raw.get('name') or Rule(**raw).name}"})
            where[rule.name] = path
            merged.append(rule)
    return Policy(merged), where


def decide(
    principal: Principal,
    action: str,
    key: str,
    scope: str,
    rules: Sequence[tuple[str, Sequence[dict[str, Any]]]],
) -> ScopeDecision:
    """Whether ``principal`` may ``action`` the ``key`` of ``scope``, by the rules of its chain alone."""
    policy, where = scope_policy(rules)
    parts = scope.split("/")
    entity = {"scope": scope, "name": parts[-1], "root": parts[0], "depth": len(parts)}
    decision = policy.decide(principal, action, key, entity=entity)
    spoke = dict.fromkeys(where[r.name] for r in policy.rules if r.applies(principal, action, key))
    return ScopeDecision(
        decision.allowed,
        decision.rule,
        decision.reason,
        "client",
        decision.pending,
        scope=scope,
        key=key,
        path=tuple(spoke),
        decided_at=where.get(decision.rule) if decision.rule else None,
    )


def link_chain(get: Any, link_id: str, limit: int) -> tuple[list[Versioned[LinkRecord]], str | None]:
    """The links from ``link_id`` up to the one made on its grantor's own authority, and why the chain
    does not count (None: it does). ``get(id)`` reads a link (``NotFound``: expired or never made)."""
    chain: list[Versioned[LinkRecord]] = []
    current = link_id
    while current:
        if len(chain) >= limit:
            return chain, f"the chain through {link_id} is deeper than {limit}"
        try:
            stored = get(current)
        except NotFound:
            return chain, f"link {current} has expired (or was never made)"
        if stored.value.revoked:
            return [*chain, stored], f"link {current} was revoked"
        chain.append(stored)
        current = stored.value.parent
    return chain, None
