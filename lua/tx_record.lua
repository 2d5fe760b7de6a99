--[[ tx_record.lua — the decision of a cross-partition transaction, kept in its primary partition.

The record is created (status "pending", a deadline) by the primary partition's prepare (mutate.lua).
This script is the single place where the outcome is decided: "commit" and the abort of an expired
transaction are compare-and-set on the status, so exactly one of them wins.

KEYS: [1] transaction record hash, [2] intent index hash of the primary partition
ARGV: [1] action, [2] transaction id, [3] lifetime (ms) of a tombstone
  action "status": the status; a pending transaction past its deadline is aborted first
  action "commit": pending -> committed
  action "abort":  pending -> aborted
  action "forget": delete the record and the primary's intent index entry (all intents are resolved)
Returns: {status, partitions ("p1,p2,..." or "")}. A missing record reads as "aborted", and an "aborted"
  tombstone is left for the given lifetime: partitions prepare in parallel, so an intent may be met before
  its primary partition has prepared; the tombstone makes that prepare fail. (A record is only deleted once
  every intent of its transaction is resolved, so no intent of a committed transaction can meet this.)
Errors: none.
]]

local record, index = KEYS[1], KEYS[2]
local action, txid = ARGV[1], ARGV[2]

if action == "forget" then
  redis.call("DEL", record)
  redis.call("HDEL", index, txid)
  return {"forgotten", ""}
end

local h = redis.call("HMGET", record, "s", "d", "p")
local status, deadline, parts = h[1], tonumber(h[2] or "0"), h[3] or ""
if not status then
  if action ~= "forget" then redis.call("HSET", record, "s", "aborted") end
  redis.call("PEXPIRE", record, ARGV[3])
  return {"aborted", ""}
end

if status == "pending" then
  if action == "commit" then
    status = "committed"
  elseif action == "abort" then
    status = "aborted"
  else
    local t = redis.call("TIME")
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    if now > deadline then status = "aborted" end
  end
  if status ~= "pending" then redis.call("HSET", record, "s", status) end
end
return {status, parts}
