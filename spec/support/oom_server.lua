-- A callback module for spec/oom_spec.lua: every callback allocates, so an
-- injected allocation failure can land in any of them.
local M = {}

function M.init(n)
  local t = {}
  for i = 1, n do t[i] = { i, tostring(i) } end
  return "ok", { items = t, log = {} }
end

function M.handle_call(req, _, st)
  local copy = {}
  for i, v in ipairs(st.items) do copy[i] = v[2] .. req end
  return "reply", #copy, st
end

function M.handle_cast(msg, st)
  st.log[#st.log + 1] = ("cast %s"):format(msg)
  return "noreply", st
end

function M.terminate(reason, st)
  st.log[#st.log + 1] = { reason = reason, n = #st.items }
end

return M
