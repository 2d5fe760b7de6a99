--[[ scope_read.lua — read the chain of a scope (its root first, the scope itself last) at one instant.

The scopes of one tree are entities of the "scopes" collection routed by their root, so every scope
of a chain lives in one partition (one cluster slot) and one call reads them all consistently.
KEYS: [1..n] the entity hashes of the chain's scopes, root first
ARGV: [1..m] the hash fields to read of each (e.g. "_v", "values", "rules")
Returns: one array per key, the m values read (false for a missing field or scope)
Errors: none
]]

local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call("HMGET", key, unpack(ARGV))
end
return out
