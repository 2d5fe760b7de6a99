"""Who may do what: roles (RBAC) granting actions on collections, narrowed by attribute conditions (ABAC).

A ``Policy`` is an ordered list of ``Rule`` s. A rule names the roles it applies to, its effect (``allow``
or ``deny``), the actions (``read``, ``write``, ``delete``, ``admin``; ``admin`` implies the other three)
and the collections it covers (``"*"``: every collection), and may carry conditions:

- ``when``: expressions ``<ref> <op> <ref or JSON literal>`` over ``principal.<attribute>`` (also
  ``principal.name``, ``principal.kind``), ``entity.<field>``, ``action`` and ``collection``; ``op`` is one
  of ``== != < <= > >= in not_in``;
- ``hours``: a daily window ``"08:00-18:00"`` in ``tz`` (an IANA zone, default UTC);
- ``classified``: only collections whose model holds classified (``Secret``) fields (True), or only those
  without (False).

Nothing is allowed unless a rule allows it, and an explicit deny wins over every allow. ``decide``
returns a ``Decision`` naming the rule that decided and why; ``rxstate.security.guard.Guard`` raises
``PermissionDenied`` for a store acting as a principal.

Example:
    >>> policy = Policy([
    ...     Rule("support", "allow", ["read"], ["tickets"], when=["entity.region == principal.region"],
    ...          hours="08:00-18:00", name="support-own-region"),
    ... ])
    >>> who = Principal("ann", roles=("support",), attributes={"region": "eu"})
    >>> at = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
    >>> policy.decide(who, "read", "tickets", entity={"region": "eu"}, now=at).allowed
    True
    >>> policy.decide(who, "read", "tickets", entity={"region": "us"}, now=at).reason
    "no rule allows read on tickets (support-own-region: entity.region == principal.region is false: 'us' vs 'eu')"
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timezone
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rxstate.core.errors import ValidationError

__all__ = ["ACTIONS", "Decision", "Grants", "Policy", "Principal", "Rule"]

Action = Literal["read", "write", "delete", "admin"]
ACTIONS: tuple[str, ...] = ("read", "write", "delete", "admin")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_\-]{0,63}")
_REF = re.compile(r"(principal|entity)\.[A-Za-z_][A-Za-z0-9_]*|action|collection")
_EXPR = re.compile(r"\s*(\S+)\s+(==|!=|<=|>=|<|>|in|not_in)\s+(.+?)\s*")
_HOURS = re.compile(r"(\d\d):(\d\d)-(\d\d):(\d\d)")
_UNKNOWN: Any = object()


def validate_name(name: str, what: str) -> str:
    """``name`` if it is a valid principal or role name (a letter, then letters, digits, ``_``, ``-``)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValidationError(
            f"invalid {what} name {name!r}: start with a letter, then up to 63 letters, digits, '_' or '-'", field=what
        )
    return name


@dataclass(frozen=True)
class Principal:
    """Someone acting on the store: an agent, a user or a service, with roles and attributes.

    Example:
        >>> Principal("planner", kind="agent", roles=("planner",)).roles
        ('planner',)
    """

    name: str
    kind: str = "agent"
    roles: tuple[str, ...] = ()
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_name(self.name, "principal")
        if self.kind not in ("agent", "user", "service"):
            raise ValidationError(f"principal kind must be agent, user or service, not {self.kind!r}", field="kind")
        object.__setattr__(self, "roles", tuple(validate_name(r, "role") for r in self.roles))

    def attribute(self, name: str) -> Any:
        if name in ("name", "kind"):
            return getattr(self, name)
        if name == "roles":
            return list(self.roles)
        return self.attributes.get(name, _UNKNOWN)


