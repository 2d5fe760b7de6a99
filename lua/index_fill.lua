--[[ index_fill.lua — build a secondary index of a live collection, a batch of entities at a time.

An index added to (or rebuilt on) a collection that writers keep writing: the writers maintain it for
every entity they write from the moment they open the collection with it; this script brings in the
entities nobody writes meanwhile. Each call is atomic over its batch, so a batch and a concurrent
write of one of its entities never interleave: whichever runs second sees the other's result.

KEYS: [1] the index zset, [2..] entity hashes (one per id in ARGV)
ARGV: [1] mode: "fill" or "sweep", [2] the indexed field, then
      fill:  the ids of the KEYS[2..] entities: each entity's current value is added (value \0 id)
      sweep: index members ("value \0 id", split at the last NUL), one per KEYS[2..] entity (the
             id's): a member whose entity no longer holds that
             value (changed, deleted, expired) is removed
Returns: the number of members added (fill) or removed (sweep).
Errors: RXFORMAT detail   an unknown mode, or ids and keys that do not pair up
]]

local SEP = "\0"
local mode, field = ARGV[1], ARGV[2]
if #KEYS - 1 ~= #ARGV - 2 then
  return redis.error_reply("RXFORMAT " .. (#KEYS - 1) .. " entity keys for " .. (#ARGV - 2) .. " ids")
end
local n = 0
if mode == "fill" then
  for j = 3, #ARGV do
    local v = redis.call("HGET", KEYS[j - 1], field)
    if v then n = n + redis.call("ZADD", KEYS[1], 0, v .. SEP .. ARGV[j]) end
  end
elseif mode == "sweep" then
  for j = 3, #ARGV do
    local member = ARGV[j]
    local cut = string.match(member, ".*()%z")  -- the last NUL: ids hold none, values may
    local value = cut and string.sub(member, 1, cut - 1)
    if not value or redis.call("HGET", KEYS[j - 1], field) ~= value then
      n = n + redis.call("ZREM", KEYS[1], member)
    end
  end
else
  return redis.error_reply("RXFORMAT unknown mode " .. tostring(mode))
end
return n
