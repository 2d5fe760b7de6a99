--[[ erase_events.lua — remove one aggregate's events everywhere they are kept, atomically.

Erasing a data subject (rxstate.admin.erasure) removes the event stream of each aggregate that belongs
to the subject: the stream itself, the copy of each of its events in the partition's event log (same
stream ids), its stream version and its snapshot. Subscriptions reading the log never see half of it.

KEYS: [1] aggregate event stream, [2] partition event log, [3] stream-version hash of the collection,
      [4] the aggregate's snapshot, [5] the partition's tenant hash (rxstate.tenancy: its events usage
      "uev" loses the stream's events; left alone when the namespace is no tenant's)
ARGV: [1] aggregate id, [2] "1" to only count (a dry run)
Returns: {events in the stream, copies removed from the log (counted in a dry run), snapshots (0 or 1)}
Cost: linear in the aggregate's events.
Errors: none of its own.
]]

local stream, log, versions, snapshot = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local dry = ARGV[2] == "1"
local entries = redis.call("XRANGE", stream, "-", "+")
local ids = {}
for i, e in ipairs(entries) do ids[i] = e[1] end
local copies = 0
for start = 1, #ids, 500 do
  local chunk = {unpack(ids, start, math.min(start + 499, #ids))}
  if dry then
    for _, id in ipairs(chunk) do copies = copies + #redis.call("XRANGE", log, id, id) end
  else
    copies = copies + redis.call("XDEL", log, unpack(chunk))
  end
end
local snaps = redis.call("EXISTS", snapshot)
if not dry then
  redis.call("DEL", stream, snapshot)
  redis.call("HDEL", versions, ARGV[1])
  if #ids > 0 and KEYS[5] and redis.call("EXISTS", KEYS[5]) == 1 then
    redis.call("HINCRBY", KEYS[5], "uev", -#ids)
  end
end
return {#ids, copies, snaps}
