--[[ txn.lua — one partition's step of a cross-partition (two-phase) commit: prepare, or resolve.

KEYS and ARGV: the write-path format of write_path.lua, with one more header section:
  "txn" step ("prepare" | "resolve"), ttl (ms the intents hold; prepare), n, (field, value) * n
        KEYS: + payload hash, intent index hash, transaction record (the payload hash again unless this
        is the primary partition), before the operations' keys
  The payload fields: owner "<txid>@<primary partition>", parts, n, ops (the writes to apply).

prepare: run every check of the operations (write_path.lua's read_all and check_all), record their
  fencing tokens, then lock each entity with an intent (hash field _t = owner) and store the payload
  instead of writing; the primary partition also creates the transaction record (status "pending", a
  deadline). Returns {deadline (server ms)}.
resolve: apply the operations of the payload (or, given "check" ops only, write nothing), then release
  the intents and delete the payload. Without the payload (resolved already) it does nothing and
  returns {}; an entity whose TTL ran out while locked is skipped. Returns one write-path reply per
  applied operation.
Errors: those of write_path.lua, and
  RXTXABORTED record   prepare of a primary partition whose transaction was aborted already
]]

-- @library write_path

HEADER.txn = function(head, c)
  local t = {step = c.arg(), ttl = c.arg(), payload = c.key(), index = c.key(), record = c.key(), fields = {}}
  for j = 1, c.int() do t.fields[j] = {c.arg(), c.arg()} end
  t.owner, t.parts = "", ""
  for _, kv in ipairs(t.fields) do
    if kv[1] == "owner" then t.owner = kv[2] elseif kv[1] == "parts" then t.parts = kv[2] end
  end
  head.txn = t
end

local head, ops = parse(KEYS, ARGV)
if not head then return ops end
local txn = head.txn
if not txn then return redis.error_reply("RXFORMAT txn.lua needs a txn section") end

if txn.step == "resolve" then
  if redis.call("EXISTS", txn.payload) == 0 then return {} end
  local refused = read_all(head, ops)
  if refused then return refused end
  local live = {}
  for _, op in ipairs(ops) do
    -- An entity whose TTL ran out while locked has nothing left to update, increment or delete.
    local gone = op.cur == 0 and (op.kind == "update" or op.kind == "incr" or op.kind == "delete")
    if not gone then live[#live + 1] = op end
  end
  refused = check_all(live)
  if refused then return refused end
  local results = write_all(head, live)
  for _, op in ipairs(ops) do
    local h = redis.call("HMGET", op.ekey, "_v", "_t")
    if h[2] == txn.owner then
      if h[1] then redis.call("HDEL", op.ekey, "_t") else redis.call("DEL", op.ekey) end
    end
  end
  redis.call("DEL", txn.payload)
  if txn.record == txn.payload then redis.call("HDEL", txn.index, head.txid) end  -- the primary's goes with the record
  return results
end

local refused = read_all(head, ops) or check_all(ops)
if refused then return refused end
if txn.record ~= txn.payload and redis.call("EXISTS", txn.record) == 1 then
  return redis.error_reply("RXTXABORTED " .. txn.record)
end
write_fences(ops)
local deadline = fmt_int(now + tonumber(txn.ttl))
for _, op in ipairs(ops) do redis.call("HSET", op.ekey, "_t", txn.owner) end
local h = {"HSET", txn.payload, "d", deadline}
for _, kv in ipairs(txn.fields) do h[#h + 1] = kv[1]; h[#h + 1] = kv[2] end
redis.call(unpack(h))
redis.call("HSET", txn.index, head.txid, txn.owner .. " " .. deadline)
if txn.record ~= txn.payload then
  redis.call("HSET", txn.record, "s", "pending", "d", deadline, "p", txn.parts)
end
return {deadline}
