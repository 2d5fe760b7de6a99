--[[ once.lua — exactly-once wrapper of a write script: a write id's call takes effect at most once.

Not a script of its own: the script loader puts a write script before this text as the function `body`
(rxstate.core.scripts.ScriptLibrary.once), and the Writer sends every write through such a wrapper,
each call with a fresh write id. A resend of the same call (a retry after a lost or late reply, by
redis-py or by the Writer) finds the recorded reply and returns it instead of writing again.

KEYS: [1] the call's write record (rxw:{ns:p}:<write id>, in the slot of the script's own keys),
      then the script's own KEYS
ARGV: [1] how long the record is kept (ms), then the script's own ARGV
Returns: the script's reply (recorded when the script succeeded: error replies wrote nothing and are
  not recorded, so a resend runs the script again)
Errors: the script's own, and
  RXABANDONED key   this write id was given up (UnknownOutcome.resolve) before any call of it ran
The record holds the reply binary-safe and with exact integers: "m" and the reply packed by cmsgpack
(Redis and Valkey have it built in; ~1 µs), or, where a server lacks it (fakeredis), "f" and a plain Lua
encoding ("s<len>:<bytes>", "n<integer>:", "f0:" for false, "t<count>:" before an array's items).
]]

local msgpack = rawget(_G, "cmsgpack")

local function freeze(v, out)
  local t = type(v)
  if t == "table" then
    out[#out + 1] = "t" .. #v .. ":"
    for i = 1, #v do freeze(v[i], out) end
  elseif t == "number" then
    out[#out + 1] = "n" .. string.format("%d", v) .. ":"
  elseif t == "boolean" then
    out[#out + 1] = v and "n1:" or "f0:"
  else
    out[#out + 1] = "s" .. #v .. ":" .. v
  end
  return out
end

local function thaw(s, pos)
  local colon = string.find(s, ":", pos, true)
  local tag, n = string.sub(s, pos, pos), tonumber(string.sub(s, pos + 1, colon - 1))
  if tag == "s" then return string.sub(s, colon + 1, colon + n), colon + n + 1 end
  if tag == "n" then return n, colon + 1 end
  if tag == "f" then return false, colon + 1 end
  local arr, p = {}, colon + 1
  for i = 1, n do arr[i], p = thaw(s, p) end
  return arr, p
end

local function pack(reply)
  if msgpack then return "m" .. msgpack.pack(reply) end
  return "f" .. table.concat(freeze(reply, {}))
end

local function unpack_record(s)
  if string.sub(s, 1, 1) == "m" then return msgpack.unpack(string.sub(s, 2)) end
  return (thaw(s, 2))
end

local record, keep = KEYS[1], ARGV[1]
local prior = redis.call("GET", record)
if prior then
  if prior == "-" then return redis.error_reply("RXABANDONED " .. record) end
  return unpack_record(prior)
end
local keys, argv = {}, {}
for i = 2, #KEYS do keys[i - 1] = KEYS[i] end
for i = 2, #ARGV do argv[i - 1] = ARGV[i] end
local reply = body(keys, argv)
if type(reply) == "table" and reply.err then return reply end
redis.call("SET", record, pack(reply), "PX", keep)
return reply
