"""The schema registry's compatibility rules: a model that would break readers or writers refuses to register.

The store registers each collection's model name, version, indexes and fields when it opens it
(``rx:{ns}:schemas``). ``SchemaRegistry`` keeps, beside that, every registered version's JSON schema
(pydantic's, in ``rx:{ns}:_schemadefs``) and a compatibility rule per collection, and checks a new model
against the latest registered one before it is accepted:

- ``backward``: the new model reads data written by the old one: every field it requires existed in
  the old model, every field both have keeps its JSON type, unless the new version has upcasters from
  the old version (they turn old data into new, which is what they are for);
- ``forward``: the old model reads data written by the new one: no field the old model requires is
  removed, types of shared fields unchanged, and no new field (rxstate models forbid unknown fields);
- ``full``: both; ``none``: no check.

Example:
    >>> registry = SchemaRegistry(client, "crew")  # doctest: +SKIP
    >>> registry.register("agents", AgentV3, compatibility="backward")  # doctest: +SKIP
    3
"""

from __future__ import annotations

import json
from typing import Any

from rxstate.core.errors import NotFound, SchemaError, ValidationError
from rxstate.core.keys import Keyspace, validate_collection_name
from rxstate.core.model import Model

__all__ = ["COMPATIBILITY", "SchemaRegistry", "incompatibilities"]

COMPATIBILITY = ("backward", "forward", "full", "none")


def _shape(schema: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """(field -> its JSON type description, required fields) of a pydantic JSON schema."""
    props = {
        name: {k: v for k, v in spec.items() if k in ("type", "anyOf", "enum", "items", "$ref", "const")}
        for name, spec in schema.get("properties", {}).items()
    }
    return props, set(schema.get("required", ()))


def incompatibilities(old: dict[str, Any], new: dict[str, Any], rule: str, *, upcasts: bool = False) -> list[str]:
    """Why ``new`` (a JSON schema) is not ``rule``-compatible with ``old``; empty when it is.

    Args:
        upcasts: the new model has upcasters from the old version (backward compatibility holds by them).

    Example:
        >>> old = {"properties": {"name": {"type": "string"}}, "required": ["name"]}
        >>> new = {"properties": {"name": {"type": "string"}, "team": {"type": "string"}}, "required": ["name", "team"]}
        >>> incompatibilities(old, new, "backward")
        ["field 'team' is required but old data has none"]
    """
    if rule not in COMPATIBILITY:
        raise ValidationError(
            f"compatibility must be one of {', '.join(COMPATIBILITY)}, not {rule!r}", field="compatibility"
        )
    old_props, old_required = _shape(old)
    new_props, new_required = _shape(new)
    problems: list[str] = []
    changed = [n for n in sorted(set(old_props) & set(new_props)) if old_props[n] != new_props[n]]
    if rule in ("backward", "full") and not upcasts:
        problems += [f"field {n!r} is required but old data has none" for n in sorted(new_required - set(old_props))]
        problems += [f"field {n!r} changes type ({old_props[n]} -> {new_props[n]})" for n in changed]
    if rule in ("forward", "full"):
        problems += [
            f"field {n!r} is removed but old readers require it" for n in sorted(old_required - set(new_props))
        ]
        problems += [
            f"field {n!r} is new: old readers refuse unknown fields" for n in sorted(set(new_props) - set(old_props))
        ]
        problems += [f"field {n!r} changes type for old readers ({new_props[n]} -> {old_props[n]})" for n in changed]
    return list(dict.fromkeys(problems))


class SchemaRegistry:
    """Versions of each collection's model with their JSON schemas, and the rule new versions must keep.

    Args:
        client: a redis-py client.
        namespace: the namespace (it must exist).
    """

    def __init__(self, client: Any, namespace: str) -> None:
        ks = Keyspace(namespace, 1)
        if not client.exists(ks.meta()):
            raise NotFound(f"namespace {namespace!r} does not exist ({ks.meta()})", key=ks.meta())
        self.client = client
        self.namespace = namespace
        self.key = f"rx:{{{namespace}}}:_schemadefs"

    def _entry(self, collection: str) -> dict[str, Any] | None:
        raw = self.client.hget(self.key, collection)
        return None if raw is None else dict(json.loads(raw))

    def versions(self, collection: str) -> dict[int, dict[str, Any]]:
        """Every registered version of ``collection``'s model: version -> JSON schema."""
        entry = self._entry(collection) or {"versions": {}}
        return {int(v): s for v, s in entry["versions"].items()}

    def compatibility(self, collection: str) -> str:
        """The rule of ``collection`` (``backward`` until set)."""
        entry = self._entry(collection)
        return "backward" if entry is None else str(entry["compatibility"])

    def check(self, collection: str, model: type[Model], *, compatibility: str | None = None) -> list[str]:
        """Why ``model`` would be refused for ``collection``; empty when it would register."""
        validate_collection_name(collection)
        rule = compatibility or self.compatibility(collection)
        versions = self.versions(collection)
        schema = model.model_json_schema()
        if not versions:
            return incompatibilities(schema, schema, rule)  # checks the rule's name
        latest = max(versions)
        if model.__version__ < latest:
            return [f"version {model.__version__} is older than the registered v{latest}"]
        if model.__version__ == latest:
            return (
                [] if versions[latest] == schema else [f"v{latest} is registered with another schema: bump __version__"]
            )
        upcasts = all(step in model.__rxstate_upcasters__ for step in range(latest, model.__version__))
        return incompatibilities(versions[latest], schema, rule, upcasts=upcasts)

    def register(self, collection: str, model: type[Model], *, compatibility: str | None = None) -> int:
        """Register ``model`` as ``collection``'s newest version (and set the rule, if given); returns it.

        Raises:
            SchemaError: the model breaks the rule (``name`` is the collection; the message lists why);
                nothing is stored then.
            ValidationError: an unknown rule.
        """
        problems = self.check(collection, model, compatibility=compatibility)
        if problems:
            rule = compatibility or self.compatibility(collection)
            raise SchemaError(
                f"{model.__name__} v{model.__version__} is not {rule}-compatible with {collection!r}: "
                + "; ".join(problems),
                name=collection,
            )
        entry = self._entry(collection) or {"compatibility": "backward", "versions": {}}
        entry["versions"][str(model.__version__)] = model.model_json_schema()
        if compatibility is not None:
            entry["compatibility"] = compatibility
        self.client.hset(self.key, collection, json.dumps(entry))
        return model.__version__
