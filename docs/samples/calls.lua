local genserver = require "genserver"
local process = require "genserver.process"

local Slow = {}
function Slow.handle_call(request, from, state)
  if request == "slow" then
    -- answer later, from another process: keep `from`, return "noreply"
    process.spawn(function(f)
      require("genserver.process").sleep(50)
      require("genserver").reply(f, "done, eventually")
    end, from)
    return "noreply", state
  elseif request == "crash" then
    error("asked to crash")
  end
  return "reply", request, state
end

local pid = assert(genserver.start(Slow, nil, { name = "slow_server" }))
print(genserver.call(pid, "echo"))                       --> echo
print(genserver.call(pid, "slow"))                       --> done, eventually

-- failures raise a genserver error: catch it with pcall
local ok, err = pcall(genserver.call, "slow_server", "slow", 10)  -- 10 ms: too short
print(ok, err.reason, genserver.is_error(err))           --> false	timeout	true
print(tostring(err))       --> genserver.call(slow_server, "slow"): timeout after 10 ms

ok, err = pcall(genserver.call, "nobody", "hi")
print(err.reason)                                        --> noproc

-- without waiting: send the request now, collect the reply later
local req = genserver.send_request(pid, "later")
print(genserver.wait_response(req, 1000))                --> true	later

-- a crash in the server: the caller gets the crash reason
ok, err = pcall(genserver.call, pid, "crash")
print(err.reason.error:match("asked to crash"))          --> asked to crash
print(process.alive(pid))                                --> false
