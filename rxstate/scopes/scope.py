"""A ``Scope``: one node of a hierarchy of settings (org -> team -> agent -> task), read through its chain.

``store.scope("org/acme/team-a/agent-7")`` is a handle; nothing is stored until a value is set.
``get(key)`` is the value of the nearest scope that sets the key (combined with what it inherits
when its entry merges or appends), read in one script call; ``set``/``unset``/``set_many`` change
this scope alone, atomically, and refuse (``FinalValueError``) to override a key an ancestor made
final. A scope may bind a model: its keys are then the model's fields, values are validated as the
field's type and ``resolve()`` returns the model. Reads are tracked like collection reads (a
``store.derived`` value that read a scope recomputes when any scope of its chain changes), and
``watch(key)`` emits the effective value whenever it changes, whichever scope of the chain changed it.

Example:
    >>> org = store.scope("org")
    >>> _ = org.set("model", "small")
    >>> agent = store.scope("org/acme/agent-7")
    >>> agent.get("model")
    'small'
    >>> _ = agent.set("model", "large")
    >>> str(agent.explain("model"))
    "model = 'large' from org/acme/agent-7; overriding org"
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import pydantic
import reactivex as rx
from reactivex import Observable, abc
from reactivex.disposable import Disposable

from rxstate.core import tracking
from rxstate.core.errors import (
    ConflictError,
    DelegationError,
    FinalValueError,
    PermissionDenied,
    ValidationError,
)
from rxstate.core.model import Model
from rxstate.core.versioned import Versioned
from rxstate.core.writes import WriteOp
from rxstate.feed.change import Change
from rxstate.feed.subscription import Subscription, shared_feed
from rxstate.scopes.access import Delegation, ScopeDecision, covers, decide, link_chain
from rxstate.scopes.merging import Entry, Explanation, explain_key, final_above, resolve_all
from rxstate.scopes.tree import LINKS, SCOPES, ChainRead, LinkRecord, ScopeRecord, ScopeTree, chain_of, validate_path
from rxstate.security.policy import Principal, Rule, validate_name

__all__ = ["Scope"]

_NOTHING: Any = object()


def _json_value(key: str, value: Any) -> Any:
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"scope value of {key!r} must be JSON (dicts, lists, str, numbers, bool, None): {exc}", field=key
        ) from exc


class Scope:
    """One scope of a store's hierarchy (see the module docstring); make it with ``store.scope(path)``."""

    def __init__(self, tree: ScopeTree, path: str, *, model: type[Model] | None = None) -> None:
        if model is not None and not (isinstance(model, type) and issubclass(model, pydantic.BaseModel)):
            raise ValidationError(f"a scope binds a pydantic model class, not {model!r}", field="model")
        self._tree = tree
        self.path = validate_path(path)
        """The scope's path (``org/acme/team-a``)."""
        self.model = model
        """The model its values validate against (None: any JSON value)."""
        self.root = self.path.split("/")[0]
        self._adapters: dict[str, pydantic.TypeAdapter[Any]] = {}

    def __repr__(self) -> str:
        return f"<Scope {self.path!r}{f' of {self.model.__name__}' if self.model else ''}>"

    @property
    def parent(self) -> Scope | None:
        """The scope above this one (None for a root)."""
        head, _, _ = self.path.rpartition("/")
        return Scope(self._tree, head, model=self.model) if head else None

    def child(self, name: str) -> Scope:
        """The scope ``name`` directly below this one (bound to the same model).

        Example:
            >>> store.scope("org").child("acme").path
            'org/acme'
        """
        return Scope(self._tree, f"{self.path}/{name}", model=self.model)

    # -- reading ------------------------------------------------------------------------------------
    def _read(self, action: str | None = "read", key: str = "*") -> ChainRead:
        chain = self._tree.read_chain(self.path)
        for p in chain_of(self.path):
            tracking.track(SCOPES, p)
        if action is not None:
            self._require(action, key, chain)
        return chain

    def get(self, key: str, default: Any = None) -> Any:
        """The effective value of ``key``: that of the nearest scope setting it (merged, for entries that
        merge or append), else the bound model's default, else ``default``.

        Example:
            >>> store.scope("org/x").get("missing", 0)
            0
        """
        self._check_key(key)
        return self._value(self._read("read", key), key, default)

    def _value(self, chain: ChainRead, key: str, default: Any) -> Any:
        found = explain_key(chain.entries, key)
        if found.found:
            return found.value
        field = self.model.model_fields.get(key) if self.model is not None else None
        if field is not None and not field.is_required():
            return field.get_default(call_default_factory=True)
        return default

    def resolve(self) -> Any:
        """The merged view: every key set on the chain, with its effective value (keys the principal may
        not read are left out); with a bound model, that model (validated, its defaults filled in).

        Raises:
            ValidationError: the merged values do not make a valid model.

        Example:
            >>> _ = store.scope("org").set("region", "eu")
            >>> store.scope("org/acme").resolve()["region"]
            'eu'
        """
        chain = self._read(None)  # each key is checked on its own below
        merged = resolve_all(chain.entries)
        who = self._principal()
        if who is not None:
            merged = {k: v for k, v in merged.items() if self._decide(who, "read", k, chain).allowed}
        if self.model is None:
            return merged
        try:
            return self.model.model_validate({k: v for k, v in merged.items() if k in self.model.model_fields})
        except pydantic.ValidationError as exc:
            raise ValidationError(
                f"scope {self.path!r}: merged values are not a valid {self.model.__name__}: {exc}",
                field=self.model.__name__,
            ) from exc

    def explain(self, key: str) -> Explanation:
        """Which scope supplies ``key`` and which scopes it overrides (or merges onto).

        Example:
            >>> store.scope("org/nowhere").explain("missing").found
            False
        """
        self._check_key(key)
        return explain_key(self._read("read", key).entries, key)

    def entries(self) -> dict[str, Entry]:
        """The entries this scope itself sets (what it inherits aside)."""
        return dict(self._read().own)

    # -- writing ------------------------------------------------------------------------------------
    def set(self, key: str, value: Any, *, final: bool = False, merge: str = "replace") -> int:
        """Set ``key`` on this scope; the scope's new version.

        Args:
            key: the key (a field of the bound model, if any).
            value: a JSON value (validated as the model's field type, if bound).
            final: scopes below may not override it (their attempts raise ``FinalValueError``; values they
                set before are shadowed).
            merge: how it combines with the inherited value: ``"replace"``, ``"merge"`` (deep merge of
                dicts) or ``"append"`` (the inherited list, then this one).

        Raises:
            FinalValueError: an ancestor holds ``key`` as final; nothing was written.
            ValidationError: the value (or the value it would make effective) is invalid.
            PermissionDenied: the store's principal may not write ``key`` here.

        Example:
            >>> store.scope("org").set("retries", 3, final=True)
            1
        """
        return self.set_many({key: value}, final=final, merge=merge)

    def set_many(self, values: Mapping[str, Any], *, final: bool = False, merge: str = "replace") -> int:
        """Set several keys in one atomic write (defaults at a root, say); the scope's new version.

        Example:
            >>> store.scope("org").set_many({"a": 1, "b": 2})
            1
        """
        if not isinstance(values, Mapping) or not values:
            raise ValidationError("set_many needs a non-empty mapping of keys to values", field="values")
        entries = {k: Entry(_json_value(k, v), merge, final) for k, v in values.items() if self._check_key(k)}

        held: list[tuple[str, int]] = []

        def change(chain: ChainRead) -> ScopeRecord:
            held.clear()
            for key in entries:
                self._require("write", key, chain, held)
                above = final_above(chain.entries, key)
                if above is not None:
                    raise FinalValueError(
                        f"scope {self.path!r} cannot override {key!r}: {above!r} set it final",
                        key=key,
                        scope=self.path,
                        final_at=above,
                    )
            own = {**chain.own, **{k: self._validated(chain, k, e) for k, e in entries.items()}}
            return self._record(chain, own)

        result = self._tree.write(self.path, change, links=held)
        assert result is not None
        return result.version

    def unset(self, key: str) -> bool:
        """Remove this scope's own value of ``key``, exposing the inherited one again; whether it had one.

        Example:
            >>> store.scope("org/acme").unset("never-set")
            False
        """
        self._check_key(key)
        removed = []
        held: list[tuple[str, int]] = []

        def change(chain: ChainRead) -> ScopeRecord | None:
            held.clear()
            self._require("write", key, chain, held)
            if key not in chain.own:
                return None
            removed.append(key)
            return self._record(chain, {k: e for k, e in chain.own.items() if k != key})

        self._tree.write(self.path, change, links=held)
        return bool(removed)

    def _record(
        self, chain: ChainRead, own: Mapping[str, Entry], rules: Sequence[dict[str, Any]] | None = None
    ) -> ScopeRecord:
        return ScopeRecord(
            root=self.root,
            values={k: e.to_json() for k, e in own.items()},
            rules=list(chain.rules[-1][1] if rules is None else rules),
        )

    def _check_key(self, key: object) -> bool:
        if not isinstance(key, str) or not key or len(key) > 256:
            raise ValidationError(
                f"a scope key is a non-empty string of at most 256 characters, not {key!r}", field="key"
            )
        if self.model is not None and key not in self.model.model_fields:
            raise ValidationError(f"{self.model.__name__} has no field {key!r} (scope {self.path!r})", field=key)
        return True

    def _validated(self, chain: ChainRead, key: str, entry: Entry) -> Entry:
        """``entry`` with its value validated: as the model's field, the value it would make effective too."""
        if self.model is None:
            return entry
        adapter = self._adapters.get(key)
        if adapter is None:
            info = self.model.model_fields[key]
            annotated: Any = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
            adapter = self._adapters[key] = pydantic.TypeAdapter(annotated)
        after = [*chain.entries[:-1], (self.path, {**chain.own, key: entry})]
        try:
            if entry.merge == "replace":
                value = adapter.dump_python(adapter.validate_python(entry.value), mode="json")
                return Entry(value, entry.merge, entry.final)
            adapter.validate_python(explain_key(after, key).value)
        except pydantic.ValidationError as exc:
            raise ValidationError(
                f"scope {self.path!r}: {key}={entry.value!r} is not a valid {self.model.__name__}.{key}: {exc}",
                field=key,
            ) from exc
        return entry

    # -- access: rules flowing down, delegation -----------------------------------------------------
    def allow(
        self,
        role: str,
        actions: Sequence[str],
        keys: Sequence[str] = ("*",),
        *,
        when: Sequence[str] = (),
        name: str = "",
    ) -> Rule:
        """Attach a rule allowing ``role`` the ``actions`` (read, write, admin) on ``keys`` here and below.

        Example:
            >>> store.scope("org").allow("viewer", ["read"]).name
            'viewer-allow-read-*'
        """
        return self._add_rule(Rule(role, "allow", actions, keys, when=when, name=name))

    def deny(
        self,
        role: str,
        actions: Sequence[str],
        keys: Sequence[str] = ("*",),
        *,
        when: Sequence[str] = (),
        name: str = "",
    ) -> Rule:
        """Attach a rule denying ``role`` the ``actions`` on ``keys`` here and below: a deny wins over every allow.

        Example:
            >>> store.scope("org").deny("contractor", ["read"], ["salary"]).effect
            'deny'
        """
        return self._add_rule(Rule(role, "deny", actions, keys, when=when, name=name))

    def _add_rule(self, rule: Rule) -> Rule:
        def change(chain: ChainRead) -> ScopeRecord:
            self._require("admin", "*", chain)
            mine = list(chain.rules[-1][1])
            if any((r.get("name") or Rule(**r).name) == rule.name for r in mine):
                raise ValidationError(f"scope {self.path!r} already has a rule named {rule.name!r}", field="name")
            return self._record(chain, chain.own, [*mine, rule.to_json()])

        self._tree.write(self.path, change)
        return rule

    def remove_rule(self, name: str) -> bool:
        """Remove this scope's rule ``name``; whether it had one. Takes effect at the next check of any process.

        Example:
            >>> store.scope("org").remove_rule("no-such-rule")
            False
        """
        removed = []

        def change(chain: ChainRead) -> ScopeRecord | None:
            self._require("admin", "*", chain)
            mine = list(chain.rules[-1][1])
            kept = [r for r in mine if (r.get("name") or Rule(**r).name) != name]
            if len(kept) == len(mine):
                return None
            removed.append(name)
            return self._record(chain, chain.own, kept)

        self._tree.write(self.path, change)
        return bool(removed)

    def rules(self) -> list[Rule]:
        """This scope's own rules (those of its ancestors apply too)."""
        return [Rule(**r) for r in self._tree.read_chain(self.path).rules[-1][1]]

    def decide(self, principal: Principal, action: str, key: str = "*") -> ScopeDecision:
        """Whether ``principal`` may ``action`` the ``key`` here, by the chain's rules and its delegations.

        Example:
            >>> from rxstate.security.policy import Principal
            >>> store.scope("org/acme").decide(Principal("bob"), "read", "x").allowed
            False
        """
        return self._decide(principal, action, key, self._tree.read_chain(self.path))

    def _principal(self) -> Principal | None:
        guard = self._tree.store.guard
        return None if guard is None else guard.principal

    def _decide(
        self, who: Principal, action: str, key: str, chain: ChainRead, scope: str | None = None
    ) -> ScopeDecision:
        scope = scope or self.path
        decision = decide(who, action, key, scope, chain.rules)
        if decision.allowed or decision.rule is not None or action not in ("read", "write"):
            return decision
        for link in self._held(who.name):
            if not covers(link.value, scope, key):
                continue
            links, why = link_chain(self._get_link, link.id, self._tree.max_delegation_depth)
            if why is None:
                ids = tuple(x.id for x in links)
                return ScopeDecision(
                    True,
                    None,
                    f"allowed by delegation {' <- '.join(ids)} (from {links[-1].value.grantor})",
                    scope=scope,
                    key=key,
                    path=decision.path,
                    links=ids,
                    link_versions=tuple(x.version for x in links),
                )
        return decision

    def _held(self, grantee: str) -> list[Versioned[LinkRecord]]:
        links = self._tree.links.where(grantee=grantee).versioned()
        return [x for x in links if x.value.root == self.root]

    def _get_link(self, link_id: str) -> Versioned[LinkRecord]:
        return self._tree.links.get_versioned(link_id, partition=self.root, consistent=True)

    def _require(self, action: str, key: str, chain: ChainRead, held: list[tuple[str, int]] | None = None) -> None:
        """Raise ``PermissionDenied`` unless the store's principal may; the links that allowed it go to
        ``held`` (a write checks their versions with the write, so a revocation meanwhile refuses it)."""
        who = self._principal()
        if who is None:
            return
        decision = self._decide(who, action, key, chain)
        if held is not None:
            held += zip(decision.links, decision.link_versions, strict=True)
        if not decision.allowed:
            raise PermissionDenied(
                f"{who.name} may not {action} {key!r} of scope {self.path!r}: {decision.reason}",
                principal=who.name,
                action=action,
                collection=SCOPES,
                id=self.path,
                rule=decision.rule,
                reason=decision.reason,
            )

    def delegate(self, to: str, keys: Sequence[str] = ("*",), *, ttl: float, scope: str | None = None) -> Delegation:
        """Hand authority (read and write) over ``keys`` of this scope (or of ``scope``, below it) to the
        principal ``to`` for ``ttl`` seconds; the link, one audited write (a real server).

        The store's principal must hold that authority itself: by the rules (a link of depth 1) or through
        a link it holds (one deeper, at most ``max_delegation_depth``). Revoking a link revokes every link
        made through it.

        Raises:
            DelegationError: the principal does not hold the authority, or the chain would be too deep.

        Example:
            >>> link = store.scope("org/acme").delegate("contractor-1", ["budget"], ttl=3600)  # doctest: +SKIP
        """
        target = validate_path(scope) if scope is not None else self.path
        if target != self.path and not target.startswith(self.path + "/"):
            raise ValidationError(f"scope {target!r} is not {self.path!r} or below it", field="scope")
        validate_name(to, "principal")
        if isinstance(keys, str) or not keys:
            raise ValidationError("keys is a non-empty list of keys (['*']: every key)", field="keys")
        for k in keys:
            if k != "*":
                self._check_key(k)
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0:
            raise ValidationError(f"ttl must be a positive number of seconds, not {ttl!r}", field="ttl")
        tree = self._tree
        part = tree.store.keyspace.partition_of(self.root)
        for _attempt in range(20):
            who = self._principal()
            grantor, parent, depth = (who.name if who else tree.store.actor), None, 1
            chain_links: list[tuple[str, int]] = []  # the links the grantor holds it through, checked with the write
            if who is not None:
                chain = tree.read_chain(target)
                held = {self._decide(who, "write", k, chain, target) for k in keys}
                refused = [d for d in held if not d.allowed]
                if refused:
                    raise DelegationError(
                        f"{who.name} cannot delegate {list(keys)} of {target!r}: {refused[0].reason}",
                        principal=who.name,
                        reason=refused[0].reason,
                    )
                through = {d.links[0] for d in held if d.links}
                if len(through) > 1 or (through and any(not d.links for d in held)):
                    raise DelegationError(
                        f"{who.name} holds {list(keys)} of {target!r} through different grants: delegate them apart",
                        principal=who.name,
                        reason="mixed grants",
                    )
                if through:
                    via = next(d for d in held if d.links)
                    chain_links = list(zip(via.links, via.link_versions, strict=True))
                    parent = self._get_link(through.pop())
                    depth = parent.value.depth + 1
            limit = tree.max_delegation_depth
            if depth > limit:
                raise DelegationError(
                    f"{grantor} cannot delegate through {parent.id if parent else ''}: the chain would be {depth} "
                    f"links deep, the limit is {limit}",
                    principal=grantor,
                    link=parent.id if parent else None,
                    depth=depth,
                    limit=limit,
                    reason="too deep",
                )
            link_id = secrets.token_hex(8)
            record = LinkRecord(
                root=self.root,
                scope=target,
                keys=list(keys),
                grantor=grantor,
                grantee=to,
                parent=parent.id if parent else "",
                depth=depth,
                expires_ms=int((time.time() + ttl) * 1000),
            )
            ops = [WriteOp("check", LINKS, i, part, expected=v) for i, v in chain_links]
            ops.append(tree.links.put_op(link_id, record, kind="create", ttl=ttl))
            try:
                result = tree.write_link(ops, grantor)
            except ConflictError:
                continue  # a link it is made through changed (revoked) meanwhile: judge again
            return Delegation.of(
                Versioned(
                    id=link_id,
                    value=record,
                    version=result.version,
                    schema_version=1,
                    timestamp_ms=result.timestamp_ms,
                    actor=grantor,
                    offset=result.offset,
                )
            )
        raise ConflictError(f"the delegation link of {target!r} kept changing", key=target)

    def revoke(self, link: str | Delegation) -> Delegation:
        """Revoke a delegation link of this scope's tree (and with it every link made through it); the link.

        Its grantor may revoke it, and so may whoever made a link it was made through, or holds ``admin``
        at its scope.

        Raises:
            NotFound: no such link (or it has expired).
            DelegationError: the principal may not revoke it.
        """
        link_id = link.id if isinstance(link, Delegation) else link
        stored = self._get_link(link_id)
        who = self._principal()
        name = who.name if who else self._tree.store.actor
        if who is not None:
            above, _why = link_chain(self._get_link, link_id, self._tree.max_delegation_depth + 1)
            grantors = {x.value.grantor for x in above} | {stored.value.grantor}
            admin = decide(who, "admin", "*", stored.value.scope, self._tree.read_chain(stored.value.scope).rules)
            if who.name not in grantors and not admin.allowed:
                raise DelegationError(
                    f"{who.name} may not revoke link {link_id}: neither its grantor, nor above it, nor admin of "
                    f"{stored.value.scope!r}",
                    principal=who.name,
                    link=link_id,
                    reason="not the grantor",
                )
        op = self._tree.links.update_op(link_id, expected_version=stored.version, partition=self.root, revoked=True)
        result = self._tree.write_link([op], name)
        return Delegation.of(
            Versioned(
                id=link_id,
                value=stored.value.model_copy(update={"revoked": True}),
                version=result.version,
                schema_version=1,
                timestamp_ms=result.timestamp_ms,
                actor=name,
                offset=result.offset,
            )
        )

    def delegations(self) -> list[Delegation]:
        """The delegation links of this scope's tree that cover this scope or scopes below it."""
        out = []
        for stored in self._tree.links.all_versioned():
            r = stored.value
            if r.root == self.root and (
                r.scope == self.path or r.scope.startswith(self.path + "/") or self.path.startswith(r.scope + "/")
            ):
                out.append(Delegation.of(stored))
        return sorted(out, key=lambda d: (d.depth, d.id))

    # -- reactive -----------------------------------------------------------------------------------
    def watch(self, key: str, default: Any = None) -> Observable[Any]:
        """An ``Observable`` of the effective value of ``key``: the current one first, then each new one,
        whichever scope of the chain changed it (an ancestor's change, an override removed).

        Example:
            >>> values = []
            >>> sub = store.scope("org/acme").watch("region").subscribe(values.append)  # doctest: +SKIP
        """
        self._check_key(key)
        ids = frozenset(chain_of(self.path))
        store = self._tree.store

        def subscribe(observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None) -> Disposable:
            self._require("read", key, self._tree.read_chain(self.path))
            feed = shared_feed(store)
            lock = threading.Lock()
            last = [_NOTHING]

            def emit(_batch: object = None) -> None:
                with lock:
                    value = self._value(self._tree.read_chain(self.path), key, default)
                    if last[0] is _NOTHING or value != last[0]:
                        last[0] = value
                        observer.on_next(value)

            def test(change: Change) -> bool:
                return change.collection == SCOPES and change.id in ids

            sub = Subscription(
                feed,
                rx.Observer(emit, observer.on_error),
                test=test,
                keep=None,
                batched=True,
                max_buffer=1000,
                overflow="coalesce",
                schedule=None,
            )
            feed.attach(sub.box)  # follow the feed before the first read, so no change after it is missed
            emit()
            return Disposable(lambda: feed.detach(sub.box))

        return rx.create(subscribe)
