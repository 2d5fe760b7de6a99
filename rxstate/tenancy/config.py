"""A tenant's configuration: its limits, partition count and retention, and their split over partitions.

**Why limits are split over partitions.** A write script runs in one partition (one cluster slot), so
it cannot read a counter of the whole tenant atomically. Each partition's tenant hash therefore holds
that partition's *share* of every limit (``max_entities=10`` over 2 partitions: 5 and 5; a rate of
100/s: 50/s each), and the script checks and counts in-slot, exactly. The cost of the split: a tenant
whose data is skewed towards one partition is refused there before it reaches its whole quota. So
tenants default to **one partition** (``DEFAULT_PARTITIONS``), where every limit is exact; give a
tenant more partitions only when it needs more write throughput than one slot gives, and accept that
its quotas are then enforced per share.

Limits a tenant leaves unset fall back to the namespace defaults (``Tenants.set_defaults``), and
unset defaults mean unlimited.

Example:
    >>> limits = Limits(max_entities=10, rate=100.0)
    >>> [share.max_entities for share in limits.split(3)], limits.split(2)[0].rate
    ([4, 3, 3], 50.0)
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from rxstate.core.errors import ValidationError

__all__ = ["DEFAULT_PARTITIONS", "Limits", "TenantConfig", "validate_tenant_name"]

DEFAULT_PARTITIONS = 1
_NAME = re.compile(r"[a-z0-9][a-z0-9_\-]{0,62}")
_HASH_FIELDS = {
    "max_entities": "qe",
    "max_bytes": "qb",
    "rate": "rate",
    "burst": "burst",
    "principal_rate": "prate",
    "principal_burst": "pburst",
    "max_events": "qev",
}


def validate_tenant_name(name: object) -> str:
    """Return ``name`` if it is a valid tenant name (1-63 of ``a-z0-9_-``, starting alphanumeric).

    Example:
        >>> validate_tenant_name("acme")
        'acme'
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValidationError(
            f"invalid tenant name {name!r}: use 1-63 lowercase letters, digits, '_' or '-', starting with a letter "
            "or digit",
            field="tenant",
        )
    return name


