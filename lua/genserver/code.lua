--- genserver.code: hot code reload (DESIGN.md §2.7).
--
-- A runtime compiles each module once (its module cache): servers started
-- by module name all run that version. `reload(name)` reads the module's
-- file again and makes it the *current* version: servers started from now
-- on run it, running servers keep theirs until they are changed with
-- `sys.change_code` (which runs the new version's
-- `code_change(old_vsn, state, extra)`). `upgrade(name)` does both for
-- every live server of the module: suspend, change_code, resume.
--
--     local code = require "genserver.code"
--     -- edit myapp/counter.lua, then:
--     local results = code.upgrade("myapp.counter", { reason = "fix" })
--     for pid, r in pairs(results) do print(pid, r) end   -- true | reason
--
-- The module is looked up on the caller's `package.path` as `require`
-- would; servers started with another `package.path` are not affected.
-- A version is the module's `vsn` field when it has one (read back as a
-- string by `which` and `process.info(pid).vsn`), else a counter (an
-- integer: 1 for the first version the runtime loaded).
-- @module genserver.code

local core = require "genserver.core"
local sys = require "genserver.sys"

local M = {}

local type, pcall, tostring = type, pcall, tostring

-- Runs a new version's main chunk in a process of its own (a probe), so
-- that a module that raises while loading is refused before it becomes
-- current. Sends { "$code_probe", ok, vsn | reason }.
local function probe(owner, tag, chunk, name, file)
  local ok, mod = pcall(chunk, name, file)
  local vsn
  if ok and type(mod) == "table" then
    vsn = rawget(mod, "vsn")
    if type(vsn) ~= "string" and math.type(vsn) ~= "integer" and type(vsn) ~= "number" then
      vsn = nil
    end
  end
  if ok then core.send(owner, { "$code_probe", tag, true, vsn })
  else core.send(owner, { "$code_probe", tag, false, tostring(mod) }) end
end

--- Reads the module's file again and makes it the current version.
---@param name string module name (as for require)
---@return string|integer|nil # the new version (the module's `vsn` field, else a counter), or
--   nil and a reason: the file is not found, does not compile, or raises
--   while loading (the current version stays as it was)
---@return string?
function M.reload(name)
  if type(name) ~= "string" then error("genserver.code.reload: name must be a module name", 2) end
  local path = package.path
  local file, why = package.searchpath(name, path)
  if not file then return nil, why end
  local chunk, err = loadfile(file, "t")
  if not chunk then return nil, err end
  local tag = core.make_ref()
  local _, mref = core.spawn(probe, { monitor = true }, core.self(), tag, chunk, name, file)
  local m = core.receive(function(x)
    return type(x) == "table" and ((x[1] == "$code_probe" and x[2] == tag)
      or (x[1] == "DOWN" and x.ref == mref))
  end)
  if m[1] == "DOWN" then return nil, m.reason end
  core.demonitor(mref, "flush")
  if not m[3] then return nil, m[4] end
  local vsn = m[4]
  local counter = core.code_reload(name, path, chunk, file, vsn)
  if counter == nil then return nil, "the module cache is full" end
  if vsn ~= nil then return vsn end
  return counter
end

--- The current version of a module in this runtime.
---@param name string module name
---@return string|integer|nil # its `vsn` field, else its counter; nil if the runtime has not
--   loaded it by name yet
function M.which(name)
  if type(name) ~= "string" then error("genserver.code.which: name must be a module name", 2) end
  local counter, vsn = core.code_version(name, package.path)
  if counter == nil then return nil end
  if vsn ~= nil then return vsn end
  return counter
end

--- The live gen_servers running module `name` (but the caller).
---@param name string module name
---@return userdata[] # a list of pids
function M.servers(name)
  local out, me = {}, core.self()
  for _, pid in ipairs(core.list()) do
    local info = pid ~= me and core.info(pid)
    if info and info.server and info.module == name then out[#out + 1] = pid end
  end
  return out
end

--- Reloads `name` and moves every live server running it to the new
-- version: `sys.suspend`, `sys.change_code` (with the server's own
-- version as old_vsn, and `extra`), `sys.resume`. A server whose change
-- fails stays on its old code and state, and keeps running.
---@param name string module name
---@param extra any? passed to each server's code_change
---@return table|nil # `{ [pid] = true | reason }` for every server of the module, or
--   nil and a reason when the reload itself failed (no server touched)
---@return string?
function M.upgrade(name, extra)
  if type(name) ~= "string" then error("genserver.code.upgrade: name must be a module name", 2) end
  local vsn, why = M.reload(name)
  if vsn == nil then return nil, why end
  local results = {}
  for _, pid in ipairs(M.servers(name)) do
    local ok, err = pcall(sys.suspend, pid)
    if not ok then
      results[pid] = type(err) == "table" and err.reason or err
    else
      local called, done, reason = pcall(sys.change_code_own, pid, name, extra)
      pcall(sys.resume, pid)
      if not called then reason = type(done) == "table" and done.reason or done end
      results[pid] = called and done or reason
    end
  end
  return results
end

return M
