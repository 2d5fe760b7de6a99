--[[ write_outcome.lua — settle a write whose reply was lost: did it take effect, or will it never?

KEYS: [1] the call's write record (rxw:{ns:p}:<write id>)
ARGV: [1] how long to keep a "given up" mark (ms)
Returns: 1 if the write took effect (its reply is recorded); 0 if it did not — and then it never will:
  the id is marked given up, so a copy of the call still on its way is refused (RXABANDONED)
Errors: none
]]

local prior = redis.call("GET", KEYS[1])
if prior and prior ~= "-" then return 1 end
redis.call("SET", KEYS[1], "-", "PX", ARGV[1])
return 0
