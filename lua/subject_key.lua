--[[ subject_key.lua — find, or create once, the data key of one data subject.

The subjects hash rx:{ns}:_subjects (rxstate.security.subjects) holds, per data subject, the id of its
data key under "s:<digest of the subject>" and the key itself, wrapped by the namespace's KEK, under
"k:<id>"; "seq" hands out ids and "gone:<id>" records when a subject's key was destroyed (its erasure).
Two processes that meet a new subject at once each wrap a fresh key under an id of their own; this
script keeps the first and hands it to both, so a subject never has two keys.

KEYS: [1] the subjects hash
ARGV: [1] digest of the subject, [2] (optional) a candidate key id, [3] its wrapped key
Returns: {id, wrapped key} of the subject's key, or nil if it has none and no candidate was given
Errors: RXFORMAT when a candidate id is given without its key
]]

local held = redis.call("HGET", KEYS[1], "s:" .. ARGV[1])
if held then
  return {held, redis.call("HGET", KEYS[1], "k:" .. held)}
end
if not ARGV[2] then return nil end
if not ARGV[3] then return redis.error_reply("RXFORMAT a candidate key id needs its wrapped key") end
redis.call("HSET", KEYS[1], "s:" .. ARGV[1], ARGV[2], "k:" .. ARGV[2], ARGV[3])
return {ARGV[2], ARGV[3]}
