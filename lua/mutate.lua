--[[ mutate.lua — the one write path: apply N entity operations atomically.

Every change to an entity goes through this script (or through txn.lua, its two-phase form): it runs
the checks of every operation first (versions, existence, integer fields, fences, constraints), and
only when all of them pass does it write. So either all operations happen, with their version bumps,
index updates and change records, or none does.

KEYS and ARGV: the write-path format of write_path.lua (a header, then per operation an "op" section and
its optional "set", "incr", "index", "fence" and "cons" sections), with one more header section:
  "each"   the operations are independent: each is read, checked and written in turn, as if it were
           its own call (one refused operation leaves the others alone), so a batch of independent
           writes to one partition costs one call instead of one per write
Returns: one array per operation: {version, change id, server time ms, {field, value, ...} or {}};
  with "each", a refused operation's entry is {"ERR", error message} instead
Errors: those of write_path.lua (with "each", only for arguments off the format).
]]

-- @library write_path

HEADER.each = function(head) head.each = true end

local head, ops = parse(KEYS, ARGV)
if not head then return ops end
if head.each then
  local results = {}
  for i, op in ipairs(ops) do
    local one = {op}
    local refused = read_all(head, one) or check_all(one)
    if refused then
      results[i] = {"ERR", refused.err}
    else
      write_fences(one)
      results[i] = write_all(head, one)[1]
    end
  end
  return results
end
local refused = read_all(head, ops) or check_all(ops)
if refused then return refused end
write_fences(ops)
return write_all(head, ops)
