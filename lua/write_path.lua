--[[ write_path.lua — the stages of the entity write path, shared by mutate.lua and txn.lua.

Not a script of its own: a script takes these definitions in with an "@library write_path" line.
KEYS and ARGV: those of the including script's call, in the format below.
Returns: a library returns nothing itself; write_all gives one reply per op (see below), and each
  check stage nil or the error reply that refuses the call.

Argument format. ARGV opens with a header, then holds the operations. Every part after the fixed
header fields is a tagged section: a tag, then its fields; KEYS are taken in the order of the sections
that name them. So a new stage of the write path is one section parser (SECTIONS, or HEADER for a
section of the whole call) and one stage function here, plus one section builder in Python
(rxstate/core/writes.py); a section an op does not need is simply not sent.

  header:  actor, transaction id ("" if none), change stream MAXLEN (~), number of partitions the
           transaction touches; then header sections (scripts register their own in HEADER)
  "op" kind collection id expected-version schema-version ttl full
           kind: put | create | update | incr | delete | check (verify the version, write nothing)
           expected-version: "" unchecked; ttl: "-" keep, "0" persist, N = expire after N ms;
           full: "1" returns the whole stored hash after the write; "v<N>" returns it only if the
           version before the write is not N (the caller holds version N and builds the new value)
           KEYS: entity hash, ids set, expiry zset, ttl-index hash, change stream, versions hash
           (the versions hash keeps the last version of each deleted entity: a re-created entity's
           versions continue from it, so a version names one state of an id for good and
           compare-and-set is ABA-safe)
  "set" n, (field, encoded value) * n
  "incr" n, (field, integer amount, min, max) * n      min/max: bounds, "" for none
  "index" n, field name * n                            KEYS: + n index zsets, same order
  "fence" lock name, fencing token, lease deadline (server ms)   KEYS: + the partition's fence hash
  "audit" principal, n, field name * n     audit the write (KEYS: + the partition's audit stream and its
                               chain head): the n fields whose values the entry may show (the others,
                               classified, appear by name only)
  "tenant" principal nevents   the write of a tenant store (KEYS: + the partition's tenant hash and its
                               entity-size hash): suspension, quotas and rate limits are checked, usage
                               and cost counters kept (see "Tenants" below); nevents: the events the
                               call appends to the op's partition (append.lua; "0" for other writes),
                               counted against the events quota in the same check; an op carrying
                               events counts as a write (rate limits, operations) even as a "check"
  "cons" n, constraint * n, each: kind, constraint name, field, and by kind:
    "u" nscan                  unique: no other live entity holds the new value
                               (KEYS: + nscan pairs of index zset, expiry zset to search)
    "x" referrer value nscan   delete protection: no live entity of collection `referrer` holds
                               `value` in `field` (KEYS: + nscan pairs of index zset, expiry zset)
    "r"                        reference: the referenced entity exists (KEYS: + its entity key)
    "b" low high               bounds: low <= new value <= high; each "" (none), "n:<number>" or
                               "f:<field>" (the entity's value of another field after the write)
    "e" nvals, value * nvals   enum: the new (encoded) value is one of these
    "d" n, declaration * n     the declared references to this collection (KEYS: + the partition's
                               set of them) are exactly these, as the caller built its "x" checks from

Stages, in order; nothing is written unless every check passes:
  read_all     one HMGET per entity (version, intent, expiry, old indexed values, old incr values);
               refuses entities locked by another transaction's intent; collects stale "check" ops
  check_all    existence and expected versions, integer fields and their bounds, fencing tokens,
               declared constraints
  write_fences the highest fencing token seen per lock
  write_all    per op: the hash with _v/_sv/_ts/_by/_o, versions of deleted ids, indexes, TTL
               bookkeeping, the change record (change_record, also used by reap.lua), and with an
               "audit" section the op's audit entry (audit_entry, also used by audit.lua)
Tenants (rxstate.tenancy): the tenant hash rx:{ns/t:p}:_tenant holds the partition's share of the
  tenant's limits (qe max entities, qb max bytes, qev max events, rate/burst writes per second and
  bucket size, prate/pburst the same per principal; absent = unlimited; cl the change stream's
  MAXLEN ~, which replaces the caller's: a cap that trims, never refuses), "suspended", the usage
  (ue entities, ub bytes: the sum over entities of each field's name and encoded value lengths,
  reserved fields aside; uev events in the aggregates' streams, which only appends add to: retention
  trims the partition event log, a copy, never an aggregate's stream), the cost counters (cops write
  ops, appends included, cwb bytes written; read costs are flushed by the stores to another hash,
  rxstate.tenancy.reads) and token buckets (rt/rts, and pt:<principal>/pts:<principal>).
  The size hash rx:{ns/t:p}:_tsz keeps each counted entity's size ("<collection>\0<id>" -> bytes), so
  an update or delete adjusts usage exactly and reap.lua subtracts what expires.
  check_tenant (the last check of check_all) refuses; account_tenant (in write_all) counts.
Audit entries: one stream per partition, entries chained by hash: each entry's field "h" is
  sha1hex of the previous entry's h (the stream's key for the first) and every field name and value
  of the entry, in order, joined by NUL, a value that holds a NUL written as "\1<length>:<bytes>"; "s"
  numbers the entries from 1, and the chain head hash (fields h, n) keeps the last h and s, so that a
  modified, inserted, deleted, reordered or truncated entry is found by rxstate.store.audit.
Errors (prefix, then space-separated details):
  RXCONFLICT key expected actual     expected version did not match
  RXCONFLICT key expected actual ...  stale "check" ops: every stale key of the call, in one error
  RXEXISTS key actual                create of an existing entity
  RXNOTFOUND key                     update/incr of a missing entity
  RXNOTINT key field                 incr of a field whose stored value is not an integer
  RXRANGE key field                  incr would leave the exact integer range (|n| > 2^53-1)
  RXINTEGRITY key^bounds:field value  incr would leave the field's declared bounds
  RXINTEGRITY key^constraint detail   a declared constraint would be violated
  RXREFSTALE key                      the caller's view of declared references is out of date
  RXFENCED key^lock^token seen|expired  a fenced write's lease is older than one already seen, or expired
  (^ stands for the byte 0x1F: keys and lock names may hold spaces, never a control character)
  RXINTENT key owner                 the entity is locked by another transaction's intent ("txid@primary")
  RXSUSPENDED tenant-key              the tenant is suspended
  RXQUOTA tenant-key quota limit use requested   the write would exceed the partition's share of a quota
  RXRATE tenant-key scope retry-after-ms         the tenant's (or principal's) token bucket is empty
  RXFORMAT detail                    the arguments do not follow this format
]]

