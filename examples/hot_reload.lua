-- examples/hot_reload.lua: upgrading running servers to a new version of
-- their module, with their state (genserver.code, DESIGN.md §2.7).
--
--     eval "$(make -s env)"; lua5.4 examples/hot_reload.lua
--
-- What happens:
--  1. The script writes version 1 of a module, `shop_counter`, to a
--     temporary directory and puts that directory on package.path.
--     Version 1 keeps a count: state = { count = n }.
--  2. It starts three counters from that module, and one server of another
--     module (an echo server) that the upgrade must leave alone.
--  3. It edits the file: version 2 (vsn = "2") keeps the count as
--     { total = n, history = {} } and answers "get" with both. Its
--     code_change(old_vsn, state, extra) turns a version-1 state into a
--     version-2 state.
--  4. code.upgrade("shop_counter", "upgraded by the example") reloads the
--     file (servers started from now on run version 2), then suspends each
--     live counter, runs code_change in it, and resumes it. Each counter
--     keeps its count; the echo server is not touched.
--  5. A version 3 that does not compile is refused by code.reload: the
--     servers stay on version 2.
-- The script checks each step with assert and prints what it sees.
local gs = require "genserver"
local code = require "genserver.code"
local process = require "genserver.process"

-- 1. a temporary directory with version 1 of the module
local dir = assert(io.popen("mktemp -d")):read("l")
package.path = dir .. "/?.lua;" .. package.path
local file = dir .. "/shop_counter.lua"

local function write(text)
  local f = assert(io.open(file, "w"))
  f:write(text)
  f:close()
end

write([[
local M = {}
function M.init(n) return "ok", { count = n } end
function M.handle_cast(k, s) s.count = s.count + k return "noreply", s end
function M.handle_call(req, _, s) return "reply", "count=" .. s.count, s end
return M
]])

-- 2. three counters of version 1, and a server of another module
local counters = {}
for i = 1, 3 do
  counters[i] = assert(gs.start("shop_counter", i * 10))
  gs.cast(counters[i], i) -- counts 11, 22, 33
end
local Echo = { name = "echo" }
function Echo.handle_call(req, _, s) return "reply", req, s end
local echo = assert(gs.start(Echo, "unchanged"))

for i, pid in ipairs(counters) do
  print(("counter %d (%s) runs version %s: %s"):format(i, tostring(pid),
    tostring(process.info(pid).vsn), gs.call(pid, "get")))
end

-- 3. version 2: a new state shape, converted by code_change
write([[
local M = { vsn = "2" }
function M.init(n) return "ok", { total = n, history = {} } end
function M.handle_cast(k, s)
  s.total = s.total + k
  s.history[#s.history + 1] = k
  return "noreply", s
end
function M.handle_call(req, _, s)
  return "reply", ("total=%d, %d changes since the upgrade (%s)"):format(
    s.total, #s.history, s.note), s
end
function M.code_change(old_vsn, s, extra)
  -- old_vsn is the server's own version: the counter 1 of version 1
  return "ok", { total = s.count, history = {}, note = extra .. " from " .. tostring(old_vsn) }
end
return M
]])

-- 4. reload and move every live server of the module to version 2
local results = assert(code.upgrade("shop_counter", "upgraded by the example"))
for i, pid in ipairs(counters) do
  assert(results[pid] == true, "upgrade failed: " .. tostring(results[pid]))
  gs.cast(pid, 1)
  local answer = gs.call(pid, "get")
  print(("counter %d now runs version %s: %s"):format(i, process.info(pid).vsn, answer))
  assert(answer:match("^total=" .. (i * 11 + 1)))
end
assert(results[echo] == nil, "the echo server is not a shop_counter")
assert(gs.call(echo, "still here?") == "still here?")
print("code.which says the current version is " .. tostring(code.which("shop_counter")))

-- a counter started now runs version 2 at once
local fresh = assert(gs.start("shop_counter", 100))
print("a new counter: " .. gs.call(fresh, "get"))

-- 5. a version that does not compile is refused; nothing changes
write("local M = { vsn = '3' ")
local vsn, why = code.reload("shop_counter")
assert(vsn == nil)
print("version 3 refused: " .. tostring(why))
assert(code.which("shop_counter") == "2")
assert(gs.call(counters[1], "get"):match("^total="))

for _, pid in ipairs(counters) do gs.stop(pid) end
gs.stop(fresh)
gs.stop(echo)
os.remove(file)
os.remove(dir)
print("hot_reload: ok")
