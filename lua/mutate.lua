--[[ mutate.lua — the one write path: apply N entity operations atomically.

Every change to an entity goes through this script: it checks every operation first (versions,
existence, integer fields, constraints), and only when all checks pass does it write. So either all
operations happen, with their version bumps, index updates and change records, or none does.

KEYS, per operation i, in order (6 + nidx_i keys each):
  entity hash, ids set, expiry zset, ttl-index hash, change stream, versions hash, index zset 1..nidx_i
  (the versions hash keeps the last version of each deleted entity: a re-created entity's versions
  continue from it, so a version names one state of an id for good and compare-and-set is ABA-safe)
ARGV:
  [1] actor, [2] transaction id ("" if none), [3] change stream MAXLEN (~), [4] number of operations,
  [5] number of partitions the batch touches,
  then per operation:
    op ("put" | "create" | "update" | "incr" | "delete" | "check" | "prepare" | "resolve"), collection, id,
    expected version ("" = unchecked), schema version,
    ttl ("-" keep, "0" persist, N = expire after N ms), want full hash in reply ("1" | "0"),
    nset, (field, encoded value) * nset,
    nincr, (field, integer amount, min, max) * nincr   (min/max: bounds, "" for none),
    nidx, index field name * nidx          (names of the index zsets passed in KEYS, same order)
    nfence, ncons, ...                     (fenced writes and constraints: see the end of this header)
Returns: one array per operation: {version, change id, server time ms, {field, value, ...} or {}}
Transactions (see the Phase 0 comment): "check" verifies a version and writes nothing; one "prepare" op
turns the call into the first phase of a cross-partition commit; one "resolve" op applies (or releases)
a prepared transaction's intents in this partition.
Errors (prefix, then space-separated details):
  RXCONFLICT key expected actual     expected version did not match
  RXEXISTS key actual                create of an existing entity
  RXNOTFOUND key                     update/incr of a missing entity
  RXNOTINT key field                 incr of a field whose stored value is not an integer
  RXRANGE key field                  incr would leave the exact integer range (|n| > 2^53-1)
  RXINTEGRITY key bounds:field value  incr would leave the field's declared bounds
  RXINTEGRITY key constraint detail   a declared constraint would be violated
  RXREFSTALE key                      the caller's view of declared references is out of date
  RXFENCED key lock token seen|expired  a fenced write's lease is older than one already seen, or expired
  RXCONFLICT key expected actual ...  stale "check" ops: every stale key of the call, in one error
  RXINTENT key owner                 the entity is locked by another transaction's intent ("txid@primary")
  RXTXABORTED record                 "prepare" of a primary partition whose transaction was aborted already
Fences and constraints, at the end of each operation's ARGV:
  nfence (0 | 1), then if 1: lock name, fencing token, lease deadline (server ms)
                             (KEYS: + the partition's fence hash)
  ncons, then per constraint: kind, constraint name, field, and by kind:
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
]]

local actor, txid, maxlen = ARGV[1], ARGV[2], ARGV[3]
local nops, nparts = tonumber(ARGV[4]), ARGV[5]
local SEP = "\0"
local MAXINT = 9007199254740991

local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- Parse every operation before touching anything.
local ops = {}
local a, k = 6, 1
for i = 1, nops do
  local op = {
    kind = ARGV[a], coll = ARGV[a + 1], id = ARGV[a + 2], expected = ARGV[a + 3],
    sv = ARGV[a + 4], ttl = ARGV[a + 5], full = ARGV[a + 6] == "1",
    ekey = KEYS[k], ids = KEYS[k + 1], exp = KEYS[k + 2], ttlidx = KEYS[k + 3], changes = KEYS[k + 4],
    vers = KEYS[k + 5], set = {}, incr = {}, idx = {}, idxkeys = {},
  }
  a = a + 7
  k = k + 6
  local nset = tonumber(ARGV[a]); a = a + 1
  for j = 1, nset do
    op.set[j] = {ARGV[a], ARGV[a + 1]}; a = a + 2
  end
  local nincr = tonumber(ARGV[a]); a = a + 1
  for j = 1, nincr do
    op.incr[j] = {ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])}
    a = a + 4
  end
  local nidx = tonumber(ARGV[a]); a = a + 1
  for j = 1, nidx do
    op.idx[j] = ARGV[a]; op.idxkeys[j] = KEYS[k]; a = a + 1; k = k + 1
  end
  -- Fenced writes and integrity constraints (see the header).
  if ARGV[a] == "1" then
    op.fence = {name = ARGV[a + 1], token = tonumber(ARGV[a + 2]), deadline = tonumber(ARGV[a + 3]), key = KEYS[k]}
    a = a + 4; k = k + 1
  else
    a = a + 1
  end
  op.cons = {}
  local ncons = tonumber(ARGV[a]); a = a + 1
  for j = 1, ncons do
    local c = {kind = ARGV[a], name = ARGV[a + 1], field = ARGV[a + 2], scan = {}}
    a = a + 3
    if c.kind == "x" then
      c.referrer, c.value = ARGV[a], ARGV[a + 1]; a = a + 2
    end
    if c.kind == "u" or c.kind == "x" then
      for s = 1, tonumber(ARGV[a]) do c.scan[s] = {KEYS[k], KEYS[k + 1]}; k = k + 2 end
      a = a + 1
    elseif c.kind == "r" then
      c.target = KEYS[k]; k = k + 1
    elseif c.kind == "b" then
      c.low, c.high = ARGV[a], ARGV[a + 1]; a = a + 2
    elseif c.kind == "e" or c.kind == "d" then
      c.values = {}
      for s = 1, tonumber(ARGV[a]) do c.values[ARGV[a + s]] = true end
      c.count = tonumber(ARGV[a])
      a = a + 1 + c.count
      if c.kind == "d" then c.target = KEYS[k]; k = k + 1 end
    end
    op.cons[j] = c
  end
  ops[i] = op
