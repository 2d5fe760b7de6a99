"""Export a tenant to a file, and import it back: a self-contained, documented format.

The file is gzip-compressed JSON lines (``.jsonl.gz``), one JSON object per line:

- line 1, the header: ``{"format": "rxstate-tenant", "version": 1, "namespace": <parent namespace>,
  "tenant": <name>, "config": <TenantConfig JSON object>, "defaults": <the parent's default limits, for reference>}``
- then one line per key: ``{"p": <partition, or null for a namespace-wide key>, "k": <the key after
  its hash tag>, "t": <type>, "ttl": <ms left, or -1>, "v": <value>}`` where the value by type is
  ``hash``: ``{field: value}``, ``set``: ``[member]``, ``zset``: ``[[member, score]]``, ``string``:
  value, ``list``: ``[item]``, ``stream``: ``[[id, {field: value}]]``; every field, member and value
  is the base64 of its bytes (values may be binary: compressed or encrypted).
- a last line ``{"end": <number of key lines>}``, so a truncated file is detected.

Keys are stored without their namespace (``rx:{crew/acme:3}:agents:a1`` is ``p=3, k="agents:a1"``),
so ``import_tenant`` may restore under another name. Not exported: the tenant's principals (ACL users
hold password hashes the server never gives out: create them again), stream consumer groups, and write
records (``rxw:``, the replies of recent writes).

The format is written by hand because no library writes Redis values of every type in a portable,
server-version-independent form (``DUMP`` payloads are tied to the server's RDB version).

Example:
    >>> import tempfile, pathlib
    >>> tenants = Tenants(store)
    >>> _ = tenants.create("acme")
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "acme.jsonl.gz"
    >>> export_tenant(tenants, "acme", path)  # its meta hash and its partition's tenant hash
    2
    >>> import_tenant(tenants, path, name="acme2").name
    'acme2'
"""

from __future__ import annotations

import base64
import gzip
import json
import os
from collections.abc import Iterator
from typing import IO, Any

from rxstate.core.errors import AlreadyExists, CorruptDataError, ValidationError
from rxstate.core.keys import Keyspace
from rxstate.tenancy.config import TenantConfig
from rxstate.tenancy.registry import Tenants
from rxstate.tenancy.stage import TENANT_FLAG

__all__ = ["FORMAT", "export_tenant", "import_tenant"]

FORMAT = "rxstate-tenant"
VERSION = 1


