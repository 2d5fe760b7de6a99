--[[ project.lua — apply a projection's writes for one event and advance its checkpoint, atomically.

The writes go through the whole of mutate.lua (included below as a function), so they are ordinary
entity writes with versions, indexes and change records. The checkpoint only moves from the position
the runner last saw, so two runners of one projection cannot both apply the same event.

KEYS: the KEYS of one mutate.lua call (possibly none), then the checkpoint key of the event's partition
ARGV: [1] checkpoint the runner expects ("" = none yet), [2] the event's stream id (the new checkpoint),
  then the ARGV of that mutate.lua call (with zero operations when the event writes nothing)
Returns: the mutate.lua reply
Errors:
  RXSTALE checkpoint-key expected actual   another runner moved the checkpoint
  (and every error prefix of mutate.lua)
]]

-- @include mutate

local ck = KEYS[#KEYS]
local cur = redis.call("GET", ck) or ""
if cur ~= ARGV[1] then
  return redis.error_reply("RXSTALE " .. ck .. " " .. (ARGV[1] == "" and "-" or ARGV[1]) .. " " .. cur)
end
local mkeys, margs = {}, {}
for j = 1, #KEYS - 1 do mkeys[j] = KEYS[j] end
for j = 3, #ARGV do margs[#margs + 1] = ARGV[j] end
local res = mutate(mkeys, margs)
if res.err then return res end
redis.call("SET", ck, ARGV[2])
return res