@dataclass(frozen=True)
class _Condition:
    text: str
    left: str
    op: str
    right: Any  # a reference (str matching _REF) when right_is_ref, else a literal
    right_is_ref: bool

    @classmethod
    def parse(cls, text: str) -> _Condition:
        match = _EXPR.fullmatch(text) if isinstance(text, str) else None
        if match is None or not _REF.fullmatch(match.group(1)):
            raise ValidationError(
                f"invalid condition {text!r}: write '<ref> <op> <ref or JSON value>', ref one of principal.<attr>, "
                "entity.<field>, action, collection; op one of == != < <= > >= in not_in",
                field="when",
            )
        left, op, raw = match.groups()
        if _REF.fullmatch(raw):
            return cls(text, left, op, raw, True)
        try:
            return cls(text, left, op, json.loads(raw), False)
        except json.JSONDecodeError as exc:
            raise ValidationError(
                f"invalid condition {text!r}: {raw!r} is neither a ref nor JSON", field="when"
            ) from exc

    @property
    def entity_fields(self) -> set[str]:
        refs = [self.left, self.right] if self.right_is_ref else [self.left]
        return {r.split(".", 1)[1] for r in refs if r.startswith("entity.")}


@dataclass(frozen=True)
class Rule:
    """One grant or denial (see the module docstring).

    Example:
        >>> Rule("viewer", "allow", ["read"], ["*"]).name
        'viewer-allow-read-*'
    """

    role: str
    effect: Literal["allow", "deny"]
    actions: Sequence[str]
    collections: Sequence[str]
    when: Sequence[str] = ()
    hours: str | None = None
    tz: str = "UTC"
    classified: bool | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if self.role != "*":
            validate_name(self.role, "role")
        if self.effect not in ("allow", "deny"):
            raise ValidationError(f"a rule's effect is allow or deny, not {self.effect!r}", field="effect")
        bad = [a for a in self.actions if a not in (*ACTIONS, "*")]
        if bad or not self.actions:
            raise ValidationError(f"rule actions must be among {ACTIONS} or '*', not {list(self.actions)}")
        if not self.collections:
            raise ValidationError("a rule names at least one collection (or '*')", field="collections")
        object.__setattr__(self, "actions", tuple(self.actions))
        object.__setattr__(self, "collections", tuple(self.collections))
        object.__setattr__(self, "when", tuple(self.when))
        object.__setattr__(self, "_conditions", tuple(_Condition.parse(w) for w in self.when))
        object.__setattr__(self, "_window", _window(self.hours, self.tz))
        if not self.name:
            object.__setattr__(
                self, "name", f"{self.role}-{self.effect}-{'+'.join(self.actions)}-{'+'.join(self.collections)}"
            )

    @property
    def conditions(self) -> tuple[_Condition, ...]:
        return self.__dict__["_conditions"]  # type: ignore[no-any-return]

    @property
    def conditional(self) -> bool:
        """Whether the rule has conditions a key pattern cannot express (so only the client enforces them)."""
        return bool(self.when) or self.hours is not None or self.classified is not None

    @property
    def entity_fields(self) -> set[str]:
        """The entity fields the rule's conditions read."""
        return set().union(*(c.entity_fields for c in self.conditions))

    def applies(self, principal: Principal, action: str, collection: str) -> bool:
        """Whether the rule speaks of this principal, action and collection (conditions aside)."""
        acts = self.actions
        return (
            (self.role == "*" or self.role in principal.roles)
            and ("*" in acts or action in acts or ("admin" in acts and action in ACTIONS))
            and ("*" in self.collections or collection in self.collections)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "effect": self.effect,
            "actions": list(self.actions),
            "collections": list(self.collections),
            "when": list(self.when),
            "hours": self.hours,
            "tz": self.tz,
            "classified": self.classified,
            "name": self.name,
        }


def _window(hours: str | None, tz: str) -> tuple[time, time, ZoneInfo | timezone] | None:
    try:
        zone: ZoneInfo | timezone = UTC if tz == "UTC" else ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(f"unknown time zone {tz!r}", field="tz") from exc
    if hours is None:
        return None
    match = _HOURS.fullmatch(hours) if isinstance(hours, str) else None
    if match is None:
        raise ValidationError(f"hours must look like '08:00-18:00', not {hours!r}", field="hours")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59:
        raise ValidationError(f"hours {hours!r} are not times of day", field="hours")
    return time(h1, m1), (time(23, 59, 59, 999999) if h2 == 24 else time(h2, m2)), zone


