--[[ mutate.lua — the one write path: apply N entity operations atomically.

Every change to an entity goes through this script: it checks every operation first (versions,
existence, integer fields, constraints), and only when all checks pass does it write. So either all
operations happen, with their version bumps, index updates and change records, or none does.

KEYS, per operation i, in order (5 + nidx_i keys each):
  entity hash, ids set, expiry zset, ttl-index hash, change stream, index zset 1..nidx_i
ARGV:
  [1] actor, [2] transaction id ("" if none), [3] change stream MAXLEN (~), [4] number of operations,
  [5] number of partitions the batch touches,
  then per operation:
    op ("put" | "create" | "update" | "incr" | "delete"), collection, id,
    expected version ("" = unchecked), schema version,
    ttl ("-" keep, "0" persist, N = expire after N ms), want full hash in reply ("1" | "0"),
    nset, (field, encoded value) * nset,
    nincr, (field, integer amount, min, max) * nincr   (min/max: bounds, "" for none),
    nidx, index field name * nidx          (names of the index zsets passed in KEYS, same order)
Returns: one array per operation: {version, change id, server time ms, {field, value, ...} or {}}
Errors (prefix, then space-separated details):
  RXCONFLICT key expected actual     expected version did not match
  RXEXISTS key actual                create of an existing entity
  RXNOTFOUND key                     update/incr of a missing entity
  RXNOTINT key field                 incr of a field whose stored value is not an integer
  RXRANGE key field                  incr would leave the exact integer range (|n| > 2^53-1)
  RXINTEGRITY key bounds:field value  incr would leave the field's declared bounds
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
    set = {}, incr = {}, idx = {}, idxkeys = {},
  }
  a = a + 7
  k = k + 5
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
  ops[i] = op
end

-- Phase 1: checks. No write happens before all of them pass.
for _, op in ipairs(ops) do
  -- One read per entity: version, expiry deadline, old indexed values, old values of incr fields.
  local wanted = {"HMGET", op.ekey, "_v", "_x"}
  for _, f in ipairs(op.idx) do wanted[#wanted + 1] = f end
  for _, inc in ipairs(op.incr) do wanted[#wanted + 1] = inc[1] end
  local snap = redis.call(unpack(wanted))
  local cur = tonumber(snap[1] or "0")
  op.cur = cur
  op.had_ttl = snap[2] ~= false
  op.old = {}
  for j = 1, #op.idx do op.old[j] = snap[2 + j] end
  op.incr_old = {}
  for j = 1, #op.incr do op.incr_old[j] = snap[2 + #op.idx + j] end
  if op.kind == "create" and cur ~= 0 then
    return redis.error_reply("RXEXISTS " .. op.ekey .. " " .. cur)
  end
  if op.expected ~= "" and tonumber(op.expected) ~= cur then
    return redis.error_reply("RXCONFLICT " .. op.ekey .. " " .. op.expected .. " " .. cur)
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

-- Phase 2: writes.
local function change_record(op, kind, version, fields)
  local rec = {"XADD", op.changes, "MAXLEN", "~", maxlen, "*",
    "c", op.coll, "i", op.id, "o", kind, "v", tostring(version), "s", op.sv,
    "a", actor, "t", tostring(now), "x", txid, "n", nparts}
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
  if op.kind == "delete" then
    if op.cur == 0 then
      results[i] = {0, "", now, {}}
    else
      local version = op.cur + 1
      reindex(op, {})
      redis.call("DEL", op.ekey)
      redis.call("SREM", op.ids, op.id)
      if op.had_ttl then forget_ttl(op) end
      local cid = change_record(op, "delete", version, {})
      results[i] = {version, cid, now, {}}
    end
  else
    local version = op.cur + 1
    local replace = op.kind == "put" or op.kind == "create"
    local changed, setv = {}, {}
    for _, f in ipairs(op.set) do
      changed[#changed + 1] = f
      setv[f[1]] = f[2]
    end
    if replace and op.cur > 0 then redis.call("DEL", op.ekey) end
    for _, inc in ipairs(op.incr) do
      local v = tostring(redis.call("HINCRBY", op.ekey, inc[1], inc[2]))
      changed[#changed + 1] = {inc[1], v}
      setv[inc[1]] = v
    end
    local kind = op.kind
    if replace then kind = (op.cur == 0) and "create" or "replace" end
    local cid = change_record(op, kind, version, changed)
    local hset = {"HSET", op.ekey, "_v", tostring(version), "_sv", op.sv, "_ts", tostring(now),
      "_by", actor, "_o", cid}
    for _, f in ipairs(op.set) do
      hset[#hset + 1] = f[1]
      hset[#hset + 1] = f[2]
    end
    local ttl_ms = tonumber(op.ttl)
    if ttl_ms and ttl_ms > 0 then
      hset[#hset + 1] = "_x"
      hset[#hset + 1] = tostring(now + ttl_ms)
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
return results
