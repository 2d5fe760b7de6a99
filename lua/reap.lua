--[[ reap.lua — record the expiry of entities whose TTL has passed, for one collection partition.

Redis drops an expired entity hash by itself; this script removes what Redis cannot know about (the
id from the ids set, its index entries) and appends an "expire" change record so watchers learn of it.
Idempotent: two reapers racing do the work once.

KEYS: [1] expiry zset, [2] ids set, [3] ttl-index hash, [4] change stream, [5..] index zsets,
      then, for a tenant's partition: its tenant hash and entity-size hash (write_path.lua, "Tenants"),
      whose usage counters lose what expires, and whose "cl" caps the change stream instead of ARGV[2]
ARGV: [1] collection, [2] change stream MAXLEN (~), [3] max entities per call,
      [4..] index field names, in the order of KEYS[5..]
Returns: the number of entities reaped.
The change record is write_path.lua's, as for every other write (no actor, no transaction, version 0).
]]

-- @library write_path

local coll, maxlen, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local head = {actor = "", txid = "", maxlen = maxlen, nparts = "1"}

local idxkey = {}
for j = 4, #ARGV do idxkey[ARGV[j]] = KEYS[j + 1] end
local tenant, sizes = KEYS[#ARGV + 2], KEYS[#ARGV + 3]
if tenant then head.maxlen = redis.call("HGET", tenant, "cl") or maxlen end  -- the tenant's cap, as for writes

local function uncount(id)
  if not tenant then return end
  local member = coll .. SEP .. id
  local size = redis.call("HGET", sizes, member)
  if size then
    redis.call("HDEL", sizes, member)
    redis.call("HINCRBY", tenant, "ue", -1)
    redis.call("HINCRBY", tenant, "ub", -tonumber(size))
  end
end

local due = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", "(" .. fmt_int(now), "LIMIT", 0, limit)
local reaped = 0
for _, id in ipairs(due) do
  -- Every write keeps the expiry zset exact (a new TTL moves the score, a persist removes the id, a
  -- re-creation records the expiry first), so an id due here belongs to an entity Redis has expired.
  if record_expiry(head, coll, id, KEYS[1], KEYS[2], KEYS[3], KEYS[4], idxkey, nil) then
    uncount(id)
    reaped = reaped + 1
  end
end
return reaped