def _compare(op: str, left: Any, right: Any) -> bool:
    try:
        if op == "==":
            return bool(left == right)
        if op == "!=":
            return bool(left != right)
        if op == "in":
            return bool(left in right)
        if op == "not_in":
            return bool(left not in right)
        return bool({"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op])
    except TypeError:
        return False  # values of kinds that do not compare satisfy no ordering condition


@dataclass(frozen=True)
class Decision:
    """The outcome of a policy check: allowed or not, the deciding rule and why.

    Attributes:
        allowed: whether the action may go ahead.
        rule: the name of the deciding rule (None: nothing allowed it, deny by default).
        reason: a sentence saying why.
        enforced_by: who holds the line: ``"server and client"`` when the server's ACL enforces it too (a
            denial of a collection the principal's ACL does not open; an allow without conditions, whose
            limits are the ACL's), else ``"client"`` (conditions on attributes, entities or time, and
            denials carved out of a wider grant: key patterns cannot express them).
        pending: entity fields the decision still needs (an allow that depends on them).
    """

    allowed: bool
    rule: str | None
    reason: str
    enforced_by: str = "client"
    pending: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Grants:
    """The collections a principal's server ACL opens (``"*"``: every collection)."""

    read: frozenset[str]
    write: frozenset[str]

    @property
    def reads_everything(self) -> bool:
        return "*" in self.read or "*" in self.write

    def opens(self, action: str, collection: str) -> bool:
        """Whether the ACL lets ``action`` on ``collection`` through (the client may still refuse it)."""
        names = self.read if action == "read" else self.write
        return "*" in names or collection in names


_WRITE_ACTIONS = ("write", "delete", "admin")


class Policy:
    """An ordered list of rules; deny by default, explicit deny wins (see the module docstring)."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        names = [r.name for r in self.rules]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValidationError(f"rule names must be unique; repeated: {dup}", field="name")

    def __repr__(self) -> str:
        return f"<Policy {len(self.rules)} rules>"

    def to_json(self) -> str:
        return json.dumps([r.to_json() for r in self.rules], sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes | None) -> Policy:
        """The policy stored as ``to_json`` text (None: the empty policy, which allows nothing)."""
        if text is None:
            return cls()
        return cls(Rule(**entry) for entry in json.loads(text))

    def grants(self, principal: Principal) -> Grants:
        """The collections the server lets ``principal`` read and write: those an allow rule names.

        Conditions (attributes, entity fields, hours) cannot be key patterns, so a conditional allow opens
        its collections on the server and the client checks the conditions; an unconditional deny of a
        named collection closes it (one of ``"*"`` is enforced by the client alone). Writes and deletes
        touch the same keys, so only a denial of both closes a collection to writes.
        """
        read: set[str] = set()
        write: set[str] = set()
        closed_read: set[str] = set()
        closed_write: set[str] = set()
        for rule in self.rules:
            if rule.role != "*" and rule.role not in principal.roles:
                continue
            acts = set(rule.actions)
            every = "*" in acts or "admin" in acts
            if rule.effect == "allow":
                if every or "read" in acts:
                    read.update(rule.collections)
                if every or acts.intersection(_WRITE_ACTIONS):
                    write.update(rule.collections)
            elif not rule.conditional:
                named = {c for c in rule.collections if c != "*"}
                if every or "read" in acts:
                    closed_read |= named
                if every or {"write", "delete"} <= acts:
                    closed_write |= named
        write -= closed_write
        return Grants(read=frozenset((read | write) - closed_read), write=frozenset(write))

    def entity_fields(self, principal: Principal, action: str, collection: str) -> set[str]:
        """The entity fields that rules about this principal, action and collection read."""
        rules = (r for r in self.rules if r.applies(principal, action, collection))
        return set().union(*(r.entity_fields for r in rules))

    def decide(
        self,
        principal: Principal,
        action: str,
        collection: str,
        *,
        entity: Mapping[str, Any] | None = None,
        classified: bool = False,
        now: datetime | None = None,
    ) -> Decision:
        """Whether ``principal`` may do ``action`` on ``collection`` (on ``entity``, given its fields).

        Without ``entity``, a rule that reads entity fields cannot decide: an allow that depends on them
        leaves the decision ``pending`` (allowed once the fields are known), a deny that does is skipped.
        """
        if action not in ACTIONS:
            raise ValidationError(f"action must be one of {ACTIONS}, not {action!r}", field="action")
        now = now if now is not None else datetime.now(UTC)
        allow: Decision | None = None
        pending: set[str] = set()
        misses: list[str] = []
        for rule in self.rules:
            if not rule.applies(principal, action, collection):
                continue
            holds, why = self._holds(rule, principal, action, collection, entity, classified, now)
            if holds is None:  # needs entity fields we do not have
                if rule.effect == "allow":
                    pending |= rule.entity_fields
                continue
            if not holds:
                misses.append(f"{rule.name}: {why}")
                continue
            if rule.effect == "deny":
                return Decision(
                    False, rule.name, f"denied by {rule.name}{why}", self._denial(principal, action, collection)
                )
            if allow is None:
                allow = Decision(
                    True, rule.name, f"allowed by {rule.name}{why}", _BOTH if not rule.conditional else _CLIENT
                )
        if allow is not None:
            return allow
        if pending:
            fields = frozenset(pending)
            return Decision(False, None, f"needs entity fields {sorted(fields)} to decide", pending=fields)
        detail = f" ({'; '.join(misses)})" if misses else ""
        reason = f"no rule allows {action} on {collection}{detail}"
        return Decision(False, None, reason, self._denial(principal, action, collection))

    def _denial(self, principal: Principal, action: str, collection: str) -> str:
        """Who enforces a denial: the server too when the principal's ACL does not open the collection."""
        return _CLIENT if self.grants(principal).opens(action, collection) else _BOTH

    @staticmethod
    def _holds(
        rule: Rule,
        principal: Principal,
        action: str,
        collection: str,
        entity: Mapping[str, Any] | None,
        classified: bool,
        now: datetime,
    ) -> tuple[bool | None, str]:
        if rule.classified is not None and rule.classified != classified:
            return False, f"the collection is {'' if classified else 'not '}classified"
        window = rule.__dict__["_window"]
        if window is not None:
            start, end, zone = window
            local = now.astimezone(zone).time()
            inside = start <= local < end if start <= end else (local >= start or local < end)
            if not inside:
                return False, f"outside {rule.hours} {rule.tz} (now {local.strftime('%H:%M')})"
        shown: list[str] = []
        for cond in rule.conditions:
            left = _resolve(cond.left, principal, action, collection, entity)
            right = _resolve(cond.right, principal, action, collection, entity) if cond.right_is_ref else cond.right
            if left is _MISSING_ENTITY or right is _MISSING_ENTITY:
                return None, "needs entity fields"
            if left is _UNKNOWN or right is _UNKNOWN:
                return False, f"{cond.text} cannot be evaluated (unknown attribute or field)"
            if not _compare(cond.op, left, right):
                return False, f"{cond.text} is false: {left!r} vs {right!r}"
            shown.append(cond.text)
        parts = [*shown, *([f"within {rule.hours} {rule.tz}"] if window is not None else [])]
        return True, (f" ({', '.join(parts)})" if parts else "")


_MISSING_ENTITY: Any = object()
_BOTH, _CLIENT = "server and client", "client"


def _resolve(ref: str, principal: Principal, action: str, collection: str, entity: Mapping[str, Any] | None) -> Any:
    if ref == "action":
        return action
    if ref == "collection":
        return collection
    scope, name = ref.split(".", 1)
    if scope == "principal":
        return principal.attribute(name)
    if entity is None:
        return _MISSING_ENTITY
    return entity.get(name, _UNKNOWN)
