--[[ sync_apply.lua — apply a peer's deltas (or its full state) to this replica's partition, and store
how far this replica has read the peer's log, in one call (so a restart resumes where it stopped and a
repeated call changes nothing).
KEYS and ARGV: the write-path format of write_path.lua, one "op" (kind "update", no sections) per
entry, with one header section before them:
  "apply" peer, mode ("log" | "state"), max offset (ms), peer version vector (JSON; "state" mode),
          last offset (the peer log's stream id read up to; "" keeps the stored one), n, then per
          entry: offset (its stream id), origin, sequence number, HLC, dependencies (JSON), fields
          (JSON {field: {"k": type, "s": delta or full state}})
          KEYS: + the partition's sync meta hash, its log stream, its version-vector hash, its
          read-offset hash (peer -> stream id), its quarantine hash, then each entry's state hash
Returns: {applied, skipped, status ("ok" | "gap" | "causal" | "clock"), offset stored}
Errors: those of write_path.lua, and
  RXSYNC key detail                  the partition is not set up as a replica
"log" mode, per entry in order: a sequence number the version vector covers is skipped (a
  duplicate); one that is not the next of its origin, or whose dependencies are not all covered, stops
  the call there (causal delivery); one whose HLC is more than max offset ms ahead of this server's
  clock is quarantined (recorded under the peer in the quarantine hash) and stops the call there.
  Otherwise its deltas are joined into the entity's states, the entity's stored values are written
  through the write path, the HLC adopts the remote time, and the entry is appended to this replica's
  log as it came (so gossip carries it on). The offset stored is the last entry consumed.
"state" mode: every entry holds an entity's full states; they are joined in (an entity whose states
  do not change is not written) and the version vector becomes its join with the peer's.
]]

-- @library write_path
-- @library crdt

HEADER.apply = function(head, c)
  local a = {peer = c.arg(), mode = c.arg(), max_offset = tonumber(c.arg()), peer_vv = c.arg(), last = c.arg(),
    entries = {}}
  for j = 1, c.int() do
    a.entries[j] = {offset = c.arg(), origin = c.arg(), seq = tonumber(c.arg()), hlc = c.arg(), deps = c.arg(),
      fields = c.arg()}
  end
  a.meta, a.log, a.vv, a.from, a.quarantine = c.key(), c.key(), c.key(), c.key(), c.key()
  for j = 1, #a.entries do a.entries[j].state = c.key() end
  head.apply = a
end

local head, ops = parse(KEYS, ARGV)
if not head then return ops end
local a = head.apply
if not a or #ops ~= #a.entries then return redis.error_reply("RXFORMAT sync_apply.lua needs an apply section") end
local m = redis.call("HMGET", a.meta, "id", "l", "c", "skew")
if not m[1] then return redis.error_reply("RXSYNC " .. a.meta .. " is not a replica (open it with Replica)") end
local l, lc = tonumber(m[2] or "0"), tonumber(m[3] or "0")
local pt = now + tonumber(m[4] or "0")
local raw = redis.call("HGETALL", a.vv)
local vv = {}
for i = 1, #raw, 2 do vv[raw[i]] = tonumber(raw[i + 1]) end

local function merge_entity(op, e, only_if_changed)
  local fields = cjson.decode(e.fields)
  local names = {}
  for name in pairs(fields) do names[#names + 1] = name end
  if #names == 0 then return end
  local stored = redis.call("HMGET", e.state, unpack(names))
  local hset, changed = {"HSET", e.state}, false
  for j, name in ipairs(names) do
    local f = fields[name]
    local join = CRDT_JOIN[f.k]
    if not join then return redis.error_reply("RXSYNC " .. op.ekey .. " unknown CRDT type " .. tostring(f.k)) end
    local state = join(stored[j] and cjson.decode(stored[j]).s or {}, f.s)
    local text = cjson.encode({k = f.k, s = state})
    if not only_if_changed or not stored[j] or cjson.encode(cjson.decode(stored[j])) ~= text then
      changed = true
      hset[#hset + 1] = name
      hset[#hset + 1] = text
      local v = crdt_value(f.k, state)
      if v then op.set[#op.set + 1] = {name, v} end
    end
  end
  if not changed then return end
  local one = {op}
  local refused = read_all(head, one)
  if refused then return refused end
  redis.call(unpack(hset))
  redis.call("HSET", a.meta, "coll:" .. op.coll, "1")
  if op.cur == 0 then op.kind = "create" end
  write_all(head, one)
end

local applied, skipped, status, offset = 0, 0, "ok", nil
for i, e in ipairs(a.entries) do
  local op = ops[i]
  if a.mode == "state" then
    local refused = merge_entity(op, e, true)
    if refused then return refused end
    applied = applied + 1
  else
    local have = vv[e.origin] or 0
    if e.seq <= have then
      skipped = skipped + 1
      offset = e.offset
    elseif e.seq ~= have + 1 then
      status = "gap"
      break
    else
      for q, n in pairs(cjson.decode(e.deps)) do
        if (vv[q] or 0) < n then status = "causal" end
      end
      if status ~= "ok" then break end
      local lm, cm = tonumber(string.sub(e.hlc, 1, 15)), tonumber(string.sub(e.hlc, 17))
      if lm > pt + a.max_offset then
        status = "clock"
        redis.call("HSET", a.quarantine, a.peer, cjson.encode({origin = e.origin, seq = e.seq, hlc = e.hlc,
          ahead_ms = lm - pt, offset = e.offset, at = now}))
        break
      end
      local nl = math.max(l, lm, pt)
      if nl == l and nl == lm then lc = math.max(lc, cm) + 1
      elseif nl == l then lc = lc + 1
      elseif nl == lm then lc = cm + 1
      else lc = 0 end
      l = nl
      local refused = merge_entity(op, e, false)
      if refused then return refused end
      vv[e.origin] = e.seq
      redis.call("HSET", a.vv, e.origin, fmt_int(e.seq))
      redis.call("XADD", a.log, "*", "o", e.origin, "s", fmt_int(e.seq), "t", e.hlc, "k", e.deps,
        "c", op.coll, "i", op.id, "f", e.fields)
      applied = applied + 1
      offset = e.offset
    end
  end
end
if a.mode == "state" then
  for q, n in pairs(cjson.decode(a.peer_vv)) do
    if (vv[q] or 0) < n then redis.call("HSET", a.vv, q, fmt_int(n)) end
  end
  if a.last ~= "" then offset = a.last end
elseif status == "ok" and a.last ~= "" then
  offset = a.last
end
if status ~= "clock" then redis.call("HDEL", a.quarantine, a.peer) end
redis.call("HSET", a.meta, "l", fmt_int(l), "c", fmt_int(lc))
if offset then redis.call("HSET", a.from, a.peer, offset) end
return {applied, skipped, status, offset or redis.call("HGET", a.from, a.peer) or "0-0"}
