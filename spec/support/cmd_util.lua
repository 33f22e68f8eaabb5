-- spec/support/cmd_util.lua: running programs from specs (examples, the
-- genserver command, doc samples) as child processes with a time limit, so
-- a hang or a crash is a failed test, not a stuck suite.
--
-- The child gets this process's module paths (package.path/cpath), so it
-- loads the build under test (the sanitizer runs put their build there).
local C = {}

function C.shquote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
local shquote = C.shquote

C.LUA = os.getenv("LUA") or "lua5.4"

--- The environment assignments (for `env`) that give a child the in-tree paths.
function C.env_vars(extra)
  local vars = {
    "LUA_PATH=" .. shquote(package.path), "LUA_PATH_5_4=" .. shquote(package.path),
    "LUA_CPATH=" .. shquote(package.cpath), "LUA_CPATH_5_4=" .. shquote(package.cpath),
  }
  for k, v in pairs(extra or {}) do vars[#vars + 1] = k .. "=" .. shquote(v) end
  return table.concat(vars, " ")
end

--- Runs the shell command `cmd` (already quoted) under `timeout`, with the
-- in-tree paths; `opts.input` is written to its stdin, `opts.env` adds
-- variables, `opts.timeout` (s, default 60). Returns a table
-- { ok =, code =, out = stdout, err = stderr }.
function C.run(cmd, opts)
  opts = opts or {}
  local errf = os.tmpname()
  local inf
  local redirect = "</dev/null"
  if opts.input then
    inf = os.tmpname()
    local f = assert(io.open(inf, "w"))
    f:write(opts.input)
    f:close()
    redirect = "<" .. shquote(inf)
  end
  local full = ("env %s timeout -k 5 %d sh -c %s %s 2>%s"):format(C.env_vars(opts.env),
    opts.timeout or 60, shquote(cmd), redirect, shquote(errf))
  local p = assert(io.popen(full, "r"))
  local out = p:read("a")
  local ok, how, code = p:close()
  local f = io.open(errf, "r")
  local err = f and f:read("a") or ""
  if f then f:close() end
  os.remove(errf)
  if inf then os.remove(inf) end
  return { ok = ok == true, code = how == "exit" and code or -1, out = out, err = err,
           cmd = cmd }
end

--- Runs a Lua file with lua5.4 (args already quoted).
function C.lua(file, args, opts)
  return C.run(shquote(C.LUA) .. " " .. shquote(file) .. (args and " " .. args or ""), opts)
end

--- A readable description of a run, for assertion messages.
function C.show(r)
  return ("command: %s\nexit: %s\n--- stdout:\n%s--- stderr:\n%s"):format(
    r.cmd, tostring(r.code), r.out, r.err)
end

--- Asserts that the lines of `want` (patterns, plain unless `pattern` is
-- set) appear in `text` in that order.
function C.in_order(text, want, pattern)
  local pos = 1
  for _, w in ipairs(want) do
    local s, e = text:find(w, pos, not pattern)
    if not s then return false, ("missing (in order): %s"):format(w) end
    pos = e + 1
  end
  return true
end

return C
