"""A principal's server ACL: the key patterns, channels and commands its policy grants, deny by default.

What the server enforces (Redis 7.0 / Valkey 8.1, tested in ``tests/integration/test_security_acl.py``):

- ``EVAL``/``EVALSHA`` check every declared key (``KEYS``) before the script runs, and need read *and*
  write access to each (the command's key spec says RW): a write whose keys are not all granted is refused
  with nothing written. rxstate's scripts pass every key they touch in ``KEYS``, so no write script
  needs ``redis.acl_check_cmd``. (A command inside a script on an undeclared key is refused only when
  it runs, after the script's earlier writes: that is why keys must be declared.)
- So a writer of a collection holds read-write patterns on everything its writes declare: the entity
  hashes, ids set, indexes, expiry and TTL-index bookkeeping, versions of deleted ids and declared
  references of that collection, and, shared by every collection of a partition, the change stream
  (``changes``) and fencing tokens (``_fences``). Every principal, readers too, may run scripts and write
  the audit streams, their chain heads and write records (``audit``, ``_audit``, ``rxw:{ns:p}:*``): its
  reads of classified data and its denials are audited. ACL cannot limit writes to scripts, so its raw
  client can write the audit keys too; anchor the chain heads elsewhere (``rxstate.store.audit``). A
  reader holds read-only
  patterns (``%R~``) on the collection's keys.
- The change stream of a partition holds every collection's changes: only a principal that may read
  every collection gets the stream-reading commands (``XREAD``, ``XRANGE`` ...); a writer of some
  collections may append to the stream (its writes do) but not read it back.
- Key patterns follow the partition layout with digit classes (``rx:{ns:[0-9]}:tickets:*``, then two
  digits, ...), never ``rx:{ns:*}:...``: a ``*`` there would also match an entity of another collection
  whose id holds ``}:tickets:``.
- Commands: ``-@all``, then only what rxstate sends, then explicit denials of every command that lists
  or wipes others' keys or watches them (``KEYS``, ``SCAN``, ``RANDOMKEY``, ``DBSIZE``, ``MOVE``,
  ``FUNCTION``, ``CLIENT TRACKING``, ``CONFIG``, ``DEBUG``, ``FLUSHALL``, ``FLUSHDB``, ``MONITOR``,
  ``PUBLISH``). Channels: only ``PSUBSCRIBE`` of the keyspace channels of the collections it may read
  (the literal patterns the local cache subscribes with), never ``__keyevent@*``; publishing is not
  granted, so no principal can forge another's invalidations.

Example:
    >>> from rxstate.security.policy import Policy, Principal, Rule
    >>> policy = Policy([Rule("support", "allow", ["read"], ["tickets"])])
    >>> rules = acl_rules("crew", 16, Principal("ann", roles=("support",)), policy)
    >>> "%R~rx:{crew:[0-9]}:tickets:*" in rules, "-keys" in rules
    (True, True)
"""

from __future__ import annotations

from rxstate.security.policy import Grants, Policy, Principal

__all__ = [
    "DENIED_COMMANDS",
    "Grants",
    "OPTIONAL_COMMANDS",
    "acl_rules",
    "grants",
    "keyspace_channels",
    "probe_key",
    "username",
]

CONNECTION_COMMANDS = (
    "+ping",
    "+echo",
    "+hello",
    "+select",
    "+reset",
    "+quit",
    "+multi",  # MULTI/EXEC: the commands queued in one are checked like any other
    "+exec",
    "+discard",
    "+cluster|slots",  # a cluster client's discovery of the slots and of the commands' keys
    "+cluster|shards",
    "+command",
    "+asking",
    "+readonly",
    "+client|setname",
    "+client|getname",
    "+client|id",
    "+client|info",
    "+client|setinfo",
    "+acl|whoami",  # a store opened on a client of the user's own checks whose it is
)
READ_COMMANDS = (
    "+hgetall",
    "+hmget",
    "+hget",
    "+hexists",
    "+hlen",
    "+exists",
    "+pttl",
    "+ttl",
    "+type",
    "+smembers",
    "+scard",
    "+sismember",
    "+zrange",
    "+zrangebyscore",
    "+zrevrangebyscore",
    "+zrangebylex",
    "+zrevrangebylex",
    "+zscore",
    "+zcard",
    "+zcount",
    "+zlexcount",
)
WRITE_COMMANDS = (  # the write scripts' own commands: a script's commands are checked like direct ones
    "+evalsha",
    "+eval",
    "+evalsha_ro",
    "+eval_ro",
    "+script|load",
    "+script|exists",
    "+time",
    "+get",
    "+set",
    "+incr",
    "+del",
    "+hset",
    "+hdel",
    "+hincrby",
    "+sadd",
    "+srem",
    "+zadd",
    "+zrem",
    "+zremrangebyscore",
    "+xadd",
    "+pexpire",
    "+pexpireat",
    "+persist",
)
AUDIT_COMMANDS = (  # what recording a read of classified data or a denial needs (lua/audit.lua, exactly once)
    "+evalsha",
    "+eval",
    "+script|load",
    "+script|exists",
    "+time",
    "+get",
    "+set",
    "+hmget",
    "+hset",
    "+xadd",
)
STREAM_COMMANDS = (  # reading the change streams (the change feed): only for who may read every collection
    "+xread",
    "+xrange",
    "+xrevrange",
    "+xlen",
    "+xinfo|stream",
    "+xreadgroup",
    "+xgroup|create",
    "+xgroup|createconsumer",
    "+xack",
    "+xpending",
    "+xautoclaim",
    "+xclaim",
    "+xinfo|groups",
)
SUBSCRIBE_COMMANDS = ("+psubscribe", "+punsubscribe")
DENIED_COMMANDS = (
    "-keys",
    "-scan",
    "-randomkey",
    "-dbsize",
    "-move",
    "-function",
    "-client|tracking",
    "-client|kill",
    "-config",
    "-debug",
    "-flushall",
    "-flushdb",
    "-monitor",
    "-publish",
    "-spublish",
    "-acl|setuser",
    "-script|flush",
    "-script|kill",
)
OPTIONAL_COMMANDS = frozenset({"+client|setinfo", "+spublish", "-spublish"})
"""Commands some servers lack (Redis 7.0 has no ``CLIENT SETINFO`` nor ``SPUBLISH`` in 7.0.0): dropped there."""


