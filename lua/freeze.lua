--[[ freeze.lua — copy every key of one slot's key group at one instant, for a consistent backup.

A backup reads a partition (or the namespace's own keys) through this script: in one atomic call it
finds the group's keys (SCAN with a MATCH glob, inside the script, so no write lands between listing and
copying) and COPYs each to a frozen twin under a prefix of the same hash tag. The caller then reads the
twins at leisure, in bounded chunks, while writers go on, and deletes them (they also expire by
themselves, so a backup that dies leaves nothing behind for long).

KEYS: [1] a key of the group's slot: the partition's change stream (its last id is the backup's offset)
      or the namespace's metadata hash
ARGV: [1] MATCH glob of the group's keys ("rx:{ns:p}:*"), [2] prefix of the frozen twins
      ("rxb:{ns:p}:<token>:"; same hash tag, so same slot), [3] how long the twins live, in ms
Returns: {server time ms, last id of KEYS[1] if it is a stream else "", key, its deadline, key, ...}
         (a deadline is PEXPIRETIME: the source key's expiry in server ms, -1 for none)
Cost: SCAN visits the whole keyspace of the node once per call (it cannot be narrowed to a slot on a
standalone server); COPY is linear in the group's size. The twins double the group's memory for the
duration of the backup: one group at a time.
Errors: none of its own.
]]

local clock = redis.call("TIME")
local out = {tostring(tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)), ""}
if redis.call("TYPE", KEYS[1])["ok"] == "stream" then
  local last = redis.call("XREVRANGE", KEYS[1], "+", "-", "COUNT", 1)
  if #last > 0 then out[2] = last[1][1] end
end
local glob, twin, hold = ARGV[1], ARGV[2], ARGV[3]
local cursor = "0"
repeat
  local page = redis.call("SCAN", cursor, "MATCH", glob, "COUNT", 1000)
  cursor = page[1]
  for _, key in ipairs(page[2]) do
    redis.call("COPY", key, twin .. key, "REPLACE")
    redis.call("PEXPIRE", twin .. key, hold)
    out[#out + 1] = key
    out[#out + 1] = redis.call("PEXPIRETIME", key)
  end
until cursor == "0"
return out
