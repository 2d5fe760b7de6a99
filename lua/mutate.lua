--[[ mutate.lua — the one write path: apply N entity operations atomically.

Every change to an entity goes through this script (or through txn.lua, its two-phase form): it runs
the checks of every operation first (versions, existence, integer fields, fences, constraints), and
only when all of them pass does it write. So either all operations happen, with their version bumps,
index updates and change records, or none does.

KEYS and ARGV: the write-path format of write_path.lua (a header, then per operation an "op" section and
its optional "set", "incr", "index", "fence" and "cons" sections); this script adds no header section.
Returns: one array per operation: {version, change id, server time ms, {field, value, ...} or {}}
Errors: those of write_path.lua.
]]

-- @library write_path

local head, ops = parse(KEYS, ARGV)
if not head then return ops end
local refused = read_all(head, ops) or check_all(ops)
if refused then return refused end
write_fences(ops)
return write_all(head, ops)