local SEP = "\0"
local US = "\31"  -- ends a key (or a lock name) in an error reply: neither can hold a control character
local MAXINT = 9007199254740991

local clock = redis.call("TIME")
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local function fmt_int(n) return string.format("%d", n) end

-- Section parsers: each takes (the op or the header, the argument cursor) and consumes its fields.
local SECTIONS, HEADER = {}, {}

SECTIONS.set = function(op, c)
  for j = 1, c.int() do op.set[j] = {c.arg(), c.arg()} end
end

SECTIONS.incr = function(op, c)
  for j = 1, c.int() do op.incr[j] = {c.arg(), tonumber(c.arg()), tonumber(c.arg()), tonumber(c.arg())} end
end

SECTIONS.index = function(op, c)
  for j = 1, c.int() do op.idx[j] = c.arg(); op.idxkeys[j] = c.key() end
end

SECTIONS.fence = function(op, c)
  op.fence = {name = c.arg(), token = tonumber(c.arg()), deadline = tonumber(c.arg()), key = c.key()}
end

SECTIONS.audit = function(op, c)
  op.audit = {principal = c.arg(), values = {}}
  for _ = 1, c.int() do op.audit.values[c.arg()] = true end
  op.audit.stream, op.audit.head = c.key(), c.key()
end

SECTIONS.cons = function(op, c)
  for j = 1, c.int() do
    local k = {kind = c.arg(), name = c.arg(), field = c.arg(), scan = {}}
    if k.kind == "x" then k.referrer, k.value = c.arg(), c.arg() end
    if k.kind == "u" or k.kind == "x" then
      for s = 1, c.int() do k.scan[s] = {c.key(), c.key()} end
    elseif k.kind == "r" then
      k.target = c.key()
    elseif k.kind == "b" then
      k.low, k.high = c.arg(), c.arg()
    elseif k.kind == "e" or k.kind == "d" then
      k.values, k.count = {}, c.int()
      for _ = 1, k.count do k.values[c.arg()] = true end
      if k.kind == "d" then k.target = c.key() end
    end
    op.cons[j] = k
  end
