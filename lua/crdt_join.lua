--[[ crdt_join.lua — the join of CRDT states, as the sync scripts compute it (for checks and measurements).

KEYS: none.
ARGV[1] the type (lww | counter | orset | mvreg), ARGV[2..] states (JSON), joined left to right
Returns: the joined state (JSON; key order unspecified)
Errors: RXSYNC type detail           an unknown type
]]

-- @library crdt

local join = CRDT_JOIN[ARGV[1]]
if not join then return redis.error_reply("RXSYNC " .. tostring(ARGV[1]) .. " is not a CRDT type") end
local state = cjson.decode(ARGV[2])
for i = 3, #ARGV do state = join(state, cjson.decode(ARGV[i])) end
return cjson.encode(state)