end

-- Phase 0: transactions. An entity locked by another transaction (hash field _t = "<txid>@<primary
-- partition>", set by a "prepare") refuses every write (RXINTENT): the client settles that transaction
-- first. Stale versions are collected, so one RXCONFLICT names every stale key.
-- A "prepare" op (KEYS: payload hash, intent index, transaction record or payload hash again) makes the
-- call lock its entities and store the payload instead of writing (its fields: owner "<txid>@<primary>",
-- parts, n, ops = the payload; its ttl: how long the locks hold). A "resolve" op (KEYS: payload hash,
-- intent index, record or payload) makes it apply the given ops of transaction txid, then release its
-- locks; without the payload hash (already resolved) the call does nothing.
local txn, kept, stale = nil, {}, {}
for _, op in ipairs(ops) do
  if op.kind == "prepare" or op.kind == "resolve" then txn = op else kept[#kept + 1] = op end
end
if txn and txn.kind == "resolve" and redis.call("EXISTS", txn.ekey) == 0 then return {} end
ops = kept
local locked = ops
kept = {}
for _, op in ipairs(ops) do
  -- One read per entity, for every phase: version, intent, expiry deadline, old indexed values, old
  -- values of incr fields.
  local wanted = {"HMGET", op.ekey, "_v", "_t", "_x"}
  for _, f in ipairs(op.idx) do wanted[#wanted + 1] = f end
  for _, inc in ipairs(op.incr) do wanted[#wanted + 1] = inc[1] end
  local h = redis.call(unpack(wanted))
  op.snap = h
  local cur = tonumber(h[1] or "0")
  if h[2] and (txid == "" or string.match(h[2], "^(.*)@") ~= txid) then
    return redis.error_reply("RXINTENT " .. op.ekey .. " " .. h[2])
  end
  if op.kind == "check" and op.expected ~= "" and tonumber(op.expected) ~= cur then
    stale[#stale + 1] = op.ekey .. " " .. op.expected .. " " .. string.format("%d", cur)
  end
  -- An entity whose TTL ran out while locked has nothing left to update, increment or delete.
  local gone = cur == 0 and (op.kind == "update" or op.kind == "incr" or op.kind == "delete")
  if not (txn and txn.kind == "resolve" and gone) then
    kept[#kept + 1] = op
  end
end
if #stale > 0 then return redis.error_reply("RXCONFLICT " .. table.concat(stale, " ")) end
if txn and txn.kind == "resolve" then ops = kept end

local function txn_fields()
  local f = {}
  for _, kv in ipairs(txn.set) do f[kv[1]] = kv[2] end
  return f
end

local function txn_prepare()
  local f = txn_fields()
  if txn.exp ~= txn.ekey and redis.call("EXISTS", txn.exp) == 1 then
    return redis.error_reply("RXTXABORTED " .. txn.exp)
  end
  local deadline = string.format("%d", now + tonumber(txn.ttl))
  for _, op in ipairs(ops) do redis.call("HSET", op.ekey, "_t", f.owner) end
  local h = {"HSET", txn.ekey, "d", deadline}
  for _, kv in ipairs(txn.set) do h[#h + 1] = kv[1]; h[#h + 1] = kv[2] end
  redis.call(unpack(h))
  redis.call("HSET", txn.ids, txid, f.owner .. " " .. deadline)
  if txn.exp ~= txn.ekey then
    redis.call("HSET", txn.exp, "s", "pending", "d", deadline, "p", f.parts)
  end
  return {deadline}
end

local function txn_release()
  local owner = txn_fields().owner
  for _, op in ipairs(locked) do
    local h = redis.call("HMGET", op.ekey, "_v", "_t")
    if h[2] == owner then
      if h[1] then redis.call("HDEL", op.ekey, "_t") else redis.call("DEL", op.ekey) end
    end
  end
  redis.call("DEL", txn.ekey)
  if txn.exp == txn.ekey then redis.call("HDEL", txn.ids, txid) end  -- the primary's goes with the record
end

-- Phase 1: checks. No write happens before all of them pass.
for _, op in ipairs(ops) do
  local snap = op.snap
  local cur = tonumber(snap[1] or "0")
  op.cur = cur
  op.had_ttl = snap[3] ~= false
  op.old = {}
  for j = 1, #op.idx do op.old[j] = snap[3 + j] end
  op.incr_old = {}
  for j = 1, #op.incr do op.incr_old[j] = snap[3 + #op.idx + j] end
  if op.kind == "create" and cur ~= 0 then
    return redis.error_reply("RXEXISTS " .. op.ekey .. " " .. string.format("%d", cur))
  end
  if op.expected ~= "" and tonumber(op.expected) ~= cur then
    return redis.error_reply("RXCONFLICT " .. op.ekey .. " " .. op.expected .. " " .. string.format("%d", cur))
  end
  if (op.kind == "update" or op.kind == "incr") and cur == 0 then
    return redis.error_reply("RXNOTFOUND " .. op.ekey)
  end
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
      return redis.error_reply("RXINTEGRITY " .. op.ekey .. " bounds:" .. inc[1] .. " " .. inc[1] .. "=" ..
        string.format("%d", after) .. " outside [" .. (inc[3] and string.format("%d", inc[3]) or "") ..
        ", " .. (inc[4] and string.format("%d", inc[4]) or "") .. "]")
    end
  end
end

-- Phase 1b: fencing tokens and declared integrity constraints.
local function after_value(op, f)
  for _, inc in ipairs(op.incr) do
    if inc[1] == f then
      return string.format("%d", tonumber(redis.call("HGET", op.ekey, f) or "0") + inc[2])
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
  if n == math.floor(n) and math.abs(n) <= MAXINT then return string.format("%d", n) end
  return tostring(n)
end

local function integrity(op, c, detail)
  return redis.error_reply("RXINTEGRITY " .. op.ekey .. " " .. c.name .. " " .. detail)
end

-- A "resolve" applies a transaction whose prepare passed these checks: it must not fail now.
local checked = (txn and txn.kind == "resolve") and {} or ops
local claimed = {}
for _, op in ipairs(checked) do
  if op.fence then
    local seen = tonumber(redis.call("HGET", op.fence.key, op.fence.name) or "0")
    if op.fence.token < seen then
      return redis.error_reply("RXFENCED " .. op.ekey .. " " .. op.fence.name .. " " .. string.format("%d", op.fence.token) .. " " .. string.format("%d", seen))
    end
    if now > op.fence.deadline then
      return redis.error_reply("RXFENCED " .. op.ekey .. " " .. op.fence.name .. " " .. string.format("%d", op.fence.token) .. " expired")
    end
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
      if holder then return integrity(op, c, "still referenced by " .. c.referrer .. ":" .. holder) end
    else
      local v = after_value(op, c.field)
      if v and v ~= "null" then
        if c.kind == "u" then
          local tag = c.name .. SEP .. v
          local holder = held_elsewhere(c.scan, v, op.id)
          if not holder and claimed[tag] and claimed[tag] ~= op.id then holder = claimed[tag] end
          if holder then return integrity(op, c, c.field .. "=" .. v .. " already used by " .. holder) end
          claimed[tag] = op.id
        elseif c.kind == "r" then
          if redis.call("EXISTS", c.target) == 0 then
            return integrity(op, c, c.field .. "=" .. v .. " names no existing entity")
          end
        elseif c.kind == "b" then
          local n, low, high = tonumber(v), bound_value(op, c.low), bound_value(op, c.high)
          if n and ((low and n < low) or (high and n > high)) then
            return integrity(op, c, c.field .. "=" .. v .. " outside [" .. num_str(low) .. ", " ..
              num_str(high) .. "]")
          end
        elseif c.kind == "e" then
          if not c.values[v] then return integrity(op, c, c.field .. "=" .. v .. " is not allowed") end
        end
      end
    end
  end
end
for _, op in ipairs(checked) do
  if op.fence then
    local seen = tonumber(redis.call("HGET", op.fence.key, op.fence.name) or "0")
    if op.fence.token > seen then redis.call("HSET", op.fence.key, op.fence.name, op.fence.token) end
  end
end
if txn and txn.kind == "prepare" then return txn_prepare() end

-- Phase 2: writes.
local function change_record(op, kind, version, fields)
  local rec = {"XADD", op.changes, "MAXLEN", "~", maxlen, "*",
    "c", op.coll, "i", op.id, "o", kind, "v", string.format("%d", version), "s", op.sv,
    "a", actor, "t", string.format("%d", now), "x", txid, "n", nparts}
  for _, f in ipairs(fields) do
    rec[#rec + 1] = "." .. f[1]
    rec[#rec + 1] = f[2]
  end
  return redis.call(unpack(rec))
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

local results = {}
for i, op in ipairs(ops) do
  if op.kind == "check" then
    results[i] = {op.cur, "", now, {}}
  elseif op.kind == "delete" then
    if op.cur == 0 then
      results[i] = {0, "", now, {}}
    else
      local version = op.cur + 1
      reindex(op, {})
      redis.call("HSET", op.vers, op.id, version)
      redis.call("DEL", op.ekey)
      redis.call("SREM", op.ids, op.id)
      if op.had_ttl then forget_ttl(op) end
      local cid = change_record(op, "delete", version, {})
      results[i] = {version, cid, now, {}}
    end
  else
    local base = op.cur
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
      local v = string.format("%d", redis.call("HINCRBY", op.ekey, inc[1], inc[2]))
      changed[#changed + 1] = {inc[1], v}
      setv[inc[1]] = v
    end
    local kind = op.kind
    if replace then kind = (op.cur == 0) and "create" or "replace" end
    local cid = change_record(op, kind, version, changed)
    local hset = {"HSET", op.ekey, "_v", string.format("%d", version), "_sv", op.sv, "_ts", string.format("%d", now),
      "_by", actor, "_o", cid}
    for _, f in ipairs(op.set) do
      hset[#hset + 1] = f[1]
      hset[#hset + 1] = f[2]
    end
    local ttl_ms = tonumber(op.ttl)
    if ttl_ms and ttl_ms > 0 then
      hset[#hset + 1] = "_x"
      hset[#hset + 1] = string.format("%d", now + ttl_ms)
    end
    redis.call(unpack(hset))
    if op.cur == 0 then redis.call("SADD", op.ids, op.id) end
    local new = {}
    for j, f in ipairs(op.idx) do
      if setv[f] then new[j] = setv[f] elseif not replace then new[j] = op.old[j] end
    end
    reindex(op, new)
    if ttl_ms and ttl_ms > 0 then
      redis.call("PEXPIRE", op.ekey, ttl_ms)
      redis.call("ZADD", op.exp, now + ttl_ms, op.id)
      if #op.idx > 0 then remember_indexed(op, new) end
    elseif op.had_ttl and (op.ttl == "0") then
      if not replace then
        redis.call("PERSIST", op.ekey)
        redis.call("HDEL", op.ekey, "_x")
      end
      forget_ttl(op)
    elseif op.had_ttl and #op.idx > 0 then
      remember_indexed(op, new)
    end
    local full = {}
    if op.full then full = redis.call("HGETALL", op.ekey) end
    results[i] = {version, cid, now, full}
  end
end
if txn then txn_release() end
return results
