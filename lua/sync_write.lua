--[[ sync_write.lua — one local change to an entity of a replicated collection.

Ticks the partition's hybrid logical clock and sequence number, applies each field's operation to
its CRDT state, writes the entity's stored values through the write path (version bump, change
record: write_path.lua's read_all and write_all), and appends the change's delta to the replica's
log, all in this one call.

KEYS and ARGV: the write-path format of write_path.lua with one "op" (kind "update", no sections),
with one header section before it:
  "sync" n, (field, type, action, argument) * n
         type: lww | counter | orset | mvreg; action: "set" (lww, mvreg), "incr" (counter: the
         argument is an integer amount), "add" | "remove" (orset: the argument is the element's JSON)
         KEYS: + the partition's sync meta hash, its log stream, its version-vector hash, the
         entity's CRDT state hash (field -> JSON {"k": type, "s": state})
Meta hash fields: id (replica id), epoch, seq (last sequence number), l and c (the HLC), skew (a
  test-oriented clock offset in ms added to the server's TIME, 0 unless set), coll:<name> for each
  replicated collection written in the partition.
Log entry fields: o origin ("<id>.<epoch>"), s sequence number, t HLC, k the partition's version
  vector before the change (JSON), c collection, i id, f {field: {"k": type, "s": delta}} (JSON).
Returns: {version, change id, server time ms, origin, sequence number, HLC}
Errors: those of write_path.lua, and
  RXSYNC key detail                  the partition is not set up as a replica (or a bad argument)
]]

-- @library write_path
-- @library crdt

HEADER.sync = function(head, c)
  local s = {fields = {}}
  for j = 1, c.int() do s.fields[j] = {name = c.arg(), kind = c.arg(), action = c.arg(), arg = c.arg()} end
  s.meta, s.log, s.vv, s.state = c.key(), c.key(), c.key(), c.key()
  head.sync = s
end

local head, ops = parse(KEYS, ARGV)
if not head then return ops end
local s, op = head.sync, ops[1]
if not s or #ops ~= 1 then return redis.error_reply("RXFORMAT sync_write.lua needs a sync section and one op") end
local m = redis.call("HMGET", s.meta, "id", "epoch", "seq", "l", "c", "skew")
if not m[1] then return redis.error_reply("RXSYNC " .. s.meta .. " is not a replica (open it with Replica)") end
local origin = m[1] .. "." .. m[2]
local seq = tonumber(m[3] or "0") + 1
local pt = now + tonumber(m[6] or "0")
local l, lc = tonumber(m[4] or "0"), tonumber(m[5] or "0")
if pt > l then l, lc = pt, 0 else lc = lc + 1 end
local hlc = string.format("%015d.%06d", l, lc)

local refused = read_all(head, ops)
if refused then return refused end

local names = {}
for j, f in ipairs(s.fields) do names[j] = f.name end
local stored = redis.call("HMGET", s.state, unpack(names))
local deltas, newstate = {}, {}
for j, f in ipairs(s.fields) do
  local join = CRDT_JOIN[f.kind]
  if not join then return redis.error_reply("RXSYNC " .. op.ekey .. " unknown CRDT type " .. tostring(f.kind)) end
  local state = newstate[f.name] or (stored[j] and cjson.decode(stored[j]).s) or {}
  local delta = crdt_delta(f.kind, state, f.action, f.arg, origin, hlc)
  local prior = deltas[f.name]
  deltas[f.name] = {k = f.kind, s = prior and join(prior.s, delta) or delta}
  newstate[f.name] = join(state, delta)
end
local hset = {"HSET", s.state}
for name, state in pairs(newstate) do
  local kind = deltas[name].k
  hset[#hset + 1] = name
  hset[#hset + 1] = cjson.encode({k = kind, s = state})
  local v = crdt_value(kind, state)
  if v then op.set[#op.set + 1] = {name, v} end
end
redis.call(unpack(hset))
if op.cur == 0 then op.kind = "create" end
redis.call("HSET", s.meta, "coll:" .. op.coll, "1")
local deps = redis.call("HGETALL", s.vv)
local dep = {}
for i = 1, #deps, 2 do dep[deps[i]] = tonumber(deps[i + 1]) end
local reply = write_all(head, ops)[1]
redis.call("HSET", s.meta, "seq", fmt_int(seq), "l", fmt_int(l), "c", fmt_int(lc))
redis.call("HSET", s.vv, origin, fmt_int(seq))
redis.call("XADD", s.log, "*", "o", origin, "s", fmt_int(seq), "t", hlc, "k", cjson.encode(dep),
  "c", op.coll, "i", op.id, "f", cjson.encode(deltas))
return {reply[1], reply[2], reply[3], origin, seq, hlc}
