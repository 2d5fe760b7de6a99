--[[ crdt.lua — the join (merge) and the local operations of rxstate's CRDT types, on decoded states.

Not a script of its own: a script takes these definitions in with an "@library crdt" line
(sync_write.lua, sync_apply.lua, crdt_join.lua).
KEYS and ARGV: none (a library). Returns: nothing itself. Errors: none (callers validate types).

States are JSON objects only (never arrays, so an empty state encodes the same way in Lua and Python);
values are kept as their JSON text (a string), never decoded here.
  lww      {"t": hlc, "r": origin, "v": value}        the greatest (t, r, v) wins
  counter  {"p": {origin: n}, "n": {origin: n}}      PN-counter: value = sum(p) - sum(n)
  orset    {"e": {element: {dot: 1}}, "c": {origin: n}, "d": {dot: 1}}    add-wins OR-set
  mvreg    {"e": {dot: value}, "c": {origin: n}, "d": {dot: 1}}           multi-value register
A dot is "<origin>:<n>"; an origin is "<replica id>.<epoch>". "c" and "d" are the causal context: every
dot (o, k) with k <= c[o], plus the dots of "d" (the dot cloud, compacted into "c" when contiguous).
The join of two dot kernels keeps a dot that both hold or that the other side has not seen, so a
delta delivered twice, late or out of order changes nothing it should not.
]]

local function crdt_dot(d)
  local o, n = string.match(d, "^(.*):(%d+)$")
  return o, tonumber(n)
end

local function crdt_seen(ctx, d)
  local o, n = crdt_dot(d)
  return (ctx.c[o] or 0) >= n or ctx.d[d] ~= nil
end

local function crdt_kernel(s)
  s = s or {}
  return {e = s.e or {}, c = s.c or {}, d = s.d or {}}
end

-- The union of two causal contexts, compacted.
local function crdt_context(a, b)
  local c, d = {}, {}
  for o, n in pairs(a.c) do c[o] = n end
  for o, n in pairs(b.c) do if (c[o] or 0) < n then c[o] = n end end
  for k in pairs(a.d) do d[k] = 1 end
  for k in pairs(b.d) do d[k] = 1 end
  local moved = true
  while moved do
    moved = false
    for k in pairs(d) do
      local o, n = crdt_dot(k)
      local have = c[o] or 0
      if n <= have then
        d[k] = nil
      elseif n == have + 1 then
        c[o], d[k], moved = n, nil, true
      end
    end
  end
  return c, d
end

local function crdt_dots(s1, c1, s2, c2)
  local out, any = {}, false
  for k, v in pairs(s1) do
    if s2[k] ~= nil or not crdt_seen(c2, k) then out[k], any = v, true end
  end
  for k, v in pairs(s2) do
    if s1[k] == nil and not crdt_seen(c1, k) then out[k], any = v, true end
  end
  return out, any
end

local function crdt_greater(a, b)  -- whether lww a beats b
  if a.t ~= b.t then return a.t > b.t end
  if a.r ~= b.r then return a.r > b.r end
  return (a.v or "") > (b.v or "")
end

local CRDT_JOIN = {}

CRDT_JOIN.lww = function(a, b)
  if not a or not a.t then return b or {} end
  if not b or not b.t then return a end
  if crdt_greater(b, a) then return b end
  return a
end

CRDT_JOIN.counter = function(a, b)
  a, b = a or {}, b or {}
  local out = {p = {}, n = {}}
  for _, side in ipairs({"p", "n"}) do
    for o, n in pairs(a[side] or {}) do out[side][o] = n end
    for o, n in pairs(b[side] or {}) do
      if (out[side][o] or 0) < n then out[side][o] = n end
    end
  end
  return out
end

CRDT_JOIN.mvreg = function(a, b)
  a, b = crdt_kernel(a), crdt_kernel(b)
  local e = crdt_dots(a.e, a, b.e, b)
  local c, d = crdt_context(a, b)
  return {e = e, c = c, d = d}
end

CRDT_JOIN.orset = function(a, b)
  a, b = crdt_kernel(a), crdt_kernel(b)
  local e = {}
  for x, dots in pairs(a.e) do
    local kept, any = crdt_dots(dots, a, b.e[x] or {}, b)
    if any then e[x] = kept end
  end
  for x, dots in pairs(b.e) do
    if a.e[x] == nil then
      local kept, any = crdt_dots({}, a, dots, b)
      if any then e[x] = kept end
    end
  end
  local c, d = crdt_context(a, b)
  return {e = e, c = c, d = d}
end

-- The next dot of `origin` in a kernel's context.
local function crdt_next_dot(k, origin)
  local top = k.c[origin] or 0
  for d in pairs(k.d) do
    local o, n = crdt_dot(d)
    if o == origin and n > top then top = n end
  end
  return origin .. ":" .. string.format("%d", top + 1)
end

-- The delta of one local operation on a field's state (action, its argument: JSON text, or an integer
-- amount for a counter), by `origin` at HLC `hlc`. The caller joins it into the state.
local function crdt_delta(kind, state, action, arg, origin, hlc)
  if kind == "lww" then
    return {t = hlc, r = origin, v = arg}
  elseif kind == "counter" then
    local side, amount = "p", tonumber(arg)
    if amount < 0 then side, amount = "n", -amount end
    local s = state[side] or {}
    local delta = {p = {}, n = {}}
    delta[side][origin] = (s[origin] or 0) + amount
    return delta
  end
  local k = crdt_kernel(state)
  if kind == "mvreg" then
    local dot = crdt_next_dot(k, origin)
    local ctx = {[dot] = 1}
    for d in pairs(k.e) do ctx[d] = 1 end
    return {e = {[dot] = arg}, c = {}, d = ctx}
  end
  -- orset: add or remove the element `arg`; the delta's context is the element's observed dots
  local ctx = {}
  for d in pairs(k.e[arg] or {}) do ctx[d] = 1 end
  if action == "add" then
    local dot = crdt_next_dot(k, origin)
    ctx[dot] = 1
    return {e = {[arg] = {[dot] = 1}}, c = {}, d = ctx}
  end
  return {e = {}, c = {}, d = ctx}
end

-- The stored (JSON) value of a field's state, or nil when it holds none.
local function crdt_value(kind, state)
  if kind == "lww" then
    return state.v
  elseif kind == "counter" then
    local total = 0
    for _, n in pairs(state.p or {}) do total = total + n end
    for _, n in pairs(state.n or {}) do total = total - n end
    return string.format("%d", total)
  elseif kind == "orset" then
    local items = {}
    for x in pairs((state.e or {})) do items[#items + 1] = x end
    table.sort(items)
    return "[" .. table.concat(items, ",") .. "]"
  end
  local best = nil  -- mvreg: the greatest sibling, so the stored hash always holds one valid value
  for _, v in pairs(state.e or {}) do
    if not best or v > best then best = v end
  end
  return best or "null"
end