end

SECTIONS.tenant = function(op, c)
  op.tenant = {principal = c.arg(), events = tonumber(c.arg()) or 0, key = c.key(), sizes = c.key()}
end

local function new_op(c)
  local kind, coll, id, expected, sv, ttl, full = c.arg(), c.arg(), c.arg(), c.arg(), c.arg(), c.arg(), c.arg()
  return {
    kind = kind, coll = coll, id = id, expected = expected, sv = sv, ttl = ttl,
    full = full == "1", full_unless = string.sub(full, 1, 1) == "v" and tonumber(string.sub(full, 2)) or nil,
    ekey = c.key(), ids = c.key(), exp = c.key(), ttlidx = c.key(), changes = c.key(), vers = c.key(),
    set = {}, incr = {}, idx = {}, idxkeys = {}, cons = {},
  }
end

-- The header and the operations of one call, or (nil, error reply) for arguments off the format.
local function parse(keys, argv)
  local c = {a = 5, k = 1}
  c.arg = function() local v = argv[c.a]; c.a = c.a + 1; return v end
  c.int = function() return tonumber(c.arg()) end
  c.key = function() local v = keys[c.k]; c.k = c.k + 1; return v end
  local head = {actor = argv[1], txid = argv[2], maxlen = argv[3], nparts = argv[4]}
  local ops, op = {}, nil
  while c.a <= #argv do
    local tag = c.arg()
    if tag == "op" then
      op = new_op(c)
      ops[#ops + 1] = op
    else
      local section = (op and SECTIONS or HEADER)[tag]
      if not section then return nil, redis.error_reply("RXFORMAT unknown section " .. tostring(tag)) end
      section(op or head, c)
    end
  end
  if c.k - 1 ~= #keys then
    return nil, redis.error_reply("RXFORMAT " .. fmt_int(#keys) .. " keys given, " .. fmt_int(c.k - 1) .. " named")
  end
  return head, ops
end

-- Stage read_all: one read per entity, for every later stage. An entity locked by another
-- transaction (hash field _t = "<txid>@<primary partition>") refuses every write (RXINTENT): the client
-- settles that transaction first. Stale "check" ops are collected, so one RXCONFLICT names every one.
local function read_all(head, ops)
  local stale = {}
  for _, op in ipairs(ops) do
    local wanted = {"HMGET", op.ekey, "_v", "_t", "_x"}
    for _, f in ipairs(op.idx) do wanted[#wanted + 1] = f end
    for _, inc in ipairs(op.incr) do wanted[#wanted + 1] = inc[1] end
    local h = redis.call(unpack(wanted))
    local cur = tonumber(h[1] or "0")
    if h[2] and (head.txid == "" or string.match(h[2], "^(.*)@") ~= head.txid) then
      return redis.error_reply("RXINTENT " .. op.ekey .. " " .. h[2])
    end
    if op.kind == "check" and op.expected ~= "" and tonumber(op.expected) ~= cur then
      stale[#stale + 1] = op.ekey .. " " .. op.expected .. " " .. fmt_int(cur)
    end
    op.cur = cur
    op.had_ttl = h[3] ~= false
    op.old, op.incr_old = {}, {}
    for j = 1, #op.idx do op.old[j] = h[3 + j] end
    for j = 1, #op.incr do op.incr_old[j] = h[3 + #op.idx + j] end
  end
  if #stale > 0 then return redis.error_reply("RXCONFLICT " .. table.concat(stale, " ")) end
  return nil
end

local function check_versions(op)
  local cur = op.cur
  if op.kind == "create" and cur ~= 0 then
    return redis.error_reply("RXEXISTS " .. op.ekey .. " " .. fmt_int(cur))
  end
  if op.expected ~= "" and tonumber(op.expected) ~= cur then
    return redis.error_reply("RXCONFLICT " .. op.ekey .. " " .. op.expected .. " " .. fmt_int(cur))
  end
  if (op.kind == "update" or op.kind == "incr") and cur == 0 then
    return redis.error_reply("RXNOTFOUND " .. op.ekey)
  end
  return nil
end

local function check_incr(op)
  for j, inc in ipairs(op.incr) do
    local v = op.incr_old[j] or "0"
    if not string.match(v, "^%-?%d+$") then
      return redis.error_reply("RXNOTINT " .. op.ekey .. " " .. inc[1])
    end
    local after = tonumber(v) + inc[2]
    if math.abs(after) > MAXINT then
      return redis.error_reply("RXRANGE " .. op.ekey .. " " .. inc[1])
    end
    if (inc[3] and after < inc[3]) or (inc[4] and after > inc[4]) then
      return redis.error_reply("RXINTEGRITY " .. op.ekey .. US .. "bounds:" .. inc[1] .. " " .. inc[1] .. "=" ..
        fmt_int(after) .. " outside [" .. (inc[3] and fmt_int(inc[3]) or "") ..
        ", " .. (inc[4] and fmt_int(inc[4]) or "") .. "]")
    end
  end
  return nil
end

local function check_fence(op)
  local f = op.fence
  if not f then return nil end
  local seen = tonumber(redis.call("HGET", f.key, f.name) or "0")
  if f.token < seen then
    return redis.error_reply("RXFENCED " .. op.ekey .. US .. f.name .. US .. fmt_int(f.token) .. " " .. fmt_int(seen))
  end
  if now > f.deadline then
    return redis.error_reply("RXFENCED " .. op.ekey .. US .. f.name .. US .. fmt_int(f.token) .. " expired")
  end
  return nil
end

-- The value field f of op's entity will hold after the write (nil: none).
local function after_value(op, f)
  for _, inc in ipairs(op.incr) do
    if inc[1] == f then
      return fmt_int(tonumber(redis.call("HGET", op.ekey, f) or "0") + inc[2])
    end
  end
  for _, s in ipairs(op.set) do
    if s[1] == f then return s[2] end
  end
  if op.kind == "put" or op.kind == "create" then return nil end
  return redis.call("HGET", op.ekey, f) or nil
end

-- Whether a live entity other than (coll, id) holds `value` in one of the scanned index zsets.
local function held_elsewhere(scan, value, self_id)
  for _, pair in ipairs(scan) do
    for _, m in ipairs(redis.call("ZRANGEBYLEX", pair[1], "[" .. value .. SEP, "(" .. value .. "\1")) do
      local other = string.sub(m, #value + 2)
      if other ~= self_id then
        local deadline = redis.call("ZSCORE", pair[2], other)
        if not deadline or tonumber(deadline) > now then return other end
      end
    end
  end
  return nil
end

local function bound_value(op, spec)
  if spec == "" then return nil end
  if string.sub(spec, 1, 2) == "n:" then return tonumber(string.sub(spec, 3)) end
  local v = after_value(op, string.sub(spec, 3))
  return v and tonumber(v)
end

-- A bound for a message: integers exactly (tostring keeps 14 digits), other numbers as Lua prints them.
local function num_str(n)
  if not n then return "" end
  if n == math.floor(n) and math.abs(n) <= MAXINT then return fmt_int(n) end
  return tostring(n)
end

local function check_constraints(op, claimed)
  local function integrity(c, detail)
    return redis.error_reply("RXINTEGRITY " .. op.ekey .. US .. c.name .. " " .. detail)
  end
  for _, c in ipairs(op.cons) do
    if c.kind == "d" then
      local declared = redis.call("SMEMBERS", c.target)
      local stale = #declared ~= c.count
      for _, m in ipairs(declared) do stale = stale or not c.values[m] end
      if stale then return redis.error_reply("RXREFSTALE " .. op.ekey) end
    elseif c.kind == "x" then
      local self_id = (c.referrer == op.coll) and op.id or nil
      local holder = held_elsewhere(c.scan, c.value, self_id)
      if holder then return integrity(c, "still referenced by " .. c.referrer .. ":" .. holder) end
    else
      local v = after_value(op, c.field)
      if v and v ~= "null" then
        if c.kind == "u" then
          local tag = c.name .. SEP .. v
          local holder = held_elsewhere(c.scan, v, op.id)
          if not holder and claimed[tag] and claimed[tag] ~= op.id then holder = claimed[tag] end
          if holder then return integrity(c, c.field .. "=" .. v .. " already used by " .. holder) end
          claimed[tag] = op.id
        elseif c.kind == "r" then
          if redis.call("EXISTS", c.target) == 0 then
            return integrity(c, c.field .. "=" .. v .. " names no existing entity")
          end
        elseif c.kind == "b" then
          local n, low, high = tonumber(v), bound_value(op, c.low), bound_value(op, c.high)
          if n and ((low and n < low) or (high and n > high)) then
            return integrity(c, c.field .. "=" .. v .. " outside [" .. num_str(low) .. ", " .. num_str(high) .. "]")
          end
        elseif c.kind == "e" then
          if not c.values[v] then return integrity(c, c.field .. "=" .. v .. " is not allowed") end
        end
      end
    end
  end
  return nil
end

-- Tenant stage, checks: the size each op leaves its entity with (user fields only), then, per tenant
-- hash, suspension, quotas on the summed deltas and the token buckets. Deltas are kept on the ops for
-- account_tenant, which runs in write_all once every check has passed.
local function field_len(name, value) if value then return #name + #value end return 0 end

local function tenant_delta(op)
  local t = op.tenant
  t.devents = t.events
  if op.kind == "check" or (op.kind == "delete" and op.cur == 0) then
    t.dent, t.dbytes, t.written, t.new = 0, 0, 0, nil
    return
  end
  t.member = op.coll .. SEP .. op.id
  t.old = tonumber(redis.call("HGET", t.sizes, t.member) or "0")
  t.counted = t.old > 0 or redis.call("HEXISTS", t.sizes, t.member) == 1
  if op.kind == "delete" then
    t.dent, t.dbytes, t.written, t.new = t.counted and -1 or 0, -t.old, 0, nil
    return
  end
  local replace = op.kind == "put" or op.kind == "create"
  local live = op.cur > 0
  local size = (replace or not live) and 0 or t.old
  local written = 0
  local setf = {}
  local names = {"HMGET", op.ekey}
  for _, f in ipairs(op.set) do names[#names + 1] = f[1]; setf[f[1]] = true end
  local olds = (#op.set > 0 and live and not replace) and redis.call(unpack(names)) or {}
  for j, f in ipairs(op.set) do
    size = size + field_len(f[1], f[2]) - field_len(f[1], olds[j] or nil)
    written = written + field_len(f[1], f[2])
  end
  for j, inc in ipairs(op.incr) do
    if not setf[inc[1]] then
      local old = (live and not replace) and op.incr_old[j] or nil
      local after = fmt_int(tonumber(old or "0") + inc[2])
      size = size + field_len(inc[1], after) - field_len(inc[1], old or nil)
      written = written + field_len(inc[1], after)
    end
  end
  t.new, t.written = size, written
  t.dent = t.counted and 0 or 1
  t.dbytes = size - t.old
end

-- A token bucket (rate per second, size burst) in fields tok/ts of key: the tokens left after taking
-- n, or nil and the ms until n are there.
local function bucket(key, tok_f, ts_f, rate, burst, n)
  local h = redis.call("HMGET", key, tok_f, ts_f)
  local tokens, last = tonumber(h[1] or burst), tonumber(h[2] or now)
  tokens = math.min(burst, tokens + math.max(0, now - last) * rate / 1000)
  if tokens < n then return nil, math.ceil((n - tokens) * 1000 / rate) end
  return tokens - n, nil
end

local function check_tenant(ops)
  local per = {}
  for _, op in ipairs(ops) do
    local t = op.tenant
    if t then
      tenant_delta(op)
      local g = per[t.key]
      if not g then
        g = {key = t.key, dent = 0, dbytes = 0, devents = 0, n = 0, principal = t.principal}
        per[t.key] = g
        per[#per + 1] = g
      end
      g.dent, g.dbytes, g.devents = g.dent + t.dent, g.dbytes + t.dbytes, g.devents + t.devents
      if op.kind ~= "check" or t.devents > 0 then g.n = g.n + 1 end
    end
  end
  for _, g in ipairs(per) do
    local p = g.principal
    local h = redis.call("HMGET", g.key, "suspended", "qe", "qb", "ue", "ub", "rate", "burst", "prate", "pburst", "cl",
      "qev", "uev")
    if h[1] == "1" then return redis.error_reply("RXSUSPENDED " .. g.key) end
    g.maxlen = h[10] or nil
    local limits = {{"entities", h[2], h[4], g.dent}, {"bytes", h[3], h[5], g.dbytes},
      {"events", h[11], h[12], g.devents}}
    for _, q in ipairs(limits) do
      local use = tonumber(q[3] or "0")
      if q[2] and q[4] > 0 and use + q[4] > tonumber(q[2]) then
        return redis.error_reply("RXQUOTA " .. g.key .. " " .. q[1] .. " " .. q[2] .. " " .. fmt_int(use) .. " " ..
          fmt_int(q[4]))
      end
    end
    g.buckets = {}
    if g.n > 0 then
      local specs = {{"tenant", "rt", "rts", h[6], h[7]}, {"principal", "pt:" .. p, "pts:" .. p, h[8], h[9]}}
      for _, b in ipairs(specs) do
        if b[4] then
          local rate = tonumber(b[4])
          local left, wait = bucket(g.key, b[2], b[3], rate, tonumber(b[5] or b[4]), g.n)
          if not left then return redis.error_reply("RXRATE " .. g.key .. " " .. b[1] .. " " .. fmt_int(wait)) end
          g.buckets[#g.buckets + 1] = {b[2], tostring(left), b[3], fmt_int(now)}
        end
      end
    end
  end
  for _, op in ipairs(ops) do
    if op.tenant then
      op.tenant.group = per[op.tenant.key]
      op.tenant.maxlen = op.tenant.group.maxlen
    end
  end
  return nil
end

-- Tenant stage, accounting (after op's write): entity size, usage and cost counters; the token
-- buckets of a tenant hash are taken once per call, with its first op.
local function account_tenant(op)
  local t = op.tenant
  if not t or (op.kind == "check" and t.devents == 0) then return end
  if op.kind ~= "check" then
    if t.new then
      redis.call("HSET", t.sizes, t.member, t.new)
    elseif t.counted then
      redis.call("HDEL", t.sizes, t.member)
    end
    if t.dent ~= 0 then redis.call("HINCRBY", t.key, "ue", t.dent) end
    if t.dbytes ~= 0 then redis.call("HINCRBY", t.key, "ub", t.dbytes) end
  end
  if t.devents > 0 then redis.call("HINCRBY", t.key, "uev", t.devents) end
  redis.call("HINCRBY", t.key, "cops", 1)
  if t.written > 0 then redis.call("HINCRBY", t.key, "cwb", t.written) end
  local g = t.group
  if g and g.buckets then
    for _, b in ipairs(g.buckets) do redis.call("HSET", t.key, b[1], b[2], b[3], b[4]) end
    g.buckets = nil
  end
end

-- Stage check_all: every check of every op, before anything is written.
local function check_all(ops)
  for _, op in ipairs(ops) do
    local err = check_versions(op) or check_incr(op)
    if err then return err end
  end
  local claimed = {}
  for _, op in ipairs(ops) do
    local err = check_fence(op) or check_constraints(op, claimed)
    if err then return err end
  end
  return check_tenant(ops)
end

-- Stage write_fences: remember the highest fencing token seen per lock.
local function write_fences(ops)
  for _, op in ipairs(ops) do
    local f = op.fence
    if f and f.token > tonumber(redis.call("HGET", f.key, f.name) or "0") then
      redis.call("HSET", f.key, f.name, f.token)
    end
  end
end

-- One change record on op.changes (fields: {name, value} pairs, stored as ".name"). deadline, when
-- given, is recorded as "d": the entity's new expiry (server ms), or "0" when the write removed it, so
-- that a replay of the records (rxstate.admin.replay) reproduces expiries too.
local function change_record(head, op, kind, version, fields, deadline)
  local rec = {"XADD", op.changes, "MAXLEN", "~", (op.tenant and op.tenant.maxlen) or head.maxlen, "*",
    "c", op.coll, "i", op.id, "o", kind, "v", fmt_int(version), "s", op.sv,
    "a", head.actor, "t", fmt_int(now), "x", head.txid, "n", head.nparts}
  if deadline then
    rec[#rec + 1] = "d"
    rec[#rec + 1] = deadline
  end
  for _, f in ipairs(fields) do
    rec[#rec + 1] = "." .. f[1]
    rec[#rec + 1] = f[2]
  end
  return redis.call(unpack(rec))
end

-- One hash-chained audit entry (fields: a flat {name, value, ...} list, without "s" and "h").
local function audit_entry(stream, chain, fields)
  local h = redis.call("HMGET", chain, "h", "n")
  local n = tonumber(h[2] or "0") + 1
  fields[#fields + 1] = "s"
  fields[#fields + 1] = fmt_int(n)
  local canon, x = {h[1] or stream}, {"XADD", stream, "*"}
  for i, v in ipairs(fields) do
    -- a value holding a NUL (a compressed or encrypted one) is length-prefixed behind \1, which no
    -- other token starts with (names, ids and JSON text hold no control characters)
    canon[i + 1] = string.find(v, "\0", 1, true) and ("\1" .. #v .. ":" .. v) or v
    x[i + 3] = v
  end
  local hash = redis.sha1hex(table.concat(canon, "\0"))
  x[#x + 1] = "h"
  x[#x + 1] = hash
  local id = redis.call(unpack(x))
  redis.call("HSET", chain, "h", hash, "n", n)
  return id
end

-- The audit entry of one applied write (nothing without an "audit" section). Fields left out: "o"
-- (outcome) when "ok", "x" (transaction id) when there is none.
local function audit_write(head, op, kind, version, cid, changed)
  local a = op.audit
  if not a then return end
  local names = {}
  for i, kv in ipairs(changed) do names[i] = kv[1] end
  local f = {"p", a.principal, "a", kind, "c", op.coll, "i", op.id, "v", fmt_int(version), "t", fmt_int(now),
    "k", cid, "f", table.concat(names, ",")}
  if head.txid ~= "" then
    f[#f + 1] = "x"
    f[#f + 1] = head.txid
  end
  for _, kv in ipairs(changed) do
    if a.values[kv[1]] then
      f[#f + 1] = "." .. kv[1]
      f[#f + 1] = kv[2]
    end
  end
  audit_entry(a.stream, a.head, f)
end

local function reindex(op, new)
  for j, key in ipairs(op.idxkeys) do
    local old = op.old[j]
    if old ~= new[j] then
      if old then redis.call("ZREM", key, old .. SEP .. op.id) end
      if new[j] then redis.call("ZADD", key, 0, new[j] .. SEP .. op.id) end
    end
  end
end

-- The ttl-index hash remembers the indexed values of an entity with a TTL, so the reaper can clean
-- its index entries after Redis has dropped the hash.
local function remember_indexed(op, vals)
  local parts = {}
  for j, f in ipairs(op.idx) do
    if vals[j] then
      parts[#parts + 1] = f
      parts[#parts + 1] = vals[j]
    end
  end
  redis.call("HSET", op.ttlidx, op.id, table.concat(parts, SEP))
end

local function forget_ttl(op)
  redis.call("ZREM", op.exp, op.id)
  if #op.idx > 0 then redis.call("HDEL", op.ttlidx, op.id) end
end

local function write_delete(head, op)
  if op.cur == 0 then return {0, "", now, {}} end
  local version = op.cur + 1
  reindex(op, {})
  redis.call("HSET", op.vers, op.id, version)
  redis.call("DEL", op.ekey)
  redis.call("SREM", op.ids, op.id)
  if op.had_ttl then forget_ttl(op) end
  local cid = change_record(head, op, "delete", version, {})
  audit_write(head, op, "delete", version, cid, {})
  return {version, cid, now, {}}
end

-- Split "a<SEP>b<SEP>c" into its parts (the ttl-index hash's packed field/value pairs).
local function split_sep(s)
  local out, pos = {}, 1
  while true do
    local stop = string.find(s, SEP, pos, true)
    if not stop then out[#out + 1] = string.sub(s, pos); return out end
    out[#out + 1] = string.sub(s, pos, stop - 1)
    pos = stop + 1
  end
end

-- The index entries an expired entity left (remembered in the ttl-index hash), removed; the ids set
-- and the expiry zset lose it, and an "expire" change record says so. What reap.lua does per entity;
-- a write that re-creates an id Redis expired before any reaper came does it first, so the expiry
-- zset stays exact (a reaper must never take a live entity for the expired one).
local function record_expiry(head, coll, id, exp, ids, ttlidx, changes, idxkey, maxlen)
  redis.call("ZREM", exp, id)
  local packed = redis.call("HGET", ttlidx, id)
  if packed then
    local parts = split_sep(packed)
    for j = 1, #parts - 1, 2 do
      local key = idxkey[parts[j]]
      if key then redis.call("ZREM", key, parts[j + 1] .. SEP .. id) end
    end
    redis.call("HDEL", ttlidx, id)
  end
  if redis.call("SREM", ids, id) == 0 then return false end
  change_record(head, {changes = changes, coll = coll, id = id, sv = "0", tenant = maxlen and {maxlen = maxlen}},
    "expire", 0, {})
  return true
end

local function write_entity(head, op)
  local base = op.cur
  if base == 0 and redis.call("ZSCORE", op.exp, op.id) then
    local idxkey = {}
    for j, f in ipairs(op.idx) do idxkey[f] = op.idxkeys[j] end
    local reaper = {actor = "", txid = "", maxlen = head.maxlen, nparts = "1"}  -- as reap.lua records it
    record_expiry(reaper, op.coll, op.id, op.exp, op.ids, op.ttlidx, op.changes, idxkey, op.tenant and op.tenant.maxlen)
  end
  if base == 0 then
    base = tonumber(redis.call("HGET", op.vers, op.id) or "0")
    if base > 0 then redis.call("HDEL", op.vers, op.id) end
  end
  local version = base + 1
  local replace = op.kind == "put" or op.kind == "create"
  local changed, setv = {}, {}
  for _, f in ipairs(op.set) do
    changed[#changed + 1] = f
    setv[f[1]] = f[2]
  end
  if replace and op.cur > 0 then redis.call("DEL", op.ekey) end
  for _, inc in ipairs(op.incr) do
    local v = fmt_int(redis.call("HINCRBY", op.ekey, inc[1], inc[2]))
    changed[#changed + 1] = {inc[1], v}
    setv[inc[1]] = v
  end
  local kind = op.kind
  if replace then kind = (op.cur == 0) and "create" or "replace" end
  local ttl_ms = tonumber(op.ttl)
  local deadline = nil
  if ttl_ms and ttl_ms > 0 then deadline = fmt_int(now + ttl_ms) elseif op.had_ttl and op.ttl == "0" then deadline = "0" end
  local cid = change_record(head, op, kind, version, changed, deadline)
  audit_write(head, op, kind, version, cid, changed)
  local hset = {"HSET", op.ekey, "_v", fmt_int(version), "_sv", op.sv, "_ts", fmt_int(now), "_by", head.actor, "_o", cid}
  for _, f in ipairs(op.set) do
    hset[#hset + 1] = f[1]
    hset[#hset + 1] = f[2]
  end
  if ttl_ms and ttl_ms > 0 then
    hset[#hset + 1] = "_x"
    hset[#hset + 1] = fmt_int(now + ttl_ms)
  end
  redis.call(unpack(hset))
  if op.cur == 0 then redis.call("SADD", op.ids, op.id) end
  local new = {}
  for j, f in ipairs(op.idx) do
    if setv[f] then new[j] = setv[f] elseif not replace then new[j] = op.old[j] end
  end
  reindex(op, new)
  -- An entity that may expire keeps its version in the versions hash too: Redis drops the hash at
  -- expiry, and a re-created entity must continue from the last version (ABA-safe, as after a delete).
  if ttl_ms and ttl_ms > 0 then
    redis.call("PEXPIREAT", op.ekey, now + ttl_ms)  -- exactly the _x deadline (what a replay sets)
    redis.call("ZADD", op.exp, now + ttl_ms, op.id)
    redis.call("HSET", op.vers, op.id, version)
    if #op.idx > 0 then remember_indexed(op, new) end
  elseif op.had_ttl and (op.ttl == "0") then
    if not replace then
      redis.call("PERSIST", op.ekey)
      redis.call("HDEL", op.ekey, "_x")
    end
    redis.call("HDEL", op.vers, op.id)
    forget_ttl(op)
  elseif op.had_ttl then
    redis.call("HSET", op.vers, op.id, version)
    if #op.idx > 0 then remember_indexed(op, new) end
  end
  local full = {}
  if op.full or (op.full_unless and op.full_unless ~= op.cur) then full = redis.call("HGETALL", op.ekey) end
  return {version, cid, now, full}
end

-- Stage write_all: one reply per op: {version, change id, server time ms, {field, value, ...} or {}}.
local function write_all(head, ops)
  local results = {}
  for i, op in ipairs(ops) do
    if op.kind == "check" then
      results[i] = {op.cur, "", now, {}}
    elseif op.kind == "delete" then
      results[i] = write_delete(head, op)
    else
      results[i] = write_entity(head, op)
    end
    account_tenant(op)
  end
  return results
end
