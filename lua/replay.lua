--[[ replay.lua — apply archived change records to one partition, the way the write path applied them.

A point-in-time recovery (rxstate.admin.replay) restores a backup, then replays the change records
written after it, in stream order, through this script: each record sets what write_path.lua's
write_entity / write_delete (or reap.lua, for an expiry) set: the entity hash with _v/_sv/_ts/_by/_o
(_o: the record's own stream id), the ids set, the versions of deleted ids, the indexes, the TTL
bookkeeping (from the record's "d" deadline), and the record itself, appended under its original id.
Keys do not expire during a replay: a hash whose deadline has passed by a record's time is dropped as
Redis dropped it then, and rxstate.admin.replay sets the remaining deadlines at the end.

KEYS: [1] the partition's change stream, then per record: entity hash, ids set, versions hash, expiry
      zset, ttl-index hash, then the collection's index zsets (as many as ARGV names)
ARGV: per record: stream id, number n of field pairs, (name, value) * n (the record as stored),
      number m of indexes, index field name * m
Returns: the number of records applied.
Errors: RXFORMAT detail   a record without collection, id, op or version
]]

-- @library write_path

local function pairs_of(packed)
  local out = {}
  for f, v in string.gmatch(packed .. SEP, "([^%z]*)%z([^%z]*)%z") do out[#out + 1] = {f, v} end
  return out
end

local function replay_write(op, rec, sets, sid)
  local kind = rec.o
  local replace = kind == "create" or kind == "replace"
  if replace then redis.call("DEL", op.ekey) end
  if kind == "create" then redis.call("HDEL", op.vers, op.id) end
  local hset = {"HSET", op.ekey, "_v", rec.v, "_sv", rec.s, "_ts", rec.t, "_by", rec.a, "_o", sid}
  local setv = {}
  for _, f in ipairs(sets) do
    hset[#hset + 1] = f[1]
    hset[#hset + 1] = f[2]
    setv[f[1]] = f[2]
  end
  local d = rec.d
  if d and d ~= "0" then
    hset[#hset + 1] = "_x"
    hset[#hset + 1] = d
  end
  redis.call(unpack(hset))
  if kind == "create" then redis.call("SADD", op.ids, op.id) end
  local new = {}
  for j, f in ipairs(op.idx) do
    if setv[f] then new[j] = setv[f] elseif not replace then new[j] = op.old[j] end
  end
  reindex(op, new)
  if d and d ~= "0" then
    redis.call("ZADD", op.exp, d, op.id)
    redis.call("HSET", op.vers, op.id, rec.v)
    if #op.idx > 0 then remember_indexed(op, new) end
  elseif d == "0" then
    if not replace then redis.call("HDEL", op.ekey, "_x") end
    redis.call("HDEL", op.vers, op.id)
    forget_ttl(op)
  elseif op.had_ttl then
    redis.call("HSET", op.vers, op.id, rec.v)
    if #op.idx > 0 then remember_indexed(op, new) end
  end
end

local function replay_delete(op, rec)
  reindex(op, {})
  redis.call("HSET", op.vers, op.id, rec.v)
  redis.call("DEL", op.ekey)
  redis.call("SREM", op.ids, op.id)
  if op.had_ttl then forget_ttl(op) end
end

local function replay_expire(op)
  redis.call("ZREM", op.exp, op.id)
  local packed = redis.call("HGET", op.ttlidx, op.id)
  if packed then
    local byfield = {}
    for j, f in ipairs(op.idx) do byfield[f] = op.idxkeys[j] end
    for _, kv in ipairs(pairs_of(packed)) do
      if byfield[kv[1]] then redis.call("ZREM", byfield[kv[1]], kv[2] .. SEP .. op.id) end
    end
    redis.call("HDEL", op.ttlidx, op.id)
  end
  redis.call("DEL", op.ekey)
  redis.call("SREM", op.ids, op.id)
end

local ki, ai, applied = 2, 1, 0
while ai <= #ARGV do
  local sid, n = ARGV[ai], tonumber(ARGV[ai + 1])
  ai = ai + 2
  local rec, flat, sets = {}, {}, {}
  for _ = 1, n do
    local name, value = ARGV[ai], ARGV[ai + 1]
    ai = ai + 2
    flat[#flat + 1] = name
    flat[#flat + 1] = value
    if string.sub(name, 1, 1) == "." then sets[#sets + 1] = {string.sub(name, 2), value} else rec[name] = value end
  end
  if not (rec.c and rec.i and rec.o and rec.v) then
    return redis.error_reply("RXFORMAT record " .. sid .. " lacks collection, id, op or version")
  end
  local op = {id = rec.i, coll = rec.c, ekey = KEYS[ki], ids = KEYS[ki + 1], vers = KEYS[ki + 2],
    exp = KEYS[ki + 3], ttlidx = KEYS[ki + 4], idx = {}, idxkeys = {}, old = {}}
  ki = ki + 5
  for j = 1, tonumber(ARGV[ai]) do
    op.idx[j] = ARGV[ai + j]
    op.idxkeys[j] = KEYS[ki]
    ki = ki + 1
  end
  ai = ai + 1 + #op.idx
  local wanted = {"HMGET", op.ekey, "_x"}
  for _, f in ipairs(op.idx) do wanted[#wanted + 1] = f end
  local h = redis.call(unpack(wanted))
  if h[1] and rec.t and tonumber(rec.t) > tonumber(h[1]) then
    -- the hash had expired by then: Redis had dropped it (its ids and index entries wait for the reaper)
    redis.call("DEL", op.ekey)
    h = {false}
  end
  op.had_ttl = h[1] ~= false and h[1] ~= nil
  for j = 1, #op.idx do op.old[j] = h[1 + j] end
  if rec.o == "delete" then
    replay_delete(op, rec)
  elseif rec.o == "expire" then
    replay_expire(op)
  else
    replay_write(op, rec, sets, sid)
  end
  redis.call("XADD", KEYS[1], sid, unpack(flat))
  applied = applied + 1
end
return applied
