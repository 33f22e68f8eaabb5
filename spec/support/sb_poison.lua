-- spec/support/sb_poison.lua: a process body (spawned by name from
-- spec/sandbox_spec.lua, not sandboxed) that does to its own `package`
-- what the request says, requires `name`, and tells `to` how that went.
return function(to, how, name, evil)
  local process = require "genserver.process"
  if how == "searchpath" then
    package.searchpath = function() return evil end
  elseif how == "path" then
    package.path = evil .. ";" .. package.path
  elseif how == "loaded" then
    package.loaded[name] = { init = function() return "ok", "poisoned" end }
  elseif how == "searchers" then
    table.insert(package.searchers, 2, function() return loadfile(evil), evil end)
  end
  local ok, m = pcall(require, name)
  process.send(to, { "poisoned", ok = ok, kind = type(m) })
end
