--[[ audit.lua — append one audit entry that no write carries: a denied operation, a read of classified data.

The entry joins the partition's hash chain exactly as the entries of writes do (write_path.lua's
audit_entry), so verification treats them alike.

KEYS: [1] the partition's audit stream, [2] its chain head hash
ARGV: [1] principal, [2] action, [3] collection, [4] entity id, [5] outcome ("denied", "ok"),
      [6] detail (why, for a denial; "" if none)
Returns: the entry's stream id
Errors: none
]]

-- @library write_path

local fields = {"p", ARGV[1], "a", ARGV[2], "c", ARGV[3], "i", ARGV[4], "t", fmt_int(now), "o", ARGV[5]}
if ARGV[6] ~= "" then
  fields[#fields + 1] = "d"
  fields[#fields + 1] = ARGV[6]
end
return audit_entry(KEYS[1], KEYS[2], fields)
