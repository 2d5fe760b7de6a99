--[[ lock.lua — lease locks with fencing tokens: acquire, extend, release.

A lock is a hash that expires with its lease (fields: o owner, t fencing token, n re-entry count);
readers of a read/write lock sit in a zset scored by their lease deadlines. Every granted lease takes
the next value of a counter that never resets and never expires: its fencing token.

KEYS: [1] lock hash, [2] fencing-token counter, [3] readers zset
ARGV: [1] action ("acquire" | "extend" | "release"), [2] mode ("x" exclusive/write | "r" read),
      [3] owner id, [4] ttl ms, [5] reentrant ("1" | "0"), [6] the lease's token (extend, release)
Returns:
  acquire: {token, deadline (server ms)} when granted;
           {0, ms until the blocking lease ends} when the lock is held
  extend:  the new deadline (server ms)
  release: 1
Errors: RXLOCK lost   extend/release of a lease this owner does not hold (expired, or released)
]]

local lock, seq, readers = KEYS[1], KEYS[2], KEYS[3]
local action, mode, owner = ARGV[1], ARGV[2], ARGV[3]
local ttl = tonumber(ARGV[4])

local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function keep_readers_for(ms)
  if redis.call("PTTL", readers) < ms then redis.call("PEXPIRE", readers, ms) end
end

if action == "acquire" then
  if mode == "x" then
    local h = redis.call("HMGET", lock, "o", "t")
    if h[1] then
      if h[1] == owner and ARGV[5] == "1" then
        redis.call("HINCRBY", lock, "n", 1)
        if redis.call("PTTL", lock) < ttl then redis.call("PEXPIRE", lock, ttl) end
        return {tonumber(h[2]), now + redis.call("PTTL", lock)}
      end
      return {0, redis.call("PTTL", lock)}
    end
    redis.call("ZREMRANGEBYSCORE", readers, "-inf", now)
    local first = redis.call("ZRANGE", readers, 0, 0, "WITHSCORES")
    if first[1] then return {0, tonumber(first[2]) - now} end
    local token = redis.call("INCR", seq)
    redis.call("HSET", lock, "o", owner, "t", token, "n", 1)
    redis.call("PEXPIRE", lock, ttl)
    return {token, now + ttl}
  end
  if redis.call("EXISTS", lock) == 1 then return {0, redis.call("PTTL", lock)} end
  redis.call("ZREMRANGEBYSCORE", readers, "-inf", now)
  local token = redis.call("INCR", seq)
  redis.call("ZADD", readers, now + ttl, owner)
  keep_readers_for(ttl)
  return {token, now + ttl}
end

if mode == "x" then
  local h = redis.call("HMGET", lock, "o", "t")
  if h[1] ~= owner or h[2] ~= ARGV[6] then return redis.error_reply("RXLOCK lost") end
  if action == "extend" then
    redis.call("PEXPIRE", lock, ttl)
    return now + ttl
  end
  if redis.call("HINCRBY", lock, "n", -1) <= 0 then redis.call("DEL", lock) end
  return 1
end

local deadline = redis.call("ZSCORE", readers, owner)
if not deadline or tonumber(deadline) <= now then
  redis.call("ZREM", readers, owner)
  return redis.error_reply("RXLOCK lost")
end
if action == "extend" then
  redis.call("ZADD", readers, now + ttl, owner)
  keep_readers_for(ttl)
  return now + ttl
end
redis.call("ZREM", readers, owner)
return 1
