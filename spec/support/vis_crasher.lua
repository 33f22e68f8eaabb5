-- spec/support/vis_crasher.lua: a plain process body (spawned by name)
-- that raises (visibility_spec: tracebacks of plain processes).
return function()
  error("vis_body_crash")
end
