-- docs/samples/sys_tour.lua: genserver.sys on a running server
-- (docs/toolbox.md). Run: eval "$(make -s env)"; lua5.4 docs/samples/sys_tour.lua
local gs = require "genserver"
local sys = require "genserver.sys"

local Account = { name = "account" }
function Account.init(balance) return "ok", { balance = balance, password = "hunter2" } end
function Account.handle_call(req, _, s)
  if req == "balance" then return "reply", s.balance, s end
  return "reply", nil, s
end
function Account.handle_cast(amount, s)
  s.balance = s.balance + amount
  return "noreply", s
end
function Account.format_status(status) -- keep secrets out of get_status
  status.state = { balance = status.state.balance, password = "***" }
  return status
end

local pid = assert(gs.start(Account, 100, { debug = { "statistics" } }))

-- look at the state, and at the status (through format_status)
print("state:", sys.get_state(pid).balance)
local status = sys.get_status(pid)
print("status:", status.status, status.module, status.state.password)
assert(status.state.password == "***")

-- replace the state; a failing fn leaves it as it was
print("replaced:", sys.replace_state(pid, function(s) s.balance = 0 return s end).balance)
local ok, err = pcall(sys.replace_state, pid, function(s)
  s.balance = -1
  error("not allowed")
end)
print("failed replace:", ok, err.reason)
assert(sys.get_state(pid).balance == 0)

-- suspend: calls wait, casts queue; resume answers them in order
sys.suspend(pid)
gs.cast(pid, 50)
local req = gs.send_request(pid, "balance")
print("while suspended:", gs.wait_response(req, 50))   -- false  timeout
sys.resume(pid)
print("after resume:", gs.wait_response(req, 5000))    -- true   50

-- statistics (on from the start through the debug option) and the log
sys.log(pid, 5)
gs.cast(pid, 1)
print("balance:", gs.call(pid, "balance"))
local st = sys.statistics(pid, "get")
print("callbacks run:", st.reductions, "messages in:", st.messages_in)
for _, ev in ipairs(sys.log(pid, "get")) do print("log:", ev.event, ev.kind or "") end

gs.stop(pid)
print("sys_tour: ok")
