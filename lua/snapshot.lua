--[[ snapshot.lua — replace an aggregate's snapshot unless the stored one is at least as good.

A snapshot is kept when it covers more events, or when it is stored with a newer state schema (an
older-schema snapshot that could not be upcast is replaced by a rebuilt one of the same version).

KEYS: [1] snapshot hash
ARGV: [1] covered version, [2] state schema version, then (field, value) pairs of the whole hash
Returns: 1 if written, 0 if the stored snapshot was kept
Errors: none
]]

local key = KEYS[1]
local v, sv = tonumber(ARGV[1]), tonumber(ARGV[2])
local old = redis.call("HMGET", key, "_v", "_sv")
local ov, osv = tonumber(old[1] or "0"), tonumber(old[2] or "0")
if sv < osv or (sv == osv and v <= ov) then
  return 0
end
redis.call("DEL", key)
local hset = {"HSET", key}
for j = 3, #ARGV do hset[#hset + 1] = ARGV[j] end
redis.call(unpack(hset))
return 1