def _b(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _u(text: str) -> bytes:
    return base64.b64decode(text)


def _split(key: str, ns: str) -> tuple[int | None, str]:
    for_partition = f"rx:{{{ns}:"
    if key.startswith(for_partition):
        partition, _, rest = key[len(for_partition) :].partition("}:")
        return int(partition), rest
    whole = f"rx:{{{ns}}}:"
    if key.startswith(whole):
        return None, key[len(whole) :]
    raise ValidationError(f"key {key!r} is not a key of namespace {ns!r}")


def _join(partition: int | None, rest: str, ns: str) -> str:
    return f"rx:{{{ns}}}:{rest}" if partition is None else f"rx:{{{ns}:{partition}}}:{rest}"


def _value(client: Any, key: bytes, kind: str) -> Any:
    if kind == "hash":
        return {_b(k): _b(v) for k, v in client.hgetall(key).items()}
    if kind == "set":
        return sorted(_b(m) for m in client.smembers(key))
    if kind == "zset":
        return [[_b(m), s] for m, s in client.zrange(key, 0, -1, withscores=True)]
    if kind == "string":
        return _b(client.get(key))
    if kind == "list":
        return [_b(x) for x in client.lrange(key, 0, -1)]
    if kind == "stream":
        return [[i.decode(), {_b(k): _b(v) for k, v in f.items()}] for i, f in client.xrange(key)]
    raise ValidationError(f"cannot export {key!r}: unsupported type {kind}")


def export_tenant(tenants: Tenants, name: str, path: str | os.PathLike[str]) -> int:
    """Write tenant ``name`` to ``path`` in the format above; returns the number of keys written.

    Raises:
        NotFound: no such tenant.
    """
    config = tenants.get(name)
    ns = tenants.namespace_of(name)
    client = tenants.client
    header = {
        "format": FORMAT,
        "version": VERSION,
        "namespace": tenants.namespace,
        "tenant": name,
        "config": json.loads(config.to_json()),
        "defaults": tenants.defaults().to_dict(),
    }
    n = 0
    with gzip.open(path, "wt", encoding="utf-8") as out:
        out.write(json.dumps(header) + "\n")
        for key in tenants.keys(name):
            text = key.decode()
            if text.startswith("rxw:"):
                continue
            kind = client.type(key).decode()
            if kind == "none":  # removed since the scan
                continue
            partition, rest = _split(text, ns)
            line = {"p": partition, "k": rest, "t": kind, "ttl": int(client.pttl(key)), "v": _value(client, key, kind)}
            out.write(json.dumps(line) + "\n")
            n += 1
        out.write(json.dumps({"end": n}) + "\n")
    return n


def _lines(handle: IO[str], path: object) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(handle, 1):
        try:
            yield json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorruptDataError(f"{path}: line {number} is not JSON ({exc})", key=str(path)) from exc


def _restore(pipe: Any, key: str, record: dict[str, Any]) -> None:
    kind, v = record["t"], record["v"]
    if kind == "hash":
        pipe.hset(key, mapping={_u(k): _u(x) for k, x in v.items()})
    elif kind == "set":
        pipe.sadd(key, *(_u(m) for m in v))
    elif kind == "zset":
        pipe.zadd(key, {_u(m): s for m, s in v})
    elif kind == "string":
        pipe.set(key, _u(v))
    elif kind == "list":
        pipe.rpush(key, *(_u(x) for x in v))
    elif kind == "stream":
        for entry_id, entry in v:
            pipe.xadd(key, {_u(k): _u(x) for k, x in entry.items()}, id=entry_id)
    else:
        raise CorruptDataError(f"unknown key type {kind!r} for {key}", key=key)
    if record["ttl"] > 0:
        pipe.pexpire(key, record["ttl"])


def import_tenant(tenants: Tenants, path: str | os.PathLike[str], *, name: str | None = None) -> TenantConfig:
    """Restore a tenant exported by ``export_tenant`` into ``tenants``' namespace (as ``name``, default
    the exported name). The file is read whole and checked before anything is written.

    Raises:
        AlreadyExists: the tenant (or its namespace) exists.
        CorruptDataError: the file is not a complete export in this format.
    """
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        records = list(_lines(handle, path))
    if not records or records[0].get("format") != FORMAT or records[0].get("version") != VERSION:
        raise CorruptDataError(f"{path} is not an {FORMAT} v{VERSION} export", key=str(path))
    header, body, end = records[0], records[1:-1], records[-1] if len(records) > 1 else {}
    if end.get("end") != len(body):
        raise CorruptDataError(f"{path} is truncated: {len(body)} keys, trailer {end}", key=str(path))
    target = name if name is not None else header["tenant"]
    exported = TenantConfig.from_json(json.dumps(header["config"]), target)
    ns = tenants.namespace_of(target)
    meta = Keyspace(ns, 1).meta()
    if tenants.client.exists(meta) or tenants.client.hexists(tenants.registry_key, target):
        raise AlreadyExists(f"tenant {target!r} exists already in {tenants.namespace!r}", key=meta)
    pipe = tenants.client.pipeline(transaction=False)
    for record in body:
        _restore(pipe, _join(record["p"], record["k"], ns), record)
        if len(pipe) >= 500:
            pipe.execute()
    pipe.hset(meta, TENANT_FLAG, "1")
    pipe.hset(tenants.registry_key, target, exported.to_json())
    pipe.execute()
    tenants.apply(exported)  # its own limits travel with it; unset ones take this namespace's defaults
    return exported
