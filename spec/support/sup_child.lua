-- spec/support/sup_child.lua: a configurable child for the supervisor,
-- links and logger specs (started by name, so it runs in its own state).
--
-- init(arg), arg a table (anything else is kept as arg.value):
--   id         a label sent along in the recorder messages
--   rec        registered name of a recorder: gets { "started", id, pid }
--              from init and { "terminated", id, reason } from terminate
--   trap       trap exits (so terminate runs on the supervisor's "shutdown")
--   term_sleep ms terminate sleeps before reporting (a slow shutdown)
--   term_block terminate waits (for nothing) for ever
--   fail_if    init returns "error" while this name is registered
--   init       "ignore" | "error" | "crash": what init does instead
--   exit_after { ms, reason }: the server stops by itself after ms
--   term_send  { name, msg }: terminate first sends msg to that name
--   print_term terminate prints "terminated <id> <reason>" to stdout
-- Calls: "ping" -> "pong", "arg" -> arg, "pid" -> self, { "stop", reason },
--   "crash", { "unlink", pid }, { "link", pid }, { "sleep", ms }, "infos".
-- Casts: "crash", { "stop", reason }, { "exit", reason } (process.exit).
-- Info: { "stop", reason } stops; other messages (EXITs...) are kept in
--   st.infos, returned by the call "infos".
local process = require "genserver.process"

local C = {}

local function tell(st, msg)
  if st.rec then
    local p = process.whereis(st.rec)
    if p then process.send(p, msg) end
  end
end

function C.init(arg)
  if type(arg) ~= "table" then arg = { value = arg } end
  if arg.fail_if and process.whereis(arg.fail_if) then return "error", "told_to_fail" end
  if arg.init == "ignore" then return "ignore" end
  if arg.init == "error" then return "error", "init_error" end
  if arg.init == "crash" then error("init_crash") end
  if arg.trap then process.trap_exit(true) end
  local st = { id = arg.id, rec = arg.rec, arg = arg, infos = {} }
  if arg.exit_after then
    process.send_after(arg.exit_after[1], process.self(), { "stop", arg.exit_after[2] })
  end
  tell(st, { "started", arg.id, process.self() })
  return "ok", st
end

function C.handle_call(req, _from, st)
  if req == "ping" then return "reply", "pong", st end
  if req == "arg" then return "reply", st.arg, st end
  if req == "pid" then return "reply", process.self(), st end
  if req == "infos" then return "reply", st.infos, st end
  if req == "crash" then error("crash_on_call") end
  if type(req) == "table" then
    if req[1] == "stop" then return "stop", req[2], true, st end
    if req[1] == "unlink" then
      process.unlink(req[2])
      return "reply", true, st
    end
    if req[1] == "link" then
      process.link(req[2])
      return "reply", true, st
    end
    if req[1] == "sleep" then
      process.sleep(req[2])
      return "reply", true, st
    end
  end
  return "reply", nil, st
end

function C.handle_cast(msg, st)
  if msg == "crash" then error("crash_on_cast") end
  if type(msg) == "table" then
    if msg[1] == "stop" then return "stop", msg[2], st end
    if msg[1] == "exit" then process.exit(msg[2]) end
  end
  return "noreply", st
end

function C.handle_info(msg, st)
  if type(msg) == "table" and msg[1] == "stop" then return "stop", msg[2], st end
  st.infos[#st.infos + 1] = msg
  return "noreply", st
end

function C.terminate(reason, st)
  local ts = st.arg.term_send
  if ts and process.whereis(ts[1]) then process.send(ts[1], ts[2]) end
  if st.arg.term_sleep then process.sleep(st.arg.term_sleep) end
  if st.arg.term_block then process.receive(function() return false end) end
  if st.arg.print_term then
    io.write(("terminated %s %s\n"):format(tostring(st.id), tostring(reason)))
    io.stdout:flush()
  end
  tell(st, { "terminated", st.id, reason })
end

return C