def username(namespace: str, principal: str) -> str:
    """The server ACL user of a principal of a namespace.

    Example:
        >>> username("crew", "planner")
        'rx:crew:planner'
    """
    return f"rx:{namespace}:{principal}"


def _tags(namespace: str, partitions: int) -> list[str]:
    """``rx:{ns:<digits>}:`` patterns covering every partition number below ``partitions``."""
    digits = len(str(max(partitions - 1, 0)))
    return [f"rx:{{{namespace}:{'[0-9]' * n}}}:" for n in range(1, digits + 1)]


def probe_key(namespace: str, principal: str) -> str:
    """The key a principal's cache writes to check that its invalidations arrive (partition 0)."""
    return f"rx:{{{namespace}:0}}:_probe:{principal}"


def grants(principal: Principal, policy: Policy) -> Grants:
    """The collections the server lets ``principal`` read and write (``Policy.grants``)."""
    return policy.grants(principal)


def _collection_patterns(tags: list[str], collection: str) -> list[str]:
    kinds = (
        f"{collection}:*",
        f"_ids:{collection}",
        f"_idx:{collection}:*",
        f"_exp:{collection}",
        f"_ttlidx:{collection}",
        f"_ver:{collection}",
        f"_refby:{collection}",
    )
    return [f"{tag}{kind}" for tag in tags for kind in kinds]


def keyspace_channels(namespace: str, partitions: int, principal: Principal, policy: Policy, db: int = 0) -> list[str]:
    """The keyspace channel patterns of the entities ``principal`` may read, and of its probe key.

    The local cache subscribes with exactly these patterns (the server accepts a pattern subscription
    only when the ACL holds that literal pattern).
    """
    tags = _tags(namespace, partitions)
    prefix = f"__keyspace@{db}__:"
    read = grants(principal, policy).read
    if "*" in read:
        entities = [f"{prefix}{tag}*" for tag in tags]
    else:
        entities = [f"{prefix}{tag}{c}:*" for c in sorted(read) for tag in tags]
    probe = probe_key(namespace, principal.name)
    return [*entities, prefix + probe, prefix + probe + ":ping"]


def acl_rules(namespace: str, partitions: int, principal: Principal, policy: Policy, db: int = 0) -> list[str]:
    """The ``ACL SETUSER`` rules (after ``reset``/``on``/password) for ``principal`` (see the module docstring)."""
    tags = _tags(namespace, partitions)
    given = grants(principal, policy)
    keys: list[str] = [
        f"%R~rx:{{{namespace}}}:meta",
        f"%R~rx:{{{namespace}}}:_policy",
        f"%R~rx:{{{namespace}}}:_principal:{principal.name}",
        f"%R~rx:{{{namespace}}}:_keys",  # the key ring: data keys wrapped by the KEK, which only key holders have
        f"%R~rx:{{{namespace}}}:_subjects",  # data subjects' keys, wrapped by the KEK too
        f"~{probe_key(namespace, principal.name)}",
        f"~{probe_key(namespace, principal.name)}:ping",  # the cache's subscription check
    ]
    commands = [*CONNECTION_COMMANDS, *SUBSCRIBE_COMMANDS, *READ_COMMANDS, "+set", "+get"]  # set/get: the probe
    # Every principal may append to the audit (its reads of classified data and its denials are recorded):
    # the audit streams, their chain heads and the write records of those calls.
    commands += AUDIT_COMMANDS
    for tag in tags:
        keys += [f"~{tag}audit", f"~{tag}_audit", f"~rxw{tag[2:]}*"]
    # Every principal of a tenant adds its reads to its read-cost hashes (rxstate.tenancy.reads).
    commands.append("+hincrby")
    keys += [f"~{tag}_treads" for tag in tags]
    if given.write:
        commands += WRITE_COMMANDS
        for tag in tags:
            # _tenant, _tsz: a tenant's limits and usage, read and counted by its writes (rxstate.tenancy)
            keys += [f"~{tag}changes", f"~{tag}_fences", f"~{tag}_tenant", f"~{tag}_tsz"]
        keys.append(f"~rx:{{{namespace}}}:_subjects")  # a write may make a data subject's key
    keys += [f"%R~{tag}_txi" for tag in tags]  # readers settle transactions they meet (read_partitions)
    if given.reads_everything:
        commands += STREAM_COMMANDS
    if "*" in given.write:
        keys += [f"~{tag}*" for tag in tags]
    else:
        for c in sorted(given.write):
            keys += [f"~{p}" for p in _collection_patterns(tags, c)]
        if "*" in given.read:
            keys += [f"%R~{tag}*" for tag in tags]
        else:
            for c in sorted(given.read - given.write):
                keys += [f"%R~{p}" for p in _collection_patterns(tags, c)]
    channels = [f"&{c}" for c in keyspace_channels(namespace, partitions, principal, policy, db)]
    return ["-@all", *dict.fromkeys(commands), *DENIED_COMMANDS, "resetkeys", *keys, "resetchannels", *channels]
