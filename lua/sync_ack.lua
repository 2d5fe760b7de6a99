--[[ sync_ack.lua — a reader acknowledges how far it has applied this replica's log; entries every
member has acknowledged are trimmed.

KEYS[1] the partition's ack hash (reader id -> stream id), KEYS[2] its log stream, KEYS[3] its sync
  meta hash (field "trimmed": the last stream id trimmed away)
ARGV[1] reader id, ARGV[2] the stream id it has applied up to, ARGV[3] n, ARGV[4..] the n replica
  ids that read this log (every member but this replica)
Returns: {number of entries trimmed, the stream id trimmed up to or ""}
Errors: none.
]]

local function parse_id(id)
  local ms, seq = string.match(id, "^(%d+)-(%d+)$")
  return tonumber(ms or "0"), tonumber(seq or "0")
end

local function less(x, y)
  local xm, xs = parse_id(x)
  local ym, ys = parse_id(y)
  return xm < ym or (xm == ym and xs < ys)
end

local old = redis.call("HGET", KEYS[1], ARGV[1])
if not old or less(old, ARGV[2]) then redis.call("HSET", KEYS[1], ARGV[1], ARGV[2]) end
local low = nil
for i = 1, tonumber(ARGV[3]) do
  local ack = redis.call("HGET", KEYS[1], ARGV[3 + i])
  if not ack then return {0, ""} end
  if not low or less(ack, low) then low = ack end
end
if not low or low == "0-0" then return {0, ""} end
local trimmed = redis.call("HGET", KEYS[3], "trimmed")
if trimmed and not less(trimmed, low) then return {0, ""} end
local ms, seq = parse_id(low)
local n = redis.call("XTRIM", KEYS[2], "MINID", string.format("%d-%d", ms, seq + 1))
redis.call("HSET", KEYS[3], "trimmed", low)
return {n, low}
