"""Principals of a namespace as server ACL users: create, rotate, disable, list, and the stored policy.

Each principal is its own ACL user (``rx:<namespace>:<name>``) whose key patterns, channels and commands
come from the namespace's policy and the principal's roles (``rxstate.security.acl``): credentials of a
principal that may not read a collection cannot read it. The server keeps only its own hash of the
password (``ACL SETUSER ... >password``); rxstate stores the principal's kind, roles and attributes in
``rx:{ns}:_principal:<name>`` (readable by that principal alone) and the policy in ``rx:{ns}:_policy``.

Rotating or disabling a principal also closes its open connections (``CLIENT KILL USER``): an old
password stops working at once, not at the next reconnect.

Example:
    >>> admin = Principals(client, "crew", partitions=16)  # doctest: +SKIP
    >>> admin.set_policy(Policy([Rule("support", "allow", ["read"], ["tickets"])]))  # doctest: +SKIP
    >>> password = admin.create("ann", kind="user", roles=["support"], attributes={"region": "eu"})  # doctest: +SKIP
"""

from __future__ import annotations

import builtins
import json
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

from rxstate.core.errors import AlreadyExists, NotFound, PermissionDenied, ValidationError
from rxstate.core.scripts import is_cluster
from rxstate.security.acl import OPTIONAL_COMMANDS, acl_rules, username
from rxstate.security.guard import Guard
from rxstate.security.policy import Policy, Principal, validate_name

__all__ = ["PrincipalInfo", "Principals", "auth_options", "guard_for", "load_principal", "policy_key", "principal_key"]


def principal_key(namespace: str, name: str) -> str:
    return f"rx:{{{namespace}}}:_principal:{name}"


def policy_key(namespace: str) -> str:
    return f"rx:{{{namespace}}}:_policy"


def _index_key(namespace: str) -> str:
    return f"rx:{{{namespace}}}:_principals"


@dataclass(frozen=True)
class PrincipalInfo:
    """A principal as ``Principals.list`` reports it (never its password)."""

    principal: Principal
    username: str
    enabled: bool
    created_ms: int
    rotated_ms: int

    @property
    def name(self) -> str:
        return self.principal.name

    @property
    def roles(self) -> tuple[str, ...]:
        return self.principal.roles


def _decode(raw: Mapping[bytes, bytes], name: str) -> tuple[Principal, dict[str, Any]]:
    record = {k.decode(): v.decode() for k, v in raw.items()}
    principal = Principal(
        name,
        kind=record["kind"],
        roles=tuple(json.loads(record["roles"])),
        attributes=json.loads(record["attributes"]),
    )
    return principal, record


def load_principal(client: Any, namespace: str, name: str) -> tuple[Principal, Policy]:
    """The principal ``name`` and the namespace's policy, read with the principal's own connection.

    Raises:
        NotFound: no such principal in the namespace.
    """
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(principal_key(namespace, name))
    pipe.get(policy_key(namespace))
    raw, policy = pipe.execute()
    if not raw:
        raise NotFound(f"no principal {name!r} in namespace {namespace!r}", key=principal_key(namespace, name))
    return _decode(raw, name)[0], Policy.from_json(policy)


def auth_options(namespace: str, principal: str | None, password: str | None, target: Any) -> dict[str, Any]:
    """The ``username``/``password`` client options of every connection a principal's store makes.

    With a client of your own (``target``), ``principal=`` comes alone: the client must already be
    authenticated as the principal's ACL user (``check_client_user`` verifies it), and no option is added.

    Raises:
        ValidationError: a password without a principal, a URL (or the embedded server) without the
            password, or a password with a client (it carries its own).
    """
    if principal is None:
        raise ValidationError("password= needs principal=", field="principal")
    name = validate_name(principal, "principal")
    if target is not None and not isinstance(target, str):
        if password is not None:
            raise ValidationError(
                "principal= with password= authenticates the connections rxstate makes: pass a URL (or none, "
                "for the embedded server), not a client; with a client authenticated as the principal's ACL "
                f"user ({username(namespace, name)}), pass principal= alone",
                field="principal",
            )
        return {}
    if password is None:
        raise ValidationError("principal= and password= go together (or pass a client authenticated as it)")
    return {"username": username(namespace, name), "password": password}


