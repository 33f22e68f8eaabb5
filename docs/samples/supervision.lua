local dir = arg and arg[0]:match("^(.*)/") or "."
package.path = dir .. "/?.lua;" .. package.path

local genserver = require "genserver"
local process = require "genserver.process"
local supervisor = require "genserver.supervisor"
local logger = require "genserver.logger"

logger.set_handler("quiet_reports")  -- a module with handle_report(r): here, it drops them

local sup = assert(supervisor.start({
  strategy = "one_for_one",            -- restart only the child that died
  intensity = 3, period = 5,           -- more than 3 restarts in 5 s: give up
  children = {
    { id = "todo", start = { "stack", {}, { name = "todo" } } },
    { id = "done", start = { "stack", {}, { name = "done" } } },
  },
}, { name = "app" }))

genserver.cast("todo", { "push", "write docs" })
print(genserver.call("todo", "size"))            --> 1

-- kill the "todo" server: the supervisor starts a fresh one under the same name
local old = process.whereis("todo")
process.exit(old, "kill")
local new
repeat
  process.sleep(5)
  new = process.whereis("todo")
until new and new ~= old
print(genserver.call("todo", "size"))            --> 0

for _, c in ipairs(supervisor.which_children(sup)) do
  print(c.id, c.type, c.module)
end
--> todo	worker	stack
--> done	worker	stack
print(supervisor.count_children(sup).active)     --> 2

require("genserver.observer").print_tree()       -- what the genserver shell's tree() shows
genserver.stop(sup)                              -- children stop first, in reverse order
