"""The client-side check of a principal's store: the policy asked before every read and write."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from rxstate.core.errors import PermissionDenied
from rxstate.security.acl import keyspace_channels, probe_key
from rxstate.security.policy import Decision, Policy, Principal

__all__ = ["Guard"]


class Guard:
    """The client-side check of one principal's store: ``require`` raises ``PermissionDenied``.

    Args:
        principal: who the store acts as.
        policy: the namespace's policy.
        clock: the time source for ``hours`` windows (tests inject one).

    Example:
        >>> from rxstate.security.policy import Policy, Principal, Rule
        >>> guard = Guard(Principal("bob", roles=("viewer",)), Policy([Rule("viewer", "allow", ["read"], ["*"])]))
        >>> guard.require("read", "agents").allowed
        True
        >>> guard.require("write", "agents")
        Traceback (most recent call last):
        ...
        rxstate.core.errors.PermissionDenied: bob may not write agents: no rule allows write on agents
    """

    def __init__(self, principal: Principal, policy: Policy, *, clock: Callable[[], datetime] | None = None) -> None:
        self.principal = principal
        self.clock = clock or (lambda: datetime.now(UTC))
        self._policy = policy
        # Decisions that depend on neither the entity nor the time, and the fields checks need, memoised:
        # a check runs before every cached read, so it has to cost little next to the hit itself.
        self._static: dict[tuple[str, str, bool], Decision | None] = {}
        self._fields: dict[tuple[str, str], set[str]] = {}

    @property
    def policy(self) -> Policy:
        """The policy checked (assigning one forgets what was memoised of the last)."""
        return self._policy

    @policy.setter
    def policy(self, policy: Policy) -> None:
        self._policy = policy
        self._static.clear()
        self._fields.clear()

    def needs_entity(self, action: str, collection: str) -> set[str]:
        """The entity fields a check of ``action`` on ``collection`` reads (empty: none)."""
        fields = self._fields.get((action, collection))
        if fields is None:
            fields = self._fields[action, collection] = self._policy.entity_fields(self.principal, action, collection)
        return fields

    def require_feed(self) -> None:
        """Raise ``PermissionDenied`` unless the principal may follow the change feed.

        A partition's change stream carries every collection's changes, so only a principal that may
        read every collection, unconditionally, may read it (its ACL holds the stream commands alone).
        """
        if self.policy.grants(self.principal).reads_everything and not self.reads_depend_on_entities():
            return
        raise PermissionDenied(
            f"{self.principal.name} may not follow the change feed: it carries every collection's changes, "
            "and the principal may not read them all",
            principal=self.principal.name,
            action="read",
            reason="change streams are shared by every collection of a partition",
        )

    def opens(self, action: str, collection: str) -> bool:
        """Whether the principal's server ACL lets ``action`` on ``collection`` through."""
        return self.policy.grants(self.principal).opens(action, collection)

    def cache_subscription(self, namespace: str, partitions: int, db: int) -> tuple[list[str], str] | None:
        """The keyspace channel patterns and probe key of the principal's local cache; None: no cache.

        Never ``CLIENT TRACKING`` broadcasts for a principal: their prefixes are not checked against the
        ACL and leak others' key names. No cache either when read rules look at entity fields: a hit
        would skip the check on the stored entity.
        """
        if self.reads_depend_on_entities():
            return None
        channels = keyspace_channels(namespace, partitions, self.principal, self.policy, db)
        return channels, probe_key(namespace, self.principal.name)

    def reads_depend_on_entities(self) -> bool:
        """Whether some rule about this principal's reads looks at entity fields (then a cached hit could
        skip a check that depends on the entity, so such a store reads through to the server)."""
        who = self.principal
        return any(
            r.entity_fields and (r.role == "*" or r.role in who.roles) and {"read", "admin", "*"} & set(r.actions)
            for r in self.policy.rules
        )

    def require(
        self,
        action: str,
        collection: str,
        entity_id: str | None = None,
        entity: Mapping[str, Any] | None = None,
        *,
        classified: bool = False,
        whole: bool = False,
    ) -> Decision:
        """The decision if it allows (or is pending on entity fields); else raise ``PermissionDenied``.

        ``whole``: the action spans the collection (listing ids, counting, querying), so a grant that
        depends on entity fields does not suffice.
        """
        memo = (action, collection, classified)
        decision = self._static.get(memo)
        if decision is None:
            decision = self._policy.decide(
                self.principal, action, collection, entity=entity, classified=classified, now=self.clock()
            )
            if memo not in self._static:
                timeless = all(
                    r.hours is None and not r.entity_fields
                    for r in self._policy.rules
                    if r.applies(self.principal, action, collection)
                )
                self._static[memo] = decision if timeless else None
        if decision.allowed or (decision.pending and not whole):
            return decision
        reason = decision.reason
        if decision.pending:
            reason = f"only some of its entities may be read ({reason}): read them by id"
        what = f"{collection} {entity_id!r}" if entity_id is not None else collection
        raise PermissionDenied(
            f"{self.principal.name} may not {action} {what}: {reason}",
            principal=self.principal.name,
            action=action,
            collection=collection,
            id=entity_id,
            rule=decision.rule,
            reason=reason,
        )