def check_client_user(client: Any, namespace: str, principal: str) -> None:
    """Refuse a client that is not authenticated as ``principal``'s ACL user (``ACL WHOAMI``).

    Raises:
        PermissionDenied: it is another user (or the server will not say).
    """
    expected = username(namespace, principal)
    try:
        who = client.acl_whoami()
    except AuthenticationError as exc:
        raise PermissionDenied(
            f"principal {principal!r} of namespace {namespace!r} could not authenticate: {exc}",
            principal=principal,
            reason="authentication failed (wrong password, disabled, or no such principal)",
        ) from exc
    except ResponseError as exc:
        raise PermissionDenied(
            f"cannot tell which user the client is authenticated as ({exc}): for principal {principal!r} it "
            f"must be {expected!r}",
            principal=principal,
            reason="unknown user",
        ) from exc
    who = who.decode() if isinstance(who, bytes) else str(who)
    if who != expected:
        raise PermissionDenied(
            f"the client is authenticated as {who!r}, not as principal {principal!r}'s ACL user {expected!r}",
            principal=principal,
            reason="another user",
        )


def guard_for(client: Any, namespace: str, principal: str) -> Guard:
    """The policy check of a principal's store, read with its own (authenticated) connection.

    Raises:
        PermissionDenied: the principal could not authenticate (wrong password, disabled, unknown).
    """
    try:
        who, policy = load_principal(client, namespace, principal)
    except AuthenticationError as exc:
        raise PermissionDenied(
            f"principal {principal!r} of namespace {namespace!r} could not authenticate: {exc}",
            principal=principal,
            reason="authentication failed (wrong password, disabled, or no such principal)",
        ) from exc
    return Guard(who, policy)


