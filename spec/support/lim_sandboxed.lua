-- A callback module for spec/limits_spec.lua: reports what its state can see.
local M = {}
function M.init(a) return "ok", a end
function M.handle_call(req, from, s)
  if req == "io" then return "reply", type(io), s end
  if req == "os" then return "reply", type(os), s end
  if req == "debug" then return "reply", type(debug), s end
  if req == "loadlib" then return "reply", type(package.loadlib), s end
  if req == "bin" then local f = string.dump(function() return 1 end) local ok, err = load(f, "x", "b") return "reply", tostring(ok) .. " " .. tostring(err), s end
  if req == "text" then return "reply", load("return 40 + 2")(), s end
  if req == "table" then return "reply", table.concat({"a", "b"}), s end
  if req == "grow" then local t = {} for i = 1, 1e7 do t[i] = ("x"):rep(100) .. i end return "reply", #t, s end
  return "reply", req, s
end
return M
