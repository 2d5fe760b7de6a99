--[[ append.lua — append events to one aggregate's stream, atomically with its projected state.

Checks the stream's version, then (for a collection that keeps a projection) writes the projected
state through the whole of mutate.lua (included below as a function: same checks, same entity hash
with _v/_sv/_ts/_by/_o, same indexes and change record), then adds each event to the partition's
event log and to the aggregate's stream under the same stream id, and records the new version. A
refused check (stale version, or any refusal of the mutate part) returns before anything is written.

KEYS:
  [1] aggregate event stream, [2] partition event log, [3] stream-version hash of the collection,
  then, when the namespace audits: the partition's audit stream and its chain head,
  then, when the collection keeps a projection: the KEYS of one mutate.lua call writing it
ARGV:
  [1] collection (category), [2] aggregate id, [3] expected version ("" = unchecked),
  [4] number of events n, [5] the principal to audit the append as ("" = no audit entry),
  then per event: type, schema version, payload JSON, metadata prefix, metadata suffix
    (the stored metadata is prefix .. <version of the event> .. suffix: a JSON array),
  then, only with a projection: the ARGV of that mutate.lua call
Returns: {new version, {stream id of each event}, change id of the projection write or ""}
The audit entry (write_path.lua's audit_entry: action "append", the event types as its fields, no
payloads, which may hold classified data) joins the same chain as the entries of entity writes.
Errors:
  RXCONFLICT stream-key expected actual   the stream's version is not the expected one
  (and every error prefix of mutate.lua, from the projection write)
]]

-- @library write_path
-- @include mutate

local stream, log, versions = KEYS[1], KEYS[2], KEYS[3]
local coll, id, expected, n, principal = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local mfirst = principal == "" and 4 or 6

local cur = tonumber(redis.call("HGET", versions, id) or "0")
if expected ~= "" and tonumber(expected) ~= cur then
  return redis.error_reply("RXCONFLICT " .. stream .. " " .. expected .. " " .. string.format("%d", cur))
end

local first = 6 + 5 * n
local cid = ""
if #ARGV >= first then
  local mkeys, margs = {}, {}
  for j = mfirst, #KEYS do mkeys[#mkeys + 1] = KEYS[j] end
  for j = first, #ARGV do margs[#margs + 1] = ARGV[j] end
  local res = mutate(mkeys, margs)
  if res.err then return res end
  cid = res[1][2]
end

-- The log is written first: its last id is never below any of its aggregates' last ids, so the
-- id it assigns is also valid (strictly increasing) in the aggregate's stream.
local ids, types = {}, {}
local a = 6
for i = 1, n do
  types[i] = ARGV[a]
  local meta = ARGV[a + 3] .. string.format("%d", cur + i) .. ARGV[a + 4]
  local sid = redis.call("XADD", log, "*", "y", ARGV[a], "s", ARGV[a + 1], "d", ARGV[a + 2], "m", meta,
    "g", coll, "i", id)
  redis.call("XADD", stream, sid, "y", ARGV[a], "s", ARGV[a + 1], "d", ARGV[a + 2], "m", meta)
  ids[i] = sid
  a = a + 5
end
redis.call("HSET", versions, id, string.format("%d", cur + n))
if principal ~= "" then
  audit_entry(KEYS[4], KEYS[5], {"p", principal, "a", "append", "c", coll, "i", id, "v", fmt_int(cur + n),
    "t", fmt_int(now), "k", ids[1], "f", table.concat(types, ",")})
end
return {cur + n, ids, cid}