class Principals:
    """Administers the principals of one namespace (needs a connection allowed to run ``ACL``).

    Args:
        client: a redis-py client of an administrator (the default user, or one with ``+acl``).
        namespace: the namespace.
        partitions: its partition count.
        db: the database the principals' stores use (keyspace channels name it).
    """

    def __init__(self, client: Any, namespace: str, *, partitions: int, db: int = 0) -> None:
        self.client = client
        self.namespace = namespace
        self.partitions = partitions
        self.db = db
        self.cluster = is_cluster(client)

    # -- policy ------------------------------------------------------------------------------------
    @property
    def policy(self) -> Policy:
        """The namespace's stored policy (empty: nothing is allowed)."""
        return Policy.from_json(self.client.get(policy_key(self.namespace)))

    def set_policy(self, policy: Policy) -> None:
        """Store ``policy`` and re-derive every principal's ACL from it."""
        if not isinstance(policy, Policy):
            raise ValidationError(f"set_policy takes an rxstate Policy, not {type(policy).__name__}")
        self._admin(lambda: self.client.set(policy_key(self.namespace), policy.to_json()))
        for info in self.list():
            self._apply(info.principal, policy, enabled=info.enabled)

    # -- principals --------------------------------------------------------------------------------
    def create(
        self,
        name: str,
        *,
        kind: str = "agent",
        roles: Sequence[str] = (),
        attributes: Mapping[str, Any] | None = None,
        password: str | None = None,
    ) -> str:
        """Create a principal and its ACL user; returns its password (generated unless given).

        Raises:
            AlreadyExists: the principal exists.
            ValidationError: a bad name, kind, role or attribute (nothing is created).
        """
        principal = Principal(
            validate_name(name, "principal"), kind=kind, roles=tuple(roles), attributes=dict(attributes or {})
        )
        try:
            attrs = json.dumps(dict(principal.attributes), sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"principal attributes must be JSON values: {exc}", field="attributes") from exc
        secret = password if password is not None else secrets.token_urlsafe(32)
        if not isinstance(secret, str) or len(secret) < 16 or any(c.isspace() for c in secret):
            raise ValidationError("a password is a string of at least 16 characters without spaces", field="password")
        key = principal_key(self.namespace, name)
        now = int(time.time() * 1000)
        record = {
            "kind": kind,
            "roles": json.dumps(list(principal.roles)),
            "attributes": attrs,
            "created_ms": now,
            "rotated_ms": now,
            "enabled": 1,
        }
        if not self._admin(lambda: self.client.hsetnx(key, "kind", kind)):
            raise AlreadyExists(f"principal {name!r} exists in namespace {self.namespace!r}", key=key)
        try:
            self._apply(principal, self.policy, enabled=True, password=secret)
        except BaseException:
            self.client.delete(key)
            raise
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(key, mapping=record)
        pipe.sadd(_index_key(self.namespace), name)
        pipe.execute()
        return secret

    def get(self, name: str) -> PrincipalInfo:
        """One principal (without its password).

        Raises:
            NotFound: no such principal.
        """
        raw = self._admin(lambda: self.client.hgetall(principal_key(self.namespace, name)))
        if not raw:
            raise NotFound(
                f"no principal {name!r} in namespace {self.namespace!r}", key=principal_key(self.namespace, name)
            )
        principal, record = _decode(raw, name)
        return PrincipalInfo(
            principal,
            username(self.namespace, name),
            record["enabled"] == "1",
            int(record["created_ms"]),
            int(record["rotated_ms"]),
        )

    def list(self) -> list[PrincipalInfo]:
        """Every principal of the namespace, by name, with roles and state."""
        names = sorted(m.decode() for m in self._admin(lambda: self.client.smembers(_index_key(self.namespace))))
        return [self.get(n) for n in names]

    def rotate(self, name: str, *, password: str | None = None) -> str:
        """Give a principal a new password (returned); the old one and its open connections stop working."""
        info = self.get(name)
        secret = password if password is not None else secrets.token_urlsafe(32)
        if len(secret) < 16 or any(c.isspace() for c in secret):
            raise ValidationError("a password is a string of at least 16 characters without spaces", field="password")
        self._apply(info.principal, self.policy, enabled=info.enabled, password=secret)
        self.client.hset(principal_key(self.namespace, name), "rotated_ms", int(time.time() * 1000))
        self._kill(name)
        return secret

    def disable(self, name: str) -> None:
        """Turn a principal off: it can no longer authenticate, and its open connections are closed."""
        info = self.get(name)
        self._apply(info.principal, self.policy, enabled=False)
        self.client.hset(principal_key(self.namespace, name), "enabled", 0)
        self._kill(name)

    def enable(self, name: str) -> None:
        """Turn a disabled principal back on (with the password it had)."""
        info = self.get(name)
        self._apply(info.principal, self.policy, enabled=True)
        self.client.hset(principal_key(self.namespace, name), "enabled", 1)

    def delete(self, name: str) -> None:
        """Remove a principal and its ACL user, closing its connections."""
        self.get(name)
        self._everywhere("ACL", "DELUSER", username(self.namespace, name))  # closes its connections
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(principal_key(self.namespace, name))
        pipe.srem(_index_key(self.namespace), name)
        pipe.execute()

    def acl(self, name: str) -> dict[str, str]:
        """The principal's ACL as the server holds it (``ACL GETUSER``): its ``commands``, ``keys`` and
        ``channels`` rules and ``flags``, for inspection."""
        fields = self._getuser(name)
        if fields is None:
            raise NotFound(f"no ACL user for principal {name!r}", key=username(self.namespace, name))
        out: dict[str, str] = {}
        for field in ("flags", "commands", "keys", "channels"):
            value = fields.get(field.encode(), fields.get(field, b""))
            if isinstance(value, list):
                value = b" ".join(value)
            out[field] = value.decode() if isinstance(value, bytes) else str(value)
        return out

    def _getuser(self, name: str) -> dict[Any, Any] | None:
        reply = self._admin(lambda: self.client.execute_command("ACL", "GETUSER", username(self.namespace, name)))
        if reply is None or isinstance(reply, dict):
            return reply
        return dict(zip(reply[::2], reply[1::2], strict=False))

    # -- server ------------------------------------------------------------------------------------
    def _apply(self, principal: Principal, policy: Policy, *, enabled: bool, password: str | None = None) -> None:
        rules = acl_rules(self.namespace, self.partitions, principal, policy, self.db)
        head = ["reset", "on" if enabled else "off"]
        if password is not None:
            head += ["resetpass", f">{password}"]
        else:
            head += self._password_hashes(principal.name)
        self._setuser(username(self.namespace, principal.name), head, rules)

    def _password_hashes(self, name: str) -> builtins.list[str]:
        """The user's current password hashes as ``#<hash>`` rules, so a ``reset`` keeps them."""
        fields = self._getuser(name) or {}
        hashes = fields.get(b"passwords", fields.get("passwords", []))
        return [f"#{h.decode() if isinstance(h, bytes) else h}" for h in hashes]

    def _setuser(self, user: str, head: builtins.list[str], rules: Iterable[str]) -> None:
        wanted = list(rules)
        while True:
            try:
                self._admin(partial(self._everywhere, "ACL", "SETUSER", user, *head, *wanted))
                return
            except ResponseError as exc:
                dropped = [r for r in wanted if r in OPTIONAL_COMMANDS and f"'{r}'" in str(exc)]
                if not dropped:
                    raise
                wanted = [r for r in wanted if r not in dropped]

    def _kill(self, name: str) -> None:
        self._everywhere("CLIENT", "KILL", "USER", username(self.namespace, name))

    def _everywhere(self, *args: Any) -> Any:
        """Run an ACL or client command on every node: each node of a cluster keeps its own ACL."""
        if self.cluster:
            return self.client.execute_command(*args, target_nodes=self.client.ALL_NODES)
        return self.client.execute_command(*args)

    def _admin(self, call: Any) -> Any:
        try:
            return call()
        except NoPermissionError as exc:
            raise PermissionDenied(
                f"administering principals of {self.namespace!r} needs an administrator's connection: {exc}",
                action="admin",
                reason=str(exc),
            ) from exc
