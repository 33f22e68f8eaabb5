-- spec/support/pr_util.lua: small helpers shared by the process, codec and
-- runtime specs (used in the main script's state).
local process = require "genserver.process"

local U = {}

U.TIMEOUT = 5000 -- generous: only a failure ever waits this long

--- Does string `s` contain `sub` (plainly, no patterns)? false for a non-string.
function U.contains(s, sub)
  return type(s) == "string" and s:find(sub, 1, true) ~= nil
end

--- How many times `sub` occurs in string `s` (plainly, not overlapping).
function U.count(s, sub)
  local n, i = 0, 1
  while true do
    local j = s:find(sub, i, true)
    if not j then return n end
    n, i = n + 1, j + #sub
  end
end

--- Drops everything in the caller's mailbox.
function U.flush()
  local n = 0
  while process.receive(0) ~= nil do n = n + 1 end
  return n
end

--- Selective receive that fails the test (instead of returning nil) when
-- nothing matching arrives in time.
function U.await(match, timeout, what)
  local m = process.receive(match, timeout or U.TIMEOUT)
  if m == nil then
    error(("timed out waiting for %s"):format(what or "a message"), 2)
  end
  return m
end

--- Waits for the DOWN of monitor `ref`.
function U.await_down(ref, timeout)
  return U.await(function(m)
    return type(m) == "table" and m[1] == "DOWN" and m.ref == ref
  end, timeout, "DOWN " .. tostring(ref))
end

--- Waits for a table message whose field `tag` equals `tag`.
function U.await_tag(tag, timeout)
  return U.await(function(m)
    return type(m) == "table" and m.tag == tag
  end, timeout, "reply " .. tostring(tag))
end

--- The first message tagged as a DOWN for `ref` within `timeout`, or nil.
function U.maybe_down(ref, timeout)
  return process.receive(function(m)
    return type(m) == "table" and m[1] == "DOWN" and m.ref == ref
  end, timeout)
end

--- Starts an echo process (spec/support/pr_echo.lua).
function U.echo()
  return process.spawn("pr_echo")
end

local tagn = 0
--- Sends `value` through the echo process and returns what came back.
function U.roundtrip(echo, value)
  tagn = tagn + 1
  local tag = "rt" .. tagn
  process.send(echo, { op = "echo", from = process.self(), tag = tag, value = value })
  return U.await_tag(tag).value
end

--- Asks the echo process to run `fn(...)` in its own state.
function U.apply(echo, fn, ...)
  tagn = tagn + 1
  local tag = "ap" .. tagn
  process.send(echo, { op = "apply", from = process.self(), tag = tag, fn = fn,
                       args = { ... }, n = select("#", ...) })
  local r = U.await_tag(tag)
  return r.ok, r.value
end

--- Sends a request with op `op` (plus fields) to the echo, waits the reply.
function U.ask(echo, op, fields)
  tagn = tagn + 1
  local msg = { op = op, from = process.self(), tag = op .. tagn }
  for k, v in pairs(fields or {}) do msg[k] = v end
  process.send(echo, msg)
  return U.await_tag(msg.tag)
end

--- Kills `pid` and waits until it is gone.
function U.kill(pid)
  local ref = process.monitor(pid)
  process.exit(pid, "kill")
  return U.await_down(ref)
end

--- A body that waits (for messages it ignores) until told "stop" or 30 s
-- pass; "ping" messages { "ping", from } are answered with { "pong", self }.
function U.sleeper()
  local process = require "genserver.process"
  while true do
    local m = process.receive(30000)
    if m == nil or m == "stop" then return end
    if type(m) == "table" and m[1] == "ping" then
      process.send(m[2], { "pong", process.self() })
    end
  end
end

--- A body that only sleeps (so messages stay in its mailbox).
function U.dozer(ms)
  require("genserver.process").sleep(ms or 30000)
end

--- Sends { "ping", self } and waits for { "pong", pid }.
function U.ping(pid, timeout)
  process.send(pid, { "ping", process.self() })
  return process.receive(function(m)
    return type(m) == "table" and m[1] == "pong" and m[2] == pid
  end, timeout or U.TIMEOUT) ~= nil
end

local function shquote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- Runs `source` as a script in a child lua5.4 (or $LUA) with this state's
-- package.path/cpath, killed after `opts.timeout` seconds (default 20; a
-- hang is a failure, exit status 124). `opts.env` adds environment
-- variables. Returns ok, exit code (-1 if killed by a signal), and the
-- output (stdout and stderr together).
function U.run_child(source, opts)
  opts = opts or {}
  local file = os.tmpname()
  local f = assert(io.open(file, "w"))
  f:write(source)
  f:close()
  local vars = {
    "LUA_PATH=" .. shquote(package.path), "LUA_PATH_5_4=" .. shquote(package.path),
    "LUA_CPATH=" .. shquote(package.cpath), "LUA_CPATH_5_4=" .. shquote(package.cpath),
  }
  for k, v in pairs(opts.env or {}) do vars[#vars + 1] = k .. "=" .. shquote(v) end
  local cmd = ("env %s timeout -k 5 %d %s %s 2>&1"):format(table.concat(vars, " "),
    opts.timeout or 20, shquote(os.getenv("LUA") or "lua5.4"), shquote(file))
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("a")
  local ok, how, code = p:close()
  os.remove(file)
  return ok, (how == "exit" and code or -1), out
end

return U