@dataclass(frozen=True, slots=True)
class Limits:
    """Quotas and rate limits of a tenant (None: unset, i.e. the default applies, else unlimited).

    Attributes:
        max_entities: entities the tenant may hold.
        max_bytes: stored bytes (each field's name and encoded value, reserved fields aside).
        rate: writes per second of the whole tenant (a token bucket on server time).
        burst: the bucket's size (default: ``rate``).
        principal_rate: writes per second of each principal (or actor) of the tenant.
        principal_burst: that bucket's size (default: ``principal_rate``).
        max_events: events the tenant's event collections may hold (every aggregate's stream; an
            append that would pass it is refused whole). Retention trims only the partition event
            log, a copy of the same events, so it frees none of this quota.
    """

    max_entities: int | None = None
    max_bytes: int | None = None
    rate: float | None = None
    burst: int | None = None
    principal_rate: float | None = None
    principal_burst: int | None = None
    max_events: int | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            integral = f.name not in ("rate", "principal_rate")
            ok = isinstance(value, int) if integral else isinstance(value, int | float)
            if isinstance(value, bool) or not ok or value <= 0 or (not integral and not math.isfinite(value)):
                kind = "a positive int" if integral else "a positive number"
                raise ValidationError(f"{f.name} must be {kind} or None, not {value!r}", field=f.name)

    def over(self, defaults: Limits) -> Limits:
        """These limits, with the unset ones taken from ``defaults``.

        Example:
            >>> Limits(rate=5.0).over(Limits(rate=1.0, max_entities=9)).to_dict()
            {'max_entities': 9, 'rate': 5.0}
        """
        return Limits(**{f.name: _first(getattr(self, f.name), getattr(defaults, f.name)) for f in fields(self)})

    def split(self, partitions: int) -> list[Limits]:
        """Each partition's share (quotas sum to the whole; rates and bursts divide evenly, bursts >= 1)."""

        def share(total: int | None, i: int) -> int | None:
            if total is None:
                return None
            return max(1, total // partitions + (1 if i < total % partitions else 0))

        def rate(total: float | None) -> float | None:
            return None if total is None else total / partitions

        def burst(total: int | None, per_second: float | None) -> int | None:
            whole = total if total is not None else (None if per_second is None else max(1, math.ceil(per_second)))
            return None if whole is None else max(1, math.ceil(whole / partitions))

        return [
            Limits(
                max_entities=share(self.max_entities, i),
                max_bytes=share(self.max_bytes, i),
                rate=rate(self.rate),
                burst=burst(self.burst, self.rate),
                principal_rate=rate(self.principal_rate),
                principal_burst=burst(self.principal_burst, self.principal_rate),
                max_events=share(self.max_events, i),
            )
            for i in range(partitions)
        ]

    def hash_fields(self) -> tuple[dict[str, str], list[str]]:
        """The tenant-hash fields to set (``write_path.lua``'s names) and those to remove (unset limits)."""
        present: dict[str, str] = {}
        absent: list[str] = []
        for name, short in _HASH_FIELDS.items():
            value = getattr(self, name)
            if value is None:
                absent.append(short)
            else:
                present[short] = repr(float(value)) if isinstance(value, float) else str(value)
        return present, absent

    def to_dict(self) -> dict[str, Any]:
        """The set limits only."""
        return {k: v for k, v in asdict(self).items() if v is not None}


def _first(a: Any, b: Any) -> Any:
    return a if a is not None else b


@dataclass(frozen=True, slots=True)
class TenantConfig:
    """What the registry keeps of one tenant.

    Attributes:
        name: the tenant's name (its namespace is ``<ns>/<name>``).
        limits: its own limits (the effective ones fall back to the namespace defaults).
        partitions: its partition count (fixed at creation).
        retention: change records kept per partition: the cap (``MAXLEN ~``) every write script trims
            the tenant's change streams to, whatever the writing store asks for (see the registry).
        status: ``"active"`` or ``"suspended"``.
        created_ms: when it was created (server time, ms).
    """

    name: str
    limits: Limits = field(default_factory=Limits)
    partitions: int = DEFAULT_PARTITIONS
    retention: int = 10_000
    status: str = "active"
    created_ms: int = 0

    def __post_init__(self) -> None:
        validate_tenant_name(self.name)
        for name in ("partitions", "retention"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValidationError(f"{name} must be a positive int, not {value!r}", field=name)
        if self.partitions > 16384:
            raise ValidationError(f"partitions must be at most 16384, not {self.partitions}", field="partitions")
        if self.status not in ("active", "suspended"):
            raise ValidationError(f"status must be 'active' or 'suspended', not {self.status!r}", field="status")

    def to_json(self) -> str:
        """The registry's JSON of this tenant.

        Example:
            >>> TenantConfig.from_json(TenantConfig("acme", Limits(rate=2.0)).to_json(), "acme").limits.rate
            2.0
        """
        body = {
            "limits": self.limits.to_dict(),
            "partitions": self.partitions,
            "retention": self.retention,
            "status": self.status,
            "created_ms": self.created_ms,
        }
        return json.dumps(body, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes, name: str) -> TenantConfig:
        """The config of tenant ``name`` from the registry's JSON."""
        data = json.loads(raw)
        return cls(
            name=name,
            limits=Limits(**data.get("limits", {})),
            partitions=int(data["partitions"]),
            retention=int(data["retention"]),
            status=data["status"],
            created_ms=int(data.get("created_ms", 0)),
        )

    def with_limits(self, **changes: Any) -> TenantConfig:
        """This config with some limits changed (``None`` unsets one)."""
        return replace(self, limits=replace(self.limits, **changes))
